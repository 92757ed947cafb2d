//! Generation without I/O: every category in both forms is valid Tetragon, output is stable, and
//! blocking is always scoped.

use super::findings::read_document;
use super::render::{CREDENTIAL_ENDPOINTS, RenderOptions, render};
use super::*;
use qflows_tetragon::schema;
use qflows_workflows::cdr::evidence::{
    AuditStyle, CATEGORIES, Category, Enforcement, Evidence, PolicyKey, TetragonVersion, Workload,
};
use serde_json::{Value, json};

fn workload() -> Workload {
    Workload {
        namespace: Some("shop".into()),
        labels: [("app".to_string(), "payments-api".to_string())].into(),
        image_repository: Some("111122223333.dkr.ecr.us-east-1.amazonaws.com/payments-api".into()),
    }
}

fn evidence() -> Evidence {
    let mut e = Evidence::default();
    for (i, (process, addr, port)) in [
        ("/usr/bin/curl", "169.254.169.254", 80),
        ("/usr/bin/nmap", "45.9.148.3", 3333),
        ("/bin/bash", "203.0.113.9", 4444),
        ("/usr/bin/ncat", "10.1.2.3", 443),
    ]
    .into_iter()
    .enumerate()
    {
        e.record(&qflows_workflows::cdr::evidence::Observation {
            id: Some(format!("finding-{i}")),
            process: Some(process.into()),
            address: Some(addr.into()),
            port: Some(port),
            timestamp: Some(format!("2026-11-22T10:0{i}:00Z")),
            severity: 3,
            techniques: vec!["T0000".into()],
            ..Default::default()
        });
    }
    e
}

fn opts(version: TetragonVersion, style: AuditStyle) -> RenderOptions {
    RenderOptions {
        tetragon_version: version,
        audit_style: style,
        policy_set: Some("prod".into()),
    }
}

fn actions(policy: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for kp in policy["spec"]["kprobes"].as_array().unwrap() {
        for sel in kp["selectors"].as_array().unwrap() {
            for a in sel["matchActions"].as_array().unwrap() {
                out.push(a["action"].as_str().unwrap().to_string());
            }
        }
    }
    out
}

fn option(policy: &Value, name: &str) -> Option<String> {
    policy["spec"]["options"]
        .as_array()?
        .iter()
        .find(|o| o["name"] == name)
        .map(|o| o["value"].as_str().unwrap().to_string())
}

