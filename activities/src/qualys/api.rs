//! The endpoints qflows uses (docs/qualys-api.md §2.1, §3.1).

use super::client::{Answer, Call, QualysClient};
use super::error::QualysError;
use super::paging::CdrPage;
use super::types::{
    AwsBase, AwsConnector, CdrFinding, CdrQuery, CreateAwsConnector, CreateEcrRegistry, Image,
    OnDemandSchedule, Registry, Sensor, SeverityCounts, Vulnerability,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const AWS_BASE: &str = "/csapi/v1.3/registry/aws-base";
const CONNECTORS: &str = "/csapi/v1.3/registry/aws/connectors";
const CONNECTORS_OF: &str = "/csapi/v1.3/registry/aws/connectors/{accountId}";
const CONNECTOR: &str = "/csapi/v1.3/registry/aws/connector";
const REGISTRY: &str = "/csapi/v1.3/registry";
const SCHEDULE: &str = "/csapi/v1.3/registry/{registryId}/schedule";
const IMAGES: &str = "/csapi/v1.3/images";
const IMAGE: &str = "/csapi/v1.3/images/{sha}";
const IMAGE_VULN: &str = "/csapi/v1.3/images/{sha}/vuln";
const IMAGE_VULN_COUNT: &str = "/csapi/v1.3/images/{sha}/vuln/count";
const SENSORS: &str = "/csapi/v1.3/sensors";

/// A QQL string literal: `"value"` with `\` and `"` escaped.
fn qql_quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A registry URI for comparison: scheme and host lower-case (the `url` crate does that),
/// `https://` when no scheme is given, no trailing slash.
fn normalize_uri(uri: &str) -> String {
    let trimmed = uri.trim().trim_end_matches('/');
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("https://{trimmed}")
    };
    match url::Url::parse(&with_scheme) {
        Ok(u) => u.as_str().trim_end_matches('/').to_string(),
        Err(_) => trimmed.to_ascii_lowercase(),
    }
}

