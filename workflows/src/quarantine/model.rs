//! What `Quarantine` exchanges: its input (the target, the image and the verdict that caused
//! it), the plan read from the platform, the approval request, and the recorded state.
//!
//! Every name here may come from an event or an inventory, so it is attacker-controlled: ECS
//! names, regions, accounts, digests and Resource Manager IDs are checked before any of them
//! reaches an activity (and the Azure client checks resource IDs again before building a URL).

use crate::input::{InputError, Validate};
use crate::registry::model::{validate_account_id, validate_region};
use crate::scan::check_arm_resource_id;
use crate::scan::image_ref::check_digest;
use serde::{Deserialize, Serialize};

/// Longest approval wait: 30 days.
pub const MAX_APPROVAL_TIMEOUT_SECS: u64 = 30 * 86_400;
/// Default approval wait: a day.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 86_400;
/// The verdict summary is cut to this many characters.
pub const MAX_SUMMARY_CHARS: usize = 2_000;
/// `by` and `reason` of a decision are at most this many characters.
pub const MAX_NOTE_CHARS: usize = 1_000;

/// Where the quarantined image runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetKind {
    /// An ECS service: rolled back to its previous task definition.
    Ecs,
    /// An Azure container app revision: deactivated.
    ContainerApp,
}

/// The workload to quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantineTarget {
    /// `ecs` or `containerApp`.
    pub kind: TargetKind,
    /// ECS: the cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// ECS: the service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// ECS: the region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// ECS: the account that owns the service (default: the worker's own; another account is
    /// reached through `QFLOWS_CROSS_ACCOUNT_ROLE_NAME`, as ScanOnDeploy reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// ECS: roll back to this task definition (`family:revision` or its ARN) instead of the
    /// previous one qflows finds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<String>,
    /// Container app: the revision's Resource Manager ID,
    /// `/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.App/containerApps/<app>/revisions/<revision>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_id: Option<String>,
}

/// The verdict that caused the quarantine (as the entity or the operator states it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerdictSummary {
    /// `fail` (the gate's verdict).
    pub verdict: String,
    /// Why, in words (worst CVEs, counts); cut to [`MAX_SUMMARY_CHARS`].
    #[serde(default)]
    pub summary: String,
}

/// Input of `Quarantine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantineInput {
    /// Where the image runs.
    pub target: QuarantineTarget,
    /// The image reference as it runs (e.g. `<registry>/<repo>:<tag>`).
    pub image: String,
    /// The quarantined digest (`sha256:<64 hex>`).
    pub digest: String,
    /// The verdict that caused it.
    pub verdict: VerdictSummary,
    /// How long to wait for `approve` or `reject`; a lapsed approval changes nothing.
    #[serde(default = "default_timeout")]
    pub approval_timeout_secs: u64,
    /// Who or what proposed it (`qflows` for the entity, a person for the CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_by: Option<String>,
}

fn default_timeout() -> u64 {
    DEFAULT_APPROVAL_TIMEOUT_SECS
}

/// An ECS cluster or service name: 1–255 letters, digits, `-` and `_` (AWS's rule).
pub fn validate_ecs_name(field: &str, value: &str) -> Result<(), InputError> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InputError::field(
            field,
            format!(
                "`{}` is not an ECS name (1 to 255 letters, digits, - or _)",
                value.chars().take(100).collect::<String>()
            ),
        ))
    }
}

/// A task definition as UpdateService takes it: `family:revision` or
/// `arn:<partition>:ecs:<region>:<account>:task-definition/family:revision`.
pub fn validate_task_definition(field: &str, value: &str) -> Result<(), InputError> {
    let bad = || {
        InputError::field(
            field,
            format!(
                "`{}` is not a task definition (`family:revision` or its ARN)",
                value.chars().take(100).collect::<String>()
            ),
        )
    };
    let family_revision = match value.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if parts.len() != 5
                || !parts[0].starts_with("aws")
                || parts[1] != "ecs"
                || validate_region(field, parts[2]).is_err()
                || validate_account_id(field, parts[3]).is_err()
            {
                return Err(bad());
            }
            parts[4].strip_prefix("task-definition/").ok_or_else(bad)?
        }
        None => value,
    };
    let (family, revision) = family_revision.rsplit_once(':').ok_or_else(bad)?;
    if validate_ecs_name(field, family).is_err()
        || revision.is_empty()
        || !revision.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    Ok(())
}

