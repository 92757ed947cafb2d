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

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

mod attempt;
pub mod entity;
pub mod input;
mod v1;

pub use entity::{Entity, InFlight, Next};

use crate::inventory::RunningAt;
use crate::quarantine::Quarantine;
use crate::quarantine::model::QuarantineInput;
use crate::scan::alert::{AlertInput, ScanAlert};
use crate::scan::image_scan::input::ImageScanInput;
use crate::scan::model::{DeployedAt, EntityLookup, ImageResult, NotifyRequest, ScanSettings};
use crate::scan::on_deploy::ScanOnDeploy;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    CancellableFuture, ChildWorkflowOptions, ContinueAsNewOptions, ParentClosePolicy,
    SignalWorkflowOptions, SyncWorkflowContext, TimerResult, WorkflowContext, WorkflowContextView,
    WorkflowIdReusePolicy, WorkflowResult, WorkflowTermination,
};

/// Marks runs of the current design (histories without it run [`v1`]).
pub const DESIGN_PATCH: &str = "image-scan-bounded-entity";
/// Marks a [`v1`] run that handed over to the current design instead of rescanning itself.
pub const HANDOVER_PATCH: &str = "image-scan-hand-over-from-v1";
/// Marks a run that proposed quarantines (`QFLOWS_QUARANTINE=propose`): only a run with a
/// failing scan of a digest running in an ECS service, under that setting, records it.
pub const QUARANTINE_PATCH: &str = "image-scan-quarantine-proposals";

/// A run continues as new once its history reaches this many events (Temporal warns at
/// 10,240 and terminates at 51,200), unless the server suggested it earlier.
pub const HISTORY_EVENTS_PER_RUN: u32 = 4_000;
/// ... or once it received this many signals (Temporal refuses more than 10,000 per run).
pub const SIGNALS_PER_RUN: u64 = 1_000;
/// A QScanner run is not interrupted for continue-as-new (it would run again) unless the
/// history reaches this many events.
pub const HISTORY_EVENTS_HARD_LIMIT: u32 = 8_000;
/// Waiting deployments answered per batch of concurrent signals (Temporal allows 2,000
/// pending outgoing signals per workflow).
const ANSWER_BATCH: usize = 200;

/// The per-digest entity.
#[workflow]
pub struct ImageScan {
    input: ImageScanInput,
    /// Deployments that signalled and are not yet taken in (the current design moves them into
    /// [`Entity`]; [`v1`] answers them from here).
    waiting: Vec<DeployedAt>,
    /// [`v1`]: deployments seen since its last scan.
    deployments: u64,
    /// [`v1`]: its latest result.
    latest: Option<ImageResult>,
    /// A `rescan` signal arrived and was not taken in yet.
    rescan: bool,
    /// The reason of the last `rescan` signal.
    rescan_reason: Option<String>,
    /// Inventories' `running` signals not yet taken in.
    running: Vec<RunningAt>,
    /// Signals this run received.
    signals: u64,
    /// This run follows the current design.
    current: bool,
    /// The current design's state.
    entity: Entity,
}

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

impl ImageScan {
    fn latest_result(&self) -> Option<ImageResult> {
        if self.current {
            self.entity.latest.clone()
        } else {
            self.latest.clone()
        }
    }
}

