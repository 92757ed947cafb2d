//! The selector compiler's rules (`pkg/selectors/kernel.go`, macro expansion in
//! `pkg/sensors/tracing/generic.go`, action placement in `generickprobe.go`/`genericlsm.go`/
//! `genericfentry.go`): limits, macros, actions, binaries, namespaces, capabilities; argument
//! filters are in `filters`.

use serde_json::Value;

use super::context::{Hook, HookKind, HookState, Item, Policy, arr, str_of};
use super::filters::{Lookup, POSTFIX_MAX, PREFIX_MAX, check_filter};
use super::goparse::{is_rate_limit, parse_uint};
use super::names::{NAMESPACES, is_capability};
use super::violation::Violation;

/// `MaxSelectors`.
const MAX_SELECTORS: usize = 5;
/// matchArgs + matchData per selector (kernels with large programs, ≥5.3).
const MAX_ARG_FILTERS: usize = 5;
/// Actions per selector.
const MAX_ACTIONS: usize = 3;
/// `MaxCelExprFunctions`.
pub(super) const MAX_CEL_EXPRS: usize = 8;
/// `BINARY_PATH_MAX_LEN - 1`.
const BINARY_PATH_MAX: usize = 255;

/// Selector fields a macro can supply (`appendMacrosSelectors`).
const FIELDS: [&str; 12] = [
    "matchPIDs",
    "matchArgs",
    "matchData",
    "matchActions",
    "matchReturnArgs",
    "matchReturnActions",
    "matchBinaries",
    "matchParentBinaries",
    "matchNamespaces",
    "matchNamespaceChanges",
    "matchCapabilities",
    "matchCapabilityChanges",
];
/// What the policy-level checks need from a hook's selectors.
pub(super) struct Summary {
    /// CelExpr filters in this hook.
    pub cel_exprs: usize,
}

/// A selector with its macros applied.
struct Expanded<'a> {
    fields: [Vec<Item<'a>>; 12],
    /// Where each field's list lives (for count violations).
    field_paths: [String; 12],
}

impl<'a> Expanded<'a> {
    fn get(&self, field: &str) -> &[Item<'a>] {
        let i = FIELDS
            .iter()
            .position(|f| *f == field)
            .expect("known field");
        &self.fields[i]
    }

    fn path(&self, field: &str) -> &str {
        let i = FIELDS
            .iter()
            .position(|f| *f == field)
            .expect("known field");
        &self.field_paths[i]
    }
}

fn items<'a>(v: &'a Value, field: &str, base: &str) -> Vec<Item<'a>> {
    arr(v, field)
        .iter()
        .enumerate()
        .map(|(i, v)| Item {
            v,
            path: format!("{base}.{field}[{i}]"),
        })
        .collect()
}

/// Applies `macros` the way `appendMacrosSelectors` does (a field may come from one source only).
fn expand<'a>(
    sel: &'a Value,
    sel_path: &str,
    pol: &Policy<'a>,
    out: &mut Vec<Violation>,
) -> Expanded<'a> {
    let mut fields: [Vec<Item<'a>>; 12] = Default::default();
    let mut field_paths: [String; 12] = Default::default();
    for (i, f) in FIELDS.iter().enumerate() {
        fields[i] = items(sel, f, sel_path);
        field_paths[i] = format!("{sel_path}.{f}");
    }
    for (j, name) in arr(sel, "macros").iter().enumerate() {
        let Some(name) = name.as_str() else { continue };
        let mpath = format!("{sel_path}.macros[{j}]");
        let Some(macros) = pol.macros.filter(|m| !m.is_empty()) else {
            out.push(Violation::new(
                mpath,
                format!(
                    "macro '{name}' is used in selector, but no macros were defined in policy spec"
                ),
            ));
            continue;
        };
        let Some(m) = macros.get(name) else {
            out.push(Violation::new(mpath, format!("undefined macro '{name}'")));
            continue;
        };
        let macro_base = format!("spec.selectorsMacros[{name}]");
        for (i, f) in FIELDS.iter().enumerate() {
            let extra = items(m, f, &macro_base);
            if extra.is_empty() {
                continue;
            }
            if !fields[i].is_empty() {
                out.push(Violation::new(
                    mpath.clone(),
                    format!("{f}: field is defined in multiple macros and/or policy selectors"),
                ));
                continue;
            }
            fields[i] = extra;
            field_paths[i] = format!("{macro_base}.{f}");
        }
    }
    Expanded {
        fields,
        field_paths,
    }
}

