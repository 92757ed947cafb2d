//! Per-family sliding-window rate limits (docs/qualys-api.md §2.6) and their headers.

use crate::config::RateLimitRule;
use crate::http;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The rate-limit family of a request path, if it has one (`/auth`, `/__emulator` and paths
/// outside csapi and CDR have none).
pub(crate) fn family(path: &str) -> Option<&'static str> {
    if path == "/cdr-api" || path.starts_with("/cdr-api/") {
        return Some("cdr");
    }
    let rest = path.strip_prefix("/csapi/")?;
    let (_version, rest) = rest.split_once('/')?;
    let rest = rest.trim_end_matches('/');
    let under = |base: &str| rest == base || rest.starts_with(&format!("{base}/"));
    if rest == "containers/list" {
        Some("containers_list")
    } else if under("containers") {
        Some("containers")
    } else if rest == "images/list" {
        Some("images_list")
    } else if under("images") {
        Some("images")
    } else if under("registry") {
        Some("registry")
    } else if under("sensors") {
        Some("sensors")
    } else {
        None
    }
}

/// A family's limit as the headers show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// `X-RateLimit-Window-Sec`.
    pub window_secs: u64,
    /// `X-RateLimit-Remaining`.
    pub remaining: u32,
}

/// The limiter's answer for one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No rule for the family.
    Unlimited,
    /// Accepted and recorded.
    Allowed(Window),
    /// The window is full; wait this many seconds (at least 1).
    Throttled(Window, u64),
}

/// Sliding windows of accepted arrivals, per family.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    rules: HashMap<String, RateLimitRule>,
    windows: HashMap<String, VecDeque<Instant>>,
}

impl Limiter {
    /// A limiter with `rules` (a later rule for the same family replaces an earlier one).
    pub(crate) fn new(rules: &[RateLimitRule]) -> Self {
        Self {
            rules: rules
                .iter()
                .map(|r| (r.family.clone(), r.clone()))
                .collect(),
            windows: HashMap::new(),
        }
    }

    /// The rule of `family`.
    pub(crate) fn rule(&self, family: &str) -> Option<&RateLimitRule> {
        self.rules.get(family)
    }

    /// Records an arrival at `now` unless the window is full.
    pub(crate) fn check(&mut self, family: &str, now: Instant) -> Verdict {
        let Some(rule) = self.rules.get(family) else {
            return Verdict::Unlimited;
        };
        let window = Duration::from_secs(rule.window_secs);
        let entries = self.windows.entry(family.to_string()).or_default();
        while entries
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            entries.pop_front();
        }
        let used = entries.len() as u64;
        if used >= u64::from(rule.limit) {
            let wait = match entries.front() {
                Some(oldest) => (*oldest + window).saturating_duration_since(now),
                None => window,
            };
            let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
            let w = Window {
                limit: rule.limit,
                window_secs: rule.window_secs,
                remaining: 0,
            };
            return Verdict::Throttled(w, secs);
        }
        entries.push_back(now);
        let remaining = rule.limit.saturating_sub(entries.len() as u32);
        Verdict::Allowed(Window {
            limit: rule.limit,
            window_secs: rule.window_secs,
            remaining,
        })
    }
}

/// Adds `X-RateLimit-Limit`, `X-RateLimit-Window-Sec` and `X-RateLimit-Remaining`.
pub(crate) fn add_headers(headers: &mut HeaderMap, w: Window) {
    headers.insert("X-RateLimit-Limit", HeaderValue::from(w.limit));
    headers.insert("X-RateLimit-Window-Sec", HeaderValue::from(w.window_secs));
    headers.insert("X-RateLimit-Remaining", HeaderValue::from(w.remaining));
}

/// A 429 answer: the standard error body, the window headers (when known),
/// `X-RateLimit-ToWait-Sec` and, with `retry_after`, `Retry-After`.
pub(crate) fn too_many(
    window: Option<Window>,
    wait_secs: u64,
    retry_after: bool,
    message: &str,
) -> Response {
    let mut resp = http::error(StatusCode::TOO_MANY_REQUESTS, message);
    let headers = resp.headers_mut();
    if let Some(w) = window {
        add_headers(headers, Window { remaining: 0, ..w });
    }
    headers.insert("X-RateLimit-ToWait-Sec", HeaderValue::from(wait_secs));
    if retry_after {
        headers.insert("Retry-After", HeaderValue::from(wait_secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(
            family("/csapi/v1.3/containers/list"),
            Some("containers_list")
        );
        assert_eq!(family("/csapi/v1.3/containers/abc"), Some("containers"));
        assert_eq!(family("/csapi/v1.2/images/list"), Some("images_list"));
        assert_eq!(family("/csapi/v1.3/images"), Some("images"));
        assert_eq!(family("/csapi/v1.3/images/abc/vuln"), Some("images"));
        assert_eq!(family("/csapi/v1.3/registry"), Some("registry"));
        assert_eq!(family("/csapi/v1.3/registry/aws-base"), Some("registry"));
        assert_eq!(family("/csapi/v1.3/registryx"), None);
        assert_eq!(family("/csapi/v1.3/sensors"), Some("sensors"));
        assert_eq!(family("/cdr-api/rest/v1/findings/"), Some("cdr"));
        assert_eq!(family("/auth"), None);
        assert_eq!(family("/csapi/v1.3/tag/assign"), None);
    }

    #[test]
    fn sliding_window() {
        let mut l = Limiter::new(&[RateLimitRule::new("registry", 2, 10)]);
        let t0 = Instant::now();
        assert!(matches!(
            l.check("registry", t0),
            Verdict::Allowed(Window { remaining: 1, .. })
        ));
        assert!(matches!(
            l.check("registry", t0 + Duration::from_secs(3)),
            Verdict::Allowed(Window { remaining: 0, .. })
        ));
        // Full: the oldest leaves at t0+10 s, 5.5 s from now, rounded up.
        assert_eq!(
            l.check("registry", t0 + Duration::from_millis(4500)),
            Verdict::Throttled(
                Window {
                    limit: 2,
                    window_secs: 10,
                    remaining: 0
                },
                6
            )
        );
        // Throttled arrivals are not recorded: at t0+10 s one slot is free again.
        assert!(matches!(
            l.check("registry", t0 + Duration::from_secs(10)),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            l.check("registry", t0 + Duration::from_secs(11)),
            Verdict::Throttled(_, 2)
        ));
        assert_eq!(l.check("images", t0), Verdict::Unlimited);
    }
}
