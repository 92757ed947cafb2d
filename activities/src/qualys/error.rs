//! Errors, their classification (retryable or not), and the redaction of error text
//! (docs/qualys-api.md §2.5).

use super::config::Family;
use regex::Regex;
use std::sync::LazyLock;
use std::time::Duration;

/// Longest error message kept from a response body.
const MAX_MESSAGE_CHARS: usize = 300;
/// How much of a body is looked at to build a message.
const MAX_BODY_SCAN: usize = 4096;

/// What went wrong talking to Qualys.
///
/// Messages never hold credentials: text taken from responses is redacted (see [`redact`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum QualysError {
    /// Credentials rejected: a 401 from `/auth`, a 401 after one fresh login, or a 401 for a
    /// ready token. Not retryable.
    #[error("Qualys authentication failed: {message}")]
    Auth {
        /// What happened (never the credentials).
        message: String,
    },
    /// 403: the subscription or user may not do this (e.g. Container Security not allowed).
    /// Not retryable.
    #[error("Qualys refused {endpoint} (403 Forbidden): {message}")]
    Forbidden {
        /// `METHOD /path-template`.
        endpoint: String,
        /// Qualys' message.
        message: String,
    },
    /// 400, 422 and other 4xx (status 0: rejected by the client before sending). Not retryable.
    #[error("Qualys rejected {endpoint} ({status}): {message}")]
    BadRequest {
        /// `METHOD /path-template`.
        endpoint: String,
        /// HTTP status, or 0 when the client refused to send the request.
        status: u16,
        /// Qualys' message.
        message: String,
    },
    /// 404 where it is final. Not retryable.
    #[error("Qualys found nothing at {endpoint} (404): {message}")]
    NotFound {
        /// `METHOD /path-template`.
        endpoint: String,
        /// Qualys' message.
        message: String,
    },
    /// Throttled (429, or 409 from classic APIs) beyond what the client waits in-process.
    /// Retryable, after `retry_after` when known.
    #[error("Qualys rate-limited the {family} endpoints{}", after(.retry_after))]
    RateLimited {
        /// The endpoint family that is throttled.
        family: Family,
        /// How long Qualys asked to wait, when known.
        retry_after: Option<Duration>,
    },
    /// 5xx. Retryable.
    #[error("Qualys server error at {endpoint} ({status}): {message}")]
    Server {
        /// `METHOD /path-template`.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Qualys' message.
        message: String,
    },
    /// No complete answer within the request timeout. Retryable.
    #[error("Qualys did not answer {endpoint} in time")]
    Timeout {
        /// `METHOD /path-template`.
        endpoint: String,
    },
    /// Connection refused, reset, or closed mid-body. Retryable.
    #[error("could not talk to Qualys at {endpoint}: {message}")]
    Transport {
        /// `METHOD /path-template`.
        endpoint: String,
        /// The transport error.
        message: String,
    },
    /// A body that does not parse. Retryable (truncated bodies happen).
    #[error("unexpected response from Qualys at {endpoint}: {message}")]
    Decode {
        /// `METHOD /path-template`.
        endpoint: String,
        /// The parser's message (never the body).
        message: String,
    },
    /// The client is misconfigured. Not retryable.
    #[error("invalid Qualys client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

fn after(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {:.1} s)", d.as_secs_f64()),
        None => String::new(),
    }
}

