//! Azure: Resource Manager reads of container groups, container apps and jobs, and Azure
//! Container Registry tag → digest resolution and pull credentials.
//!
//! Credentials come from `azure_identity`: workload identity when `AZURE_FEDERATED_TOKEN_FILE`
//! is set (AKS), a client secret when `AZURE_CLIENT_SECRET` is, otherwise managed identity (VMs,
//! App Service and Container Apps, with `AZURE_CLIENT_ID` picking a user-assigned one). Tokens
//! stay in memory: never logged, never in workflow history.
//!
//! Clouds: the Resource Manager audience follows the endpoint (`management.azure.com`,
//! `management.usgovcloudapi.net`, `management.chinacloudapi.cn`), or the configured cloud
//! ([`AzureCloud`]) for any other endpoint (a proxy); the client-secret and workload-identity
//! credentials sign in at that cloud's authority.
//!
//! ACR: an Entra ID access token for ACR's own audience (`containerregistry.azure.net`; the ARM
//! audience only when that one is refused, so registries that disable
//! `azureADAuthenticationAsArmPolicy` work) is exchanged for an ACR refresh token
//! (`POST /oauth2/exchange`), kept per registry until shortly before it expires; that for a
//! repository-scoped access token (`POST /oauth2/token`), which reads the manifest digest
//! (`HEAD /v2/<repository>/manifests/<tag>`). QScanner pulls with the refresh token as the
//! password of the all-zero user, as `az acr login` does.

use crate::failure::{IntoFailure, failure};
use azure_core::credentials::TokenCredential;
use qflows_workflows::FailureType;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use temporalio_sdk::activities::ActivityError;

/// ACR's own Entra ID audience (the same in every cloud).
const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";
/// An ACR refresh token is used until this long before it expires.
const ACR_TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// How long a refresh token whose expiry cannot be read is kept (ACR issues them for 3 hours).
const ACR_TOKEN_DEFAULT_LIFETIME: Duration = Duration::from_secs(1800);

/// An Azure cloud: its Resource Manager and its Entra ID authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AzureCloud {
    /// Azure (public).
    #[default]
    Public,
    /// Azure US Government.
    UsGovernment,
    /// Azure operated by 21Vianet (China).
    China,
}

impl AzureCloud {
    /// `public`, `usgovernment` (or `usgov`), `china` (Azure CLI's names work too:
    /// `AzureCloud`, `AzureUSGovernment`, `AzureChinaCloud`).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "public" | "azurecloud" | "azurepublic" => Ok(Self::Public),
            "usgovernment" | "usgov" | "azureusgovernment" => Ok(Self::UsGovernment),
            "china" | "azurechina" | "azurechinacloud" => Ok(Self::China),
            other => Err(format!(
                "unknown Azure cloud `{other}`: public, usgovernment or china"
            )),
        }
    }

    /// Its Resource Manager endpoint.
    pub fn arm_endpoint(self) -> &'static str {
        match self {
            Self::Public => "https://management.azure.com",
            Self::UsGovernment => "https://management.usgovcloudapi.net",
            Self::China => "https://management.chinacloudapi.cn",
        }
    }

    /// The cloud whose Resource Manager `endpoint` is, if it is one of theirs.
    pub fn of_arm_endpoint(endpoint: &str) -> Option<Self> {
        let host = url::Url::parse(endpoint)
            .ok()?
            .host_str()?
            .to_ascii_lowercase();
        [Self::Public, Self::UsGovernment, Self::China]
            .into_iter()
            .find(|c| {
                url::Url::parse(c.arm_endpoint())
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    == Some(host.clone())
            })
    }

    fn identity(self) -> azure_core::cloud::CloudConfiguration {
        match self {
            Self::Public => azure_core::cloud::CloudConfiguration::AzurePublic,
            Self::UsGovernment => azure_core::cloud::CloudConfiguration::AzureGovernment,
            Self::China => azure_core::cloud::CloudConfiguration::AzureChina,
        }
    }
}
/// Documented, stable API versions.
const ACI_API_VERSION: &str = "2023-05-01";
const APPS_API_VERSION: &str = "2024-03-01";
/// The user name that goes with an ACR refresh token.
pub const ACR_TOKEN_USER: &str = "00000000-0000-0000-0000-000000000000";

