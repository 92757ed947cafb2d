//! The emulator's state: what Qualys would store (tokens, connectors, registries, schedules,
//! images, sensors, CDR findings), the counters, the limiter and the faults.

use crate::config::{
    Duplicates, EmulatorConfig, Faults, RateLimitRule, RegistryCreateResponse, SeedImage,
    UnknownTags, VulnShape,
};
use crate::http::now_ms;
use crate::ids;
use crate::limits::Limiter;
use crate::stats::Stats;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Qualys' AWS account, as `GET /registry/aws-base` reports it.
pub(crate) const QUALYS_AWS_ACCOUNT: &str = "805950163170";
/// The external ID for trust policies (an int64 in the swagger).
pub(crate) const EXTERNAL_ID: i64 = 7_364_912_058_341;

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub username: String,
    pub password: String,
    pub api_tokens: Vec<String>,
    pub token_ttl: Duration,
    pub scan_delay: Duration,
    pub registry_create_response: RegistryCreateResponse,
    pub duplicate_registries: Duplicates,
    pub duplicate_connectors: Duplicates,
    pub registry_list_lag: Duration,
    pub vuln_shape: VulnShape,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub settings: Settings,
    pub world: Mutex<World>,
    pub stats: Mutex<Stats>,
    pub limiter: Mutex<Limiter>,
    pub faults: Mutex<Faults>,
    in_flight: AtomicU64,
}

impl Shared {
    /// State for `cfg`, with its seed loaded.
    pub(crate) fn new(cfg: EmulatorConfig) -> Self {
        let settings = Settings {
            username: cfg.username,
            password: cfg.password,
            api_tokens: cfg.api_tokens,
            token_ttl: Duration::from_secs(cfg.token_ttl_secs),
            scan_delay: Duration::from_millis(cfg.scan_delay_ms),
            registry_create_response: cfg.registry_create_response,
            duplicate_registries: cfg.duplicate_registries,
            duplicate_connectors: cfg.duplicate_connectors,
            registry_list_lag: Duration::from_millis(cfg.registry_list_lag_ms),
            vuln_shape: cfg.vuln_shape,
        };
        let mut world = World {
            cdr_findings: cfg.seed.cdr_findings,
            unknown_tags: cfg.unknown_tags,
            ..World::default()
        };
        for image in cfg.seed.images {
            world.seed_image(image);
        }
        Self {
            settings,
            world: Mutex::new(world),
            stats: Mutex::new(Stats::default()),
            limiter: Mutex::new(Limiter::new(&cfg.rate_limits)),
            faults: Mutex::new(cfg.faults),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Replaces the rate-limit rules and forgets the windows.
    pub(crate) fn set_rate_limits(&self, rules: &[RateLimitRule]) {
        *self.limiter.lock() = Limiter::new(rules);
    }

    /// Counts a request in flight until the guard drops.
    pub(crate) fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut stats = self.stats.lock();
        stats.max_in_flight = stats.max_in_flight.max(now);
        InFlight(&self.in_flight)
    }
}

/// A request in flight (see [`Shared::enter`]).
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A registry (`POST /registry`).
#[derive(Debug, Clone)]
pub(crate) struct RegistryRecord {
    pub uuid: String,
    pub name: String,
    pub uri: String,
    pub registry_type: String,
    pub credential_type: Option<String>,
    pub aws: Option<Value>,
    pub created_ms: u64,
}

impl RegistryRecord {
    /// The registry's host: its URI without scheme, path or trailing slash, lower-case.
    pub(crate) fn host(&self) -> String {
        host_of(&self.uri)
    }
}

/// The host part of a registry URI.
pub(crate) fn host_of(uri: &str) -> String {
    let s = uri.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    s.split('/').next().unwrap_or_default().to_ascii_lowercase()
}

/// A registry schedule.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleRecord {
    pub uuid: String,
    pub registry_uuid: String,
    pub name: Value,
    pub on_demand: bool,
    pub schedule: Value,
    pub filters: Value,
    pub created_ms: u64,
    /// When an on-demand scan completes.
    pub done_at: Option<Instant>,
}

/// One `repo` entry of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
}

/// One `repoDigests` entry of an image: the manifest digest (64 hex digits, no `sha256:`
/// prefix, as in the official sample) under which a registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestRef {
    pub registry: String,
    pub repository: String,
    pub digest: String,
}

