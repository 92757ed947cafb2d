//! qflows' own operational counters, kept where the work happens and exported by the worker
//! next to the SDK's metrics (see `qflows::telemetry`).
//!
//! Process-wide, like a Prometheus default registry: activities count without any handle
//! being passed around. Every label comes from a closed set: scan backends, policy changes
//! (`promoted`, `reverted`), and failure type names (the public contract in
//! [`crate::failure`]), capped so that a bug can never turn a label into an unbounded series.
//!
//! Latencies are observations, not counters: they wait in a bounded buffer until the exporter
//! takes them ([`take_submit_latencies`]) and records them in its histogram.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// At most this many distinct failure types are counted apart; later ones count as `other`.
const MAX_ERROR_TYPES: usize = 64;

static SCAN_REQUESTS: AtomicU64 = AtomicU64::new(0);
static ENTITY_QUERIES: AtomicU64 = AtomicU64::new(0);
static SUBMITTED_REGISTRY: AtomicU64 = AtomicU64::new(0);
static SUBMITTED_QSCANNER: AtomicU64 = AtomicU64::new(0);
/// Failed attempts by (failure type, retryable).
static FAILURES: Mutex<BTreeMap<(String, bool), u64>> = Mutex::new(BTreeMap::new());
static POLICIES_PROMOTED: AtomicU64 = AtomicU64::new(0);
static POLICIES_REVERTED: AtomicU64 = AtomicU64::new(0);
static PROFILE_RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Event→submitted latencies not yet exported.
static SUBMIT_LATENCIES: Mutex<Vec<(Backend, Duration)>> = Mutex::new(Vec::new());
/// At most this many latencies wait for the exporter (a worker without one keeps the first
/// few); later ones are dropped, never buffered without bound.
const MAX_PENDING_LATENCIES: usize = 10_000;

/// How an image was scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Qualys' registry scan.
    Registry,
    /// QScanner on the worker.
    QScanner,
}

impl Backend {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Backend::Registry => "registry",
            Backend::QScanner => "qscanner",
        }
    }
}

