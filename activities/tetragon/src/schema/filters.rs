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
///
/// Finds the spec argument the filter applies to, then dispatches on the operator the way
/// `parseMatchArg` switches on it: one function per case, named after the `kernel.go` function
/// that case calls, so a difference from Tetragon shows up next to its counterpart.
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
    let values: Vec<(usize, &str)> = arr(f.v, "values")
        .iter()
        .enumerate()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s)))
        .collect();

    // CelExpr needs no argument: it only counts towards the hook's CEL program table.
    if op == "CelExpr" {
        state.cel_exprs += 1;
        if values.len() != 1 {
            out.push(Violation::new(
                format!("{}.values", f.path),
                "only a single CelExpr value is supported",
            ));
        }
        return;
    }

    let args: Vec<u64> = arr(f.v, "args").iter().filter_map(Value::as_u64).collect();
    let Some(arg) = arg_index_type(f, &args, sig, lookup, out) else {
        return;
    };
    let c = class(arg.ty);
    // `auto` arguments get their type at load time: nothing to compare the operator against.
    if c == Class::Unknown {
        return;
    }
    let filter = Filter {
        op,
        ty: arg.ty,
        c,
        path: &f.path,
        values: &values,
    };

    match op {
        "InRange" | "NotInRange" => write_match_values_range(&filter, out),
        "InMap" | "NotInMap" => write_match_values_in_map(&filter, pol, out),
        "SubString" | "SubStringIgnCase" => write_match_sub_string(&filter, state, out),
        "Equal" | "NotEqual" if matches!(c, Class::Str | Class::SockaddrUn) => {
            write_match_strings(&filter, out)
        }
        "Equal" | "NotEqual" | "GT" | "GreaterThan" | "LT" | "LessThan" | "Mask" => {
            write_match_values(&filter, out)
        }
        "Prefix" | "NotPrefix" => write_prefix_strings(&filter, out),
        "Postfix" | "NotPostfix" => write_postfix_strings(&filter, out),
        "SPort" | "DPort" | "NotSPort" | "NotDPort" | "Protocol" | "Family" | "State" => {
            write_match_ranges_in_map(&filter, out)
        }
        "SAddr" | "DAddr" | "NotSAddr" | "NotDAddr" => write_match_addrs_in_map(&filter, out),
        "SPortPriv" | "DPortPriv" | "NotSportPriv" | "NotDPortPriv" => {
            // These take no values; parseMatchArg only checks the argument type.
            if let Some(e) = sock_operator_error(&filter) {
                out.push(e);
            }
        }
        "FileType" | "NotFileType" => write_match_file_type(&filter, out),
        "CapabilitiesGained" => capabilities_gained(&filter, &args, sig, out),
        _ => {}
    }
}

/// A filter whose spec argument is known: what every operator check needs.
struct Filter<'f> {
    op: &'f str,
    /// The spec argument's type as written (`int`, `file`, …).
    ty: &'f str,
    c: Class,
    /// Where the filter is (`…matchArgs[n]`).
    path: &'f str,
    /// The string values with their positions in `values` (non-strings are the CRD's concern).
    values: &'f [(usize, &'f str)],
}

impl Filter<'_> {
    /// `path.field`, e.g. for `operator` or `values`.
    fn at(&self, field: &str) -> String {
        format!("{}.{field}", self.path)
    }

    fn vpath(&self, k: usize) -> String {
        format!("{}.values[{k}]", self.path)
    }

    /// `MAX_MATCH_VALUES`, as the callers that enforce it word it.
    fn too_many_values(&self, hint: &str) -> Option<Violation> {
        (self.values.len() > MAX_MATCH_VALUES).then(|| {
            Violation::new(
                self.at("values"),
                format!("selector does not support more than {MAX_MATCH_VALUES} values{hint}"),
            )
        })
    }
}

/// The spec argument a filter applies to (`argIndexType` for args, `dataIndexType` for
/// matchData, `argIndexTypeFromArgs` when the filter names `args`), or `None` after reporting why
/// there is none.
fn arg_index_type<'a>(
    f: &Item<'_>,
    args: &[u64],
    sig: &[ArgInfo<'a>],
    lookup: Lookup,
    out: &mut Vec<Violation>,
) -> Option<ArgInfo<'a>> {
    let path = &f.path;
    if let Some(&n) = args.first() {
        let found = sig.get(n as usize).copied();
        if found.is_none() {
            out.push(Violation::new(
                format!("{path}.args[0]"),
                format!("wrong ArgSelector.Arg value {n}, max({})", sig.len()),
            ));
        }
        return found;
    }
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
    if found.is_none() {
        let message = if lookup == Lookup::Position {
            format!("matchData index out of bounds (0,{})", sig.len())
        } else {
            format!("argFilter for unknown index: no spec argument has index {index}")
        };
        out.push(Violation::new(format!("{path}.index"), message));
    }
    found
}

