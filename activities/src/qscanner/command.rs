//! The exact QScanner command line and environment of a scan (docs/qualys-api.md §4.1–4.3).

use super::error::QScannerError;
use super::job::{QScannerConfig, ScanJob, ScanMode};
use crate::qualys::Secret;
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variables passed through from the worker, besides `PATH`: proxy
/// and CA settings QScanner needs to reach the gateway and the registry. Nothing else of the
/// worker's environment reaches QScanner.
pub const PASSTHROUGH_ENV: [&str; 8] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Names [`ScanJob::extra_env`] may not set: the runner owns them.
pub const RESERVED_ENV: [&str; 8] = [
    "HOME",
    "QUALYS_ACCESS_TOKEN",
    "QUALYS_CLIENT_ID",
    "QUALYS_CLIENT_SECRET",
    "QSCANNER_REGISTRY_USERNAME",
    "QSCANNER_REGISTRY_PASSWORD",
    "QSCANNER_REGISTRY_TOKEN",
    "XDG_CONFIG_HOME",
];

const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A program, its arguments and its whole environment (the process starts from an empty one).
///
/// `Debug` prints variable names and `[redacted]` for every value.
#[derive(Clone)]
pub struct CommandSpec {
    /// The binary.
    pub program: PathBuf,
    /// Arguments, without the program. Never contains a credential.
    pub args: Vec<String>,
    /// The complete environment, in order; a name appears once.
    pub env: Vec<(String, Secret)>,
    /// The working directory (the scan's output directory).
    pub current_dir: PathBuf,
}

impl CommandSpec {
    /// The value of an environment variable of the command.
    pub fn env_value(&self, name: &str) -> Option<&Secret> {
        self.env.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The names of the environment variables, in order.
    pub fn env_names(&self) -> Vec<&str> {
        self.env.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Adds or replaces a variable, keeping names unique.
    fn set(&mut self, name: &str, value: Secret) {
        match self.env.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.env.push((name.to_string(), value)),
        }
    }
}

impl fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Names<'a>(&'a [(String, Secret)]);
        impl fmt::Debug for Names<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(n, _)| (n, "[redacted]")))
                    .finish()
            }
        }
        f.debug_struct("CommandSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &Names(&self.env))
            .field("current_dir", &self.current_dir)
            .finish()
    }
}

/// The region of an ECR image reference, e.g. `us-east-1` for
/// `123456789012.dkr.ecr.us-east-1.amazonaws.com/app@sha256:…`.
pub fn ecr_region(image: &str) -> Option<&str> {
    let host = image.split('/').next()?;
    let mut parts = host.split('.');
    let account = parts.next()?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if parts.next()? != "dkr" {
        return None;
    }
    if !matches!(parts.next()?, "ecr" | "ecr-fips") {
        return None;
    }
    let region = parts.next()?;
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (valid && parts.next()? == "amazonaws").then_some(region)
}

/// The per-scan output directory.
pub(crate) fn output_dir(cfg: &QScannerConfig, job: &ScanJob) -> PathBuf {
    cfg.work_dir.join(&job.scan_id)
}

/// Builds the command with `<work_dir>/<scan_id>` as the output directory and its `tmp/` as
/// `TMPDIR` (what [`super::QScanner::command`] shows; a run uses its own attempt directory).
pub(crate) fn build(cfg: &QScannerConfig, job: &ScanJob) -> CommandSpec {
    let out_dir = output_dir(cfg, job);
    let tmp = out_dir.join("tmp");
    build_in(cfg, job, &out_dir, &tmp)
}

/// Builds the command writing into `out_dir`, with `TMPDIR=tmp`. It does not validate the job:
/// [`validate_job`] does, before running.
pub(crate) fn build_in(
    cfg: &QScannerConfig,
    job: &ScanJob,
    out_dir: &Path,
    tmp: &Path,
) -> CommandSpec {
    let mut spec = CommandSpec {
        program: cfg.binary.clone(),
        args: arguments(cfg, job, out_dir),
        env: Vec::new(),
        current_dir: out_dir.to_path_buf(),
    };
    set_process_env(&mut spec, cfg, tmp);
    set_credentials(&mut spec, cfg, job);
    set_job_env(&mut spec, job);
    spec
}

