//! The subset of Tetragon's `TracingPolicy` / `TracingPolicyNamespaced` that qflows generates, as
//! typed structs whose field order fixes the YAML layout (so output is byte-for-byte stable).

use serde::Serialize;
use std::collections::BTreeMap;

/// `apiVersion` of both policy kinds.
pub const API_VERSION: &str = "cilium.io/v1alpha1";

/// A cluster-wide or namespaced TracingPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracingPolicy {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// `TracingPolicy` or `TracingPolicyNamespaced`.
    pub kind: String,
    /// Name, namespace, labels, annotations.
    pub metadata: Metadata,
    /// The hooks.
    pub spec: Spec,
}

impl TracingPolicy {
    /// The object as JSON, for validation and for the Kubernetes API.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a TracingPolicy always serialises")
    }

    /// The object as YAML (stable layout: struct order, sorted maps).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a TracingPolicy always serialises")
    }

    /// True for `TracingPolicyNamespaced`.
    pub fn is_namespaced(&self) -> bool {
        self.kind == "TracingPolicyNamespaced"
    }
}

/// Object metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// DNS-1123 name.
    pub name: String,
    /// Namespace (namespaced policies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// `spec` of a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Pods the policy applies to (`{}` = every pod, no host processes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Containers the policy applies to (`repo` = image repository).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_selector: Option<LabelSelector>,
    /// Policy options (`policy-mode`, `disable-kprobe-multi`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PolicyOption>,
    /// Kernel function hooks.
    pub kprobes: Vec<Kprobe>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Exact label matches.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One set-based label requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values.
    pub values: Vec<String>,
}

/// `spec.options[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyOption {
    /// Option name.
    pub name: String,
    /// Option value.
    pub value: String,
}

/// One kprobe hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kprobe {
    /// Kernel function (or `sys_<name>` with `syscall: true`).
    pub call: String,
    /// Always written: the CRD defaults it to `true`, which is wrong for kernel functions.
    pub syscall: bool,
    /// Arguments read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
    /// Event message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Event tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `ignore.callNotFound` (v1.5+), for calls some kernels lack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Ignore>,
    /// Selectors (OR-ed; at most 5).
    pub selectors: Vec<Selector>,
}

/// `kprobes[].ignore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ignore {
    /// Load the policy even when the call does not exist on this kernel.
    pub call_not_found: bool,
}

/// A hook argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arg {
    /// Position in the kernel function's parameters.
    pub index: u32,
    /// Tetragon argument type (`sockaddr`, `int`, `linux_binprm`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Name shown in events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One selector (its filters are AND-ed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Argument filters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_args: Vec<MatchArg>,
    /// Binary filters (at most one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_binaries: Vec<MatchBinaries>,
    /// Namespace filters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_namespaces: Vec<MatchNamespace>,
    /// Actions (at most 3).
    pub match_actions: Vec<MatchAction>,
}

/// `matchArgs[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchArg {
    /// Argument position (as in `args[].index`).
    pub index: u32,
    /// Operator.
    pub operator: String,
    /// Values.
    pub values: Vec<String>,
}

/// `matchBinaries[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchBinaries {
    /// `In`, `NotIn`, `Prefix`, …
    pub operator: String,
    /// Absolute executable paths.
    pub values: Vec<String>,
}

/// `matchNamespaces[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchNamespace {
    /// `Mnt`, `Pid`, …
    pub namespace: String,
    /// `In` or `NotIn`.
    pub operator: String,
    /// Inode numbers or `host_ns`.
    pub values: Vec<String>,
}

/// `matchActions[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchAction {
    /// `Post`, `Sigkill`, `Override`.
    pub action: String,
    /// Error returned by `Override` (e.g. -1 = EPERM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arg_error: Option<i32>,
    /// `Post` rate limit (`1m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// `thread`, `process` or `global`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit_scope: Option<String>,
}

impl MatchAction {
    /// A `Post` action with a rate limit per process.
    pub fn post(rate_limit: &str) -> Self {
        Self {
            action: "Post".into(),
            arg_error: None,
            rate_limit: Some(rate_limit.into()),
            rate_limit_scope: Some("process".into()),
        }
    }

    /// `Sigkill`.
    pub fn sigkill() -> Self {
        Self {
            action: "Sigkill".into(),
            arg_error: None,
            rate_limit: None,
            rate_limit_scope: None,
        }
    }

    /// `Override` with `argError: -1` (EPERM).
    pub fn override_eperm() -> Self {
        Self {
            action: "Override".into(),
            arg_error: Some(-1),
            rate_limit: None,
            rate_limit_scope: None,
        }
    }
}
