//! Layer 1 (CRD schema + ObjectMeta) and layer 2 (CEL rules).

use serde_json::{Value, json};

use super::*;
use crate::schema::cel::{RULES, Rule};
use crate::schema::structural::{TRACING_POLICY, TRACING_POLICY_NAMESPACED};

// ---- the embedded CRDs -------------------------------------------------------------------------

fn crd_yaml(namespaced: bool) -> Value {
    let src = if namespaced {
        include_str!("../../../crds/cilium.io_tracingpoliciesnamespaced.yaml")
    } else {
        include_str!("../../../crds/cilium.io_tracingpolicies.yaml")
    };
    serde_yaml_ng::from_str(src).unwrap()
}

/// Every (rule, message) pair in a CRD, found by walking the whole document.
fn collect_rules(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                for r in rules {
                    out.push((
                        r["rule"].as_str().unwrap().to_owned(),
                        r["message"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
            m.values().for_each(|x| collect_rules(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_rules(x, out)),
        _ => {}
    }
}

#[test]
fn every_cel_rule_in_the_crds_is_implemented() {
    let mut found = Vec::new();
    collect_rules(&crd_yaml(false), &mut found);
    collect_rules(&crd_yaml(true), &mut found);
    let distinct: std::collections::BTreeSet<&str> =
        found.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        distinct.len(),
        5,
        "the CRDs' rule set changed: {distinct:#?}"
    );
    for rule in &distinct {
        assert!(
            RULES.iter().any(|(src, _)| src == rule),
            "CEL rule not implemented by the validator: {rule}"
        );
    }
    // And the compiled schemas saw the same rules.
    let compiled: std::collections::BTreeSet<&str> = TRACING_POLICY
        .rule_sources
        .iter()
        .chain(&TRACING_POLICY_NAMESPACED.rule_sources)
        .map(String::as_str)
        .collect();
    assert_eq!(compiled, distinct);
    for (src, _) in RULES {
        assert!(Rule::from_source(src).is_some());
    }
}

#[test]
fn the_schema_compiler_understands_every_keyword() {
    assert!(
        TRACING_POLICY.unknown_keywords.is_empty(),
        "{:?}",
        TRACING_POLICY.unknown_keywords
    );
    assert!(
        TRACING_POLICY_NAMESPACED.unknown_keywords.is_empty(),
        "{:?}",
        TRACING_POLICY_NAMESPACED.unknown_keywords
    );
    assert!(!TRACING_POLICY.namespaced && TRACING_POLICY_NAMESPACED.namespaced);
}

// ---- CEL rules: one refusal each, with the CRD's own message ------------------------------------

#[test]
fn cel_return_arg_required_with_return() {
    let msg = "ReturnArg not specified with Return=true.";
    let k = json!({"call": "security_file_open", "syscall": false, "return": true,
                   "args": [{"index": 0, "type": "file"}]});
    assert_refused(&tp(json!({"kprobes": [k.clone()]})), "spec.kprobes[0]", msg);
    assert_refused(&tp(json!({"fentries": [k]})), "spec.fentries[0]", msg);
    assert_refused(
        &tp(json!({"uprobes": [{"path": "/bin/bash", "symbols": ["readline"], "return": true}]})),
        "spec.uprobes[0]",
        msg,
    );
    // return: false, or with a returnArg, is fine.
    assert_valid(&tp(
        json!({"kprobes": [{"call": "security_file_open", "syscall": false, "return": true,
        "returnArg": {"index": 0, "type": "int"}}]}),
    ));
}

#[test]
fn cel_override_needs_at_most_one_new_target() {
    let p = with_selector(
        json!({"matchActions": [{"action": "Post", "argNewSymbol": "x", "argNewOffset": 8}]}),
    );
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchActions[0]",
        "override action needs at most one of argNewSymbol, argNewAddr or argNewOffset defined",
    );
    let p = with_selector(
        json!({"matchReturnActions": [{"action": "Post", "argNewAddr": 1, "argNewOffset": 8}]}),
    );
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchReturnActions[0]",
        "override action needs at most one of argNewSymbol, argNewAddr or argNewOffset defined",
    );
}

#[test]
fn cel_host_selector_null_or_empty() {
    let msg = "The hostSelector should be either null or {}.";
    let mut p = imds_audit();
    p["spec"]["hostSelector"] = json!({"matchLabels": {"node": "a"}});
    assert_refused(&p, "spec.hostSelector", msg);
    let p = with_selector(
        json!({"matchWorkloads": {"hostSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}}),
    );
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchWorkloads.hostSelector",
        msg,
    );
    let mut ok = imds_audit();
    ok["spec"]["hostSelector"] = json!({});
    assert_valid(&ok);
    ok["spec"]["hostSelector"] = Value::Null;
    assert_valid(&ok);
}

#[test]
fn cel_uprobe_one_target_kind() {
    let p =
        tp(json!({"uprobes": [{"path": "/bin/bash", "symbols": ["readline"], "offsets": [16]}]}));
    assert_refused(
        &p,
        "spec.uprobes[0]",
        "uprobe needs at most one of symbols, addrs or offsets defined",
    );
    assert_valid(&tp(
        json!({"uprobes": [{"path": "/bin/bash", "symbols": ["readline"]}]}),
    ));
}

#[test]
fn cel_namespaced_policy_has_no_host_selector() {
    let p = tpn(json!({"hostSelector": {}, "kprobes": [connect_kprobe(json!([]))]}));
    assert_refused(
        &p,
        "",
        "TracingPolicyNamespaced should have a null spec.hostSelector.",
    );
    // null is pruned, so it is accepted
    assert_valid(&tpn(
        json!({"hostSelector": null, "kprobes": [connect_kprobe(json!([]))]}),
    ));
}

// ---- structural schema ------------------------------------------------------------------------

#[test]
fn unknown_fields_are_refused() {
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["value"] = json!(["x"]);
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchArgs[0].value",
        "unknown field",
    );
    let mut p = seed_example();
    p["spec"]["kprobe"] = json!([]);
    assert_refused(&p, "spec.kprobe", "unknown field");
    let mut p = seed_example();
    p["status"] = json!({});
    assert_refused(&p, "status", "unknown field");
}

#[test]
fn types_are_checked() {
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["syscall"] = json!("yes");
    assert_refused(&p, "spec.kprobes[0].syscall", "must be of type boolean");
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["args"][0]["index"] = json!("1");
    assert_refused(
        &p,
        "spec.kprobes[0].args[0].index",
        "must be of type integer",
    );
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["args"][0]["index"] = json!(1.5);
    assert_refused(
        &p,
        "spec.kprobes[0].args[0].index",
        "must be of type integer",
    );
    let mut p = seed_example();
    p["spec"]["kprobes"] = json!({"call": "x"});
    assert_refused(&p, "spec.kprobes", "must be of type array");
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["values"] = json!([169]);
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchArgs[0].values[0]",
        "must be of type string",
    );
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["tags"] = json!([null]);
    assert_refused(&p, "spec.kprobes[0].tags[0]", "must be of type string");
}

#[test]
fn enums_are_checked() {
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["operator"] = json!("NotSPortPriv");
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchArgs[0].operator",
        "Unsupported value: \"NotSPortPriv\"",
    );
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["operator"] =
        json!("SubStringIgnoreCase");
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchArgs[0].operator",
        "Unsupported value",
    );
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["args"][0]["type"] = json!("sockfd");
    assert_refused(
        &p,
        "spec.kprobes[0].args[0].type",
        "Unsupported value: \"sockfd\"",
    );
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["selectors"][0]["matchActions"][0]["action"] = json!("FollowFD");
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchActions[0].action",
        "Unsupported value",
    );
    let p = tp(json!({"lists": [{"name": "l", "type": "symbols"}]}));
    assert_refused(&p, "spec.lists[0].type", "Unsupported value");
}

