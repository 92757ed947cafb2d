//! Request bodies and tolerant response types (docs/qualys-api.md §2.1, §3.2, samples/qualys/).
//!
//! Response types read what they model from several spellings and types (numbers as strings,
//! nulls, arrays or objects), keep every other field in `extra`, and never fail on a field's
//! type: only a missing identity (a registry without `registryUuid`, an image without `sha`) or a
//! non-object makes an item unreadable.

use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Lenient field readers.

/// A string from a string, number or boolean.
fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A non-negative integer from a number or a numeric string.
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

/// Removes and converts the first of `keys` that converts; nulls of those keys are removed too,
/// values that do not convert stay in the map.
fn take<R>(
    map: &mut Map<String, Value>,
    keys: &[&str],
    f: impl Fn(&Value) -> Option<R>,
) -> Option<R> {
    for key in keys {
        match map.get(*key) {
            Some(Value::Null) => {
                map.remove(*key);
            }
            Some(v) => {
                if let Some(r) = f(v) {
                    map.remove(*key);
                    return Some(r);
                }
            }
            None => {}
        }
    }
    None
}

/// Removes a key whose value did not convert (for fields that always serialise, so that the
/// output has no duplicate key); always `None`.
fn drop_key<R>(map: &mut Map<String, Value>, key: &str) -> Option<R> {
    map.remove(key);
    None
}

/// Reads the first of `keys` that converts, without removing anything.
fn peek<R>(map: &Map<String, Value>, keys: &[&str], f: impl Fn(&Value) -> Option<R>) -> Option<R> {
    keys.iter().filter_map(|k| map.get(*k)).find_map(f)
}

/// Items of an array that deserialize; anything else is empty.
fn items<T: for<'de> Deserialize<'de>>(v: Option<Value>) -> Vec<T> {
    match v {
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    }
}

fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(as_string(&Value::deserialize(d)?))
}

/// Implements `Deserialize` through a JSON object and a `fn(Map) -> Result<Self, String>`.
macro_rules! deserialize_from_object {
    ($ty:ty, $from:path) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let map = Map::<String, Value>::deserialize(d)?;
                $from(map).map_err(D::Error::custom)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Registry, connectors, schedules.

/// Qualys' AWS account and the external ID for the scan role's trust policy
/// (`GET /registry/aws-base`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsBase {
    /// Qualys' AWS account ID.
    pub account_id: String,
    /// The external ID (an int64 in the swagger; always a string here).
    pub external_id: String,
}

impl AwsBase {
    fn from_object(mut m: Map<String, Value>) -> Result<Self, String> {
        Ok(Self {
            account_id: take(&mut m, &["accountId"], as_string).ok_or("no accountId")?,
            external_id: take(&mut m, &["externalId"], as_string).ok_or("no externalId")?,
        })
    }
}
deserialize_from_object!(AwsBase, AwsBase::from_object);

/// An AWS connector (`GET /registry/aws/connectors`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsConnector {
    /// Connector name (empty when absent).
    pub name: String,
    /// IAM role ARN Qualys assumes (empty when absent).
    pub arn: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AwsConnector {
    fn from_object(mut m: Map<String, Value>) -> Result<Self, String> {
        Ok(Self {
            name: take(&mut m, &["name"], as_string)
                .or_else(|| drop_key(&mut m, "name"))
                .unwrap_or_default(),
            arn: take(&mut m, &["arn"], as_string)
                .or_else(|| drop_key(&mut m, "arn"))
                .unwrap_or_default(),
            description: take(&mut m, &["description"], as_string),
            extra: m,
        })
    }
}
deserialize_from_object!(AwsConnector, AwsConnector::from_object);

/// Body of `POST /registry/aws/connector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAwsConnector {
    /// IAM role ARN.
    pub arn: String,
    /// Description.
    pub description: String,
    /// External ID (a string in the body).
    pub external_id: String,
    /// Connector name.
    pub name: String,
    /// `Global` or `US_Gov`.
    pub account_type: String,
}

