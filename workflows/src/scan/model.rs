//! What `ScanOnDeploy` and the per-digest `ImageScan` workflows exchange.
//!
//! The entity's input, which carries its whole state, is in
//! [`image_scan::input`](crate::scan::image_scan::input).
//!
//! Workflow history keeps only these small records (summaries and references); full reports live
//! in the results store, because Temporal warns at 256 KB per payload and fails at 2 MB.

use crate::scan::{EventSource, ImageRef};
use serde::{Deserialize, Serialize};

/// The gate's decision for an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Within the policy.
    Pass,
    /// Reported, not blocking (e.g. not yet scanned, with `unscanned_verdict = audit`).
    Audit,
    /// Violates the policy.
    Fail,
}

/// Vulnerability and secret counts of one image (Qualys severities 5 … 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeveritySummary {
    /// Severity 5.
    pub critical: u64,
    /// Severity 4.
    pub high: u64,
    /// Severity 3.
    pub medium: u64,
    /// Severities 1 and 2.
    pub low: u64,
    /// Vulnerabilities with a fixed version available (all severities).
    pub fixable: u64,
    /// Secrets found in the image.
    pub secrets: u64,
}

impl SeveritySummary {
    /// The worst severity present (5 = critical), or 0 when clean.
    pub fn worst(&self) -> u8 {
        match self {
            s if s.critical > 0 => 5,
            s if s.high > 0 => 4,
            s if s.medium > 0 => 3,
            s if s.low > 0 => 1,
            _ => 0,
        }
    }

    /// All vulnerabilities.
    pub fn total(&self) -> u64 {
        self.critical + self.high + self.medium + self.low
    }
}

/// How an image's scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Scanned; `summary` and `verdict` are set.
    Scanned,
    /// Not scanned, on purpose (`reason` says why, e.g. a non-ECR image without QScanner).
    Skipped,
    /// Qualys did not finish within the scan timeout.
    TimedOut,
    /// The scan failed (`reason` says why).
    Failed,
}

/// The latest result for one image digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    /// `sha256:…` manifest digest.
    pub digest: String,
    /// The image as deployed, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1.0`.
    pub image: String,
    /// How the scan ended.
    pub status: ImageStatus,
    /// The gate's verdict (absent when the scan did not run and there is no unscanned policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Counts by severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SeveritySummary>,
    /// Where the full report was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<String>,
    /// Why it was skipped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which backend scanned it (`registry` or `qscanner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// When the scan finished (RFC 3339, workflow time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<String>,
    /// The gate profile that produced `verdict` (absent: the worker's built-in `default`, in
    /// results from before profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl ImageResult {
    /// The result of a scan that did not run or did not finish (`status` is not `Scanned`):
    /// only why (`reason`), no verdict, summary or report.
    pub fn unscanned(digest: String, image: String, status: ImageStatus, reason: String) -> Self {
        ImageResult {
            profile: None,
            digest,
            image,
            status,
            verdict: None,
            summary: None,
            result_ref: None,
            reason: Some(reason),
            backend: None,
            scanned_at: None,
        }
    }
}

/// An image with its digest, as resolution found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedImage {
    /// The image as deployed (tag kept).
    pub image: ImageRef,
    /// Its manifest digest, when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why no digest could be found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// "This image was deployed here too": the signal that attaches a deployment to an `ImageScan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployedAt {
    /// The `ScanOnDeploy` workflow to answer (signal `image_result`).
    pub requester: String,
    /// Where it was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Region of the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The kind of deployment event.
    pub source: EventSource,
    /// The reference this deployment used (the entity keeps the references it has seen and
    /// scans by one the backend can use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
}

/// `ImageScan` workflow ID for a digest.
pub fn image_scan_id(digest: &str) -> String {
    format!("scan-{digest}")
}

/// The task queue `ImageScan` entities run on, for a worker serving `task_queue`: their own, so
/// their workflow tasks never wait behind a burst of deploy workflows.
pub fn entity_task_queue(task_queue: &str) -> String {
    format!("{task_queue}-scan")
}

