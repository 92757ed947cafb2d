//! `ScanOnDeploy`: one deploy or push event → every image scanned once → a verdict.
//!
//! 1. Read the event (an EventBridge ECR/ECS event or `{"images": [...]}`); events that need no
//!    scan end as `ignored`, malformed ones fail at once naming the field.
//! 2. Resolve every image to a digest (task definitions, services, ECR tags).
//! 3. Hand each unique digest to its `ImageScan` entity, which scans it at most once however
//!    many deployments ask, and answers with a signal.
//! 4. Gather the answers into one verdict.

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::clock::epoch_ms;
use crate::contracts::{GetScanSettings, ResolveImages, StartImageScanEntity};
use crate::failure::{activity_failed, invalid_input};
use crate::options;
use crate::scan::model::{
    DeployedAt, ImageResult, ImageScanInput, ImageStatus, ScanOnDeployOutput, StartImageScan,
};
use crate::scan::{
    Classified, Rules, classify, classify_before_resource_id_checks, classify_with, search,
};
use std::collections::BTreeMap;
use std::time::Duration;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    LocalActivityOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// The patch that refuses Azure resource IDs with path tricks (`.`/`..` segments…).
pub const AZURE_RESOURCE_ID_PATCH: &str = "azure-resource-id-checks";

/// How long a deployment waits for all its images' scans.
const WAIT_FOR_SCANS: Duration = Duration::from_secs(6 * 3600);

/// Marks runs that ignore ACR pushes of non-image artifacts (Helm charts, cosign signatures).
pub const ACR_ARTIFACTS_PATCH: &str = "acr-artifacts-ignored";

/// Marks runs that scan an ECS task once, at RUNNING (see [`Rules`]).
pub const TASK_RUNNING_ONLY_PATCH: &str = "scan-ecs-tasks-once-running";

/// An `ECS Task State Change` of a task not yet running.
fn is_task_before_running(event: &serde_json::Value) -> bool {
    event["detail-type"] == "ECS Task State Change"
        && matches!(
            event["detail"]["lastStatus"].as_str(),
            Some("PROVISIONING" | "PENDING" | "ACTIVATING")
        )
}

/// The deploy-time scan of one event.
#[workflow]
#[derive(Default)]
pub struct ScanOnDeploy {
    /// Answers from `ImageScan` entities, by digest.
    results: BTreeMap<String, ImageResult>,
}

#[workflow_methods]
impl ScanOnDeploy {
    /// Classify, resolve, scan each digest once, gather.
    #[run(name = "ScanOnDeploy")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        event: serde_json::Value,
    ) -> WorkflowResult<ScanOnDeployOutput> {
        let classified = match classify(&event) {
            // Refused for a path trick in an Azure resource ID since this patch; a run started
            // before goes on as it did (its resolve activity refuses the ID before any URL).
            Err(refused) => match classify_before_resource_id_checks(&event) {
                Ok(before) if !ctx.patched(AZURE_RESOURCE_ID_PATCH) => Ok(before),
                _ => Err(refused),
            },
            classified => classified,
        };
        // Runs started before the task-state rule scanned every ECS task state change.
        let mut classified = classified.map_err(invalid_input)?;
        if matches!(classified, Classified::Ignored { .. })
            && is_task_before_running(&event)
            && !ctx.patched(TASK_RUNNING_ONLY_PATCH)
        {
            let rules = Rules {
                scan_tasks_before_running: true,
                ..Rules::default()
            };
            classified = classify_with(&event, rules).map_err(invalid_input)?;
        }
        // Runs started before the artifact rule scanned every ACR push.
        if matches!(classified, Classified::Ignored { .. })
            && crate::scan::is_acr_artifact_push(&event)
            && !ctx.patched(ACR_ARTIFACTS_PATCH)
        {
            let rules = Rules {
                scan_acr_artifacts: true,
                ..Rules::default()
            };
            classified = classify_with(&event, rules).map_err(invalid_input)?;
        }
        let request = match classified {
            Classified::Ignored { reason } => {
                return Ok(ScanOnDeployOutput {
                    status: "ignored".into(),
                    reason: Some(reason),
                    source: None,
                    verdict: None,
                    images: Vec::new(),
                });
            }
            Classified::Scan(request) => request,
        };

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

        // One entity per unique digest; images without one are reported as skipped.
        let accepted_at_ms = epoch_ms(ctx.info().start_time());
        let mut digests: Vec<String> = Vec::new();
        for image in resolved.iter() {
            let Some(digest) = image.digest.clone() else {
                continue;
            };
            if digests.contains(&digest) {
                continue;
            }
            digests.push(digest.clone());
            let start = StartImageScan {
                input: ImageScanInput {
                    digest,
                    image: image.image.clone(),
                    event_accepted_at_ms: accepted_at_ms,
                    carried: None,
                },
                deployed: DeployedAt {
                    requester: ctx.workflow_id().to_string(),
                    account_id: request.account_id.clone(),
                    region: request.region.clone(),
                    source: request.source,
                    image: Some(image.image.clone()),
                },
            };
            ctx.execute_activity(StartImageScanEntity, start, options::retrying(120, 3600))
                .await
                .map_err(|e| activity_failed("start image scan", e))?;
        }

        let expected = digests.clone();
        temporalio_sdk::workflows::select! {
            _ = ctx.wait_condition(move |s: &Self| expected.iter().all(|d| s.results.contains_key(d))) => {}
            _ = ctx.timer(WAIT_FOR_SCANS) => {}
        }

        let answers = ctx.state(|s| s.results.clone());
        let images: Vec<ImageResult> = resolved
            .iter()
            .map(|image| {
                let answer = image.digest.as_ref().and_then(|d| answers.get(d).cloned());
                match (answer, &image.digest) {
                    (Some(result), _) => ImageResult {
                        image: image.image.to_string(),
                        ..result
                    },
                    (None, digest) => ImageResult {
                        digest: digest.clone().unwrap_or_default(),
                        image: image.image.to_string(),
                        status: if digest.is_some() {
                            ImageStatus::TimedOut
                        } else {
                            ImageStatus::Skipped
                        },
                        verdict: None,
                        summary: None,
                        result_ref: None,
                        reason: Some(match (&image.skipped, digest) {
                            (Some(why), _) => why.clone(),
                            (None, None) => "no digest: not an ECR image, and the QScanner backend is not configured".into(),
                            (None, Some(_)) => "no scan result in time".into(),
                        }),
                        backend: None,
                        scanned_at: None,
                    },
                }
            })
            .collect();
        // Images that could not be scanned get the configured verdict, explicitly.
        let images: Vec<ImageResult> = images
            .into_iter()
            .map(|mut image| {
                if image.status != ImageStatus::Scanned && image.verdict.is_none() {
                    image.verdict = settings.unscanned_verdict;
                }
                image
            })
            .collect();
        let verdict = images.iter().filter_map(|i| i.verdict).max();
        if settings.search_attributes {
            ctx.upsert_search_attributes(search::updates(&images, request.account_id.as_deref()));
        }
        Ok(ScanOnDeployOutput {
            status: "scanned".into(),
            reason: None,
            source: Some(request.source),
            verdict,
            images,
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
