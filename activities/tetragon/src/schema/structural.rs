//! The CRDs' `openAPIV3Schema`, compiled once into a tree of [`Node`]s and applied structurally,
//! the way the API server (and Tetragon's `UnmarshalStrict` loader) would.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::cel::{self, Rule};
use super::violation::Violation;

/// The cluster-scoped CRD (`tracingpolicies.cilium.io`).
pub(super) static TRACING_POLICY: LazyLock<Crd> = LazyLock::new(|| {
    Crd::parse(
        include_str!("../../crds/cilium.io_tracingpolicies.yaml"),
        false,
    )
});

/// The namespaced CRD (`tracingpoliciesnamespaced.cilium.io`).
pub(super) static TRACING_POLICY_NAMESPACED: LazyLock<Crd> = LazyLock::new(|| {
    Crd::parse(
        include_str!("../../crds/cilium.io_tracingpoliciesnamespaced.yaml"),
        true,
    )
});

/// One compiled CRD.
pub(super) struct Crd {
    /// Whether this is the TracingPolicyNamespaced CRD.
    pub namespaced: bool,
    root: Node,
    /// Schema keywords this compiler does not understand (a test asserts there are none).
    #[cfg_attr(not(test), expect(dead_code))]
    pub unknown_keywords: BTreeSet<String>,
    /// Every distinct CEL rule source in the schema (a test checks each is implemented).
    #[cfg_attr(not(test), expect(dead_code))]
    pub rule_sources: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Object => "object",
            Ty::Array => "array",
            Ty::String => "string",
            Ty::Integer => "integer",
            Ty::Number => "number",
            Ty::Boolean => "boolean",
        }
    }
}

enum Additional {
    /// Not given: undeclared fields are unknown (pruned by the API server, an error for Tetragon).
    Unset,
    /// `additionalProperties: true/false`.
    Allowed(bool),
    /// `additionalProperties: {schema}`: a map whose values follow the schema.
    Schema(Box<Node>),
}

#[derive(PartialEq, Eq)]
enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// A compiled schema node.
struct Node {
    ty: Option<Ty>,
    int_or_string: bool,
    preserve_unknown: bool,
    nullable: bool,
    has_default: bool,
    properties: HashMap<String, Node>,
    additional: Additional,
    required: Vec<String>,
    items: Option<Box<Node>>,
    enumeration: Option<Vec<Value>>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    pattern: Option<Regex>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: bool,
    exclusive_maximum: bool,
    multiple_of: Option<f64>,
    format: Option<String>,
    list_type: ListType,
    rules: Vec<(Option<Rule>, String)>,
}

/// Keywords that only document or that carry no validation.
const INERT_KEYWORDS: &[&str] = &[
    "description",
    "title",
    "example",
    "externalDocs",
    "x-kubernetes-map-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-embedded-resource",
];

impl Crd {
    fn parse(yaml: &str, namespaced: bool) -> Self {
        let doc: Value = serde_yaml_ng::from_str(yaml).expect("embedded CRD is valid YAML");
        let version = doc["spec"]["versions"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == "v1alpha1"))
            .expect("embedded CRD serves v1alpha1");
        let schema = &version["schema"]["openAPIV3Schema"];
        let mut unknown_keywords = BTreeSet::new();
        let mut rule_sources = BTreeSet::new();
        let mut root = Node::compile(schema, &mut unknown_keywords, &mut rule_sources);
        // `metadata` is `{type: object}` in the CRD but is ObjectMeta: checked by `meta`.
        if let Some(m) = root.properties.get_mut("metadata") {
            m.preserve_unknown = true;
        }
        Crd {
            namespaced,
            root,
            unknown_keywords,
            rule_sources,
        }
    }

    /// Validates a whole object against the schema, CEL rules included.
    pub fn validate(&self, object: &Value, out: &mut Vec<Violation>) {
        let mut path = String::new();
        self.root.validate(object, &mut path, out);
    }
}

