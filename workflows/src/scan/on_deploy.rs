//! `ScanOnDeploy`: one deploy or push event → every image scanned once → a verdict.
//!
//! 1. Read the event (an EventBridge ECR/ECS event, an Azure event or `{"images": [...]}`);
//!    events that need no scan end as `ignored`, malformed ones fail at once naming the field.
//! 2. Resolve every image to a digest (task definitions, services, ECR tags) — unless the event
//!    names every digest itself (ECR and ACR pushes, ECS task state changes): then there is
//!    nothing to resolve.
//! 3. Attach the deployment to each unique digest's `ImageScan` entity, which scans it at most
//!    once however many deployments ask (one local activity): an entity with a fresh result
//!    answers at once, the others are told of the deployment and answer it with a signal.
//! 4. Gather the answers into one verdict.
//!
//! A duplicate of a scanned digest thus costs a start, one local activity and one query: no
//! activity, timer, signal or search-attribute upsert (the bridge sets the attributes at start).
//! Runs started before this path keep the first one ([`CHEAP_PATH_PATCH`]).

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::clock::epoch_ms;
use crate::failure::{activity_failed, invalid_input};
use crate::options;
use crate::scan::contracts::{
    AttachDeployment, GetScanSettings, JudgeDeployment, ResolveImages, StartImageScanEntity,
};
use crate::scan::image_scan::input::{ImageScanInput, StartImageScan};
use crate::scan::model::{
    DeployedAt, ImageResult, ImageStatus, ResolvedImage, ScanOnDeployOutput, ScanSettings,
};
use crate::scan::profile::{GateScope, JudgeImages};
use crate::scan::{
    Classified, Rules, ScanRequest, classify, classify_before_resource_id_checks, classify_with,
    search,
};
use std::collections::BTreeMap;
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    LocalActivityOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// The patch that refuses Azure resource IDs with path tricks (`.`/`..` segments…).
pub const AZURE_RESOURCE_ID_PATCH: &str = "azure-resource-id-checks";

/// Marks runs that ignore ACR pushes of non-image artifacts (Helm charts, cosign signatures).
pub const ACR_ARTIFACTS_PATCH: &str = "acr-artifacts-ignored";

/// Marks runs that scan an ECS task once, at RUNNING (see [`Rules`]).
pub const TASK_RUNNING_ONLY_PATCH: &str = "scan-ecs-tasks-once-running";

/// Marks runs that attach to entities with `scan.Attach` (no resolve activity when the event
/// names the digests, no signal round trip for a fresh result), when they were started without
/// [`DESIGN_MEMO`].
pub const CHEAP_PATH_PATCH: &str = "scan-on-deploy-attach";

/// Marks runs that ask `gate.Judge` for their verdicts under their scope's gate profile (only
/// when the worker has a profiles file, so runs without one are unchanged).
pub const GATE_PROFILES_PATCH: &str = "gate-profiles";

/// The memo key qflows' own starts (the bridge, the CLI) set: such a run takes the current path
/// without a patch marker, whose search-attribute upsert would cost an action per event.
pub const DESIGN_MEMO: &str = "qflows.design";

/// The value of [`DESIGN_MEMO`] for the current design.
pub const DESIGN: &str = "attach";

/// How long a deployment waits for all its images' scans.
const WAIT_FOR_SCANS: Duration = Duration::from_secs(6 * 3600);

/// The deploy-time scan of one event.
#[workflow]
#[derive(Default)]
pub struct ScanOnDeploy {
    /// Answers from `ImageScan` entities, by digest.
    results: BTreeMap<String, ImageResult>,
}

#[workflow_methods]
impl ScanOnDeploy {
    /// Read, resolve, attach each digest to its scan, gather.
    #[run(name = "ScanOnDeploy")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        event: serde_json::Value,
    ) -> WorkflowResult<ScanOnDeployOutput> {
        let request = match read(ctx, &event)? {
            Classified::Ignored { reason } => return Ok(ignored(reason)),
            Classified::Scan(request) => request,
        };
        let current = ctx.memo().contains_key(DESIGN_MEMO) || ctx.patched(CHEAP_PATH_PATCH);
        if !current {
            return first_design(ctx, request).await;
        }
        let resolved = resolve(ctx, &request).await?;
        let starts = entity_starts(ctx, &request, &resolved);
        let settings = attach(ctx, &starts).await?;
        wait_for_answers(ctx, &starts).await;
        let images = gather(ctx, &resolved, &settings);
        let (profile, images) = judge(ctx, &request, &settings, images).await?;
        let already_set = !ctx.search_attributes().is_empty();
        if settings.search_attributes && !already_set {
            ctx.upsert_search_attributes(search::updates(
                &images,
                request.account_id.as_deref(),
                settings.profile_search_attribute,
            ));
        } else if settings.search_attributes && profile.is_some() {
            ctx.upsert_search_attributes(search::verdict_updates(
                &images,
                settings.profile_search_attribute,
            ));
        }
        Ok(ScanOnDeployOutput {
            profile,
            ..output(&request, images)
        })
    }

    /// An `ImageScan` entity's answer.
    #[signal(name = "image_result")]
    pub fn image_result(&mut self, _ctx: &mut SyncWorkflowContext<Self>, result: ImageResult) {
        self.results.insert(result.digest.clone(), result);
    }

    /// Results received so far.
    #[query(name = "results")]
    pub fn results(&self, _ctx: &WorkflowContextView) -> Vec<ImageResult> {
        self.results.values().cloned().collect()
    }
}

