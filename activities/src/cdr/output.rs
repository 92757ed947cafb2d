//! Where policies go: a directory (one YAML file per policy) and/or a cluster (server-side apply,
//! field manager `qflows`).
//!
//! Both outputs are idempotent: an unchanged policy is neither rewritten nor re-applied with a
//! new `resourceVersion`, so GitOps diffs and cluster audit logs show only real changes.

use super::generate::Generated;
use super::render::{ENFORCEMENT_LABEL, MANAGED_BY, POLICY_SET_LABEL};
use crate::failure::IntoFailure;
use crate::kube::{FIELD_MANAGER, KubeError, contained};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use qflows_workflows::FailureType;
use qflows_workflows::cdr::model::{OutputSettings, PublishReport};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use temporalio_sdk::activities::ActivityError;

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
    /// The cluster output failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl PolicyOutputError {
    /// Stable failure type name.
    pub fn type_name(&self) -> FailureType {
        match self {
            PolicyOutputError::Io { .. } => FailureType::PolicyDirectoryError,
            PolicyOutputError::Kube(e) => e.type_name(),
        }
    }

    /// Whether retrying may help (outages, conflicts; not refusals or bad configuration).
    pub fn is_retryable(&self) -> bool {
        match self {
            PolicyOutputError::Io { .. } => true,
            PolicyOutputError::Kube(e) => e.is_retryable(),
        }
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

fn api_for(client: &kube::Client, g: &Generated) -> Api<DynamicObject> {
    let ar = api_resource(g.policy.is_namespaced());
    match &g.policy.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Server-side applies one policy, unless the cluster already holds it as rendered: then it
/// is not written at all (no new `resourceVersion`, no audit-log entry, nothing for watchers).
///
/// Also returns the enforcement label the cluster's copy had before, if any.
pub async fn apply(
    client: &kube::Client,
    g: &Generated,
) -> Result<(Outcome, Option<String>), KubeError> {
    let api = api_for(client, g);
    let err = |action, source| KubeError::Api {
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
) -> Result<Vec<String>, KubeError> {
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
            .map_err(|source| KubeError::Api {
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
                    return Err(KubeError::Api {
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

/// What a publish did to one policy, over its outputs.
#[derive(Debug, Clone)]
struct Tally {
    /// Created or updated if any output created or updated it.
    outcome: Outcome,
    /// Its enforcement before this publish, from the first output that had it.
    before: Option<String>,
}

impl Tally {
    fn add(&mut self, o: Outcome) {
        self.outcome = match (self.outcome, o) {
            (Outcome::Created, _) | (_, Outcome::Created) => Outcome::Created,
            (Outcome::Updated, _) | (_, Outcome::Updated) => Outcome::Updated,
            _ => Outcome::Unchanged,
        }
    }
}

/// Publishes a rendered set to `output` (removing `removed`, of `policy_set`); merges per-output outcomes (a policy
/// counts as created/updated if any output created/updated it).
pub async fn publish(
    policy_set: &str,
    output: &OutputSettings,
    removed: &[String],
    generated: &[Generated],
    client: Option<&kube::Client>,
) -> Result<PublishReport, PolicyOutputError> {
    let mut report = PublishReport::default();
    let mut tallies = vec![
        Tally {
            outcome: Outcome::Unchanged,
            before: None,
        };
        generated.len()
    ];
    let removed: BTreeSet<String> = removed.iter().cloned().collect();
    if let Some(dir) = &output.directory {
        let dir = Path::new(dir);
        publish_to_directory(
            dir,
            policy_set,
            generated,
            &removed,
            &mut tallies,
            &mut report,
        )?;
    }
    let mut failed = BTreeSet::new();
    if let Some(client) = client {
        failed = publish_to_cluster(
            client,
            policy_set,
            generated,
            &removed,
            &mut tallies,
            &mut report,
        )
        .await?;
    }
    for (g, tally) in generated.iter().zip(tallies) {
        if !failed.contains(&g.name) {
            report_outcome(g, tally, &mut report);
        }
    }
    report.deleted.sort();
    report.deleted.dedup();
    Ok(report)
}

/// Writes every policy's file and removes the files of `removed`.
fn publish_to_directory(
    dir: &Path,
    policy_set: &str,
    generated: &[Generated],
    removed: &BTreeSet<String>,
    tallies: &mut [Tally],
    report: &mut PublishReport,
) -> Result<(), PolicyOutputError> {
    for (g, tally) in generated.iter().zip(tallies.iter_mut()) {
        tally.before = enforcement_in_file(dir, &g.name);
        tally.add(write_file(dir, g)?);
    }
    for name in removed {
        if remove_file(dir, name, policy_set)? {
            report.deleted.push(name.clone());
        }
    }
    Ok(())
}

/// Applies every policy to the cluster and prunes `removed`; the names of the policies the
/// cluster refused (reported in `report.refused`).
async fn publish_to_cluster(
    client: &kube::Client,
    policy_set: &str,
    generated: &[Generated],
    removed: &BTreeSet<String>,
    tallies: &mut [Tally],
    report: &mut PublishReport,
) -> Result<BTreeSet<String>, PolicyOutputError> {
    let mut failed = BTreeSet::new();
    for (g, tally) in generated.iter().zip(tallies.iter_mut()) {
        match apply(client, g).await {
            Ok((o, cluster_had)) => {
                tally.add(o);
                if tally.before.is_none() {
                    tally.before = cluster_had;
                }
            }
            // Refused for this policy alone (its namespace is gone, an admission webhook
            // said no): report it and go on with the others.
            Err(e) if !e.is_retryable() && e.type_name() != FailureType::KubeForbidden => {
                report.refused.push((g.name.clone(), e.to_string()));
                failed.insert(g.name.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !removed.is_empty() {
        report
            .deleted
            .extend(prune(client, policy_set, removed).await?);
    }
    Ok(failed)
}

/// Lists `g` under its merged outcome, and counts a change of its enforcement.
fn report_outcome(g: &Generated, tally: Tally, report: &mut PublishReport) {
    if let (Outcome::Updated, Some(was)) = (tally.outcome, tally.before)
        && let Some(now) = g.policy.to_value()["metadata"]["labels"][ENFORCEMENT_LABEL].as_str()
    {
        crate::metrics::policy_enforcement_changed(&was, now);
    }
    let list = match tally.outcome {
        Outcome::Created => &mut report.created,
        Outcome::Updated => &mut report.updated,
        Outcome::Unchanged => &mut report.unchanged,
    };
    list.push(g.name.clone());
}
