//! The types `CdrToPolicy` exchanges: its input, the review updates, the `policies` query, and
//! what its activities take and answer.

use super::evidence::{AuditStyle, Enforcement, Evidence, Observed, PolicyKey, TetragonVersion};
use crate::input::{InputError, Validate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Input of `CdrToPolicy`.
///
/// ```json
/// {"policySet": "prod", "lookbackHours": 24, "output": {"directory": "/var/lib/qflows/policies",
///  "kubernetes": {"context": "prod"}}, "syncEveryMinutes": 60,
///  "review": {"autoPromoteAfterQuietHours": 72, "enforceTtlHours": 720}}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdrToPolicyInput {
    /// Names this set of policies (label `qflows.io/policy-set`; pruning only touches its own).
    #[serde(default = "default_policy_set")]
    pub policy_set: String,
    /// Findings window for the first sync: the last N hours (default 24). Later syncs read from
    /// the end of the previous window.
    #[serde(default = "default_lookback")]
    pub lookback_hours: u32,
    /// Explicit window start (RFC 3339), instead of `lookbackHours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// Explicit window end (RFC 3339); with `startAt`, the workflow syncs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
    /// Qualys-side filters.
    #[serde(default)]
    pub filters: FindingFilters,
    /// Oldest Tetragon release the policies must load on (default 1.7; at least 1.4).
    #[serde(default = "default_version")]
    pub tetragon_version: TetragonVersion,
    /// How audit-stage policies look: `post` (events) or `monitor` (block actions under
    /// `policy-mode: monitor`).
    #[serde(default)]
    pub audit_style: AuditStyle,
    /// Where policies go.
    #[serde(default)]
    pub output: OutputSettings,
    /// Review rules.
    #[serde(default)]
    pub review: ReviewSettings,
    /// Sync again every N minutes (the controller mode); absent = sync once, then stay open for
    /// review for `review.openHours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_every_minutes: Option<u32>,
    /// Remove policies whose last finding is older than this many hours (absent = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_after_hours: Option<u32>,
    /// State carried across continue-as-new (set by the workflow itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<CarriedState>,
}

fn default_policy_set() -> String {
    "default".into()
}
fn default_lookback() -> u32 {
    24
}
fn default_version() -> TetragonVersion {
    TetragonVersion::DEFAULT
}

impl Validate for CdrToPolicyInput {
    fn validate(&self) -> Result<(), InputError> {
        let input = self;
        let bad = |field: &str, message: String| Err(InputError::field(field, message));
        if input.policy_set.is_empty()
            || input.policy_set.len() > 63
            || !input
                .policy_set
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad(
                "policySet",
                "must be 1-63 lowercase letters, digits or dashes".into(),
            );
        }
        if input.start_at.is_some() != input.end_at.is_some() {
            return bad("startAt", "startAt and endAt go together".into());
        }
        if input.lookback_hours == 0 || input.lookback_hours > 24 * 90 {
            return bad("lookbackHours", "must be 1..=2160".into());
        }
        if input.output.directory.is_none() && input.output.kubernetes.is_none() {
            return bad(
                "output",
                "name a directory, a kubernetes target, or both".into(),
            );
        }
        if input.sync_every_minutes == Some(0) {
            return bad("syncEveryMinutes", "must be at least 1".into());
        }
        Ok(())
    }
}

/// Qualys-side filters of the findings query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FindingFilters {
    /// `AWS`, `AZURE` or `GCP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_provider: Option<String>,
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// e.g. `container` (the default the CDR policy operator used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
}

/// Where policies are written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputSettings {
    /// Directory on the worker for one YAML file per policy (`<name>.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// Server-side apply to a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubeTarget>,
}

/// A cluster to apply policies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeTarget {
    /// kubeconfig context (default: the current context; in a pod: the in-cluster config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// kubeconfig path on the worker (default: `$KUBECONFIG` or `~/.kube/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
}

/// Review rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewSettings {
    /// Promote a policy to enforcement by itself after this many hours in audit without new
    /// findings or changes (absent = only by a `promote` update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promote_after_quiet_hours: Option<u32>,
    /// An enforced policy returns to audit by itself after this many hours (absent = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_ttl_hours: Option<u32>,
    /// Without `syncEveryMinutes`: how long the workflow stays open for review after its sync
    /// (default 24).
    #[serde(default = "default_open_hours")]
    pub open_hours: u32,
}

fn default_open_hours() -> u32 {
    24
}

impl Default for ReviewSettings {
    fn default() -> Self {
        Self {
            auto_promote_after_quiet_hours: None,
            enforce_ttl_hours: None,
            open_hours: default_open_hours(),
        }
    }
}

