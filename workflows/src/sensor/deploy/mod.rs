//! `DeploySensor`: rolls the Qualys registry sensor out to ECS or Kubernetes, and rolls it back
//! when it does not come up.
//!
//! 1. **Prepare** (`sensor.Prepare`, before any write): refuse clusters the sensor cannot run on
//!    (GKE Autopilot), check the credential Secret's values are non-empty (lengths only), dry-run
//!    every object (a refusal fails the run with nothing written), and record the previous state
//!    of everything the run may change and the sensors Qualys already knows. It is in history:
//!    a retried apply can never lose what to roll back to.
//! 2. **Apply** (`sensor.ApplyPlanned`), comparing first: a repeated run changes nothing.
//! 3. **Wait** for the roll-out (durable timers, bounded by `rolloutTimeoutSecs`).
//! 4. **Verify** (bounded by `verifyTimeoutSecs`): new sensors for this cluster's nodes, on this
//!    image's version, registered or checked in after the plan, at least as many as ready pods.
//! 5. On a roll-out that does not complete or a sensor that does not register, **roll back**
//!    (`sensor.RollbackPlanned`) every object the run changed or created and fail
//!    `SensorRolledBack`; a roll-back that cannot complete fails `SensorRollbackFailed`, naming
//!    what remains.
//!
//! "Cannot observe" is not "bad": an unreachable cluster, or Qualys answering 401/429 or not at
//! all, is waited out until the step's deadline and then fails `SensorUnobservable`, leaving the
//! sensor as applied (nothing says it is broken). Each call's deadline is short and derived from
//! the time the step has left, so an outage cannot stretch a step beyond its bound.
//!
//! Runs that began before this design (no `sensor-real-clusters` marker) run on in [`v1`].

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

mod v1;

use crate::FailureType;
use crate::failure::{activity_failed, invalid_input, root_message};
use crate::input;
use crate::options;
use crate::sensor::contracts::{
    ApplyPlannedSensor, ObserveSensorRollout, PrepareSensor, RollbackPlannedSensor,
    VerifySensorRegistered,
};
use crate::sensor::model::{DeploySensorInput, DeploySensorOutput, SensorApplied, SensorRun};
use std::time::{Duration, UNIX_EPOCH};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowResult,
};

/// Patch marking runs of this design (every run started by this code).
pub const REAL_CLUSTERS_PATCH: &str = "sensor-real-clusters";

/// The `DeploySensor` workflow. Input: [`DeploySensorInput`] as JSON; output:
/// [`DeploySensorOutput`].
#[workflow]
#[derive(Default)]
pub struct DeploySensor;

#[workflow_methods]
impl DeploySensor {
    /// Prepares, applies, waits for the roll-out and the registration, or rolls back.
    #[run(name = "DeploySensor")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: serde_json::Value,
    ) -> WorkflowResult<DeploySensorOutput> {
        let input: DeploySensorInput = input::parse(input).map_err(invalid_input)?;
        if !ctx.patched(REAL_CLUSTERS_PATCH) {
            return v1::run(ctx, input).await;
        }
        run_planned(ctx, input).await
    }
}

fn now_secs(ctx: &WorkflowContext<DeploySensor>) -> u64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Options of one call with `left` seconds of its step remaining: an attempt may take at most a
/// quarter of that (10 s to `per_call` s), all attempts together no more than what is left.
fn call(left: u64, per_call: u64) -> ActivityOptions {
    let left = left.max(10);
    let attempt = (left / 4).clamp(10, per_call);
    ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
        schedule_to_close: Duration::from_secs(left),
        start_to_close: Duration::from_secs(attempt),
    })
    .retry_policy(options::backoff())
    .build()
}

fn fail(type_name: FailureType, message: String) -> temporalio_sdk::WorkflowTermination {
    ApplicationFailure::builder(message)
        .type_name(type_name.into())
        .non_retryable(true)
        .build()
        .into()
}

