//! The `DeploySensor` workflow type. It holds no state (a run's input and history say it all);
//! its run is in the parent module, and the `v1` run names it too, so it lives here, in a
//! leaf both import.

use temporalio_macros::workflow;

/// The `DeploySensor` workflow. Input: [`DeploySensorInput`] as JSON; output:
/// [`DeploySensorOutput`].
///
/// [`DeploySensorInput`]: crate::sensor::model::DeploySensorInput
/// [`DeploySensorOutput`]: crate::sensor::model::DeploySensorOutput
#[workflow]
#[derive(Default)]
pub struct DeploySensor;
