//! What a QScanner run is given and reports while it runs: the worker's [`QScannerConfig`], one
//! [`ScanJob`], and the [`Progress`] its heartbeats carry.
//!
//! A leaf of `qscanner`: the command builder and the process runner read these types, and the
//! runner in `mod.rs` uses both, so none of them imports back.

use crate::qualys::{Pod, Secret};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The scan types the runner asks for unless configured otherwise: packages (`os` + `sca`) and
/// secrets.
pub const DEFAULT_SCAN_TYPES: [&str; 2] = ["pkg", "secret"];

/// The `--scan-types` values QScanner 4.8 documents (§4.1).
pub const KNOWN_SCAN_TYPES: [&str; 9] = [
    "pkg",
    "os",
    "sca",
    "secret",
    "malware",
    "fileinsight",
    "compliance",
    "manifest",
    "winregistry",
];

/// How the worker runs QScanner. [`QScannerConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct QScannerConfig {
    /// The `qscanner` binary.
    pub binary: PathBuf,
    /// The Qualys platform (`--pod`). One of `pod` and `gateway_url` is required.
    pub pod: Option<Pod>,
    /// The gateway (`--gateway-url`); wins over `pod` when both are set.
    pub gateway_url: Option<String>,
    /// The Qualys bearer token, passed as `QUALYS_ACCESS_TOKEN` (never on argv).
    pub access_token: Secret,
    /// Working directory: `HOME` of QScanner, and parent of the per-scan output directories.
    pub work_dir: PathBuf,
    /// `--cache-dir`; QScanner's default (`$HOME/.cache/qualys/qscanner`) when `None`.
    pub cache_dir: Option<PathBuf>,
    /// `--scan-types` (default [`DEFAULT_SCAN_TYPES`]).
    pub scan_types: Vec<String>,
    /// Kill QScanner after this long (default 600 s, the seeds' subprocess timeout).
    pub timeout: Duration,
    /// Call the heartbeat this often while QScanner runs (default 5 s).
    pub heartbeat_interval: Duration,
    /// `--offline-scan=true`: no java-db download (default `false`).
    pub offline_scan: bool,
}

impl QScannerConfig {
    /// A configuration for a POD with the defaults documented on each field.
    pub fn new(
        binary: impl Into<PathBuf>,
        pod: Pod,
        access_token: Secret,
        work_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            binary: binary.into(),
            pod: Some(pod),
            gateway_url: None,
            access_token,
            work_dir: work_dir.into(),
            cache_dir: None,
            scan_types: DEFAULT_SCAN_TYPES.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(600),
            heartbeat_interval: Duration::from_secs(5),
            offline_scan: false,
        }
    }
}

/// What QScanner is asked to do after the scan (`--mode`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanMode {
    /// `--mode get-report`: upload the inventory, fetch the vulnerability report.
    GetReport,
    /// `--mode evaluate-policy`: also evaluate the central policies with these tags
    /// (`--policy-tags`, omitted when empty).
    EvaluatePolicy {
        /// Policy tags.
        policy_tags: Vec<String>,
    },
}

/// Registry credentials, passed as `QSCANNER_REGISTRY_USERNAME` / `_PASSWORD` / `_TOKEN`
/// (§4.3). For ECR: username `AWS` and the password of `GetAuthorizationToken`, or none at all
/// and AWS credentials in [`ScanJob::extra_env`]. For ACR leave the username unset.
#[derive(Debug, Clone, Default)]
pub struct RegistryCredentials {
    /// Registry user name.
    pub username: Option<String>,
    /// Registry password.
    pub password: Option<Secret>,
    /// Registry bearer token.
    pub token: Option<Secret>,
}

/// One scan.
#[derive(Debug, Clone)]
pub struct ScanJob {
    /// The image, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com/app@sha256:…`.
    pub image: String,
    /// Report only, or evaluate policies.
    pub mode: ScanMode,
    /// Registry credentials, if the registry needs them.
    pub registry: Option<RegistryCredentials>,
    /// More environment for QScanner, e.g. an assumed role's `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`. The names in [`RESERVED_ENV`](super::RESERVED_ENV) are refused.
    pub extra_env: Vec<(String, Secret)>,
    /// Names the output directory `<work_dir>/<scan_id>`: see [`is_safe_scan_id`](super::is_safe_scan_id).
    pub scan_id: String,
}

/// What a run is doing, for heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStage {
    /// QScanner was just started.
    Started,
    /// QScanner is running.
    Scanning,
    /// QScanner exited; its outputs are being read.
    Parsing,
}

/// Progress of a run, given to the heartbeat callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The job's scan id.
    pub scan_id: String,
    /// Time since QScanner started.
    pub elapsed: Duration,
    /// What is happening.
    pub stage: ScanStage,
}
