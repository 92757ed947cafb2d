//! Tetragon's policy-handler rules above the selector level: hook sections, options, lists,
//! enforcers, macros, hook arguments, messages and tags, syscall naming, duplicate symbols
//! (`pkg/sensors/tracing/{policyhandler_linux,generickprobe,genericlsm,enforcer,lists_linux,options,tags,message}.go`,
//! `pkg/sensors/k8s.go`).

use std::collections::HashMap;

use serde_json::Value;

use super::context::{ArgInfo, Hook, HookKind, Policy, arr, str_of};
use super::goparse::{atoi, parse_bool};
use super::selectors;
use super::violation::Violation;

const ARCH_PREFIXES: &[&str] = &["__x64_", "__arm64_", "__ia32_"];

fn strip_arch_prefix(s: &str) -> &str {
    ARCH_PREFIXES
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s)
}

fn has_arch_prefix(s: &str) -> bool {
    ARCH_PREFIXES.iter().any(|p| s.starts_with(p))
}

/// The kernel symbol of a `syscalls` list element (`SyscallVal.Symbol`), or why it is invalid.
fn syscall_list_symbol(val: &str) -> Result<String, String> {
    let (abi, rest) = match val.split('/').collect::<Vec<_>>()[..] {
        [one] => (None, one),
        [abi, rest] => (Some(abi), rest),
        _ => return Err(format!("invalid syscall list element '{val}'")),
    };
    let prefix = match abi {
        None => ARCH_PREFIXES
            .iter()
            .find(|p| rest.starts_with(**p))
            .copied()
            .unwrap_or("__x64_"),
        Some("x64") => "__x64_",
        Some("i386") => "__ia32_",
        Some("arm64") | Some("arm32") => "__arm64_",
        Some(other) => return Err(format!("invalid ABI: {other}")),
    };
    let name = strip_arch_prefix(rest);
    if !name.starts_with("sys_") {
        return Err(format!(
            "invalid syscall list element '{val}': expected sys_<name>, optionally prefixed by an ABI (x64/, i386/, arm64/, arm32/)"
        ));
    }
    Ok(format!("{prefix}{name}"))
}

/// Runs every policy-handler and selector-compiler check on `policy` (a full object).
pub(super) fn validate(policy: &Value, namespaced: bool, out: &mut Vec<Violation>) {
    let Some(spec) = policy.get("spec").filter(|s| s.is_object()) else {
        return;
    };
    check_sections(spec, namespaced, out);
    let (disable_kprobe_multi, override_method) = check_options(spec, out);
    let lists = check_lists(spec, out);
    let pol = Policy {
        lists,
        macros: spec.get("selectorsMacros").and_then(Value::as_object),
        has_enforcers: !arr(spec, "enforcers").is_empty(),
        disable_kprobe_multi,
    };
    check_enforcers(spec, &pol, override_method.as_deref(), out);
    check_macros(&pol, out);
    check_hooks(spec, &pol, out);
}

/// Only one hook section per policy; no uprobes or usdts in a namespaced policy.
fn check_sections(spec: &Value, namespaced: bool, out: &mut Vec<Violation>) {
    let sections = [
        "kprobes",
        "tracepoints",
        "lsmhooks",
        "uprobes",
        "usdts",
        "fentries",
    ];
    let used: Vec<&str> = sections
        .iter()
        .copied()
        .filter(|s| !arr(spec, s).is_empty())
        .collect();
    if used.len() > 1 {
        out.push(Violation::new(
            "spec",
            format!(
                "tracing policies with multiple sections of kprobes, tracepoints, lsm hooks, uprobes or usdts are currently not supported (found {})",
                used.join(", ")
            ),
        ));
    }

    if namespaced {
        for (section, what) in [("uprobes", "uprobe"), ("usdts", "usdt")] {
            if !arr(spec, section).is_empty() {
                out.push(Violation::new(
                    format!("spec.{section}"),
                    format!("{what} is not supported in a namespaced tracing policy"),
                ));
            }
        }
    }
}

/// `spec.selectorsMacros`: a macro cannot use other macros.
fn check_macros(pol: &Policy<'_>, out: &mut Vec<Violation>) {
    if let Some(macros) = pol.macros {
        for (name, m) in macros {
            if !arr(m, "macros").is_empty() {
                out.push(Violation::new(
                    format!("spec.selectorsMacros[{name}].macros"),
                    "macro definition cannot use other macros",
                ));
            }
        }
    }
}

