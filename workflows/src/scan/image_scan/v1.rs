//! The first design of `ImageScan`, kept so that entities started before the current one (see
//! the parent module) replay and finish: it scans once per TTL, matches Qualys records by tag as
//! well as digest, and never continues as new. At the end of its next hold period such an
//! entity hands over to the current design ([`HANDOVER_PATCH`]), so this code runs for
//! at most one TTL after an upgrade. Delete it (and the patch check in the parent) once no
//! history older than that is left.

use crate::clock::rfc3339;
use crate::failure::root_message;
use crate::options;
use crate::registry::contracts::EnsureRegistryShared;
use crate::registry::model::EnsureRegistryInput;
use crate::scan::contracts::{
    CollectScanResults, FindQualysImage, GetScanSettings, Notify, QScanImage, SubmitScan,
};
use crate::scan::image_scan::hand_over::{HANDOVER_PATCH, hand_over_from_v1};
use crate::scan::image_scan::input::{CollectResults, ImageScanInput, QScannerScan};
use crate::scan::image_scan::state::ImageScan;
use crate::scan::model::{
    DeployedAt, ImageResult, ImageStatus, NotifyRequest, QualysImageState, ScanSettings,
    SubmitRegistryScan, Verdict, notify_reason,
};
use crate::scan::on_deploy::ScanOnDeploy;
use crate::scan::{RegistryKind, search};
use std::time::Duration;
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, SignalWorkflowOptions,
    WorkflowContext, WorkflowResult,
};

/// Scans, answers deployments, holds the result for its TTL, rescans while deployed; at the end
/// of a hold period it hands over to the current design (continue-as-new) instead of scanning
/// again in this one.
pub(super) async fn run(ctx: &mut WorkflowContext<ImageScan>) -> WorkflowResult<ImageResult> {
    let settings = ctx
        .execute_activity(GetScanSettings, (), options::retrying(120, 3600))
        .await?;
    let mut is_rescan = false;
    loop {
        ctx.state_mut(|s| {
            s.deployments = 0;
            s.rescan = false;
        });
        let result = scan(ctx, &settings, is_rescan).await;
        is_rescan = true;
        if settings.search_attributes {
            ctx.upsert_search_attributes(search::updates(
                std::slice::from_ref(&result),
                None,
                settings.profile_search_attribute,
            ));
        }
        let previous = ctx.state_mut(|s| {
            let previous = s.latest.as_ref().and_then(|r| r.verdict);
            s.latest = Some(result.clone());
            previous
        });
        let first_deployment = ctx.state(|s| s.waiting.first().cloned());
        answer_waiting(ctx).await;
        notify_if_changed(ctx, &result, previous, first_deployment).await;

        // Hold the result for its TTL, answering deployments as they arrive.
        let timers = ctx.clone();
        let ttl = timers.timer(Duration::from_secs(settings.ttl_secs));
        futures::pin_mut!(ttl);
        loop {
            temporalio_sdk::workflows::select! {
                _ = &mut ttl => break,
                _ = ctx.wait_condition(|s: &ImageScan| !s.waiting.is_empty() || s.rescan) => {
                    answer_waiting(ctx).await;
                    if ctx.state(|s| s.rescan) {
                        break;
                    }
                }
            }
        }
        let still_deployed = ctx.state(|s| s.rescan || s.deployments > 0);
        if !still_deployed {
            return Ok(result);
        }
        if ctx.patched(HANDOVER_PATCH) {
            return hand_over_from_v1(ctx);
        }
    }
}

/// Alerts when the verdict changed (or the scan failed); repeats of the same verdict stay quiet.
async fn notify_if_changed(
    ctx: &mut WorkflowContext<ImageScan>,
    result: &ImageResult,
    previous: Option<Verdict>,
    deployed: Option<DeployedAt>,
) {
    let Some(reason) = notify_reason(result, previous) else {
        return;
    };
    let request = NotifyRequest {
        reason,
        result: result.clone(),
        previous_verdict: previous,
        deployed,
        running: Vec::new(),
    };
    // Deployments already have their answer; a notifier that stays down for ten minutes loses
    // this one alert rather than stalling the entity.
    let options =
        ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: Duration::from_secs(600),
            start_to_close: Duration::from_secs(30),
        })
        .retry_policy(options::backoff())
        .build();
    let _ = ctx.execute_activity(Notify, request, options).await;
}

/// Sends the latest result to every waiting deployment.
async fn answer_waiting(ctx: &mut WorkflowContext<ImageScan>) {
    let Some(result) = ctx.state(|s| s.latest.clone()) else {
        return;
    };
    let waiting = ctx.state_mut(|s| std::mem::take(&mut s.waiting));
    for deployment in waiting {
        // A requester that has ended (or was terminated) no longer needs the answer.
        let _ = ctx
            .external_workflow(deployment.requester, None)
            .signal(
                ScanOnDeploy::image_result,
                result.clone(),
                SignalWorkflowOptions::default(),
            )
            .await;
    }
}

