//! The one-pass reader ([`read_document_grouped`]) and the per-finding reader
//! ([`read_document`] + [`Grouper::add`]) against a reference: the reading of a finding as
//! qflows has always done it, written out here over `serde_json::Value`, and a `BTreeMap` of
//! evidence per key. Random findings of every shape, escapes and number forms included, must give
//! the same observations, the same groups, evidence and report, and the same after a checkpoint.

use super::findings::{SkipReason, Skipped, read_document};
use super::*;
use crate::qualys::{Severity, techniques};
use qflows_workflows::cdr::evidence::{Category, Evidence, PolicyKey, Workload};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A scalar as text, as the lenient reader always read one (numbers in Rust's formatting).
fn text(v: Option<&Value>) -> Option<String> {
    let s = match v? {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(i), _) => i.to_string(),
            (None, None, Some(f)) => f.to_string(),
            _ => return None,
        },
        _ => return None,
    };
    (!s.is_empty()).then_some(s)
}

fn reference_repository(image: &str) -> Option<String> {
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

/// How a finding has always been read (before the one-pass reader).
fn reference_observe(v: &Value) -> Result<Observation, Skipped> {
    let Some(m) = v.as_object() else {
        return Err(SkipReason::NotAnObject.into());
    };
    let field = |k: &str| text(m.get(k));
    let mut techniques_seen: Vec<String> = match m.get("mitreRulesInfo") {
        Some(Value::Object(o)) => o.keys().cloned().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .flat_map(|item| techniques(&Value::Array(vec![item.clone()])).unwrap_or_default())
            .collect(),
        Some(s @ Value::String(_)) => techniques(s).unwrap_or_default(),
        _ => Vec::new(),
    };
    techniques_seen.sort();
    techniques_seen.dedup();
    let threat = field("threatCategory");
    let by_technique = || {
        techniques_seen
            .iter()
            .find_map(|t| Category::from_technique(t))
    };
    let category = match &threat {
        Some(c) => Category::from_threat_category(c).or_else(by_technique),
        None => by_technique(),
    };
    let Some(category) = category else {
        return Err(match threat {
            Some(c) => Skipped {
                reason: SkipReason::UnknownCategory,
                category: Some(c.chars().take(128).collect()),
            },
            None => SkipReason::NoCategory.into(),
        });
    };
    let mut labels = BTreeMap::new();
    let mut label_ns = None;
    if let Some(Value::Object(pod_labels)) = m.get("podLabels") {
        for (k, v) in pod_labels {
            let Some(v) = text(Some(v)) else { continue };
            if [
                "io.kubernetes.pod.namespace",
                "k8s:io.kubernetes.pod.namespace",
            ]
            .contains(&k.as_str())
            {
                label_ns = Some(v);
            } else if [
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "app",
                "k8s-app",
                "component",
            ]
            .contains(&k.as_str())
            {
                labels.insert(k.clone(), v);
            }
        }
    }
    let process = field("processPath")
        .filter(|p| p.starts_with('/'))
        .or(field("processName"))
        .filter(|p| p.len() <= 255 && !p.contains(','));
    Ok(Observation {
        id: field("uuid").filter(|s| s.len() <= 64 && !s.contains(',')),
        category: Some(category),
        techniques: techniques_seen,
        workload: Workload {
            namespace: field("namespace").or(field("podNamespace")).or(label_ns),
            labels,
            image_repository: field("imageName").and_then(|i| reference_repository(&i)),
        },
        process,
        address: field("destinationIp")
            .and_then(|a| a.parse::<IpAddr>().ok())
            .map(|ip| ip.to_string()),
        port: field("destinationPort")
            .and_then(|p| p.parse().ok())
            .filter(|p| *p > 0),
        timestamp: field("timestamp"),
        severity: field("severity")
            .and_then(|s| Severity::from_text(&s))
            .map_or(0, Severity::rank),
    })
}

/// The reference grouping: a map of evidence per key, the report counted as always.
fn reference_group(elements: &[Value]) -> (Vec<(PolicyKey, Evidence)>, FindingsReport) {
    let mut groups: BTreeMap<PolicyKey, Evidence> = BTreeMap::new();
    let mut report = FindingsReport::default();
    for element in elements {
        report.findings += 1;
        match reference_observe(element) {
            Ok(mut o) => {
                report.used += 1;
                let key = PolicyKey {
                    category: o.category.unwrap(),
                    workload: std::mem::take(&mut o.workload),
                };
                groups.entry(key).or_default().record(&o);
            }
            Err(s) => {
                *report
                    .skipped
                    .entry(s.reason.as_str().to_string())
                    .or_default() += 1;
                if let Some(name) = s.category {
                    let known = report.unknown_categories.len();
                    if let Some(n) = report.unknown_categories.get_mut(&name) {
                        *n += 1;
                    } else if known < 50 {
                        report.unknown_categories.insert(name, 1);
                    }
                }
            }
        }
    }
    (groups.into_iter().collect(), report)
}

fn pick<T: Clone>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())].clone()
}

