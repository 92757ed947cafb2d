//! The activities workflows call: name, input and output of each, implemented in `qflows-activities`.
//!
//! Workflows depend on these markers instead of on the activity implementations, so this crate
//! stays free of I/O dependencies. The implementing side declares
//! `#[activity(definition = qflows_workflows::contracts::FindRegistry)]`, and the compiler checks
//! that its input and output types match the ones here.
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

pub use crate::inventory::contracts::*;
pub use crate::quarantine::contracts::*;
pub use crate::registry::contracts::*;
pub use crate::scan::contracts::*;

use crate::cdr::{
    EvidenceBatch, FetchFindings, ImportLegacy, MergeEvidence, MergedPage, PolicyRecord,
    PolicyUpdate, PublishBatch, PublishPolicies, PublishReport, WindowBatch,
};

activity_contract!(
    /// Reads the CDR findings of a window (all pages) and groups them into evidence per policy.
    FetchCdrEvidence = "cdr.FetchEvidence": FetchFindings => EvidenceBatch
);
activity_contract!(
    /// Renders, validates and writes/applies policies (idempotent: unchanged ones are no-ops).
    PublishCdrPolicies = "cdr.Publish": PublishPolicies => PublishReport
);
activity_contract!(
    /// Reads every page of a window's findings (heartbeating, resumable), groups them into
    /// evidence per policy and stores the batch; answers with its hash and the first names.
    FetchCdrWindow = "cdr.FetchWindow": FetchFindings => WindowBatch
);
activity_contract!(
    /// Merges a stored batch into the named policies' stored evidence (one page).
    MergeCdrEvidence = "cdr.MergeEvidence": MergeEvidence => MergedPage
);
activity_contract!(
    /// Renders policies from their stored evidence, validates and writes/applies them (a batch).
    PublishCdrBatch = "cdr.PublishBatch": PublishBatch => PublishReport
);
activity_contract!(
    /// Stores a chunk of CdrToPolicy's state (for continue-as-new); answers with its hash.
    SaveCdrState = "cdr.SaveState": Vec<PolicyRecord> => String
);
activity_contract!(
    /// Loads a chunk of CdrToPolicy's state by its hash.
    LoadCdrState = "cdr.LoadState": String => Vec<PolicyRecord>
);
activity_contract!(
    /// Stores the evidence of records carried by a run from before `cdr-limits`.
    ImportCdrLegacy = "cdr.ImportLegacy": ImportLegacy => Vec<PolicyUpdate>
);

activity_contract!(
    /// Renders and applies the sensor (task definition and DAEMON service, or Kubernetes
    /// objects), comparing first: an unchanged sensor is left alone.
    ApplySensor = "sensor.Apply": crate::sensor::DeploySensorInput => crate::sensor::SensorApplied
);
activity_contract!(
    /// Where the sensor's roll-out stands (desired, ready, updated).
    SensorRolloutStatus = "sensor.RolloutStatus": crate::sensor::SensorDeployment => crate::sensor::RolloutStatus
);
activity_contract!(
    /// Restores what ran before (or removes what this run created); returns what it did.
    RollbackSensor = "sensor.Rollback": crate::sensor::SensorDeployment => String
);
activity_contract!(
    /// How many active registry sensors Qualys lists (`GET /sensors`).
    CountRegistrySensors = "qualys.CountRegistrySensors": () => u64
);
activity_contract!(
    /// Before any write: refuses clusters the sensor cannot run on (GKE Autopilot), checks the
    /// credentials (non-empty), dry-runs every object (refusals fail it, warnings are kept),
    /// records the previous state of everything the run may change and the sensors Qualys knows.
    PrepareSensor = "sensor.Prepare": crate::sensor::DeploySensorInput => crate::sensor::SensorPlan
);
activity_contract!(
    /// Applies the planned sensor (comparing first); what to restore comes from the plan.
    ApplyPlannedSensor = "sensor.ApplyPlanned": crate::sensor::SensorRun => crate::sensor::SensorApplied
);
activity_contract!(
    /// Looks at the roll-out: its status, or that the cluster cannot be observed.
    ObserveSensorRollout = "sensor.ObserveRollout": crate::sensor::SensorRun => crate::sensor::RolloutObservation
);
activity_contract!(
    /// Counts the sensors this run brought up that registered with Qualys.
    VerifySensorRegistered = "sensor.VerifyRegistered": crate::sensor::SensorRun => crate::sensor::VerifyObservation
);
activity_contract!(
    /// Restores every object the run changed or created, from the plan, touching only qflows'
    /// fields and leaving drifted objects alone.
    RollbackPlannedSensor = "sensor.RollbackPlanned": crate::sensor::SensorRun => crate::sensor::RollbackReport
);
