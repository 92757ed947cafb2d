//! `CdrToPolicy`: Qualys CDR findings become Tetragon TracingPolicies, reviewed before they block.
//!
//! One workflow owns one policy set (ID `cdr-<policySet>` by convention). It
//! 1. **syncs**: reads the findings of a window (`cdr.FetchWindow`: every page, heartbeating),
//!    merges them page by page into per-policy evidence (`cdr.MergeEvidence`; new findings for an
//!    existing policy tighten it instead of creating a near-duplicate), and publishes the policies
//!    that changed (`cdr.PublishBatch`, in batches);
//! 2. **waits for review**: `promote` switches a policy to enforcement, `rollback` returns it
//!    to audit; each request carries who and why and lapses if it cannot be applied in time;
//!    quiet policies may promote themselves, and enforced ones may revert after a TTL;
//! 3. syncs again every `syncEveryMinutes` (controller mode), or ends after `review.openHours`.
//!
//! Within Temporal's limits whatever the number of policies:
//! - the evidence of each policy lives in the results store, content-addressed (SHA-256); the
//!   workflow keeps its hash, a summary, the observed selector values and the review state;
//! - every bulk exchange is paged ([`PAYLOAD_BUDGET`], [`PAGE_POLICIES`]) and the queries answer
//!   pages of at most [`crate::cdr::model::VIEW_PAGE_BYTES`];
//! - it continues as new when the server suggests it (or after 200 turns), carrying the state as
//!   chunks in the store, after serving every accepted review request; a pending `sync` and the
//!   schedule (next sync, fetch retry, end of the review window) carry over, so continuing adds
//!   no sync;
//! - a failed fetch (an outage, a 403) is reported in the sync report and read again, with
//!   everything since, at the next turn: it never fails the workflow or loses state.
//!
//! Evidence never widens a kill rule unreviewed: selector values taken from findings are
//! "observed" ([`Observed`]); the blocking form carries only those a review approved (the
//! `promote` names the digest of what the reviewer saw), and a policy with observed values is
//! never promoted automatically.
//!
//! New policies always start in audit. Runs that began before this design (no `cdr-limits`
//! marker) run on in [`legacy`].

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

mod legacy;
mod rules;
mod state;

use rules::{apply_due, apply_review, rule_deadline, stale_names};
pub use state::CdrToPolicy;
use state::{
    Change, Pending, UpdateError, at, legacy_view, now_secs, serve_outcome, sleep_until_first,
    take_next_request, window_start,
};

use crate::cdr::contracts::{
    FetchCdrWindow, ImportCdrLegacy, LoadCdrState, MergeCdrEvidence, PublishCdrBatch, SaveCdrState,
};
use crate::cdr::evidence::{Enforcement, Observed};
use crate::cdr::model::{
    CarriedState, CdrToPolicyInput, FetchFindings, ImportLegacy, LegacyPolicyRecord, MergeEvidence,
    PAGE_POLICIES, PAYLOAD_BUDGET, PoliciesQuery, PoliciesView, PolicyRecord, PolicyUpdate,
    PublishBatch, PublishItem, PublishReport, ReviewRequest, SyncReport, SyncSchedule,
    VIEW_PAGE_BYTES, WindowBatch,
};
use crate::failure::{activity_failed, invalid_input, root_message};
use crate::{input, options};
use std::collections::BTreeMap;
use std::time::Duration;
use temporalio_macros::workflow_methods;
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityOptions, ContinueAsNewOptions, SyncWorkflowContext,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// Patch marking runs that keep evidence out of history (every run started by this code).
const LIMITS_PATCH: &str = "cdr-limits";
/// Patch marking runs whose periodic syncs are due `syncEveryMinutes` after the last sync
/// (before, the interval restarted at every review request, so a busy review could starve
/// syncs) and that hand their schedule to the next run (before, every continued run synced on
/// start, racing findings that arrived in that second, and a sync-once run's review window
/// restarted).
const SYNC_SCHEDULE_PATCH: &str = "cdr-sync-schedule";