/// Where Azure calls go.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// Resource Manager, `https://management.azure.com` (sovereign clouds differ).
    pub arm_endpoint: String,
    /// Send ACR registry calls here instead of `https://<login server>` (a proxy, or the tests'
    /// contract fake).
    pub acr_endpoint: Option<String>,
    /// The cloud, when configured: its audience for an endpoint that is not a known Resource
    /// Manager (a proxy), and its sign-in authority.
    pub cloud: Option<AzureCloud>,
}

impl Default for AzureSettings {
    fn default() -> Self {
        Self {
            arm_endpoint: "https://management.azure.com".into(),
            acr_endpoint: None,
            cloud: None,
        }
    }
}

impl AzureSettings {
    /// The cloud: the endpoint's when it is a known Resource Manager, else the configured one,
    /// else public.
    pub fn effective_cloud(&self) -> AzureCloud {
        AzureCloud::of_arm_endpoint(&self.arm_endpoint)
            .or(self.cloud)
            .unwrap_or_default()
    }

    /// The Resource Manager scope: `<its audience>/.default`.
    pub fn arm_scope(&self) -> String {
        format!("{}/.default", self.effective_cloud().arm_endpoint())
    }
}

/// An Azure call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// No token: the identity is missing or refused.
    #[error("Azure credentials: {0}")]
    Credentials(String),
    /// The resource does not exist (or the identity may not see it).
    #[error("{what} not found: {message}")]
    NotFound {
        /// The resource or repository.
        what: String,
        /// Azure's message.
        message: String,
    },
    /// Azure refused the request (401/403/400).
    #[error("Azure refused {what} ({status}): {message}")]
    Refused {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
        /// Azure's error code and message.
        message: String,
    },
    /// Throttled, a 5xx or a network failure: worth retrying.
    #[error("Azure unavailable for {what}: {message}")]
    Unavailable {
        /// The call.
        what: String,
        /// What happened.
        message: String,
        /// `Retry-After`, when Azure sent one.
        retry_after_secs: Option<u64>,
    },
    /// A value from the event that may not go into a URL (e.g. a resource ID with a `..`
    /// segment): not sent. Not retryable.
    #[error("{0}")]
    InvalidInput(String),
    /// An answer that does not have the documented shape.
    #[error("unexpected answer from {what}: {message}")]
    BadResponse {
        /// The call.
        what: String,
        /// What is wrong.
        message: String,
    },
}

impl IntoFailure for AzureError {
    fn into_failure(self) -> ActivityError {
        let (kind, retryable, retry_after) = match &self {
            AzureError::Credentials(_) => (FailureType::AzureCredentials, false, None),
            AzureError::NotFound { .. } => (FailureType::AzureNotFound, false, None),
            AzureError::Refused { .. } => (FailureType::AzureRefused, false, None),
            AzureError::Unavailable {
                retry_after_secs, ..
            } => (
                FailureType::AzureUnavailable,
                true,
                retry_after_secs.map(Duration::from_secs),
            ),
            AzureError::BadResponse { .. } => (FailureType::AzureBadResponse, true, None),
            AzureError::InvalidInput(_) => (FailureType::InvalidInput, false, None),
        };
        failure(self, kind, retryable, retry_after)
    }
}

/// The Azure client qflows' activities share.
#[derive(Clone)]
pub struct Azure {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    settings: AzureSettings,
    /// ACR refresh tokens by login server, with when to stop using them.
    acr_tokens:
        Arc<parking_lot::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>>,
}

