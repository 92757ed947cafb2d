//! The activities behind `ScanOnDeploy` and `ImageScan`: image resolution, the per-digest entity's
//! start, the Qualys registry scan, and result collection. (The shared `EnsureRegistry` a scan
//! waits for, `registry.EnsureShared`, is in [`crate::registry`].)

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

mod qscanner;

pub use qscanner::QScannerActivities;

use crate::failure::IntoFailure;
use crate::gate::judge::Judge;
use crate::gate::{GateItem, evaluate};
use crate::heartbeat;
use crate::notify::{Notification, NotificationKind, Notifier};
use crate::qualys::{Image, OnDemandSchedule, QualysClient, RepoTag};
use crate::resolve::{Resolver, resolve_request};
use crate::results::{ResultsStore, report_fields};
use qflows_workflows::FailureType;
use qflows_workflows::ImageScan;
use qflows_workflows::scan::ImageRef;
use qflows_workflows::scan::contracts;
use qflows_workflows::scan::image_scan::input::{CollectResults, ImageScanInput, StartImageScan};
use qflows_workflows::scan::model::{
    Attached, EntityLookup, FindImage, FindOrSubmit, ImageResult, ImageStatus, ImageTagsRequest,
    NotifyReason, NotifyRequest, QualysImageState, ResolvedImage, ScanFinished, ScanPreparation,
    ScanSettings, ScanStep, SubmitRegistryScan, SubmitWhen, image_scan_id,
};
use qflows_workflows::scan::profile::{JudgeImages, Judged};
use qflows_workflows::scan::{RegistryKind, ScanRequest};
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_client::{Client, WorkflowQueryOptions, WorkflowStartOptions};
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
    /// Temporal, to start `ImageScan` entities and query them.
    pub temporal: Client,
    /// The task queue new `ImageScan` entities run on (`<task queue>-scan`).
    pub task_queue: String,
    /// Poll, timeout and TTL settings for `ImageScan`.
    pub settings: ScanSettings,
    /// The gate profiles: `default` gives the entity's verdicts, the scope's profile a
    /// deployment's (`gate.Judge`).
    pub judge: Arc<Judge>,
    /// Where full reports go.
    pub results: ResultsStore,
    /// Alert channels.
    pub notifier: Notifier,
}

fn temporal_failure(what: &str, err: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(format!("{what}: {err}"))
            .type_name(FailureType::TemporalUnavailable.into())
            .build(),
    )
}

/// A manifest digest as 64 lower-case hex digits (Qualys lists them without `sha256:`).
fn bare_digest(digest: &str) -> String {
    digest
        .trim()
        .trim_start_matches("sha256:")
        .to_ascii_lowercase()
}

/// The digests a Qualys record lists.
fn listed_digests(image: &Image) -> impl Iterator<Item = String> + '_ {
    image
        .repo_digests
        .iter()
        .filter_map(|d| d.digest.as_deref())
        .map(bare_digest)
}

/// Whether a Qualys record lists `digest` for this registry and repository.
fn lists_digest(image: &Image, host: &str, repository: &str, digest: &str) -> bool {
    let digest = bare_digest(digest);
    image.repo_digests.iter().any(|d| {
        d.digest.as_deref().map(bare_digest).as_deref() == Some(digest.as_str())
            && d.repository.as_deref().is_none_or(|r| r == repository)
            && d.registry
                .as_deref()
                .is_none_or(|r| r.eq_ignore_ascii_case(host))
    })
}

/// Which of Qualys' records is the image `host/repository@digest` (scanned by `tag`).
///
/// The digest is the identity: a record is this image when it lists the digest. A record that
/// lists no digest at all may be matched by its tag, but only when no record lists a digest
/// under that tag — a tag that has carried another digest (a tag that moved, as `latest` does
/// on every push) identifies nothing.
fn identify<'a>(
    records: &'a [Image],
    host: &str,
    repository: &str,
    tag: Option<&str>,
    digest: &str,
) -> Option<&'a Image> {
    if let Some(found) = records
        .iter()
        .find(|i| lists_digest(i, host, repository, digest))
    {
        return Some(found);
    }
    let tag = tag?;
    let carries_tag = |i: &Image| {
        i.repo.iter().any(|r| {
            r.registry
                .as_deref()
                .is_some_and(|h| h.eq_ignore_ascii_case(host))
                && r.repository.as_deref() == Some(repository)
                && r.tag.as_deref() == Some(tag)
        })
    };
    let tagged: Vec<&Image> = records.iter().filter(|i| carries_tag(i)).collect();
    if tagged.iter().any(|i| listed_digests(i).next().is_some()) {
        return None;
    }
    tagged.into_iter().next()
}