/// Most loop turns of one run.
const TURNS_PER_RUN: u32 = 200;
/// A run serves at least this many turns before it follows the server's suggestion to continue
/// as new (loading and saving the state costs history too).
const MIN_TURNS_PER_RUN: u32 = 3;
/// After a failed fetch, the window is read again at the next sync, or after this long if that
/// comes first.
const FETCH_RETRY_SECS: u64 = 300;
/// How long loading the carried state may retry before the run gives up.
const LOAD_RETRY_SECS: u64 = 7 * 24 * 3600;

#[workflow_methods]
impl CdrToPolicy {
    /// Syncs, then serves review requests and time rules until it ends or continues as new.
    #[run(name = "CdrToPolicy")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: serde_json::Value,
    ) -> WorkflowResult<PoliciesView> {
        let input: CdrToPolicyInput = input::parse(input).map_err(invalid_input)?;
        if !ctx.patched(LIMITS_PATCH) {
            return legacy::run(ctx, input).await;
        }
        run_within_limits(ctx, input).await
    }

    /// Switches a policy to enforcement (its block actions: Sigkill, and Override where the hook
    /// allows it). Answers with the policy once it is published; fails if it lapsed.
    #[update(name = "promote")]
    pub async fn promote(
        ctx: &mut WorkflowContext<Self>,
        request: ReviewRequest,
    ) -> Result<PolicyRecord, UpdateError> {
        review(ctx, Change::Promote, request).await
    }

    #[update_validator(promote)]
    pub fn validate_promote(
        &self,
        _ctx: &WorkflowContextView,
        request: &ReviewRequest,
    ) -> Result<(), UpdateError> {
        self.check(Change::Promote, request)
    }

    /// Returns a policy to audit.
    #[update(name = "rollback")]
    pub async fn rollback(
        ctx: &mut WorkflowContext<Self>,
        request: ReviewRequest,
    ) -> Result<PolicyRecord, UpdateError> {
        review(ctx, Change::Rollback, request).await
    }

    #[update_validator(rollback)]
    pub fn validate_rollback(
        &self,
        _ctx: &WorkflowContextView,
        request: &ReviewRequest,
    ) -> Result<(), UpdateError> {
        self.check(Change::Rollback, request)
    }

    /// Sync now instead of waiting for the next interval.
    #[signal(name = "sync")]
    pub fn request_sync(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.sync_requested = true;
    }

    /// The first page of policies (with their evidence summary, observed values and review
    /// state), the total and the last sync's report.
    #[query(name = "policies")]
    pub fn policies(&self, _ctx: &WorkflowContextView) -> PoliciesView {
        self.view(&PoliciesQuery::default())
    }

    /// A page of policies: `offset`, `limit`, and filters by name, enforcement or observed values.
    #[query(name = "policiesPage")]
    pub fn policies_page(&self, _ctx: &WorkflowContextView, query: PoliciesQuery) -> PoliciesView {
        self.view(&query)
    }
}

impl CdrToPolicy {
    /// One page of the policies matching `q`, at most [`VIEW_PAGE_BYTES`] of them.
    fn view(&self, q: &PoliciesQuery) -> PoliciesView {
        let matches = |p: &PolicyRecord| {
            q.name.as_ref().is_none_or(|n| *n == p.name)
                && q.enforcement.is_none_or(|e| e == p.enforcement)
                && (!q.observed_only || !p.observed.is_empty())
        };
        let limit = q.limit.unwrap_or(usize::MAX).max(1);
        let mut page = PoliciesView {
            policy_set: self
                .input
                .as_ref()
                .map(|i| i.policy_set.clone())
                .unwrap_or_default(),
            last_sync: self.last_sync.clone(),
            ..Default::default()
        };
        let mut bytes = 0;
        let mut visit = |p: &PolicyRecord| {
            if !matches(p) {
                return;
            }
            let index = page.total;
            page.total += 1;
            if index < q.offset || page.next_offset.is_some() {
                return;
            }
            let size = serde_json::to_vec(p).map_or(0, |v| v.len());
            if page.policies.len() >= limit
                || (!page.policies.is_empty() && bytes + size > VIEW_PAGE_BYTES)
            {
                page.next_offset = Some(index);
                return;
            }
            bytes += size;
            page.policies.push(p.clone());
        };
        if self.limits {
            match &q.name {
                Some(name) => self.policies.get(name).into_iter().for_each(&mut visit),
                None => self.policies.values().for_each(&mut visit),
            }
        } else {
            self.legacy.values().for_each(|r| visit(&legacy_view(r)));
        }
        page
    }