/// Checks every selector of one hook.
pub(super) fn check_hook_selectors(
    h: &Value,
    hook: &Hook<'_>,
    pol: &Policy<'_>,
    out: &mut Vec<Violation>,
) -> Summary {
    let sels = arr(h, "selectors");
    if sels.len() > MAX_SELECTORS {
        out.push(Violation::new(
            format!("{}.selectors", hook.path),
            format!(
                "no more than {MAX_SELECTORS} selectors supported ({} provided)",
                sels.len()
            ),
        ));
    }
    let mut state = HookState::default();
    for (i, sel) in sels.iter().enumerate() {
        if !sel.is_object() {
            continue;
        }
        let sel_path = format!("{}.selectors[{i}]", hook.path);
        let e = expand(sel, &sel_path, pol, out);
        check_selector(&e, hook, pol, &mut state, out);
    }
    if state.cel_exprs > MAX_CEL_EXPRS {
        out.push(Violation::new(
            format!("{}.selectors", hook.path),
            format!("cannot allocate new cel expression function: no more than {MAX_CEL_EXPRS} CelExpr allowed per policy"),
        ));
    }
    Summary {
        cel_exprs: state.cel_exprs,
    }
}

/// One selector, field by field (the order of these checks is the order of its violations).
fn check_selector(
    e: &Expanded<'_>,
    hook: &Hook<'_>,
    pol: &Policy<'_>,
    state: &mut HookState,
    out: &mut Vec<Violation>,
) {
    check_arg_filters(e, hook, pol, state, out);
    check_actions(e, hook, pol, out);
    check_return_selectors(e, hook, pol, state, out);
    for field in ["matchBinaries", "matchParentBinaries"] {
        for b in e.get(field) {
            check_binaries(b, field, out);
        }
    }

    check_namespaces(e, out);
    check_capabilities(e, out);
    check_pids(e, out);
}

/// matchArgs and matchData (`ParseMatchArgs`): at most five together, each as `parseMatchArg`.
fn check_arg_filters(
    e: &Expanded<'_>,
    hook: &Hook<'_>,
    pol: &Policy<'_>,
    state: &mut HookState,
    out: &mut Vec<Violation>,
) {
    let match_args = e.get("matchArgs");
    let match_data = e.get("matchData");
    if match_args.len() + match_data.len() > MAX_ARG_FILTERS {
        out.push(Violation::new(
            e.path("matchArgs"),
            format!(
                "parseMatchArgs: supports up to {MAX_ARG_FILTERS} filters (matchArgs + matchData; {} provided)",
                match_args.len() + match_data.len()
            ),
        ));
    }
    let arg_lookup = if hook.kind == HookKind::Tracepoint {
        Lookup::Tracepoint
    } else {
        Lookup::Index
    };
    for f in match_args {
        check_filter(f, &hook.args, arg_lookup, state, pol, out);
    }
    for f in match_data {
        check_filter(f, &hook.data, Lookup::Position, state, pol, out);
    }
}

/// matchActions (`ParseMatchActions`): at most three, each placed where its hook allows it.
fn check_actions(e: &Expanded<'_>, hook: &Hook<'_>, pol: &Policy<'_>, out: &mut Vec<Violation>) {
    let actions = e.get("matchActions");
    if actions.len() > MAX_ACTIONS {
        out.push(Violation::new(
            e.path("matchActions"),
            format!(
                "only {MAX_ACTIONS} actions are supported per selector ({} provided)",
                actions.len()
            ),
        ));
    }
    for a in actions {
        check_action(a, hook, pol, true, out);
    }
}

/// matchReturnArgs and matchReturnActions: compiled only for hooks with `return: true`, never
/// for lsm hooks.
fn check_return_selectors(
    e: &Expanded<'_>,
    hook: &Hook<'_>,
    pol: &Policy<'_>,
    state: &mut HookState,
    out: &mut Vec<Violation>,
) {
    if hook.kind == HookKind::Lsm && !e.get("matchReturnArgs").is_empty() {
        out.push(Violation::new(
            e.path("matchReturnArgs"),
            "MatchReturnArgs selector is not supported for lsm hooks",
        ));
    }
    if let Some(ret) = hook.return_arg {
        let rargs = e.get("matchReturnArgs");
        if rargs.len() > MAX_ARG_FILTERS {
            out.push(Violation::new(
                e.path("matchReturnArgs"),
                format!(
                    "parseMatchArgs: supports up to {MAX_ARG_FILTERS} filters ({} provided)",
                    rargs.len()
                ),
            ));
        }
        for f in rargs {
            check_filter(f, &[ret], Lookup::Index, state, pol, out);
        }
        let ractions = e.get("matchReturnActions");
        if ractions.len() > MAX_ACTIONS {
            out.push(Violation::new(
                e.path("matchReturnActions"),
                format!(
                    "only {MAX_ACTIONS} actions are supported per selector ({} provided)",
                    ractions.len()
                ),
            ));
        }
        for a in ractions {
            check_action(a, hook, pol, false, out);
        }
    }
}