/// One policy's state in the workflow, as the `policies` query and the review updates show it.
///
/// The evidence itself lives in the results store, content-addressed (`evidence.hash`); the
/// workflow keeps its summary, the observed selector values and the review state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRecord {
    /// Stable policy name.
    pub name: String,
    /// Category and workload.
    pub key: PolicyKey,
    /// The evidence: its summary and where it is stored.
    pub evidence: EvidenceRef,
    /// Selector values taken from the findings (the audit form carries them all; the blocking
    /// form only the `approved` ones).
    #[serde(default, skip_serializing_if = "Observed::is_empty")]
    pub observed: Observed,
    /// Fingerprint of `observed` ([`Observed::digest`]): what a `promote` names.
    #[serde(default = "empty_digest", skip_serializing_if = "is_empty_digest")]
    pub observed_digest: String,
    /// Audit or enforce.
    pub enforcement: Enforcement,
    /// When the policy last changed (evidence, enforcement), RFC 3339 workflow time.
    pub changed_at: String,
    /// The same, in seconds since the epoch (for the review timers).
    pub changed_secs: u64,
    /// When findings last added to the evidence (seconds since the epoch; for pruning).
    pub evidence_secs: u64,
    /// Who promoted it and why, when enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<ReviewNote>,
    /// Automatic promotion is held (after a human rollback).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
    /// When enforced: the observed values its blocking form carries, exactly those its promotion
    /// approved. Values observed later are listed in `observed` but do not block until promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Observed>,
    /// Why this policy cannot block (no workload to scope it to, or a namespace or label that
    /// Kubernetes would refuse); such a policy stays in audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_refusal: Option<String>,
    /// Changed since it was last published (the next sync or review publishes it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpublished: bool,
}

/// The digest of no observed values (left out of the JSON, like the empty set itself).
fn empty_digest() -> String {
    static EMPTY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| Observed::default().digest());
    EMPTY.clone()
}

fn is_empty_digest(d: &String) -> bool {
    *d == empty_digest()
}

impl PolicyRecord {
    /// Observed values that would block but were not approved (empty unless enforced).
    pub fn unreviewed(&self) -> Observed {
        match (&self.approved, self.enforcement) {
            (Some(approved), Enforcement::Enforce) => self.observed.without(approved),
            (None, Enforcement::Enforce) => self.observed.clone(),
            (_, Enforcement::Audit) => Observed::default(),
        }
    }
}

/// A policy's evidence as the workflow keeps it: a summary, and the SHA-256 of the stored
/// document (`{"key", "evidence"}` JSON in the results store under `cdr/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvidenceRef {
    /// SHA-256 (hex) of the stored evidence document.
    pub hash: String,
    /// Findings merged into this evidence.
    pub finding_count: u64,
    /// Earliest finding time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// Latest finding time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Highest severity seen (1 = low … 4 = critical).
    #[serde(default)]
    pub max_severity: u8,
}

impl EvidenceRef {
    /// The summary of `evidence` stored under `hash`.
    pub fn of(hash: String, evidence: &Evidence) -> Self {
        EvidenceRef {
            hash,
            finding_count: evidence.finding_count,
            first_seen: evidence.first_seen.clone(),
            last_seen: evidence.last_seen.clone(),
            max_severity: evidence.max_severity,
        }
    }
}

/// One policy's state as runs before `cdr-limits` kept it (evidence included): the form their
/// activities, updates and continue-as-new inputs carry. Read when such a run continues as new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacyPolicyRecord {
    /// Stable policy name.
    pub name: String,
    /// Category and workload.
    pub key: PolicyKey,
    /// Findings merged so far.
    pub evidence: Evidence,
    /// Audit or enforce.
    pub enforcement: Enforcement,
    /// When the policy last changed (evidence, enforcement), RFC 3339 workflow time.
    pub changed_at: String,
    /// The same, in seconds since the epoch (for the review timers).
    pub changed_secs: u64,
    /// When findings last added to the evidence (seconds since the epoch; for pruning).
    pub evidence_secs: u64,
    /// Who promoted it and why, when enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<ReviewNote>,
    /// Automatic promotion is held (after a human rollback).
    #[serde(default)]
    pub hold: bool,
}

/// Who reviewed, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewNote {
    /// Reviewer (`alice@example.com`, or `qflows` for automatic changes).
    pub by: String,
    /// Reason given.
    pub reason: String,
    /// RFC 3339 workflow time.
    pub at: String,
    /// The same, in seconds since the epoch.
    pub at_secs: u64,
}

