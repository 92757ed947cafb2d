//! `CdrToPolicy`: Qualys CDR findings become Tetragon TracingPolicies, reviewed before they block.
//!
//! One workflow owns one policy set (ID `cdr-<policySet>` by convention). It
//! 1. **syncs**: reads the findings of a window, merges them into per-policy evidence (new
//!    findings for an existing policy tighten it instead of creating a near-duplicate), and
//!    publishes every policy (validated; unchanged ones are no-ops at the target);
//! 2. **waits for review**: `promote` switches a policy to enforcement, `rollback` returns it
//!    to audit; each request carries who and why and lapses if it cannot be applied in time;
//!    quiet policies may promote themselves, and enforced ones may revert after a TTL;
//! 3. syncs again every `syncEveryMinutes` (controller mode), or ends after `review.openHours`.
//!
//! New policies always start in audit. The state lives in the workflow (query `policies`) and
//! survives worker restarts and continue-as-new.

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::cdr::model::{Enforcement, Evidence, PolicyKey};
use crate::cdr::{
    CarriedState, CdrToPolicyInput, EvidenceBatch, FetchFindings, PoliciesView, PolicyRecord,
    PublishPolicies, PublishReport, ReviewNote, ReviewRequest, SyncReport,
};
use crate::clock::rfc3339;
use crate::contracts::{FetchCdrEvidence, PublishCdrPolicies};
use crate::failure::{activity_failed, invalid_input, root_message};
use crate::{input, options};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, ContinueAsNewOptions,
    SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

type UpdateError = Box<dyn std::error::Error + Send + Sync>;

/// Review changes the workflow applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Promote,
    Rollback,
}

/// A review request waiting for the main loop.
#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    change: Change,
    request: ReviewRequest,
    deadline_secs: u64,
    taken: bool,
}

/// The `CdrToPolicy` workflow. Input: [`CdrToPolicyInput`] as JSON; output: [`PoliciesView`].
#[workflow]
#[derive(Default)]
pub struct CdrToPolicy {
    input: Option<CdrToPolicyInput>,
    policies: BTreeMap<String, PolicyRecord>,
    window_end_secs: Option<u64>,
    last_sync: Option<SyncReport>,
    pending: Vec<Pending>,
    outcomes: BTreeMap<u64, Result<PolicyRecord, String>>,
    next_request: u64,
    sync_requested: bool,
}

/// Loop turns before the workflow continues as new (keeps history short).
const TURNS_PER_RUN: u32 = 200;

#[workflow_methods]
impl CdrToPolicy {
    /// Syncs, then serves review requests and time rules until it ends or continues as new.
    #[run(name = "CdrToPolicy")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: serde_json::Value,
    ) -> WorkflowResult<PoliciesView> {
        let mut input: CdrToPolicyInput = input::parse(input).map_err(invalid_input)?;
        let carried = input.carried.take().unwrap_or_default();
        ctx.state_mut(|s| {
            s.policies = carried
                .policies
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect();
            s.window_end_secs = carried.window_end_secs;
            s.input = Some(input.clone());
        });
        let started = now_secs(ctx);
        let mut sync_due = true;
        for _ in 0..TURNS_PER_RUN {
            if sync_due || ctx.state(|s| s.sync_requested) {
                sync(ctx, &input).await?;
                sync_due = false;
            }
            apply_time_rules(ctx, &input).await;
            serve_review_requests(ctx, &input).await;

            // Wait for the next thing to do: a review request, a sync (timer or signal), a
            // review deadline, or the end of the review window.
            let now = now_secs(ctx);
            let close_at = match input.sync_every_minutes {
                Some(_) => None,
                None => Some(started + u64::from(input.review.open_hours) * 3600),
            };
            if close_at.is_some_and(|c| now >= c) {
                // Requests already accepted are answered before the workflow ends.
                ctx.wait_condition(|s: &Self| s.pending.is_empty()).await?;
                return Ok(view(ctx));
            }
            let next_rule = ctx.state(|s| next_rule_deadline(s.policies.values(), &input));
            let next_sync = input.sync_every_minutes.map(|m| now + u64::from(m) * 60);
            let wake_at = [next_rule, next_sync, close_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + 24 * 3600);
            let timers = ctx.clone();
            let mut timer = timers.timer(Duration::from_secs(wake_at.saturating_sub(now).max(1)));
            temporalio_sdk::workflows::select! {
                _ = timer => {
                    sync_due = next_sync.is_some_and(|t| now_secs(ctx) >= t);
                }
                _ = ctx.wait_condition(|s: &Self| {
                    s.sync_requested || s.pending.iter().any(|p| !p.taken)
                }) => {}
            }
        }
        // Carry the state into a fresh run so history stays short.
        ctx.wait_condition(|s: &Self| s.pending.is_empty()).await?;
        let mut next = input;
        next.carried = Some(ctx.state(|s| CarriedState {
            policies: s.policies.values().cloned().collect(),
            window_end_secs: s.window_end_secs,
        }));
        let next = serde_json::to_value(&next).expect("the input serialises");
        ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
        unreachable!("continue_as_new always ends the run")
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

    /// Every policy with its evidence and review state, and the last sync's report.
    #[query(name = "policies")]
    pub fn policies(&self, _ctx: &WorkflowContextView) -> PoliciesView {
        self.view()
    }
}

