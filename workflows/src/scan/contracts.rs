//! The activities `ScanOnDeploy`, the `ImageScan` entity and `ScanAlert` call: name, input and
//! output of each. Implemented in `activities/src/scan/` (`mod.rs`; `qscanner.Scan` in
//! `qscanner.rs`); registered in `workers/src/worker/queues.rs`. (`registry.EnsureShared`, which
//! the entity also calls, is the registry area's: `crate::registry::contracts`.)
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

use super::ScanRequest;
use super::model::{
    Attached, FindImage, FindOrSubmit, ImageResult, ImageTagsRequest, NotifyRequest,
    QualysImageState, ResolvedImage, ScanFinished, ScanPreparation, ScanSettings, ScanStep,
    SubmitRegistryScan,
};
use super::profile::{JudgeImages, Judged};
use crate::scan::image_scan::input::{
    CollectResults, ImageScanInput, QScannerScan, StartImageScan,
};

activity_contract! {
    /// The worker's scan settings (poll backoff, timeout, TTL).
    GetScanSettings = "scan.Settings": () => ScanSettings;

    /// Finds every image of a deployment and its digest (ECS task definitions, services, ECR tags).
    ResolveImages = "aws.ResolveImages": ScanRequest => Vec<ResolvedImage>;

    /// Starts the `ImageScan` entity of a digest, or tells the running one about this deployment.
    StartImageScanEntity = "scan.StartImageScan": StartImageScan => ();

    /// Where Qualys stands on an image: unknown, pending, or scanned.
    FindQualysImage = "qualys.FindImage": ImageScanInput => QualysImageState;

    /// Submits an on-demand registry scan for the image's repository and tag.
    SubmitScan = "qualys.SubmitRegistryScan": SubmitRegistryScan => ();

    /// Fetches all vulnerabilities, stores the full report, applies the gate: a small summary back.
    CollectScanResults = "scan.CollectResults": CollectResults => ImageResult;

    /// Scans the image with QScanner, stores the report, applies the gate (heartbeats while it runs).
    QScanImage = "qscanner.Scan": QScannerScan => ImageResult;

    /// Sends a notification (SNS, webhook) about a result; a no-op when none is configured.
    /// (`ImageScan` runs started before per-channel alerts; new runs use [`NotifySns`] and
    /// [`NotifyWebhook`].)
    Notify = "notify.Send": NotifyRequest => ();

    /// Publishes an alert to the SNS topic (only that channel: a retry never resends the
    /// webhook).
    NotifySns = "notify.Sns": NotifyRequest => ();

    /// Posts an alert to the webhook (only that channel).
    NotifyWebhook = "notify.Webhook": NotifyRequest => ();

    /// Looks the digest up in Qualys and submits a registry scan unless Qualys has it (or is
    /// scanning it), as `submit` says.
    FindOrSubmitScan = "qualys.FindOrSubmitScan": FindOrSubmit => ScanStep;

    /// Waits for Qualys to finish the scan, then collects it: each attempt polls once and
    /// answers "not yet" with a retryable failure, so the retry policy is the poll schedule and
    /// the schedule-to-close timeout the scan timeout (polls add no history events); the attempt
    /// that finds the scan finished fetches the vulnerabilities, stores the report and gates it.
    AwaitScanResults = "qualys.AwaitScanResults": FindImage => ScanFinished;

    /// The tags ECR holds for a digest now; `None` when the worker may not ask ECR.
    EcrImageTags = "aws.EcrImageTags": ImageTagsRequest => Option<Vec<String>>;

    /// The settings for an attempt, and the verdict of the digest's last completed scan from the
    /// results store (verdict changes alert correctly across entity runs).
    PrepareScan = "scan.Prepare": String => ScanPreparation;

    /// A deployment's digests: each entity with a fresh result answers at once (a query); the
    /// others are told of the deployment (signal-with-start). A local activity of `ScanOnDeploy`.
    AttachDeployment = "scan.Attach": Vec<StartImageScan> => Attached;

    /// A deployment's results under its scope's gate profile (re-read from the stored reports,
    /// so a changed profiles file needs no rescan). A local activity of `ScanOnDeploy`.
    JudgeDeployment = "gate.Judge": JudgeImages => Judged;
}
