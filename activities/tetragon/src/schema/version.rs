//! The oldest Tetragon release that understands every feature a policy uses.
//!
//! Table B8 of the research notes, cross-checked and completed by diffing the CRDs of every
//! release tag (v0.11.0 … v1.7.0, main) and the loader code where the two differ:
//! `followChildren` is accepted with `In` since v1.2 and with `NotIn` since v1.5; the
//! `containerSelector` key `repo` since v1.5; the `policy-mode` option since v1.4.

use serde_json::Value;

use super::context::{arr, str_of};

/// A release as (major, minor).
type Version = (u32, u32);

const BASELINE: Version = (0, 11);
/// Anything only on `main` (after v1.7).
const MAIN: Version = (1, 8);

/// Release introducing an argument `type` value.
fn arg_type_version(ty: &str) -> Version {
    match ty {
        "auto" | "load_info" | "module" => (1, 0),
        "int8" | "int16" | "uint8" | "uint16" | "syscall64" | "kernel_cap_t"
        | "cap_inheritable" | "cap_permitted" | "cap_effective" | "linux_binprm" | "data_loc"
        | "net_device" => (1, 1),
        "bpf_cmd" => (1, 3),
        "sockaddr" | "socket" | "dentry" => (1, 4),
        "bpf_prog" => (1, 6),
        "long" | "ulong" | "sint8" | "sint16" | "sint32" | "sint64" | "sockaddr_un"
        | "const_buf" => (1, 7),
        _ => BASELINE,
    }
}

/// Release introducing a matchArgs/matchData/matchReturnArgs `operator`.
fn operator_version(op: &str) -> Version {
    match op {
        "InMap" | "NotInMap" => (1, 0),
        "CapabilitiesGained" => (1, 5),
        "InRange" | "NotInRange" => (1, 6),
        "SubString" | "SubStringIgnCase" | "CelExpr" | "FileType" | "NotFileType" => (1, 7),
        _ => BASELINE,
    }
}

/// Release introducing an `action`.
fn action_version(action: &str) -> Version {
    match action {
        "Signal" => (1, 0),
        "NotifyEnforcer" => (1, 1),
        "CleanupEnforcerNotification" => (1, 3),
        "Set" => (1, 6),
        _ => BASELINE,
    }
}

/// Running maximum.
struct Acc(Version);

impl Acc {
    fn at_least(&mut self, v: Version) {
        if v > self.0 {
            self.0 = v;
        }
    }

    fn if_has(&mut self, obj: &Value, key: &str, v: Version) {
        if obj.get(key).is_some_and(|x| !x.is_null()) {
            self.at_least(v);
        }
    }
}

pub(super) fn min_version(policy: &Value) -> Version {
    let mut acc = Acc(BASELINE);
    let Some(spec) = policy.get("spec").filter(|s| s.is_object()) else {
        return acc.0;
    };
    for (key, v) in [
        ("podSelector", BASELINE),
        ("options", (1, 0)),
        ("containerSelector", (1, 1)),
        ("enforcers", (1, 1)),
        ("lsmhooks", (1, 2)),
        ("usdts", (1, 6)),
        ("hostSelector", (1, 7)),
        ("fentries", (1, 7)),
        ("selectorsMacros", (1, 7)),
        ("nodeSelector", MAIN),
    ] {
        acc.if_has(spec, key, v);
    }
    if let Some(cs) = spec.get("containerSelector") {
        let repo_label = cs.get("matchLabels").and_then(|m| m.get("repo")).is_some();
        let repo_expr = arr(cs, "matchExpressions")
            .iter()
            .any(|e| str_of(e, "key") == Some("repo"));
        if repo_label || repo_expr {
            acc.at_least((1, 5));
        }
    }
    for o in arr(spec, "options") {
        match str_of(o, "name") {
            Some("disable-uprobe-multi" | "override-method") => acc.at_least((1, 1)),
            Some("policy-mode") => acc.at_least((1, 4)),
            Some("sleepable-preload-size") => acc.at_least(MAIN),
            _ => {}
        }
    }
    for section in [
        "kprobes",
        "fentries",
        "tracepoints",
        "lsmhooks",
        "uprobes",
        "usdts",
    ] {
        for h in arr(spec, section) {
            hook(h, &mut acc);
        }
    }
    if let Some(macros) = spec.get("selectorsMacros").and_then(Value::as_object) {
        for sel in macros.values() {
            selector(sel, &mut acc);
        }
    }
    acc.0
}

