//! Tetragon TracingPolicies: the typed model qflows generates, and validation against Tetragon's
//! own CRD schema and loader rules.

pub mod policy;
pub mod schema;
