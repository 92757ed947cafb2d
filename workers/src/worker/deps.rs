//! What the activities share, built once from the configuration: the Qualys client, AWS and
//! Azure access, the results store, the gate profiles, the alert channels, the QScanner
//! template, and the scan settings as this worker's namespace and queues make them.

use super::config::{QScannerSetup, WorkerConfig};
use crate::temporal;
use qflows_activities::aws::Aws;
use qflows_activities::gate::judge::Judge;
use qflows_activities::notify::Notifier;
use qflows_activities::qscanner::{QScannerConfig, RegistryAllowlist, ScanMode};
use qflows_activities::qualys::{Pod, QualysClient, Secret};
use qflows_activities::registry::CanonicalRuns;
use qflows_activities::resolve::{Resolver, ResolverSettings};
use qflows_activities::results::ResultsStore;
use qflows_workflows::scan::model::ScanSettings;
use std::sync::Arc;
use temporalio_client::Client;
use temporalio_common::telemetry::metrics::CoreMeter;
use tracing::{info, warn};

/// The task queues one worker serves, derived from `QFLOWS_TASK_QUEUE`.
#[derive(Debug, Clone)]
pub struct Queues {
    /// Deploy-time workflows and every activity.
    pub main: String,
    /// `ImageScan` entities and their alerts.
    pub entity: String,
    /// Rescans.
    pub rescan: String,
    /// `EnsureRegistry` as scans start it.
    pub registry: String,
    /// QScanner runs.
    pub qscanner: String,
}

impl Queues {
    fn of(task_queue: &str) -> Self {
        Queues {
            main: task_queue.to_string(),
            entity: qflows_workflows::scan::model::entity_task_queue(task_queue),
            rescan: format!("{task_queue}-rescan"),
            registry: format!("{task_queue}-registry"),
            qscanner: format!("{task_queue}-qscanner"),
        }
    }
}

/// The QScanner backend as activities get it: a template (each scan gets the client's current
/// Qualys token), the mode, the registries it may pull from, and its slots.
#[derive(Clone)]
pub struct QScannerBackend {
    /// The command template.
    pub template: QScannerConfig,
    /// `get-report` or `evaluate-policy`.
    pub mode: ScanMode,
    /// Where it may pull from.
    pub registries: RegistryAllowlist,
    /// Runs at once on this worker.
    pub slots: usize,
}

/// Everything the activities are built from.
pub struct Dependencies {
    /// Temporal.
    pub client: Client,
    /// The task queues.
    pub queues: Queues,
    /// The settings `ImageScan` reads (`scan.Settings`).
    pub settings: ScanSettings,
    /// The one Qualys client.
    pub qualys: QualysClient,
    /// AWS clients per region.
    pub aws: Arc<Aws>,
    /// Image → digest (ECS, ECR, Azure, registries).
    pub resolver: Arc<Resolver>,
    /// Full reports.
    pub results: ResultsStore,
    /// Verdicts under the gate profiles.
    pub judge: Arc<Judge>,
    /// Alert channels.
    pub notifier: Notifier,
    /// QScanner, when configured.
    pub qscanner: Option<QScannerBackend>,
    /// The shared `EnsureRegistry` runs (with the registries ensured lately: one per worker).
    pub canonical_runs: CanonicalRuns,
}

impl Dependencies {
    /// Builds them; only the results store and SNS touch the network (a bucket's region).
    pub async fn build(
        config: &WorkerConfig,
        client: Client,
        meter: Option<Arc<dyn CoreMeter>>,
    ) -> anyhow::Result<Self> {
        let queues = Queues::of(&config.worker.task_queue);
        let settings = settings(config, &client, &queues).await;
        let qualys = QualysClient::new(config.qualys.clone())?;
        if let Some(meter) = meter {
            crate::telemetry::export_qualys_metrics(meter, qualys.clone());
        }
        let aws = Arc::new(Aws::new());
        let resolver = resolver(config, aws.clone());
        let region = config.process.aws_region();
        let results = ResultsStore::from_location(&config.scan.results, &aws, region)
            .await
            .map_err(|e| anyhow::anyhow!("QFLOWS_RESULTS: {e}"))?;
        let judge = Arc::new(Judge::new(config.scan.profiles.clone(), results.clone()));
        let sns = match &config.scan.sns_topic_arn {
            // An SNS topic lives in the region its ARN names.
            Some(arn) => {
                let topic_region = arn.split(':').nth(3).unwrap_or(region).to_string();
                Some((aws.sns(&topic_region).await, arn.clone()))
            }
            None => None,
        };
        let notifier = Notifier::new(sns, config.scan.webhook_url.clone());
        let qscanner = config
            .scan
            .qscanner
            .as_ref()
            .map(|q| qscanner(q, config.qualys.gateway.as_str()));
        let canonical_runs = CanonicalRuns::new(client.clone(), queues.registry.clone());
        Ok(Dependencies {
            canonical_runs,
            client,
            queues,
            settings,
            qualys,
            aws,
            resolver,
            results,
            judge,
            notifier,
            qscanner,
        })
    }
}