/// Scan behaviour configured on the worker, read once per `ImageScan` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanSettings {
    /// First poll interval after submitting a registry scan.
    pub poll_initial_secs: u64,
    /// Longest poll interval (the backoff doubles up to this).
    pub poll_max_secs: u64,
    /// Give up (`timed_out`) after this long.
    pub scan_timeout_secs: u64,
    /// How long a result stays fresh before a rescan while the image is still deployed.
    pub ttl_secs: u64,
    /// Scan ECR images with the Qualys registry scan (false: with QScanner, when available).
    #[serde(default = "yes")]
    pub registry_for_ecr: bool,
    /// Whether the worker can run QScanner (then non-ECR images are scanned with it).
    #[serde(default)]
    pub qscanner_available: bool,
    /// QScanner's own time limit.
    #[serde(default)]
    pub qscanner_timeout_secs: u64,
    /// Whether the namespace has qflows' search attributes (see [`crate::scan::search`]).
    #[serde(default)]
    pub search_attributes: bool,
    /// The verdict for images that were not scanned (skipped, timed out, failed); `None`: no
    /// verdict, they are reported only.
    #[serde(default)]
    pub unscanned_verdict: Option<Verdict>,
    /// Task queue for rescans (`<task queue>-rescan`), served by the same worker with its own
    /// slots; `None`: rescans share the deploy-time queue.
    #[serde(default)]
    pub rescan_task_queue: Option<String>,
    /// Task queue for QScanner runs (`<task queue>-qscanner`), served with at most
    /// `QFLOWS_QSCANNER_MAX_CONCURRENT` runs per worker: the others wait in Temporal.
    #[serde(default)]
    pub qscanner_task_queue: Option<String>,
    /// First retry of a failed, timed-out or skipped scan, in seconds (doubling each time).
    #[serde(default = "default_retry_initial")]
    pub retry_initial_secs: u64,
    /// Longest wait between retries.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
    /// Alerts go to SNS.
    #[serde(default)]
    pub alert_sns: bool,
    /// Alerts go to the webhook.
    #[serde(default)]
    pub alert_webhook: bool,
    /// An image an inventory sees running is rescanned this often (`QFLOWS_RESCAN_RUNNING_SECS`).
    #[serde(default = "default_rescan_running")]
    pub rescan_running_secs: u64,
    /// The worker has a gate profiles file (`QFLOWS_GATE_PROFILES_FILE`): deployments get
    /// their verdicts under their scope's profile (activity `gate.Judge`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gate_profiles: bool,
    /// `QFLOWS_QUARANTINE=propose`: failing scans of digests running in ECS services propose a
    /// quarantine there; `None` (`off`, the default, and every settings payload from before):
    /// never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<crate::quarantine::model::QuarantineProposals>,
    /// The namespace has the optional `QflowsGateProfile` search attribute registered (see
    /// [`crate::scan::search::OPTIONAL`]); meaningful with `search_attributes`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub profile_search_attribute: bool,
}

/// Default of [`ScanSettings::rescan_running_secs`]: a day.
pub const DEFAULT_RESCAN_RUNNING_SECS: u64 = 86_400;

fn default_rescan_running() -> u64 {
    DEFAULT_RESCAN_RUNNING_SECS
}

fn yes() -> bool {
    true
}

fn default_retry_initial() -> u64 {
    300
}

fn default_retry_max() -> u64 {
    6 * 3600
}

impl ScanSettings {
    /// The defaults of `qflows worker`, for an entity that cannot read its worker's settings.
    pub fn fallback() -> Self {
        ScanSettings {
            poll_initial_secs: 10,
            poll_max_secs: 120,
            scan_timeout_secs: 3600,
            ttl_secs: 7 * 24 * 3600,
            registry_for_ecr: true,
            qscanner_available: false,
            qscanner_timeout_secs: 600,
            search_attributes: false,
            unscanned_verdict: Some(Verdict::Audit),
            rescan_task_queue: None,
            qscanner_task_queue: None,
            retry_initial_secs: default_retry_initial(),
            retry_max_secs: default_retry_max(),
            alert_sns: false,
            alert_webhook: false,
            rescan_running_secs: DEFAULT_RESCAN_RUNNING_SECS,
            gate_profiles: false,
            quarantine: None,
            profile_search_attribute: false,
        }
    }

