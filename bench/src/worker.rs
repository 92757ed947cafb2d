//! The benchmarks' worker: the product worker ([`qflows::worker::run`]) and, in the same
//! process, a small worker serving [`BenchNoop`] on [`baseline_queue`] — the baseline that
//! `overhead`, `burst` and `chaos` compare ScanOnDeploy with. `qflows-bench worker` runs it as a
//! process (what `burst` and `chaos` start and SIGKILL); the other benchmarks call [`run`].

use crate::noop::{BenchActivities, BenchNoop, baseline_queue};
use futures::FutureExt;
use qflows::worker::{WorkerConfig, tuned};
use std::future::Future;
use std::time::Duration;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

/// Runs the product worker and the baseline worker until `shutdown` resolves, then drains both.
/// The baseline queue is tuned as the product's queues are (cache, slots, pollers).
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let queue = baseline_queue(&config.worker.task_queue);
    let temporal = config.temporal.clone();
    let tuning = config.tuning;
    let grace = Duration::from_secs(config.worker.shutdown_grace_secs);
    let product = qflows::worker::run(config, shutdown.clone());
    let baseline = async move {
        let runtime = Runtime::from_current_tokio(
            RuntimeOptions::builder()
                .build()
                .map_err(|e| anyhow::anyhow!("Temporal runtime options: {e}"))?,
        )?;
        let identity = format!("qflows-bench@{}", std::process::id());
        let client = qflows::temporal::connect(&temporal, &identity).await?;
        let options = WorkerOptions::new(queue)
            .register_workflow::<BenchNoop>()?
            .register_activities(BenchActivities)
            .graceful_shutdown_period(grace)
            .build();
        let mut worker = Worker::new(&runtime, client, tuned(options, &tuning))?;
        let stop = worker.shutdown_handle();
        tokio::spawn(async move {
            shutdown.await;
            stop();
        });
        worker.run().await?;
        anyhow::Ok(())
    };
    // Either failing stops both (a baseline that cannot start must not leave the product running).
    tokio::try_join!(product, baseline)?;
    Ok(())
}
