//! csapi registry endpoints (docs/qualys-api.md §2.1 #1–#11, §2.2): the AWS base, connectors,
//! registries and their schedules.

use crate::config::{Duplicates, RegistryCreateResponse};
use crate::http::{self, ApiError, Query, Reply, bad_request, not_found, now_ms, ok};
use crate::ids;
use crate::qql;
use crate::state::{
    EXTERNAL_ID, ImageState, QUALYS_AWS_ACCOUNT, RegistryRecord, ScanStart, ScheduleRecord, Shared,
    World, host_of,
};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::Instant;

/// The body as a JSON object, or a 400.
pub(crate) fn object_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(bad_request("The request body must be a JSON object")),
        Err(e) => Err(bad_request(format!("Malformed JSON request body: {e}"))),
    }
}

/// A string field of `o`, if it is a non-empty string.
fn str_field<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn is_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// The account of an IAM role ARN `arn:aws[-us-gov|-cn]:iam::<12 digits>:role/<name>`.
fn role_arn_account(arn: &str) -> Option<&str> {
    let rest = ["arn:aws:iam::", "arn:aws-us-gov:iam::", "arn:aws-cn:iam::"]
        .iter()
        .find_map(|p| arn.strip_prefix(p))?;
    let (account, role) = rest.split_once(":role/")?;
    (is_digits(account, 12) && !role.is_empty() && !role.contains(char::is_whitespace))
        .then_some(account)
}

/// An AWS region such as `us-east-1` or `us-gov-west-1`.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let letters = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    (3..=4).contains(&parts.len())
        && parts[0].len() == 2
        && letters(parts[0])
        && parts[1..parts.len() - 1].iter().all(|p| letters(p))
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `GET /registry/aws-base`.
pub(crate) fn aws_base() -> Reply {
    ok(&json!({"accountId": QUALYS_AWS_ACCOUNT, "externalId": EXTERNAL_ID}))
}

/// `GET /registry/aws/connectors[/{accountId}]`: a bare array.
pub(crate) fn list_connectors(shared: &Shared, account: Option<&str>) -> Reply {
    let world = shared.world.lock();
    let list: Vec<Value> = world
        .connectors
        .iter()
        .filter(|c| match account {
            None => true,
            Some(a) => c["arn"].as_str().and_then(role_arn_account) == Some(a),
        })
        .cloned()
        .collect();
    ok(&Value::Array(list))
}

/// `POST /registry/aws/connector` `{"arn","description","externalId","name","accountType"}`.
pub(crate) fn create_connector(shared: &Shared, body: &[u8]) -> Reply {
    let o = object_body(body)?;
    let Some(arn) = str_field(&o, "arn") else {
        return Err(bad_request("arn is mandatory"));
    };
    if role_arn_account(arn).is_none() {
        return Err(bad_request(format!("Invalid role ARN: {arn}")));
    }
    let Some(name) = str_field(&o, "name") else {
        return Err(bad_request("name is mandatory"));
    };
    let external = match o.get("externalId") {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(bad_request("externalId is mandatory")),
    };
    if external != EXTERNAL_ID.to_string() {
        return Err(bad_request(
            "externalId does not match the external ID of this subscription (GET /registry/aws-base)",
        ));
    }
    if let Some(t) = o.get("accountType").filter(|t| !t.is_null())
        && !matches!(t.as_str(), Some("Global" | "US_Gov"))
    {
        return Err(bad_request("accountType must be Global or US_Gov"));
    }
    let connector = json!({
        "name": name,
        "arn": arn,
        "description": o.get("description").cloned().unwrap_or(Value::Null),
    });
    {
        // Check and insert under one lock: concurrent creates see each other.
        let mut world = shared.world.lock();
        let account = role_arn_account(arn);
        let exists = world
            .connectors
            .iter()
            .any(|c| c["arn"].as_str().and_then(role_arn_account) == account);
        if exists && shared.settings.duplicate_connectors == Duplicates::Reject {
            drop(world);
            shared.stats.lock().duplicates_refused += 1;
            return Err(bad_request(format!(
                "AWS connector already exists for account {}",
                account.unwrap_or_default()
            )));
        }
        world.connectors.push(connector.clone());
    }
    shared.stats.lock().connectors_created += 1;
    tracing::info!(name, arn, "connector created");
    ok(&connector)
}