#[test]
fn required_fields_are_checked() {
    let p = tp(json!({"kprobes": [{"syscall": false}]}));
    assert_refused(&p, "spec.kprobes[0].call", "Required value");
    let p = with_selector(json!({"matchBinaries": [{"operator": "In"}]}));
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchBinaries[0].values",
        "Required value",
    );
    let p = tp(json!({"tracepoints": [{"subsystem": "raw_syscalls"}]}));
    assert_refused(&p, "spec.tracepoints[0].event", "Required value");
    let mut p = seed_example();
    p.as_object_mut().unwrap().remove("spec");
    assert_refused(&p, "spec", "Required value");
    // `type` has a CRD default (auto), so it is never missing.
    assert_valid(&tp(
        json!({"tracepoints": [{"subsystem": "raw_syscalls", "event": "sys_enter", "args": [{"index": 4}]}]}),
    ));
}

#[test]
fn integer_formats_and_minimums() {
    let p =
        with_selector(json!({"matchActions": [{"action": "Override", "argError": 2147483648i64}]}));
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchActions[0].argError",
        "must fit in int32",
    );
    let mut p = seed_example();
    p["spec"]["kprobes"][0]["args"][0]["index"] = json!(-1);
    assert_refused(
        &p,
        "spec.kprobes[0].args[0].index",
        "greater than or equal to 0",
    );
    let p = tp(json!({"uprobes": [{"path": "/bin/x", "addrs": [u64::MAX]}]}));
    assert_refused(&p, "spec.uprobes[0].addrs[0]", "must fit in int64");
}