    /// Refuses requests that cannot succeed, before they enter history.
    fn check(&self, change: Change, r: &ReviewRequest) -> Result<(), UpdateError> {
        if r.by.trim().is_empty() || r.reason.trim().is_empty() {
            return Err("a review needs `by` and `reason`".into());
        }
        if r.timeout_secs == 0 {
            return Err("timeoutSecs must be at least 1".into());
        }
        if !self.limits {
            return legacy::check(self, change, r);
        }
        let Some(p) = self.policies.get(&r.policy) else {
            return Err(format!("no policy {:?} in this policy set", r.policy).into());
        };
        match change {
            Change::Promote => promotion_refusal(p, r).map_or(Ok(()), |why| Err(why.into())),
            Change::Rollback if p.enforcement == Enforcement::Audit => {
                Err(format!("{} is already in audit", p.name).into())
            }
            Change::Rollback => Ok(()),
        }
    }
}

/// Why `r` cannot promote `p` as it stands, if it cannot: the policy cannot block, it is already
/// enforced with exactly these values, or its observed values are not the ones the reviewer saw.
fn promotion_refusal(p: &PolicyRecord, r: &ReviewRequest) -> Option<String> {
    if let Some(why) = &p.block_refusal {
        return Some(format!("{} cannot block: {why}", p.name));
    }
    match &r.observed {
        Some(seen) if *seen != p.observed_digest => {
            return Some(format!(
                "{}: its observed values are now {} (observedDigest {}), not what the reviewer saw \
                 ({seen}); look again and promote with the new digest",
                p.name,
                p.observed.describe(),
                p.observed_digest
            ));
        }
        None if !p.observed.is_empty() => {
            return Some(format!(
                "{}: its blocking form would carry values taken from findings ({}); review them and \
                 promote with observed={} (qflows policy promote shows them and does this)",
                p.name,
                p.observed.describe(),
                p.observed_digest
            ));
        }
        _ => {}
    }
    if p.enforcement == Enforcement::Enforce && p.approved.as_ref() == Some(&p.observed) {
        return Some(format!("{} is already enforced", p.name));
    }
    None
}

fn view(ctx: &WorkflowContext<CdrToPolicy>) -> PoliciesView {
    ctx.state(|s| s.view(&PoliciesQuery::default()))
}

/// Handler side of `promote`/`rollback`: queue the request, wait for its outcome or its lapse.
async fn review(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    change: Change,
    request: ReviewRequest,
) -> Result<PolicyRecord, UpdateError> {
    let timeout = request.timeout_secs;
    let deadline_secs = now_secs(ctx) + timeout;
    let id = ctx.state_mut(|s| {
        s.next_request += 1;
        s.pending.push(Pending {
            id: s.next_request,
            change,
            request,
            deadline_secs,
            taken: false,
        });
        s.next_request
    });
    let timers = ctx.clone();
    let mut lapse = timers.timer(Duration::from_secs(timeout));
    temporalio_sdk::workflows::select! {
        _ = lapse => {
            // Not started yet: it lapses. Started: its publish is bounded by the same deadline,
            // so wait for the outcome.
            let dropped = ctx.state_mut(|s| {
                let before = s.pending.len();
                s.pending.retain(|p| p.id != id || p.taken);
                before != s.pending.len()
            });
            if dropped {
                return Err(format!("request lapsed after {timeout} s without being applied").into());
            }
            if ctx.wait_condition(|s: &CdrToPolicy| s.outcomes.contains_key(&id)).await.is_err() {
                return Err("the workflow was cancelled".into());
            }
        }
        _ = ctx.wait_condition(|s: &CdrToPolicy| s.outcomes.contains_key(&id)) => {}
    }
    let outcome = ctx.state_mut(|s| s.outcomes.remove(&id));
    match outcome {
        Some(Ok(record)) => Ok(record),
        Some(Err(e)) => Err(e.into()),
        None => Err("the request was lost".into()),
    }
}

