//! csapi image and sensor endpoints (docs/qualys-api.md §2.1 #12–#15, §2.3, §2.4).

use crate::config::VulnShape;
use crate::http::{self, ApiError, Query, Reply, bad_request, not_found, ok};
use crate::ids;
use crate::qql;
use crate::state::{ImageRecord, ImageState, Shared, World};
use serde_json::{Value, json};
use std::time::Instant;

/// The `scanStatus` of an image that is known but not yet scanned (no enum is documented;
/// only `SUCCESS` is confirmed, docs/qualys-api.md §2.4).
const PENDING: &str = "PENDING";

fn status_name(state: ImageState) -> &'static str {
    match state {
        ImageState::Scanned => "SUCCESS",
        _ => PENDING,
    }
}

/// The image-list item shape (sample csapi-images-list.official.response.json).
fn list_item(world: &World, image: &ImageRecord, now: Instant) -> Value {
    let state = image.state(now);
    let scanned = state == ImageState::Scanned;
    let repo: Vec<Value> = image
        .repos
        .iter()
        .map(|r| json!({"registry": r.registry, "tag": r.tag, "repository": r.repository}))
        .collect();
    // As in the official sample: the digest's 64 hex digits, without `sha256:`.
    let repo_digests: Vec<Value> = image
        .digests
        .iter()
        .map(|d| json!({"registry": d.registry, "digest": d.digest, "repository": d.repository}))
        .collect();
    let vulnerabilities = if scanned {
        ids::severity_counts(&image.vulns)
    } else {
        json!({"severity5Count": null, "severity3Count": null, "severity4Count": null, "severity1Count": null, "severity2Count": null})
    };
    let registry_uuid = image
        .repos
        .iter()
        .find_map(|r| world.registry_for_host(&r.registry))
        .map(|r| r.uuid.clone());
    let updated = image
        .scanned_ms
        .filter(|_| scanned)
        .unwrap_or(image.created_ms);
    json!({
        "created": image.created_ms.to_string(),
        "updated": updated.to_string(),
        "lastUsedDate": null,
        "sha": image.sha,
        "repo": repo,
        "repoDigests": repo_digests,
        "uuid": image.uuid,
        "size": 50_000_000 + ids::fnv1a(&[&image.sha]) % 200_000_000,
        "vulnerabilities": vulnerabilities,
        "imageId": &image.sha[..12],
        "associatedContainersCount": 0,
        "associatedHostsCount": 0,
        "lastVmScanDate": null,
        "registryUuid": registry_uuid,
        "source": [if registry_uuid.is_some() { "REGISTRY" } else { "GENERAL" }],
        "isDockerHubOfficial": false,
        "scanType": null,
        "scanTypes": ["STATIC"],
        "scanErrorCode": null,
        "scanStatus": status_name(state),
    })
}

/// The image-details shape: the list item plus the fields of
/// csapi-image-details.official.response.json.
fn details(world: &World, image: &ImageRecord, now: Instant) -> Value {
    let mut v = list_item(world, image, now);
    let scanned = image.state(now) == ImageState::Scanned;
    let extra = json!({
        "author": null,
        "label": null,
        "operatingSystem": "Ubuntu Linux 22.04.4",
        "customerUuid": "7a00a660-36bb-f02b-8025-9fcf49faf0b7",
        "dockerVersion": null,
        "architecture": "amd64",
        "lastScanned": image.scanned_ms.filter(|_| scanned).map(|t| t.to_string()),
        "scanErrorMessage": null,
        "layers": [
            {"size": "77812538", "createdBy": "ADD file:1b6c8c9518be42fa2afe5e241ca31677fce58d27cdfa88baa91a65a259be3cdb in / ", "created": image.created_ms.to_string(), "comment": "", "id": null, "sha": null, "tags": null},
            {"size": "0", "createdBy": "CMD [\"/app/start\"]", "created": image.created_ms.to_string(), "comment": "", "id": null, "sha": null, "tags": null},
        ],
    });
    if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}

/// `GET /images?filter=…&sort=created:desc&pageNumber&pageSize`: known images, `{"data","count"}`.
/// Without a `sort`, oldest first (no order is documented; this is the one that punishes a
/// client that stops at the first page).
pub(crate) fn list_images(shared: &Shared, q: &Query) -> Reply {
    let (page, size) = http::page_params(q)?;
    let terms = match q.filter().map(|f| qql::parse(&f)).transpose() {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => return Err(bad_request(format!("Invalid filter: {e}"))),
    };
    let newest_first = match q.get("sort") {
        None | Some("created:asc") => false,
        Some("created:desc") => true,
        Some(other) => return Err(bad_request(format!("Unsupported sort: {other}"))),
    };
    let mut world = shared.world.lock();
    let now = Instant::now();
    world.settle(now);
    let mut matching: Vec<&ImageRecord> = world
        .images
        .iter()
        .filter(|i| i.state(now) != ImageState::Unknown)
        .filter(|i| {
            terms.iter().all(|(k, v)| match k.as_str() {
                "repo.repository" => i.repos.iter().any(|r| r.repository == *v),
                "repo.tag" => i.repos.iter().any(|r| r.tag.as_deref() == Some(v.as_str())),
                "repo.registry" => i.repos.iter().any(|r| r.registry.eq_ignore_ascii_case(v)),
                "sha" => ids::normalize_sha(v).is_some_and(|s| s == i.sha),
                "imageId" => i.sha.starts_with(&v.to_ascii_lowercase()),
                "uuid" => i.uuid == *v,
                "scanStatus" => status_name(i.state(now)).eq_ignore_ascii_case(v),
                _ => true,
            })
        })
        .collect();
    matching.sort_by(|a, b| {
        let order = a
            .created_ms
            .cmp(&b.created_ms)
            .then_with(|| a.sha.cmp(&b.sha));
        if newest_first { order.reverse() } else { order }
    });
    let data: Vec<Value> = http::page_of(&matching, page, size)
        .into_iter()
        .map(|i| list_item(&world, i, now))
        .collect();
    ok(&json!({"data": data, "count": matching.len()}))
}

