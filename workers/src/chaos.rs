//! `qflows bench chaos`: deploy events through the bridge while the worker is SIGKILLed again and
//! again and the Temporal dev server is restarted once — then count what was lost or doubled.
//!
//! Everything is real and on this machine: a dev server with its database on disk
//! (`--db-filename`), the Qualys emulator, the bridge, and `qflows worker` as a child process
//! that is killed with SIGKILL (no drain, no goodbye) at random moments and started again.
//! Senders behave like EventBridge: they deliver again until the bridge answers 2xx.

use crate::bench::{event, free_port};
use crate::bridge::{Bridge, BridgeArgs};
use crate::config::TemporalArgs;
use crate::dev::{find_temporal, start_temporal};
use clap::Args;
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::ImageStatus;
use qualys_emulator::{Emulator, EmulatorConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use temporalio_client::WorkflowGetResultOptions;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// Flags of `qflows bench chaos`.
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

const KEY: &str = "chaos-bridge-key-0123456789";
const TASK_QUEUE: &str = "qflows-chaos";

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
    let db = dir.join("temporal.db");
    let temporal_cli = find_temporal(args.temporal_bin.as_deref())?;
    let port = free_port()?;
    let mut temporal = start_temporal(&temporal_cli.path, port, None, Some(&db)).await?;

    let config = EmulatorConfig {
        scan_delay_ms: args.scan_delay_ms,
        ..EmulatorConfig::default()
    };
    let (username, password) = (config.username.clone(), config.password.clone());
    let emulator = Emulator::start(config, ([127, 0, 0, 1], 0).into()).await?;

    let address = format!("127.0.0.1:{port}");
    let mut worker = WorkerProcess {
        env: [
            ("TEMPORAL_ADDRESS", address.as_str()),
            ("TEMPORAL_NAMESPACE", "default"),
            ("QFLOWS_TASK_QUEUE", TASK_QUEUE),
            ("QFLOWS_METRICS_LISTEN", "off"),
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
        .collect(),
        log: dir.join("worker.log"),
        child: None,
        starts: 0,
    };
    worker.spawn()?;

    let temporal_args = TemporalArgs {
        address: Some(address.clone()),
        namespace: Some("default".into()),
        profile: None,
    };
    let key_file = dir.join("bridge.key");
    std::fs::write(&key_file, KEY)?;
    let bridge = Bridge::start(
        temporal_args.clone(),
        BridgeArgs {
            listen: "127.0.0.1:0".parse()?,
            key_file: Some(key_file),
            api_key_header: "x-api-key".into(),
            max_body_bytes: 1024 * 1024,
            start_timeout_secs: 4,
            sqs_queue_url: None,
            task_queue: TASK_QUEUE.into(),
        },
        std::future::pending(),
    )
    .await?;
    let url = format!("http://{}/events/aws", bridge.addr);

    let began = Instant::now();
    // Senders: every event delivered until the bridge answers 2xx, as EventBridge retries.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let redeliveries = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();
    let senders: Vec<_> = (0..50)
        .map(|_| {
            let (accepted, redeliveries, next, http, url) = (
                accepted.clone(),
                redeliveries.clone(),
                next.clone(),
                http.clone(),
                url.clone(),
            );
            let (events, digests, rate) = (args.events, args.digests, args.events_per_sec.max(1));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= events {
                        break;
                    }
                    let due = began + Duration::from_millis(i as u64 * 1000 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    loop {
                        let answer = http
                            .post(&url)
                            .header("x-api-key", KEY)
                            .json(&event(i, digests))
                            .send()
                            .await;
                        match answer {
                            Ok(r) if r.status().is_success() => {
                                accepted.lock().await.push(format!("deploy-aws-bench-{i}"));
                                break;
                            }
                            _ => {
                                redeliveries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(250)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();

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
            temporal = start_temporal(&temporal_cli.path, port, None, Some(&db)).await?;
            temporal_restarts += 1;
        }
    }
    for sender in senders {
        sender.await?;
    }
    let delivered_at = began.elapsed();

    // Let it finish; a worker that died by itself is started again.
    let client = crate::temporal::connect(&temporal_args, "qflows-chaos").await?;
    let accepted = accepted.lock().await.clone();
    let deadline = Instant::now() + Duration::from_secs(args.deadline_secs);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut revived = 0;
    for id in &accepted {
        loop {
            if worker.revive()? {
                revived += 1;
            }
            let handle = client.get_workflow_handle::<ScanOnDeploy>(id.clone());
            let wait = handle.get_result(WorkflowGetResultOptions::default());
            // Past the deadline, only look: don't wait per workflow.
            let patience = if Instant::now() < deadline {
                Duration::from_secs(5)
            } else {
                Duration::from_millis(100)
            };
            match tokio::time::timeout(patience, wait).await {
                Ok(Ok(output)) => {
                    let all_scanned = output
                        .images
                        .iter()
                        .all(|i| i.status == ImageStatus::Scanned);
                    let label = if all_scanned {
                        "completed, scanned"
                    } else {
                        "completed, not scanned"
                    };
                    *outcomes.entry(label.into()).or_default() += 1;
                    break;
                }
                Ok(Err(e)) => {
                    *outcomes.entry(format!("failed: {e}")).or_default() += 1;
                    break;
                }
                Err(_) if Instant::now() < deadline => continue,
                Err(_) => {
                    *outcomes
                        .entry("not finished by the deadline".into())
                        .or_default() += 1;
                    break;
                }
            }
        }
    }
    let elapsed = began.elapsed();

    let schedules = emulator.schedules();
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

    println!("qflows bench chaos");
    println!("  events                 {}", args.events);
    println!("  unique digests         {}", args.digests);
    println!(
        "  worker SIGKILLs        {} (at {})",
        kill_times.len(),
        kill_times
            .iter()
            .map(|t| format!("{t:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  worker starts          {} ({revived} after exiting by itself)",
        worker.starts
    );
    println!("  Temporal restarts      {temporal_restarts}");
    println!(
        "  bridge redeliveries    {}",
        redeliveries.load(Ordering::Relaxed)
    );
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

    if let Some(mut child) = worker.child.take() {
        let _ = child.kill().await;
    }
    let _ = temporal.kill().await;
    emulator.shutdown().await;
    let ok = lost == 0
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

fn display(path: &Path) -> String {
    path.display().to_string()
}
