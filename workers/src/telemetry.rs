//! Logs (`tracing`, text or JSON) and the SDK's Prometheus metrics endpoint.

use crate::config::{LogArgs, LogFormat};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use temporalio_common::telemetry::metrics::CoreMeter;
use temporalio_common::telemetry::{
    Logger, PrometheusExporterOptions, TelemetryOptions, start_prometheus_metric_exporter,
};
use tracing_subscriber::EnvFilter;

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
        .maybe_metrics(meter)
        .build();
    Ok(Telemetry {
        options,
        metrics_addr,
    })
}
