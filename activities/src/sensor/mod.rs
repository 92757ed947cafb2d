//! The activities behind `DeploySensor`: rendering ([`render`], shared with the CLI), applying
//! to ECS ([`ecs`]) or Kubernetes ([`kube`]), and asking Qualys whether the sensor registered.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

pub(crate) mod ecs;
mod error;
mod fault;
mod fields;
mod kube;
mod kube_plan;
mod observation;
pub mod render;
mod resource;
mod verify;

use crate::aws::Aws;
use crate::failure::IntoFailure;
use crate::kube::KubeError;
use crate::qualys::QualysClient;
use qflows_workflows::FailureType;
use qflows_workflows::sensor::contracts;
use qflows_workflows::sensor::model::{
    DeploySensorInput, RollbackReport, RolloutObservation, RolloutStatus, SensorApplied,
    SensorDeployment, SensorPlan, SensorRun, SensorTarget, VerifyObservation,
};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub use error::SensorError;

/// State shared by the sensor activities.
pub struct SensorActivities {
    qualys: QualysClient,
    aws: Arc<Aws>,
}

impl SensorActivities {
    /// Activities using this Qualys client and AWS configuration.
    pub fn new(qualys: QualysClient, aws: Arc<Aws>) -> Self {
        Self { qualys, aws }
    }
}

/// A roll-back that stopped because the cluster could not be reached; names what remains.
#[derive(Debug, thiserror::Error)]
#[error("remaining: {0}")]
struct RollbackIncomplete(String);

async fn ecs_client(aws: &Aws, input: &DeploySensorInput) -> aws_sdk_ecs::Client {
    let region = input.region.as_deref().unwrap_or("us-east-1");
    aws_sdk_ecs::Client::new(&aws.config(region).await)
}

/// A client for where the input's sensor runs.
enum Cluster {
    Ecs(aws_sdk_ecs::Client),
    Kube(::kube::Client),
}

impl SensorActivities {
    /// Connects to the input's target: ECS in its region (this cannot fail), any other target
    /// through its kubeconfig and context.
    async fn connect(&self, input: &DeploySensorInput) -> Result<Cluster, KubeError> {
        Ok(match input.target {
            SensorTarget::Ecs => Cluster::Ecs(ecs_client(&self.aws, input).await),
            _ => Cluster::Kube(kube::client(input).await?),
        })
    }
}

#[activities]
impl SensorActivities {
    /// Applies the sensor, comparing first.
    #[activity(definition = contracts::ApplySensor)]
    pub async fn apply(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DeploySensorInput,
    ) -> Result<SensorApplied, ActivityError> {
        match self
            .connect(&input)
            .await
            .map_err(IntoFailure::into_failure)?
        {
            Cluster::Ecs(client) => ecs::apply(&client, &input)
                .await
                .map_err(IntoFailure::into_failure),
            Cluster::Kube(client) => kube::apply(&client, &input)
                .await
                .map_err(IntoFailure::into_failure),
        }
    }

    /// Reads the roll-out status.
    #[activity(definition = contracts::SensorRolloutStatus)]
    pub async fn rollout_status(
        self: Arc<Self>,
        _ctx: ActivityContext,
        deployment: SensorDeployment,
    ) -> Result<RolloutStatus, ActivityError> {
        let cluster = self.connect(&deployment.input).await;
        match cluster.map_err(IntoFailure::into_failure)? {
            Cluster::Ecs(client) => ecs::rollout_status(&client, &deployment)
                .await
                .map_err(IntoFailure::into_failure),
            Cluster::Kube(client) => kube::rollout_status(&client)
                .await
                .map_err(IntoFailure::into_failure),
        }
    }

    /// Restores what ran before.
    #[activity(definition = contracts::RollbackSensor)]
    pub async fn rollback(
        self: Arc<Self>,
        _ctx: ActivityContext,
        deployment: SensorDeployment,
    ) -> Result<String, ActivityError> {
        let cluster = self.connect(&deployment.input).await;
        match cluster.map_err(IntoFailure::into_failure)? {
            Cluster::Ecs(client) => ecs::rollback(&client, &deployment)
                .await
                .map_err(IntoFailure::into_failure),
            Cluster::Kube(client) => kube::rollback(&client, &deployment)
                .await
                .map_err(IntoFailure::into_failure),
        }
    }

    /// Pre-flight and snapshot before any write (see [`kube_plan`]).
    #[activity(definition = contracts::PrepareSensor)]
    pub async fn prepare(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: DeploySensorInput,
    ) -> Result<SensorPlan, ActivityError> {
        let prepared_at_ms = verify::now_ms();
        let cluster = self.connect(&input).await;
        let (objects, ecs, warnings) = match cluster.map_err(IntoFailure::into_failure)? {
            Cluster::Ecs(client) => {
                let snapshot = ecs::snapshot(&client, &input)
                    .await
                    .map_err(IntoFailure::into_failure)?;
                (Vec::new(), Some(snapshot), Vec::new())
            }
            Cluster::Kube(client) => {
                let prepared = kube_plan::prepare(&client, &input)
                    .await
                    .map_err(IntoFailure::into_failure)?;
                for w in &prepared.warnings {
                    tracing::warn!(warning = %w, "sensor pre-flight warning");
                }
                (prepared.objects, None, prepared.warnings)
            }
        };
        let sensors = self
            .qualys
            .sensors()
            .await
            .map_err(IntoFailure::into_failure)?;
        Ok(SensorPlan {
            objects,
            ecs,
            warnings,
            baseline_sensors: verify::registry_sensor_ids(&sensors),
            prepared_at_ms,
        })
    }

