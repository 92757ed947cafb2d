//! matchArgs / matchData / matchReturnArgs entries as `parseMatchArg` compiles them:
//! argument lookup, operator/argument-type compatibility, value syntax and value limits.

use serde_json::Value;

use super::context::{ArgInfo, HookState, Item, Policy, arr, str_of};
use super::goparse::{is_addr_or_cidr, parse_int, parse_uint};
use super::names::{FAMILIES, FILE_TYPES, PROTOCOLS, TCP_STATES, is_capability};
use super::violation::Violation;

/// `MAX_MATCH_VALUES` for numeric operators.
const MAX_MATCH_VALUES: usize = 4;
/// `SubstringMapEntries` per hook.
const MAX_SUBSTRINGS: usize = 100;
/// `StringPrefixMaxLength`.
pub(super) const PREFIX_MAX: usize = 256;
/// `StringPostfixMaxLength` (values must be shorter).
pub(super) const POSTFIX_MAX: usize = 128;
/// Longest string for Equal/NotEqual (`MaxStringMapsSize - 2`, kernels ≥5.11).
const STRING_EQ_MAX: usize = 4096;

/// Argument types grouped the way `kernel.go` switches on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// int, int32/sint32, size_t, int16/sint16, int8/sint8.
    S32,
    /// uint32, uint16, uint8.
    U32,
    /// int64/sint64/long, syscall64.
    S64,
    /// uint64/ulong.
    U64,
    /// Path/string types compared through string maps.
    Str,
    /// sockaddr_un: strings plus Family.
    SockaddrUn,
    /// sock, skb, socket.
    Sock,
    /// struct sockaddr: only S* operators and Family.
    Sockaddr,
    /// Capability sets.
    Cap,
    /// Types no value operator supports.
    Other,
    /// `auto` (tracepoints, uprobes): resolved at load time, not checked.
    Unknown,
}

fn class(ty: &str) -> Class {
    match ty {
        "int" | "int32" | "sint32" | "size_t" | "int16" | "sint16" | "int8" | "sint8" => Class::S32,
        "uint32" | "uint16" | "uint8" => Class::U32,
        "int64" | "sint64" | "long" | "syscall64" => Class::S64,
        "uint64" | "ulong" => Class::U64,
        "fd" | "file" | "path" | "dentry" | "string" | "char_buf" | "linux_binprm" | "data_loc"
        | "net_device" => Class::Str,
        "sockaddr_un" => Class::SockaddrUn,
        "sock" | "skb" | "socket" => Class::Sock,
        "sockaddr" => Class::Sockaddr,
        "kernel_cap_t" | "cap_inheritable" | "cap_permitted" | "cap_effective" => Class::Cap,
        "auto" => Class::Unknown,
        _ => Class::Other,
    }
}

fn is_port_op(op: &str) -> bool {
    matches!(op, "SPort" | "DPort" | "NotSPort" | "NotDPort")
}

/// How a filter's `index` finds its spec argument.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// kprobes etc.: the first spec arg with that `index` (`argIndexType`).
    Index,
    /// matchData: the position in `data` (`dataIndexType`).
    Position,
    /// tracepoints: `index` is rewritten from tracepoint field index to spec-arg position, in
    /// spec order (`genericTracepoint.InitKernelSelectors`), then must be a position.
    Tracepoint,
}