impl ScanActivities {
    /// Where Qualys stands on `host/repository@digest`, looked up through `tag`: the listing is
    /// narrowed to the tag and read newest first, stopping at the record that lists the digest,
    /// so the calls do not grow with the repository. `newer_than_ms`: only a scan Qualys
    /// finished after that counts.
    async fn qualys_state(
        &self,
        image: &ImageRef,
        digest: &str,
        newer_than_ms: Option<u64>,
    ) -> Result<QualysImageState, ActivityError> {
        let host = image.registry.to_ascii_lowercase();
        let repository = image.repository.as_str();
        let tag = image.tag.as_deref();
        let records = self
            .qualys
            .find_images(repository, tag, |i| {
                lists_digest(i, &host, repository, digest)
            })
            .await
            .map_err(IntoFailure::into_failure)?;
        let Some(found) = identify(&records, &host, repository, tag, digest) else {
            return Ok(QualysImageState::Unknown);
        };
        // The list may lag behind the image itself: ask for the image by its id.
        let detail = self
            .qualys
            .image(&found.sha)
            .await
            .map_err(IntoFailure::into_failure)?;
        let sha = found.sha.clone();
        let Some(detail) = detail else {
            return Ok(QualysImageState::Pending { sha });
        };
        let done = detail
            .scan_status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("SUCCESS"));
        let scanned_ms = detail.last_scanned_ms();
        let new_enough = newer_than_ms.is_none_or(|t| scanned_ms.is_some_and(|s| s > t));
        // The build time, as the detail (else the listing) says; not a number: unknown.
        let created_ms = [detail.created.as_deref(), found.created.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|c| c.trim().parse::<u64>().ok());
        Ok(if done && new_enough {
            QualysImageState::Scanned {
                sha,
                scanned_ms,
                created_ms,
            }
        } else {
            QualysImageState::Pending { sha }
        })
    }
}

impl ScanActivities {
    /// The entity's `lookup` answer; `None` when there is no entity running (or it cannot be
    /// asked now: then the deployment attaches by signal).
    async fn lookup(&self, digest: &str) -> Option<EntityLookup> {
        let answer = self
            .temporal
            .get_workflow_handle::<ImageScan>(image_scan_id(digest))
            .query(ImageScan::lookup, (), WorkflowQueryOptions::default())
            .await
            .ok()?;
        crate::metrics::entity_queried();
        Some(answer)
    }

