//! The one Qualys HTTP client: gateway JWT auth, rate limits, paging and error classification.
//!
//! Every rule here comes from `docs/qualys-api.md` (§ numbers below):
//!
//! - **Platforms** (§1.2): [`Pod`] maps the 13 official PODs to their gateways; a gateway URL
//!   can be given directly instead (emulators, engineering pods).
//! - **Auth** (§1.1): password mode logs in at `POST {gateway}/auth` (form `username`,
//!   `password`, `token=true`; 200/201 with the raw JWT), caches the token, renews it after
//!   [`QualysConfig::token_refresh_after`] (tokens last 4 h), and on a 401 logs in again once and
//!   repeats the request; a second 401 is [`QualysError::Auth`]. Token mode sends the given
//!   token; a 401 is final. Tokens never appear in URLs, logs or errors.
//! - **Requests** (§2): `Authorization: Bearer …`, `Accept: application/json`, JSON bodies;
//!   query values are encoded exactly once (§2.3).
//! - **Rate limits** (§2.6): at most [`QualysConfig::max_in_flight`] requests in flight; a
//!   sliding window per endpoint [`Family`] (documented table, replaced by the server's
//!   `X-RateLimit-Limit`/`X-RateLimit-Window-Sec`; `X-RateLimit-Remaining: 0` pauses the
//!   family); 429 (and the classic APIs' 409) wait `Retry-After`, else `X-RateLimit-ToWait-Sec`,
//!   else exponential backoff with jitter, up to [`QualysConfig::max_throttle_retries`] times. A
//!   wait above [`QualysConfig::max_throttle_wait`] returns [`QualysError::RateLimited`] at once
//!   so that Temporal's retry policy does the waiting. No other error is retried in-process.
//! - **Paging** (§2.3, §3.1): csapi pages are 1-based `pageNumber` + `pageSize` with
//!   `{"data":[…],"count":N}` (204 = nothing); CDR pages are `offSet` + `limit` with
//!   `{"content":[…],"totalElements":N}`.
//! - **Errors** (§2.5): messages come from Qualys' `{"errorCode","message"}` body, redacted
//!   ([`redact`]) and cut to ~300 characters; [`QualysError::is_retryable`] says what Temporal
//!   may retry.
//! - **Tolerance** (§8): response types accept numbers as strings and vice versa, nulls, and
//!   both documented and seed shapes; unknown fields are kept in `extra`.

mod api;
mod auth;
mod config;
mod error;
mod http;
mod limiter;
mod metrics;
mod paging;
mod types;

#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

pub use config::{Family, ParsePodError, Pod, QualysAuth, QualysConfig, RateLimit, Secret};
pub use error::{QualysError, redact};
pub use limiter::RateLimitState;
pub use metrics::ClientMetrics;
pub use paging::CdrPage;
pub(crate) use types::techniques;
pub use types::{
    AwsBase, AwsConnector, CdrFinding, CdrQuery, CreateAwsConnector, CreateEcrRegistry, Image,
    ImageRepo, OnDemandSchedule, Registry, RepoDigest, RepoTag, Sensor, Severity, SeverityCounts,
    Vulnerability,
};

use auth::Authenticator;
use error::Redactor;
use http::{build_url, throttle_wait, transport_error};
use limiter::{Limiter, Wait};
use metrics::Metrics;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tracing::{debug, warn};

/// The Qualys client. Cheap to clone; clones share the token, limits and counters.
#[derive(Clone)]
pub struct QualysClient {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: QualysConfig,
    http: reqwest::Client,
    auth: Authenticator,
    limiter: Limiter,
    in_flight: Semaphore,
    redactor: Redactor,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for QualysClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QualysClient")
            .field("gateway", &self.inner.cfg.gateway.as_str())
            .field("max_in_flight", &self.inner.cfg.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// One API call, before auth and limits.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    /// Path template, e.g. `/csapi/v1.3/images/{sha}`.
    pub(crate) template: &'static str,
    /// Values of the template's `{…}` segments, in order.
    pub(crate) args: &'a [&'a str],
    pub(crate) query: Vec<(String, String)>,
    /// A JSON body.
    pub(crate) body: Option<Vec<u8>>,
    /// Return a 404 as an answer instead of [`QualysError::NotFound`].
    pub(crate) allow_404: bool,
}

