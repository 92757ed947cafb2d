//! The CRDs' CEL rules (`x-kubernetes-validations`), implemented by hand.
//!
//! Each rule is recognised by its exact source text; the validator reports a failing rule with
//! the CRD's own `message`. A CRD carrying a rule missing from [`RULES`] fails the schema tests.

use serde_json::Value;

/// A CEL rule this validator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    /// kprobes/fentries/uprobes: `return: true` needs a `returnArg`.
    ReturnArgWithReturn,
    /// Actions: at most one of `argNewSymbol`, `argNewAddr`, `argNewOffset`.
    OverrideArgNewAtMostOne,
    /// `hostSelector` (spec and matchWorkloads): only null or `{}`.
    HostSelectorNullOrEmpty,
    /// uprobes: at most one of `symbols`, `addrs`, `offsets`.
    UprobeTargetAtMostOne,
    /// TracingPolicyNamespaced: `spec.hostSelector` must be null.
    NamespacedNoHostSelector,
}

/// Every implemented rule, by its exact source in the CRD.
pub(super) const RULES: &[(&str, Rule)] = &[
    (
        "!has(self.return) || (!self.return || has(self.returnArg))",
        Rule::ReturnArgWithReturn,
    ),
    (
        "!(has(self.argNewSymbol) && has(self.argNewAddr)) && !(has(self.argNewSymbol) && has(self.argNewOffset)) && !(has(self.argNewAddr) && has(self.argNewOffset))",
        Rule::OverrideArgNewAtMostOne,
    ),
    (
        "!has(self.matchLabels) && !has(self.matchExpressions)",
        Rule::HostSelectorNullOrEmpty,
    ),
    (
        "!(has(self.symbols) && has(self.addrs)) && !(has(self.symbols) && has(self.offsets)) && !(has(self.addrs) && has(self.offsets))",
        Rule::UprobeTargetAtMostOne,
    ),
    (
        "!has(self.spec.hostSelector)",
        Rule::NamespacedNoHostSelector,
    ),
];

/// CEL `has(self.f)`: the field is present (nulls of non-nullable fields are pruned, so absent).
fn has(v: &Value, field: &str) -> bool {
    v.get(field).is_some_and(|f| !f.is_null())
}

impl Rule {
    /// The implemented rule with this exact source, if any.
    pub fn from_source(src: &str) -> Option<Rule> {
        RULES.iter().find(|(s, _)| *s == src).map(|(_, r)| *r)
    }

    /// Whether the rule holds for `this` (CEL's `self`).
    pub fn holds(self, this: &Value) -> bool {
        let at_most_one = |a: &str, b: &str, c: &str| {
            [has(this, a), has(this, b), has(this, c)]
                .iter()
                .filter(|x| **x)
                .count()
                <= 1
        };
        match self {
            Rule::ReturnArgWithReturn => {
                // `self.return` is a boolean (schema-checked); a non-boolean is the schema's problem.
                let ret = this.get("return").and_then(Value::as_bool).unwrap_or(false);
                !ret || has(this, "returnArg")
            }
            Rule::OverrideArgNewAtMostOne => {
                at_most_one("argNewSymbol", "argNewAddr", "argNewOffset")
            }
            Rule::HostSelectorNullOrEmpty => {
                !has(this, "matchLabels") && !has(this, "matchExpressions")
            }
            Rule::UprobeTargetAtMostOne => at_most_one("symbols", "addrs", "offsets"),
            Rule::NamespacedNoHostSelector => this
                .get("spec")
                .is_none_or(|spec| !has(spec, "hostSelector")),
        }
    }
}
