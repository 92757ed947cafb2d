//! The planned sensor on Kubernetes: pre-flight and snapshot before any write, apply, observe,
//! verify and roll back exactly.
//!
//! - **Pre-flight** ([`prepare`]): GKE Autopilot (API group `auto.gke.io`) is refused up front;
//!   the credential Secret's keys must exist and be non-empty (only lengths are read); every
//!   object is applied with `dryRun=All` (same field manager and force as the real apply), and
//!   every refusal is reported at once, with nothing written. The API server's `Warning`
//!   headers of the dry runs are kept in the plan. The snapshot of each object holds its values
//!   at the paths qflows owned before or will own after (the dry run's managed fields), its
//!   UID, and for the DaemonSet its current ControllerRevision.
//! - **Roll-back** ([`rollback`], in reverse apply order): an object the run created is deleted
//!   (UID precondition) unless another manager has written to it since; an object that existed
//!   gets qflows' previous values back by a server-side apply *without* force and with a
//!   `resourceVersion` precondition, which leaves every other manager's fields alone and drops
//!   only fields qflows added. If qflows no longer owns a field it applied (someone changed it
//!   since), the object is reported as drifted and left as they made it. The DaemonSet's
//!   template comes from the ControllerRevision recorded before the run when it still exists.

use super::error::SensorError;
use super::fault::fault_point;
use super::fields::{leaves, managed_by, owners_of, project, touched_by_others, union};
use super::observation;
use super::render::{KUBE_NAME, KUBE_NAMESPACE, kube_manifests};
use super::resource::{api, in_sensor_namespace, resource};
use crate::kube::{FIELD_MANAGER, KubeError, contained};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use qflows_workflows::sensor::model::{
    DeploySensorInput, ObjectSnapshot, RollbackReport, RolloutObservation, RolloutStatus,
    SensorApplied, SensorRun,
};
use serde_json::{Value, json};
use std::time::Duration;
use tracing::info;

/// How long one API call may take before the cluster counts as unobservable for this look.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The API group only GKE Autopilot serves.
const AUTOPILOT_GROUP: &str = "auto.gke.io";

fn kube_err(action: &'static str, name: &str, source: kube::Error) -> KubeError {
    KubeError::Api {
        action,
        name: name.to_string(),
        source,
    }
}

fn timed_out(action: &'static str, name: &str) -> KubeError {
    KubeError::Api {
        action,
        name: name.to_string(),
        source: kube::Error::Api(
            kube::core::Status::failure(
                &format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
                "Timeout",
            )
            .with_code(504)
            .boxed(),
        ),
    }
}

/// Runs a call with [`CALL_TIMEOUT`].
async fn within<T>(
    action: &'static str,
    name: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, KubeError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|e| kube_err(action, name, e)),
        Err(_) => Err(timed_out(action, name)),
    }
}

/// Whether an error means "the cluster cannot be observed" (unreachable, overloaded, refusing
/// qflows' identity) rather than "this object is wrong".
pub fn unobservable(e: &KubeError) -> bool {
    match e {
        KubeError::Api { source, .. } => match source {
            kube::Error::Api(s) => matches!(s.code, 401 | 403 | 408 | 429 | 500..=599),
            _ => true,
        },
        KubeError::Config(_) => true,
    }
}