/// A `promote` or `rollback` update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewRequest {
    /// Policy name (as in the `policies` query).
    pub policy: String,
    /// Reviewer.
    pub by: String,
    /// Reason.
    pub reason: String,
    /// The request lapses when it is not applied within this many seconds (default 300).
    #[serde(default = "default_review_timeout")]
    pub timeout_secs: u64,
    /// `promote`: the `observedDigest` the reviewer saw. Required when the policy has observed
    /// values; the promotion is refused if they changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
}

fn default_review_timeout() -> u64 {
    300
}

/// Answer of the `policies` and `policiesPage` queries (and the workflow's result): one page of
/// policies, at most [`VIEW_PAGE_BYTES`] of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoliciesView {
    /// Policy set.
    pub policy_set: String,
    /// The policies of this page, by name.
    pub policies: Vec<PolicyRecord>,
    /// The last sync's findings report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<SyncReport>,
    /// Policies matching the query's filters (all pages).
    #[serde(default)]
    pub total: usize,
    /// The `offset` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

/// Most bytes of policies one query answer holds (the answer stays far below Temporal's limits
/// whatever the number of policies; page with [`PoliciesQuery::offset`]).
pub const VIEW_PAGE_BYTES: usize = 256 * 1024;

/// Arguments of the `policiesPage` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoliciesQuery {
    /// Skip this many matching policies.
    #[serde(default)]
    pub offset: usize,
    /// At most this many policies (also bounded by [`VIEW_PAGE_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only the policy of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only policies in this enforcement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// Only policies with observed values (those waiting for a person before they can block).
    #[serde(default)]
    pub observed_only: bool,
}

/// State carried across continue-as-new.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CarriedState {
    /// Policies of a run from before `cdr-limits` (records with their evidence).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<LegacyPolicyRecord>,
    /// End of the last findings window read (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end_secs: Option<u64>,
    /// The policies, as SHA-256 hashes of state chunks in the results store, in name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot: Vec<String>,
    /// A `sync` signal the previous run had not served yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_requested: bool,
    /// The previous run's last sync report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<SyncReport>,
    /// Pruned policies whose removal was not published yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_removals: Vec<String>,
    /// When the previous run's next sync, retry and end were due (absent when a run from before
    /// `cdr-sync-schedule` continued: the new run then syncs on start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<SyncSchedule>,
}

/// What a run hands its successor about time, so that continuing as new neither adds a sync nor
/// moves one (seconds since the epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncSchedule {
    /// The next periodic sync (`syncEveryMinutes` after the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_secs: Option<u64>,
    /// When a failed fetch is read again, if no sync comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_fetch_secs: Option<u64>,
    /// When a sync-once workflow closes its review window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_secs: Option<u64>,
}

/// Findings query of one sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchFindings {
    /// Window start (RFC 3339).
    pub start_at: String,
    /// Window end (RFC 3339).
    pub end_at: String,
    /// Filters.
    pub filters: FindingFilters,
}

/// Findings of a window, grouped by policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceBatch {
    /// Evidence per policy key.
    pub groups: Vec<(PolicyKey, Evidence)>,
    /// What was read and skipped.
    pub report: FindingsReport,
}

/// What a findings read saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindingsReport {
    /// Findings read.
    pub findings: u64,
    /// Findings that fed a policy.
    pub used: u64,
    /// Skipped findings by reason (`no-category`, `unknown-category`, `not-an-object`).
    pub skipped: BTreeMap<String, u64>,
    /// Categories qflows has no policy for, with counts (at most 50 names).
    pub unknown_categories: BTreeMap<String, u64>,
}

/// Policies to publish (runs from before `cdr-limits`: whole records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishPolicies {
    /// Policy set.
    pub policy_set: String,
    /// Every current policy (unchanged ones are no-ops at the target).
    pub policies: Vec<LegacyPolicyRecord>,
    /// Names to remove (pruned).
    pub removed: Vec<String>,
    /// Targets.
    pub output: OutputSettings,
    /// Tetragon release.
    pub tetragon_version: TetragonVersion,
    /// Audit style.
    pub audit_style: AuditStyle,
}

/// What publishing did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishReport {
    /// Policies written or applied that did not exist.
    pub created: Vec<String>,
    /// Policies whose content changed.
    pub updated: Vec<String>,
    /// Policies already as rendered.
    pub unchanged: Vec<String>,
    /// Policies removed.
    pub deleted: Vec<String>,
    /// Policies not published, with the reason (failed validation, unscoped block).
    pub refused: Vec<(String, String)>,
    /// In a sync report: the lists above hold at most [`REPORT_NAMES`] names each; these are
    /// the full counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<PublishCounts>,
}

/// Most names a sync report lists per outcome (the counts are complete).
pub const REPORT_NAMES: usize = 100;

