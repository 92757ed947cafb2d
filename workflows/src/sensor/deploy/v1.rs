//! Runs that began before `sensor-real-clusters`: apply, wait, count any registry sensor,
//! restore the DaemonSet spec or task definition apply saw. Its commands are kept as they were
//! (same activities and timers, in the same order) so such runs and their recorded histories
//! replay.

use crate::FailureType;
use crate::failure::{activity_failed, root_message};
use crate::options;
use crate::sensor::contracts::{
    ApplySensor, CountRegistrySensors, RollbackSensor, SensorRolloutStatus,
};
use crate::sensor::deploy::workflow::DeploySensor;
use crate::sensor::model::{DeploySensorInput, DeploySensorOutput, SensorDeployment};
use std::time::Duration;
use temporalio_sdk::{ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowResult};

/// The run of a workflow that began before the patch.
pub(super) async fn run(
    ctx: &mut WorkflowContext<DeploySensor>,
    input: DeploySensorInput,
) -> WorkflowResult<DeploySensorOutput> {
    let opts = options::retrying(120, 1800);

    let applied = ctx
        .execute_activity(ApplySensor, input.clone(), opts.clone())
        .await
        .map_err(|e| activity_failed("apply sensor", e))?;
    let deployment = SensorDeployment {
        input: input.clone(),
        applied: applied.clone(),
    };

    let mut problem = wait_for_rollout(ctx, &deployment, &opts).await;
    let mut sensors = 0;
    if problem.is_none() {
        match verify(ctx, &input, &opts).await {
            Ok(n) => sensors = n,
            Err(why) => problem = Some(why),
        }
    }

    if let Some(problem) = problem {
        let report = ctx
            .execute_activity(RollbackSensor, deployment, opts)
            .await
            .map_err(|e| activity_failed(&format!("{problem}; roll back"), e))?;
        return Err(
            ApplicationFailure::builder(format!("{problem}; rolled back: {report}"))
                .type_name(FailureType::SensorRolledBack.into())
                .non_retryable(true)
                .build()
                .into(),
        );
    }
    Ok(DeploySensorOutput::new(input, applied, sensors))
}

/// Waits for the roll-out: desired = ready = updated, polled on durable timers. The problem, if
/// it did not complete.
async fn wait_for_rollout(
    ctx: &WorkflowContext<DeploySensor>,
    deployment: &SensorDeployment,
    opts: &ActivityOptions,
) -> Option<String> {
    let input = &deployment.input;
    let poll = Duration::from_secs(input.poll_interval_secs);
    let mut waited = 0;
    loop {
        match ctx
            .execute_activity(SensorRolloutStatus, deployment.clone(), opts.clone())
            .await
        {
            Ok(status) if status.done => return None,
            Ok(status) if waited >= input.rollout_timeout_secs => {
                return Some(format!(
                    "roll-out did not complete within {} s (desired {}, ready {}, updated {})",
                    input.rollout_timeout_secs, status.desired, status.ready, status.updated
                ));
            }
            Ok(_) => {}
            Err(e) => return Some(format!("roll-out status: {}", root_message(&e))),
        }
        ctx.timer(poll).await;
        waited += input.poll_interval_secs;
    }
}

/// Verifies that the running sensor registers itself with Qualys: how many registry sensors
/// Qualys lists, or the problem.
async fn verify(
    ctx: &WorkflowContext<DeploySensor>,
    input: &DeploySensorInput,
    opts: &ActivityOptions,
) -> Result<u64, String> {
    let poll = Duration::from_secs(input.poll_interval_secs);
    let mut waited = 0;
    loop {
        match ctx
            .execute_activity(CountRegistrySensors, (), opts.clone())
            .await
        {
            Ok(n) if n > 0 => return Ok(n),
            Ok(_) if waited >= input.verify_timeout_secs => {
                return Err(format!(
                    "no registry sensor registered with Qualys within {} s",
                    input.verify_timeout_secs
                ));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("verify with Qualys: {}", root_message(&e))),
        }
        ctx.timer(poll).await;
        waited += input.poll_interval_secs;
    }
}
