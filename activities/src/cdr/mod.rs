//! CDR findings → Tetragon TracingPolicies: pure code, no I/O (the offline `qflows policy
//! generate`, the benchmark and the CdrToPolicy activities all call it).
//!
//! - [`findings`]: tolerant reading of findings;
//! - [`render`]: one policy design per category, audit and block forms;
//! - [`Grouper`]: findings → evidence per policy;
//! - [`generate`]: evidence → validated policies (never returns one Tetragon would refuse).

pub mod findings;
pub mod render;

use crate::tetragon::policy::TracingPolicy;
use crate::tetragon::schema;
use findings::Skipped;
use qflows_workflows::cdr::FindingsReport;
use qflows_workflows::cdr::model::{Enforcement, Evidence, Observation, Observed, PolicyKey};
use render::RenderOptions;
use std::collections::BTreeMap;

/// At most this many distinct unknown category names are reported.
const UNKNOWN_NAMES: usize = 50;

/// Collects observations into evidence per policy key, and counts what was skipped.
#[derive(Debug, Default)]
pub struct Grouper {
    groups: BTreeMap<PolicyKey, Evidence>,
    report: FindingsReport,
}

impl Grouper {
    /// Adds one finding's observation (or the reason it was skipped).
    pub fn add(&mut self, observation: Result<Observation, Skipped>) {
        self.report.findings += 1;
        match observation {
            Ok(mut o) => {
                let Some(category) = o.category else { return };
                self.report.used += 1;
                let key = PolicyKey {
                    category,
                    workload: std::mem::take(&mut o.workload),
                };
                match self.groups.get_mut(&key) {
                    Some(evidence) => evidence.record(&o),
                    None => self.groups.entry(key).or_default().record(&o),
                }
            }
            Err(skipped) => {
                *self
                    .report
                    .skipped
                    .entry(skipped.reason.as_str().to_string())
                    .or_default() += 1;
                if let Some(name) = skipped.category {
                    let known = self.report.unknown_categories.len();
                    if let Some(n) = self.report.unknown_categories.get_mut(&name) {
                        *n += 1;
                    } else if known < UNKNOWN_NAMES {
                        self.report.unknown_categories.insert(name, 1);
                    }
                }
            }
        }
    }

    /// The evidence per key (sorted) and the report.
    pub fn finish(self) -> (Vec<(PolicyKey, Evidence)>, FindingsReport) {
        (self.groups.into_iter().collect(), self.report)
    }

    /// What has been grouped so far, to resume from ([`Grouper::resume`]).
    pub fn checkpoint(&self) -> GrouperCheckpoint {
        GrouperCheckpoint {
            groups: self
                .groups
                .iter()
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect(),
            report: self.report.clone(),
        }
    }

    /// A grouper that continues from `checkpoint`.
    pub fn resume(checkpoint: GrouperCheckpoint) -> Self {
        Self {
            groups: checkpoint.groups.into_iter().collect(),
            report: checkpoint.report,
        }
    }
}

/// A [`Grouper`]'s progress as a document.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrouperCheckpoint {
    /// Evidence per key so far.
    pub groups: Vec<(PolicyKey, Evidence)>,
    /// Report so far.
    pub report: FindingsReport,
}

/// One policy ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Policy name (also the file name without `.yaml`).
    pub name: String,
    /// The object.
    pub policy: TracingPolicy,
    /// Its YAML (stable bytes).
    pub yaml: String,
}

/// What [`generate`] made of a set of policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generation {
    /// Valid policies, by name.
    pub policies: Vec<Generated>,
    /// Policies refused, with the reason (never written or applied).
    pub refused: Vec<(String, String)>,
}

/// Renders and validates each `(key, evidence, enforcement)`, every observed value approved (the
/// offline `qflows policy generate`). A policy that would not load on the target Tetragon
/// release (schema, CEL rules, loader limits, features) is refused.
pub fn generate<'a>(
    items: impl IntoIterator<Item = (&'a PolicyKey, &'a Evidence, Enforcement)>,
    opts: &RenderOptions,
) -> Generation {
    generate_with(
        items.into_iter().map(|(key, evidence, enforcement)| {
            let all = render::observed(key.category, evidence);
            (key, evidence, enforcement, Some(all))
        }),
        opts,
    )
}

/// [`generate`] with the observed values each enforced policy may block on
/// ([`render::render_with`]).
pub fn generate_with<'a>(
    items: impl IntoIterator<Item = (&'a PolicyKey, &'a Evidence, Enforcement, Option<Observed>)>,
    opts: &RenderOptions,
) -> Generation {
    let mut out = Generation::default();
    for (key, evidence, enforcement, approved) in items {
        let name = key.name();
        let policy = match render::render_with(key, evidence, enforcement, approved.as_ref(), opts)
        {
            Ok(p) => p,
            Err(e) => {
                out.refused.push((name, e.to_string()));
                continue;
            }
        };
        let value = policy.to_value();
        if let Err(violations) = schema::validate(&value) {
            let why = violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            out.refused
                .push((name, format!("fails Tetragon's policy schema: {why}")));
            continue;
        }
        let (major, minor) = schema::min_tetragon_version(&value);
        if !opts.tetragon_version.at_least(major, minor) {
            out.refused.push((
                name,
                format!(
                    "needs Tetragon {major}.{minor}, newer than the target {}",
                    opts.tetragon_version
                ),
            ));
            continue;
        }
        let yaml = policy.to_yaml();
        out.policies.push(Generated { name, policy, yaml });
    }
    out
}

#[cfg(test)]
mod tests;