/// The registry's RegistryResponse (sample csapi-registry-list.response.json), with counts
/// from the images of its host at `now`.
fn registry_json(world: &World, r: &RegistryRecord, now: Instant, details: bool) -> Value {
    let host = r.host();
    let images: Vec<_> = world
        .images
        .iter()
        .filter(|i| {
            i.state(now) != ImageState::Unknown
                && i.repos
                    .iter()
                    .any(|p| p.registry.eq_ignore_ascii_case(&host))
        })
        .collect();
    let scanned: Vec<_> = images
        .iter()
        .filter(|i| i.state(now) == ImageState::Scanned)
        .collect();
    let mut repos: Vec<&str> = images
        .iter()
        .flat_map(|i| i.repos.iter().map(|p| p.repository.as_str()))
        .collect();
    repos.sort_unstable();
    repos.dedup();
    let mut statuses: BTreeMap<&str, u64> = BTreeMap::new();
    for s in world.schedules.iter().filter(|s| s.registry_uuid == r.uuid) {
        *statuses.entry(schedule_status(s, now)).or_default() += 1;
    }
    let last_scanned = scanned.iter().filter_map(|i| i.scanned_ms).max();
    let aws = r.aws.as_ref();
    let mut v = json!({
        "registryUuid": r.uuid,
        "registryName": r.name,
        "registryUri": r.uri,
        "registryType": r.registry_type,
        "providerType": if r.registry_type == "AWS" { "AWS" } else { r.registry_type.as_str() },
        "awsAccountId": aws.and_then(|a| a.get("accountId")).cloned().unwrap_or(Value::Null),
        "awsRegion": aws.and_then(|a| a.get("region")).cloned().unwrap_or(Value::Null),
        "repoCount": repos.len(),
        "totalImages": images.len(),
        "totalScannedImages": scanned.len(),
        "totalVulnerableImages": scanned.iter().filter(|i| !i.vulns.is_empty()).count(),
        "scheduleStatusList": statuses,
        "lastScanned": last_scanned.map(|t| t.to_string()),
        "created": r.created_ms.to_string(),
        "updated": last_scanned.unwrap_or(r.created_ms).max(r.created_ms).to_string(),
    });
    if details {
        v["credentialType"] = json!(r.credential_type);
        v["aws"] = r.aws.clone().unwrap_or(Value::Null);
    }
    v
}

/// Current registry objects (for the admin API and [`crate::RunningEmulator::registries`]).
pub(crate) fn all_registries(shared: &Shared) -> Vec<Value> {
    let world = shared.world.lock();
    let now = Instant::now();
    world
        .registries
        .iter()
        .map(|r| registry_json(&world, r, now, true))
        .collect()
}

/// Every schedule created so far: name, registry, filters and creation time (epoch ms).
pub(crate) fn all_schedules(shared: &Shared) -> Vec<Value> {
    let world = shared.world.lock();
    world
        .schedules
        .iter()
        .map(|s| {
            json!({
                "scheduleUuid": s.uuid,
                "registryUuid": s.registry_uuid,
                "name": s.name,
                "onDemand": s.on_demand,
                "filters": s.filters,
                "createdMs": s.created_ms,
            })
        })
        .collect()
}

/// Compares registry URIs: scheme and host case-insensitive, trailing slash ignored.
fn same_uri(a: &str, b: &str) -> bool {
    a.trim()
        .trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim().trim_end_matches('/'))
}

/// `GET /registry?filter=registryUri:"…"&pageNumber=1&pageSize=50`: `{"count","data"}`, 204 when
/// nothing matches.
pub(crate) fn list_registries(shared: &Shared, q: &Query) -> Reply {
    let (page, size) = http::page_params(q)?;
    let terms = match q.filter().map(|f| qql::parse(&f)).transpose() {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => return Err(bad_request(format!("Invalid filter: {e}"))),
    };
    let world = shared.world.lock();
    let now = Instant::now();
    // Qualys lists a new registry only after a while.
    let listed_before = now_ms().saturating_sub(
        u64::try_from(shared.settings.registry_list_lag.as_millis()).unwrap_or(u64::MAX),
    );
    let matching: Vec<&RegistryRecord> = world
        .registries
        .iter()
        .filter(|r| r.created_ms <= listed_before)
        .filter(|r| {
            terms.iter().all(|(k, v)| match k.as_str() {
                "registryUri" => same_uri(&r.uri, v),
                "registryName" => r.name == *v,
                "registryType" => r.registry_type.eq_ignore_ascii_case(v),
                "registryUuid" => r.uuid == *v,
                _ => true,
            })
        })
        .collect();
    if matching.is_empty() {
        return Ok(http::empty(StatusCode::NO_CONTENT));
    }
    let data: Vec<Value> = http::page_of(&matching, page, size)
        .into_iter()
        .map(|r| registry_json(&world, r, now, false))
        .collect();
    ok(&json!({"count": matching.len(), "data": data}))
}