/// A container app revision's Resource Manager ID (see [`QuarantineTarget::revision_id`]).
pub fn validate_revision_id(field: &str, id: &str) -> Result<(), InputError> {
    check_arm_resource_id(field, id)?;
    let segments: Vec<&str> = id.trim_matches('/').split('/').collect();
    let ok = segments.len() == 10
        && segments[0].eq_ignore_ascii_case("subscriptions")
        && segments[2].eq_ignore_ascii_case("resourceGroups")
        && segments[4].eq_ignore_ascii_case("providers")
        && segments[5].eq_ignore_ascii_case("Microsoft.App")
        && segments[6].eq_ignore_ascii_case("containerApps")
        && segments[8].eq_ignore_ascii_case("revisions");
    if ok {
        Ok(())
    } else {
        Err(InputError::field(
            field,
            "is not a container app revision ID (/subscriptions/<s>/resourceGroups/<rg>/providers/\
             Microsoft.App/containerApps/<app>/revisions/<revision>)",
        ))
    }
}

/// The container app's ID of a revision ID (its first eight segments).
pub fn app_of_revision(revision_id: &str) -> String {
    let segments: Vec<&str> = revision_id.trim_matches('/').split('/').collect();
    format!("/{}", segments[..segments.len().min(8)].join("/"))
}

impl QuarantineTarget {
    /// ECS region (default `us-east-1`).
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or("us-east-1")
    }

    /// How the target is named in messages.
    pub fn describe(&self) -> String {
        match self.kind {
            TargetKind::Ecs => format!(
                "ECS service {} in cluster {} ({}{})",
                self.service.as_deref().unwrap_or_default(),
                self.cluster.as_deref().unwrap_or_default(),
                self.region(),
                self.account_id
                    .as_deref()
                    .map(|a| format!(", account {a}"))
                    .unwrap_or_default()
            ),
            TargetKind::ContainerApp => format!(
                "container app revision {}",
                self.revision_id.as_deref().unwrap_or_default()
            ),
        }
    }
}

impl Validate for QuarantineTarget {
    fn validate(&self) -> Result<(), InputError> {
        let forbid = |field: &str, set: bool, kind: &str| {
            if set {
                Err(InputError::field(
                    format!("target.{field}"),
                    format!("does not apply to a {kind} target"),
                ))
            } else {
                Ok(())
            }
        };
        match self.kind {
            TargetKind::Ecs => {
                let cluster = self.cluster.as_deref().ok_or_else(|| {
                    InputError::field("target.cluster", "an ECS target needs its cluster")
                })?;
                validate_ecs_name("target.cluster", cluster)?;
                let service = self.service.as_deref().ok_or_else(|| {
                    InputError::field("target.service", "an ECS target needs its service")
                })?;
                validate_ecs_name("target.service", service)?;
                if let Some(region) = &self.region {
                    validate_region("target.region", region)?;
                }
                if let Some(account) = &self.account_id {
                    validate_account_id("target.accountId", account)?;
                }
                if let Some(to) = &self.rollback_to {
                    validate_task_definition("target.rollbackTo", to)?;
                }
                forbid("revisionId", self.revision_id.is_some(), "ECS")
            }
            TargetKind::ContainerApp => {
                let id = self.revision_id.as_deref().ok_or_else(|| {
                    InputError::field(
                        "target.revisionId",
                        "a container app target needs the revision's resource ID",
                    )
                })?;
                validate_revision_id("target.revisionId", id)?;
                forbid("cluster", self.cluster.is_some(), "container app")?;
                forbid("service", self.service.is_some(), "container app")?;
                forbid("region", self.region.is_some(), "container app")?;
                forbid("accountId", self.account_id.is_some(), "container app")?;
                forbid("rollbackTo", self.rollback_to.is_some(), "container app")
            }
        }
    }
}

impl Validate for QuarantineInput {
    fn validate(&self) -> Result<(), InputError> {
        self.target.validate()?;
        check_digest(&self.digest).map_err(|e| InputError::field("digest", e))?;
        if self.image.trim().is_empty() || self.image.len() > 1_000 {
            return Err(InputError::field(
                "image",
                "must be the image reference (1 to 1000 characters)",
            ));
        }
        if self.verdict.verdict != "fail" {
            return Err(InputError::field(
                "verdict.verdict",
                format!(
                    "`{}`: only a `fail` verdict can start a quarantine",
                    self.verdict.verdict.chars().take(50).collect::<String>()
                ),
            ));
        }
        if self.approval_timeout_secs == 0 || self.approval_timeout_secs > MAX_APPROVAL_TIMEOUT_SECS
        {
            return Err(InputError::field(
                "approvalTimeoutSecs",
                format!("must be 1 to {MAX_APPROVAL_TIMEOUT_SECS} seconds"),
            ));
        }
        Ok(())
    }
}

