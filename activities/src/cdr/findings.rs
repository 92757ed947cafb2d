//! CDR findings → [`Observation`]s, tolerantly: any field may be missing or of another type
//! than expected; a finding that lacks what a policy needs is counted under a reason and skipped.
//!
//! One reader serves the Qualys client's [`CdrFinding`]s and findings files (`{"content": […]}`
//! as the API answers, or a bare array). Files are read element by element with borrowed strings,
//! so a million findings pass through in constant memory.

use crate::qualys::{CdrFinding, Severity, techniques};
use qflows_workflows::cdr::evidence::{Category, Observation, Workload};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
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
pub(crate) struct Fields<'a> {
    #[serde(borrow, default)]
    uuid: Lenient<'a>,
    #[serde(borrow, default)]
    threat_category: Lenient<'a>,
    #[serde(borrow, default)]
    severity: Lenient<'a>,
    #[serde(borrow, default)]
    timestamp: Lenient<'a>,
    #[serde(borrow, default)]
    mitre_rules_info: Mitre<'a>,
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

/// A scalar read as text whatever its JSON type; objects, arrays, booleans and null read as
/// absent. Numbers stay numbers until their text is asked for (most never are).
#[derive(Debug, Default)]
enum Lenient<'a> {
    #[default]
    Absent,
    Text(Cow<'a, str>),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl Lenient<'_> {
    /// The value as text, trimmed; `None` when absent or empty.
    fn get(&self) -> Option<Cow<'_, str>> {
        match self {
            Lenient::Absent => None,
            Lenient::Text(s) => Some(s.trim()).filter(|s| !s.is_empty()).map(Cow::Borrowed),
            Lenient::Unsigned(n) => Some(Cow::Owned(n.to_string())),
            Lenient::Signed(n) => Some(Cow::Owned(n.to_string())),
            Lenient::Float(n) => Some(Cow::Owned(n.to_string())),
        }
    }

    /// `get().parse::<u16>()`, without the text for integers.
    fn get_u16(&self) -> Option<u16> {
        match self {
            Lenient::Unsigned(n) => u16::try_from(*n).ok(),
            Lenient::Signed(_) => None,
            _ => self.get()?.parse().ok(),
        }
    }

    /// `get().and_then(Severity::from_text)`, without the text for integers.
    fn get_severity(&self) -> Option<Severity> {
        match self {
            Lenient::Unsigned(n) => Severity::from_number(*n),
            _ => Severity::from_text(&self.get()?),
        }
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
                Ok(Lenient::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient::Text(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Lenient::Unsigned(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Lenient::Signed(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Lenient::Float(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient::Absent)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient::Absent)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient::Absent)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient::Absent)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient::Absent)
            }
        }
        d.deserialize_any(V)
    }
}

