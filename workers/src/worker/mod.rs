//! `qflows worker`: serves qflows' workflows and activities on a task queue.
//!
//! - [`config`] validates the [`WorkerConfig`];
//! - [`deps`] builds what the activities share from it;
//! - [`queues`] is the table of what each task queue registers;
//! - [`tuning`] applies cache, slots and pollers to each.

mod config;
mod deps;
mod queues;
mod tuning;

pub(crate) use config::azure_settings;
pub use config::{QScannerSetup, ScanConfig, WorkerConfig};
pub use tuning::tuned;

use crate::{telemetry, temporal};
use std::future::Future;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker};
use tracing::info;

/// Runs the worker until `shutdown` resolves, then drains in-flight work and returns: one
/// worker per task queue ([`queues`]), all built from the same [`deps::Dependencies`].
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let telemetry = telemetry::start(config.worker.metrics_addr()?)?;
    if let Some(addr) = telemetry.metrics_addr {
        info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    }
    let runtime = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .telemetry_options(telemetry.options.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("Temporal runtime options: {e}"))?,
    )?;
    let client = temporal::connect(&config.temporal, &config.process.identity()).await?;
    let deps = deps::Dependencies::build(&config, client.clone(), telemetry.meter.clone()).await?;
    let mut workers = queues::all(&config, &deps)?
        .into_iter()
        .map(|options| Worker::new(&runtime, client.clone(), options))
        .collect::<Result<Vec<_>, _>>()?;
    let stops: Vec<_> = workers.iter_mut().map(|w| w.shutdown_handle()).collect();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: finishing in-flight tasks");
        stops.into_iter().for_each(|stop| stop());
    });
    log_started(&deps);
    // `run` is not `Send`: all of them stay on this task.
    for result in futures::future::join_all(workers.iter_mut().map(|w| w.run())).await {
        result?;
    }
    info!("worker stopped");
    Ok(())
}
/// What this worker serves.
fn log_started(deps: &deps::Dependencies) {
    let (queues, qscanner) = (&deps.queues, deps.qscanner.as_ref());
    info!(
        task_queue = %queues.main,
        entity_task_queue = %queues.entity,
        rescan_task_queue = %queues.rescan,
        registry_task_queue = %queues.registry,
        qscanner_task_queue = qscanner.map(|_| queues.qscanner.as_str()),
        qscanner_max_concurrent = qscanner.map(|q| q.slots),
        "worker started"
    );
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
