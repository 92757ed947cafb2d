//! `CdrToPolicy`'s state and the small helpers both its current form and its [`legacy`](super)
//! form use: the workflow's fields, queued review requests, workflow time, and where the next
//! findings window starts.

use crate::cdr::evidence::Observed;
use crate::cdr::model::{
    CdrToPolicyInput, EvidenceRef, LegacyPolicyRecord, PolicyRecord, ReviewNote, ReviewRequest,
    SyncReport,
};
use crate::clock::rfc3339;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use temporalio_macros::workflow;
use temporalio_sdk::WorkflowContext;

/// What a rejected update answers.
pub(super) type UpdateError = Box<dyn std::error::Error + Send + Sync>;

/// Review changes the workflow applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Promote,
    Rollback,
}

/// A review request waiting for the main loop.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) id: u64,
    pub(super) change: Change,
    pub(super) request: ReviewRequest,
    pub(super) deadline_secs: u64,
    pub(super) taken: bool,
}

/// The `CdrToPolicy` workflow. Input: [`CdrToPolicyInput`] as JSON; output: [`PoliciesView`]
/// (its first page).
#[workflow]
#[derive(Default)]
pub struct CdrToPolicy {
    pub(super) input: Option<CdrToPolicyInput>,
    /// This run keeps evidence in the store (`cdr-limits`); otherwise it is a [`legacy`] run.
    pub(super) limits: bool,
    /// Policies of a legacy run.
    pub(super) legacy: BTreeMap<String, LegacyPolicyRecord>,
    /// Policies.
    pub(super) policies: BTreeMap<String, PolicyRecord>,
    /// Pruned policies whose removal is not published yet.
    pub(super) pending_removals: BTreeSet<String>,
    pub(super) window_end_secs: Option<u64>,
    pub(super) last_sync: Option<SyncReport>,
    pub(super) pending: Vec<Pending>,
    pub(super) outcomes: BTreeMap<u64, Result<PolicyRecord, String>>,
    pub(super) next_request: u64,
    pub(super) sync_requested: bool,
    /// When a failed fetch is tried again (if no sync comes first).
    pub(super) retry_fetch_at: Option<u64>,
    /// Syncs follow their own schedule (`cdr-sync-schedule`).
    pub(super) scheduled: bool,
    /// When the next periodic sync is due (scheduled runs).
    pub(super) next_sync_at: Option<u64>,
}

/// A legacy record as the query shows it (no stored evidence, no observed values).
pub(super) fn legacy_view(r: &LegacyPolicyRecord) -> PolicyRecord {
    PolicyRecord {
        name: r.name.clone(),
        key: r.key.clone(),
        evidence: EvidenceRef::of(String::new(), &r.evidence),
        observed: Observed::default(),
        observed_digest: Observed::default().digest(),
        enforcement: r.enforcement,
        changed_at: r.changed_at.clone(),
        changed_secs: r.changed_secs,
        evidence_secs: r.evidence_secs,
        promoted: r.promoted.clone(),
        hold: r.hold,
        approved: None,
        block_refusal: r.key.workload.is_unknown().then(|| {
            "its findings name no namespace, pod labels or image to scope it to".to_string()
        }),
        unpublished: false,
    }
}

pub(super) fn now(ctx: &WorkflowContext<CdrToPolicy>) -> SystemTime {
    ctx.workflow_time().unwrap_or(UNIX_EPOCH)
}

pub(super) fn now_secs(ctx: &WorkflowContext<CdrToPolicy>) -> u64 {
    secs(now(ctx))
}

pub(super) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn at(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
}

/// How long to sleep until the first of `deadlines` (seconds since the epoch): a day when there
/// is none, and never less than a second.
pub(super) fn sleep_until_first(now: u64, deadlines: &[Option<u64>]) -> Duration {
    let wake_at = deadlines
        .iter()
        .flatten()
        .min()
        .map_or(now + 24 * 3600, |&t| t);
    Duration::from_secs(wake_at.saturating_sub(now).max(1))
}

/// Where the next findings window starts: just after the last one read, or `lookbackHours`
/// before `now` when none was read yet (seconds since the epoch).
pub(super) fn window_start(s: &CdrToPolicy, input: &CdrToPolicyInput, now: u64) -> u64 {
    match s.window_end_secs {
        Some(end) => end + 1,
        None => now.saturating_sub(u64::from(input.lookback_hours) * 3600),
    }
}

/// Takes the first queued review request nobody serves yet (marking it taken).
pub(super) fn take_next_request(s: &mut CdrToPolicy) -> Option<Pending> {
    let p = s.pending.iter_mut().find(|p| !p.taken)?;
    p.taken = true;
    Some(p.clone())
}

pub(super) fn note_for(by: &str, reason: &str, now: u64) -> ReviewNote {
    ReviewNote {
        by: by.into(),
        reason: reason.into(),
        at: at(now),
        at_secs: now,
    }
}

/// Answers request `id` and takes it out of the queue.
pub(super) fn serve_outcome(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    id: u64,
    outcome: Result<PolicyRecord, String>,
) {
    ctx.state_mut(|s| {
        s.pending.retain(|p| p.id != id);
        s.outcomes.insert(id, outcome);
    });
}
