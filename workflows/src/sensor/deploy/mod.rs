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
mod workflow;

pub use workflow::DeploySensor;

use crate::FailureType;
use crate::failure::{activity_failed, invalid_input, root_message};
use crate::input;
use crate::options;
use crate::sensor::contracts::{
    ApplyPlannedSensor, ObserveSensorRollout, PrepareSensor, RollbackPlannedSensor,
    VerifySensorRegistered,
};
use crate::sensor::model::{
    DeploySensorInput, DeploySensorOutput, RolloutObservation, SensorApplied, SensorRun,
    VerifyObservation,
};
use std::time::{Duration, UNIX_EPOCH};
use temporalio_macros::workflow_methods;
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, ApplicationFailure,
    WorkflowContext, WorkflowResult,
};

/// Patch marking runs of this design (every run started by this code).
pub const REAL_CLUSTERS_PATCH: &str = "sensor-real-clusters";

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

/// The current design, step by step (the numbers of the module docs).
async fn run_planned(
    ctx: &mut WorkflowContext<DeploySensor>,
    input: DeploySensorInput,
) -> WorkflowResult<DeploySensorOutput> {
    // 1. Before any write: refusals end the run with nothing changed.
    let mut run = prepare(ctx, &input).await?;

    // 2. Apply; 3. wait for the roll-out (its bound counts from before the apply).
    let started = now_secs(ctx);
    let (applied, mut problem) = apply(ctx, &mut run).await;
    if problem.is_none() {
        problem = wait_for_rollout(ctx, &run, started).await?;
    }

    // 4. Verify: this run's sensors registered with Qualys.
    let mut sensors = 0;
    if problem.is_none() {
        match verify(ctx, &run).await? {
            Ok(matched) => sensors = matched,
            Err(why) => problem = Some(why),
        }
    }

    // 5. Roll back.
    if let Some(problem) = problem {
        return Err(roll_back(ctx, &run, problem).await);
    }
    let applied = applied.unwrap_or_else(|| SensorApplied {
        changed: false,
        applied: String::new(),
        previous: None,
        created: false,
    });
    Ok(DeploySensorOutput::new(input, applied, sensors))
}

/// Seconds left of a step that began at `start` and may take `bound` seconds.
fn left(ctx: &WorkflowContext<DeploySensor>, start: u64, bound: u64) -> u64 {
    bound.saturating_sub(now_secs(ctx).saturating_sub(start))
}

/// Step 1 (`sensor.Prepare`): the plan, recorded in history before any write.
async fn prepare(
    ctx: &WorkflowContext<DeploySensor>,
    input: &DeploySensorInput,
) -> WorkflowResult<SensorRun> {
    let plan = ctx
        .execute_activity(
            PrepareSensor,
            input.clone(),
            call(input.rollout_timeout_secs, 120),
        )
        .await
        .map_err(|e| activity_failed("prepare sensor", e))?;
    Ok(SensorRun {
        input: input.clone(),
        plan,
        unchanged: false,
    })
}

/// Step 2 (`sensor.ApplyPlanned`): what was applied, or the problem that calls for a roll-back.
async fn apply(
    ctx: &WorkflowContext<DeploySensor>,
    run: &mut SensorRun,
) -> (Option<SensorApplied>, Option<String>) {
    let rollout_bound = run.input.rollout_timeout_secs;
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
            (Some(a), None)
        }
        Err(e) => (None, Some(format!("apply: {}", root_message(&e)))),
    }
}

/// Step 3: polls the roll-out until it is done or `rolloutTimeoutSecs` (counted from `started`)
/// have passed. A roll-out that did not complete is a problem (roll back); a cluster that could
/// not be observed at the deadline fails the run `SensorUnobservable`, leaving the sensor as
/// applied.
async fn wait_for_rollout(
    ctx: &WorkflowContext<DeploySensor>,
    run: &SensorRun,
    started: u64,
) -> WorkflowResult<Option<String>> {
    let rollout_bound = run.input.rollout_timeout_secs;
    let observe = |options| ctx.execute_activity(ObserveSensorRollout, run.clone(), options);
    let judge = |o: RolloutObservation| match (o.status, o.unobservable) {
        (Some(status), _) if status.done => Polled::Done(None),
        (Some(status), _) => {
            let why = o.reason.map(|r| format!("; {r}")).unwrap_or_default();
            Polled::NotYet(Some(format!(
                "roll-out did not complete within {rollout_bound} s (desired {}, ready {}, \
                 updated {}){why}",
                status.desired, status.ready, status.updated
            )))
        }
        (None, why) => Polled::Unobservable(why.unwrap_or_else(|| "no answer".into())),
    };
    poll_until(ctx, run, started, rollout_bound, observe, judge)
        .await
        .map_err(|why| {
            fail(
                FailureType::SensorUnobservable,
                format!(
                    "the cluster could not be observed within {rollout_bound} s ({why}); the \
                     sensor is left as applied, not rolled back: run the deployment again once \
                     the cluster answers"
                ),
            )
        })
}

