//! The emulator's state: what Qualys would store (tokens, connectors, registries, schedules,
//! images, sensors, CDR findings), the counters, the limiter and the faults.

use crate::config::{
    EmulatorConfig, Faults, RateLimitRule, RegistryCreateResponse, SeedImage, VulnShape,
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
            vuln_shape: cfg.vuln_shape,
        };
        let mut world = World {
            cdr_findings: cfg.seed.cdr_findings,
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

/// An image Qualys knows or will know.
#[derive(Debug, Clone)]
pub(crate) struct ImageRecord {
    pub sha: String,
    pub uuid: String,
    pub repos: Vec<RepoRef>,
    /// Seeded or generated vulnerabilities (empty until the scan for generated ones).
    pub vulns: Vec<Value>,
    pub created_ms: u64,
    /// When it becomes visible; `None` = not yet (seeded, waiting for a scan).
    pub known_at: Option<Instant>,
    /// When its scan completes.
    pub scanned_at: Option<Instant>,
    /// Epoch ms of the scan's completion.
    pub scanned_ms: Option<u64>,
    /// Vulnerabilities are generated at scan time.
    pub generate_vulns: bool,
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
    /// The CDR endpoint answers 403 (CDR not permitted for the user), when set.
    pub cdr_forbidden: bool,
    /// The next CDR request for this `offSet` answers 503 (once).
    pub cdr_fail_once_at: Option<i64>,
}

impl World {
    /// Adds (or replaces, by registry/repository/tag) a seeded image; returns its SHA.
    pub(crate) fn seed_image(&mut self, img: SeedImage) -> String {
        let registry = host_of(&img.registry);
        let tag = img.tag.filter(|t| !t.is_empty());
        let sha = ids::normalize_sha(&img.sha).unwrap_or_else(|| {
            if !img.sha.trim().is_empty() {
                tracing::warn!(sha = %img.sha, "seeded image SHA is not 64 hex digits; deriving one");
            }
            derived_sha(&registry, &img.repository, tag.as_deref())
        });
        self.images
            .retain(|i| !i.is(&registry, &img.repository, tag.as_deref()) && i.sha != sha);
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
                registry,
                repository: img.repository,
                tag,
            }],
            sha: sha.clone(),
            vulns,
            created_ms: now_ms.saturating_sub(86_400_000),
            known_at,
            scanned_at,
            scanned_ms,
            generate_vulns,
        });
        sha
    }

    /// Starts a scan of `registry/repository:tag`: an image found by an earlier scan or seed
    /// keeps its SHA; a new one gets a derived SHA. It becomes known after half of `delay` and
    /// scanned after `delay`. An image already known is left alone.
    pub(crate) fn scan(&mut self, registry: &str, repository: &str, tag: &str, delay: Duration) {
        let now = Instant::now();
        let start_ms = now_ms();
        let tag = Some(tag.to_string()).filter(|t| !t.is_empty());
        let index = match self
            .images
            .iter()
            .position(|i| i.is(registry, repository, tag.as_deref()))
        {
            Some(i) => i,
            None => {
                let sha = derived_sha(registry, repository, tag.as_deref());
                self.images.push(ImageRecord {
                    uuid: ids::uuid_from(&["image", &sha]),
                    sha,
                    repos: vec![RepoRef {
                        registry: registry.to_string(),
                        repository: repository.to_string(),
                        tag,
                    }],
                    vulns: Vec::new(),
                    created_ms: start_ms,
                    known_at: None,
                    scanned_at: None,
                    scanned_ms: None,
                    generate_vulns: true,
                });
                self.images.len() - 1
            }
        };
        let image = &mut self.images[index];
        if image.known_at.is_some() {
            return;
        }
        let done_ms = start_ms + delay.as_millis() as u64;
        image.known_at = Some(now + delay / 2);
        image.scanned_at = Some(now + delay);
        image.scanned_ms = Some(done_ms);
        if image.generate_vulns {
            image.vulns = ids::vulnerabilities_for(&image.sha, done_ms);
        }
    }

    /// Seeded images of `registry/repository` (any tag).
    pub(crate) fn tags_of(&self, registry: &str, repository: &str) -> Vec<String> {
        let mut tags: Vec<String> = self
            .images
            .iter()
            .flat_map(|i| i.repos.iter())
            .filter(|r| r.registry.eq_ignore_ascii_case(registry) && r.repository == repository)
            .filter_map(|r| r.tag.clone())
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }

    /// The registry whose host is `host`.
    pub(crate) fn registry_for_host(&self, host: &str) -> Option<&RegistryRecord> {
        self.registries
            .iter()
            .find(|r| r.host().eq_ignore_ascii_case(host))
    }
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

    #[test]
    fn scan_timeline() {
        let mut w = World::default();
        w.scan("r.example", "app", "v1", Duration::from_millis(200));
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
        assert_eq!(image.sha, derived_sha("r.example", "app", Some("v1")));
        assert!(!image.vulns.is_empty());
        // Scanning again changes nothing.
        let before = image.known_at;
        w.scan("R.example", "app", "v1", Duration::from_millis(200));
        assert_eq!(w.images.len(), 1);
        assert_eq!(w.images[0].known_at, before);
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
            vulnerabilities: vec![serde_json::json!({"severity": 5})],
            scanned: false,
        });
        assert_eq!(w.images[0].state(Instant::now()), ImageState::Unknown);
        w.scan("r.example", "app", "v1", Duration::ZERO);
        assert_eq!(w.images[0].sha, sha);
        assert_eq!(w.images[0].vulns.len(), 1);
        assert_eq!(w.images[0].state(Instant::now()), ImageState::Scanned);
        assert_eq!(
            host_of("https://1.dkr.ecr.us-east-1.amazonaws.com/"),
            "1.dkr.ecr.us-east-1.amazonaws.com"
        );
    }
}
