//! `qflows-bench admission`: how fast `qflows admission` answers the API server.
//!
//! Everything is real and on this machine: an in-memory Temporal dev server, the Qualys emulator,
//! the qflows worker in this process, and the `qflows admission` binary as its own process,
//! serving HTTPS with a certificate from files (a CA made here). The benchmark
//!
//! 1. has `--digests` images scanned (ScanOnDeploy over ECR push events; every other image has
//!    a critical finding, so under the `deny` profile half are denied and half admitted);
//! 2. sends one warm-up AdmissionReview per scanned image (each digest's entity result is then
//!    in the webhook's cache);
//! 3. **cached**: sends `--requests` Pod AdmissionReviews over those digests, from
//!    `--concurrency` clients over kept-alive HTTPS connections (as the API server does);
//! 4. **unknown**: sends `--requests` Pods whose image is a digest never seen before (pushed to
//!    the emulated registry, not scanned): the webhook asks the entity, finds no result, starts
//!    its scan and answers with the profile's `unscanned` rule.
//!
//! For each phase it prints requests, answers/s, p50/p99/max latency as the client measured
//! it (request sent to answer read), and the webhook's own decision counts
//! (`qflows_admission_decisions_total`, read from its metrics before and after). Nothing is
//! asserted about speed; it fails only if an answer is not an AdmissionReview response.

use crate::scan::{BenchEnv, free_port, percentile};
use clap::Args;
use futures::future::join_all;
use qflows::worker;
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::{ImageStatus, ScanOnDeployOutput, Verdict};
use qualys_emulator::{EmulatorConfig, PushedImage};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};
use tokio::process::{Child, Command};

/// Flags of `qflows-bench admission`.
#[derive(Debug, Clone, Args)]
pub struct BenchAdmissionArgs {
    /// Images scanned before the cached phase (its requests cycle over them).
    #[arg(long, default_value_t = 50)]
    pub digests: usize,
    /// AdmissionReviews sent in each phase (cached, then unknown images).
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Concurrent clients (each waits for its answer before sending the next).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// `QFLOWS_ADMISSION_TIMEOUT_MS` of the webhook.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// How long the emulated Qualys takes to scan an image.
    #[arg(long, default_value_t = 500)]
    pub scan_delay_ms: u64,
    /// The `qflows` binary (default: next to this one, as cargo builds them).
    #[arg(long)]
    pub qflows_bin: Option<PathBuf>,
    /// The `temporal` CLI (default: PATH, then .venv).
    #[arg(long, env = "QFLOWS_TEMPORAL_BIN")]
    pub temporal_bin: Option<PathBuf>,
}

const TASK_QUEUE: &str = "qflows-bench";
const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const NAMESPACE: &str = "prod";

/// The webhook's gate profiles: `production` denies failing images in namespace `prod` and
/// admits (audits) images not scanned yet.
const PROFILES: &str = r#"
profiles:
  production:
    failSeverity: 5
    enforce: deny
    unscanned: audit
selectors:
  - profile: production
    match: {namespace: prod}
"#;

/// Scanned image `d`: `bench/app-<d>:v1@sha256:…`, a critical finding when `d` is odd.
fn scanned_image(d: usize) -> PushedImage {
    let severity = if d % 2 == 1 { 5 } else { 2 };
    PushedImage {
        registry: REGISTRY.into(),
        repository: format!("bench/app-{d}"),
        tag: "v1".into(),
        digest: format!("sha256:{d:012x}{}", "0".repeat(52)),
        vulnerabilities: vec![json!({
            "qid": 379_952 + d as u64, "severity": severity, "title": "bench finding",
            "cveIds": [format!("CVE-2026-{:05}", d)]
        })],
    }
}

/// Unknown image `u`: a digest no one scanned (pushed to the registry only).
fn unknown_image(u: usize) -> PushedImage {
    PushedImage {
        registry: REGISTRY.into(),
        repository: format!("bench/new-{u}"),
        tag: "v1".into(),
        digest: format!("sha256:{u:012x}{}", "e".repeat(52)),
        vulnerabilities: Vec::new(),
    }
}

fn reference(image: &PushedImage) -> String {
    format!(
        "{}/{}:{}@{}",
        image.registry, image.repository, image.tag, image.digest
    )
}