impl QuarantineInput {
    /// The workflow ID that names this quarantine, so that it is proposed once per target and
    /// digest: `quarantine-ecs-<account|self>-<region>-<cluster>-<service>-<digest hex>` or
    /// `quarantine-aca-<subscription>-<resource group>-<app>-<revision>-<digest hex>` (every
    /// part validated: letters, digits and `-_.()` only).
    pub fn workflow_id(&self) -> String {
        let hex = self.digest.strip_prefix("sha256:").unwrap_or(&self.digest);
        let t = &self.target;
        match t.kind {
            TargetKind::Ecs => format!(
                "quarantine-ecs-{}-{}-{}-{}-{hex}",
                t.account_id.as_deref().unwrap_or("self"),
                t.region(),
                t.cluster.as_deref().unwrap_or_default(),
                t.service.as_deref().unwrap_or_default()
            ),
            TargetKind::ContainerApp => {
                let id = t.revision_id.as_deref().unwrap_or_default();
                let s: Vec<&str> = id.trim_matches('/').split('/').collect();
                let part = |i: usize| s.get(i).copied().unwrap_or_default();
                format!(
                    "quarantine-aca-{}-{}-{}-{}-{hex}",
                    part(1),
                    part(3),
                    part(7),
                    part(9)
                )
            }
        }
    }
}

/// A container of a task definition or revision, as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedContainer {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
}

/// What `quarantine.Inspect` found: the current state and what approval would change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinePlan {
    /// ECS: the task definition the service runs now (ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// ECS: the task definition approval rolls back to (ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// How `previous` was chosen (`rollbackTo`, an older deployment of the service, or the
    /// newest older ACTIVE revision of the family).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub previous_from: String,
    /// The containers of what runs now.
    #[serde(default)]
    pub current_containers: Vec<PlannedContainer>,
    /// The containers of what it would run after approval (ECS).
    #[serde(default)]
    pub previous_containers: Vec<PlannedContainer>,
    /// Container app: whether the revision is active now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_active: Option<bool>,
    /// Container app: the app's other active revisions (what keeps serving once it is
    /// deactivated; none means the app stops serving).
    #[serde(default)]
    pub other_active_revisions: Vec<String>,
    /// ECS: images of the previous task definition referenced by a tag whose digest could not
    /// be read (not in ECR, or ECR would not say): they were compared by reference only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<String>,
    /// Why approval cannot help, when it cannot: the workflow ends `refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

/// `approve` or `reject`: who and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineDecision {
    /// Who decides.
    pub by: String,
    /// Why.
    pub reason: String,
}

impl QuarantineDecision {
    /// Why the decision is refused before it enters history, if it is.
    pub fn refusal(&self) -> Option<String> {
        if self.by.trim().is_empty() || self.reason.trim().is_empty() {
            return Some("a decision needs `by` and `reason`".into());
        }
        if self.by.chars().count() > MAX_NOTE_CHARS || self.reason.chars().count() > MAX_NOTE_CHARS
        {
            return Some(format!(
                "`by` and `reason` are at most {MAX_NOTE_CHARS} characters"
            ));
        }
        None
    }
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionNote {
    /// `approve` or `reject`.
    pub action: String,
    /// Who.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339, workflow time).
    pub at: String,
}

/// Where a quarantine stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum QuarantineStatus {
    /// Reading the current state.
    #[default]
    Inspecting,
    /// Waiting for `approve` or `reject`.
    AwaitingApproval,
    /// Approved; rolling back or deactivating.
    Applying,
    /// Done: the ECS service runs its previous task definition.
    RolledBack,
    /// Done: the container app revision is inactive.
    Deactivated,
    /// Someone rejected it: nothing changed.
    Rejected,
    /// Nobody decided in time: nothing changed.
    Expired,
    /// Approval could not help (the previous task definition runs the same image, the image no
    /// longer runs there, …): nothing changed.
    Refused,
}

/// What `Apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineApplied {
    /// What was changed, in words.
    pub action: String,
    /// Whether a call changed anything (false: it was already so).
    pub changed: bool,
}

/// The request of `quarantine.Apply` and `quarantine.Verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineChange {
    /// The workflow's input.
    pub input: QuarantineInput,
    /// The plan the approver saw.
    pub plan: QuarantinePlan,
}

/// The `state` query and the workflow's result: everything recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineView {
    /// Where it stands.
    pub status: QuarantineStatus,
    /// The input (target, image, digest, verdict, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<QuarantineInput>,
    /// The plan read from the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<QuarantinePlan>,
    /// When the approval lapses (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_deadline: Option<String>,
    /// The decision, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionNote>,
    /// What was changed (approved and applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<QuarantineApplied>,
    /// What was verified afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// Why it was refused, expired or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `QFLOWS_QUARANTINE=propose`: the `ImageScan` entity proposes a quarantine (a `Quarantine`