/// A forced rescan of an image that was already scanned. Until it completes, Qualys keeps
/// showing the previous scan (`SUCCESS`, the old `lastScanned` and findings).
#[derive(Debug, Clone)]
pub(crate) struct Rescan {
    pub done_at: Instant,
    pub done_ms: u64,
    pub vulns: Vec<Value>,
}

/// An image Qualys knows or will know.
#[derive(Debug, Clone)]
pub(crate) struct ImageRecord {
    /// The image ID (Qualys' `sha`): not the manifest digest.
    pub sha: String,
    pub uuid: String,
    /// Tags it was seen under. A tag that moved to another image stays listed here, as Qualys
    /// keeps what it saw until it lists the registry again.
    pub repos: Vec<RepoRef>,
    /// Manifest digests it was pulled by; empty when Qualys could not tell.
    pub digests: Vec<DigestRef>,
    /// Seeded or generated vulnerabilities (empty until the scan for generated ones).
    pub vulns: Vec<Value>,
    pub created_ms: u64,
    /// When it becomes visible; `None` = not yet (seeded, waiting for a scan).
    pub known_at: Option<Instant>,
    /// When its scan completes.
    pub scanned_at: Option<Instant>,
    /// Epoch ms of the scan's completion (`lastScanned`).
    pub scanned_ms: Option<u64>,
    /// Vulnerabilities are generated at scan time.
    pub generate_vulns: bool,
    /// A forced rescan in progress.
    pub rescan: Option<Rescan>,
}

/// Where an image is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageState {
    /// `GET /images/{sha}` is 404.
    Unknown,
    /// Listed with `scanStatus: "PENDING"`.
    Pending,
    /// Listed with `scanStatus: "SUCCESS"`.
    Scanned,
}

impl ImageRecord {
    /// Its state at `now`.
    pub(crate) fn state(&self, now: Instant) -> ImageState {
        match (self.known_at, self.scanned_at) {
            (_, Some(t)) if t <= now => ImageState::Scanned,
            (Some(t), _) if t <= now => ImageState::Pending,
            _ => ImageState::Unknown,
        }
    }

    /// Whether it is `registry/repository:tag` (registry compared case-insensitively).
    pub(crate) fn is(&self, registry: &str, repository: &str, tag: Option<&str>) -> bool {
        self.repos.iter().any(|r| {
            r.registry.eq_ignore_ascii_case(registry)
                && r.repository == repository
                && r.tag.as_deref() == tag
        })
    }

    /// Whether a registry holds it as `registry/repository@digest`.
    pub(crate) fn has_digest(&self, registry: &str, repository: &str, digest: &str) -> bool {
        self.digests.iter().any(|d| {
            d.registry.eq_ignore_ascii_case(registry)
                && d.repository == repository
                && d.digest == digest
        })
    }

    /// Lists `registry/repository:tag` (once).
    fn add_tag(&mut self, registry: &str, repository: &str, tag: Option<&str>) {
        if !self.is(registry, repository, tag) {
            self.repos.push(RepoRef {
                registry: registry.to_string(),
                repository: repository.to_string(),
                tag: tag.map(str::to_string),
            });
        }
    }

    /// Applies a forced rescan that has completed by `now`.
    fn settle(&mut self, now: Instant) {
        if self.rescan.as_ref().is_some_and(|r| r.done_at <= now)
            && let Some(r) = self.rescan.take()
        {
            self.scanned_ms = Some(r.done_ms);
            self.vulns = r.vulns;
        }
    }
}

/// The registry key of a tag: host (lower-case), repository, tag.
type TagKey = (String, String, String);

fn tag_key(registry: &str, repository: &str, tag: &str) -> TagKey {
    (
        registry.to_ascii_lowercase(),
        repository.to_string(),
        tag.to_string(),
    )
}

/// What a registry scan found for one repository and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanStart {
    /// A new image: unknown, then pending, then scanned.
    New,
    /// A known image scanned again (`forceScan`).
    Rescan,
    /// Known and scanned (or being scanned), not forced: nothing to do.
    AlreadyKnown,
    /// The registry holds no such tag: nothing to scan.
    NoSuchTag,
}

