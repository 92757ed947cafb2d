//! [`QualysClient`] itself: construction, auth, the in-flight and rate limits, and the one send
//! path ([`QualysClient::execute`]) that [`Call`]s go through. The endpoints are in `api.rs` and
//! the listings in `paging.rs`; both build a [`Call`] and read the [`Answer`].

use super::auth::{Authenticator, Bearer};
use super::config::{Family, QualysAuth, QualysConfig, Secret};
use super::error::{self, QualysError, Redactor};
use super::http::{build_url, send, throttle_wait};
use super::limiter::{Limiter, RateLimitState, Wait};
use super::metrics::{ClientMetrics, Metrics};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
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

    /// The retry loop of [`QualysClient::execute`]. Only two answers are retried here: the
    /// first 401 of a password-mode client (after one fresh login) and a throttle (429/409) the
    /// client may wait out; every other status returns at once.
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
            let reply = self
                .send_once(call, endpoint, &url, family, &bearer)
                .await?;
            let throttled = matches!(reply.status, 429 | 409);
            inner
                .limiter
                .observe(family, &reply.headers, throttled, reply.received);
            match reply.status {
                401 if inner.auth.can_relogin() && !relogged => {
                    relogged = true;
                    inner.auth.invalidate(bearer.generation).await;
                    inner.metrics.retry();
                    debug!(endpoint, "Qualys answered 401; logging in again once");
                }
                401 => return Err(self.unauthorized(endpoint)),
                429 | 409 => {
                    self.wait_out_throttle(endpoint, family, &reply, throttles)
                        .await?;
                    throttles += 1;
                }
                404 if call.allow_404 => return Ok(reply.into_answer()),
                200..=299 => return Ok(reply.into_answer()),
                // The token is passed so that an error body echoing it is redacted.
                status => {
                    return Err(QualysError::from_status(
                        status,
                        endpoint,
                        &reply.body,
                        &inner.redactor,
                        Some(bearer.token.expose()),
                    ));
                }
            }
        }
    }

    /// One attempt: an in-flight permit and a window slot, the request with `bearer`, and the
    /// whole body read. The permit is released before the caller sleeps or retries.
    async fn send_once(
        &self,
        call: &Call<'_>,
        endpoint: &str,
        url: &url::Url,
        family: Family,
        bearer: &Bearer,
    ) -> Result<Reply, QualysError> {
        let inner = &*self.inner;
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
        let (status, headers, body) = send(request, endpoint, &inner.redactor).await?;
        drop(permit);
        let received = Instant::now();
        debug!(
            method = %call.method,
            path = call.template,
            status,
            family = family.as_str(),
            elapsed_ms = received.duration_since(started).as_millis() as u64,
            "Qualys request"
        );
        Ok(Reply {
            status,
            headers,
            body,
            received,
        })
    }

    /// The [`QualysError::Auth`] for a 401 that is not retried: in password mode the second
    /// one (a freshly issued token was rejected), in token mode the first.
    fn unauthorized(&self, endpoint: &str) -> QualysError {
        let message = if self.inner.auth.can_relogin() {
            format!("Qualys rejected a freshly issued token at {endpoint} (401 twice)")
        } else {
            format!("Qualys answered 401 at {endpoint}: token rejected or expired")
        };
        QualysError::Auth { message }
    }

    /// Handles the `throttles`-th throttle (429/409) of a call: sleeps out the advertised (or
    /// backoff) wait and holds the family meanwhile, or — when the wait is too long or the
    /// retries are spent — returns [`QualysError::RateLimited`] at once, so that Temporal's
    /// retry policy does the waiting instead of a blocked activity.
    async fn wait_out_throttle(
        &self,
        endpoint: &str,
        family: Family,
        reply: &Reply,
        throttles: u32,
    ) -> Result<(), QualysError> {
        let inner = &*self.inner;
        let status = reply.status;
        inner.metrics.throttled(family);
        let wait = throttle_wait(&reply.headers, throttles);
        if wait > inner.cfg.max_throttle_wait || throttles >= inner.cfg.max_throttle_retries {
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
        inner.limiter.hold(family, reply.received + wait);
        warn!(
            endpoint,
            status,
            family = family.as_str(),
            wait_ms = wait.as_millis() as u64,
            attempt = throttles + 1,
            "Qualys throttled the request; waiting before retrying"
        );
        tokio::time::sleep(wait).await;
        inner.metrics.retry();
        Ok(())
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

/// What one attempt got back: the status, headers and body, and when it arrived (the limiter's
/// and the throttle hold's "now").
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
    received: Instant,
}

impl Reply {
    fn into_answer(self) -> Answer {
        Answer {
            status: self.status,
            body: self.body,
        }
    }
}
