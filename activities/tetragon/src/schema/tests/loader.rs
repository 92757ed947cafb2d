//! Layer 3: Tetragon's loader and selector-compiler rules.

use serde_json::{Value, json};

use super::*;

const SEL: &str = "spec.kprobes[0].selectors[0]";

fn arg_filter(index: u64, op: &str, values: Value) -> Value {
    json!({"matchArgs": [{"index": index, "operator": op, "values": values}]})
}

// ---- limits ------------------------------------------------------------------------------------

#[test]
fn at_most_five_selectors_per_hook() {
    let sel =
        json!({"matchArgs": [{"index": 1, "operator": "SAddr", "values": ["169.254.169.254"]}]});
    let five = tp(json!({"kprobes": [connect_kprobe(json!(vec![sel.clone(); 5]))]}));
    assert_valid(&five);
    let six = tp(json!({"kprobes": [connect_kprobe(json!(vec![sel; 6]))]}));
    assert_refused(
        &six,
        "spec.kprobes[0].selectors",
        "no more than 5 selectors supported (6 provided)",
    );
}

#[test]
fn at_most_five_arg_filters_per_selector() {
    let f = json!({"index": 1, "operator": "SPort", "values": ["80"]});
    let d = json!({"index": 0, "operator": "Equal", "values": ["0"]});
    let mut p = tp(json!({"kprobes": [{
        "call": "security_socket_connect", "syscall": false,
        "args": [{"index": 0, "type": "socket"}, {"index": 1, "type": "sockaddr"}],
        "data": [{"index": 0, "type": "int", "source": "current_task", "resolve": "cred.uid.val"}],
        "selectors": [{"matchArgs": vec![f.clone(); 4], "matchData": [d.clone()]}],
    }]}));
    assert_valid(&p);
    p["spec"]["kprobes"][0]["selectors"][0]["matchArgs"] = json!(vec![f; 5]);
    assert_refused(&p, &format!("{SEL}.matchArgs"), "supports up to 5 filters");
}

#[test]
fn at_most_four_values_for_numeric_operators() {
    let args = json!([{"index": 0, "type": "int"}]);
    for op in [
        "Equal",
        "NotEqual",
        "GT",
        "GreaterThan",
        "LT",
        "LessThan",
        "Mask",
    ] {
        let ok = kprobe_with(
            "security_socket_create",
            args.clone(),
            arg_filter(0, op, json!(["1", "2", "3", "4"])),
        );
        assert_valid(&ok);
        let bad = kprobe_with(
            "security_socket_create",
            args.clone(),
            arg_filter(0, op, json!(["1", "2", "3", "4", "5"])),
        );
        assert_refused(
            &bad,
            &format!("{SEL}.matchArgs[0].values"),
            "consider using InMap",
        );
    }
    let bad = kprobe_with(
        "security_socket_create",
        args.clone(),
        arg_filter(0, "InRange", json!(["1:2", "3:4", "5:6", "7:8", "9:10"])),
    );
    assert_refused(
        &bad,
        &format!("{SEL}.matchArgs[0].values"),
        "more than 4 values",
    );
    // strings, addresses and ports live in maps: no limit
    let many: Vec<String> = (0..20).map(|i| format!("/etc/file{i}")).collect();
    assert_valid(&kprobe_with(
        "security_file_open",
        json!([{"index": 0, "type": "file"}]),
        arg_filter(0, "Prefix", json!(many)),
    ));
    assert_valid(&kprobe_with(
        "security_file_open",
        json!([{"index": 0, "type": "file"}]),
        arg_filter(0, "Equal", json!(many)),
    ));
    let ports: Vec<String> = (1000..1020).map(|p| p.to_string()).collect();
    assert_valid(&with_selector(arg_filter(1, "SPort", json!(ports))));
}

#[test]
fn at_most_three_actions_per_selector() {
    let acts = json!([{"action": "Post"}, {"action": "Sigkill"}, {"action": "NoPost"}, {"action": "Post"}]);
    assert_refused(
        &with_selector(json!({"matchActions": acts})),
        &format!("{SEL}.matchActions"),
        "only 3 actions",
    );
}

#[test]
fn at_most_five_args_and_data_per_hook() {
    let args: Vec<Value> = (0..5).map(|i| json!({"index": i, "type": "int"})).collect();
    let mut p = tp(
        json!({"kprobes": [{"call": "security_socket_create", "syscall": false, "args": args}]}),
    );
    assert_valid(&p);
    p["spec"]["kprobes"][0]["data"] =
        json!([{"index": 0, "type": "int", "source": "current_task", "resolve": "pid"}]);
    assert_refused(&p, "spec.kprobes[0]", "too many arguments, max 5");
}

