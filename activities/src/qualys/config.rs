//! Client configuration: platforms (PODs), credentials, limits and endpoint families.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use url::Url;

/// A credential. `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`].
///
/// It deliberately implements neither `Serialize` nor `PartialEq`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The credential itself. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A Qualys platform (POD), from the official table (docs/qualys-api.md §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pod {
    /// US Platform 1.
    US1,
    /// US Platform 2.
    US2,
    /// US Platform 3.
    US3,
    /// US Platform 4.
    US4,
    /// EU Platform 1.
    EU1,
    /// EU Platform 2.
    EU2,
    /// EU Platform 3 (Italy).
    EU3,
    /// India Platform 1.
    IN1,
    /// Canada Platform 1.
    CA1,
    /// UAE Platform 1.
    AE1,
    /// UK Platform 1.
    UK1,
    /// Australia Platform 1.
    AU1,
    /// Kingdom of Saudi Arabia Platform 1.
    KSA1,
}

impl Pod {
    /// Every POD, in table order.
    pub const ALL: [Pod; 13] = [
        Pod::US1,
        Pod::US2,
        Pod::US3,
        Pod::US4,
        Pod::EU1,
        Pod::EU2,
        Pod::EU3,
        Pod::IN1,
        Pod::CA1,
        Pod::AE1,
        Pod::UK1,
        Pod::AU1,
        Pod::KSA1,
    ];

    /// The POD's identifier, e.g. `"US2"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Pod::US1 => "US1",
            Pod::US2 => "US2",
            Pod::US3 => "US3",
            Pod::US4 => "US4",
            Pod::EU1 => "EU1",
            Pod::EU2 => "EU2",
            Pod::EU3 => "EU3",
            Pod::IN1 => "IN1",
            Pod::CA1 => "CA1",
            Pod::AE1 => "AE1",
            Pod::UK1 => "UK1",
            Pod::AU1 => "AU1",
            Pod::KSA1 => "KSA1",
        }
    }

    /// The gateway (JWT, csapi, cdr-api) of the POD: the official column of docs/qualys-api.md
    /// §1.2, not the wrong values some seed projects carry (EU3 is `qualys.it`, KSA1
    /// `qualysksa.com`, CA1 `qg1`).
    pub fn gateway_url(&self) -> &'static str {
        match self {
            Pod::US1 => "https://gateway.qg1.apps.qualys.com",
            Pod::US2 => "https://gateway.qg2.apps.qualys.com",
            Pod::US3 => "https://gateway.qg3.apps.qualys.com",
            Pod::US4 => "https://gateway.qg4.apps.qualys.com",
            Pod::EU1 => "https://gateway.qg1.apps.qualys.eu",
            Pod::EU2 => "https://gateway.qg2.apps.qualys.eu",
            Pod::EU3 => "https://gateway.qg3.apps.qualys.it",
            Pod::IN1 => "https://gateway.qg1.apps.qualys.in",
            Pod::CA1 => "https://gateway.qg1.apps.qualys.ca",
            Pod::AE1 => "https://gateway.qg1.apps.qualys.ae",
            Pod::UK1 => "https://gateway.qg1.apps.qualys.co.uk",
            Pod::AU1 => "https://gateway.qg1.apps.qualys.com.au",
            Pod::KSA1 => "https://gateway.qg1.apps.qualysksa.com",
        }
    }
}

impl fmt::Display for Pod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A POD name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Qualys platform `{given}`; valid values: {}", valid_pods())]
pub struct ParsePodError {
    /// What was given.
    pub given: String,
}

