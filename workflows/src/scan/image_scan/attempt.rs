//! One scan attempt of an `ImageScan` entity, by the backend that fits the image:
//!
//! - **registry** (the Fargate design): a tag to select the digest by (the deployment's own, or
//!   the ones ECR holds for the digest now when there is none or an attempt failed) → the Qualys
//!   registry connector → Qualys' record for the digest (a first scan may find one) → an
//!   on-demand schedule → a wait for Qualys to finish (an activity whose retries are the polls)
//!   → the vulnerabilities, stored, gated;
//! - **QScanner** (images outside ECR, or `QFLOWS_SCAN_BACKEND=qscanner`): one run on the
//!   QScanner task queue, whose slots bound how many run at once.
//!
//! Whatever happens, the attempt ends with a result: a failure becomes a `failed` or
//! `timed_out` result that the entity retries, never a verdict.

use crate::FailureType;
use crate::clock::{epoch_ms, rfc3339};
use crate::failure::{failure_type, is_timeout, root_message};
use crate::options;
use crate::registry::contracts::EnsureRegistryShared;
use crate::registry::model::{EnsureRegistryInput, EnsureRegistryOutput};
use crate::scan::contracts::{
    AwaitScanResults, CollectScanResults, EcrImageTags, FindOrSubmitScan, PrepareScan, QScanImage,
};
use crate::scan::image_scan::deliver::{self, answer_waiting, propose_quarantines};
use crate::scan::image_scan::entity::InFlight;
use crate::scan::image_scan::hand_over::{Limit, continue_as_new, time_to_continue};
use crate::scan::image_scan::input::{CollectResults, ImageScanInput, QScannerScan};
use crate::scan::image_scan::state::{ImageScan, has_news, now_secs, take_in_signals};
use crate::scan::model::{
    FindImage, FindOrSubmit, ImageResult, ImageStatus, ImageTagsRequest, ScanSettings, ScanStep,
    SubmitWhen,
};
use crate::scan::{ImageRef, RegistryKind, search};
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, WorkflowContext, WorkflowResult,
};

/// What an attempt produced: the result, and Qualys' `lastScanned` for a registry scan.
type Outcome = (ImageResult, Option<u64>);

/// A new attempt: read the settings, scan, then record, answer and alert.
pub(super) async fn scan(
    ctx: &WorkflowContext<ImageScan>,
    forced: bool,
    urgent: bool,
) -> WorkflowResult<()> {
    let settings = settings(ctx).await;
    ctx.state_mut(|s| s.entity.begin_attempt(&settings));
    let outcome = match backend(ctx, &settings) {
        Backend::Registry(hint) => registry_scan(ctx, &settings, hint, forced, urgent).await?,
        Backend::QScanner => qscanner_scan(ctx, &settings, forced, urgent).await?,
        Backend::None(reason) => (finished(ctx, ImageStatus::Skipped, reason), None),
    };
    finish(ctx, &settings, outcome).await;
    Ok(())
}

/// The attempt the previous run left under way: wait for the submitted registry scan, or run
/// QScanner again.
pub(super) async fn resume(ctx: &WorkflowContext<ImageScan>) -> WorkflowResult<()> {
    let settings = settings(ctx).await;
    let outcome = match ctx.state(|s| s.entity.in_flight.clone()) {
        Some(InFlight::QScanner { forced, urgent }) => {
            qscanner_scan(ctx, &settings, forced, urgent).await?
        }
        _ => await_and_collect(ctx, &settings).await?,
    };
    finish(ctx, &settings, outcome).await;
    Ok(())
}

/// Records the outcome, answers the deployments waiting for it, and alerts when it says so.
async fn finish(ctx: &WorkflowContext<ImageScan>, settings: &ScanSettings, outcome: Outcome) {
    let (result, qualys_scanned_ms) = outcome;
    if settings.search_attributes {
        ctx.upsert_search_attributes(search::updates(
            std::slice::from_ref(&result),
            None,
            settings.profile_search_attribute,
        ));
    }
    let now = now_secs(ctx);
    let proposing = settings.quarantine.is_some().then(|| result.clone());
    let alert = ctx.state_mut(|s| s.entity.record(result, qualys_scanned_ms, settings, now));
    take_in_signals(ctx);
    answer_waiting(ctx).await;
    if let Some(request) = alert {
        deliver::alert(ctx, settings, request).await;
    }
    if let Some(result) = proposing {
        propose_quarantines(ctx, settings, &result).await;
    }
}

