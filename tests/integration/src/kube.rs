//! A real Kubernetes API server for tests: etcd 3.4 and kube-apiserver 1.20, installed by
//! `scripts/kube-testbed` (found through `QFLOWS_ETCD` / `QFLOWS_KUBE_APISERVER`), each server on
//! free loopback ports in its own temporary directory, so tests can run several side by side.
//!
//! Only the API server runs (no scheduler, controllers or kubelet): objects are stored, validated
//! and served as in a cluster, but pods never start and namespaces never finish deleting.
//! API level 1.20: no CEL validation rules, unknown fields of custom resources are pruned silently.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let server = qflows_integration::kube::KubeApiServer::start().await?;
//! server.install_tetragon_crds().await?;
//! let client = server.client().await?;
//! # Ok(()) }
//! ```

use crate::free_port;
use ::kube::api::{Api, ApiResource, GroupVersionKind, Patch, PatchParams};
use anyhow::{Context, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The context name in the kubeconfig [`KubeApiServer`] writes.
pub const CONTEXT: &str = "qflows-test";

/// The field manager [`KubeApiServer::install_tetragon_crds`] applies the CRDs with.
const CRD_FIELD_MANAGER: &str = "qflows-tests";

/// Tetragon's CRD files, in `activities/tetragon/crds/` (the validator embeds the same files).
const TETRAGON_CRD_FILES: [&str; 2] = [
    "cilium.io_tracingpolicies.yaml",
    "cilium.io_tracingpoliciesnamespaced.yaml",
];

/// How long etcd, the API server's self-signed certificate, the API server's `/readyz` and a
/// CRD's `Established` condition may take (generous: a 2-core CI machine may start several
/// servers at once while compiling).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Interval between two probes of a condition.
const POLL: Duration = Duration::from_millis(100);

/// Tetragon's cluster-scoped `TracingPolicy` (`cilium.io/v1alpha1`), for `Api<DynamicObject>`.
pub fn tracing_policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v1alpha1", "TracingPolicy"),
        "tracingpolicies",
    )
}

/// Tetragon's namespaced `TracingPolicyNamespaced` (`cilium.io/v1alpha1`), for `Api<DynamicObject>`.
pub fn tracing_policy_namespaced_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v1alpha1", "TracingPolicyNamespaced"),
        "tracingpoliciesnamespaced",
    )
}

/// A running etcd + kube-apiserver pair, with a kubeconfig for a `system:masters` token.
///
/// Dropping it kills both processes (API server first), waits until they are gone and removes
/// the temporary directory. Each process also runs under a guard that kills it when the test
/// process dies without running destructors, so no etcd outlives its test.
pub struct KubeApiServer {
    // Field order is drop order: the API server, then etcd, then the directory.
    _apiserver: Guarded,
    _etcd: Guarded,
    dir: ScratchDir,
    kubeconfig: PathBuf,
    url: String,
    etcd_url: String,
    token: String,
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver on free ports in a new temporary directory, waits until
    /// the API server's `/readyz` answers 200 and writes the kubeconfig.
    ///
    /// Fails with a pointer to `scripts/kube-testbed` when the binaries are not installed.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// [`KubeApiServer::start`] with more kube-apiserver flags, e.g.
    /// `--feature-gates=EphemeralContainers=true` (alpha, off by default in 1.20).
    pub async fn start_with(extra_args: &[&str]) -> anyhow::Result<Self> {
        let etcd = binary("QFLOWS_ETCD")?;
        let apiserver = binary("QFLOWS_KUBE_APISERVER")?;
        // A free port can be taken by someone else between our probe and the server's bind
        // (parallel tests): start over on fresh ports then.
        let mut attempt = 1;
        loop {
            match Self::try_start(&etcd, &apiserver, extra_args).await {
                Err(e) if attempt < 3 && e.downcast_ref::<PortTaken>().is_some() => attempt += 1,
                result => return result,
            }
        }
    }