/// What Qualys stores.
#[derive(Debug, Default)]
pub(crate) struct World {
    /// Issued JWTs and when they expire.
    pub tokens: HashMap<String, Instant>,
    /// AWS connectors `{name, arn, description}`.
    pub connectors: Vec<Value>,
    pub registries: Vec<RegistryRecord>,
    pub schedules: Vec<ScheduleRecord>,
    pub images: Vec<ImageRecord>,
    pub sensors: Vec<Value>,
    pub cdr_findings: Vec<Value>,
    /// What the registries hold: the manifest digest each tag points to now. A registry scan
    /// pulls this digest, as Qualys pulls from the registry itself.
    pub registry_tags: HashMap<TagKey, String>,
    /// Vulnerabilities a scan of a digest finds (the knowledge base at scan time); digests
    /// not listed get generated ones.
    pub digest_vulns: HashMap<String, Vec<Value>>,
    /// What a scan of a tag the registry does not hold finds.
    pub unknown_tags: UnknownTags,
    /// The CDR endpoint answers 403 (CDR not permitted for the user), when set.
    pub cdr_forbidden: bool,
    /// The next CDR request for this `offSet` answers 503 (once).
    pub cdr_fail_once_at: Option<i64>,
}

impl World {
    /// Applies forced rescans that completed by `now` (every read calls it first).
    pub(crate) fn settle(&mut self, now: Instant) {
        for image in &mut self.images {
            image.settle(now);
        }
    }

    /// Pushes `registry/repository:tag` → `digest` (the tag moves if it pointed elsewhere);
    /// `vulnerabilities`, when not empty, are what scans of the digest find from now on.
    pub(crate) fn push(
        &mut self,
        registry: &str,
        repository: &str,
        tag: &str,
        digest: &str,
        vulnerabilities: Vec<Value>,
    ) {
        let digest = ids::normalize_sha(digest).unwrap_or_else(|| digest.to_ascii_lowercase());
        self.registry_tags
            .insert(tag_key(&host_of(registry), repository, tag), digest.clone());
        if !vulnerabilities.is_empty() {
            self.digest_vulns.insert(digest, vulnerabilities);
        }
    }

    /// The digest `registry/repository:tag` points to now.
    pub(crate) fn tag_digest(&self, registry: &str, repository: &str, tag: &str) -> Option<&str> {
        self.registry_tags
            .get(&tag_key(registry, repository, tag))
            .map(String::as_str)
    }

    /// Adds (or replaces, by registry/repository/tag or SHA) a seeded image; returns its SHA.
    /// The registry holds the seeded tag under the seeded digest (derived when none is given).
    pub(crate) fn seed_image(&mut self, img: SeedImage) -> String {
        let registry = host_of(&img.registry);
        let tag = img.tag.filter(|t| !t.is_empty());
        let digest = img
            .digest
            .as_deref()
            .and_then(ids::normalize_sha)
            .unwrap_or_else(|| derived_digest(&registry, &img.repository, tag.as_deref()));
        let sha = ids::normalize_sha(&img.sha).unwrap_or_else(|| {
            if !img.sha.trim().is_empty() {
                tracing::warn!(sha = %img.sha, "seeded image SHA is not 64 hex digits; deriving one");
            }
            image_id(&digest)
        });
        self.images
            .retain(|i| !i.is(&registry, &img.repository, tag.as_deref()) && i.sha != sha);
        if let Some(t) = &tag {
            self.registry_tags
                .insert(tag_key(&registry, &img.repository, t), digest.clone());
        }
        let now = Instant::now();
        let now_ms = now_ms();
        let (known_at, scanned_at, scanned_ms) = if img.scanned {
            (Some(now), Some(now), Some(now_ms))
        } else {
            (None, None, None)
        };
        let generate_vulns = img.vulnerabilities.is_empty();
        let vulns = if generate_vulns && img.scanned {
            ids::vulnerabilities_for(&sha, now_ms)
        } else {
            img.vulnerabilities
        };
        self.images.push(ImageRecord {
            uuid: ids::uuid_from(&["image", &sha]),
            repos: vec![RepoRef {
                registry: registry.clone(),
                repository: img.repository.clone(),
                tag,
            }],
            digests: vec![DigestRef {
                registry,
                repository: img.repository,
                digest,
            }],
            sha: sha.clone(),
            vulns,
            created_ms: now_ms.saturating_sub(86_400_000),
            known_at,
            scanned_at,
            scanned_ms,
            generate_vulns,
            rescan: None,
        });
        sha
    }