#[test]
fn tags_and_message_lengths() {
    let mut p = imds_audit();
    p["spec"]["kprobes"][0]["tags"] = json!(["ok", "x"]);
    assert_refused(&p, "spec.kprobes[0].tags[1]", "too short");
    p["spec"]["kprobes"][0]["tags"] = json!(["t".repeat(129)]);
    assert_refused(&p, "spec.kprobes[0].tags[0]", "too long");
    p["spec"]["kprobes"][0]["tags"] = json!(["t".repeat(128), "ab"]);
    assert_valid(&p);
    p["spec"]["kprobes"][0]["message"] = json!("x");
    assert_refused(&p, "spec.kprobes[0].message", "too short");
    p["spec"]["kprobes"][0]["message"] = json!("m".repeat(257));
    assert_refused(&p, "spec.kprobes[0].message", "too long");
    p["spec"]["kprobes"][0]["message"] = json!("m".repeat(256));
    assert_valid(&p);
}

#[test]
fn match_binaries_paths_are_limited() {
    let long = format!("/{}", "b".repeat(255));
    let p = with_selector(json!({"matchBinaries": [{"operator": "In", "values": [long]}]}));
    assert_refused(
        &p,
        &format!("{SEL}.matchBinaries[0].values[0]"),
        "longer than 255",
    );
    let ok = format!("/{}", "b".repeat(254));
    assert_valid(&with_selector(
        json!({"matchBinaries": [{"operator": "NotIn", "values": [ok]}]}),
    ));
    let p = with_selector(
        json!({"matchBinaries": [{"operator": "Prefix", "values": ["/usr/"], "followChildren": true}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchBinaries[0].followChildren"),
        "followChildren not yet implemented",
    );
}

// ---- operator / argument type ------------------------------------------------------------------

#[test]
fn sockaddr_accepts_only_source_operators_and_family() {
    for (op, values) in [
        ("SAddr", json!(["10.0.0.0/8"])),
        ("NotSAddr", json!(["fd00::/8"])),
        ("SPort", json!(["80", "443"])),
        ("NotSPort", json!(["1024:65535"])),
        ("SPortPriv", json!([])),
        ("NotSportPriv", json!([])),
        ("Family", json!(["AF_INET", "10"])),
    ] {
        assert_valid(&with_selector(arg_filter(1, op, values)));
    }
    for op in [
        "DAddr",
        "NotDAddr",
        "DPort",
        "NotDPort",
        "DPortPriv",
        "NotDPortPriv",
        "Protocol",
        "State",
    ] {
        let p = with_selector(arg_filter(1, op, json!(["1"])));
        assert_refused(
            &p,
            &format!("{SEL}.matchArgs[0].operator"),
            "sockaddr only supports [not]saddr, [not]sport[priv], and family",
        );
    }
    for op in ["Equal", "NotEqual", "GT", "LT", "Mask"] {
        let p = with_selector(arg_filter(1, op, json!(["1"])));
        assert_refused(
            &p,
            &format!("{SEL}.matchArgs[0].operator"),
            "do not support operator",
        );
    }
}

#[test]
fn sock_types_refuse_numeric_operators_and_accept_network_ones() {
    for ty in ["sock", "skb", "socket"] {
        let args = json!([{"index": 0, "type": ty}]);
        for op in ["Equal", "NotEqual", "GT", "LT", "Mask"] {
            let p = kprobe_with("tcp_connect", args.clone(), arg_filter(0, op, json!(["1"])));
            assert_refused(
                &p,
                &format!("{SEL}.matchArgs[0].operator"),
                "do not support operator",
            );
        }
        for (op, v) in [
            ("DAddr", "1.1.1.1"),
            ("DPort", "443"),
            ("Protocol", "IPPROTO_TCP"),
            ("State", "TCP_SYN_SENT"),
            ("Family", "AF_INET6"),
        ] {
            assert_valid(&kprobe_with(
                "tcp_connect",
                args.clone(),
                arg_filter(0, op, json!([v])),
            ));
        }
    }
}

#[test]
fn string_types_refuse_network_operators() {
    for ty in [
        "string",
        "char_buf",
        "file",
        "path",
        "fd",
        "linux_binprm",
        "dentry",
    ] {
        let args = json!([{"index": 0, "type": ty}]);
        for op in ["SAddr", "DAddr", "SPort", "DPort", "Family", "SPortPriv"] {
            let p = kprobe_with(
                "security_file_open",
                args.clone(),
                arg_filter(0, op, json!(["1"])),
            );
            assert_refused(
                &p,
                &format!("{SEL}.matchArgs[0].operator"),
                "operators specified for non-sock",
            );
        }
        assert_valid(&kprobe_with(
            "security_file_open",
            args.clone(),
            arg_filter(0, "Prefix", json!(["/etc/"])),
        ));
        assert_valid(&kprobe_with(
            "security_file_open",
            args,
            arg_filter(0, "Equal", json!(["/etc/shadow"])),
        ));
    }
    // integer operators on strings parse numbers
    let p = kprobe_with(
        "security_file_open",
        json!([{"index": 0, "type": "file"}]),
        arg_filter(0, "GT", json!(["1"])),
    );
    assert_refused(&p, &format!("{SEL}.matchArgs[0].operator"), "unsupported");
}

#[test]
fn integer_values_are_parsed_like_go() {
    let int = json!([{"index": 0, "type": "int"}]);
    assert_valid(&kprobe_with(
        "security_socket_create",
        int.clone(),
        arg_filter(0, "Equal", json!(["0x11", "-1", "010"])),
    ));
    let p = kprobe_with(
        "security_socket_create",
        int.clone(),
        arg_filter(0, "Equal", json!(["AF_PACKET"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "not a valid int",
    );
    let p = kprobe_with(
        "security_socket_create",
        int,
        arg_filter(0, "Equal", json!(["4294967295"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "not a valid int",
    );
    let u32_arg = json!([{"index": 0, "type": "uint32"}]);
    let p = kprobe_with(
        "security_socket_create",
        u32_arg,
        arg_filter(0, "Equal", json!(["-1"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "not a valid uint32",
    );
    let caps = json!([{"index": 0, "type": "cap_effective"}]);
    assert_valid(&kprobe_with(
        "security_capset",
        caps.clone(),
        arg_filter(0, "Mask", json!(["CAP_SYS_ADMIN,CAP_NET_RAW", "0x200000"])),
    ));
    let p = kprobe_with(
        "security_capset",
        caps,
        arg_filter(0, "Mask", json!(["CAP_WIZARD"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "not a valid cap_effective",
    );
}

#[test]
fn ranges_maps_and_file_types() {
    let int = json!([{"index": 0, "type": "int"}]);
    assert_valid(&kprobe_with(
        "security_socket_create",
        int.clone(),
        arg_filter(0, "InRange", json!(["0:10", "0x10:0x20"])),
    ));
    let p = kprobe_with(
        "security_socket_create",
        int.clone(),
        arg_filter(0, "InRange", json!(["5"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "range should be 'min:max'",
    );
    let p = kprobe_with(
        "security_file_open",
        json!([{"index": 0, "type": "file"}]),
        arg_filter(0, "NotInRange", json!(["1:2"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].operator"),
        "unsupported for range operators",
    );
    assert_valid(&kprobe_with(
        "security_socket_create",
        int.clone(),
        arg_filter(0, "InMap", json!(["1", "5:9", "-3"])),
    ));
    let p = kprobe_with(
        "security_socket_create",
        int,
        arg_filter(0, "InMap", json!(["0x10"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "expected a decimal int",
    );

    let file = json!([{"index": 0, "type": "int"}, {"index": 1, "type": "file"}]);
    assert_valid(&kprobe_with(
        "fd_install",
        file.clone(),
        arg_filter(1, "NotFileType", json!(["socket", "fifo"])),
    ));
    let p = kprobe_with(
        "fd_install",
        file.clone(),
        arg_filter(1, "FileType", json!(["socks"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "unknown file type",
    );
    let p = kprobe_with(
        "fd_install",
        file,
        arg_filter(0, "FileType", json!(["sock"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].operator"),
        "non-file/path type",
    );
}

#[test]
fn capabilities_gained_needs_two_capability_args() {
    let args = json!([{"index": 0, "type": "cap_effective"}, {"index": 1, "type": "cap_effective"}, {"index": 2, "type": "int"}]);
    let ok = json!({"matchArgs": [{"args": [0, 1], "operator": "CapabilitiesGained", "values": ["CAP_SYS_ADMIN"]}]});
    assert_valid(&kprobe_with("commit_creds", args.clone(), ok));
    let one = json!({"matchArgs": [{"args": [0], "operator": "CapabilitiesGained"}]});
    assert_refused(
        &kprobe_with("commit_creds", args.clone(), one),
        &format!("{SEL}.matchArgs[0].args"),
        "requires two args",
    );
    let not_caps = json!({"matchArgs": [{"args": [0, 2], "operator": "CapabilitiesGained"}]});
    assert_refused(
        &kprobe_with("commit_creds", args, not_caps),
        &format!("{SEL}.matchArgs[0].args"),
        "capability type",
    );
}

#[test]
fn string_operator_limits() {
    let file = json!([{"index": 0, "type": "file"}]);
    let p = kprobe_with(
        "security_file_open",
        file.clone(),
        arg_filter(0, "Prefix", json!(["p".repeat(257)])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "longer than 256",
    );
    let p = kprobe_with(
        "security_file_open",
        file.clone(),
        arg_filter(0, "Postfix", json!(["p".repeat(128)])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "longer than 127",
    );
    let p = kprobe_with(
        "security_file_open",
        file.clone(),
        arg_filter(0, "Postfix", json!([""])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "empty Postfix",
    );
    let p = kprobe_with(
        "security_file_open",
        file,
        arg_filter(0, "SubString", json!(["s".repeat(100)])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[0]"),
        "bigger than 100",
    );
    let p = with_selector(json!({"matchArgs": [{"operator": "CelExpr", "values": ["a", "b"]}]}));
    assert_refused(&p, &format!("{SEL}.matchArgs[0].values"), "single CelExpr");
}

#[test]
fn match_args_must_reference_a_spec_arg() {
    let p = with_selector(arg_filter(2, "SAddr", json!(["10.0.0.1"])));
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].index"),
        "argFilter for unknown index",
    );
    let p = with_selector(
        json!({"matchArgs": [{"args": [2], "operator": "SAddr", "values": ["10.0.0.1"]}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].args[0]"),
        "wrong ArgSelector.Arg value 2",
    );
    // `args: [n]` selects by position: two spec args may share an index.
    let p = kprobe_with(
        "security_socket_connect",
        json!([{"index": 1, "type": "sockaddr"}, {"index": 1, "type": "sock"}]),
        json!({"matchArgs": [{"args": [1], "operator": "DAddr", "values": ["10.0.0.1"]}]}),
    );
    assert_valid(&p);
    // without `args`, the first spec arg with that index decides the type (sockaddr: no DAddr)
    let p = kprobe_with(
        "security_socket_connect",
        json!([{"index": 1, "type": "sockaddr"}, {"index": 1, "type": "sock"}]),
        arg_filter(1, "DAddr", json!(["10.0.0.1"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].operator"),
        "sockaddr only supports",
    );
    let p = tp(
        json!({"kprobes": [{"call": "security_socket_connect", "syscall": false,
        "args": [{"index": 0, "type": "socket"}],
        "selectors": [{"matchData": [{"index": 0, "operator": "Equal", "values": ["0"]}]}]}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchData[0].index"),
        "matchData index out of bounds",
    );
}

// ---- values ------------------------------------------------------------------------------------

#[test]
fn port_values() {
    for good in ["0", "80", "65535", "1024:65535", "3333:3336", "80:80"] {
        assert_valid(&with_selector(arg_filter(1, "SPort", json!([good]))));
    }
    for (bad, why) in [
        ("65536", "0..65535"),
        ("10:5", "min is greater than max"),
        ("http", "decimal port"),
        ("1:2:3", "range should be"),
        ("0x50", "decimal port"),
        ("-1", "decimal port"),
        ("80:", "decimal port"),
    ] {
        let p = with_selector(arg_filter(1, "NotSPort", json!([bad])));
        assert_refused(&p, &format!("{SEL}.matchArgs[0].values[0]"), why);
    }
}

#[test]
fn address_values() {
    assert_valid(&with_selector(arg_filter(1, "SAddr", json!(IMDS_ADDRS))));
    assert_valid(&with_selector(arg_filter(
        1,
        "NotSAddr",
        json!(["0.0.0.0/0", "::/0", "10.1.2.3/8"]),
    )));
    for bad in [
        "169.254.169.254:80",
        "999.1.1.1",
        "10.0.0.0/33",
        "fd00::/129",
        "metadata.google.internal",
        "10.0.0.0/",
    ] {
        let p = with_selector(arg_filter(1, "SAddr", json!([bad])));
        assert_refused(
            &p,
            &format!("{SEL}.matchArgs[0].values[0]"),
            "IPv4/IPv6 address or CIDR",
        );
    }
    let p = kprobe_with(
        "tcp_connect",
        json!([{"index": 0, "type": "sock"}]),
        arg_filter(0, "NotDAddr", json!(["10.0.0.0/8", "nope"])),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchArgs[0].values[1]"),
        "IPv4/IPv6 address or CIDR",
    );
}

#[test]
fn namespaces_capabilities_and_pids() {
    let p = with_selector(
        json!({"matchNamespaces": [{"namespace": "Mnt", "operator": "In", "values": ["host"]}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchNamespaces[0].values[0]"),
        "numeric or \"host_ns\"",
    );
    let p = with_selector(
        json!({"matchNamespaces": [{"namespace": "Pid", "operator": "In", "values": ["1", "2", "3", "4", "5"]}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchNamespaces[0].values"),
        "up to 4 values",
    );
    let p = with_selector(
        json!({"matchNamespaceChanges": [{"operator": "In", "values": ["Mnt", "Fs"]}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchNamespaceChanges[0].values[1]"),
        "unknown namespace type",
    );
    let p = with_selector(
        json!({"matchCapabilities": [{"operator": "NotIn", "values": ["CAP_SYS_ADMIN", "SYS_ADMIN"]}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchCapabilities[0].values[1]"),
        "unknown capability",
    );
    assert_valid(&with_selector(
        json!({"matchCapabilities": [{"operator": "In", "values": ["cap_sys_admin", "DAC_OVERRIDE"]}]}),
    ));
    let p = with_selector(json!({"matchPIDs": [{"operator": "NotIn", "values": [-1]}]}));
    assert_refused(
        &p,
        &format!("{SEL}.matchPIDs[0].values[0]"),
        "must not be negative",
    );
}

// ---- actions -----------------------------------------------------------------------------------

#[test]
fn override_only_on_syscalls_and_security_functions() {
    let ovr = json!({"matchActions": [{"action": "Override", "argError": -1}]});
    let p = kprobe_with(
        "tcp_connect",
        json!([{"index": 0, "type": "sock"}]),
        ovr.clone(),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchActions[0].action"),
        "only with syscalls and security_ hooks",
    );
    // security_* needs kprobe_multi off
    let p = with_selector(ovr.clone());
    assert_refused(
        &p,
        &format!("{SEL}.matchActions[0].action"),
        "disable-kprobe-multi",
    );
    let mut ok = with_selector(ovr.clone());
    ok["spec"]["options"] = json!([{"name": "disable-kprobe-multi", "value": "1"}]);
    assert_valid(&ok);
    ok["spec"]["options"] = json!([{"name": "disable-kprobe-multi", "value": "0"}]);
    assert_refused(
        &ok,
        &format!("{SEL}.matchActions[0].action"),
        "disable-kprobe-multi",
    );
    // syscalls are fine
    assert_valid(&tp(
        json!({"kprobes": [{"call": "sys_ptrace", "syscall": true, "selectors": [ovr.clone()]}]}),
    ));
    // never on tracepoints or fentries
    let p = tp(
        json!({"tracepoints": [{"subsystem": "syscalls", "event": "sys_enter_ptrace", "selectors": [ovr.clone()]}]}),
    );
    assert_refused(
        &p,
        "spec.tracepoints[0].selectors[0].matchActions[0].action",
        "not supported on tracepoints",
    );
    let p = tp(
        json!({"fentries": [{"call": "security_file_open", "syscall": false, "selectors": [ovr]}]}),
    );
    assert_refused(
        &p,
        "spec.fentries[0].selectors[0].matchActions[0].action",
        "enforcement is not supported for fentry",
    );
}

#[test]
fn rate_limits_and_stack_traces_only_on_post() {
    let p = with_selector(json!({"matchActions": [{"action": "Sigkill", "rateLimit": "1m"}]}));
    assert_refused(
        &p,
        &format!("{SEL}.matchActions[0].rateLimit"),
        "rate limiting can only applied to post action",
    );
    let p = with_selector(json!({"matchActions": [{"action": "Post", "rateLimit": "1d"}]}));
    assert_refused(
        &p,
        &format!("{SEL}.matchActions[0].rateLimit"),
        "rateLimit value 1d is invalid",
    );
    let p = with_selector(
        json!({"matchActions": [{"action": "Post", "rateLimit": "30", "rateLimitScope": "pod"}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchActions[0].rateLimitScope"),
        "rateLimitScope value pod is invalid",
    );
    let p =
        with_selector(json!({"matchActions": [{"action": "Sigkill", "kernelStackTrace": true}]}));
    assert_refused(
        &p,
        &format!("{SEL}.matchActions[0]"),
        "only be used along Post",
    );
    assert_valid(&with_selector(
        json!({"matchActions": [{"action": "Post", "userStackTrace": true, "rateLimit": "1h", "rateLimitScope": "global"}]}),
    ));
}

#[test]
fn notify_enforcer_needs_enforcers() {
    let sel = json!({"matchActions": [{"action": "NotifyEnforcer", "argError": -1}]});
    let mut p = tp(
        json!({"tracepoints": [{"subsystem": "raw_syscalls", "event": "sys_enter", "selectors": [sel]}]}),
    );
    assert_refused(
        &p,
        "spec.tracepoints[0].selectors[0].matchActions[0].action",
        "no enforcers",
    );
    p["spec"]["enforcers"] = json!([{"calls": ["sys_ptrace", "security_file_open"]}]);
    assert_valid(&p);
    p["spec"]["enforcers"] = json!([{"calls": ["tcp_connect"]}]);
    assert_refused(&p, "spec.enforcers[0].calls[0]", "appears to be neither");
    p["spec"]["enforcers"] = json!([{"calls": ["sys_ptrace"]}, {"calls": ["sys_mount"]}]);
    assert_refused(&p, "spec.enforcers", "single enforcer");
}

#[test]
fn lsm_hooks_allow_few_actions() {
    let mut p = imds_block_lsm();
    p["spec"]["lsmhooks"][0]["selectors"][0]["matchActions"] =
        json!([{"action": "GetUrl", "argUrl": "http://x"}]);
    assert_refused(
        &p,
        "spec.lsmhooks[0].selectors[0].matchActions[0].action",
        "not supported for lsm hooks",
    );
    p["spec"]["lsmhooks"][0]["selectors"][0]["matchActions"] =
        json!([{"action": "Sigkill"}, {"action": "Post"}]);
    assert_valid(&p);
    p["spec"]["lsmhooks"][0]["selectors"][0]["matchReturnArgs"] =
        json!([{"index": 0, "operator": "Equal", "values": ["0"]}]);
    assert_refused(
        &p,
        "spec.lsmhooks[0].selectors[0].matchReturnArgs",
        "not supported for lsm",
    );
}

#[test]
fn return_arg_action_and_type() {
    let mut p = tp(
        json!({"kprobes": [{"call": "inet_csk_accept", "syscall": false, "return": true,
        "returnArg": {"index": 0, "type": "sock"}, "returnArgAction": "TrackSock"}]}),
    );
    assert_valid(&p);
    p["spec"]["kprobes"][0]["returnArgAction"] = json!("Post");
    assert_refused(&p, "spec.kprobes[0].returnArgAction", "unsupported");
    let p = tp(
        json!({"kprobes": [{"call": "inet_csk_accept", "syscall": false, "return": true, "returnArg": {"index": 0}}]}),
    );
    assert_refused(&p, "spec.kprobes[0].returnArg.type", "'auto' unsupported");
    let p = tp(
        json!({"kprobes": [{"call": "security_file_open", "syscall": false, "return": true,
        "args": [{"index": 0, "type": "file"}],
        "returnArg": {"index": 0, "type": "int"},
        "selectors": [{"matchReturnArgs": [{"index": 0, "operator": "SAddr", "values": ["1.1.1.1"]}]}]}]}),
    );
    assert_refused(
        &p,
        &format!("{SEL}.matchReturnArgs[0].operator"),
        "non-sock",
    );
}

// ---- hooks, calls, lists -----------------------------------------------------------------------

#[test]
fn kprobe_args_need_explicit_types_and_small_indexes() {
    let p = tp(
        json!({"kprobes": [{"call": "security_file_open", "syscall": false, "args": [{"index": 0}]}]}),
    );
    assert_refused(
        &p,
        "spec.kprobes[0].args[0].type",
        "type 'auto' is invalid for kprobes",
    );
    let p = tp(json!({"kprobes": [{"call": "sys_openat", "args": [{"index": 5, "type": "int"}]}]}));
    assert_refused(&p, "spec.kprobes[0].args[0].index", "out of bounds");
    let p = tp(
        json!({"kprobes": [{"call": "sys_openat", "args": [{"index": 0, "type": "int", "source": "current_task"}]}]}),
    );
    assert_refused(
        &p,
        "spec.kprobes[0].args[0].source",
        "not allowed to have source",
    );
    let p = tp(
        json!({"kprobes": [{"call": "sys_openat", "data": [{"index": 0, "type": "int", "source": "task", "resolve": "pid"}]}]}),
    );
    assert_refused(&p, "spec.kprobes[0].data[0].source", "wrong source");
    let p = tp(
        json!({"kprobes": [{"call": "sys_openat", "data": [{"index": 0, "type": "int", "source": "current_task"}]}]}),
    );
    assert_refused(&p, "spec.kprobes[0].data[0].resolve", "missing 'resolve'");
}

#[test]
fn syscall_defaults_to_true() {
    // `syscall` omitted on a kernel function: Tetragon looks up __x64_tcp_connect and fails.
    let p =
        tp(json!({"kprobes": [{"call": "tcp_connect", "args": [{"index": 0, "type": "sock"}]}]}));
    assert_refused(
        &p,
        "spec.kprobes[0].call",
        "syscall is true (the CRD default)",
    );
    assert_valid(&tp(json!({"kprobes": [{"call": "sys_connect"}]})));
    assert_valid(&tp(
        json!({"kprobes": [{"call": "__x64_sys_connect", "syscall": true}]}),
    ));
}

#[test]
fn the_same_call_twice_is_refused_under_kprobe_multi() {
    let k = connect_kprobe(json!([]));
    let mut p = tp(json!({"kprobes": [k.clone(), k]}));
    assert_refused(
        &p,
        "spec.kprobes[1].call",
        "multiple instances of same symbol 'security_socket_connect'",
    );
    p["spec"]["options"] = json!([{"name": "disable-kprobe-multi", "value": "true"}]);
    assert_valid(&p);
    // lists are resolved: list:net contains sys_connect, which a second kprobe hooks again
    let p = tp(json!({
        "lists": [{"name": "net", "type": "syscalls", "values": ["sys_connect", "sys_bind"]}],
        "kprobes": [{"call": "list:net"}, {"call": "sys_connect", "syscall": true}],
    }));
    assert_refused(
        &p,
        "spec.kprobes[1].call",
        "same symbol '__x64_sys_connect'",
    );
    let p = tp(json!({
        "lists": [{"name": "fns", "values": ["tcp_connect", "tcp_close"]}],
        "kprobes": [{"call": "list:fns", "syscall": false}, {"call": "tcp_close", "syscall": false}],
    }));
    assert_refused(&p, "spec.kprobes[1].call", "same symbol 'tcp_close'");
}

#[test]
fn lists_are_resolved_and_checked() {
    let p = tp(json!({"kprobes": [{"call": "list:missing"}]}));
    assert_refused(
        &p,
        "spec.kprobes[0].call",
        "error list 'list:missing' not found",
    );
    let p = tp(
        json!({"lists": [{"name": "l", "type": "syscalls", "values": ["sys_dup", "dup2", "x64/sys_dup3", "mips/sys_x"]}],
                      "kprobes": [{"call": "list:l"}]}),
    );
    assert_refused(
        &p,
        "spec.lists[0].values[1]",
        "invalid syscall list element",
    );
    assert_refused(&p, "spec.lists[0].values[3]", "invalid ABI");
    let p =
        tp(json!({"lists": [{"name": "g", "type": "generated_syscalls", "values": ["sys_dup"]}]}));
    assert_refused(&p, "spec.lists[0].values", "has values");
    let p = tp(json!({"lists": [{"name": "g", "type": "generated_ftrace"}]}));
    assert_refused(&p, "spec.lists[0].pattern", "must specify pattern");
    assert_valid(&tp(
        json!({"lists": [{"name": "g", "type": "generated_ftrace", "pattern": "^security_.*"}],
                            "kprobes": [{"call": "list:g", "syscall": false}]}),
    ));
    // InMap list references must be syscall lists on a syscall64 argument
    let p = tp(json!({
        "lists": [{"name": "s", "type": "syscalls", "values": ["sys_dup"]}],
        "tracepoints": [{"subsystem": "raw_syscalls", "event": "sys_enter", "args": [{"index": 4, "type": "syscall64"}],
            "selectors": [{"matchArgs": [{"index": 4, "operator": "InMap", "values": ["list:s", "list:t"]}]}]}],
    }));
    assert_refused(
        &p,
        "spec.tracepoints[0].selectors[0].matchArgs[0].values[1]",
        "error list 't' not found",
    );
}

#[test]
fn one_hook_section_per_policy() {
    let p =
        tp(json!({"kprobes": [connect_kprobe(json!([]))], "lsmhooks": [{"hook": "file_open"}]}));
    assert_refused(&p, "spec", "multiple sections");
}

#[test]
fn namespaced_policies_refuse_uprobes_and_usdts() {
    let p = tpn(json!({"uprobes": [{"path": "/bin/bash", "symbols": ["readline"]}]}));
    assert_refused(
        &p,
        "spec.uprobes",
        "uprobe is not supported in a namespaced tracing policy",
    );
    let p = tpn(json!({"usdts": [{"path": "/bin/x", "provider": "p", "name": "n"}]}));
    assert_refused(
        &p,
        "spec.usdts",
        "usdt is not supported in a namespaced tracing policy",
    );
    assert_valid(&tp(
        json!({"usdts": [{"path": "/bin/x", "provider": "p", "name": "n"}]}),
    ));
}

#[test]
fn options_are_parsed() {
    for (name, value) in [
        ("policy-mode", "audit"),
        ("policy-mode", "Monitor"),
        ("disable-kprobe-multi", "yes"),
        ("override-method", "fmodret"),
        ("sleepable-preload-size", "0"),
    ] {
        let mut p = imds_audit();
        p["spec"]["options"] = json!([{"name": name, "value": value}]);
        assert_refused(&p, "spec.options[0].value", "failed to set option");
    }
    let mut p = imds_audit();
    p["spec"]["options"] = json!([{"name": "policy-mode", "value": "enforce"}, {"name": "some-future-option", "value": "x"}]);
    assert_valid(&p);
}

#[test]
fn macros_are_expanded() {
    let mut p = imds_audit();
    p["spec"]["selectorsMacros"] = json!({
        "imds": {"matchArgs": [{"index": 1, "operator": "SAddr", "values": IMDS_ADDRS}]},
        "kill": {"matchActions": [{"action": "Sigkill"}]},
    });
    p["spec"]["kprobes"][0]["selectors"] = json!([{"macros": ["imds", "kill"]}]);
    assert_valid(&p);
    // errors inside a macro are reported at the macro
    p["spec"]["selectorsMacros"]["imds"]["matchArgs"][0]["operator"] = json!("DAddr");
    assert_refused(
        &p,
        "spec.selectorsMacros[imds].matchArgs[0].operator",
        "sockaddr only supports",
    );
    p["spec"]["selectorsMacros"]["imds"]["matchArgs"][0]["operator"] = json!("SAddr");
    p["spec"]["kprobes"][0]["selectors"] = json!([{"macros": ["imds", "nope"]}]);
    assert_refused(&p, &format!("{SEL}.macros[1]"), "undefined macro 'nope'");
    p["spec"]["kprobes"][0]["selectors"] =
        json!([{"macros": ["kill"], "matchActions": [{"action": "Post"}]}]);
    assert_refused(
        &p,
        &format!("{SEL}.macros[0]"),
        "matchActions: field is defined in multiple macros",
    );
    p["spec"]["selectorsMacros"]["kill"]["macros"] = json!(["imds"]);
    assert_refused(
        &p,
        "spec.selectorsMacros[kill].macros",
        "cannot use other macros",
    );
    let p = with_selector(json!({"macros": ["x"]}));
    assert_refused(&p, &format!("{SEL}.macros[0]"), "no macros were defined");
}

#[test]
fn tracepoint_filters_use_field_index_or_position() {
    let tracepoint = |index: u64, ty: &str| {
        tp(json!({
            "lists": [{"name": "dups", "type": "syscalls", "values": ["sys_dup", "sys_dup2", "__ia32_sys_dup"]}],
            "enforcers": [{"calls": ["list:dups"]}],
            "tracepoints": [{"subsystem": "raw_syscalls", "event": "sys_enter",
                "args": [{"index": 4, "type": ty}],
                "selectors": [{"matchArgs": [{"index": index, "operator": "InMap", "values": ["list:dups"]}],
                               "matchActions": [{"action": "NotifyEnforcer", "argError": -1, "argSig": 9}]}]}],
        }))
    };
    // upstream examples/tracingpolicy/killer.yaml uses the position (0); the field index (4) works too
    assert_valid(&tracepoint(0, "syscall64"));
    assert_valid(&tracepoint(4, "syscall64"));
    let p = tracepoint(1, "syscall64");
    assert_refused(
        &p,
        "spec.tracepoints[0].selectors[0].matchArgs[0].index",
        "argFilter for unknown index",
    );
    let p = tracepoint(0, "uint64");
    assert_refused(
        &p,
        "spec.tracepoints[0].selectors[0].matchArgs[0].values[0]",
        "argument type is not syscall64",
    );
    let p = tracepoint(0, "const_buf");
    assert_refused(
        &p,
        "spec.tracepoints[0].args[0].type",
        "const_buf type cannot be user-defined",
    );
}