/// The manifests as applied: the PodDisruptionBudget as `policy/v1beta1` where `policy/v1` is
/// not served (before Kubernetes 1.21).
async fn manifests(
    client: &kube::Client,
    input: &DeploySensorInput,
) -> Result<Vec<Value>, KubeError> {
    let pdb_v1 = within(
        "discover",
        "policy/v1",
        client.list_api_group_resources("policy/v1"),
    )
    .await
    .map(|list| {
        list.resources
            .iter()
            .any(|r| r.name == "poddisruptionbudgets")
    });
    let pdb_v1 = match pdb_v1 {
        Ok(served) => served,
        Err(KubeError::Api {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => false,
        Err(e) => return Err(e),
    };
    Ok(kube_manifests(input)
        .into_iter()
        .map(|mut m| {
            if m["kind"] == "PodDisruptionBudget" && !pdb_v1 {
                m["apiVersion"] = json!("policy/v1beta1");
            }
            m
        })
        .collect())
}

fn label(manifest: &Value) -> String {
    format!(
        "{}/{}",
        manifest["kind"].as_str().unwrap_or("?"),
        manifest["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// A server-side apply sent by hand, so the `Warning` headers of the answer can be read.
async fn apply_raw(
    client: &kube::Client,
    manifest: &Value,
    params: &PatchParams,
) -> Result<(Value, Vec<String>), kube::Error> {
    let r = resource(manifest);
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    let request = kube::core::Request::new(&r.url)
        .patch(name, params, &Patch::Apply(manifest))
        .map_err(kube::Error::BuildRequest)?;
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| kube::Error::Service(Box::new(e)))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes).to_string();
        let s = serde_json::from_str::<kube::core::Status>(&text).unwrap_or_else(|_| {
            kube::core::Status::failure(text.trim(), "Failed to parse error data")
                .with_code(status.as_u16())
        });
        return Err(kube::Error::Api(s.boxed()));
    }
    let value = serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)?;
    Ok((value, warnings))
}

/// `299 - "text"` → `text` (RFC 7234 warn-code, warn-agent, quoted warn-text).
fn warning_text(header: &str) -> String {
    let mut parts = header.splitn(3, ' ');
    let (_code, _agent, text) = (parts.next(), parts.next(), parts.next());
    text.map(|t| t.trim().trim_matches('"').replace("\\\"", "\""))
        .unwrap_or_else(|| header.to_string())
}

/// Credentials: every reference names a Secret key whose value is not empty. Only key names and
/// value lengths are read, never values.
pub async fn check_credentials(
    client: &kube::Client,
    input: &DeploySensorInput,
) -> Result<(), SensorError> {
    super::kube::check_credentials(client, input).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), KUBE_NAMESPACE);
    for (field, reference) in [
        ("activationIdRef", &input.activation_id_ref),
        ("customerIdRef", &input.customer_id_ref),
    ] {
        let (name, key) = reference.split_once(':').unwrap_or((reference, ""));
        let secret = within("read", &format!("Secret/{name}"), secrets.get(name)).await?;
        let length = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| v.0.iter().filter(|b| !b.is_ascii_whitespace()).count())
            .unwrap_or(0);
        if length == 0 {
            return Err(SensorError::MissingCredential {
                field,
                reference: reference.clone(),
                problem: format!(
                    "the value of key `{key}` in Secret {KUBE_NAMESPACE}/{name} is empty: a sensor \
                     started with it would look healthy and never register (check the template \
                     that writes the Secret)"
                ),
            });
        }
    }
    Ok(())
}

/// The ControllerRevision the DaemonSet `uid` is at (the highest revision it owns).
async fn current_revision(client: &kube::Client, uid: &str) -> Result<Option<String>, KubeError> {
    let api = in_sensor_namespace(client, "apps/v1", "ControllerRevision");
    let list = within(
        "list",
        "ControllerRevisions",
        api.list(&ListParams::default()),
    )
    .await?;
    Ok(list
        .items
        .iter()
        .filter(|cr| {
            cr.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
        })
        .max_by_key(|cr| cr.data["revision"].as_i64().unwrap_or(0))
        .and_then(|cr| cr.metadata.name.clone()))
}

/// Everything [`prepare`] reads from the cluster.
pub struct Prepared {
    /// Snapshots in apply order.
    pub objects: Vec<ObjectSnapshot>,
    /// Dry-run warnings, by object.
    pub warnings: Vec<String>,
}