/// An ECR registry to create (`POST /registry`). Serialises to the documented nested body
/// `{"aws":{accountId,arn,region,accountType},"credentialType":"AWS","registryType":"AWS",
/// "registryUri","registryName"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "RegistryBody", from = "RegistryBody")]
pub struct CreateEcrRegistry {
    /// AWS account of the registry.
    pub account_id: String,
    /// IAM role ARN (an existing or new connector).
    pub arn: String,
    /// AWS region.
    pub region: String,
    /// `Global` or `US_Gov`.
    pub account_type: String,
    /// `https://<account>.dkr.ecr.<region>.amazonaws.com`.
    pub registry_uri: String,
    /// Display name.
    pub registry_name: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryAws {
    account_id: String,
    arn: String,
    region: String,
    account_type: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryBody {
    aws: RegistryAws,
    credential_type: String,
    registry_type: String,
    registry_uri: String,
    registry_name: String,
}

impl From<CreateEcrRegistry> for RegistryBody {
    fn from(r: CreateEcrRegistry) -> Self {
        Self {
            aws: RegistryAws {
                account_id: r.account_id,
                arn: r.arn,
                region: r.region,
                account_type: r.account_type,
            },
            credential_type: "AWS".into(),
            registry_type: "AWS".into(),
            registry_uri: r.registry_uri,
            registry_name: r.registry_name,
        }
    }
}

impl From<RegistryBody> for CreateEcrRegistry {
    fn from(b: RegistryBody) -> Self {
        Self {
            account_id: b.aws.account_id,
            arn: b.aws.arn,
            region: b.aws.region,
            account_type: b.aws.account_type,
            registry_uri: b.registry_uri,
            registry_name: b.registry_name,
        }
    }
}

/// A registry (`GET /registry`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// Qualys' ID of the registry.
    pub registry_uuid: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_name: Option<String>,
    /// Registry URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_uri: Option<String>,
    /// AWS account (ECR).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_account_id: Option<String>,
    /// AWS region (ECR).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Registry {
    fn from_object(mut m: Map<String, Value>) -> Result<Self, String> {
        Ok(Self {
            registry_uuid: take(&mut m, &["registryUuid"], as_string).ok_or("no registryUuid")?,
            registry_name: take(&mut m, &["registryName"], as_string),
            registry_uri: take(&mut m, &["registryUri"], as_string),
            aws_account_id: take(&mut m, &["awsAccountId"], as_string),
            aws_region: take(&mut m, &["awsRegion"], as_string),
            extra: m,
        })
    }
}
deserialize_from_object!(Registry, Registry::from_object);

/// One repository and tag of an on-demand scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoTag {
    /// Repository name.
    pub repo: String,
    /// Tag (Qualys accepts comma-separated tags).
    pub tag: String,
}