/// A random value for a text field: strings with escapes and spaces, every number form, and
/// types that read as absent.
fn scalar(rng: &mut fastrand::Rng, strings: &[&str]) -> Value {
    match rng.u8(..10) {
        0 => json!(rng.u64(..70_000)),
        1 => json!(-(rng.i64(1..5000))),
        2 => json!(f64::from(rng.u16(..9000)) + pick(rng, &[0.0, 0.5])),
        3 => pick(
            rng,
            &[Value::Null, json!(true), json!([1]), json!({"a": 1})],
        ),
        4 => json!(format!(" {} ", pick(rng, strings))),
        _ => json!(pick(rng, strings)),
    }
}

fn finding(rng: &mut fastrand::Rng) -> Value {
    if rng.u8(..20) == 0 {
        return pick(
            rng,
            &[json!(42), json!("x"), Value::Null, json!([1, {"a": 2}])],
        );
    }
    let mut m = Map::new();
    let maybe = |m: &mut Map<String, Value>, key: &str, value: Value, rng: &mut fastrand::Rng| {
        if rng.u8(..5) != 0 {
            m.insert(key.to_string(), value);
        }
    };
    let uuid = scalar(
        rng,
        &[
            "a1",
            "b2",
            "c3",
            "d,4",
            &"u".repeat(70),
            "caf\u{e9}",
            "q\"uote",
        ],
    );
    maybe(&mut m, "uuid", uuid, rng);
    let category = scalar(
        rng,
        &[
            "Reverse_Shell",
            "Container_Escape",
            "Crypto_Mining",
            "Network_Scanning_Utility",
            "Privilege_Escalation",
            "Cloud_Credentials_Accessed_By_Network_Utility",
            "SSH_Password_Brute_Force",
            "",
            &"Z".repeat(200),
            "Unknown\u{e9}\u{1F600}",
        ],
    );
    maybe(&mut m, "threatCategory", category, rng);
    let severity = scalar(rng, &["high", "Critical", "LOW", "3", "medium ", "severe"]);
    maybe(&mut m, "severity", severity, rng);
    let timestamp = scalar(
        rng,
        &[
            "2026-11-22T10:00:00Z",
            "2026-11-21T09:00:00Z",
            "2026-11-23T00:00:00.5Z",
        ],
    );
    maybe(&mut m, "timestamp", timestamp, rng);
    let mitre = pick(
        rng,
        &[
            json!({"T1046": {}, "": 1}),
            json!({"T1611": [], "t1548.001": null}),
            json!(["T1496", {"technique": "T1059.004"}, 5, {"id": "T1552.005"}]),
            json!("T1611, T1548 ,, T1046"),
            json!(7),
            Value::Null,
            json!({"T0000": {}}),
        ],
    );
    maybe(&mut m, "mitreRulesInfo", mitre, rng);
    let path = scalar(
        rng,
        &[
            "/usr/bin/curl",
            "curl",
            "/a,b",
            &format!("/{}", "p".repeat(300)),
        ],
    );
    maybe(&mut m, "processPath", path, rng);
    let name = scalar(rng, &["nmap", "x,y", "python3"]);
    maybe(&mut m, "processName", name, rng);
    let ip = scalar(
        rng,
        &[
            "10.0.0.1",
            "198.51.100.7",
            "01.2.3.4",
            "1.2.3.04",
            "::ffff:1.2.3.4",
            "2001:DB8:0:0:0:0:0:1",
            "fe80::1",
            "256.1.1.1",
            "nope",
        ],
    );
    maybe(&mut m, "destinationIp", ip, rng);
    let port = scalar(rng, &["443", "0", "70000", "x", "080"]);
    maybe(&mut m, "destinationPort", port, rng);
    let ns = scalar(rng, &["prod", "shop", "", "Caf\u{e9}"]);
    maybe(&mut m, "namespace", ns, rng);
    let pod_ns = scalar(rng, &["team-1", "team-2"]);
    maybe(&mut m, "podNamespace", pod_ns, rng);
    let labels = match rng.u8(..6) {
        0 => pick(rng, &[json!([1]), json!("x"), json!(3), Value::Null]),
        _ => {
            let mut labels = Map::new();
            for key in [
                "app",
                "app.kubernetes.io/name",
                "app.kubernetes.io/instance",
                "k8s-app",
                "component",
                "pod-template-hash",
                "io.kubernetes.pod.namespace",
                "k8s:io.kubernetes.pod.namespace",
                "other",
            ] {
                if rng.u8(..3) == 0 {
                    labels.insert(key.to_string(), scalar(rng, &["web", "api", "db", " "]));
                }
            }
            Value::Object(labels)
        }
    };
    maybe(&mut m, "podLabels", labels, rng);
    let image = scalar(
        rng,
        &[
            "111122223333.dkr.ecr.us-east-1.amazonaws.com/Payments-API:1.4",
            "nginx:1.27",
            "localhost:5000/a/b:1@sha256:ab",
            "bad image!",
            "ghcr.io/org/app",
        ],
    );
    maybe(&mut m, "imageName", image, rng);
    if rng.bool() {
        m.insert("somethingNew".into(), json!({"nested": [1, "two"]}));
    }
    Value::Object(m)
}

