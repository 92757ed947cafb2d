//! One table per task queue: the workflows and activities each queue's worker registers.
//!
//! | Queue | Workflows | Activities |
//! |---|---|---|
//! | `<q>` | all of them (Quarantine included) (entities and `EnsureRegistry` too, for runs started before their own queues) | all |
//! | `<q>-scan` | `ImageScan`, `ScanAlert` | scan, registry |
//! | `<q>-rescan` | — | scan, registry, QScanner |
//! | `<q>-registry` | `EnsureRegistry`, `EnsureAwsConnector` | registry |
//! | `<q>-qscanner` | — | QScanner, with `QFLOWS_QSCANNER_MAX_CONCURRENT` slots |
//!
//! Each area's activities live in `activities/src/<area>/`, beside the contracts they implement in
//! `workflows/src/<area>/contracts.rs`: scan (`scan/mod.rs`; QScanner's in `scan/qscanner.rs`),
//! registry, inventory, quarantine, sensor, cdr.

use super::config::WorkerConfig;
use super::deps::Dependencies;
use super::tuning::{slots, tuned};
use qflows_activities::cdr::CdrActivities;
use qflows_activities::inventory::InventoryActivities;
use qflows_activities::inventory::list::{Lister, ListerSettings};
use qflows_activities::quarantine::QuarantineActivities;
use qflows_activities::{QScannerActivities, RegistryActivities, ScanActivities, SensorActivities};
use qflows_workflows::{
    CdrToPolicy, DeploySensor, EnsureAwsConnector, EnsureRegistry, ImageScan, Inventory,
    Quarantine, ScanAlert, ScanOnDeploy,
};
use std::time::Duration;
use temporalio_sdk::WorkerOptions;

/// Every queue's worker options, the main queue first.
pub fn all(config: &WorkerConfig, deps: &Dependencies) -> anyhow::Result<Vec<WorkerOptions>> {
    let table = Table { config, deps };
    let mut queues = vec![
        table.main()?,
        table.entity()?,
        table.rescan(),
        table.registry_queue()?,
    ];
    queues.extend(table.qscanner_queue());
    Ok(queues)
}

struct Table<'a> {
    config: &'a WorkerConfig,
    deps: &'a Dependencies,
}

impl Table<'_> {
    /// Deploy-time work: the workflows and every activity.
    fn main(&self) -> anyhow::Result<WorkerOptions> {
        let d = self.deps;
        let options = WorkerOptions::new(d.queues.main.clone())
            .register_workflow::<EnsureRegistry>()?
            .register_workflow::<EnsureAwsConnector>()?
            .register_workflow::<ScanOnDeploy>()?
            .register_workflow::<ImageScan>()?
            .register_workflow::<ScanAlert>()?
            .register_workflow::<CdrToPolicy>()?
            .register_workflow::<DeploySensor>()?
            .register_workflow::<Inventory>()?
            .register_workflow::<Quarantine>()?
            .register_activities(self.registry())
            .register_activities(QuarantineActivities::new(d.aws.clone(), d.resolver.clone()))
            .register_activities(InventoryActivities::new(
                Lister::new(d.resolver.clone(), ListerSettings::default()),
                d.client.clone(),
                d.queues.entity.clone(),
                d.results.clone(),
            ))
            .register_activities(CdrActivities::new(d.qualys.clone(), d.results.clone()))
            .register_activities(SensorActivities::new(d.qualys.clone(), d.aws.clone()))
            .register_activities(self.scan())
            .graceful_shutdown_period(self.grace())
            .build();
        Ok(self.tuned(self.with_qscanner(options)))
    }

    /// The `ImageScan` entities (and their alerts): their own queue, so a burst of deploy
    /// workflows never delays a first scan's next step. Their deploy-time activities run here.
    fn entity(&self) -> anyhow::Result<WorkerOptions> {
        let options = WorkerOptions::new(self.deps.queues.entity.clone())
            .register_workflow::<ImageScan>()?
            .register_workflow::<ScanAlert>()?
            .register_activities(self.scan())
            .register_activities(self.registry())
            .graceful_shutdown_period(self.grace())
            .build();
        Ok(self.tuned(options))
    }

    /// Rescans: the same activities on their own queue and slots. (Registry activities too: a
    /// rescan waits for the shared `EnsureRegistry` from this queue.)
    fn rescan(&self) -> WorkerOptions {
        let options = WorkerOptions::new(self.deps.queues.rescan.clone())
            .register_activities(self.scan())
            .register_activities(self.registry())
            .graceful_shutdown_period(self.grace())
            .build();
        self.tuned(self.with_qscanner(options))
    }

    /// `EnsureRegistry` as scans start it: its own queue, so it is never starved by a burst.
    fn registry_queue(&self) -> anyhow::Result<WorkerOptions> {
        let options = WorkerOptions::new(self.deps.queues.registry.clone())
            .register_workflow::<EnsureRegistry>()?
            .register_workflow::<EnsureAwsConnector>()?
            .register_activities(self.registry())
            .graceful_shutdown_period(self.grace())
            .build();
        Ok(self.tuned(options))
    }

    /// QScanner runs: their own queue with a fixed number of slots, so a burst of new digests
    /// waits in Temporal instead of pulling dozens of images at once into this worker.
    fn qscanner_queue(&self) -> Option<WorkerOptions> {
        let backend = self.deps.qscanner.as_ref()?;
        let options = WorkerOptions::new(self.deps.queues.qscanner.clone())
            .tuner(slots(&self.config.tuning, backend.slots))
            .graceful_shutdown_period(self.grace())
            .build();
        Some(self.with_qscanner(options))
    }

    fn scan(&self) -> ScanActivities {
        let d = self.deps;
        ScanActivities {
            qualys: d.qualys.clone(),
            resolver: d.resolver.clone(),
            temporal: d.client.clone(),
            task_queue: d.queues.entity.clone(),
            settings: d.settings.clone(),
            judge: d.judge.clone(),
            results: d.results.clone(),
            notifier: d.notifier.clone(),
        }
    }

    fn registry(&self) -> RegistryActivities {
        let d = self.deps;
        RegistryActivities::new(
            d.qualys.clone(),
            d.aws.clone(),
            self.config.registry.clone(),
            d.canonical_runs.clone(),
        )
    }

    fn with_qscanner(&self, mut options: WorkerOptions) -> WorkerOptions {
        let d = self.deps;
        if let Some(q) = &d.qscanner {
            options.register_activities(QScannerActivities::new(
                q.template.clone(),
                q.mode.clone(),
                d.qualys.clone(),
                d.resolver.clone(),
                d.judge.clone(),
                d.results.clone(),
                q.registries.clone(),
            ));
        }
        options
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.config.worker.shutdown_grace_secs)
    }

    fn tuned(&self, options: WorkerOptions) -> WorkerOptions {
        tuned(options, &self.config.tuning)
    }
}
