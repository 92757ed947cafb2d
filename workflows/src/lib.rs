//! qflows' workflows: the deterministic half of the product.
//!
//! Everything here runs inside the Temporal workflow sandbox, so it does no I/O: it decides what to
//! do next and asks [activities](contracts) to do it. The crate also owns the data types that
//! workflows, activities, the CLI and tests exchange, so that each contract is written down once.
//!
//! | Workflow | Module |
//! |---|---|
//! | `EnsureRegistry` | [`ensure_registry`] |
//! | `EnsureAwsConnector` (one per AWS account) | [`ensure_registry`] |
//! | `ScanOnDeploy` | [`scan_on_deploy`] |
//! | `ImageScan` (one per digest) | [`image_scan`] |
//! | `Inventory` (one per scope and firing) | [`inventory`] |
//! | `ScanAlert` (one per alert of an `ImageScan`) | [`alert`] |
//! | `CdrToPolicy` | [`cdr_to_policy`] |
//! | `DeploySensor` | [`deploy_sensor`] |
//! | `Quarantine` (one per target and digest) | [`quarantine`] |

pub mod alert;
pub mod cdr;
pub mod cdr_to_policy;
pub mod clock;
pub mod contracts;
pub mod deploy_sensor;
pub mod ensure_registry;
pub mod failure;
pub mod failure_type;
pub mod image_scan;
pub mod input;
pub mod inventory;
pub mod options;
pub mod quarantine;
pub mod registry;
pub mod scan;
pub mod scan_on_deploy;
pub mod sensor;

pub use alert::ScanAlert;
pub use cdr_to_policy::CdrToPolicy;
pub use deploy_sensor::DeploySensor;
pub use ensure_registry::{EnsureAwsConnector, EnsureRegistry};
pub use failure_type::FailureType;
pub use image_scan::ImageScan;
pub use inventory::Inventory;
pub use quarantine::Quarantine;
pub use scan_on_deploy::ScanOnDeploy;

/// The default task queue the qflows worker serves.
pub const DEFAULT_TASK_QUEUE: &str = "qflows";
