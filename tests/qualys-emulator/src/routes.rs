//! Which endpoint a request is for, and its route template for the call counters.

use axum::http::Method;

/// The emulated endpoints (docs/qualys-api.md §1.1, §2.1, §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `POST /auth`.
    Auth,
    /// `GET /registry/aws-base`.
    AwsBase,
    /// `GET /registry/aws/connectors[/{accountId}]`.
    Connectors(Option<String>),
    /// `POST /registry/aws/connector`.
    CreateConnector,
    /// `GET /registry`.
    ListRegistries,
    /// `POST /registry`.
    CreateRegistry,
    /// `POST /registry/validate`.
    ValidateRegistry,
    /// `GET /registry/{registryId}`.
    GetRegistry(String),
    /// `DELETE /registry/{registryId}`.
    DeleteRegistry(String),
    /// `POST /registry/{registryId}/schedule`.
    CreateSchedule(String),
    /// `GET /registry/{registryId}/schedule`.
    ListSchedules(String),
    /// `GET /images`.
    ListImages,
    /// `GET /images/list` (the bulk cursor API; not emulated).
    BulkImages,
    /// `GET /images/{sha}`.
    GetImage(String),
    /// `GET /images/{sha}/vuln`.
    ImageVulns(String),
    /// `GET /images/{sha}/vuln/count`.
    ImageVulnCount(String),
    /// `GET /sensors`.
    ListSensors,
    /// `GET /sensors/{sensorId}`.
    GetSensor(String),
    /// `GET /cdr-api/rest/v1/findings/`.
    CdrFindings,
}

/// A resolved request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The endpoint; `None` when nothing matches.
    pub route: Option<Route>,
    /// `"METHOD /template"` for [`crate::Stats::calls`].
    pub key: String,
    /// The path exists, for another method (405 rather than 404).
    pub other_method: bool,
}

/// The csapi versions answered.
const VERSIONS: [&str; 2] = ["v1.2", "v1.3"];

/// The route and template of `method path`.
fn matches(method: &Method, path: &str) -> Option<(Route, String)> {
    if path == "/auth" || path == "/auth/" {
        return (method == Method::POST).then(|| (Route::Auth, "/auth".to_string()));
    }
    if path == "/cdr-api/rest/v1/findings" || path == "/cdr-api/rest/v1/findings/" {
        return (method == Method::GET)
            .then(|| (Route::CdrFindings, "/cdr-api/rest/v1/findings/".to_string()));
    }
    let rest = path.strip_prefix("/csapi/")?;
    let (version, rest) = rest.split_once('/')?;
    if !VERSIONS.contains(&version) {
        return None;
    }
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let id = |s: &str| s.to_string();
    let (route, template) = match (method.as_str(), segs.as_slice()) {
        ("GET", ["registry", "aws-base"]) => (Route::AwsBase, "registry/aws-base"),
        ("GET", ["registry", "aws", "connectors"]) => {
            (Route::Connectors(None), "registry/aws/connectors")
        }
        ("GET", ["registry", "aws", "connectors", a]) => (
            Route::Connectors(Some(id(a))),
            "registry/aws/connectors/{accountId}",
        ),
        ("POST", ["registry", "aws", "connector"]) => {
            (Route::CreateConnector, "registry/aws/connector")
        }
        ("GET", ["registry"]) => (Route::ListRegistries, "registry"),
        ("POST", ["registry"]) => (Route::CreateRegistry, "registry"),
        ("POST", ["registry", "validate"]) => (Route::ValidateRegistry, "registry/validate"),
        ("GET", ["registry", r]) if !matches!(*r, "aws" | "validate" | "aws-base") => {
            (Route::GetRegistry(id(r)), "registry/{registryId}")
        }
        ("DELETE", ["registry", r]) => (Route::DeleteRegistry(id(r)), "registry/{registryId}"),
        ("POST", ["registry", r, "schedule"]) => (
            Route::CreateSchedule(id(r)),
            "registry/{registryId}/schedule",
        ),
        ("GET", ["registry", r, "schedule"]) => (
            Route::ListSchedules(id(r)),
            "registry/{registryId}/schedule",
        ),
        ("GET", ["images"]) => (Route::ListImages, "images"),
        ("GET", ["images", "list"]) => (Route::BulkImages, "images/list"),
        ("GET", ["images", s]) => (Route::GetImage(id(s)), "images/{sha}"),
        ("GET", ["images", s, "vuln"]) => (Route::ImageVulns(id(s)), "images/{sha}/vuln"),
        ("GET", ["images", s, "vuln", "count"]) => {
            (Route::ImageVulnCount(id(s)), "images/{sha}/vuln/count")
        }
        ("GET", ["sensors"]) => (Route::ListSensors, "sensors"),
        ("GET", ["sensors", s]) => (Route::GetSensor(id(s)), "sensors/{sensorId}"),
        _ => return None,
    };
    Some((route, format!("/csapi/{version}/{template}")))
}

/// Resolves `method path`.
pub(crate) fn resolve(method: &Method, path: &str) -> Resolved {
    match matches(method, path) {
        Some((route, template)) => Resolved {
            route: Some(route),
            key: format!("{method} {template}"),
            other_method: false,
        },
        None => {
            let other_method = [Method::GET, Method::POST, Method::PUT, Method::DELETE]
                .iter()
                .any(|m| m != method && matches(m, path).is_some());
            Resolved {
                route: None,
                key: format!("{method} {path}"),
                other_method,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(m: Method, p: &str) -> String {
        resolve(&m, p).key
    }

    #[test]
    fn templates() {
        assert_eq!(key(Method::POST, "/auth"), "POST /auth");
        assert_eq!(
            key(Method::POST, "/csapi/v1.3/registry"),
            "POST /csapi/v1.3/registry"
        );
        assert_eq!(
            key(Method::GET, "/csapi/v1.3/registry/aws-base"),
            "GET /csapi/v1.3/registry/aws-base"
        );
        assert_eq!(
            key(Method::GET, "/csapi/v1.3/registry/u-1"),
            "GET /csapi/v1.3/registry/{registryId}"
        );
        assert_eq!(
            key(
                Method::GET,
                "/csapi/v1.3/registry/aws/connectors/123456789012"
            ),
            "GET /csapi/v1.3/registry/aws/connectors/{accountId}"
        );
        assert_eq!(
            key(Method::POST, "/csapi/v1.2/registry/u-1/schedule"),
            "POST /csapi/v1.2/registry/{registryId}/schedule"
        );
        assert_eq!(
            key(Method::GET, "/csapi/v1.3/images/abc"),
            "GET /csapi/v1.3/images/{sha}"
        );
        assert_eq!(
            key(Method::GET, "/csapi/v1.3/images/abc/vuln/count"),
            "GET /csapi/v1.3/images/{sha}/vuln/count"
        );
        assert_eq!(
            key(Method::GET, "/cdr-api/rest/v1/findings"),
            "GET /cdr-api/rest/v1/findings/"
        );
        assert_eq!(
            key(Method::GET, "/cdr-api/rest/v1/findings/"),
            "GET /cdr-api/rest/v1/findings/"
        );
        assert_eq!(key(Method::GET, "/csapi/v9/images"), "GET /csapi/v9/images");
        assert!(resolve(&Method::GET, "/nope").route.is_none());
        let r = resolve(&Method::PUT, "/csapi/v1.3/registry");
        assert!(r.route.is_none() && r.other_method);
    }
}