#[test]
fn one_pass_reading_and_grouping_match_the_reference() {
    for seed in 0..40u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let elements: Vec<Value> = (0..400).map(|_| finding(&mut rng)).collect();
        let doc = serde_json::to_vec(&json!({"totalElements": 400, "content": elements})).unwrap();

        // Each finding reads as it always did.
        let mut observed = Vec::new();
        assert_eq!(read_document(&doc, |o| observed.push(o)).unwrap(), 400);
        for (element, got) in elements.iter().zip(&observed) {
            assert_eq!(got, &reference_observe(element), "seed {seed}: {element}");
        }

        // Grouped in one pass, or finding by finding: the reference's groups and report.
        let expected = reference_group(&elements);
        let mut one_pass = Grouper::default();
        assert_eq!(read_document_grouped(&doc, &mut one_pass).unwrap(), 400);
        assert_eq!(one_pass.finish(), expected, "seed {seed}");
        let mut each = Grouper::default();
        read_document(&doc, |o| each.add(o)).unwrap();
        assert_eq!(each.finish(), expected, "seed {seed}");

        // Half, a checkpoint through JSON, then the rest.
        let (first, second) = elements.split_at(173);
        let mut g = Grouper::default();
        read_document_grouped(&serde_json::to_vec(first).unwrap(), &mut g).unwrap();
        let saved: GrouperCheckpoint =
            serde_json::from_slice(&serde_json::to_vec(&g.checkpoint()).unwrap()).unwrap();
        let mut g = Grouper::resume(saved);
        read_document_grouped(&serde_json::to_vec(second).unwrap(), &mut g).unwrap();
        assert_eq!(g.finish(), expected, "seed {seed} (resumed)");
    }
}

#[test]
fn documents_read_in_one_pass_fail_like_the_others() {
    for doc in [
        &b"{\"items\": []}"[..],
        b"not json",
        b"[1, 2",
        b"[{\"uuid\": 1, \"uuid\": 2}]",
    ] {
        let mut g = Grouper::default();
        assert!(read_document_grouped(doc, &mut g).is_err());
        assert!(read_document(doc, |_| {}).is_err());
    }
    let mut g = Grouper::default();
    assert_eq!(
        read_document_grouped(b"{\"findings\": [{}, 1]}", &mut g).unwrap(),
        2
    );
    assert_eq!(g.finish().1.findings, 2);
}

#[test]
fn ipv4_text_that_parses_is_canonical() {
    // The one-pass reader keeps parsed IPv4 text as given instead of re-printing it.
    for a in [
        "0.0.0.0",
        "1.2.3.4",
        "255.255.255.255",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        "+1.2.3.4",
        "1.2.3.256",
        "00.0.0.0",
        "1.2.3.4 ",
        "١.2.3.4",
    ] {
        if let Ok(ip) = a.parse::<std::net::Ipv4Addr>() {
            assert_eq!(ip.to_string(), a);
        }
    }
}