/// Validates a `POST /registry` body; returns the record to create.
fn registry_from_body(body: &[u8]) -> Result<RegistryRecord, ApiError> {
    let o = object_body(body)?;
    let Some(registry_type) = str_field(&o, "registryType") else {
        return Err(bad_request("registryType is mandatory"));
    };
    let Some(uri) = str_field(&o, "registryUri") else {
        return Err(bad_request("registryUri is mandatory"));
    };
    let mut aws = None;
    if registry_type == "AWS" {
        let Some(a) = o.get("aws").and_then(Value::as_object) else {
            return Err(bad_request("aws is mandatory for registryType AWS"));
        };
        let account = str_field(a, "accountId").unwrap_or_default();
        if !is_digits(account, 12) {
            return Err(bad_request(
                "aws.accountId must be a 12-digit AWS account ID",
            ));
        }
        let Some(arn) = str_field(a, "arn") else {
            return Err(bad_request("aws.arn is mandatory"));
        };
        if role_arn_account(arn).is_none() {
            return Err(bad_request(format!("Invalid role ARN: {arn}")));
        }
        let region = str_field(a, "region").unwrap_or_default();
        if !is_region(region) {
            return Err(bad_request("aws.region must be an AWS region"));
        }
        let account_type = str_field(a, "accountType").unwrap_or("Global");
        match account_type {
            "Global" if region.starts_with("us-gov-") => {
                return Err(bad_request(
                    "accountType Global cannot use a GovCloud region",
                ));
            }
            "US_Gov" if !region.starts_with("us-gov-") => {
                return Err(bad_request("accountType US_Gov needs a GovCloud region"));
            }
            "Global" | "US_Gov" => {}
            _ => return Err(bad_request("aws.accountType must be Global or US_Gov")),
        }
        let expected = format!("https://{account}.dkr.ecr.{region}.amazonaws.com");
        if !same_uri(uri, &expected) {
            return Err(bad_request(format!(
                "registryUri must be {expected} for this account and region"
            )));
        }
        aws = Some(
            json!({"accountId": account, "arn": arn, "region": region, "accountType": account_type}),
        );
    } else if !uri.contains('.') && !uri.contains("://") {
        return Err(bad_request("registryUri is not a URI"));
    }
    Ok(RegistryRecord {
        uuid: ids::uuid_v4(),
        name: str_field(&o, "registryName").map_or_else(|| host_of(uri), str::to_string),
        uri: uri.trim_end_matches('/').to_string(),
        registry_type: registry_type.to_string(),
        credential_type: str_field(&o, "credentialType").map(str::to_string),
        aws,
        created_ms: now_ms(),
    })
}

/// `POST /registry`: creates a registry — or, when one with the same URI exists and
/// duplicates are refused ([`crate::Duplicates`]), answers 400 "Registry already exists" — and
/// answers per [`RegistryCreateResponse`].
pub(crate) fn create_registry(shared: &Shared, body: &[u8]) -> Reply {
    let record = registry_from_body(body)?;
    let uuid = record.uuid.clone();
    {
        // Check and insert under one lock: concurrent creates see each other (also registries
        // not listed yet).
        let mut world = shared.world.lock();
        let exists = world
            .registries
            .iter()
            .any(|r| same_uri(&r.uri, &record.uri));
        if exists && shared.settings.duplicate_registries == Duplicates::Reject {
            drop(world);
            shared.stats.lock().duplicates_refused += 1;
            return Err(bad_request("Registry already exists"));
        }
        tracing::info!(uri = %record.uri, %uuid, "registry created");
        world.registries.push(record);
    }
    shared.stats.lock().registries_created += 1;
    match shared.settings.registry_create_response {
        RegistryCreateResponse::Object => ok(&json!({"registryUuid": uuid})),
        RegistryCreateResponse::BareString => ok(&json!(uuid)),
        RegistryCreateResponse::Empty => Ok(http::empty(StatusCode::OK)),
    }
}

