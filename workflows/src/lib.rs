//! qflows' workflows: the deterministic half of the product.
//!
//! Everything here runs inside the Temporal workflow sandbox, so it does no I/O: it decides what to
//! do next and asks activities (declared per area in `<area>::contracts`) to do it. The crate also owns the data types that
//! workflows, activities, the CLI and tests exchange, so that each contract is written down once.
//!
//! | Workflow | Module |
//! |---|---|
//! | `EnsureRegistry` | `registry::ensure` |
//! | `EnsureAwsConnector` (one per AWS account) | `registry::ensure` |
//! | `ScanOnDeploy` | [`scan::on_deploy`] |
//! | `ImageScan` (one per digest) | [`scan::image_scan`] |
//! | `Inventory` (one per scope and firing) | [`inventory`] |
//! | `ScanAlert` (one per alert of an `ImageScan`) | `scan::alert` |
//! | `CdrToPolicy` | [`cdr::to_policy`] |
//! | `DeploySensor` | `sensor::deploy` |
//! | `Quarantine` (one per target and digest) | [`quarantine`] |

/// Declares activity contracts (one or more, each ending in `;`): for each, a marker type naming
/// the activity (its wire name, stored in histories) and its input and output types. Each area
/// declares its own in `<area>/contracts.rs`; the implementing side writes
/// `#[activity(definition = qflows_workflows::<area>::contracts::X)]` and the compiler checks
/// that its input and output types match.
macro_rules! activity_contract {
    ($($(#[$doc:meta])* $marker:ident = $name:literal: $input:ty => $output:ty);+ $(;)?) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, Default)]
            pub struct $marker;

            impl ::temporalio_common::ActivityDefinition for $marker {
                type Input = $input;
                type Output = $output;
                fn name(&self) -> &str {
                    $name
                }
            }
        )+
    };
}

pub mod cdr;
pub mod clock;
pub mod failure;
mod failure_type;
pub mod input;
pub mod inventory;
pub mod options;
pub mod quarantine;
pub mod registry;
pub mod scan;
pub mod sensor;

pub use cdr::to_policy::CdrToPolicy;
pub use failure_type::FailureType;
pub use inventory::Inventory;
pub use quarantine::Quarantine;
pub use registry::ensure::{EnsureAwsConnector, EnsureRegistry};
pub use scan::alert::ScanAlert;
pub use scan::image_scan::ImageScan;
pub use scan::on_deploy::ScanOnDeploy;
pub use sensor::deploy::DeploySensor;

/// The default task queue the qflows worker serves.
pub const DEFAULT_TASK_QUEUE: &str = "qflows";