/// An on-demand registry scan (`POST /registry/{id}/schedule`). Serialises to
/// `{"filters":[{"repoTags":[…],"days":null}],"name","onDemand":true,"schedule":"00:00",
/// "forceScan","registryType"}` (docs/qualys-api.md §2.1 #10, §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ScheduleBody", from = "ScheduleBody")]
pub struct OnDemandSchedule {
    /// Schedule name.
    pub name: String,
    /// What to scan.
    pub repo_tags: Vec<RepoTag>,
    /// Rescan images already scanned (needs the "Force Registry Image Scan" feature).
    pub force_scan: bool,
    /// `AWS` for ECR.
    pub registry_type: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleFilter {
    repo_tags: Vec<RepoTag>,
    days: Option<u32>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleBody {
    filters: Vec<ScheduleFilter>,
    name: String,
    on_demand: bool,
    schedule: String,
    force_scan: bool,
    registry_type: String,
}

impl From<OnDemandSchedule> for ScheduleBody {
    fn from(s: OnDemandSchedule) -> Self {
        Self {
            filters: vec![ScheduleFilter {
                repo_tags: s.repo_tags,
                days: None,
            }],
            name: s.name,
            on_demand: true,
            schedule: "00:00".into(),
            force_scan: s.force_scan,
            registry_type: s.registry_type,
        }
    }
}

impl From<ScheduleBody> for OnDemandSchedule {
    fn from(b: ScheduleBody) -> Self {
        Self {
            name: b.name,
            repo_tags: b.filters.into_iter().flat_map(|f| f.repo_tags).collect(),
            force_scan: b.force_scan,
            registry_type: b.registry_type,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images and vulnerabilities.

/// Vulnerability counts by severity (`severity1Count` … `severity5Count`; missing or null = 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SeverityCounts {
    /// Severity 1 (minimal).
    #[serde(rename = "severity1Count")]
    pub severity1: u64,
    /// Severity 2 (medium).
    #[serde(rename = "severity2Count")]
    pub severity2: u64,
    /// Severity 3 (serious).
    #[serde(rename = "severity3Count")]
    pub severity3: u64,
    /// Severity 4 (critical).
    #[serde(rename = "severity4Count")]
    pub severity4: u64,
    /// Severity 5 (urgent).
    #[serde(rename = "severity5Count")]
    pub severity5: u64,
}

const COUNT_KEYS: [&str; 5] = [
    "severity1Count",
    "severity2Count",
    "severity3Count",
    "severity4Count",
    "severity5Count",
];

impl SeverityCounts {
    /// All vulnerabilities.
    pub fn total(&self) -> u64 {
        self.severity1 + self.severity2 + self.severity3 + self.severity4 + self.severity5
    }

    /// The highest severity with a non-zero count.
    pub fn max_severity(&self) -> Option<u8> {
        [
            self.severity5,
            self.severity4,
            self.severity3,
            self.severity2,
            self.severity1,
        ]
        .iter()
        .position(|c| *c > 0)
        .map(|i| 5 - i as u8)
    }

    /// Counts from an object with `severityNCount` keys, or the first element of an array of
    /// such objects (container details use `[{…}]`). `None` when neither.
    fn from_value(v: &Value) -> Option<Self> {
        let obj = match v {
            Value::Object(o) => o,
            Value::Array(a) => a.first()?.as_object()?,
            _ => return None,
        };
        if !COUNT_KEYS.iter().any(|k| obj.contains_key(*k)) {
            return None;
        }
        let n = |k: &str| obj.get(k).and_then(as_u64).unwrap_or(0);
        Some(Self {
            severity1: n(COUNT_KEYS[0]),
            severity2: n(COUNT_KEYS[1]),
            severity3: n(COUNT_KEYS[2]),
            severity4: n(COUNT_KEYS[3]),
            severity5: n(COUNT_KEYS[4]),
        })
    }
}

impl<'de> Deserialize<'de> for SeverityCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::Null => Ok(Self::default()),
            Value::Object(ref o) if o.is_empty() => Ok(Self::default()),
            _ => Self::from_value(&v).ok_or_else(|| D::Error::custom("expected severity counts")),
        }
    }
}

/// One `repo` entry of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRepo {
    /// Registry host, e.g. `111122223333.dkr.ecr.us-east-1.amazonaws.com`.
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub registry: Option<String>,
    /// Repository.
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub repository: Option<String>,
    /// Tag.
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub tag: Option<String>,
}

/// One `repoDigests` entry of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoDigest {
    /// Registry host.
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub registry: Option<String>,
    /// Repository.
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub repository: Option<String>,
    /// Manifest digest.
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub digest: Option<String>,
}

