//! What the emulator counts, for tests to assert on.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counters since the start or the last reset. Admin routes (`/__emulator/…`) are never counted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests that arrived, by `"METHOD /route/template"`, e.g. `POST /csapi/v1.3/registry`,
    /// `GET /csapi/v1.3/images/{sha}`, `POST /auth`, `GET /cdr-api/rest/v1/findings/`. Every
    /// arrival counts, also those answered 429, with a fault or 401. A path that matches no
    /// route counts as `"METHOD <path>"`.
    pub calls: BTreeMap<String, u64>,
    /// Per family (`registry`, `images`, `cdr`, …): requests that arrived while the family's
    /// window was full and were answered 429 by the limiter (injected 429s are not counted here).
    pub rate_limit_violations: BTreeMap<String, u64>,
    /// Injected faults by kind: `5xx`, `429`, `latency`, `malformed`, `drop`.
    pub injected_faults: BTreeMap<String, u64>,
    /// `POST /auth` with a wrong username or password.
    pub auth_failures: u64,
    /// Registries created (`POST /registry` answered 200).
    pub registries_created: u64,
    /// AWS connectors created (`POST /registry/aws/connector` answered 200).
    pub connectors_created: u64,
    /// Creates refused because the registry or connector already existed (see
    /// [`crate::Duplicates`]).
    pub duplicates_refused: u64,
    /// Registry schedules created (`POST /registry/{id}/schedule` answered 200).
    pub schedules_created: u64,
    /// Images those schedules started scanning for the first time.
    #[serde(default)]
    pub image_scans: u64,
    /// Scanned images those schedules scanned again (`forceScan`).
    #[serde(default)]
    pub image_rescans: u64,
    /// Schedule entries for a tag the emulated registry does not hold (nothing was scanned).
    #[serde(default)]
    pub scans_of_missing_tags: u64,
    /// The most requests in flight at once (admin routes excluded).
    pub max_in_flight: u64,
    /// Requests refused with 401 for a missing, unknown or expired bearer token.
    pub rejected_tokens: u64,
}

/// Adds one to `map[key]`.
pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_string()).or_default() += 1;
}
