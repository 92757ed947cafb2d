//! The activities behind `CdrToPolicy`, and where policies go: a directory (one YAML file per
//! policy) and/or a cluster (server-side apply, field manager `qflows`).
//!
//! Both outputs are idempotent: an unchanged policy is neither rewritten nor re-applied with a
//! new `resourceVersion`, so GitOps diffs and cluster audit logs show only real changes.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::cdr::findings::observe;
use crate::cdr::render::{ENFORCEMENT_LABEL, MANAGED_BY, POLICY_SET_LABEL, RenderOptions};
use crate::cdr::{Generated, Grouper, generate};
use crate::failure::IntoFailure;
use crate::qualys::{CdrQuery, QualysClient};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use parking_lot::Mutex;
use qflows_workflows::cdr::{
    EvidenceBatch, FetchFindings, KubeTarget, PublishPolicies, PublishReport,
};
use qflows_workflows::contracts;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::info;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "qflows";

/// Errors writing or applying policies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyOutputError {
    /// A file could not be read or written.
    #[error("policy directory {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// No usable kubeconfig / context.
    #[error("kubernetes configuration: {0}")]
    KubeConfig(String),
    /// The API server refused or failed a request.
    #[error("kubernetes {action} {name}: {source}")]
    Kube {
        /// What was attempted.
        action: &'static str,
        /// Object.
        name: String,
        /// Cause.
        source: kube::Error,
    },
}

impl PolicyOutputError {
    /// Stable failure type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            PolicyOutputError::Io { .. } => "PolicyDirectoryError",
            PolicyOutputError::KubeConfig(_) => "KubeConfigError",
            PolicyOutputError::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code == 401 || s.code == 403 => "KubeForbidden",
                kube::Error::Api(s) if s.code == 404 => "KubeNotFound",
                kube::Error::Api(s) if s.code == 422 || s.code == 400 => "KubeRejected",
                _ => "KubeUnavailable",
            },
        }
    }

    /// Whether retrying may help (outages, conflicts; not refusals or bad configuration).
    pub fn is_retryable(&self) -> bool {
        matches!(self.type_name(), "KubeUnavailable" | "PolicyDirectoryError")
    }
}

impl IntoFailure for PolicyOutputError {
    fn into_failure(self) -> ActivityError {
        let type_name = self.type_name();
        let retryable = self.is_retryable();
        crate::failure::failure(self, type_name, retryable, None)
    }
}

/// What happened to one policy at an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Did not exist.
    Created,
    /// Existed with other content.
    Updated,
    /// Already as rendered.
    Unchanged,
}

/// Writes `<name>.yaml` files; rewrites only what changed (atomic rename).
pub fn write_file(dir: &Path, g: &Generated) -> Result<Outcome, PolicyOutputError> {
    let io = |source| PolicyOutputError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join(format!("{}.yaml", g.name));
    let outcome = match std::fs::read(&path) {
        Ok(old) if old == g.yaml.as_bytes() => return Ok(Outcome::Unchanged),
        Ok(_) => Outcome::Updated,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Created,
        Err(e) => return Err(io(e)),
    };
    let tmp = dir.join(format!(".{}.yaml.tmp", g.name));
    std::fs::write(&tmp, &g.yaml).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(outcome)
}

/// Removes `<name>.yaml` if it is a qflows-managed policy of `policy_set`; true when removed.
pub fn remove_file(dir: &Path, name: &str, policy_set: &str) -> Result<bool, PolicyOutputError> {
    let path = dir.join(format!("{name}.yaml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(PolicyOutputError::Io { path, source }),
    };
    let ours = text.contains(&format!("{}: {}", MANAGED_BY.0, MANAGED_BY.1))
        && text.contains(&format!("{POLICY_SET_LABEL}: {policy_set}"));
    if !ours {
        return Ok(false);
    }
    std::fs::remove_file(&path).map_err(|source| PolicyOutputError::Io { path, source })?;
    Ok(true)
}

/// The two TracingPolicy kinds as dynamic API resources.
pub fn api_resource(namespaced: bool) -> ApiResource {
    let kind = if namespaced {
        "TracingPolicyNamespaced"
    } else {
        "TracingPolicy"
    };
    let plural = if namespaced {
        "tracingpoliciesnamespaced"
    } else {
        "tracingpolicies"
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v1alpha1", kind),
        plural,
    )
}

/// Selects rustls' process-wide crypto provider (ring) once. The dependency graph enables both
/// ring (kube) and aws-lc-rs (the AWS SDK), so rustls cannot pick one by itself; idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A Kubernetes client for a target: its kubeconfig and context, or the usual inference
/// (`$KUBECONFIG`, `~/.kube/config`, in-cluster) when neither is named. Exec credential
/// plugins (`aws eks get-token`, `kubelogin`, `gke-gcloud-auth-plugin`) work as in kubectl.
pub async fn kube_client(target: &KubeTarget) -> Result<kube::Client, PolicyOutputError> {
    install_tls_provider();
    let bad = |e: &dyn std::fmt::Display| PolicyOutputError::KubeConfig(e.to_string());
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| bad(&e))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| bad(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| bad(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| bad(&e))?,
    };
    kube::Client::try_from(config).map_err(|e| bad(&e))
}

