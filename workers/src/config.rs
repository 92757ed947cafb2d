//! The one configuration of qflows, from flags and environment variables.
//!
//! Names follow what Qualys integrations already use (`QUALYS_USERNAME`, `QUALYS_PASSWORD`,
//! `QUALYS_API_TOKEN`/`QUALYS_ACCESS_TOKEN`, `QUALYS_POD`/`QUALYS_PLATFORM`, `QUALYS_GATEWAY_URL`) and
//! Temporal's own client configuration (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`,
//! `TEMPORAL_TLS_*`, `TEMPORAL_PROFILE` and `temporal.toml`). Units are in the names
//! (`..._SECS`). Invalid values stop start-up with a message that names the variable; secrets are
//! never printed, not even in `--help` or `Debug` output.

use clap::{Args, ValueEnum};
use qflows_activities::qualys::{Pod, QualysAuth, QualysConfig, Secret};
use qflows_workflows::registry::model::{DEFAULT_SCAN_ROLE_NAME, RegistryDefaults};
use qflows_workflows::scan::model::Verdict;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use url::Url;

/// A configuration problem, naming the variable or flag to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value could not be used.
    #[error("{variable}: {problem}")]
    Invalid {
        /// The environment variable (and flag) at fault.
        variable: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Something required is missing.
    #[error("{0}")]
    Missing(String),
    /// An environment variable with qflows' prefix that qflows does not know.
    #[error("unknown variable {name}{hint}: qflows reads only the variables listed in the README")]
    UnknownVariable {
        /// The variable.
        name: String,
        /// A suggestion, if one is close.
        hint: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Logging flags, shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long,
        env = "QFLOWS_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `qflows=debug,info`.
    #[arg(long, env = "QFLOWS_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// Where Temporal is. TLS client certificates, API keys and `temporal.toml` profiles come from
/// Temporal's standard client configuration; these flags override its address and namespace.
#[derive(Debug, Clone, Default, Args)]
pub struct TemporalArgs {
    /// Temporal frontend address (host:port). Default: `TEMPORAL_ADDRESS`, the profile, or localhost:7233.
    #[arg(long = "temporal-address")]
    pub address: Option<String>,
    /// Temporal namespace. Default: `TEMPORAL_NAMESPACE`, the profile, or `default`.
    #[arg(long)]
    pub namespace: Option<String>,
    /// `temporal.toml` profile name (default: `TEMPORAL_PROFILE` or `default`).
    #[arg(long = "temporal-profile")]
    pub profile: Option<String>,
}

/// How to reach Qualys.
#[derive(Clone, Default, Args)]
pub struct QualysArgs {
    /// Qualys platform (US1…US4, EU1…EU3, IN1, CA1, AE1, UK1, AU1, KSA1). `QUALYS_PLATFORM` is read too.
    #[arg(long = "qualys-pod", env = "QUALYS_POD")]
    pub pod: Option<String>,
    /// Gateway URL, overriding the platform's (e.g. a proxy, or the emulator).
    #[arg(long = "qualys-gateway-url", env = "QUALYS_GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// Username for JWT login (with `QUALYS_PASSWORD`).
    #[arg(long = "qualys-username", env = "QUALYS_USERNAME")]
    pub username: Option<String>,
    /// Password for JWT login. Environment only: never put secrets on a command line.
    #[arg(skip)]
    pub password: Option<Secret>,
    /// A ready bearer token (`QUALYS_API_TOKEN` or `QUALYS_ACCESS_TOKEN`). Environment only.
    #[arg(skip)]
    pub token: Option<Secret>,
    /// The platform came from `QUALYS_PLATFORM` (so errors name that variable).
    #[arg(skip)]
    pub pod_from_platform: bool,
    /// Most Qualys requests in flight at once.
    #[arg(
        long = "qualys-max-in-flight",
        env = "QUALYS_MAX_IN_FLIGHT",
        default_value_t = 4
    )]
    pub max_in_flight: usize,
    /// Timeout of one Qualys HTTP request.
    #[arg(
        long = "qualys-request-timeout-secs",
        env = "QUALYS_REQUEST_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub request_timeout_secs: u64,
}

impl std::fmt::Debug for QualysArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QualysArgs")
            .field("pod", &self.pod)
            .field("gateway_url", &self.gateway_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl QualysArgs {
    /// Reads the secrets, which have no flags, from the environment.
    pub fn with_env_secrets(mut self) -> Self {
        self.password = env_nonempty("QUALYS_PASSWORD").map(Secret::new);
        self.token = env_nonempty("QUALYS_API_TOKEN")
            .or_else(|| env_nonempty("QUALYS_ACCESS_TOKEN"))
            .map(Secret::new);
        if self.pod.is_none() {
            self.pod = env_nonempty("QUALYS_PLATFORM");
            self.pod_from_platform = self.pod.is_some();
        }
        self
    }

    /// Whether any Qualys credential is configured.
    pub fn has_credentials(&self) -> bool {
        self.username.is_some() || self.password.is_some() || self.token.is_some()
    }

    /// The client configuration, or an error naming the variable to fix.
    pub fn to_config(&self) -> Result<QualysConfig, ConfigError> {
        let gateway = match (&self.gateway_url, &self.pod) {
            (Some(url), _) => parse_gateway(url)?,
            (None, Some(pod)) => {
                let pod: Pod = pod.parse().map_err(|e| ConfigError::Invalid {
                    variable: if self.pod_from_platform {
                        "QUALYS_PLATFORM"
                    } else {
                        "QUALYS_POD"
                    },
                    problem: format!("{e}"),
                })?;
                Url::parse(pod.gateway_url()).expect("the platform table holds valid URLs")
            }
            (None, None) => {
                return Err(ConfigError::Missing(
                    "set QUALYS_POD (e.g. US2) or QUALYS_GATEWAY_URL to say which Qualys platform to use"
                        .into(),
                ));
            }
        };
        let auth = match (&self.username, &self.password, &self.token) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    variable: "QUALYS_API_TOKEN",
                    problem: "set either QUALYS_USERNAME/QUALYS_PASSWORD or a token (QUALYS_API_TOKEN/QUALYS_ACCESS_TOKEN), not both".into(),
                });
            }
            (Some(username), Some(password), None) => QualysAuth::Password {
                username: username.clone(),
                password: password.clone(),
            },
            (Some(_), None, None) => {
                return Err(ConfigError::Missing(
                    "QUALYS_PASSWORD: QUALYS_USERNAME is set but QUALYS_PASSWORD is not".into(),
                ));
            }
            (None, Some(_), None) => {
                return Err(ConfigError::Missing(
                    "QUALYS_USERNAME: QUALYS_PASSWORD is set but QUALYS_USERNAME is not".into(),
                ));
            }
            (None, None, Some(token)) => QualysAuth::Token(token.clone()),
            (None, None, None) => {
                return Err(ConfigError::Missing(
                    "no Qualys credentials: set QUALYS_USERNAME and QUALYS_PASSWORD, or QUALYS_API_TOKEN (`qflows dev` uses its emulator when none are set)".into(),
                ));
            }
        };
        if self.max_in_flight == 0 {
            return Err(ConfigError::Invalid {
                variable: "QUALYS_MAX_IN_FLIGHT",
                problem: "must be at least 1".into(),
            });
        }
        if self.request_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                variable: "QUALYS_REQUEST_TIMEOUT_SECS",
                problem: "must be at least 1".into(),
            });
        }
        let mut config = QualysConfig::new(gateway, auth);
        config.max_in_flight = self.max_in_flight;
        config.request_timeout = Duration::from_secs(self.request_timeout_secs);
        Ok(config)
    }
}

