//! What CdrToPolicy reasons about: detection categories, the workload a finding came from, the
//! evidence gathered for one policy, and the policy's review state.
//!
//! These are plain data with deterministic merge rules (sorted sets, bounded sizes), so the same
//! findings always give the same evidence whatever order they arrive in, and a workflow's state
//! stays small however many findings it has seen.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many values are kept per evidence set (processes, addresses, ports, finding IDs).
pub const EVIDENCE_LIMIT: usize = 32;

/// The detection categories qflows turns into TracingPolicies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Cloud credentials read from the metadata service by a network utility (T1552.005).
    Imds,
    /// Network scanning utilities and raw sockets (T1046).
    Scanning,
    /// Container escape through namespaces and mounts (T1611).
    Escape,
    /// Privilege escalation through setuid/setgid to root (T1548).
    Privesc,
    /// Crypto-mining pool connections (T1496).
    Mining,
    /// Reverse shells (T1059.004).
    ReverseShell,
}

/// Every category, in a stable order.
pub const CATEGORIES: [Category; 6] = [
    Category::Imds,
    Category::Scanning,
    Category::Escape,
    Category::Privesc,
    Category::Mining,
    Category::ReverseShell,
];

impl Category {
    /// The MITRE ATT&CK technique the category's policy answers.
    pub fn technique(self) -> &'static str {
        match self {
            Category::Imds => "T1552.005",
            Category::Scanning => "T1046",
            Category::Escape => "T1611",
            Category::Privesc => "T1548",
            Category::Mining => "T1496",
            Category::ReverseShell => "T1059.004",
        }
    }

    /// Short DNS-1123 name used in policy names and labels.
    pub fn slug(self) -> &'static str {
        match self {
            Category::Imds => "imds",
            Category::Scanning => "scanning",
            Category::Escape => "escape",
            Category::Privesc => "privesc",
            Category::Mining => "mining",
            Category::ReverseShell => "revshell",
        }
    }

    /// Maps a Qualys `threatCategory` with case-insensitive substring rules, as the CDR policy
    /// operator did (`Cloud_Credentials_Accessed_By_Network_Utility` → [`Category::Imds`]).
    /// `None` for a category qflows has no policy for: it is reported, never guessed.
    pub fn from_threat_category(category: &str) -> Option<Self> {
        let c = category.to_ascii_lowercase().replace([' ', '-'], "_");
        let has = |words: &[&str]| words.iter().any(|w| c.contains(w));
        // Order matters: "reverse_shell" before anything matching "shell", "escape" before
        // "privilege" (an escape category may mention privileges), "credential" last.
        if has(&["reverse_shell", "revshell", "netcat"]) {
            Some(Category::ReverseShell)
        } else if has(&["escape", "breakout"]) {
            Some(Category::Escape)
        } else if has(&["mining", "miner", "crypto", "bitcoin", "coin"]) {
            Some(Category::Mining)
        } else if has(&["scan", "raw_socket"]) {
            Some(Category::Scanning)
        } else if has(&["privilege", "privesc", "setuid"]) {
            Some(Category::Privesc)
        } else if has(&["credential", "metadata", "imds"]) {
            Some(Category::Imds)
        } else {
            None
        }
    }

    /// Maps a MITRE technique ID (`T1552.005`, `T1046`, …; sub-techniques of T1548 match too).
    pub fn from_technique(technique: &str) -> Option<Self> {
        let t = technique.trim().to_ascii_uppercase().replace('_', ".");
        match t.as_str() {
            "T1552.005" => Some(Category::Imds),
            "T1046" => Some(Category::Scanning),
            "T1611" => Some(Category::Escape),
            "T1496" => Some(Category::Mining),
            "T1059.004" => Some(Category::ReverseShell),
            t if t == "T1548" || t.starts_with("T1548.") => Some(Category::Privesc),
            _ => None,
        }
    }
}

/// The workload a finding came from: what a policy is scoped to.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Kubernetes namespace, when the finding names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Stable pod labels (`app.kubernetes.io/name`, `app`, …; never `pod-template-hash`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Image repository without tag or digest (`111122223333.dkr.ecr…/web-api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_repository: Option<String>,
}

impl Workload {
    /// True when nothing identifies the workload: a policy for it could only cover every pod.
    pub fn is_unknown(&self) -> bool {
        self.namespace.is_none() && self.labels.is_empty() && self.image_repository.is_none()
    }
}

