//! Azure in tests: Azurite (the real Azure Storage emulator) for Blob Storage, and a contract
//! fake for what has no emulator — Resource Manager, the managed-identity token endpoint and
//! Azure Container Registry's token exchange and manifests.
//!
//! The fake follows the documented REST shapes: App Service managed identity
//! (`GET ?api-version=2019-08-01&resource=…` with `X-IDENTITY-HEADER`, `expires_on` as a string),
//! ARM `GET <resource id>?api-version=…` (and, for container apps, `GET <app id>/revisions` and
//! `POST <revision id>/deactivate`, 200 with no body or `ResourceNotFound`) with `MissingApiVersionParameter` /
//! `InvalidApiVersionParameter` / `ResourceNotFound` / `AuthenticationFailed` errors in
//! `{"error": {"code", "message"}}` and 429 with `Retry-After`, and ACR's `/oauth2/exchange`,
//! `/oauth2/token` and `/v2/<repository>/manifests/<reference>` with `Docker-Content-Digest` and
//! `{"errors": [{"code", "message"}]}`.
//!
//! Entra ID tokens are per audience, as in Azure: Resource Manager accepts only a token for its
//! audience (public by default; [`AzureFake::expect_arm_audience`] for a sovereign cloud), and
//! ACR's exchange accepts one for ACR's own audience (`https://containerregistry.azure.net`) or
//! for Resource Manager's, unless told to refuse the latter
//! ([`AzureFake::refuse_arm_audience_for_acr`], a registry with `azureADAuthenticationAsArmPolicy`
//! disabled).

use crate::{find_tool, free_port, wait_for};
use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::process::{Child, Command};

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite (Blob service only, in memory).
pub struct Azurite {
    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub account_url: String,
    http: reqwest::Client,
    _child: Child,
}

impl Azurite {
    /// Starts Azurite on a free port and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let bin = find_tool("azurite-blob", "QFLOWS_AZURITE_BIN")?;
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "--disableTelemetry",
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
            ])
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            // Its debug log and extent files would land in the working directory otherwise.
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting Azurite")?;
        let account_url = format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}");
        let http = reqwest::Client::new();
        wait_for("Azurite", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await?;
        Ok(Self {
            account_url,
            http,
            _child: child,
        })
    }

    /// An account SAS (all services' blob permissions, a day long), signed with the well-known
    /// key as Azure Storage documents it (version 2019-12-12 string-to-sign).
    pub fn sas(&self) -> String {
        use hmac::{Hmac, Mac};
        let expiry = SystemTime::now() + Duration::from_secs(24 * 3600);
        let expiry = qflows_workflows::clock::rfc3339(expiry);
        let expiry = format!("{}Z", &expiry[..19]);
        let (permissions, services, types, protocol, version) =
            ("rwdlac", "b", "sco", "https,http", "2019-12-12");
        let to_sign = format!(
            "{AZURITE_ACCOUNT}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n{protocol}\n{version}\n"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .expect("the well-known key is base64");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let encode = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!(
            "sv={version}&ss={services}&srt={types}&sp={permissions}&se={}&spr={}&sig={}",
            encode(&expiry),
            encode(protocol),
            encode(&signature)
        )
    }

    /// Creates a container.
    pub async fn create_container(&self, name: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!(
                "{}/{name}?restype=container&{}",
                self.account_url,
                self.sas()
            ))
            .header("x-ms-version", "2019-12-12")
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "create container {name}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// The names of the blobs in a container.
    pub async fn list_blobs(&self, container: &str) -> anyhow::Result<Vec<String>> {
        let response = self
            .http
            .get(format!(
                "{}/{container}?restype=container&comp=list&{}",
                self.account_url,
                self.sas()
            ))
            .header("x-ms-version", "2019-12-12")
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "list {container}: {}",
            response.status()
        );
        let xml = response.text().await?;
        Ok(xml
            .split("<Name>")
            .skip(1)
            .filter_map(|rest| rest.split("</Name>").next())
            .map(str::to_string)
            .collect())
    }

    /// A blob's content.
    pub async fn get_blob(&self, container: &str, name: &str) -> anyhow::Result<Vec<u8>> {
        let response = self
            .http
            .get(format!(
                "{}/{container}/{name}?{}",
                self.account_url,
                self.sas()
            ))
            .header("x-ms-version", "2019-12-12")
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "get {name}: {}",
            response.status()
        );
        Ok(response.bytes().await?.to_vec())
    }
}