fn parse_gateway(url: &str) -> Result<Url, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid {
        variable: "QUALYS_GATEWAY_URL",
        problem,
    };
    let parsed = Url::parse(url).map_err(|e| invalid(format!("`{url}` is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid(format!(
            "`{url}` must be an http(s) URL with a host"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "must not carry credentials; use QUALYS_USERNAME/QUALYS_PASSWORD".into(),
        ));
    }
    Ok(parsed)
}

/// What the worker does and serves.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Task queue the worker polls.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Address of the Prometheus metrics endpoint (`/metrics`), or `off`.
    #[arg(long, env = "QFLOWS_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
    /// IAM role Qualys assumes when an `EnsureRegistry` input names none.
    #[arg(long, env = "QFLOWS_SCAN_ROLE_NAME", default_value = DEFAULT_SCAN_ROLE_NAME)]
    pub scan_role_name: String,
    /// Wait after creating or changing that role before Qualys uses it (IAM is eventually consistent).
    #[arg(long, env = "QFLOWS_IAM_PROPAGATION_WAIT_SECS", default_value_t = 30)]
    pub iam_propagation_wait_secs: u64,
    /// Time in-flight activities get to finish on SIGTERM before the worker exits.
    #[arg(long, env = "QFLOWS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Workflows kept in memory per task queue (the worker serves four: the main queue,
    /// `-scan`, `-rescan` and `-registry`); 0 turns the cache off. A workflow that is not
    /// cached is replayed from its history on its next task.
    #[arg(long, env = "QFLOWS_MAX_CACHED_WORKFLOWS", default_value_t = 1000)]
    pub max_cached_workflows: usize,
    /// Workflow tasks processed at once, per task queue.
    #[arg(long, env = "QFLOWS_WORKFLOW_TASK_SLOTS", default_value_t = 100)]
    pub workflow_task_slots: usize,
    /// Activities (and, separately, local activities) run at once, per task queue.
    #[arg(long, env = "QFLOWS_ACTIVITY_SLOTS", default_value_t = 100)]
    pub activity_slots: usize,
    /// Long polls open per task queue and kind of task: a number, or `auto` / `auto:MIN-MAX`
    /// for the SDK's poller autoscaling (scaled on the server's feedback). Unset: the SDK's
    /// default (5, autoscaling where the namespace offers it).
    #[arg(long, env = "QFLOWS_POLLERS")]
    pub pollers: Option<String>,
}

/// How many workflows the worker caches, how many tasks it runs at once and how it polls,
/// per task queue (validated from [`WorkerArgs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerTuning {
    /// Workflows cached per queue (0: none).
    pub max_cached_workflows: usize,
    /// Workflow task slots per queue.
    pub workflow_task_slots: usize,
    /// Activity slots per queue (local activities get as many).
    pub activity_slots: usize,
    /// How the queues are polled (`None`: the SDK's default).
    pub pollers: Option<Pollers>,
}

/// How a task queue is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pollers {
    /// At most this many polls at once.
    Fixed(usize),
    /// The SDK's autoscaling between these bounds.
    Auto {
        /// Polls always open.
        minimum: usize,
        /// Polls never exceeded.
        maximum: usize,
    },
}

impl std::str::FromStr for Pollers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |v: &str| {
            v.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{v}` is not a positive number"))
        };
        match s.trim() {
            "auto" => Ok(Pollers::Auto {
                minimum: 1,
                maximum: 100,
            }),
            v => match v.strip_prefix("auto:") {
                Some(range) => {
                    let (minimum, maximum) = range
                        .split_once('-')
                        .ok_or_else(|| format!("`{v}` is not auto:MIN-MAX"))?;
                    let (minimum, maximum) = (number(minimum)?, number(maximum)?);
                    if minimum > maximum {
                        return Err(format!("`{v}`: the minimum exceeds the maximum"));
                    }
                    Ok(Pollers::Auto { minimum, maximum })
                }
                None => number(v).map(Pollers::Fixed),
            },
        }
    }
}

impl WorkerArgs {
    /// The metrics address, or `None` when metrics are off.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.metrics_listen.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        self.metrics_listen
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid {
                variable: "QFLOWS_METRICS_LISTEN",
                problem: format!("`{}` is not host:port (or `off`)", self.metrics_listen),
            })
    }

    /// The validated cache, slot and poller settings.
    pub fn tuning(&self) -> Result<WorkerTuning, ConfigError> {
        let invalid = |variable, problem: String| ConfigError::Invalid { variable, problem };
        let pollers = match &self.pollers {
            None => None,
            Some(p) => Some(p.parse::<Pollers>().map_err(|p| {
                invalid(
                    "QFLOWS_POLLERS",
                    format!("{p} (a number, `auto` or `auto:MIN-MAX`)"),
                )
            })?),
        };
        if self.workflow_task_slots == 0 {
            return Err(invalid(
                "QFLOWS_WORKFLOW_TASK_SLOTS",
                "must be at least 1".into(),
            ));
        }
        if self.activity_slots == 0 {
            return Err(invalid(
                "QFLOWS_ACTIVITY_SLOTS",
                "must be at least 1".into(),
            ));
        }
        // The SDK polls a cached worker's sticky and normal queues at once.
        if self.max_cached_workflows > 0 {
            if self.workflow_task_slots < 2 {
                return Err(invalid(
                    "QFLOWS_WORKFLOW_TASK_SLOTS",
                    "must be at least 2 while workflows are cached (QFLOWS_MAX_CACHED_WORKFLOWS > 0)".into(),
                ));
            }
            if pollers == Some(Pollers::Fixed(1)) {
                return Err(invalid(
                    "QFLOWS_POLLERS",
                    "must be at least 2 while workflows are cached (QFLOWS_MAX_CACHED_WORKFLOWS > 0)".into(),
                ));
            }
        }
        Ok(WorkerTuning {
            max_cached_workflows: self.max_cached_workflows,
            workflow_task_slots: self.workflow_task_slots,
            activity_slots: self.activity_slots,
            pollers,
        })
    }

    /// Defaults the registry activities apply to inputs.
    pub fn registry_defaults(&self) -> Result<RegistryDefaults, ConfigError> {
        let probe = format!("arn:aws:iam::000000000000:role/{}", self.scan_role_name);
        if qflows_workflows::registry::model::parse_role_arn(&probe).is_none() {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_SCAN_ROLE_NAME",
                problem: format!("`{}` is not a valid IAM role name", self.scan_role_name),
            });
        }
        Ok(RegistryDefaults {
            scan_role_name: self.scan_role_name.clone(),
            iam_propagation_wait_secs: self.iam_propagation_wait_secs,
        })
    }
}

/// Where the worker writes full reports when `QFLOWS_RESULTS` is not set.
pub const DEFAULT_RESULTS: &str = "qflows-results";

/// The results store, for commands that only read it (`qflows scan`): the same
/// `QFLOWS_RESULTS` as [`ScanArgs::results`], without the worker's scan and gate settings
/// (which would do nothing there).
#[derive(Debug, Clone, Args)]
pub struct ResultsArgs {
    /// Where the worker writes full scan reports: a directory, `s3://bucket/prefix` or an
    /// Azure Blob container URL (the worker's QFLOWS_RESULTS).
    #[arg(long, env = "QFLOWS_RESULTS", default_value = DEFAULT_RESULTS)]
    pub results: String,
}

