//! Client-side rate limiting per endpoint family (docs/qualys-api.md §2.6).
//!
//! A sliding window per [`Family`]: a send is allowed when fewer than `limit` sends happened in
//! the last `window + 250 ms` (the margin absorbs clock and network skew between client and
//! server). The server is authoritative: `X-RateLimit-Limit` + `X-RateLimit-Window-Sec` replace
//! the configured values, and `X-RateLimit-Remaining: 0` (or a throttle answer) holds the whole
//! family, because other processes may share the subscription's budget.

use super::config::{Family, RateLimit};
use reqwest::header::HeaderMap;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Added to every window.
pub(crate) const SAFETY_MARGIN: Duration = Duration::from_millis(250);

/// Why a send must wait, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The family's window is full; room appears at this instant.
    Window(Instant),
    /// The server asked the family to pause until this instant.
    Hold(Instant),
}

#[derive(Debug, Clone)]
struct FamilyState {
    limit: Option<u32>,
    window: Duration,
    sends: VecDeque<Instant>,
    hold_until: Option<Instant>,
    /// The last `X-RateLimit-Remaining` Qualys sent, and when.
    remaining: Option<(u64, Instant)>,
    /// The limit came from the server's headers (not the configured table).
    advertised: bool,
}

/// What the client knows of one family's rate limit now (see [`Limiter::snapshot`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitState {
    /// The family ([`Family::as_str`]).
    pub family: &'static str,
    /// Requests allowed per window (`None`: not limited).
    pub limit: Option<u32>,
    /// The window, in seconds.
    pub window_secs: f64,
    /// Whether Qualys advertised the limit (`X-RateLimit-Limit`/`-Window-Sec`); false: the
    /// documented table.
    pub advertised: bool,
    /// Requests this client sent within the current window.
    pub sent_in_window: usize,
    /// The last `X-RateLimit-Remaining` Qualys answered, and how many seconds ago.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// Seconds since that answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_age_secs: Option<f64>,
    /// Seconds the family is still held (Qualys said none are left, or throttled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_for_secs: Option<f64>,
}

/// The per-family limiter.
#[derive(Debug)]
pub(crate) struct Limiter {
    families: Mutex<Vec<FamilyState>>,
}

impl Limiter {
    /// A limiter with these limits; families not listed are unlimited until a server says otherwise.
    pub(crate) fn new(limits: &[RateLimit]) -> Self {
        let mut families: Vec<FamilyState> = Family::ALL
            .iter()
            .map(|_| FamilyState {
                limit: None,
                window: Duration::from_secs(60),
                sends: VecDeque::new(),
                hold_until: None,
                remaining: None,
                advertised: false,
            })
            .collect();
        for l in limits.iter().filter(|l| l.limit > 0) {
            let state = &mut families[l.family.index()];
            state.limit = Some(l.limit);
            state.window = l.window;
        }
        Self {
            families: Mutex::new(families),
        }
    }

    fn with<R>(&self, family: Family, f: impl FnOnce(&mut FamilyState) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update; the data stays usable.
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut families[family.index()])
    }

    /// Records a send of `family` now, or says how long to wait first.
    pub(crate) fn try_reserve(&self, family: Family, now: Instant) -> Result<(), Wait> {
        self.with(family, |s| {
            if let Some(until) = s.hold_until {
                if until > now {
                    return Err(Wait::Hold(until));
                }
                s.hold_until = None;
            }
            let span = s.window + SAFETY_MARGIN;
            while s
                .sends
                .front()
                .is_some_and(|t| now.duration_since(*t) >= span)
            {
                s.sends.pop_front();
            }
            if let Some(limit) = s.limit {
                let limit = limit as usize;
                if s.sends.len() >= limit {
                    let oldest_blocking = s.sends[s.sends.len() - limit];
                    return Err(Wait::Window(oldest_blocking + span));
                }
                s.sends.push_back(now);
            }
            Ok(())
        })
    }

    /// Pauses the family until `until` (or later, if already held longer).
    pub(crate) fn hold(&self, family: Family, until: Instant) {
        self.with(family, |s| {
            s.hold_until = Some(s.hold_until.map_or(until, |h| h.max(until)));
        });
    }

    /// Learns from a response's rate-limit headers. `throttled` is true for 429/409 answers,
    /// whose wait the caller applies with [`Limiter::hold`].
    pub(crate) fn observe(
        &self,
        family: Family,
        headers: &HeaderMap,
        throttled: bool,
        now: Instant,
    ) {
        let limit = header_num(headers, "x-ratelimit-limit").filter(|l| *l >= 1.0);
        let window = header_num(headers, "x-ratelimit-window-sec").filter(|w| *w > 0.0);
        let remaining = header_num(headers, "x-ratelimit-remaining");
        self.with(family, |s| {
            if let (Some(limit), Some(window)) = (limit, window) {
                let limit = limit.min(u32::MAX as f64) as u32;
                let window = Duration::try_from_secs_f64(window).unwrap_or(s.window);
                if s.limit != Some(limit) || s.window != window {
                    tracing::debug!(
                        family = family.as_str(),
                        limit,
                        window_secs = window.as_secs_f64(),
                        "adopting the rate limit Qualys advertises"
                    );
                    s.limit = Some(limit);
                    s.window = window;
                }
                s.advertised = true;
            }
            if let Some(r) = remaining.filter(|r| *r >= 0.0) {
                s.remaining = Some((r.min(u64::MAX as f64) as u64, now));
            }
            if !throttled && remaining.is_some_and(|r| r <= 0.0) {
                let until = now + s.window;
                s.hold_until = Some(s.hold_until.map_or(until, |h| h.max(until)));
                tracing::debug!(
                    family = family.as_str(),
                    hold_secs = s.window.as_secs_f64(),
                    "Qualys reports no requests left in this window; holding the family"
                );
            }
        });
    }

    /// Every family's limit, its use in the current window and what Qualys last said.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<RateLimitState> {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        Family::ALL
            .iter()
            .zip(families.iter())
            .map(|(family, s)| {
                let span = s.window + SAFETY_MARGIN;
                RateLimitState {
                    family: family.as_str(),
                    limit: s.limit,
                    window_secs: s.window.as_secs_f64(),
                    advertised: s.advertised,
                    sent_in_window: s
                        .sends
                        .iter()
                        .filter(|t| now.duration_since(**t) < span)
                        .count(),
                    remaining: s.remaining.map(|(r, _)| r),
                    remaining_age_secs: s
                        .remaining
                        .map(|(_, at)| now.duration_since(at).as_secs_f64()),
                    held_for_secs: s
                        .hold_until
                        .filter(|until| *until > now)
                        .map(|until| (until - now).as_secs_f64()),
                }
            })
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn limit_of(&self, family: Family) -> (Option<u32>, Duration) {
        self.with(family, |s| (s.limit, s.window))
    }
}

