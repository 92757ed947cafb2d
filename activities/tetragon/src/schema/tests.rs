//! Tests: reference policies that must pass, and one or more refusals per rule.

mod crd;
mod loader;
mod version;

use serde_json::{Value, json};

use super::{Violation, min_tetragon_version, validate};

/// The six IMDS / ECS / EKS Pod Identity addresses (IPv4, IPv6, v4-mapped).
pub(super) const IMDS_ADDRS: [&str; 6] = [
    "169.254.169.254",
    "fd00:ec2::254",
    "::ffff:169.254.169.254",
    "169.254.170.2",
    "169.254.170.23",
    "fd00:ec2::23",
];

/// A cluster-scoped TracingPolicy around `spec`.
pub(super) fn tp(spec: Value) -> Value {
    json!({
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": {"name": "t1552-imds-audit", "labels": {"app.kubernetes.io/managed-by": "qflows"}},
        "spec": spec,
    })
}

/// A TracingPolicyNamespaced around `spec`.
pub(super) fn tpn(spec: Value) -> Value {
    json!({
        "apiVersion": "cilium.io/v1alpha1",
        "kind": "TracingPolicyNamespaced",
        "metadata": {"name": "t1552-imds-audit", "namespace": "payments"},
        "spec": spec,
    })
}

/// A `security_socket_connect` kprobe (socket, sockaddr) with the given selectors.
pub(super) fn connect_kprobe(selectors: Value) -> Value {
    json!({
        "call": "security_socket_connect",
        "syscall": false,
        "args": [{"index": 0, "type": "socket"}, {"index": 1, "type": "sockaddr"}],
        "selectors": selectors,
    })
}

/// A policy with one `security_socket_connect` kprobe holding `selector`.
pub(super) fn with_selector(selector: Value) -> Value {
    tp(json!({"kprobes": [connect_kprobe(json!([selector]))]}))
}

/// A policy with one kprobe on `fn_name` (syscall: false) with `args` and one selector.
pub(super) fn kprobe_with(call: &str, args: Value, selector: Value) -> Value {
    tp(
        json!({"kprobes": [{"call": call, "syscall": false, "args": args, "selectors": [selector]}]}),
    )
}

#[track_caller]
pub(super) fn assert_valid(policy: &Value) {
    if let Err(v) = validate(policy) {
        let lines: Vec<String> = v.iter().map(Violation::to_string).collect();
        panic!("expected valid, got:\n{}", lines.join("\n"));
    }
}