/// One scan of the digest by the backend that fits the image.
async fn scan(
    ctx: &mut WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    is_rescan: bool,
) -> ImageResult {
    let mut input = ctx.state(|s| s.input.clone());
    // Rescans run on their own task queue (when configured), so a wave of rescans or a
    // backfill can never starve the scans that deployments are waiting for. No deploy event
    // waits on a rescan, so it reports no event→submitted latency.
    let queue = if is_rescan {
        input.event_accepted_at_ms = None;
        settings.rescan_task_queue.clone()
    } else {
        None
    };
    let queue = &queue;
    let outcome = match input.image.kind() {
        RegistryKind::Ecr {
            account_id, region, ..
        } if settings.registry_for_ecr || !settings.qscanner_available => {
            registry_scan(ctx, &input, settings, queue, account_id, region).await
        }
        _ if settings.qscanner_available => qscanner_scan(ctx, &input, settings, queue).await,
        _ => Ok(finished(
            &input,
            ImageStatus::Skipped,
            "not an ECR image, and the QScanner backend is not configured",
        )),
    };
    outcome.unwrap_or_else(|e| finished(&input, ImageStatus::Failed, &root_message(&e)))
}

/// The Fargate design: registry connector, on-demand schedule, durable polling, results.
async fn registry_scan(
    ctx: &mut WorkflowContext<ImageScan>,
    input: &ImageScanInput,
    settings: &ScanSettings,
    queue: &Option<String>,
    account_id: String,
    region: String,
) -> Result<ImageResult, ActivityExecutionError> {
    let registry = EnsureRegistryInput {
        account_id,
        region,
        role_arn: None,
        create_role: false,
    };
    let registry = ctx
        .execute_activity(
            EnsureRegistryShared,
            registry,
            // It waits on the shared workflow and heartbeats meanwhile: a killed worker's wait is
            // taken over within 30 s, not after the 15-minute attempt limit.
            on(
                options::heartbeating(options::retrying(900, 3600), 30),
                queue,
            ),
        )
        .await?;
    let Some((sha, created_ms)) =
        until_scanned(ctx, input, settings, queue, registry.registry_uuid).await?
    else {
        return Ok(finished(
            input,
            ImageStatus::TimedOut,
            &format!(
                "Qualys did not finish the scan within {} s",
                settings.scan_timeout_secs
            ),
        ));
    };
    let collect = CollectResults {
        sha,
        input: input.clone(),
        scanned_at: ctx.workflow_time().map(rfc3339).unwrap_or_default(),
        created_ms,
    };
    ctx.execute_activity(CollectScanResults, collect, step_on(queue))
        .await
}

/// Qualys' scan of the image: the one it has, or one submitted now and polled for. Its Qualys
/// image id and build time; `None`: not finished within the scan timeout.
async fn until_scanned(
    ctx: &mut WorkflowContext<ImageScan>,
    input: &ImageScanInput,
    settings: &ScanSettings,
    queue: &Option<String>,
    registry_uuid: String,
) -> Result<Option<(String, Option<u64>)>, ActivityExecutionError> {
    let mut state = find(ctx, input, queue).await?;
    if !matches!(state, QualysImageState::Scanned { .. }) {
        let submit = SubmitRegistryScan {
            registry_uuid,
            image: input.image.clone(),
            digest: input.digest.clone(),
            event_accepted_at_ms: input.event_accepted_at_ms,
        };
        ctx.execute_activity(SubmitScan, submit, step_on(queue))
            .await?;
        // Durable polling with bounded backoff: each wait is a timer, not a sleeping activity.
        let mut waited = 0;
        let mut interval = settings.poll_initial_secs.max(1);
        while !matches!(state, QualysImageState::Scanned { .. }) {
            if waited >= settings.scan_timeout_secs {
                return Ok(None);
            }
            ctx.timer(Duration::from_secs(interval)).await;
            waited += interval;
            interval = (interval * 2).min(settings.poll_max_secs.max(1));
            state = find(ctx, input, queue).await?;
        }
    }
    let QualysImageState::Scanned {
        sha, created_ms, ..
    } = state
    else {
        unreachable!("the loop ends only on Scanned")
    };
    Ok(Some((sha, created_ms)))
}

/// Where Qualys' scan of the image stands (`qualys.FindImage`).
async fn find(
    ctx: &WorkflowContext<ImageScan>,
    input: &ImageScanInput,
    queue: &Option<String>,
) -> Result<QualysImageState, ActivityExecutionError> {
    ctx.execute_activity(FindQualysImage, input.clone(), step_on(queue))
        .await
}

/// The ECR Lambda / self-hosted design: QScanner pulls and scans the image itself.
async fn qscanner_scan(
    ctx: &mut WorkflowContext<ImageScan>,
    input: &ImageScanInput,
    settings: &ScanSettings,
    queue: &Option<String>,
) -> Result<ImageResult, ActivityExecutionError> {
    let scan = QScannerScan {
        input: input.clone(),
        scanned_at: ctx.workflow_time().map(rfc3339).unwrap_or_default(),
    };
    let run_secs = settings.qscanner_timeout_secs + 120;
    let options = options::qscanner_run(run_secs, 4 * run_secs);
    ctx.execute_activity(QScanImage, scan, on(options, queue))
        .await
}

fn finished(input: &ImageScanInput, status: ImageStatus, reason: &str) -> ImageResult {
    ImageResult::unscanned(
        input.digest.clone(),
        input.image.to_string(),
        status,
        reason.to_string(),
    )
}

/// A Qualys or results step's options: two minutes per attempt, an hour in all, on `queue`.
fn step_on(queue: &Option<String>) -> ActivityOptions {
    on(options::retrying(120, 3600), queue)
}

/// Runs on `queue` instead of the workflow's own task queue, when given.
fn on(mut options: ActivityOptions, queue: &Option<String>) -> ActivityOptions {
    if queue.is_some() {
        options.task_queue = queue.clone();
    }
    options
}