/// What identifies one generated policy: a category for a workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyKey {
    /// Detection category.
    pub category: Category,
    /// Workload the findings came from.
    pub workload: Workload,
}

/// Everything the findings behind one policy showed: used to tighten selectors and to annotate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Evidence {
    /// Findings merged into this evidence.
    pub finding_count: u64,
    /// Finding IDs (the [`EVIDENCE_LIMIT`] smallest, for a bounded, order-independent sample).
    #[serde(default)]
    pub finding_ids: BTreeSet<String>,
    /// Processes seen (absolute paths when the finding gave one, else names).
    #[serde(default)]
    pub processes: BTreeSet<String>,
    /// Destination addresses seen (valid IPv4/IPv6 only).
    #[serde(default)]
    pub addresses: BTreeSet<String>,
    /// Destination ports seen.
    #[serde(default)]
    pub ports: BTreeSet<u16>,
    /// Techniques the findings carried.
    #[serde(default)]
    pub techniques: BTreeSet<String>,
    /// Earliest finding time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// Latest finding time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Highest severity seen (1 = low … 4 = critical).
    #[serde(default)]
    pub max_severity: u8,
}

/// What [`Evidence::record_facts`] reads of one finding: the parts of an [`Observation`] that
/// are evidence, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a, T> {
    /// Finding ID.
    pub id: Option<&'a str>,
    /// Process path or name.
    pub process: Option<&'a str>,
    /// Destination address.
    pub address: Option<&'a str>,
    /// Destination port.
    pub port: Option<u16>,
    /// Techniques.
    pub techniques: &'a [T],
    /// Finding time.
    pub timestamp: Option<&'a str>,
    /// Severity 1..=4 (0 unknown).
    pub severity: u8,
}

fn insert_bounded<T: Ord>(set: &mut BTreeSet<T>, value: T) {
    set.insert(value);
    if set.len() > EVIDENCE_LIMIT {
        set.pop_last();
    }
}

/// [`insert_bounded`] for a borrowed value: clones only when it will be kept.
fn offer<T: Ord + ?Sized + ToOwned>(set: &mut BTreeSet<T::Owned>, value: &T)
where
    T::Owned: Ord + std::borrow::Borrow<T>,
{
    // A full set keeps only values below its largest: one comparison rejects most offers.
    let full = set.len() >= EVIDENCE_LIMIT;
    if (full
        && set
            .last()
            .is_some_and(|l| value >= std::borrow::Borrow::<T>::borrow(l)))
        || set.contains(value)
    {
        return;
    }
    insert_bounded(set, value.to_owned());
}

impl Evidence {
    /// Records one finding's facts.
    pub fn record(&mut self, finding: &Observation) {
        self.record_facts(&Facts {
            id: finding.id.as_deref(),
            process: finding.process.as_deref(),
            address: finding.address.as_deref(),
            port: finding.port,
            techniques: &finding.techniques,
            timestamp: finding.timestamp.as_deref(),
            severity: finding.severity,
        });
    }

    /// [`Evidence::record`] of a finding's facts borrowed from wherever they were read.
    pub fn record_facts<T: AsRef<str>>(&mut self, finding: &Facts<'_, T>) {
        self.finding_count += 1;
        if let Some(id) = finding.id {
            offer(&mut self.finding_ids, id);
        }
        if let Some(p) = finding.process {
            offer(&mut self.processes, p);
        }
        if let Some(a) = finding.address {
            offer(&mut self.addresses, a);
        }
        if let Some(p) = finding.port {
            offer(&mut self.ports, &p);
        }
        for t in finding.techniques {
            offer(&mut self.techniques, t.as_ref());
        }
        if let Some(ts) = finding.timestamp {
            self.observe_time(ts, ts);
        }
        self.max_severity = self.max_severity.max(finding.severity);
    }

    fn observe_time(&mut self, first: &str, last: &str) {
        // RFC 3339 UTC timestamps of one format compare correctly as strings.
        if self.first_seen.as_deref().is_none_or(|f| first < f) {
            self.first_seen = Some(first.to_string());
        }
        if self.last_seen.as_deref().is_none_or(|l| last > l) {
            self.last_seen = Some(last.to_string());
        }
    }