/// Asserts the policy is refused with a violation at `path` whose message contains `msg`.
#[track_caller]
pub(super) fn assert_refused(policy: &Value, path: &str, msg: &str) {
    let errs = validate(policy).expect_err("expected a violation");
    assert!(
        errs.iter()
            .any(|v| v.path == path && v.message.contains(msg)),
        "expected `{path}: …{msg}…`, got:\n{}",
        errs.iter()
            .map(Violation::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---- reference designs (research B5/B6) -------------------------------------------------------

/// B5: the seed example (syscall hook, sockaddr, SAddr, matchBinaries, Sigkill).
pub(super) fn seed_example() -> Value {
    tp(json!({"kprobes": [{
        "call": "sys_connect",
        "syscall": true,
        "args": [{"index": 1, "type": "sockaddr"}],
        "selectors": [{
            "matchArgs": [{"index": 1, "operator": "SAddr", "values": ["169.254.169.254"]}],
            "matchBinaries": [{"operator": "In", "values": ["/usr/bin/curl", "/usr/bin/wget"]}],
            "matchActions": [{"action": "Sigkill"}],
        }],
    }]}))
}

/// B6 (a) audit: security_socket_connect, six addresses, all pods, Post rate-limited.
pub(super) fn imds_audit() -> Value {
    tp(json!({
        "podSelector": {},
        "kprobes": [{
            "call": "security_socket_connect",
            "syscall": false,
            "message": "connection to the instance metadata service",
            "tags": ["mitre.t1552.005", "qflows"],
            "args": [{"index": 0, "type": "socket"}, {"index": 1, "type": "sockaddr"}],
            "selectors": [{
                "matchArgs": [{"index": 1, "operator": "SAddr", "values": IMDS_ADDRS}],
                "matchActions": [{"action": "Post", "rateLimit": "1m", "rateLimitScope": "process"}],
            }],
        }],
    }))
}

/// B6 (a) block with Sigkill (works with kprobe_multi).
pub(super) fn imds_block_sigkill() -> Value {
    let mut p = imds_audit();
    p["metadata"]["name"] = json!("t1552-imds-block-sigkill");
    p["spec"]["podSelector"] = json!({"matchLabels": {"app": "web-api"}});
    p["spec"]["kprobes"][0]["selectors"][0]["matchActions"] = json!([{"action": "Sigkill"}]);
    p
}

/// B6 (a) block with Override -1 (needs disable-kprobe-multi), shipped in monitor mode.
pub(super) fn imds_block_override() -> Value {
    let mut p = imds_audit();
    p["metadata"]["name"] = json!("t1552-imds-block-override");
    p["spec"]["options"] = json!([
        {"name": "disable-kprobe-multi", "value": "1"},
        {"name": "policy-mode", "value": "monitor"},
    ]);
    p["spec"]["kprobes"][0]["selectors"][0]["matchActions"] =
        json!([{"action": "Override", "argError": -1}, {"action": "Post"}]);
    p
}

/// B6 (a) block on the BPF-LSM hook.
pub(super) fn imds_block_lsm() -> Value {
    tp(json!({
        "podSelector": {"matchExpressions": [{"key": "k8s:io.kubernetes.pod.namespace", "operator": "In", "values": ["payments"]}]},
        "lsmhooks": [{
            "hook": "socket_connect",
            "args": [{"index": 0, "type": "socket"}, {"index": 1, "type": "sockaddr"}],
            "selectors": [{
                "matchArgs": [{"index": 1, "operator": "SAddr", "values": IMDS_ADDRS}],
                "matchActions": [{"action": "Override", "argError": -1}],
            }],
        }],
    }))
}

/// B6 (c): syscall list, callNotFound, namespaces, Override + Sigkill.
pub(super) fn escape_block_list() -> Value {
    tp(json!({
        "podSelector": {"matchLabels": {"app": "web-api"}},
        "lists": [{"name": "escape", "type": "syscalls", "values": [
            "sys_setns", "sys_unshare", "sys_mount", "sys_fsmount", "sys_move_mount", "sys_open_tree", "sys_pivot_root",
        ]}],
        "kprobes": [{
            "call": "list:escape",
            "syscall": true,
            "ignore": {"callNotFound": true},
            "selectors": [{
                "matchNamespaces": [{"namespace": "Mnt", "operator": "NotIn", "values": ["host_ns"]}],
                "matchActions": [{"action": "Override", "argError": -1}, {"action": "Sigkill"}],
            }],
        }],
    }))
}

/// B6 (d) block: setuid(0) by a non-root caller, via matchData.
pub(super) fn privesc_block() -> Value {
    tp(json!({
        "lists": [{"name": "setid", "type": "syscalls", "values": ["sys_setuid", "sys_setgid"]}],
        "kprobes": [{
            "call": "list:setid",
            "syscall": true,
            "args": [{"index": 0, "type": "int"}],
            "data": [{"index": 0, "type": "int", "source": "current_task", "resolve": "cred.uid.val"}],
            "selectors": [{
                "matchArgs": [{"index": 0, "operator": "Equal", "values": ["0"]}],
                "matchData": [{"index": 0, "operator": "NotEqual", "values": ["0"]}],
                "matchActions": [{"action": "Override", "argError": -1}],
            }],
        }],
    }))
}

/// B6 (e) audit: stratum ports outside private ranges.
pub(super) fn mining_audit() -> Value {
    tp(json!({"kprobes": [{
        "call": "tcp_connect",
        "syscall": false,
        "args": [{"index": 0, "type": "sock"}],
        "selectors": [{
            "matchArgs": [
                {"index": 0, "operator": "DPort", "values": ["3333:3336", "3357", "4444", "5555", "5556", "7777", "7778", "9999", "14433", "14444", "45560", "45700"]},
                {"index": 0, "operator": "NotDAddr", "values": ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"]},
            ],
            "matchActions": [{"action": "Post", "rateLimit": "5m"}],
        }],
    }]}))
}

/// B6 (e') block by image, scoped with containerSelector `repo`.
pub(super) fn mining_block_by_image() -> Value {
    let mut p = mining_audit();
    p["spec"]["containerSelector"] = json!({"matchExpressions": [{
        "key": "repo", "operator": "In",
        "values": ["111122223333.dkr.ecr.us-east-1.amazonaws.com/web-api", "docker.io/library/nginx"],
    }]});
    p["spec"]["kprobes"][0]["selectors"][0]["matchActions"] = json!([{"action": "Sigkill"}]);
    p
}

/// B6 (b) scanner exec: security_bprm_check Postfix → Override.
pub(super) fn scanner_exec_block() -> Value {
    tp(json!({
        "options": [{"name": "disable-kprobe-multi", "value": "true"}],
        "kprobes": [{
            "call": "security_bprm_check",
            "syscall": false,
            "args": [{"index": 0, "type": "linux_binprm"}],
            "selectors": [{
                "matchArgs": [{"index": 0, "operator": "Postfix", "values": ["/nmap", "/masscan", "/zmap", "/rustscan", "/naabu", "/unicornscan", "/hping3"]}],
                "matchActions": [{"action": "Override", "argError": -1}],
            }],
        }],
    }))
}

/// B6 (b) raw sockets: security_socket_create(int family, int type, int protocol, int kern).
pub(super) fn raw_socket_audit() -> Value {
    tp(json!({"kprobes": [{
        "call": "security_socket_create",
        "syscall": false,
        "args": [{"index": 0, "type": "int"}, {"index": 1, "type": "int"}, {"index": 2, "type": "int"}, {"index": 3, "type": "int"}],
        "selectors": [
            {"matchArgs": [{"index": 1, "operator": "Equal", "values": ["3"]}, {"index": 3, "operator": "Equal", "values": ["0"]}],
             "matchBinaries": [{"operator": "NotIn", "values": ["/usr/bin/ping", "/bin/ping"]}]},
            {"matchArgs": [{"index": 0, "operator": "Equal", "values": ["17"]}, {"index": 3, "operator": "Equal", "values": ["0"]}]},
        ],
    }]}))
}

/// B6 (f') v1.7: fd_install(int, file) with FileType sock from shells.
pub(super) fn revshell_fdinstall() -> Value {
    tp(json!({"kprobes": [{
        "call": "fd_install",
        "syscall": false,
        "args": [{"index": 0, "type": "int"}, {"index": 1, "type": "file"}],
        "selectors": [{
            "matchArgs": [{"index": 1, "operator": "FileType", "values": ["sock"]}],
            "matchBinaries": [{"operator": "In", "values": ["/bin/bash", "/usr/bin/bash", "/bin/sh", "/usr/bin/dash"]}],
        }],
    }]}))
}

#[test]
fn reference_designs_are_valid() {
    for (name, p) in [
        ("seed", seed_example()),
        ("imds-audit", imds_audit()),
        ("imds-block-sigkill", imds_block_sigkill()),
        ("imds-block-override", imds_block_override()),
        ("imds-block-lsm", imds_block_lsm()),
        ("escape-list", escape_block_list()),
        ("privesc", privesc_block()),
        ("mining-audit", mining_audit()),
        ("mining-by-image", mining_block_by_image()),
        ("scanner-exec", scanner_exec_block()),
        ("raw-socket", raw_socket_audit()),
        ("fd-install", revshell_fdinstall()),
    ] {
        if let Err(v) = validate(&p) {
            panic!("{name} refused: {v:?}");
        }
    }
}

#[test]
fn namespaced_policy_is_valid() {
    let mut p = imds_block_sigkill();
    p["kind"] = json!("TracingPolicyNamespaced");
    p["metadata"]["namespace"] = json!("payments");
    assert_valid(&p);
    assert_valid(&tpn(json!({"kprobes": [connect_kprobe(json!([]))]})));
}

#[test]
fn violations_display_as_path_colon_message() {
    let v = Violation::new("spec.kprobes[0].call", "Required value");
    assert_eq!(v.to_string(), "spec.kprobes[0].call: Required value");
}

#[test]
fn collects_violations_from_every_layer() {
    let mut p = seed_example();
    p["metadata"]["name"] = json!("Bad_Name");
    p["spec"]["kprobes"][0]["bogus"] = json!(1);
    p["spec"]["kprobes"][0]["selectors"][0]["matchArgs"][0]["operator"] = json!("DAddr");
    let errs = validate(&p).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|v| v.path.as_str()).collect();
    assert!(paths.contains(&"metadata.name"), "{paths:?}");
    assert!(paths.contains(&"spec.kprobes[0].bogus"), "{paths:?}");
    assert!(
        paths.contains(&"spec.kprobes[0].selectors[0].matchArgs[0].operator"),
        "{paths:?}"
    );
}

#[test]
fn validates_thousands_of_policies_quickly() {
    let policies: Vec<Value> = (0..500)
        .flat_map(|_| {
            [
                imds_audit(),
                escape_block_list(),
                mining_audit(),
                privesc_block(),
            ]
        })
        .collect();
    let start = std::time::Instant::now();
    for p in &policies {
        assert!(validate(p).is_ok());
        let _ = min_tetragon_version(p);
    }
    // Generous even for unoptimised builds: ~2000 policies.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}
