//! Gate profiles: named gates, and the ordered selectors that pick one for a scope.
//!
//! Read from `QFLOWS_GATE_PROFILES_FILE` (YAML or JSON). Unknown keys are refused with their
//! path, so a typo (`failSeverty`) never silently leaves a production profile lenient. The
//! first selector whose every field matches the scope wins; no match is `default`, the
//! worker's `QFLOWS_GATE_*` settings unless the file defines a profile of that name.
//!
//! [`ProfilesFile`] re-reads the file when it changes (a ConfigMap update), keeping the last
//! valid version when a change does not parse — a broken edit must not open the gate.

use super::{AllowEntry, GatePolicy};
use qflows_workflows::scan::model::Verdict;
use qflows_workflows::scan::profile::{DEFAULT_PROFILE, Enforce, GateScope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A profiles file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    /// Not readable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not YAML/JSON of the documented shape; `at` is the path of the offending key.
    #[error("{path}: at `{at}`: {message}")]
    Shape {
        /// The file.
        path: String,
        /// Where in the document (`profiles.production.failSeverity`).
        at: String,
        /// What is wrong.
        message: String,
    },
}

/// One profile as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    /// Fail on any vulnerability at or above this severity (5 = critical only; 0 = never).
    #[serde(default = "critical")]
    pub fail_severity: u8,
    /// Fail when more than this many high (severity 4) vulnerabilities remain.
    #[serde(default)]
    pub max_high: Option<u64>,
    /// Count only vulnerabilities that have a fix.
    #[serde(default)]
    pub fixable_only: bool,
    /// Fail when secrets were found.
    #[serde(default = "yes")]
    pub fail_on_secrets: bool,
    /// Accepted CVEs, each with an optional expiry (Unix seconds).
    #[serde(default)]
    pub allowlist: Vec<AllowEntry>,
    /// Fail an image built more than this many days ago (when Qualys knows its build time).
    #[serde(default)]
    pub max_image_age_days: Option<u32>,
    /// What a failing image meets where something can stop it.
    #[serde(default)]
    pub enforce: Enforce,
    /// The verdict of an image with no scan result (yet).
    #[serde(default = "audit")]
    pub unscanned: Verdict,
}

fn critical() -> u8 {
    5
}
fn yes() -> bool {
    true
}
fn audit() -> Verdict {
    Verdict::Audit
}

/// A named profile, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Its name (`default` for the built-in).
    pub name: String,
    /// The severity gate.
    pub gate: GatePolicy,
    /// See [`ProfileSpec::max_image_age_days`].
    pub max_image_age_days: Option<u32>,
    /// See [`ProfileSpec::enforce`].
    pub enforce: Enforce,
    /// See [`ProfileSpec::unscanned`]; `None` only for `default` with
    /// `QFLOWS_GATE_UNSCANNED=none` (unscanned images get no verdict).
    pub unscanned: Option<Verdict>,
}

impl Profile {
    /// The built-in `default`: the worker's gate, enforced in audit.
    pub fn builtin(gate: GatePolicy, unscanned: Option<Verdict>) -> Self {
        Profile {
            name: DEFAULT_PROFILE.into(),
            gate,
            max_image_age_days: None,
            enforce: Enforce::Audit,
            unscanned,
        }
    }

    fn from_spec(name: &str, spec: ProfileSpec) -> Self {
        Profile {
            name: name.to_string(),
            gate: GatePolicy {
                fail_severity: spec.fail_severity,
                max_high: spec.max_high,
                fail_on_secrets: spec.fail_on_secrets,
                fixable_only: spec.fixable_only,
                allowlist: spec.allowlist,
            },
            max_image_age_days: spec.max_image_age_days,
            enforce: spec.enforce,
            unscanned: Some(spec.unscanned),
        }
    }
}