/// Step 4: polls Qualys until this run's sensors registered (their number), or
/// `verifyTimeoutSecs` have passed (the problem, for a roll-back). Qualys not answering at the
/// deadline fails the run `SensorUnobservable`, leaving the sensor as applied.
async fn verify(
    ctx: &WorkflowContext<DeploySensor>,
    run: &SensorRun,
) -> WorkflowResult<Result<u64, String>> {
    let verify_bound = run.input.verify_timeout_secs;
    let started = now_secs(ctx);
    let observe = |options| ctx.execute_activity(VerifySensorRegistered, run.clone(), options);
    let judge = |o: VerifyObservation| match o.unobservable {
        Some(why) => Polled::Unobservable(why),
        None if o.matched >= o.needed => Polled::Done(Ok(o.matched)),
        None => Polled::NotYet(Err(format!(
            "{} of the {} sensors this run started registered with Qualys within \
             {verify_bound} s ({})",
            o.matched, o.needed, o.detail
        ))),
    };
    poll_until(ctx, run, started, verify_bound, observe, judge)
        .await
        .map_err(|why| {
            fail(
                FailureType::SensorUnobservable,
                format!(
                    "Qualys could not be asked within {verify_bound} s whether the sensor \
                     registered ({why}); the sensor is left as applied, not rolled back"
                ),
            )
        })
}

/// What one observation of a polled step found.
enum Polled<T> {
    /// The step is done: its outcome.
    Done(T),
    /// Not yet: the step's outcome if its time is up now.
    NotYet(T),
    /// It could not be observed (why).
    Unobservable(String),
}

/// Polls (`observe`, an activity given its options) every `pollIntervalSecs` until `judge`
/// finds the step done or `bound` seconds from `started` have passed: the step's outcome, or
/// why it could not be observed at the deadline. Each call's deadline is what the step has left.
async fn poll_until<O, T, F>(
    ctx: &WorkflowContext<DeploySensor>,
    run: &SensorRun,
    started: u64,
    bound: u64,
    mut observe: impl FnMut(ActivityOptions) -> F,
    mut judge: impl FnMut(O) -> Polled<T>,
) -> Result<T, String>
where
    F: Future<Output = Result<O, ActivityExecutionError>>,
{
    let poll = Duration::from_secs(run.input.poll_interval_secs);
    loop {
        let observed = observe(call(left(ctx, started, bound), 30)).await;
        let timed_out = left(ctx, started, bound) == 0;
        match observed.map_err(|e| root_message(&e)).map(&mut judge) {
            Ok(Polled::Done(outcome)) => return Ok(outcome),
            _ if !timed_out => {}
            Ok(Polled::NotYet(outcome)) => return Ok(outcome),
            Ok(Polled::Unobservable(why)) | Err(why) => return Err(why),
        }
        ctx.timer(poll).await;
    }
}

/// Step 5 (`sensor.RollbackPlanned`): restores what the run changed and says how that went, as
/// the run's failure: `SensorRolledBack`, or `SensorRollbackFailed` naming what remains.
async fn roll_back(
    ctx: &WorkflowContext<DeploySensor>,
    run: &SensorRun,
    problem: String,
) -> temporalio_sdk::WorkflowTermination {
    let rollback_bound = run.input.rollout_timeout_secs.max(300);
    let report = ctx
        .execute_activity(
            RollbackPlannedSensor,
            run.clone(),
            call(rollback_bound, 120),
        )
        .await;
    match report {
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
        Err(e) => fail(
            FailureType::SensorRollbackFailed,
            format!(
                "{problem}; the roll-back failed ({}). Remaining: {}",
                root_message(&e),
                everything_planned(run).join(", ")
            ),
        ),
    }
}

/// Everything the run may have changed, for a roll-back that could not say what remains.
fn everything_planned(run: &SensorRun) -> Vec<String> {
    if run.plan.objects.is_empty() {
        vec![format!(
            "ECS service {} in cluster {}",
            run.input.service_name(),
            run.input.cluster
        )]
    } else {
        run.plan
            .objects
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect()
    }
}