/// `POST /registry/validate`: `true`, or the 400 a create would give.
pub(crate) fn validate_registry(body: &[u8]) -> Reply {
    registry_from_body(body)?;
    ok(&json!(true))
}

/// `GET /registry/{registryId}`.
pub(crate) fn get_registry(shared: &Shared, id: &str) -> Reply {
    let world = shared.world.lock();
    match world.registries.iter().find(|r| r.uuid == id) {
        Some(r) => ok(&registry_json(&world, r, Instant::now(), true)),
        None => Err(not_found(format!("Registry not found: {id}"))),
    }
}

/// `DELETE /registry/{registryId}`.
pub(crate) fn delete_registry(shared: &Shared, id: &str) -> Reply {
    let mut world = shared.world.lock();
    let before = world.registries.len();
    world.registries.retain(|r| r.uuid != id);
    if world.registries.len() == before {
        return Err(not_found(format!("Registry not found: {id}")));
    }
    world.schedules.retain(|s| s.registry_uuid != id);
    Ok(http::empty(StatusCode::NO_CONTENT))
}

/// A schedule's status at `now`.
fn schedule_status(s: &ScheduleRecord, now: Instant) -> &'static str {
    match s.done_at {
        Some(t) if t <= now => "SUCCESS",
        Some(_) => "RUNNING",
        None => "SCHEDULED",
    }
}

/// `"HH:MM"`.
fn is_hh_mm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 5
        && b[2] == b':'
        && s[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && s[3..].parse::<u8>().is_ok_and(|m| m < 60)
}

/// The `(repo, tag)` pairs of a schedule body's filters, or a 400.
fn repo_tags(o: &Map<String, Value>) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let Some(filters) = o.get("filters").and_then(Value::as_array) else {
        return Err(bad_request("filters is mandatory (an array)"));
    };
    let mut out = Vec::new();
    for f in filters {
        let Some(f) = f.as_object() else {
            return Err(bad_request("each filter must be an object"));
        };
        match f.get("days") {
            None | Some(Value::Null) => {}
            Some(d) if d.as_u64().is_some_and(|d| (1..=7).contains(&d) || d == 14) => {}
            Some(_) => return Err(bad_request("days must be 1-7, 14 or null")),
        }
        let tags = match f.get("repoTags") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(tags)) => tags,
            Some(_) => return Err(bad_request("repoTags must be an array")),
        };
        for rt in tags {
            let Some(repo) = rt
                .get("repo")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|r| !r.is_empty())
            else {
                return Err(bad_request("repoTags[].repo is mandatory"));
            };
            let tag = match rt.get("tag") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(t.clone()),
                Some(_) => return Err(bad_request("repoTags[].tag must be a string")),
            };
            out.push((repo.to_string(), tag));
        }
    }
    Ok(out)
}

/// `POST /registry/{registryId}/schedule`: records the schedule and, when on demand, starts a
/// scan of each repo/tag; answers the schedule UUID as a bare JSON string.
pub(crate) fn create_schedule(shared: &Shared, registry_id: &str, body: &[u8]) -> Reply {
    let o = object_body(body)?;
    let mut world = shared.world.lock();
    let Some(host) = world
        .registries
        .iter()
        .find(|r| r.uuid == registry_id)
        .map(RegistryRecord::host)
    else {
        return Err(not_found(format!("Registry not found: {registry_id}")));
    };
    let Some(name) = str_field(&o, "name") else {
        return Err(bad_request("name is mandatory"));
    };
    let on_demand = match o.get("onDemand") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_request("onDemand must be a boolean")),
    };
    match o.get("schedule") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if is_hh_mm(s) => {}
        Some(_) => return Err(bad_request("schedule must be a UTC time HH:MM")),
    }
    let pairs = repo_tags(&o)?;
    let force = match o.get("forceScan") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_request("forceScan must be a boolean")),
    };
    let delay = shared.settings.scan_delay;
    let uuid = ids::uuid_v4();
    let mut started = Vec::new();
    if on_demand {
        for (repo, tag) in &pairs {
            let tags: Vec<String> = match tag.as_deref().map(str::trim) {
                None | Some("" | "*" | ".*") => {
                    let known = world.tags_of(&host, repo);
                    if known.is_empty() {
                        vec!["latest".to_string()]
                    } else {
                        known
                    }
                }
                Some(list) => list
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect(),
            };
            for t in tags {
                started.push(world.scan(&host, repo, &t, delay, force));
            }
        }
    }
    world.schedules.push(ScheduleRecord {
        uuid: uuid.clone(),
        registry_uuid: registry_id.to_string(),
        name: json!(name),
        on_demand,
        schedule: o.get("schedule").cloned().unwrap_or(Value::Null),
        filters: o.get("filters").cloned().unwrap_or(Value::Null),
        created_ms: now_ms(),
        done_at: on_demand.then(|| Instant::now() + delay),
    });
    drop(world);
    let mut stats = shared.stats.lock();
    stats.schedules_created += 1;
    for start in started {
        match start {
            ScanStart::New => stats.image_scans += 1,
            ScanStart::Rescan => stats.image_rescans += 1,
            ScanStart::AlreadyKnown => {}
            ScanStart::NoSuchTag => stats.scans_of_missing_tags += 1,
        }
    }
    drop(stats);
    tracing::info!(registry = registry_id, schedule = %uuid, images = pairs.len(), "schedule created");
    ok(&json!(uuid))
}

