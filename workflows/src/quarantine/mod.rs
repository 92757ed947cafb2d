//! `Quarantine`: a failing image that runs in an ECS service or an Azure container app, where no
//! admission control exists, is taken out of service once a person approves.
//!
//! One workflow per target and digest (ID [`QuarantineInput::workflow_id`]). It
//! 1. **reads the current state** (`quarantine.Inspect`): ECS: the task definition the service
//!    runs and the one it would roll back to ("previous": `rollbackTo` when given, else a task
//!    definition of an older deployment the service still lists, else the newest ACTIVE revision
//!    of the same family below the current one); container app: the revision's containers,
//!    whether it is active, and the app's other active revisions. A plan that cannot help is
//!    refused, and the run ends `refused` with nothing changed: the image does not run there
//!    (any more), or the previous task definition runs the same image or digest;
//! 2. **waits for a decision**: `approve` or `reject` (updates with `by` and `reason`; the
//!    validator refuses empty ones and decisions that come too early or too late), or the
//!    approval timeout: a lapsed approval changes nothing and the run ends `expired`;
//! 3. **on approval, applies** (`quarantine.Apply`): ECS: `UpdateService` to the previous task
//!    definition, only if the service still runs the task definition the approver saw; container
//!    app: `POST …/revisions/<name>/deactivate`;
//! 4. **verifies it took** (`quarantine.Verify`, retried until it holds or its deadline passes):
//!    the service's task definition and its PRIMARY deployment are the previous one, or the
//!    revision reports `active: false`;
//! 5. **records it all**: the result and the `state` query carry the input (target, image,
//!    digest, verdict), the plan, the decision (who, why, when), what was changed and verified.
//!
//! Nothing here is automatic: the workflow starts only when someone (the CLI) or something
//! (the `ImageScan` entity, only with `QFLOWS_QUARANTINE=propose`) proposes it, and changes
//! nothing without an `approve`.

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

pub mod contracts;
pub mod model;
pub(crate) mod propose;

use crate::clock::rfc3339;
use crate::failure::{activity_failed, invalid_input};
use crate::quarantine::contracts::{InspectQuarantine, QuarantineApply, QuarantineVerify};
use crate::{input, options};
use model::{
    DecisionNote, QuarantineChange, QuarantineDecision, QuarantineInput, QuarantinePlan,
    QuarantineStatus, QuarantineView, TargetKind,
};
use std::time::{Duration, UNIX_EPOCH};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination,
};

type UpdateError = Box<dyn std::error::Error + Send + Sync>;

/// How long applying may retry (throttling, an unreachable API) before the run fails.
const APPLY_SECS: u64 = 600;
/// How long verification may wait for the platform to show the change.
const VERIFY_SECS: u64 = 600;

/// The `Quarantine` workflow. Input: [`QuarantineInput`] as JSON; output: [`QuarantineView`].
#[workflow]
#[derive(Default)]
pub struct Quarantine {
    view: QuarantineView,
    /// The decision an update made, for the main loop.
    decided: Option<(bool, QuarantineDecision)>,
    /// The outcome is final (set by the main loop, read by the update handler).
    done: bool,
    /// Update handlers that have not answered yet (the run waits for them before it ends).
    unanswered: u32,
}

#[workflow_methods]
impl Quarantine {
    /// Reads the state, waits for a decision, and applies an approval.
    #[run(name = "Quarantine")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: serde_json::Value,
    ) -> WorkflowResult<QuarantineView> {
        let input: QuarantineInput = input::parse(input).map_err(invalid_input)?;
        run(ctx, input).await
    }

    /// Approves: rolls the service back (or deactivates the revision). Answers once it is
    /// applied and verified (or failed).
    #[update(name = "approve")]
    pub async fn approve(
        ctx: &mut WorkflowContext<Self>,
        decision: QuarantineDecision,
    ) -> Result<QuarantineView, UpdateError> {
        decide(ctx, true, decision).await
    }

    #[update_validator(approve)]
    pub fn validate_approve(
        &self,
        _ctx: &WorkflowContextView,
        decision: &QuarantineDecision,
    ) -> Result<(), UpdateError> {
        self.check(decision)
    }

    /// Rejects: nothing changes, and the run ends `rejected`.
    #[update(name = "reject")]
    pub async fn reject(
        ctx: &mut WorkflowContext<Self>,
        decision: QuarantineDecision,
    ) -> Result<QuarantineView, UpdateError> {
        decide(ctx, false, decision).await
    }

    #[update_validator(reject)]
    pub fn validate_reject(
        &self,
        _ctx: &WorkflowContextView,
        decision: &QuarantineDecision,
    ) -> Result<(), UpdateError> {
        self.check(decision)
    }

    /// Everything recorded so far.
    #[query(name = "state")]
    pub fn state(&self, _ctx: &WorkflowContextView) -> QuarantineView {
        self.view.clone()
    }
}