/// Every hook of every section (hook-level, then its selectors), and the limits kprobe_multi
/// puts on the kprobes together: distinct symbols, one shared CEL program table.
fn check_hooks(spec: &Value, pol: &Policy<'_>, out: &mut Vec<Violation>) {
    let kinds = [
        ("kprobes", HookKind::Kprobe),
        ("fentries", HookKind::Fentry),
        ("tracepoints", HookKind::Tracepoint),
        ("lsmhooks", HookKind::Lsm),
        ("uprobes", HookKind::Uprobe),
        ("usdts", HookKind::Usdt),
    ];
    let mut seen_symbols: HashMap<String, String> = HashMap::new();
    let mut cel_exprs = 0usize;
    for (section, kind) in kinds {
        for (i, h) in arr(spec, section).iter().enumerate() {
            if !h.is_object() {
                continue;
            }
            let path = format!("spec.{section}[{i}]");
            let hook = check_hook(h, kind, path, pol, out);
            let summary = selectors::check_hook_selectors(h, &hook, pol, out);
            if kind == HookKind::Kprobe {
                cel_exprs += summary.cel_exprs;
            }
            // Same symbol twice: refused while kprobe_multi is in use (fentries never use it).
            if kind == HookKind::Kprobe && !pol.disable_kprobe_multi {
                check_kprobe_multi_symbols(&hook, &mut seen_symbols, out);
            }
        }
    }
    // With kprobe_multi all kprobes share one CEL program table.
    if !pol.disable_kprobe_multi && cel_exprs > selectors::MAX_CEL_EXPRS {
        out.push(Violation::new(
            "spec.kprobes",
            format!(
                "cannot allocate new cel expression function: no more than {} CelExpr allowed per policy",
                selectors::MAX_CEL_EXPRS
            ),
        ));
    }
}

/// A kprobe's symbols must not repeat one of an earlier kprobe (`seen`: symbol → first hook path).
fn check_kprobe_multi_symbols(
    hook: &Hook<'_>,
    seen: &mut HashMap<String, String>,
    out: &mut Vec<Violation>,
) {
    let Some(symbols) = &hook.symbols else {
        return;
    };
    for sym in symbols {
        if let Some(first) = seen.get(sym) {
            out.push(Violation::new(
                format!("{}.call", hook.path),
                format!(
                    "can't have multiple instances of same symbol '{sym}' with kprobe_multi (first at {first}); merge the hooks or set spec.options disable-kprobe-multi"
                ),
            ));
        } else {
            seen.insert(sym.clone(), hook.path.clone());
        }
    }
}

/// `spec.options`: known option values must parse. Returns (disable-kprobe-multi, override-method).
fn check_options(spec: &Value, out: &mut Vec<Violation>) -> (bool, Option<String>) {
    let mut disable_kprobe_multi = false;
    let mut override_method = None;
    for (i, o) in arr(spec, "options").iter().enumerate() {
        let Some(name) = str_of(o, "name") else {
            continue;
        };
        let value = str_of(o, "value").unwrap_or("");
        let path = format!("spec.options[{i}].value");
        let bad = |out: &mut Vec<Violation>, what: &str| {
            out.push(Violation::new(
                path.clone(),
                format!("failed to set option {name}: invalid value \"{value}\" ({what})"),
            ))
        };
        match name {
            "disable-kprobe-multi" | "disable-uprobe-multi" => match parse_bool(value) {
                Some(b) => {
                    if name == "disable-kprobe-multi" {
                        disable_kprobe_multi = b;
                    }
                }
                None => bad(
                    out,
                    "expected a boolean such as \"1\", \"true\", \"0\", \"false\"",
                ),
            },
            "override-method" => {
                if value == "fmod-ret" || value == "override-return" {
                    override_method = Some(value.to_owned());
                } else {
                    bad(out, "expected \"fmod-ret\" or \"override-return\"");
                }
            }
            "policy-mode" if value != "enforce" && value != "monitor" => {
                bad(out, "expected \"enforce\" or \"monitor\"");
            }
            "sleepable-preload-size" if atoi(value).is_none_or(|n| n <= 0) => {
                bad(out, "expected a positive integer");
            }
            _ => {} // unknown options are ignored by Tetragon
        }
    }
    (disable_kprobe_multi, override_method)
}