/// How many policies a sync's publishing created, updated, left unchanged, deleted, refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishCounts {
    /// Created.
    pub created: usize,
    /// Updated.
    pub updated: usize,
    /// Unchanged.
    pub unchanged: usize,
    /// Deleted.
    pub deleted: usize,
    /// Refused.
    pub refused: usize,
}

impl PublishReport {
    /// Adds a batch's report, keeping at most [`REPORT_NAMES`] names per list and full counts.
    pub fn absorb(&mut self, batch: PublishReport) {
        let mut counts = self.counts.unwrap_or(PublishCounts {
            created: self.created.len(),
            updated: self.updated.len(),
            unchanged: self.unchanged.len(),
            deleted: self.deleted.len(),
            refused: self.refused.len(),
        });
        counts.created += batch.created.len();
        counts.updated += batch.updated.len();
        counts.unchanged += batch.unchanged.len();
        counts.deleted += batch.deleted.len();
        counts.refused += batch.refused.len();
        fn keep<T>(into: &mut Vec<T>, from: Vec<T>) {
            let room = REPORT_NAMES.saturating_sub(into.len());
            into.extend(from.into_iter().take(room));
        }
        keep(&mut self.created, batch.created);
        keep(&mut self.updated, batch.updated);
        keep(&mut self.unchanged, batch.unchanged);
        keep(&mut self.deleted, batch.deleted);
        keep(&mut self.refused, batch.refused);
        self.counts = Some(counts);
    }
}

/// One sync's outcome (the query and the workflow result show the latest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    /// Window read.
    pub window: (String, String),
    /// Findings report.
    pub findings: FindingsReport,
    /// Publishing report.
    pub publish: PublishReport,
    /// Why publishing failed (the state is kept; the next sync publishes again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_error: Option<String>,
    /// Why reading the window's findings failed (the state is kept and the window is read
    /// again, with everything since, at the next turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_error: Option<String>,
}

/// Most bytes of one activity input or output CdrToPolicy exchanges in bulk (merge pages,
/// publish batches, state chunks): far below Temporal's 2 MB payload limit and its 512 KB warning.
pub const PAYLOAD_BUDGET: usize = 256 * 1024;

/// Most policies one merge page or publish batch names.
pub const PAGE_POLICIES: usize = 500;

/// A window's findings read and grouped: `cdr.FetchWindow`'s answer. The grouped evidence is in
/// the results store (`batch`); the workflow merges it page by page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowBatch {
    /// SHA-256 of the stored batch (absent when no finding fed a policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// Policies the batch has evidence for.
    pub policies: u64,
    /// The first names to merge (at most [`PAGE_POLICIES`], in name order).
    pub first: Vec<String>,
    /// What was read and skipped.
    pub report: FindingsReport,
}

/// `cdr.MergeEvidence`: merge a batch's evidence into these policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeEvidence {
    /// The batch (from [`WindowBatch::batch`]).
    pub batch: String,
    /// Names to merge, in name order, with the evidence each policy has now (absent = new).
    pub items: Vec<(String, Option<String>)>,
    /// Tetragon release (whether the blocking form can be scoped).
    pub tetragon_version: TetragonVersion,
}

/// What one merge page did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergedPage {
    /// One per merged policy.
    pub updates: Vec<PolicyUpdate>,
    /// The names to merge next (unmerged ones of this page first); empty when done.
    pub next: Vec<String>,
}

/// A policy's evidence after a merge (or an import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyUpdate {
    /// Policy name.
    pub name: String,
    /// Category and workload.
    pub key: PolicyKey,
    /// The merged evidence.
    pub evidence: EvidenceRef,
    /// Observed selector values of the merged evidence.
    pub observed: Observed,
    /// Why the policy cannot block, if it cannot.
    pub block_refusal: Option<String>,
}

/// `cdr.PublishBatch`: render, validate and publish these policies from their stored evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishBatch {
    /// Policy set.
    pub policy_set: String,
    /// Policies to publish.
    pub items: Vec<PublishItem>,
    /// Names to remove (pruned).
    pub removed: Vec<String>,
    /// Targets.
    pub output: OutputSettings,
    /// Tetragon release.
    pub tetragon_version: TetragonVersion,
    /// Audit style.
    pub audit_style: AuditStyle,
}

/// One policy to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishItem {
    /// Policy name.
    pub name: String,
    /// SHA-256 of its stored evidence.
    pub evidence: String,
    /// Audit or enforce.
    pub enforcement: Enforcement,
    /// Enforced: the observed values its blocking form may carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<Observed>,
}

/// `cdr.ImportLegacy`: store the evidence of records carried by a run from before `cdr-limits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportLegacy {
    /// Records (a page of them).
    pub records: Vec<LegacyPolicyRecord>,
    /// Tetragon release.
    pub tetragon_version: TetragonVersion,
}
