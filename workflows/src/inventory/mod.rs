//! `Inventory`: what runs in one scope now, and every running digest's entity told so.
//!
//! One run per scope and firing (ID `inventory-<scope id>`, started by a Temporal Schedule or
//! by hand); it is short-lived, so it never nears Temporal's history limits:
//!
//! 1. **Check** the scope (every field validated; a bad one ends the run as `InvalidInput`).
//! 2. **Take** the inventory — one heartbeating activity, so a listing of 10,000 pods costs one
//!    activity, not one per pod: it lists what runs (ECS tasks, Kubernetes pods, Azure container
//!    groups and apps, paged, with the worker's credentials), groups containers by digest, stores
//!    the [`InventoryRecord`] in the results store, and tells each running digest's `ImageScan`
//!    entity where it runs (`running`, by signal-with-start: a digest never scanned starts its
//!    entity, which scans it on the rescan queue). Temporal actions grow with digests, not pods.
//! 3. **Report** the [`InventorySummary`].
//!
//! Entities told they run keep their verdict fresh: they stay alive while an inventory saw them
//! within `staleAfterSecs`, and rescan every `QFLOWS_RESCAN_RUNNING_SECS`.

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

pub mod contracts;
pub mod model;

pub use model::{InventoryInput, InventoryRecord, InventoryScope, InventorySummary, RunningAt};

use crate::failure::{activity_failed, invalid_input};
use crate::inventory::contracts::TakeInventory;
use crate::{input, options};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

/// The listing may take long (thousands of tasks, throttled APIs): it heartbeats, so a dead
/// worker's attempt is retried within a minute, and it is retried while transient for 6 hours.
fn taking() -> ActivityOptions {
    options::heartbeating(options::retrying(1800, 6 * 3600), 60)
}

/// The `Inventory` workflow. Input: [`InventoryInput`] as JSON; output: [`InventorySummary`].
#[workflow]
#[derive(Default)]
pub struct Inventory;

#[workflow_methods]
impl Inventory {
    /// Checks the scope, takes its inventory, reports what it found.
    #[run(name = "Inventory")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: serde_json::Value,
    ) -> WorkflowResult<InventorySummary> {
        let input: InventoryInput = input::parse(input).map_err(invalid_input)?;
        let scope = input.scope.id();
        ctx.execute_activity(TakeInventory, input, taking())
            .await
            .map_err(|e| activity_failed(&format!("take the inventory of {scope}"), e))
    }
}
