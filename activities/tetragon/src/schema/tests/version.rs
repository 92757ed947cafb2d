//! `min_tetragon_version`.

use serde_json::json;

use super::*;

#[test]
fn baseline_and_reference_designs() {
    let plain = tp(json!({"kprobes": [{"call": "tcp_connect", "syscall": false,
        "args": [{"index": 0, "type": "sock"}],
        "selectors": [{"matchArgs": [{"index": 0, "operator": "DPort", "values": ["4444"]}],
                       "matchActions": [{"action": "Sigkill"}, {"action": "Post", "rateLimit": "1m"}]}]}]}));
    assert_eq!(min_tetragon_version(&plain), (0, 11));
    assert_eq!(min_tetragon_version(&tp(json!({}))), (0, 11));
    assert_eq!(min_tetragon_version(&json!(null)), (0, 11));
    assert_eq!(min_tetragon_version(&seed_example()), (1, 4)); // sockaddr
    assert_eq!(min_tetragon_version(&imds_audit()), (1, 4)); // sockaddr/socket, message, tags
    assert_eq!(min_tetragon_version(&imds_block_override()), (1, 4)); // policy-mode
    assert_eq!(min_tetragon_version(&imds_block_lsm()), (1, 4));
    assert_eq!(min_tetragon_version(&escape_block_list()), (1, 5)); // ignore.callNotFound
    assert_eq!(min_tetragon_version(&privesc_block()), (1, 6)); // data / matchData
    assert_eq!(min_tetragon_version(&mining_audit()), (0, 11));
    assert_eq!(min_tetragon_version(&mining_block_by_image()), (1, 5)); // containerSelector repo
    assert_eq!(min_tetragon_version(&scanner_exec_block()), (1, 1)); // options, linux_binprm
    assert_eq!(min_tetragon_version(&revshell_fdinstall()), (1, 7)); // FileType
}