/// Classifies the event under the rules the run started with.
fn read(
    ctx: &mut WorkflowContext<ScanOnDeploy>,
    event: &serde_json::Value,
) -> WorkflowResult<Classified> {
    let classified = match classify(event) {
        // Refused for a path trick in an Azure resource ID since this patch; a run started
        // before goes on as it did (its resolve activity refuses the ID before any URL).
        Err(refused) => match classify_before_resource_id_checks(event) {
            Ok(before) if !ctx.patched(AZURE_RESOURCE_ID_PATCH) => Ok(before),
            _ => Err(refused),
        },
        classified => classified,
    };
    // Runs started before the task-state rule scanned every ECS task state change.
    let classified = classified.map_err(invalid_input)?;
    if matches!(classified, Classified::Ignored { .. })
        && is_task_before_running(event)
        && !ctx.patched(TASK_RUNNING_ONLY_PATCH)
    {
        let rules = Rules {
            scan_tasks_before_running: true,
            ..Rules::default()
        };
        return classify_with(event, rules).map_err(invalid_input);
    }
    // Runs started before the artifact rule scanned every ACR push.
    if matches!(classified, Classified::Ignored { .. })
        && crate::scan::is_acr_artifact_push(event)
        && !ctx.patched(ACR_ARTIFACTS_PATCH)
    {
        let rules = Rules {
            scan_acr_artifacts: true,
            ..Rules::default()
        };
        return classify_with(event, rules).map_err(invalid_input);
    }
    Ok(classified)
}

/// An `ECS Task State Change` of a task not yet running.
fn is_task_before_running(event: &serde_json::Value) -> bool {
    event["detail-type"] == "ECS Task State Change"
        && matches!(
            event["detail"]["lastStatus"].as_str(),
            Some("PROVISIONING" | "PENDING" | "ACTIVATING")
        )
}

fn ignored(reason: String) -> ScanOnDeployOutput {
    ScanOnDeployOutput {
        profile: None,
        status: "ignored".into(),
        reason: Some(reason),
        source: None,
        verdict: None,
        images: Vec::new(),
    }
}

/// The deployment's images with their digests: as the event names them when it names every
/// digest, else from the `aws.ResolveImages` activity.
async fn resolve(
    ctx: &WorkflowContext<ScanOnDeploy>,
    request: &ScanRequest,
) -> WorkflowResult<Vec<ResolvedImage>> {
    let named = !request.images.is_empty() && request.images.iter().all(|i| i.digest.is_some());
    if named {
        return Ok(request
            .images
            .iter()
            .map(|image| ResolvedImage {
                image: image.clone(),
                digest: image.digest.clone(),
                skipped: None,
            })
            .collect());
    }
    ctx.execute_activity(ResolveImages, request.clone(), options::retrying(120, 3600))
        .await
        .map_err(|e| activity_failed("resolve images", e))
}

/// One entity start per unique digest (images without one are reported as skipped).
fn entity_starts(
    ctx: &WorkflowContext<ScanOnDeploy>,
    request: &ScanRequest,
    resolved: &[ResolvedImage],
) -> Vec<StartImageScan> {
    let accepted_at_ms = epoch_ms(ctx.info().start_time());
    let mut starts: Vec<StartImageScan> = Vec::new();
    for image in resolved {
        let Some(digest) = image.digest.clone() else {
            continue;
        };
        if starts.iter().any(|s| s.input.digest == digest) {
            continue;
        }
        starts.push(StartImageScan {
            input: ImageScanInput {
                digest,
                image: image.image.clone(),
                event_accepted_at_ms: accepted_at_ms,
                carried: None,
                backfill: false,
            },
            deployed: DeployedAt {
                requester: ctx.workflow_id().to_string(),
                account_id: request.account_id.clone(),
                region: request.region.clone(),
                source: request.source,
                image: Some(image.image.clone()),
            },
        });
    }
    starts
}

/// Attaches the deployment to its entities (one local activity: a query each, and a
/// signal-with-start for those without a fresh result); the fresh answers are kept at once.
async fn attach(
    ctx: &WorkflowContext<ScanOnDeploy>,
    starts: &[StartImageScan],
) -> WorkflowResult<ScanSettings> {
    let options = LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(30))
        .schedule_to_close_timeout(Duration::from_secs(3600))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .build();
    let attached = ctx
        .execute_local_activity(AttachDeployment, starts.to_vec(), options)
        .await
        .map_err(|e| activity_failed("attach to the image scans", e))?;
    ctx.state_mut(|s| {
        for answer in attached.answers {
            s.results.insert(answer.digest.clone(), answer);
        }
    });
    Ok(attached.settings)
}