/// One matchArgs/matchData/matchReturnArgs entry (`ParseMatchArg`/`parseMatchArg`).
pub(super) fn check_filter(
    f: &Item<'_>,
    sig: &[ArgInfo<'_>],
    lookup: Lookup,
    state: &mut HookState,
    pol: &Policy<'_>,
    out: &mut Vec<Violation>,
) {
    let Some(op) = str_of(f.v, "operator") else {
        return;
    };
    let path = &f.path;
    let values: Vec<(usize, &str)> = arr(f.v, "values")
        .iter()
        .enumerate()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s)))
        .collect();
    let vpath = |k: usize| format!("{path}.values[{k}]");
    let mut bad = |p: String, m: String| out.push(Violation::new(p, m));

    if op == "CelExpr" {
        state.cel_exprs += 1;
        if values.len() != 1 {
            bad(
                format!("{path}.values"),
                "only a single CelExpr value is supported".into(),
            );
        }
        return;
    }

    // The argument the filter applies to.
    let args: Vec<u64> = arr(f.v, "args").iter().filter_map(Value::as_u64).collect();
    let arg = if let Some(&n) = args.first() {
        match sig.get(n as usize) {
            Some(a) => *a,
            None => {
                bad(
                    format!("{path}.args[0]"),
                    format!("wrong ArgSelector.Arg value {n}, max({})", sig.len()),
                );
                return;
            }
        }
    } else {
        let index = f.v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let found = match lookup {
            Lookup::Position => sig.get(index as usize).copied(),
            Lookup::Index => sig.iter().find(|a| a.index == index).copied(),
            Lookup::Tracepoint => {
                let mut idx = index;
                for (pos, a) in sig.iter().enumerate() {
                    if idx == a.index {
                        idx = pos as u64;
                    }
                }
                sig.get(idx as usize).copied()
            }
        };
        match found {
            Some(a) => a,
            None if lookup == Lookup::Position => {
                bad(
                    format!("{path}.index"),
                    format!("matchData index out of bounds (0,{})", sig.len()),
                );
                return;
            }
            None => {
                bad(
                    format!("{path}.index"),
                    format!("argFilter for unknown index: no spec argument has index {index}"),
                );
                return;
            }
        }
    };
    let ty = arg.ty;
    let c = class(ty);
    if c == Class::Unknown {
        return;
    }

    match op {
        "InRange" | "NotInRange" => {
            if values.len() > MAX_MATCH_VALUES {
                bad(
                    format!("{path}.values"),
                    format!("selector does not support more than {MAX_MATCH_VALUES} values"),
                );
            }
            if !matches!(c, Class::S32 | Class::U32 | Class::S64 | Class::U64) {
                bad(
                    format!("{path}.operator"),
                    format!("MatchArgs type {ty} unsupported for range operators"),
                );
                return;
            }
            for (k, v) in &values {
                let parsed = v
                    .split_once(':')
                    .filter(|(_, b)| !b.contains(':'))
                    .and_then(|(a, b)| Some((parse_int(a, true, 64)?, parse_int(b, true, 64)?)));
                match parsed {
                    None => bad(
                        vpath(*k),
                        format!("MatchArgs value {v} invalid: range should be 'min:max' integers"),
                    ),
                    Some((lo, hi))
                        if matches!(c, Class::S32 | Class::U32)
                            && (lo > u32::MAX as i64 || hi > u32::MAX as i64) =>
                    {
                        bad(
                            vpath(*k),
                            format!("range out of range ({lo}:{hi}) allowed max {}", u32::MAX),
                        )
                    }
                    Some(_) => {}
                }
            }
        }
        "InMap" | "NotInMap" => {
            let signed = matches!(c, Class::S32 | Class::S64);
            if !signed && !matches!(c, Class::U32 | Class::U64) {
                bad(
                    format!("{path}.operator"),
                    format!("MatchArgs type {ty} unsupported for InMap/NotInMap"),
                );
                return;
            }
            let num = |s: &str| {
                if signed {
                    parse_int(s, false, 64).is_some()
                } else {
                    parse_uint(s, false, 64).is_some()
                }
            };
            for (k, v) in &values {
                if let Some(list) = v.strip_prefix("list:") {
                    let problem = match pol.lists.get(list) {
                        None => Some(format!("error list '{list}' not found")),
                        Some(l)
                            if !matches!(
                                str_of(l, "type"),
                                Some("syscalls" | "generated_syscalls")
                            ) =>
                        {
                            Some(format!("error list '{list}' is not syscall type"))
                        }
                        Some(_) if ty != "syscall64" => Some(format!(
                            "error list '{list}' argument type is not syscall64"
                        )),
                        Some(_) => None,
                    };
                    if let Some(p) = problem {
                        bad(vpath(*k), p);
                    }
                    continue;
                }
                let ok = match v.split(':').collect::<Vec<_>>()[..] {
                    [one] => num(one),
                    [a, b] => num(a) && num(b),
                    _ => false,
                };
                if !ok {
                    bad(
                        vpath(*k),
                        format!(
                            "MatchArgs value {v} invalid: expected a decimal {ty}, a 'min:max' range or list:NAME"
                        ),
                    );
                }
            }
        }
        "SubString" | "SubStringIgnCase" => {
            if matches!(c, Class::Str | Class::SockaddrUn) {
                for (k, v) in &values {
                    state.substrings += 1;
                    if state.substrings > MAX_SUBSTRINGS {
                        bad(
                            vpath(*k),
                            format!("substring error: Only {MAX_SUBSTRINGS} substrings allowed"),
                        );
                    }
                    if v.len() >= 100 {
                        bad(
                            vpath(*k),
                            format!(
                                "substring error: Substring is bigger than 100 chars ({})",
                                v.len()
                            ),
                        );
                    }
                }
            }
        }
        "Equal" | "NotEqual" if matches!(c, Class::Str | Class::SockaddrUn) => {
            for (k, v) in &values {
                if v.trim_end_matches('\0').len() > STRING_EQ_MAX {
                    bad(
                        vpath(*k),
                        format!(
                            "MatchArgs value invalid: string is too long ({} bytes, max {STRING_EQ_MAX})",
                            v.len()
                        ),
                    );
                }
            }
        }
        "Equal" | "NotEqual" | "GT" | "GreaterThan" | "LT" | "LessThan" | "Mask" => {
            check_numeric_values(op, ty, c, &values, path, out);
        }
        "Prefix" | "NotPrefix" => {
            for (k, v) in &values {
                if v.len() > PREFIX_MAX {
                    bad(
                        vpath(*k),
                        format!(
                            "MatchArgs value invalid: string is longer than {PREFIX_MAX} characters"
                        ),
                    );
                }
            }
        }
        "Postfix" | "NotPostfix" => {
            for (k, v) in &values {
                let effective = if ty == "char_buf" {
                    v.len()
                } else {
                    v.trim_end_matches('\0').len()
                };
                if effective >= POSTFIX_MAX {
                    bad(
                        vpath(*k),
                        format!(
                            "MatchArgs value invalid: string is longer than {} characters",
                            POSTFIX_MAX - 1
                        ),
                    );
                } else if effective == 0 && ty != "char_buf" {
                    bad(
                        vpath(*k),
                        "empty Postfix value (crashes Tetragon's selector compiler)".into(),
                    );
                }
            }
        }
        "SPort" | "DPort" | "NotSPort" | "NotDPort" | "Protocol" | "Family" | "State" => {
            if !matches!(c, Class::Sock | Class::Sockaddr | Class::SockaddrUn) {
                bad(
                    format!("{path}.operator"),
                    format!(
                        "{op}: sock/socket/skb/sockaddr/sockaddr_un operators specified for non-sock/socket/skb/sockaddr/sockaddr_un type ({ty})"
                    ),
                );
                return;
            }
            if c == Class::SockaddrUn && op != "Family" {
                bad(format!("{path}.operator"), "sockaddr_un only supports Family and string operators (Equal, NotEqual, Prefix, NotPrefix)".into());
                return;
            }
            if c == Class::Sockaddr && matches!(op, "DPort" | "NotDPort" | "Protocol" | "State") {
                bad(
                    format!("{path}.operator"),
                    format!(
                        "{op}: sockaddr only supports [not]saddr, [not]sport[priv], and family"
                    ),
                );
                return;
            }
            for (k, v) in &values {
                if let Some(e) = range_value_error(op, v) {
                    bad(vpath(*k), e);
                }
            }
        }
        "SAddr" | "DAddr" | "NotSAddr" | "NotDAddr" | "SPortPriv" | "DPortPriv"
        | "NotSportPriv" | "NotDPortPriv" => {
            if !matches!(c, Class::Sock | Class::Sockaddr) {
                bad(
                    format!("{path}.operator"),
                    format!(
                        "{op}: sock/socket/skb/sockaddr operators specified for non-sock/socket/skb/sockaddr type ({ty})"
                    ),
                );
                return;
            }
            if c == Class::Sockaddr
                && matches!(op, "DAddr" | "NotDAddr" | "DPortPriv" | "NotDPortPriv")
            {
                bad(
                    format!("{path}.operator"),
                    format!(
                        "{op}: sockaddr only supports [not]saddr, [not]sport[priv], and family"
                    ),
                );
                return;
            }
            if op.ends_with("Addr") {
                for (k, v) in &values {
                    if !is_addr_or_cidr(v) {
                        bad(
                            vpath(*k),
                            format!(
                                "MatchArgs value {v} invalid: expected an IPv4/IPv6 address or CIDR"
                            ),
                        );
                    }
                }
            }
        }
        "FileType" | "NotFileType" => {
            if ty != "file" && ty != "path" {
                bad(
                    format!("{path}.operator"),
                    format!("FileType operators specified for non-file/path type ({ty})"),
                );
                return;
            }
            if values.len() > MAX_MATCH_VALUES {
                bad(
                    format!("{path}.values"),
                    format!("selector does not support more than {MAX_MATCH_VALUES} values"),
                );
            }
            for (k, v) in &values {
                if !FILE_TYPES.contains(v) {
                    bad(vpath(*k), format!("unknown file type: {v}"));
                }
            }
        }
        "CapabilitiesGained" => {
            if args.len() != 2 {
                bad(
                    format!("{path}.args"),
                    "CapabilitiesGained operator requires two args: the new and the old capability"
                        .into(),
                );
                return;
            }
            let Some(second) = sig.get(args[1] as usize) else {
                bad(
                    format!("{path}.args[1]"),
                    format!(
                        "wrong ArgSelector.Arg value {}, max({})",
                        args[1],
                        sig.len()
                    ),
                );
                return;
            };
            if c != Class::Cap || class(second.ty) != Class::Cap {
                bad(
                    format!("{path}.args"),
                    "CapabilitiesGained operator requires capability type arguments".into(),
                );
            }
        }
        _ => {}
    }
}