    /// Starts the digest's entity on the entity task queue, or signals the running one
    /// (signal-with-start: one action either way).
    async fn attach_one(&self, start: StartImageScan) -> Result<(), ActivityError> {
        let id = image_scan_id(&start.input.digest);
        let mut options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone()).build();
        options.memo = Some(design_memo());
        self.temporal
            .signal_with_start_workflow(
                ImageScan::run,
                start.input,
                ImageScan::deployed,
                start.deployed,
                options,
            )
            .await
            .map_err(|e| temporal_failure(&format!("signal-with-start {id}"), e))?;
        crate::metrics::scan_requested();
        Ok(())
    }

    /// Creates the on-demand schedule (`forceScan`) for the image's repository and tag.
    async fn submit(&self, submit: &SubmitRegistryScan) -> Result<(), ActivityError> {
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
    async fn collect(&self, collect: &CollectResults) -> Result<ImageResult, ActivityError> {
        let vulns = self
            .qualys
            .image_vulnerabilities(&collect.sha)
            .await
            .map_err(IntoFailure::into_failure)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let gate = self.judge.profiles().default_profile().gate.clone();
        let (verdict, summary) = evaluate(&gate, vulns.iter().map(GateItem::from), 0, now);
        let input = &collect.input;
        let mut document = report_fields(
            input,
            "registry",
            &collect.scanned_at,
            verdict,
            &summary,
            &gate,
        );
        document.insert("qualysImageId".into(), json!(collect.sha));
        document.insert("imageCreatedMs".into(), json!(collect.created_ms));
        document.insert("vulnerabilities".into(), json!(vulns));
        let document = serde_json::Value::Object(document);
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

    /// [`Self::find_or_submit`]'s work.
    async fn find_or_submit_now(&self, request: FindOrSubmit) -> Result<ScanStep, ActivityError> {
        let find = &request.find;
        let state = match request.submit {
            SubmitWhen::Always => None,
            _ => Some(
                self.qualys_state(&find.image, &find.digest, find.newer_than_ms)
                    .await?,
            ),
        };
        let submit = match (&state, request.submit) {
            (
                Some(QualysImageState::Scanned {
                    sha,
                    scanned_ms,
                    created_ms,
                }),
                _,
            ) => {
                return Ok(ScanStep::Scanned {
                    sha: sha.clone(),
                    scanned_ms: *scanned_ms,
                    created_ms: *created_ms,
                });
            }
            (_, SubmitWhen::Always) => true,
            (_, SubmitWhen::Never) => false,
            (Some(QualysImageState::Pending { .. }), SubmitWhen::IfUnknown) => false,
            _ => true,
        };
        if !submit {
            return Ok(ScanStep::Underway);
        }
        let submission = SubmitRegistryScan {
            registry_uuid: request.registry_uuid.clone(),
            image: find.image.clone(),
            digest: find.digest.clone(),
            event_accepted_at_ms: request.event_accepted_at_ms,
        };
        self.submit(&submission).await?;
        Ok(ScanStep::Submitted)
    }

    /// [`Self::await_results`]'s work.
    async fn await_results_now(&self, find: FindImage) -> Result<ScanFinished, ActivityError> {
        let state = self
            .qualys_state(&find.image, &find.digest, find.newer_than_ms)
            .await?;
        let QualysImageState::Scanned {
            sha,
            scanned_ms,
            created_ms,
        } = state
        else {
            return Err(still_scanning(&find.image, &state));
        };
        let collect = CollectResults {
            sha,
            input: ImageScanInput {
                digest: find.digest.clone(),
                image: find.image.clone(),
                event_accepted_at_ms: None,
                carried: None,
                backfill: false,
            },
            scanned_at: qflows_workflows::clock::rfc3339(SystemTime::now()),
            created_ms,
        };
        Ok(ScanFinished {
            result: self.collect(&collect).await?,
            qualys_scanned_ms: scanned_ms,
        })
    }
}

/// Starts the digest's entity now, on `task_queue`, unless it runs already — before the deploy
/// workflow that will attach to it runs its first task: in a burst, a new digest's scan begins
/// without waiting behind the queue of deploy workflows (`qflows bridge` does this once per
/// new digest).
pub async fn start_entity(
    client: &Client,
    task_queue: &str,
    input: ImageScanInput,
) -> Result<(), temporalio_client::errors::WorkflowStartError> {
    let id = image_scan_id(&input.digest);
    let mut options = WorkflowStartOptions::new(task_queue.to_string(), id)
        .id_conflict_policy(temporalio_client::WorkflowIdConflictPolicy::UseExisting)
        .build();
    options.memo = Some(design_memo());
    client
        .start_workflow(ImageScan::run, input, options)
        .await?;
    Ok(())
}

/// The memo qflows sets on the workflows it starts: they take the current design without a
/// patch marker (see `qflows_workflows::scan::on_deploy::DESIGN_MEMO`).
pub fn design_memo() -> temporalio_common::MemoValues {
    let mut memo = temporalio_common::MemoValues::new();
    memo.insert(
        qflows_workflows::scan::on_deploy::DESIGN_MEMO,
        qflows_workflows::scan::on_deploy::DESIGN,
    );
    memo
}

/// "Not finished yet" from [`ScanActivities::await_scan`]: retryable, so the activity's retry
/// policy is the poll schedule. Not counted as a failure: it is the normal way to wait.
fn still_scanning(image: &ImageRef, state: &QualysImageState) -> ActivityError {
    let seen = match state {
        QualysImageState::Unknown => "not known to Qualys yet",
        _ => "scan not finished",
    };
    ActivityError::application(
        ApplicationFailure::builder(format!("{image}: {seen}"))
            .type_name(FailureType::QualysScanPending.into())
            .build(),
    )
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

    /// A deployment's images under its scope's gate profile, from their stored reports.
    #[activity(definition = contracts::JudgeDeployment)]
    pub async fn judge(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: JudgeImages,
    ) -> Result<Judged, ActivityError> {
        self.judge
            .judge_images(request)
            .await
            .map_err(IntoFailure::into_failure)
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

    /// Starts the digest's `ImageScan` entity, or signals the running one (`ScanOnDeploy` runs
    /// from before `scan.Attach`).
    #[activity(definition = contracts::StartImageScanEntity)]
    pub async fn start_image_scan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        start: StartImageScan,
    ) -> Result<(), ActivityError> {
        self.attach_one(start).await
    }

    /// A deployment's digests: a fresh result answers at once (one query); every other entity
    /// is told of the deployment (signal-with-start), and will answer it.
    #[activity(definition = contracts::AttachDeployment)]
    pub async fn attach(
        self: Arc<Self>,
        _ctx: ActivityContext,
        starts: Vec<StartImageScan>,
    ) -> Result<Attached, ActivityError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let lookups =
            futures::future::join_all(starts.iter().map(|s| self.lookup(&s.input.digest))).await;
        let mut answers = Vec::new();
        for (start, lookup) in starts.into_iter().zip(lookups) {
            match lookup.as_ref().and_then(|l| l.fresh_at(now)) {
                Some(fresh) => {
                    crate::metrics::scan_requested();
                    answers.push(fresh.clone());
                }
                None => self.attach_one(start).await?,
            }
        }
        Ok(Attached {
            settings: self.settings.clone(),
            answers,
        })
    }

    /// Where Qualys stands on the image (the first `ImageScan` design), matched by digest.
    #[activity(definition = contracts::FindQualysImage)]
    pub async fn find_image(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ImageScanInput,
    ) -> Result<QualysImageState, ActivityError> {
        self.qualys_state(&input.image, &input.digest, None).await
    }

    /// Looks the digest up in Qualys and submits a scan unless `submit` says it is not needed.
    #[activity(definition = contracts::FindOrSubmitScan)]
    pub async fn find_or_submit(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: FindOrSubmit,
    ) -> Result<ScanStep, ActivityError> {
        heartbeat::beating(&ctx, "asking Qualys", self.find_or_submit_now(request)).await
    }

    /// One poll of a submitted scan; the attempt that finds it finished collects its results.
    /// Until then a retryable "still scanning" failure: the retry policy is the poll schedule.
    #[activity(definition = contracts::AwaitScanResults)]
    pub async fn await_results(
        self: Arc<Self>,
        ctx: ActivityContext,
        find: FindImage,
    ) -> Result<ScanFinished, ActivityError> {
        heartbeat::beating(&ctx, "polling Qualys", self.await_results_now(find)).await
    }

    /// The tags ECR holds for the digest now (`None`: the worker may not ask).
    #[activity(definition = contracts::EcrImageTags)]
    pub async fn ecr_image_tags(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ImageTagsRequest,
    ) -> Result<Option<Vec<String>>, ActivityError> {
        let RegistryKind::Ecr {
            account_id, region, ..
        } = request.image.kind()
        else {
            return Ok(None);
        };
        self.resolver
            .ecr_image_tags(
                &account_id,
                &region,
                &request.image.repository,
                &request.digest,
            )
            .await
            .map_err(IntoFailure::into_failure)
    }

    /// The worker's settings now, and the digest's last verdict from the results store.
    #[activity(definition = contracts::PrepareScan)]
    pub async fn prepare(
        self: Arc<Self>,
        _ctx: ActivityContext,
        digest: String,
    ) -> Result<ScanPreparation, ActivityError> {
        let last_verdict = self
            .results
            .last_verdict(&digest)
            .await
            .map_err(IntoFailure::into_failure)?;
        Ok(ScanPreparation {
            settings: self.settings.clone(),
            last_verdict,
        })
    }

    /// Submits an on-demand registry scan for the image's repository and tag.
    #[activity(definition = contracts::SubmitScan)]
    pub async fn submit_scan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        submit: SubmitRegistryScan,
    ) -> Result<(), ActivityError> {
        self.submit(&submit).await
    }

    /// Fetches every vulnerability, stores the full report, applies the gate.
    #[activity(definition = contracts::CollectScanResults)]
    pub async fn collect_results(
        self: Arc<Self>,
        ctx: ActivityContext,
        collect: CollectResults,
    ) -> Result<ImageResult, ActivityError> {
        heartbeat::beating(&ctx, "collecting results", self.collect(&collect)).await
    }

    /// Reports a result to SNS and/or the webhook (a no-op when neither is configured). Kept
    /// for `ImageScan` runs of the first design; new ones alert per channel.
    #[activity(definition = contracts::Notify)]
    pub async fn notify(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: NotifyRequest,
    ) -> Result<(), ActivityError> {
        if !self.notifier.is_enabled() {
            return Ok(());
        }
        self.notifier
            .send(&notification(&request))
            .await
            .map_err(IntoFailure::into_failure)
    }

    /// Publishes an alert to SNS only (a no-op when no topic is configured).
    #[activity(definition = contracts::NotifySns)]
    pub async fn notify_sns(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: NotifyRequest,
    ) -> Result<(), ActivityError> {
        self.notifier
            .send_sns(&notification(&request))
            .await
            .map_err(IntoFailure::into_failure)
    }

    /// Posts an alert to the webhook only (a no-op when none is configured).
    #[activity(definition = contracts::NotifyWebhook)]
    pub async fn notify_webhook(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: NotifyRequest,
    ) -> Result<(), ActivityError> {
        self.notifier
            .send_webhook(&notification(&request))
            .await
            .map_err(IntoFailure::into_failure)
    }
}