/// What a selector asks of a scope. Every field given must match; `*` in a value matches any
/// run of characters (`prod-*`, `*.dkr.ecr.*.amazonaws.com/payments/*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeMatch {
    /// AWS account ID.
    #[serde(default)]
    pub aws_account: Option<String>,
    /// AWS region.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// ECS cluster name.
    #[serde(default)]
    pub ecs_cluster: Option<String>,
    /// ECS service name.
    #[serde(default)]
    pub ecs_service: Option<String>,
    /// Azure subscription ID (case-insensitive, as Azure's IDs are).
    #[serde(default)]
    pub azure_subscription: Option<String>,
    /// Azure resource group (case-insensitive).
    #[serde(default)]
    pub azure_resource_group: Option<String>,
    /// Kubernetes cluster name.
    #[serde(default)]
    pub kubernetes_cluster: Option<String>,
    /// Kubernetes namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kubernetes labels: each must be present with a matching value.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The image's `registry/repository`.
    #[serde(default)]
    pub repository: Option<String>,
}

/// "Scopes like this get that profile."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// The profile's name.
    pub profile: String,
    /// What the scope must look like (empty: everything).
    #[serde(default, rename = "match")]
    pub matches: ScopeMatch,
}

/// The file's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    profiles: BTreeMap<String, ProfileSpec>,
    #[serde(default)]
    selectors: Vec<Selector>,
}

/// Profiles and their selectors, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateProfiles {
    profiles: BTreeMap<String, Profile>,
    selectors: Vec<Selector>,
}

impl GateProfiles {
    /// Only the built-in `default`.
    pub fn builtin(default: Profile) -> Self {
        GateProfiles {
            profiles: BTreeMap::from([(DEFAULT_PROFILE.to_string(), default)]),
            selectors: Vec::new(),
        }
    }

    /// Parses a profiles document (YAML, of which JSON is a subset); `path` names it in errors.
    pub fn parse(text: &str, path: &str, default: Profile) -> Result<Self, ProfilesError> {
        let shape = |at: String, message: String| ProfilesError::Shape {
            path: path.to_string(),
            at,
            message,
        };
        // Through a JSON value, so that YAML and JSON files give the same errors with the
        // same key paths.
        let value: serde_json::Value =
            serde_yaml_ng::from_str(text).map_err(|e| shape("(document)".into(), e.to_string()))?;
        let spec: FileSpec = serde_path_to_error::deserialize(&value).map_err(|e| {
            let at = e.path().to_string();
            shape(at, e.into_inner().to_string())
        })?;
        let mut profiles = BTreeMap::from([(DEFAULT_PROFILE.to_string(), default)]);
        for (name, spec) in spec.profiles {
            let at = format!("profiles.{name}");
            let valid_name = !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid_name {
                return Err(shape(
                    at,
                    "a profile name is 1-63 of a-z, 0-9, `-`, `_`".into(),
                ));
            }
            if spec.fail_severity > 5 {
                return Err(shape(
                    format!("{at}.failSeverity"),
                    "must be 0 (never) to 5 (critical)".into(),
                ));
            }
            for (i, entry) in spec.allowlist.iter().enumerate() {
                if !is_cve(&entry.cve) {
                    return Err(shape(
                        format!("{at}.allowlist[{i}].cve"),
                        format!("`{}` is not a CVE ID (CVE-YYYY-NNNN)", entry.cve),
                    ));
                }
            }
            profiles.insert(name.clone(), Profile::from_spec(&name, spec));
        }
        for (i, selector) in spec.selectors.iter().enumerate() {
            if !profiles.contains_key(&selector.profile) {
                return Err(shape(
                    format!("selectors[{i}].profile"),
                    format!("no profile named `{}`", selector.profile),
                ));
            }
        }
        Ok(GateProfiles {
            profiles,
            selectors: spec.selectors,
        })
    }

    /// Reads and parses a profiles file.
    pub fn read(path: &Path, default: Profile) -> Result<Self, ProfilesError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfilesError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown, default)
    }

    /// The profile for an image (`registry/repository`) deployed in `scope`: the first
    /// matching selector's, else `default`.
    pub fn select(&self, scope: &GateScope, repository: Option<&str>) -> &Profile {
        self.selectors
            .iter()
            .find(|s| matches(&s.matches, scope, repository))
            .and_then(|s| self.profiles.get(&s.profile))
            .unwrap_or_else(|| self.default_profile())
    }

    /// The `default` profile.
    pub fn default_profile(&self) -> &Profile {
        self.profiles
            .get(DEFAULT_PROFILE)
            .expect("`default` is always present")
    }

    /// A profile by name.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// The profile names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }
}