impl ResultsArgs {
    /// The store, checked; S3 clients use the AWS SDK's region chain (default us-east-1).
    pub async fn store(&self) -> Result<qflows_activities::results::ResultsStore, ConfigError> {
        use qflows_activities::results::{ResultsLocation, ResultsStore};
        let invalid = |problem: String| ConfigError::Invalid {
            variable: "QFLOWS_RESULTS",
            problem,
        };
        let kind =
            ResultsStore::location_kind(&self.results).map_err(|e| invalid(e.to_string()))?;
        let region = match kind {
            ResultsLocation::S3 { .. } => {
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .load()
                    .await
                    .region()
                    .map(|r| r.to_string())
            }
            _ => None,
        }
        .unwrap_or_else(|| "us-east-1".to_string());
        let aws = qflows_activities::aws::Aws::new();
        ResultsStore::from_location(&self.results, &aws, &region)
            .await
            .map_err(|e| invalid(e.to_string()))
    }
}

/// How deploy-time scans run and are judged.
#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    /// First poll interval after submitting a Qualys registry scan (doubles up to the maximum).
    #[arg(long, env = "QFLOWS_SCAN_POLL_INITIAL_SECS", default_value_t = 10)]
    pub scan_poll_initial_secs: u64,
    /// Longest poll interval.
    #[arg(long, env = "QFLOWS_SCAN_POLL_MAX_SECS", default_value_t = 120)]
    pub scan_poll_max_secs: u64,
    /// A scan Qualys has not finished by then ends as `timed_out`.
    #[arg(long, env = "QFLOWS_SCAN_TIMEOUT_SECS", default_value_t = 3600)]
    pub scan_timeout_secs: u64,
    /// How long an image's result stays fresh (then it is rescanned if still deployed).
    #[arg(long, env = "QFLOWS_SCAN_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub scan_ttl_secs: u64,
    /// An image an inventory sees running is rescanned this often (while it keeps running).
    #[arg(long, env = "QFLOWS_RESCAN_RUNNING_SECS", default_value_t = 86_400)]
    pub rescan_running_secs: u64,
    /// `off` (default): failing verdicts never start a quarantine. `propose`: a completed scan
    /// that fails proposes a Quarantine (waiting for approval) for each ECS service an
    /// inventory sees running the digest.
    #[arg(long, env = "QFLOWS_QUARANTINE", default_value = "off")]
    pub quarantine: String,
    /// How long a proposed quarantine waits for approval before it lapses (changing nothing).
    #[arg(
        long,
        env = "QFLOWS_QUARANTINE_APPROVAL_SECS",
        default_value_t = 86_400
    )]
    pub quarantine_approval_secs: u64,
    /// First retry of a failed, timed-out or skipped scan (doubling each time).
    #[arg(long, env = "QFLOWS_SCAN_RETRY_INITIAL_SECS", default_value_t = 300)]
    pub scan_retry_initial_secs: u64,
    /// Longest wait between retries of a failing scan.
    #[arg(long, env = "QFLOWS_SCAN_RETRY_MAX_SECS", default_value_t = 6 * 3600)]
    pub scan_retry_max_secs: u64,
    /// Where full scan reports are written: a directory, or `s3://bucket/prefix`.
    #[arg(long, env = "QFLOWS_RESULTS", default_value = DEFAULT_RESULTS)]
    pub results: String,
    /// SNS topic for alerts (Fargate-scanner-compatible subjects and bodies).
    #[arg(long, env = "QFLOWS_SNS_TOPIC_ARN")]
    pub sns_topic_arn: Option<String>,
    /// Webhook for alerts (JSON with a Slack-compatible `text`). May hold a token: never logged.
    #[arg(long, env = "QFLOWS_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,
    /// Gate: fail on any vulnerability at or above this Qualys severity (5 = critical; 0 = never).
    #[arg(long, env = "QFLOWS_GATE_FAIL_SEVERITY", default_value_t = 5)]
    pub gate_fail_severity: u8,
    /// Gate: fail when there are more high (severity 4) vulnerabilities than this.
    #[arg(long, env = "QFLOWS_GATE_MAX_HIGH")]
    pub gate_max_high: Option<u64>,
    /// Gate: count only vulnerabilities that have a fix.
    #[arg(long, env = "QFLOWS_GATE_FIXABLE_ONLY", default_value_t = false)]
    pub gate_fixable_only: bool,
    /// Gate: the verdict for images that could not be scanned (`pass`, `audit`, `fail`, or `none`).
    #[arg(long, env = "QFLOWS_GATE_UNSCANNED", default_value = "audit")]
    pub gate_unscanned: String,
    /// Gate profiles: a YAML or JSON file of named profiles and the selectors that pick one
    /// per scope (README "Gate profiles"); re-read when it changes. Unset: only `default`.
    #[arg(long, env = "QFLOWS_GATE_PROFILES_FILE")]
    pub gate_profiles_file: Option<std::path::PathBuf>,
    /// Gate: a JSON file of accepted CVEs, `[{"cve": "CVE-…", "expiresAt": <unix secs>, "reason": "…"}]`.
    #[arg(long, env = "QFLOWS_GATE_ALLOWLIST_FILE")]
    pub gate_allowlist_file: Option<String>,
    /// Role to assume in other accounts to read ECS and ECR (hub/spoke); none: the worker's own.
    #[arg(long, env = "QFLOWS_CROSS_ACCOUNT_ROLE_NAME")]
    pub cross_account_role_name: Option<String>,
    /// Which backend scans ECR images: `registry` (Qualys registry scan, the default) or
    /// `qscanner`. Non-ECR images are scanned with QScanner whenever it is configured.
    #[arg(
        long,
        env = "QFLOWS_SCAN_BACKEND",
        value_enum,
        default_value = "registry"
    )]
    pub scan_backend: ScanBackend,
    /// The `qscanner` binary; setting it enables the QScanner backend.
    #[arg(long, env = "QFLOWS_QSCANNER_BIN")]
    pub qscanner_bin: Option<std::path::PathBuf>,
    /// QScanner mode: `get-report`, or `evaluate-policy` (Qualys central policies decide).
    #[arg(
        long,
        env = "QFLOWS_QSCANNER_MODE",
        value_enum,
        default_value = "get-report"
    )]
    pub qscanner_mode: QScannerMode,
    /// Policy tags for `evaluate-policy`, comma-separated.
    #[arg(long, env = "QFLOWS_QSCANNER_POLICY_TAGS", value_delimiter = ',')]
    pub qscanner_policy_tags: Vec<String>,
    /// QScanner's time limit per image.
    #[arg(long, env = "QFLOWS_QSCANNER_TIMEOUT_SECS", default_value_t = 600)]
    pub qscanner_timeout_secs: u64,
    /// Most QScanner runs at once on this worker; the others wait in Temporal (its task queue).
    #[arg(long, env = "QFLOWS_QSCANNER_MAX_CONCURRENT", default_value_t = 2)]
    pub qscanner_max_concurrent: usize,
    /// Registries QScanner may pull from: `ecr`, `ecr:<account>`, `acr`, `acr:<name>`,
    /// `docker.io`, `ecr-public`, hosts and `*.domain`, comma-separated.
    #[arg(long, env = "QFLOWS_QSCANNER_REGISTRIES", default_value = qflows_activities::qscanner::DEFAULT_REGISTRIES)]
    pub qscanner_registries: String,
    /// Where QScanner writes its per-scan output (removed after each scan).
    #[arg(long, env = "QFLOWS_QSCANNER_WORK_DIR")]
    pub qscanner_work_dir: Option<std::path::PathBuf>,
    /// Azure Resource Manager (sovereign clouds: management.usgovcloudapi.net, …).
    #[arg(
        long,
        env = "QFLOWS_AZURE_ARM_ENDPOINT",
        default_value = "https://management.azure.com"
    )]
    pub azure_arm_endpoint: String,
    /// Send ACR registry calls to this base URL instead of `https://<login server>` (a proxy).
    #[arg(long, env = "QFLOWS_AZURE_ACR_ENDPOINT")]
    pub azure_acr_endpoint: Option<String>,
    /// The Azure cloud: `public`, `usgovernment` or `china`. Sets the Resource Manager endpoint
    /// (unless given), the token audience for an endpoint that is not a known Resource Manager,
    /// and the sign-in authority.
    #[arg(long, env = "QFLOWS_AZURE_CLOUD")]
    pub azure_cloud: Option<String>,
}