/// The pre-flight and the snapshot (see the module doc). Writes nothing.
pub async fn prepare(
    client: &kube::Client,
    input: &DeploySensorInput,
) -> Result<Prepared, SensorError> {
    let groups = within("discover", "API groups", client.list_api_groups()).await?;
    if groups.groups.iter().any(|g| g.name == AUTOPILOT_GROUP) {
        return Err(SensorError::Unsupported(format!(
            "this is a GKE Autopilot cluster (it serves API group {AUTOPILOT_GROUP}): Autopilot \
             refuses privileged workloads with a hostPath container runtime socket and SYS_ADMIN, \
             which the registry sensor needs. Run the sensor on a GKE Standard cluster (or a \
             Standard node pool's cluster); nothing was written"
        )));
    }
    check_credentials(client, input).await?;
    let mut objects = Vec::new();
    let mut warnings = Vec::new();
    let mut refusals = Vec::new();
    let dry_run = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    for manifest in manifests(client, input).await? {
        let r = resource(&manifest);
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        let what = label(&manifest);
        let live = within("read", &what, api(client, &r).get_opt(name)).await?;
        let live = live.map(|o| serde_json::to_value(o).unwrap_or_default());
        let answer = match tokio::time::timeout(
            CALL_TIMEOUT,
            apply_raw(client, &manifest, &dry_run),
        )
        .await
        {
            Err(_) => return Err(timed_out("dry-run apply", &what).into()),
            Ok(Err(kube::Error::Api(s))) if matches!(s.code, 400 | 403 | 409 | 422) => {
                refusals.push(format!("{what}: {} ({})", s.message, s.code));
                continue;
            }
            Ok(Err(e)) => return Err(kube_err("dry-run apply", &what, e).into()),
            Ok(Ok((answer, w))) => {
                warnings.extend(w.into_iter().map(|w| format!("{what}: {w}")));
                answer
            }
        };
        let managed_before = live
            .as_ref()
            .map(|l| managed_by(l, FIELD_MANAGER))
            .unwrap_or_else(|| json!({}));
        let managed_after = managed_by(&answer, FIELD_MANAGER);
        let paths = union(&managed_before, &managed_after);
        let previous = live
            .as_ref()
            .and_then(|l| project(l, &paths))
            .unwrap_or(Value::Null);
        let uid = live
            .as_ref()
            .and_then(|l| l["metadata"]["uid"].as_str())
            .map(str::to_string);
        let revision = match (&uid, manifest["kind"].as_str()) {
            (Some(uid), Some("DaemonSet")) => current_revision(client, uid).await?,
            _ => None,
        };
        objects.push(ObjectSnapshot {
            api_version: manifest["apiVersion"].as_str().unwrap_or_default().into(),
            kind: manifest["kind"].as_str().unwrap_or_default().into(),
            name: name.into(),
            namespace: r.namespace.clone(),
            existed: live.is_some(),
            uid,
            previous,
            managed_before,
            managed_after,
            revision,
        });
    }
    if !refusals.is_empty() {
        return Err(SensorError::Preflight { refusals, warnings });
    }
    Ok(Prepared { objects, warnings })
}

/// Applies every object (comparing first); the DaemonSet last.
pub async fn apply(client: &kube::Client, run: &SensorRun) -> Result<SensorApplied, SensorError> {
    let mut changed = false;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for manifest in manifests(client, &run.input).await? {
        let r = resource(&manifest);
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        let what = label(&manifest);
        let api = api(client, &r);
        let live = within("read", &what, api.get_opt(name)).await?;
        if let Some(o) = &live
            && contained(&manifest, &serde_json::to_value(o).unwrap_or_default())
        {
            continue;
        }
        within(
            "apply",
            &what,
            api.patch(name, &params, &Patch::Apply(&manifest)),
        )
        .await?;
        info!(object = %what, "applied");
        changed = true;
        if manifest["kind"] == "DaemonSet" {
            fault_point("sensor-daemonset-applied");
        }
    }
    let created = run
        .plan
        .objects
        .iter()
        .any(|o| o.kind == "DaemonSet" && !o.existed);
    Ok(SensorApplied {
        changed,
        applied: format!("DaemonSet {KUBE_NAMESPACE}/{KUBE_NAME}"),
        previous: None,
        created,
    })
}

/// The DaemonSet's roll-out: done when the controller saw the latest spec and every desired pod
/// is updated, ready and available (Ready for `minReadySeconds`). When pods are not coming up,
/// the newest warning event of the DaemonSet says why (e.g. Pod Security admission).
pub async fn observe(client: &kube::Client) -> RolloutObservation {
    match read_rollout(client).await {
        Ok(o) => o,
        Err(e) => observation::from_error(&e, unobservable(&e)),
    }
}

async fn read_rollout(client: &kube::Client) -> Result<RolloutObservation, KubeError> {
    let what = format!("DaemonSet/{KUBE_NAME}");
    let daemonsets = in_sensor_namespace(client, "apps/v1", "DaemonSet");
    let ds = within("read", &what, daemonsets.get(KUBE_NAME)).await?;
    let status = &ds.data["status"];
    let n = |k: &str| status[k].as_i64().unwrap_or(0);
    let (desired, ready, updated, available) = (
        n("desiredNumberScheduled"),
        n("numberReady"),
        n("updatedNumberScheduled"),
        n("numberAvailable"),
    );
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    let generation = ds.metadata.generation.unwrap_or(0);
    let done = observed >= generation
        && desired > 0
        && ready == desired
        && updated == desired
        && available == desired;
    let reason = if done {
        None
    } else {
        warning_event(client).await
    };
    Ok(RolloutObservation {
        status: Some(RolloutStatus {
            desired,
            ready,
            updated,
            done,
        }),
        unobservable: None,
        reason,
    })
}