fn is_cve(id: &str) -> bool {
    let mut parts = id.split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(c), Some(y), Some(n), None)
            if c.eq_ignore_ascii_case("cve")
                && y.len() == 4
                && y.bytes().all(|b| b.is_ascii_digit())
                && n.len() >= 4
                && n.bytes().all(|b| b.is_ascii_digit())
    )
}

fn matches(m: &ScopeMatch, scope: &GateScope, repository: Option<&str>) -> bool {
    let field = |want: &Option<String>, have: Option<&str>, fold: bool| match want {
        None => true,
        Some(pattern) => have.is_some_and(|have| glob(pattern, have, fold)),
    };
    field(&m.aws_account, scope.aws_account.as_deref(), false)
        && field(&m.aws_region, scope.aws_region.as_deref(), false)
        && field(&m.ecs_cluster, scope.ecs_cluster.as_deref(), false)
        && field(&m.ecs_service, scope.ecs_service.as_deref(), false)
        && field(
            &m.azure_subscription,
            scope.azure_subscription.as_deref(),
            true,
        )
        && field(
            &m.azure_resource_group,
            scope.azure_resource_group.as_deref(),
            true,
        )
        && field(
            &m.kubernetes_cluster,
            scope.kubernetes_cluster.as_deref(),
            false,
        )
        && field(&m.namespace, scope.namespace.as_deref(), false)
        && field(&m.repository, repository, true)
        && m.labels.iter().all(|(key, want)| {
            scope
                .labels
                .get(key)
                .is_some_and(|have| glob(want, have, false))
        })
}

