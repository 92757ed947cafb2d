//! From a deployment to images with digests: ECS task definitions and services, ECR tags, and
//! on Azure container groups, container apps and jobs (Resource Manager) and ACR tags.
//!
//! Calls run in the account that owns the resources. With `QFLOWS_CROSS_ACCOUNT_ROLE_NAME`, a
//! resource in another account than the worker's own is read through that role in its account
//! (the Fargate scanner's hub/spoke setup); assumed credentials are cached until shortly before
//! they expire.

use crate::aws::{Aws, AwsError};
use crate::azure::{Azure, AzureError};
use crate::failure::IntoFailure;
use crate::qualys::Secret;
use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_ecr::types::ImageIdentifier;
use qflows_workflows::FailureType;
use qflows_workflows::registry::model::partition;
use qflows_workflows::scan::model::ResolvedImage;
use qflows_workflows::scan::{ImageRef, RegistryKind, ScanRequest};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Mutex, OnceCell};

/// How the resolver reaches other accounts.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    /// Role to assume in an account that is not the worker's own (none: use the worker's own
    /// credentials everywhere).
    pub cross_account_role_name: Option<String>,
    /// External ID the role's trust policy requires, if any.
    pub external_id: Option<Secret>,
    /// AssumeRole session name.
    pub session_name: String,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            cross_account_role_name: None,
            external_id: None,
            // AssumeRole needs a session name of at least two characters.
            session_name: "qflows".into(),
        }
    }
}

/// Reads ECS and ECR for image resolution.
pub struct Resolver {
    aws: Arc<Aws>,
    azure: Option<Azure>,
    settings: ResolverSettings,
    own_account: OnceCell<String>,
    assumed: Mutex<HashMap<(String, String, String), Credentials>>,
}

/// Why a deployment's images could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// An Azure call failed.
    #[error(transparent)]
    Azure(#[from] AzureError),
    /// An Azure event arrived but the worker has no Azure access configured.
    #[error("the event is from Azure, but this worker could not set up Azure access: {0}")]
    NoAzure(String),
}

impl IntoFailure for ResolveError {
    fn into_failure(self) -> temporalio_sdk::activities::ActivityError {
        match self {
            ResolveError::Aws(e) => e.into_failure(),
            ResolveError::Azure(e) => e.into_failure(),
            e @ ResolveError::NoAzure(_) => {
                crate::failure::failure(e, FailureType::AzureCredentials, false, None)
            }
        }
    }
}

impl Resolver {
    /// A resolver using `aws`'s credentials (and the configured cross-account role).
    pub fn new(aws: Arc<Aws>, settings: ResolverSettings) -> Self {
        Self {
            aws,
            azure: None,
            settings,
            own_account: OnceCell::new(),
            assumed: Mutex::new(HashMap::new()),
        }
    }

    /// Configuration for calls into `account` in `region`.
    async fn config_for(&self, account: &str, region: &str) -> Result<SdkConfig, AwsError> {
        self.account_config(account, region, None).await
    }

