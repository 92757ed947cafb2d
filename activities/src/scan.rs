//! The activities behind `ScanOnDeploy` and `ImageScan`: image resolution, the per-digest entity's
//! start, the Qualys registry scan, and result collection. (The shared `EnsureRegistry` a scan
//! waits for, `registry.EnsureShared`, is in [`crate::registry`].)

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::failure::IntoFailure;
use crate::gate::{GateItem, GatePolicy, evaluate};
use crate::notify::{Notification, NotificationKind, Notifier};
use crate::qualys::{Image, OnDemandSchedule, QualysClient, RepoTag};
use crate::resolve::{Resolver, resolve_request};
use crate::results::{ResultsStore, SCHEMA_VERSION};
use qflows_workflows::scan::ScanRequest;
use qflows_workflows::scan::model::{
    CollectResults, ImageResult, ImageScanInput, ImageStatus, NotifyReason, NotifyRequest,
    QualysImageState, ResolvedImage, ScanSettings, StartImageScan, SubmitRegistryScan,
    image_scan_id,
};
use qflows_workflows::{ImageScan, contracts};
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_client::{Client, WorkflowStartOptions};
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::info;

/// State shared by the scan activities.
pub struct ScanActivities {
    /// The Qualys client.
    pub qualys: QualysClient,
    /// ECS/ECR resolution.
    pub resolver: Arc<Resolver>,
    /// Temporal, to start `ImageScan` entities.
    pub temporal: Client,
    /// The task queue `ImageScan` entities run on.
    pub task_queue: String,
    /// Poll, timeout and TTL settings for `ImageScan`.
    pub settings: ScanSettings,
    /// The severity gate.
    pub gate: GatePolicy,
    /// Where full reports go.
    pub results: ResultsStore,
    /// Alert channels.
    pub notifier: Notifier,
}

fn temporal_failure(what: &str, err: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(format!("{what}: {err}"))
            .type_name("TemporalUnavailable".to_string())
            .build(),
    )
}

/// Whether Qualys' image record is this image: same registry host and repository, and the same
/// manifest digest (or, when Qualys lists no digests, the same tag).
fn matches(image: &Image, input: &ImageScanInput) -> bool {
    let host = input.image.registry.to_ascii_lowercase();
    let repository = &input.image.repository;
    let digest_match = image.repo_digests.iter().any(|d| {
        d.digest.as_deref() == Some(input.digest.as_str())
            && d.repository.as_deref().is_none_or(|r| r == repository)
            && d.registry
                .as_deref()
                .is_none_or(|r| r.eq_ignore_ascii_case(&host))
    });
    let tag_match = input.image.tag.as_deref().is_some_and(|tag| {
        image.repo.iter().any(|r| {
            r.registry
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(&host))
                && r.repository.as_deref() == Some(repository.as_str())
                && r.tag.as_deref() == Some(tag)
        })
    });
    digest_match || tag_match
}

#[activities]
impl ScanActivities {
    /// The worker's scan settings.
    #[activity(definition = contracts::GetScanSettings)]
    pub async fn settings(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<ScanSettings, ActivityError> {
        Ok(self.settings.clone())
    }

    /// Finds every image of the deployment and its digest.
    #[activity(definition = contracts::ResolveImages)]
    pub async fn resolve_images(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ScanRequest,
    ) -> Result<Vec<ResolvedImage>, ActivityError> {
        resolve_request(&self.resolver, &request)
            .await
            .map_err(IntoFailure::into_failure)
    }

    /// Starts the digest's `ImageScan` entity, or signals the running one.
    #[activity(definition = contracts::StartImageScanEntity)]
    pub async fn start_image_scan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        start: StartImageScan,
    ) -> Result<(), ActivityError> {
        let id = image_scan_id(&start.input.digest);
        self.temporal
            .signal_with_start_workflow(
                ImageScan::run,
                start.input,
                ImageScan::deployed,
                start.deployed,
                WorkflowStartOptions::new(self.task_queue.clone(), id.clone()).build(),
            )
            .await
            .map_err(|e| temporal_failure(&format!("signal-with-start {id}"), e))?;
        crate::metrics::scan_requested();
        Ok(())
    }

    /// Where Qualys stands on the image.
    #[activity(definition = contracts::FindQualysImage)]
    pub async fn find_image(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ImageScanInput,
    ) -> Result<QualysImageState, ActivityError> {
        let images = self
            .qualys
            .find_images_by_repo(&input.image.repository)
            .await
            .map_err(IntoFailure::into_failure)?;
        let Some(found) = images.into_iter().find(|i| matches(i, &input)) else {
            return Ok(QualysImageState::Unknown);
        };
        // The list may lag behind the image itself: ask for the image by its id.
        let detail = self
            .qualys
            .image(&found.sha)
            .await
            .map_err(IntoFailure::into_failure)?;
        let status = detail.and_then(|d| d.scan_status).unwrap_or_default();
        Ok(if status.eq_ignore_ascii_case("SUCCESS") {
            QualysImageState::Scanned { sha: found.sha }
        } else {
            QualysImageState::Pending { sha: found.sha }
        })
    }

