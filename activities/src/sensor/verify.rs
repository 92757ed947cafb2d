//! Did this run's sensors register? Qualys lists every sensor of the subscription; only the
//! ones this run brought up count:
//!
//! - registry sensors (`registrySensor: true`) that are active;
//! - on this cluster's nodes: the hostname is a node of a Ready sensor pod (Kubernetes; the
//!   first DNS label is compared too, as Qualys may list `ip-10-0-1-17` for node
//!   `ip-10-0-1-17.ec2.internal`). ECS lists no host names without EC2 access, so there the
//!   count alone decides;
//! - on this image's version (`sensorVersion` equal to the image tag, when the tag is a version:
//!   `qcs-sensor:1.40.1-0` → `1.40.1-0`);
//! - new since the plan: not among the sensors Qualys listed before, or registered or checked
//!   in after the plan was made (a pod re-created on its node keeps its identity on the host
//!   path, so an upgraded sensor is the same sensor, checking in anew).
//!
//! At least as many such sensors as ready pods (running tasks), and at least one. When the apply
//! changed nothing, the sensors already registered on this version count (nothing new runs).

use crate::qualys::Sensor;
use qflows_workflows::sensor::model::{SensorRun, VerifyObservation};
use serde_json::Value;
use std::collections::BTreeSet;

/// Now, ms since the epoch (worker clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn is_registry(s: &Sensor) -> bool {
    s.extra.get("registrySensor").and_then(Value::as_bool) == Some(true)
        && s.status
            .as_deref()
            .is_none_or(|st| st.eq_ignore_ascii_case("active"))
}

/// The UUIDs of the active registry sensors.
pub fn registry_sensor_ids(sensors: &[Sensor]) -> Vec<String> {
    let mut ids: Vec<String> = sensors
        .iter()
        .filter(|s| is_registry(s))
        .filter_map(|s| s.sensor_uuid.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The version an image tag names (`…/qcs-sensor:1.40.1-0` → `1.40.1-0`), if it names one.
pub fn image_version(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next()?;
    let tag = last.split_once('@').map(|(n, _)| n).unwrap_or(last);
    let (_, tag) = tag.split_once(':')?;
    tag.starts_with(|c: char| c.is_ascii_digit()).then_some(tag)
}

/// A timestamp in ms: a number, a string of digits, or RFC 3339 is not read (`None`).
fn millis(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn short(host: &str) -> String {
    host.split('.').next().unwrap_or(host).to_ascii_lowercase()
}

/// Counts the sensors of this run (see the module doc).
pub fn count(
    run: &SensorRun,
    sensors: &[Sensor],
    nodes: Option<&[String]>,
    ready: u64,
) -> VerifyObservation {
    let version = image_version(run.input.image());
    let baseline: BTreeSet<&str> = run
        .plan
        .baseline_sensors
        .iter()
        .map(String::as_str)
        .collect();
    let since = run.plan.prepared_at_ms;
    let wanted: Option<BTreeSet<String>> = nodes.map(|n| {
        n.iter()
            .flat_map(|h| [h.to_ascii_lowercase(), short(h)])
            .collect()
    });
    let (mut other_hosts, mut other_version, mut old) = (0, 0, 0);
    let mut matched: BTreeSet<String> = BTreeSet::new();
    for s in sensors.iter().filter(|s| is_registry(s)) {
        let host = s.hostname.clone().unwrap_or_default();
        if let Some(wanted) = &wanted
            && !wanted.contains(&host.to_ascii_lowercase())
            && !wanted.contains(&short(&host))
        {
            other_hosts += 1;
            continue;
        }
        if let Some(v) = version
            && s.extra.get("sensorVersion").and_then(Value::as_str) != Some(v)
        {
            other_version += 1;
            continue;
        }
        let new = run.unchanged
            || s.sensor_uuid
                .as_deref()
                .is_none_or(|id| !baseline.contains(id))
            || millis(s.extra.get("created")).is_some_and(|t| t >= since)
            || millis(s.extra.get("lastCheckedIn")).is_some_and(|t| t >= since);
        if !new {
            old += 1;
            continue;
        }
        matched.insert(if host.is_empty() {
            s.sensor_uuid.clone().unwrap_or_default()
        } else {
            short(&host)
        });
    }
    let needed = ready.max(1);
    let nodes_text = match nodes {
        Some([]) => "no Ready sensor pod yet".to_string(),
        Some(n) => format!("nodes {}", n.join(", ")),
        None => format!("{ready} running tasks"),
    };
    VerifyObservation {
        unobservable: None,
        matched: matched.len() as u64,
        needed,
        detail: format!(
            "{nodes_text}; wanted version {}; Qualys lists {other_hosts} registry sensor(s) on \
             other hosts, {other_version} on another version, {old} not seen since the roll-out",
            version.unwrap_or("any")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sensor(v: Value) -> Sensor {
        serde_json::from_value(v).unwrap()
    }

    fn run() -> SensorRun {
        serde_json::from_value(json!({
            "input": {"target": "eks", "cluster": "c", "activationIdRef": "s:a",
                      "customerIdRef": "s:c", "image": "docker.io/qualys/qcs-sensor:1.41.0-2"},
            "plan": {"baselineSensors": ["old-1"], "preparedAtMs": 1000}
        }))
        .unwrap()
    }

    #[test]
    fn only_this_clusters_new_sensors_on_this_version_count() {
        let nodes = [
            "node-1".to_string(),
            "ip-10-0-1-17.ec2.internal".to_string(),
        ];
        let sensors = [
            // Another cluster's sensor, active, right version: not ours.
            sensor(
                json!({"sensorUuid": "x", "hostname": "other-node", "registrySensor": true,
                "status": "ACTIVE", "sensorVersion": "1.41.0-2", "created": "2000"}),
            ),
            // Ours but still the old version.
            sensor(
                json!({"sensorUuid": "old-1", "hostname": "node-1", "registrySensor": true,
                "status": "ACTIVE", "sensorVersion": "1.40.1-0", "lastCheckedIn": "900"}),
            ),
        ];
        let seen = count(&run(), &sensors, Some(&nodes), 2);
        assert_eq!((seen.matched, seen.needed), (0, 2), "{}", seen.detail);
        assert!(seen.detail.contains("1 registry sensor(s) on other hosts"));
        let mut sensors = sensors.to_vec();
        // The upgraded sensor checks in (same identity), and a new node registers.
        sensors[1]
            .extra
            .insert("sensorVersion".into(), json!("1.41.0-2"));
        sensors[1]
            .extra
            .insert("lastCheckedIn".into(), json!("1500"));
        sensors.push(sensor(
            json!({"sensorUuid": "n", "hostname": "ip-10-0-1-17",
            "registrySensor": true, "status": "ACTIVE", "sensorVersion": "1.41.0-2"}),
        ));
        let seen = count(&run(), &sensors, Some(&nodes), 2);
        assert_eq!((seen.matched, seen.needed), (2, 2), "{}", seen.detail);
    }

    #[test]
    fn versions_come_from_version_tags_only() {
        assert_eq!(
            image_version("docker.io/qualys/qcs-sensor:1.40.1-0"),
            Some("1.40.1-0")
        );
        assert_eq!(image_version("registry:5000/qcs-sensor:latest"), None);
        assert_eq!(image_version("registry:5000/qcs-sensor"), None);
        assert_eq!(image_version("r/qcs-sensor@sha256:ab"), None);
    }
}
