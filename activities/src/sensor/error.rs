//! [`SensorError`]: why the sensor could not be applied, and the failure type each cause
//! reports to Temporal. A leaf both the ECS and the Kubernetes appliers import.

use crate::failure::IntoFailure;
use crate::kube::KubeError;
use qflows_workflows::FailureType;
use temporalio_sdk::activities::ActivityError;

/// Why the sensor could not be applied, beyond the cluster's own errors.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The Kubernetes API refused or failed a request.
    #[error(transparent)]
    Kube(#[from] KubeError),
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
    /// The cluster cannot run the sensor (GKE Autopilot); nothing was written.
    #[error("{0}")]
    Unsupported(String),
    /// The API server refused objects in the pre-flight dry run; nothing was written.
    #[error("the API server refused the sensor in a dry run, so nothing was written: {}{}",
        refusals.join("; "),
        if warnings.is_empty() { String::new() } else { format!(" (warnings: {})", warnings.join("; ")) })]
    Preflight {
        /// Each refusal, named by object.
        refusals: Vec<String>,
        /// The dry run's warnings.
        warnings: Vec<String>,
    },
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    /// A Qualys call failed.
    #[error(transparent)]
    Qualys(#[from] crate::qualys::QualysError),
}

impl IntoFailure for SensorError {
    fn into_failure(self) -> ActivityError {
        match self {
            SensorError::Kube(e) => e.into_failure(),
            // The operator must create the Secret: retrying cannot help.
            e @ SensorError::MissingCredential { .. } => {
                crate::failure::failure(e, FailureType::SensorCredentialsMissing, false, None)
            }
            e @ SensorError::Unsupported(_) => {
                crate::failure::failure(e, FailureType::SensorUnsupportedCluster, false, None)
            }
            e @ SensorError::Preflight { .. } => {
                crate::failure::failure(e, FailureType::SensorPreflightRefused, false, None)
            }
            SensorError::Aws(e) => e.into_failure(),
            SensorError::Qualys(e) => e.into_failure(),
        }
    }
}