impl std::fmt::Debug for Azure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Azure")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The credential the environment calls for, signing in at the public cloud's authority (or
/// `AZURE_AUTHORITY_HOST`): the results store's.
pub fn credential_from_env() -> Result<Arc<dyn TokenCredential>, AzureError> {
    credential_from_env_in(AzureCloud::Public)
}

/// The credential the environment calls for (see the module doc), signing in at `cloud`'s
/// authority (managed identity needs none).
pub fn credential_from_env_in(cloud: AzureCloud) -> Result<Arc<dyn TokenCredential>, AzureError> {
    let client_options = || azure_core::http::ClientOptions {
        cloud: Some(Arc::new(cloud.identity())),
        ..Default::default()
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let credential: Arc<dyn TokenCredential> = if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        azure_identity::WorkloadIdentityCredential::new(Some(
            azure_identity::WorkloadIdentityCredentialOptions {
                credential_options: azure_identity::ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                ..Default::default()
            },
        ))
        .map_err(|e| AzureError::Credentials(format!("workload identity: {e}")))?
    } else if let Some(secret) = env("AZURE_CLIENT_SECRET") {
        let tenant = env("AZURE_TENANT_ID").ok_or_else(|| {
            AzureError::Credentials("AZURE_CLIENT_SECRET is set but AZURE_TENANT_ID is not".into())
        })?;
        let client = env("AZURE_CLIENT_ID").ok_or_else(|| {
            AzureError::Credentials("AZURE_CLIENT_SECRET is set but AZURE_CLIENT_ID is not".into())
        })?;
        azure_identity::ClientSecretCredential::new(
            &tenant,
            client,
            secret.into(),
            Some(azure_identity::ClientSecretCredentialOptions {
                client_options: client_options(),
            }),
        )
        .map_err(|e| AzureError::Credentials(format!("client secret: {e}")))?
    } else {
        let options = azure_identity::ManagedIdentityCredentialOptions {
            user_assigned_id: env("AZURE_CLIENT_ID").map(azure_identity::UserAssignedId::ClientId),
            ..Default::default()
        };
        azure_identity::ManagedIdentityCredential::new(Some(options))
            .map_err(|e| AzureError::Credentials(format!("managed identity: {e}")))?
    };
    Ok(credential)
}

impl Azure {
    /// A client with the credential the environment calls for (see the module doc).
    pub fn from_env(settings: AzureSettings) -> Result<Self, AzureError> {
        Ok(Self::new(
            credential_from_env_in(settings.effective_cloud())?,
            settings,
        ))
    }

    /// A client with a given credential.
    pub fn new(credential: Arc<dyn TokenCredential>, settings: AzureSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client builds");
        Self {
            http,
            credential,
            settings,
            acr_tokens: Default::default(),
        }
    }

    async fn token(&self, scope: &str) -> Result<String, AzureError> {
        let token = self
            .credential
            .get_token(&[scope], None)
            .await
            .map_err(|e| AzureError::Credentials(e.to_string()))?;
        Ok(token.token.secret().to_string())
    }

    /// The images of a container group, container app or container app job, as Resource
    /// Manager returns them (init containers included), in order, without duplicates.
    pub async fn resource_images(&self, resource_id: &str) -> Result<Vec<String>, AzureError> {
        Ok(self.resource_deployment(resource_id).await?.0)
    }

