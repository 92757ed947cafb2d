//! The no-op activity behind `BenchNoop`, the baseline of `qflows bench overhead`.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use qflows_workflows::contracts;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Activities that do nothing, so the engine's own cost per activity can be measured.
pub struct BenchActivities;

#[activities]
impl BenchActivities {
    /// Returns at once.
    #[activity(definition = contracts::Noop)]
    pub async fn noop(self: Arc<Self>, _ctx: ActivityContext) -> Result<(), ActivityError> {
        Ok(())
    }
}