impl QualysError {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            QualysError::RateLimited { .. }
                | QualysError::Server { .. }
                | QualysError::Timeout { .. }
                | QualysError::Transport { .. }
                | QualysError::Decode { .. }
        )
    }

    /// Whether Qualys refused a create because what it would create already exists: a 400 or
    /// 422 whose message says "already exists" (Qualys answered `400 "Registry already exists"`
    /// to concurrent registry creates). The caller re-reads instead of failing.
    pub fn is_already_exists(&self) -> bool {
        match self {
            QualysError::BadRequest {
                status: 400 | 422,
                message,
                ..
            } => {
                let message = message.to_ascii_lowercase();
                message.contains("already exist") || message.contains("duplicate")
            }
            _ => false,
        }
    }

    /// A bounded label: `auth`, `forbidden`, `bad_request`, `not_found`, `rate_limited`,
    /// `server`, `timeout`, `transport`, `decode` or `config`.
    pub fn kind(&self) -> &'static str {
        match self {
            QualysError::Auth { .. } => "auth",
            QualysError::Forbidden { .. } => "forbidden",
            QualysError::BadRequest { .. } => "bad_request",
            QualysError::NotFound { .. } => "not_found",
            QualysError::RateLimited { .. } => "rate_limited",
            QualysError::Server { .. } => "server",
            QualysError::Timeout { .. } => "timeout",
            QualysError::Transport { .. } => "transport",
            QualysError::Decode { .. } => "decode",
            QualysError::Config { .. } => "config",
        }
    }

    /// Every kind label, in a fixed order.
    pub const KINDS: [&'static str; 10] = [
        "auth",
        "forbidden",
        "bad_request",
        "not_found",
        "rate_limited",
        "server",
        "timeout",
        "transport",
        "decode",
        "config",
    ];

    /// How long to wait before retrying, when Qualys said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            QualysError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error for a non-success status other than 401/429/409, which the client handles.
    pub(crate) fn from_status(
        status: u16,
        endpoint: &str,
        body: &[u8],
        redactor: &Redactor,
        token: Option<&str>,
    ) -> QualysError {
        let message = redactor.message_from_body(status, body, token);
        let endpoint = endpoint.to_string();
        match status {
            403 => QualysError::Forbidden { endpoint, message },
            404 => QualysError::NotFound { endpoint, message },
            408 => QualysError::Timeout { endpoint },
            500..=599 => QualysError::Server {
                endpoint,
                status,
                message,
            },
            _ => QualysError::BadRequest {
                endpoint,
                status,
                message,
            },
        }
    }
}

/// `key=value`-style credentials, optionally quoted (JSON) and with a `Bearer`/`Basic` scheme.
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(token|password|passwd|secret|key|authorization|credential)s?(["']?)[\s:=]+["']?(?:(?:bearer|basic)\s+)?[^\s"',&;]+"#,
    )
    .expect("valid regex")
});
/// Anything that looks like a token: 32 or more token characters in a row.
static LONG_RUN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9_\-\.]{32,}").expect("valid regex"));

/// Removes credentials from text: the rules of docs/qualys-api.md §2.5
/// (`(token|password|secret|key|authorization)[\s:=]+\S+` and any run of 32+ token characters).
pub fn redact(text: &str) -> String {
    let text = KEY_VALUE.replace_all(text, "${1}${2}=[redacted]");
    LONG_RUN.replace_all(&text, "[redacted]").into_owned()
}

/// Redacts error text, also removing the exact credentials the client knows.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    literals: Vec<String>,
}

impl Redactor {
    /// A redactor that also removes these exact strings (and their URL-encoded forms).
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut literals = Vec::new();
        for s in secrets.into_iter().filter(|s| !s.is_empty()) {
            literals.push(s.to_string());
            let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            if encoded != s {
                literals.push(encoded);
            }
        }
        // Longest first, so that a secret containing another is removed whole.
        literals.sort_by_key(|s| std::cmp::Reverse(s.len()));
        literals.dedup();
        Self { literals }
    }

    /// `text` without credentials, also removing `extra` (e.g. the current token).
    pub(crate) fn redact(&self, text: &str, extra: Option<&str>) -> String {
        let mut text = text.to_string();
        if let Some(extra) = extra.filter(|e| !e.is_empty()) {
            text = text.replace(extra, "[redacted]");
        }
        for literal in &self.literals {
            text = text.replace(literal.as_str(), "[redacted]");
        }
        redact(&text)
    }

    /// A short, redacted message from an error body: Qualys' `message` (or `errorMessage`),
    /// with its `errorCode`, when the body is the standard error JSON; otherwise the text.
    /// `token` (the bearer token in use) is removed too.
    pub(crate) fn message_from_body(
        &self,
        status: u16,
        body: &[u8],
        token: Option<&str>,
    ) -> String {
        let scanned = &body[..body.len().min(MAX_BODY_SCAN)];
        let text = String::from_utf8_lossy(scanned);
        let from_json = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                let obj = v.as_object()?;
                let message = ["message", "errorMessage", "error_description", "error"]
                    .iter()
                    .find_map(|k| obj.get(*k).and_then(|m| m.as_str()))?;
                Some(match obj.get("errorCode").and_then(|c| c.as_str()) {
                    Some(code) if !code.is_empty() => format!("{code}: {message}"),
                    _ => message.to_string(),
                })
            });
        let raw = from_json.unwrap_or_else(|| text.trim().to_string());
        let raw = if raw.is_empty() {
            format!("HTTP {status} with an empty body")
        } else {
            raw
        };
        truncate(&self.redact(&raw, token), MAX_MESSAGE_CHARS)
    }
}

