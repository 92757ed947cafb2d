//! `ImageScan`: the one workflow per image digest (ID `scan-<digest>`), for as long as the image
//! is deployed.
//!
//! Every deployment of a digest signals this entity (`deployed`) instead of scanning again, so
//! any number of concurrent events for one digest cause one Qualys scan. The entity loops:
//!
//! 1. **Scan** when it has no result yet, when asked (`rescan`), when its result's TTL ends while
//!    the image is still being deployed, or when a retry of a failure is due. Settings are read
//!    anew for every attempt. The digest is the identity: a registry scan selects the image by a
//!    tag ECR says the digest has *now*, Qualys' record must list the digest, and a rescan
//!    submits a new scan (`forceScan`) and waits for a newer one. Images Qualys cannot scan from
//!    the registry go to QScanner (on its own, bounded task queue).
//! 2. **Answer** every waiting deployment, concurrently, with the result on hand — also a
//!    failure (deploys never hang), but a failure is not kept as a verdict: it is retried with
//!    backoff, and a new deployment tries again at once.
//! 3. **Alert** (a `ScanAlert` child per alert, one activity per channel) when the verdict of a
//!    completed scan differs from the last one, secrets appear, or a failure streak starts.
//!    With `QFLOWS_QUARANTINE=propose` (never by default), a completed scan that fails also
//!    proposes a `Quarantine` (a child that outlives the run, one per ECS service its
//!    inventories see running the digest, workflow ID [`QuarantineInput::workflow_id`] with
//!    "reject duplicate": each service and digest is proposed once, whatever became of it).
//! 4. **Hold** the result for its TTL, answering deployments as they arrive.
//! 5. **Continue as new** before the history grows large (the server's suggestion, or
//!    [`HISTORY_EVENTS_PER_RUN`] / [`SIGNALS_PER_RUN`]), carrying its whole [`Entity`] state —
//!    including deployments still waiting and a registry scan still under way — so nothing is
//!    lost across the hand-over. It ends once nobody deployed the image for a whole TTL.
//!
//! Entities started before this design run [`v1`] until the end of their hold period, then hand
//! over to it.
//!
//! The files: `state.rs` (the workflow's state and the readers of it every part shares),
//! `attempt.rs` (one scan), `deliver.rs` (answers, alerts, quarantine proposals), `hand_over.rs`
//! (continue-as-new), `entity` (the pure rules), [`input`] (what starts and continues a run).
//!
//! [`QuarantineInput::workflow_id`]: crate::quarantine::model::QuarantineInput::workflow_id

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

mod attempt;
mod deliver;
pub(crate) mod entity;
mod hand_over;
pub mod input;
mod state;
mod v1;

pub use deliver::QUARANTINE_PATCH;
pub use entity::{Entity, InFlight, Next};
pub use hand_over::{
    HANDOVER_PATCH, HISTORY_EVENTS_HARD_LIMIT, HISTORY_EVENTS_PER_RUN, SIGNALS_PER_RUN,
};
pub use state::ImageScan;