    /// Merges another evidence set into this one (commutative and associative).
    pub fn merge(&mut self, other: &Evidence) {
        self.finding_count += other.finding_count;
        for id in &other.finding_ids {
            offer(&mut self.finding_ids, id.as_str());
        }
        for p in &other.processes {
            offer(&mut self.processes, p.as_str());
        }
        for a in &other.addresses {
            offer(&mut self.addresses, a.as_str());
        }
        for p in &other.ports {
            offer(&mut self.ports, p);
        }
        for t in &other.techniques {
            offer(&mut self.techniques, t.as_str());
        }
        if let (Some(f), Some(l)) = (&other.first_seen, &other.last_seen) {
            self.observe_time(f, l);
        }
        self.max_severity = self.max_severity.max(other.max_severity);
    }

    /// `critical`, `high`, `medium` or `low`: the policy's priority label.
    pub fn priority(&self) -> &'static str {
        match self.max_severity {
            4.. => "critical",
            3 => "high",
            2 => "medium",
            _ => "low",
        }
    }
}

/// At most this many values of each kind count as observed (see [`Observed`]).
pub const OBSERVED_LIMIT: usize = 8;

/// Selector values taken from findings rather than from a category's fixed design: binaries by
/// full path, destination ports, destination addresses. Findings are attacker-controlled, so
/// these values never reach a blocking policy unreviewed: a blocking form carries only the
/// observed values a reviewer approved (see `PolicyRecord::approved`), and a policy with observed
/// values is never promoted automatically.
///
/// Each set holds at most [`OBSERVED_LIMIT`] values (the smallest, so the choice does not depend
/// on the order findings arrived in).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Observed {
    /// Executables by absolute path (matched exactly, never by basename).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub binaries: BTreeSet<String>,
    /// Destination ports.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ports: BTreeSet<u16>,
    /// Destination addresses.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub addresses: BTreeSet<String>,
}

impl Observed {
    /// True when no value was observed.
    pub fn is_empty(&self) -> bool {
        self.binaries.is_empty() && self.ports.is_empty() && self.addresses.is_empty()
    }

    /// Adds a binary path, keeping at most [`OBSERVED_LIMIT`].
    pub fn add_binary(&mut self, path: &str) {
        offer_limited(&mut self.binaries, path, OBSERVED_LIMIT);
    }

    /// Adds a port, keeping at most [`OBSERVED_LIMIT`].
    pub fn add_port(&mut self, port: u16) {
        offer_limited(&mut self.ports, &port, OBSERVED_LIMIT);
    }

    /// Adds an address, keeping at most [`OBSERVED_LIMIT`].
    pub fn add_address(&mut self, address: &str) {
        offer_limited(&mut self.addresses, address, OBSERVED_LIMIT);
    }

    /// The values of `self` that `approved` does not hold.
    pub fn without(&self, approved: &Observed) -> Observed {
        Observed {
            binaries: self
                .binaries
                .difference(&approved.binaries)
                .cloned()
                .collect(),
            ports: self.ports.difference(&approved.ports).copied().collect(),
            addresses: self
                .addresses
                .difference(&approved.addresses)
                .cloned()
                .collect(),
        }
    }

    /// A short, stable fingerprint of the values (the first 128 bits of the SHA-256 of their
    /// canonical JSON, in hex). A `promote` names the fingerprint of what its reviewer saw.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).expect("observed values serialise");
        Sha256::digest(&json)[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// One line for people: `binaries /tmp/x; ports 8080; addresses 45.9.148.3`, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |items: Vec<String>| items.join(",");
        if !self.binaries.is_empty() {
            parts.push(format!(
                "binaries {}",
                list(self.binaries.iter().cloned().collect())
            ));
        }
        if !self.ports.is_empty() {
            parts.push(format!(
                "ports {}",
                list(self.ports.iter().map(u16::to_string).collect())
            ));
        }
        if !self.addresses.is_empty() {
            parts.push(format!(
                "addresses {}",
                list(self.addresses.iter().cloned().collect())
            ));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

fn offer_limited<T: Ord + ?Sized + ToOwned>(set: &mut BTreeSet<T::Owned>, value: &T, limit: usize)
where
    T::Owned: Ord + std::borrow::Borrow<T>,
{
    if set.contains(value) {
        return;
    }
    set.insert(value.to_owned());
    if set.len() > limit {
        set.pop_last();
    }
}

/// One usable finding, reduced to what policy generation needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Finding ID.
    pub id: Option<String>,
    /// Category.
    pub category: Option<Category>,
    /// Techniques named by the finding.
    pub techniques: Vec<String>,
    /// Workload.
    pub workload: Workload,
    /// Process path or name.
    pub process: Option<String>,
    /// Destination address.
    pub address: Option<String>,
    /// Destination port.
    pub port: Option<u16>,
    /// Finding time.
    pub timestamp: Option<String>,
    /// Severity 1..=4 (0 unknown).
    pub severity: u8,
}

/// How a policy acts: audit (observe) or enforce (block).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum Enforcement {
    /// Post events only (or block actions under `policy-mode: monitor`).
    #[default]
    Audit,
    /// Kill / refuse the call.
    Enforce,
}

/// How audit-stage policies are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuditStyle {
    /// `Post` actions: events only.
    #[default]
    Post,
    /// The block actions under Tetragon's `policy-mode: monitor`: events show what would have been
    /// blocked.
    Monitor,
}