/// An image (`GET /images`, `GET /images/{sha}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Image SHA (64 hex characters).
    pub sha: String,
    /// Qualys' image UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Creation time, epoch milliseconds as a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Repositories and tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repo: Vec<ImageRepo>,
    /// Repository digests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<RepoDigest>,
    /// Scan status; `SUCCESS` means done (docs/qualys-api.md §2.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan_status: Option<String>,
    /// Vulnerability counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vulnerabilities: Option<SeverityCounts>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Image {
    /// When Qualys last finished scanning it, epoch milliseconds (`lastScanned` of the image
    /// details, else `updated`); a rescan is done once this moves past the previous value.
    pub fn last_scanned_ms(&self) -> Option<u64> {
        peek(&self.extra, &["lastScanned", "updated"], as_u64)
    }

    fn from_object(mut m: Map<String, Value>) -> Result<Self, String> {
        Ok(Self {
            sha: take(&mut m, &["sha"], as_string).ok_or("no sha")?,
            uuid: take(&mut m, &["uuid"], as_string),
            created: take(&mut m, &["created"], as_string),
            repo: items(m.remove("repo")),
            repo_digests: items(m.remove("repoDigests")),
            scan_status: take(&mut m, &["scanStatus"], as_string),
            vulnerabilities: take(&mut m, &["vulnerabilities"], SeverityCounts::from_value),
            extra: m,
        })
    }
}
deserialize_from_object!(Image, Image::from_object);

/// One vulnerability of an image (`GET /images/{sha}/vuln?type=DETAILS`).
///
/// Read from the official details shape (`severity`, `customerSeverity`, `result`, nested
/// `vulnerability`) and the seed shape (`qid`, `title`, `cveids`, `software[].fixVersion`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Vulnerability {
    /// Qualys ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qid: Option<u64>,
    /// Severity 1..=5 (`severity`, else `customerSeverity`; 1 when neither).
    pub severity: u8,
    /// Title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// CVE IDs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cve_ids: Vec<String>,
    /// Version that fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed_version: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn severity_number(v: &Value) -> Option<u64> {
    as_u64(v).or_else(|| {
        let s = v.as_str()?.trim().to_ascii_uppercase();
        Some(match s.as_str() {
            "CRITICAL" | "URGENT" => 5,
            "HIGH" => 4,
            "MEDIUM" | "SERIOUS" => 3,
            "LOW" => 2,
            "INFO" | "MINIMAL" => 1,
            _ => return None,
        })
    })
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|item| match item {
                Value::Object(o) => peek(o, &["id", "cveId", "cve", "name"], as_string),
                other => as_string(other),
            })
            .collect(),
        Value::String(s) => s
            .split([',', ' ', ';'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        _ => return None,
    };
    Some(list)
}

/// `Required_Version` of the first row of a `#table` result (official details sample).
fn fixed_from_result(result: &str) -> Option<String> {
    let mut lines = result.lines().filter(|l| !l.trim().is_empty());
    if !lines.next()?.starts_with("#table") {
        return None;
    }
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = header
        .iter()
        .position(|h| h.eq_ignore_ascii_case("Required_Version"))?;
    lines.next()?.split_whitespace().nth(col).map(String::from)
}

const CVE_KEYS: [&str; 5] = ["cveIds", "cveids", "cveIDs", "cveList", "cves"];
const FIX_KEYS: [&str; 3] = ["fixedVersion", "fixVersion", "fixed_version"];

impl Vulnerability {
    fn from_object(mut m: Map<String, Value>) -> Result<Self, String> {
        let nested = m
            .get("vulnerability")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let qid = take(&mut m, &["qid"], as_u64).or_else(|| peek(&nested, &["qid"], as_u64));
        let severity = take(&mut m, &["severity"], severity_number)
            .or_else(|| peek(&m, &["customerSeverity"], severity_number))
            .or_else(|| peek(&nested, &["severity"], severity_number))
            .or_else(|| drop_key(&mut m, "severity"))
            .unwrap_or(1)
            .clamp(1, 5) as u8;
        let title =
            take(&mut m, &["title"], as_string).or_else(|| peek(&nested, &["title"], as_string));
        let cve_ids = take(&mut m, &CVE_KEYS, string_list)
            .or_else(|| peek(&nested, &CVE_KEYS, string_list))
            .unwrap_or_default();
        let fixed_version = take(&mut m, &FIX_KEYS, as_string)
            .or_else(|| peek(&nested, &FIX_KEYS, as_string))
            .or_else(|| {
                m.get("software")?
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_object)
                    .find_map(|s| peek(s, &FIX_KEYS, as_string).filter(|v| !v.is_empty()))
            })
            .or_else(|| fixed_from_result(m.get("result")?.as_str()?));
        Ok(Self {
            qid,
            severity,
            title,
            cve_ids,
            fixed_version,
            extra: m,
        })
    }
}
deserialize_from_object!(Vulnerability, Vulnerability::from_object);