fn valid_pods() -> String {
    Pod::ALL
        .iter()
        .map(Pod::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Pod {
    type Err = ParsePodError;

    /// Case-insensitive: `us2`, `US2` and ` Us2 ` are all [`Pod::US2`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Pod::ALL
            .iter()
            .copied()
            .find(|p| p.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| ParsePodError {
                given: s.to_string(),
            })
    }
}

/// How the client authenticates (docs/qualys-api.md §1.1).
#[derive(Debug, Clone)]
pub enum QualysAuth {
    /// JWT login at `POST {gateway}/auth`, renewed before it expires and after a 401.
    Password {
        /// Qualys username.
        username: String,
        /// Qualys password.
        password: Secret,
    },
    /// A ready bearer token. It is never renewed: a 401 is final.
    Token(Secret),
}

/// A group of endpoints that share a rate limit (docs/qualys-api.md §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `/csapi/vxx/containers/list`.
    ContainersList,
    /// `/csapi/vxx/containers/**`.
    Containers,
    /// `/csapi/vxx/images/list`.
    ImagesList,
    /// `/csapi/vxx/images/**`.
    Images,
    /// `/csapi/vxx/registry/**`.
    Registry,
    /// `/csapi/vxx/sensors/**`.
    Sensors,
    /// `/cdr-api/**` (limit undocumented).
    Cdr,
    /// Everything else (no documented limit).
    Other,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 8] = [
        Family::ContainersList,
        Family::Containers,
        Family::ImagesList,
        Family::Images,
        Family::Registry,
        Family::Sensors,
        Family::Cdr,
        Family::Other,
    ];

    /// The family of a request path (without query string), e.g.
    /// `/csapi/v1.3/images/{sha}/vuln` → [`Family::Images`].
    pub fn of_path(path: &str) -> Family {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        match segments.next() {
            Some("csapi") => {}
            Some("cdr-api") => return Family::Cdr,
            _ => return Family::Other,
        }
        // The version segment (v1.1, v1.2, v1.3, …).
        match segments.next() {
            Some(v) if v.starts_with('v') => {}
            _ => return Family::Other,
        }
        let resource = segments.next();
        let next = segments.next();
        match (resource, next) {
            (Some("containers"), Some("list")) => Family::ContainersList,
            (Some("containers"), _) => Family::Containers,
            (Some("images"), Some("list")) => Family::ImagesList,
            (Some("images"), _) => Family::Images,
            (Some("registry"), _) => Family::Registry,
            (Some("sensors"), _) => Family::Sensors,
            _ => Family::Other,
        }
    }

    /// A bounded label: `containers_list`, `containers`, `images_list`, `images`, `registry`,
    /// `sensors`, `cdr` or `other`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Family::ContainersList => "containers_list",
            Family::Containers => "containers",
            Family::ImagesList => "images_list",
            Family::Images => "images",
            Family::Registry => "registry",
            Family::Sensors => "sensors",
            Family::Cdr => "cdr",
            Family::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// At most `limit` requests of `family` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// The endpoints this applies to.
    pub family: Family,
    /// Requests allowed per window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
}

impl RateLimit {
    /// The documented csapi limits (docs/qualys-api.md §2.6), plus a conservative 600 per 60 s for
    /// the CDR API, whose limit is undocumented.
    pub fn documented() -> Vec<RateLimit> {
        let minute = Duration::from_secs(60);
        let limit = |family, limit| RateLimit {
            family,
            limit,
            window: minute,
        };
        vec![
            limit(Family::ContainersList, 120),
            limit(Family::Containers, 5000),
            limit(Family::ImagesList, 120),
            limit(Family::Images, 5000),
            limit(Family::Registry, 1000),
            limit(Family::Sensors, 1000),
            limit(Family::Cdr, 600),
        ]
    }
}

/// Everything the client needs. [`QualysConfig::new`] fills in the defaults.
#[derive(Debug, Clone)]
pub struct QualysConfig {
    /// Gateway base URL, e.g. `https://gateway.qg2.apps.qualys.com` or an emulator's
    /// `http://127.0.0.1:8090`. A trailing slash or a path prefix is fine.
    pub gateway: Url,
    /// Credentials.
    pub auth: QualysAuth,
    /// At most this many requests in flight at once, across all endpoints (default 4).
    pub max_in_flight: usize,
    /// Timeout of one HTTP request, body included (default 30 s).
    pub request_timeout: Duration,
    /// In-process retries of a throttled (429/409) request before giving up with
    /// [`QualysError::RateLimited`](super::QualysError::RateLimited) (default 5).
    pub max_throttle_retries: u32,
    /// The longest single throttle wait done in-process (default 60 s). A longer advertised wait
    /// returns `RateLimited` at once, with `retry_after` set, so that Temporal waits instead.
    pub max_throttle_wait: Duration,
    /// Page size of csapi list calls (default 50).
    pub page_size: u32,
    /// Name of the 1-based page-number parameter (default `pageNumber`; swagger 1.1 used `pageNo`).
    pub page_param: String,
    /// Age at which the JWT is renewed (default 3 h 30 min; it expires after 4 h).
    pub token_refresh_after: Duration,
    /// Client-side rate limits (default: [`RateLimit::documented`]). Families not listed are
    /// unlimited until a response advertises a limit.
    pub rate_limits: Vec<RateLimit>,
}

