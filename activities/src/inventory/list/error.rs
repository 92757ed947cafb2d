//! [`ListError`]: why a listing failed, the failure type and retryability of each cause, and
//! the size limit every platform's listing checks ([`check_size`]).

use crate::aws::AwsError;
use crate::azure::AzureError;
use crate::failure::{IntoFailure, failure};
use qflows_workflows::FailureType;
use qflows_workflows::input::InputError;
use temporalio_sdk::activities::ActivityError;

/// A listing stops (not retryable) beyond this many containers: an inventory that large is a
/// misconfigured scope or an attack on the worker's memory, not a cluster.
pub const MAX_CONTAINERS: usize = 1_000_000;
/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// This worker cannot list that kind of scope (e.g. an Azure scope without Azure access).
    #[error("this worker cannot list {0} scopes")]
    Unsupported(&'static str),
    /// The scope itself is invalid.
    #[error(transparent)]
    InvalidScope(#[from] InputError),
    /// An AWS call failed (after the SDK's own retries).
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// An Azure call failed.
    #[error(transparent)]
    Azure(#[from] AzureError),
    /// No usable kubeconfig or context (unknown context, unreadable file).
    #[error("kubernetes configuration: {0}")]
    KubeConfig(String),
    /// The API server refused or failed a request.
    #[error("kubernetes {what}: {source}")]
    Kube {
        /// What was asked, e.g. `list pods`.
        what: &'static str,
        /// Cause.
        source: ::kube::Error,
    },
    /// The credentials reach another AWS account than the scope's (no role for it): listing
    /// would report that account's tasks as the scope's.
    #[error(
        "the worker's AWS credentials reach account {reached}, not the scope's {scope}: give the \
         scope a roleArn, or set QFLOWS_CROSS_ACCOUNT_ROLE_NAME"
    )]
    WrongAccount {
        /// The scope's account.
        scope: String,
        /// The account the credentials belong to.
        reached: String,
    },
    /// More containers than [`MAX_CONTAINERS`].
    #[error("the scope lists more than {MAX_CONTAINERS} containers; listing stopped")]
    TooLarge,
}

impl ListError {
    /// Bounded failure type name for Temporal and metrics.
    pub fn type_name(&self) -> FailureType {
        match self {
            ListError::Unsupported(_) => FailureType::InventoryUnsupported,
            ListError::InvalidScope(_) => FailureType::InvalidInput,
            ListError::Aws(e) => e.type_name(),
            ListError::Azure(e) => match e {
                AzureError::Credentials(_) => FailureType::AzureCredentials,
                AzureError::NotFound { .. } => FailureType::AzureNotFound,
                AzureError::Refused { .. } => FailureType::AzureRefused,
                AzureError::Unavailable { .. } => FailureType::AzureUnavailable,
                AzureError::BadResponse { .. } => FailureType::AzureBadResponse,
                AzureError::InvalidInput(_) => FailureType::InvalidInput,
            },
            ListError::KubeConfig(_) => FailureType::KubeConfigError,
            ListError::Kube { source, .. } => match source {
                ::kube::Error::Api(s) if s.code == 401 || s.code == 403 => {
                    FailureType::KubeForbidden
                }
                ::kube::Error::Api(s) if s.code == 404 => FailureType::KubeNotFound,
                // An expired `continue` token: a new listing from the start will do.
                ::kube::Error::Api(s) if s.code == 410 => FailureType::KubeListExpired,
                ::kube::Error::Api(s) if s.code == 429 || s.code >= 500 => {
                    FailureType::KubeUnavailable
                }
                ::kube::Error::Api(_) => FailureType::KubeRejected,
                ::kube::Error::Auth(_) => FailureType::KubeAuthFailed,
                ::kube::Error::InferConfig(_) | ::kube::Error::InferKubeconfig(_) => {
                    FailureType::KubeConfigError
                }
                ::kube::Error::SerdeError(_) => FailureType::KubeBadResponse,
                _ => FailureType::KubeUnavailable,
            },
            ListError::WrongAccount { .. } => FailureType::InventoryWrongAccount,
            ListError::TooLarge => FailureType::InventoryTooLarge,
        }
    }

    /// Whether a retry may succeed: throttling, 5xx, timeouts and network failures yes;
    /// refusals, unknown contexts and bad configuration no.
    pub fn is_retryable(&self) -> bool {
        match self {
            ListError::Aws(e) => e.is_retryable(),
            other => matches!(
                other.type_name(),
                FailureType::AzureUnavailable
                    | FailureType::AzureBadResponse
                    | FailureType::KubeUnavailable
                    | FailureType::KubeListExpired
                    | FailureType::KubeBadResponse
            ),
        }
    }
}

impl IntoFailure for ListError {
    fn into_failure(self) -> ActivityError {
        match self {
            ListError::Aws(e) => e.into_failure(),
            ListError::Azure(e) => e.into_failure(),
            other => {
                let type_name = other.type_name();
                let retryable = other.is_retryable();
                failure(other, type_name, retryable, None)
            }
        }
    }
}

/// Stops a listing that grew beyond [`MAX_CONTAINERS`].
pub(crate) fn check_size(n: usize) -> Result<(), ListError> {
    if n > MAX_CONTAINERS {
        Err(ListError::TooLarge)
    } else {
        Ok(())
    }
}