async fn run_planned(
    ctx: &mut WorkflowContext<DeploySensor>,
    input: DeploySensorInput,
) -> WorkflowResult<DeploySensorOutput> {
    let poll = Duration::from_secs(input.poll_interval_secs);
    let rollout_bound = input.rollout_timeout_secs;

    // 1. Before any write: refusals end the run with nothing changed.
    let plan = ctx
        .execute_activity(PrepareSensor, input.clone(), call(rollout_bound, 120))
        .await
        .map_err(|e| activity_failed("prepare sensor", e))?;
    let mut run = SensorRun {
        input: input.clone(),
        plan,
        unchanged: false,
    };

    // 2. Apply; 3. wait for the roll-out.
    let started = now_secs(ctx);
    let left = |ctx: &WorkflowContext<DeploySensor>, start: u64, bound: u64| {
        bound.saturating_sub(now_secs(ctx).saturating_sub(start))
    };
    let mut problem = None;
    let mut applied: Option<SensorApplied> = None;
    match ctx
        .execute_activity(
            ApplyPlannedSensor,
            run.clone(),
            call(rollout_bound.max(120), 120),
        )
        .await
    {
        Ok(a) => {
            run.unchanged = !a.changed;
            applied = Some(a);
        }
        Err(e) => problem = Some(format!("apply: {}", root_message(&e))),
    }
    let mut unobservable = None;
    if problem.is_none() {
        loop {
            let remaining = left(ctx, started, rollout_bound);
            let observed = ctx
                .execute_activity(ObserveSensorRollout, run.clone(), call(remaining, 30))
                .await;
            let timed_out = left(ctx, started, rollout_bound) == 0;
            match observed {
                Ok(o) => match (o.status, o.unobservable) {
                    (Some(status), _) if status.done => {
                        unobservable = None;
                        break;
                    }
                    (Some(status), _) => {
                        unobservable = None;
                        if timed_out {
                            let why = o.reason.map(|r| format!("; {r}")).unwrap_or_default();
                            problem = Some(format!(
                                "roll-out did not complete within {rollout_bound} s (desired {}, \
                                 ready {}, updated {}){why}",
                                status.desired, status.ready, status.updated
                            ));
                            break;
                        }
                    }
                    (None, why) => {
                        unobservable = Some(why.unwrap_or_else(|| "no answer".into()));
                    }
                },
                Err(e) => unobservable = Some(root_message(&e)),
            }
            if timed_out {
                break;
            }
            ctx.timer(poll).await;
        }
    }
    if let Some(why) = unobservable {
        return Err(fail(
            FailureType::SensorUnobservable,
            format!(
                "the cluster could not be observed within {rollout_bound} s ({why}); the sensor \
                 is left as applied, not rolled back: run the deployment again once the cluster \
                 answers"
            ),
        ));
    }

    // 4. Verify: this run's sensors registered with Qualys.
    let mut sensors = 0;
    if problem.is_none() {
        let verify_bound = input.verify_timeout_secs;
        let started = now_secs(ctx);
        let mut unobservable;
        loop {
            let remaining = left(ctx, started, verify_bound);
            let observed = ctx
                .execute_activity(VerifySensorRegistered, run.clone(), call(remaining, 30))
                .await;
            let timed_out = left(ctx, started, verify_bound) == 0;
            match observed {
                Ok(o) if o.unobservable.is_none() => {
                    unobservable = None;
                    if o.matched >= o.needed {
                        sensors = o.matched;
                        break;
                    }
                    if timed_out {
                        problem = Some(format!(
                            "{} of the {} sensors this run started registered with Qualys within \
                             {verify_bound} s ({})",
                            o.matched, o.needed, o.detail
                        ));
                        break;
                    }
                }
                Ok(o) => unobservable = o.unobservable,
                Err(e) => unobservable = Some(root_message(&e)),
            }
            if timed_out {
                break;
            }
            ctx.timer(poll).await;
        }
        if let Some(why) = unobservable {
            return Err(fail(
                FailureType::SensorUnobservable,
                format!(
                    "Qualys could not be asked within {verify_bound} s whether the sensor \
                     registered ({why}); the sensor is left as applied, not rolled back"
                ),
            ));
        }
    }

    // 5. Roll back.
    if let Some(problem) = problem {
        let rollback_bound = rollout_bound.max(300);
        let report = ctx
            .execute_activity(
                RollbackPlannedSensor,
                run.clone(),
                call(rollback_bound, 120),
            )
            .await;
        return Err(match report {
            Ok(r) if r.remaining.is_empty() => fail(
                FailureType::SensorRolledBack,
                format!("{problem}; rolled back: {}", r.restored.join("; ")),
            ),
            Ok(r) => fail(
                FailureType::SensorRollbackFailed,
                format!(
                    "{problem}; the roll-back could not restore everything. Remaining: {}. \
                     Restored: {}",
                    r.remaining.join("; "),
                    if r.restored.is_empty() {
                        "nothing".to_string()
                    } else {
                        r.restored.join("; ")
                    }
                ),
            ),
            Err(e) => {
                let all: Vec<String> = if run.plan.objects.is_empty() {
                    vec![format!(
                        "ECS service {} in cluster {}",
                        input.service_name(),
                        input.cluster
                    )]
                } else {
                    run.plan
                        .objects
                        .iter()
                        .map(|o| format!("{}/{}", o.kind, o.name))
                        .collect()
                };
                fail(
                    FailureType::SensorRollbackFailed,
                    format!(
                        "{problem}; the roll-back failed ({}). Remaining: {}",
                        root_message(&e),
                        all.join(", ")
                    ),
                )
            }
        });
    }
    let applied = applied.unwrap_or_else(|| SensorApplied {
        changed: false,
        applied: String::new(),
        previous: None,
        created: false,
    });
    Ok(DeploySensorOutput {
        target: input.target,
        cluster: input.cluster,
        changed: applied.changed,
        applied: applied.applied,
        sensors,
    })
}
