//! Search attributes that make scans findable in the Temporal UI and CLI, e.g.
//! `temporal workflow list --query 'QflowsGateResult = "fail"'`.
//!
//! They must be registered in the namespace once (`qflows dev` does it for its dev server):
//!
//! ```sh
//! temporal operator search-attribute create --name QflowsImageDigests --type KeywordList
//! temporal operator search-attribute create --name QflowsRepositories --type KeywordList
//! temporal operator search-attribute create --name QflowsAccount --type Keyword
//! temporal operator search-attribute create --name QflowsWorstSeverity --type Int
//! temporal operator search-attribute create --name QflowsGateResult --type Keyword
//! # optional, for gate profiles:
//! temporal operator search-attribute create --name QflowsGateProfile --type Keyword
//! ```
//!
//! The worker checks at start-up and, when one of [`ALL`] is missing, says so and does not set
//! them (setting an unregistered attribute would stall every scan). [`OPTIONAL`] ones are set
//! only when registered, so a namespace that registered the first five before gate profiles
//! existed keeps all of them searchable ([`ScanSettings::profile_search_attribute`]).
//!
//! [`ScanSettings::profile_search_attribute`]: crate::scan::model::ScanSettings

use crate::scan::ScanRequest;
use crate::scan::model::{ImageResult, Verdict};
use temporalio_common::search_attributes::{
    SearchAttributeKey, SearchAttributeUpdate, SearchAttributes,
};

/// Image digests a workflow scanned.
pub const IMAGE_DIGESTS: SearchAttributeKey<Vec<String>> =
    SearchAttributeKey::keyword_list("QflowsImageDigests");
/// Repositories (`registry/repository`) a workflow scanned.
pub const REPOSITORIES: SearchAttributeKey<Vec<String>> =
    SearchAttributeKey::keyword_list("QflowsRepositories");
/// The AWS account of the deployment.
pub const ACCOUNT: SearchAttributeKey<String> = SearchAttributeKey::keyword("QflowsAccount");
/// Worst Qualys severity found (5 = critical; 0 = none).
pub const WORST_SEVERITY: SearchAttributeKey<i64> = SearchAttributeKey::int("QflowsWorstSeverity");
/// Gate result: `pass`, `audit` or `fail`.
pub const GATE_RESULT: SearchAttributeKey<String> = SearchAttributeKey::keyword("QflowsGateResult");

/// The gate profile that produced the verdict (see [`crate::scan::profile`]). Optional: set
/// only where it is registered.
pub const GATE_PROFILE: SearchAttributeKey<String> =
    SearchAttributeKey::keyword("QflowsGateProfile");

/// The attributes qflows needs registered to set any, with their type names.
pub const ALL: [(&str, &str); 5] = [
    ("QflowsImageDigests", "KeywordList"),
    ("QflowsRepositories", "KeywordList"),
    ("QflowsAccount", "Keyword"),
    ("QflowsWorstSeverity", "Int"),
    ("QflowsGateResult", "Keyword"),
];

/// Attributes set only when registered (added after [`ALL`]; a namespace registered for an
/// older qflows lacks them), with their type names.
pub const OPTIONAL: [(&str, &str); 1] = [("QflowsGateProfile", "Keyword")];

/// The updates describing a set of image results; `with_profile`: also [`GATE_PROFILE`] (the
/// `registry/repository` of an image reference as results show it (`host/repo:tag`,
/// `host/repo@sha256:…`): the digest and the tag (a `:` after the last `/`) dropped.
pub fn repository_of(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or_default();
    match without_digest.rfind(':') {
        Some(i) if i > without_digest.rfind('/').unwrap_or(0) => without_digest[..i].to_string(),
        _ => without_digest.to_string(),
    }
}

/// namespace has it registered).
pub fn updates(
    results: &[ImageResult],
    account: Option<&str>,
    with_profile: bool,
) -> Vec<SearchAttributeUpdate> {
    let mut digests: Vec<String> = results
        .iter()
        .map(|r| r.digest.clone())
        .filter(|d| !d.is_empty())
        .collect();
    digests.dedup();
    let mut repositories: Vec<String> = results.iter().map(|r| repository_of(&r.image)).collect();
    repositories.sort();
    repositories.dedup();
    let worst = results
        .iter()
        .filter_map(|r| r.summary.map(|s| i64::from(s.worst())))
        .max()
        .unwrap_or(0);
    let mut out = vec![
        IMAGE_DIGESTS.value_set(digests),
        REPOSITORIES.value_set(repositories),
        WORST_SEVERITY.value_set(worst),
    ];
    out.extend(verdict(results, with_profile));
    if let Some(account) = account {
        out.push(ACCOUNT.value_set(account.to_string()));
    }
    out
}