impl CdrToPolicy {
    fn view(&self) -> PoliciesView {
        PoliciesView {
            policy_set: self
                .input
                .as_ref()
                .map(|i| i.policy_set.clone())
                .unwrap_or_default(),
            policies: self.policies.values().cloned().collect(),
            last_sync: self.last_sync.clone(),
        }
    }

    /// Refuses requests that cannot succeed, before they enter history.
    fn check(&self, change: Change, r: &ReviewRequest) -> Result<(), UpdateError> {
        if r.by.trim().is_empty() || r.reason.trim().is_empty() {
            return Err("a review needs `by` and `reason`".into());
        }
        if r.timeout_secs == 0 {
            return Err("timeoutSecs must be at least 1".into());
        }
        let Some(p) = self.policies.get(&r.policy) else {
            return Err(format!("no policy {:?} in this policy set", r.policy).into());
        };
        match change {
            Change::Promote if p.enforcement == Enforcement::Enforce => {
                Err(format!("{} is already enforced", p.name).into())
            }
            Change::Promote if p.key.workload.is_unknown() => Err(format!(
                "{} cannot block: its findings name no namespace, pod labels or image to scope it to",
                p.name
            )
            .into()),
            Change::Rollback if p.enforcement == Enforcement::Audit => {
                Err(format!("{} is already in audit", p.name).into())
            }
            _ => Ok(()),
        }
    }
}

fn view(ctx: &WorkflowContext<CdrToPolicy>) -> PoliciesView {
    ctx.state(|s| s.view())
}

fn now(ctx: &WorkflowContext<CdrToPolicy>) -> SystemTime {
    ctx.workflow_time().unwrap_or(UNIX_EPOCH)
}