/// `qflows admission`: the Kubernetes validating admission webhook (README "Admission control
/// (Kubernetes)"). Its gate profiles are the worker's ([`ScanArgs`]).
#[derive(Debug, Clone, Args)]
pub struct AdmissionArgs {
    /// HTTPS address the webhook listens on (`POST /validate`; use 0.0.0.0:8443 in a pod).
    #[arg(
        long,
        env = "QFLOWS_ADMISSION_LISTEN",
        default_value = "127.0.0.1:8443"
    )]
    pub admission_listen: SocketAddr,
    /// PEM certificate chain the webhook serves (cert-manager's `tls.crt`); re-read when it
    /// changes.
    #[arg(long, env = "QFLOWS_ADMISSION_TLS_CERT_FILE")]
    pub admission_tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of that certificate (`tls.key`); re-read with it.
    #[arg(long, env = "QFLOWS_ADMISSION_TLS_KEY_FILE")]
    pub admission_tls_key_file: Option<std::path::PathBuf>,
    /// Plain-HTTP address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(
        long,
        env = "QFLOWS_ADMISSION_METRICS_ADDR",
        default_value = "127.0.0.1:9465"
    )]
    pub admission_metrics_addr: SocketAddr,
    /// Every answer is given within this many milliseconds: an image whose verdict is not known
    /// by then (Temporal, the registry or the results store slow or down) gets its profile's
    /// `unscanned` rule. Keep it below the webhook's `timeoutSeconds`.
    #[arg(long, env = "QFLOWS_ADMISSION_TIMEOUT_MS", default_value_t = 2000)]
    pub admission_timeout_ms: u64,
    /// How long a digest's result is kept in memory before the entity is asked again (an
    /// image with no result yet is asked again after at most 5 s).
    #[arg(long, env = "QFLOWS_ADMISSION_CACHE_TTL_SECS", default_value_t = 60)]
    pub admission_cache_ttl_secs: u64,
    /// This cluster's name, for the gate profiles' `kubernetesCluster` selectors.
    #[arg(long, env = "QFLOWS_KUBERNETES_CLUSTER")]
    pub kubernetes_cluster: Option<String>,
    /// Task queue of the workers (new scans start on its `-scan` queue).
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
}

/// [`AdmissionArgs`], checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// HTTPS address.
    pub listen: SocketAddr,
    /// Certificate chain file.
    pub cert_file: std::path::PathBuf,
    /// Key file.
    pub key_file: std::path::PathBuf,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// The answer's deadline.
    pub timeout: Duration,
    /// Result cache TTL.
    pub cache_ttl: Duration,
    /// `QFLOWS_KUBERNETES_CLUSTER`.
    pub cluster: Option<String>,
    /// Workers' task queue.
    pub task_queue: String,
}