// ---------------------------------------------------------------------------------------------
// Sensors and CDR.

/// A sensor (`GET /sensors`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sensor {
    /// Sensor UUID (`sensorUuid`, else `uuid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor_uuid: Option<String>,
    /// Host name (`hostname` or `hostName`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Sensor {
    fn from_object(mut m: Map<String, Value>) -> Result<Self, String> {
        Ok(Self {
            sensor_uuid: take(&mut m, &["sensorUuid", "uuid"], as_string),
            hostname: take(&mut m, &["hostname", "hostName"], as_string),
            status: take(&mut m, &["status"], as_string),
            extra: m,
        })
    }
}
deserialize_from_object!(Sensor, Sensor::from_object);

/// CDR severity. Findings carry an int (1 = LOW, 2 = MEDIUM, 3 = HIGH, 4 and 5 = CRITICAL, per
/// the seeds) or the query parameter's names (docs/qualys-api.md §3.1, §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// LOW.
    Low,
    /// MEDIUM.
    Medium,
    /// HIGH.
    High,
    /// CRITICAL.
    Critical,
}

impl Severity {
    /// The severity of an int (1–5) or a name (case-insensitive) or a numeric string.
    pub fn from_value(v: &Value) -> Option<Severity> {
        match as_u64(v) {
            Some(n) => Self::from_number(n),
            None => Self::from_text(v.as_str()?),
        }
    }

    /// The severity of text: a name (case-insensitive) or a number.
    pub fn from_text(s: &str) -> Option<Severity> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Self::from_number(n);
        }
        [
            ("LOW", Severity::Low),
            ("MEDIUM", Severity::Medium),
            ("HIGH", Severity::High),
            ("CRITICAL", Severity::Critical),
        ]
        .into_iter()
        .find_map(|(name, severity)| s.eq_ignore_ascii_case(name).then_some(severity))
    }

    /// The severity of a number: 1 (low) to 4 or 5 (critical).
    pub(crate) fn from_number(n: u64) -> Option<Severity> {
        match n {
            1 => Some(Severity::Low),
            2 => Some(Severity::Medium),
            3 => Some(Severity::High),
            4 | 5 => Some(Severity::Critical),
            _ => None,
        }
    }

    /// 1 (low) to 4 (critical).
    pub fn rank(self) -> u8 {
        match self {
            Severity::Low => 1,
            Severity::Medium => 2,
            Severity::High => 3,
            Severity::Critical => 4,
        }
    }

    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL` (the CDR query parameter's values).
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Severity::from_value(&v).ok_or_else(|| D::Error::custom(format!("unknown severity {v}")))
    }
}

/// Query of `GET /cdr-api/rest/v1/findings/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CdrQuery {
    /// Start, e.g. `2026-01-10T16:45:00.000Z`.
    pub start_at: String,
    /// End, e.g. `2026-01-11T16:45:00.999Z`.
    pub end_at: String,
    /// Page size (default 100; 0 means 100).
    pub limit: u32,
    /// `AWS`, `AZURE` or `GCP`.
    pub cloud_provider: Option<String>,
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    pub severity: Option<String>,
    /// QQL, e.g. `tc.findings.cloudProvider: AWS` (documented as mandatory, optional in practice).
    pub query: Option<String>,
    /// e.g. `container` (seed parameter, not in the doc).
    pub resource_type: Option<String>,
}

impl CdrQuery {
    /// Findings between `start_at` and `end_at`, 100 per page, no other filter.
    pub fn new(start_at: impl Into<String>, end_at: impl Into<String>) -> Self {
        Self {
            start_at: start_at.into(),
            end_at: end_at.into(),
            ..Self::default()
        }
    }
}

