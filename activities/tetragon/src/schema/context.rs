//! What the loader checks share: the hook and policy facts `hooks` collects, the per-hook
//! counters and selector entries `selectors` hands to `filters`, and JSON accessors.
//!
//! A leaf: `hooks` → `selectors` → `filters` all depend on it and it on none of them, so the
//! three read top-down (policy → hook → selector → argument filter) without importing back.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Which `spec` section a hook comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HookKind {
    Kprobe,
    Fentry,
    Tracepoint,
    Lsm,
    Uprobe,
    Usdt,
}

/// One spec argument (`args[]`, `data[]`, `returnArg`) as the selector compiler sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ArgInfo<'a> {
    /// `index` (required by the CRD; 0 when missing or malformed).
    pub index: u64,
    /// `type`, with the CRD default `auto`.
    pub ty: &'a str,
}

impl<'a> ArgInfo<'a> {
    pub(super) fn of(v: &'a Value) -> Self {
        ArgInfo {
            index: v.get("index").and_then(Value::as_u64).unwrap_or(0),
            ty: v.get("type").and_then(Value::as_str).unwrap_or("auto"),
        }
    }
}

/// Policy-wide facts the per-hook checks need.
pub(super) struct Policy<'a> {
    /// `spec.lists` by name (first definition wins, as in Tetragon's `isList`).
    pub lists: HashMap<&'a str, &'a Value>,
    /// `spec.selectorsMacros`.
    pub macros: Option<&'a Map<String, Value>>,
    /// `spec.enforcers` is non-empty.
    pub has_enforcers: bool,
    /// `spec.options` sets `disable-kprobe-multi` to true (kprobe_multi is otherwise assumed).
    pub disable_kprobe_multi: bool,
}

/// One hook as the selector checks need it.
pub(super) struct Hook<'a> {
    pub kind: HookKind,
    pub path: String,
    pub args: Vec<ArgInfo<'a>>,
    pub data: Vec<ArgInfo<'a>>,
    /// `returnArg` when `return: true` (return selectors are compiled only then).
    pub return_arg: Option<ArgInfo<'a>>,
    /// Effective syscall flag (CRD default true; forced by syscall lists).
    pub syscall: bool,
    /// The kernel symbols Tetragon attaches to (syscalls with the x86-64 prefix); `None` when
    /// generated at load time.
    pub symbols: Option<Vec<String>>,
}

/// Per-hook counters shared by its selectors.
#[derive(Default)]
pub(super) struct HookState {
    pub(super) cel_exprs: usize,
    pub(super) substrings: usize,
}

/// One selector entry with the path it came from (the selector itself or a macro).
pub(super) struct Item<'a> {
    pub(super) v: &'a Value,
    pub(super) path: String,
}

/// `v[key]` as a slice; empty when missing or not an array.
pub(super) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `v[key]` as a string; `None` when missing or not a string.
pub(super) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}