#[test]
fn each_feature_maps_to_its_release() {
    let cases = [
        (json!({"podSelector": {}}), (0, 11)),
        (
            json!({"options": [{"name": "disable-kprobe-multi", "value": "1"}]}),
            (1, 0),
        ),
        (
            json!({"options": [{"name": "policy-mode", "value": "monitor"}]}),
            (1, 4),
        ),
        (
            json!({"options": [{"name": "sleepable-preload-size", "value": "4"}]}),
            (1, 8),
        ),
        (
            json!({"containerSelector": {"matchLabels": {"name": "app"}}}),
            (1, 1),
        ),
        (
            json!({"containerSelector": {"matchExpressions": [{"key": "repo", "operator": "In", "values": ["x"]}]}}),
            (1, 5),
        ),
        (json!({"enforcers": [{"calls": ["sys_ptrace"]}]}), (1, 1)),
        (json!({"lsmhooks": [{"hook": "file_open"}]}), (1, 2)),
        (json!({"hostSelector": {}}), (1, 7)),
        (json!({"fentries": [{"call": "x"}]}), (1, 7)),
        (json!({"nodeSelector": {}}), (1, 8)),
        (
            json!({"kprobes": [{"call": "x", "message": "hello"}]}),
            (1, 1),
        ),
        (json!({"kprobes": [{"call": "x", "tags": ["ab"]}]}), (1, 1)),
        (
            json!({"kprobes": [{"call": "x", "ignore": {"callNotFound": true}}]}),
            (1, 5),
        ),
        (
            json!({"kprobes": [{"call": "x", "args": [{"index": 0, "type": "uint8"}]}]}),
            (1, 1),
        ),
        (
            json!({"kprobes": [{"call": "x", "args": [{"index": 0, "type": "bpf_cmd"}]}]}),
            (1, 3),
        ),
        (
            json!({"kprobes": [{"call": "x", "args": [{"index": 0, "type": "dentry"}]}]}),
            (1, 4),
        ),
        (
            json!({"kprobes": [{"call": "x", "args": [{"index": 0, "type": "file", "resolve": "f_path"}]}]}),
            (1, 4),
        ),
        (
            json!({"kprobes": [{"call": "x", "args": [{"index": 0, "type": "sockaddr_un"}]}]}),
            (1, 7),
        ),
        (
            json!({"kprobes": [{"call": "x", "args": [{"index": 0, "type": "long"}]}]}),
            (1, 7),
        ),
        (
            json!({"kprobes": [{"call": "x", "args": [{"index": 0, "type": "int", "btfTypeModule": "m"}]}]}),
            (1, 8),
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(min_tetragon_version(&tp(spec.clone())), want, "{spec}");
    }
}

#[test]
fn selector_features_map_to_their_release() {
    let cases = [
        (
            json!({"matchArgs": [{"index": 0, "operator": "InMap", "values": ["1"]}]}),
            (1, 0),
        ),
        (
            json!({"matchArgs": [{"args": [0, 1], "operator": "CapabilitiesGained"}]}),
            (1, 5),
        ),
        (
            json!({"matchArgs": [{"index": 0, "operator": "NotInRange", "values": ["1:2"]}]}),
            (1, 6),
        ),
        (
            json!({"matchArgs": [{"index": 0, "operator": "SubStringIgnCase", "values": ["x"]}]}),
            (1, 7),
        ),
        (
            json!({"matchArgs": [{"operator": "CelExpr", "values": ["x"]}]}),
            (1, 7),
        ),
        (
            json!({"matchData": [{"index": 0, "operator": "Equal", "values": ["0"]}]}),
            (1, 6),
        ),
        (
            json!({"matchBinaries": [{"operator": "NotPrefix", "values": ["/usr"]}]}),
            (1, 1),
        ),
        (
            json!({"matchBinaries": [{"operator": "Postfix", "values": ["/sh"]}]}),
            (1, 2),
        ),
        (
            json!({"matchBinaries": [{"operator": "In", "values": ["/sh"], "followChildren": true}]}),
            (1, 2),
        ),
        (
            json!({"matchBinaries": [{"operator": "NotIn", "values": ["/sh"], "followChildren": true}]}),
            (1, 5),
        ),
        (
            json!({"matchParentBinaries": [{"operator": "In", "values": ["/sh"]}]}),
            (1, 7),
        ),
        (
            json!({"matchActions": [{"action": "Signal", "argSig": 9}]}),
            (1, 0),
        ),
        (
            json!({"matchActions": [{"action": "NotifyEnforcer"}]}),
            (1, 1),
        ),
        (
            json!({"matchActions": [{"action": "Post", "rateLimitScope": "process"}]}),
            (1, 1),
        ),
        (
            json!({"matchActions": [{"action": "CleanupEnforcerNotification"}]}),
            (1, 3),
        ),
        (
            json!({"matchActions": [{"action": "Post", "imaHash": true}]}),
            (1, 3),
        ),
        (
            json!({"matchActions": [{"action": "Set", "argIndex": 0, "argValue": 1}]}),
            (1, 6),
        ),
        (
            json!({"matchActions": [{"action": "Override", "argNewSymbol": "x"}]}),
            (1, 8),
        ),
        (json!({"matchWorkloads": {"podSelector": {}}}), (1, 8)),
        (json!({"label": "sel"}), (1, 8)),
        (json!({"macros": ["m"]}), (1, 7)),
    ];
    for (sel, want) in cases {
        let p = tp(json!({"kprobes": [{"call": "x", "selectors": [sel.clone()]}]}));
        assert_eq!(min_tetragon_version(&p), want, "{sel}");
    }
    // features inside macro definitions count too
    let p = tp(
        json!({"selectorsMacros": {"m": {"matchArgs": [{"index": 0, "operator": "FileType", "values": ["sock"]}]}}}),
    );
    assert_eq!(min_tetragon_version(&p), (1, 7));
}