/// An object key, borrowed from the input unless it has escapes (serde's own `Cow<str>` always
/// copies).
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
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
                while let Some(Key(k)) = a.next_key::<Key<'de>>()? {
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
struct Mitre<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Mitre<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Streamed rather than through a `Value`: this runs once per finding.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Mitre<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("technique IDs")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Mitre<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(Key(k)) = a.next_key::<Key<'de>>()? {
                    a.next_value::<IgnoredAny>()?;
                    out.push(k);
                }
                Ok(Mitre(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Mitre<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = a.next_element::<Value>()? {
                    out.extend(
                        techniques(&Value::Array(vec![v]))
                            .unwrap_or_default()
                            .into_iter()
                            .map(Cow::Owned),
                    );
                }
                Ok(Mitre(out))
            }
            fn visit_str<E>(self, v: &str) -> Result<Mitre<'de>, E> {
                Ok(Mitre(
                    techniques(&Value::String(v.to_string()))
                        .unwrap_or_default()
                        .into_iter()
                        .map(Cow::Owned)
                        .collect(),
                ))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Mitre<'de>, E> {
                Ok(Mitre::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Mitre<'de>, E> {
                Ok(Mitre::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Mitre<'de>, E> {
                Ok(Mitre::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Mitre<'de>, E> {
                Ok(Mitre::default())
            }
            fn visit_unit<E>(self) -> Result<Mitre<'de>, E> {
                Ok(Mitre::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// The image repository of a reference: without tag or digest (`repo:tag`, `repo@sha256:…`),
/// lower-cased (borrowed when it already is).
fn repository(image: &str) -> Option<Cow<'_, str>> {
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
    if !ok {
        None
    } else if repo.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(repo.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(repo))
    }
}

/// Labels that identify a workload stably across its pods (never `pod-template-hash`), in the
/// order a `BTreeMap` keeps them.
pub(crate) const STABLE_LABELS: [&str; 5] = [
    "app",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/name",
    "component",
    "k8s-app",
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

/// A usable finding as the [`Grouper`] records it, borrowed from its parsed fields (the one
/// reading of a finding: [`Observation`]s are made from it).
#[derive(Debug)]
pub(crate) struct Seen<'s> {
    pub(crate) id: Option<Cow<'s, str>>,
    pub(crate) category: Category,
    /// Sorted, without duplicates.
    pub(crate) techniques: &'s [Cow<'s, str>],
    pub(crate) namespace: Option<Cow<'s, str>>,
    /// The value of each of [`STABLE_LABELS`], in that order.
    pub(crate) labels: [Option<Cow<'s, str>>; STABLE_LABELS.len()],
    pub(crate) image_repository: Option<Cow<'s, str>>,
    pub(crate) process: Option<Cow<'s, str>>,
    pub(crate) address: Option<Cow<'s, str>>,
    pub(crate) port: Option<u16>,
    pub(crate) timestamp: Option<Cow<'s, str>>,
    pub(crate) severity: u8,
}

impl<'s> Seen<'s> {
    /// The stable labels present, as `(key, value)` in key order.
    pub(crate) fn labels<'x>(&'x self) -> impl Iterator<Item = (&'x str, &'x str)> + 'x {
        STABLE_LABELS
            .iter()
            .zip(&self.labels)
            .filter_map(|(k, v)| Some((*k, v.as_deref()?)))
    }

    fn to_observation(&self) -> Observation {
        Observation {
            id: self.id.as_deref().map(String::from),
            category: Some(self.category),
            techniques: self.techniques.iter().map(|t| t.to_string()).collect(),
            workload: Workload {
                namespace: self.namespace.as_deref().map(String::from),
                labels: self
                    .labels()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                image_repository: self.image_repository.as_deref().map(String::from),
            },
            process: self.process.as_deref().map(String::from),
            address: self.address.as_deref().map(String::from),
            port: self.port,
            timestamp: self.timestamp.as_deref().map(String::from),
            severity: self.severity,
        }
    }
}

/// Why a finding is skipped, with the unknown category's name as the finding gave it.
#[derive(Debug)]
pub(crate) struct SkippedRef<'s> {
    pub(crate) reason: SkipReason,
    pub(crate) category: Option<Cow<'s, str>>,
}

/// `name` cut to its first 128 characters, as reports keep unknown category names.
pub(crate) fn report_name(name: &str) -> &str {
    name.char_indices()
        .nth(128)
        .map_or(name, |(end, _)| &name[..end])
}

