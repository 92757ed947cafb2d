//! Logs (`tracing`, text or JSON) and the SDK's Prometheus metrics endpoint.

use crate::config::{LogArgs, LogFormat};
use qflows_activities::metrics;
use qflows_activities::qualys::{ClientMetrics, QualysClient};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, HistogramF64, MetricAttributes, MetricKeyValue, MetricParameters,
    NewAttributes,
};
use temporalio_common::telemetry::{
    HistogramBucketOverrides, Logger, PrometheusExporterOptions, TelemetryOptions,
    start_prometheus_metric_exporter,
};
use tracing_subscriber::EnvFilter;

/// The event→scan-submitted latency histogram.
pub const SUBMIT_LATENCY: &str = "qflows_scan_submit_latency_seconds";

/// Its buckets, in seconds: a scan normally starts within seconds of its event; a backlog
/// (a burst, a Qualys outage, a worker that was down) shows as minutes to an hour.
const SUBMIT_LATENCY_BUCKETS: [f64; 13] = [
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Installs the global log subscriber (once per process; later calls are no-ops).
pub fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log)
        .map_err(|e| anyhow::anyhow!("QFLOWS_LOG: `{}` is not a log filter ({e})", args.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already installed (e.g. `dev` calls into `worker`): keep the first.
    let _ = result;
    Ok(())
}

/// The SDK's telemetry wired to our logs and, optionally, a Prometheus endpoint.
pub struct Telemetry {
    /// Options for the Temporal runtime.
    pub options: TelemetryOptions,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// The meter behind that endpoint, for qflows' own metrics.
    pub meter: Option<Arc<dyn CoreMeter>>,
}

/// Starts the Prometheus exporter (when `metrics` is set) and builds the runtime's telemetry.
///
/// The SDK's own logger is off: its events reach our global `tracing` subscriber instead, so the
/// worker has one log stream in one format.
pub fn start(metrics: Option<SocketAddr>) -> anyhow::Result<Telemetry> {
    let mut metrics_addr = None;
    let mut meter: Option<Arc<dyn CoreMeter>> = None;
    if let Some(addr) = metrics {
        let server = start_prometheus_metric_exporter(
            PrometheusExporterOptions::builder()
                .socket_addr(addr)
                .histogram_bucket_overrides(HistogramBucketOverrides {
                    overrides: [(SUBMIT_LATENCY.to_string(), SUBMIT_LATENCY_BUCKETS.to_vec())]
                        .into(),
                })
                .build(),
        )
        .map_err(|e| {
            anyhow::anyhow!("QFLOWS_METRICS_LISTEN: cannot serve metrics on {addr}: {e}")
        })?;
        metrics_addr = Some(server.bound_addr);
        // The server runs on its own task for the life of the process; dropping the handle keeps it.
        meter = Some(server.meter as Arc<dyn CoreMeter>);
    }
    let options = TelemetryOptions::builder()
        .maybe_logging(None::<Logger>)
        .maybe_metrics(meter.clone())
        .build();
    Ok(Telemetry {
        options,
        metrics_addr,
        meter,
    })
}

/// Publishes the Qualys client's counters on the worker's metrics endpoint, next to the SDK's:
/// `qflows_qualys_requests_total{family}`, `qflows_qualys_throttled_total{family}` (429/409) and
/// `qflows_qualys_errors_total{error_type}`; and the activities' own: `qflows_scan_requests_total`,
/// `qflows_scans_submitted_total{backend}`, `qflows_scan_submit_latency_seconds{backend}`,
/// `qflows_activity_failures_total{error_type,retryable}`, `qflows_policy_enforcement_changes_total{change}`.
/// Labels come from closed sets (endpoint families, error kinds), never from messages. Runs until
/// the process ends.
pub fn export_qualys_metrics(meter: Arc<dyn CoreMeter>, client: QualysClient) {
    let requests = meter.counter(
        MetricParameters::builder()
            .name("qflows_qualys_requests_total")
            .description("Qualys HTTP requests sent, retries included, by endpoint family")
            .build(),
    );
    let throttled = meter.counter(
        MetricParameters::builder()
            .name("qflows_qualys_throttled_total")
            .description("Qualys answers 429/409 (throttled), by endpoint family")
            .build(),
    );
    let errors = meter.counter(
        MetricParameters::builder()
            .name("qflows_qualys_errors_total")
            .description("Qualys calls that ended in an error, by error type")
            .build(),
    );
    let scans = ScanCounters::new(meter.clone());
    let attributes = move |key: &'static str, value: &'static str| {
        meter.new_attributes(NewAttributes::from(vec![MetricKeyValue::new(key, value)]))
    };
    tokio::spawn(async move {
        let mut last_scans = metrics::Snapshot::default();
        let mut last = ClientMetrics::default();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let now = client.metrics();
            let deltas = [
                (&requests, &now.requests, &last.requests, "family"),
                (&throttled, &now.throttled, &last.throttled, "family"),
                (&errors, &now.errors, &last.errors, "error_type"),
            ];
            for (counter, current, previous, key) in deltas {
                for (label, value) in current {
                    let before = previous.get(label).copied().unwrap_or(0);
                    // Zero deltas too, so every series exists from the first scrape.
                    counter.add(value.saturating_sub(before), &attributes(key, label));
                }
            }
            last = now;
            export_scan_metrics(&scans, &mut last_scans);
        }
    });
}