    /// Applies the planned sensor.
    #[activity(definition = contracts::ApplyPlannedSensor)]
    pub async fn apply_planned(
        self: Arc<Self>,
        _ctx: ActivityContext,
        run: SensorRun,
    ) -> Result<SensorApplied, ActivityError> {
        match self
            .connect(&run.input)
            .await
            .map_err(IntoFailure::into_failure)?
        {
            Cluster::Ecs(client) => ecs::apply_planned(&client, &run)
                .await
                .map_err(IntoFailure::into_failure),
            Cluster::Kube(client) => kube_plan::apply(&client, &run)
                .await
                .map_err(IntoFailure::into_failure),
        }
    }

    /// Looks at the roll-out; an unreachable cluster is an answer, not a failure.
    #[activity(definition = contracts::ObserveSensorRollout)]
    pub async fn observe_rollout(
        self: Arc<Self>,
        _ctx: ActivityContext,
        run: SensorRun,
    ) -> Result<RolloutObservation, ActivityError> {
        Ok(match self.connect(&run.input).await {
            Ok(Cluster::Ecs(client)) => {
                let deployment = SensorDeployment {
                    input: run.input.clone(),
                    applied: SensorApplied {
                        changed: true,
                        applied: ecs::find_service(
                            &client,
                            &run.input.cluster,
                            run.input.service_name(),
                        )
                        .await
                        .ok()
                        .flatten()
                        .and_then(|s| s.task_definition().map(str::to_string))
                        .unwrap_or_default(),
                        previous: None,
                        created: false,
                    },
                };
                match ecs::rollout_status(&client, &deployment).await {
                    Ok(status) => RolloutObservation {
                        status: Some(status),
                        unobservable: None,
                        reason: None,
                    },
                    Err(e) => observation::from_error(
                        &e,
                        e.is_retryable() || e.type_name() == FailureType::AwsAccessDenied,
                    ),
                }
            }
            Ok(Cluster::Kube(client)) => kube_plan::observe(&client).await,
            Err(e) => observation::unobservable(&e),
        })
    }

    /// Counts this run's sensors that registered with Qualys; Qualys not answering is an
    /// answer, not a failure.
    #[activity(definition = contracts::VerifySensorRegistered)]
    pub async fn verify_registered(
        self: Arc<Self>,
        _ctx: ActivityContext,
        run: SensorRun,
    ) -> Result<VerifyObservation, ActivityError> {
        let unobservable = |why: String| VerifyObservation {
            unobservable: Some(why),
            matched: 0,
            needed: 0,
            detail: String::new(),
        };
        // The nodes (Kubernetes) and how many sensors must have registered.
        let (nodes, ready) = match self.connect(&run.input).await {
            Ok(Cluster::Ecs(client)) => {
                match ecs::find_service(&client, &run.input.cluster, run.input.service_name()).await
                {
                    Ok(service) => (
                        None,
                        service
                            .map(|s| s.running_count().max(0) as u64)
                            .unwrap_or(0),
                    ),
                    Err(e) => return Ok(unobservable(e.to_string())),
                }
            }
            Ok(Cluster::Kube(client)) => match kube_plan::ready_nodes(&client).await {
                Ok(nodes) => {
                    let n = nodes.len() as u64;
                    (Some(nodes), n)
                }
                Err(e) => return Ok(unobservable(e.to_string())),
            },
            Err(e) => return Ok(unobservable(e.to_string())),
        };
        let sensors =
            match tokio::time::timeout(std::time::Duration::from_secs(25), self.qualys.sensors())
                .await
            {
                Ok(Ok(sensors)) => sensors,
                Ok(Err(e)) => return Ok(unobservable(format!("Qualys: {e}"))),
                Err(_) => return Ok(unobservable("Qualys: no answer within 25 s".into())),
            };
        Ok(verify::count(&run, &sensors, nodes.as_deref(), ready))
    }

    /// Restores everything the plan recorded.
    #[activity(definition = contracts::RollbackPlannedSensor)]
    pub async fn rollback_planned(
        self: Arc<Self>,
        _ctx: ActivityContext,
        run: SensorRun,
    ) -> Result<RollbackReport, ActivityError> {
        match self
            .connect(&run.input)
            .await
            .map_err(IntoFailure::into_failure)?
        {
            Cluster::Ecs(client) => Ok(ecs::rollback_planned(&client, &run).await),
            Cluster::Kube(client) => {
                let (report, transient) = kube_plan::rollback(&client, &run).await;
                // An unreachable cluster is worth another attempt (restored objects are left
                // alone the next time); drift is final.
                if transient {
                    return Err(crate::failure::failure(
                        RollbackIncomplete(report.remaining.join("; ")),
                        FailureType::SensorRollbackIncomplete,
                        true,
                        None,
                    ));
                }
                Ok(report)
            }
        }
    }

    /// Counts the active registry sensors Qualys lists.
    #[activity(definition = contracts::CountRegistrySensors)]
    pub async fn count_registry_sensors(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<u64, ActivityError> {
        let sensors = self
            .qualys
            .sensors()
            .await
            .map_err(IntoFailure::into_failure)?;
        let registry = sensors
            .iter()
            .filter(|s| {
                s.extra.get("registrySensor").and_then(|v| v.as_bool()) == Some(true)
                    && s.status
                        .as_deref()
                        .is_none_or(|st| st.eq_ignore_ascii_case("active"))
            })
            .count();
        Ok(registry as u64)
    }
}
