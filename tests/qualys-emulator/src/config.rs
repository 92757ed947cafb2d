//! The emulator's configuration: credentials, timings, response variants, rate limits, faults
//! and preloaded data. Every type also reads from JSON (the binary's `--config` file and the
//! admin API), with unknown fields rejected.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything an emulator starts with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// The one username `POST /auth` accepts (default `qflows-dev`).
    pub username: String,
    /// Its password (default `qflows-dev-password`).
    pub password: String,
    /// Pre-issued bearer tokens that are accepted without a login and never expire
    /// (default none).
    pub api_tokens: Vec<String>,
    /// Lifetime of the JWTs `POST /auth` issues, in seconds (default 14400 = 4 h,
    /// docs/qualys-api.md §1.1). A request with an expired token gets 401.
    pub token_ttl_secs: u64,
    /// Milliseconds from an on-demand schedule to the image being scanned (default 2000). The
    /// image is unknown (404) for the first half of it and `PENDING` for the second half.
    pub scan_delay_ms: u64,
    /// What `POST /registry` answers.
    pub registry_create_response: RegistryCreateResponse,
    /// A `POST /registry` for a registry URI Qualys already has (default
    /// [`Duplicates::Reject`]: `400 "Registry already exists"`, as Qualys answered concurrent
    /// creates).
    pub duplicate_registries: Duplicates,
    /// A `POST /registry/aws/connector` for an AWS account that already has a connector (default
    /// [`Duplicates::Allow`]: Qualys made 3 connectors for one account under concurrent creates).
    pub duplicate_connectors: Duplicates,
    /// Milliseconds before a new registry shows in `GET /registry` lists (default 0). Qualys
    /// lists new objects late; a create in that window still sees the registry.
    pub registry_list_lag_ms: u64,
    /// The envelope of `GET /images/{sha}/vuln`.
    pub vuln_shape: VulnShape,
    /// Per-family sliding-window limits (default [`RateLimitRule::documented`]). Families not
    /// listed are not limited.
    pub rate_limits: Vec<RateLimitRule>,
    /// Injected faults (default none).
    pub faults: Faults,
    /// What a registry scan of a tag the registry does not hold finds (default: nothing).
    pub unknown_tags: UnknownTags,
    /// Images and CDR findings to preload.
    pub seed: Seed,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            username: "qflows-dev".into(),
            password: "qflows-dev-password".into(),
            api_tokens: Vec::new(),
            token_ttl_secs: 4 * 3600,
            scan_delay_ms: 2000,
            registry_create_response: RegistryCreateResponse::default(),
            duplicate_registries: Duplicates::Reject,
            duplicate_connectors: Duplicates::Allow,
            registry_list_lag_ms: 0,
            vuln_shape: VulnShape::default(),
            rate_limits: RateLimitRule::documented(),
            faults: Faults::default(),
            unknown_tags: UnknownTags::default(),
            seed: Seed::default(),
        }
    }
}

impl EmulatorConfig {
    /// Reads a configuration from JSON; missing fields take their defaults, unknown fields are
    /// errors.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The body of a successful `POST /csapi/v1.3/registry`. Swagger 1.1 declares a plain string,
/// a seed reads `{"registryUuid"}`, and clients must also cope with an empty body
/// (docs/qualys-api.md §2.1 #6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryCreateResponse {
    /// `{"registryUuid":"…"}`.
    #[default]
    #[serde(alias = "Object")]
    Object,
    /// The UUID as a JSON string: `"…"`.
    #[serde(alias = "BareString")]
    BareString,
    /// An empty 200 body; the client has to look the registry up by URI.
    #[serde(alias = "Empty")]
    Empty,
}

/// What a registry scan finds for a tag the emulated registry does not hold (no
/// [`PushedImage`] or [`SeedImage`] names it).
///
/// Qualys pulls what the registry holds under a tag, so the emulator must be told what that is
/// ([`crate::RunningEmulator::push_image`]); a test that forgets gets `Missing`, as a scan of a
/// tag that does not exist would.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownTags {
    /// Nothing: the image stays unknown (404).
    #[default]
    Missing,
    /// An image whose record lists no repo digests (`qflows dev`, where any pushed tag should
    /// scan): clients can only match it by tag.
    Undigested,
}

