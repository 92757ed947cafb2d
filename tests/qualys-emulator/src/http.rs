//! Response builders (the standard Qualys error body, docs/qualys-api.md §2.5), query-string and
//! form parsing, and paging.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

/// The content type Qualys answers JSON with.
pub(crate) const JSON: &str = "application/json;charset=UTF-8";

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A response with a body and a content type.
pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &Value) -> Response {
    with_body(status, JSON, value.to_string())
}

/// A `200 OK` JSON reply.
pub(crate) fn ok(value: &Value) -> Reply {
    Ok(json(StatusCode::OK, value))
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    with_body(status, "text/plain;charset=UTF-8", body.into())
}

/// A response without a body.
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// `"<code> <REASON>"`, e.g. `429 TOO_MANY_REQUESTS`.
pub(crate) fn error_code(status: StatusCode) -> String {
    let reason = status
        .canonical_reason()
        .unwrap_or("ERROR")
        .to_ascii_uppercase()
        .replace([' ', '-'], "_");
    format!("{} {reason}", status.as_u16())
}

/// The standard error body `{"errorCode","message","timestamp"}`.
pub(crate) fn error_body(status: StatusCode, message: &str) -> Value {
    json!({"errorCode": error_code(status), "message": message, "timestamp": now_ms()})
}

/// An error response with the standard body.
pub(crate) fn error(status: StatusCode, message: impl AsRef<str>) -> Response {
    json(status, &error_body(status, message.as_ref()))
}

/// An error answer: a status and the message of its standard body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

/// What handlers return.
pub(crate) type Reply = Result<Response, ApiError>;

/// A `400 Bad Request`.
pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message: message.into(),
    }
}

/// A `404 Not Found`.
pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: message.into(),
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); invalid escapes stay as
/// they are.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `application/x-www-form-urlencoded` pairs (also used for query strings).
pub(crate) fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// A parsed query string.
#[derive(Debug, Default, Clone)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// Parses `a=1&b=2`.
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        Self(raw.map(parse_pairs).unwrap_or_default())
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A QQL filter: `filter`, decoded once more if a client encoded it twice (a seed does,
    /// docs/qualys-api.md §2.3).
    pub(crate) fn filter(&self) -> Option<String> {
        let f = self.get("filter")?.trim();
        if f.is_empty() {
            return None;
        }
        if !f.contains(':') && f.contains('%') {
            return Some(percent_decode(f, false));
        }
        Some(f.to_string())
    }

    /// An optional unsigned number; `Err` names the parameter.
    pub(crate) fn number(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| bad_request(format!("Invalid value for {name}: {v}"))),
        }
    }
}

/// csapi paging: 1-based `pageNumber` (or swagger 1.1's `pageNo`), `pageSize` 1..=1000
/// (default 50). Returns (page, size).
pub(crate) fn page_params(q: &Query) -> Result<(usize, usize), ApiError> {
    let page = match q.number("pageNumber")? {
        Some(p) => Some(p),
        None => q.number("pageNo")?,
    }
    .unwrap_or(1);
    if page < 1 {
        return Err(bad_request(
            "pageNumber must be 1 or more (page numbers start with 1)",
        ));
    }
    let size = q.number("pageSize")?.unwrap_or(50);
    if !(1..=1000).contains(&size) {
        return Err(bad_request("pageSize must be between 1 and 1000"));
    }
    Ok((page as usize, size as usize))
}

/// One page of `items`.
pub(crate) fn page_of<T: Clone>(items: &[T], page: usize, size: usize) -> Vec<T> {
    items
        .iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("p%40ss+w%2Fd", true), "p@ss w/d");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%4", true), "%4");
        assert_eq!(percent_decode("%zz%41", true), "%zzA");
        let q = Query::parse(Some(
            "filter=registryUri%3A%22https%3A%2F%2Fa%22&pageNumber=2",
        ));
        assert_eq!(q.filter().as_deref(), Some("registryUri:\"https://a\""));
        let twice = Query::parse(Some("filter=registryUri%253A%2522x%2522"));
        assert_eq!(twice.filter().as_deref(), Some("registryUri:\"x\""));
        assert_eq!(page_params(&q).unwrap(), (2, 50));
        assert!(page_params(&Query::parse(Some("pageNumber=0"))).is_err());
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            error_code(StatusCode::TOO_MANY_REQUESTS),
            "429 TOO_MANY_REQUESTS"
        );
        assert_eq!(error_code(StatusCode::UNAUTHORIZED), "401 UNAUTHORIZED");
        assert_eq!(
            error_code(StatusCode::SERVICE_UNAVAILABLE),
            "503 SERVICE_UNAVAILABLE"
        );
    }
}