/// `*`-only wildcard matching (any run of characters, `/` included), written here rather than
/// pulling a path-glob crate whose `/` and `**` rules would surprise in a repository name.
fn glob(pattern: &str, text: &str, fold: bool) -> bool {
    let (pattern, text) = if fold {
        (pattern.to_ascii_lowercase(), text.to_ascii_lowercase())
    } else {
        (pattern.to_string(), text.to_string())
    };
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The file's modification time and size when last read, and the profiles in force.
type Loaded = (Option<(SystemTime, u64)>, Arc<GateProfiles>);

/// A profiles file, re-read when it changes.
#[derive(Debug)]
pub struct ProfilesFile {
    path: PathBuf,
    default: Profile,
    current: Mutex<Loaded>,
}

impl ProfilesFile {
    /// Reads it now: a file that cannot be used fails start-up.
    pub fn open(path: impl Into<PathBuf>, default: Profile) -> Result<Self, ProfilesError> {
        let path = path.into();
        let stamp = stamp(&path);
        let profiles = GateProfiles::read(&path, default.clone())?;
        Ok(ProfilesFile {
            path,
            default,
            current: Mutex::new((stamp, Arc::new(profiles))),
        })
    }

    /// The profiles as the file says now; a change that does not parse is logged and the last
    /// valid version kept.
    pub fn current(&self) -> Arc<GateProfiles> {
        let stamp = stamp(&self.path);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if stamp.is_some() && stamp != current.0 {
            match GateProfiles::read(&self.path, self.default.clone()) {
                Ok(profiles) => {
                    tracing::info!(file = %self.path.display(), "gate profiles reloaded");
                    *current = (stamp, Arc::new(profiles));
                }
                Err(e) => {
                    tracing::error!(error = %e, "gate profiles change refused; the previous ones stay");
                    crate::metrics::profiles_reload_failed();
                    current.0 = stamp;
                }
            }
        }
        current.1.clone()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
profiles:
  production:
    failSeverity: 4
    maxHigh: 0
    enforce: deny
    unscanned: fail
    maxImageAgeDays: 30
  sandbox:
    failSeverity: 5
    fixableOnly: true
    enforce: audit
selectors:
  - profile: production
    match: { namespace: "prod-*" }
  - profile: production
    match: { awsAccount: "111111111111", ecsCluster: prod }
  - profile: sandbox
    match: { repository: "*/sandbox/*" }
"#;

    fn builtin() -> Profile {
        Profile::builtin(GatePolicy::default(), None)
    }

    #[test]
    fn first_matching_selector_wins_else_default() {
        let p = GateProfiles::parse(FILE, "profiles.yaml", builtin()).unwrap();
        let ns = |n: &str| GateScope {
            namespace: Some(n.into()),
            ..GateScope::default()
        };
        assert_eq!(p.select(&ns("prod-eu"), None).name, "production");
        assert_eq!(p.select(&ns("dev"), None).name, "default");
        assert_eq!(
            p.select(&ns("dev"), Some("r.io/sandbox/app")).name,
            "sandbox"
        );
        let ecs = GateScope {
            aws_account: Some("111111111111".into()),
            ecs_cluster: Some("prod".into()),
            ..GateScope::default()
        };
        assert_eq!(p.select(&ecs, Some("r.io/sandbox/app")).name, "production");
        let other_account = GateScope {
            aws_account: Some("222222222222".into()),
            ..ecs
        };
        assert_eq!(p.select(&other_account, None).name, "default");
        let prod = p.get("production").unwrap();
        assert_eq!(
            (prod.gate.fail_severity, prod.enforce, prod.unscanned),
            (4, Enforce::Deny, Some(Verdict::Fail))
        );
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let typo = FILE.replace("maxHigh: 0", "maxHihg: 0");
        let err = GateProfiles::parse(&typo, "profiles.yaml", builtin()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("profiles.production"), "{text}");
        assert!(text.contains("maxHihg"), "{text}");
        let err = GateProfiles::parse(
            r#"{"profiles": {}, "selectors": [{"profile": "default", "match": {"nmespace": "x"}}]}"#,
            "p.json",
            builtin(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("selectors[0].match"), "{err}");
        assert!(err.to_string().contains("nmespace"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, at) in [
            (
                "profiles: {p: {failSeverity: 9}}",
                "profiles.p.failSeverity",
            ),
            ("selectors: [{profile: nope}]", "selectors[0].profile"),
            ("profiles: {Prod: {}}", "profiles.Prod"),
            (
                "profiles: {p: {allowlist: [{cve: 'x'}]}}",
                "profiles.p.allowlist[0].cve",
            ),
            ("profiles: {p: {enforce: block}}", "profiles.p.enforce"),
        ] {
            let err = GateProfiles::parse(text, "f", builtin()).unwrap_err();
            assert!(err.to_string().contains(at), "{text}: {err}");
        }
    }

    #[test]
    fn a_file_may_redefine_default() {
        let p = GateProfiles::parse(
            "profiles: {default: {failSeverity: 3, enforce: warn}}",
            "f",
            builtin(),
        )
        .unwrap();
        let d = p.select(&GateScope::default(), None);
        assert_eq!((d.gate.fail_severity, d.enforce), (3, Enforce::Warn));
    }

    #[test]
    fn globs() {
        assert!(glob("prod-*", "prod-eu", false));
        assert!(!glob("prod-*", "xprod-eu", false));
        assert!(glob("*", "", false));
        assert!(glob("a*b*c", "aXXbYYc", false));
        assert!(!glob("a*b*c", "aXXbYY", false));
        assert!(glob("*/payments/*", "x.io/payments/api", false));
        assert!(!glob("abc", "abcd", false));
        assert!(glob("ABC", "abc", true));
        assert!(!glob("a*a", "a", false));
    }

    #[test]
    fn reload_keeps_the_last_valid_file() {
        let dir = std::env::temp_dir().join(format!("qflows-profiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("profiles.yaml");
        std::fs::write(&path, FILE).unwrap();
        let file = ProfilesFile::open(&path, builtin()).unwrap();
        assert!(file.current().get("sandbox").is_some());
        std::fs::write(&path, "profiles: {qa: {failSeverity: 3}}\n").unwrap();
        // A different length: the change is seen even within the mtime's granularity.
        assert!(file.current().get("qa").is_some());
        assert!(file.current().get("sandbox").is_none());
        std::fs::write(&path, "profiles: {qa: {failSeverty: 3}}    \n").unwrap();
        assert!(file.current().get("qa").is_some(), "broken edit refused");
        std::fs::remove_dir_all(&dir).ok();
    }
}
