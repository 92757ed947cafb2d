//! CDR findings → [`Observation`]s, tolerantly: any field may be missing or of another type
//! than expected; a finding that lacks what a policy needs is counted under a reason and skipped.
//!
//! One reader serves the Qualys client's [`CdrFinding`]s and findings files (`{"content": […]}`
//! as the API answers, or a bare array). Files are read element by element with borrowed strings,
//! so a million findings pass through in constant memory.

use crate::qualys::{CdrFinding, Severity, techniques};
use qflows_workflows::cdr::model::{Category, Observation, Workload};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Why a finding was skipped (a bounded set: safe as a metric label and a report key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SkipReason {
    /// Not a JSON object.
    NotAnObject,
    /// No `threatCategory` and no MITRE technique.
    NoCategory,
    /// A category qflows has no policy for (also listed by name in the report).
    UnknownCategory,
}

/// A skipped finding: why, and for an unknown category its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Why.
    pub reason: SkipReason,
    /// The `threatCategory` qflows has no policy for.
    pub category: Option<String>,
}

impl From<SkipReason> for Skipped {
    fn from(reason: SkipReason) -> Self {
        Skipped {
            reason,
            category: None,
        }
    }
}

impl PartialEq<SkipReason> for Skipped {
    fn eq(&self, other: &SkipReason) -> bool {
        self.reason == *other
    }
}

impl SkipReason {
    /// The reason as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotAnObject => "not-an-object",
            SkipReason::NoCategory => "no-category",
            SkipReason::UnknownCategory => "unknown-category",
        }
    }
}

/// The fields of a finding qflows reads, borrowed from the input where possible.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(borrow, default)]
    uuid: Lenient<'a>,
    #[serde(borrow, default)]
    threat_category: Lenient<'a>,
    #[serde(borrow, default)]
    severity: Lenient<'a>,
    #[serde(borrow, default)]
    timestamp: Lenient<'a>,
    #[serde(default)]
    mitre_rules_info: Mitre,
    #[serde(borrow, default)]
    process_path: Lenient<'a>,
    #[serde(borrow, default)]
    process_name: Lenient<'a>,
    #[serde(borrow, default)]
    destination_ip: Lenient<'a>,
    #[serde(borrow, default)]
    destination_port: Lenient<'a>,
    #[serde(borrow, default)]
    namespace: Lenient<'a>,
    #[serde(borrow, default)]
    pod_namespace: Lenient<'a>,
    #[serde(borrow, default)]
    pod_labels: Labels<'a>,
    #[serde(borrow, default)]
    image_name: Lenient<'a>,
}

/// A scalar read as text whatever its JSON type; objects, arrays and null read as absent.
#[derive(Debug, Default)]
struct Lenient<'a>(Option<Cow<'a, str>>);