#[test]
fn item_counts_lengths_and_patterns() {
    let p = with_selector(json!({"matchBinaries": [
        {"operator": "In", "values": ["/bin/a"]}, {"operator": "NotIn", "values": ["/bin/b"]}]}));
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchBinaries",
        "must have at most 1 items",
    );
    let p = with_selector(json!({"matchParentBinaries": [
        {"operator": "In", "values": ["/bin/a"]}, {"operator": "In", "values": ["/bin/b"]}]}));
    assert_refused(
        &p,
        "spec.kprobes[0].selectors[0].matchParentBinaries",
        "must have at most 1 items",
    );
    let mut p = imds_audit();
    p["spec"]["kprobes"][0]["tags"] =
        json!((0..17).map(|i| format!("tag-{i}")).collect::<Vec<_>>());
    assert_refused(&p, "spec.kprobes[0].tags", "must have at most 16 items");
    let mut p = imds_audit();
    p["spec"]["podSelector"] = json!({"matchLabels": {"app": "a".repeat(64)}});
    assert_refused(
        &p,
        "spec.podSelector.matchLabels[app]",
        "may not be more than 63 chars",
    );
    p["spec"]["podSelector"] = json!({"matchLabels": {"app": "web api"}});
    assert_refused(&p, "spec.podSelector.matchLabels[app]", "should match");
    // repos contain '/': matchLabels cannot hold them (hence matchExpressions).
    p["spec"]["podSelector"] = Value::Null;
    p["spec"]["containerSelector"] = json!({"matchLabels": {"repo": "docker.io/library/nginx"}});
    assert_refused(
        &p,
        "spec.containerSelector.matchLabels[repo]",
        "should match",
    );
    p["spec"]["containerSelector"] = json!({"matchLabels": {"name": ""}});
    assert_valid(&p);
}

#[test]
fn api_version_and_kind() {
    let mut p = seed_example();
    p["apiVersion"] = json!("cilium.io/v1");
    assert_refused(&p, "apiVersion", "Unsupported value");
    let mut p = seed_example();
    p["kind"] = json!("TracingPolicies");
    assert_refused(&p, "kind", "Unsupported value");
    let mut p = seed_example();
    p.as_object_mut().unwrap().remove("kind");
    assert_refused(&p, "kind", "Required value");
    assert_refused(&json!([1]), "", "JSON object");
}

// ---- metadata ----------------------------------------------------------------------------------

#[test]
fn metadata_name_is_a_dns_subdomain() {
    for bad in ["example_ns_1", "Imds", "-imds", "imds-", "imds..x", ""] {
        let mut p = seed_example();
        p["metadata"]["name"] = json!(bad);
        assert_refused(&p, "metadata.name", "");
    }
    let mut p = seed_example();
    p["metadata"]["name"] = json!("a".repeat(254));
    assert_refused(&p, "metadata.name", "no more than 253");
    for good in ["t1552-imds-audit", "a", "a.b-c.d", &"a".repeat(253)] {
        let mut p = seed_example();
        p["metadata"]["name"] = json!(good);
        assert_valid(&p);
    }
    let mut p = seed_example();
    p["metadata"].as_object_mut().unwrap().remove("name");
    assert_refused(&p, "metadata.name", "Required value");
    let mut p = seed_example();
    p.as_object_mut().unwrap().remove("metadata");
    assert_refused(&p, "metadata", "Required value");
}

#[test]
fn metadata_labels_and_annotations() {
    let mut p = seed_example();
    p["metadata"]["labels"] = json!({"qflows.io/finding": "qid-12345", "tier": ""});
    p["metadata"]["annotations"] = json!({"qflows.io/Source": "free text, any chars: ok!"});
    assert_valid(&p);

    for (key, value, why) in [
        ("bad key", "v", "name part"),
        ("Qflows.IO/x", "v", "prefix part"),
        ("a/b/c", "v", "qualified name"),
        ("/x", "v", "prefix part must be non-empty"),
        ("k", "has space", "valid label"),
        ("k", "-dash", "valid label"),
    ] {
        let mut p = seed_example();
        p["metadata"]["labels"] = json!({key: value});
        assert_refused(&p, &format!("metadata.labels[{key}]"), why);
    }
    let mut p = seed_example();
    p["metadata"]["labels"] = json!({"k": "v".repeat(64)});
    assert_refused(&p, "metadata.labels[k]", "no more than 63");
    let mut p = seed_example();
    p["metadata"]["labels"] = json!({"k": 1});
    assert_refused(&p, "metadata.labels[k]", "must be a string");
    let mut p = seed_example();
    p["metadata"]["annotations"] = json!({"big": "x".repeat(256 * 1024)});
    assert_refused(&p, "metadata.annotations", "at most 262144 bytes");
    let mut p = seed_example();
    p["metadata"]["annotations"] = json!({"bad key": "x"});
    assert_refused(&p, "metadata.annotations[bad key]", "name part");
}

#[test]
fn metadata_unknown_fields_and_namespace() {
    let mut p = seed_example();
    p["metadata"]["nmae"] = json!("x");
    assert_refused(&p, "metadata.nmae", "unknown field");
    let mut p = tpn(json!({}));
    p["metadata"]["namespace"] = json!("Payments");
    assert_refused(&p, "metadata.namespace", "RFC 1123 label");
    let mut p = seed_example();
    p["metadata"]["resourceVersion"] = json!("123");
    p["metadata"]["finalizers"] = json!(["x/y"]);
    assert_valid(&p);
}