    /// [`Azure::resource_images`], and the registries the resource pulls from with credentials
    /// of its own (ACI `imageRegistryCredentials[].server`, Container Apps
    /// `configuration.registries[].server`), lower-cased.
    pub async fn resource_deployment(
        &self,
        resource_id: &str,
    ) -> Result<(Vec<String>, Vec<String>), AzureError> {
        let lower = resource_id.to_ascii_lowercase();
        let (api_version, aci) = if lower.contains("/providers/microsoft.containerinstance/") {
            (ACI_API_VERSION, true)
        } else {
            (APPS_API_VERSION, false)
        };
        let url = arm_url(&self.settings.arm_endpoint, resource_id, api_version)?;
        let body = self.arm_get(&url, resource_id).await?;
        let properties = &body["properties"];
        let mut images: Vec<String> = Vec::new();
        for (_, image) in resource_containers(&body, aci) {
            if !images.contains(&image) {
                images.push(image);
            }
        }
        if images.is_empty() {
            return Err(AzureError::BadResponse {
                what: format!("GET {resource_id}"),
                message: "the resource lists no container images".into(),
            });
        }
        let credentials = if aci {
            &properties["imageRegistryCredentials"]
        } else {
            &properties["configuration"]["registries"]
        };
        let mut servers: Vec<String> = credentials
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["server"].as_str())
            .map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        servers.sort();
        servers.dedup();
        Ok((images, servers))
    }

    fn registry_base(&self, login_server: &str) -> String {
        match &self.settings.acr_endpoint {
            Some(base) => base.trim_end_matches('/').to_string(),
            None => format!("https://{login_server}"),
        }
    }

    /// An ACR refresh token for `login_server` (see the module doc): cached until shortly
    /// before it expires, else exchanged from an Entra ID token for ACR's audience, or for the
    /// Resource Manager's when that is refused.
    pub async fn acr_refresh_token(&self, login_server: &str) -> Result<String, AzureError> {
        let now = std::time::Instant::now();
        if let Some((token, until)) = self.acr_tokens.lock().get(login_server)
            && *until > now
        {
            return Ok(token.clone());
        }
        let refresh = match self.exchange(login_server, ACR_SCOPE).await {
            Ok(token) => token,
            Err(first) => {
                let arm = self.settings.arm_scope();
                tracing::info!(registry = %login_server, error = %first,
                    "ACR refused a token for its own audience; trying the Resource Manager audience");
                self.exchange(login_server, &arm).await.map_err(|e| match e {
                    AzureError::Refused { what, status, message } => AzureError::Refused {
                        what,
                        status,
                        message: format!("{message} (a token for ACR's own audience was refused too: {first})"),
                    },
                    other => other,
                })?
            }
        };
        let lifetime = jwt_expiry(&refresh)
            .and_then(|exp| {
                let left = exp.duration_since(std::time::SystemTime::now()).ok()?;
                left.checked_sub(ACR_TOKEN_MARGIN)
            })
            .unwrap_or(ACR_TOKEN_DEFAULT_LIFETIME);
        self.acr_tokens
            .lock()
            .insert(login_server.to_string(), (refresh.clone(), now + lifetime));
        Ok(refresh)
    }

    /// `POST /oauth2/exchange` with an Entra ID token for `scope`.
    async fn exchange(&self, login_server: &str, scope: &str) -> Result<String, AzureError> {
        let what = format!("ACR token exchange with {login_server}");
        let aad = self.token(scope).await?;
        let response = self
            .http
            .post(format!(
                "{}/oauth2/exchange",
                self.registry_base(login_server)
            ))
            .form(&[
                ("grant_type", "access_token"),
                ("service", login_server),
                ("access_token", aad.as_str()),
            ])
            .send()
            .await
            .map_err(|e| unavailable(&what, &e))?;
        let body = check(&what, login_server, response).await?;
        body["refresh_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AzureError::BadResponse {
                what,
                message: "no refresh_token".into(),
            })
    }

    /// The manifest digest of `repository:tag`, or why there is none (`Ok(Err(reason))`).
    pub async fn acr_digest(
        &self,
        login_server: &str,
        repository: &str,
        tag: &str,
    ) -> Result<Result<String, String>, AzureError> {
        let refresh = self.acr_refresh_token(login_server).await?;
        let what = format!("ACR token for {login_server}/{repository}");
        let base = self.registry_base(login_server);
        let scope = format!("repository:{repository}:pull");
        let response = self
            .http
            .post(format!("{base}/oauth2/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("service", login_server),
                ("scope", scope.as_str()),
                ("refresh_token", refresh.as_str()),
            ])
            .send()
            .await
            .map_err(|e| unavailable(&what, &e))?;
        let body = check(&what, login_server, response).await?;
        let access = body["access_token"]
            .as_str()
            .ok_or_else(|| AzureError::BadResponse {
                what: what.clone(),
                message: "no access_token".into(),
            })?
            .to_string();
        let what = format!("HEAD {login_server}/{repository}:{tag}");
        let response = self
            .http
            .head(format!("{base}/v2/{repository}/manifests/{tag}"))
            .bearer_auth(access)
            .header(
                "accept",
                "application/vnd.oci.image.index.v1+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .map_err(|e| unavailable(&what, &e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Err("tag not found in ACR".into()));
        }
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        check(&what, login_server, response).await?;
        Ok(digest.ok_or_else(|| "ACR answered without Docker-Content-Digest".to_string()))
    }
}