/// InRange/NotInRange (`writeMatchValuesRange`): integer arguments only, values `min:max`
/// (bounded to u32 for 32-bit types).
fn write_match_values_range(f: &Filter<'_>, out: &mut Vec<Violation>) {
    out.extend(f.too_many_values(""));
    if !matches!(f.c, Class::S32 | Class::U32 | Class::S64 | Class::U64) {
        out.push(Violation::new(
            f.at("operator"),
            format!("MatchArgs type {} unsupported for range operators", f.ty),
        ));
        return;
    }
    for (k, v) in f.values {
        let parsed = v
            .split_once(':')
            .filter(|(_, b)| !b.contains(':'))
            .and_then(|(a, b)| Some((parse_int(a, true, 64)?, parse_int(b, true, 64)?)));
        match parsed {
            None => out.push(Violation::new(
                f.vpath(*k),
                format!("MatchArgs value {v} invalid: range should be 'min:max' integers"),
            )),
            Some((lo, hi))
                if matches!(f.c, Class::S32 | Class::U32)
                    && (lo > u32::MAX as i64 || hi > u32::MAX as i64) =>
            {
                out.push(Violation::new(
                    f.vpath(*k),
                    format!("range out of range ({lo}:{hi}) allowed max {}", u32::MAX),
                ))
            }
            Some(_) => {}
        }
    }
}

/// InMap/NotInMap (`writeMatchValuesInMap`, `writeListValuesInMap` for `list:NAME`): integer
/// arguments; values are numbers, `min:max` ranges, or a syscall list on a `syscall64` argument.
fn write_match_values_in_map(f: &Filter<'_>, pol: &Policy<'_>, out: &mut Vec<Violation>) {
    let ty = f.ty;
    let signed = matches!(f.c, Class::S32 | Class::S64);
    if !signed && !matches!(f.c, Class::U32 | Class::U64) {
        out.push(Violation::new(
            f.at("operator"),
            format!("MatchArgs type {ty} unsupported for InMap/NotInMap"),
        ));
        return;
    }
    let num = |s: &str| {
        if signed {
            parse_int(s, false, 64).is_some()
        } else {
            parse_uint(s, false, 64).is_some()
        }
    };
    for (k, v) in f.values {
        if let Some(list) = v.strip_prefix("list:") {
            let problem = match pol.lists.get(list) {
                None => Some(format!("error list '{list}' not found")),
                Some(l)
                    if !matches!(str_of(l, "type"), Some("syscalls" | "generated_syscalls")) =>
                {
                    Some(format!("error list '{list}' is not syscall type"))
                }
                Some(_) if ty != "syscall64" => Some(format!(
                    "error list '{list}' argument type is not syscall64"
                )),
                Some(_) => None,
            };
            if let Some(p) = problem {
                out.push(Violation::new(f.vpath(*k), p));
            }
            continue;
        }
        let ok = match v.split(':').collect::<Vec<_>>()[..] {
            [one] => num(one),
            [a, b] => num(a) && num(b),
            _ => false,
        };
        if !ok {
            out.push(Violation::new(
                f.vpath(*k),
                format!(
                    "MatchArgs value {v} invalid: expected a decimal {ty}, a 'min:max' range or list:NAME"
                ),
            ));
        }
    }
}

/// SubString/SubStringIgnCase (`writeMatchSubString`): on string arguments, shorter than 100
/// bytes and at most `SubstringMapEntries` per hook; other argument types are ignored by
/// Tetragon, and so here.
fn write_match_sub_string(f: &Filter<'_>, state: &mut HookState, out: &mut Vec<Violation>) {
    if !matches!(f.c, Class::Str | Class::SockaddrUn) {
        return;
    }
    for (k, v) in f.values {
        state.substrings += 1;
        if state.substrings > MAX_SUBSTRINGS {
            out.push(Violation::new(
                f.vpath(*k),
                format!("substring error: Only {MAX_SUBSTRINGS} substrings allowed"),
            ));
        }
        if v.len() >= 100 {
            out.push(Violation::new(
                f.vpath(*k),
                format!(
                    "substring error: Substring is bigger than 100 chars ({})",
                    v.len()
                ),
            ));
        }
    }
}

