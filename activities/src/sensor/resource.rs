//! Which Kubernetes API serves a rendered object: its group, version, plural and namespace
//! (from `apiVersion`, `kind` and `metadata.namespace`), for the dynamic client and for raw
//! requests. Shared by the first apply ([`super::kube`]) and the planned one
//! ([`super::kube_plan`]).

use super::render::KUBE_NAMESPACE;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

/// A kind's API: what `kube` needs for typed-less calls, and the URL for raw requests.
pub(super) struct Resource {
    pub(super) ar: ApiResource,
    /// The collection's path, e.g. `/apis/apps/v1/namespaces/qualys/daemonsets`.
    pub(super) url: String,
    pub(super) namespace: Option<String>,
}

/// The API of the kind (and namespace) `manifest` names.
pub(super) fn resource(manifest: &Value) -> Resource {
    let api_version = manifest["apiVersion"].as_str().unwrap_or("v1").to_string();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.clone()),
    };
    let kind = manifest["kind"].as_str().unwrap_or_default();
    let plural = match kind {
        "NetworkPolicy" => "networkpolicies".to_string(),
        "ResourceQuota" => "resourcequotas".to_string(),
        other => format!("{}s", other.to_lowercase()),
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), &plural);
    let namespace = manifest["metadata"]["namespace"]
        .as_str()
        .map(str::to_string);
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let url = match &namespace {
        Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
        None => format!("{base}/{plural}"),
    };
    Resource { ar, url, namespace }
}

/// The client for `r`.
pub(super) fn api(client: &kube::Client, r: &Resource) -> Api<DynamicObject> {
    match &r.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &r.ar),
        None => Api::all_with(client.clone(), &r.ar),
    }
}

/// The client for the kind (and namespace) `manifest` names.
pub(super) fn api_for(client: &kube::Client, manifest: &Value) -> Api<DynamicObject> {
    api(client, &resource(manifest))
}

/// The client for the objects of `api_version` and `kind` in the sensor's namespace.
pub(super) fn in_sensor_namespace(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    api_for(
        client,
        &json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"namespace": KUBE_NAMESPACE}}),
    )
}