#[test]
fn every_category_in_every_form_is_valid_tetragon() {
    let versions = [
        TetragonVersion::MIN,
        TetragonVersion { major: 1, minor: 5 },
        TetragonVersion::DEFAULT,
    ];
    let mut checked = 0;
    for category in CATEGORIES {
        let key = PolicyKey {
            category,
            workload: workload(),
        };
        for version in versions {
            for (enforcement, style) in [
                (Enforcement::Audit, AuditStyle::Post),
                (Enforcement::Audit, AuditStyle::Monitor),
                (Enforcement::Enforce, AuditStyle::Post),
            ] {
                let policy = render(&key, &evidence(), enforcement, &opts(version, style))
                    .unwrap()
                    .to_value();
                let what = format!("{category:?} {enforcement:?} {style:?} v{version}");
                if let Err(v) = schema::validate(&policy) {
                    panic!("{what}: {v:?}\n{policy:#}");
                }
                let (major, minor) = schema::min_tetragon_version(&policy);
                assert!(
                    version.at_least(major, minor),
                    "{what} needs {major}.{minor}"
                );
                let acts = actions(&policy);
                let blocking = enforcement == Enforcement::Enforce || style == AuditStyle::Monitor;
                if blocking {
                    assert!(
                        acts.iter().all(|a| a == "Sigkill" || a == "Override"),
                        "{what}"
                    );
                    assert!(acts.iter().any(|a| a == "Sigkill"), "{what}");
                    let mode = if enforcement == Enforcement::Enforce {
                        "enforce"
                    } else {
                        "monitor"
                    };
                    assert_eq!(
                        option(&policy, "policy-mode").as_deref(),
                        Some(mode),
                        "{what}"
                    );
                } else {
                    assert!(acts.iter().all(|a| a == "Post"), "{what}");
                    assert_eq!(option(&policy, "policy-mode"), None, "{what}");
                }
                // Scoped to the workload: a namespaced policy with the app's labels.
                assert_eq!(policy["kind"], "TracingPolicyNamespaced", "{what}");
                assert_eq!(policy["metadata"]["namespace"], "shop", "{what}");
                assert_eq!(
                    policy["spec"]["podSelector"]["matchLabels"]["app"],
                    "payments-api"
                );
                // `syscall` is always explicit.
                for kp in policy["spec"]["kprobes"].as_array().unwrap() {
                    assert!(kp["syscall"].is_boolean(), "{what}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, CATEGORIES.len() * 9);
}

#[test]
fn blocking_policies_that_override_security_hooks_disable_kprobe_multi() {
    for category in CATEGORIES {
        let key = PolicyKey {
            category,
            workload: workload(),
        };
        let p = render(
            &key,
            &evidence(),
            Enforcement::Enforce,
            &RenderOptions::default(),
        )
        .unwrap()
        .to_value();
        let security_override = p["spec"]["kprobes"].as_array().unwrap().iter().any(|kp| {
            kp["call"].as_str().unwrap().starts_with("security_")
                && kp["selectors"].to_string().contains("Override")
        });
        assert_eq!(
            option(&p, "disable-kprobe-multi").is_some(),
            security_override,
            "{category:?}"
        );
    }
}

#[test]
fn credential_policy_covers_every_endpoint_through_the_kernel_copy() {
    let key = PolicyKey {
        category: Category::Imds,
        workload: workload(),
    };
    let p = render(
        &key,
        &evidence(),
        Enforcement::Audit,
        &RenderOptions::default(),
    )
    .unwrap()
    .to_value();
    let kp = &p["spec"]["kprobes"][0];
    assert_eq!(kp["call"], "security_socket_connect");
    assert_eq!(kp["syscall"], false);
    let values: Vec<&str> = kp["selectors"][0]["matchArgs"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for endpoint in CREDENTIAL_ENDPOINTS {
        assert!(values.contains(&endpoint), "{endpoint} missing");
    }
    // Observed non-credential addresses (a pool, a private peer) are not added.
    assert!(!values.contains(&"45.9.148.3") && !values.contains(&"10.1.2.3"));
    // No binary allow-list.
    assert!(!p.to_string().contains("matchBinaries"));
}

#[test]
fn mining_policy_uses_observed_pools_and_spares_common_ports() {
    let key = PolicyKey {
        category: Category::Mining,
        workload: workload(),
    };
    let p = render(
        &key,
        &evidence(),
        Enforcement::Enforce,
        &RenderOptions::default(),
    )
    .unwrap()
    .to_value();
    let selectors = p["spec"]["kprobes"][0]["selectors"].as_array().unwrap();
    let ports = selectors[0]["matchArgs"][0]["values"].to_string();
    assert!(ports.contains("\"4444\"") && ports.contains("\"3333:3336\""));
    assert!(!ports.contains("\"443\"") && !ports.contains("\"80\""));
    let pools = selectors[1]["matchArgs"][0]["values"].as_array().unwrap();
    assert_eq!(pools, &vec![json!("203.0.113.9"), json!("45.9.148.3")]);
}

#[test]
fn an_unknown_workload_gets_an_audit_policy_for_all_pods_and_never_a_blocking_one() {
    let key = PolicyKey {
        category: Category::ReverseShell,
        workload: Workload::default(),
    };
    let audit = render(
        &key,
        &evidence(),
        Enforcement::Audit,
        &RenderOptions::default(),
    )
    .unwrap()
    .to_value();
    assert_eq!(audit["kind"], "TracingPolicy");
    // `podSelector: {}`: every pod, never host processes.
    assert_eq!(audit["spec"]["podSelector"], json!({}));
    let err = render(
        &key,
        &evidence(),
        Enforcement::Enforce,
        &RenderOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("stays in audit"), "{err}");
    let monitor = opts(TetragonVersion::DEFAULT, AuditStyle::Monitor);
    assert!(render(&key, &evidence(), Enforcement::Audit, &monitor).is_err());
    let generation = generate(
        [(&key, &evidence(), Enforcement::Enforce)],
        &RenderOptions::default(),
    );
    assert!(generation.policies.is_empty());
    assert_eq!(generation.refused.len(), 1);
}

#[test]
fn names_are_dns_1123_stable_and_distinct() {
    let long = Workload {
        namespace: Some("a-very-long-namespace-name-for-a-team".into()),
        labels: [(
            "app".to_string(),
            "an-equally-long-application-name-here".to_string(),
        )]
        .into(),
        image_repository: None,
    };
    let near = Workload {
        labels: [("app".to_string(), "Payments_API".to_string())].into(),
        ..Default::default()
    };
    let near2 = Workload {
        labels: [("app".to_string(), "payments.api".to_string())].into(),
        ..Default::default()
    };
    let mut names = std::collections::BTreeSet::new();
    for w in [workload(), long, near, near2, Workload::default()] {
        for category in CATEGORIES {
            let key = PolicyKey {
                category,
                workload: w.clone(),
            };
            let name = key.name();
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !name.starts_with('-')
                    && !name.ends_with('-'),
                "{name}"
            );
            assert_eq!(name, key.clone().name(), "stable");
            assert!(names.insert(name.clone()), "duplicate {name}");
        }
    }
    assert_eq!(
        PolicyKey {
            category: Category::Imds,
            workload: Workload {
                labels: [("app".to_string(), "payments-api".to_string())].into(),
                ..Default::default()
            }
        }
        .name(),
        "t1552-005-imds-payments-api"
    );
}

/// Findings in any order give byte-identical YAML.
#[test]
fn the_same_findings_always_give_the_same_bytes() {
    let findings: Vec<Value> = (0..60)
        .map(|i| {
            let category = ["Crypto_Mining", "Reverse_Shell", "Container_Escape"][i % 3];
            json!({"uuid": format!("id-{i:02}"),
                   "threatCategory": category,
                   "severity": 1 + i % 4, "timestamp": format!("2026-11-22T10:{i:02}:00Z"),
                   "processPath": format!("/usr/bin/tool{}", i % 5),
                   "destinationIp": format!("198.51.100.{i}"), "destinationPort": 3000 + i,
                   "podLabels": {"app": format!("svc-{}", i % 2)}, "namespace": "prod"})
        })
        .collect();
    let run = |order: &[Value]| -> Vec<(String, String)> {
        let doc = serde_json::to_vec(&json!({"content": order})).unwrap();
        let mut g = Grouper::default();
        read_document(&doc, |o| g.add(o)).unwrap();
        let (groups, _) = g.finish();
        generate(
            groups.iter().map(|(k, e)| (k, e, Enforcement::Audit)),
            &RenderOptions::default(),
        )
        .policies
        .into_iter()
        .map(|p| (p.name, p.yaml))
        .collect()
    };
    let forward = run(&findings);
    let mut reversed = findings.clone();
    reversed.reverse();
    let mut interleaved: Vec<Value> = findings.iter().step_by(2).cloned().collect();
    interleaved.extend(findings.iter().skip(1).step_by(2).cloned());
    assert_eq!(forward.len(), 6);
    assert_eq!(forward, run(&reversed));
    assert_eq!(forward, run(&interleaved));
}

#[test]
fn broken_findings_are_counted_and_skipped() {
    let doc = br#"{"content": [
        {"uuid": "ok", "threatCategory": "Reverse_Shell", "namespace": "web"},
        {"uuid": "no-cat"},
        {"uuid": "odd", "threatCategory": "SSH_Password_Brute_Force"},
        {"uuid": "odd2", "threatCategory": "SSH_Password_Brute_Force"},
        42, null, ["x"],
        {"threatCategory": 7, "mitreRulesInfo": 3}
    ]}"#;
    let mut g = Grouper::default();
    read_document(doc, |o| g.add(o)).unwrap();
    let (groups, report) = g.finish();
    assert_eq!(groups.len(), 1);
    assert_eq!((report.findings, report.used), (8, 1));
    assert_eq!(report.skipped["not-an-object"], 3);
    assert_eq!(report.skipped["no-category"], 1);
    assert_eq!(report.skipped["unknown-category"], 3);
    assert_eq!(report.unknown_categories["SSH_Password_Brute_Force"], 2);
    assert_eq!(report.unknown_categories["7"], 1);
}

#[test]
fn older_tetragon_releases_get_only_what_they_support() {
    let key = PolicyKey {
        category: Category::Escape,
        workload: workload(),
    };
    let v14 = render(
        &key,
        &evidence(),
        Enforcement::Audit,
        &opts(TetragonVersion::MIN, AuditStyle::Post),
    )
    .unwrap()
    .to_value();
    let text = v14.to_string();
    // ignore.callNotFound (v1.5) and containerSelector `repo` (v1.5) are left out.
    assert!(
        !text.contains("callNotFound") && !text.contains("containerSelector"),
        "{text}"
    );
    assert_eq!(v14["spec"]["kprobes"].as_array().unwrap().len(), 4);
    let v17 = render(
        &key,
        &evidence(),
        Enforcement::Audit,
        &RenderOptions::default(),
    )
    .unwrap()
    .to_value();
    assert_eq!(v17["spec"]["kprobes"].as_array().unwrap().len(), 7);
    assert!(v17.to_string().contains("callNotFound"));
}

fn scanning_evidence(processes: &[&str]) -> Evidence {
    let mut e = Evidence::default();
    for (i, p) in processes.iter().enumerate() {
        e.record(&qflows_workflows::cdr::evidence::Observation {
            id: Some(format!("scan-{i}")),
            process: Some(p.to_string()),
            severity: 3,
            ..Default::default()
        });
    }
    e
}

/// Whether the policy's exec hook (`security_bprm_check`) matches a binary at `path`, by the
/// operators the designs use.
fn exec_matches(policy: &Value, path: &str) -> bool {
    policy["spec"]["kprobes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["call"] == "security_bprm_check")
        .flat_map(|k| k["selectors"].as_array().unwrap().clone())
        .any(|sel| {
            sel["matchArgs"].as_array().unwrap().iter().all(|a| {
                let values: Vec<&str> = a["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                match a["operator"].as_str().unwrap() {
                    "Equal" => values.contains(&path),
                    "Postfix" => values.iter().any(|v| path.ends_with(v)),
                    "Prefix" => values.iter().any(|v| path.starts_with(v)),
                    other => panic!("unexpected operator {other}"),
                }
            })
        })
}

#[test]
fn observed_scanner_binaries_match_by_full_path_and_block_only_when_approved() {
    let key = PolicyKey {
        category: Category::Scanning,
        workload: workload(),
    };
    // An attacker's nmap renamed after the app's server, next to a known scanner and a shell.
    let ev = scanning_evidence(&["/tmp/gunicorn", "/usr/bin/nmap", "/bin/bash", "gunicorn"]);
    let seen = render::observed(Category::Scanning, &ev);
    assert_eq!(
        seen.binaries.iter().collect::<Vec<_>>(),
        ["/tmp/gunicorn"],
        "{seen:?}"
    );
    let opts = RenderOptions::default();
    let audit = render::render_with(&key, &ev, Enforcement::Audit, None, &opts)
        .unwrap()
        .to_value();
    assert!(exec_matches(&audit, "/tmp/gunicorn"));
    assert!(exec_matches(&audit, "/opt/tools/nmap"));
    assert!(!exec_matches(&audit, "/usr/local/bin/gunicorn"));
    assert_eq!(
        audit["metadata"]["annotations"]["qflows.io/observed-binaries"],
        "/tmp/gunicorn"
    );
    // Enforced without approval: the category's own scanners only; the rest is named.
    let unreviewed = render::render_with(&key, &ev, Enforcement::Enforce, None, &opts)
        .unwrap()
        .to_value();
    assert!(!exec_matches(&unreviewed, "/tmp/gunicorn"));
    assert!(exec_matches(&unreviewed, "/opt/tools/nmap"));
    assert_eq!(
        unreviewed["metadata"]["annotations"]["qflows.io/observed-unreviewed"],
        "binaries /tmp/gunicorn"
    );
    // Approved: exactly that path, never the app's binary.
    let approved = render::render_with(&key, &ev, Enforcement::Enforce, Some(&seen), &opts)
        .unwrap()
        .to_value();
    assert!(exec_matches(&approved, "/tmp/gunicorn"));
    assert!(!exec_matches(&approved, "/usr/local/bin/gunicorn"));
    assert!(!exec_matches(&approved, "/app/gunicorn"));
    assert!(
        approved["metadata"]["annotations"]
            .get("qflows.io/observed-unreviewed")
            .is_none()
    );
    for p in [&audit, &unreviewed, &approved] {
        schema::validate(p).unwrap_or_else(|v| panic!("{v:?}\n{p:#}"));
    }
}

#[test]
fn observed_values_are_what_findings_add_to_each_design() {
    let mut ev = Evidence::default();
    for (addr, port) in [
        ("169.254.169.254", 80),
        ("169.254.1.1", 443),
        ("45.9.148.3", 3333),
        ("10.1.2.3", 8080),
        ("203.0.113.9", 3334),
    ] {
        ev.record(&qflows_workflows::cdr::evidence::Observation {
            address: Some(addr.into()),
            port: Some(port),
            ..Default::default()
        });
    }
    let imds = render::observed(Category::Imds, &ev);
    assert_eq!(imds.addresses.iter().collect::<Vec<_>>(), ["169.254.1.1"]);
    let mining = render::observed(Category::Mining, &ev);
    // 3333 and 3334 are in the design's own list, 80 and 443 are never added, 8080 is new.
    assert_eq!(mining.ports.iter().collect::<Vec<_>>(), [&8080]);
    assert_eq!(
        mining.addresses.iter().collect::<Vec<_>>(),
        ["203.0.113.9", "45.9.148.3"]
    );
    assert!(render::observed(Category::Escape, &ev).is_empty());
    // The enforced form without approval blocks neither the new port nor the pools.
    let key = PolicyKey {
        category: Category::Mining,
        workload: workload(),
    };
    let p = render::render_with(
        &key,
        &ev,
        Enforcement::Enforce,
        None,
        &RenderOptions::default(),
    )
    .unwrap()
    .to_value();
    let text = p["spec"].to_string();
    assert!(
        !text.contains("8080") && !text.contains("45.9.148.3"),
        "{text}"
    );
}

#[test]
fn a_scope_kubernetes_cannot_express_refuses_the_blocking_form() {
    for workload in [
        Workload {
            namespace: Some("Not_A_Namespace".into()),
            labels: [("app".to_string(), "payments-api".to_string())].into(),
            image_repository: None,
        },
        Workload {
            namespace: Some("shop".into()),
            labels: [("app".to_string(), "not a label value!".to_string())].into(),
            image_repository: None,
        },
    ] {
        let key = PolicyKey {
            category: Category::ReverseShell,
            workload,
        };
        let why = render::block_refusal(&key, TetragonVersion::DEFAULT).expect("refused");
        assert!(why.contains("not a valid Kubernetes"), "{why}");
        let err = render(
            &key,
            &evidence(),
            Enforcement::Enforce,
            &RenderOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("stays in audit"), "{err}");
        // Audit (events only) still renders, with what can be expressed.
        assert!(
            render(
                &key,
                &evidence(),
                Enforcement::Audit,
                &RenderOptions::default()
            )
            .is_ok()
        );
    }
    let fine = PolicyKey {
        category: Category::ReverseShell,
        workload: workload(),
    };
    assert_eq!(render::block_refusal(&fine, TetragonVersion::DEFAULT), None);
}