/// `GET /registry/{registryId}/schedule`: `{"count","data":[ScheduleResponse…]}`.
pub(crate) fn list_schedules(shared: &Shared, registry_id: &str, q: &Query) -> Reply {
    let (page, size) = http::page_params(q)?;
    let world = shared.world.lock();
    if !world.registries.iter().any(|r| r.uuid == registry_id) {
        return Err(not_found(format!("Registry not found: {registry_id}")));
    }
    let now = Instant::now();
    let delay_ms = shared.settings.scan_delay.as_millis() as u64;
    let all: Vec<Value> = world
        .schedules
        .iter()
        .filter(|s| s.registry_uuid == registry_id)
        .map(|s| {
            let status = schedule_status(s, now);
            let at = |fraction: u64| match status {
                "SUCCESS" => json!((s.created_ms + delay_ms * fraction / 8).to_string()),
                "RUNNING" if fraction <= 4 => json!((s.created_ms + delay_ms * fraction / 8).to_string()),
                _ => Value::Null,
            };
            json!({
                "scheduleUuid": s.uuid,
                "name": s.name,
                "onDemand": s.on_demand,
                "schedule": s.schedule,
                "status": status,
                "filters": s.filters,
                "errors": [],
                "created": s.created_ms.to_string(),
                "updated": if status == "SUCCESS" { (s.created_ms + delay_ms).to_string() } else { s.created_ms.to_string() },
                "jobStartDate": at(0),
                "jobListingStartDate": at(1),
                "jobListingCompletionDate": at(2),
                "jobScanningStartDate": at(3),
                "jobScanningCompletionDate": at(7),
                "jobCompletionDate": at(8),
            })
        })
        .collect();
    ok(&json!({"count": all.len(), "data": http::page_of(&all, page, size)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators() {
        assert_eq!(
            role_arn_account("arn:aws:iam::111122223333:role/qualys-scan"),
            Some("111122223333")
        );
        assert_eq!(
            role_arn_account("arn:aws:iam::111122223333:role/path/name"),
            Some("111122223333")
        );
        assert_eq!(role_arn_account("arn:aws:iam::1111:role/x"), None);
        assert_eq!(role_arn_account("arn:aws:iam::111122223333:user/x"), None);
        assert!(
            is_region("us-east-1") && is_region("us-gov-west-1") && is_region("ap-southeast-2")
        );
        assert!(!is_region("useast1") && !is_region("US-EAST-1") && !is_region("us-east-"));
        assert!(is_hh_mm("00:00") && is_hh_mm("23:59") && !is_hh_mm("24:00") && !is_hh_mm("0:00"));
    }

    #[test]
    fn registry_body() {
        let good = br#"{"aws":{"accountId":"111122223333","arn":"arn:aws:iam::111122223333:role/r","region":"us-east-1","accountType":"Global"},
            "credentialType":"AWS","registryType":"AWS","registryUri":"https://111122223333.dkr.ecr.us-east-1.amazonaws.com","registryName":"n"}"#;
        let r = registry_from_body(good).unwrap();
        assert_eq!(r.host(), "111122223333.dkr.ecr.us-east-1.amazonaws.com");
        let wrong_region = String::from_utf8_lossy(good).replace("\"us-east-1\"", "\"us-west-2\"");
        assert!(registry_from_body(wrong_region.as_bytes()).is_err());
        assert!(registry_from_body(b"{}").is_err());
        assert!(registry_from_body(b"[").is_err());
    }
}