/// The worker's scan settings, read anew for every attempt (a changed configuration reaches
/// entities that live for months), with the digest's last verdict from the results store the
/// first time; the last settings read if the worker cannot be asked.
async fn settings(ctx: &WorkflowContext<ImageScan>) -> ScanSettings {
    let digest = ctx.state(|s| s.input.digest.clone());
    let read = ctx
        .execute_activity(PrepareScan, digest, options::retrying(60, 3600))
        .await;
    match read {
        Ok(prepared) => {
            ctx.state_mut(|s| {
                s.entity.settings = Some(prepared.settings.clone());
                if !s.entity.verdict_loaded {
                    s.entity.last_verdict = prepared.last_verdict;
                    s.entity.verdict_loaded = true;
                }
            });
            prepared.settings
        }
        Err(_) => ctx.state(|s| {
            s.entity
                .settings
                .clone()
                .unwrap_or_else(ScanSettings::fallback)
        }),
    }
}

/// Which backend scans the image.
enum Backend {
    /// Qualys' registry scan, by an ECR reference of the digest.
    Registry(ImageRef),
    /// QScanner.
    QScanner,
    /// Neither can: why.
    None(&'static str),
}

fn backend(ctx: &WorkflowContext<ImageScan>, settings: &ScanSettings) -> Backend {
    let ecr = ctx.state(|s| {
        s.entity
            .references
            .iter()
            .rev()
            .find(|r| matches!(r.kind(), RegistryKind::Ecr { .. }))
            .cloned()
    });
    match ecr {
        Some(hint) if settings.registry_for_ecr || !settings.qscanner_available => {
            Backend::Registry(hint)
        }
        _ if settings.qscanner_available => Backend::QScanner,
        _ => Backend::None("not an ECR image, and the QScanner backend is not configured"),
    }
}

/// A result that is not a completed scan.
fn finished(ctx: &WorkflowContext<ImageScan>, status: ImageStatus, reason: &str) -> ImageResult {
    ctx.state(|s| {
        ImageResult::unscanned(
            s.input.digest.clone(),
            s.entity
                .reference()
                .map_or_else(|| s.input.image.to_string(), ToString::to_string),
            status,
            reason.to_string(),
        )
    })
}

fn failed(ctx: &WorkflowContext<ImageScan>, step: &str, err: &ActivityExecutionError) -> Outcome {
    let reason = format!("{step}: {}", root_message(err));
    (finished(ctx, ImageStatus::Failed, &reason), None)
}

/// The digest's input for activities that take one, with `image` as its reference.
fn image_input(ctx: &WorkflowContext<ImageScan>, image: ImageRef) -> ImageScanInput {
    ctx.state(|s| ImageScanInput {
        digest: s.input.digest.clone(),
        image,
        event_accepted_at_ms: s.entity.event_accepted_at_ms,
        carried: None,
        backfill: false,
    })
}

/// Deploy-time work on the workflow's own queue; rescans and retries nobody waits for on the
/// rescan queue, so they never starve the scans deployments wait for.
fn on_queue(
    mut options: ActivityOptions,
    settings: &ScanSettings,
    urgent: bool,
) -> ActivityOptions {
    if !urgent {
        options.task_queue = settings.rescan_task_queue.clone();
    }
    options
}

/// A Qualys call: retried while transient, for up to an hour. It heartbeats, so the attempt of
/// a worker that died is retried within 20 s; a live attempt may take its 2 minutes (throttling,
/// a big report's pages).
fn call(settings: &ScanSettings, urgent: bool) -> ActivityOptions {
    options::heartbeating(on_queue(options::retrying(120, 3600), settings, urgent), 20)
}

/// A registry scan: a tag to select the digest by → the Qualys registry connector → Qualys'
/// record for the digest, or a new scan → the wait → the results.
async fn registry_scan(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    hint: ImageRef,
    forced: bool,
    urgent: bool,
) -> WorkflowResult<Outcome> {
    let tags = match ecr_tags(ctx, settings, hint, urgent).await {
        Ok(tags) => tags,
        Err(failure) => return Ok(failure),
    };
    let Some(reference) = ctx.state(|s| s.entity.registry_reference(tags.as_deref())) else {
        if settings.qscanner_available {
            return qscanner_scan(ctx, settings, forced, urgent).await;
        }
        let reason = "no tag: ECR holds this digest untagged, and a Qualys registry scan selects \
                      images by tag (configure QScanner to scan it by digest)";
        return Ok((finished(ctx, ImageStatus::Skipped, reason), None));
    };
    ctx.state_mut(|s| s.entity.remember(&reference));
    let registry = match ensure_registry(ctx, settings, &reference, urgent).await {
        Ok(registry) => registry,
        Err(failure) => return Ok(failure),
    };
    find_or_submit(ctx, settings, reference, registry, forced, urgent).await
}

/// The tags ECR holds for the digest now, when they are needed. A schedule selects images by
/// tag. A deployment's own tag is used as it is; ECR is asked which tags the digest has now when
/// no reference has one, and after a failed attempt (the tag may have moved to another digest
/// before Qualys pulled it). `Err`: the failed attempt's outcome.
async fn ecr_tags(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    hint: ImageRef,
    urgent: bool,
) -> Result<Option<Vec<String>>, Outcome> {
    let (tagged, failing) = ctx.state(|s| {
        (
            s.entity.registry_reference(None).is_some(),
            s.entity.failures > 0,
        )
    });
    if tagged && !failing {
        return Ok(None);
    }
    let asked = ctx
        .execute_activity(
            EcrImageTags,
            ImageTagsRequest {
                image: hint,
                digest: ctx.state(|s| s.input.digest.clone()),
            },
            on_queue(options::retrying(60, 900), settings, urgent),
        )
        .await;
    match asked {
        Ok(tags) => Ok(tags),
        Err(_) if tagged => Ok(None),
        Err(e) => Err(failed(ctx, "read the image's tags from ECR", &e)),
    }
}

/// The Qualys registry connector of the reference's ECR registry (`registry.EnsureShared`).
/// `Err`: the failed attempt's outcome.
async fn ensure_registry(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    reference: &ImageRef,
    urgent: bool,
) -> Result<EnsureRegistryOutput, Outcome> {
    let RegistryKind::Ecr {
        account_id, region, ..
    } = reference.kind()
    else {
        unreachable!("registry references are ECR references")
    };
    let registry = EnsureRegistryInput {
        account_id,
        region,
        role_arn: None,
        create_role: false,
    };
    // It waits on the shared workflow and heartbeats meanwhile: a killed worker's wait is taken
    // over within 30 s, not after the 15-minute attempt limit.
    ctx.execute_activity(
        EnsureRegistryShared,
        registry,
        options::heartbeating(on_queue(options::retrying(900, 3600), settings, urgent), 30),
    )
    .await
    .map_err(|e| failed(ctx, "ensure the Qualys registry", &e))
}

/// Looks the digest up in Qualys and submits a scan when one is needed
/// (`qualys.FindOrSubmitScan`): a finished scan's results are collected at once, otherwise the
/// attempt waits for the scan under way.
async fn find_or_submit(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    reference: ImageRef,
    registry: EnsureRegistryOutput,
    forced: bool,
    urgent: bool,
) -> WorkflowResult<Outcome> {
    let now = now_secs(ctx);
    let (submit, newer_than_ms) = submission(ctx, settings, forced, now);
    let request = FindOrSubmit {
        registry_uuid: registry.registry_uuid,
        find: FindImage {
            digest: ctx.state(|s| s.input.digest.clone()),
            image: reference.clone(),
            newer_than_ms,
        },
        submit,
        event_accepted_at_ms: ctx.state(|s| s.entity.event_accepted_at_ms),
    };
    let step = ctx
        .execute_activity(FindOrSubmitScan, request, call(settings, urgent))
        .await;
    match step {
        Ok(ScanStep::Scanned {
            sha,
            scanned_ms,
            created_ms,
        }) => {
            let found = Found {
                sha,
                scanned_ms,
                created_ms,
            };
            return Ok(collect(ctx, settings, &reference, found, urgent).await);
        }
        Ok(ScanStep::Submitted) => {
            ctx.state_mut(|s| s.entity.last_submitted_secs = Some(now));
        }
        Ok(ScanStep::Underway) => {}
        Err(e) => {
            return Ok(failed(
                ctx,
                "look the image up in Qualys or submit its scan",
                &e,
            ));
        }
    }
    ctx.state_mut(|s| {
        s.entity.in_flight = Some(InFlight::Registry {
            reference,
            submitted_secs: now,
            newer_than_ms,
            urgent,
        })
    });
    await_and_collect(ctx, settings).await
}

/// When to submit a scan, and which Qualys scan is new enough (epoch ms; a rescan only).
///
/// A rescan submits anew and waits for a scan newer than the last one Qualys reported (its own
/// clock), or, when that is unknown, newer than ten minutes before now. Otherwise Qualys may
/// have the image already (another deployment, a registry schedule), or be scanning it: a scan
/// submitted less than a scan timeout ago (by an attempt that timed out) is left to finish, and
/// so is one Qualys shows as pending, until waiting for it timed out twice.
fn submission(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    forced: bool,
    now: u64,
) -> (SubmitWhen, Option<u64>) {
    let (failures, last_submitted) =
        ctx.state(|s| (s.entity.failures, s.entity.last_submitted_secs));
    let recent = last_submitted.is_some_and(|t| now.saturating_sub(t) < settings.scan_timeout_secs);
    let submit = match (forced, recent, failures >= 2) {
        (true, _, _) => SubmitWhen::Always,
        (false, true, _) => SubmitWhen::Never,
        (false, false, true) => SubmitWhen::IfNotScanned,
        (false, false, false) => SubmitWhen::IfUnknown,
    };
    let newer_than_ms = forced.then(|| {
        ctx.state(|s| s.entity.qualys_scanned_ms)
            .unwrap_or_else(|| {
                epoch_ms(ctx.workflow_time())
                    .unwrap_or_default()
                    .saturating_sub(600_000)
            })
    });
    (submit, newer_than_ms)
}

/// Waits for the submitted registry scan (within what is left of the scan timeout), then
/// collects its results.
async fn await_and_collect(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
) -> WorkflowResult<Outcome> {
    let Some(InFlight::Registry {
        reference,
        submitted_secs,
        newer_than_ms,
        urgent,
    }) = ctx.state(|s| s.entity.in_flight.clone())
    else {
        unreachable!("await_and_collect runs only with a registry scan under way")
    };
    let timed_out = || {
        let reason = format!(
            "Qualys did not finish the scan within {} s",
            settings.scan_timeout_secs
        );
        (finished(ctx, ImageStatus::TimedOut, &reason), None)
    };
    let elapsed = now_secs(ctx).saturating_sub(submitted_secs);
    let Some(left) = settings
        .scan_timeout_secs
        .checked_sub(elapsed)
        .filter(|l| *l > 0)
    else {
        return Ok(timed_out());
    };
    let find = FindImage {
        digest: ctx.state(|s| s.input.digest.clone()),
        image: reference,
        newer_than_ms,
    };
    let wait = ctx.execute_activity(AwaitScanResults, find, polling(settings, left, urgent));
    match interruptible(ctx, wait, Limit::Soft).await? {
        Ok(finished) => Ok((finished.result, finished.qualys_scanned_ms)),
        // The deadline passed: during an attempt (a timeout) or between two polls (the server
        // schedules no retry past it and reports the last "not finished yet").
        Err(e) if is_timeout(&e) || failure_type(&e) == Some(FailureType::QualysScanPending) => {
            Ok(timed_out())
        }
        Err(e) => Ok(failed(ctx, "wait for the Qualys scan", &e)),
    }
}

/// The poll schedule of [`AwaitScanResults`]: its retry policy (doubling from
/// `poll_initial_secs` to `poll_max_secs`), bounded by what is left of the scan timeout.
fn polling(settings: &ScanSettings, left_secs: u64, urgent: bool) -> ActivityOptions {
    let options =
        ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: Duration::from_secs(left_secs),
            start_to_close: Duration::from_secs(120),
        })
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(settings.poll_initial_secs.max(1)))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(
                    settings
                        .poll_max_secs
                        .max(settings.poll_initial_secs)
                        .max(1),
                ))
                .build(),
        )
        .build();
    // One poll heartbeats like a [`call`]: a dead worker's poll is retried within 20 s.
    options::heartbeating(on_queue(options, settings, urgent), 20)
}

