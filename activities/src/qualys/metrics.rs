//! Plain counters of the client, for a later Prometheus export.

use super::config::Family;
use super::error::QualysError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the client's counters. Every family and error kind is present (with 0), so
/// exported series are stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientMetrics {
    /// HTTP requests sent (every retry included; logins excluded), by [`Family::as_str`].
    pub requests: BTreeMap<&'static str, u64>,
    /// Throttled answers (429/409), by family.
    pub throttled: BTreeMap<&'static str, u64>,
    /// In-process retries (after a throttle or a re-login).
    pub retries: u64,
    /// `POST /auth` logins attempted.
    pub logins: u64,
    /// Errors returned, by [`QualysError::kind`].
    pub errors: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: [AtomicU64; Family::ALL.len()],
    throttled: [AtomicU64; Family::ALL.len()],
    errors: [AtomicU64; QualysError::KINDS.len()],
    retries: AtomicU64,
    logins: AtomicU64,
}

impl Metrics {
    pub(crate) fn request(&self, family: Family) {
        self.requests[family.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn throttled(&self, family: Family) {
        self.throttled[family.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn login(&self) {
        self.logins.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the error and hands it back.
    pub(crate) fn error(&self, err: QualysError) -> QualysError {
        if let Some(i) = QualysError::KINDS.iter().position(|k| *k == err.kind()) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
        err
    }

    pub(crate) fn snapshot(&self) -> ClientMetrics {
        let by_family = |counters: &[AtomicU64]| {
            Family::ALL
                .iter()
                .map(|f| (f.as_str(), counters[f.index()].load(Ordering::Relaxed)))
                .collect()
        };
        ClientMetrics {
            requests: by_family(&self.requests),
            throttled: by_family(&self.throttled),
            retries: self.retries.load(Ordering::Relaxed),
            logins: self.logins.load(Ordering::Relaxed),
            errors: QualysError::KINDS
                .iter()
                .zip(&self.errors)
                .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}