impl Default for CdrQuery {
    fn default() -> Self {
        Self {
            start_at: String::new(),
            end_at: String::new(),
            limit: 100,
            cloud_provider: None,
            severity: None,
            query: None,
            resource_type: None,
        }
    }
}

/// A CDR finding (docs/qualys-api.md §3.2). Only the fields below are typed; everything else
/// (`resourceType`, `processName`, `mitreRulesInfo`, …) stays in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CdrFinding {
    /// Finding ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Category, e.g. `Cloud_Credentials_Accessed_By_Network_Utility`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threat_category: Option<String>,
    /// Severity (unknown values stay in `extra["severity"]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Time of the finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// MITRE technique IDs from `mitreRulesInfo` (object keys, or an array of strings or
    /// `{technique}` objects).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mitre_techniques: Vec<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Technique IDs of a `mitreRulesInfo` value: object keys, an array of strings or
/// `{technique}` objects, or a comma-separated string; `None` for other types.
pub(crate) fn techniques(v: &Value) -> Option<Vec<String>> {
    let mut out: Vec<String> = match v {
        Value::Object(o) => o.keys().cloned().collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|item| match item {
                Value::Object(o) => peek(
                    o,
                    &["technique", "techniqueId", "mitreTechnique", "id"],
                    as_string,
                ),
                other => as_string(other),
            })
            .collect(),
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        _ => return None,
    };
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| !t.is_empty() && seen.insert(t.clone()));
    Some(out)
}

