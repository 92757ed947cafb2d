//! Runs that began before `cdr-limits`: every policy record (evidence included) in the workflow
//! state, in every publish and in continue-as-new. Kept unchanged so that such runs and their
//! recorded histories replay; they continue as new (into the current form) when the server
//! suggests it or after 200 turns, whichever comes first.

use super::rules::{apply_due, apply_review, rule_deadline, stale_names};
use super::state::{
    CdrToPolicy, Change, Pending, UpdateError, at, legacy_view, now_secs, serve_outcome,
    sleep_until_first, take_next_request, window_start,
};
use crate::cdr::contracts::{FetchCdrEvidence, PublishCdrPolicies};
use crate::cdr::evidence::{Enforcement, Evidence, PolicyKey};
use crate::cdr::model::{
    CarriedState, CdrToPolicyInput, EvidenceBatch, FetchFindings, LegacyPolicyRecord, PoliciesView,
    PublishPolicies, PublishReport, ReviewRequest, SyncReport,
};
use crate::failure::{activity_failed, root_message};
use crate::options;
use std::time::Duration;
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, ContinueAsNewOptions,
    WorkflowContext, WorkflowResult,
};

/// Loop turns before the workflow continues as new.
const TURNS_PER_RUN: u32 = 200;

/// Patch: such a run continues as new (into the current form) when the server suggests it.
const EARLY_CONTINUE_AS_NEW: &str = "cdr-legacy-continue-as-new-suggested";

/// The run of a workflow that began before `cdr-limits`.
pub(super) async fn run(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    mut input: CdrToPolicyInput,
) -> WorkflowResult<PoliciesView> {
    let carried = input.carried.take().unwrap_or_default();
    ctx.state_mut(|s| {
        s.legacy = carried
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
        // The server's suggestion is part of history, so this replays; the patch keeps runs
        // recorded before it (which ignored the suggestion) replaying too.
        if ctx.continue_as_new_suggested() && ctx.patched(EARLY_CONTINUE_AS_NEW) {
            break;
        }
        if sync_due || ctx.state(|s| s.sync_requested) {
            sync(ctx, &input).await?;
            sync_due = false;
        }
        apply_time_rules(ctx, &input).await;
        serve_review_requests(ctx, &input).await;

        let now = now_secs(ctx);
        let close_at = match input.sync_every_minutes {
            Some(_) => None,
            None => Some(started + u64::from(input.review.open_hours) * 3600),
        };
        if close_at.is_some_and(|c| now >= c) {
            ctx.wait_condition(|s: &CdrToPolicy| s.pending.is_empty())
                .await?;
            return Ok(ctx.state(|s| s.view(&Default::default())));
        }
        let next_rule = ctx.state(|s| {
            s.legacy
                .values()
                .filter_map(|p| rule_deadline(p, &input))
                .min()
        });
        let next_sync = input.sync_every_minutes.map(|m| now + u64::from(m) * 60);
        let timers = ctx.clone();
        let mut timer = timers.timer(sleep_until_first(now, &[next_rule, next_sync, close_at]));
        temporalio_sdk::workflows::select! {
            _ = timer => {
                sync_due = next_sync.is_some_and(|t| now_secs(ctx) >= t);
            }
            _ = ctx.wait_condition(|s: &CdrToPolicy| {
                s.sync_requested || s.pending.iter().any(|p| !p.taken)
            }) => {}
        }
    }
    ctx.wait_condition(|s: &CdrToPolicy| s.pending.is_empty())
        .await?;
    let mut next = input;
    next.carried = Some(ctx.state(|s| CarriedState {
        policies: s.legacy.values().cloned().collect(),
        window_end_secs: s.window_end_secs,
        ..Default::default()
    }));
    let next = serde_json::to_value(&next).expect("the input serialises");
    ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
    unreachable!("continue_as_new always ends the run")
}

/// The validator of such a run.
pub(super) fn check(s: &CdrToPolicy, change: Change, r: &ReviewRequest) -> Result<(), UpdateError> {
    let Some(p) = s.legacy.get(&r.policy) else {
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

async fn sync(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
) -> WorkflowResult<()> {
    let now = now_secs(ctx);
    ctx.state_mut(|s| s.sync_requested = false);
    let (start_at, end_at) = match (&input.start_at, &input.end_at) {
        (Some(s), Some(e)) => (s.clone(), e.clone()),
        _ => {
            let start = ctx.state(|s| window_start(s, input, now));
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
            fetch_error: None,
        })
    });
    Ok(())
}

fn merge(s: &mut CdrToPolicy, key: PolicyKey, evidence: Evidence, now: u64) {
    let name = key.name();
    match s.legacy.get_mut(&name) {
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
            s.legacy.insert(
                name.clone(),
                LegacyPolicyRecord {
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

fn prune(s: &mut CdrToPolicy, input: &CdrToPolicyInput, now: u64) -> Vec<String> {
    let records = s.legacy.values().map(|p| (&p.name, p.evidence_secs));
    let stale = stale_names(records, input, now);
    for name in &stale {
        s.legacy.remove(name);
    }
    stale
}

async fn publish(
    ctx: &mut WorkflowContext<CdrToPolicy>,
    input: &CdrToPolicyInput,
    removed: Vec<String>,
    options: ActivityOptions,
) -> Result<PublishReport, ActivityExecutionError> {
    let request = PublishPolicies {
        policy_set: input.policy_set.clone(),
        policies: ctx.state(|s| s.legacy.values().cloned().collect()),
        removed,
        output: input.output.clone(),
        tetragon_version: input.tetragon_version,
        audit_style: input.audit_style,
    };
    ctx.execute_activity(PublishCdrPolicies, request, options)
        .await
}

async fn apply_time_rules(ctx: &mut WorkflowContext<CdrToPolicy>, input: &CdrToPolicyInput) {
    let now = now_secs(ctx);
    let changed = ctx.state_mut(|s| apply_due(s.legacy.values_mut(), input, now));
    if changed {
        let _ = publish(ctx, input, Vec::new(), options::retrying(120, 900)).await;
    }
}

async fn serve_review_requests(ctx: &mut WorkflowContext<CdrToPolicy>, input: &CdrToPolicyInput) {
    loop {
        let next = ctx.state_mut(take_next_request);
        let Some(req): Option<Pending> = next else {
            return;
        };
        let now = now_secs(ctx);
        let name = req.request.policy.clone();
        let before = ctx.state(|s| s.legacy.get(&name).cloned());
        let outcome = match before {
            None => Err(format!("policy {name} no longer exists (pruned)")),
            Some(before) => {
                ctx.state_mut(|s| {
                    if let Some(p) = s.legacy.get_mut(&name) {
                        apply_review(p, req.change, &req.request, now);
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
                let restore = |ctx: &mut WorkflowContext<CdrToPolicy>,
                               before: LegacyPolicyRecord| {
                    ctx.state_mut(|s| {
                        s.legacy.insert(before.name.clone(), before);
                    })
                };
                match (result, refused) {
                    (Ok(_), None) => Ok(ctx
                        .state(|s| s.legacy.get(&name).map(legacy_view))
                        .unwrap_or_else(|| legacy_view(&before))),
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
        serve_outcome(ctx, req.id, outcome);
        if failed {
            let _ = publish(ctx, input, Vec::new(), options::retrying(300, 900)).await;
        }
    }
}
