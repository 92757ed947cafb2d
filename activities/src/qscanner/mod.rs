//! Running Qualys QScanner (the proprietary `qscanner` CLI) on a container image, and reading
//! what it writes. Every rule comes from `docs/qualys-api.md` §4.
//!
//! # Command (§4.1–4.3)
//!
//! Global flags, then the command and the target, as the README's
//! `qscanner <global_options> command <command_options> target`:
//!
//! ```text
//! qscanner (--gateway-url URL | --pod POD) --scan-types pkg,secret
//!          --output-dir <work_dir>/<scan_id> [--cache-dir DIR]
//!          --mode get-report | --mode evaluate-policy [--policy-tags a,b]
//!          --report-format sarif --format json [--offline-scan=true] --log-level info
//!          image <ref>
//! ```
//!
//! The token travels **only** in the environment (`QUALYS_ACCESS_TOKEN`), never in argv, where
//! `ps` would show it. The process starts from an **empty** environment: `PATH`,
//! `HOME=<work_dir>` (FAQ Q7: `HOME` or `XDG_CONFIG_HOME` must be set), `TMPDIR`, the proxy and
//! CA variables of [`PASSTHROUGH_ENV`], `QUALYS_ACCESS_TOKEN`, `QSCANNER_REGISTRY_USERNAME` /
//! `_PASSWORD` / `_TOKEN` when given, `AWS_REGION` derived from an ECR reference (unless given),
//! then [`ScanJob::extra_env`] (e.g. an assumed role's `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). No other worker variable leaks into QScanner.
//! [`QScanner::command`] returns exactly what runs; its `Debug` redacts every value.
//!
//! QScanner's own `--scan-timeout` (default 300 s) is left alone; [`QScannerConfig::timeout`]
//! bounds the whole process.
//!
//! # Run
//!
//! Each attempt gets its own directory `<work_dir>/<scan_id>.<unique>/` (QScanner's
//! `--output-dir`, with `TMPDIR` inside it), locked while it runs and removed when the run
//! returns, on every path; [`sweep_work_dir`] removes what dead workers left (call it at
//! start-up). Files of another attempt can never be mistaken for this one's, and a retry never
//! deletes a running attempt's files. The reports are read as a stream into typed structs, with
//! a size cap. The process leads its own process group, which is killed (`kill(2)` through
//! `rustix`) when the run ends on any path, and its stdout and stderr are captured (the last 64 KiB of each), redacted of
//! every credential of the job, logged only at `debug`, and quoted (last lines) in errors.
//! `heartbeat` is called at start and every [`QScannerConfig::heartbeat_interval`] (default 5 s)
//! while it runs, and once more before the outputs are parsed. When
//! [`QScannerConfig::timeout`] passes, or the `cancel` future resolves, the process group is
//! killed and the run ends with [`QScannerError::Timeout`] or [`QScannerError::Cancelled`].
//!
//! From an activity, forward heartbeats to Temporal without blocking, and cancel on the
//! activity's cancellation (the activity needs a heartbeat timeout above the interval):
//!
//! ```ignore
//! let hb = ctx.clone();
//! let outcome = scanner
//!     .run(
//!         &job,
//!         move |p: Progress| {
//!             let ctx = hb.clone();
//!             tokio::spawn(async move { let _ = ctx.record_heartbeat(p).await; });
//!         },
//!         ctx.cancelled(),
//!     )
//!     .await
//!     .map_err(IntoFailure::into_failure)?;
//! ```
//!
//! # Exit codes (§4.4, the official table; see [`exit_code_info`])
//!
//! | Code | Result |
//! |---|---|
//! | 0 | [`ScanOutcome`]; `policy = Allow` in `evaluate-policy` mode. A missing report or ScanResult is `BadOutput`. |
//! | 40 | [`ScanOutcome`] with `report_available: false` and a warning (SBOM uploaded, vuln report failed). |
//! | 42 / 43 | [`ScanOutcome`] with `policy = Deny` / `Audit`. |
//! | 2 | `QScannerInvalidParameter`, not retryable. |
//! | 1, 3, undocumented | `QScannerFailed` (3, logger init, is not retryable). |
//! | 5–10 | `QScannerArtifactFailed`: 6 (image not found, pull denied, registry down) retryable; 7 archive and 8 storage driver not. |
//! | 11–21 | `QScannerScanFailed`: retryable, except 15 OS not found and 17 OS not supported. |
//! | 30–39 | `QScannerUploadFailed`, retryable. |
//! | 41 | `QScannerPolicyUnavailable`, retryable. |
//! | 124, 137, 129–159, signal | `QScannerKilled`, retryable. |
//!
//! # Temporal failure types ([`QScannerError::type_name`])
//!
//! A bounded set: `QScannerNotFound` (binary missing or not executable), `QScannerConfigError`,
//! `QScannerInvalidInput` (bad job) — none retryable; `QScannerIoError`, `QScannerTimeout`,
//! `QScannerBadOutput` — retryable; the exit-code types of the table above; cancellation becomes
//! Temporal's own cancelled failure. There is no `QScannerAuthFailed` and no
//! `QScannerPolicyDenied`: QScanner documents no exit code for a rejected token (it is one of
//! the generic failures), and a DENY verdict is a successful scan whose outcome the workflow
//! judges.
//!
//! # Outputs (§4.5)
//!
//! `*-Report.sarif.json` (vulnerabilities: QID, severity, CVEs, QDS, packages; image id, digest,
//! OS) and `*-ScanResult.json` (scans performed; secrets **without** their `Match`; image
//! metadata as a fallback), `_` accepted instead of `-` as the separator (FAQ Q4). Unknown fields
//! are ignored; malformed JSON is `QScannerBadOutput` naming the file, never its content.