/// What a subscription-wide Resource Manager list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmListKind {
    /// `Microsoft.ContainerInstance/containerGroups`.
    ContainerGroups,
    /// `Microsoft.App/containerApps`.
    ContainerApps,
    /// `Microsoft.App/jobs`.
    Jobs,
}

impl ArmListKind {
    /// The provider path under `/subscriptions/<id>/providers/`, and its API version.
    fn path_and_version(self) -> (&'static str, &'static str) {
        match self {
            ArmListKind::ContainerGroups => (
                "Microsoft.ContainerInstance/containerGroups",
                ACI_API_VERSION,
            ),
            ArmListKind::ContainerApps => ("Microsoft.App/containerApps", APPS_API_VERSION),
            ArmListKind::Jobs => ("Microsoft.App/jobs", APPS_API_VERSION),
        }
    }

    /// Whether its resources are container groups (ACI's shape) rather than Container Apps'.
    pub fn is_aci(self) -> bool {
        self == ArmListKind::ContainerGroups
    }
}

impl Azure {
    /// `GET url` on Resource Manager with the worker's token; `resource` names what is read in
    /// errors (a resource ID or a list path, never the URL with its query).
    async fn arm_get(&self, url: &str, resource: &str) -> Result<Value, AzureError> {
        let what = format!("GET {resource}");
        let token = self.token(&self.settings.arm_scope()).await?;
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unavailable(&what, &e))?;
        check(&what, resource, response).await
    }

    /// One page of a subscription-wide list (`GET /subscriptions/<id>/providers/<type>`): its
    /// `value` items, and the `nextLink` to the next page. `next` is the previous page's
    /// `nextLink`: it is followed only when it points at the same Resource Manager endpoint and
    /// the same list path (a page may not send the worker anywhere else).
    pub async fn list_page(
        &self,
        subscription_id: &str,
        kind: ArmListKind,
        next: Option<&str>,
    ) -> Result<(Vec<Value>, Option<String>), AzureError> {
        let (provider, api_version) = kind.path_and_version();
        let path = format!("/subscriptions/{subscription_id}/providers/{provider}");
        qflows_workflows::scan::check_arm_resource_id("subscriptionId", &path)
            .map_err(|e| AzureError::InvalidInput(e.to_string()))?;
        let base = self.settings.arm_endpoint.trim_end_matches('/');
        let first = format!("{base}{path}?api-version={api_version}");
        let url = match next {
            None => first.clone(),
            Some(link) => same_list(&first, link).ok_or_else(|| {
                AzureError::InvalidInput(format!(
                    "Resource Manager's nextLink for {provider} does not continue the same list \
                     on the same endpoint; not followed: `{}`",
                    link.chars().take(200).collect::<String>()
                ))
            })?,
        };
        let what = format!("GET {path}");
        let body = self.arm_get(&url, &path).await?;
        let Some(items) = body["value"].as_array() else {
            return Err(AzureError::BadResponse {
                what,
                message: "no `value` list".into(),
            });
        };
        let next = match &body["nextLink"] {
            Value::String(link) if !link.is_empty() => Some(link.clone()),
            _ => None,
        };
        Ok((items.clone(), next))
    }
}

