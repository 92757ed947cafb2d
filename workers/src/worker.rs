//! `qflows worker`: serves qflows' workflows and activities on a task queue.

use crate::config::{
    ConfigError, Pollers, QScannerMode, QualysArgs, ScanArgs, TemporalArgs, WorkerArgs,
    WorkerTuning,
};
use crate::{telemetry, temporal};
use qflows_activities::SensorActivities;
use qflows_activities::aws::Aws;
use qflows_activities::gate::judge::{Judge, Profiles};
use qflows_activities::inventory::InventoryActivities;
use qflows_activities::inventory::list::{Lister, ListerSettings};
use qflows_activities::notify::Notifier;
use qflows_activities::policies::CdrActivities;
use qflows_activities::qscanner::{QScannerConfig, RegistryAllowlist, ScanMode};
use qflows_activities::qualys::{Pod, Secret};
use qflows_activities::qualys::{QualysClient, QualysConfig};
use qflows_activities::registry::CanonicalRuns;
use qflows_activities::resolve::{Resolver, ResolverSettings};
use qflows_activities::results::ResultsStore;
use qflows_activities::{QScannerActivities, RegistryActivities, ScanActivities};
use qflows_workflows::registry::RegistryDefaults;
use qflows_workflows::scan::model::ScanSettings;
use qflows_workflows::{
    CdrToPolicy, EnsureAwsConnector, EnsureRegistry, ImageScan, ScanAlert, ScanOnDeploy,
};
use qflows_workflows::{DeploySensor, Inventory};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tracing::{info, warn};

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
fn azure_settings(scan: &ScanArgs) -> Result<qflows_activities::azure::AzureSettings, ConfigError> {
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
            temporal,
            worker,
        })
    }
}