mod command;
mod error;
mod exit;
mod job;
mod outcome;
mod process;
mod registries;
mod report;
mod workdir;

#[cfg(test)]
mod standin_tests;
#[cfg(test)]
mod tests;

pub use command::{CommandSpec, PASSTHROUGH_ENV, RESERVED_ENV, ecr_region, is_safe_scan_id};
pub use error::QScannerError;
pub use exit::{ExitCodeInfo, ExitDisposition, FailureCategory, exit_code_info};
pub use job::{
    DEFAULT_SCAN_TYPES, KNOWN_SCAN_TYPES, Progress, QScannerConfig, RegistryCredentials, ScanJob,
    ScanMode, ScanStage,
};
pub use outcome::{Finding, PolicyVerdict, ScanOutcome, SecretFinding, VulnerablePackage};
pub use process::CAPTURE_LIMIT;
pub use registries::{DEFAULT_REGISTRIES, RegistryAllowlist};
pub use workdir::sweep as sweep_work_dir;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Runs QScanner. Cheap to share: it holds only its configuration.
#[derive(Debug, Clone)]
pub struct QScanner {
    cfg: QScannerConfig,
}

fn config_error(message: impl Into<String>) -> QScannerError {
    QScannerError::Config {
        message: message.into(),
    }
}

fn absolute(p: &Path, what: &str) -> Result<PathBuf, QScannerError> {
    if p.as_os_str().is_empty() {
        return Err(config_error(format!("{what} must not be empty")));
    }
    std::path::absolute(p).map_err(|e| config_error(format!("{what}: {e}")))
}