impl Azure {
    /// A container app revision (`GET <revision id>`): its `properties.active` and
    /// `properties.template.containers`.
    pub async fn container_app_revision(&self, revision_id: &str) -> Result<Value, AzureError> {
        let url = arm_url(&self.settings.arm_endpoint, revision_id, APPS_API_VERSION)?;
        self.arm_get(&url, revision_id).await
    }

    /// Every revision of a container app (`GET <app id>/revisions`, following `nextLink`s of
    /// the same list on the same endpoint, at most 50 pages).
    pub async fn container_app_revisions(&self, app_id: &str) -> Result<Vec<Value>, AzureError> {
        let path = format!("{app_id}/revisions");
        let first = arm_url(&self.settings.arm_endpoint, &path, APPS_API_VERSION)?;
        let mut url = first.clone();
        let mut all = Vec::new();
        for _ in 0..50 {
            let body = self.arm_get(&url, &path).await?;
            let Some(items) = body["value"].as_array() else {
                return Err(AzureError::BadResponse {
                    what: format!("GET {path}"),
                    message: "no `value` list".into(),
                });
            };
            all.extend(items.iter().cloned());
            match &body["nextLink"] {
                Value::String(link) if !link.is_empty() => {
                    url = same_list(&first, link).ok_or_else(|| {
                        AzureError::InvalidInput(format!(
                            "Resource Manager's nextLink for {path} does not continue the same \
                             list on the same endpoint; not followed"
                        ))
                    })?;
                }
                _ => return Ok(all),
            }
        }
        Ok(all)
    }

    /// Deactivates a container app revision
    /// (`POST <revision id>/deactivate?api-version=2024-03-01`; 200 with no body).
    pub async fn deactivate_revision(&self, revision_id: &str) -> Result<(), AzureError> {
        let path = format!("{revision_id}/deactivate");
        let url = arm_url(&self.settings.arm_endpoint, &path, APPS_API_VERSION)?;
        let what = format!("POST {path}");
        let token = self.token(&self.settings.arm_scope()).await?;
        let response = self
            .http
            .post(&url)
            .bearer_auth(token)
            .header("content-length", "0")
            .send()
            .await
            .map_err(|e| unavailable(&what, &e))?;
        check(&what, revision_id, response).await.map(|_| ())
    }
}

/// `link` when it has the scheme, host, port and path of `first` (a later page of the same
/// list), else `None`.
fn same_list(first: &str, link: &str) -> Option<String> {
    let first = url::Url::parse(first).ok()?;
    let parsed = url::Url::parse(link).ok()?;
    let same = parsed.scheme() == first.scheme()
        && parsed.host_str().map(str::to_ascii_lowercase)
            == first.host_str().map(str::to_ascii_lowercase)
        && parsed.port_or_known_default() == first.port_or_known_default()
        && parsed.path().eq_ignore_ascii_case(first.path())
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && parsed.fragment().is_none();
    same.then(|| parsed.to_string())
}

/// The containers of a container group (`aci`) or container app / job body, init containers
/// first: (name, image), in order, as Resource Manager lists them (empty images left out).
pub fn resource_containers(body: &Value, aci: bool) -> Vec<(String, String)> {
    let properties = &body["properties"];
    let lists = if aci {
        [&properties["initContainers"], &properties["containers"]]
    } else {
        [
            &properties["template"]["initContainers"],
            &properties["template"]["containers"],
        ]
    };
    let mut out = Vec::new();
    for list in lists {
        for container in list.as_array().into_iter().flatten() {
            let image = if aci {
                &container["properties"]["image"]
            } else {
                &container["image"]
            };
            if let Some(image) = image.as_str().filter(|i| !i.is_empty()) {
                let name = container["name"].as_str().unwrap_or_default();
                out.push((name.to_string(), image.to_string()));
            }
        }
    }
    out
}

