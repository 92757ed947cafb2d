//! HTTP helpers: URLs (encoded exactly once), transport-error mapping, throttle waits.

use super::error::{QualysError, Redactor, truncate};
use super::limiter::header_num;
use reqwest::header::HeaderMap;
use std::time::Duration;
use url::Url;

/// Cap of the exponential throttle backoff (docs/qualys-api.md §2.6).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `{gateway}{template}` with each `{…}` segment of `template` replaced by the next of `args`
/// (percent-encoded as a path segment) and `query` appended (form-encoded). Every value is
/// encoded exactly once (docs/qualys-api.md §2.3).
pub(crate) fn build_url(
    gateway: &Url,
    template: &str,
    args: &[&str],
    query: &[(String, String)],
) -> Result<Url, QualysError> {
    let mut url = gateway.clone();
    url.set_query(None);
    url.set_fragment(None);
    let mut args = args.iter();
    {
        let mut segments = url.path_segments_mut().map_err(|()| QualysError::Config {
            message: format!("gateway URL `{gateway}` cannot have a path"),
        })?;
        segments.pop_if_empty();
        for segment in template.trim_start_matches('/').split('/') {
            if segment.starts_with('{') && segment.ends_with('}') {
                let arg = args.next().ok_or_else(|| QualysError::Config {
                    message: format!("no value for {segment} in {template}"),
                })?;
                segments.push(arg);
            } else {
                segments.push(segment);
            }
        }
    }
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
    }
    Ok(url)
}

/// Sends `request` and reads the whole answer: its status, headers and body. A failed send or
/// body read is a [`transport_error`] naming `endpoint`.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    endpoint: &str,
    redactor: &Redactor,
) -> Result<(u16, HeaderMap, Vec<u8>), QualysError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(e, endpoint, redactor))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_error(e, endpoint, redactor))?;
    Ok((status, headers, body.to_vec()))
}

/// The error for a failed send or body read.
pub(crate) fn transport_error(
    err: reqwest::Error,
    endpoint: &str,
    redactor: &Redactor,
) -> QualysError {
    if err.is_timeout() {
        return QualysError::Timeout {
            endpoint: endpoint.to_string(),
        };
    }
    let is_builder = err.is_builder();
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    let message = truncate(&redactor.redact(&message, None), 300);
    if is_builder {
        QualysError::Config {
            message: format!("cannot build the request for {endpoint}: {message}"),
        }
    } else {
        QualysError::Transport {
            endpoint: endpoint.to_string(),
            message,
        }
    }
}

/// How long to wait after a throttled answer: `Retry-After` (seconds), else
/// `X-RateLimit-ToWait-Sec`, else exponential backoff with jitter (1 s, 2 s, 4 s … ≤ 30 s).
/// `attempt` is 0 for the first throttle of a request.
pub(crate) fn throttle_wait(headers: &HeaderMap, attempt: u32) -> Duration {
    let advertised = header_num(headers, "retry-after")
        .or_else(|| header_num(headers, "x-ratelimit-towait-sec"))
        .filter(|s| *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    if let Some(wait) = advertised {
        return wait;
    }
    let base = Duration::from_secs(1u64 << attempt.min(5));
    let jitter = base.mul_f64(fastrand::f64() * 0.25);
    (base + jitter).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn urls_encode_once() {
        let gw = Url::parse("http://127.0.0.1:8090/").unwrap();
        let url = build_url(
            &gw,
            "/csapi/v1.3/registry",
            &[],
            &[(
                "filter".into(),
                r#"registryUri:"https://1.dkr.ecr.us-east-1.amazonaws.com""#.into(),
            )],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8090/csapi/v1.3/registry?filter=registryUri%3A%22https%3A%2F%2F1.dkr.ecr.us-east-1.amazonaws.com%22"
        );
        let prefixed = Url::parse("https://gw.example/prefix").unwrap();
        let url = build_url(
            &prefixed,
            "/csapi/v1.3/registry/{id}/schedule",
            &["a/b c"],
            &[],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://gw.example/prefix/csapi/v1.3/registry/a%2Fb%20c/schedule"
        );
        let url = build_url(&gw, "/cdr-api/rest/v1/findings/", &[], &[]).unwrap();
        assert_eq!(url.path(), "/cdr-api/rest/v1/findings/");
        assert!(build_url(&gw, "/x/{id}", &[], &[]).is_err());
    }

    #[test]
    fn throttle_waits() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-towait-sec", HeaderValue::from_static("7"));
        assert_eq!(throttle_wait(&h, 3), Duration::from_secs(7));
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(throttle_wait(&h, 3), Duration::from_secs(2));
        let none = HeaderMap::new();
        for (attempt, base) in [(0u32, 1u64), (1, 2), (2, 4), (4, 16)] {
            let w = throttle_wait(&none, attempt);
            assert!(
                w >= Duration::from_secs(base) && w <= Duration::from_secs(base).mul_f64(1.25),
                "{w:?}"
            );
        }
        assert_eq!(throttle_wait(&none, 10), MAX_BACKOFF);
    }
}