fn as_u64(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

/// `v` as a list of strings (non-strings skipped; empty when not an array).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Node {
    /// Compiles schema `s`, recording keywords it does not understand in `unknown` and every CEL
    /// rule source in `rule_sources`.
    fn compile(
        s: &Value,
        unknown: &mut BTreeSet<String>,
        rule_sources: &mut BTreeSet<String>,
    ) -> Node {
        let empty = Map::new();
        let m = s.as_object().unwrap_or(&empty);
        let mut node = Node::unconstrained(m.contains_key("default"));
        let mut map_keys = Vec::new();
        for (k, v) in m {
            let known = node.compile_shape(k, v, unknown, rule_sources)
                || node.compile_value_constraint(k, v, unknown)
                || node.compile_kubernetes_extension(k, v, &mut map_keys, rule_sources)
                || INERT_KEYWORDS.contains(&k.as_str());
            if !known {
                unknown.insert(k.clone());
            }
        }
        if let ListType::Map(keys) = &mut node.list_type {
            *keys = map_keys;
        }
        node
    }

    /// A node that accepts anything (no keyword applied yet).
    fn unconstrained(has_default: bool) -> Node {
        Node {
            ty: None,
            int_or_string: false,
            preserve_unknown: false,
            nullable: false,
            has_default,
            properties: HashMap::new(),
            additional: Additional::Unset,
            required: Vec::new(),
            items: None,
            enumeration: None,
            min_items: None,
            max_items: None,
            min_length: None,
            max_length: None,
            min_properties: None,
            max_properties: None,
            pattern: None,
            minimum: None,
            maximum: None,
            exclusive_minimum: false,
            exclusive_maximum: false,
            multiple_of: None,
            format: None,
            list_type: ListType::Atomic,
            rules: Vec::new(),
        }
    }

    /// The shape keywords (`type`, `properties`, `additionalProperties`, `items`, `required`),
    /// compiling sub-schemas. False when `k` is not one of them.
    fn compile_shape(
        &mut self,
        k: &str,
        v: &Value,
        unknown: &mut BTreeSet<String>,
        rule_sources: &mut BTreeSet<String>,
    ) -> bool {
        match k {
            "type" => {
                self.ty = match v.as_str() {
                    Some("object") => Some(Ty::Object),
                    Some("array") => Some(Ty::Array),
                    Some("string") => Some(Ty::String),
                    Some("integer") => Some(Ty::Integer),
                    Some("number") => Some(Ty::Number),
                    Some("boolean") => Some(Ty::Boolean),
                    other => {
                        unknown.insert(format!("type: {other:?}"));
                        None
                    }
                }
            }
            "properties" => {
                if let Some(props) = v.as_object() {
                    for (name, sub) in props {
                        self.properties
                            .insert(name.clone(), Node::compile(sub, unknown, rule_sources));
                    }
                }
            }
            "additionalProperties" => {
                self.additional = match v {
                    Value::Bool(b) => Additional::Allowed(*b),
                    sub => Additional::Schema(Box::new(Node::compile(sub, unknown, rule_sources))),
                }
            }
            "items" => self.items = Some(Box::new(Node::compile(v, unknown, rule_sources))),
            "required" => self.required = strings(v),
            _ => return false,
        }
        true
    }

    /// The value keywords: `enum`, `default` (only its presence matters), `nullable`, `format`,
    /// the bounds and `pattern` (an unparsable pattern goes to `unknown`). False when `k` is not
    /// one of them.
    fn compile_value_constraint(
        &mut self,
        k: &str,
        v: &Value,
        unknown: &mut BTreeSet<String>,
    ) -> bool {
        match k {
            "enum" => self.enumeration = v.as_array().cloned(),
            "default" => {}
            "nullable" => self.nullable = v.as_bool().unwrap_or(false),
            "format" => self.format = v.as_str().map(str::to_owned),
            "minItems" => self.min_items = as_u64(Some(v)),
            "maxItems" => self.max_items = as_u64(Some(v)),
            "minLength" => self.min_length = as_u64(Some(v)),
            "maxLength" => self.max_length = as_u64(Some(v)),
            "minProperties" => self.min_properties = as_u64(Some(v)),
            "maxProperties" => self.max_properties = as_u64(Some(v)),
            "minimum" => self.minimum = v.as_f64(),
            "maximum" => self.maximum = v.as_f64(),
            "exclusiveMinimum" => self.exclusive_minimum = v.as_bool().unwrap_or(false),
            "exclusiveMaximum" => self.exclusive_maximum = v.as_bool().unwrap_or(false),
            "multipleOf" => self.multiple_of = v.as_f64(),
            "pattern" => {
                let src = v.as_str().unwrap_or_default();
                match Regex::new(src) {
                    Ok(re) => self.pattern = Some(re),
                    Err(_) => {
                        unknown.insert(format!("pattern: {src}"));
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// The Kubernetes extensions (`x-kubernetes-*`): int-or-string, preserve-unknown-fields,
    /// list types (map keys collected into `map_keys`) and the CEL `validations`. False when `k`
    /// is not one of them.
    fn compile_kubernetes_extension(
        &mut self,
        k: &str,
        v: &Value,
        map_keys: &mut Vec<String>,
        rule_sources: &mut BTreeSet<String>,
    ) -> bool {
        match k {
            "x-kubernetes-int-or-string" => self.int_or_string = v.as_bool().unwrap_or(false),
            "x-kubernetes-preserve-unknown-fields" => {
                self.preserve_unknown = v.as_bool().unwrap_or(false)
            }
            "x-kubernetes-list-type" => {
                self.list_type = match v.as_str() {
                    Some("set") => ListType::Set,
                    Some("map") => ListType::Map(Vec::new()),
                    _ => ListType::Atomic,
                }
            }
            "x-kubernetes-list-map-keys" => *map_keys = strings(v),
            "x-kubernetes-validations" => {
                for r in v.as_array().into_iter().flatten() {
                    let src = r["rule"].as_str().unwrap_or_default().to_owned();
                    let message = r["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("failed rule: {src}"));
                    rule_sources.insert(src.clone());
                    self.rules.push((cel::Rule::from_source(&src), message));
                }
            }
            _ => return false,
        }
        true
    }

    fn validate(&self, v: &Value, path: &mut String, out: &mut Vec<Violation>) {
        if v.is_null() {
            if !self.nullable {
                out.push(Violation::new(
                    path.clone(),
                    format!(
                        "Invalid value: \"null\": must be of type {}",
                        self.ty.map_or("non-null", Ty::name)
                    ),
                ));
            }
            return;
        }
        if !self.check_type(v, path, out) {
            return;
        }
        if let Some(allowed) = &self.enumeration
            && !allowed.iter().any(|a| json_eq(a, v))
        {
            let list = allowed.iter().map(render).collect::<Vec<_>>().join(", ");
            out.push(Violation::new(
                path.clone(),
                format!("Unsupported value: {}: supported values: {list}", render(v)),
            ));
        }
        match v {
            Value::String(s) => self.validate_string(s, path, out),
            Value::Number(_) => self.validate_number(v, path, out),
            Value::Array(items) => self.validate_array(items, path, out),
            Value::Object(fields) => self.validate_object(fields, path, out),
            Value::Bool(_) | Value::Null => {}
        }
        for (rule, message) in &self.rules {
            if let Some(rule) = rule
                && !rule.holds(v)
            {
                out.push(Violation::new(path.clone(), message.clone()));
            }
        }
    }

    /// Type check; false when the value has the wrong type (nothing deeper is checked then).
    fn check_type(&self, v: &Value, path: &str, out: &mut Vec<Violation>) -> bool {
        if self.int_or_string {
            if v.is_string() || is_integer(v) {
                return true;
            }
            out.push(Violation::new(
                path,
                format!(
                    "Invalid value: {}: must be an integer or a string",
                    render(v)
                ),
            ));
            return false;
        }
        let Some(ty) = self.ty else {
            return true;
        };
        let ok = match ty {
            Ty::Object => v.is_object(),
            Ty::Array => v.is_array(),
            Ty::String => v.is_string(),
            Ty::Integer => is_integer(v),
            Ty::Number => v.is_number(),
            Ty::Boolean => v.is_boolean(),
        };
        if !ok {
            out.push(Violation::new(
                path,
                format!(
                    "Invalid value: {}: must be of type {}",
                    render_kind(v),
                    ty.name()
                ),
            ));
        }
        ok
    }

    fn validate_string(&self, s: &str, path: &str, out: &mut Vec<Violation>) {
        let len = s.chars().count() as u64;
        if let Some(min) = self.min_length
            && len < min
        {
            out.push(Violation::new(
                path,
                format!("Invalid value: \"{s}\": should be at least {min} chars long"),
            ));
        }
        if let Some(max) = self.max_length
            && len > max
        {
            out.push(Violation::new(
                path,
                format!("Too long: may not be more than {max} chars (got {len})"),
            ));
        }
        if let Some(re) = &self.pattern
            && !re.is_match(s)
        {
            out.push(Violation::new(
                path,
                format!("Invalid value: \"{s}\": should match '{}'", re.as_str()),
            ));
        }
    }

    fn validate_number(&self, v: &Value, path: &str, out: &mut Vec<Violation>) {
        let range = match self.format.as_deref() {
            Some("int32") => Some((i32::MIN as f64, i32::MAX as f64, "int32")),
            Some("int64") => Some((i64::MIN as f64, i64::MAX as f64, "int64")),
            _ => None,
        };
        if let Some((lo, hi, name)) = range {
            let fits = match (v.as_i64(), v.as_u64()) {
                (Some(i), _) => name != "int32" || i32::try_from(i).is_ok(),
                (None, Some(_)) => false, // above i64::MAX
                (None, None) => v.as_f64().is_some_and(|f| f >= lo && f <= hi),
            };
            if !fits {
                out.push(Violation::new(
                    path,
                    format!("Invalid value: {v}: must fit in {name}"),
                ));
            }
        }
        let Some(f) = v.as_f64() else { return };
        if let Some(min) = self.minimum {
            let bad = if self.exclusive_minimum {
                f <= min
            } else {
                f < min
            };
            if bad {
                let rel = if self.exclusive_minimum {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                out.push(Violation::new(
                    path,
                    format!("Invalid value: {v}: should be {rel} {min}"),
                ));
            }
        }
        if let Some(max) = self.maximum {
            let bad = if self.exclusive_maximum {
                f >= max
            } else {
                f > max
            };
            if bad {
                let rel = if self.exclusive_maximum {
                    "less than"
                } else {
                    "less than or equal to"
                };
                out.push(Violation::new(
                    path,
                    format!("Invalid value: {v}: should be {rel} {max}"),
                ));
            }
        }
        if let Some(m) = self.multiple_of
            && m != 0.0
            && (f / m).fract() != 0.0
        {
            out.push(Violation::new(
                path,
                format!("Invalid value: {v}: should be a multiple of {m}"),
            ));
        }
    }

    fn validate_array(&self, items: &[Value], path: &mut String, out: &mut Vec<Violation>) {
        let n = items.len() as u64;
        if let Some(min) = self.min_items
            && n < min
        {
            out.push(Violation::new(
                path.clone(),
                format!("Invalid value: {n}: should have at least {min} items"),
            ));
        }
        if let Some(max) = self.max_items
            && n > max
        {
            out.push(Violation::new(
                path.clone(),
                format!("Too many: {n}: must have at most {max} items"),
            ));
        }
        match &self.list_type {
            ListType::Atomic => {}
            ListType::Set => {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].iter().any(|b| json_eq(a, b)) {
                        out.push(Violation::new(
                            format!("{path}[{i}]"),
                            format!("Duplicate value: {}", render(a)),
                        ));
                    }
                }
            }
            ListType::Map(keys) => {
                let key_of = |v: &Value| keys.iter().map(|k| v.get(k).cloned()).collect::<Vec<_>>();
                for (i, a) in items.iter().enumerate() {
                    let ka = key_of(a);
                    if items[..i].iter().any(|b| key_of(b) == ka) {
                        out.push(Violation::new(
                            format!("{path}[{i}]"),
                            format!("Duplicate value: keys {keys:?} repeat an earlier item"),
                        ));
                    }
                }
            }
        }
        if let Some(item_schema) = &self.items {
            let base = path.len();
            for (i, item) in items.iter().enumerate() {
                path.push('[');
                path.push_str(&i.to_string());
                path.push(']');
                item_schema.validate(item, path, out);
                path.truncate(base);
            }
        }
    }

    fn validate_object(
        &self,
        fields: &Map<String, Value>,
        path: &mut String,
        out: &mut Vec<Violation>,
    ) {
        let n = fields.len() as u64;
        if let Some(min) = self.min_properties
            && n < min
        {
            out.push(Violation::new(
                path.clone(),
                format!("Invalid value: should have at least {min} properties"),
            ));
        }
        if let Some(max) = self.max_properties
            && n > max
        {
            out.push(Violation::new(
                path.clone(),
                format!("Too many: {n}: must have at most {max} properties"),
            ));
        }
        let base = path.len();
        for (k, v) in fields {
            if let Some(sub) = self.properties.get(k) {
                // The API server prunes nulls of non-nullable fields before validation (and a
                // Go zero value results for Tetragon's loader): treat them as absent.
                if v.is_null() && !sub.nullable {
                    continue;
                }
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                sub.validate(v, path, out);
                path.truncate(base);
                continue;
            }
            match &self.additional {
                Additional::Schema(sub) => {
                    path.push('[');
                    path.push_str(k);
                    path.push(']');
                    sub.validate(v, path, out);
                    path.truncate(base);
                }
                Additional::Allowed(true) => {}
                Additional::Allowed(false) | Additional::Unset => {
                    if !self.preserve_unknown {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        out.push(Violation::new(
                            p,
                            "unknown field (not declared in the CRD schema; Tetragon loads policies strictly)",
                        ));
                    }
                }
            }
        }
        for r in &self.required {
            let present = fields.get(r).is_some_and(|v| !v.is_null());
            let defaulted = self.properties.get(r).is_some_and(|p| p.has_default);
            if !present && !defaulted {
                let p = if path.is_empty() {
                    r.clone()
                } else {
                    format!("{path}.{r}")
                };
                out.push(Violation::new(p, "Required value"));
            }
        }
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64()
        || v.is_u64()
        || v.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
}

/// JSON equality with numbers compared by value (so `1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

fn render(v: &Value) -> String {
    v.to_string()
}

fn render_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "\"boolean\"",
        Value::Number(_) => "\"number\"",
        Value::String(_) => "\"string\"",
        Value::Array(_) => "\"array\"",
        Value::Object(_) => "\"object\"",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Keywords the Tetragon CRDs do not use today, on a synthetic schema.
    fn synthetic() -> Node {
        let schema = json!({
            "type": "object",
            "required": ["port"],
            "properties": {
                "port": {"x-kubernetes-int-or-string": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "maybe": {"type": "string", "nullable": true, "minLength": 2},
                "names": {"type": "array", "minItems": 1, "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "ratio": {"type": "number", "maximum": 1, "exclusiveMinimum": true, "minimum": 0},
                "step": {"type": "integer", "multipleOf": 5},
                "closed": {"type": "object", "additionalProperties": false, "minProperties": 1, "properties": {"a": {"type": "string"}}},
            },
        });
        let mut unknown = BTreeSet::new();
        let mut rules = BTreeSet::new();
        let node = Node::compile(&schema, &mut unknown, &mut rules);
        assert!(unknown.is_empty(), "{unknown:?}");
        node
    }

    fn errors(v: Value) -> Vec<String> {
        let mut out = Vec::new();
        synthetic().validate(&v, &mut String::new(), &mut out);
        out.into_iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn keywords_beyond_the_tetragon_crds() {
        assert!(errors(json!({"port": 80})).is_empty());
        assert!(
            errors(json!({"port": "http", "free": {"anything": [1, {"x": null}]}, "maybe": null}))
                .is_empty()
        );
        assert!(errors(json!({"port": true}))[0].starts_with("port: Invalid value"));
        assert_eq!(errors(json!({})), ["port: Required value"]);
        assert!(errors(json!({"port": 1, "maybe": "x"}))[0].contains("at least 2 chars"));
        assert!(errors(json!({"port": 1, "names": []}))[0].contains("at least 1 items"));
        assert!(
            errors(json!({"port": 1, "names": ["a", "a"]}))[0]
                .starts_with("names[1]: Duplicate value")
        );
        assert!(
            errors(json!({"port": 1, "ports": [{"name": "a"}, {"name": "a"}]}))[0]
                .starts_with("ports[1]: Duplicate")
        );
        assert!(errors(json!({"port": 1, "ratio": 0}))[0].contains("greater than 0"));
        assert!(errors(json!({"port": 1, "ratio": 1.5}))[0].contains("less than or equal to 1"));
        assert!(errors(json!({"port": 1, "step": 7}))[0].contains("multiple of 5"));
        assert!(errors(json!({"port": 1, "closed": {}}))[0].contains("at least 1 properties"));
        assert!(
            errors(json!({"port": 1, "closed": {"b": "x"}}))[0]
                .starts_with("closed.b: unknown field")
        );
    }
}