impl Fields<'_> {
    /// What qflows reads of the finding (sorting its techniques in place).
    fn seen(&mut self) -> Result<Seen<'_>, SkippedRef<'_>> {
        let techniques = &mut self.mitre_rules_info.0;
        techniques.sort();
        techniques.dedup();
        let this = &*self;
        let techniques = &this.mitre_rules_info.0[..];
        let threat_category = this.threat_category.get();
        let by_technique = || techniques.iter().find_map(|t| Category::from_technique(t));
        let category = match threat_category.as_deref() {
            Some(c) => category_of(c).or_else(by_technique),
            None => by_technique(),
        };
        let Some(category) = category else {
            return Err(SkippedRef {
                reason: match threat_category {
                    Some(_) => SkipReason::UnknownCategory,
                    None => SkipReason::NoCategory,
                },
                category: threat_category,
            });
        };
        let mut labels = [const { None }; STABLE_LABELS.len()];
        let mut label_ns = None;
        for (k, v) in &this.pod_labels.0 {
            let Some(v) = v.get() else { continue };
            if NAMESPACE_LABELS.contains(&k.as_ref()) {
                label_ns = Some(v);
            } else if let Some(i) = STABLE_LABELS.iter().position(|s| *s == k.as_ref()) {
                labels[i] = Some(v);
            }
        }
        let namespace = this
            .namespace
            .get()
            .or_else(|| this.pod_namespace.get())
            .or(label_ns);
        let process = this
            .process_path
            .get()
            .filter(|p| p.starts_with('/'))
            .or_else(|| this.process_name.get())
            .filter(|p| p.len() <= 255 && !p.contains(','));
        Ok(Seen {
            id: this
                .uuid
                .get()
                .filter(|s| s.len() <= 64 && !s.contains(',')),
            category,
            techniques,
            namespace,
            labels,
            image_repository: this.image_name.get().and_then(|i| derived(i, repository)),
            process,
            address: this
                .destination_ip
                .get()
                .and_then(|a| derived(a, canonical_ip)),
            port: this.destination_port.get_u16().filter(|p| *p > 0),
            timestamp: this.timestamp.get(),
            severity: this.severity.get_severity().map_or(0, Severity::rank),
        })
    }
}

/// `f` of a text that is either borrowed (the result may borrow it too) or owned (the result
/// is copied).
fn derived<'s>(text: Cow<'s, str>, f: fn(&str) -> Option<Cow<'_, str>>) -> Option<Cow<'s, str>> {
    match text {
        Cow::Borrowed(s) => f(s),
        Cow::Owned(s) => f(&s).map(|r| Cow::Owned(r.into_owned())),
    }
}

/// A valid IPv4 or IPv6 address in its canonical form. IPv4 text that parses is already
/// canonical (the parser refuses leading zeros and anything but four decimal octets), so it is
/// kept as given; IPv6 is rewritten (`::ffff:…`, zero runs, case).
fn canonical_ip(a: &str) -> Option<Cow<'_, str>> {
    match a.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some(Cow::Borrowed(a)),
        ip @ IpAddr::V6(_) => Some(Cow::Owned(ip.to_string())),
    }
}