/// The run of every workflow started by this code.
async fn run_within_limits(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    mut input: CdrToPolicyInput,
) -> WorkflowResult<PoliciesView> {
    let (carried, scheduled, schedule) = take_carried(ctx, &mut input);
    load(ctx, &input, carried.snapshot, carried.policies).await?;
    let close_at = close_time(&input, schedule.as_ref(), now_secs(ctx));
    // The first run syncs on start; a continued one keeps its predecessor's schedule.
    let mut sync_due = schedule.is_none();
    let mut turns = 0u32;
    loop {
        let now = now_secs(ctx);
        let retry_due = ctx.state(|s| s.retry_fetch_at.is_some_and(|t| now >= t));
        let periodic_due = ctx.state(|s| s.next_sync_at.is_some_and(|t| now >= t));
        if sync_due || retry_due || periodic_due || ctx.state(|s| s.sync_requested) {
            sync(ctx, &input).await;
            sync_due = false;
        }
        apply_time_rules(ctx, &input).await;
        serve_review_requests(ctx, &input).await;
        turns += 1;

        let now = now_secs(ctx);
        if close_at.is_some_and(|c| now >= c) {
            // Requests already accepted are served before the workflow ends.
            serve_review_requests(ctx, &input).await;
            return Ok(view(ctx));
        }
        if turns >= TURNS_PER_RUN || (turns >= MIN_TURNS_PER_RUN && ctx.continue_as_new_suggested())
        {
            // Accepted requests are served first; requests that arrive while the state is being
            // saved are served in another turn.
            serve_review_requests(ctx, &input).await;
            if continue_as_new(ctx, &input, scheduled, close_at).await? {
                continue;
            }
        }
        sync_due = wait_for_next(ctx, &input, scheduled, close_at, now).await;
    }
}

/// Takes what the previous run carried into the state (the schedule only under
/// `cdr-sync-schedule`); answers the rest of it, whether syncs follow their own schedule, and
/// the carried schedule.
fn take_carried(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &mut CdrToPolicyInput,
) -> (CarriedState, bool, Option<SyncSchedule>) {
    let carried = input.carried.take().unwrap_or_default();
    let scheduled = ctx.patched(SYNC_SCHEDULE_PATCH);
    let schedule = carried.schedule.clone().filter(|_| scheduled);
    ctx.state_mut(|s| {
        s.scheduled = scheduled;
        if let Some(schedule) = &schedule {
            s.next_sync_at = schedule.next_sync_secs;
            s.retry_fetch_at = schedule.retry_fetch_secs;
        }
        s.limits = true;
        s.input = Some(input.clone());
        s.window_end_secs = carried.window_end_secs;
        s.sync_requested |= carried.sync_requested;
        s.last_sync = carried.last_sync.clone();
        s.pending_removals = carried.pending_removals.iter().cloned().collect();
    });
    (carried, scheduled, schedule)
}

/// When a sync-once run ends: at the carried end of its review window, or `openHours` after
/// `started`. Controller runs (`syncEveryMinutes`) never end by themselves.
fn close_time(
    input: &CdrToPolicyInput,
    schedule: Option<&SyncSchedule>,
    started: u64,
) -> Option<u64> {
    match input.sync_every_minutes {
        Some(_) => None,
        None => Some(
            schedule
                .and_then(|s| s.close_secs)
                .unwrap_or(started + u64::from(input.review.open_hours) * 3600),
        ),
    }
}

/// Saves the state and continues as new with it (this never returns `Ok`) when nothing is
/// pending. `Ok(true)`: saved, but a request arrived meanwhile (serve it, then try again);
/// `Ok(false)`: the store is unavailable (keep running, try again next turn).
async fn continue_as_new(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    scheduled: bool,
    close_at: Option<u64>,
) -> WorkflowResult<bool> {
    match save(ctx).await {
        Ok(snapshot) if ctx.state(|s| s.pending.is_empty()) => {
            let mut next = input.clone();
            next.carried = Some(ctx.state(|s| CarriedState {
                policies: Vec::new(),
                window_end_secs: s.window_end_secs,
                snapshot,
                sync_requested: s.sync_requested,
                last_sync: s.last_sync.clone(),
                pending_removals: s.pending_removals.iter().cloned().collect(),
                schedule: scheduled.then_some(SyncSchedule {
                    next_sync_secs: s.next_sync_at,
                    retry_fetch_secs: s.retry_fetch_at,
                    close_secs: close_at,
                }),
            }));
            let next = serde_json::to_value(&next).expect("the input serialises");
            ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
            unreachable!("continue_as_new always ends the run")
        }
        Ok(_) => Ok(true),
        Err(_) => Ok(false),
    }
}

