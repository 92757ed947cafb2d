//! The activities behind `Quarantine`: reading an ECS service or a container app revision,
//! rolling the service back to its previous task definition or deactivating the revision, and
//! checking that it took.
//!
//! "Previous" task definition, in this order:
//! 1. `rollbackTo`, when the proposal names one;
//! 2. the task definition of another deployment the service still lists (during or right after
//!    a roll-out ECS keeps the old deployment next to the PRIMARY one);
//! 3. else the newest ACTIVE revision of the same family below the one the service runs. ECS
//!    keeps no history of what a service ran once a roll-out completes, so this is the revision
//!    registered before the current one, which the service most likely ran; the plan says which
//!    rule chose it (`previousFrom`) and the approver sees its containers before approving.
//!
//! Whichever it is, a previous task definition whose containers run the quarantined image (the
//! same reference, the digest, or an ECR tag that resolves to the digest) is refused: rolling
//! back to the same bad image is pointless.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::aws::{Aws, AwsError};
use crate::failure::IntoFailure;
use crate::resolve::Resolver;
use aws_sdk_ecs::types::Service;
use qflows_workflows::FailureType;
use qflows_workflows::quarantine::contracts;
use qflows_workflows::quarantine::model::{
    PlannedContainer, QuarantineApplied, QuarantineChange, QuarantineInput, QuarantinePlan,
    QuarantineTarget, TargetKind, app_of_revision,
};
use qflows_workflows::scan::{ImageRef, RegistryKind};
use serde_json::Value;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::info;

/// Why a quarantine step failed, beyond the platforms' own errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuarantineError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// An Azure call failed (or the worker has no Azure access).
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
    /// The target changed since the approver saw the plan: nothing was changed.
    #[error("{0}")]
    TargetChanged(String),
    /// The change does not show yet (retried until the step's deadline).
    #[error("{0}")]
    NotYet(String),
}

impl From<crate::azure::AzureError> for QuarantineError {
    fn from(e: crate::azure::AzureError) -> Self {
        QuarantineError::Resolve(e.into())
    }
}

impl IntoFailure for QuarantineError {
    fn into_failure(self) -> ActivityError {
        match self {
            QuarantineError::Aws(e) => e.into_failure(),
            QuarantineError::Resolve(e) => e.into_failure(),
            e @ QuarantineError::TargetChanged(_) => {
                crate::failure::failure(e, FailureType::QuarantineTargetChanged, false, None)
            }
            e @ QuarantineError::NotYet(_) => {
                crate::failure::failure(e, FailureType::QuarantineUnverified, true, None)
            }
        }
    }
}

/// State shared by the quarantine activities.
pub struct QuarantineActivities {
    aws: Arc<Aws>,
    resolver: Arc<Resolver>,
}

impl QuarantineActivities {
    /// Activities reaching ECS with `aws` (other accounts through the resolver's cross-account
    /// role) and Azure through the resolver's client.
    pub fn new(aws: Arc<Aws>, resolver: Arc<Resolver>) -> Self {
        Self { aws, resolver }
    }

    async fn ecs(&self, t: &QuarantineTarget) -> Result<aws_sdk_ecs::Client, AwsError> {
        let region = t.region();
        let config = match &t.account_id {
            Some(account) => self.resolver.account_config(account, region, None).await?,
            None => self.aws.config(region).await,
        };
        Ok(aws_sdk_ecs::Client::new(&config))
    }
}

/// Whether any container of the plan's current task definition or revision runs the image
/// being quarantined (see [`same_image`]).
fn runs_quarantined_image(plan: &QuarantinePlan, input: &QuarantineInput) -> bool {
    plan.current_containers
        .iter()
        .any(|c| same_image(&c.image, &input.image, &input.digest))
}

/// Whether a container's `image` is the quarantined one: the same reference (Docker's
/// canonical form, so `nginx` is `docker.io/library/nginx:latest`), or pinned to `digest`.
pub fn same_image(image: &str, quarantined: &str, digest: &str) -> bool {
    if image == quarantined {
        return true;
    }
    let Ok(c) = ImageRef::parse(image) else {
        return image.ends_with(&format!("@{digest}"));
    };
    if c.digest.as_deref() == Some(digest) {
        return true;
    }
    let Ok(q) = ImageRef::parse(quarantined) else {
        return false;
    };
    if c.canonical() == q.canonical() {
        return true;
    }
    // A tag reference is the quarantined image's when it names the same repository and tag
    // (the quarantined reference may carry the digest next to its tag).
    c.digest.is_none()
        && c.name() == q.name()
        && q.tag_or_latest().is_some()
        && c.tag_or_latest() == q.tag_or_latest()
}

