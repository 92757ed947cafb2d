//! The activities behind `DeploySensor`: rendering ([`render`], shared with the CLI), applying
//! to ECS ([`ecs`]) or Kubernetes ([`kube`]), and asking Qualys whether the sensor registered.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

pub mod ecs;
pub mod kube;
pub mod render;

use crate::aws::Aws;
use crate::failure::IntoFailure;
use crate::policies::PolicyOutputError;
use crate::qualys::QualysClient;
use qflows_workflows::contracts;
use qflows_workflows::sensor::{
    DeploySensorInput, RolloutStatus, SensorApplied, SensorDeployment, SensorTarget,
};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

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

/// Why the sensor could not be applied, beyond the cluster's own errors.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The Kubernetes API refused or failed a request.
    #[error(transparent)]
    Kube(#[from] PolicyOutputError),
    /// A credential reference names no existing Secret key (names only; never a value).
    #[error("{field} `{reference}`: {problem}")]
    MissingCredential {
        /// The input field (`activationIdRef`, `customerIdRef`).
        field: &'static str,
        /// The reference as given.
        reference: String,
        /// What is missing and how to fix it.
        problem: String,
    },
}

impl IntoFailure for SensorError {
    fn into_failure(self) -> ActivityError {
        match self {
            SensorError::Kube(e) => e.into_failure(),
            // The operator must create the Secret: retrying cannot help.
            e @ SensorError::MissingCredential { .. } => {
                crate::failure::failure(e, "SensorCredentialsMissing", false, None)
            }
        }
    }
}

async fn ecs_client(aws: &Aws, input: &DeploySensorInput) -> aws_sdk_ecs::Client {
    let region = input.region.as_deref().unwrap_or("us-east-1");
    aws_sdk_ecs::Client::new(&aws.config(region).await)
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
        match input.target {
            SensorTarget::Ecs => {
                let client = ecs_client(&self.aws, &input).await;
                ecs::apply(&client, &input)
                    .await
                    .map_err(IntoFailure::into_failure)
            }
            _ => {
                let client = kube::client(&input)
                    .await
                    .map_err(IntoFailure::into_failure)?;
                kube::apply(&client, &input)
                    .await
                    .map_err(IntoFailure::into_failure)
            }
        }
    }

    /// Reads the roll-out status.
    #[activity(definition = contracts::SensorRolloutStatus)]
    pub async fn rollout_status(
        self: Arc<Self>,
        _ctx: ActivityContext,
        deployment: SensorDeployment,
    ) -> Result<RolloutStatus, ActivityError> {
        match deployment.input.target {
            SensorTarget::Ecs => {
                let client = ecs_client(&self.aws, &deployment.input).await;
                ecs::rollout_status(&client, &deployment)
                    .await
                    .map_err(IntoFailure::into_failure)
            }
            _ => {
                let client = kube::client(&deployment.input)
                    .await
                    .map_err(IntoFailure::into_failure)?;
                kube::rollout_status(&client)
                    .await
                    .map_err(IntoFailure::into_failure)
            }
        }
    }

    /// Restores what ran before.
    #[activity(definition = contracts::RollbackSensor)]
    pub async fn rollback(
        self: Arc<Self>,
        _ctx: ActivityContext,
        deployment: SensorDeployment,
    ) -> Result<String, ActivityError> {
        match deployment.input.target {
            SensorTarget::Ecs => {
                let client = ecs_client(&self.aws, &deployment.input).await;
                ecs::rollback(&client, &deployment)
                    .await
                    .map_err(IntoFailure::into_failure)
            }
            _ => {
                let client = kube::client(&deployment.input)
                    .await
                    .map_err(IntoFailure::into_failure)?;
                kube::rollback(&client, &deployment)
                    .await
                    .map_err(IntoFailure::into_failure)
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
