//! The `ImageScan` workflow's state (what its signals leave for the run and what the run keeps)
//! and the small readers of it that every part of the workflow shares: the workflow clock and
//! taking signalled news into the [`Entity`].
//!
//! The `#[workflow_methods]` (run, signals, queries) are in the parent module; the parts of the
//! run (`attempt.rs`, `v1.rs`, `hand_over.rs`, `deliver.rs`) import from here, so their dependencies point one way.

use crate::inventory::RunningAt;
use crate::scan::image_scan::entity::Entity;
use crate::scan::image_scan::input::ImageScanInput;
use crate::scan::model::{DeployedAt, ImageResult};
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_macros::workflow;
use temporalio_sdk::WorkflowContext;

/// The per-digest entity.
#[workflow]
pub struct ImageScan {
    pub(super) input: ImageScanInput,
    /// Deployments that signalled and are not yet taken in (the current design moves them into
    /// [`Entity`]; `v1` answers them from here).
    pub(super) waiting: Vec<DeployedAt>,
    /// `v1`: deployments seen since its last scan.
    pub(super) deployments: u64,
    /// `v1`: its latest result.
    pub(super) latest: Option<ImageResult>,
    /// A `rescan` signal arrived and was not taken in yet.
    pub(super) rescan: bool,
    /// The reason of the last `rescan` signal.
    pub(super) rescan_reason: Option<String>,
    /// Inventories' `running` signals not yet taken in.
    pub(super) running: Vec<RunningAt>,
    /// Signals this run received.
    pub(super) signals: u64,
    /// This run follows the current design.
    pub(super) current: bool,
    /// The current design's state.
    pub(super) entity: Entity,
}

impl ImageScan {
    /// The latest result, whichever design this run follows.
    pub(super) fn latest_result(&self) -> Option<ImageResult> {
        if self.current {
            self.entity.latest.clone()
        } else {
            self.latest.clone()
        }
    }
}

/// Workflow time in seconds since the epoch.
pub(super) fn now_secs(ctx: &WorkflowContext<ImageScan>) -> u64 {
    ctx.workflow_time()
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Workflow time.
pub(super) fn now_time(ctx: &WorkflowContext<ImageScan>) -> SystemTime {
    ctx.workflow_time().unwrap_or(UNIX_EPOCH)
}

/// Moves signalled deployments and rescan requests into the entity's state.
pub(super) fn take_in_signals(ctx: &WorkflowContext<ImageScan>) {
    let now = now_secs(ctx);
    ctx.state_mut(|s| {
        for deployed in std::mem::take(&mut s.waiting) {
            s.entity.arrive(deployed, now);
        }
        if std::mem::take(&mut s.rescan) {
            s.entity.rescan = Some(s.rescan_reason.take().unwrap_or_default());
        }
        for at in std::mem::take(&mut s.running) {
            s.entity.seen_running(at);
        }
    });
}

/// Whether a signal or rescan request is waiting to be taken in.
pub(super) fn has_news(s: &ImageScan) -> bool {
    !s.waiting.is_empty() || s.rescan || !s.running.is_empty()
}