/// Waits for the next thing to do: a review request, a sync (timer or signal), a review
/// deadline, a fetch retry, or the end of the review window. Answers whether a periodic sync is
/// due.
async fn wait_for_next(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    scheduled: bool,
    close_at: Option<u64>,
    now: u64,
) -> bool {
    let next_rule = ctx.state(|s| {
        s.policies
            .values()
            .filter_map(|p| rule_deadline(p, input))
            .min()
    });
    let next_sync = if scheduled {
        ctx.state(|s| s.next_sync_at)
    } else {
        input.sync_every_minutes.map(|m| now + u64::from(m) * 60)
    };
    let retry = ctx.state(|s| s.retry_fetch_at);
    let timers = ctx.clone();
    let mut timer = timers.timer(sleep_until_first(
        now,
        &[next_rule, next_sync, close_at, retry],
    ));
    temporalio_sdk::workflows::select! {
        _ = timer => next_sync.is_some_and(|t| now_secs(ctx) >= t),
        _ = ctx.wait_condition(|s: &CdrToPolicy| {
            s.sync_requested || s.pending.iter().any(|p| !p.taken)
        }) => false,
    }
}

/// Splits `items` into chunks of at most [`PAYLOAD_BUDGET`] bytes of JSON and `max` items.
fn chunks<T: serde::Serialize>(items: impl Iterator<Item = T>, max: usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = serde_json::to_vec(&item).map_or(0, |v| v.len()) + 1;
        if !current.is_empty() && (bytes + size > PAYLOAD_BUDGET || current.len() >= max) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Loads the state a previous run carried: chunks from the store, or a legacy run's records
/// (whose evidence is stored first).
async fn load(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    snapshot: Vec<String>,
    legacy: Vec<LegacyPolicyRecord>,
) -> WorkflowResult<()> {
    for hash in snapshot {
        let chunk = ctx
            .execute_activity(LoadCdrState, hash, options::retrying(120, LOAD_RETRY_SECS))
            .await
            .map_err(|e| activity_failed("load the carried policies", e))?;
        ctx.state_mut(|s| {
            for p in chunk {
                s.policies.insert(p.name.clone(), p);
            }
        });
    }
    for records in chunks(legacy.into_iter(), PAGE_POLICIES) {
        let request = ImportLegacy {
            records: records.clone(),
            tetragon_version: input.tetragon_version,
        };
        let updates = ctx
            .execute_activity(
                ImportCdrLegacy,
                request,
                options::retrying(120, LOAD_RETRY_SECS),
            )
            .await
            .map_err(|e| activity_failed("import the carried policies", e))?;
        let by_name: BTreeMap<String, PolicyUpdate> =
            updates.into_iter().map(|u| (u.name.clone(), u)).collect();
        ctx.state_mut(|s| {
            for r in records {
                let Some(u) = by_name.get(&r.name) else {
                    continue;
                };
                let observed_digest = u.observed.digest();
                s.policies.insert(
                    r.name.clone(),
                    PolicyRecord {
                        name: r.name,
                        key: r.key,
                        evidence: u.evidence.clone(),
                        observed: u.observed.clone(),
                        observed_digest,
                        enforcement: r.enforcement,
                        changed_at: r.changed_at,
                        changed_secs: r.changed_secs,
                        evidence_secs: r.evidence_secs,
                        promoted: r.promoted,
                        hold: r.hold,
                        // Nobody approved observed values under the old design: an enforced
                        // policy blocks on its category's own values until promoted again.
                        approved: (r.enforcement == Enforcement::Enforce).then(Observed::default),
                        block_refusal: u.block_refusal.clone(),
                        unpublished: true,
                    },
                );
            }
        });
    }
    Ok(())
}

/// Saves the state as chunks in the store; their hashes, in name order.
async fn save(ctx: &mut WorkflowContext<CdrToPolicy>) -> Result<Vec<String>, String> {
    let parts = ctx.state(|s| chunks(s.policies.values().cloned(), usize::MAX));
    let mut hashes = Vec::with_capacity(parts.len());
    for part in parts {
        let hash = ctx
            .execute_activity(SaveCdrState, part, options::retrying(120, 900))
            .await
            .map_err(|e| root_message(&e))?;
        hashes.push(hash);
    }
    Ok(hashes)
}

/// The fetch's options: attempts heartbeat every page; the whole fetch gives up after half a
/// sync interval (30 s to 10 min), and the next turn reads the window again.
fn fetch_options(input: &CdrToPolicyInput) -> ActivityOptions {
    let budget = match input.sync_every_minutes {
        Some(m) => (u64::from(m) * 60 / 2).clamp(30, 600),
        None => 600,
    };
    options::heartbeating(options::retrying(budget, budget), 60)
}

/// One sync: read the window's findings, merge them, prune, publish what changed. Never fails:
/// a failed fetch or merge keeps the state and the window, and is reported.
async fn sync(ctx: &mut WorkflowContext<CdrToPolicy>, input: &CdrToPolicyInput) {
    let now = now_secs(ctx);
    ctx.state_mut(|s| {
        s.sync_requested = false;
        s.retry_fetch_at = None;
        if s.scheduled {
            s.next_sync_at = input.sync_every_minutes.map(|m| now + u64::from(m) * 60);
        }
    });
    let (start_at, end_at) = match (&input.start_at, &input.end_at) {
        (Some(s), Some(e)) => (s.clone(), e.clone()),
        _ => {
            let start = ctx.state(|s| window_start(s, input, now));
            if start > now {
                // The last window ended this second: nothing new to read yet (reading this
                // second again would count its findings twice).
                let _ = publish_pending(ctx, input, options::retrying(120, 900)).await;
                return;
            }
            (at(start), at(now))
        }
    };
    let query = FetchFindings {
        start_at: start_at.clone(),
        end_at: end_at.clone(),
        filters: input.filters.clone(),
    };
    let fetched = match ctx
        .execute_activity(FetchCdrWindow, query, fetch_options(input))
        .await
    {
        Ok(batch) => merge_window(ctx, input, batch).await,
        Err(e) => Err(format!("reading the findings failed: {}", root_message(&e))),
    };
    let findings = match fetched {
        Ok((updates, report)) => {
            ctx.state_mut(|s| {
                s.window_end_secs = Some(now);
                apply_updates(s, updates, now);
                prune(s, input, now);
            });
            Ok(report)
        }
        Err(why) => {
            let retry = input.sync_every_minutes.map_or(FETCH_RETRY_SECS, |m| {
                (u64::from(m) * 60).min(FETCH_RETRY_SECS)
            });
            ctx.state_mut(|s| s.retry_fetch_at = Some(now + retry));
            Err(why)
        }
    };
    // A cluster or disk that stays unavailable fails this sync's publish, not the workflow:
    // what is unpublished stays so, and the next sync (or review) publishes it.
    let (publish, publish_error) = publish_pending(ctx, input, options::retrying(120, 900)).await;
    let (findings, fetch_error) = match findings {
        Ok(report) => (report, None),
        Err(why) => (Default::default(), Some(why)),
    };
    ctx.state_mut(|s| {
        s.last_sync = Some(SyncReport {
            window: (start_at, end_at),
            findings,
            publish,
            publish_error,
            fetch_error,
        })
    });
}

/// Merges a window's batch page by page; nothing is applied unless every page merged.
async fn merge_window(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    window: WindowBatch,
) -> Result<(Vec<PolicyUpdate>, crate::cdr::model::FindingsReport), String> {
    let Some(batch) = window.batch else {
        return Ok((Vec::new(), window.report));
    };
    let mut next = window.first;
    let mut updates = Vec::new();
    while !next.is_empty() {
        let items: Vec<(String, Option<String>)> = ctx.state(|s| {
            next.iter()
                .map(|n| {
                    (
                        n.clone(),
                        s.policies.get(n).map(|p| p.evidence.hash.clone()),
                    )
                })
                .collect()
        });
        let request = MergeEvidence {
            batch: batch.clone(),
            items,
            tetragon_version: input.tetragon_version,
        };
        let page = ctx
            .execute_activity(MergeCdrEvidence, request, options::retrying(300, 900))
            .await
            .map_err(|e| format!("merging the findings failed: {}", root_message(&e)))?;
        if page.updates.is_empty() && page.next == next {
            return Err("merging the findings made no progress".into());
        }
        updates.extend(page.updates);
        next = page.next;
    }
    Ok((updates, window.report))
}

/// Applies merged evidence: existing policies tighten, new ones start in audit.
fn apply_updates(s: &mut CdrToPolicy, updates: Vec<PolicyUpdate>, now: u64) {
    for u in updates {
        let observed_digest = u.observed.digest();
        match s.policies.get_mut(&u.name) {
            Some(p) => {
                if p.evidence.hash != u.evidence.hash {
                    p.changed_at = at(now);
                    p.changed_secs = now;
                    p.evidence_secs = now;
                    p.unpublished = true;
                }
                p.evidence = u.evidence;
                p.observed = u.observed;
                p.observed_digest = observed_digest;
                p.block_refusal = u.block_refusal;
            }
            None => {
                s.pending_removals.remove(&u.name);
                s.policies.insert(
                    u.name.clone(),
                    PolicyRecord {
                        name: u.name,
                        key: u.key,
                        evidence: u.evidence,
                        observed: u.observed,
                        observed_digest,
                        enforcement: Enforcement::Audit,
                        changed_at: at(now),
                        changed_secs: now,
                        evidence_secs: now,
                        promoted: None,
                        hold: false,
                        approved: None,
                        block_refusal: u.block_refusal,
                        unpublished: true,
                    },
                );
            }
        }
    }
}

/// Drops policies no finding has backed for `pruneAfterHours` (their removal is published).
fn prune(s: &mut CdrToPolicy, input: &CdrToPolicyInput, now: u64) {
    let records = s.policies.values().map(|p| (&p.name, p.evidence_secs));
    let stale = stale_names(records, input, now);
    for name in stale {
        s.policies.remove(&name);
        s.pending_removals.insert(name);
    }
}

fn item(p: &PolicyRecord) -> PublishItem {
    PublishItem {
        name: p.name.clone(),
        evidence: p.evidence.hash.clone(),
        enforcement: p.enforcement,
        approved: match p.enforcement {
            Enforcement::Enforce => Some(p.approved.clone().unwrap_or_default()),
            Enforcement::Audit => None,
        },
    }
}

/// Publishes every unpublished policy and pending removal, in batches; stops at the first
/// failed batch (the rest stays unpublished). The report and the failure, if any.
async fn publish_pending(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    options: ActivityOptions,
) -> (PublishReport, Option<String>) {
    let items: Vec<PublishItem> = ctx.state(|s| {
        s.policies
            .values()
            .filter(|p| p.unpublished)
            .map(item)
            .collect()
    });
    let removed: Vec<String> = ctx.state(|s| s.pending_removals.iter().cloned().collect());
    publish(ctx, input, items, removed, options).await
}

/// Publishes `items` and `removed` in batches of at most [`PAGE_POLICIES`] / [`PAYLOAD_BUDGET`].
async fn publish(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    items: Vec<PublishItem>,
    removed: Vec<String>,
    options: ActivityOptions,
) -> (PublishReport, Option<String>) {
    let mut report = PublishReport::default();
    let mut item_batches = chunks(items.into_iter(), PAGE_POLICIES).into_iter();
    let mut removal_batches = chunks(removed.into_iter(), PAGE_POLICIES).into_iter();
    loop {
        let items = item_batches.next().unwrap_or_default();
        let removed = removal_batches.next().unwrap_or_default();
        if items.is_empty() && removed.is_empty() {
            return (report, None);
        }
        let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
        let request = PublishBatch {
            policy_set: input.policy_set.clone(),
            items,
            removed: removed.clone(),
            output: input.output.clone(),
            tetragon_version: input.tetragon_version,
            audit_style: input.audit_style,
        };
        match ctx
            .execute_activity(PublishCdrBatch, request, options.clone())
            .await
        {
            Ok(batch) => {
                ctx.state_mut(|s| {
                    for name in &names {
                        if let Some(p) = s.policies.get_mut(name) {
                            p.unpublished = false;
                        }
                    }
                    for name in &removed {
                        s.pending_removals.remove(name);
                    }
                });
                report.absorb(batch);
            }
            Err(e) => return (report, Some(root_message(&e))),
        }
    }
}

/// Automatic promotion of quiet policies and reversion of enforced ones past their TTL.
async fn apply_time_rules(ctx: &mut WorkflowContext<CdrToPolicy>, input: &CdrToPolicyInput) {
    let now = now_secs(ctx);
    let changed = ctx.state_mut(|s| apply_due(s.policies.values_mut(), input, now));
    if changed {
        // Best effort like a sync: what fails stays unpublished for the next sync.
        let _ = publish_pending(ctx, input, options::retrying(120, 900)).await;
    }
}

/// Applies queued review requests one by one: check again, change the state, publish that
/// policy within the request's deadline, and answer; a request that cannot be published in time
/// lapses and changes nothing.
async fn serve_review_requests(ctx: &mut WorkflowContext<CdrToPolicy>, input: &CdrToPolicyInput) {
    loop {
        let next = ctx.state_mut(take_next_request);
        let Some(req) = next else { return };
        serve_request(ctx, input, req).await;
    }
}

/// Serves one review request (see [`serve_review_requests`]).
async fn serve_request(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    req: Pending,
) {
    let now = now_secs(ctx);
    let name = req.request.policy.clone();
    let before = ctx.state(|s| s.policies.get(&name).cloned());
    let Some(before) = before else {
        serve_outcome(
            ctx,
            req.id,
            Err(format!("policy {name} no longer exists (pruned)")),
        );
        return;
    };
    // The state may have changed since the validator accepted the request (a sync merged
    // new observed values): a promotion applies only what its reviewer saw.
    let refusal = match req.change {
        Change::Promote => promotion_refusal(&before, &req.request),
        Change::Rollback => None,
    };
    if let Some(why) = refusal {
        serve_outcome(ctx, req.id, Err(format!("not applied: {why}")));
        return;
    }
    let Some(updated) = apply_change(ctx, &req, now) else {
        return;
    };
    let outcome = publish_by_deadline(ctx, input, &req, now, updated).await;
    let failed = outcome.is_err();
    if failed {
        // Back to the state before the request; the target may hold either form, so the
        // policy is published again (now, best effort, and by the next sync if that fails).
        ctx.state_mut(|s| {
            s.policies.insert(
                before.name.clone(),
                PolicyRecord {
                    unpublished: true,
                    ..before.clone()
                },
            );
        });
    }
    serve_outcome(ctx, req.id, outcome);
    if failed {
        let restored = ctx.state(|s| s.policies.get(&name).map(item));
        if let Some(restored) = restored {
            let _ = publish(
                ctx,
                input,
                vec![restored],
                Vec::new(),
                options::retrying(300, 900),
            )
            .await;
        }
    }
}

/// Changes the requested policy's enforcement in the state (a rollback also holds it in audit);
/// answers the changed record, or `None` if the policy is gone.
fn apply_change(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    req: &Pending,
    now: u64,
) -> Option<PolicyRecord> {
    ctx.state_mut(|s| {
        let p = s.policies.get_mut(&req.request.policy)?;
        apply_review(p, req.change, &req.request, now);
        Some(p.clone())
    })
}

/// Publishes the changed policy within what is left of the request's deadline; answers the
/// record as published, or why the request is not applied (refused) or lapsed (not published).
async fn publish_by_deadline(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    req: &Pending,
    now: u64,
    updated: PolicyRecord,
) -> Result<PolicyRecord, String> {
    let name = &req.request.policy;
    let budget = req.deadline_secs.saturating_sub(now).max(1);
    let options =
        ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: Duration::from_secs(budget),
            start_to_close: Duration::from_secs(budget),
        })
        .retry_policy(options::backoff())
        .build();
    let (report, error) = publish(ctx, input, vec![item(&updated)], Vec::new(), options).await;
    let refused = report
        .refused
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, why)| why.clone());
    match (error, refused) {
        (None, None) => Ok(ctx
            .state(|s| s.policies.get(name).cloned())
            .unwrap_or(updated)),
        (None, Some(why)) => Err(format!("not applied: {why}")),
        (Some(e), _) => Err(format!("request lapsed: {e}")),
    }
}