/// What the fake serves and counts.
#[derive(Default)]
struct FakeState {
    /// Lower-cased resource ID → ARM body.
    resources: Mutex<HashMap<String, Value>>,
    /// (repository, tag) → digest.
    manifests: Mutex<HashMap<(String, String), String>>,
    /// The App Service managed-identity secret (`IDENTITY_HEADER`).
    identity_header: String,
    /// Tokens handed out: Entra ID, ACR refresh, ACR access.
    aad_token: String,
    /// Answer the next N ARM reads with 429.
    throttle_arm: AtomicU32,
    /// The audience Resource Manager accepts tokens for.
    arm_audience: Mutex<String>,
    /// ACR's exchange refuses Resource Manager tokens.
    acr_refuses_arm: std::sync::atomic::AtomicBool,
    /// The `resource` of every managed-identity token request, in order.
    token_resources: Mutex<Vec<String>>,
    /// Calls by route.
    calls: Mutex<BTreeMap<String, u64>>,
    /// `http://127.0.0.1:PORT`, for `nextLink`s.
    base_url: String,
    /// Items per page of a subscription-wide list (0: 100).
    list_page_size: std::sync::atomic::AtomicUsize,
}

impl FakeState {
    fn count(&self, route: &str) {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(route.to_string())
            .or_default() += 1;
    }
}

/// Resource Manager's audience in the public cloud.
pub const ARM_PUBLIC: &str = "https://management.azure.com";
/// ACR's own audience.
pub const ACR_AUDIENCE: &str = "https://containerregistry.azure.net";

impl FakeState {
    /// The token the fake's identity gets for `resource`.
    fn token_for(&self, resource: &str) -> String {
        let host = resource
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(resource)
            .to_string();
        format!("{}-for-{host}", self.aad_token)
    }
}

/// The Azure contract fake, serving on a local port.
pub struct AzureFake {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<FakeState>,
    _server: tokio::task::JoinHandle<()>,
}

impl AzureFake {
    /// Starts the fake.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(FakeState {
            identity_header: "fake-identity-header".into(),
            aad_token: format!("aad-token-{}", free_port()),
            arm_audience: Mutex::new(ARM_PUBLIC.into()),
            base_url: url.clone(),
            ..Default::default()
        });
        let app = Router::new()
            .route("/msi/token", get(msi_token))
            .route("/oauth2/exchange", post(acr_exchange))
            .route("/oauth2/token", post(acr_token))
            .fallback(resource_or_registry)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            state,
            _server: server,
        })
    }

    /// The environment a worker needs to reach the fake as its managed identity, Resource
    /// Manager and ACR.
    pub fn worker_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("IDENTITY_ENDPOINT", format!("{}/msi/token", self.url)),
            ("IDENTITY_HEADER", self.state.identity_header.clone()),
            ("QFLOWS_AZURE_ARM_ENDPOINT", self.url.clone()),
            ("QFLOWS_AZURE_ACR_ENDPOINT", self.url.clone()),
        ]
    }

    /// The Entra ID token the fake's identity gets for `resource` (an audience such as
    /// [`ARM_PUBLIC`] or [`ACR_AUDIENCE`]), for a test's own credential.
    pub fn token_for(&self, resource: &str) -> String {
        self.state.token_for(resource)
    }

    /// The resource `id` as the fake holds it now (e.g. after a deactivation).
    pub fn resource(&self, id: &str) -> Option<Value> {
        self.state
            .resources
            .lock()
            .unwrap()
            .get(&id.to_ascii_lowercase())
            .cloned()
    }

    /// Serves `body` for the resource `id`.
    pub fn put_resource(&self, id: &str, body: Value) {
        self.state
            .resources
            .lock()
            .unwrap()
            .insert(id.to_ascii_lowercase(), body);
    }

    /// Serves `digest` for `repository:tag`.
    pub fn put_manifest(&self, repository: &str, tag: &str, digest: &str) {
        self.state
            .manifests
            .lock()
            .unwrap()
            .insert((repository.into(), tag.into()), digest.into());
    }

    /// Resource Manager accepts only tokens for `audience` from now on (e.g.
    /// `https://management.usgovcloudapi.net`).
    pub fn expect_arm_audience(&self, audience: &str) {
        *self.state.arm_audience.lock().unwrap() = audience.trim_end_matches('/').to_string();
    }

    /// ACR's exchange refuses tokens for Resource Manager's audience from now on.
    pub fn refuse_arm_audience_for_acr(&self) {
        self.state.acr_refuses_arm.store(true, Ordering::SeqCst);
    }

    /// The `resource` of every managed-identity token request so far.
    pub fn token_resources(&self) -> Vec<String> {
        self.state.token_resources.lock().unwrap().clone()
    }

    /// Answers the next `n` Resource Manager reads with 429.
    pub fn throttle_arm(&self, n: u32) {
        self.state.throttle_arm.store(n, Ordering::SeqCst);
    }

    /// Subscription-wide lists (`GET /subscriptions/<id>/providers/<namespace>/<type>`) answer
    /// `n` items a page, with a `nextLink` (`$skiptoken`) to the next (default 100).
    pub fn set_list_page_size(&self, n: usize) {
        self.state.list_page_size.store(n, Ordering::SeqCst);
    }

    /// Calls served, by route.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.state.calls.lock().unwrap().clone()
    }
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn acr_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errors": [{"code": code, "message": message}]})),
    )
        .into_response()
}