fn api_for(client: &kube::Client, g: &Generated) -> Api<DynamicObject> {
    let ar = api_resource(g.policy.is_namespaced());
    match &g.policy.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// True when every field of `want` is in `have` with the same value (objects may have more
/// fields: defaults the API server filled in, fields of other managers).
pub(crate) fn contained(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contained(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contained(a, b))
        }
        (w, h) => w == h,
    }
}

/// Server-side applies one policy, unless the cluster already holds it as rendered: then it
/// is not written at all (no new `resourceVersion`, no audit-log entry, nothing for watchers).
///
/// Also returns the enforcement label the cluster's copy had before, if any.
pub async fn apply(
    client: &kube::Client,
    g: &Generated,
) -> Result<(Outcome, Option<String>), PolicyOutputError> {
    let api = api_for(client, g);
    let err = |action, source| PolicyOutputError::Kube {
        action,
        name: g.name.clone(),
        source,
    };
    let desired = g.policy.to_value();
    let existing = api.get_opt(&g.name).await.map_err(|e| err("read", e))?;
    let before = existing
        .as_ref()
        .and_then(|o| o.metadata.labels.as_ref()?.get(ENFORCEMENT_LABEL).cloned());
    if let Some(o) = &existing {
        let have = serde_json::json!({
            "metadata": {"labels": o.metadata.labels, "annotations": o.metadata.annotations},
            "spec": o.data.get("spec"),
        });
        let want = serde_json::json!({
            "metadata": {"labels": desired["metadata"]["labels"],
                         "annotations": desired["metadata"]["annotations"]},
            "spec": desired["spec"],
        });
        if contained(&want, &have) {
            return Ok((Outcome::Unchanged, before));
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&g.name, &params, &Patch::Apply(desired))
        .await
        .map_err(|e| err("apply", e))?;
    let outcome = if existing.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    };
    Ok((outcome, before))
}

/// The enforcement label (`audit` / `enforce`) of a policy file qflows wrote, if it has one.
fn enforcement_in_file(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.yaml"))).ok()?;
    let prefix = format!("{ENFORCEMENT_LABEL}:");
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix(&prefix)?;
        Some(
            value
                .trim()
                .trim_matches(|c| c == '\'' || c == '"')
                .to_string(),
        )
    })
}

/// Deletes qflows-managed policies of `policy_set` named in `names`, in both kinds and every
/// namespace; returns the names deleted.
pub async fn prune(
    client: &kube::Client,
    policy_set: &str,
    names: &BTreeSet<String>,
) -> Result<Vec<String>, PolicyOutputError> {
    let selector = format!(
        "{}={},{POLICY_SET_LABEL}={policy_set}",
        MANAGED_BY.0, MANAGED_BY.1
    );
    let mut deleted = Vec::new();
    for namespaced in [false, true] {
        let ar = api_resource(namespaced);
        let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let list = all
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|source| PolicyOutputError::Kube {
                action: "list",
                name: ar.plural.clone(),
                source,
            })?;
        for o in list.items {
            let Some(name) = o.metadata.name.clone() else {
                continue;
            };
            if !names.contains(&name) {
                continue;
            }
            let api: Api<DynamicObject> = match &o.metadata.namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => deleted.push(name),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(PolicyOutputError::Kube {
                        action: "delete",
                        name,
                        source,
                    });
                }
            }
        }
    }
    Ok(deleted)
}