/// At most `max` characters, with an ellipsis when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_key_values_and_long_runs() {
        let jwt = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJlc2lnbmF0dXJl";
        let cases = [
            format!("Authorization: Bearer {jwt}"),
            "password=hunter2&token=true".to_string(),
            r#"{"password":"hunter2"}"#.to_string(),
            "secret: hunter2".to_string(),
            format!("the token {jwt} is bad"),
        ];
        for case in cases {
            let out = redact(&case);
            assert!(!out.contains("hunter2"), "{out}");
            assert!(!out.contains("eyJ"), "{out}");
            assert!(out.contains("[redacted]"), "{out}");
        }
        assert_eq!(redact("Request Forbidden"), "Request Forbidden");
    }

    #[test]
    fn literals_and_their_encodings_are_removed() {
        let r = Redactor::new(["p@ss w0rd", ""]);
        let out = r.redact("echo: p@ss w0rd / p%40ss+w0rd / abc", Some("abc"));
        assert!(!out.contains("p@ss"), "{out}");
        assert!(!out.contains("p%40ss"), "{out}");
        assert!(!out.contains("abc"), "{out}");
    }

    #[test]
    fn messages_come_from_the_error_json_and_are_short() {
        let r = Redactor::default();
        let m = r.message_from_body(
            403,
            br#"{"errorCode":"403 FORBIDDEN","message":"Request Forbidden","timestamp":1700721586546}"#,
            None,
        );
        assert_eq!(m, "403 FORBIDDEN: Request Forbidden");
        let long = "x ".repeat(1000);
        assert!(
            r.message_from_body(500, long.as_bytes(), None)
                .chars()
                .count()
                <= 301
        );
        assert_eq!(
            r.message_from_body(502, b"", None),
            "HTTP 502 with an empty body"
        );
    }

    #[test]
    fn classification() {
        let r = Redactor::default();
        let e = QualysError::from_status(500, "GET /x", b"", &r, None);
        assert!(e.is_retryable());
        assert_eq!(e.kind(), "server");
        for (status, kind) in [
            (400, "bad_request"),
            (422, "bad_request"),
            (403, "forbidden"),
            (404, "not_found"),
        ] {
            let e = QualysError::from_status(status, "GET /x", b"{}", &r, None);
            assert_eq!(e.kind(), kind);
            assert!(!e.is_retryable());
        }
        let exists = QualysError::from_status(
            400,
            "POST /csapi/v1.3/registry",
            br#"{"errorCode":"400 BAD_REQUEST","message":"Registry already exists"}"#,
            &r,
            None,
        );
        assert!(exists.is_already_exists(), "{exists}");
        assert!(!exists.is_retryable());
        let other = QualysError::from_status(
            400,
            "POST /x",
            br#"{"message":"arn is mandatory"}"#,
            &r,
            None,
        );
        assert!(!other.is_already_exists());
        let server = QualysError::from_status(500, "POST /x", b"Registry already exists", &r, None);
        assert!(
            !server.is_already_exists(),
            "only a refusal of the create counts"
        );
        let e = QualysError::RateLimited {
            family: Family::Images,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.to_string().contains("images"));
        assert!(QualysError::KINDS.contains(&e.kind()));
    }
}
