//! The activities `DeploySensor` calls: name, input and output of each. Implemented in
//! `activities/src/sensor/`; registered in `workers/src/worker/queues.rs`.
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

activity_contract! {
    /// Renders and applies the sensor (task definition and DAEMON service, or Kubernetes
    /// objects), comparing first: an unchanged sensor is left alone.
    ApplySensor = "sensor.Apply": crate::sensor::model::DeploySensorInput => crate::sensor::model::SensorApplied;

    /// Where the sensor's roll-out stands (desired, ready, updated).
    SensorRolloutStatus = "sensor.RolloutStatus": crate::sensor::model::SensorDeployment => crate::sensor::model::RolloutStatus;

    /// Restores what ran before (or removes what this run created); returns what it did.
    RollbackSensor = "sensor.Rollback": crate::sensor::model::SensorDeployment => String;

    /// How many active registry sensors Qualys lists (`GET /sensors`).
    CountRegistrySensors = "qualys.CountRegistrySensors": () => u64;

    /// Before any write: refuses clusters the sensor cannot run on (GKE Autopilot), checks the
    /// credentials (non-empty), dry-runs every object (refusals fail it, warnings are kept),
    /// records the previous state of everything the run may change and the sensors Qualys knows.
    PrepareSensor = "sensor.Prepare": crate::sensor::model::DeploySensorInput => crate::sensor::model::SensorPlan;

    /// Applies the planned sensor (comparing first); what to restore comes from the plan.
    ApplyPlannedSensor = "sensor.ApplyPlanned": crate::sensor::model::SensorRun => crate::sensor::model::SensorApplied;

    /// Looks at the roll-out: its status, or that the cluster cannot be observed.
    ObserveSensorRollout = "sensor.ObserveRollout": crate::sensor::model::SensorRun => crate::sensor::model::RolloutObservation;

    /// Counts the sensors this run brought up that registered with Qualys.
    VerifySensorRegistered = "sensor.VerifyRegistered": crate::sensor::model::SensorRun => crate::sensor::model::VerifyObservation;

    /// Restores every object the run changed or created, from the plan, touching only qflows'
    /// fields and leaving drifted objects alone.
    RollbackPlannedSensor = "sensor.RollbackPlanned": crate::sensor::model::SensorRun => crate::sensor::model::RollbackReport;
}