impl Quarantine {
    /// Refuses decisions that cannot be taken, before they enter history.
    fn check(&self, decision: &QuarantineDecision) -> Result<(), UpdateError> {
        if let Some(why) = decision.refusal() {
            return Err(why.into());
        }
        if self.decided.is_some() {
            return Err("a decision was already made".into());
        }
        match self.view.status {
            QuarantineStatus::AwaitingApproval => Ok(()),
            QuarantineStatus::Inspecting => {
                Err("the current state is still being read; try again in a moment".into())
            }
            other => Err(format!("the quarantine is over ({other:?}); nothing to decide").into()),
        }
    }
}

fn now_secs(ctx: &WorkflowContext<Quarantine>) -> u64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn at(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Handler side of `approve`/`reject`: hand the decision to the main loop and answer with the
/// state once the run is over.
async fn decide(
    ctx: &mut WorkflowContext<Quarantine>,
    approve: bool,
    decision: QuarantineDecision,
) -> Result<QuarantineView, UpdateError> {
    // Two decisions validated in the same workflow task: the first one stands.
    let taken = ctx.state_mut(|s| {
        if s.decided.is_some() {
            return false;
        }
        s.decided = Some((approve, decision));
        s.unanswered += 1;
        true
    });
    if !taken {
        return Err("a decision was already made".into());
    }
    let cancelled = ctx.wait_condition(|s: &Quarantine| s.done).await.is_err();
    let view = ctx.state_mut(|s| {
        s.unanswered -= 1;
        s.view.clone()
    });
    if cancelled {
        return Err("the workflow was cancelled".into());
    }
    match view.status {
        QuarantineStatus::RolledBack
        | QuarantineStatus::Deactivated
        | QuarantineStatus::Rejected => Ok(view),
        _ => Err(format!(
            "not applied: {}",
            view.reason.as_deref().unwrap_or("the quarantine ended")
        )
        .into()),
    }
}

/// Runs the steps, then lets a waiting `approve`/`reject` answer before the run ends.
async fn run(
    ctx: &mut WorkflowContext<Quarantine>,
    input: QuarantineInput,
) -> WorkflowResult<QuarantineView> {
    let outcome = steps(ctx, input).await;
    ctx.state_mut(|s| s.done = true);
    let _ = ctx.wait_condition(|s: &Quarantine| s.unanswered == 0).await;
    outcome
}

/// The numbered steps of the module docs; a refusal, a lapsed approval or a rejection ends the
/// run early with the state recorded so far.
async fn steps(
    ctx: &mut WorkflowContext<Quarantine>,
    input: QuarantineInput,
) -> WorkflowResult<QuarantineView> {
    ctx.state_mut(|s| s.view.input = Some(input.clone()));

    // 1. The current state.
    let Some(plan) = inspect(ctx, &input).await? else {
        return Ok(view(ctx));
    };

    // 2. A decision, or the timeout.
    if !approved(ctx, &plan, input.approval_timeout_secs).await {
        return Ok(view(ctx));
    }

    // 3. Apply; 4. verify.
    apply_and_verify(ctx, QuarantineChange { input, plan }).await?;
    Ok(view(ctx))
}

/// Everything recorded so far.
fn view(ctx: &WorkflowContext<Quarantine>) -> QuarantineView {
    ctx.state(|s| s.view.clone())
}

/// Step 1 (`quarantine.Inspect`): the plan, or `None` when it cannot help (recorded as
/// `refused`).
async fn inspect(
    ctx: &WorkflowContext<Quarantine>,
    input: &QuarantineInput,
) -> WorkflowResult<Option<QuarantinePlan>> {
    let plan = ctx
        .execute_activity(InspectQuarantine, input.clone(), options::retrying(60, 600))
        .await
        .map_err(|e| activity_failed("read the current state", e))?;
    if let Some(why) = plan.refusal.clone() {
        ctx.state_mut(|s| {
            s.view.plan = Some(plan);
            s.view.status = QuarantineStatus::Refused;
            s.view.reason = Some(why);
        });
        return Ok(None);
    }
    Ok(Some(plan))
}

/// Step 2: waits up to `timeout` seconds for `approve` or `reject` and records the decision.
/// Whether it was an approval; `false` also when it lapsed (recorded as `expired`).
async fn approved(ctx: &WorkflowContext<Quarantine>, plan: &QuarantinePlan, timeout: u64) -> bool {
    let deadline = now_secs(ctx) + timeout;
    ctx.state_mut(|s| {
        s.view.plan = Some(plan.clone());
        s.view.approval_deadline = Some(at(deadline));
        s.view.status = QuarantineStatus::AwaitingApproval;
    });
    let timers = ctx.clone();
    let mut lapse = timers.timer(Duration::from_secs(timeout));
    temporalio_sdk::workflows::select! {
        _ = lapse => {}
        _ = ctx.wait_condition(|s: &Quarantine| s.decided.is_some()) => {}
    }
    // A decision the validator accepted is honoured even if the timer fired in the same turn.
    let Some((approved, decision)) = ctx.state(|s| s.decided.clone()) else {
        ctx.state_mut(|s| {
            s.view.status = QuarantineStatus::Expired;
            s.view.reason = Some(format!(
                "nobody approved or rejected within {timeout} s; nothing was changed"
            ));
        });
        return false;
    };
    let note = DecisionNote {
        action: if approved { "approve" } else { "reject" }.into(),
        by: decision.by.clone(),
        reason: decision.reason.clone(),
        at: at(now_secs(ctx)),
    };
    ctx.state_mut(|s| {
        s.view.decision = Some(note);
        s.view.status = if approved {
            QuarantineStatus::Applying
        } else {
            QuarantineStatus::Rejected
        };
    });
    approved
}

/// A failed step (`step`, for the failure): the view's reason says `what` failed and why, and the
/// run fails.
fn step_failed(
    ctx: &WorkflowContext<Quarantine>,
    what: &str,
    step: &str,
    e: ActivityExecutionError,
) -> WorkflowTermination {
    let reason = crate::failure::root_message(&e);
    ctx.state_mut(|s| s.view.reason = Some(format!("{what}: {reason}")));
    activity_failed(step, e)
}

/// Steps 3 (`quarantine.Apply`) and 4 (`quarantine.Verify`), each recorded; a failure is
/// recorded as the reason and fails the run.
async fn apply_and_verify(
    ctx: &WorkflowContext<Quarantine>,
    change: QuarantineChange,
) -> WorkflowResult<()> {
    let applied = match ctx
        .execute_activity(
            QuarantineApply,
            change.clone(),
            options::retrying(60, APPLY_SECS),
        )
        .await
    {
        Ok(applied) => applied,
        Err(e) => {
            return Err(step_failed(
                ctx,
                "applying failed",
                "apply the quarantine",
                e,
            ));
        }
    };
    ctx.state_mut(|s| s.view.applied = Some(applied));
    let verified = match ctx
        .execute_activity(
            QuarantineVerify,
            change.clone(),
            options::retrying(30, VERIFY_SECS),
        )
        .await
    {
        Ok(v) => v,
        Err(e) => {
            let why = "applied, but not verified";
            return Err(step_failed(ctx, why, "verify the quarantine", e));
        }
    };
    ctx.state_mut(|s| {
        s.view.verified = Some(verified);
        s.view.status = match change.input.target.kind {
            TargetKind::Ecs => QuarantineStatus::RolledBack,
            TargetKind::ContainerApp => QuarantineStatus::Deactivated,
        };
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(by: &str, reason: &str) -> QuarantineDecision {
        QuarantineDecision {
            by: by.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn decisions_are_taken_only_while_the_approval_waits() {
        let mut q = Quarantine::default();
        let ok = decision("bob", "exploited");
        let refused = |q: &Quarantine, d: &QuarantineDecision| q.check(d).unwrap_err().to_string();
        assert!(refused(&q, &ok).contains("still being read"));
        q.view.status = QuarantineStatus::AwaitingApproval;
        assert!(q.check(&ok).is_ok());
        assert!(refused(&q, &decision("", "x")).contains("needs `by` and `reason`"));
        assert!(refused(&q, &decision("bob", "")).contains("needs `by` and `reason`"));
        q.decided = Some((true, ok.clone()));
        assert!(refused(&q, &ok).contains("already made"));
        q.decided = None;
        for over in [
            QuarantineStatus::Expired,
            QuarantineStatus::Rejected,
            QuarantineStatus::Refused,
            QuarantineStatus::RolledBack,
        ] {
            q.view.status = over;
            assert!(refused(&q, &ok).contains("is over"), "{over:?}");
        }
    }
}