impl CdrFinding {
    fn from_object(mut m: Map<String, Value>) -> Result<Self, String> {
        // `mitreTechniques` is this type's own serialised field: always consumed.
        let own = m.remove("mitreTechniques").as_ref().and_then(techniques);
        let mitre_techniques = peek(&m, &["mitreRulesInfo"], techniques)
            .or(own)
            .unwrap_or_default();
        Ok(Self {
            uuid: take(&mut m, &["uuid"], as_string),
            threat_category: take(&mut m, &["threatCategory"], as_string),
            severity: take(&mut m, &["severity"], Severity::from_value),
            timestamp: take(&mut m, &["timestamp"], as_string),
            mitre_techniques,
            extra: m,
        })
    }
}
deserialize_from_object!(CdrFinding, CdrFinding::from_object);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip<T>(v: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let again: T = serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap();
        assert_eq!(&again, v);
    }

    #[test]
    fn aws_base_external_id_int_or_string() {
        let a: AwsBase =
            serde_json::from_str(r#"{"accountId":"123456789012","externalId":1234567890123}"#)
                .unwrap();
        assert_eq!(a.external_id, "1234567890123");
        let b: AwsBase =
            serde_json::from_str(r#"{"accountId":805950163170,"externalId":"x-1"}"#).unwrap();
        assert_eq!(
            (b.account_id.as_str(), b.external_id.as_str()),
            ("805950163170", "x-1")
        );
        assert!(serde_json::from_str::<AwsBase>(r#"{"accountId":"1"}"#).is_err());
        roundtrip(&a);
    }

    #[test]
    fn request_bodies_match_the_samples() {
        let reg = CreateEcrRegistry {
            account_id: "111122223333".into(),
            arn: "arn:aws:iam::111122223333:role/qualys-fargate-scan-role".into(),
            region: "us-east-1".into(),
            account_type: "Global".into(),
            registry_uri: "https://111122223333.dkr.ecr.us-east-1.amazonaws.com".into(),
            registry_name: "ecr-111122223333-us-east-1".into(),
        };
        assert_eq!(
            serde_json::to_value(&reg).unwrap(),
            json!({"aws":{"accountId":"111122223333","arn":"arn:aws:iam::111122223333:role/qualys-fargate-scan-role","region":"us-east-1","accountType":"Global"},
                   "credentialType":"AWS","registryType":"AWS",
                   "registryUri":"https://111122223333.dkr.ecr.us-east-1.amazonaws.com","registryName":"ecr-111122223333-us-east-1"})
        );
        roundtrip(&reg);
        let sched = OnDemandSchedule {
            name: "ECR-my-app-20260702141822".into(),
            repo_tags: vec![RepoTag {
                repo: "my-app".into(),
                tag: "v1.2.3".into(),
            }],
            force_scan: true,
            registry_type: "AWS".into(),
        };
        assert_eq!(
            serde_json::to_value(&sched).unwrap(),
            json!({"filters":[{"repoTags":[{"repo":"my-app","tag":"v1.2.3"}],"days":null}],
                   "name":"ECR-my-app-20260702141822","onDemand":true,"schedule":"00:00","forceScan":true,"registryType":"AWS"})
        );
        roundtrip(&sched);
        let conn = CreateAwsConnector {
            arn: "arn".into(),
            description: "d".into(),
            external_id: "1".into(),
            name: "n".into(),
            account_type: "Global".into(),
        };
        assert_eq!(
            serde_json::to_value(&conn).unwrap(),
            json!({"arn":"arn","description":"d","externalId":"1","name":"n","accountType":"Global"})
        );
    }

    #[test]
    fn images_are_read_tolerantly() {
        let img: Image = serde_json::from_value(json!({
            "created": 1717026901000u64, "sha": "4f67", "uuid": "u",
            "repo": [{"registry": "docker.io", "tag": "latest", "repository": "nginx"}, 7],
            "repoDigests": null,
            "vulnerabilities": {"severity5Count": 1, "severity3Count": "2", "severity1Count": null},
            "scanStatus": "SUCCESS", "imageId": "4f67c83422ec"
        }))
        .unwrap();
        assert_eq!(img.created.as_deref(), Some("1717026901000"));
        assert_eq!(img.repo.len(), 1);
        assert_eq!(img.repo[0].repository.as_deref(), Some("nginx"));
        assert!(img.repo_digests.is_empty());
        let v = img.vulnerabilities.unwrap();
        assert_eq!(
            (v.severity5, v.severity3, v.severity1, v.total()),
            (1, 2, 0, 3)
        );
        assert_eq!(v.max_severity(), Some(5));
        assert_eq!(img.extra["imageId"], "4f67c83422ec");
        assert!(!img.extra.contains_key("sha"));
        roundtrip(&img);
        // Container-details style: an array of one counts object.
        let img: Image = serde_json::from_value(json!({"sha": "a",
            "vulnerabilities": [{"severity5Count": 6, "severity1Count": null}]}))
        .unwrap();
        assert_eq!(img.vulnerabilities.unwrap().severity5, 6);
        assert!(serde_json::from_value::<Image>(json!({"uuid": "no-sha"})).is_err());
        assert!(serde_json::from_value::<Image>(json!("string")).is_err());
    }

    #[test]
    fn vulnerabilities_official_and_seed_shapes() {
        let official: Vulnerability = serde_json::from_value(json!({
            "vulnerability": null,
            "result": "#table cols=\"3\"\nPackage Installed_Version Required_Version\nexpat 2.1.0-10.21.amzn1.x86__64 2.1.0-14.31.amzn1",
            "severity": 5, "customerSeverity": 5, "typeDetected": "CONFIRMED", "risk": 50,
            "discoveryType": ["AUTHENTICATED"]
        }))
        .unwrap();
        assert_eq!(official.severity, 5);
        assert_eq!(official.fixed_version.as_deref(), Some("2.1.0-14.31.amzn1"));
        assert_eq!(official.extra["typeDetected"], "CONFIRMED");
        roundtrip(&official);

        let seed: Vulnerability = serde_json::from_value(json!({
            "qid": "379952", "title": "OpenSSL", "severity": "4", "cveids": "CVE-1, CVE-2",
            "software": [{"name": "openssl", "fixVersion": "3.0.2-0ubuntu1.18"}]
        }))
        .unwrap();
        assert_eq!(seed.qid, Some(379952));
        assert_eq!(seed.severity, 4);
        assert_eq!(seed.cve_ids, vec!["CVE-1", "CVE-2"]);
        assert_eq!(seed.fixed_version.as_deref(), Some("3.0.2-0ubuntu1.18"));
        roundtrip(&seed);

        let customer: Vulnerability =
            serde_json::from_value(json!({"customerSeverity": 3, "cveIds": ["CVE-9"]})).unwrap();
        assert_eq!((customer.severity, customer.cve_ids.len()), (3, 1));
        let clamped: Vulnerability = serde_json::from_value(json!({"severity": 9})).unwrap();
        assert_eq!(clamped.severity, 5);
        let odd: Vulnerability =
            serde_json::from_value(json!({"severity": {"x": 1}, "qid": [1]})).unwrap();
        assert_eq!((odd.severity, odd.qid), (1, None));
        assert!(!odd.extra.contains_key("severity"));
        assert!(odd.extra.contains_key("qid"));
        roundtrip(&odd);
    }

    #[test]
    fn severity_counts_missing_and_null_are_zero() {
        let c: SeverityCounts =
            serde_json::from_str(r#"{"severity2Count":2,"severity4Count":null}"#).unwrap();
        assert_eq!(
            c,
            SeverityCounts {
                severity2: 2,
                ..Default::default()
            }
        );
        assert_eq!(c.max_severity(), Some(2));
        assert_eq!(SeverityCounts::default().max_severity(), None);
        roundtrip(&c);
    }

    #[test]
    fn cdr_findings_severity_and_mitre_shapes() {
        let f: CdrFinding = serde_json::from_value(json!({
            "uuid": "b1f0", "threatCategory": "Network_Scanning_Utility", "severity": 3,
            "timestamp": "2026-01-11T05:40:02.007Z", "processName": "nmap",
            "mitreRulesInfo": {"T1046": {"tactic": "discovery"}}
        }))
        .unwrap();
        assert_eq!(f.severity, Some(Severity::High));
        assert_eq!(f.mitre_techniques, vec!["T1046"]);
        assert_eq!(f.extra["processName"], "nmap");
        assert!(f.extra.contains_key("mitreRulesInfo"));
        roundtrip(&f);

        let g: CdrFinding = serde_json::from_value(json!({
            "severity": "critical",
            "mitreRulesInfo": [{"technique": "T1552.005"}, "T1046", {"technique": "T1046"}]
        }))
        .unwrap();
        assert_eq!(g.severity, Some(Severity::Critical));
        assert_eq!(g.mitre_techniques, vec!["T1552.005", "T1046"]);
        roundtrip(&g);

        let h: CdrFinding =
            serde_json::from_value(json!({"severity": "weird", "timestamp": 1700000000000u64}))
                .unwrap();
        assert_eq!(h.severity, None);
        assert_eq!(h.extra["severity"], "weird");
        assert_eq!(h.timestamp.as_deref(), Some("1700000000000"));
        assert!(h.mitre_techniques.is_empty());
        assert_eq!(
            serde_json::from_str::<Severity>("4").unwrap(),
            Severity::Critical
        );
    }

    #[test]
    fn registries_connectors_sensors() {
        let r: Registry = serde_json::from_value(json!({
            "registryUuid": "0b6d", "registryName": "n", "registryUri": "https://x",
            "awsAccountId": 111122223333u64, "repoCount": 3
        }))
        .unwrap();
        assert_eq!(r.aws_account_id.as_deref(), Some("111122223333"));
        assert_eq!(r.extra["repoCount"], 3);
        roundtrip(&r);
        assert!(serde_json::from_value::<Registry>(json!({"registryName": "x"})).is_err());

        let c: AwsConnector = serde_json::from_value(json!({
            "name": "c", "arn": "arn:aws:iam::1:role/r", "accountType": "Global"
        }))
        .unwrap();
        assert_eq!(c.description, None);
        assert_eq!(c.extra["accountType"], "Global");
        roundtrip(&c);

        let s: Sensor =
            serde_json::from_value(json!({"uuid": "s1", "hostName": "h", "status": "ACTIVE"}))
                .unwrap();
        assert_eq!(s.sensor_uuid.as_deref(), Some("s1"));
        assert_eq!(s.hostname.as_deref(), Some("h"));
        roundtrip(&s);
    }
}
