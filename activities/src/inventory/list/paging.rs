//! Retrying a page: how often and how long a throttled or failing page is asked again (the
//! Azure and Kubernetes listings; the AWS SDK retries by itself).

use super::error::ListError;
use crate::azure::AzureError;
use qflows_workflows::FailureType;

/// Attempts per page before a throttled or failing page fails the listing (the SDK's standard
/// retry mode does this for AWS; Resource Manager and the Kubernetes API server get it here).
pub const PAGE_ATTEMPTS: u32 = 4;
/// The longest wait between two attempts, whatever `Retry-After` asks.
const MAX_PAGE_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `call` until it succeeds, fails for good, or [`PAGE_ATTEMPTS`] are used up, waiting
/// 1, 2, 4 s between attempts (or the server's `Retry-After`, at most 30 s).
pub(crate) async fn retrying<T, F, Fut>(mut call: F) -> Result<T, ListError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ListError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            // An expired `continue` token fails again on the same page: the caller restarts.
            Err(e)
                if e.is_retryable()
                    && e.type_name() != FailureType::KubeListExpired
                    && attempt < PAGE_ATTEMPTS =>
            {
                let backoff = std::time::Duration::from_secs(1 << (attempt - 1));
                let wait = match &e {
                    ListError::Azure(AzureError::Unavailable {
                        retry_after_secs: Some(secs),
                        ..
                    }) => std::time::Duration::from_secs(*secs),
                    _ => backoff,
                }
                .min(MAX_PAGE_BACKOFF);
                tracing::info!(error = %e, attempt, wait_secs = wait.as_secs(),
                    "inventory: a page failed; trying again");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