async fn msi_token(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.count("msi/token");
    if headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        != Some(state.identity_header.as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-IDENTITY-HEADER",
        )
            .into_response();
    }
    if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return (StatusCode::BAD_REQUEST, "api-version must be 2019-08-01").into_response();
    }
    let Some(resource) = query.get("resource") else {
        return (StatusCode::BAD_REQUEST, "resource is required").into_response();
    };
    state.token_resources.lock().unwrap().push(resource.clone());
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() + 3600)
        .unwrap_or(0);
    axum::Json(json!({
        "access_token": state.token_for(resource),
        "expires_on": expires.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

async fn acr_exchange(State(state): State<Arc<FakeState>>, body: Bytes) -> Response {
    state.count("oauth2/exchange");
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if form.get("grant_type").map(String::as_str) != Some("access_token") {
        return acr_error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "grant_type must be access_token",
        );
    }
    let arm = state.token_for(&state.arm_audience.lock().unwrap());
    let accepted = form.get("access_token") == Some(&state.token_for(ACR_AUDIENCE))
        || (form.get("access_token") == Some(&arm)
            && !state.acr_refuses_arm.load(Ordering::SeqCst));
    if !accepted {
        return acr_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid Entra ID token for this registry's audience",
        );
    }
    let service = form.get("service").cloned().unwrap_or_default();
    axum::Json(json!({"refresh_token": format!("acr-refresh-{service}")})).into_response()
}

async fn acr_token(State(state): State<Arc<FakeState>>, body: Bytes) -> Response {
    state.count("oauth2/token");
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let service = form.get("service").cloned().unwrap_or_default();
    if form.get("refresh_token") != Some(&format!("acr-refresh-{service}")) {
        return acr_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid refresh token",
        );
    }
    let Some(repository) = form
        .get("scope")
        .and_then(|s| s.strip_prefix("repository:"))
        .and_then(|s| s.strip_suffix(":pull"))
    else {
        return acr_error(
            StatusCode::BAD_REQUEST,
            "DENIED",
            "scope must be repository:<name>:pull",
        );
    };
    axum::Json(json!({"access_token": format!("acr-access-{repository}")})).into_response()
}