/// matchNamespaces (`ParseMatchNamespaces`: ten filters, four values each, numeric or
/// `host_ns`) and matchNamespaceChanges (`ParseMatchNamespaceChanges`: one filter of known
/// namespace types).
fn check_namespaces(e: &Expanded<'_>, out: &mut Vec<Violation>) {
    let namespaces = e.get("matchNamespaces");
    if namespaces.len() > 10 {
        out.push(Violation::new(
            e.path("matchNamespaces"),
            format!(
                "matchNamespace supports up to 10 filters ({} provided)",
                namespaces.len()
            ),
        ));
    }
    for ns in namespaces {
        let values = arr(ns.v, "values");
        if values.len() > 4 {
            out.push(Violation::new(
                format!("{}.values", ns.path),
                format!(
                    "matchNamespace supports up to 4 values per filter ({} provided)",
                    values.len()
                ),
            ));
        }
        for (k, v) in values.iter().enumerate() {
            if let Some(v) = v.as_str()
                && v != "host_ns"
                && parse_uint(v, false, 32).is_none()
            {
                out.push(Violation::new(
                    format!("{}.values[{k}]", ns.path),
                    format!(
                        "values for matchNamespace can only be numeric or \"host_ns\" (got \"{v}\")"
                    ),
                ));
            }
        }
    }
    let changes = e.get("matchNamespaceChanges");
    if changes.len() > 1 {
        out.push(Violation::new(
            e.path("matchNamespaceChanges"),
            format!(
                "matchNamespaceChanges supports only a single filter ({} provided)",
                changes.len()
            ),
        ));
    }
    for c in changes {
        for (k, v) in arr(c.v, "values").iter().enumerate() {
            if let Some(v) = v.as_str()
                && !NAMESPACES.contains(&v.to_ascii_lowercase().as_str())
            {
                out.push(Violation::new(
                    format!("{}.values[{k}]", c.path),
                    format!("unknown namespace type '{v}'"),
                ));
            }
        }
    }
}

/// matchCapabilities and matchCapabilityChanges: known capability names.
fn check_capabilities(e: &Expanded<'_>, out: &mut Vec<Violation>) {
    for field in ["matchCapabilities", "matchCapabilityChanges"] {
        for c in e.get(field) {
            for (k, v) in arr(c.v, "values").iter().enumerate() {
                if let Some(v) = v.as_str()
                    && !is_capability(v)
                {
                    out.push(Violation::new(
                        format!("{}.values[{k}]", c.path),
                        format!("unknown capability '{v}' (expected a name such as CAP_SYS_ADMIN)"),
                    ));
                }
            }
        }
    }
}

/// matchPIDs: values are Go `uint32`s.
fn check_pids(e: &Expanded<'_>, out: &mut Vec<Violation>) {
    for p in e.get("matchPIDs") {
        for (k, v) in arr(p.v, "values").iter().enumerate() {
            if v.as_i64().is_some_and(|n| n < 0) {
                out.push(Violation::new(
                    format!("{}.values[{k}]", p.path),
                    "PIDs are unsigned (Go uint32): must not be negative",
                ));
            }
        }
    }
}

fn check_binaries(b: &Item<'_>, field: &str, out: &mut Vec<Violation>) {
    let op = str_of(b.v, "operator").unwrap_or("");
    if b.v.get("followChildren").and_then(Value::as_bool) == Some(true)
        && op != "In"
        && op != "NotIn"
    {
        out.push(Violation::new(
            format!("{}.followChildren", b.path),
            format!("{field}: followChildren not yet implemented for operation '{op}'"),
        ));
    }
    for (k, v) in arr(b.v, "values").iter().enumerate() {
        let Some(v) = v.as_str() else { continue };
        let (limit, what) = match op {
            "In" | "NotIn" => (BINARY_PATH_MAX + 1, "Binary names"),
            "Prefix" | "NotPrefix" => (PREFIX_MAX + 1, "Prefix values"),
            "Postfix" | "NotPostfix" => (POSTFIX_MAX, "Postfix values"),
            _ => continue,
        };
        if v.len() >= limit {
            out.push(Violation::new(
                format!("{}.values[{k}]", b.path),
                format!(
                    "{field}: {what} longer than {} bytes are not supported ({} bytes)",
                    limit - 1,
                    v.len()
                ),
            ));
        }
    }
}

