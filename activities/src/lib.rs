//! qflows' activities: every side effect the workflows need.
//!
//! - [`qualys`]: the one Qualys client (JWT/bearer auth, rate limits, error classification).
//! - [`aws`]: AWS clients from the standard credential chain, and the IAM role Qualys assumes.
//! - [`registry`]: the activities behind `EnsureRegistry`.
//! - [`failure`]: how errors become Temporal failures (retryable or not, with a bounded type).
//!
//! Activity types and their inputs and outputs are declared in
//! [`qflows_workflows::contracts`]; this crate implements them.

pub mod aws;
pub mod failure;
pub mod qscanner;
pub mod qualys;
pub mod registry;

pub use registry::RegistryActivities;