impl<'a> Call<'a> {
    pub(crate) fn get(template: &'static str, args: &'a [&'a str]) -> Self {
        Self {
            method: Method::GET,
            template,
            args,
            query: Vec::new(),
            body: None,
            allow_404: false,
        }
    }

    pub(crate) fn post(template: &'static str, args: &'a [&'a str], body: Vec<u8>) -> Self {
        Self {
            method: Method::POST,
            body: Some(body),
            ..Self::get(template, args)
        }
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }

    /// `METHOD /path-template`, the `endpoint` of errors.
    pub(crate) fn endpoint(&self) -> String {
        format!("{} {}", self.method, self.template)
    }
}

/// A successful (or allowed 404) answer.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// 204, or a body of only whitespace.
    pub(crate) fn is_empty(&self) -> bool {
        self.status == 204 || self.body.iter().all(u8::is_ascii_whitespace)
    }
}

impl QualysClient {
    /// A client for this configuration. Fails with [`QualysError::Config`] on an unusable
    /// gateway URL, empty credentials or zero limits. Does not contact Qualys.
    pub fn new(cfg: QualysConfig) -> Result<Self, QualysError> {
        let config = |message: &str| QualysError::Config {
            message: message.to_string(),
        };
        if !matches!(cfg.gateway.scheme(), "http" | "https") || cfg.gateway.host().is_none() {
            return Err(config("the gateway must be an http(s) URL with a host"));
        }
        if cfg.max_in_flight == 0 {
            return Err(config("max_in_flight must be at least 1"));
        }
        if cfg.page_size == 0 {
            return Err(config("page_size must be at least 1"));
        }
        if cfg.page_param.trim().is_empty() {
            return Err(config("page_param must not be empty"));
        }
        if cfg.request_timeout.is_zero() {
            return Err(config("request_timeout must be positive"));
        }
        let secrets: Vec<&str> = match &cfg.auth {
            QualysAuth::Password { username, password } => {
                if username.trim().is_empty() || password.expose().is_empty() {
                    return Err(config("the Qualys username and password must not be empty"));
                }
                vec![password.expose()]
            }
            QualysAuth::Token(token) => {
                if token.expose().trim().is_empty() {
                    return Err(config("the Qualys token must not be empty"));
                }
                vec![token.expose()]
            }
        };
        let redactor = Redactor::new(secrets);
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("qflows/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| QualysError::Config {
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        let metrics = Arc::new(Metrics::default());
        let auth_url = build_url(&cfg.gateway, "/auth", &[], &[])?;
        let auth = Authenticator::new(
            cfg.auth.clone(),
            auth_url,
            cfg.token_refresh_after,
            http.clone(),
            redactor.clone(),
            metrics.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                limiter: Limiter::new(&cfg.rate_limits),
                in_flight: Semaphore::new(cfg.max_in_flight),
                cfg,
                http,
                auth,
                redactor,
                metrics,
            }),
        })
    }

    /// Logs in (password mode) so that bad credentials fail fast; a no-op for a ready token.
    pub async fn check_auth(&self) -> Result<(), QualysError> {
        self.inner
            .auth
            .bearer()
            .await
            .map(|_| ())
            .map_err(|e| self.inner.metrics.error(e))
    }

    /// The bearer token the client currently uses (logging in first in password mode), for
    /// tools that call Qualys themselves, such as QScanner (`QUALYS_ACCESS_TOKEN`).
    pub async fn bearer_token(&self) -> Result<Secret, QualysError> {
        self.inner
            .auth
            .bearer()
            .await
            .map(|b| b.token)
            .map_err(|e| self.inner.metrics.error(e))
    }

    /// What the client knows of each endpoint family's rate limit: the configured or
    /// advertised limit, its own sends in the window, the last `X-RateLimit-Remaining` and any
    /// hold. Learned from answers, so empty of server facts until a request was made.
    pub fn rate_limits(&self) -> Vec<RateLimitState> {
        self.inner.limiter.snapshot(Instant::now())
    }

    /// The gateway the client sends to.
    pub fn gateway(&self) -> &url::Url {
        &self.inner.cfg.gateway
    }

    /// A snapshot of the client's counters.
    pub fn metrics(&self) -> ClientMetrics {
        self.inner.metrics.snapshot()
    }

    pub(crate) fn config(&self) -> &QualysConfig {
        &self.inner.cfg
    }

    /// A [`QualysError::Decode`] for `endpoint`, redacted and counted.
    pub(crate) fn decode_error(&self, endpoint: &str, message: impl fmt::Display) -> QualysError {
        let message = error::truncate(&self.inner.redactor.redact(&message.to_string(), None), 300);
        self.inner.metrics.error(QualysError::Decode {
            endpoint: endpoint.to_string(),
            message,
        })
    }

    /// Counts an error made outside [`QualysClient::execute`].
    pub(crate) fn count_error(&self, err: QualysError) -> QualysError {
        self.inner.metrics.error(err)
    }

    /// Redacts text for logs.
    pub(crate) fn redact(&self, text: &str) -> String {
        self.inner.redactor.redact(text, None)
    }

    /// Sends `call` with auth, limits, throttle retries and the single re-login; returns 2xx
    /// answers (and 404 when allowed) and classifies everything else.
    pub(crate) async fn execute(&self, call: &Call<'_>) -> Result<Answer, QualysError> {
        let endpoint = call.endpoint();
        let result = async {
            let url = build_url(
                &self.inner.cfg.gateway,
                call.template,
                call.args,
                &call.query,
            )?;
            self.send_with_retries(call, &endpoint, url).await
        }
        .await;
        result.map_err(|e| self.inner.metrics.error(e))
    }

    async fn send_with_retries(
        &self,
        call: &Call<'_>,
        endpoint: &str,
        url: url::Url,
    ) -> Result<Answer, QualysError> {
        let inner = &*self.inner;
        let family = Family::of_path(call.template);
        let mut throttles = 0u32;
        let mut relogged = false;
        loop {
            let bearer = inner.auth.bearer().await?;
            let permit = self.slot(family).await?;
            inner.metrics.request(family);
            let started = Instant::now();
            let mut request = inner
                .http
                .request(call.method.clone(), url.clone())
                .bearer_auth(bearer.token.expose())
                .header(ACCEPT, "application/json");
            if let Some(body) = &call.body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| transport_error(e, endpoint, &inner.redactor))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|e| transport_error(e, endpoint, &inner.redactor))?;
            drop(permit);
            let now = Instant::now();
            debug!(
                method = %call.method,
                path = call.template,
                status,
                family = family.as_str(),
                elapsed_ms = now.duration_since(started).as_millis() as u64,
                "Qualys request"
            );
            let throttled = matches!(status, 429 | 409);
            inner.limiter.observe(family, &headers, throttled, now);
            match status {
                401 if inner.auth.can_relogin() && !relogged => {
                    relogged = true;
                    inner.auth.invalidate(bearer.generation).await;
                    inner.metrics.retry();
                    debug!(endpoint, "Qualys answered 401; logging in again once");
                }
                401 => {
                    let message = if inner.auth.can_relogin() {
                        format!("Qualys rejected a freshly issued token at {endpoint} (401 twice)")
                    } else {
                        format!("Qualys answered 401 at {endpoint}: token rejected or expired")
                    };
                    return Err(QualysError::Auth { message });
                }
                429 | 409 => {
                    inner.metrics.throttled(family);
                    let wait = throttle_wait(&headers, throttles);
                    if wait > inner.cfg.max_throttle_wait
                        || throttles >= inner.cfg.max_throttle_retries
                    {
                        warn!(
                            endpoint,
                            status,
                            family = family.as_str(),
                            wait_ms = wait.as_millis() as u64,
                            retries = throttles,
                            "Qualys throttled the request; leaving the wait to the caller"
                        );
                        return Err(QualysError::RateLimited {
                            family,
                            retry_after: Some(wait),
                        });
                    }
                    throttles += 1;
                    inner.limiter.hold(family, now + wait);
                    warn!(
                        endpoint,
                        status,
                        family = family.as_str(),
                        wait_ms = wait.as_millis() as u64,
                        attempt = throttles,
                        "Qualys throttled the request; waiting before retrying"
                    );
                    tokio::time::sleep(wait).await;
                    inner.metrics.retry();
                }
                404 if call.allow_404 => {
                    return Ok(Answer {
                        status,
                        body: body.to_vec(),
                    });
                }
                200..=299 => {
                    return Ok(Answer {
                        status,
                        body: body.to_vec(),
                    });
                }
                _ => {
                    return Err(QualysError::from_status(
                        status,
                        endpoint,
                        &body,
                        &inner.redactor,
                        Some(bearer.token.expose()),
                    ));
                }
            }
        }
    }

    /// Waits for room in the family's window and an in-flight permit, and records the send.
    /// The permit is not held while waiting for the window.
    async fn slot(&self, family: Family) -> Result<SemaphorePermit<'_>, QualysError> {
        let inner = &*self.inner;
        loop {
            let permit = inner
                .in_flight
                .acquire()
                .await
                .map_err(|_| QualysError::Config {
                    message: "the client is shut down".into(),
                })?;
            let now = Instant::now();
            let until = match inner.limiter.try_reserve(family, now) {
                Ok(()) => return Ok(permit),
                Err(Wait::Window(until)) => until,
                Err(Wait::Hold(until)) => {
                    let wait = until.duration_since(now);
                    if wait > inner.cfg.max_throttle_wait {
                        return Err(QualysError::RateLimited {
                            family,
                            retry_after: Some(wait),
                        });
                    }
                    until
                }
            };
            drop(permit);
            debug!(
                family = family.as_str(),
                wait_ms = until.duration_since(now).as_millis() as u64,
                "waiting for the client-side Qualys rate limit"
            );
            tokio::time::sleep_until(until).await;
        }
    }
}