/// Publishes a rendered set to the outputs of `request`; merges per-output outcomes (a policy
/// counts as created/updated if any output created/updated it).
pub async fn publish(
    request: &PublishPolicies,
    generated: &[Generated],
    client: Option<&kube::Client>,
) -> Result<PublishReport, PolicyOutputError> {
    let mut report = PublishReport::default();
    let mut outcomes: Vec<Outcome> = vec![Outcome::Unchanged; generated.len()];
    let merge = |slot: &mut Outcome, o: Outcome| {
        *slot = match (*slot, o) {
            (Outcome::Created, _) | (_, Outcome::Created) => Outcome::Created,
            (Outcome::Updated, _) | (_, Outcome::Updated) => Outcome::Updated,
            _ => Outcome::Unchanged,
        }
    };
    // What each policy's enforcement was before this publish, from the first output that had it.
    let mut before: Vec<Option<String>> = vec![None; generated.len()];
    let removed: BTreeSet<String> = request.removed.iter().cloned().collect();
    if let Some(dir) = &request.output.directory {
        let dir = Path::new(dir);
        for ((g, slot), was) in generated
            .iter()
            .zip(outcomes.iter_mut())
            .zip(before.iter_mut())
        {
            *was = enforcement_in_file(dir, &g.name);
            merge(slot, write_file(dir, g)?);
        }
        for name in &removed {
            if remove_file(dir, name, &request.policy_set)? {
                report.deleted.push(name.clone());
            }
        }
    }
    let mut failed = BTreeSet::new();
    if let Some(client) = client {
        for ((g, slot), was) in generated
            .iter()
            .zip(outcomes.iter_mut())
            .zip(before.iter_mut())
        {
            match apply(client, g).await {
                Ok((o, cluster_had)) => {
                    merge(slot, o);
                    if was.is_none() {
                        *was = cluster_had;
                    }
                }
                // Refused for this policy alone (its namespace is gone, an admission webhook
                // said no): report it and go on with the others.
                Err(e) if !e.is_retryable() && e.type_name() != "KubeForbidden" => {
                    report.refused.push((g.name.clone(), e.to_string()));
                    failed.insert(g.name.clone());
                }
                Err(e) => return Err(e),
            }
        }
        if !removed.is_empty() {
            report
                .deleted
                .extend(prune(client, &request.policy_set, &removed).await?);
        }
    }
    for ((g, o), was) in generated.iter().zip(outcomes).zip(before) {
        if failed.contains(&g.name) {
            continue;
        }
        if let (Outcome::Updated, Some(was)) = (o, was)
            && let Some(now) = g.policy.to_value()["metadata"]["labels"][ENFORCEMENT_LABEL].as_str()
        {
            crate::metrics::policy_enforcement_changed(&was, now);
        }
        let list = match o {
            Outcome::Created => &mut report.created,
            Outcome::Updated => &mut report.updated,
            Outcome::Unchanged => &mut report.unchanged,
        };
        list.push(g.name.clone());
    }
    report.deleted.sort();
    report.deleted.dedup();
    Ok(report)
}

/// A cluster target's identity: kubeconfig path and context.
type ClusterKey = (Option<String>, Option<String>);

/// The CdrToPolicy activities.
pub struct CdrActivities {
    qualys: QualysClient,
    clients: Mutex<HashMap<ClusterKey, kube::Client>>,
}

impl CdrActivities {
    /// Activities reading findings with this Qualys client.
    pub fn new(qualys: QualysClient) -> Self {
        Self {
            qualys,
            clients: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self, target: &KubeTarget) -> Result<kube::Client, PolicyOutputError> {
        let key = (target.kubeconfig.clone(), target.context.clone());
        if let Some(c) = self.clients.lock().get(&key) {
            return Ok(c.clone());
        }
        let c = kube_client(target).await?;
        self.clients.lock().insert(key, c.clone());
        Ok(c)
    }
}

/// `2026-01-10T16:45:00Z` → `2026-01-10T16:45:00.000Z` (start) / `.999Z` (end), the format the
/// CDR API is called with.
fn with_millis(t: &str, millis: &str) -> String {
    match t.strip_suffix('Z') {
        Some(base) if !base.contains('.') => format!("{base}.{millis}Z"),
        _ => t.to_string(),
    }
}

#[activities]
impl CdrActivities {
    /// Reads every page of the window's findings and groups them into evidence per policy.
    #[activity(definition = contracts::FetchCdrEvidence)]
    pub async fn fetch_evidence(
        self: Arc<Self>,
        _ctx: ActivityContext,
        q: FetchFindings,
    ) -> Result<EvidenceBatch, ActivityError> {
        let query = CdrQuery {
            cloud_provider: q.filters.cloud_provider.clone(),
            severity: q.filters.severity.clone(),
            resource_type: q.filters.resource_type.clone(),
            ..CdrQuery::new(
                with_millis(&q.start_at, "000"),
                with_millis(&q.end_at, "999"),
            )
        };
        let findings = self
            .qualys
            .cdr_findings(&query)
            .await
            .map_err(IntoFailure::into_failure)?;
        let mut grouper = Grouper::default();
        for f in &findings {
            grouper.add(observe(f));
        }
        let (groups, report) = grouper.finish();
        info!(
            findings = report.findings,
            used = report.used,
            policies = groups.len(),
            "CDR findings read"
        );
        Ok(EvidenceBatch { groups, report })
    }

    /// Renders, validates and publishes the policy set.
    #[activity(definition = contracts::PublishCdrPolicies)]
    pub async fn publish(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: PublishPolicies,
    ) -> Result<PublishReport, ActivityError> {
        let opts = RenderOptions {
            tetragon_version: request.tetragon_version,
            audit_style: request.audit_style,
            policy_set: Some(request.policy_set.clone()),
        };
        let generation = generate(
            request
                .policies
                .iter()
                .map(|p| (&p.key, &p.evidence, p.enforcement)),
            &opts,
        );
        let client = match &request.output.kubernetes {
            Some(target) => Some(
                self.client(target)
                    .await
                    .map_err(IntoFailure::into_failure)?,
            ),
            None => None,
        };
        let mut report = publish(&request, &generation.policies, client.as_ref())
            .await
            .map_err(IntoFailure::into_failure)?;
        report.refused.extend(generation.refused);
        info!(
            created = report.created.len(),
            updated = report.updated.len(),
            unchanged = report.unchanged.len(),
            deleted = report.deleted.len(),
            refused = report.refused.len(),
            "policies published"
        );
        Ok(report)
    }
}