/// The lower-case 64-hex SHA of `sha` (a `sha256:` prefix is dropped), if it is one.
fn normalize_sha(sha: &str) -> Option<String> {
    let s = sha.trim();
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// An ID from a create answer: `{"<key>": …}` for one of `keys`, a bare JSON string, or plain
/// text that looks like an ID. `None` for an empty body or anything else.
fn created_id(answer: &Answer, keys: &[&str]) -> Option<String> {
    if answer.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&answer.body);
    let text = text.trim();
    let id = match serde_json::from_str::<Value>(text) {
        Ok(Value::String(s)) => Some(s),
        Ok(Value::Number(n)) => Some(n.to_string()),
        Ok(Value::Object(o)) => keys.iter().find_map(|k| match o.get(*k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }),
        Ok(_) => None,
        Err(_) => {
            let looks_like_id = text.len() <= 128
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
            looks_like_id.then(|| text.to_string())
        }
    };
    id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl QualysClient {
    fn json_body<T: Serialize>(&self, endpoint: &str, body: &T) -> Result<Vec<u8>, QualysError> {
        serde_json::to_vec(body).map_err(|e| {
            self.count_error(QualysError::Config {
                message: format!("cannot serialise the body of {endpoint}: {e}"),
            })
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        answer: &Answer,
    ) -> Result<T, QualysError> {
        if answer.is_empty() {
            return Err(self.decode_error(&call.endpoint(), "empty response"));
        }
        serde_json::from_slice(&answer.body).map_err(|e| self.decode_error(&call.endpoint(), e))
    }

    fn bad_sha(&self, template: &str, sha: &str) -> QualysError {
        let shown = super::error::truncate(&self.redact(sha), 80);
        self.count_error(QualysError::BadRequest {
            endpoint: format!("GET {template}"),
            status: 0,
            message: format!(
                "`{shown}` is not an image SHA (64 hex digits, optionally prefixed by sha256:); not sent"
            ),
        })
    }

    /// Qualys' AWS account and the external ID for the trust policy
    /// (`GET /csapi/v1.3/registry/aws-base`).
    pub async fn aws_base(&self) -> Result<AwsBase, QualysError> {
        let call = Call::get(AWS_BASE, &[]);
        let answer = self.execute(&call).await?;
        self.decode(&call, &answer)
    }

    /// AWS connectors, all or of one AWS account
    /// (`GET /csapi/v1.3/registry/aws/connectors[/{accountId}]`, a bare array).
    pub async fn list_aws_connectors(
        &self,
        account_id: Option<&str>,
    ) -> Result<Vec<AwsConnector>, QualysError> {
        let args = [account_id.unwrap_or_default()];
        let call = match account_id {
            Some(_) => Call::get(CONNECTORS_OF, &args),
            None => Call::get(CONNECTORS, &[]),
        };
        let answer = self.execute(&call).await?;
        let page = super::paging::parse_page(&answer, &["data", "content"], &["count"])
            .map_err(|m| self.decode_error(&call.endpoint(), m))?;
        Ok(self.convert(&call.endpoint(), page.items))
    }

    /// Creates an AWS connector (`POST /csapi/v1.3/registry/aws/connector`); the body of the
    /// answer is not read.
    pub async fn create_aws_connector(&self, req: &CreateAwsConnector) -> Result<(), QualysError> {
        let body = self.json_body(&format!("POST {CONNECTOR}"), req)?;
        self.execute(&Call::post(CONNECTOR, &[], body)).await?;
        Ok(())
    }

    /// The registry with this URI (`GET /csapi/v1.3/registry?filter=registryUri:"…"`), matched
    /// exactly (ignoring a trailing slash and the host's case); `None` when there is none
    /// (Qualys answers 204).
    pub async fn find_registry_by_uri(
        &self,
        registry_uri: &str,
    ) -> Result<Option<Registry>, QualysError> {
        let wanted = normalize_uri(registry_uri);
        let matches = |r: &Registry| {
            r.registry_uri
                .as_deref()
                .is_some_and(|u| normalize_uri(u) == wanted)
        };
        let filter = format!(
            "registryUri:{}",
            qql_quote(registry_uri.trim().trim_end_matches('/'))
        );
        let registries = self.cs_list(REGISTRY, Some(&filter), None, matches).await?;
        Ok(registries.into_iter().find(matches))
    }

    /// Every registry of the subscription (`GET /csapi/v1.3/registry`, all pages).
    pub async fn registries(&self) -> Result<Vec<Registry>, QualysError> {
        self.cs_list(REGISTRY, None, None, |_: &Registry| false)
            .await
    }

    /// Creates an ECR registry (`POST /csapi/v1.3/registry`). Returns its UUID when the answer
    /// carries one (`{"registryUuid"}`, a bare string, or plain text); `None` otherwise, and
    /// the caller looks it up with [`QualysClient::find_registry_by_uri`].
    pub async fn create_ecr_registry(
        &self,
        req: &CreateEcrRegistry,
    ) -> Result<Option<String>, QualysError> {
        let body = self.json_body(&format!("POST {REGISTRY}"), req)?;
        let answer = self.execute(&Call::post(REGISTRY, &[], body)).await?;
        Ok(created_id(
            &answer,
            &["registryUuid", "uuid", "registryId", "id"],
        ))
    }

    /// Starts an on-demand scan (`POST /csapi/v1.3/registry/{id}/schedule`). Returns the
    /// schedule's ID when the answer carries one (a bare string, `{"scheduleId"}` or
    /// `{"scheduleUuid"}`).
    pub async fn create_on_demand_schedule(
        &self,
        registry_uuid: &str,
        req: &OnDemandSchedule,
    ) -> Result<Option<String>, QualysError> {
        let body = self.json_body(&format!("POST {SCHEDULE}"), req)?;
        let args = [registry_uuid];
        let answer = self.execute(&Call::post(SCHEDULE, &args, body)).await?;
        Ok(created_id(
            &answer,
            &["scheduleId", "scheduleUuid", "uuid", "id"],
        ))
    }

    /// Images of a repository, newest first (`GET /csapi/v1.3/images?filter=repo.repository:"…"
    /// [and repo.tag:"…"]&sort=created:desc`), narrowed to one tag when `tag` is given, read
    /// page by page until `found` is true for an image of the page (or the listing ends).
    /// With a tag, the listing holds the images that carried it (normally one or two), not the
    /// whole repository: calls per lookup do not grow with the repository.
    pub async fn find_images(
        &self,
        repository: &str,
        tag: Option<&str>,
        found: impl FnMut(&Image) -> bool,
    ) -> Result<Vec<Image>, QualysError> {
        let mut filter = format!("repo.repository:{}", qql_quote(repository.trim()));
        if let Some(tag) = tag {
            filter.push_str(&format!(" and repo.tag:{}", qql_quote(tag.trim())));
        }
        self.cs_list(IMAGES, Some(&filter), Some("created:desc"), found)
            .await
    }

    /// An image by SHA (`GET /csapi/v1.3/images/{sha}`); `None` while Qualys does not know it
    /// (404). A value that is not a SHA is refused without a request
    /// ([`QualysError::BadRequest`] with status 0).
    pub async fn image(&self, sha: &str) -> Result<Option<Image>, QualysError> {
        let sha = normalize_sha(sha).ok_or_else(|| self.bad_sha(IMAGE, sha))?;
        let args = [sha.as_str()];
        let mut call = Call::get(IMAGE, &args);
        call.allow_404 = true;
        let answer = self.execute(&call).await?;
        if answer.status == 404 || answer.is_empty() {
            return Ok(None);
        }
        let mut value: Value = self.decode(&call, &answer)?;
        if let Some(obj) = value.as_object_mut() {
            obj.entry("sha")
                .or_insert_with(|| Value::String(sha.clone()));
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| self.decode_error(&call.endpoint(), e))
    }

    /// An image's vulnerabilities (`GET /csapi/v1.3/images/{sha}/vuln?type=DETAILS`); reads the
    /// official `{"details":[…]}`, the seeds' `{"data":[…]}` and a bare array.
    pub async fn image_vulnerabilities(
        &self,
        sha: &str,
    ) -> Result<Vec<Vulnerability>, QualysError> {
        let sha = normalize_sha(sha).ok_or_else(|| self.bad_sha(IMAGE_VULN, sha))?;
        let args = [sha.as_str()];
        let call = Call::get(IMAGE_VULN, &args).query("type", "DETAILS");
        let answer = self.execute(&call).await?;
        let page =
            super::paging::parse_page(&answer, &["details", "data", "vulnerabilities"], &["count"])
                .map_err(|m| self.decode_error(&call.endpoint(), m))?;
        Ok(self.convert(&call.endpoint(), page.items))
    }

    /// An image's vulnerability counts (`GET /csapi/v1.3/images/{sha}/vuln/count`).
    pub async fn image_vuln_count(&self, sha: &str) -> Result<SeverityCounts, QualysError> {
        let sha = normalize_sha(sha).ok_or_else(|| self.bad_sha(IMAGE_VULN_COUNT, sha))?;
        let args = [sha.as_str()];
        let call = Call::get(IMAGE_VULN_COUNT, &args);
        let answer = self.execute(&call).await?;
        self.decode(&call, &answer)
    }

    /// Every sensor (`GET /csapi/v1.3/sensors`, all pages).
    pub async fn sensors(&self) -> Result<Vec<Sensor>, QualysError> {
        self.cs_list(SENSORS, None, None, |_: &Sensor| false).await
    }

    /// CDR findings (`GET /cdr-api/rest/v1/findings/`, all pages by `offSet`/`limit`).
    pub async fn cdr_findings(&self, q: &CdrQuery) -> Result<Vec<CdrFinding>, QualysError> {
        self.cdr_list(q).await
    }

    /// One page of CDR findings, `offset` findings into the query's window (for reads that
    /// heartbeat and resume).
    pub async fn cdr_findings_page(
        &self,
        q: &CdrQuery,
        offset: u64,
    ) -> Result<CdrPage<CdrFinding>, QualysError> {
        self.cdr_page(q, offset).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_compare_loosely() {
        let a = normalize_uri("https://111122223333.dkr.ecr.us-east-1.amazonaws.com");
        assert_eq!(
            a,
            normalize_uri("HTTPS://111122223333.DKR.ecr.us-east-1.amazonaws.com/")
        );
        assert_eq!(
            a,
            normalize_uri("111122223333.dkr.ecr.us-east-1.amazonaws.com")
        );
        assert_ne!(
            a,
            normalize_uri("https://111122223333.dkr.ecr.us-east-2.amazonaws.com")
        );
    }

    #[test]
    fn shas() {
        let sha = "4F67c83422ec747235357c04556616234e66fc3fa39cb4f40b2d4441ddd8f100";
        assert_eq!(normalize_sha(sha).unwrap(), sha.to_ascii_lowercase());
        assert_eq!(
            normalize_sha(&format!("sha256:{sha}")).unwrap(),
            sha.to_ascii_lowercase()
        );
        assert!(normalize_sha("nginx:latest").is_none());
        assert!(normalize_sha(&sha[1..]).is_none());
    }

    #[test]
    fn created_ids() {
        let a = |body: &str| Answer {
            status: 200,
            body: body.as_bytes().to_vec(),
        };
        let keys = ["registryUuid"];
        assert_eq!(
            created_id(&a(r#"{"registryUuid":"u-1"}"#), &keys).as_deref(),
            Some("u-1")
        );
        assert_eq!(created_id(&a(r#""u-2""#), &keys).as_deref(), Some("u-2"));
        assert_eq!(created_id(&a("u-3\n"), &keys).as_deref(), Some("u-3"));
        assert_eq!(created_id(&a(""), &keys), None);
        assert_eq!(created_id(&a("{}"), &keys), None);
        assert_eq!(created_id(&a("<html>oops</html>"), &keys), None);
        assert_eq!(qql_quote(r#"a"b"#), r#""a\"b""#);
    }
}
