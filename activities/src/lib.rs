//! qflows' activities: every side effect the workflows need.
//!
//! - [`qualys`]: the one Qualys client (JWT/bearer auth, rate limits, error classification).
//! - [`aws`]: AWS clients from the standard credential chain, and the IAM role Qualys assumes.
//! - [`registry`]: the activities behind `EnsureRegistry`.
//! - [`scan`], [`gate`], [`results`]: the activities behind `ScanOnDeploy`/`ImageScan`, the severity
//!   gate, and the results store.
//! - [`inventory`]: the activity behind `Inventory` (what runs where, told to the entities).
//! - [`resolve`]: deployments to images and digests (ECS, ECR, cross-account roles).
//! - [`qscanner`]: the QScanner process driver: running QScanner and reading its reports (the
//!   `qscanner.Scan` activity is in `scan::qscanner`).
//! - [`sensor`]: the activities behind `DeploySensor` (rendering, ECS, Kubernetes, roll-back).
//! - [`quarantine`]: the activities behind `Quarantine` (ECS roll-back, container app revision
//!   deactivation).
//! - [`failure`]: how errors become Temporal failures (retryable or not, with a bounded type).
//! - [`kube`]: Kubernetes clients, server-side apply's field manager, and API errors.
//! - [`heartbeat`]: heartbeating while an activity waits, so a dead worker's attempt is retried soon.
//! - [`cdr`]: the activities behind `CdrToPolicy` and CDR findings to TracingPolicies; the
//!   TracingPolicy model and its validator are the `qflows-tetragon` crate.
//!
//! Activity types and their inputs and outputs are declared per area in
//! `qflows_workflows::<area>::contracts` (e.g. [`qflows_workflows::scan::contracts`]); this crate
//! implements them in the module of the same area name.

pub mod aws;
pub mod azure;
pub mod cdr;
mod failure;
pub mod gate;
mod heartbeat;
pub mod inventory;
pub mod kube;
pub mod metrics;
pub mod notify;
pub mod qscanner;
pub mod qualys;
pub mod quarantine;
pub mod registry;
pub mod resolve;
pub mod results;
pub mod scan;
pub mod sensor;

pub use registry::RegistryActivities;
pub use scan::QScannerActivities;
pub use scan::ScanActivities;
pub use sensor::SensorActivities;
