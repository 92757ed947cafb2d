//! A latency histogram in the Prometheus text format, and the lines that open every metric,
//! shared by the processes that serve their own `/metrics` (the bridge, the admission webhook)
//! rather than the Temporal runtime's.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the buckets: 1 ms to 5 s, around the webhook's 3-s and the
/// bridge's senders' timeouts.
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0,
];

/// Writes the `# HELP` and `# TYPE` lines that open metric `name` (`kind`: `counter`,
/// `histogram`).
pub fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a counter without labels: its `# HELP` and `# TYPE` lines, then its value.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    describe(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Cumulative buckets, a count and a sum, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the `_bucket`, `_sum` and `_count` series of `name`, each with `labels`
    /// (`route="aws"`, or empty) before `le`.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_labels_come_first() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(4));
        h.observe(Duration::from_millis(40));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "route=\"aws\"");
        assert!(
            out.contains("x_seconds_bucket{route=\"aws\",le=\"0.005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"aws\",le=\"0.05\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{route=\"aws\",le=\"+Inf\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{route=\"aws\"} 2\n"), "{out}");
        let mut bare = String::new();
        h.render(&mut bare, "y_seconds", "");
        assert!(
            bare.contains("y_seconds_bucket{le=\"0.001\"} 0\n"),
            "{bare}"
        );
        assert!(bare.contains("y_seconds_sum 0.044\n"), "{bare}");
    }

    #[test]
    fn a_counter_opens_with_its_help_and_type() {
        let mut out = String::new();
        counter(&mut out, "x_total", "Things seen.", 3);
        assert_eq!(
            out,
            "# HELP x_total Things seen.\n# TYPE x_total counter\nx_total 3\n"
        );
    }
}
