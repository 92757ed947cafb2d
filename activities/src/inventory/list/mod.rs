//! Listing what runs in a scope: ECS tasks ([`ecs`]), Kubernetes pods ([`kube`]), Azure
//! container groups, container apps and jobs ([`azure`]).
//!
//! Every listing ends the same way ([`Lister::finish`]): a container's digest is the one the
//! platform reports (ECS `imageDigest`, a pod status' `imageID`), else the one its image
//! reference carries, else its tag resolved in the registry as ScanOnDeploy resolves it (ECR
//! `DescribeImages`, ACR's manifest `HEAD`; no other registry is contacted), else the container
//! is listed as unresolved with the reason. Everything read is attacker-controlled: places are
//! cut with [`bounded_place`], image references and reasons are cut too, and a digest counts
//! only when it is exactly `sha256:` and 64 lowercase hex digits.

pub mod azure;
pub mod ecs;
pub mod kube;

use crate::aws::AwsError;
use crate::azure::AzureError;
use crate::failure::{IntoFailure, failure};
use crate::resolve::Resolver;
use futures::{StreamExt, TryStreamExt};
use qflows_workflows::FailureType;
use qflows_workflows::input::InputError;
use qflows_workflows::inventory::InventoryScope;
use qflows_workflows::inventory::model::{RunningContainer, bounded_place};
use qflows_workflows::scan::{ImageRef, RegistryKind};
use std::collections::HashMap;
use std::sync::Arc;
use temporalio_sdk::activities::ActivityError;

/// A listing stops (not retryable) beyond this many containers: an inventory that large is a
/// misconfigured scope or an attack on the worker's memory, not a cluster.
pub const MAX_CONTAINERS: usize = 1_000_000;
/// An image reference is cut to this many characters (a valid one is shorter: 255 for the
/// name, 128 for the tag, 71 for the digest).
pub const MAX_IMAGE_CHARS: usize = 512;
/// A reason why a container has no digest is cut to this many characters.
pub const MAX_REASON_CHARS: usize = 300;

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

/// How a [`Lister`] pages and how hard it leans on the APIs.
#[derive(Debug, Clone)]
pub struct ListerSettings {
    /// The kubeconfig file for Kubernetes scopes (default: `$KUBECONFIG`, `~/.kube/config`, or
    /// in-cluster when no context is named).
    pub kubeconfig: Option<String>,
    /// Pods per page (`limit`).
    pub kube_page_size: u32,
    /// Calls in flight at once for `DescribeTasks` batches and registry tag resolutions.
    pub concurrency: usize,
}

impl Default for ListerSettings {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            kube_page_size: 500,
            concurrency: 4,
        }
    }
}

/// Lists running containers with the worker's credentials: its AWS identity (and cross-account
/// role, or the scope's), its kubeconfig, its Azure identity, all through the [`Resolver`]
/// ScanOnDeploy uses.
#[derive(Clone)]
pub struct Lister {
    resolver: Arc<Resolver>,
    settings: ListerSettings,
}

impl std::fmt::Debug for Lister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lister")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A container as a platform lists it, before its digest is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The image reference, as listed (not yet cut).
    pub image: String,
    /// Where it runs (not yet cut).
    pub place: String,
    /// The digest the platform reports, unchecked.
    pub reported: Option<String>,
    /// Why nothing it says may be used (e.g. its resource ID was refused).
    pub refused: Option<String>,
}

/// An AWS role to resolve ECR tags of one account with (an AWS scope's `roleArn`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EcrRole<'a> {
    pub account: &'a str,
    pub role_arn: &'a str,
}

impl Lister {
    /// A lister reading through `resolver` (its AWS configuration, cross-account role and
    /// Azure client).
    pub fn new(resolver: Arc<Resolver>, settings: ListerSettings) -> Self {
        Self { resolver, settings }
    }