/// A Tetragon release (`major.minor`), to keep output within its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TetragonVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl TetragonVersion {
    /// The oldest release qflows generates for (`sockaddr` arguments arrived in v1.4).
    pub const MIN: TetragonVersion = TetragonVersion { major: 1, minor: 4 };
    /// The default target: the latest release the shipped schema was checked against.
    pub const DEFAULT: TetragonVersion = TetragonVersion { major: 1, minor: 7 };

    /// Parses `1.5`, `v1.5.2` or `1`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_start_matches('v');
        let mut parts = t.split('.');
        let num = |p: Option<&str>| -> Result<u32, String> {
            p.unwrap_or("0")
                .parse()
                .map_err(|_| format!("tetragon version {s:?} is not like 1.5 or v1.5.2"))
        };
        let v = TetragonVersion {
            major: num(parts.next())?,
            minor: num(parts.next())?,
        };
        if v < Self::MIN {
            return Err(format!(
                "tetragon version {s} is too old: qflows needs v{}.{} or later (sockaddr arguments)",
                Self::MIN.major,
                Self::MIN.minor
            ));
        }
        Ok(v)
    }

    /// True when this release has what `(major, minor)` introduced.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        self >= TetragonVersion { major, minor }
    }
}

impl std::fmt::Display for TetragonVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Serialize for TetragonVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TetragonVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TetragonVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl PolicyKey {
    /// The policy's stable name: `t<technique>-<category>-<workload>`, DNS-1123, at most 63
    /// characters (a hash of the exact workload is added when the readable part is lossy).
    pub fn name(&self) -> String {
        let key = self;
        let technique = key
            .category
            .technique()
            .to_ascii_lowercase()
            .replace('.', "-");
        let mut parts: Vec<&str> = Vec::new();
        if let Some(ns) = &key.workload.namespace {
            parts.push(ns);
        }
        if let Some(app) = app_name(&key.workload) {
            parts.push(app);
        }
        let image = key
            .workload
            .image_repository
            .as_deref()
            .and_then(|r| r.rsplit('/').next());
        if parts.is_empty() {
            parts.extend(image);
        }
        let raw = if parts.is_empty() {
            "all-pods".to_string()
        } else {
            parts.join("-")
        };
        let slug = dns_label(&raw);
        let base = format!("{technique}-{}-{slug}", key.category.slug());
        // Lossy slugs could collide (two workloads differing in case or punctuation): add a hash of
        // the exact workload then, and whenever the name is too long.
        let lossy = slug != raw || image.is_some_and(|_| key.workload.namespace.is_some());
        if base.len() <= 63 && !lossy {
            return base;
        }
        let hash = format!("{:08x}", fnv1a(&workload_identity(&key.workload)) as u32);
        let keep = base.len().min(63 - 9);
        format!("{}-{hash}", base[..keep].trim_end_matches('-'))
    }
}

fn app_name(w: &Workload) -> Option<&str> {
    ["app.kubernetes.io/name", "app", "k8s-app"]
        .iter()
        .find_map(|k| w.labels.get(*k))
        .map(String::as_str)
        .or_else(|| w.labels.values().next().map(String::as_str))
}

fn workload_identity(w: &Workload) -> String {
    serde_json::to_string(w).expect("a workload serialises")
}

