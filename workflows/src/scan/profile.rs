//! Gate profiles, as workflows see them: the scope a verdict is asked for, and what a profile
//! does with a failing image.
//!
//! The profiles themselves (their thresholds, their selectors) live in the worker's
//! `QFLOWS_GATE_PROFILES_FILE` and are applied by an activity, so a changed file applies to the
//! next verdict without a rescan. A workflow only says *where* the image runs ([`GateScope`]).

use crate::scan::ScanRequest;
use crate::scan::model::ImageResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The built-in profile: the worker's `QFLOWS_GATE_*` settings.
pub const DEFAULT_PROFILE: &str = "default";

/// What happens to an image that fails its profile where something can stop it (admission).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforce {
    /// Admit and record (the default: enforcement starts in audit).
    #[default]
    Audit,
    /// Admit with a warning the user sees (`kubectl` prints it).
    Warn,
    /// Refuse.
    Deny,
}

impl Enforce {
    /// The lower-case name, as in the profiles file and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforce::Audit => "audit",
            Enforce::Warn => "warn",
            Enforce::Deny => "deny",
        }
    }
}

/// Where an image is deployed, as far as the event (or the admission request) says. Every
/// field is optional: a selector naming a field the scope lacks does not match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateScope {
    /// AWS account ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_account: Option<String>,
    /// AWS region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// ECS cluster name (an ARN is reduced to its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecs_cluster: Option<String>,
    /// ECS service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecs_service: Option<String>,
    /// Azure subscription ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_subscription: Option<String>,
    /// Azure resource group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_resource_group: Option<String>,
    /// Kubernetes cluster name (the admission webhook's `QFLOWS_KUBERNETES_CLUSTER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_cluster: Option<String>,
    /// Kubernetes namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Kubernetes labels of the workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl GateScope {
    /// The scope of a deploy event: its account and region, its ECS cluster and service, its
    /// Azure subscription and resource group.
    pub fn of_request(request: &ScanRequest) -> Self {
        let service = request.service.as_ref();
        let cluster = request
            .cluster
            .as_deref()
            .or_else(|| service.and_then(|s| s.cluster.as_deref()));
        let (subscription, group) = request
            .azure_resource
            .as_deref()
            .map(azure_scope)
            .unwrap_or_default();
        GateScope {
            aws_account: request.account_id.clone(),
            aws_region: request.region.clone(),
            ecs_cluster: cluster.map(last_segment),
            ecs_service: service.map(|s| last_segment(&s.service)),
            azure_subscription: subscription,
            azure_resource_group: group,
            ..GateScope::default()
        }
    }
}

/// `arn:aws:ecs:…:cluster/prod` → `prod` (a bare name stays as it is).
fn last_segment(name: &str) -> String {
    name.rsplit('/').next().unwrap_or(name).to_string()
}

/// The subscription and resource group of an ARM resource ID.
fn azure_scope(id: &str) -> (Option<String>, Option<String>) {
    let mut parts = id.split('/').filter(|p| !p.is_empty());
    let mut subscription = None;
    let mut group = None;
    while let Some(key) = parts.next() {
        if key.eq_ignore_ascii_case("subscriptions") {
            subscription = parts.next().map(str::to_string);
        } else if key.eq_ignore_ascii_case("resourceGroups") {
            group = parts.next().map(str::to_string);
        }
    }
    (subscription, group)
}

/// Asks for the verdicts of a deployment's images under its scope's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeImages {
    /// Where they are deployed.
    pub scope: GateScope,
    /// The entities' answers (verdicts under the default profile, the report's reference).
    pub images: Vec<ImageResult>,
}

/// A deployment's verdicts under its scope's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Judged {
    /// The profile the scope selected.
    pub profile: String,
    /// The images, each with its verdict under that profile and `profile` set.
    pub images: Vec<ImageResult>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{EcsServiceRef, EventSource};

    #[test]
    fn scope_of_an_ecs_and_an_azure_request() {
        let request = ScanRequest {
            source: EventSource::EcsUpdateService,
            event_id: None,
            account_id: Some("123456789012".into()),
            region: Some("eu-west-1".into()),
            images: Vec::new(),
            task_definition: None,
            service: Some(EcsServiceRef {
                cluster: None,
                service: "arn:aws:ecs:eu-west-1:123456789012:service/prod/web".into(),
            }),
            cluster: Some("arn:aws:ecs:eu-west-1:123456789012:cluster/prod".into()),
            azure_resource: None,
        };
        let scope = GateScope::of_request(&request);
        assert_eq!(scope.ecs_cluster.as_deref(), Some("prod"));
        assert_eq!(scope.ecs_service.as_deref(), Some("web"));
        assert_eq!(scope.aws_account.as_deref(), Some("123456789012"));

        let request = ScanRequest {
            azure_resource: Some(
                "/subscriptions/0f1e/resourceGroups/apps-rg/providers/Microsoft.App/containerApps/a"
                    .into(),
            ),
            service: None,
            cluster: None,
            ..request
        };
        let scope = GateScope::of_request(&request);
        assert_eq!(scope.azure_subscription.as_deref(), Some("0f1e"));
        assert_eq!(scope.azure_resource_group.as_deref(), Some("apps-rg"));
        assert_eq!(scope.ecs_cluster, None);
    }
}