/// The newest `Warning` event about the DaemonSet (e.g. `FailedCreate: pods … is forbidden:
/// violates PodSecurity "baseline:latest"`).
async fn warning_event(client: &kube::Client) -> Option<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), KUBE_NAMESPACE);
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind=DaemonSet,involvedObject.name={KUBE_NAME},type=Warning"
    ));
    let list = tokio::time::timeout(CALL_TIMEOUT, events.list(&params))
        .await
        .ok()?
        .ok()?;
    let newest = list.items.iter().max_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or(0)
    })?;
    Some(format!(
        "{}: {}",
        newest.reason.as_deref().unwrap_or("Warning"),
        newest.message.as_deref().unwrap_or("")
    ))
}

/// The nodes of the sensor's Ready pods.
pub async fn ready_nodes(client: &kube::Client) -> Result<Vec<String>, KubeError> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), KUBE_NAMESPACE);
    let params = ListParams::default().labels(&format!("app.kubernetes.io/name={KUBE_NAME}"));
    let list = within("list", "Pods", pods.list(&params)).await?;
    let mut nodes: Vec<String> = list
        .items
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// Restores every object of the plan (see the module doc), the DaemonSet first. The flag says
/// whether something remains only because the cluster could not be reached (worth retrying).
pub async fn rollback(client: &kube::Client, run: &SensorRun) -> (RollbackReport, bool) {
    let mut report = RollbackReport::default();
    let mut transient = false;
    for snapshot in run.plan.objects.iter().rev() {
        let what = format!("{}/{}", snapshot.kind, snapshot.name);
        let mut outcome = restore(client, snapshot).await;
        // A controller's status write between the read and the restore: read again.
        for _ in 0..3 {
            if !matches!(outcome, Ok(Restored::Retry)) {
                break;
            }
            outcome = restore(client, snapshot).await;
        }
        match outcome {
            Ok(Restored::Done(text)) => report.restored.push(text),
            Ok(Restored::Untouched) => {}
            Ok(Restored::Drifted(text)) => report.remaining.push(format!("{what}: {text}")),
            Ok(Restored::Retry) => report.remaining.push(format!(
                "{what}: it kept changing while it was being restored"
            )),
            Err(e) => {
                transient |= matches!(&e, SensorError::Kube(k) if unobservable(k));
                report.remaining.push(format!("{what}: {e}"));
            }
        }
    }
    info!(restored = ?report.restored, remaining = ?report.remaining, "sensor rolled back");
    (report, transient)
}

enum Restored {
    Done(String),
    Untouched,
    Drifted(String),
    /// The resourceVersion precondition failed: read and try again.
    Retry,
}

fn shown(paths: &std::collections::BTreeSet<String>) -> String {
    let list: Vec<String> = paths.iter().take(3).map(|p| p.replace("f:", "")).collect();
    let more = paths.len().saturating_sub(3);
    if more > 0 {
        format!("{} and {more} more", list.join(", "))
    } else {
        list.join(", ")
    }
}