impl<'a> Lenient<'a> {
    fn get(&self) -> Option<&str> {
        self.0.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `podLabels`: an object of scalar values; anything else reads as empty.
#[derive(Debug, Default)]
struct Labels<'a>(Vec<(Cow<'a, str>, Lenient<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Labels<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Labels<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of labels")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = a.next_key::<Cow<'de, str>>()? {
                    out.push((k, a.next_value::<Lenient<'de>>()?));
                }
                Ok(Labels(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Labels::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Labels::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Labels::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Labels::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Labels::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Labels::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Labels::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// `mitreRulesInfo`: technique IDs as object keys, an array of strings or `{technique}`
/// objects, or a comma-separated string.
#[derive(Debug, Default)]
struct Mitre(Vec<String>);

impl<'de> Deserialize<'de> for Mitre {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Streamed rather than through a `Value`: this runs once per finding.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Mitre;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("technique IDs")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Mitre, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = a.next_key::<Cow<'de, str>>()? {
                    a.next_value::<IgnoredAny>()?;
                    out.push(k.into_owned());
                }
                Ok(Mitre(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Mitre, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = a.next_element::<Value>()? {
                    out.extend(techniques(&Value::Array(vec![v])).unwrap_or_default());
                }
                Ok(Mitre(out))
            }
            fn visit_str<E>(self, v: &str) -> Result<Mitre, E> {
                Ok(Mitre(
                    techniques(&Value::String(v.to_string())).unwrap_or_default(),
                ))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Mitre, E> {
                Ok(Mitre::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Mitre, E> {
                Ok(Mitre::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Mitre, E> {
                Ok(Mitre::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Mitre, E> {
                Ok(Mitre::default())
            }
            fn visit_unit<E>(self) -> Result<Mitre, E> {
                Ok(Mitre::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The image repository of a reference: without tag or digest (`repo:tag`, `repo@sha256:…`).
fn repository(image: &str) -> Option<String> {
    let no_digest = image.split('@').next()?;
    let last_slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    let repo = match no_digest[last_slash..].find(':') {
        Some(colon) => &no_digest[..last_slash + colon],
        None => no_digest,
    };
    let ok = !repo.is_empty()
        && repo.len() <= 255
        && repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':'));
    ok.then(|| repo.to_ascii_lowercase())
}

/// Labels that identify a workload stably across its pods (never `pod-template-hash`).
const STABLE_LABELS: [&str; 5] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app",
    "k8s-app",
    "component",
];

/// Namespace keys Kubernetes and Cilium put into pod labels.
const NAMESPACE_LABELS: [&str; 2] = [
    "io.kubernetes.pod.namespace",
    "k8s:io.kubernetes.pod.namespace",
];

thread_local! {
    /// Category names repeat across findings: remember the last few mappings.
    static CATEGORIES: std::cell::RefCell<std::collections::HashMap<String, Option<Category>>> =
        std::cell::RefCell::default();
}

fn category_of(name: &str) -> Option<Category> {
    CATEGORIES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(c) = cache.get(name) {
            return *c;
        }
        let c = Category::from_threat_category(name);
        if cache.len() < 1024 {
            cache.insert(name.to_string(), c);
        }
        c
    })
}

impl Fields<'_> {
    fn observe(&self) -> Result<Observation, Skipped> {
        let mut techniques = self.mitre_rules_info.0.clone();
        techniques.sort();
        techniques.dedup();
        let category = match self.threat_category.get() {
            Some(c) => category_of(c)
                .or_else(|| techniques.iter().find_map(|t| Category::from_technique(t))),
            None => techniques.iter().find_map(|t| Category::from_technique(t)),
        };
        let Some(category) = category else {
            return Err(match self.threat_category.get() {
                Some(c) => Skipped {
                    reason: SkipReason::UnknownCategory,
                    category: Some(c.chars().take(128).collect()),
                },
                None => SkipReason::NoCategory.into(),
            });
        };
        let mut labels = BTreeMap::new();
        let mut label_ns = None;
        for (k, v) in &self.pod_labels.0 {
            let Some(v) = v.get() else { continue };
            if NAMESPACE_LABELS.contains(&k.as_ref()) {
                label_ns = Some(v.to_string());
            } else if STABLE_LABELS.contains(&k.as_ref()) {
                labels.insert(k.to_string(), v.to_string());
            }
        }
        let namespace = self
            .namespace
            .get()
            .or(self.pod_namespace.get())
            .map(String::from)
            .or(label_ns);
        let process = self
            .process_path
            .get()
            .filter(|p| p.starts_with('/'))
            .or(self.process_name.get())
            .filter(|p| p.len() <= 255 && !p.contains(','))
            .map(String::from);
        let address = self
            .destination_ip
            .get()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .map(|ip| ip.to_string());
        Ok(Observation {
            id: self
                .uuid
                .get()
                .filter(|s| s.len() <= 64 && !s.contains(','))
                .map(String::from),
            category: Some(category),
            techniques,
            workload: Workload {
                namespace,
                labels,
                image_repository: self.image_name.get().and_then(repository),
            },
            process,
            address,
            port: self
                .destination_port
                .get()
                .and_then(|p| p.parse().ok())
                .filter(|p| *p > 0),
            timestamp: self.timestamp.get().map(String::from),
            severity: self
                .severity
                .get()
                .and_then(Severity::from_text)
                .map_or(0, Severity::rank),
        })
    }
}

/// Reads one finding from the Qualys client's typed form.
pub fn observe(finding: &CdrFinding) -> Result<Observation, Skipped> {
    let mut m = finding.extra.clone();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("uuid", finding.uuid.clone().map(Value::String));
    put(
        "threatCategory",
        finding.threat_category.clone().map(Value::String),
    );
    put("timestamp", finding.timestamp.clone().map(Value::String));
    put(
        "severity",
        finding
            .severity
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok()),
    );
    if !finding.mitre_techniques.is_empty() {
        put(
            "mitreRulesInfo",
            Some(Value::Array(
                finding
                    .mitre_techniques
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            )),
        );
    }
    observe_value(&Value::Object(m))
}

/// Reads one finding given as JSON.
pub fn observe_value(v: &Value) -> Result<Observation, Skipped> {
    if !v.is_object() {
        return Err(SkipReason::NotAnObject.into());
    }
    Fields::deserialize(v)
        .map_err(|_| Skipped::from(SkipReason::NotAnObject))?
        .observe()
}

/// Calls `each` for every finding of a findings document: `{"content": [...]}` (the API's
/// answer), `{"findings": [...]}` or a bare array. Errors only when the document itself is not
/// JSON of one of those shapes; a bad element is passed on as `Err(SkipReason)`.
pub fn read_document(
    json: &[u8],
    mut each: impl FnMut(Result<Observation, Skipped>),
) -> Result<u64, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let n = de.deserialize_any(DocVisitor { each: &mut each })?;
    de.end()?;
    Ok(n)
}

struct DocVisitor<'f, F> {
    each: &'f mut F,
}

impl<'de, F: FnMut(Result<Observation, Skipped>)> Visitor<'de> for DocVisitor<'_, F> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an array of findings or an object with "content": [findings]"#)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while let Some(r) = a.next_element_seed(ElementSeed)? {
            n += 1;
            (self.each)(r);
        }
        Ok(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<u64, A::Error> {
        let mut n = None;
        while let Some(k) = a.next_key::<Cow<'de, str>>()? {
            if matches!(k.as_ref(), "content" | "findings") && n.is_none() {
                n = Some(a.next_value_seed(SeqSeed {
                    each: &mut *self.each,
                })?);
            } else {
                a.next_value::<IgnoredAny>()?;
            }
        }
        n.ok_or_else(|| de::Error::custom(r#"no "content" array of findings"#))
    }
}

struct SeqSeed<'f, F> {
    each: &'f mut F,
}

impl<'de, F: FnMut(Result<Observation, Skipped>)> DeserializeSeed<'de> for SeqSeed<'_, F> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        struct SeqOnly<'f, F>(DocVisitor<'f, F>);
        impl<'de, F: FnMut(Result<Observation, Skipped>)> Visitor<'de> for SeqOnly<'_, F> {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of findings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<u64, A::Error> {
                self.0.visit_seq(a)
            }
        }
        d.deserialize_seq(SeqOnly(DocVisitor { each: self.each }))
    }
}

/// One element: an object is read leniently; anything else is skipped, not an error.
struct ElementSeed;

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Result<Observation, Skipped>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Result<Observation, Skipped>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a finding")
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                let fields = Fields::deserialize(de::value::MapAccessDeserializer::new(a))?;
                Ok(fields.observe())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Err(SkipReason::NotAnObject.into()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Err(SkipReason::NotAnObject.into()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Err(SkipReason::NotAnObject.into()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Err(SkipReason::NotAnObject.into()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Err(SkipReason::NotAnObject.into()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Err(SkipReason::NotAnObject.into()))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Err(SkipReason::NotAnObject.into()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_documented_shapes_and_tolerates_the_rest() {
        let doc = json!({"totalElements": 6, "content": [
            {"uuid": "a", "threatCategory": "Cloud_Credentials_Accessed_By_Network_Utility",
             "severity": 4, "processName": "curl", "processPath": "/usr/bin/curl",
             "destinationIp": "169.254.169.254", "destinationPort": 80,
             "podLabels": {"app": "payments-api", "pod-template-hash": "7d9f8b6c5",
                           "io.kubernetes.pod.namespace": "shop"},
             "imageName": "111122223333.dkr.ecr.us-east-1.amazonaws.com/payments-api:1.4.2",
             "mitreRulesInfo": {"T1552.005": {}}, "somethingNew": [1, 2]},
            {"uuid": 7, "threatCategory": null, "severity": "HIGH",
             "mitreRulesInfo": [{"technique": "T1046"}], "destinationPort": "not a port",
             "podLabels": "broken"},
            {"uuid": "c", "threatCategory": "SSH_Password_Brute_Force"},
            {"uuid": "d"},
            "not an object",
            {"threatCategory": {"nested": true}, "mitreRulesInfo": "T1611, T1548"}
        ]});
        let bytes = serde_json::to_vec(&doc).unwrap();
        let mut out = Vec::new();
        let n = read_document(&bytes, |r| out.push(r)).unwrap();
        assert_eq!(n, 6);
        let a = out[0].as_ref().unwrap();
        assert_eq!(a.category, Some(Category::Imds));
        assert_eq!(a.workload.namespace.as_deref(), Some("shop"));
        assert_eq!(
            a.workload.labels,
            BTreeMap::from([("app".to_string(), "payments-api".to_string())])
        );
        assert_eq!(
            a.workload.image_repository.as_deref(),
            Some("111122223333.dkr.ecr.us-east-1.amazonaws.com/payments-api")
        );
        assert_eq!(a.process.as_deref(), Some("/usr/bin/curl"));
        assert_eq!(
            (a.address.as_deref(), a.port, a.severity),
            (Some("169.254.169.254"), Some(80), 4)
        );
        let b = out[1].as_ref().unwrap();
        assert_eq!(
            (b.category, b.id.as_deref(), b.port, b.severity),
            (Some(Category::Scanning), Some("7"), None, 3)
        );
        let c = out[2].as_ref().unwrap_err();
        assert_eq!(
            (c.reason, c.category.as_deref()),
            (
                SkipReason::UnknownCategory,
                Some("SSH_Password_Brute_Force")
            )
        );
        assert_eq!(out[3].as_ref().unwrap_err(), &SkipReason::NoCategory);
        assert_eq!(out[4].as_ref().unwrap_err(), &SkipReason::NotAnObject);
        // Category from the first known technique when threatCategory is unusable.
        assert_eq!(out[5].as_ref().unwrap().category, Some(Category::Privesc));
    }

    #[test]
    fn documents_that_are_not_findings_are_errors() {
        assert!(read_document(b"{\"items\": []}", |_| {}).is_err());
        assert!(read_document(b"not json", |_| {}).is_err());
        assert!(read_document(b"[1, 2", |_| {}).is_err());
        assert_eq!(read_document(b"[]", |_| {}).unwrap(), 0);
    }

    #[test]
    fn the_client_form_reads_like_the_file_form() {
        let raw = json!({"uuid": "a", "threatCategory": "Crypto_Mining", "severity": 2,
            "destinationIp": "45.9.148.3", "destinationPort": 3333, "namespace": "batch",
            "mitreRulesInfo": ["T1496"]});
        let typed: CdrFinding = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(observe(&typed), observe_value(&raw));
        assert_eq!(
            observe_value(&raw).unwrap().workload.namespace.as_deref(),
            Some("batch")
        );
    }

    #[test]
    fn repositories() {
        assert_eq!(repository("nginx:1.27").as_deref(), Some("nginx"));
        assert_eq!(
            repository("localhost:5000/a/b:1@sha256:ab").as_deref(),
            Some("localhost:5000/a/b")
        );
        assert_eq!(repository("bad image!").as_deref(), None);
    }
}