/// Runs the worker until `shutdown` resolves, then drains in-flight work and returns.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let telemetry = telemetry::start(config.worker.metrics_addr()?)?;
    if let Some(addr) = telemetry.metrics_addr {
        info!(%addr, "Prometheus metrics at http://{addr}/metrics");
    }
    let runtime = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .telemetry_options(telemetry.options.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("Temporal runtime options: {e}"))?,
    )?;
    let identity = format!(
        "qflows@{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        std::process::id()
    );
    let client = temporal::connect(&config.temporal, &identity).await?;
    let mut settings = config.scan.settings.clone();
    match temporal::search_attributes(&client).await {
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
    let qualys = QualysClient::new(config.qualys.clone())?;
    if let Some(meter) = telemetry.meter.clone() {
        telemetry::export_qualys_metrics(meter, qualys.clone());
    }
    let aws = Arc::new(Aws::new());
    let resolver = Resolver::new(
        aws.clone(),
        ResolverSettings {
            cross_account_role_name: config.scan.cross_account_role_name,
            external_id: None,
            session_name: "qflows".into(),
        },
    );
    // Azure deployments and ACR images: used only when such events arrive.
    let resolver = Arc::new(
        match qflows_activities::azure::Azure::from_env(config.scan.azure.clone()) {
            Ok(azure) => resolver.with_azure(azure),
            Err(e) => {
                info!("Azure access not set up ({e}); Azure events will fail until it is");
                resolver
            }
        },
    );
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into());
    let results = ResultsStore::from_location(&config.scan.results, &aws, &region)
        .await
        .map_err(|e| anyhow::anyhow!("QFLOWS_RESULTS: {e}"))?;
    let judge = Arc::new(Judge::new(config.scan.profiles.clone(), results.clone()));
    let sns = match &config.scan.sns_topic_arn {
        // An SNS topic lives in the region its ARN names.
        Some(arn) => {
            let topic_region = arn.split(':').nth(3).unwrap_or(&region).to_string();
            Some((aws.sns(&topic_region).await, arn.clone()))
        }
        None => None,
    };
    let notifier = Notifier::new(sns, config.scan.webhook_url.clone());
    let rescan_queue = format!("{}-rescan", config.worker.task_queue);
    let registry_queue = format!("{}-registry", config.worker.task_queue);
    let qscanner_queue = format!("{}-qscanner", config.worker.task_queue);
    let canonical_runs = CanonicalRuns::new(client.clone(), registry_queue.clone());
    let registry = || {
        RegistryActivities::new(
            qualys.clone(),
            aws.clone(),
            config.registry.clone(),
            canonical_runs.clone(),
        )
    };
    settings.rescan_task_queue = Some(rescan_queue.clone());
    let qscanner_slots = config.scan.qscanner.as_ref().map(|q| q.max_concurrent);
    if qscanner_slots.is_some() {
        settings.qscanner_task_queue = Some(qscanner_queue.clone());
    }
    let qscanner_template = config.scan.qscanner.map(|q| {
        // What QScanner runs of a worker that died left behind (their locks are free).
        if let Err(e) = qflows_activities::qscanner::sweep_work_dir(&q.work_dir) {
            tracing::warn!(work_dir = %q.work_dir.display(), error = %e, "cannot sweep the QScanner work directory");
        }
        if std::process::id() == 1 {
            tracing::warn!(
                "qflows runs as PID 1 without an init: processes QScanner leaves behind would \
                 not be reaped; the image runs qflows under tini (deploy/Dockerfile)"
            );
        }
        let gateway = config
            .qualys
            .gateway
            .as_str()
            .trim_end_matches('/')
            .to_string();
        let template = QScannerConfig {
            pod: None,
            gateway_url: Some(gateway),
            timeout: q.timeout,
            ..QScannerConfig::new(q.binary, Pod::US1, Secret::new("set per scan"), q.work_dir)
        };
        (template, q.mode, q.registries)
    });
    let qscanner = || {
        qscanner_template
            .clone()
            .map(|(template, mode, registries)| {
                QScannerActivities::new(
                    template,
                    mode,
                    qualys.clone(),
                    resolver.clone(),
                    judge.clone(),
                    results.clone(),
                    registries,
                )
            })
    };
    let entity_queue = qflows_workflows::scan::model::entity_task_queue(&config.worker.task_queue);
    let scan = || ScanActivities {
        qualys: qualys.clone(),
        resolver: resolver.clone(),
        temporal: client.clone(),
        task_queue: entity_queue.clone(),
        settings: settings.clone(),
        judge: judge.clone(),
        results: results.clone(),
        notifier: notifier.clone(),
    };
    let grace = Duration::from_secs(config.worker.shutdown_grace_secs);
    let tuning = config.tuning;

    // Deploy-time work: the workflows and every activity.
    let mut options = WorkerOptions::new(config.worker.task_queue.clone())
        .register_workflow::<EnsureRegistry>()?
        .register_workflow::<EnsureAwsConnector>()?
        .register_workflow::<ScanOnDeploy>()?
        .register_workflow::<ImageScan>()?
        .register_workflow::<ScanAlert>()?
        .register_workflow::<CdrToPolicy>()?
        .register_workflow::<DeploySensor>()?
        .register_workflow::<Inventory>()?
        .register_activities(registry())
        .register_activities(InventoryActivities::new(
            Lister::new(resolver.clone(), ListerSettings::default()),
            client.clone(),
            entity_queue.clone(),
            results.clone(),
        ))
        .register_activities(CdrActivities::new(qualys.clone(), results.clone()))
        .register_activities(SensorActivities::new(qualys.clone(), aws.clone()))
        .register_activities(scan());
    if let Some(q) = qscanner() {
        options = options.register_activities(q);
    }
    let mut worker = Worker::new(
        &runtime,
        client.clone(),
        tuned(options.graceful_shutdown_period(grace).build(), &tuning),
    )?;

    // Rescans: the same activities on their own queue and slots.
    // (Registry activities too: a rescan waits for the shared `EnsureRegistry` from this queue.)
    let mut rescan_options = WorkerOptions::new(rescan_queue.clone())
        .register_activities(scan())
        .register_activities(registry());
    if let Some(q) = qscanner() {
        rescan_options = rescan_options.register_activities(q);
    }
    let mut rescan_worker = Worker::new(
        &runtime,
        client.clone(),
        tuned(
            rescan_options.graceful_shutdown_period(grace).build(),
            &tuning,
        ),
    )?;

    // The ImageScan entities (and their alerts): their own queue, so a burst of deploy
    // workflows never delays a first scan's next step. Their deploy-time activities run here.
    // (The main queue serves ImageScan too, for entities started before.)
    let entity_options = WorkerOptions::new(entity_queue.clone())
        .register_workflow::<ImageScan>()?
        .register_workflow::<ScanAlert>()?
        .register_activities(scan())
        .register_activities(registry());
    let mut entity_worker = Worker::new(
        &runtime,
        client.clone(),
        tuned(
            entity_options.graceful_shutdown_period(grace).build(),
            &tuning,
        ),
    )?;

    // EnsureRegistry as scans start it: its own queue, so it is never starved by a burst.
    // (The main queue serves it too, for `qflows registry ensure` and runs started before.)
    let registry_options = WorkerOptions::new(registry_queue.clone())
        .register_workflow::<EnsureRegistry>()?
        .register_workflow::<EnsureAwsConnector>()?
        .register_activities(registry());
    let mut registry_worker = Worker::new(
        &runtime,
        client.clone(),
        tuned(
            registry_options.graceful_shutdown_period(grace).build(),
            &tuning,
        ),
    )?;

    // QScanner runs: their own queue with a fixed number of slots, so a burst of new digests
    // waits in Temporal instead of pulling dozens of images at once into this worker.
    let qscanner_options = WorkerOptions::new(qscanner_queue.clone())
        .tuner(slots(&tuning, qscanner_slots.unwrap_or(1)))
        .graceful_shutdown_period(grace);
    let qscanner_options = match qscanner() {
        Some(q) => qscanner_options.register_activities(q),
        None => qscanner_options,
    };
    let mut qscanner_worker = match qscanner_slots {
        Some(_) => Some(Worker::new(&runtime, client, qscanner_options.build())?),
        None => None,
    };

    let mut stops = vec![
        worker.shutdown_handle(),
        entity_worker.shutdown_handle(),
        rescan_worker.shutdown_handle(),
        registry_worker.shutdown_handle(),
    ];
    stops.extend(qscanner_worker.as_mut().map(|w| w.shutdown_handle()));
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: finishing in-flight tasks");
        for stop in stops {
            stop();
        }
    });
    info!(
        task_queue = %config.worker.task_queue,
        entity_task_queue = %entity_queue,
        rescan_task_queue = %rescan_queue,
        registry_task_queue = %registry_queue,
        qscanner_task_queue = qscanner_slots.map(|_| qscanner_queue.as_str()),
        qscanner_max_concurrent = qscanner_slots,
        "worker started"
    );
    // `run` is not `Send`: all of them stay on this task.
    let qscans = async {
        match qscanner_worker.as_mut() {
            Some(w) => w.run().await,
            None => Ok(()),
        }
    };
    let (deploys, entities, rescans, registries, qscans) = tokio::join!(
        worker.run(),
        entity_worker.run(),
        rescan_worker.run(),
        registry_worker.run(),
        qscans
    );
    deploys?;
    entities?;
    rescans?;
    registries?;
    qscans?;
    info!("worker stopped");
    Ok(())
}