/// The image `id` names in a known state, or the 400/404 to answer.
fn find<'a>(world: &'a World, id: &str, now: Instant) -> Result<&'a ImageRecord, ApiError> {
    if !ids::is_sha(id) {
        return Err(bad_request("Invalid Image SHA provided"));
    }
    let sha = id.to_ascii_lowercase();
    world
        .images
        .iter()
        .find(|i| i.sha == sha && i.state(now) != ImageState::Unknown)
        .ok_or_else(|| not_found(format!("Image not found with SHA: {sha}")))
}

/// `GET /images/{sha}`.
pub(crate) fn get_image(shared: &Shared, id: &str) -> Reply {
    let mut world = shared.world.lock();
    let now = Instant::now();
    world.settle(now);
    let image = find(&world, id, now)?;
    ok(&details(&world, image, now))
}

/// The scanned image `id` names, or the 400/404 to answer.
fn find_scanned<'a>(world: &'a World, id: &str, now: Instant) -> Result<&'a ImageRecord, ApiError> {
    let image = find(world, id, now)?;
    if image.state(now) != ImageState::Scanned {
        return Err(not_found(format!(
            "Vulnerabilities not yet available for image SHA: {}",
            image.sha
        )));
    }
    Ok(image)
}

/// `GET /images/{sha}/vuln`: `{"details":[…]}` or `{"data":[…],"count":N}`.
pub(crate) fn image_vulns(shared: &Shared, id: &str) -> Reply {
    let mut world = shared.world.lock();
    let now = Instant::now();
    world.settle(now);
    let image = find_scanned(&world, id, now)?;
    match shared.settings.vuln_shape {
        VulnShape::Details => ok(&json!({"details": image.vulns})),
        VulnShape::Data => ok(&json!({"data": image.vulns, "count": image.vulns.len()})),
    }
}

/// `GET /images/{sha}/vuln/count`.
pub(crate) fn image_vuln_count(shared: &Shared, id: &str) -> Reply {
    let mut world = shared.world.lock();
    let now = Instant::now();
    world.settle(now);
    let image = find_scanned(&world, id, now)?;
    ok(&ids::severity_counts(&image.vulns))
}

/// `GET /sensors?pageNumber&pageSize`: `{"data","count"}`.
pub(crate) fn list_sensors(shared: &Shared, q: &Query) -> Reply {
    let (page, size) = http::page_params(q)?;
    let world = shared.world.lock();
    ok(&json!({"data": http::page_of(&world.sensors, page, size), "count": world.sensors.len()}))
}

/// `GET /sensors/{sensorId}`.
pub(crate) fn get_sensor(shared: &Shared, id: &str) -> Reply {
    let world = shared.world.lock();
    match world.sensors.iter().find(|s| s["sensorUuid"] == id) {
        Some(s) => ok(s),
        None => Err(not_found(format!("Sensor not found: {id}"))),
    }
}

/// Adds a sensor, filling `sensorUuid`, `hostname`, `status`, `registrySensor`, `created` and
/// `lastCheckedIn` when missing; returns it (`None` if `sensor` is not an object).
pub(crate) fn add_sensor(shared: &Shared, sensor: Value) -> Option<Value> {
    let Value::Object(mut o) = sensor else {
        return None;
    };
    let now = http::now_ms().to_string();
    let uuid = ids::uuid_v4();
    let defaults = [
        ("sensorUuid", json!(uuid)),
        (
            "hostname",
            json!(format!(
                "ip-10-0-{}-{}",
                fastrand::u8(..),
                fastrand::u8(1..)
            )),
        ),
        ("status", json!("ACTIVE")),
        ("registrySensor", json!(true)),
        ("sensorVersion", json!("1.40.1-0")),
        ("created", json!(now)),
        ("lastCheckedIn", json!(now)),
    ];
    for (k, v) in defaults {
        o.entry(k).or_insert(v);
    }
    let sensor = Value::Object(o);
    shared.world.lock().sensors.push(sensor.clone());
    Some(sensor)
}
