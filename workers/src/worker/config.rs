//! What a worker is configured with, validated before anything connects: built from the
//! command line and environment ([`crate::config`]) by [`WorkerConfig::from_args`].

use crate::config::{
    ConfigError, ProcessEnv, QScannerMode, QualysArgs, ScanArgs, TemporalArgs, WorkerArgs,
    WorkerTuning,
};
use qflows_activities::gate::judge::Profiles;
use qflows_activities::qscanner::{RegistryAllowlist, ScanMode};
use qflows_activities::qualys::QualysConfig;
use qflows_workflows::registry::model::RegistryDefaults;
use qflows_workflows::scan::model::ScanSettings;
use std::sync::Arc;
use std::time::Duration;

/// Everything a worker needs, validated before anything connects.
#[derive(Debug)]
pub struct WorkerConfig {
    /// Where Temporal is.
    pub temporal: TemporalArgs,
    /// The Qualys client.
    pub qualys: QualysConfig,
    /// What to serve.
    pub worker: WorkerArgs,
    /// Registry defaults derived from `worker`.
    pub registry: RegistryDefaults,
    /// Deploy-time scans.
    pub scan: ScanConfig,
    /// Cache, slots and pollers of every task queue.
    pub tuning: WorkerTuning,
    /// Host name and AWS region, from the standard environment.
    pub process: ProcessEnv,
}

/// Validated scan configuration.
#[derive(Debug)]
pub struct ScanConfig {
    /// Poll and freshness settings.
    pub settings: ScanSettings,
    /// The gate profiles (`default` from the `QFLOWS_GATE_*` settings).
    pub profiles: Arc<Profiles>,
    /// Where reports go (directory or `s3://bucket/prefix`).
    pub results: String,
    /// SNS topic for alerts.
    pub sns_topic_arn: Option<String>,
    /// Webhook for alerts.
    pub webhook_url: Option<url::Url>,
    /// Cross-account role name.
    pub cross_account_role_name: Option<String>,
    /// Where Azure calls go.
    pub azure: qflows_activities::azure::AzureSettings,
    /// The QScanner backend, when configured.
    pub qscanner: Option<QScannerSetup>,
}

/// Azure endpoints and cloud: `QFLOWS_AZURE_CLOUD` picks the cloud's Resource Manager unless
/// `QFLOWS_AZURE_ARM_ENDPOINT` names another than the public one.
pub(crate) fn azure_settings(
    scan: &ScanArgs,
) -> Result<qflows_activities::azure::AzureSettings, ConfigError> {
    use qflows_activities::azure::AzureCloud;
    let cloud = scan
        .azure_cloud
        .as_deref()
        .map(AzureCloud::parse)
        .transpose()
        .map_err(|problem| ConfigError::Invalid {
            variable: "QFLOWS_AZURE_CLOUD",
            problem,
        })?;
    let public = AzureCloud::Public.arm_endpoint();
    let arm_endpoint = match cloud {
        Some(c) if scan.azure_arm_endpoint.trim_end_matches('/') == public => {
            c.arm_endpoint().to_string()
        }
        _ => scan.azure_arm_endpoint.clone(),
    };
    Ok(qflows_activities::azure::AzureSettings {
        arm_endpoint,
        acr_endpoint: scan.azure_acr_endpoint.clone(),
        cloud,
    })
}

/// The QScanner backend's configuration.
#[derive(Debug)]
pub struct QScannerSetup {
    /// The binary.
    pub binary: std::path::PathBuf,
    /// `get-report` or `evaluate-policy`.
    pub mode: ScanMode,
    /// Time limit per run.
    pub timeout: Duration,
    /// Scratch space.
    pub work_dir: std::path::PathBuf,
    /// Runs at once on this worker.
    pub max_concurrent: usize,
    /// Where it may pull from.
    pub registries: RegistryAllowlist,
}

impl WorkerConfig {
    /// Validates flags and environment into a worker configuration.
    pub fn from_args(
        temporal: TemporalArgs,
        qualys: &QualysArgs,
        worker: WorkerArgs,
        scan: &ScanArgs,
    ) -> Result<Self, ConfigError> {
        worker.metrics_addr()?;
        Ok(Self {
            tuning: worker.tuning()?,
            scan: ScanConfig {
                settings: scan.settings()?,
                profiles: Arc::new(scan.profiles()?),
                results: scan.results.clone(),
                sns_topic_arn: scan.sns_topic_arn.clone(),
                webhook_url: scan
                    .webhook_url
                    .as_deref()
                    .and_then(|u| url::Url::parse(u).ok()),
                cross_account_role_name: scan.cross_account_role_name.clone(),
                azure: azure_settings(scan)?,
                qscanner: match scan.qscanner_bin.clone() {
                    None => None,
                    Some(binary) => Some(QScannerSetup {
                        binary,
                        mode: match scan.qscanner_mode {
                            QScannerMode::GetReport => ScanMode::GetReport,
                            QScannerMode::EvaluatePolicy => ScanMode::EvaluatePolicy {
                                policy_tags: scan.qscanner_policy_tags.clone(),
                            },
                        },
                        timeout: Duration::from_secs(scan.qscanner_timeout_secs),
                        work_dir: scan
                            .qscanner_work_dir
                            .clone()
                            .unwrap_or_else(|| std::env::temp_dir().join("qflows-qscanner")),
                        max_concurrent: scan.qscanner_max_concurrent,
                        registries: scan.qscanner_registries()?,
                    }),
                },
            },
            qualys: qualys.to_config()?,
            registry: worker.registry_defaults()?,
            process: ProcessEnv::read(),
            temporal,
            worker,
        })
    }
}
