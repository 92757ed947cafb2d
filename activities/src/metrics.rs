//! qflows' own operational counters, kept where the work happens and exported by the worker
//! next to the SDK's metrics (see `qflows::telemetry`).
//!
//! Process-wide, like a Prometheus default registry: activities count without any handle
//! being passed around. Every label comes from a closed set: scan backends, policy changes
//! (`promoted`, `reverted`), and failure type names (the public contract in [`crate::failure`]), capped so that a bug can never turn a
//! label into an unbounded series.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// At most this many distinct failure types are counted apart; later ones count as `other`.
const MAX_ERROR_TYPES: usize = 64;

static SCAN_REQUESTS: AtomicU64 = AtomicU64::new(0);
static SUBMITTED_REGISTRY: AtomicU64 = AtomicU64::new(0);
static SUBMITTED_QSCANNER: AtomicU64 = AtomicU64::new(0);
static FAILURES: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
static POLICIES_PROMOTED: AtomicU64 = AtomicU64::new(0);
static POLICIES_REVERTED: AtomicU64 = AtomicU64::new(0);

/// How an image was scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Qualys' registry scan.
    Registry,
    /// QScanner on the worker.
    QScanner,
}

/// A deployment asked for a digest's scan (one per image of each deploy event; most join a
/// scan that is already running or fresh).
pub fn scan_requested() {
    SCAN_REQUESTS.fetch_add(1, Ordering::Relaxed);
}

/// A scan was actually submitted (or run, for QScanner).
pub fn scan_submitted(backend: Backend) {
    match backend {
        Backend::Registry => &SUBMITTED_REGISTRY,
        Backend::QScanner => &SUBMITTED_QSCANNER,
    }
    .fetch_add(1, Ordering::Relaxed);
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

/// An activity failed with this failure type.
pub fn failed(error_type: &str) {
    let mut failures = FAILURES.lock().unwrap_or_else(|e| e.into_inner());
    let key = if failures.contains_key(error_type) || failures.len() < MAX_ERROR_TYPES {
        error_type
    } else {
        "other"
    };
    *failures.entry(key.to_string()).or_default() += 1;
}

/// The counters so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Scan requests (deployments × digests).
    pub scan_requests: u64,
    /// Scans submitted, by backend label (`registry`, `qscanner`).
    pub scans_submitted: BTreeMap<&'static str, u64>,
    /// Activity failures by failure type.
    pub failures: BTreeMap<String, u64>,
    /// Policy enforcement changes published, by `promoted` / `reverted`.
    pub policy_changes: BTreeMap<&'static str, u64>,
}

/// Reads every counter.
pub fn snapshot() -> Snapshot {
    Snapshot {
        scan_requests: SCAN_REQUESTS.load(Ordering::Relaxed),
        scans_submitted: BTreeMap::from([
            ("registry", SUBMITTED_REGISTRY.load(Ordering::Relaxed)),
            ("qscanner", SUBMITTED_QSCANNER.load(Ordering::Relaxed)),
        ]),
        failures: FAILURES.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        policy_changes: BTreeMap::from([
            ("promoted", POLICIES_PROMOTED.load(Ordering::Relaxed)),
            ("reverted", POLICIES_REVERTED.load(Ordering::Relaxed)),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_types_are_capped() {
        for i in 0..(MAX_ERROR_TYPES + 10) {
            failed(&format!("TestType{i}"));
        }
        failed("TestType0");
        let failures = snapshot().failures;
        assert!(failures.len() <= MAX_ERROR_TYPES + 1, "{}", failures.len());
        assert!(failures["TestType0"] >= 2);
        assert!(failures.get("other").copied().unwrap_or(0) >= 10);
    }
}