    /// How long to wait before retrying after `failures` failed attempts in a row: the first
    /// retry after `retry_initial_secs`, doubling up to `retry_max_secs`.
    pub fn retry_after_secs(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(32);
        self.retry_initial_secs
            .max(1)
            .saturating_mul(1u64 << doublings)
            .min(self.retry_max_secs.max(1))
    }
}

/// Where a registry scan stands in Qualys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum QualysImageState {
    /// Qualys does not know the image yet (404 / not listed).
    Unknown,
    /// Known, scan not finished.
    Pending {
        /// Qualys image id.
        sha: String,
    },
    /// `scanStatus: SUCCESS`.
    Scanned {
        /// Qualys image id.
        sha: String,
        /// When Qualys finished that scan (its `lastScanned`, epoch ms), when it says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scanned_ms: Option<u64>,
        /// When the image was built (its record's `created`, epoch ms), when Qualys says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_ms: Option<u64>,
    },
}

/// Look an image up in Qualys by its digest, through the tag a registry scan selects it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindImage {
    /// The manifest digest: a record is this image only if it lists this digest (or, listing
    /// no digest at all, carries the tag and no other record lists the tag with a digest).
    pub digest: String,
    /// The reference scanned (registry host, repository and tag).
    pub image: ImageRef,
    /// Only a scan Qualys finished after this (its own `lastScanned`, epoch ms) counts: a
    /// rescan waits for the new scan instead of reading the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_than_ms: Option<u64>,
}

/// What an `ImageScan` entity reads before each attempt (`scan.Prepare`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanPreparation {
    /// The worker's scan settings now.
    pub settings: ScanSettings,
    /// The verdict of the digest's last completed scan, from the results store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<Verdict>,
}

/// When `qualys.FindOrSubmitScan` submits a registry scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SubmitWhen {
    /// Always, without looking first (a rescan).
    Always,
    /// Unless Qualys knows the image (scanned or being scanned).
    IfUnknown,
    /// Unless Qualys has scanned it (a pending record is resubmitted).
    IfNotScanned,
    /// Never: a scan submitted recently is still Qualys' to finish.
    Never,
}

/// Look the digest up in Qualys and submit a registry scan unless it is not needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindOrSubmit {
    /// Qualys registry UUID.
    pub registry_uuid: String,
    /// The image, its reference and (for a rescan) the scan to be newer than.
    pub find: FindImage,
    /// When to submit.
    pub submit: SubmitWhen,
    /// When the deploy event that asked for this scan reached Temporal (ms since the epoch):
    /// the event→submitted latency metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_accepted_at_ms: Option<u64>,
}

/// What `qualys.FindOrSubmitScan` found or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "step")]
pub enum ScanStep {
    /// Qualys has scanned the image: collect its results.
    Scanned {
        /// Qualys image id.
        sha: String,
        /// Its `lastScanned` (epoch ms), when Qualys says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scanned_ms: Option<u64>,
        /// When the image was built (its record's `created`, epoch ms), when Qualys says:
        /// the report's `imageCreatedMs`, for a profile's `maxImageAgeDays`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created_ms: Option<u64>,
    },
    /// A scan was submitted now.
    Submitted,
    /// Nothing submitted: Qualys (or an earlier submission) is scanning it.
    Underway,
}

/// A registry scan's results once Qualys has finished it (`qualys.AwaitScanResults`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanFinished {
    /// The stored, gated result.
    pub result: ImageResult,
    /// Qualys' `lastScanned` of that scan (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualys_scanned_ms: Option<u64>,
}

/// Answer of an `ImageScan` entity's `lookup` query: what a new deployment of the digest would
/// be answered with, and until when it is fresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityLookup {
    /// The result on hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ImageResult>,
    /// A completed scan's result answers new deployments until then (seconds since the epoch);
    /// 0: no fresh result (a deployment must attach to the entity).
    #[serde(default)]
    pub fresh_until_secs: u64,
}

impl EntityLookup {
    /// The result, if it may answer a deployment at `now_secs` without the entity.
    pub fn fresh_at(&self, now_secs: u64) -> Option<&ImageResult> {
        self.result
            .as_ref()
            .filter(|r| r.status == ImageStatus::Scanned && now_secs < self.fresh_until_secs)
    }
}