/// Waits until every digest has its answer, for at most [`WAIT_FOR_SCANS`] (no timer when all
/// were answered at once).
async fn wait_for_answers(ctx: &WorkflowContext<ScanOnDeploy>, starts: &[StartImageScan]) {
    let expected: Vec<String> = starts.iter().map(|s| s.input.digest.clone()).collect();
    let all = move |s: &ScanOnDeploy| expected.iter().all(|d| s.results.contains_key(d));
    if ctx.state(&all) {
        return;
    }
    temporalio_sdk::workflows::select! {
        _ = ctx.wait_condition(all) => {}
        _ = ctx.timer(WAIT_FOR_SCANS) => {}
    }
}

/// One result per image of the deployment: its digest's answer, or why there is none. Images
/// that could not be scanned get the configured unscanned verdict, explicitly (never `pass`
/// unless configured so).
fn gather(
    ctx: &WorkflowContext<ScanOnDeploy>,
    resolved: &[ResolvedImage],
    settings: &ScanSettings,
) -> Vec<ImageResult> {
    let answers = ctx.state(|s| s.results.clone());
    resolved
        .iter()
        .map(|image| {
            let answer = image.digest.as_ref().and_then(|d| answers.get(d).cloned());
            let mut result = match (answer, &image.digest) {
                (Some(result), _) => ImageResult {
                    image: image.image.to_string(),
                    ..result
                },
                (None, digest) => ImageResult::unscanned(
                    digest.clone().unwrap_or_default(),
                    image.image.to_string(),
                    if digest.is_some() {
                        ImageStatus::TimedOut
                    } else {
                        ImageStatus::Skipped
                    },
                    match (&image.skipped, digest) {
                        (Some(why), _) => why.clone(),
                        (None, None) => "no digest: not an ECR image, and the QScanner backend \
                                         is not configured"
                            .into(),
                        (None, Some(_)) => "no scan result in time".into(),
                    },
                ),
            };
            if result.status != ImageStatus::Scanned && result.verdict.is_none() {
                result.verdict = settings.unscanned_verdict;
            }
            result
        })
        .collect()
}

/// The images' verdicts under the deployment's gate profile, when the worker has profiles
/// (`gate.Judge`, a local activity); else as the entities gave them, under `default`.
async fn judge(
    ctx: &WorkflowContext<ScanOnDeploy>,
    request: &ScanRequest,
    settings: &ScanSettings,
    images: Vec<ImageResult>,
) -> WorkflowResult<(Option<String>, Vec<ImageResult>)> {
    if !settings.gate_profiles || !ctx.patched(GATE_PROFILES_PATCH) {
        return Ok((None, images));
    }
    let judge = JudgeImages {
        scope: GateScope::of_request(request),
        images,
    };
    let judged = ctx
        .execute_local_activity(JudgeDeployment, judge, options::local(30, 3600))
        .await
        .map_err(|e| activity_failed("judge the images under their gate profile", e))?;
    Ok((Some(judged.profile), judged.images))
}

fn output(request: &ScanRequest, images: Vec<ImageResult>) -> ScanOnDeployOutput {
    ScanOnDeployOutput {
        profile: None,
        status: "scanned".into(),
        reason: None,
        source: Some(request.source),
        verdict: images.iter().filter_map(|i| i.verdict).max(),
        images,
    }
}

/// The first design, for runs started before [`CHEAP_PATH_PATCH`]: settings by local activity,
/// always the resolve activity, one start activity per digest, always the wait's timer, and the
/// search attributes upserted per event.
async fn first_design(
    ctx: &mut WorkflowContext<ScanOnDeploy>,
    request: ScanRequest,
) -> WorkflowResult<ScanOnDeployOutput> {
    let settings = ctx
        .execute_local_activity(
            GetScanSettings,
            (),
            LocalActivityOptions::builder()
                .start_to_close_timeout(Duration::from_secs(10))
                .build(),
        )
        .await
        .map_err(|e| activity_failed("read scan settings", e))?;
    let resolved = ctx
        .execute_activity(ResolveImages, request.clone(), options::retrying(120, 3600))
        .await
        .map_err(|e| activity_failed("resolve images", e))?;
    let starts = entity_starts(ctx, &request, &resolved);
    for start in &starts {
        ctx.execute_activity(
            StartImageScanEntity,
            start.clone(),
            options::retrying(120, 3600),
        )
        .await
        .map_err(|e| activity_failed("start image scan", e))?;
    }
    let expected: Vec<String> = starts.iter().map(|s| s.input.digest.clone()).collect();
    temporalio_sdk::workflows::select! {
        _ = ctx.wait_condition(move |s: &ScanOnDeploy| expected.iter().all(|d| s.results.contains_key(d))) => {}
        _ = ctx.timer(WAIT_FOR_SCANS) => {}
    }
    let images = gather(ctx, &resolved, &settings);
    if settings.search_attributes {
        ctx.upsert_search_attributes(search::updates(
            &images,
            request.account_id.as_deref(),
            settings.profile_search_attribute,
        ));
    }
    Ok(output(&request, images))
}