/// A numeric header value, if present and a finite number.
pub(crate) fn header_num(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn limiter(limit: u32, window_ms: u64) -> Limiter {
        Limiter::new(&[RateLimit {
            family: Family::Images,
            limit,
            window: Duration::from_millis(window_ms),
        }])
    }

    #[test]
    fn the_window_fills_and_empties() {
        let l = limiter(2, 1000);
        let t0 = Instant::now();
        assert_eq!(l.try_reserve(Family::Images, t0), Ok(()));
        assert_eq!(
            l.try_reserve(Family::Images, t0 + Duration::from_millis(10)),
            Ok(())
        );
        let third = t0 + Duration::from_millis(20);
        assert_eq!(
            l.try_reserve(Family::Images, third),
            Err(Wait::Window(
                t0 + Duration::from_millis(1000) + SAFETY_MARGIN
            ))
        );
        // Another family is not affected.
        assert_eq!(l.try_reserve(Family::Registry, third), Ok(()));
        let later = t0 + Duration::from_millis(1250);
        assert_eq!(l.try_reserve(Family::Images, later), Ok(()));
    }

    #[test]
    fn the_snapshot_tells_what_was_sent_and_what_qualys_said() {
        let l = limiter(2, 1000);
        let t0 = Instant::now();
        l.try_reserve(Family::Images, t0).unwrap();
        let mut h = HeaderMap::new();
        h.insert("X-RateLimit-Limit", HeaderValue::from_static("1000"));
        h.insert("X-RateLimit-Window-Sec", HeaderValue::from_static("60"));
        h.insert("X-RateLimit-Remaining", HeaderValue::from_static("0"));
        l.observe(Family::Registry, &h, false, t0);
        let at = t0 + Duration::from_secs(1);
        let snapshot = l.snapshot(at);
        let of = |name: &str| snapshot.iter().find(|s| s.family == name).unwrap().clone();
        let images = of("images");
        assert_eq!(
            (images.limit, images.sent_in_window, images.advertised),
            (Some(2), 1, false)
        );
        assert_eq!(images.remaining, None);
        let registry = of("registry");
        assert_eq!((registry.limit, registry.advertised), (Some(1000), true));
        assert_eq!(registry.remaining, Some(0));
        assert_eq!(registry.remaining_age_secs, Some(1.0));
        assert_eq!(registry.held_for_secs, Some(59.0), "no requests left: held");
        let later = l.snapshot(t0 + Duration::from_secs(2));
        assert_eq!(
            later
                .iter()
                .find(|s| s.family == "images")
                .unwrap()
                .sent_in_window,
            0
        );
    }

    #[test]
    fn server_headers_win() {
        let l = limiter(2, 1000);
        let mut h = HeaderMap::new();
        h.insert("X-RateLimit-Limit", HeaderValue::from_static("5"));
        h.insert("X-RateLimit-Window-Sec", HeaderValue::from_static("10"));
        let now = Instant::now();
        l.observe(Family::Images, &h, false, now);
        assert_eq!(
            l.limit_of(Family::Images),
            (Some(5), Duration::from_secs(10))
        );
        h.insert("X-RateLimit-Remaining", HeaderValue::from_static("0"));
        l.observe(Family::Images, &h, false, now);
        assert_eq!(
            l.try_reserve(Family::Images, now),
            Err(Wait::Hold(now + Duration::from_secs(10)))
        );
        assert_eq!(
            l.try_reserve(Family::Images, now + Duration::from_secs(10)),
            Ok(())
        );
    }
}
