//! The webhook's Prometheus metrics (served on `QFLOWS_ADMISSION_METRICS_ADDR`, plain HTTP).
//!
//! `qflows_admission_decisions_total{decision,profile}` counts images (one object may carry
//! several); `decision` is one of [`Decision::ALL`] and `profile` a name from the profiles
//! file, so the series are bounded by configuration, never by what objects carry.

use super::decide::Decision;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the answer-latency buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0,
];

/// Counters and the latency histogram.
#[derive(Default)]
pub struct Metrics {
    decisions: Mutex<BTreeMap<(String, Decision), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
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
        let secs = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A request that was not an AdmissionReview.
    pub fn invalid(&self) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP qflows_admission_decisions_total Images judged by the admission webhook, by \
             decision and gate profile.\n",
        );
        out.push_str("# TYPE qflows_admission_decisions_total counter\n");
        for ((profile, decision), n) in self.decisions.lock().iter() {
            let _ = writeln!(
                out,
                "qflows_admission_decisions_total{{decision=\"{}\",profile=\"{}\"}} {n}",
                decision.as_str(),
                profile.replace(['\\', '"', '\n'], "_")
            );
        }
        out.push_str(
            "# HELP qflows_admission_invalid_requests_total Requests that were not AdmissionReviews (400).\n",
        );
        out.push_str("# TYPE qflows_admission_invalid_requests_total counter\n");
        let _ = writeln!(
            out,
            "qflows_admission_invalid_requests_total {}",
            self.invalid.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP qflows_admission_review_seconds Time from an AdmissionReview's arrival to its answer.\n",
        );
        out.push_str("# TYPE qflows_admission_review_seconds histogram\n");
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "qflows_admission_review_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "qflows_admission_review_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "qflows_admission_review_seconds_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "qflows_admission_review_seconds_count {count}");
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