/// The ECR push event of a scanned image (ScanOnDeploy's input).
fn push_event(image: &PushedImage, i: usize) -> Value {
    json!({
        "version": "0", "id": format!("bench-admission-{i}"), "detail-type": "ECR Image Action",
        "source": "aws.ecr", "account": "123456789012", "region": "us-east-1",
        "time": "2026-11-22T00:00:00Z", "resources": [],
        "detail": {"result": "SUCCESS", "action-type": "PUSH",
                   "repository-name": image.repository, "image-tag": image.tag,
                   "image-digest": image.digest}
    })
}

/// A Pod CREATE review, as the API server sends it.
fn pod_review(uid: &str, image: &str) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": NAMESPACE, "name": format!("pod-{uid}"),
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("pod-{uid}"), "namespace": NAMESPACE,
                             "labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            },
            "dryRun": false
        }
    })
    .to_string()
}

/// What one phase measured.
struct Phase {
    name: &'static str,
    requests: usize,
    elapsed: Duration,
    /// Client-side latencies, µs, sorted.
    latencies: Vec<u64>,
    /// Answers `allowed: false`.
    refused: usize,
    /// The webhook's decisions during the phase (metric deltas).
    decisions: BTreeMap<String, u64>,
    /// Unknown images: `ImageScan` entities that exist afterwards, and how long after the
    /// phase's last answer.
    scans_started: Option<(usize, Duration)>,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchAdmissionArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.digests > 0 && args.requests > 0 && args.concurrency > 0,
        "--digests, --requests and --concurrency must be positive"
    );
    let qflows_bin = match &args.qflows_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("qflows"))
            .unwrap_or_default(),
    };
    anyhow::ensure!(
        qflows_bin.is_file(),
        "{} not found: build it (`cargo build -p qflows -p qflows-bench`, same profile) or give \
         --qflows-bin",
        qflows_bin.display()
    );
    let env = BenchEnv::start(
        args.temporal_bin.as_deref(),
        EmulatorConfig {
            scan_delay_ms: args.scan_delay_ms,
            ..EmulatorConfig::default()
        },
    )
    .await?;
    let scanned: Vec<PushedImage> = (0..args.digests).map(scanned_image).collect();
    let unknown: Vec<PushedImage> = (0..args.requests).map(unknown_image).collect();
    for image in scanned.iter().chain(&unknown) {
        env.emulator.push_image(image.clone());
    }
    let BenchEnv {
        temporal,
        emulator,
        config,
        results,
        _server,
    } = env;
    let dir = std::env::temp_dir().join(format!("qflows-bench-admission-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = worker::run(config, async move {
        let _ = stop_rx.await;
    });
    let load = async {
        let client = qflows::temporal::connect(&temporal, "qflows-bench").await?;
        let began = Instant::now();
        let verdicts = scan_all(&client, &scanned).await?;
        println!(
            "scanned {} images in {:.1} s: {verdicts:?}",
            scanned.len(),
            began.elapsed().as_secs_f64()
        );
        let address = temporal
            .address
            .clone()
            .unwrap_or_else(|| "127.0.0.1:7233".into());
        let (mut admission, port, metrics_addr, ca_pem) =
            start_admission(&qflows_bin, &dir, &address, &results, args.timeout_ms).await?;
        let target = Target {
            url: format!("https://127.0.0.1:{port}/validate"),
            metrics_addr,
            ca_pem,
        };
        let measured = measure(&args, &client, &target, &scanned, &unknown).await;
        let _ = admission.kill().await;
        measured
    };
    let (worker_result, phases) = tokio::join!(worker, async {
        let r = load.await;
        let _ = stop_tx.send(());
        r
    });
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&results);
    let phases = phases.map_err(|e| e.context(format!("logs in {}", dir.display())))?;
    worker_result?;
    print(&args, &phases);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// ScanOnDeploy for every image, 25 at a time; the verdicts the worker gave.