/// What `scan.Attach` did for one deployment's digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    /// The worker's scan settings.
    pub settings: ScanSettings,
    /// Fresh results that answer the deployment at once, by digest; every other digest's entity
    /// was told of the deployment and will signal its answer.
    #[serde(default)]
    pub answers: Vec<ImageResult>,
}

/// Which tags ECR holds for a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagsRequest {
    /// An ECR reference of the image (registry and repository are used).
    pub image: ImageRef,
    /// The manifest digest.
    pub digest: String,
}

/// Submit an on-demand registry scan for one repository and tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitRegistryScan {
    /// Qualys registry UUID.
    pub registry_uuid: String,
    /// The image to scan.
    pub image: ImageRef,
    /// Its digest (names the schedule).
    pub digest: String,
    /// When the deploy event that asked for this scan reached Temporal (milliseconds since the
    /// Unix epoch; see [`ImageScanInput::event_accepted_at_ms`]).
    ///
    /// [`ImageScanInput::event_accepted_at_ms`]: crate::scan::image_scan::input::ImageScanInput::event_accepted_at_ms
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_accepted_at_ms: Option<u64>,
}

/// Result of `ScanOnDeploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanOnDeployOutput {
    /// `scanned` or `ignored`.
    pub status: String,
    /// Why the event was ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The kind of event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EventSource>,
    /// Worst verdict over all images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The gate profile the deployment's scope selected (set when the worker has profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// One entry per image of the deployment.
    #[serde(default)]
    pub images: Vec<ImageResult>,
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NotifyReason {
    /// The gate's verdict for the digest changed (or a first scan failed the gate).
    VerdictChanged,
    /// Secrets were found.
    SecretsFound,
    /// The scan failed or timed out.
    ScanFailed,
}

/// Ask the notifiers to report a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyRequest {
    /// Why.
    pub reason: NotifyReason,
    /// The result.
    pub result: ImageResult,
    /// The verdict before this scan, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_verdict: Option<Verdict>,
    /// The deployment that triggered the scan, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<DeployedAt>,
    /// Where inventories see the image running now (`<scope>: <place>`, a sample).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<String>,
}

/// Whether (and why) a new result is worth a notification, given the previous verdict: only
/// changes alert, so a digest deployed a hundred times alerts once.
pub fn notify_reason(result: &ImageResult, previous: Option<Verdict>) -> Option<NotifyReason> {
    match result.status {
        ImageStatus::Failed | ImageStatus::TimedOut => Some(NotifyReason::ScanFailed),
        ImageStatus::Skipped => None,
        ImageStatus::Scanned => match (previous, result.verdict) {
            (None, Some(Verdict::Fail)) => Some(NotifyReason::VerdictChanged),
            (None, _) if result.summary.is_some_and(|s| s.secrets > 0) => {
                Some(NotifyReason::SecretsFound)
            }
            (Some(before), Some(now)) if before != now => Some(NotifyReason::VerdictChanged),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned(verdict: Verdict, secrets: u64) -> ImageResult {
        ImageResult {
            profile: None,
            digest: "sha256:a".into(),
            image: "x".into(),
            status: ImageStatus::Scanned,
            verdict: Some(verdict),
            summary: Some(SeveritySummary {
                secrets,
                ..Default::default()
            }),
            result_ref: None,
            reason: None,
            backend: None,
            scanned_at: None,
        }
    }

    #[test]
    fn only_changes_notify() {
        assert_eq!(notify_reason(&scanned(Verdict::Pass, 0), None), None);
        assert_eq!(
            notify_reason(&scanned(Verdict::Fail, 0), None),
            Some(NotifyReason::VerdictChanged)
        );
        assert_eq!(
            notify_reason(&scanned(Verdict::Fail, 0), Some(Verdict::Fail)),
            None
        );
        assert_eq!(
            notify_reason(&scanned(Verdict::Pass, 0), Some(Verdict::Fail)),
            Some(NotifyReason::VerdictChanged)
        );
        assert_eq!(
            notify_reason(&scanned(Verdict::Pass, 2), None),
            Some(NotifyReason::SecretsFound)
        );
        let failed = ImageResult {
            status: ImageStatus::TimedOut,
            ..scanned(Verdict::Pass, 0)
        };
        assert_eq!(notify_reason(&failed, None), Some(NotifyReason::ScanFailed));
    }
}
