//! What the webhook did with one image (the `decision` label of
//! `qflows_admission_decisions_total`), from its verdict and its profile's enforcement.

use qflows_workflows::scan::model::Verdict;
use qflows_workflows::scan::profile::Enforce;

/// What the webhook did with one image: the `decision` label of
/// `qflows_admission_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decision {
    /// Scanned and within its profile.
    Allowed,
    /// Failed a `deny` profile (or its `unscanned` rule is `fail` under `deny`): refused.
    Denied,
    /// Failed a `warn` profile: admitted with a warning.
    Warned,
    /// Failed an `audit` profile (or its verdict is `audit`): admitted and recorded.
    Audited,
    /// Would have been denied; admitted by `qflows.io/break-glass`.
    BreakGlass,
    /// No verdict in time; admitted by the profile's `unscanned` rule.
    Unscanned,
}

impl Decision {
    /// Every decision, for rendering.
    pub const ALL: [Decision; 6] = [
        Self::Allowed,
        Self::Denied,
        Self::Warned,
        Self::Audited,
        Self::BreakGlass,
        Self::Unscanned,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Warned => "warned",
            Self::Audited => "audited",
            Self::BreakGlass => "break_glass",
            Self::Unscanned => "unscanned",
        }
    }

    /// From a verdict under `enforce`; `known`: the image has a result (not the unscanned rule).
    /// `verdict` is `None` only for an unscanned image under a profile whose `unscanned` is
    /// `none` (report only): admitted as unscanned.
    pub fn of(
        verdict: Option<Verdict>,
        enforce: Enforce,
        known: bool,
        break_glass: bool,
    ) -> Decision {
        match (verdict, enforce) {
            (Some(Verdict::Fail), Enforce::Deny) if break_glass => Decision::BreakGlass,
            (Some(Verdict::Fail), Enforce::Deny) => Decision::Denied,
            (Some(Verdict::Fail), Enforce::Warn) => Decision::Warned,
            (Some(Verdict::Fail), Enforce::Audit) => Decision::Audited,
            (_, _) if !known => Decision::Unscanned,
            (None, _) => Decision::Unscanned,
            (Some(Verdict::Audit), _) => Decision::Audited,
            (Some(Verdict::Pass), _) => Decision::Allowed,
        }
    }
}