/// Family and revision of a task definition ARN or `family:revision`.
pub fn family_revision(task_definition: &str) -> Option<(String, u64)> {
    let tail = task_definition
        .rsplit_once("task-definition/")
        .map_or(task_definition, |(_, t)| t);
    let (family, revision) = tail.rsplit_once(':')?;
    Some((family.to_string(), revision.parse().ok()?))
}

/// Whether two task definition references (ARN or `family:revision`) name the same revision.
pub fn same_task_definition(a: &str, b: &str) -> bool {
    a == b || family_revision(a).is_some_and(|fa| family_revision(b) == Some(fa))
}

/// The newest revision of `current`'s family below it among `arns` (ListTaskDefinitions).
pub fn previous_revision(current: &str, arns: &[String]) -> Option<String> {
    let (family, revision) = family_revision(current)?;
    arns.iter()
        .filter_map(|a| family_revision(a).map(|(f, r)| (f, r, a)))
        .filter(|(f, r, _)| *f == family && *r < revision)
        .max_by_key(|(_, r, _)| *r)
        .map(|(_, _, a)| a.clone())
}

async fn find_service(
    ecs: &aws_sdk_ecs::Client,
    t: &QuarantineTarget,
) -> Result<Option<Service>, AwsError> {
    crate::sensor::ecs::find_service(
        ecs,
        t.cluster.as_deref().unwrap_or_default(),
        t.service.as_deref().unwrap_or_default(),
    )
    .await
}

async fn containers(
    ecs: &aws_sdk_ecs::Client,
    task_definition: &str,
) -> Result<(String, Vec<PlannedContainer>), AwsError> {
    let out = ecs
        .describe_task_definition()
        .task_definition(task_definition)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ecs:DescribeTaskDefinition", e))?;
    let td = out.task_definition();
    let arn = td
        .and_then(|t| t.task_definition_arn())
        .unwrap_or(task_definition)
        .to_string();
    let containers = td
        .map(|t| t.container_definitions())
        .unwrap_or_default()
        .iter()
        .map(|c| PlannedContainer {
            name: c.name().unwrap_or_default().to_string(),
            image: c.image().unwrap_or_default().to_string(),
        })
        .collect();
    Ok((arn, containers))
}