/// The `exp` of a JWT (its payload read, its signature not checked: only to know when to stop
/// using it).
fn jwt_expiry(token: &str) -> Option<std::time::SystemTime> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims["exp"].as_u64()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(exp))
}

/// The Resource Manager URL of a resource, or [`AzureError::InvalidInput`] when the ID could
/// move it elsewhere (checked again here, whatever the classifier let through): the path of the
/// parsed URL must be the ID itself, unchanged by dot-segment removal or percent-decoding.
fn arm_url(endpoint: &str, resource_id: &str, api_version: &str) -> Result<String, AzureError> {
    qflows_workflows::scan::check_arm_resource_id("azureResource", resource_id)
        .map_err(|e| AzureError::InvalidInput(e.to_string()))?;
    let base = endpoint.trim_end_matches('/');
    let url = format!("{base}{resource_id}?api-version={api_version}");
    let parsed = url::Url::parse(&url).map_err(|e| {
        AzureError::InvalidInput(format!("resource ID `{resource_id}` makes no URL: {e}"))
    })?;
    let base_path = url::Url::parse(base)
        .map(|b| b.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    if parsed.path() != format!("{base_path}{resource_id}") {
        return Err(AzureError::InvalidInput(format!(
            "resource ID `{resource_id}` would change the Resource Manager path"
        )));
    }
    Ok(url)
}

fn unavailable(what: &str, e: &reqwest::Error) -> AzureError {
    AzureError::Unavailable {
        what: what.to_string(),
        message: without_url(e),
        retry_after_secs: None,
    }
}

/// The error text without the URL (it may carry query parameters).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

/// The JSON body of a successful answer, or the typed error Azure's status means.
async fn check(
    what: &str,
    resource: &str,
    response: reqwest::Response,
) -> Result<Value, AzureError> {
    let status = response.status();
    let retry_after_secs = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let text = response.text().await.unwrap_or_default();
    if status.is_success() {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text).map_err(|e| AzureError::BadResponse {
            what: what.to_string(),
            message: format!("not JSON: {e}"),
        });
    }
    // ARM: {"error": {"code", "message"}}; ACR: {"errors": [{"code", "message"}]}.
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let error = if body["error"].is_object() {
        &body["error"]
    } else {
        &body["errors"][0]
    };
    let message = match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => format!("HTTP {}", status.as_u16()),
    };
    Err(match status.as_u16() {
        404 => AzureError::NotFound {
            what: resource.to_string(),
            message,
        },
        408 | 429 | 500..=599 => AzureError::Unavailable {
            what: what.to_string(),
            message,
            retry_after_secs,
        },
        code => AzureError::Refused {
            what: what.to_string(),
            status: code,
            message,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "/subscriptions/0f1e2d3c/resourceGroups/apps-rg/providers/Microsoft.App/containerApps/web-api";

    #[test]
    fn the_arm_audience_follows_the_endpoint_or_the_cloud() {
        let settings = |endpoint: &str, cloud| AzureSettings {
            arm_endpoint: endpoint.into(),
            acr_endpoint: None,
            cloud,
        };
        assert_eq!(
            settings("https://management.azure.com", None).arm_scope(),
            "https://management.azure.com/.default"
        );
        assert_eq!(
            settings("https://management.usgovcloudapi.net/", None).arm_scope(),
            "https://management.usgovcloudapi.net/.default"
        );
        assert_eq!(
            settings(
                "https://management.chinacloudapi.cn",
                Some(AzureCloud::Public)
            )
            .arm_scope(),
            "https://management.chinacloudapi.cn/.default"
        );
        // A proxy: the configured cloud says whose token it wants.
        assert_eq!(
            settings("https://arm-proxy.internal", Some(AzureCloud::UsGovernment)).arm_scope(),
            "https://management.usgovcloudapi.net/.default"
        );
        assert_eq!(
            AzureCloud::parse("AzureUSGovernment"),
            Ok(AzureCloud::UsGovernment)
        );
        assert!(AzureCloud::parse("mars").is_err());
    }

    #[test]
    fn a_jwt_says_when_it_expires() {
        use base64::Engine;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":2000000000}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig");
        assert_eq!(
            jwt_expiry(&token),
            Some(std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(jwt_expiry("opaque"), None);
    }

    #[test]
    fn next_links_continue_the_same_list_only() {
        let first = "https://management.azure.com/subscriptions/s/providers/Microsoft.App/jobs?api-version=2024-03-01";
        let next = "https://management.azure.com/subscriptions/s/providers/Microsoft.App/jobs?api-version=2024-03-01&$skiptoken=abc";
        assert_eq!(same_list(first, next).as_deref(), Some(next));
        for bad in [
            "https://evil.example/subscriptions/s/providers/Microsoft.App/jobs?$skiptoken=abc",
            "http://management.azure.com/subscriptions/s/providers/Microsoft.App/jobs?x=1",
            "https://management.azure.com:8443/subscriptions/s/providers/Microsoft.App/jobs",
            "https://management.azure.com/subscriptions/other/providers/Microsoft.App/jobs",
            "https://user:pw@management.azure.com/subscriptions/s/providers/Microsoft.App/jobs",
            "https://management.azure.com/subscriptions/s/providers/Microsoft.App/jobs/../x",
            "/subscriptions/s/providers/Microsoft.App/jobs?$skiptoken=abc",
            "not a url",
        ] {
            assert_eq!(same_list(first, bad), None, "{bad}");
        }
    }

    #[test]
    fn containers_of_groups_and_apps() {
        let group = serde_json::json!({"properties": {
            "initContainers": [{"name": "init", "properties": {"image": "busybox"}}],
            "containers": [{"name": "web", "properties": {"image": "nginx:1.27"}},
                           {"name": "empty", "properties": {"image": ""}}]}});
        assert_eq!(
            resource_containers(&group, true),
            vec![
                ("init".to_string(), "busybox".to_string()),
                ("web".to_string(), "nginx:1.27".to_string())
            ]
        );
        let app = serde_json::json!({"properties": {"template": {
            "containers": [{"name": "api", "image": "r.azurecr.io/api:2"}]}}});
        assert_eq!(
            resource_containers(&app, false),
            vec![("api".to_string(), "r.azurecr.io/api:2".to_string())]
        );
    }

    #[test]
    fn arm_urls_keep_the_resource_path() {
        assert_eq!(
            arm_url("https://management.azure.com/", ID, "2024-03-01").unwrap(),
            format!("https://management.azure.com{ID}?api-version=2024-03-01")
        );
        // An endpoint with a path prefix (a proxy) keeps it.
        assert!(arm_url("http://127.0.0.1:9/arm", ID, "v").is_ok());
    }

    #[test]
    fn path_tricks_are_refused_before_any_request() {
        for bad in [
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/../../../x",
            "/subscriptions/0f1e/resourceGroups/./providers/Microsoft.App/containerApps/a",
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/%2e%2e",
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/a?x=1",
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/a#f",
            "/subscriptions/0f1e/resourceGroups/rg/providers/Microsoft.App/containerApps/a\\..",
            "/subscriptions//resourceGroups/rg",
            "//evil.example/subscriptions/x",
            "/providers/Microsoft.App/containerApps/a",
            "https://evil.example/subscriptions/x",
        ] {
            let err = arm_url("https://management.azure.com", bad, "v").unwrap_err();
            assert!(matches!(err, AzureError::InvalidInput(_)), "{bad}: {err:?}");
            assert!(err.to_string().contains("`azureResource`"), "{err}");
        }
        let failure = AzureError::InvalidInput("x".into()).into_failure();
        assert!(
            format!("{failure:?}").contains("InvalidInput"),
            "{failure:?}"
        );
    }
}