/// Equal/NotEqual on a string argument (`writeMatchStrings`): each value fits the largest
/// string map (trailing NULs do not count).
fn write_match_strings(f: &Filter<'_>, out: &mut Vec<Violation>) {
    for (k, v) in f.values {
        if v.trim_end_matches('\0').len() > STRING_EQ_MAX {
            out.push(Violation::new(
                f.vpath(*k),
                format!(
                    "MatchArgs value invalid: string is too long ({} bytes, max {STRING_EQ_MAX})",
                    v.len()
                ),
            ));
        }
    }
}

/// Prefix/NotPrefix (`writePrefixStrings`): values of at most `StringPrefixMaxLength`.
fn write_prefix_strings(f: &Filter<'_>, out: &mut Vec<Violation>) {
    for (k, v) in f.values {
        if v.len() > PREFIX_MAX {
            out.push(Violation::new(
                f.vpath(*k),
                format!("MatchArgs value invalid: string is longer than {PREFIX_MAX} characters"),
            ));
        }
    }
}

/// Postfix/NotPostfix (`writePostfixStrings`): values shorter than `StringPostfixMaxLength`
/// (trailing NULs do not count except for `char_buf`), and never empty.
fn write_postfix_strings(f: &Filter<'_>, out: &mut Vec<Violation>) {
    for (k, v) in f.values {
        let effective = if f.ty == "char_buf" {
            v.len()
        } else {
            v.trim_end_matches('\0').len()
        };
        if effective >= POSTFIX_MAX {
            out.push(Violation::new(
                f.vpath(*k),
                format!(
                    "MatchArgs value invalid: string is longer than {} characters",
                    POSTFIX_MAX - 1
                ),
            ));
        } else if effective == 0 && f.ty != "char_buf" {
            out.push(Violation::new(
                f.vpath(*k),
                "empty Postfix value (crashes Tetragon's selector compiler)",
            ));
        }
    }
}

/// SPort/DPort/Protocol/Family/State (`writeMatchRangesInMap`, after `parseMatchArg`'s
/// argument-type checks): socket arguments; `sockaddr_un` takes only Family, `sockaddr` no
/// destination port, protocol or state; values are numbers, ranges or names.
fn write_match_ranges_in_map(f: &Filter<'_>, out: &mut Vec<Violation>) {
    let (op, ty, c) = (f.op, f.ty, f.c);
    if !matches!(c, Class::Sock | Class::Sockaddr | Class::SockaddrUn) {
        out.push(Violation::new(
            f.at("operator"),
            format!(
                "{op}: sock/socket/skb/sockaddr/sockaddr_un operators specified for non-sock/socket/skb/sockaddr/sockaddr_un type ({ty})"
            ),
        ));
        return;
    }
    if c == Class::SockaddrUn && op != "Family" {
        out.push(Violation::new(
            f.at("operator"),
            "sockaddr_un only supports Family and string operators (Equal, NotEqual, Prefix, NotPrefix)",
        ));
        return;
    }
    if c == Class::Sockaddr && matches!(op, "DPort" | "NotDPort" | "Protocol" | "State") {
        out.push(sockaddr_only(op, f));
        return;
    }
    for (k, v) in f.values {
        if let Some(e) = range_value_error(op, v) {
            out.push(Violation::new(f.vpath(*k), e));
        }
    }
}

/// SAddr/DAddr and their negations (`writeMatchAddrsInMap`): socket arguments (`sockaddr`:
/// source only); values are IPv4/IPv6 addresses or CIDRs.
fn write_match_addrs_in_map(f: &Filter<'_>, out: &mut Vec<Violation>) {
    if let Some(e) = sock_operator_error(f) {
        out.push(e);
        return;
    }
    for (k, v) in f.values {
        if !is_addr_or_cidr(v) {
            out.push(Violation::new(
                f.vpath(*k),
                format!("MatchArgs value {v} invalid: expected an IPv4/IPv6 address or CIDR"),
            ));
        }
    }
}

