//! Would Tetragon accept this TracingPolicy? An offline validator for `TracingPolicy` and
//! `TracingPolicyNamespaced` objects, and the oldest Tetragon release that understands one.
//!
//! [`validate`] checks a full object (apiVersion/kind/metadata/spec, as `serde_json::Value`) in
//! three layers, collecting every problem with a JSON path:
//!
//! 1. **CRD schema** — the `v1alpha1` `openAPIV3Schema` of Tetragon's own CRDs (cilium/tetragon
//!    4fbfe2d7, embedded from `crds/`), applied the way the API server and Tetragon's strict loader
//!    apply it: types, integer formats, enums, lengths, patterns, item counts, required fields, and
//!    **unknown fields are errors** (Tetragon loads policies with `UnmarshalStrict`). `metadata` is
//!    checked as Kubernetes `ObjectMeta` (DNS-1123 name, label and annotation rules).
//! 2. **CEL rules** — every `x-kubernetes-validations` rule of the CRDs, implemented by hand and
//!    reported with the CRD's own message.
//! 3. **Loader rules** — what Tetragon's policy handler and selector compiler
//!    (`pkg/sensors/tracing`, `pkg/selectors/kernel.go`) refuse although the CRD allows it: limits
//!    (5 selectors, 5 argument filters, 3 actions, 4 numeric values…), operator/argument-type
//!    compatibility, value syntax (ports, addresses, ranges, rate limits…), Override placement,
//!    duplicate hooks under kprobe_multi, list and macro references, namespaced-policy limits.
//!
//! Checks that need the node (BTF symbol lookup, kernel version, agent flags) are out of scope;
//! where the answer depends on the agent's defaults (kprobe_multi on, policy filter on), the
//! validator assumes them.
//!
//! The CRDs are parsed once (lazily) into a compiled schema; a call does no I/O and no YAML parsing.

mod cel;
mod context;
mod filters;
mod goparse;
mod hooks;
mod meta;
mod names;
mod selectors;
mod structural;
mod version;
mod violation;

#[cfg(test)]
mod tests;

use serde_json::Value;

pub use violation::Violation;

/// The API version both policy kinds are served under.
const API_VERSION: &str = "cilium.io/v1alpha1";

/// Whether `key` is a valid Kubernetes label key (optional DNS prefix, name of at most 63).
pub fn is_label_key(key: &str) -> bool {
    meta::qualified_name_error(key).is_none()
}

/// Whether `value` is a valid, non-empty Kubernetes label value.
pub fn is_label_value(value: &str) -> bool {
    !value.is_empty() && meta::label_value_error(value).is_none()
}

/// Whether `name` is a valid namespace name (a DNS-1123 label).
pub fn is_namespace_name(name: &str) -> bool {
    meta::dns1123_label_error(name).is_none()
}

/// Validates a full TracingPolicy or TracingPolicyNamespaced object (kind decides which CRD).
///
/// Returns every violation found (CRD schema, CEL rules, Tetragon loader rules), in document
/// order per layer; `Ok(())` means Tetragon's CRD and loader would accept the policy (node-specific
/// checks such as BTF symbol lookup and kernel features excepted).
pub fn validate(policy: &Value) -> Result<(), Vec<Violation>> {
    let mut out = Vec::new();
    let Some(obj) = policy.as_object() else {
        return Err(vec![Violation::new(
            "",
            "a TracingPolicy must be a JSON object",
        )]);
    };
    match obj.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(Value::String(v)) => out.push(Violation::new(
            "apiVersion",
            format!("Unsupported value: \"{v}\": supported values: \"{API_VERSION}\""),
        )),
        _ => out.push(Violation::new(
            "apiVersion",
            format!("Required value: must be \"{API_VERSION}\""),
        )),
    }
    let crd = match obj.get("kind").and_then(Value::as_str) {
        Some("TracingPolicy") => &*structural::TRACING_POLICY,
        Some("TracingPolicyNamespaced") => &*structural::TRACING_POLICY_NAMESPACED,
        Some(other) => {
            out.push(Violation::new(
                "kind",
                format!(
                    "Unsupported value: \"{other}\": supported values: \"TracingPolicy\", \"TracingPolicyNamespaced\""
                ),
            ));
            return Err(out);
        }
        None => {
            out.push(Violation::new(
                "kind",
                "Required value: must be \"TracingPolicy\" or \"TracingPolicyNamespaced\"",
            ));
            return Err(out);
        }
    };
    crd.validate(policy, &mut out);
    meta::validate(obj.get("metadata"), &mut out);
    hooks::validate(policy, crd.namespaced, &mut out);
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// The oldest Tetragon release whose CRD and loader accept every feature the policy uses (table B8),
/// e.g. (1, 4) for a policy using arg type `sockaddr`.
///
/// Returns `(major, minor)`; `(0, 11)` is the baseline. Features that exist only on Tetragon's
/// `main` branch (after v1.7: `nodeSelector`, `matchWorkloads`, selector `label`, …) give `(1, 8)`.
/// The answer is about features, not validity: run [`validate`] too.
pub fn min_tetragon_version(policy: &Value) -> (u32, u32) {
    version::min_version(policy)
}