/// `spec.lists`: generated lists carry no values, ftrace lists need a pattern, syscall lists
/// name syscalls. Returns the lists by name.
fn check_lists<'a>(spec: &'a Value, out: &mut Vec<Violation>) -> HashMap<&'a str, &'a Value> {
    let mut by_name = HashMap::new();
    for (i, l) in arr(spec, "lists").iter().enumerate() {
        let Some(name) = str_of(l, "name") else {
            continue;
        };
        by_name.entry(name).or_insert(l);
        if l.get("validated").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let ty = str_of(l, "type").unwrap_or("");
        let values = arr(l, "values");
        match ty {
            "generated_syscalls" | "generated_ftrace" if !values.is_empty() => {
                out.push(Violation::new(
                    format!("spec.lists[{i}].values"),
                    format!("error generated list '{name}' has values"),
                ));
            }
            "syscalls" => {
                for (j, v) in values.iter().enumerate() {
                    if let Some(Err(e)) = v.as_str().map(syscall_list_symbol) {
                        out.push(Violation::new(format!("spec.lists[{i}].values[{j}]"), e));
                    }
                }
            }
            _ => {}
        }
        if ty == "generated_ftrace" && str_of(l, "pattern").unwrap_or("").is_empty() {
            out.push(Violation::new(
                format!("spec.lists[{i}].pattern"),
                format!("error generated ftrace list '{name}' must specify pattern"),
            ));
        }
    }
    by_name
}

/// `spec.enforcers`: one at most; calls are syscalls or security_ functions.
fn check_enforcers(
    spec: &Value,
    pol: &Policy<'_>,
    override_method: Option<&str>,
    out: &mut Vec<Violation>,
) {
    let enforcers = arr(spec, "enforcers");
    if enforcers.len() > 1 {
        out.push(Violation::new(
            "spec.enforcers",
            "we support only single enforcer sensor (one entry in spec.enforcers)",
        ));
    }
    for (i, e) in enforcers.iter().enumerate() {
        let mut has_security = false;
        for (j, call) in arr(e, "calls").iter().enumerate() {
            let Some(call) = call.as_str() else { continue };
            let path = format!("spec.enforcers[{i}].calls[{j}]");
            let symbols: Vec<&str> = match call.strip_prefix("list:") {
                Some(name) => match pol.lists.get(name) {
                    None => {
                        out.push(Violation::new(
                            path,
                            format!("error list '{call}' not found"),
                        ));
                        continue;
                    }
                    Some(l) if str_of(l, "type") == Some("syscalls") => continue,
                    Some(l) => arr(l, "values").iter().filter_map(Value::as_str).collect(),
                },
                None => vec![call],
            };
            for sym in symbols {
                if has_arch_prefix(sym) || sym.starts_with("sys_") {
                } else if sym.starts_with("security_") {
                    has_security = true;
                } else {
                    out.push(Violation::new(
                        path.clone(),
                        format!("enforcer sensor requires either syscall or security_ functions and symbol '{sym}' appears to be neither"),
                    ));
                }
            }
        }
        if has_security && override_method == Some("override-return") {
            out.push(Violation::new(
                format!("spec.enforcers[{i}]"),
                "enforcer: can't override security function with override-return",
            ));
        }
    }
}

/// Hook-level checks (arguments, message, tags, call naming); returns what selectors need.
fn check_hook<'a>(
    h: &'a Value,
    kind: HookKind,
    path: String,
    pol: &Policy<'a>,
    out: &mut Vec<Violation>,
) -> Hook<'a> {
    let args: Vec<ArgInfo> = arr(h, "args").iter().map(ArgInfo::of).collect();
    let data: Vec<ArgInfo> = arr(h, "data").iter().map(ArgInfo::of).collect();

    check_message_and_tags(h, &path, out);
    if args.len() + data.len() > 5 {
        out.push(Violation::new(
            path.clone(),
            format!(
                "too many arguments, max 5: args({}) data({})",
                args.len(),
                data.len()
            ),
        ));
    }
    for (j, (a, info)) in arr(h, "args").iter().zip(&args).enumerate() {
        check_arg(h, kind, a, info, &format!("{path}.args[{j}]"), out);
    }
    for (j, (d, info)) in arr(h, "data").iter().zip(&data).enumerate() {
        check_data_arg(kind, d, info, &format!("{path}.data[{j}]"), out);
    }
    let return_arg = check_return(h, &path, out);
    let (syscall, symbols) = check_attach_point(h, kind, &path, pol, out);

    Hook {
        kind,
        path,
        args,
        data,
        return_arg,
        syscall,
        symbols,
    }
}

/// Whether the hook kind is a kprobe or an fentry (they share the argument rules and `call`).
fn is_kprobe_like(kind: HookKind) -> bool {
    matches!(kind, HookKind::Kprobe | HookKind::Fentry)
}

