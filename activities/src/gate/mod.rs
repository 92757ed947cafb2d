//! The severity gate: from an image's vulnerabilities to `pass`, `fail` or `audit`.
//!
//! Pure functions over the Qualys findings, so the policy is unit-tested without I/O.

pub mod judge;
pub mod profiles;

use crate::qscanner::Finding;
use crate::qualys::Vulnerability;
use qflows_workflows::scan::model::{SeveritySummary, Verdict};
use serde::{Deserialize, Serialize};

/// A CVE accepted until a date (epoch seconds); expired entries no longer apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowEntry {
    /// `CVE-YYYY-NNNN`.
    pub cve: String,
    /// Until when (Unix seconds); `None`: no expiry.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// Why it is accepted (for reviewers).
    #[serde(default)]
    pub reason: Option<String>,
}

/// When an image fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatePolicy {
    /// Fail on any vulnerability at or above this severity (5 = critical only; 0 = never).
    pub fail_severity: u8,
    /// Fail when there are more than this many high (severity 4) vulnerabilities.
    #[serde(default)]
    pub max_high: Option<u64>,
    /// Fail when secrets were found.
    pub fail_on_secrets: bool,
    /// Count only vulnerabilities that have a fix.
    pub fixable_only: bool,
    /// Accepted CVEs.
    #[serde(default)]
    pub allowlist: Vec<AllowEntry>,
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            fail_severity: 5,
            max_high: None,
            fail_on_secrets: true,
            fixable_only: false,
            allowlist: Vec::new(),
        }
    }
}

/// What the gate needs to know about one vulnerability, whichever backend found it.
#[derive(Debug, Clone, Copy)]
pub struct GateItem<'a> {
    /// Qualys severity 1 … 5.
    pub severity: u8,
    /// Its CVEs (all must be allow-listed for the item to be accepted).
    pub cves: &'a [String],
    /// Whether a fixed version exists.
    pub fixable: bool,
}

impl<'a> From<&'a Vulnerability> for GateItem<'a> {
    fn from(v: &'a Vulnerability) -> Self {
        Self {
            severity: v.severity,
            cves: &v.cve_ids,
            fixable: v
                .fixed_version
                .as_deref()
                .is_some_and(|f| !f.trim().is_empty()),
        }
    }
}

impl<'a> From<&'a Finding> for GateItem<'a> {
    fn from(f: &'a Finding) -> Self {
        Self {
            severity: f.severity.unwrap_or(1),
            cves: &f.cves,
            fixable: f
                .packages
                .iter()
                .any(|p| p.fixed.as_deref().is_some_and(|v| !v.trim().is_empty())),
        }
    }
}

fn allowed(policy: &GatePolicy, item: &GateItem<'_>, now: u64) -> bool {
    !item.cves.is_empty()
        && item.cves.iter().all(|cve| {
            policy
                .allowlist
                .iter()
                .any(|a| a.cve.eq_ignore_ascii_case(cve) && a.expires_at.is_none_or(|t| t > now))
        })
}

/// Counts what the policy counts (fixable only, minus live allowlist entries) and decides.
pub fn evaluate<'a>(
    policy: &GatePolicy,
    items: impl IntoIterator<Item = GateItem<'a>>,
    secrets: u64,
    now: u64,
) -> (Verdict, SeveritySummary) {
    let mut summary = SeveritySummary {
        secrets,
        ..Default::default()
    };
    let mut worst = 0;
    for v in items {
        let fixable = v.fixable;
        if (policy.fixable_only && !fixable) || allowed(policy, &v, now) {
            continue;
        }
        worst = worst.max(v.severity);
        summary.fixable += u64::from(fixable);
        match v.severity {
            5 => summary.critical += 1,
            4 => summary.high += 1,
            3 => summary.medium += 1,
            _ => summary.low += 1,
        }
    }
    let fails = (policy.fail_severity > 0 && worst >= policy.fail_severity)
        || policy.max_high.is_some_and(|max| summary.high > max)
        || (policy.fail_on_secrets && secrets > 0);
    let verdict = if fails { Verdict::Fail } else { Verdict::Pass };
    (verdict, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vuln(severity: u8, cve: &str, fixed: Option<&str>) -> Vulnerability {
        serde_json::from_value(serde_json::json!({
            "qid": 1, "severity": severity, "cveids": [cve], "fixedVersion": fixed,
        }))
        .unwrap()
    }

    fn items(v: &[Vulnerability]) -> impl Iterator<Item = GateItem<'_>> {
        v.iter().map(GateItem::from)
    }

    #[test]
    fn critical_fails_by_default_and_high_counts_against_max() {
        let p = GatePolicy::default();
        assert_eq!(
            evaluate(&p, items(&[vuln(5, "CVE-1", None)]), 0, 0).0,
            Verdict::Fail
        );
        assert_eq!(
            evaluate(&p, items(&[vuln(4, "CVE-1", None)]), 0, 0).0,
            Verdict::Pass
        );
        let p = GatePolicy {
            max_high: Some(1),
            ..GatePolicy::default()
        };
        let two_high = [vuln(4, "CVE-1", None), vuln(4, "CVE-2", None)];
        let (verdict, summary) = evaluate(&p, items(&two_high), 0, 0);
        assert_eq!((verdict, summary.high), (Verdict::Fail, 2));
        assert_eq!(
            evaluate(&GatePolicy::default(), items(&[]), 1, 0).0,
            Verdict::Fail,
            "secrets fail"
        );
    }

    #[test]
    fn fixable_only_and_expiring_allowlist() {
        let unfixed = [vuln(5, "CVE-9", None)];
        let p = GatePolicy {
            fixable_only: true,
            ..GatePolicy::default()
        };
        assert_eq!(evaluate(&p, items(&unfixed), 0, 0).0, Verdict::Pass);
        let fixed = [vuln(5, "CVE-9", Some("1.2.3"))];
        assert_eq!(evaluate(&p, items(&fixed), 0, 0).0, Verdict::Fail);

        let entry = AllowEntry {
            cve: "cve-9".into(),
            expires_at: Some(100),
            reason: None,
        };
        let p = GatePolicy {
            allowlist: vec![entry],
            ..GatePolicy::default()
        };
        assert_eq!(
            evaluate(&p, items(&fixed), 0, 99).0,
            Verdict::Pass,
            "allowed until it expires"
        );
        assert_eq!(
            evaluate(&p, items(&fixed), 0, 100).0,
            Verdict::Fail,
            "expired"
        );
    }
}