/// FNV-1a 64: a stable hash (std's hasher may change between releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Lowercase alphanumerics and single dashes, no leading or trailing dash; `x` if nothing is left.
pub fn dns_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let t = out.trim_matches('-');
    if t.is_empty() { "x".into() } else { t.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_from_qualys_names_and_techniques() {
        let cases = [
            (
                "Cloud_Credentials_Accessed_By_Network_Utility",
                Some(Category::Imds),
            ),
            ("Network_Scanning_Utility", Some(Category::Scanning)),
            ("Container_Escape", Some(Category::Escape)),
            (
                "Container_escape_using_docker_socket_T1611",
                Some(Category::Escape),
            ),
            ("Privilege_Escalation", Some(Category::Privesc)),
            ("CryptoMiner_Execution_T1496", Some(Category::Mining)),
            ("Bitcoin-Mining", Some(Category::Mining)),
            (
                "Netcat_Reverse_Shell_Execution",
                Some(Category::ReverseShell),
            ),
            ("reverse shell", Some(Category::ReverseShell)),
            ("SSH_Password_Brute_Force", None),
            ("Interactive_shell_spawned_in_container_T1609", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(Category::from_threat_category(name), want, "{name}");
        }
        assert_eq!(
            Category::from_technique("T1548.001"),
            Some(Category::Privesc)
        );
        assert_eq!(Category::from_technique("t1552_005"), Some(Category::Imds));
        assert_eq!(Category::from_technique("T1609"), None);
    }

    fn obs(id: &str, process: &str, ts: &str, sev: u8) -> Observation {
        Observation {
            id: Some(id.into()),
            process: Some(process.into()),
            timestamp: Some(ts.into()),
            severity: sev,
            ..Default::default()
        }
    }

    #[test]
    fn evidence_merge_is_order_independent_and_bounded() {
        let all: Vec<Observation> = (0..100)
            .map(|i| {
                obs(
                    &format!("id-{i:03}"),
                    &format!("/bin/p{}", i % 40),
                    &format!("2026-01-10T10:{:02}:00Z", i % 60),
                    (i % 5) as u8,
                )
            })
            .collect();
        let mut forward = Evidence::default();
        all.iter().for_each(|o| forward.record(o));
        let (mut a, mut b) = (Evidence::default(), Evidence::default());
        all.iter().rev().take(37).for_each(|o| a.record(o));
        all.iter().rev().skip(37).for_each(|o| b.record(o));
        b.merge(&a);
        assert_eq!(forward, b);
        assert_eq!(forward.finding_count, 100);
        assert_eq!(forward.finding_ids.len(), EVIDENCE_LIMIT);
        assert_eq!(forward.finding_ids.first().unwrap(), "id-000");
        assert_eq!(forward.first_seen.as_deref(), Some("2026-01-10T10:00:00Z"));
        assert_eq!(forward.last_seen.as_deref(), Some("2026-01-10T10:59:00Z"));
        assert_eq!(forward.priority(), "critical");
    }

    #[test]
    fn observed_values_are_bounded_and_fingerprinted_stably() {
        let mut a = Observed::default();
        for i in (0..20).rev() {
            a.add_binary(&format!("/tmp/tool{i:02}"));
            a.add_port(9000 + i);
        }
        assert_eq!(a.binaries.len(), OBSERVED_LIMIT);
        assert_eq!(a.binaries.first().map(String::as_str), Some("/tmp/tool00"));
        assert_eq!(a.ports.len(), OBSERVED_LIMIT);
        let mut b = Observed::default();
        for i in 0..20 {
            b.add_port(9000 + i);
            b.add_binary(&format!("/tmp/tool{i:02}"));
        }
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 32);
        b.add_address("45.9.148.3");
        assert_ne!(a.digest(), b.digest());
        assert_eq!(b.without(&a).describe(), "addresses 45.9.148.3");
        assert_eq!(Observed::default().describe(), "none");
    }

    #[test]
    fn tetragon_versions() {
        assert_eq!(
            TetragonVersion::parse("v1.5.2").unwrap(),
            TetragonVersion { major: 1, minor: 5 }
        );
        assert!(
            TetragonVersion::parse("1.3")
                .unwrap_err()
                .contains("too old")
        );
        assert!(TetragonVersion::parse("one").is_err());
        assert!(TetragonVersion::DEFAULT.at_least(1, 7));
    }
}