/// Longest `QFLOWS_ADMISSION_TIMEOUT_MS`: the API server waits at most 30 s for a webhook.
pub const MAX_ADMISSION_TIMEOUT_MS: u64 = 29_000;

impl AdmissionArgs {
    /// The settings, validated; each problem names its variable.
    pub fn settings(&self) -> Result<AdmissionSettings, ConfigError> {
        let invalid = |variable, problem: String| ConfigError::Invalid { variable, problem };
        let file = |path: &Option<std::path::PathBuf>, variable: &'static str| {
            let path = path.clone().ok_or_else(|| {
                ConfigError::Missing(format!(
                    "{variable}: the webhook serves HTTPS only; give the PEM file (cert-manager's \
                     Secret mounted, see deploy/kubernetes/admission)"
                ))
            })?;
            if !path.is_file() {
                return Err(invalid(
                    variable,
                    format!("{} is not a readable file", path.display()),
                ));
            }
            Ok(path)
        };
        let cert_file = file(
            &self.admission_tls_cert_file,
            "QFLOWS_ADMISSION_TLS_CERT_FILE",
        )?;
        let key_file = file(
            &self.admission_tls_key_file,
            "QFLOWS_ADMISSION_TLS_KEY_FILE",
        )?;
        if !(10..=MAX_ADMISSION_TIMEOUT_MS).contains(&self.admission_timeout_ms) {
            return Err(invalid(
                "QFLOWS_ADMISSION_TIMEOUT_MS",
                format!(
                    "{} is outside 10..={MAX_ADMISSION_TIMEOUT_MS} (keep it below the webhook's \
                     timeoutSeconds)",
                    self.admission_timeout_ms
                ),
            ));
        }
        if self.admission_cache_ttl_secs > 86_400 {
            return Err(invalid(
                "QFLOWS_ADMISSION_CACHE_TTL_SECS",
                format!("{} is more than a day", self.admission_cache_ttl_secs),
            ));
        }
        if self.admission_metrics_addr == self.admission_listen {
            return Err(invalid(
                "QFLOWS_ADMISSION_METRICS_ADDR",
                "must differ from QFLOWS_ADMISSION_LISTEN (metrics are plain HTTP)".into(),
            ));
        }
        let cluster = match self.kubernetes_cluster.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) if c.len() > 253 || c.chars().any(char::is_control) => {
                return Err(invalid(
                    "QFLOWS_KUBERNETES_CLUSTER",
                    "longer than 253 characters or has control characters".into(),
                ));
            }
            Some(c) => Some(c.to_string()),
        };
        Ok(AdmissionSettings {
            listen: self.admission_listen,
            cert_file,
            key_file,
            metrics_addr: self.admission_metrics_addr,
            timeout: Duration::from_millis(self.admission_timeout_ms),
            cache_ttl: Duration::from_secs(self.admission_cache_ttl_secs),
            cluster,
            task_queue: self.task_queue.clone(),
        })
    }
}

/// The backend for ECR images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScanBackend {
    /// Qualys registry scan (needs the registry sensor).
    Registry,
    /// QScanner, run by the worker.
    Qscanner,
}

/// QScanner's `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QScannerMode {
    /// Fetch the vulnerability report.
    GetReport,
    /// Also evaluate Qualys' central policies (exit 42 deny, 43 audit).
    EvaluatePolicy,
}