/// One `args[]` entry (`a`, at `apath`): the types each hook kind refuses, the index bound
/// (tracepoints have none, raw tracepoints read 5), and no `source` on kprobe arguments.
fn check_arg(
    h: &Value,
    kind: HookKind,
    a: &Value,
    info: &ArgInfo<'_>,
    apath: &str,
    out: &mut Vec<Violation>,
) {
    let kprobe_like = is_kprobe_like(kind);
    if kprobe_like && (info.ty == "auto" || info.ty == "syscall64") {
        out.push(Violation::new(
            format!("{apath}.type"),
            format!("type '{}' is invalid for kprobes", info.ty),
        ));
    }
    if kind == HookKind::Tracepoint && info.ty == "const_buf" {
        out.push(Violation::new(
            format!("{apath}.type"),
            "const_buf type cannot be user-defined",
        ));
    }
    if kind == HookKind::Lsm && info.ty == "auto" && str_of(a, "resolve").unwrap_or("").is_empty() {
        out.push(Violation::new(
            format!("{apath}.type"),
            "type 'auto' unsupported",
        ));
    }
    if kind != HookKind::Tracepoint && info.index > 4 {
        out.push(Violation::new(
            format!("{apath}.index"),
            format!(
                "ArgType {} Index {} out of bounds (max 4)",
                info.ty, info.index
            ),
        ));
    }
    if kind == HookKind::Tracepoint
        && h.get("raw").and_then(Value::as_bool) == Some(true)
        && info.index > 5
    {
        out.push(Violation::new(
            format!("{apath}.index"),
            format!(
                "raw tracepoint can read up to 5 arguments, but index {} was requested",
                info.index
            ),
        ));
    }
    if kprobe_like && !str_of(a, "source").unwrap_or("").is_empty() {
        out.push(Violation::new(
            format!("{apath}.source"),
            "standard argument is not allowed to have source configured (use data[] for current_task/pt_regs)",
        ));
    }
}

/// One `data[]` entry (`d`, at `dpath`): a `current_task`/`pt_regs` source, a `resolve`, and on
/// kprobes an index of at most 4.
fn check_data_arg(
    kind: HookKind,
    d: &Value,
    info: &ArgInfo<'_>,
    dpath: &str,
    out: &mut Vec<Violation>,
) {
    let source = str_of(d, "source").unwrap_or("");
    if source != "current_task" && source != "pt_regs" {
        out.push(Violation::new(
            format!("{dpath}.source"),
            format!("data argument has wrong source '{source}' (expected current_task or pt_regs)"),
        ));
    }
    if str_of(d, "resolve").unwrap_or("").is_empty() {
        out.push(Violation::new(
            format!("{dpath}.resolve"),
            "data argument missing 'resolve' setup",
        ));
    }
    if is_kprobe_like(kind) && info.index > 4 {
        out.push(Violation::new(
            format!("{dpath}.index"),
            format!(
                "ArgType {} Index {} out of bounds (max 4)",
                info.ty, info.index
            ),
        ));
    }
}

/// `returnArg` (an explicit type when `return: true`) and `returnArgAction` (TrackSock or
/// UntrackSock). Returns `returnArg` when `return: true` (return selectors are compiled only then).
fn check_return<'a>(h: &'a Value, path: &str, out: &mut Vec<Violation>) -> Option<ArgInfo<'a>> {
    let returns = h.get("return").and_then(Value::as_bool) == Some(true);
    let return_arg = h
        .get("returnArg")
        .filter(|r| r.is_object())
        .map(ArgInfo::of);
    if returns
        && let Some(r) = return_arg
        && r.ty == "auto"
    {
        out.push(Violation::new(
            format!("{path}.returnArg.type"),
            "ReturnArg type 'auto' unsupported (set an explicit type)",
        ));
    }
    if let Some(action) = str_of(h, "returnArgAction").filter(|a| !a.is_empty()) {
        let lower = action.to_ascii_lowercase();
        if lower != "tracksock" && lower != "untracksock" {
            out.push(Violation::new(
                format!("{path}.returnArgAction"),
                format!("ReturnArgAction type '{action}' unsupported; omit returnArgAction or use 'TrackSock'/'UntrackSock'"),
            ));
        }
    }
    if returns { return_arg } else { None }
}