/// An activity queried an `ImageScan` entity (queries are billed actions on Temporal Cloud).
pub fn entity_queried() {
    ENTITY_QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// Queries of `ImageScan` entities this process made.
pub fn entity_queries() -> u64 {
    ENTITY_QUERIES.load(Ordering::Relaxed)
}

/// A deployment asked for a digest's scan (one per image of each deploy event; most join a
/// scan that is already running or fresh).
pub fn scan_requested() {
    SCAN_REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// A scan was actually submitted (or run, for QScanner). `event_accepted_at_ms` is when the
/// deploy event that asked for it reached Temporal (milliseconds since the Unix epoch), if a
/// deploy event is waiting on this scan: its event→submitted latency is recorded.
pub fn scan_submitted(backend: Backend, event_accepted_at_ms: Option<u64>) {
    match backend {
        Backend::Registry => &SUBMITTED_REGISTRY,
        Backend::QScanner => &SUBMITTED_QSCANNER,
    }
    .fetch_add(1, Ordering::Relaxed);
    if let Some(latency) = event_accepted_at_ms.and_then(|at| since_epoch_ms(at, SystemTime::now()))
    {
        let mut pending = SUBMIT_LATENCIES.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < MAX_PENDING_LATENCIES {
            pending.push((backend, latency));
        }
    }
}

/// The time from `at_ms` (milliseconds since the Unix epoch) to `now`; zero when the clocks
/// disagree and `at_ms` lies in the future, `None` when `now` is before 1970.
fn since_epoch_ms(at_ms: u64, now: SystemTime) -> Option<Duration> {
    let now = now.duration_since(UNIX_EPOCH).ok()?;
    Some(now.saturating_sub(Duration::from_millis(at_ms)))
}

/// Takes the event→submitted latencies recorded since the last call.
pub fn take_submit_latencies() -> Vec<(Backend, Duration)> {
    std::mem::take(&mut *SUBMIT_LATENCIES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// A published policy's enforcement changed: `audit` → `enforce` is a promotion, `enforce` →
/// `audit` a revert (by a reviewer or automatically). Other pairs count nothing.
pub fn policy_enforcement_changed(before: &str, after: &str) {
    match (before, after) {
        ("audit", "enforce") => &POLICIES_PROMOTED,
        ("enforce", "audit") => &POLICIES_REVERTED,
        _ => return,
    }
    .fetch_add(1, Ordering::Relaxed);
}

/// A changed gate profiles file was refused (the previous profiles stay in force).
pub fn profiles_reload_failed() {
    PROFILE_RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// An activity failed with this failure type; `retryable: false` means Temporal will not try
/// again (the workflow sees the failure and, usually, a person has to act).
pub fn failed(error_type: &str, retryable: bool) {
    let mut failures = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
    let known = failures.keys().any(|(t, _)| t == error_type);
    let distinct = || {
        let mut types: Vec<&str> = failures.keys().map(|(t, _)| t.as_str()).collect();
        types.dedup();
        types.len()
    };
    let key = if known || distinct() < MAX_ERROR_TYPES {
        error_type
    } else {
        "other"
    };
    *failures.entry((key.to_string(), retryable)).or_default() += 1;
}

/// The counters so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Scan requests (deployments × digests).
    pub scan_requests: u64,
    /// Scans submitted, by backend label (`registry`, `qscanner`).
    pub scans_submitted: BTreeMap<&'static str, u64>,
    /// Activity failures by failure type and whether they will be retried.
    pub failures: BTreeMap<(String, bool), u64>,
    /// Policy enforcement changes published, by `promoted` / `reverted`.
    pub policy_changes: BTreeMap<&'static str, u64>,
    /// Changed gate profiles files refused.
    pub profile_reload_failures: u64,
}

/// Reads every counter.
pub fn snapshot() -> Snapshot {
    Snapshot {
        scan_requests: SCAN_REQUESTS.load(Ordering::Relaxed),
        scans_submitted: BTreeMap::from([
            (
                Backend::Registry.label(),
                SUBMITTED_REGISTRY.load(Ordering::Relaxed),
            ),
            (
                Backend::QScanner.label(),
                SUBMITTED_QSCANNER.load(Ordering::Relaxed),
            ),
        ]),
        failures: FAILURES.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        policy_changes: BTreeMap::from([
            ("promoted", POLICIES_PROMOTED.load(Ordering::Relaxed)),
            ("reverted", POLICIES_REVERTED.load(Ordering::Relaxed)),
        ]),
        profile_reload_failures: PROFILE_RELOAD_FAILURES.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_type_fits_under_the_cap() {
        // Past the cap a type counts as `other` and alerts on its name stop matching.
        let n = qflows_workflows::FailureType::ALL.len();
        assert!(
            n < MAX_ERROR_TYPES,
            "{n} failure types, {MAX_ERROR_TYPES} label values: raise the cap"
        );
    }

    #[test]
    fn failure_types_are_capped() {
        for i in 0..(MAX_ERROR_TYPES + 10) {
            failed(&format!("TestType{i}"), true);
        }
        failed("TestType0", true);
        failed("TestType0", false);
        let failures = snapshot().failures;
        let mut types: Vec<&str> = failures.keys().map(|(t, _)| t.as_str()).collect();
        types.dedup();
        assert!(types.len() <= MAX_ERROR_TYPES + 1, "{}", types.len());
        assert!(failures[&("TestType0".to_string(), true)] >= 2);
        assert_eq!(failures[&("TestType0".to_string(), false)], 1);
        assert!(
            failures
                .get(&("other".to_string(), true))
                .copied()
                .unwrap_or(0)
                >= 10
        );
    }

    #[test]
    fn latency_counts_from_the_event_and_never_goes_negative() {
        let now = UNIX_EPOCH + Duration::from_millis(10_000);
        assert_eq!(
            since_epoch_ms(7_500, now),
            Some(Duration::from_millis(2_500))
        );
        // The event's clock ran ahead of the worker's: zero, not a wrap-around.
        assert_eq!(since_epoch_ms(12_000, now), Some(Duration::ZERO));
    }

    #[test]
    fn submitted_scans_leave_their_latency_for_the_exporter() {
        let accepted = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - 1_500;
        scan_submitted(Backend::QScanner, Some(accepted));
        scan_submitted(Backend::Registry, None);
        let taken = take_submit_latencies();
        let ours: Vec<_> = taken
            .iter()
            .filter(|(b, d)| *b == Backend::QScanner && *d >= Duration::from_millis(1_500))
            .collect();
        assert_eq!(ours.len(), 1, "{taken:?}");
        assert!(ours[0].1 < Duration::from_secs(60), "{taken:?}");
    }
}