/// What a registry holds: `registry/repository:tag` points to `digest` (a push, or a tag that
/// moved). Registry scans of that tag find this digest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushedImage {
    /// Registry host, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com`.
    pub registry: String,
    /// Repository.
    pub repository: String,
    /// Tag.
    pub tag: String,
    /// Manifest digest (`sha256:` + 64 hex digits, or the 64 digits).
    pub digest: String,
    /// Vulnerabilities a scan of this digest finds from now on (the knowledge base); empty:
    /// generated from its image ID, or whatever was set before.
    #[serde(default)]
    pub vulnerabilities: Vec<Value>,
}

/// What a create answers when what it would create already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Duplicates {
    /// Create another one, as if nothing existed.
    #[serde(alias = "Allow")]
    Allow,
    /// Refuse with `400 {"errorCode":"400 BAD_REQUEST","message":"… already exists"}` and create
    /// nothing.
    #[serde(alias = "Reject")]
    Reject,
}

impl PushedImage {
    /// What an EventBridge `ECR Image Action` push event says its registry now holds
    /// (`<account>.dkr.ecr.<region>.amazonaws.com/<repository-name>:<image-tag>` →
    /// `image-digest`); `None` when the event lacks one of them.
    pub fn from_ecr_push_event(event: &Value) -> Option<Self> {
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        let detail = &event["detail"];
        Some(Self {
            registry: format!(
                "{}.dkr.ecr.{}.amazonaws.com",
                text(&event["account"])?,
                text(&event["region"])?
            ),
            repository: text(&detail["repository-name"])?,
            tag: text(&detail["image-tag"])?,
            digest: text(&detail["image-digest"])?,
            vulnerabilities: Vec::new(),
        })
    }
}

/// The envelope of `GET /images/{sha}/vuln` (docs/qualys-api.md §2.1 #14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VulnShape {
    /// The official documentation's `{"details":[…]}`.
    #[default]
    #[serde(alias = "Details")]
    Details,
    /// The seeds' `{"data":[…],"count":N}`.
    #[serde(alias = "Data")]
    Data,
}

/// A sliding-window limit for one endpoint family (docs/qualys-api.md §2.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// The family: `containers_list`, `containers`, `images_list`, `images`, `registry`,
    /// `sensors` or `cdr`.
    pub family: String,
    /// Requests allowed per window.
    pub limit: u32,
    /// The window, in seconds.
    pub window_secs: u64,
}

impl RateLimitRule {
    /// A rule.
    pub fn new(family: &str, limit: u32, window_secs: u64) -> Self {
        Self {
            family: family.into(),
            limit,
            window_secs,
        }
    }

    /// The documented csapi table (docs/qualys-api.md §2.6) plus `cdr` at 600 per 60 s, which is
    /// not documented.
    pub fn documented() -> Vec<Self> {
        vec![
            Self::new("containers_list", 120, 60),
            Self::new("containers", 5000, 60),
            Self::new("images_list", 120, 60),
            Self::new("images", 5000, 60),
            Self::new("registry", 1000, 60),
            Self::new("sensors", 1000, 60),
            Self::new("cdr", 600, 60),
        ]
    }
}

/// Faults to inject. Rates are probabilities from 0.0 to 1.0; the default injects nothing.
///
/// Order per request: the rate limiter, then latency, then a 5xx, then a 429 (both answered
/// without doing anything), then the request is served, then its response may be dropped or
/// made malformed (so the action *did* happen but the client cannot tell).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer 500, 502 or 503 (at random) with a JSON error body.
    pub error_5xx_rate: f64,
    /// Answer 429 with `X-RateLimit-*` headers and a 1 s wait (a "429 storm"); half of them
    /// carry `Retry-After`, the other half only `X-RateLimit-ToWait-Sec`.
    pub throttle_429_rate: f64,
    /// How long an injected delay lasts, in milliseconds.
    pub latency_ms: u64,
    /// Probability of sleeping `latency_ms` before answering.
    pub latency_rate: f64,
    /// Answer 200 with a truncated, invalid JSON body.
    pub malformed_rate: f64,
    /// Drop the connection instead of (or in the middle of) the response.
    pub drop_rate: f64,
    /// Only fault request paths that start with one of these prefixes. `None` faults every
    /// path except `/auth` (and never `/__emulator`).
    pub paths: Option<Vec<String>>,
}

