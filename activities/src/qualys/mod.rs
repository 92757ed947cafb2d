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
mod client;
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

pub use client::QualysClient;
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