impl ScanArgs {
    /// The gate policy, with the allowlist read and checked.
    pub fn gate(&self) -> Result<qflows_activities::gate::GatePolicy, ConfigError> {
        if self.gate_fail_severity > 5 {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_GATE_FAIL_SEVERITY",
                problem: "must be 0 (never) to 5 (critical)".into(),
            });
        }
        let allowlist = match &self.gate_allowlist_file {
            None => Vec::new(),
            Some(path) => {
                let invalid = |problem: String| ConfigError::Invalid {
                    variable: "QFLOWS_GATE_ALLOWLIST_FILE",
                    problem,
                };
                let text = std::fs::read_to_string(path)
                    .map_err(|e| invalid(format!("cannot read {path}: {e}")))?;
                serde_json::from_str(&text).map_err(|e| invalid(format!("{path}: {e}")))?
            }
        };
        Ok(qflows_activities::gate::GatePolicy {
            fail_severity: self.gate_fail_severity,
            max_high: self.gate_max_high,
            fail_on_secrets: true,
            fixable_only: self.gate_fixable_only,
            allowlist,
        })
    }

    /// The gate profiles: the built-in `default` from the `QFLOWS_GATE_*` settings, and the
    /// profiles file's, read now (a file that does not parse fails start-up, naming the key).
    pub fn profiles(&self) -> Result<qflows_activities::gate::judge::Profiles, ConfigError> {
        use qflows_activities::gate::judge::Profiles;
        use qflows_activities::gate::profiles::{GateProfiles, Profile, ProfilesFile};
        let default = Profile::builtin(self.gate()?, self.settings()?.unscanned_verdict);
        match &self.gate_profiles_file {
            None => Ok(Profiles::Builtin(std::sync::Arc::new(
                GateProfiles::builtin(default),
            ))),
            Some(path) => ProfilesFile::open(path, default)
                .map(Profiles::File)
                .map_err(|e| ConfigError::Invalid {
                    variable: "QFLOWS_GATE_PROFILES_FILE",
                    problem: e.to_string(),
                }),
        }
    }

    /// Poll and freshness settings for `ImageScan`.
    pub fn settings(&self) -> Result<qflows_workflows::scan::model::ScanSettings, ConfigError> {
        self.check_poll_intervals()?;
        self.check_destinations()?;
        self.check_scan_backend()?;
        let quarantine = self.quarantine()?;
        let unscanned_verdict = self.unscanned_verdict()?;
        Ok(qflows_workflows::scan::model::ScanSettings {
            quarantine,
            poll_initial_secs: self.scan_poll_initial_secs,
            poll_max_secs: self.scan_poll_max_secs,
            scan_timeout_secs: self.scan_timeout_secs,
            ttl_secs: self.scan_ttl_secs.max(1),
            registry_for_ecr: self.scan_backend == ScanBackend::Registry,
            qscanner_available: self.qscanner_bin.is_some(),
            qscanner_timeout_secs: self.qscanner_timeout_secs,
            // Decided by the worker once it can ask Temporal, and from its task queue.
            search_attributes: false,
            rescan_task_queue: None,
            qscanner_task_queue: None,
            retry_initial_secs: self.scan_retry_initial_secs,
            retry_max_secs: self.scan_retry_max_secs,
            alert_sns: self.sns_topic_arn.is_some(),
            alert_webhook: self.webhook_url.is_some(),
            rescan_running_secs: self.rescan_running_secs.max(1),
            gate_profiles: self.gate_profiles_file.is_some(),
            profile_search_attribute: false,
            unscanned_verdict,
        })
    }

    /// `QFLOWS_SCAN_POLL_*`: at least 1 s, the maximum no less than the initial.
    fn check_poll_intervals(&self) -> Result<(), ConfigError> {
        if self.scan_poll_initial_secs == 0 || self.scan_poll_max_secs < self.scan_poll_initial_secs
        {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_SCAN_POLL_MAX_SECS",
                problem:
                    "poll intervals must be at least 1 s, the maximum no less than the initial"
                        .into(),
            });
        }
        Ok(())
    }

    /// Where results and alerts go: `QFLOWS_RESULTS` a known store, `QFLOWS_WEBHOOK_URL` an
    /// http(s) URL, `QFLOWS_SNS_TOPIC_ARN` an SNS topic ARN.
    fn check_destinations(&self) -> Result<(), ConfigError> {
        qflows_activities::results::ResultsStore::location_kind(&self.results).map_err(|e| {
            ConfigError::Invalid {
                variable: "QFLOWS_RESULTS",
                problem: e.to_string(),
            }
        })?;
        if let Some(url) = &self.webhook_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(ConfigError::Invalid {
                        variable: "QFLOWS_WEBHOOK_URL",
                        problem: "must be an http(s) URL".into(),
                    });
                }
            }
        }
        if let Some(arn) = &self.sns_topic_arn
            && !(arn.starts_with("arn:") && arn.split(':').count() == 6 && arn.contains(":sns:"))
        {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_SNS_TOPIC_ARN",
                problem: format!("`{arn}` is not an SNS topic ARN"),
            });
        }
        Ok(())
    }

    /// The scan backend and its retries: `qscanner` needs its binary (a file), retries wait at
    /// least 1 s, at least one concurrent QScanner run, valid QScanner registries.
    fn check_scan_backend(&self) -> Result<(), ConfigError> {
        if self.scan_backend == ScanBackend::Qscanner && self.qscanner_bin.is_none() {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_SCAN_BACKEND",
                problem: "`qscanner` needs QFLOWS_QSCANNER_BIN".into(),
            });
        }
        if self.scan_retry_initial_secs == 0
            || self.scan_retry_max_secs < self.scan_retry_initial_secs
        {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_SCAN_RETRY_MAX_SECS",
                problem: "retries wait at least 1 s, the maximum no less than the first".into(),
            });
        }
        if self.qscanner_max_concurrent == 0 {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_QSCANNER_MAX_CONCURRENT",
                problem: "must be at least 1".into(),
            });
        }
        self.qscanner_registries()?;
        if let Some(bin) = &self.qscanner_bin
            && !bin.is_file()
        {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_QSCANNER_BIN",
                problem: format!("{} is not a file", bin.display()),
            });
        }
        Ok(())
    }

    /// `QFLOWS_GATE_UNSCANNED`: the verdict for an image that could not be scanned (`none`: no
    /// verdict).
    fn unscanned_verdict(&self) -> Result<Option<Verdict>, ConfigError> {
        match self.gate_unscanned.to_ascii_lowercase().as_str() {
            "pass" => Ok(Some(Verdict::Pass)),
            "audit" => Ok(Some(Verdict::Audit)),
            "fail" => Ok(Some(Verdict::Fail)),
            "none" => Ok(None),
            other => Err(ConfigError::Invalid {
                variable: "QFLOWS_GATE_UNSCANNED",
                problem: format!("`{other}` is not pass, audit, fail or none"),
            }),
        }
    }
}

impl ScanArgs {
    /// `QFLOWS_QUARANTINE` and `QFLOWS_QUARANTINE_APPROVAL_SECS`: `None` for `off`; for
    /// `propose`, the proposals' settings (the worker fills in its task queue).
    pub fn quarantine(
        &self,
    ) -> Result<Option<qflows_workflows::quarantine::model::QuarantineProposals>, ConfigError> {
        use qflows_workflows::quarantine::model::{MAX_APPROVAL_TIMEOUT_SECS, QuarantineProposals};
        let secs = self.quarantine_approval_secs;
        if secs == 0 || secs > MAX_APPROVAL_TIMEOUT_SECS {
            return Err(ConfigError::Invalid {
                variable: "QFLOWS_QUARANTINE_APPROVAL_SECS",
                problem: format!("`{secs}` must be 1 to {MAX_APPROVAL_TIMEOUT_SECS} seconds"),
            });
        }
        match self.quarantine.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(None),
            "propose" => Ok(Some(QuarantineProposals {
                task_queue: String::new(),
                approval_timeout_secs: secs,
            })),
            other => Err(ConfigError::Invalid {
                variable: "QFLOWS_QUARANTINE",
                problem: format!("`{other}` is not off or propose"),
            }),
        }
    }

    /// The registries QScanner may pull from.
    pub fn qscanner_registries(
        &self,
    ) -> Result<qflows_activities::qscanner::RegistryAllowlist, ConfigError> {
        qflows_activities::qscanner::RegistryAllowlist::parse(&self.qscanner_registries).map_err(
            |problem| ConfigError::Invalid {
                variable: "QFLOWS_QSCANNER_REGISTRIES",
                problem,
            },
        )
    }
}

/// `QFLOWS_*` variables qflows reads without a command-line flag (every other one is the
/// `env = "…"` of a flag, found by [`known_variables`]).
pub const VARIABLES_WITHOUT_FLAG: &[&str] = &[
    // A secret: read by [`bridge_key_from_env`], never shown in `--help`.
    "QFLOWS_BRIDGE_KEY",
    // Fault injection for the tests that kill a worker mid-step (activities/src/sensor).
    "QFLOWS_FAULT_EXIT_AFTER",
];