/// What the hook attaches to, per kind: a kprobe's or fentry's `call` (resolved, see
/// [`resolve_call`]), an lsm `hook`, a tracepoint's `subsystem` and `event`, an uprobe's
/// symbols, offsets or addresses. Returns the effective syscall flag and the kprobe symbols.
fn check_attach_point(
    h: &Value,
    kind: HookKind,
    path: &str,
    pol: &Policy<'_>,
    out: &mut Vec<Violation>,
) -> (bool, Option<Vec<String>>) {
    let call = if is_kprobe_like(kind) {
        resolve_call(h, path, pol, out)
    } else {
        (false, None)
    };
    if kind == HookKind::Lsm && str_of(h, "hook").is_some_and(str::is_empty) {
        out.push(Violation::new(
            format!("{path}.hook"),
            "lsm hook name is empty",
        ));
    }
    if kind == HookKind::Tracepoint {
        for f in ["subsystem", "event"] {
            if str_of(h, f).is_some_and(str::is_empty) {
                out.push(Violation::new(
                    format!("{path}.{f}"),
                    format!("tracepoint {f} is empty"),
                ));
            }
        }
    }
    if kind == HookKind::Uprobe {
        let n = ["symbols", "offsets", "addrs"]
            .iter()
            .filter(|k| !arr(h, k).is_empty())
            .count();
        if n == 0 {
            out.push(Violation::new(
                path,
                "uprobe needs exactly one of either Symbols, Offsets or Addrs defined",
            ));
        }
    }
    call
}

/// `message` (2..256 bytes) and `tags` (≤16, each 2..128 bytes).
fn check_message_and_tags(h: &Value, path: &str, out: &mut Vec<Violation>) {
    if let Some(msg) = str_of(h, "message") {
        // Empty means "no message"; longer than 256 is truncated by Tetragon (refused here).
        if msg.len() == 1 {
            out.push(Violation::new(
                format!("{path}.message"),
                "message field is too short (min 2 characters)",
            ));
        } else if msg.len() > 256 {
            out.push(Violation::new(
                format!("{path}.message"),
                format!(
                    "message field is too long ({} bytes, max 256; Tetragon would truncate it)",
                    msg.len()
                ),
            ));
        }
    }
    // The count (≤16) is the CRD's maxItems.
    for (i, t) in arr(h, "tags").iter().enumerate() {
        let Some(t) = t.as_str() else { continue };
        if t.len() < 2 {
            out.push(Violation::new(
                format!("{path}.tags[{i}]"),
                format!("custom tag n{i}: too short (min 2 characters)"),
            ));
        } else if t.len() > 128 {
            out.push(Violation::new(
                format!("{path}.tags[{i}]"),
                format!(
                    "custom tag n{i}: too long ({} bytes, max 128; Tetragon would truncate it)",
                    t.len()
                ),
            ));
        }
    }
}

/// kprobes/fentries: resolves `call` (lists included) to the attached symbols and the effective
/// syscall flag, and refuses `syscall: true` on a function that is not a syscall.
fn resolve_call(
    h: &Value,
    path: &str,
    pol: &Policy<'_>,
    out: &mut Vec<Violation>,
) -> (bool, Option<Vec<String>>) {
    let call = str_of(h, "call").unwrap_or("");
    let syscall_flag = h.get("syscall").and_then(Value::as_bool).unwrap_or(true);
    let ignore_not_found = h
        .get("ignore")
        .and_then(|i| i.get("callNotFound"))
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(name) = call.strip_prefix("list:") {
        let Some(list) = pol.lists.get(name) else {
            out.push(Violation::new(
                format!("{path}.call"),
                format!("error list '{call}' not found in spec.lists"),
            ));
            return (syscall_flag, None);
        };
        let ty = str_of(list, "type").unwrap_or("");
        let syscall = syscall_flag || ty == "syscalls" || ty == "generated_syscalls";
        let symbols = match ty {
            "syscalls" => Some(
                arr(list, "values")
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|v| syscall_list_symbol(v).ok())
                    .collect(),
            ),
            "generated_syscalls" | "generated_ftrace" => None,
            _ => Some(
                arr(list, "values")
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
        };
        return (syscall, symbols);
    }
    if call.is_empty() {
        return (syscall_flag, None);
    }
    if !syscall_flag {
        return (false, Some(vec![call.to_owned()]));
    }
    let name = strip_arch_prefix(call);
    if !name.starts_with("sys_") && !ignore_not_found {
        out.push(Violation::new(
            format!("{path}.call"),
            format!(
                "'{call}' is not a syscall but syscall is true (the CRD default): Tetragon would attach to '__x64_{name}', which does not exist; set syscall: false for kernel functions"
            ),
        ));
    }
    let symbol = if has_arch_prefix(call) {
        call.to_owned()
    } else {
        format!("__x64_{call}")
    };
    (true, Some(vec![symbol]))
}