/// The verdict attributes of results judged under a gate profile, for a run whose other
/// attributes were set at start: the worst severity, the gate result, the profile.
pub fn verdict_updates(results: &[ImageResult], with_profile: bool) -> Vec<SearchAttributeUpdate> {
    let worst = results
        .iter()
        .filter_map(|r| r.summary.map(|s| i64::from(s.worst())))
        .max()
        .unwrap_or(0);
    let mut out = vec![WORST_SEVERITY.value_set(worst)];
    out.extend(verdict(results, with_profile));
    out
}

/// The worst verdict and the profile(s) that produced it.
fn verdict(results: &[ImageResult], with_profile: bool) -> Vec<SearchAttributeUpdate> {
    let mut out = Vec::new();
    if let Some(verdict) = results.iter().filter_map(|r| r.verdict).max() {
        let text = match verdict {
            Verdict::Pass => "pass",
            Verdict::Audit => "audit",
            Verdict::Fail => "fail",
        };
        out.push(GATE_RESULT.value_set(text.to_string()));
    }
    if !with_profile {
        return out;
    }
    // The profile of the worst verdict (a deployment's images may match different ones).
    let worst = results
        .iter()
        .filter(|r| r.profile.is_some())
        .rev()
        .max_by_key(|r| r.verdict);
    if let Some(profile) = worst.and_then(|r| r.profile.clone()) {
        out.push(GATE_PROFILE.value_set(profile));
    }
    out
}

/// The attributes a deploy event gives its `ScanOnDeploy` when it is started (free, where an
/// upsert is a billed action): the digests the event names, their repositories, the account.
/// `None` when the event names no digest (they are known only once resolved).
pub fn at_start(request: &ScanRequest) -> Option<SearchAttributes> {
    let mut digests: Vec<String> = request
        .images
        .iter()
        .filter_map(|i| i.digest.clone())
        .collect();
    if digests.is_empty() {
        return None;
    }
    digests.sort();
    digests.dedup();
    let mut repositories: Vec<String> = request.images.iter().map(|i| i.name()).collect();
    repositories.sort();
    repositories.dedup();
    let mut updates = vec![
        IMAGE_DIGESTS.value_set(digests),
        REPOSITORIES.value_set(repositories),
    ];
    if let Some(account) = &request.account_id {
        updates.push(ACCOUNT.value_set(account.clone()));
    }
    Some(SearchAttributes::new(updates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::model::ImageStatus;

    fn judged(verdict: Verdict, profile: &str) -> ImageResult {
        ImageResult {
            digest: format!("sha256:{profile}"),
            image: format!("r.io/{profile}:1"),
            status: ImageStatus::Scanned,
            verdict: Some(verdict),
            summary: None,
            result_ref: None,
            reason: None,
            backend: None,
            scanned_at: None,
            profile: Some(profile.into()),
        }
    }

    fn names(updates: &[SearchAttributeUpdate]) -> Vec<String> {
        format!("{updates:?}")
            .split('"')
            .filter(|s| s.starts_with("Qflows"))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_profile_attribute_is_set_only_where_registered() {
        let results = [
            judged(Verdict::Pass, "sandbox"),
            judged(Verdict::Fail, "production"),
        ];
        let without = names(&updates(&results, Some("1"), false));
        assert!(
            !without.iter().any(|n| n == "QflowsGateProfile"),
            "{without:?}"
        );
        assert!(
            without.iter().any(|n| n == "QflowsGateResult"),
            "{without:?}"
        );
        let with = updates(&results, Some("1"), true);
        assert!(names(&with).iter().any(|n| n == "QflowsGateProfile"));
        // The profile named is the one that produced the worst verdict.
        // (Debug shows payloads in base64: `"production"` is InByb2R1Y3Rpb24i, `"sandbox"`
        // InNhbmRib3gi.)
        let text = format!("{:?}", verdict_updates(&results, true));
        assert!(
            text.contains("InByb2R1Y3Rpb24i") && !text.contains("InNhbmRib3gi"),
            "{text}"
        );
        assert!(!names(&verdict_updates(&results, false)).contains(&"QflowsGateProfile".into()));
        // Registration: the optional attribute is not among the required ones.
        assert!(!ALL.iter().any(|(n, _)| *n == "QflowsGateProfile"));
        assert!(OPTIONAL.iter().any(|(n, _)| *n == "QflowsGateProfile"));
    }
}