async fn resource_or_registry(State(state): State<Arc<FakeState>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let headers = request.headers().clone();
    if let Some(rest) = path.strip_prefix("/v2/") {
        state.count("v2/manifests");
        let Some((repository, reference)) = rest.rsplit_once("/manifests/") else {
            return acr_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN", "unknown path");
        };
        if bearer(&headers) != Some(format!("acr-access-{repository}").as_str()) {
            return acr_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
        }
        if !matches!(*request.method(), Method::HEAD | Method::GET) {
            return acr_error(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "read only");
        }
        let digest = state
            .manifests
            .lock()
            .unwrap()
            .get(&(repository.to_string(), reference.to_string()))
            .cloned();
        return match digest {
            Some(digest) => (
                StatusCode::OK,
                [
                    ("docker-content-digest", digest),
                    (
                        "content-type",
                        "application/vnd.docker.distribution.manifest.v2+json".to_string(),
                    ),
                ],
            )
                .into_response(),
            None => acr_error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            ),
        };
    }
    let lower_path = path.to_ascii_lowercase();
    let deactivate = request.method() == Method::POST
        && lower_path.contains("/providers/microsoft.app/containerapps/")
        && lower_path.ends_with("/deactivate");
    if !lower_path.starts_with("/subscriptions/")
        || (request.method() != Method::GET && !deactivate)
    {
        return arm_error(StatusCode::NOT_FOUND, "NotFound", "no such route");
    }
    state.count("arm");
    let wanted = state.token_for(&state.arm_audience.lock().unwrap());
    if bearer(&headers) != Some(wanted.as_str()) {
        return arm_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing or invalid.",
        );
    }
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let lower = path.to_ascii_lowercase();
    let supported: &[&str] = if lower.contains("/providers/microsoft.containerinstance/") {
        &["2023-05-01", "2025-09-01"]
    } else {
        &["2024-03-01", "2025-01-01", "2025-07-01"]
    };
    match query.get("api-version") {
        None => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            );
        }
        Some(v) if !supported.contains(&v.as_str()) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                &format!(
                    "The api-version '{v}' is invalid. The supported versions are '{}'.",
                    supported.join(",")
                ),
            );
        }
        Some(_) => {}
    }
    if state
        .throttle_arm
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut response = arm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled.",
        );
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        return response;
    }
    let segments: Vec<&str> = lower.trim_matches('/').split('/').collect();
    if segments.len() == 5 && segments[2] == "providers" {
        state.count("arm/list");
        return list_page(&state, &path, &segments, &query);
    }
    // `POST <revision id>/deactivate`: 200 with no body; the revision's `active` turns false.
    if deactivate {
        state.count("arm/deactivate");
        let id = lower.trim_end_matches("/deactivate");
        let mut resources = state.resources.lock().unwrap();
        return match resources.get_mut(id) {
            Some(body) if segments.len() == 11 && segments[8] == "revisions" => {
                body["properties"]["active"] = json!(false);
                body["properties"]["trafficWeight"] = json!(0);
                StatusCode::OK.into_response()
            }
            _ => arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!(
                    "The Resource '{}' was not found.",
                    path.trim_end_matches("/deactivate")
                ),
            ),
        };
    }
    // `GET <app id>/revisions`: the app's revisions, one page.
    if segments.len() == 9 && segments[6] == "containerapps" && segments[8] == "revisions" {
        state.count("arm/revisions");
        let prefix = format!("{lower}/");
        let mut value: Vec<(String, Value)> = state
            .resources
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| id.starts_with(&prefix) && !id[prefix.len()..].contains('/'))
            .map(|(id, body)| (id.clone(), body.clone()))
            .collect();
        value.sort_by(|a, b| a.0.cmp(&b.0));
        let value: Vec<Value> = value.into_iter().map(|(_, b)| b).collect();
        return axum::Json(json!({ "value": value })).into_response();
    }
    match state.resources.lock().unwrap().get(&lower) {
        Some(body) => axum::Json(body.clone()).into_response(),
        None => arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The Resource '{path}' was not found."),
        ),
    }
}

/// One page of a subscription-wide list, as Resource Manager pages them: `value`, and a
/// `nextLink` carrying a `$skiptoken` while more remain.
fn list_page(
    state: &FakeState,
    path: &str,
    segments: &[&str],
    query: &HashMap<String, String>,
) -> Response {
    let prefix = format!("/subscriptions/{}/", segments[1]);
    let kind = format!("/providers/{}/{}/", segments[3], segments[4]);
    let mut matching: Vec<(String, Value)> = state
        .resources
        .lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix) && id.contains(&kind))
        .map(|(id, body)| (id.clone(), body.clone()))
        .collect();
    matching.sort_by(|a, b| a.0.cmp(&b.0));
    let skip: usize = match query.get("$skiptoken").map(|t| t.parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidSkipToken",
                "The skip token is invalid.",
            );
        }
    };
    let size = match state.list_page_size.load(Ordering::SeqCst) {
        0 => 100,
        n => n,
    };
    let page: Vec<Value> = matching
        .iter()
        .skip(skip)
        .take(size)
        .map(|(_, body)| body.clone())
        .collect();
    let mut body = json!({ "value": page });
    if skip + size < matching.len() {
        body["nextLink"] = json!(format!(
            "{}{path}?api-version={}&$skiptoken={}",
            state.base_url,
            query.get("api-version").cloned().unwrap_or_default(),
            skip + size
        ));
    }
    axum::Json(body).into_response()
}