/// The Qualys image record a `ScanStep::Scanned` names.
struct Found {
    sha: String,
    scanned_ms: Option<u64>,
    created_ms: Option<u64>,
}

/// Fetches every vulnerability, stores the report, applies the gate.
async fn collect(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    reference: &ImageRef,
    found: Found,
    urgent: bool,
) -> Outcome {
    let collect = CollectResults {
        sha: found.sha,
        input: image_input(ctx, reference.clone()),
        scanned_at: ctx.workflow_time().map(rfc3339).unwrap_or_default(),
        created_ms: found.created_ms,
    };
    match ctx
        .execute_activity(CollectScanResults, collect, call(settings, urgent))
        .await
    {
        Ok(result) => (result, found.scanned_ms),
        Err(e) => failed(ctx, "collect the scan results", &e),
    }
}

/// The ECR Lambda / self-hosted design: QScanner pulls and scans the image by its digest, on
/// the QScanner task queue (bounded slots per worker: the other runs wait in Temporal).
async fn qscanner_scan(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    forced: bool,
    urgent: bool,
) -> WorkflowResult<Outcome> {
    let (reference, digest) = ctx.state(|s| {
        let reference = s
            .entity
            .reference()
            .cloned()
            .unwrap_or(s.input.image.clone());
        (reference, s.input.digest.clone())
    });
    let pinned = ImageRef {
        digest: Some(digest),
        ..reference
    };
    let scan = QScannerScan {
        input: image_input(ctx, pinned),
        scanned_at: ctx.workflow_time().map(rfc3339).unwrap_or_default(),
    };
    // Time to wait for a free QScanner slot, plus the runs themselves.
    let mut options = options::qscanner_run(settings.qscanner_timeout_secs + 120, 6 * 3600);
    options.task_queue = settings.qscanner_task_queue.clone().or_else(|| {
        (!urgent)
            .then(|| settings.rescan_task_queue.clone())
            .flatten()
    });
    ctx.state_mut(|s| s.entity.in_flight = Some(InFlight::QScanner { forced, urgent }));
    let run = ctx.execute_activity(QScanImage, scan, options);
    // A run is not interrupted for the hand-over unless the history must be cut: it would run
    // again in the next run.
    Ok(match interruptible(ctx, run, Limit::Hard).await? {
        Ok(result) => (result, None),
        Err(e) if is_timeout(&e) => {
            let reason = format!("QScanner did not finish: {}", root_message(&e));
            (finished(ctx, ImageStatus::TimedOut, &reason), None)
        }
        Err(e) => failed(ctx, "QScanner", &e),
    })
}

/// Awaits `work` while taking in signals; if the run grows past `limit` meanwhile, it
/// continues as new (the work under way is carried in the entity's `in_flight`).
async fn interruptible<T>(
    ctx: &WorkflowContext<ImageScan>,
    work: impl futures::future::FusedFuture<Output = T>,
    limit: Limit,
) -> WorkflowResult<T> {
    futures::pin_mut!(work);
    loop {
        temporalio_sdk::workflows::select! {
            done = &mut work => return Ok(done),
            _ = ctx.wait_condition(has_news) => {
                take_in_signals(ctx);
                if time_to_continue(ctx, limit) {
                    return Err(continue_as_new(ctx));
                }
            }
        }
    }
}