/// Data to preload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Seed {
    /// Images: scanned ones are visible at once, the others are what a registry scan of their
    /// registry/repository/tag finds.
    pub images: Vec<SeedImage>,
    /// CDR findings, raw JSON objects (docs/qualys-api.md §3.2).
    pub cdr_findings: Vec<Value>,
}

/// An image to preload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedImage {
    /// Registry host, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com`.
    pub registry: String,
    /// Repository, e.g. `payments-api`.
    pub repository: String,
    /// Tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Image SHA (the image ID), 64 hex digits (`sha256:` is dropped). Empty: derived from
    /// the digest, as a scan would.
    #[serde(default)]
    pub sha: String,
    /// The manifest digest the registry holds it under (listed in `repoDigests`). Absent:
    /// derived from registry, repository and tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Vulnerabilities in the official `details` shape (docs/qualys-api.md §2.1 #14). Empty:
    /// deterministic ones are generated from the SHA.
    #[serde(default)]
    pub vulnerabilities: Vec<Value>,
    /// Already scanned (`SUCCESS`) at start; otherwise unknown until a registry scan.
    #[serde(default)]
    pub scanned: bool,
}

/// Reads images from a `--vulns-file`: an array of [`SeedImage`], `{"images":[…]}`, or a map
/// from an image reference `registry/repository[:tag]` to either an array of vulnerabilities,
/// a `{"details":[…]}` / `{"data":[…]}` vulnerability answer, or
/// `{"sha","vulnerabilities","scanned"}` (all optional; `scanned` defaults to false, as in
/// [`SeedImage`]).
pub fn seed_images_from_json(text: &str) -> anyhow::Result<Vec<SeedImage>> {
    let value: Value = serde_json::from_str(text).context("not JSON")?;
    match value {
        Value::Array(_) => serde_json::from_value(value).context("not an array of images"),
        Value::Object(mut map)
            if map.len() == 1 && map.get("images").is_some_and(Value::is_array) =>
        {
            serde_json::from_value(map.remove("images").unwrap_or_default()).context("`images`")
        }
        Value::Object(map) => map
            .into_iter()
            .map(|(reference, v)| image_from_entry(&reference, v))
            .collect(),
        _ => bail!("expected an array of images or an object"),
    }
}

/// One entry of the map form of [`seed_images_from_json`].
fn image_from_entry(reference: &str, value: Value) -> anyhow::Result<SeedImage> {
    let (registry, rest) = reference
        .split_once('/')
        .with_context(|| format!("`{reference}` is not registry/repository[:tag]"))?;
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((repo, tag)) => (repo, Some(tag.to_string())),
        None => (rest, None),
    };
    let mut image = SeedImage {
        registry: registry.into(),
        repository: repository.into(),
        tag,
        ..SeedImage::default()
    };
    match value {
        Value::Array(vulns) => image.vulnerabilities = vulns,
        Value::Object(mut o) => {
            for key in ["details", "data", "vulnerabilities"] {
                if let Some(Value::Array(vulns)) = o.remove(key) {
                    image.vulnerabilities = vulns;
                }
            }
            if let Some(sha) = o.remove("sha") {
                image.sha = sha
                    .as_str()
                    .with_context(|| format!("`{reference}`: sha is not a string"))?
                    .into();
            }
            if let Some(digest) = o.remove("digest") {
                image.digest = Some(
                    digest
                        .as_str()
                        .with_context(|| format!("`{reference}`: digest is not a string"))?
                        .into(),
                );
            }
            if let Some(scanned) = o.remove("scanned") {
                image.scanned = scanned
                    .as_bool()
                    .with_context(|| format!("`{reference}`: scanned is not a bool"))?;
            }
            o.remove("count");
            if let Some(key) = o.keys().next() {
                bail!("`{reference}`: unknown field `{key}`");
            }
        }
        _ => bail!("`{reference}`: expected an array of vulnerabilities or an object"),
    }
    Ok(image)
}