async fn scan_all(
    client: &temporalio_client::Client,
    images: &[PushedImage],
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut verdicts = BTreeMap::new();
    for (n, chunk) in images.chunks(25).enumerate() {
        let runs = chunk.iter().enumerate().map(|(k, image)| async move {
            let i = n * 25 + k;
            let id = format!("bench-admission-{i}");
            let handle = client
                .start_workflow(
                    ScanOnDeploy::run,
                    push_event(image, i),
                    WorkflowStartOptions::new(TASK_QUEUE, &id).build(),
                )
                .await?;
            let out: ScanOnDeployOutput = handle
                .get_result(WorkflowGetResultOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("{id}: {e:?}"))?;
            anyhow::Ok(out)
        });
        for out in join_all(runs).await {
            let out = out?;
            for image in &out.images {
                anyhow::ensure!(
                    image.status == ImageStatus::Scanned,
                    "{} was not scanned: {image:?}",
                    image.image
                );
                let verdict = match image.verdict {
                    Some(Verdict::Pass) => "pass",
                    Some(Verdict::Fail) => "fail",
                    Some(Verdict::Audit) => "audit",
                    None => "none",
                };
                *verdicts.entry(verdict.to_string()).or_default() += 1;
            }
        }
    }
    Ok(verdicts)
}