    /// Starts a scan of `registry/repository:tag`, as Qualys does: it pulls what the registry
    /// holds under that tag now. An image found by an earlier scan or seed keeps its SHA and
    /// gains the tag; a new one becomes known after half of `delay` and scanned after `delay`.
    /// An image already known is scanned again only when `force` is set: until that rescan
    /// completes it keeps showing its previous scan.
    pub(crate) fn scan(
        &mut self,
        registry: &str,
        repository: &str,
        tag: &str,
        delay: Duration,
        force: bool,
    ) -> ScanStart {
        let now = Instant::now();
        let start_ms = now_ms();
        let tag = Some(tag.to_string()).filter(|t| !t.is_empty());
        let digest = match tag
            .as_deref()
            .and_then(|t| self.tag_digest(registry, repository, t))
        {
            Some(d) => Some(d.to_string()),
            None if self.unknown_tags == UnknownTags::Undigested => None,
            None => return ScanStart::NoSuchTag,
        };
        let existing = self.images.iter().position(|i| match &digest {
            Some(d) => i.has_digest(registry, repository, d),
            None => i.digests.is_empty() && i.is(registry, repository, tag.as_deref()),
        });
        let index = match existing {
            Some(i) => i,
            None => {
                let sha = match &digest {
                    Some(d) => image_id(d),
                    None => derived_sha(registry, repository, tag.as_deref()),
                };
                self.images.push(ImageRecord {
                    uuid: ids::uuid_from(&["image", &sha]),
                    sha,
                    repos: Vec::new(),
                    digests: digest
                        .iter()
                        .map(|d| DigestRef {
                            registry: registry.to_string(),
                            repository: repository.to_string(),
                            digest: d.clone(),
                        })
                        .collect(),
                    vulns: Vec::new(),
                    created_ms: start_ms,
                    known_at: None,
                    scanned_at: None,
                    scanned_ms: None,
                    generate_vulns: true,
                    rescan: None,
                });
                self.images.len() - 1
            }
        };
        let known_vulns = digest
            .as_ref()
            .and_then(|d| self.digest_vulns.get(d))
            .cloned();
        let image = &mut self.images[index];
        image.add_tag(registry, repository, tag.as_deref());
        let done_ms = start_ms + delay.as_millis() as u64;
        let vulns = |image: &ImageRecord| match &known_vulns {
            Some(v) => v.clone(),
            None if image.generate_vulns => ids::vulnerabilities_for(&image.sha, done_ms),
            None => image.vulns.clone(),
        };
        if image.known_at.is_none() {
            image.known_at = Some(now + delay / 2);
            image.scanned_at = Some(now + delay);
            image.scanned_ms = Some(done_ms);
            image.vulns = vulns(image);
            return ScanStart::New;
        }
        if !force || image.state(now) != ImageState::Scanned || image.rescan.is_some() {
            return ScanStart::AlreadyKnown;
        }
        image.rescan = Some(Rescan {
            done_at: now + delay,
            done_ms,
            vulns: vulns(image),
        });
        ScanStart::Rescan
    }

    /// The tags the registry holds in `registry/repository`.
    pub(crate) fn tags_of(&self, registry: &str, repository: &str) -> Vec<String> {
        let host = registry.to_ascii_lowercase();
        let mut tags: Vec<String> = self
            .registry_tags
            .keys()
            .filter(|(h, r, _)| *h == host && r == repository)
            .map(|(_, _, t)| t.clone())
            .collect();
        tags.sort();
        tags
    }

    /// The registry whose host is `host`.
    pub(crate) fn registry_for_host(&self, host: &str) -> Option<&RegistryRecord> {
        self.registries
            .iter()
            .find(|r| r.host().eq_ignore_ascii_case(host))
    }
}

/// The image ID (Qualys' `sha`) of the image a manifest digest names: stable, and never equal
/// to the digest itself, as for real images (the ID is the config's digest).
pub(crate) fn image_id(digest: &str) -> String {
    ids::hex64(&["image-id", digest])
}

/// The digest a seeded image without one is held under.
fn derived_digest(registry: &str, repository: &str, tag: Option<&str>) -> String {
    ids::hex64(&[
        "digest",
        &registry.to_ascii_lowercase(),
        repository,
        tag.unwrap_or(""),
    ])
}