/// QScanner's argv: platform, scan types, directories, mode, formats, then `image <ref>`.
/// Never a secret: argv is visible to every process on the host.
fn arguments(cfg: &QScannerConfig, job: &ScanJob, out_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let flag = |args: &mut Vec<String>, name: &str, value: String| {
        args.push(name.to_string());
        args.push(value);
    };
    // A gateway URL wins over a POD: it is how emulators and engineering platforms are reached.
    match (&cfg.gateway_url, &cfg.pod) {
        (Some(url), _) => flag(&mut args, "--gateway-url", url.clone()),
        (None, Some(pod)) => flag(&mut args, "--pod", pod.as_str().to_string()),
        (None, None) => {}
    }
    flag(&mut args, "--scan-types", cfg.scan_types.join(","));
    flag(&mut args, "--output-dir", path_arg(out_dir));
    if let Some(cache) = &cfg.cache_dir {
        flag(&mut args, "--cache-dir", path_arg(cache));
    }
    match &job.mode {
        ScanMode::GetReport => flag(&mut args, "--mode", "get-report".to_string()),
        ScanMode::EvaluatePolicy { policy_tags } => {
            flag(&mut args, "--mode", "evaluate-policy".to_string());
            if !policy_tags.is_empty() {
                flag(&mut args, "--policy-tags", policy_tags.join(","));
            }
        }
    }
    // Only what is parsed: the SARIF report, and the JSON inventory (ScanResult).
    flag(&mut args, "--report-format", "sarif".to_string());
    flag(&mut args, "--format", "json".to_string());
    if cfg.offline_scan {
        args.push("--offline-scan=true".to_string());
    }
    flag(&mut args, "--log-level", "info".to_string());
    args.push("image".to_string());
    args.push(job.image.clone());
    args
}

/// `PATH`, `HOME`, `TMPDIR` and the passed-through variables of the worker's environment.
fn set_process_env(spec: &mut CommandSpec, cfg: &QScannerConfig, tmp: &Path) {
    let path = std::env::var("PATH")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    spec.set("PATH", Secret::new(path));
    // FAQ Q7: HOME (or XDG_CONFIG_HOME) must be set; QScanner's defaults live under it.
    spec.set("HOME", Secret::new(path_arg(&cfg.work_dir)));
    // The attempt's own temporary directory, removed with it: never the worker's shared one.
    spec.set("TMPDIR", Secret::new(path_arg(tmp)));
    for name in PASSTHROUGH_ENV {
        if let Ok(value) = std::env::var(name)
            && !value.is_empty()
        {
            spec.set(name, Secret::new(value));
        }
    }
}

/// The Qualys token and the registry credentials.
fn set_credentials(spec: &mut CommandSpec, cfg: &QScannerConfig, job: &ScanJob) {
    // §4.2: the token only ever travels in the environment, never in argv.
    spec.set("QUALYS_ACCESS_TOKEN", cfg.access_token.clone());
    if let Some(reg) = &job.registry {
        if let Some(user) = &reg.username {
            spec.set("QSCANNER_REGISTRY_USERNAME", Secret::new(user.clone()));
        }
        if let Some(password) = &reg.password {
            spec.set("QSCANNER_REGISTRY_PASSWORD", password.clone());
        }
        if let Some(token) = &reg.token {
            spec.set("QSCANNER_REGISTRY_TOKEN", token.clone());
        }
    }
}

/// The ECR region (unless the job gives one) and the job's own variables, except reserved ones.
fn set_job_env(spec: &mut CommandSpec, job: &ScanJob) {
    // §4.3: for ECR, QScanner uses the AWS SDK, which needs the region.
    let has_region = job
        .extra_env
        .iter()
        .any(|(n, _)| n == "AWS_REGION" || n == "AWS_DEFAULT_REGION");
    if !has_region && let Some(region) = ecr_region(&job.image) {
        spec.set("AWS_REGION", Secret::new(region));
    }
    for (name, value) in &job.extra_env {
        if !RESERVED_ENV.contains(&name.as_str()) {
            spec.set(name, value.clone());
        }
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn invalid(message: impl Into<String>) -> QScannerError {
    QScannerError::InvalidJob {
        message: message.into(),
    }
}

/// A scan id is a safe file name: 1–128 of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn is_safe_scan_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && id.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a job before it runs; every error is [`QScannerError::InvalidJob`].
pub(crate) fn validate_job(job: &ScanJob) -> Result<(), QScannerError> {
    if !is_safe_scan_id(&job.scan_id) {
        return Err(invalid(
            "scan_id must be 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit",
        ));
    }
    let image = job.image.as_str();
    if image.is_empty() || image.len() > 1024 {
        return Err(invalid("the image reference must be 1-1024 characters"));
    }
    if image.starts_with('-') || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "the image reference must not start with '-' or contain whitespace",
        ));
    }
    if let ScanMode::EvaluatePolicy { policy_tags } = &job.mode {
        for tag in policy_tags {
            if tag.trim().is_empty() || tag.contains(',') || tag.chars().any(char::is_control) {
                return Err(invalid(
                    "policy tags must be non-empty and contain no comma or control character",
                ));
            }
        }
    }
    for (name, value) in &job.extra_env {
        if !is_env_name(name) {
            return Err(invalid(format!(
                "extra_env name `{name}` is not a valid variable name"
            )));
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            return Err(invalid(format!(
                "extra_env may not set `{name}`: the runner sets it"
            )));
        }
        if value.expose().contains('\0') {
            return Err(invalid(format!("extra_env `{name}` contains a NUL byte")));
        }
    }
    if let Some(reg) = &job.registry {
        let values = [
            reg.username.as_deref(),
            reg.password.as_ref().map(Secret::expose),
            reg.token.as_ref().map(Secret::expose),
        ];
        if values.iter().flatten().any(|v| v.contains('\0')) {
            return Err(invalid("registry credentials contain a NUL byte"));
        }
    }
    Ok(())
}
