//! The webhook's Prometheus metrics (served on `QFLOWS_ADMISSION_METRICS_ADDR`, plain HTTP).
//!
//! `qflows_admission_decisions_total{decision,profile}` counts images (one object may carry
//! several); `decision` is one of [`Decision::ALL`] and `profile` a name from the profiles
//! file, so the series are bounded by configuration, never by what objects carry.

use super::decision::Decision;
use crate::histogram::{Histogram, counter, describe};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters and the latency histogram.
#[derive(Default)]
pub struct Metrics {
    decisions: Mutex<BTreeMap<(String, Decision), u64>>,
    latency: Histogram,
    invalid: AtomicU64,
}

impl Metrics {
    /// One image's decision under `profile`.
    pub fn decision(&self, decision: Decision, profile: &str) {
        *self
            .decisions
            .lock()
            .entry((profile.to_string(), decision))
            .or_default() += 1;
    }

    /// How many images got `decision` under `profile` so far.
    pub fn decisions(&self, decision: Decision, profile: &str) -> u64 {
        self.decisions
            .lock()
            .get(&(profile.to_string(), decision))
            .copied()
            .unwrap_or(0)
    }

    /// One answer's time, arrival to answer.
    pub fn latency(&self, took: Duration) {
        self.latency.observe(took);
    }

    /// A request that was not an AdmissionReview.
    pub fn invalid(&self) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        describe(
            &mut out,
            "qflows_admission_decisions_total",
            "counter",
            "Images judged by the admission webhook, by decision and gate profile.",
        );
        for ((profile, decision), n) in self.decisions.lock().iter() {
            let _ = writeln!(
                out,
                "qflows_admission_decisions_total{{decision=\"{}\",profile=\"{}\"}} {n}",
                decision.as_str(),
                profile.replace(['\\', '"', '\n'], "_")
            );
        }
        counter(
            &mut out,
            "qflows_admission_invalid_requests_total",
            "Requests that were not AdmissionReviews (400).",
            self.invalid.load(Ordering::Relaxed),
        );
        describe(
            &mut out,
            "qflows_admission_review_seconds",
            "histogram",
            "Time from an AdmissionReview's arrival to its answer.",
        );
        self.latency
            .render(&mut out, "qflows_admission_review_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_decisions_by_profile_and_the_latency_histogram() {
        let m = Metrics::default();
        m.decision(Decision::BreakGlass, "production");
        m.decision(Decision::BreakGlass, "production");
        m.decision(Decision::Audited, "sandbox");
        m.latency(Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains(
            "qflows_admission_decisions_total{decision=\"break_glass\",profile=\"production\"} 2"
        ));
        assert!(text.contains(
            "qflows_admission_decisions_total{decision=\"audited\",profile=\"sandbox\"} 1"
        ));
        assert!(text.contains("qflows_admission_review_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("qflows_admission_review_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("qflows_admission_review_seconds_count 1"));
        assert_eq!(m.decisions(Decision::BreakGlass, "production"), 2);
    }
}