/// The notification a request describes. Its `id` is the same on every channel and every
/// retry (digest, scan time, kind), so receivers can drop duplicates.
fn notification(request: &NotifyRequest) -> Notification {
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
    n.running_in = request.running.clone();
    n.id = Some(format!(
        "{}/{}/{}",
        result.digest,
        result.scanned_at.as_deref().unwrap_or("-"),
        kind.as_str()
    ));
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HOST: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";

    fn record(sha: &str, tag: &str, digest: Option<&str>) -> Image {
        let mut v = json!({
            "sha": sha,
            "repo": [{"registry": HOST, "repository": "app", "tag": tag}],
        });
        if let Some(d) = digest {
            v["repoDigests"] = json!([{"registry": HOST, "repository": "app", "digest": d}]);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_digest_is_the_identity_and_a_moved_tag_identifies_nothing() {
        let (d1, d2) = ("1".repeat(64), "2".repeat(64));
        let old = record("a", "latest", Some(&d1));
        // Yesterday's image still carries `latest`; today's digest is not in Qualys yet.
        let records = vec![old.clone()];
        let ours = format!("sha256:{d2}");
        assert!(identify(&records, HOST, "app", Some("latest"), &ours).is_none());
        // Qualys lists digests without `sha256:`; case does not matter.
        let found = identify(
            &records,
            HOST,
            "app",
            Some("latest"),
            &format!("sha256:{d1}"),
        );
        assert_eq!(found.map(|i| i.sha.as_str()), Some("a"));
        let upper = format!("sha256:{}", d1.to_ascii_uppercase());
        assert!(identify(&records, HOST, "app", None, &upper).is_some());
        // Another repository's record with the same digest is not this image's.
        assert!(identify(&records, HOST, "other", None, &format!("sha256:{d1}")).is_none());
        // A record without digests matches by tag only when no record lists a digest there.
        let undigested = record("b", "1.0", None);
        assert_eq!(
            identify(
                std::slice::from_ref(&undigested),
                HOST,
                "app",
                Some("1.0"),
                &ours
            )
            .map(|i| &i.sha),
            Some(&"b".to_string())
        );
        let mixed = vec![undigested, record("c", "1.0", Some(&d1))];
        assert!(identify(&mixed, HOST, "app", Some("1.0"), &ours).is_none());
    }
}