    async fn try_start(
        etcd_bin: &Path,
        apiserver_bin: &Path,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = ScratchDir::new()?;
        let root = dir.path();

        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Guarded::spawn(
            "etcd",
            Command::new(etcd_bin)
                .args(["--name", "qflows-test", "--data-dir"])
                .arg(root.join("etcd"))
                .args(["--listen-client-urls", &etcd_url])
                .args(["--advertise-client-urls", &etcd_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("qflows-test={peer_url}")])
                .args(["--log-level", "warn", "--logger", "zap"]),
            root.join("etcd.log"),
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let health = format!("{etcd_url}/health");
        wait_until("etcd /health", &mut [&mut etcd], || async {
            let body = http.get(&health).send().await.ok()?.text().await.ok()?;
            body.contains(r#""health":"true""#).then_some(())
        })
        .await?;

        let key = root.join("service-account.key");
        let out = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .context("running the openssl CLI (for the service-account signing key)")?;
        ensure!(
            out.status.success(),
            "openssl genrsa failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = random_token()?;
        let tokens = root.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{token},qflows-admin,qflows-admin,\"system:masters\"\n"),
        )?;

        let port = free_port();
        let certs = root.join("certs");
        let mut apiserver = Guarded::spawn(
            "kube-apiserver",
            Command::new(apiserver_bin)
                .args(["--etcd-servers", &etcd_url])
                .args([
                    "--bind-address",
                    "127.0.0.1",
                    "--advertise-address",
                    "127.0.0.1",
                ])
                .args(["--secure-port", &port.to_string()])
                .arg("--cert-dir")
                .arg(&certs)
                .arg("--token-auth-file")
                .arg(&tokens)
                .args(["--authorization-mode", "RBAC"])
                .arg("--service-account-key-file")
                .arg(&key)
                .arg("--service-account-signing-key-file")
                .arg(&key)
                .args(["--service-account-issuer", "https://kubernetes.default.svc"])
                .args(["--service-cluster-ip-range", "10.0.0.0/24"])
                .args(["--disable-admission-plugins", "ServiceAccount"])
                .args(["--enable-priority-and-fairness=false", "--profiling=false"])
                .args(extra_args),
            root.join("kube-apiserver.log"),
        )?;

        // --cert-dir: the API server writes a self-signed serving certificate (127.0.0.1 among
        // its addresses) followed by its CA before it serves.
        let served = certs.join("apiserver.crt");
        let ca_pem = wait_until(
            "kube-apiserver's self-signed certificate",
            &mut [&mut apiserver, &mut etcd],
            || async {
                let pem = std::fs::read_to_string(&served).ok()?;
                let blocks = pem_certificates(&pem);
                (blocks.len() == 2).then(|| blocks[1].clone())
            },
        )
        .await?;
        let ca = root.join("ca.crt");
        std::fs::write(&ca, &ca_pem)?;

        let url = format!("https://127.0.0.1:{port}");
        let https = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
            .timeout(Duration::from_secs(5))
            .build()?;
        let readyz = format!("{url}/readyz");
        wait_until(
            "kube-apiserver /readyz",
            &mut [&mut apiserver, &mut etcd],
            || async {
                let response = https.get(&readyz).bearer_auth(&token).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await?;

        let kubeconfig = root.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: qflows-test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: qflows-admin
  user:
    token: {token}
contexts:
- name: {CONTEXT}
  context:
    cluster: qflows-test
    user: qflows-admin
current-context: {CONTEXT}
",
                ca = ca.display()
            ),
        )?;
        Ok(Self {
            _apiserver: apiserver,
            _etcd: etcd,
            dir,
            kubeconfig,
            url,
            etcd_url,
            token,
        })
    }

    /// The kubeconfig file: one cluster (with the server's CA), one user (the token), one
    /// context, [`CONTEXT`], which is also the current context.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig's context name, [`CONTEXT`].
    pub fn context(&self) -> &str {
        CONTEXT
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token of a user in group `system:masters`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// etcd's client URL, `http://127.0.0.1:PORT`.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The server's temporary directory (kubeconfig, certificates, `etcd.log`,
    /// `kube-apiserver.log`); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client built from the kubeconfig file and its context, as users' tools would.
    pub async fn client(&self) -> anyhow::Result<::kube::Client> {
        // The workspace links both of rustls' providers (ring for kube, aws-lc-rs for the AWS
        // SDK), so rustls cannot pick one itself; an already installed one is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = ::kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let options = ::kube::config::KubeConfigOptions {
            context: Some(CONTEXT.into()),
            ..Default::default()
        };
        let config = ::kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        Ok(::kube::Client::try_from(config)?)
    }

    /// Installs Tetragon's `TracingPolicy` and `TracingPolicyNamespaced` CRDs (this crate's
    /// `activities/tetragon/crds/`), minus what a 1.20 API server does not know, by server-side apply, and
    /// waits until both are `Established`.
    pub async fn install_tetragon_crds(&self) -> anyhow::Result<()> {
        self.install_crds(tetragon_crds_for_1_20()?).await
    }

    /// Installs KEDA's `ScaledObject` CRD ([`keda_scaled_object_crd`]) and waits until it is
    /// `Established`.
    pub async fn install_keda_crd(&self) -> anyhow::Result<()> {
        self.install_crds(vec![keda_scaled_object_crd()?]).await
    }

    /// Applies `crds` (server-side) and waits until each is `Established`.
    async fn install_crds(&self, crds: Vec<Value>) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let mut names = Vec::new();
        for crd in crds {
            let name = crd["metadata"]["name"]
                .as_str()
                .context("CRD without metadata.name")?
                .to_owned();
            api.patch(
                &name,
                &PatchParams::apply(CRD_FIELD_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))?;
            names.push(name);
        }
        for name in names {
            crate::wait_for(
                &format!("CRD {name} to be Established"),
                START_TIMEOUT,
                || async {
                    let crd = api.get(&name).await.ok()?;
                    let conditions = crd.status?.conditions?;
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// KEDA's `ScaledObject` CRD as vendored in `tests/integration/crds/` (KEDA 2.20.2, see the
/// README there), minus what a 1.20 API server does not know (its CEL rule).
pub fn keda_scaled_object_crd() -> anyhow::Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/keda.sh_scaledobjects.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut crd: Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    strip_for_1_20(&mut crd);
    Ok(crd)
}

/// Tetragon's CRDs as JSON values, without what kube-apiserver 1.20 rejects: the CEL rules
/// (`x-kubernetes-validations`, unknown to 1.20's schema, which server-side apply refuses) and
/// `default: ""` (1.20 rejects those defaults).
pub fn tetragon_crds_for_1_20() -> anyhow::Result<Vec<Value>> {
    // The same files the policy validator embeds: one copy in the repository.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../activities/tetragon/crds");
    TETRAGON_CRD_FILES
        .iter()
        .map(|file| {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut crd: Value = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            strip_for_1_20(&mut crd);
            Ok(crd)
        })
        .collect()
}

/// Removes every `x-kubernetes-validations` key and every `default: ""`.
fn strip_for_1_20(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            if map.get("default").and_then(Value::as_str) == Some("") {
                map.remove("default");
            }
            map.values_mut().for_each(strip_for_1_20);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_for_1_20),
        _ => {}
    }
}

/// The path in `variable`, which must be an existing file.
fn binary(variable: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(variable).map(PathBuf::from).with_context(|| {
        format!(
            "{variable} is not set: run scripts/kube-testbed (`eval \"$(scripts/kube-testbed --env)\"` \
             sets it; scripts/test does)"
        )
    })?;
    if !path.is_file() {
        bail!(
            "{variable}={} does not exist: run scripts/kube-testbed",
            path.display()
        );
    }
    Ok(path)
}

/// A random hex token from /dev/urandom.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The PEM `CERTIFICATE` blocks of `pem` that are complete.
fn pem_certificates(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        blocks.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    blocks
}

/// Polls `probe` until it returns `Some`, failing early (with the end of their logs) when one of
/// `processes` exits, and after [`START_TIMEOUT`].
async fn wait_until<T, F, Fut>(
    what: &str,
    processes: &mut [&mut Guarded],
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        for process in processes.iter_mut() {
            if let Some(status) = process.exited()? {
                let log = process.log_tail();
                if log.contains("address already in use") {
                    return Err(anyhow::Error::new(PortTaken).context(format!(
                        "{} exited ({status}): a port was taken\n{log}",
                        process.name
                    )));
                }
                bail!(
                    "{} exited ({status}) while waiting for {what}; its log ends:\n{log}",
                    process.name
                );
            }
        }
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = processes
                .iter()
                .map(|p| format!("{} log ends:\n{}", p.name, p.log_tail()))
                .collect();
            bail!(
                "timed out after {START_TIMEOUT:?} waiting for {what}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A server failed to bind a port that was free a moment before; [`KubeApiServer::start`]
/// retries on fresh ports.
#[derive(Debug)]
struct PortTaken;

impl std::fmt::Display for PortTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("address already in use")
    }
}

impl std::error::Error for PortTaken {}

/// The guard a server runs under: `sh -c GUARD sh PROGRAM ARGS…`. It starts the server, and a
/// watcher that SIGKILLs it as soon as the guard's stdin reaches end of file, which happens when
/// [`Guarded`] closes it, or when the test process dies in any way (the kernel closes the pipe).
/// The guard exits with the server's status once the server is gone.
const GUARD: &str = r#"exec 3<&0
"$@" </dev/null 3<&- &
server=$!
{ cat <&3 >/dev/null; kill -9 "$server" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$server"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

/// A server process under [`GUARD`]; stopping it (on drop) kills the server and waits for it.
struct Guarded {
    name: &'static str,
    guard: Child,
    log: PathBuf,
}

impl Guarded {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log)?;
        let mut guarded = Command::new("sh");
        guarded
            .args(["-c", GUARD, "sh"])
            .arg(command.get_program())
            .args(command.get_args())
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out);
        let guard = guarded
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self { name, guard, log })
    }

    /// The server's exit status, if it has exited.
    fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.guard.try_wait()?)
    }

    /// The last lines of the server's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // End of file on the guard's stdin: it SIGKILLs the server, reaps it and exits.
        drop(self.guard.stdin.take());
        let _ = self.guard.wait();
    }
}

/// The prefix of [`ScratchDir`]s: `qflows-kubetest-PID-N`.
const SCRATCH_PREFIX: &str = "qflows-kubetest-";

/// A new directory under the system's temporary directory, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let temp = std::env::temp_dir();
        // Directories of test processes that died without running destructors (their servers
        // died with them, see GUARD): remove them once per process.
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| sweep_dead_scratch_dirs(&temp));
        let path = temp.join(format!(
            "{SCRATCH_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes the [`ScratchDir`]s under `temp` whose process no longer exists.
fn sweep_dead_scratch_dirs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