fn now_secs(ctx: &WorkflowContext<CdrToPolicy>) -> u64 {
    secs(now(ctx))
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn at(secs: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
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

/// One sync: read the window's findings, merge them, prune, publish.
async fn sync(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
) -> WorkflowResult<()> {
    let now = now_secs(ctx);
    ctx.state_mut(|s| s.sync_requested = false);
    let (start_at, end_at) = match (&input.start_at, &input.end_at) {
        (Some(s), Some(e)) => (s.clone(), e.clone()),
        _ => {
            let start = ctx
                .state(|s| s.window_end_secs.map(|e| e + 1))
                .unwrap_or(now.saturating_sub(u64::from(input.lookback_hours) * 3600));
            (at(start.min(now)), at(now))
        }
    };
    let query = FetchFindings {
        start_at: start_at.clone(),
        end_at: end_at.clone(),
        filters: input.filters.clone(),
    };
    let batch: EvidenceBatch = ctx
        .execute_activity(FetchCdrEvidence, query, options::retrying(600, 3600))
        .await
        .map_err(|e| activity_failed("fetch CDR findings", e))?;

    let removed = ctx.state_mut(|s| {
        s.window_end_secs = Some(now);
        for (key, evidence) in batch.groups {
            merge(s, key, evidence, now);
        }
        prune(s, input, now)
    });
    // A cluster or disk that stays unavailable fails this sync's publish, not the workflow:
    // the state is kept and the next sync (or review) publishes it all again.
    let (publish, publish_error) =
        match publish(ctx, input, removed, options::retrying(120, 900)).await {
            Ok(report) => (report, None),
            Err(e) => (PublishReport::default(), Some(root_message(&e))),
        };
    ctx.state_mut(|s| {
        s.last_sync = Some(SyncReport {
            window: (start_at, end_at),
            findings: batch.report,
            publish,
            publish_error,
        })
    });
    Ok(())
}

/// Merges a window's evidence into the policy for `key` (creating it in audit).
fn merge(s: &mut CdrToPolicy, key: PolicyKey, evidence: Evidence, now: u64) {
    let name = key.name();
    match s.policies.get_mut(&name) {
        Some(p) => {
            let before = p.evidence.clone();
            p.evidence.merge(&evidence);
            if p.evidence != before {
                p.changed_at = at(now);
                p.changed_secs = now;
                p.evidence_secs = now;
            }
        }
        None => {
            s.policies.insert(
                name.clone(),
                PolicyRecord {
                    name,
                    key,
                    evidence,
                    enforcement: Enforcement::Audit,
                    changed_at: at(now),
                    changed_secs: now,
                    evidence_secs: now,
                    promoted: None,
                    hold: false,
                },
            );
        }
    }
}

/// Drops policies no finding has backed for `pruneAfterHours`; returns their names.
fn prune(s: &mut CdrToPolicy, input: &CdrToPolicyInput, now: u64) -> Vec<String> {
    let Some(hours) = input.prune_after_hours else {
        return Vec::new();
    };
    let limit = u64::from(hours) * 3600;
    let stale: Vec<String> = s
        .policies
        .values()
        .filter(|p| now.saturating_sub(p.evidence_secs) >= limit)
        .map(|p| p.name.clone())
        .collect();
    for name in &stale {
        s.policies.remove(name);
    }
    stale
}

/// Publishes the whole set (the activity renders, validates, writes and applies).
async fn publish(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    removed: Vec<String>,
    options: ActivityOptions,
) -> Result<PublishReport, ActivityExecutionError> {
    let request = PublishPolicies {
        policy_set: input.policy_set.clone(),
        policies: ctx.state(|s| s.policies.values().cloned().collect()),
        removed,
        output: input.output.clone(),
        tetragon_version: input.tetragon_version,
        audit_style: input.audit_style,
    };
    ctx.execute_activity(PublishCdrPolicies, request, options)
        .await
}

/// The earliest time an automatic review rule fires.
fn next_rule_deadline<'a>(
    policies: impl Iterator<Item = &'a PolicyRecord>,
    input: &CdrToPolicyInput,
) -> Option<u64> {
    policies.filter_map(|p| rule_deadline(p, input)).min()
}

fn rule_deadline(p: &PolicyRecord, input: &CdrToPolicyInput) -> Option<u64> {
    match p.enforcement {
        Enforcement::Audit if !p.hold && !p.key.workload.is_unknown() => input
            .review
            .auto_promote_after_quiet_hours
            .map(|h| p.changed_secs + u64::from(h) * 3600),
        Enforcement::Enforce => input
            .review
            .enforce_ttl_hours
            .zip(p.promoted.as_ref())
            .map(|(h, note)| note.at_secs + u64::from(h) * 3600),
        Enforcement::Audit => None,
    }
}

/// Automatic promotion of quiet policies and reversion of enforced ones past their TTL.
async fn apply_time_rules(ctx: &mut WorkflowContext<CdrToPolicy>, input: &CdrToPolicyInput) {
    let now = now_secs(ctx);
    let changed = ctx.state_mut(|s| {
        let mut changed = false;
        for p in s.policies.values_mut() {
            if rule_deadline(p, input).is_none_or(|d| d > now) {
                continue;
            }
            changed = true;
            match p.enforcement {
                Enforcement::Audit => {
                    let hours = input.review.auto_promote_after_quiet_hours.unwrap_or(0);
                    set_enforcement(
                        p,
                        Enforcement::Enforce,
                        now,
                        Some(note(
                            "qflows",
                            &format!("no new findings for {hours} h (autoPromoteAfterQuietHours)"),
                            now,
                        )),
                    );
                }
                Enforcement::Enforce => {
                    set_enforcement(p, Enforcement::Audit, now, None);
                    // A reverted policy waits for a person before it blocks again.
                    p.hold = true;
                }
            }
        }
        changed
    });
    if changed {
        // Best effort like a sync: on failure the next sync or review publishes again.
        let _ = publish(ctx, input, Vec::new(), options::retrying(120, 900)).await;
    }
}

fn note(by: &str, reason: &str, now: u64) -> ReviewNote {
    ReviewNote {
        by: by.into(),
        reason: reason.into(),
        at: at(now),
        at_secs: now,
    }
}

fn set_enforcement(p: &mut PolicyRecord, e: Enforcement, now: u64, promoted: Option<ReviewNote>) {
    p.enforcement = e;
    p.promoted = promoted;
    p.changed_at = at(now);
    p.changed_secs = now;
}

/// Applies queued review requests one by one: change the state, publish within the request's
/// deadline, and answer; a request that cannot be published in time lapses and changes nothing.
async fn serve_review_requests(ctx: &mut WorkflowContext<CdrToPolicy>, input: &CdrToPolicyInput) {
    loop {
        let next = ctx.state_mut(|s| {
            let p = s.pending.iter_mut().find(|p| !p.taken)?;
            p.taken = true;
            Some(p.clone())
        });
        let Some(req) = next else { return };
        let now = now_secs(ctx);
        let name = req.request.policy.clone();
        let before = ctx.state(|s| s.policies.get(&name).cloned());
        let outcome = match before {
            None => Err(format!("policy {name} no longer exists (pruned)")),
            Some(before) => {
                ctx.state_mut(|s| {
                    if let Some(p) = s.policies.get_mut(&name) {
                        let r = &req.request;
                        match req.change {
                            Change::Promote => set_enforcement(
                                p,
                                Enforcement::Enforce,
                                now,
                                Some(note(&r.by, &r.reason, now)),
                            ),
                            Change::Rollback => {
                                set_enforcement(p, Enforcement::Audit, now, None);
                                p.hold = true;
                            }
                        }
                    }
                });
                let budget = req.deadline_secs.saturating_sub(now).max(1);
                let options = ActivityOptions::with_close_timeouts(
                    ActivityCloseTimeouts::ScheduleAndStartToClose {
                        schedule_to_close: Duration::from_secs(budget),
                        start_to_close: Duration::from_secs(budget),
                    },
                )
                .retry_policy(options::backoff())
                .build();
                let result = publish(ctx, input, Vec::new(), options).await;
                let refused = result.as_ref().ok().and_then(|r| {
                    r.refused
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, why)| why.clone())
                });
                match (result, refused) {
                    (Ok(_), None) => Ok(ctx
                        .state(|s| s.policies.get(&name).cloned())
                        .unwrap_or(before)),
                    (Ok(_), Some(why)) => {
                        restore(ctx, before);
                        Err(format!("not applied: {why}"))
                    }
                    (Err(e), _) => {
                        restore(ctx, before);
                        Err(format!("request lapsed: {}", root_message(&e)))
                    }
                }
            }
        };
        let failed = outcome.is_err();
        ctx.state_mut(|s| {
            s.pending.retain(|p| p.id != req.id);
            s.outcomes.insert(req.id, outcome);
        });
        if failed {
            // Put the target back in line with the restored state (best effort; the next sync
            // publishes again anyway).
            let _ = publish(ctx, input, Vec::new(), options::retrying(300, 900)).await;
        }
    }
}

fn restore(ctx: &mut WorkflowContext<CdrToPolicy>, before: PolicyRecord) {
    ctx.state_mut(|s| {
        s.policies.insert(before.name.clone(), before);
    });
}
