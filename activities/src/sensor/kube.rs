//! The sensor on Kubernetes (EKS, AKS, GKE): server-side apply (field manager `qflows`) of the
//! rendered objects, comparing first so a repeated run writes nothing; the DaemonSet's
//! roll-out; and restoring the previous DaemonSet spec.

use super::error::SensorError;
use super::render::{KUBE_NAME, KUBE_NAMESPACE, kube_manifests};
use super::resource::{api_for, in_sensor_namespace};
use crate::kube::{FIELD_MANAGER, KubeError, contained};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use qflows_workflows::cdr::model::KubeTarget;
use qflows_workflows::sensor::model::{
    DeploySensorInput, RolloutStatus, SensorApplied, SensorDeployment,
};
use serde_json::{Value, json};
use tracing::info;

/// A client for the input's kubeconfig and context (exec plugins work as in kubectl).
pub async fn client(input: &DeploySensorInput) -> Result<kube::Client, KubeError> {
    crate::kube::client(&KubeTarget {
        context: input.kube_context.clone(),
        kubeconfig: input.kubeconfig.clone(),
    })
    .await
}

fn daemonsets(client: &kube::Client) -> Api<DynamicObject> {
    in_sensor_namespace(client, "apps/v1", "DaemonSet")
}

/// The parts of a live object that apply compares and roll-back restores (no status, no
/// server-set metadata).
fn desired_part(object: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(object).unwrap_or_default();
    let mut out = json!({"apiVersion": v["apiVersion"], "kind": v["kind"],
        "metadata": {"name": v["metadata"]["name"], "namespace": v["metadata"]["namespace"],
                     "labels": v["metadata"]["labels"]}});
    if let Some(m) = v.as_object_mut() {
        for (k, val) in m.iter() {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                out[k] = val.clone();
            }
        }
    }
    out
}

/// Checks that each credential reference (`<secret>:<key>`) names a key of a Secret in the
/// sensor's namespace, before anything is applied: a missing one would leave every pod stuck in
/// `CreateContainerConfigError`. Only names are read and reported, never values.
pub async fn check_credentials(
    client: &kube::Client,
    input: &DeploySensorInput,
) -> Result<(), SensorError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), KUBE_NAMESPACE);
    for (field, reference) in [
        ("activationIdRef", &input.activation_id_ref),
        ("customerIdRef", &input.customer_id_ref),
    ] {
        let (name, key) = reference.split_once(':').unwrap_or((reference, ""));
        let missing = |problem: String| SensorError::MissingCredential {
            field,
            reference: reference.clone(),
            problem,
        };
        // Read through the API rather than decoded: only the key names are looked at.
        let secret = secrets
            .get_opt(name)
            .await
            .map_err(|source| KubeError::Api {
                action: "read",
                name: format!("Secret/{name}"),
                source,
            })?
            .ok_or_else(|| {
                missing(format!(
                    "there is no Secret {KUBE_NAMESPACE}/{name}; create it with key `{key}` first"
                ))
            })?;
        let has_key = secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key));
        if !has_key {
            let mut keys: Vec<_> = secret
                .data
                .iter()
                .flatten()
                .map(|(k, _)| k.as_str())
                .collect();
            keys.sort_unstable();
            return Err(missing(format!(
                "Secret {KUBE_NAMESPACE}/{name} has no key `{key}` (its keys: {})",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// Whether the API server serves `kind` (by its plural) in `api_version`.
async fn serves(client: &kube::Client, api_version: &str, plural: &str) -> bool {
    client
        .list_api_group_resources(api_version)
        .await
        .is_ok_and(|list| list.resources.iter().any(|r| r.name == plural))
}

/// Applies every object; returns what changed and the DaemonSet spec that ran before.
///
/// The PodDisruptionBudget is rendered as `policy/v1` (Kubernetes 1.21 and later); an API
/// server that does not serve it yet gets the same object as `policy/v1beta1`.
pub async fn apply(
    client: &kube::Client,
    input: &DeploySensorInput,
) -> Result<SensorApplied, SensorError> {
    check_credentials(client, input).await?;
    let mut changed = false;
    let mut previous = None;
    let mut created = false;
    for mut manifest in kube_manifests(input) {
        if manifest["kind"] == "PodDisruptionBudget"
            && !serves(client, "policy/v1", "poddisruptionbudgets").await
        {
            manifest["apiVersion"] = json!("policy/v1beta1");
        }
        let name = manifest["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = manifest["kind"].as_str().unwrap_or_default().to_string();
        let err = |action, source| KubeError::Api {
            action,
            name: format!("{kind}/{name}"),
            source,
        };
        let api = api_for(client, &manifest);
        let existing = api.get_opt(&name).await.map_err(|e| err("read", e))?;
        if kind == "DaemonSet" {
            match &existing {
                Some(o) => previous = Some(desired_part(o).to_string()),
                None => created = true,
            }
        }
        if let Some(o) = &existing
            && contained(&manifest, &serde_json::to_value(o).unwrap_or_default())
        {
            continue;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&manifest))
            .await
            .map_err(|e| err("apply", e))?;
        info!(%kind, %name, "applied");
        changed = true;
    }
    Ok(SensorApplied {
        changed,
        applied: format!("DaemonSet {KUBE_NAMESPACE}/{KUBE_NAME}"),
        previous,
        created,
    })
}

/// The DaemonSet's roll-out: done when the controller saw the latest spec and every desired
/// pod is updated and ready.
pub async fn rollout_status(client: &kube::Client) -> Result<RolloutStatus, KubeError> {
    let ds = daemonsets(client)
        .get(KUBE_NAME)
        .await
        .map_err(|source| KubeError::Api {
            action: "read",
            name: format!("DaemonSet/{KUBE_NAME}"),
            source,
        })?;
    let status = &ds.data["status"];
    let n = |k: &str| status[k].as_i64().unwrap_or(0);
    let (desired, ready, updated) = (
        n("desiredNumberScheduled"),
        n("numberReady"),
        n("updatedNumberScheduled"),
    );
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    let generation = ds.metadata.generation.unwrap_or(0);
    Ok(RolloutStatus {
        desired,
        ready,
        updated,
        done: observed >= generation && desired > 0 && ready == desired && updated == desired,
    })
}

/// Restores the previous DaemonSet spec, or deletes the DaemonSet this run created.
pub async fn rollback(
    client: &kube::Client,
    deployment: &SensorDeployment,
) -> Result<String, KubeError> {
    let api = daemonsets(client);
    let err = |action, source| KubeError::Api {
        action,
        name: format!("DaemonSet/{KUBE_NAME}"),
        source,
    };
    let applied = &deployment.applied;
    let target = format!("DaemonSet {KUBE_NAMESPACE}/{KUBE_NAME}");
    let report = match &applied.previous {
        Some(previous) if applied.changed => {
            let previous: Value = serde_json::from_str(previous).unwrap_or_default();
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(KUBE_NAME, &params, &Patch::Apply(&previous))
                .await
                .map_err(|e| err("restore", e))?;
            let image = previous["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            format!("{target} restored to its previous spec (image {image})")
        }
        None if applied.created => {
            api.delete(KUBE_NAME, &DeleteParams::default())
                .await
                .map_err(|e| err("delete", e))?;
            format!("{target} deleted (it did not exist before)")
        }
        _ => format!("nothing to restore: {target} was already as rendered"),
    };
    info!(%report, "sensor rolled back");
    Ok(report)
}
