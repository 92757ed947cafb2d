//! The bridge's Prometheus metrics. Every label value comes from a closed set, so series stay
//! bounded whatever senders send.

use crate::histogram::{Histogram, counter, describe};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Temporal started its workflow.
    Started,
    /// Its workflow already existed: a redelivery.
    Duplicate,
    /// A well-formed event that asks for no scan.
    Ignored,
}

impl EventOutcome {
    const ALL: [EventOutcome; 3] = [Self::Started, Self::Duplicate, Self::Ignored];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No or a wrong key (401).
    Unauthenticated,
    /// Over the body limit (413).
    TooLarge,
    /// Not readable as the sender's format (400).
    Malformed,
    /// Readable, but not an event `ScanOnDeploy` accepts (400).
    InvalidEvent,
    /// Temporal did not accept the start in time (503; the sender retries).
    Unavailable,
}

impl Rejection {
    const ALL: [Rejection; 5] = [
        Self::Unauthenticated,
        Self::TooLarge,
        Self::Malformed,
        Self::InvalidEvent,
        Self::Unavailable,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::InvalidEvent => "invalid_event",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Where deliveries arrive; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /events/aws`.
    Aws,
    /// `/events/azure`.
    Azure,
    /// `/events/cloudevents`.
    CloudEvents,
    /// The SQS queue.
    Sqs,
}

impl Route {
    const ALL: [Route; 4] = [Self::Aws, Self::Azure, Self::CloudEvents, Self::Sqs];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Azure => "azure",
            Self::CloudEvents => "cloudevents",
            Self::Sqs => "sqs",
        }
    }
}

/// Counters and a latency histogram per route.
#[derive(Debug, Default)]
pub struct Metrics {
    events: [[AtomicU64; EventOutcome::ALL.len()]; Route::ALL.len()],
    rejected: [[AtomicU64; Rejection::ALL.len()]; Route::ALL.len()],
    handshakes: AtomicU64,
    latency: [Histogram; Route::ALL.len()],
}

fn index<T: PartialEq>(all: &[T], item: T) -> usize {
    all.iter()
        .position(|x| *x == item)
        .expect("every value is listed")
}

/// Writes counter `name`'s series, one per route and value of `label`:
/// `name{route="…",label="…"} n`, `counts[route][value]`.
fn by_route<const N: usize>(
    out: &mut String,
    name: &str,
    label: &str,
    values: &[&str; N],
    counts: &[[AtomicU64; N]; Route::ALL.len()],
) {
    for (route, row) in Route::ALL.iter().zip(counts) {
        for (value, count) in values.iter().zip(row) {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",{label}=\"{value}\"}} {}",
                route.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
    }
}

impl Metrics {
    /// Counts one event's outcome.
    pub fn event(&self, route: Route, outcome: EventOutcome) {
        self.events[index(&Route::ALL, route)][index(&EventOutcome::ALL, outcome)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refused delivery.
    pub fn rejected(&self, route: Route, why: Rejection) {
        self.rejected[index(&Route::ALL, route)][index(&Rejection::ALL, why)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answered subscription handshake.
    pub fn handshake(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long a delivery took from arrival to answer.
    pub fn latency(&self, route: Route, elapsed: Duration) {
        self.latency[index(&Route::ALL, route)].observe(elapsed);
    }

    /// Events counted with `outcome`, over every route.
    pub fn events_total(&self, outcome: EventOutcome) -> u64 {
        let i = index(&EventOutcome::ALL, outcome);
        self.events
            .iter()
            .map(|row| row[i].load(Ordering::Relaxed))
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        describe(
            &mut out,
            "qflows_bridge_events_total",
            "counter",
            "Events handled, by route and outcome.",
        );
        let outcomes = EventOutcome::ALL.map(EventOutcome::as_str);
        by_route(
            &mut out,
            "qflows_bridge_events_total",
            "outcome",
            &outcomes,
            &self.events,
        );
        describe(
            &mut out,
            "qflows_bridge_rejected_total",
            "counter",
            "Deliveries refused, by route and reason.",
        );
        let reasons = Rejection::ALL.map(Rejection::as_str);
        by_route(
            &mut out,
            "qflows_bridge_rejected_total",
            "reason",
            &reasons,
            &self.rejected,
        );
        counter(
            &mut out,
            "qflows_bridge_handshakes_total",
            "Event Grid subscription validations answered.",
            self.handshakes.load(Ordering::Relaxed),
        );
        describe(
            &mut out,
            "qflows_bridge_delivery_seconds",
            "histogram",
            "Time from a delivery's arrival to its answer.",
        );
        for (r, route) in Route::ALL.iter().enumerate() {
            self.latency[r].render(
                &mut out,
                "qflows_bridge_delivery_seconds",
                &format!("route=\"{}\"", route.as_str()),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_bounded_labels() {
        let metrics = Metrics::default();
        metrics.event(Route::Aws, EventOutcome::Started);
        metrics.event(Route::Aws, EventOutcome::Duplicate);
        metrics.rejected(Route::Azure, Rejection::Unauthenticated);
        metrics.latency(Route::Aws, Duration::from_millis(3));
        let text = metrics.render();
        assert!(text.contains("qflows_bridge_events_total{route=\"aws\",outcome=\"started\"} 1"));
        assert!(text.contains("qflows_bridge_events_total{route=\"sqs\",outcome=\"ignored\"} 0"));
        assert!(text.contains(
            "qflows_bridge_rejected_total{route=\"azure\",reason=\"unauthenticated\"} 1"
        ));
        assert!(
            text.contains("qflows_bridge_delivery_seconds_bucket{route=\"aws\",le=\"0.0025\"} 0")
        );
        assert!(
            text.contains("qflows_bridge_delivery_seconds_bucket{route=\"aws\",le=\"0.005\"} 1")
        );
        assert!(text.contains("qflows_bridge_delivery_seconds_count{route=\"aws\"} 1"));
        assert_eq!(metrics.events_total(EventOutcome::Started), 1);
    }
}