    /// Submits an on-demand registry scan for the image's repository and tag.
    #[activity(definition = contracts::SubmitScan)]
    pub async fn submit_scan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        submit: SubmitRegistryScan,
    ) -> Result<(), ActivityError> {
        let Some(tag) = submit.image.tag.clone() else {
            return Err(ActivityError::application(
                ApplicationFailure::non_retryable(format!(
                    "{} has no tag: a Qualys registry schedule selects images by repository and tag",
                    submit.image
                )),
            ));
        };
        let short = submit.digest.trim_start_matches("sha256:");
        let schedule = OnDemandSchedule {
            name: format!("qflows-{}", &short[..short.len().min(12)]),
            repo_tags: vec![RepoTag {
                repo: submit.image.repository.clone(),
                tag,
            }],
            force_scan: true,
            registry_type: "AWS".to_string(),
        };
        self.qualys
            .create_on_demand_schedule(&submit.registry_uuid, &schedule)
            .await
            .map_err(IntoFailure::into_failure)?;
        crate::metrics::scan_submitted(
            crate::metrics::Backend::Registry,
            submit.event_accepted_at_ms,
        );
        info!(image = %submit.image, digest = %submit.digest, "Qualys registry scan submitted");
        Ok(())
    }

    /// Fetches every vulnerability, stores the full report, applies the gate.
    #[activity(definition = contracts::CollectScanResults)]
    pub async fn collect_results(
        self: Arc<Self>,
        _ctx: ActivityContext,
        collect: CollectResults,
    ) -> Result<ImageResult, ActivityError> {
        let vulns = self
            .qualys
            .image_vulnerabilities(&collect.sha)
            .await
            .map_err(IntoFailure::into_failure)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (verdict, summary) = evaluate(&self.gate, vulns.iter().map(GateItem::from), 0, now);
        let input = &collect.input;
        let document = json!({
            "schemaVersion": SCHEMA_VERSION,
            "image": input.image.to_string(),
            "registry": input.image.registry,
            "repository": input.image.repository,
            "tag": input.image.tag,
            "digest": input.digest,
            "qualysImageId": collect.sha,
            "backend": "registry",
            "scannedAt": collect.scanned_at,
            "verdict": verdict,
            "summary": summary,
            "gate": self.gate,
            "vulnerabilities": vulns,
        });
        self.results
            .store_scan(
                input,
                "registry",
                &collect.scanned_at,
                verdict,
                summary,
                &document,
            )
            .await
            .map_err(IntoFailure::into_failure)
    }

    /// Reports a result to SNS and/or the webhook (a no-op when neither is configured).
    #[activity(definition = contracts::Notify)]
    pub async fn notify(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: NotifyRequest,
    ) -> Result<(), ActivityError> {
        if !self.notifier.is_enabled() {
            return Ok(());
        }
        let result = &request.result;
        let parsed = qflows_workflows::scan::ImageRef::parse(&result.image).ok();
        let kind = match request.reason {
            NotifyReason::VerdictChanged => NotificationKind::VerdictChanged,
            NotifyReason::SecretsFound => NotificationKind::SecretsFound,
            NotifyReason::ScanFailed => NotificationKind::ScanFailed,
        };
        let trigger = request
            .deployed
            .as_ref()
            .map(|d| {
                serde_json::to_value(d.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "rescan".to_string());
        let mut n = Notification::new(
            kind,
            result.image.clone(),
            parsed
                .as_ref()
                .map(|p| p.repository.clone())
                .unwrap_or_default(),
            result.digest.clone(),
            trigger,
        );
        n.tag = parsed.and_then(|p| p.tag);
        n.account_id = request.deployed.as_ref().and_then(|d| d.account_id.clone());
        n.region = request.deployed.as_ref().and_then(|d| d.region.clone());
        n.verdict = result.verdict;
        n.previous_verdict = request.previous_verdict;
        n.summary = result.summary;
        n.result_ref = result.result_ref.clone();
        n.error = (result.status != ImageStatus::Scanned)
            .then(|| result.reason.clone())
            .flatten();
        n.scanned_at = result.scanned_at.clone();
        self.notifier
            .send(&n)
            .await
            .map_err(IntoFailure::into_failure)
    }
}
