//! When an `ImageScan` run hands over to the next one (continue-as-new), and how: the limits a
//! run may grow to, carrying the whole [`Entity`] state, and the one-time hand-over of a
//! `v1` run to the current design.

use crate::scan::image_scan::entity::Entity;
use crate::scan::image_scan::input::ImageScanInput;
use crate::scan::image_scan::state::{ImageScan, now_secs, take_in_signals};
use crate::scan::model::ImageResult;
use temporalio_sdk::{ContinueAsNewOptions, WorkflowContext, WorkflowResult, WorkflowTermination};

/// Marks a `v1` run that handed over to the current design instead of rescanning itself.
pub const HANDOVER_PATCH: &str = "image-scan-hand-over-from-v1";
/// A run continues as new once its history reaches this many events (Temporal warns at
/// 10,240 and terminates at 51,200), unless the server suggested it earlier.
pub const HISTORY_EVENTS_PER_RUN: u32 = 4_000;
/// ... or once it received this many signals (Temporal refuses more than 10,000 per run).
pub const SIGNALS_PER_RUN: u64 = 1_000;
/// A QScanner run is not interrupted for continue-as-new (it would run again) unless the
/// history reaches this many events.
pub const HISTORY_EVENTS_HARD_LIMIT: u32 = 8_000;

/// How much a run may grow before it hands over to a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// Between steps: as soon as the server suggests it, or at [`HISTORY_EVENTS_PER_RUN`] /
    /// [`SIGNALS_PER_RUN`].
    Soft,
    /// While a QScanner run is under way (it would run again): only at
    /// [`HISTORY_EVENTS_HARD_LIMIT`] or twice the signal limit.
    Hard,
}

/// Whether this run has grown enough to hand over to a new one.
pub(super) fn time_to_continue(ctx: &WorkflowContext<ImageScan>, limit: Limit) -> bool {
    let signals = ctx.state(|s| s.signals);
    match limit {
        Limit::Soft => {
            ctx.continue_as_new_suggested()
                || ctx.history_length() >= HISTORY_EVENTS_PER_RUN
                || signals >= SIGNALS_PER_RUN
        }
        Limit::Hard => {
            ctx.history_length() >= HISTORY_EVENTS_HARD_LIMIT || signals >= 2 * SIGNALS_PER_RUN
        }
    }
}

/// Ends this run and starts the next with the whole state. Signals that arrive while the
/// hand-over completes make the server refuse it and replay the task with them, so they are
/// taken in here, right before the state is carried.
pub(super) fn continue_as_new(ctx: &WorkflowContext<ImageScan>) -> WorkflowTermination {
    take_in_signals(ctx);
    let next = ctx.state(|s| ImageScanInput {
        carried: Some(Box::new(s.entity.clone())),
        ..s.input.clone()
    });
    ending(ctx.continue_as_new(next, ContinueAsNewOptions::default()))
}

/// The termination `continue_as_new` always returns.
pub(super) fn ending(
    r: Result<std::convert::Infallible, WorkflowTermination>,
) -> WorkflowTermination {
    match r {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// A `v1` run hands over at the end of a hold period: its result and the deployments it
/// saw continue in the current design, which rescans them.
pub(super) fn hand_over_from_v1(ctx: &WorkflowContext<ImageScan>) -> WorkflowResult<ImageResult> {
    let now = now_secs(ctx);
    let next = ctx.state(|s| {
        let mut entity = Entity::resume(&s.input, now);
        entity.runs = 0;
        entity.latest = s.latest.clone();
        entity.last_verdict = s.latest.as_ref().and_then(|r| r.verdict);
        entity.verdict_loaded = true;
        entity.deployments = s.deployments;
        entity.fresh_until_secs = now;
        if s.rescan {
            entity.rescan = Some("requested before the hand-over".into());
        }
        for deployed in &s.waiting {
            entity.arrive(deployed.clone(), now);
        }
        for at in &s.running {
            entity.seen_running(at.clone());
        }
        ImageScanInput {
            event_accepted_at_ms: None,
            carried: Some(Box::new(entity)),
            ..s.input.clone()
        }
    });
    Err(ending(
        ctx.continue_as_new(next, ContinueAsNewOptions::default()),
    ))
}
