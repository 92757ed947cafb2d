//! CdrToPolicy's contract: its input, the review updates, the `policies` query, and what its
//! activities exchange.

pub mod model;

use crate::input::{InputError, Validate};
use model::{AuditStyle, Enforcement, Evidence, PolicyKey, TetragonVersion};
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

/// One policy's durable state in the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRecord {
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
}

fn default_review_timeout() -> u64 {
    300
}

/// Answer of the `policies` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoliciesView {
    /// Policy set.
    pub policy_set: String,
    /// Every policy the workflow manages.
    pub policies: Vec<PolicyRecord>,
    /// The last sync's findings report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<SyncReport>,
}

/// State carried across continue-as-new.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CarriedState {
    /// Policies.
    pub policies: Vec<PolicyRecord>,
    /// End of the last findings window read (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end_secs: Option<u64>,
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

/// Policies to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishPolicies {
    /// Policy set.
    pub policy_set: String,
    /// Every current policy (unchanged ones are no-ops at the target).
    pub policies: Vec<PolicyRecord>,
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
}