/// Restores one object of the plan: untouched when it is as before, drifted when someone else
/// has changed it since the apply, deleted when the run created it, else qflows' previous
/// values applied back.
async fn restore(client: &kube::Client, s: &ObjectSnapshot) -> Result<Restored, SensorError> {
    let manifest = json!({"apiVersion": s.api_version, "kind": s.kind,
        "metadata": {"name": s.name, "namespace": s.namespace}});
    let r = resource(&manifest);
    let api = api(client, &r);
    let what = format!("{}/{}", s.kind, s.name);
    let Some(live) = within("read", &what, api.get_opt(&s.name)).await? else {
        return Ok(if s.existed {
            Restored::Drifted("it was deleted since the apply; not re-created".into())
        } else {
            Restored::Untouched
        });
    };
    let live = serde_json::to_value(&live).unwrap_or_default();
    let paths = union(&s.managed_before, &s.managed_after);
    if let Some(verdict) = untouched_or_drifted(s, &live, &paths) {
        return Ok(verdict);
    }
    if !s.existed {
        return delete_created(&api, s, &live, &what).await;
    }
    let previous = previous_values(client, s, &paths).await?;
    let body = restore_body(s, previous, &live);
    let params = PatchParams::apply(FIELD_MANAGER);
    match within(
        "restore",
        &what,
        api.patch(&s.name, &params, &Patch::Apply(&body)),
    )
    .await
    {
        Ok(_) => {}
        Err(KubeError::Api {
            source: kube::Error::Api(st),
            ..
        }) if st.code == 409 && st.message.contains("has been modified") => {
            return Ok(Restored::Retry);
        }
        Err(KubeError::Api {
            source: kube::Error::Api(st),
            ..
        }) if st.code == 409 => {
            return Ok(Restored::Drifted(format!(
                "changed while it was being restored ({}); left as it is",
                st.message
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let image = body["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .map(|i| format!(" (image {i})"))
        .unwrap_or_default();
    Ok(Restored::Done(format!(
        "{what} restored to its previous {}{image}",
        if s.revision.is_some() {
            "revision"
        } else {
            "spec"
        }
    )))
}

/// `Untouched` when the object existed and is as before the run (qflows owns what it owned,
/// with the values it had); `Drifted` when fields qflows applied are owned by someone else
/// now; `None` when it is to be restored.
fn untouched_or_drifted(s: &ObjectSnapshot, live: &Value, paths: &Value) -> Option<Restored> {
    let now = leaves(&managed_by(live, FIELD_MANAGER));
    let before = leaves(&s.managed_before);
    let after = leaves(&s.managed_after);
    if s.existed && now == before && s.previous == project(live, paths).unwrap_or(Value::Null) {
        return Some(Restored::Untouched);
    }
    // Fields qflows applied but owns no more: someone else has written them since.
    let lost: std::collections::BTreeSet<String> = after.difference(&now).cloned().collect();
    if !lost.is_empty() && now != before {
        let owners = owners_of(live, FIELD_MANAGER, &lost);
        return Some(Restored::Drifted(format!(
            "changed since the apply by {} ({}); left as they made it",
            if owners.is_empty() {
                "another client".to_string()
            } else {
                owners.join(", ")
            },
            shown(&lost)
        )));
    }
    None
}

/// Deletes an object this run created (UID precondition), unless another manager has written
/// to it since.
async fn delete_created(
    api: &Api<DynamicObject>,
    s: &ObjectSnapshot,
    live: &Value,
    what: &str,
) -> Result<Restored, SensorError> {
    let others = touched_by_others(live, FIELD_MANAGER);
    if !others.is_empty() {
        return Ok(Restored::Drifted(format!(
            "created by this run, but written since by {}; not deleted",
            others.join(", ")
        )));
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: live["metadata"]["uid"].as_str().map(str::to_string),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    within("delete", what, api.delete(&s.name, &params)).await?;
    Ok(Restored::Done(format!(
        "{what} deleted (it did not exist before)"
    )))
}

/// qflows' previous values at `paths`, the DaemonSet's template from its recorded
/// ControllerRevision when that still exists.
async fn previous_values(
    client: &kube::Client,
    s: &ObjectSnapshot,
    paths: &Value,
) -> Result<Value, SensorError> {
    let mut previous = s.previous.clone();
    if let Some(revision) = &s.revision {
        let revisions = in_sensor_namespace(client, "apps/v1", "ControllerRevision");
        if let Some(cr) = within("read", revision, revisions.get_opt(revision)).await?
            && let Some(template) = cr.data["data"]["spec"]["template"].as_object()
        {
            let mut template = Value::Object(template.clone());
            if let Some(t) = template.as_object_mut() {
                t.remove("$patch");
            }
            let from_revision =
                project(&json!({"spec": {"template": template}}), paths).unwrap_or(Value::Null);
            if let Some(t) = from_revision.get("spec").and_then(|s| s.get("template")) {
                previous["spec"]["template"] = t.clone();
            }
        }
    }
    Ok(previous)
}

/// The server-side apply body that puts `previous` back, with the object as read (`live`) as
/// its `resourceVersion` precondition.
fn restore_body(s: &ObjectSnapshot, previous: Value, live: &Value) -> Value {
    let mut body = if previous.is_object() {
        previous
    } else {
        json!({})
    };
    body["apiVersion"] = json!(s.api_version);
    body["kind"] = json!(s.kind);
    body["metadata"]["name"] = json!(s.name);
    if let Some(ns) = &s.namespace {
        body["metadata"]["namespace"] = json!(ns);
    }
    // A precondition: the object as read above, or nothing.
    body["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
    body
}
