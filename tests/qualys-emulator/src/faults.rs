//! Injected faults: 5xx answers, 429 storms, latency, malformed bodies and dropped connections.

use crate::config::Faults;
use crate::http;
use crate::limits::{self, Window};
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream;
use std::time::Duration;

/// Whether `faults` apply to `path` (admin paths never reach here).
pub(crate) fn applies(faults: &Faults, path: &str) -> bool {
    match &faults.paths {
        None => path != "/auth" && !path.starts_with("/auth/"),
        Some(prefixes) => prefixes.iter().any(|p| path.starts_with(p.as_str())),
    }
}

/// True with probability `rate`.
pub(crate) fn roll(rate: f64) -> bool {
    rate > 0.0 && (rate >= 1.0 || fastrand::f64() < rate)
}

/// A 500, 502 or 503 with the standard error body.
pub(crate) fn server_error() -> Response {
    let status = [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::BAD_GATEWAY,
        StatusCode::SERVICE_UNAVAILABLE,
    ][fastrand::usize(..3)];
    let message = match status {
        StatusCode::BAD_GATEWAY => "Bad Gateway (injected by qualys-emulator)",
        StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable (injected by qualys-emulator)",
        _ => "Internal Server Error (injected by qualys-emulator)",
    };
    http::error(status, message)
}

/// An injected 429: a 1 s wait, the family's window headers when it has a rule, and
/// `Retry-After` half of the time (otherwise only `X-RateLimit-ToWait-Sec`).
pub(crate) fn throttle(window: Option<Window>) -> Response {
    limits::too_many(
        window,
        1,
        fastrand::bool(),
        "Too Many Requests (injected by qualys-emulator)",
    )
}

/// `resp` as a 200 whose JSON body is cut short.
pub(crate) async fn malformed(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut cut = bytes.slice(..bytes.len() / 2).to_vec();
    if cut.is_empty() || serde_json::from_slice::<serde_json::Value>(&cut).is_ok() {
        cut = br#"{"data":[{"sha":"#.to_vec();
    }
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(http::JSON));
    Response::from_parts(parts, Body::from(cut))
}

/// `resp` with a body that fails, so that hyper aborts the connection: either before anything
/// is written (the client sees the connection close without an answer) or after the head and
/// part of the body.
pub(crate) fn drop_connection(resp: Response) -> Response {
    let (mut parts, _body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let mid_response = fastrand::bool();
    let chunks = stream::unfold(0u8, move |step| async move {
        match step {
            0 if mid_response => Some((
                Ok::<Bytes, std::io::Error>(Bytes::from_static(br#"{"data":[{"#)),
                1,
            )),
            0 | 1 => {
                if mid_response {
                    // Let hyper flush the head and the first chunk before failing.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Some((
                    Err(std::io::Error::other(
                        "connection dropped by qualys-emulator",
                    )),
                    2,
                ))
            }
            _ => None,
        }
    });
    Response::from_parts(parts, Body::from_stream(chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let mut f = Faults::default();
        assert!(applies(&f, "/csapi/v1.3/registry"));
        assert!(!applies(&f, "/auth"));
        f.paths = Some(vec!["/cdr-api".into(), "/auth".into()]);
        assert!(applies(&f, "/cdr-api/rest/v1/findings/"));
        assert!(applies(&f, "/auth"));
        assert!(!applies(&f, "/csapi/v1.3/registry"));
        assert!(!roll(0.0));
        assert!(roll(1.0));
    }

    #[tokio::test]
    async fn malformed_is_invalid_json() {
        for body in ["{\"count\":1,\"data\":[]}", "", "12345678", "\"uuid\""] {
            let resp = malformed(http::json(
                StatusCode::NOT_FOUND,
                &serde_json::from_str(if body.is_empty() { "null" } else { body }).unwrap(),
            ))
            .await;
            assert_eq!(resp.status(), StatusCode::OK);
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(
                serde_json::from_slice::<serde_json::Value>(&bytes).is_err(),
                "{body}"
            );
        }
    }
}