/// The configured settings, completed with what only the running worker knows: whether the
/// namespace has qflows' search attributes, and its rescan and QScanner queues.
async fn settings(config: &WorkerConfig, client: &Client, queues: &Queues) -> ScanSettings {
    let mut settings = config.scan.settings.clone();
    match temporal::search_attributes(client).await {
        Ok(registered) if registered.missing.is_empty() => {
            settings.search_attributes = true;
            settings.profile_search_attribute = registered.missing_optional.is_empty();
            if !settings.profile_search_attribute {
                warn!(
                    missing = ?registered.missing_optional,
                    "optional search attributes are not registered: verdicts will not name their \
                     gate profile in search attributes (output and reports still do; README \
                     \"Gate profiles\")"
                );
            }
        }
        Ok(temporal::SearchAttributeRegistration { missing, .. }) => warn!(
            ?missing,
            "qflows' search attributes are not registered in this namespace: scans will not be \
             searchable in the UI until they are (see the README, `temporal operator search-attribute create`)"
        ),
        Err(e) => warn!("cannot list search attributes ({e}); scans will not set them"),
    }
    settings.rescan_task_queue = Some(queues.rescan.clone());
    // Quarantine proposals run where Quarantine is registered: the main task queue.
    if let Some(q) = settings.quarantine.as_mut() {
        q.task_queue = queues.main.clone();
        info!(
            approval_timeout_secs = q.approval_timeout_secs,
            "QFLOWS_QUARANTINE=propose: failing images running in ECS services are proposed for \
             quarantine (each waits for approval)"
        );
    }
    if config.scan.qscanner.is_some() {
        settings.qscanner_task_queue = Some(queues.qscanner.clone());
    }
    settings
}

/// ECS/ECR resolution, with Azure when its credentials are set up (used only when Azure
/// events arrive, so a worker without them still starts).
fn resolver(config: &WorkerConfig, aws: Arc<Aws>) -> Arc<Resolver> {
    let resolver = Resolver::new(
        aws,
        ResolverSettings {
            cross_account_role_name: config.scan.cross_account_role_name.clone(),
            external_id: None,
            session_name: "qflows".into(),
        },
    );
    Arc::new(
        match qflows_activities::azure::Azure::from_env(config.scan.azure.clone()) {
            Ok(azure) => resolver.with_azure(azure),
            Err(e) => {
                info!("Azure access not set up ({e}); Azure events will fail until it is");
                resolver
            }
        },
    )
}

/// The QScanner template; sweeps what runs of a worker that died left behind.
fn qscanner(q: &QScannerSetup, gateway: &str) -> QScannerBackend {
    // Their locks are free: nothing of this worker runs yet.
    if let Err(e) = qflows_activities::qscanner::sweep_work_dir(&q.work_dir) {
        warn!(work_dir = %q.work_dir.display(), error = %e, "cannot sweep the QScanner work directory");
    }
    if std::process::id() == 1 {
        warn!(
            "qflows runs as PID 1 without an init: processes QScanner leaves behind would \
             not be reaped; the image runs qflows under tini (deploy/Dockerfile)"
        );
    }
    let template = QScannerConfig {
        pod: None,
        gateway_url: Some(gateway.trim_end_matches('/').to_string()),
        timeout: q.timeout,
        // The real token is set per scan, from the Qualys client.
        ..QScannerConfig::new(
            q.binary.clone(),
            Pod::US1,
            Secret::new("set per scan"),
            q.work_dir.clone(),
        )
    };
    QScannerBackend {
        template,
        mode: q.mode.clone(),
        registries: q.registries.clone(),
        slots: q.max_concurrent,
    }
}