/// Every ACTIVE task definition ARN of `family` (all pages, at most 100).
async fn family_arns(ecs: &aws_sdk_ecs::Client, family: &str) -> Result<Vec<String>, AwsError> {
    let mut arns = Vec::new();
    let mut token = None;
    for _ in 0..100 {
        let out = ecs
            .list_task_definitions()
            .family_prefix(family)
            .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:ListTaskDefinitions", e))?;
        arns.extend(out.task_definition_arns().iter().cloned());
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(arns)
}

/// The task definition to roll back to, and the rule that chose it (the module doc's order):
/// `rollbackTo`, else another deployment's, else the newest ACTIVE revision below `current`.
async fn previous_task_definition(
    ecs: &aws_sdk_ecs::Client,
    t: &QuarantineTarget,
    service: &Service,
    current: &str,
) -> Result<(Option<String>, String), AwsError> {
    let other_deployment = service
        .deployments()
        .iter()
        .filter_map(|d| Some((d.status()?, d.task_definition()?)))
        .find(|(_, td)| !same_task_definition(td, current));
    Ok(if let Some(to) = &t.rollback_to {
        (Some(to.clone()), "rollbackTo".to_string())
    } else if let Some((status, td)) = other_deployment {
        (
            Some(td.to_string()),
            format!("the service's {status} deployment"),
        )
    } else {
        let family = family_revision(current).map(|(f, _)| f).unwrap_or_default();
        let arns = family_arns(ecs, &family).await?;
        (
            previous_revision(current, &arns),
            format!("the newest ACTIVE revision of family {family} below the current one"),
        )
    })
}

impl QuarantineActivities {
    async fn inspect_ecs(&self, input: &QuarantineInput) -> Result<QuarantinePlan, AwsError> {
        let t = &input.target;
        let ecs = self.ecs(t).await?;
        let mut plan = QuarantinePlan::default();
        let Some(service) = find_service(&ecs, t).await? else {
            plan.refusal = Some(format!(
                "{} does not exist (or is not ACTIVE)",
                t.describe()
            ));
            return Ok(plan);
        };
        let Some(current) = service.task_definition().map(str::to_string) else {
            plan.refusal = Some(format!("{} names no task definition", t.describe()));
            return Ok(plan);
        };
        let (current, current_containers) = containers(&ecs, &current).await?;
        plan.current = Some(current.clone());
        plan.current_containers = current_containers;
        if !runs_quarantined_image(&plan, input) {
            plan.refusal = Some(format!(
                "{} runs {current}, whose containers do not run {} ({}): nothing to quarantine",
                t.describe(),
                input.image,
                input.digest
            ));
            return Ok(plan);
        }
        let (previous, from) = previous_task_definition(&ecs, t, &service, &current).await?;
        let Some(previous) = previous else {
            plan.refusal = Some(format!(
                "{} has no previous task definition to roll back to (no older deployment, no \
                 older ACTIVE revision of its family); propose one with rollbackTo",
                t.describe()
            ));
            return Ok(plan);
        };
        let (previous, previous_containers) = containers(&ecs, &previous).await?;
        plan.previous_from = from;
        plan.previous = Some(previous.clone());
        plan.previous_containers = previous_containers;
        if same_task_definition(&previous, &current) {
            plan.refusal = Some(format!(
                "the previous task definition is the current one ({current})"
            ));
            return Ok(plan);
        }
        let same = self.quarantined_in_previous(input, &mut plan).await;
        if !same.is_empty() {
            plan.refusal = Some(format!(
                "the previous task definition {previous} runs the quarantined image too ({}): \
                 rolling back to it would change nothing; propose another with rollbackTo",
                same.join(", ")
            ));
        }
        Ok(plan)
    }

    /// The previous task definition's containers that run the quarantined image (its
    /// reference, its digest, or an ECR tag naming the digest now); a tag whose digest ECR
    /// will not say goes to the plan's `unchecked`.
    async fn quarantined_in_previous(
        &self,
        input: &QuarantineInput,
        plan: &mut QuarantinePlan,
    ) -> Vec<String> {
        let mut same = Vec::new();
        for c in &plan.previous_containers {
            if same_image(&c.image, &input.image, &input.digest) {
                same.push(c.image.clone());
                continue;
            }
            match self.tag_digest(&c.image).await {
                Some(d) if d == input.digest => same.push(format!("{} (= {d})", c.image)),
                Some(_) => {}
                None if ImageRef::parse(&c.image).is_ok_and(|r| r.digest.is_none()) => {
                    plan.unchecked.push(c.image.clone())
                }
                None => {}
            }
        }
        same
    }

    /// The digest an ECR tag names now; `None` for other registries or when ECR will not say.
    async fn tag_digest(&self, image: &str) -> Option<String> {
        let r = ImageRef::parse(image).ok()?;
        if r.digest.is_some() {
            return r.digest;
        }
        let RegistryKind::Ecr {
            account_id, region, ..
        } = r.kind()
        else {
            return None;
        };
        let tag = r.tag_or_latest()?.to_string();
        match self
            .resolver
            .ecr_digest(&account_id, &region, &r.repository, &tag)
            .await
        {
            Ok(Ok(digest)) => Some(digest),
            _ => None,
        }
    }

    async fn inspect_app(
        &self,
        input: &QuarantineInput,
    ) -> Result<QuarantinePlan, QuarantineError> {
        let azure = self.resolver.azure()?;
        let id = input.target.revision_id.as_deref().unwrap_or_default();
        let mut plan = QuarantinePlan::default();
        let revision = match azure.container_app_revision(id).await {
            Ok(r) => r,
            Err(crate::azure::AzureError::NotFound { .. }) => {
                plan.refusal = Some(format!("revision {id} does not exist"));
                return Ok(plan);
            }
            Err(e) => return Err(e.into()),
        };
        plan.current_containers = revision_containers(&revision);
        let active = revision["properties"]["active"].as_bool();
        plan.revision_active = active;
        if active != Some(true) {
            plan.refusal = Some(format!(
                "revision {id} is not active: nothing to deactivate"
            ));
            return Ok(plan);
        }
        if !runs_quarantined_image(&plan, input) {
            plan.refusal = Some(format!(
                "revision {id} does not run {} ({}): nothing to quarantine",
                input.image, input.digest
            ));
            return Ok(plan);
        }
        let name = id.rsplit('/').next().unwrap_or_default();
        plan.other_active_revisions = azure
            .container_app_revisions(&app_of_revision(id))
            .await?
            .iter()
            .filter(|r| r["properties"]["active"].as_bool() == Some(true))
            .filter_map(|r| r["name"].as_str())
            .filter(|n| !n.eq_ignore_ascii_case(name))
            .map(str::to_string)
            .collect();
        Ok(plan)
    }
}

/// The containers of a container app revision body (init containers first).
fn revision_containers(body: &Value) -> Vec<PlannedContainer> {
    crate::azure::resource_containers(body, false)
        .into_iter()
        .map(|(name, image)| PlannedContainer { name, image })
        .collect()
}

#[activities]
impl QuarantineActivities {
    /// Reads the current state and what approval would change.
    #[activity(definition = contracts::InspectQuarantine)]
    pub async fn inspect(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: QuarantineInput,
    ) -> Result<QuarantinePlan, ActivityError> {
        match input.target.kind {
            TargetKind::Ecs => self
                .inspect_ecs(&input)
                .await
                .map_err(IntoFailure::into_failure),
            TargetKind::ContainerApp => self
                .inspect_app(&input)
                .await
                .map_err(IntoFailure::into_failure),
        }
    }

    /// Rolls back (ECS) or deactivates (container app), only if the target is as planned.
    #[activity(definition = contracts::QuarantineApply)]
    pub async fn apply(
        self: Arc<Self>,
        _ctx: ActivityContext,
        change: QuarantineChange,
    ) -> Result<QuarantineApplied, ActivityError> {
        self.apply_change(&change)
            .await
            .map_err(IntoFailure::into_failure)
    }

    /// Checks the change took; retryable "not yet" until it does.
    #[activity(definition = contracts::QuarantineVerify)]
    pub async fn verify(
        self: Arc<Self>,
        _ctx: ActivityContext,
        change: QuarantineChange,
    ) -> Result<String, ActivityError> {
        self.verify_change(&change)
            .await
            .map_err(IntoFailure::into_failure)
    }
}

impl QuarantineActivities {
    async fn apply_change(
        &self,
        change: &QuarantineChange,
    ) -> Result<QuarantineApplied, QuarantineError> {
        let t = &change.input.target;
        match t.kind {
            TargetKind::Ecs => {
                let (Some(current), Some(previous)) = (&change.plan.current, &change.plan.previous)
                else {
                    return Err(QuarantineError::TargetChanged(
                        "the plan names no task definitions".into(),
                    ));
                };
                let ecs = self.ecs(t).await?;
                let Some(service) = find_service(&ecs, t).await? else {
                    return Err(QuarantineError::TargetChanged(format!(
                        "{} no longer exists; nothing was changed",
                        t.describe()
                    )));
                };
                let now = service.task_definition().unwrap_or_default();
                if same_task_definition(now, previous) {
                    return Ok(QuarantineApplied {
                        action: format!("{} already runs {previous}", t.describe()),
                        changed: false,
                    });
                }
                if !same_task_definition(now, current) {
                    return Err(QuarantineError::TargetChanged(format!(
                        "{} now runs {now}, not {current} as when the quarantine was proposed; \
                         nothing was changed (propose it again if {now} must go too)",
                        t.describe()
                    )));
                }
                ecs.update_service()
                    .cluster(t.cluster.as_deref().unwrap_or_default())
                    .service(t.service.as_deref().unwrap_or_default())
                    .task_definition(previous)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ecs:UpdateService", e))?;
                info!(target = %t.describe(), from = %current, to = %previous, "quarantine: rolled back");
                Ok(QuarantineApplied {
                    action: format!(
                        "UpdateService {}: task definition {current} → {previous}",
                        t.describe()
                    ),
                    changed: true,
                })
            }
            TargetKind::ContainerApp => {
                let azure = self.resolver.azure()?;
                let id = t.revision_id.as_deref().unwrap_or_default();
                let revision = azure.container_app_revision(id).await?;
                if revision["properties"]["active"].as_bool() == Some(false) {
                    return Ok(QuarantineApplied {
                        action: format!("revision {id} was already inactive"),
                        changed: false,
                    });
                }
                azure.deactivate_revision(id).await?;
                info!(revision = %id, "quarantine: deactivated");
                Ok(QuarantineApplied {
                    action: format!("deactivated revision {id}"),
                    changed: true,
                })
            }
        }
    }

    async fn verify_change(&self, change: &QuarantineChange) -> Result<String, QuarantineError> {
        let t = &change.input.target;
        match t.kind {
            TargetKind::Ecs => {
                let previous = change.plan.previous.clone().unwrap_or_default();
                let ecs = self.ecs(t).await?;
                let service = find_service(&ecs, t).await?.ok_or_else(|| {
                    QuarantineError::NotYet(format!("{} is not listed", t.describe()))
                })?;
                let now = service.task_definition().unwrap_or_default();
                if !same_task_definition(now, &previous) {
                    return Err(QuarantineError::NotYet(format!(
                        "{} runs {now}, not yet {previous}",
                        t.describe()
                    )));
                }
                let primary = service.deployments().iter().find(|d| {
                    d.status() == Some("PRIMARY")
                        && d.task_definition()
                            .is_some_and(|t| same_task_definition(t, now))
                });
                let rollout = primary
                    .and_then(|d| d.rollout_state())
                    .map(|s| format!(", its PRIMARY deployment's roll-out is {}", s.as_str()))
                    .unwrap_or_default();
                Ok(format!(
                    "{} runs task definition {previous}{rollout}",
                    t.describe()
                ))
            }
            TargetKind::ContainerApp => {
                let azure = self.resolver.azure()?;
                let id = t.revision_id.as_deref().unwrap_or_default();
                let revision = azure.container_app_revision(id).await?;
                match revision["properties"]["active"].as_bool() {
                    Some(false) => Ok(format!("revision {id} is inactive")),
                    _ => Err(QuarantineError::NotYet(format!(
                        "revision {id} is still active"
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const E: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn the_same_image_by_reference_canonical_form_or_digest() {
        let ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web";
        assert!(same_image(&format!("{ecr}:2"), &format!("{ecr}:2"), D));
        assert!(same_image("nginx", "docker.io/library/nginx:latest", D));
        assert!(same_image(&format!("{ecr}@{D}"), &format!("{ecr}:2"), D));
        assert!(same_image(&format!("{ecr}:2"), &format!("{ecr}:2@{D}"), D));
        assert!(!same_image(&format!("{ecr}:1"), &format!("{ecr}:2"), D));
        assert!(!same_image(&format!("{ecr}@{E}"), &format!("{ecr}:2"), D));
        assert!(!same_image("other/web:2", &format!("{ecr}:2"), D));
    }

    #[test]
    fn the_previous_revision_is_the_newest_older_one_of_the_same_family() {
        let arn =
            |f: &str, r: u32| format!("arn:aws:ecs:us-east-1:123456789012:task-definition/{f}:{r}");
        let arns = vec![
            arn("web", 1),
            arn("web", 3),
            arn("web-worker", 4),
            arn("web", 5),
        ];
        assert_eq!(
            previous_revision(&arn("web", 5), &arns),
            Some(arn("web", 3))
        );
        assert_eq!(
            previous_revision(&arn("web", 4), &arns),
            Some(arn("web", 3))
        );
        assert_eq!(previous_revision(&arn("web", 1), &arns), None);
        assert_eq!(previous_revision("web:3", &arns), Some(arn("web", 1)));
        assert_eq!(family_revision("web:12"), Some(("web".into(), 12)));
        assert_eq!(family_revision("web"), None);
        assert!(same_task_definition(&arn("web", 3), "web:3"));
        assert!(!same_task_definition(&arn("web", 3), "web:4"));
        assert!(!same_task_definition(&arn("web", 3), &arn("web-worker", 3)));
    }
}