/// Value syntax of port/protocol/family/state filters (`writeRangeInMap`), ports bounded to
/// 0..=65535 with min ≤ max.
fn range_value_error(op: &str, v: &str) -> Option<String> {
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() > 2 {
        return Some(format!(
            "MatchArgs value {v} invalid: range should be 'min:max'"
        ));
    }
    if parts.len() == 1 {
        let named = match op {
            "Protocol" => PROTOCOLS.contains(&v),
            "Family" => FAMILIES.contains(&v),
            "State" => TCP_STATES.contains(&v),
            _ => false,
        };
        if named {
            return None;
        }
    }
    let nums: Vec<Option<u64>> = parts.iter().map(|p| parse_uint(p, false, 64)).collect();
    if nums.iter().any(Option::is_none) {
        let what = match op {
            "Protocol" => "a protocol number or IPPROTO_* name",
            "Family" => "an address family number or AF_* name",
            "State" => "a TCP state number or TCP_* name",
            _ => "a decimal port or a 'min:max' port range",
        };
        return Some(format!("MatchArgs value {v} invalid: expected {what}"));
    }
    if is_port_op(op) {
        let nums: Vec<u64> = nums.into_iter().flatten().collect();
        if nums.iter().any(|n| *n > 65535) {
            return Some(format!("MatchArgs value {v} invalid: ports are 0..65535"));
        }
        if nums.len() == 2 && nums[0] > nums[1] {
            return Some(format!(
                "MatchArgs value {v} invalid: range min is greater than max"
            ));
        }
    }
    None
}