    /// Configuration for calls into `account` in `region`: through `role_arn` when given (an
    /// inventory scope's own role), else as ScanOnDeploy reads it (the configured
    /// cross-account role in an account that is not the worker's own, else the worker's own
    /// credentials). Assumed credentials are cached per account, region and role.
    pub async fn account_config(
        &self,
        account: &str,
        region: &str,
        role_arn: Option<&str>,
    ) -> Result<SdkConfig, AwsError> {
        let base = self.aws.config(region).await;
        if let Some(role_arn) = role_arn {
            return self.assumed_config(base, account, region, role_arn).await;
        }
        let Some(role_name) = &self.settings.cross_account_role_name else {
            return Ok(base);
        };
        let own = self
            .own_account
            .get_or_try_init(|| async {
                let identity = aws_sdk_sts::Client::new(&base)
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", e))?;
                identity
                    .account()
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| AwsError::Transient {
                        operation: "sts:GetCallerIdentity",
                        code: "NoAccount".into(),
                        message: "STS did not say which account the worker's credentials belong to"
                            .into(),
                    })
            })
            .await?;
        if own == account {
            return Ok(base);
        }
        let role_arn = format!("arn:{}:iam::{account}:role/{role_name}", partition(region));
        self.assumed_config(base, account, region, &role_arn).await
    }

    /// `base` with the credentials of `role_arn` (assumed, or cached until shortly before they
    /// expire).
    async fn assumed_config(
        &self,
        base: SdkConfig,
        account: &str,
        region: &str,
        role_arn: &str,
    ) -> Result<SdkConfig, AwsError> {
        let key = (
            account.to_string(),
            region.to_string(),
            role_arn.to_string(),
        );
        let mut cache = self.assumed.lock().await;
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|t| t > SystemTime::now() + Duration::from_secs(300))
        };
        let credentials = match cache.get(&key).filter(|c| fresh(c)) {
            Some(c) => c.clone(),
            None => {
                let mut request = aws_sdk_sts::Client::new(&base)
                    .assume_role()
                    .role_arn(role_arn)
                    .role_session_name(&self.settings.session_name)
                    .duration_seconds(3600);
                if let Some(external_id) = &self.settings.external_id {
                    request = request.external_id(external_id.expose());
                }
                let response = request.send().await.map_err(|e| {
                    match AwsError::from_sdk("sts:AssumeRole", e) {
                        AwsError::AccessDenied { code, .. } => AwsError::AccessDenied {
                            operation: "sts:AssumeRole",
                            code,
                            message: format!("cannot assume {role_arn}"),
                        },
                        other => other,
                    }
                })?;
                let c = response.credentials().ok_or_else(|| AwsError::Transient {
                    operation: "sts:AssumeRole",
                    code: "NoCredentials".into(),
                    message: format!("AssumeRole of {role_arn} returned no credentials"),
                })?;
                let expiry = SystemTime::try_from(*c.expiration()).ok();
                let credentials = Credentials::new(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token().to_string()),
                    expiry,
                    "qflows-assume-role",
                );
                cache.insert(key, credentials.clone());
                credentials
            }
        };
        Ok(base
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            )
            .build())
    }

    /// Container images of a task definition (ARN, `family:revision` or family), in order.
    pub async fn task_definition_images(
        &self,
        account: &str,
        region: &str,
        task_definition: &str,
    ) -> Result<Vec<String>, AwsError> {
        let ecs = aws_sdk_ecs::Client::new(&self.config_for(account, region).await?);
        let response = ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(
                |e| match AwsError::from_sdk("ecs:DescribeTaskDefinition", e) {
                    AwsError::Invalid { code, .. } => AwsError::Invalid {
                        operation: "ecs:DescribeTaskDefinition",
                        code,
                        message: format!("task definition `{task_definition}` was not found"),
                    },
                    other => other,
                },
            )?;
        let mut images: Vec<String> = Vec::new();
        for container in response
            .task_definition()
            .map(|t| t.container_definitions())
            .unwrap_or_default()
        {
            if let Some(image) = container.image()
                && !images.iter().any(|i| i == image)
            {
                images.push(image.to_string());
            }
        }
        Ok(images)
    }

    /// The task definition an ECS service currently runs.
    pub async fn service_task_definition(
        &self,
        account: &str,
        region: &str,
        cluster: Option<&str>,
        service: &str,
    ) -> Result<String, AwsError> {
        let ecs = aws_sdk_ecs::Client::new(&self.config_for(account, region).await?);
        let response = ecs
            .describe_services()
            .cluster(cluster.unwrap_or("default"))
            .services(service)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:DescribeServices", e))?;
        response
            .services()
            .first()
            .and_then(|s| s.task_definition())
            .map(str::to_string)
            .ok_or_else(|| AwsError::Invalid {
                operation: "ecs:DescribeServices",
                code: "ServiceNotFound".into(),
                message: format!(
                    "service `{service}` was not found in cluster `{}`",
                    cluster.unwrap_or("default")
                ),
            })
    }

    /// The digest of an ECR image by tag; `Ok(None)` with the reason when the tag or
    /// repository does not exist.
    pub async fn ecr_digest(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        tag: &str,
    ) -> Result<Result<String, String>, AwsError> {
        self.ecr_digest_as(account, region, repository, tag, None)
            .await
    }

    /// [`Resolver::ecr_digest`] through `role_arn` when given (see
    /// [`Resolver::account_config`]).
    pub async fn ecr_digest_as(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        tag: &str,
        role_arn: Option<&str>,
    ) -> Result<Result<String, String>, AwsError> {
        let ecr = aws_sdk_ecr::Client::new(&self.account_config(account, region, role_arn).await?);
        let response = ecr
            .describe_images()
            .registry_id(account)
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_tag(tag).build())
            .send()
            .await;
        match response {
            Ok(r) => Ok(r
                .image_details()
                .first()
                .and_then(|d| d.image_digest())
                .map(str::to_string)
                .ok_or_else(|| "tag not found in ECR".to_string())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_image_not_found_exception()) =>
            {
                Ok(Err("tag not found in ECR".into()))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_repository_not_found_exception()) =>
            {
                Ok(Err("ECR repository not found".into()))
            }
            Err(e) => Err(AwsError::from_sdk("ecr:DescribeImages", e)),
        }
    }

    /// The tags ECR holds for a digest now: `Some(vec![])` when the image is untagged or gone,
    /// `None` when the worker may not ask (access denied: callers fall back to what they know).
    pub async fn ecr_image_tags(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        digest: &str,
    ) -> Result<Option<Vec<String>>, AwsError> {
        let ecr = aws_sdk_ecr::Client::new(&self.config_for(account, region).await?);
        let response = ecr
            .describe_images()
            .registry_id(account)
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .send()
            .await;
        match response {
            Ok(r) => Ok(Some(
                r.image_details()
                    .iter()
                    .filter(|d| d.image_digest() == Some(digest))
                    .flat_map(|d| d.image_tags().iter().cloned())
                    .collect(),
            )),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_image_not_found_exception() || s.is_repository_not_found_exception()
                }) =>
            {
                Ok(Some(Vec::new()))
            }
            Err(e) => match AwsError::from_sdk("ecr:DescribeImages", e) {
                AwsError::AccessDenied { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// ECR pull credentials (`AWS`, password) for QScanner (`QSCANNER_REGISTRY_*`).
    pub async fn ecr_pull_credentials(
        &self,
        account: &str,
        region: &str,
    ) -> Result<(String, Secret), AwsError> {
        let ecr = aws_sdk_ecr::Client::new(&self.config_for(account, region).await?);
        let response = ecr
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecr:GetAuthorizationToken", e))?;
        let token = response
            .authorization_data()
            .first()
            .and_then(|d| d.authorization_token())
            .ok_or_else(|| AwsError::Transient {
                operation: "ecr:GetAuthorizationToken",
                code: "NoToken".into(),
                message: "ECR returned no authorization token".into(),
            })?;
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let (user, password) = decoded.split_once(':').ok_or_else(|| AwsError::Transient {
            operation: "ecr:GetAuthorizationToken",
            code: "BadToken".into(),
            message: "ECR's authorization token is not user:password".into(),
        })?;
        Ok((user.to_string(), Secret::new(password)))
    }
}

/// Account and region of an ECS task-definition ARN.
fn arn_account_region(arn: &str) -> Option<(String, String)> {
    let mut parts = arn.strip_prefix("arn:")?.split(':');
    let (_partition, service, region, account) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (service == "ecs").then(|| (account.to_string(), region.to_string()))
}

impl Resolver {
    /// Also resolves Azure deployments and ACR tags with `azure`.
    pub fn with_azure(mut self, azure: Azure) -> Self {
        self.azure = Some(azure);
        self
    }

    /// The Azure client, or why there is none.
    pub fn azure(&self) -> Result<&Azure, ResolveError> {
        self.azure.as_ref().ok_or_else(|| {
            ResolveError::NoAzure(
                "no credential could be built from the environment (see the README's Azure section)"
                    .into(),
            )
        })
    }
}

/// Resolves every image of a deployment request to a digest where one can be found.
///
/// The images are the event's own; failing those, the Azure resource's; failing those, the ECS
/// task definition's (named by the event or by its service).
pub async fn resolve_request(
    resolver: &Resolver,
    request: &ScanRequest,
) -> Result<Vec<ResolvedImage>, ResolveError> {
    let mut images = request.images.clone();
    // Registries the Azure resource pulls from with credentials of its own.
    let mut credentialed: Vec<String> = Vec::new();
    if images.is_empty()
        && let Some(resource) = &request.azure_resource
    {
        credentialed = add_azure_resource_images(resolver, resource, &mut images).await?;
    }
    if images.is_empty() {
        add_task_definition_images(resolver, request, &mut images).await?;
    }
    let mut resolved = Vec::with_capacity(images.len());
    for image in images {
        resolved.push(resolve_image(resolver, image, &credentialed).await?);
    }
    Ok(resolved)
}

/// The error for a field the event lacks.
fn missing(what: &str) -> AwsError {
    AwsError::Invalid {
        operation: "resolve",
        code: "MissingField".into(),
        message: format!("the event names no {what}"),
    }
}

/// Adds the images an Azure resource deploys to `images` (once each); returns the registries
/// it pulls from with credentials of its own.
async fn add_azure_resource_images(
    resolver: &Resolver,
    resource: &str,
    images: &mut Vec<ImageRef>,
) -> Result<Vec<String>, ResolveError> {
    let (found, servers) = resolver.azure()?.resource_deployment(resource).await?;
    for image in found {
        let parsed = ImageRef::parse(&image).map_err(|e| AzureError::BadResponse {
            what: format!("GET {resource}"),
            message: format!("image `{image}`: {e}"),
        })?;
        if !images.contains(&parsed) {
            images.push(parsed);
        }
    }
    Ok(servers)
}

/// Adds the images of the request's ECS task definition to `images` (once each).
async fn add_task_definition_images(
    resolver: &Resolver,
    request: &ScanRequest,
    images: &mut Vec<ImageRef>,
) -> Result<(), ResolveError> {
    let task_definition = task_definition_of(resolver, request).await?;
    // A full ARN names its account and region; a family:revision uses the event's.
    let (account, region) = match arn_account_region(&task_definition) {
        Some(ar) => ar,
        None => (
            request
                .account_id
                .clone()
                .ok_or_else(|| missing("account"))?,
            request.region.clone().ok_or_else(|| missing("region"))?,
        ),
    };
    for image in resolver
        .task_definition_images(&account, &region, &task_definition)
        .await?
    {
        let parsed = ImageRef::parse(&image).map_err(|e| AwsError::Invalid {
            operation: "ecs:DescribeTaskDefinition",
            code: "InvalidImage".into(),
            message: format!("task definition `{task_definition}`: {e}"),
        })?;
        if !images.contains(&parsed) {
            images.push(parsed);
        }
    }
    Ok(())
}

/// The task definition the event names, or the one its ECS service runs.
async fn task_definition_of(
    resolver: &Resolver,
    request: &ScanRequest,
) -> Result<String, ResolveError> {
    match (&request.task_definition, &request.service) {
        (Some(td), _) => Ok(td.clone()),
        (None, Some(service)) => {
            let account = request
                .account_id
                .as_deref()
                .ok_or_else(|| missing("account"))?;
            let region = request.region.as_deref().ok_or_else(|| missing("region"))?;
            Ok(resolver
                .service_task_definition(
                    account,
                    region,
                    service.cluster.as_deref(),
                    &service.service,
                )
                .await?)
        }
        (None, None) => Err(missing("image, task definition or service").into()),
    }
}

/// The digest of one image: its own, or the tag's in ECR or ACR; or why it is skipped.
async fn resolve_image(
    resolver: &Resolver,
    image: ImageRef,
    credentialed: &[String],
) -> Result<ResolvedImage, ResolveError> {
    // A private registry that needs the deployment's own credentials: qflows has none for
    // it (ACR is pulled with qflows' own identity), so a scan could only fail.
    let host = image.registry.to_ascii_lowercase();
    if !matches!(image.kind(), RegistryKind::Acr { .. }) && credentialed.contains(&host) {
        return Ok(ResolvedImage {
            skipped: Some(format!(
                "the deployment pulls {host} with registry credentials of its own, which \
                 qflows does not have: not scanned"
            )),
            image,
            digest: None,
        });
    }
    let (digest, skipped) = match (&image.digest, image.kind(), &image.tag) {
        (Some(d), _, _) => (Some(d.clone()), None),
        (
            None,
            RegistryKind::Ecr {
                account_id, region, ..
            },
            _,
        ) => {
            let tag = image.tag_or_latest().unwrap_or("latest").to_string();
            match resolver
                .ecr_digest(&account_id, &region, &image.repository, &tag)
                .await?
            {
                Ok(d) => (Some(d), None),
                Err(why) => (None, Some(why)),
            }
        }
        (None, RegistryKind::Acr { .. }, _) => {
            let tag = image.tag_or_latest().unwrap_or("latest").to_string();
            match resolver
                .azure()?
                .acr_digest(&image.registry, &image.repository, &tag)
                .await?
            {
                Ok(d) => (Some(d), None),
                Err(why) => (None, Some(why)),
            }
        }
        (None, _, _) => (None, None),
    };
    Ok(ResolvedImage {
        image,
        digest,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_definition_arns_name_their_account_and_region() {
        assert_eq!(
            arn_account_region("arn:aws:ecs:eu-west-1:210987654321:task-definition/web:3"),
            Some(("210987654321".into(), "eu-west-1".into()))
        );
        assert_eq!(arn_account_region("web:3"), None);
    }
}
