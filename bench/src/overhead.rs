//! `qflows-bench overhead`: how much of a deploy scan is qflows' own work and how much is the
//! engine's.
//!
//! One run, one in-memory dev server, one worker in this process, the Qualys emulator with
//! instant scans. First `ScanOnDeploy` for `--workflows` unique digests; then the number of
//! activities one such scan ran (its own and its `ImageScan`'s, local ones included) is read from
//! their histories, and `BenchNoop` runs that many no-op activities the same number of times at
//! the same concurrency. The ratio of the two is what qflows adds on top of the engine: its
//! emulated Qualys calls, its durable timers between polls, its result and notification I/O.

use crate::noop::{BenchNoop, baseline_queue};
use crate::scan::{BenchEnv, event, percentile};
use clap::Args;
use futures::StreamExt;
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::{ImageStatus, image_scan_id};
use qualys_emulator::EmulatorConfig;
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use temporalio_client::{Client, WorkflowGetResultOptions, WorkflowStartOptions};

/// Flags of `qflows-bench overhead`.
#[derive(Debug, Clone, Args)]
pub struct OverheadArgs {
    /// Workflows of each kind.
    #[arg(long, default_value_t = 200)]
    pub workflows: usize,
    /// Workflows in flight at once.
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// The `temporal` CLI (default: PATH, then .venv).
    #[arg(long, env = "QFLOWS_TEMPORAL_BIN")]
    pub temporal_bin: Option<PathBuf>,
}

const TASK_QUEUE: &str = "qflows-bench";

/// Wall time of a phase and each workflow's start-to-result time (ms, sorted).
struct Phase {
    wall: Duration,
    latencies: Vec<u64>,
}

impl Phase {
    fn per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `n` workflows, `concurrency` at a time, each by `run(i)`.
async fn phase<F, Fut>(n: usize, concurrency: usize, run: F) -> anyhow::Result<Phase>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let began = Instant::now();
    let timed = futures::stream::iter(1..=n)
        .map(|i| {
            let work = run(i);
            async move {
                let t = Instant::now();
                work.await?;
                anyhow::Ok(t.elapsed().as_millis() as u64)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut latencies = timed.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    latencies.sort_unstable();
    Ok(Phase {
        wall: began.elapsed(),
        latencies,
    })
}

/// Activities (local ones included) and timers in a workflow's history.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    activities: u32,
    local_activities: u32,
    timers: u32,
}

async fn counts(client: &Client, workflow_id: &str) -> anyhow::Result<Counts> {
    let history = client
        .get_workflow_handle::<ScanOnDeploy>(workflow_id)
        .fetch_history(Default::default())
        .to_json()
        .await?;
    let history: Value = serde_json::from_slice(&history)?;
    let mut c = Counts::default();
    for event in history["events"].as_array().into_iter().flatten() {
        let attributes = &event["attributes"];
        if attributes
            .get("ActivityTaskScheduledEventAttributes")
            .is_some()
        {
            c.activities += 1;
        } else if attributes.get("TimerStartedEventAttributes").is_some() {
            c.timers += 1;
        } else if attributes["MarkerRecordedEventAttributes"]["marker_name"]
            == "core_local_activity"
        {
            c.local_activities += 1;
        }
    }
    Ok(c)
}

/// Runs the comparison and prints it.
pub async fn run(args: OverheadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.workflows > 0, "need at least one workflow");
    let BenchEnv {
        temporal,
        emulator,
        config,
        results,
        _server,
    } = BenchEnv::start(
        args.temporal_bin.as_deref(),
        EmulatorConfig {
            scan_delay_ms: 0,
            ..EmulatorConfig::default()
        },
    )
    .await?;
    crate::scan::push_all(&emulator, args.workflows + 1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = crate::worker::run(config, async move {
        let _ = stop_rx.await;
    });

    let n = args.workflows;
    let load = async {
        let client = qflows::temporal::connect(&temporal, "qflows-bench").await?;
        // Event i scans digest i: every measured workflow takes the whole path.
        let scan = |i: usize| {
            let client = client.clone();
            async move {
                let id = format!("overhead-scan-{i}");
                let handle = client
                    .start_workflow(
                        ScanOnDeploy::run,
                        event(i, n + 1),
                        WorkflowStartOptions::new(TASK_QUEUE, id.clone()).build(),
                    )
                    .await?;
                let output = handle
                    .get_result(WorkflowGetResultOptions::default())
                    .await
                    .map_err(|e| anyhow::anyhow!("{id}: {e:?}"))?;
                anyhow::ensure!(
                    output
                        .images
                        .iter()
                        .all(|i| i.status == ImageStatus::Scanned),
                    "{id} did not end scanned"
                );
                anyhow::Ok(())
            }
        };
        // Warm-up (not measured): creates the registry connector and the scan role once.
        scan(0).await?;
        let scans = phase(n, args.concurrency, scan).await?;

        let digest = event(1, n + 1)["detail"]["image-digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let parent = counts(&client, "overhead-scan-1").await?;
        let entity = counts(&client, &image_scan_id(&digest)).await?;
        let steps = parent.activities
            + parent.local_activities
            + entity.activities
            + entity.local_activities;

        let noop = |i: usize| {
            let client = client.clone();
            async move {
                let id = format!("overhead-noop-{i}");
                let handle = client
                    .start_workflow(
                        BenchNoop::run,
                        steps,
                        WorkflowStartOptions::new(baseline_queue(TASK_QUEUE), id.clone()).build(),
                    )
                    .await?;
                handle
                    .get_result(WorkflowGetResultOptions::default())
                    .await
                    .map_err(|e| anyhow::anyhow!("{id}: {e:?}"))?;
                anyhow::Ok(())
            }
        };
        let noops = phase(n, args.concurrency, noop).await?;
        anyhow::Ok((scans, noops, parent, entity, steps))
    };
    let (worker_result, load_result) = tokio::join!(worker, async {
        let r = load.await;
        let _ = stop_tx.send(());
        r
    });
    worker_result?;
    let (scans, noops, parent, entity, steps) = load_result?;
    let calls: u64 = emulator.stats().calls.values().sum();
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&results);

    println!("qflows-bench overhead");
    println!(
        "  workflows of each kind {n}, {} at a time",
        args.concurrency
    );
    println!(
        "  one ScanOnDeploy       {} activities + {} local, {} timers; its ImageScan {} activities + {} local, {} timers",
        parent.activities,
        parent.local_activities,
        parent.timers,
        entity.activities,
        entity.local_activities,
        entity.timers
    );
    println!("  Qualys calls           {calls} (emulated, instant; warm-up included)");
    for (name, p) in [
        ("ScanOnDeploy", &scans),
        (&*format!("BenchNoop x{steps}"), &noops),
    ] {
        println!(
            "  {name:<22} {:.2} s, {:.1} workflows/s, start -> result p50 {} ms, p99 {} ms",
            p.wall.as_secs_f64(),
            p.per_sec(),
            percentile(&p.latencies, 50.0),
            percentile(&p.latencies, 99.0)
        );
    }
    println!(
        "  ratio                  {:.2} (ScanOnDeploy time / the same activities doing nothing)",
        scans.wall.as_secs_f64() / noops.wall.as_secs_f64()
    );
    Ok(())
}