fn now_secs(ctx: &WorkflowContext<ImageScan>) -> u64 {
    ctx.workflow_time()
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_time(ctx: &WorkflowContext<ImageScan>) -> SystemTime {
    ctx.workflow_time().unwrap_or(UNIX_EPOCH)
}

/// Moves signalled deployments and rescan requests into the entity's state.
fn take_in_signals(ctx: &WorkflowContext<ImageScan>) {
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
fn has_news(s: &ImageScan) -> bool {
    !s.waiting.is_empty() || s.rescan || !s.running.is_empty()
}

/// How much a run may grow before it hands over to a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    /// Between steps: as soon as the server suggests it, or at [`HISTORY_EVENTS_PER_RUN`] /
    /// [`SIGNALS_PER_RUN`].
    Soft,
    /// While a QScanner run is under way (it would run again): only at
    /// [`HISTORY_EVENTS_HARD_LIMIT`] or twice the signal limit.
    Hard,
}

/// Whether this run has grown enough to hand over to a new one.
fn time_to_continue(ctx: &WorkflowContext<ImageScan>, limit: Limit) -> bool {
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
fn continue_as_new(ctx: &WorkflowContext<ImageScan>) -> WorkflowTermination {
    take_in_signals(ctx);
    let next = ctx.state(|s| ImageScanInput {
        carried: Some(Box::new(s.entity.clone())),
        ..s.input.clone()
    });
    ending(ctx.continue_as_new(next, ContinueAsNewOptions::default()))
}

/// The termination `continue_as_new` always returns.
fn ending(r: Result<std::convert::Infallible, WorkflowTermination>) -> WorkflowTermination {
    match r {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// A [`v1`] run hands over at the end of a hold period: its result and the deployments it
/// saw continue in the current design, which rescans them.
fn hand_over_from_v1(ctx: &WorkflowContext<ImageScan>) -> WorkflowResult<ImageResult> {
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

/// Sends the result on hand to the waiting deployments, in batches of concurrent signals. It
/// stops early when the run has grown enough to continue as new: the deployments not answered
/// yet stay waiting, and the next run answers them.
async fn answer_waiting(ctx: &WorkflowContext<ImageScan>) {
    let Some(result) = ctx.state(|s| s.entity.latest.clone()) else {
        return;
    };
    loop {
        let batch = ctx.state_mut(|s| {
            let n = s.entity.waiting.len().min(ANSWER_BATCH);
            s.entity.waiting.drain(..n).collect::<Vec<_>>()
        });
        if batch.is_empty() {
            return;
        }
        let signals = batch.into_iter().map(|requester| {
            let handle = ctx.external_workflow(requester, None);
            let result = result.clone();
            async move {
                handle
                    .signal(
                        ScanOnDeploy::image_result,
                        result,
                        SignalWorkflowOptions::default(),
                    )
                    .await
            }
        });
        // A requester that has ended (or was terminated) no longer needs the answer.
        let _ = temporalio_sdk::workflows::join_all(signals).await;
        if time_to_continue(ctx, Limit::Soft) {
            return;
        }
    }
}

/// Starts the alert as a `ScanAlert` child that outlives this run: a notifier that is down for
/// hours delays neither answers nor the hand-over, and each channel retries on its own.
async fn alert(ctx: &WorkflowContext<ImageScan>, settings: &ScanSettings, request: NotifyRequest) {
    if !settings.alert_sns && !settings.alert_webhook {
        return;
    }
    let digest = request
        .result
        .digest
        .trim_start_matches("sha256:")
        .to_string();
    let id = format!("alert-{}-{}", &digest[..digest.len().min(16)], ctx.uuid4());
    let input = AlertInput {
        request,
        sns: settings.alert_sns,
        webhook: settings.alert_webhook,
    };
    let options = ChildWorkflowOptions::builder()
        .workflow_id(id)
        .parent_close_policy(ParentClosePolicy::Abandon)
        .build();
    ctx.state_mut(|s| s.entity.alerts += 1);
    // Not started (e.g. the namespace refused it): the alert is lost, the verdict is not.
    let _ = ctx
        .start_child_workflow(ScanAlert::run, input, options)
        .await;
}

/// With `QFLOWS_QUARANTINE=propose`, proposes a quarantine for each ECS service the digest of a
/// completed, failing attempt's `result` runs in: a `Quarantine` child that outlives this run and waits for
/// a person's approval. The workflow ID names the service and the digest and duplicates are
/// rejected, so a service is proposed once per digest: a later failing scan (a rescan, another
/// run of the entity) finds it started and moves on. Changes nothing for runs without the
/// setting, and records [`QUARANTINE_PATCH`] only in runs that propose.
async fn propose_quarantines(
    ctx: &WorkflowContext<ImageScan>,
    settings: &ScanSettings,
    result: &ImageResult,
) {
    let Some(q) = &settings.quarantine else {
        return;
    };
    let now = now_secs(ctx);
    let proposals: Vec<QuarantineInput> =
        ctx.state(|s| crate::quarantine::propose::proposals(result, &s.entity.running, now, q));
    if proposals.is_empty() || !ctx.patched(QUARANTINE_PATCH) {
        return;
    }
    for input in proposals {
        let options = ChildWorkflowOptions::builder()
            .workflow_id(input.workflow_id())
            .task_queue(q.task_queue.clone())
            .parent_close_policy(ParentClosePolicy::Abandon)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .build();
        let Ok(input) = serde_json::to_value(&input) else {
            continue;
        };
        // Already proposed (running or closed): that proposal stands.
        let _ = ctx
            .start_child_workflow(Quarantine::run, input, options)
            .await;
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