/// One action: rate limit, stack traces, NotifyEnforcer, unsigned arguments; for a matchActions
/// entry (`entry`, not matchReturnActions) also whether the hook kind supports it.
fn check_action(
    a: &Item<'_>,
    hook: &Hook<'_>,
    pol: &Policy<'_>,
    entry: bool,
    out: &mut Vec<Violation>,
) {
    let action = str_of(a.v, "action").unwrap_or("");
    let path = &a.path;
    check_rate_limit(a, action, out);
    let stack = ["kernelStackTrace", "userStackTrace"]
        .iter()
        .any(|k| a.v.get(*k).and_then(Value::as_bool) == Some(true));
    if stack && action != "Post" && matches!(hook.kind, HookKind::Kprobe | HookKind::Fentry) {
        out.push(Violation::new(
            path.clone(),
            format!("kernelStackTrace or userStackTrace can only be used along Post action (got '{action}')"),
        ));
    }
    if action == "NotifyEnforcer" && !pol.has_enforcers {
        out.push(Violation::new(
            format!("{path}.action"),
            "NotifyEnforcer action specified, but spec contains no enforcers",
        ));
    }
    for key in ["argSig", "argSock", "argIndex", "argValue", "argNewAddr"] {
        if a.v.get(key).and_then(Value::as_i64).is_some_and(|n| n < 0) {
            out.push(Violation::new(
                format!("{path}.{key}"),
                "must not be negative (unsigned in Tetragon's Go type)",
            ));
        }
    }
    if entry {
        check_action_for_hook_kind(a, action, stack, hook, pol, out);
    }
}

/// `rateLimit` (Post only, `N`/`Ns`/`Nm`/`Nh`) and its `rateLimitScope`.
fn check_rate_limit(a: &Item<'_>, action: &str, out: &mut Vec<Violation>) {
    let path = &a.path;
    let Some(rate) = str_of(a.v, "rateLimit").filter(|r| !r.is_empty()) else {
        return;
    };
    if !action.eq_ignore_ascii_case("post") {
        out.push(Violation::new(
            format!("{path}.rateLimit"),
            format!("rate limiting can only applied to post action (was applied to '{action}')"),
        ));
    } else if !is_rate_limit(rate) {
        out.push(Violation::new(
            format!("{path}.rateLimit"),
            format!("rateLimit value {rate} is invalid (expected N, Ns, Nm or Nh)"),
        ));
    }
    if let Some(scope) = str_of(a.v, "rateLimitScope").filter(|s| !s.is_empty())
        && !matches!(scope, "thread" | "process" | "global")
    {
        out.push(Violation::new(
            format!("{path}.rateLimitScope"),
            format!("rateLimitScope value {scope} is invalid (expected thread, process or global)"),
        ));
    }
}

/// Which actions each hook kind supports on entry: Override on kprobes (see
/// [`override_problem`]) but not tracepoints, no enforcement on fentries, and lsm hooks' short
/// list (`stack`: a stack trace is requested).
fn check_action_for_hook_kind(
    a: &Item<'_>,
    action: &str,
    stack: bool,
    hook: &Hook<'_>,
    pol: &Policy<'_>,
    out: &mut Vec<Violation>,
) {
    let path = &a.path;
    let lower = action.to_ascii_lowercase();
    match hook.kind {
        HookKind::Kprobe if lower == "override" => {
            if let Some(problem) = override_problem(hook, pol) {
                out.push(Violation::new(format!("{path}.action"), problem));
            }
        }
        HookKind::Fentry
            if matches!(
                lower.as_str(),
                "sigkill" | "signal" | "notifyenforcer" | "override" | "set"
            ) =>
        {
            out.push(Violation::new(
                format!("{path}.action"),
                "enforcement is not supported for fentry yet",
            ));
        }
        HookKind::Tracepoint if lower == "override" => {
            out.push(Violation::new(
                format!("{path}.action"),
                "Override is not supported on tracepoints (use NotifyEnforcer with spec.enforcers, or a kprobe)",
            ));
        }
        HookKind::Lsm => match lower.as_str() {
            "sigkill" | "signal" | "nopost" | "override" => {}
            "post" if stack => out.push(Violation::new(
                path.clone(),
                "stacktrace actions are not supported for lsm hooks",
            )),
            "post" => {}
            _ => out.push(Violation::new(
                format!("{path}.action"),
                format!("{action} action is not supported for lsm hooks"),
            )),
        },
        _ => {}
    }
}

/// `validateOverride`: syscalls, or security_ functions without kprobe_multi.
fn override_problem(hook: &Hook<'_>, pol: &Policy<'_>) -> Option<String> {
    let symbols = hook.symbols.as_ref()?;
    for sym in symbols {
        if sym.starts_with("security_") {
            if !pol.disable_kprobe_multi {
                return Some(format!(
                    "can't override '{sym}' function with kprobe_multi: add spec.options {{name: disable-kprobe-multi, value: \"1\"}}"
                ));
            }
        } else if !hook.syscall {
            return Some(format!(
                "override action can be used only with syscalls and security_ hooks ('{sym}' is neither; use Sigkill)"
            ));
        }
    }
    None
}