    /// Every container running in `scope`. `progress` is called with the number of containers
    /// listed so far, after each page (the activity heartbeats with it).
    pub async fn list(
        &self,
        scope: &InventoryScope,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Vec<RunningContainer>, ListError> {
        scope.validate()?;
        let (seen, role) = match scope {
            InventoryScope::Aws {
                account_id,
                region,
                role_arn,
            } => {
                let seen =
                    ecs::list(self, account_id, region, role_arn.as_deref(), progress).await?;
                let role = role_arn.as_deref().map(|role_arn| EcrRole {
                    account: account_id,
                    role_arn,
                });
                (seen, role)
            }
            InventoryScope::Kubernetes { context, .. } => {
                (kube::list(self, context.as_deref(), progress).await?, None)
            }
            InventoryScope::Azure { subscription_id } => {
                (azure::list(self, subscription_id, progress).await?, None)
            }
        };
        let listed = self.finish(seen, role, progress).await?;
        progress(listed.len() as u64);
        Ok(listed)
    }

    /// Settles each container's digest (see the module doc) and cuts what was read. `progress`
    /// is called again (with the same count) after each tag resolved, so a long resolution
    /// keeps the activity heartbeating.
    pub(crate) async fn finish(
        &self,
        seen: Vec<Seen>,
        role: Option<EcrRole<'_>>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Vec<RunningContainer>, ListError> {
        let listed = seen.len() as u64;
        // First pass: what the platform and the references say; tags left to resolve.
        enum Next {
            Done(Result<String, String>),
            Tag(String),
        }
        let mut pending: HashMap<String, ImageRef> = HashMap::new();
        let mut firsts = Vec::with_capacity(seen.len());
        for s in &seen {
            let bad_report = s
                .reported
                .as_deref()
                .filter(|d| checked_digest(d).is_none());
            let next = if let Some(why) = &s.refused {
                Next::Done(Err(why.clone()))
            } else if let Some(d) = s.reported.as_deref().and_then(checked_digest) {
                Next::Done(Ok(d.to_string()))
            } else if s.image.chars().count() > MAX_IMAGE_CHARS {
                Next::Done(Err(format!(
                    "the image reference is longer than {MAX_IMAGE_CHARS} characters"
                )))
            } else {
                match ImageRef::parse(&s.image) {
                    Err(e) => Next::Done(Err(format!("unusable image reference: {}", e.problem))),
                    Ok(r) => match &r.digest {
                        Some(d) => Next::Done(Ok(d.clone())),
                        None => {
                            let key = r.canonical();
                            pending.entry(key.clone()).or_insert(r);
                            Next::Tag(key)
                        }
                    },
                }
            };
            firsts.push((next, bad_report.is_some()));
        }

        // Second pass: each distinct tag once, a few at a time.
        let resolved: HashMap<String, Result<String, String>> = futures::stream::iter(pending)
            .map(|(key, image)| async move {
                let answer = self.resolve_tag(&image, role).await?;
                Ok::<_, ListError>((key, answer))
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .inspect(|_| progress(listed))
            .try_collect()
            .await?;

        Ok(seen
            .into_iter()
            .zip(firsts)
            .map(|(s, (next, bad_report))| {
                let answer = match next {
                    Next::Done(a) => a,
                    Next::Tag(key) => resolved
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| Err("the tag was not resolved".into())),
                };
                let (digest, unresolved) = match answer {
                    Ok(d) => (Some(d), None),
                    Err(why) => {
                        let why = if bad_report {
                            format!("the platform reported a malformed digest; {why}")
                        } else {
                            why
                        };
                        (None, Some(why.chars().take(MAX_REASON_CHARS).collect()))
                    }
                };
                RunningContainer {
                    digest,
                    image: s.image.chars().take(MAX_IMAGE_CHARS).collect(),
                    place: bounded_place(&s.place),
                    unresolved,
                }
            })
            .collect())
    }

    /// The digest of a tagged reference, as ScanOnDeploy resolves it: ECR and ACR only. A
    /// refusal (no such tag, access denied) is a reason; an outage is an error.
    async fn resolve_tag(
        &self,
        image: &ImageRef,
        role: Option<EcrRole<'_>>,
    ) -> Result<Result<String, String>, ListError> {
        let tag = image.tag_or_latest().unwrap_or("latest");
        let answer = match image.kind() {
            RegistryKind::Ecr {
                account_id, region, ..
            } => {
                let role_arn = role.filter(|r| r.account == account_id).map(|r| r.role_arn);
                match self
                    .resolver
                    .ecr_digest_as(&account_id, &region, &image.repository, tag, role_arn)
                    .await
                {
                    Ok(answer) => answer,
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(e) => Err(format!("ECR tag `{tag}` not resolved: {e}")),
                }
            }
            RegistryKind::Acr { .. } => match self.resolver.azure() {
                Err(_) => Err(format!(
                    "ACR tag `{tag}` not resolved: this worker has no Azure access"
                )),
                Ok(azure) => match azure
                    .acr_digest(&image.registry, &image.repository, tag)
                    .await
                {
                    Ok(answer) => answer,
                    Err(e @ (AzureError::Unavailable { .. } | AzureError::BadResponse { .. })) => {
                        return Err(e.into());
                    }
                    Err(e) => Err(format!("ACR tag `{tag}` not resolved: {e}")),
                },
            },
            _ => Err(format!(
                "no digest reported, and tag `{tag}` of {} is not resolved (only ECR and ACR \
                 tags are)",
                image.registry
            )),
        };
        Ok(answer.and_then(|d| match checked_digest(&d) {
            Some(d) => Ok(d.to_string()),
            None => Err("the registry answered with a malformed digest".into()),
        }))
    }

    pub(crate) fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub(crate) fn settings(&self) -> &ListerSettings {
        &self.settings
    }
}

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

/// `digest` when it is exactly `sha256:` and 64 lowercase hex digits.
pub fn checked_digest(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(digest)
}

/// Stops a listing that grew beyond [`MAX_CONTAINERS`].
pub(crate) fn check_size(n: usize) -> Result<(), ListError> {
    if n > MAX_CONTAINERS {
        Err(ListError::TooLarge)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
