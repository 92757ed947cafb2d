//! Errors at the activity boundary: each becomes a Temporal failure with a stable type name,
//! marked non-retryable when retrying cannot help.
//!
//! Type names (`QualysAuthFailed`, `QualysRateLimited`, …) are a public contract: they appear in
//! workflow histories and failure messages, and alerting can match on them. They are the
//! variants of [`FailureType`]; every mapping here and in the error types is exhaustive.

use crate::aws::AwsError;
use crate::qualys::QualysError;
use qflows_workflows::FailureType;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// A failure type name and whether Temporal should retry it.
pub(crate) fn failure(
    err: impl std::error::Error + Send + Sync + 'static,
    type_name: FailureType,
    retryable: bool,
    retry_after: Option<std::time::Duration>,
) -> ActivityError {
    crate::metrics::failed(type_name.as_str(), retryable);
    ActivityError::application(
        ApplicationFailure::builder(err)
            .type_name(type_name.into())
            .non_retryable(!retryable)
            .maybe_next_retry_delay(retry_after)
            .build(),
    )
}

/// The failure type of a Qualys error: one arm per [`QualysError`] variant, so a new variant
/// must be given its own type rather than alerting as another.
pub fn qualys_type_name(err: &QualysError) -> FailureType {
    match err {
        QualysError::Auth { .. } => FailureType::QualysAuthFailed,
        QualysError::Forbidden { .. } => FailureType::QualysForbidden,
        QualysError::BadRequest { .. } => FailureType::QualysBadRequest,
        QualysError::NotFound { .. } => FailureType::QualysNotFound,
        QualysError::RateLimited { .. } => FailureType::QualysRateLimited,
        QualysError::Server { .. } => FailureType::QualysServerError,
        QualysError::Timeout { .. } => FailureType::QualysTimeout,
        QualysError::Transport { .. } => FailureType::QualysUnreachable,
        QualysError::Decode { .. } => FailureType::QualysBadResponse,
        QualysError::Config { .. } => FailureType::QualysConfigError,
    }
}

/// Converts a domain error into the activity failure Temporal records.
///
/// (A trait rather than `From`: the SDK's blanket `From<E: Into<anyhow::Error>>` would turn every
/// error into a retryable failure with no type name.)
pub trait IntoFailure {
    /// The failure, typed and marked retryable or not.
    fn into_failure(self) -> ActivityError;
}

impl IntoFailure for QualysError {
    fn into_failure(self) -> ActivityError {
        let type_name = qualys_type_name(&self);
        let retryable = self.is_retryable();
        let retry_after = self.retry_after();
        failure(self, type_name, retryable, retry_after)
    }
}

impl IntoFailure for AwsError {
    fn into_failure(self) -> ActivityError {
        let type_name = self.type_name();
        let retryable = self.is_retryable();
        failure(self, type_name, retryable, None)
    }
}