/// The argument-type check `parseMatchArg` applies to address and privileged-port operators:
/// a sock/socket/skb/sockaddr argument, and on `sockaddr` only the source side.
fn sock_operator_error(f: &Filter<'_>) -> Option<Violation> {
    let (op, ty, c) = (f.op, f.ty, f.c);
    if !matches!(c, Class::Sock | Class::Sockaddr) {
        return Some(Violation::new(
            f.at("operator"),
            format!(
                "{op}: sock/socket/skb/sockaddr operators specified for non-sock/socket/skb/sockaddr type ({ty})"
            ),
        ));
    }
    if c == Class::Sockaddr && matches!(op, "DAddr" | "NotDAddr" | "DPortPriv" | "NotDPortPriv") {
        return Some(sockaddr_only(op, f));
    }
    None
}

/// A destination-side operator on a `struct sockaddr` argument.
fn sockaddr_only(op: &str, f: &Filter<'_>) -> Violation {
    Violation::new(
        f.at("operator"),
        format!("{op}: sockaddr only supports [not]saddr, [not]sport[priv], and family"),
    )
}

/// FileType/NotFileType (`writeMatchFileType`): file/path arguments, at most
/// `MAX_MATCH_VALUES` known file type names.
fn write_match_file_type(f: &Filter<'_>, out: &mut Vec<Violation>) {
    if f.ty != "file" && f.ty != "path" {
        out.push(Violation::new(
            f.at("operator"),
            format!(
                "FileType operators specified for non-file/path type ({})",
                f.ty
            ),
        ));
        return;
    }
    out.extend(f.too_many_values(""));
    for (k, v) in f.values {
        if !FILE_TYPES.contains(v) {
            out.push(Violation::new(
                f.vpath(*k),
                format!("unknown file type: {v}"),
            ));
        }
    }
}

/// CapabilitiesGained (`parseMatchArg`'s case with `argIndexTypeFromArgs` and
/// `isCapabilityType`): `args: [new, old]`, both capability sets.
fn capabilities_gained(
    f: &Filter<'_>,
    args: &[u64],
    sig: &[ArgInfo<'_>],
    out: &mut Vec<Violation>,
) {
    if args.len() != 2 {
        out.push(Violation::new(
            f.at("args"),
            "CapabilitiesGained operator requires two args: the new and the old capability",
        ));
        return;
    }
    let Some(second) = sig.get(args[1] as usize) else {
        out.push(Violation::new(
            format!("{}.args[1]", f.path),
            format!(
                "wrong ArgSelector.Arg value {}, max({})",
                args[1],
                sig.len()
            ),
        ));
        return;
    };
    if f.c != Class::Cap || class(second.ty) != Class::Cap {
        out.push(Violation::new(
            f.at("args"),
            "CapabilitiesGained operator requires capability type arguments",
        ));
    }
}

/// Value syntax of port/protocol/family/state filters (`writeMatchRangesInMap`), ports bounded
/// to 0..=65535 with min ≤ max.
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

/// Equal/NotEqual on numbers, GT/LT, Mask (`writeMatchValues`): at most `MAX_MATCH_VALUES`
/// values, parsed as the argument's integer type (capability sets also take names).
fn write_match_values(f: &Filter<'_>, out: &mut Vec<Violation>) {
    let (op, ty) = (f.op, f.ty);
    out.extend(f.too_many_values(": consider using InMap or NotInMap operators"));
    let parse: fn(&str) -> bool = match f.c {
        Class::S32 => |s| parse_int(s, true, 32).is_some(),
        Class::U32 => |s| parse_uint(s, true, 32).is_some(),
        Class::S64 => |s| parse_int(s, true, 64).is_some(),
        Class::U64 => |s| parse_uint(s, true, 64).is_some(),
        Class::Cap => |s| parse_uint(s, true, 64).is_some() || s.split(',').all(is_capability),
        Class::Sock | Class::Sockaddr => {
            out.push(Violation::new(
                f.at("operator"),
                format!("MatchArgs type sock, socket, skb, sockaddr and net_device do not support operator {op}"),
            ));
            return;
        }
        _ => {
            out.push(Violation::new(
                f.at("operator"),
                format!("MatchArgs type {ty} unsupported for operator {op}"),
            ));
            return;
        }
    };
    for (k, v) in f.values {
        if !parse(v) {
            out.push(Violation::new(
                f.vpath(*k),
                format!("MatchArgs value {v} invalid: not a valid {ty}"),
            ));
        }
    }
}