/// Reads CDR findings from a `--cdr-file` or the admin API: a bare array or
/// `{"content":[…]}` (the API's own answer).
pub fn cdr_findings_from_json(text: &str) -> anyhow::Result<Vec<Value>> {
    let value: Value = serde_json::from_str(text).context("not JSON")?;
    cdr_findings_from_value(value)
}

/// [`cdr_findings_from_json`] for a parsed value.
pub(crate) fn cdr_findings_from_value(value: Value) -> anyhow::Result<Vec<Value>> {
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut o) => match o.remove("content") {
            Some(Value::Array(items)) => items,
            _ => bail!("expected an array of findings or {{\"content\":[…]}}"),
        },
        _ => bail!("expected an array of findings or {{\"content\":[…]}}"),
    };
    if let Some(i) = items.iter().position(|f| !f.is_object()) {
        bail!("finding {i} is not an object");
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_defaults_and_unknown_fields() {
        let c = EmulatorConfig::from_json(
            r#"{"scan_delay_ms": 5, "registry_create_response": "bare_string"}"#,
        )
        .unwrap();
        assert_eq!(c.scan_delay_ms, 5);
        assert_eq!(
            c.registry_create_response,
            RegistryCreateResponse::BareString
        );
        assert_eq!(c.username, "qflows-dev");
        assert_eq!(c.duplicate_registries, Duplicates::Reject);
        assert_eq!(c.duplicate_connectors, Duplicates::Allow);
        let c = EmulatorConfig::from_json(
            r#"{"duplicate_registries": "allow", "duplicate_connectors": "reject", "registry_list_lag_ms": 7}"#,
        )
        .unwrap();
        assert_eq!(
            (
                c.duplicate_registries,
                c.duplicate_connectors,
                c.registry_list_lag_ms
            ),
            (Duplicates::Allow, Duplicates::Reject, 7)
        );
        assert_eq!(c.rate_limits.len(), 7);
        assert!(EmulatorConfig::from_json(r#"{"scan_delay": 5}"#).is_err());
        assert!(EmulatorConfig::from_json(r#"{"faults": {"drop": 1}}"#).is_err());
    }

    #[test]
    fn vulns_file_forms() {
        let a = seed_images_from_json(r#"[{"registry":"r","repository":"x","tag":"1","sha":"","vulnerabilities":[],"scanned":true}]"#).unwrap();
        assert_eq!(a[0].repository, "x");
        let b = seed_images_from_json(r#"{"images":[{"registry":"r","repository":"y"}]}"#).unwrap();
        assert_eq!(b[0].repository, "y");
        let c = seed_images_from_json(
            r#"{"1.dkr.ecr.us-east-1.amazonaws.com/app:v1": {"details":[{"severity":5}]}}"#,
        )
        .unwrap();
        assert_eq!(c[0].registry, "1.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(c[0].tag.as_deref(), Some("v1"));
        assert_eq!(c[0].vulnerabilities.len(), 1);
        assert!(seed_images_from_json(r#"{"noslash": []}"#).is_err());
    }

    #[test]
    fn cdr_file_forms() {
        assert_eq!(
            cdr_findings_from_json(r#"[{"uuid":"a"}]"#).unwrap().len(),
            1
        );
        assert_eq!(
            cdr_findings_from_json(r#"{"content":[{"uuid":"a"}],"totalElements":1}"#)
                .unwrap()
                .len(),
            1
        );
        assert!(cdr_findings_from_json(r#"[1]"#).is_err());
    }
}
