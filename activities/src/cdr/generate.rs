//! Findings → evidence per policy ([`Grouper`]) → validated policies ([`generate`], which never
//! returns one Tetragon would refuse). Pure code, no I/O: the offline `qflows policy generate`,
//! the benchmark and the CdrToPolicy activities all call it.

use super::findings::{self, SkipReason, Skipped};
use super::render::{self, RenderOptions};
use qflows_tetragon::policy::TracingPolicy;
use qflows_tetragon::schema;
use qflows_workflows::cdr::evidence::{
    Category, Enforcement, Evidence, Facts, Observation, Observed, PolicyKey, Workload,
};
use qflows_workflows::cdr::model::FindingsReport;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

/// At most this many distinct unknown category names are reported.
const UNKNOWN_NAMES: usize = 50;

/// Collects observations into evidence per policy key, and counts what was skipped.
///
/// Groups are found by a keyed hash of their key (never by comparing whole workloads in a
/// tree), so a finding is grouped without building its key; keys are sorted once, at the end.
#[derive(Debug, Default)]
pub struct Grouper {
    /// In order of first appearance.
    groups: Vec<(PolicyKey, Evidence)>,
    /// Key hash → positions in `groups` (almost always one).
    index: HashMap<u64, Vec<usize>, BuildHasherDefault<Prehashed>>,
    hasher: RandomState,
    report: FindingsReport,
}

/// The hasher of [`Grouper::index`], whose keys are already keyed hashes ([`RandomState`]: an
/// attacker who controls findings cannot choose colliding workloads).
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A policy key seen through borrowed parts: what both an owned [`PolicyKey`] and a finding
/// being read ([`findings::Seen`]) offer, so both hash and compare the same way.
trait KeyParts {
    fn category(&self) -> Category;
    fn namespace(&self) -> Option<&str>;
    fn labels(&self) -> impl Iterator<Item = (&str, &str)>;
    fn image_repository(&self) -> Option<&str>;
}

impl KeyParts for PolicyKey {
    fn category(&self) -> Category {
        self.category
    }
    fn namespace(&self) -> Option<&str> {
        self.workload.namespace.as_deref()
    }
    fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.workload
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn image_repository(&self) -> Option<&str> {
        self.workload.image_repository.as_deref()
    }
}

impl KeyParts for findings::Seen<'_> {
    fn category(&self) -> Category {
        self.category
    }
    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
    fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        findings::Seen::labels(self)
    }
    fn image_repository(&self) -> Option<&str> {
        self.image_repository.as_deref()
    }
}

fn same_key(a: &impl KeyParts, b: &impl KeyParts) -> bool {
    a.category() == b.category()
        && a.namespace() == b.namespace()
        && a.image_repository() == b.image_repository()
        && a.labels().eq(b.labels())
}

impl Grouper {
    fn hash_key(&self, key: &impl KeyParts) -> u64 {
        let mut h = self.hasher.build_hasher();
        key.category().hash(&mut h);
        key.namespace().hash(&mut h);
        key.image_repository().hash(&mut h);
        for (k, v) in key.labels() {
            k.hash(&mut h);
            v.hash(&mut h);
        }
        h.finish()
    }

    /// The position of `key`'s group, if it has one, and its hash.
    fn find(&self, key: &impl KeyParts) -> (Option<usize>, u64) {
        let hash = self.hash_key(key);
        let found = self.index.get(&hash).and_then(|at| {
            at.iter()
                .copied()
                .find(|&i| same_key(&self.groups[i].0, key))
        });
        (found, hash)
    }

    fn insert(&mut self, hash: u64, key: PolicyKey) -> usize {
        let i = self.groups.len();
        self.groups.push((key, Evidence::default()));
        self.index.entry(hash).or_default().push(i);
        i
    }