/// qflows' own counters (see [`qflows_activities::metrics`]).
struct ScanCounters {
    meter: Arc<dyn CoreMeter>,
    requests: Counter,
    submitted: Counter,
    submit_latency: HistogramF64,
    failures: Counter,
    policy_changes: Counter,
    profile_reloads_refused: Counter,
}

impl ScanCounters {
    fn new(meter: Arc<dyn CoreMeter>) -> Self {
        let counter = |name: &'static str, description: &'static str| {
            meter.counter(
                MetricParameters::builder()
                    .name(name)
                    .description(description)
                    .build(),
            )
        };
        Self {
            requests: counter(
                "qflows_scan_requests_total",
                "Deployed images handed to their digest's scan (most join one already running or fresh)",
            ),
            submitted: counter(
                "qflows_scans_submitted_total",
                "Scans actually submitted to Qualys (registry) or run (qscanner), by backend",
            ),
            submit_latency: meter.histogram_f64(
                MetricParameters::builder()
                    .name(SUBMIT_LATENCY)
                    .description(
                        "Seconds from a deploy event reaching Temporal (its ScanOnDeploy start) to the submission of the scan it caused, by backend",
                    )
                    .build(),
            ),
            failures: counter(
                "qflows_activity_failures_total",
                "Activity attempts that failed, by failure type and whether Temporal retries them",
            ),
            policy_changes: counter(
                "qflows_policy_enforcement_changes_total",
                "Published policy enforcement changes: promoted (audit to enforce) or reverted",
            ),
            profile_reloads_refused: counter(
                "qflows_gate_profile_reloads_refused_total",
                "Changes of the gate profiles file refused as invalid (the previous profiles stay)",
            ),
            meter,
        }
    }

    fn attributes(&self, key: &'static str, value: &str) -> MetricAttributes {
        self.meter
            .new_attributes(NewAttributes::from(vec![MetricKeyValue::new(
                key,
                value.to_string(),
            )]))
    }
}

fn export_scan_metrics(counters: &ScanCounters, last: &mut metrics::Snapshot) {
    let now = metrics::snapshot();
    counters.requests.add(
        now.scan_requests.saturating_sub(last.scan_requests),
        &counters.meter.new_attributes(NewAttributes::from(vec![])),
    );
    for (backend, value) in &now.scans_submitted {
        let before = last.scans_submitted.get(backend).copied().unwrap_or(0);
        counters.submitted.add(
            value.saturating_sub(before),
            &counters.attributes("backend", backend),
        );
    }
    for (backend, latency) in metrics::take_submit_latencies() {
        counters.submit_latency.record(
            latency.as_secs_f64(),
            &counters.attributes("backend", backend.label()),
        );
    }
    for (change, value) in &now.policy_changes {
        let before = last.policy_changes.get(change).copied().unwrap_or(0);
        counters.policy_changes.add(
            value.saturating_sub(before),
            &counters.attributes("change", change),
        );
    }
    counters.profile_reloads_refused.add(
        now.profile_reload_failures
            .saturating_sub(last.profile_reload_failures),
        &counters.meter.new_attributes(NewAttributes::from(vec![])),
    );
    for (key @ (error_type, retryable), value) in &now.failures {
        let before = last.failures.get(key).copied().unwrap_or(0);
        let labels = counters.meter.new_attributes(NewAttributes::from(vec![
            MetricKeyValue::new("error_type", error_type.clone()),
            MetricKeyValue::new("retryable", if *retryable { "true" } else { "false" }),
        ]));
        counters.failures.add(value.saturating_sub(before), &labels);
    }
    *last = now;
}