/// workflow waiting for approval) for each ECS service its inventories see running a digest
/// whose completed scan fails. Absent (`off`, the default): it never does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineProposals {
    /// Where `Quarantine` runs (the worker's main task queue).
    pub task_queue: String,
    /// How long a proposal waits for approval (`QFLOWS_QUARANTINE_APPROVAL_SECS`).
    pub approval_timeout_secs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse;
    use serde_json::json;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const REV: &str = "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/web/revisions/web--r2";

    fn ecs() -> serde_json::Value {
        json!({
            "target": {"kind": "ecs", "cluster": "prod", "service": "web", "region": "eu-west-1"},
            "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web:2",
            "digest": DIGEST,
            "verdict": {"verdict": "fail", "summary": "CVE-2024-1 (5)"},
            "approvalTimeoutSecs": 60
        })
    }

    #[test]
    fn ecs_and_container_app_inputs_parse_and_name_their_workflow() {
        let i: QuarantineInput = parse(ecs()).unwrap();
        assert_eq!(
            i.workflow_id(),
            format!("quarantine-ecs-self-eu-west-1-prod-web-{}", &DIGEST[7..])
        );
        let mut v = ecs();
        v["target"] = json!({"kind": "containerApp", "revisionId": REV});
        let i: QuarantineInput = parse(v).unwrap();
        assert_eq!(
            i.workflow_id(),
            format!("quarantine-aca-0f1e-rg-web-web--r2-{}", &DIGEST[7..])
        );
        assert_eq!(
            app_of_revision(REV),
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/web"
        );
    }

    #[test]
    fn attacker_controlled_names_are_refused_naming_the_field() {
        for (field, value, wanted) in [
            ("cluster", json!("prod/../x"), "target.cluster"),
            ("service", json!("web?x=1"), "target.service"),
            ("service", json!(""), "target.service"),
            ("region", json!("eu-west-1/../"), "target.region"),
            ("accountId", json!("12345"), "target.accountId"),
            ("rollbackTo", json!("web:latest"), "target.rollbackTo"),
            (
                "rollbackTo",
                json!("arn:aws:ecs:eu-west-1:123456789012:service/x"),
                "target.rollbackTo",
            ),
            ("revisionId", json!(REV), "target.revisionId"),
        ] {
            let mut v = ecs();
            v["target"][field] = value;
            let e = parse::<QuarantineInput>(v).unwrap_err();
            assert_eq!(e.field, wanted, "{field}: {e}");
        }
        let mut v = ecs();
        v["target"]["rollbackTo"] =
            json!("arn:aws:ecs:eu-west-1:123456789012:task-definition/web:3");
        assert!(parse::<QuarantineInput>(v).is_ok());
        for bad in [
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/web/revisions/../x",
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/web",
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.Web/sites/web/revisions/r",
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/web/revisions/r%2f",
        ] {
            let mut v = ecs();
            v["target"] = json!({"kind": "containerApp", "revisionId": bad});
            let e = parse::<QuarantineInput>(v).unwrap_err();
            assert_eq!(e.field, "target.revisionId", "{bad}: {e}");
        }
        let mut v = ecs();
        v["target"] = json!({"kind": "containerApp", "revisionId": REV, "cluster": "prod"});
        assert_eq!(
            parse::<QuarantineInput>(v).unwrap_err().field,
            "target.cluster"
        );
    }

    #[test]
    fn only_a_failing_verdict_with_a_digest_and_a_bounded_timeout_starts_one() {
        let mut v = ecs();
        v["verdict"]["verdict"] = json!("pass");
        assert_eq!(
            parse::<QuarantineInput>(v).unwrap_err().field,
            "verdict.verdict"
        );
        let mut v = ecs();
        v["digest"] = json!("sha256:abc");
        assert_eq!(parse::<QuarantineInput>(v).unwrap_err().field, "digest");
        for t in [0, MAX_APPROVAL_TIMEOUT_SECS + 1] {
            let mut v = ecs();
            v["approvalTimeoutSecs"] = json!(t);
            assert_eq!(
                parse::<QuarantineInput>(v).unwrap_err().field,
                "approvalTimeoutSecs"
            );
        }
        let mut v = ecs();
        v.as_object_mut().unwrap().remove("approvalTimeoutSecs");
        assert_eq!(
            parse::<QuarantineInput>(v).unwrap().approval_timeout_secs,
            DEFAULT_APPROVAL_TIMEOUT_SECS
        );
    }

    #[test]
    fn a_decision_needs_who_and_why() {
        let d = |by: &str, reason: &str| QuarantineDecision {
            by: by.into(),
            reason: reason.into(),
        };
        assert!(d("", "x").refusal().is_some());
        assert!(d("alice", "  ").refusal().is_some());
        assert!(d(&"a".repeat(MAX_NOTE_CHARS + 1), "x").refusal().is_some());
        assert!(d("alice", "CVE-2024-1 is exploited").refusal().is_none());
    }
}