use crate::inventory::RunningAt;
use crate::scan::image_scan::input::ImageScanInput;
use crate::scan::model::{DeployedAt, EntityLookup, ImageResult};
use deliver::answer_waiting;
use hand_over::{Limit, continue_as_new, time_to_continue};
use state::{has_news, now_secs, now_time, take_in_signals};
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};
use temporalio_macros::workflow_methods;
use temporalio_sdk::{
    CancellableFuture, SyncWorkflowContext, TimerResult, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

/// Marks runs of the current design (histories without it run [`v1`]).
pub const DESIGN_PATCH: &str = "image-scan-bounded-entity";

#[workflow_methods]
impl ImageScan {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: ImageScanInput) -> Self {
        Self {
            input,
            waiting: Vec::new(),
            deployments: 0,
            latest: None,
            rescan: false,
            rescan_reason: None,
            running: Vec::new(),
            signals: 0,
            current: false,
            entity: Entity::default(),
        }
    }

    /// Scans, answers deployments, alerts on changes, holds the result, continues as new.
    #[run(name = "ImageScan")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<ImageResult> {
        // The current design: a run it continued, an entity qflows started with the design
        // memo (no patch marker: its search-attribute upsert would cost an action), or the patch.
        let input = ctx.state(|s| s.input.clone());
        let current = input.carried.is_some()
            || ctx.memo().contains_key(crate::scan::on_deploy::DESIGN_MEMO)
            || ctx.patched(DESIGN_PATCH);
        if !current {
            return v1::run(ctx).await;
        }
        let now = now_secs(ctx);
        ctx.state_mut(|s| {
            s.current = true;
            s.entity = Entity::resume(&input, now);
        });
        let timers = ctx.clone();
        let mut hold = Hold::default();
        loop {
            take_in_signals(ctx);
            if time_to_continue(ctx, Limit::Soft) {
                return Err(continue_as_new(ctx));
            }
            let now = now_secs(ctx);
            match ctx.state(|s| s.entity.next(now)) {
                Next::Scan { forced, urgent } => attempt::scan(ctx, forced, urgent).await?,
                Next::Resume => attempt::resume(ctx).await?,
                Next::Answer => answer_waiting(ctx).await,
                Next::Wait { until_secs } => hold.wait(ctx, &timers, until_secs).await,
                Next::End => {
                    let latest = ctx.state(|s| s.entity.latest.clone());
                    return Ok(latest.expect("an entity ends only after a result"));
                }
            }
        }
    }

    /// A deployment of this digest wants the result.
    #[signal(name = "deployed")]
    pub fn deployed(&mut self, _ctx: &mut SyncWorkflowContext<Self>, at: DeployedAt) {
        self.deployments += 1;
        self.signals += 1;
        self.waiting.push(at);
    }

    /// Scan again now (e.g. after a Qualys knowledge-base update): a new Qualys scan, not a
    /// re-read of the last one.
    #[signal(name = "rescan")]
    pub fn request_rescan(&mut self, _ctx: &mut SyncWorkflowContext<Self>, reason: String) {
        self.signals += 1;
        self.rescan = true;
        self.rescan_reason = Some(reason);
    }

    /// An inventory saw the digest running (sent with signal-with-start: an inventory starts
    /// the entity of a digest never scanned). Keeps the entity alive and rescanning while
    /// inventories keep seeing it.
    #[signal(name = "running")]
    pub fn running(&mut self, _ctx: &mut SyncWorkflowContext<Self>, at: RunningAt) {
        self.signals += 1;
        // Only the latest word per scope matters: a backlog of signals stays small.
        self.running.retain(|r| r.scope_id != at.scope_id);
        self.running.push(at);
    }

    /// What a new deployment would be answered with, and until when it is fresh: a deployment
    /// with a fresh answer need not signal the entity (see `scan.Attach`).
    #[query(name = "lookup")]
    pub fn lookup(&self, _ctx: &WorkflowContextView) -> EntityLookup {
        let e = &self.entity;
        let fresh = self.current && e.retry_at_secs.is_none() && e.rescan.is_none();
        EntityLookup {
            result: self.latest_result(),
            fresh_until_secs: if fresh { e.fresh_until_secs } else { 0 },
        }
    }

    /// The latest result, if a scan has finished.
    #[query(name = "result")]
    pub fn result(&self, _ctx: &WorkflowContextView) -> Option<ImageResult> {
        self.latest_result()
    }
}

/// The timer of a hold period, kept across wake-ups: a deployment arriving while the entity
/// holds its result must not cost a new timer.
#[derive(Default)]
struct Hold<'a> {
    until_secs: u64,
    timer: Option<Pin<Box<dyn CancellableFuture<Output = TimerResult> + 'a>>>,
}

impl<'a> Hold<'a> {
    /// Waits until `until_secs` or the next signal, whichever comes first.
    async fn wait(
        &mut self,
        ctx: &WorkflowContext<ImageScan>,
        timers: &'a WorkflowContext<ImageScan>,
        until_secs: u64,
    ) {
        if self.until_secs != until_secs
            && let Some(stale) = self.timer.take()
        {
            stale.cancel();
        }
        self.until_secs = until_secs;
        let mut timer = self
            .timer
            .get_or_insert_with(|| {
                let at = UNIX_EPOCH + Duration::from_secs(until_secs);
                let wait = at.duration_since(now_time(ctx)).unwrap_or_default();
                Box::pin(timers.timer(wait.max(Duration::from_secs(1))))
            })
            .as_mut();
        let fired = temporalio_sdk::workflows::select! {
            _ = timer => true,
            _ = ctx.wait_condition(has_news) => false,
        };
        if fired {
            self.timer = None;
        }
    }
}