/// `writeMatchValues`: at most 4 values, parsed as the argument's integer type.
fn check_numeric_values(
    op: &str,
    ty: &str,
    c: Class,
    values: &[(usize, &str)],
    path: &str,
    out: &mut Vec<Violation>,
) {
    if values.len() > MAX_MATCH_VALUES {
        out.push(Violation::new(
            format!("{path}.values"),
            format!("selector does not support more than {MAX_MATCH_VALUES} values: consider using InMap or NotInMap operators"),
        ));
    }
    let parse: fn(&str) -> bool = match c {
        Class::S32 => |s| parse_int(s, true, 32).is_some(),
        Class::U32 => |s| parse_uint(s, true, 32).is_some(),
        Class::S64 => |s| parse_int(s, true, 64).is_some(),
        Class::U64 => |s| parse_uint(s, true, 64).is_some(),
        Class::Cap => |s| parse_uint(s, true, 64).is_some() || s.split(',').all(is_capability),
        Class::Sock | Class::Sockaddr => {
            out.push(Violation::new(
                format!("{path}.operator"),
                format!("MatchArgs type sock, socket, skb, sockaddr and net_device do not support operator {op}"),
            ));
            return;
        }
        _ => {
            out.push(Violation::new(
                format!("{path}.operator"),
                format!("MatchArgs type {ty} unsupported for operator {op}"),
            ));
            return;
        }
    };
    for (k, v) in values {
        if !parse(v) {
            out.push(Violation::new(
                format!("{path}.values[{k}]"),
                format!("MatchArgs value {v} invalid: not a valid {ty}"),
            ));
        }
    }
}