impl Fields<'_> {
    fn observe(&mut self) -> Result<Observation, Skipped> {
        self.seen()
            .map(|seen| seen.to_observation())
            .map_err(|skipped| Skipped {
                reason: skipped.reason,
                category: skipped.category.map(|c| report_name(&c).to_string()),
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

/// Where the elements of a findings document go: each object's fields, or `None` for an
/// element that is not an object.
trait Sink {
    fn finding(&mut self, fields: Option<&mut Fields<'_>>);
}

/// [`read_document`]'s callback.
struct Each<F>(F);

impl<F: FnMut(Result<Observation, Skipped>)> Sink for Each<F> {
    fn finding(&mut self, fields: Option<&mut Fields<'_>>) {
        (self.0)(match fields {
            Some(fields) => fields.observe(),
            None => Err(SkipReason::NotAnObject.into()),
        })
    }
}

/// [`read_document_seen`]'s callback.
struct EachSeen<F>(F);

impl<F: FnMut(Result<Seen<'_>, SkippedRef<'_>>)> Sink for EachSeen<F> {
    fn finding(&mut self, fields: Option<&mut Fields<'_>>) {
        (self.0)(match fields {
            Some(fields) => fields.seen(),
            None => Err(SkippedRef {
                reason: SkipReason::NotAnObject,
                category: None,
            }),
        })
    }
}

/// Calls `each` for every finding of a findings document: `{"content": [...]}` (the API's
/// answer), `{"findings": [...]}` or a bare array. Errors only when the document itself is not
/// JSON of one of those shapes; a bad element is passed on as `Err(SkipReason)`.
pub fn read_document(
    json: &[u8],
    each: impl FnMut(Result<Observation, Skipped>),
) -> Result<u64, serde_json::Error> {
    read_into(json, &mut Each(each))
}

/// [`read_document`] without making an [`Observation`] per finding: `each` gets the values
/// borrowed from `json` (for the [`Grouper`](super::generate::Grouper), which copies only into
/// the evidence that keeps them).
pub(crate) fn read_document_seen(
    json: &[u8],
    each: impl FnMut(Result<Seen<'_>, SkippedRef<'_>>),
) -> Result<u64, serde_json::Error> {
    read_into(json, &mut EachSeen(each))
}

fn read_into<S: Sink>(json: &[u8], sink: &mut S) -> Result<u64, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let n = de.deserialize_any(DocVisitor { sink })?;
    de.end()?;
    Ok(n)
}

struct DocVisitor<'f, S> {
    sink: &'f mut S,
}

impl<'de, S: Sink> Visitor<'de> for DocVisitor<'_, S> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an array of findings or an object with "content": [findings]"#)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while a
            .next_element_seed(ElementSeed {
                sink: &mut *self.sink,
            })?
            .is_some()
        {
            n += 1;
        }
        Ok(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<u64, A::Error> {
        let mut n = None;
        while let Some(Key(k)) = a.next_key::<Key<'de>>()? {
            if matches!(k.as_ref(), "content" | "findings") && n.is_none() {
                n = Some(a.next_value_seed(SeqSeed {
                    sink: &mut *self.sink,
                })?);
            } else {
                a.next_value::<IgnoredAny>()?;
            }
        }
        n.ok_or_else(|| de::Error::custom(r#"no "content" array of findings"#))
    }
}

struct SeqSeed<'f, S> {
    sink: &'f mut S,
}

impl<'de, S: Sink> DeserializeSeed<'de> for SeqSeed<'_, S> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        struct SeqOnly<'f, S>(DocVisitor<'f, S>);
        impl<'de, S: Sink> Visitor<'de> for SeqOnly<'_, S> {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of findings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<u64, A::Error> {
                self.0.visit_seq(a)
            }
        }
        d.deserialize_seq(SeqOnly(DocVisitor { sink: self.sink }))
    }
}

/// One element, handed to the sink: an object is read leniently; anything else is skipped, not
/// an error.
struct ElementSeed<'f, S> {
    sink: &'f mut S,
}

impl<'de, S: Sink> DeserializeSeed<'de> for ElementSeed<'_, S> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        struct V<'f, S>(&'f mut S);
        impl<S: Sink> V<'_, S> {
            fn not_an_object<E>(self) -> Result<(), E> {
                self.0.finding(None);
                Ok(())
            }
        }
        impl<'de, S: Sink> Visitor<'de> for V<'_, S> {
            type Value = ();
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a finding")
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<(), A::Error> {
                let mut fields = Fields::deserialize(de::value::MapAccessDeserializer::new(a))?;
                self.0.finding(Some(&mut fields));
                Ok(())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                self.not_an_object()
            }
            fn visit_str<E>(self, _: &str) -> Result<(), E> {
                self.not_an_object()
            }
            fn visit_u64<E>(self, _: u64) -> Result<(), E> {
                self.not_an_object()
            }
            fn visit_i64<E>(self, _: i64) -> Result<(), E> {
                self.not_an_object()
            }
            fn visit_f64<E>(self, _: f64) -> Result<(), E> {
                self.not_an_object()
            }
            fn visit_bool<E>(self, _: bool) -> Result<(), E> {
                self.not_an_object()
            }
            fn visit_unit<E>(self) -> Result<(), E> {
                self.not_an_object()
            }
        }
        d.deserialize_any(V(self.sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

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
