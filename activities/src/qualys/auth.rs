//! Gateway JWT login and the cached bearer token (docs/qualys-api.md §1.1).
//!
//! - Password mode: `POST {gateway}/auth` with the form `username`, `password`, `token=true`;
//!   200 or 201 with the raw JWT as text (a JSON `{"access_token"}` is accepted too). The token
//!   is cached and renewed after `token_refresh_after` (it expires after 4 h) or after a 401.
//!   One tokio mutex guards the cache, so concurrent callers share one login.
//! - Token mode: the given token is used as is and never renewed.
//!
//! The token never appears in logs, URLs or error messages.

use super::config::{Family, QualysAuth, Secret};
use super::error::{QualysError, Redactor};
use super::http::{send, throttle_wait};
use super::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

const ENDPOINT: &str = "POST /auth";

/// A token to send and the login it came from.
#[derive(Clone, Debug)]
pub(crate) struct Bearer {
    pub(crate) token: Secret,
    /// Which login produced it (0 for a ready token).
    pub(crate) generation: u64,
}

struct Cached {
    bearer: Bearer,
    obtained: Instant,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    logins: u64,
}

/// Obtains and caches bearer tokens.
pub(crate) struct Authenticator {
    auth: QualysAuth,
    auth_url: Url,
    refresh_after: Duration,
    http: reqwest::Client,
    redactor: Redactor,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
}

impl Authenticator {
    pub(crate) fn new(
        auth: QualysAuth,
        auth_url: Url,
        refresh_after: Duration,
        http: reqwest::Client,
        redactor: Redactor,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            auth,
            auth_url,
            refresh_after,
            http,
            redactor,
            metrics,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a 401 may be cured by logging in again.
    pub(crate) fn can_relogin(&self) -> bool {
        matches!(self.auth, QualysAuth::Password { .. })
    }

    /// The token to send, logging in first when there is none or it is old.
    pub(crate) async fn bearer(&self) -> Result<Bearer, QualysError> {
        let (username, password) = match &self.auth {
            QualysAuth::Token(token) => {
                return Ok(Bearer {
                    token: token.clone(),
                    generation: 0,
                });
            }
            QualysAuth::Password { username, password } => (username, password),
        };
        let mut state = self.state.lock().await;
        if let Some(cached) = &state.cached {
            if cached.obtained.elapsed() < self.refresh_after {
                return Ok(cached.bearer.clone());
            }
            tracing::debug!("Qualys token is due for renewal");
        }
        state.cached = None;
        let token = self.login(username, password).await?;
        state.logins += 1;
        let bearer = Bearer {
            token,
            generation: state.logins,
        };
        state.cached = Some(Cached {
            bearer: bearer.clone(),
            obtained: Instant::now(),
        });
        Ok(bearer)
    }

    /// Forgets the token of login `generation` (after a 401), unless a newer one replaced it.
    pub(crate) async fn invalidate(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .cached
            .as_ref()
            .is_some_and(|c| c.bearer.generation == generation)
        {
            state.cached = None;
        }
    }

    async fn login(&self, username: &str, password: &Secret) -> Result<Secret, QualysError> {
        self.metrics.login();
        let started = Instant::now();
        let form = [
            ("username", username),
            ("password", password.expose()),
            ("token", "true"),
        ];
        let request = self.http.post(self.auth_url.clone()).form(&form);
        let (status, headers, body) = send(request, ENDPOINT, &self.redactor).await?;
        tracing::debug!(
            method = "POST",
            path = "/auth",
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Qualys login"
        );
        match status {
            200 | 201 => parse_token(&body),
            401 => Err(QualysError::Auth {
                message:
                    "Qualys rejected the username/password (401 Unauthorized user) at POST /auth"
                        .into(),
            }),
            429 | 409 => Err(QualysError::RateLimited {
                family: Family::Other,
                retry_after: Some(throttle_wait(&headers, 0)),
            }),
            _ => Err(QualysError::from_status(
                status,
                ENDPOINT,
                &body,
                &self.redactor,
                None,
            )),
        }
    }
}

/// The token of a login response: raw JWT text, a JSON string, or `{"access_token"|"token"}`.
fn parse_token(body: &[u8]) -> Result<Secret, QualysError> {
    let decode = |message: &str| QualysError::Decode {
        endpoint: ENDPOINT.into(),
        message: message.into(),
    };
    let text = std::str::from_utf8(body)
        .map_err(|_| decode("the login response is not UTF-8"))?
        .trim();
    let token = if text.starts_with('{') || text.starts_with('"') {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(serde_json::Value::Object(o)) => ["access_token", "accessToken", "token"]
                .iter()
                .find_map(|k| o.get(*k).and_then(|v| v.as_str()))
                .map(String::from)
                .ok_or_else(|| decode("the login response JSON has no access_token"))?,
            _ => return Err(decode("the login response is neither a token nor JSON")),
        }
    } else {
        text.to_string()
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(decode("the login response is empty"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) || !token.is_ascii() {
        return Err(decode("the login response is not a token"));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shapes() {
        for body in [
            &b"  eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2ln\n"[..],
            br#"{"access_token":"eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2ln"}"#,
            br#""eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2ln""#,
        ] {
            assert_eq!(
                parse_token(body).unwrap().expose(),
                "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2ln"
            );
        }
        for bad in [
            &b""[..],
            b"  ",
            b"<html> login page </html>",
            b"{\"x\":1}",
            b"{broken",
        ] {
            assert_eq!(parse_token(bad).unwrap_err().kind(), "decode");
        }
    }
}
