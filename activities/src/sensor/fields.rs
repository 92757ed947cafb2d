//! Server-side apply's managed fields (`fieldsV1`): what qflows owns of an object, so a
//! roll-back restores qflows' fields and nothing else.
//!
//! A field set is a tree: `f:<name>` for a map key, `k:<json>` for a list item named by its
//! merge keys (`k:{"name":"sensor"}`), `v:<json>` for an item of a set list, `.` for the
//! node itself. A key whose subtree is empty (or only `.`) is owned whole.

use serde_json::{Map, Value};
use std::collections::BTreeSet;

fn is_leaf(sub: &Value) -> bool {
    match sub.as_object() {
        None => true,
        Some(m) => m.keys().all(|k| k == "."),
    }
}

/// The part of `object` at the paths of `fields`; `None` where nothing of it exists.
pub fn project(object: &Value, fields: &Value) -> Option<Value> {
    let fields = fields.as_object()?;
    match object {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, sub) in fields {
                let Some(name) = key.strip_prefix("f:") else {
                    continue;
                };
                let Some(value) = map.get(name) else {
                    continue;
                };
                if is_leaf(sub) {
                    out.insert(name.to_string(), value.clone());
                } else if let Some(p) = project(value, sub) {
                    out.insert(name.to_string(), p);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (key, sub) in fields {
                if let Some(k) = key.strip_prefix("k:") {
                    let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else {
                        continue;
                    };
                    let Some(item) = items
                        .iter()
                        .find(|i| keys.iter().all(|(kk, kv)| i.get(kk) == Some(kv)))
                    else {
                        continue;
                    };
                    let mut projected = if is_leaf(sub) {
                        item.clone()
                    } else {
                        project(item, sub).unwrap_or_else(|| Value::Object(Map::new()))
                    };
                    if let Some(p) = projected.as_object_mut() {
                        for (kk, kv) in &keys {
                            p.insert(kk.clone(), kv.clone());
                        }
                    }
                    out.push(projected);
                } else if let Some(v) = key.strip_prefix("v:")
                    && let Ok(value) = serde_json::from_str::<Value>(v)
                    && items.contains(&value)
                {
                    out.push(value);
                }
            }
            Some(Value::Array(out))
        }
        other => Some(other.clone()),
    }
}

/// `a` ∪ `b`.
pub fn union(a: &Value, b: &Value) -> Value {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let mut out = a.clone();
            for (k, v) in b {
                let merged = match out.get(k) {
                    Some(existing) => union(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(_), None) => a.clone(),
        _ => b.clone(),
    }
}

/// Every owned path, as `f:spec.f:template.…` strings.
pub fn leaves(fields: &Value) -> BTreeSet<String> {
    fn walk(prefix: &str, fields: &Value, out: &mut BTreeSet<String>) {
        let Some(map) = fields.as_object() else {
            return;
        };
        for (key, sub) in map {
            if key == "." {
                continue;
            }
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if is_leaf(sub) {
                out.insert(path);
            } else {
                walk(&path, sub, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", fields, &mut out);
    out
}

/// The `fieldsV1` of `manager`'s `Apply` entry in an object's `metadata.managedFields` (an
/// empty set when it has none). `status` is left out: controllers own it.
pub fn managed_by(object: &Value, manager: &str) -> Value {
    let mut out = Value::Object(Map::new());
    for (name, entry) in managed_fields(object) {
        if name == manager && entry["operation"] == "Apply" {
            out = union(&out, &entry["fieldsV1"]);
        }
    }
    without_status(out)
}

/// The entries of an object's `metadata.managedFields` that name their manager, with that name.
fn managed_fields(object: &Value) -> impl Iterator<Item = (&str, &Value)> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| Some((entry["manager"].as_str()?, entry)))
}

/// A `fieldsV1` set without `f:status` (controllers own the status).
fn without_status(mut fields: Value) -> Value {
    if let Some(m) = fields.as_object_mut() {
        m.remove("f:status");
    }
    fields
}

/// Managers other than `manager` that own any of `paths` in `object` now, by name.
pub fn owners_of(object: &Value, manager: &str, paths: &BTreeSet<String>) -> Vec<String> {
    let mut owners = BTreeSet::new();
    for (name, entry) in managed_fields(object) {
        if name == manager {
            continue;
        }
        if leaves(&entry["fieldsV1"]).iter().any(|l| {
            paths
                .iter()
                .any(|p| l == p || l.starts_with(&format!("{p}.")))
        }) {
            owners.insert(name.to_string());
        }
    }
    owners.into_iter().collect()
}

/// Whether any manager but `manager` owns something of `object` besides its status.
pub fn touched_by_others(object: &Value, manager: &str) -> Vec<String> {
    let mut others = BTreeSet::new();
    for (name, entry) in managed_fields(object) {
        let fields = without_status(entry["fieldsV1"].clone());
        if name != manager && !leaves(&fields).is_empty() {
            others.insert(name.to_string());
        }
    }
    others.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds() -> Value {
        json!({"metadata": {"name": "s", "labels": {"a": "1", "b": "2"}},
            "spec": {"minReadySeconds": 5, "template": {"spec": {"containers": [
                {"name": "sensor", "image": "v1", "env": [{"name": "X", "value": "x"},
                                                         {"name": "SECRET", "value": "s3cr3t"}]},
                {"name": "other", "image": "o"}]}}}})
    }

    #[test]
    fn a_projection_keeps_only_the_owned_fields_and_the_list_keys() {
        let fields = json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}},
            "f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"sensor\"}": {".": {}, "f:image": {},
                    "f:env": {"k:{\"name\":\"X\"}": {".": {}, "f:value": {}}}}}}}}});
        let p = project(&ds(), &fields).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"labels": {"a": "1"}},
                "spec": {"template": {"spec": {"containers": [
                    {"name": "sensor", "image": "v1", "env": [{"name": "X", "value": "x"}]}]}}}})
        );
        // Another manager's env value never enters the projection.
        assert!(!p.to_string().contains("s3cr3t"));
    }

    #[test]
    fn leaves_and_unions_and_owners() {
        let a = json!({"f:spec": {"f:minReadySeconds": {}}});
        let b = json!({"f:spec": {"f:template": {"f:spec": {".": {}}}}});
        let u = union(&a, &b);
        assert_eq!(
            leaves(&u),
            ["f:spec.f:minReadySeconds", "f:spec.f:template.f:spec"]
                .into_iter()
                .map(String::from)
                .collect()
        );
        let object = json!({"metadata": {"managedFields": [
            {"manager": "qflows", "operation": "Apply", "fieldsV1": a},
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": b},
            {"manager": "kube-controller-manager", "operation": "Update",
             "fieldsV1": {"f:status": {"f:numberReady": {}}}}]}});
        assert_eq!(managed_by(&object, "qflows"), a);
        let wanted: BTreeSet<String> = ["f:spec.f:template".to_string()].into();
        assert_eq!(owners_of(&object, "qflows", &wanted), ["kubectl-edit"]);
        assert_eq!(touched_by_others(&object, "qflows"), ["kubectl-edit"]);
    }
}
