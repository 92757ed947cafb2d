//! What an `ImageScan` entity does with a result: answers the deployments waiting for it, starts
//! a `ScanAlert` child when the result is worth an alert, and, with `QFLOWS_QUARANTINE=propose`,
//! proposes quarantines.

use crate::quarantine::Quarantine;
use crate::quarantine::model::QuarantineInput;
use crate::scan::alert::{AlertInput, ScanAlert};
use crate::scan::image_scan::hand_over::{Limit, time_to_continue};
use crate::scan::image_scan::state::{ImageScan, now_secs};
use crate::scan::model::{ImageResult, NotifyRequest, ScanSettings};
use crate::scan::on_deploy::ScanOnDeploy;
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, SignalWorkflowOptions, WorkflowContext,
    WorkflowIdReusePolicy,
};

/// Marks a run that proposed quarantines (`QFLOWS_QUARANTINE=propose`): only a run with a
/// failing scan of a digest running in an ECS service, under that setting, records it.
pub const QUARANTINE_PATCH: &str = "image-scan-quarantine-proposals";

/// Waiting deployments answered per batch of concurrent signals (Temporal allows 2,000
/// pending outgoing signals per workflow).
const ANSWER_BATCH: usize = 200;

/// Sends the result on hand to the waiting deployments, in batches of concurrent signals. It
/// stops early when the run has grown enough to continue as new: the deployments not answered
/// yet stay waiting, and the next run answers them.
pub(super) async fn answer_waiting(ctx: &WorkflowContext<ImageScan>) {
    let Some(result) = ctx.state(|s| s.entity.latest.clone()) else {
        return;
    };
    loop {
        let batch = ctx.state_mut(|s| {
            let n = s.entity.waiting.len().min(ANSWER_BATCH);
            s.entity.waiting.drain(..n).collect::<Vec<_>>()
        });
        if batch.is_empty() {
            return;
        }
        let signals = batch.into_iter().map(|requester| {
            let handle = ctx.external_workflow(requester, None);
            let result = result.clone();
            async move {
                handle
                    .signal(
                        ScanOnDeploy::image_result,
                        result,
                        SignalWorkflowOptions::default(),
                    )
                    .await
            }
        });
        // A requester that has ended (or was terminated) no longer needs the answer.
        let _ = temporalio_sdk::workflows::join_all(signals).await;
        if time_to_continue(ctx, Limit::Soft) {
            return;
        }
    }
}

/// Starts the alert as a `ScanAlert` child that outlives this run: a notifier that is down for
/// hours delays neither answers nor the hand-over, and each channel retries on its own.
pub(super) async fn alert(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    request: NotifyRequest,
) {
    if !settings.alert_sns && !settings.alert_webhook {
        return;
    }
    let digest = request
        .result
        .digest
        .trim_start_matches("sha256:")
        .to_string();
    let id = format!("alert-{}-{}", &digest[..digest.len().min(16)], ctx.uuid4());
    let input = AlertInput {
        request,
        sns: settings.alert_sns,
        webhook: settings.alert_webhook,
    };
    let options = ChildWorkflowOptions::builder()
        .workflow_id(id)
        .parent_close_policy(ParentClosePolicy::Abandon)
        .build();
    ctx.state_mut(|s| s.entity.alerts += 1);
    // Not started (e.g. the namespace refused it): the alert is lost, the verdict is not.
    let _ = ctx
        .start_child_workflow(ScanAlert::run, input, options)
        .await;
}

/// With `QFLOWS_QUARANTINE=propose`, proposes a quarantine for each ECS service the digest of a
/// completed, failing attempt's `result` runs in: a `Quarantine` child that outlives this run and waits for
/// a person's approval. The workflow ID names the service and the digest and duplicates are
/// rejected, so a service is proposed once per digest: a later failing scan (a rescan, another
/// run of the entity) finds it started and moves on. Changes nothing for runs without the
/// setting, and records [`QUARANTINE_PATCH`] only in runs that propose.
pub(super) async fn propose_quarantines(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    result: &ImageResult,
) {
    let Some(q) = &settings.quarantine else {
        return;
    };
    let now = now_secs(ctx);
    let proposals: Vec<QuarantineInput> =
        ctx.state(|s| crate::quarantine::propose::proposals(result, &s.entity.running, now, q));
    if proposals.is_empty() || !ctx.patched(QUARANTINE_PATCH) {
        return;
    }
    for input in proposals {
        let options = ChildWorkflowOptions::builder()
            .workflow_id(input.workflow_id())
            .task_queue(q.task_queue.clone())
            .parent_close_policy(ParentClosePolicy::Abandon)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .build();
        let Ok(input) = serde_json::to_value(&input) else {
            continue;
        };
        // Already proposed (running or closed): that proposal stands.
        let _ = ctx
            .start_child_workflow(Quarantine::run, input, options)
            .await;
    }
}
