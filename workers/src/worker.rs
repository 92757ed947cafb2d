//! `qflows worker`: serves qflows' workflows and activities on a task queue.

use crate::config::{ConfigError, QualysArgs, TemporalArgs, WorkerArgs};
use crate::{telemetry, temporal};
use qflows_activities::RegistryActivities;
use qflows_activities::aws::Aws;
use qflows_activities::qualys::{QualysClient, QualysConfig};
use qflows_workflows::EnsureRegistry;
use qflows_workflows::registry::RegistryDefaults;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tracing::info;

/// Everything a worker needs, validated before anything connects.
#[derive(Debug)]
pub struct WorkerConfig {
    /// Where Temporal is.
    pub temporal: TemporalArgs,
    /// The Qualys client.
    pub qualys: QualysConfig,
    /// What to serve.
    pub worker: WorkerArgs,
    /// Registry defaults derived from `worker`.
    pub registry: RegistryDefaults,
}

impl WorkerConfig {
    /// Validates flags and environment into a worker configuration.
    pub fn from_args(
        temporal: TemporalArgs,
        qualys: &QualysArgs,
        worker: WorkerArgs,
    ) -> Result<Self, ConfigError> {
        worker.metrics_addr()?;
        Ok(Self {
            qualys: qualys.to_config()?,
            registry: worker.registry_defaults()?,
            temporal,
            worker,
        })
    }
}

/// Runs the worker until `shutdown` resolves, then drains in-flight work and returns.
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
            .telemetry_options(telemetry.options)
            .build()
            .map_err(|e| anyhow::anyhow!("Temporal runtime options: {e}"))?,
    )?;
    let identity = format!(
        "qflows@{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        std::process::id()
    );
    let client = temporal::connect(&config.temporal, &identity).await?;
    let qualys = QualysClient::new(config.qualys)?;
    let activities = RegistryActivities::new(qualys, Arc::new(Aws::new()), config.registry);

    let options = WorkerOptions::new(config.worker.task_queue.clone())
        .register_workflow::<EnsureRegistry>()?
        .register_activities(activities)
        .graceful_shutdown_period(Duration::from_secs(config.worker.shutdown_grace_secs))
        .build();
    let mut worker = Worker::new(&runtime, client, options)?;
    let stop = worker.shutdown_handle();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: finishing in-flight tasks");
        stop();
    });
    info!(task_queue = %config.worker.task_queue, "worker started");
    // `run` is not `Send`: it stays on this task.
    worker.run().await?;
    info!("worker stopped");
    Ok(())
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
