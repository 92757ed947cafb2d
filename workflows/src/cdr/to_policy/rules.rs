//! The review rules both forms of `CdrToPolicy` apply to a policy record (the current
//! [`PolicyRecord`] and the [`LegacyPolicyRecord`] of runs from before `cdr-limits`): a review
//! request changes its enforcement, a quiet policy promotes itself, an enforced one reverts after
//! its TTL, and a reverted or rolled-back policy waits for a person before it blocks again; a
//! policy no finding has backed for `pruneAfterHours` is dropped.

use super::state::{Change, note_for};
use crate::cdr::evidence::Enforcement;
use crate::cdr::model::{
    CdrToPolicyInput, LegacyPolicyRecord, PolicyRecord, ReviewNote, ReviewRequest,
};

/// A policy record under review.
pub(super) trait Reviewed {
    fn enforcement(&self) -> Enforcement;
    /// Whether, in audit, it may promote itself once quiet (never with a person's hold, nor when
    /// the policy could not be scoped or carries unreviewed observed values).
    fn may_promote_itself(&self) -> bool;
    fn changed_secs(&self) -> u64;
    fn promoted(&self) -> Option<&ReviewNote>;
    fn set_enforcement(&mut self, e: Enforcement, now: u64, promoted: Option<ReviewNote>);
    fn hold(&mut self);
}

/// When `p`'s next time rule is due: its quiet promotion or the end of its enforcement TTL.
pub(super) fn rule_deadline(p: &impl Reviewed, input: &CdrToPolicyInput) -> Option<u64> {
    match p.enforcement() {
        Enforcement::Audit if p.may_promote_itself() => input
            .review
            .auto_promote_after_quiet_hours
            .map(|h| p.changed_secs() + u64::from(h) * 3600),
        Enforcement::Enforce => input
            .review
            .enforce_ttl_hours
            .zip(p.promoted())
            .map(|(h, note)| note.at_secs + u64::from(h) * 3600),
        Enforcement::Audit => None,
    }
}

/// The names, of `(name, evidence_secs)` pairs, of the policies no finding has backed for
/// `pruneAfterHours` (none when pruning is off).
pub(super) fn stale_names<'a>(
    records: impl Iterator<Item = (&'a String, u64)>,
    input: &CdrToPolicyInput,
    now: u64,
) -> Vec<String> {
    let Some(hours) = input.prune_after_hours else {
        return Vec::new();
    };
    let limit = u64::from(hours) * 3600;
    records
        .filter(|&(_, evidence_secs)| now.saturating_sub(evidence_secs) >= limit)
        .map(|(name, _)| name.clone())
        .collect()
}

/// Applies every due time rule; answers whether any record changed.
pub(super) fn apply_due<'a, R: Reviewed + 'a>(
    records: impl IntoIterator<Item = &'a mut R>,
    input: &CdrToPolicyInput,
    now: u64,
) -> bool {
    let mut changed = false;
    for p in records {
        if rule_deadline(p, input).is_none_or(|d| d > now) {
            continue;
        }
        changed = true;
        match p.enforcement() {
            Enforcement::Audit => {
                let hours = input.review.auto_promote_after_quiet_hours.unwrap_or(0);
                let why = format!("no new findings for {hours} h (autoPromoteAfterQuietHours)");
                p.set_enforcement(
                    Enforcement::Enforce,
                    now,
                    Some(note_for("qflows", &why, now)),
                );
            }
            Enforcement::Enforce => {
                p.set_enforcement(Enforcement::Audit, now, None);
                // A reverted policy waits for a person before it blocks again.
                p.hold();
            }
        }
    }
    changed
}

/// Applies a review request: `promote` enforces (noting who and why), `rollback` returns to
/// audit and holds it there.
pub(super) fn apply_review(p: &mut impl Reviewed, change: Change, r: &ReviewRequest, now: u64) {
    match change {
        Change::Promote => {
            p.set_enforcement(
                Enforcement::Enforce,
                now,
                Some(note_for(&r.by, &r.reason, now)),
            );
        }
        Change::Rollback => {
            p.set_enforcement(Enforcement::Audit, now, None);
            p.hold();
        }
    }
}

impl Reviewed for PolicyRecord {
    fn enforcement(&self) -> Enforcement {
        self.enforcement
    }
    fn may_promote_itself(&self) -> bool {
        !self.hold && self.block_refusal.is_none() && self.observed.is_empty()
    }
    fn changed_secs(&self) -> u64 {
        self.changed_secs
    }
    fn promoted(&self) -> Option<&ReviewNote> {
        self.promoted.as_ref()
    }
    /// Also records what the reviewer approved (the observed values, for the blocking form) and
    /// marks the record for publishing.
    fn set_enforcement(&mut self, e: Enforcement, now: u64, promoted: Option<ReviewNote>) {
        self.enforcement = e;
        self.approved = promoted.as_ref().map(|_| self.observed.clone());
        self.promoted = promoted;
        self.changed_at = super::state::at(now);
        self.changed_secs = now;
        self.unpublished = true;
    }
    fn hold(&mut self) {
        self.hold = true;
    }
}

impl Reviewed for LegacyPolicyRecord {
    fn enforcement(&self) -> Enforcement {
        self.enforcement
    }
    fn may_promote_itself(&self) -> bool {
        !self.hold && !self.key.workload.is_unknown()
    }
    fn changed_secs(&self) -> u64 {
        self.changed_secs
    }
    fn promoted(&self) -> Option<&ReviewNote> {
        self.promoted.as_ref()
    }
    fn set_enforcement(&mut self, e: Enforcement, now: u64, promoted: Option<ReviewNote>) {
        self.enforcement = e;
        self.promoted = promoted;
        self.changed_at = super::state::at(now);
        self.changed_secs = now;
    }
    fn hold(&mut self) {
        self.hold = true;
    }
}
