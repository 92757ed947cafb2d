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
//!
//! What the per-platform listings share lives in leaves they import, never in this file:
//! [`ListError`] and the size limit (`error`), [`ListerSettings`] (`settings`), the `Seen`
//! container (`seen`) and the page retries (`paging`).

mod azure;
mod ecs;
mod error;
mod kube;
mod paging;
mod seen;
mod settings;

pub use error::{ListError, MAX_CONTAINERS};
pub use paging::PAGE_ATTEMPTS;
pub use settings::ListerSettings;

use crate::azure::AzureError;
use crate::resolve::Resolver;
use futures::{StreamExt, TryStreamExt};
use qflows_workflows::inventory::InventoryScope;
use qflows_workflows::inventory::model::{RunningContainer, bounded_place};
use qflows_workflows::scan::{ImageRef, RegistryKind};
use seen::Seen;
use std::collections::HashMap;
use std::sync::Arc;

/// An image reference is cut to this many characters (a valid one is shorter: 255 for the
/// name, 128 for the tag, 71 for the digest).
pub const MAX_IMAGE_CHARS: usize = 512;
/// A reason why a container has no digest is cut to this many characters.
pub const MAX_REASON_CHARS: usize = 300;

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
                let seen = ecs::list(
                    &self.resolver,
                    &self.settings,
                    account_id,
                    region,
                    role_arn.as_deref(),
                    progress,
                )
                .await?;
                let role = role_arn.as_deref().map(|role_arn| EcrRole {
                    account: account_id,
                    role_arn,
                });
                (seen, role)
            }
            InventoryScope::Kubernetes { context, .. } => (
                kube::list(&self.settings, context.as_deref(), progress).await?,
                None,
            ),
            InventoryScope::Azure { subscription_id } => (
                azure::list(&self.resolver, subscription_id, progress).await?,
                None,
            ),
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
        let mut pending: HashMap<String, ImageRef> = HashMap::new();
        let firsts: Vec<(Next, bool)> = seen
            .iter()
            .map(|s| {
                let bad_report = s
                    .reported
                    .as_deref()
                    .filter(|d| checked_digest(d).is_none());
                (first_answer(s, &mut pending), bad_report.is_some())
            })
            .collect();

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
                running_container(s, answer, bad_report)
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
}

/// What the first pass of [`Lister::finish`] knows of a container's digest.
enum Next {
    /// Settled: the digest, or why there is none.
    Done(Result<String, String>),
    /// A tag to resolve in its registry: the key of `pending`.
    Tag(String),
}

/// The digest the platform or the image reference gives `s`, else the tag to resolve (added to
/// `pending` once per canonical reference).
fn first_answer(s: &Seen, pending: &mut HashMap<String, ImageRef>) -> Next {
    if let Some(why) = &s.refused {
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
    }
}

/// `s` as listed: its digest, or the reason (saying so when the platform's own digest was
/// malformed), everything read cut to its bound.
fn running_container(
    s: Seen,
    answer: Result<String, String>,
    bad_report: bool,
) -> RunningContainer {
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

#[cfg(test)]
mod tests;