/// The SHA a scan of `registry/repository:tag` finds when nothing was seeded.
pub(crate) fn derived_sha(registry: &str, repository: &str, tag: Option<&str>) -> String {
    ids::hex64(&[
        "image",
        &registry.to_ascii_lowercase(),
        repository,
        tag.unwrap_or(""),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn scan_timeline() {
        let mut w = World::default();
        assert_eq!(
            w.scan("r.example", "app", "v1", Duration::from_millis(200), false),
            ScanStart::NoSuchTag,
            "the registry holds no v1"
        );
        assert!(w.images.is_empty());
        w.push(
            "r.example",
            "app",
            "v1",
            &format!("sha256:{D1}"),
            Vec::new(),
        );
        assert_eq!(
            w.scan("r.example", "app", "v1", Duration::from_millis(200), false),
            ScanStart::New
        );
        let image = &w.images[0];
        let t = Instant::now();
        assert_eq!(image.state(t), ImageState::Unknown);
        assert_eq!(
            image.state(t + Duration::from_millis(150)),
            ImageState::Pending
        );
        assert_eq!(
            image.state(t + Duration::from_millis(250)),
            ImageState::Scanned
        );
        assert_eq!(image.sha, image_id(D1));
        assert_ne!(image.sha, D1, "the image ID is not the manifest digest");
        assert_eq!(image.digests[0].digest, D1);
        assert!(!image.vulns.is_empty());
        // Scanning again without force changes nothing.
        let before = image.known_at;
        assert_eq!(
            w.scan("R.example", "app", "v1", Duration::from_millis(200), false),
            ScanStart::AlreadyKnown
        );
        assert_eq!(w.images.len(), 1);
        assert_eq!(w.images[0].known_at, before);
    }

    #[test]
    fn a_moved_tag_scans_the_new_digest_and_the_old_record_keeps_the_tag() {
        let mut w = World::default();
        w.push("r.example", "app", "latest", D1, Vec::new());
        w.scan("r.example", "app", "latest", Duration::ZERO, false);
        w.push(
            "r.example",
            "app",
            "latest",
            D2,
            vec![serde_json::json!({"severity": 5})],
        );
        assert_eq!(
            w.scan("r.example", "app", "latest", Duration::ZERO, false),
            ScanStart::New
        );
        assert_eq!(w.images.len(), 2);
        assert!(
            w.images
                .iter()
                .all(|i| i.is("r.example", "app", Some("latest")))
        );
        let new = w
            .images
            .iter()
            .find(|i| i.has_digest("r.example", "app", D2))
            .unwrap();
        assert_eq!(new.vulns.len(), 1);
    }

    #[test]
    fn a_forced_rescan_shows_the_old_scan_until_it_completes() {
        let mut w = World::default();
        w.push(
            "r.example",
            "app",
            "v1",
            D1,
            vec![serde_json::json!({"severity": 1})],
        );
        w.scan("r.example", "app", "v1", Duration::ZERO, false);
        let first = w.images[0].scanned_ms;
        // The knowledge base learns of a critical vulnerability.
        w.push(
            "r.example",
            "app",
            "v1",
            D1,
            vec![serde_json::json!({"severity": 5})],
        );
        assert_eq!(
            w.scan("r.example", "app", "v1", Duration::from_millis(300), true),
            ScanStart::Rescan
        );
        let now = Instant::now();
        w.settle(now);
        assert_eq!(w.images[0].state(now), ImageState::Scanned);
        assert_eq!(w.images[0].scanned_ms, first);
        assert_eq!(ids::severity_of(&w.images[0].vulns[0]), Some(1));
        w.settle(now + Duration::from_millis(400));
        assert!(w.images[0].scanned_ms > first);
        assert_eq!(ids::severity_of(&w.images[0].vulns[0]), Some(5));
    }

    #[test]
    fn undigested_records_for_unknown_tags_when_asked() {
        let mut w = World {
            unknown_tags: UnknownTags::Undigested,
            ..World::default()
        };
        assert_eq!(
            w.scan("r.example", "app", "v1", Duration::ZERO, false),
            ScanStart::New
        );
        assert!(w.images[0].digests.is_empty());
        assert_eq!(w.images[0].sha, derived_sha("r.example", "app", Some("v1")));
    }

    #[test]
    fn seeded_images_keep_their_sha() {
        let mut w = World::default();
        let sha = "a".repeat(64);
        w.seed_image(SeedImage {
            registry: "https://R.example/".into(),
            repository: "app".into(),
            tag: Some("v1".into()),
            sha: format!("sha256:{sha}"),
            digest: Some(format!("sha256:{D1}")),
            vulnerabilities: vec![serde_json::json!({"severity": 5})],
            scanned: false,
        });
        assert_eq!(w.images[0].state(Instant::now()), ImageState::Unknown);
        w.scan("r.example", "app", "v1", Duration::ZERO, false);
        assert_eq!(w.images[0].sha, sha);
        assert_eq!(w.images[0].digests[0].digest, D1);
        assert_eq!(w.images[0].vulns.len(), 1);
        assert_eq!(w.images[0].state(Instant::now()), ImageState::Scanned);
        assert_eq!(
            host_of("https://1.dkr.ecr.us-east-1.amazonaws.com/"),
            "1.dkr.ecr.us-east-1.amazonaws.com"
        );
    }
}