    /// Adds one finding's observation (or the reason it was skipped).
    pub fn add(&mut self, observation: Result<Observation, Skipped>) {
        match observation {
            Ok(mut o) => {
                self.report.findings += 1;
                let Some(category) = o.category else { return };
                self.report.used += 1;
                let key = PolicyKey {
                    category,
                    workload: std::mem::take(&mut o.workload),
                };
                let i = match self.find(&key) {
                    (Some(i), _) => i,
                    (None, hash) => self.insert(hash, key),
                };
                self.groups[i].1.record(&o);
            }
            Err(skipped) => self.skip(skipped.reason, skipped.category.as_deref()),
        }
    }

    /// [`Grouper::add`] for a finding being read (`Err`: why it is skipped).
    pub(crate) fn add_seen(&mut self, seen: Result<findings::Seen<'_>, findings::SkippedRef<'_>>) {
        let seen = match seen {
            Ok(seen) => seen,
            Err(skipped) => {
                return self.skip(
                    skipped.reason,
                    skipped.category.as_deref().map(findings::report_name),
                );
            }
        };
        self.report.findings += 1;
        self.report.used += 1;
        let i = match self.find(&seen) {
            (Some(i), _) => i,
            (None, hash) => {
                let key = PolicyKey {
                    category: seen.category,
                    workload: Workload {
                        namespace: seen.namespace.as_deref().map(String::from),
                        labels: seen
                            .labels()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        image_repository: seen.image_repository.as_deref().map(String::from),
                    },
                };
                self.insert(hash, key)
            }
        };
        self.groups[i].1.record_facts(&Facts {
            id: seen.id.as_deref(),
            process: seen.process.as_deref(),
            address: seen.address.as_deref(),
            port: seen.port,
            techniques: seen.techniques,
            timestamp: seen.timestamp.as_deref(),
            severity: seen.severity,
        });
    }

    /// Counts a skipped finding (`category`: the unknown category's name, as reported).
    fn skip(&mut self, reason: SkipReason, category: Option<&str>) {
        self.report.findings += 1;
        match self.report.skipped.get_mut(reason.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.report.skipped.insert(reason.as_str().to_string(), 1);
            }
        }
        if let Some(name) = category {
            let known = self.report.unknown_categories.len();
            if let Some(n) = self.report.unknown_categories.get_mut(name) {
                *n += 1;
            } else if known < UNKNOWN_NAMES {
                self.report.unknown_categories.insert(name.to_string(), 1);
            }
        }
    }

    /// The evidence per key (sorted) and the report.
    pub fn finish(mut self) -> (Vec<(PolicyKey, Evidence)>, FindingsReport) {
        self.groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        (self.groups, self.report)
    }

    /// What has been grouped so far, to resume from ([`Grouper::resume`]).
    pub fn checkpoint(&self) -> GrouperCheckpoint {
        let mut groups = self.groups.clone();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        GrouperCheckpoint {
            groups,
            report: self.report.clone(),
        }
    }

    /// A grouper that continues from `checkpoint`.
    pub fn resume(checkpoint: GrouperCheckpoint) -> Self {
        let mut grouper = Self {
            report: checkpoint.report,
            ..Self::default()
        };
        // (A key twice, which checkpoints never hold: the later one counts, as in a map.)
        for (key, evidence) in checkpoint.groups {
            let i = match grouper.find(&key) {
                (Some(i), _) => i,
                (None, hash) => grouper.insert(hash, key),
            };
            grouper.groups[i].1 = evidence;
        }
        grouper
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

/// [`read_document`](findings::read_document) straight into `grouper`, as
/// `read_document(json, |o| grouper.add(o))` would, without making an `Observation` per finding:
/// values are borrowed from `json` and copied only into the evidence that keeps them.
pub fn read_document_grouped(json: &[u8], grouper: &mut Grouper) -> Result<u64, serde_json::Error> {
    findings::read_document_seen(json, |seen| grouper.add_seen(seen))
}

#[cfg(test)]
#[path = "generate_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "reading_tests.rs"]
mod reading_tests;