impl QualysConfig {
    /// A configuration with the defaults documented on each field.
    pub fn new(gateway: Url, auth: QualysAuth) -> Self {
        Self {
            gateway,
            auth,
            max_in_flight: 4,
            request_timeout: Duration::from_secs(30),
            max_throttle_retries: 5,
            max_throttle_wait: Duration::from_secs(60),
            page_size: 50,
            page_param: "pageNumber".to_string(),
            token_refresh_after: Duration::from_secs(3 * 3600 + 30 * 60),
            rate_limits: RateLimit::documented(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_map_to_the_official_gateways() {
        let expected = [
            ("US1", "https://gateway.qg1.apps.qualys.com"),
            ("US2", "https://gateway.qg2.apps.qualys.com"),
            ("US3", "https://gateway.qg3.apps.qualys.com"),
            ("US4", "https://gateway.qg4.apps.qualys.com"),
            ("EU1", "https://gateway.qg1.apps.qualys.eu"),
            ("EU2", "https://gateway.qg2.apps.qualys.eu"),
            ("EU3", "https://gateway.qg3.apps.qualys.it"),
            ("IN1", "https://gateway.qg1.apps.qualys.in"),
            ("CA1", "https://gateway.qg1.apps.qualys.ca"),
            ("AE1", "https://gateway.qg1.apps.qualys.ae"),
            ("UK1", "https://gateway.qg1.apps.qualys.co.uk"),
            ("AU1", "https://gateway.qg1.apps.qualys.com.au"),
            ("KSA1", "https://gateway.qg1.apps.qualysksa.com"),
        ];
        assert_eq!(expected.len(), Pod::ALL.len());
        for (pod, (name, url)) in Pod::ALL.iter().zip(expected) {
            assert_eq!(pod.to_string(), name);
            assert_eq!(pod.gateway_url(), url);
            assert_eq!(name.parse::<Pod>().unwrap(), *pod);
            assert_eq!(name.to_lowercase().parse::<Pod>().unwrap(), *pod);
            Url::parse(pod.gateway_url()).unwrap();
        }
        assert!(Pod::EU3.gateway_url().ends_with("qualys.it"));
        assert!(Pod::KSA1.gateway_url().ends_with("qualysksa.com"));
        assert!(Pod::CA1.gateway_url().contains(".qg1."));
    }

    #[test]
    fn unknown_pod_lists_the_valid_values() {
        let err = "GOV1".parse::<Pod>().unwrap_err().to_string();
        assert!(err.contains("GOV1"), "{err}");
        assert!(err.contains("US1, US2"), "{err}");
        assert!(err.contains("KSA1"), "{err}");
    }

    #[test]
    fn families_of_paths() {
        let cases = [
            ("/csapi/v1.3/containers/list", Family::ContainersList),
            ("/csapi/v1.2/containers", Family::Containers),
            ("/csapi/v1.3/containers/abc", Family::Containers),
            ("/csapi/v1.3/images/list?limit=2", Family::ImagesList),
            ("/csapi/v1.3/images", Family::Images),
            ("/csapi/v1.3/images/{sha}/vuln", Family::Images),
            ("/csapi/v1.3/registry/aws-base", Family::Registry),
            ("/csapi/v1.3/registry", Family::Registry),
            ("/csapi/v1.3/sensors", Family::Sensors),
            ("/cdr-api/rest/v1/findings/", Family::Cdr),
            ("/auth", Family::Other),
            ("/csapi/v1.3/tag/assign", Family::Other),
        ];
        for (path, family) in cases {
            assert_eq!(Family::of_path(path), family, "{path}");
        }
        for (i, f) in Family::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        assert_eq!(Family::ImagesList.as_str(), "images_list");
    }

    #[test]
    fn secrets_do_not_print() {
        let auth = QualysAuth::Password {
            username: "acme_user".into(),
            password: Secret::new("p@ssw0rd-very-secret"),
        };
        let shown = format!("{auth:?} {} {:?}", Secret::new("x1"), Secret::new("x2"));
        assert!(!shown.contains("p@ssw0rd"), "{shown}");
        assert!(!shown.contains("x1") && !shown.contains("x2"), "{shown}");
        let token = QualysAuth::Token(Secret::new("eyJ-token"));
        assert!(!format!("{token:?}").contains("eyJ"));
    }
}
