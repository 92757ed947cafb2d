//! Tetragon TracingPolicies: the typed model qflows generates ([`policy`]), and validation
//! against Tetragon's own CRD schema and loader rules ([`schema`]).
//!
//! A library of its own: it knows nothing of Temporal, Qualys or qflows' workflows, does no I/O,
//! and carries the Tetragon CRDs it checks against (`crds/`, embedded at build time).
//! `qflows-activities` uses it to render and check the policies `CdrToPolicy` proposes.

pub mod policy;
pub mod schema;