/// `QFLOWS_*` variables read by scripts/ and the integration tests, not by qflows: they may be
/// set where qflows runs.
pub const TOOLING_VARIABLES: &[&str] = &[
    "QFLOWS_BIN_DIR",
    "QFLOWS_VENV",
    "QFLOWS_CACHE",
    "QFLOWS_ETCD",
    "QFLOWS_KUBE_APISERVER",
    "QFLOWS_PROMTOOL",
    "QFLOWS_DEBIAN_MIRROR",
    "QFLOWS_MOTO_BIN",
    "QFLOWS_RECORD_HISTORIES",
    "QFLOWS_TEST_WEBHOOK_DOWN_SECS",
    "QFLOWS_AZURITE_BIN",
    "QFLOWS_CDR_SCALE_POLICIES",
    "QFLOWS_CDR_SCALE_SYNCS",
    "QFLOWS_INVENTORY_ECS_TASKS",
    "QFLOWS_INVENTORY_PODS",
];

/// The `QFLOWS_*` variables of `command`'s flags: the `env = "…"` of every argument of the
/// command and of its subcommands, recursively.
pub fn flag_variables(command: &clap::Command) -> BTreeSet<String> {
    fn walk(command: &clap::Command, found: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env().and_then(|v| v.to_str())
                && name.starts_with("QFLOWS_")
            {
                found.insert(name.to_string());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, found);
        }
    }
    let mut found = BTreeSet::new();
    walk(command, &mut found);
    found
}

/// Every `QFLOWS_*` variable `command` knows: its [`flag_variables`], then
/// [`VARIABLES_WITHOUT_FLAG`] and [`TOOLING_VARIABLES`].
pub fn known_variables(command: &clap::Command) -> BTreeSet<String> {
    let mut known = flag_variables(command);
    known.extend(
        VARIABLES_WITHOUT_FLAG
            .iter()
            .chain(TOOLING_VARIABLES)
            .map(|v| v.to_string()),
    );
    known
}

/// Rejects `QFLOWS_*` variables `command` does not know ([`known_variables`]): a typo should not
/// silently fall back to a default.
pub fn check_unknown_variables(
    command: &clap::Command,
    vars: impl IntoIterator<Item = String>,
) -> Result<(), ConfigError> {
    let known = known_variables(command);
    for name in vars {
        if name.starts_with("QFLOWS_") && !known.contains(&name) {
            let squash = |s: &str| s.replace('_', "");
            let hint = known
                .iter()
                .find(|k| squash(k) == squash(&name))
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            return Err(ConfigError::UnknownVariable { name, hint });
        }
    }
    Ok(())
}