fn hook(h: &Value, acc: &mut Acc) {
    acc.if_has(h, "message", (1, 1));
    acc.if_has(h, "tags", (1, 1));
    acc.if_has(h, "data", (1, 6));
    if let Some(ignore) = h.get("ignore") {
        acc.if_has(ignore, "callNotFound", (1, 5));
        acc.if_has(ignore, "digestVerificationFailure", MAIN);
    }
    // tracepoints
    acc.if_has(h, "raw", (1, 5));
    // uprobes
    acc.if_has(h, "offsets", (1, 5));
    acc.if_has(h, "refCtrOffsets", (1, 5));
    acc.if_has(h, "addrs", (1, 6));
    acc.if_has(h, "btfPath", (1, 7));
    acc.if_has(h, "binaryDigests", MAIN);
    if h.get("path").is_some() {
        // uprobes gained return probes in v1.7
        acc.if_has(h, "return", (1, 7));
        acc.if_has(h, "returnArg", (1, 7));
    }
    for a in arr(h, "args")
        .iter()
        .chain(arr(h, "data"))
        .chain(h.get("returnArg"))
    {
        arg(a, acc);
    }
    for sel in arr(h, "selectors") {
        selector(sel, acc);
    }
}

fn arg(a: &Value, acc: &mut Acc) {
    if let Some(ty) = str_of(a, "type") {
        acc.at_least(arg_type_version(ty));
    }
    // Presence counts, even with an empty/false value: older loaders refuse unknown fields.
    acc.if_has(a, "resolve", (1, 4));
    acc.if_has(a, "btfType", (1, 6));
    acc.if_has(a, "source", (1, 6));
    acc.if_has(a, "btfTypeModule", MAIN);
}

fn selector(sel: &Value, acc: &mut Acc) {
    acc.if_has(sel, "matchReturnActions", (1, 1));
    acc.if_has(sel, "matchData", (1, 6));
    acc.if_has(sel, "matchParentBinaries", (1, 7));
    acc.if_has(sel, "macros", (1, 7));
    acc.if_has(sel, "label", MAIN);
    acc.if_has(sel, "matchWorkloads", MAIN);
    for field in ["matchArgs", "matchData", "matchReturnArgs"] {
        for f in arr(sel, field) {
            if let Some(op) = str_of(f, "operator") {
                acc.at_least(operator_version(op));
            }
            acc.if_has(f, "args", (1, 5));
        }
    }
    for field in ["matchActions", "matchReturnActions"] {
        for a in arr(sel, field) {
            if let Some(action) = str_of(a, "action") {
                acc.at_least(action_version(action));
            }
            for (key, v) in [
                ("rateLimitScope", (1, 1)),
                ("kernelStackTrace", (1, 1)),
                ("userStackTrace", (1, 1)),
                ("imaHash", (1, 3)),
                ("argIndex", (1, 6)),
                ("argValue", (1, 6)),
                ("argRegs", (1, 6)),
                ("argNewSymbol", MAIN),
                ("argNewAddr", MAIN),
                ("argNewOffset", MAIN),
            ] {
                acc.if_has(a, key, v);
            }
        }
    }
    for field in ["matchBinaries", "matchParentBinaries"] {
        for b in arr(sel, field) {
            let op = str_of(b, "operator").unwrap_or("");
            match op {
                "Prefix" | "NotPrefix" => acc.at_least((1, 1)),
                "Postfix" | "NotPostfix" => acc.at_least((1, 2)),
                _ => {}
            }
            acc.if_has(b, "followChildren", (1, 2));
            if b.get("followChildren").and_then(Value::as_bool) == Some(true) && op == "NotIn" {
                acc.at_least((1, 5));
            }
        }
    }
}