/// Starts `qflows admission` (its own process, HTTPS) and waits until it listens.
async fn start_admission(
    bin: &Path,
    dir: &Path,
    temporal: &str,
    results: &Path,
    timeout_ms: u64,
) -> anyhow::Result<(Child, u16, String, String)> {
    let certs = crate::certs::write(&dir.join("tls"))?;
    let profiles = dir.join("profiles.yaml");
    std::fs::write(&profiles, PROFILES)?;
    let (port, metrics_port) = (free_port()?, free_port()?);
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let log_path = dir.join("admission.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(bin)
        .arg("admission")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("TEMPORAL_ADDRESS", temporal)
        .env("TEMPORAL_NAMESPACE", "default")
        .env("QFLOWS_TASK_QUEUE", TASK_QUEUE)
        .env("QFLOWS_RESULTS", results)
        .env("QFLOWS_GATE_PROFILES_FILE", &profiles)
        .env("QFLOWS_ADMISSION_LISTEN", format!("127.0.0.1:{port}"))
        .env("QFLOWS_ADMISSION_METRICS_ADDR", &metrics_addr)
        .env("QFLOWS_ADMISSION_TLS_CERT_FILE", &certs.cert_file)
        .env("QFLOWS_ADMISSION_TLS_KEY_FILE", &certs.key_file)
        .env("QFLOWS_ADMISSION_TIMEOUT_MS", timeout_ms.to_string())
        // Longer than the run: the cached phase measures cache hits, not expiries.
        .env("QFLOWS_ADMISSION_CACHE_TTL_SECS", "3600")
        .env("QFLOWS_KUBERNETES_CLUSTER", "bench")
        .env("QFLOWS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let began = Instant::now();
    loop {
        let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
        if logs.contains("qflows admission listening") {
            break;
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(30),
            "qflows admission did not start within 30 s:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((child, port, metrics_addr, certs.ca_pem))
}

/// The webhook's decision counters, by `decision/profile`.
async fn decisions(
    http: &reqwest::Client,
    metrics_addr: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("qflows_admission_decisions_total{") else {
            continue;
        };
        let Some((labels, n)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        counts.insert(
            format!("{}/{}", label("decision"), label("profile")),
            n.trim().parse().unwrap_or(0),
        );
    }
    Ok(counts)
}

/// The running webhook, as the benchmark reaches it.
struct Target {
    /// `https://…/validate`.
    url: String,
    /// Its plain-HTTP metrics address.
    metrics_addr: String,
    /// The CA that signed its certificate (the client trusts only it).
    ca_pem: String,
}

async fn measure(
    args: &BenchAdmissionArgs,
    client: &temporalio_client::Client,
    target: &Target,
    scanned: &[PushedImage],
    unknown: &[PushedImage],
) -> anyhow::Result<Vec<Phase>> {
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(target.ca_pem.as_bytes())?)
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let plain = reqwest::Client::new();
    let (url, metrics_addr) = (target.url.as_str(), target.metrics_addr.as_str());

    // Warm-up: every scanned digest once (its result is cached afterwards), and the
    // connections opened.
    let warm: Vec<String> = scanned.iter().map(reference).collect();
    send_all(&https, url, "warm", &warm, args.concurrency).await?;

    let mut phases = Vec::new();
    let cached: Vec<String> = (0..args.requests)
        .map(|i| reference(&scanned[i % scanned.len()]))
        .collect();
    let fresh: Vec<String> = unknown.iter().map(reference).collect();
    for (name, images) in [("cached verdicts", cached), ("unknown images", fresh)] {
        let before = decisions(&plain, metrics_addr).await?;
        let began = Instant::now();
        let (mut latencies, refused) =
            send_all(&https, url, name, &images, args.concurrency).await?;
        let elapsed = began.elapsed();
        let after = decisions(&plain, metrics_addr).await?;
        latencies.sort_unstable();
        let decisions = after
            .into_iter()
            .map(|(k, n)| {
                let delta = n - before.get(&k).copied().unwrap_or(0);
                (k, delta)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        phases.push(Phase {
            name,
            requests: images.len(),
            elapsed,
            latencies,
            refused,
            decisions,
            scans_started: None,
        });
    }
    // The webhook starts unknown digests' scans after answering (fire-and-forget): how many
    // entities exist, and how long after the last answer they all did.
    let expected = scanned.len() + unknown.len();
    let began = Instant::now();
    let started = loop {
        let n = client
            .count_workflows(
                "WorkflowType = 'ImageScan'",
                temporalio_client::WorkflowCountOptions::default(),
            )
            .await?
            .count();
        if n >= expected || began.elapsed() > Duration::from_secs(60) {
            break n.saturating_sub(scanned.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Some(last) = phases.last_mut() {
        last.scans_started = Some((started, began.elapsed()));
    }
    Ok(phases)
}

/// Sends one review per image from `concurrency` clients; each answer's latency (µs) and how
/// many were refused.
async fn send_all(
    https: &reqwest::Client,
    url: &str,
    phase: &str,
    images: &[String],
    concurrency: usize,
) -> anyhow::Result<(Vec<u64>, usize)> {
    let next = Arc::new(AtomicUsize::new(0));
    let clients = (0..concurrency).map(|_| {
        let next = next.clone();
        async move {
            let (mut latencies, mut refused) = (Vec::new(), 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(image) = images.get(i) else {
                    break;
                };
                let uid = format!("{}-{i}", phase.replace(' ', "-"));
                let body = pod_review(&uid, image);
                let began = Instant::now();
                let response = https
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let answer: Value = response.json().await?;
                latencies.push(began.elapsed().as_micros() as u64);
                anyhow::ensure!(
                    status.is_success() && answer["response"]["uid"] == uid.as_str(),
                    "{phase} request {i}: {status} {answer}"
                );
                if answer["response"]["allowed"] != true {
                    refused += 1;
                }
            }
            anyhow::Ok((latencies, refused))
        }
    });
    let (mut all, mut refused) = (Vec::with_capacity(images.len()), 0);
    for r in join_all(clients).await {
        let (l, n) = r?;
        all.extend(l);
        refused += n;
    }
    Ok((all, refused))
}

fn ms(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

fn print(args: &BenchAdmissionArgs, phases: &[Phase]) {
    println!("qflows-bench admission");
    println!("  webhook                `qflows admission` process, HTTPS, Pod AdmissionReviews v1");
    println!("  scanned digests        {}", args.digests);
    println!(
        "  concurrency            {} clients (kept-alive connections)",
        args.concurrency
    );
    println!("  QFLOWS_ADMISSION_TIMEOUT_MS {}", args.timeout_ms);
    for p in phases {
        let secs = p.elapsed.as_secs_f64();
        println!("  {}:", p.name);
        println!("    requests             {}", p.requests);
        println!("    answers/s            {:.0}", p.requests as f64 / secs);
        println!(
            "    latency              p50 {}, p99 {}, max {}",
            ms(percentile(&p.latencies, 50.0)),
            ms(percentile(&p.latencies, 99.0)),
            ms(p.latencies.last().copied().unwrap_or(0))
        );
        println!("    refused              {}", p.refused);
        let decisions: Vec<String> = p
            .decisions
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("    decisions            {}", decisions.join(", "));
        if let Some((n, after)) = p.scans_started {
            println!(
                "    scans started        {n} of {} ({:.1} s after the last answer)",
                p.requests,
                after.as_secs_f64()
            );
        }
    }
}