/// `options` with the configured cache, slots and pollers (also what `qflows-bench`'s baseline
/// worker applies to its own queue, so the baseline runs as tuned as the product).
pub fn tuned(mut options: WorkerOptions, tuning: &WorkerTuning) -> WorkerOptions {
    use temporalio_sdk::runtime::{AutoscalingOptions, PollerBehavior};
    options.max_cached_workflows = tuning.max_cached_workflows;
    options.tuner = slots(tuning, tuning.activity_slots).into();
    if let Some(pollers) = tuning.pollers {
        let behavior = match pollers {
            Pollers::Fixed(n) => PollerBehavior::SimpleMaximum(n),
            Pollers::Auto { minimum, maximum } => PollerBehavior::Autoscaling(
                AutoscalingOptions::builder()
                    .minimum(minimum)
                    .maximum(maximum)
                    .initial(5.clamp(minimum, maximum))
                    .build(),
            ),
        };
        options.workflow_task_poller_behavior = Some(behavior);
        options.activity_task_poller_behavior = Some(behavior);
    }
    options
}

/// A tuner with the configured workflow-task slots and `activities` activity (and local
/// activity) slots.
fn slots(
    tuning: &WorkerTuning,
    activities: usize,
) -> temporalio_sdk::runtime::worker_tuner::TunerHolder {
    use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
    TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(tuning.workflow_task_slots))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(activities.max(1)))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(tuning.activity_slots))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(10))
        .build()
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
