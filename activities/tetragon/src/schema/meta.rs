//! `metadata` as Kubernetes `ObjectMeta`: the name Tetragon checks with `NameIsDNSSubdomain`,
//! label and annotation syntax, and no unknown fields.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::violation::Violation;

static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").expect("regex")
});
static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("regex"));
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("regex"));
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").expect("regex"));

/// Total size limit of all annotation keys and values (`TotalAnnotationSizeLimitB`).
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// ObjectMeta fields (JSON names); anything else is an unknown field.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Why `s` is not a DNS-1123 subdomain, if it is not.
pub(super) fn dns1123_subdomain_error(s: &str) -> Option<String> {
    if s.len() > 253 {
        Some("must be no more than 253 characters".into())
    } else if !DNS1123_SUBDOMAIN.is_match(s) {
        Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character"
                .into(),
        )
    } else {
        None
    }
}

/// Why `s` is not a DNS-1123 label (a namespace name), if it is not.
pub(super) fn dns1123_label_error(s: &str) -> Option<String> {
    (s.len() > 63 || !DNS1123_LABEL.is_match(s)).then(|| {
        "a lowercase RFC 1123 label must consist of at most 63 lower case alphanumeric \
         characters or '-', and must start and end with an alphanumeric character"
            .into()
    })
}

/// Why `key` is not a valid label/annotation key (`IsQualifiedName`), if it is not.
pub(super) fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => {
            return Some(
                "a qualified name must consist of an optional DNS subdomain prefix and '/' and a name"
                    .into(),
            );
        }
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(e) = dns1123_subdomain_error(prefix) {
            return Some(format!("prefix part {e}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !QUALIFIED_NAME.is_match(name) {
        return Some(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and \
             end with an alphanumeric character"
                .into(),
        );
    }
    None
}

/// Why `v` is not a valid label value, if it is not.
pub(super) fn label_value_error(v: &str) -> Option<String> {
    if v.len() > 63 {
        Some("must be no more than 63 characters".into())
    } else if !LABEL_VALUE.is_match(v) {
        Some(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
             or '.', and must start and end with an alphanumeric character"
                .into(),
        )
    } else {
        None
    }
}

/// Checks `metadata` (absence is reported by the CRD's `required`).
pub(super) fn validate(metadata: Option<&Value>, out: &mut Vec<Violation>) {
    let Some(meta) = metadata.and_then(Value::as_object) else {
        return;
    };
    for key in meta.keys() {
        if !OBJECT_META_FIELDS.contains(&key.as_str()) {
            out.push(Violation::new(
                format!("metadata.{key}"),
                "unknown field (not an ObjectMeta field)",
            ));
        }
    }
    check_name(meta.get("name"), out);
    check_namespace(meta.get("namespace"), out);
    check_labels(meta.get("labels"), out);
    check_annotations(meta.get("annotations"), out);
    if let Some(f) = meta.get("finalizers")
        && !f.is_null()
        && !f.as_array().is_some_and(|a| a.iter().all(Value::is_string))
    {
        out.push(Violation::new(
            "metadata.finalizers",
            "Invalid value: must be a list of strings",
        ));
    }
}

/// `metadata.name`: required, a DNS-1123 subdomain (`NameIsDNSSubdomain`).
fn check_name(name: Option<&Value>, out: &mut Vec<Violation>) {
    match name {
        Some(Value::String(name)) => {
            if name.is_empty() {
                out.push(Violation::new(
                    "metadata.name",
                    "Required value: name is required",
                ));
            } else if let Some(e) = dns1123_subdomain_error(name) {
                out.push(Violation::new(
                    "metadata.name",
                    format!("Invalid value: \"{name}\": {e}"),
                ));
            }
        }
        Some(Value::Null) | None => out.push(Violation::new(
            "metadata.name",
            "Required value: name is required",
        )),
        Some(_) => out.push(Violation::new(
            "metadata.name",
            "Invalid value: must be a string",
        )),
    }
}

/// `metadata.namespace`: optional, a DNS-1123 label when given.
fn check_namespace(namespace: Option<&Value>, out: &mut Vec<Violation>) {
    match namespace {
        Some(Value::String(ns)) if !ns.is_empty() => {
            if ns.len() > 63 || !DNS1123_LABEL.is_match(ns) {
                out.push(Violation::new(
                    "metadata.namespace",
                    format!(
                        "Invalid value: \"{ns}\": a lowercase RFC 1123 label must consist of lower case \
                         alphanumeric characters or '-', start and end with an alphanumeric character, \
                         and be no more than 63 characters"
                    ),
                ));
            }
        }
        Some(Value::String(_)) | Some(Value::Null) | None => {}
        Some(_) => out.push(Violation::new(
            "metadata.namespace",
            "Invalid value: must be a string",
        )),
    }
}

/// `metadata.labels`: qualified-name keys and label values.
fn check_labels(labels: Option<&Value>, out: &mut Vec<Violation>) {
    let Some(labels) = string_map(labels, "metadata.labels", out) else {
        return;
    };
    for (k, v) in labels {
        if let Some(e) = qualified_name_error(k) {
            out.push(Violation::new(
                format!("metadata.labels[{k}]"),
                format!("Invalid value: \"{k}\": {e}"),
            ));
        }
        if let Some(e) = label_value_error(v) {
            out.push(Violation::new(
                format!("metadata.labels[{k}]"),
                format!("Invalid value: \"{v}\": {e}"),
            ));
        }
    }
}

/// `metadata.annotations`: qualified-name keys (case-insensitive), 256 KiB in total.
fn check_annotations(annotations: Option<&Value>, out: &mut Vec<Violation>) {
    let Some(annotations) = string_map(annotations, "metadata.annotations", out) else {
        return;
    };
    let mut total = 0usize;
    for (k, v) in &annotations {
        total += k.len() + v.len();
        if let Some(e) = qualified_name_error(&k.to_ascii_lowercase()) {
            out.push(Violation::new(
                format!("metadata.annotations[{k}]"),
                format!("Invalid value: \"{k}\": {e}"),
            ));
        }
    }
    if total > ANNOTATIONS_MAX_BYTES {
        out.push(Violation::new(
            "metadata.annotations",
            format!("Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes (got {total})"),
        ));
    }
}

/// A `map[string]string`, or a violation when it is something else.
fn string_map<'a>(
    v: Option<&'a Value>,
    path: &str,
    out: &mut Vec<Violation>,
) -> Option<Vec<(&'a String, &'a str)>> {
    let v = v?;
    if v.is_null() {
        return None;
    }
    let Some(m) = v.as_object() else {
        out.push(Violation::new(
            path,
            "Invalid value: must be a map of strings",
        ));
        return None;
    };
    let mut pairs = Vec::with_capacity(m.len());
    for (k, val) in m {
        match val.as_str() {
            Some(s) => pairs.push((k, s)),
            None => out.push(Violation::new(
                format!("{path}[{k}]"),
                "Invalid value: must be a string",
            )),
        }
    }
    Some(pairs)
}