impl QScanner {
    /// Checks the configuration: the binary exists and is executable, a POD or gateway URL is
    /// set, the token is not empty, scan types are known, durations positive. Relative
    /// directories are made absolute. Creates nothing.
    pub fn new(mut cfg: QScannerConfig) -> Result<Self, QScannerError> {
        use std::os::unix::fs::PermissionsExt;
        let not_found = |message: &str| QScannerError::NotFound {
            path: cfg.binary.clone(),
            message: message.to_string(),
        };
        let meta = std::fs::metadata(&cfg.binary).map_err(|e| not_found(&e.to_string()))?;
        if !meta.is_file() {
            return Err(not_found("not a file"));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(not_found("not executable"));
        }
        match (&cfg.gateway_url, &cfg.pod) {
            (None, None) => return Err(config_error("a POD or a gateway URL is required")),
            (Some(url), _) => {
                let parsed =
                    url::Url::parse(url).map_err(|e| config_error(format!("gateway URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(config_error("the gateway URL must be http(s) with a host"));
                }
            }
            (None, Some(_)) => {}
        }
        let token = cfg.access_token.expose();
        if token.trim().is_empty() || token.contains(['\0', '\n', '\r']) {
            return Err(config_error(
                "the access token must be non-empty and on one line",
            ));
        }
        if cfg.scan_types.is_empty() {
            return Err(config_error("at least one scan type is required"));
        }
        if let Some(bad) = cfg
            .scan_types
            .iter()
            .find(|t| !KNOWN_SCAN_TYPES.contains(&t.as_str()))
        {
            return Err(config_error(format!(
                "unknown scan type `{bad}`; known: {}",
                KNOWN_SCAN_TYPES.join(", ")
            )));
        }
        if cfg.timeout.is_zero() || cfg.heartbeat_interval.is_zero() {
            return Err(config_error(
                "timeout and heartbeat_interval must be positive",
            ));
        }
        cfg.work_dir = absolute(&cfg.work_dir, "work_dir")?;
        if let Some(cache) = &cfg.cache_dir {
            cfg.cache_dir = Some(absolute(cache, "cache_dir")?);
        }
        Ok(Self { cfg })
    }

    /// The configuration, with directories made absolute.
    pub fn config(&self) -> &QScannerConfig {
        &self.cfg
    }

    /// The exact program, arguments and environment [`QScanner::run`] uses for `job` (for
    /// tests and logs). It does not validate the job; `run` does.
    pub fn command(&self, job: &ScanJob) -> CommandSpec {
        command::build(&self.cfg, job)
    }

    /// The output directory of `job`: `<work_dir>/<scan_id>`.
    pub fn output_dir(&self, job: &ScanJob) -> PathBuf {
        command::output_dir(&self.cfg, job)
    }

    /// Runs QScanner on `job.image` and reads its outputs.
    ///
    /// `heartbeat` is called at start, every [`QScannerConfig::heartbeat_interval`] while the
    /// process runs, and before parsing; it must not block. When `cancel` resolves, the process
    /// is killed and the result is [`QScannerError::Cancelled`]; pass
    /// `std::future::pending()` for a run that cannot be cancelled.
    pub async fn run(
        &self,
        job: &ScanJob,
        mut heartbeat: impl FnMut(Progress) + Send,
        cancel: impl Future<Output = ()> + Send,
    ) -> Result<ScanOutcome, QScannerError> {
        // A bad job never starts the scanner: its fields end up on argv and in the environment.
        command::validate_job(job)?;
        // Outputs and TMPDIR go to a directory of this attempt's own, so a retry never reads what
        // an earlier, killed attempt left; it is removed when this function returns, whichever
        // way it does.
        let attempt = workdir::AttemptDir::create(&self.cfg.work_dir, &job.scan_id)?;
        if let Some(cache) = &self.cfg.cache_dir {
            tokio::fs::create_dir_all(cache)
                .await
                .map_err(|e| QScannerError::io("creating the cache directory", &e))?;
        }
        let spec = command::build_in(&self.cfg, job, attempt.path(), &attempt.tmp());
        let out_dir = spec.current_dir.clone();

        let finished = self.execute(job, &spec, &mut heartbeat, cancel).await?;
        let output = Output::redacted(&finished, &Redactor::for_job(&self.cfg, job));
        debug!(
            scan_id = %job.scan_id,
            stdout = %output.stdout,
            stderr = %output.stderr,
            "qscanner output (redacted tails)"
        );
        let info = self.exit_code(job, &finished, &output)?;
        // The exit code says whether there is a verdict and which outputs must exist; only
        // then are the files read.
        let expected = expected_outputs(job, &info, &output)?;
        heartbeat(Progress {
            scan_id: job.scan_id.clone(),
            elapsed: finished.elapsed,
            stage: ScanStage::Parsing,
        });
        let outcome = self
            .read_outputs(&info, expected, out_dir, finished.elapsed)
            .await?;
        info!(
            scan_id = %job.scan_id,
            exit_code = info.code,
            policy = ?outcome.policy,
            report_available = outcome.report_available,
            vulnerabilities = outcome.vulnerabilities.len(),
            secrets = outcome.secrets.len(),
            warnings = outcome.warnings.len(),
            "qscanner scan read"
        );
        Ok(outcome)
    }

    /// Starts QScanner with `spec` and waits for it to end: exited, timed out or cancelled
    /// (both killed), heartbeating meanwhile. Only the names of the environment are logged:
    /// its values are credentials.
    async fn execute(
        &self,
        job: &ScanJob,
        spec: &CommandSpec,
        heartbeat: &mut (impl FnMut(Progress) + Send),
        cancel: impl Future<Output = ()> + Send,
    ) -> Result<process::Finished, QScannerError> {
        info!(
            scan_id = %job.scan_id,
            image = %job.image,
            args = ?spec.args,
            env = ?spec.env_names(),
            "starting qscanner"
        );
        process::run(
            spec,
            self.cfg.timeout,
            self.cfg.heartbeat_interval,
            &job.scan_id,
            heartbeat,
            cancel,
        )
        .await
    }

    /// The exit code of a run that exited; a cancelled, timed-out or signalled run is an error
    /// (with the output's last lines, redacted, as its detail).
    fn exit_code(
        &self,
        job: &ScanJob,
        finished: &process::Finished,
        output: &Output,
    ) -> Result<ExitCodeInfo, QScannerError> {
        let status = match finished.ended {
            process::Ended::Cancelled => {
                warn!(scan_id = %job.scan_id, "qscanner cancelled and killed");
                return Err(QScannerError::Cancelled);
            }
            process::Ended::TimedOut => {
                warn!(
                    scan_id = %job.scan_id,
                    timeout_s = self.cfg.timeout.as_secs(),
                    "qscanner timed out and was killed"
                );
                return Err(QScannerError::Timeout {
                    after: self.cfg.timeout,
                    detail: output.detail(),
                });
            }
            process::Ended::Exited(status) => status,
        };
        let Some(code) = status.code() else {
            use std::os::unix::process::ExitStatusExt;
            return Err(QScannerError::Exit {
                code: None,
                signal: status.signal(),
                name: "killed by a signal",
                category: FailureCategory::Killed,
                retryable: true,
                detail: output.detail(),
            });
        };
        let info = exit_code_info(code);
        info!(
            scan_id = %job.scan_id,
            exit_code = code,
            exit_name = info.name,
            elapsed_ms = finished.elapsed.as_millis() as u64,
            "qscanner exited"
        );
        Ok(info)
    }

    /// Reads the outputs an exit code promised: the ScanResult always, the SARIF report when
    /// `expected` says it must exist (and not after exit 40, when QScanner says the report could
    /// not be fetched). Every gap that is not an error becomes a warning of the outcome.
    async fn read_outputs(
        &self,
        info: &ExitCodeInfo,
        expected: ExpectedOutputs,
        out_dir: PathBuf,
        elapsed: Duration,
    ) -> Result<ScanOutcome, QScannerError> {
        let code = info.code;
        let ExpectedOutputs {
            policy,
            report_expected,
            mut warnings,
        } = expected;
        let files = report::find_outputs(&out_dir)?;
        warnings.extend(files.warnings);

        let Some(result_path) = files.scan_result else {
            return Err(QScannerError::BadOutput {
                file: out_dir.display().to_string(),
                message: format!("no *-ScanResult.json after exit {code}"),
            });
        };
        let scan_result = report::read_scan_result(&result_path).await?;
        warnings.extend(scan_result.warnings);
        warnings.extend(missing_scans(
            &self.cfg.scan_types,
            &scan_result.scans_performed,
        ));

        let sarif = match files.sarif {
            Some(path) if info.disposition != ExitDisposition::ReportUnavailable => {
                Some(report::read_sarif(&path).await?)
            }
            Some(_) => None,
            None if report_expected => {
                return Err(QScannerError::BadOutput {
                    file: out_dir.display().to_string(),
                    message: format!("no *-Report.sarif.json after exit {code}"),
                });
            }
            None => {
                if info.disposition != ExitDisposition::ReportUnavailable {
                    warnings.push(format!("exit {code}: no vulnerability report was written"));
                }
                None
            }
        };
        let report_available = sarif.is_some();
        // The report is the better source of the image's identity; the ScanResult's metadata
        // fills in what it lacks (or all of it when there is no report).
        let (vulnerabilities, image_id, image_digest, os) = match sarif {
            Some(s) => {
                warnings.extend(s.warnings);
                (s.findings, s.image_id, s.image_digest, s.os)
            }
            None => (Vec::new(), None, None, None),
        };
        Ok(ScanOutcome {
            exit_code: code,
            policy,
            report_available,
            image_id: image_id.or(scan_result.image_id),
            image_digest: image_digest.or(scan_result.image_digest),
            os: os.or(scan_result.os),
            severity_counts: report::count(&vulnerabilities),
            vulnerabilities,
            secrets: scan_result.secrets,
            scans_performed: scan_result.scans_performed,
            warnings,
            output_dir: out_dir,
            duration: elapsed,
        })
    }
}

/// QScanner's stdout and stderr tails with every credential of the job removed: all that is
/// ever logged or put into an error of its output.
struct Output {
    stdout: String,
    stderr: String,
}

impl Output {
    fn redacted(finished: &process::Finished, redactor: &Redactor) -> Self {
        Self {
            stdout: redactor.redact(&finished.stdout),
            stderr: redactor.redact(&finished.stderr),
        }
    }

    /// The last lines, for an error's detail.
    fn detail(&self) -> String {
        tail_lines(&self.stderr, &self.stdout)
    }
}

/// What an exit code says the outputs hold: the policy verdict, whether the SARIF report must
/// exist, and the warnings the code itself gives.
struct ExpectedOutputs {
    policy: Option<PolicyVerdict>,
    report_expected: bool,
    warnings: Vec<String>,
}

/// Applies the exit-code table (see the module docs): a failure code is an error; success,
/// "report unavailable" (40) and the policy verdicts (42, 43) say what to read.
fn expected_outputs(
    job: &ScanJob,
    info: &ExitCodeInfo,
    output: &Output,
) -> Result<ExpectedOutputs, QScannerError> {
    let code = info.code;
    let (policy, report_expected, warnings) = match info.disposition {
        ExitDisposition::Failure {
            category,
            retryable,
        } => {
            return Err(QScannerError::Exit {
                code: Some(code),
                signal: None,
                name: info.name,
                category,
                retryable,
                detail: output.detail(),
            });
        }
        // Exit 0 in evaluate-policy mode is QScanner's ALLOW.
        ExitDisposition::Success => {
            let policy =
                matches!(job.mode, ScanMode::EvaluatePolicy { .. }).then_some(PolicyVerdict::Allow);
            (policy, true, Vec::new())
        }
        ExitDisposition::ReportUnavailable => (
            None,
            false,
            vec![format!(
                "exit {code} ({}): the SBOM was uploaded but the vulnerability report \
                 could not be fetched; vulnerabilities are unknown",
                info.name
            )],
        ),
        // A verdict code is a successful scan: the workflow judges it.
        ExitDisposition::PolicyDeny | ExitDisposition::PolicyAudit => {
            let verdict = if info.disposition == ExitDisposition::PolicyDeny {
                PolicyVerdict::Deny
            } else {
                PolicyVerdict::Audit
            };
            let mut warnings = Vec::new();
            if job.mode == ScanMode::GetReport {
                warnings.push(format!("exit {code} ({}) in get-report mode", info.name));
            }
            (Some(verdict), false, warnings)
        }
    };
    Ok(ExpectedOutputs {
        policy,
        report_expected,
        warnings,
    })
}

/// A warning for each scan type that was asked for but that QScanner's `ScansPerformed` does
/// not list: a requested scan that did not run must not read as a clean result.
fn missing_scans(scan_types: &[String], performed: &[(String, String)]) -> Vec<String> {
    expected_scans(scan_types)
        .into_iter()
        .filter(|wanted| {
            !performed
                .iter()
                .any(|(t, _)| t.eq_ignore_ascii_case(wanted))
        })
        .map(|wanted| format!("the {wanted} scan was requested but is not in ScansPerformed"))
        .collect()
}

/// The vulnerabilities of a `*-Report.sarif.json` file and the warnings reading it gave, read
/// exactly as [`QScanner::run`] reads them (streamed into typed structs, with the size cap):
/// for `qflows-bench qscanner-report`.
pub async fn read_sarif_file(path: &Path) -> Result<(Vec<Finding>, Vec<String>), QScannerError> {
    let report = report::read_sarif(path).await?;
    Ok((report.findings, report.warnings))
}

/// The `ScansPerformed` types the configured `--scan-types` should produce (`pkg` = `os` +
/// `sca`).
fn expected_scans(scan_types: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for t in scan_types {
        let types = match t.as_str() {
            "pkg" => vec!["os", "sca"],
            other => vec![other],
        };
        for t in types {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

/// Removes every credential of a job from text.
struct Redactor {
    literals: Vec<String>,
}

impl Redactor {
    fn for_job(cfg: &QScannerConfig, job: &ScanJob) -> Self {
        let mut literals: Vec<String> = vec![cfg.access_token.expose().to_string()];
        if let Some(reg) = &job.registry {
            literals.extend(reg.password.iter().map(|s| s.expose().to_string()));
            literals.extend(reg.token.iter().map(|s| s.expose().to_string()));
        }
        literals.extend(job.extra_env.iter().map(|(_, v)| v.expose().to_string()));
        // Short values (a region, a flag) would mangle the text and protect nothing.
        literals.retain(|s| s.len() >= 8);
        literals.sort_by_key(|s| std::cmp::Reverse(s.len()));
        literals.dedup();
        Self { literals }
    }

    fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.literals {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        crate::qualys::redact(&text)
    }
}

/// The last few non-empty lines of stderr (else stdout), at most ~800 characters.
fn tail_lines(stderr: &str, stdout: &str) -> String {
    let source = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let lines: Vec<&str> = source
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.chars().count() > 800 {
        let skip = tail.chars().count() - 800;
        tail = format!("…{}", tail.chars().skip(skip).collect::<String>());
    }
    tail
}