/// What a process takes from the standard environment rather than from `QFLOWS_*`
/// settings: its host name (in its Temporal identity) and the AWS region the SDK would use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEnv {
    /// `HOSTNAME` (a pod's name), else `localhost`.
    pub hostname: String,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`, when either is set.
    pub aws_region: Option<String>,
}

/// The region qflows assumes when AWS names none (the SDK's own convention for global calls).
pub const DEFAULT_AWS_REGION: &str = "us-east-1";

impl ProcessEnv {
    /// Reads it now.
    pub fn read() -> Self {
        ProcessEnv {
            hostname: env_nonempty("HOSTNAME").unwrap_or_else(|| "localhost".into()),
            aws_region: env_nonempty("AWS_REGION").or_else(|| env_nonempty("AWS_DEFAULT_REGION")),
        }
    }

    /// The AWS region, `us-east-1` when none is set.
    pub fn aws_region(&self) -> &str {
        self.aws_region.as_deref().unwrap_or(DEFAULT_AWS_REGION)
    }

    /// This process's Temporal identity: `qflows@<host>:<pid>`.
    pub fn identity(&self) -> String {
        format!("qflows@{}:{}", self.hostname, std::process::id())
    }
}

/// The bridge's key from `QFLOWS_BRIDGE_KEY`, trimmed; `None` when unset or blank.
pub fn bridge_key_from_env() -> Option<String> {
    env_nonempty("QFLOWS_BRIDGE_KEY").map(|k| k.trim().to_string())
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker_args(cached: usize, slots: usize, pollers: &str) -> WorkerArgs {
        let pollers = (!pollers.is_empty()).then(|| pollers.to_string());
        WorkerArgs {
            task_queue: "q".into(),
            metrics_listen: "off".into(),
            scan_role_name: DEFAULT_SCAN_ROLE_NAME.into(),
            iam_propagation_wait_secs: 1,
            shutdown_grace_secs: 1,
            max_cached_workflows: cached,
            workflow_task_slots: slots,
            activity_slots: 10,
            pollers,
        }
    }

    #[test]
    fn tuning_is_validated_and_names_the_variable() {
        let tuning = worker_args(200, 20, "auto:2-20").tuning().unwrap();
        assert_eq!(
            tuning.pollers,
            Some(Pollers::Auto {
                minimum: 2,
                maximum: 20
            })
        );
        assert_eq!(worker_args(10, 10, "").tuning().unwrap().pollers, None);
        assert_eq!(tuning.max_cached_workflows, 200);
        assert_eq!(
            worker_args(0, 1, "1").tuning().unwrap().pollers,
            Some(Pollers::Fixed(1))
        );
        assert!(matches!(
            worker_args(10, 10, "auto").tuning().unwrap().pollers,
            Some(Pollers::Auto { minimum: 1, .. })
        ));
        for (args, variable) in [
            (worker_args(10, 10, "auto:5-2"), "QFLOWS_POLLERS"),
            (worker_args(10, 10, "many"), "QFLOWS_POLLERS"),
            (worker_args(10, 10, "0"), "QFLOWS_POLLERS"),
            (worker_args(10, 10, "1"), "QFLOWS_POLLERS"),
            (worker_args(10, 1, "5"), "QFLOWS_WORKFLOW_TASK_SLOTS"),
            (worker_args(0, 0, "5"), "QFLOWS_WORKFLOW_TASK_SLOTS"),
        ] {
            let err = args.tuning().unwrap_err().to_string();
            assert!(err.starts_with(variable), "{err}");
        }
    }

    #[test]
    fn quarantine_is_off_by_default_and_its_settings_are_validated() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            scan: ScanArgs,
        }
        let scan = |flags: &[&str]| {
            let mut argv = vec!["qflows"];
            argv.extend_from_slice(flags);
            Cli::try_parse_from(argv).unwrap().scan
        };
        assert_eq!(scan(&[]).settings().unwrap().quarantine, None);
        let on = scan(&[
            "--quarantine",
            "propose",
            "--quarantine-approval-secs",
            "600",
        ])
        .settings()
        .unwrap()
        .quarantine
        .unwrap();
        assert_eq!(on.approval_timeout_secs, 600);
        for (flags, variable) in [
            (&["--quarantine", "auto"][..], "QFLOWS_QUARANTINE:"),
            (
                &["--quarantine-approval-secs", "0"][..],
                "QFLOWS_QUARANTINE_APPROVAL_SECS:",
            ),
            (
                &["--quarantine-approval-secs", "2592001"][..],
                "QFLOWS_QUARANTINE_APPROVAL_SECS:",
            ),
        ] {
            let err = scan(flags).settings().unwrap_err().to_string();
            assert!(err.starts_with(variable), "{err}");
        }
    }

    fn admission_args(dir: &std::path::Path) -> AdmissionArgs {
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, "c").unwrap();
        std::fs::write(&key, "k").unwrap();
        AdmissionArgs {
            admission_listen: "127.0.0.1:8443".parse().unwrap(),
            admission_tls_cert_file: Some(cert),
            admission_tls_key_file: Some(key),
            admission_metrics_addr: "127.0.0.1:9465".parse().unwrap(),
            admission_timeout_ms: 2000,
            admission_cache_ttl_secs: 60,
            kubernetes_cluster: Some(" prod-eu ".into()),
            task_queue: "q".into(),
        }
    }

    #[test]
    fn admission_settings_are_validated_and_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("qflows-admission-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = admission_args(&dir);
        let settings = good.settings().unwrap();
        assert_eq!(settings.timeout, Duration::from_millis(2000));
        assert_eq!(settings.cache_ttl, Duration::from_secs(60));
        assert_eq!(settings.cluster.as_deref(), Some("prod-eu"));
        let mut blank = good.clone();
        blank.kubernetes_cluster = Some("  ".into());
        assert_eq!(blank.settings().unwrap().cluster, None);

        let mut cases: Vec<(AdmissionArgs, &str)> = Vec::new();
        let mut a = good.clone();
        a.admission_tls_cert_file = None;
        cases.push((a, "QFLOWS_ADMISSION_TLS_CERT_FILE"));
        let mut a = good.clone();
        a.admission_tls_key_file = Some(dir.join("absent.key"));
        cases.push((a, "QFLOWS_ADMISSION_TLS_KEY_FILE"));
        for ms in [0, 9, MAX_ADMISSION_TIMEOUT_MS + 1] {
            let mut a = good.clone();
            a.admission_timeout_ms = ms;
            cases.push((a, "QFLOWS_ADMISSION_TIMEOUT_MS"));
        }
        let mut a = good.clone();
        a.admission_cache_ttl_secs = 86_401;
        cases.push((a, "QFLOWS_ADMISSION_CACHE_TTL_SECS"));
        let mut a = good.clone();
        a.admission_metrics_addr = a.admission_listen;
        cases.push((a, "QFLOWS_ADMISSION_METRICS_ADDR"));
        let mut a = good.clone();
        a.kubernetes_cluster = Some("x".repeat(254));
        cases.push((a, "QFLOWS_KUBERNETES_CLUSTER"));
        for (args, variable) in cases {
            let err = args.settings().unwrap_err().to_string();
            assert!(err.starts_with(variable), "{variable}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn args() -> QualysArgs {
        QualysArgs {
            pod: Some("us2".into()),
            username: Some("alice".into()),
            password: Some(Secret::new("s3cr3t-pass")),
            max_in_flight: 4,
            request_timeout_secs: 30,
            ..Default::default()
        }
    }

    #[test]
    fn pod_maps_to_gateway_and_bad_pod_names_the_variable() {
        let config = args().to_config().unwrap();
        assert_eq!(
            config.gateway.as_str(),
            "https://gateway.qg2.apps.qualys.com/"
        );
        let err = QualysArgs {
            pod: Some("XX9".into()),
            ..args()
        }
        .to_config()
        .unwrap_err();
        assert!(err.to_string().starts_with("QUALYS_POD:"), "{err}");
    }

    #[test]
    fn credentials_must_be_complete_and_unambiguous() {
        let err = QualysArgs {
            password: None,
            ..args()
        }
        .to_config()
        .unwrap_err();
        assert!(err.to_string().contains("QUALYS_PASSWORD"), "{err}");
        let err = QualysArgs {
            token: Some(Secret::new("tok")),
            ..args()
        }
        .to_config()
        .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let err = QualysArgs {
            gateway_url: Some("ftp://x".into()),
            ..args()
        }
        .to_config()
        .unwrap_err();
        assert!(err.to_string().starts_with("QUALYS_GATEWAY_URL:"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!(
            "{:?}",
            QualysArgs {
                token: Some(Secret::new("tok-123")),
                ..args()
            }
        );
        assert!(
            !shown.contains("s3cr3t-pass") && !shown.contains("tok-123"),
            "{shown}"
        );
    }

    /// A command shaped like qflows': flags with `env` at two levels of subcommands.
    fn command() -> clap::Command {
        use clap::{Arg, Command};
        Command::new("qflows")
            .arg(Arg::new("log").long("log").env("QFLOWS_LOG"))
            .subcommand(
                Command::new("worker")
                    .arg(
                        Arg::new("queue")
                            .long("task-queue")
                            .env("QFLOWS_TASK_QUEUE"),
                    )
                    .arg(Arg::new("home").long("home").env("HOME")),
            )
            .subcommand(Command::new("schedule").subcommand(
                Command::new("cdr").arg(Arg::new("every").long("every").env("QFLOWS_DEEP")),
            ))
    }

    #[test]
    fn known_variables_come_from_every_subcommand() {
        let known = known_variables(&command());
        for name in [
            "QFLOWS_LOG",
            "QFLOWS_TASK_QUEUE",
            "QFLOWS_DEEP",
            "QFLOWS_BRIDGE_KEY",
        ] {
            assert!(known.contains(name), "{name} missing from {known:?}");
        }
        assert!(!known.contains("HOME"), "only QFLOWS_ variables: {known:?}");
        assert!(!known.contains("QFLOWS_TASKQUEUE"));
    }

    #[test]
    fn unknown_qflows_variables_are_rejected_with_a_hint() {
        let err =
            check_unknown_variables(&command(), ["QFLOWS_TASKQUEUE".to_string()]).unwrap_err();
        assert!(
            err.to_string().contains("did you mean QFLOWS_TASK_QUEUE"),
            "{err}"
        );
        check_unknown_variables(
            &command(),
            [
                "QFLOWS_TASK_QUEUE".to_string(),
                "HOME".to_string(),
                "QFLOWS_DEEP".to_string(),
            ],
        )
        .unwrap();
    }
}
