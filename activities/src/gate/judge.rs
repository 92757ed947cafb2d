//! Verdicts under a gate profile, from the stored reports.
//!
//! An `ImageScan` entity keeps a summary and a reference to the full report; the findings the
//! gate needs (severity, CVEs, whether a fix exists) are read back from that report, so a
//! deployment in production and one in a sandbox get their own verdicts from one scan, and a
//! changed profiles file applies to the next verdict without a rescan. Reports never change
//! once written (their key holds the scan time), so their findings are cached in memory.

use super::profiles::{GateProfiles, Profile, ProfilesFile};
use super::{GateItem, evaluate};
use crate::results::{ResultsStore, StoreError};
use qflows_workflows::scan::model::{ImageResult, ImageStatus, SeveritySummary, Verdict};
use qflows_workflows::scan::profile::{Enforce, JudgeImages, Judged};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Reports whose findings are kept in memory.
const CACHED_REPORTS: usize = 2048;

/// How many of the worst CVEs a judgement names.
const WORST_NAMED: usize = 3;

/// Where the profiles come from.
#[derive(Debug)]
pub enum Profiles {
    /// Only the built-in `default` (no `QFLOWS_GATE_PROFILES_FILE`).
    Builtin(Arc<GateProfiles>),
    /// A file, re-read when it changes.
    File(ProfilesFile),
}

impl Profiles {
    /// The profiles now.
    pub fn current(&self) -> Arc<GateProfiles> {
        match self {
            Profiles::Builtin(p) => p.clone(),
            Profiles::File(f) => f.current(),
        }
    }

    /// Whether a profiles file is configured.
    pub fn from_file(&self) -> bool {
        matches!(self, Profiles::File(_))
    }
}

/// One image's verdict under one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The verdict (an image without a usable scan gets the profile's `unscanned`; `None`
    /// only when that is `none`, as `QFLOWS_GATE_UNSCANNED=none` makes `default`'s).
    pub verdict: Option<Verdict>,
    /// The profile's name.
    pub profile: String,
    /// What the profile does with a failing image.
    pub enforce: Enforce,
    /// Counts as the profile counts them (fixable only, allowlist applied).
    pub summary: Option<SeveritySummary>,
    /// The worst counted CVEs, worst first (for messages).
    pub worst_cves: Vec<String>,
    /// Why the verdict is what it is, when it is not just the counts.
    pub reason: Option<String>,
}

/// The findings of one report, as the gate reads them.
#[derive(Debug, Default)]
struct Findings {
    items: Vec<Item>,
    secrets: u64,
    image_created_ms: Option<u64>,
    /// Qualys' central policy verdict of a QScanner `evaluate-policy` run (`DENY`, `AUDIT`).
    policy: Option<String>,
    /// Why the report cannot be re-judged (no `vulnerabilities` list, or QScanner could not
    /// fetch its report): then its findings say nothing, and an empty list is not a pass.
    unusable: Option<&'static str>,
}

#[derive(Debug)]
struct Item {
    severity: u8,
    cves: Vec<String>,
    fixable: bool,
}

impl Findings {
    /// From a report as `scan.Collect` or `qscanner.Scan` stored it.
    fn read(report: &Value) -> Findings {
        let qscanner = report["backend"] == "qscanner";
        let unusable = if !report["vulnerabilities"].is_array() {
            Some("the stored report has no vulnerability list")
        } else if report["reportAvailable"] == false {
            Some("QScanner could not fetch the vulnerability report (exit 40)")
        } else {
            None
        };
        let non_empty = |v: &Value| v.as_str().is_some_and(|s| !s.trim().is_empty());
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let items = report["vulnerabilities"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|v| {
                let severity = v["severity"]
                    .as_u64()
                    .map(|s| s.clamp(1, 5) as u8)
                    .unwrap_or(1);
                if qscanner {
                    Item {
                        severity,
                        cves: strings(&v["cves"]),
                        fixable: v["packages"]
                            .as_array()
                            .is_some_and(|p| p.iter().any(|p| non_empty(&p["fixed"]))),
                    }
                } else {
                    Item {
                        severity,
                        cves: strings(&v["cveIds"]),
                        fixable: non_empty(&v["fixedVersion"]),
                    }
                }
            })
            .collect();
        Findings {
            items,
            secrets: report["secrets"].as_array().map_or(0, |s| s.len() as u64),
            image_created_ms: report["imageCreatedMs"].as_u64(),
            policy: report["policy"].as_str().map(str::to_string),
            unusable,
        }
    }

    fn gate_items(&self) -> impl Iterator<Item = GateItem<'_>> {
        self.items.iter().map(|i| GateItem {
            severity: i.severity,
            cves: &i.cves,
            fixable: i.fixable,
        })
    }
}

/// Reports' findings by reference, and the references oldest first (for eviction).
type FindingsCache = (HashMap<String, Arc<Findings>>, VecDeque<String>);

/// Applies profiles to results.
pub struct Judge {
    profiles: Arc<Profiles>,
    results: ResultsStore,
    cache: Mutex<FindingsCache>,
}

impl Judge {
    /// A judge over `profiles`, reading reports from `results`.
    pub fn new(profiles: Arc<Profiles>, results: ResultsStore) -> Self {
        Judge {
            profiles,
            results,
            cache: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// The profiles now.
    pub fn profiles(&self) -> Arc<GateProfiles> {
        self.profiles.current()
    }

    /// Whether a profiles file is configured.
    pub fn has_profiles_file(&self) -> bool {
        self.profiles.from_file()
    }

    /// A deployment's images under its scope's profiles (`gate.Judge`).
    pub async fn judge_images(&self, request: JudgeImages) -> Result<Judged, StoreError> {
        let profiles = self.profiles();
        let mut images = Vec::with_capacity(request.images.len());
        let mut worst: Option<(Option<Verdict>, String)> = None;
        for mut result in request.images {
            let profile = profiles.select(&request.scope, Some(&repository_of(&result.image)));
            let judged = self.judge(profile, &result).await?;
            if worst.as_ref().is_none_or(|(w, _)| judged.verdict > *w) {
                worst = Some((judged.verdict, judged.profile.clone()));
            }
            result.verdict = judged.verdict;
            if judged.summary.is_some() {
                result.summary = judged.summary;
            }
            if judged.reason.is_some() {
                result.reason = judged.reason;
            }
            result.profile = Some(judged.profile);
            images.push(result);
        }
        let profile = worst
            .map(|(_, p)| p)
            .unwrap_or_else(|| profiles.select(&request.scope, None).name.clone());
        Ok(Judged { profile, images })
    }

    /// One result under one profile. An image without a usable scan gets the profile's
    /// `unscanned` verdict — never `pass` unless the profile says so. A scanned image whose
    /// report cannot be re-read keeps its entity's verdict when that is worse: what cannot be
    /// re-judged is never made more lenient.
    pub async fn judge(
        &self,
        profile: &Profile,
        result: &ImageResult,
    ) -> Result<Judgement, StoreError> {
        let unscanned = |reason: Option<String>| {
            let kept = match result.status {
                ImageStatus::Scanned => result.verdict,
                _ => None,
            };
            Judgement {
                verdict: profile.unscanned.max(kept),
                profile: profile.name.clone(),
                enforce: profile.enforce,
                summary: result.summary,
                worst_cves: Vec::new(),
                reason: reason.or_else(|| result.reason.clone()),
            }
        };
        if result.status != ImageStatus::Scanned {
            return Ok(unscanned(None));
        }
        let Some(result_ref) = &result.result_ref else {
            return Ok(unscanned(Some("the scan names no stored report".into())));
        };
        let Some(findings) = self.findings(result_ref).await? else {
            return Ok(unscanned(Some(
                "the scan's report is no longer in the results store".into(),
            )));
        };
        if let Some(why) = findings.unusable {
            return Ok(unscanned(Some(why.into())));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(judge_findings(profile, &findings, now))
    }

    async fn findings(&self, result_ref: &str) -> Result<Option<Arc<Findings>>, StoreError> {
        if let Some(found) = self.lock().0.get(result_ref) {
            return Ok(Some(found.clone()));
        }
        let Some(report) = self.results.read_report(result_ref).await? else {
            return Ok(None);
        };
        let findings = Arc::new(Findings::read(&report));
        let mut cache = self.lock();
        let (map, order) = &mut *cache;
        if map
            .insert(result_ref.to_string(), findings.clone())
            .is_none()
        {
            order.push_back(result_ref.to_string());
        }
        while order.len() > CACHED_REPORTS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        Ok(Some(findings))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FindingsCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A report's findings under `profile` at `now` (Unix seconds).
fn judge_findings(profile: &Profile, findings: &Findings, now: u64) -> Judgement {
    let (mut verdict, summary) =
        evaluate(&profile.gate, findings.gate_items(), findings.secrets, now);
    let mut reason = None;
    // As `qscanner.Scan` decided: Qualys' central policy has the last word.
    match findings.policy.as_deref() {
        Some("DENY") => {
            verdict = Verdict::Fail;
            reason = Some("Qualys' central policy denies the image".to_string());
        }
        Some("AUDIT") if verdict == Verdict::Pass => verdict = Verdict::Audit,
        _ => {}
    }
    if let (Some(days), Some(created_ms)) = (profile.max_image_age_days, findings.image_created_ms)
    {
        let age_days = now.saturating_sub(created_ms / 1000) / 86_400;
        if age_days > u64::from(days) {
            verdict = Verdict::Fail;
            reason = Some(format!(
                "built {age_days} days ago; profile `{}` allows {days}",
                profile.name
            ));
        }
    }
    Judgement {
        verdict: Some(verdict),
        profile: profile.name.clone(),
        enforce: profile.enforce,
        summary: Some(summary),
        worst_cves: worst_cves(profile, findings, now),
        reason,
    }
}

/// The counted findings' CVEs, worst severity first.
fn worst_cves(profile: &Profile, findings: &Findings, now: u64) -> Vec<String> {
    let mut counted: Vec<&Item> = findings
        .items
        .iter()
        .filter(|i| !profile.gate.fixable_only || i.fixable)
        .filter(|i| {
            let item = GateItem {
                severity: i.severity,
                cves: &i.cves,
                fixable: i.fixable,
            };
            !super::allowed(&profile.gate, &item, now)
        })
        .collect();
    counted.sort_by_key(|i| std::cmp::Reverse(i.severity));
    let mut out: Vec<String> = Vec::new();
    for cve in counted.iter().flat_map(|i| i.cves.iter()) {
        if !out.contains(cve) {
            out.push(cve.clone());
        }
        if out.len() == WORST_NAMED {
            break;
        }
    }
    out
}

pub use qflows_workflows::scan::search::repository_of;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::GatePolicy;
    use crate::results::LocalResults;
    use qflows_workflows::scan::profile::GateScope;
    use serde_json::json;

    const PROFILES: &str = r#"
profiles:
  production: { failSeverity: 4, enforce: deny, unscanned: fail }
  sandbox: { failSeverity: 0, failOnSecrets: false, enforce: audit }
selectors:
  - { profile: production, match: { ecsCluster: prod } }
  - { profile: sandbox, match: { ecsCluster: sandbox } }
"#;

    fn report(dir: &std::path::Path) -> String {
        let path = dir.join("report.json");
        std::fs::write(
            &path,
            json!({
                "backend": "registry",
                "vulnerabilities": [
                    {"qid": 1, "severity": 4, "cveIds": ["CVE-2024-0001"], "fixedVersion": "1.2"},
                    {"qid": 2, "severity": 2, "cveIds": ["CVE-2024-0002"]},
                ],
            })
            .to_string(),
        )
        .unwrap();
        path.display().to_string()
    }

    fn judge(dir: &std::path::Path) -> Judge {
        let builtin = Profile::builtin(GatePolicy::default(), Some(Verdict::Audit));
        let profiles = GateProfiles::parse(PROFILES, "p.yaml", builtin).unwrap();
        Judge::new(
            Arc::new(Profiles::Builtin(Arc::new(profiles))),
            ResultsStore::Local(LocalResults::new(dir)),
        )
    }

    fn scanned(result_ref: Option<String>) -> ImageResult {
        ImageResult {
            digest: "sha256:aa".into(),
            image: "r.io/web:1".into(),
            status: ImageStatus::Scanned,
            verdict: Some(Verdict::Pass),
            summary: None,
            result_ref,
            reason: None,
            backend: Some("registry".into()),
            scanned_at: None,
            profile: None,
        }
    }

    fn in_cluster(cluster: &str, images: Vec<ImageResult>) -> JudgeImages {
        JudgeImages {
            scope: GateScope {
                ecs_cluster: Some(cluster.into()),
                ..GateScope::default()
            },
            images,
        }
    }

    #[tokio::test]
    async fn the_same_findings_pass_in_sandbox_and_fail_in_production() {
        let dir = std::env::temp_dir().join(format!("qflows-judge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let judge = judge(&dir);
        let result = scanned(Some(report(&dir)));
        let prod = judge
            .judge_images(in_cluster("prod", vec![result.clone()]))
            .await
            .unwrap();
        assert_eq!(prod.profile, "production");
        assert_eq!(prod.images[0].verdict, Some(Verdict::Fail));
        assert_eq!(prod.images[0].profile.as_deref(), Some("production"));
        let sandbox = judge
            .judge_images(in_cluster("sandbox", vec![result.clone()]))
            .await
            .unwrap();
        assert_eq!(sandbox.images[0].verdict, Some(Verdict::Pass));
        let other = judge
            .judge_images(in_cluster("dev", vec![result]))
            .await
            .unwrap();
        assert_eq!(
            (other.profile.as_str(), other.images[0].verdict),
            ("default", Some(Verdict::Pass)),
            "default fails on critical only"
        );
        let profiles = judge.profiles();
        let named = judge
            .judge(
                profiles.get("production").unwrap(),
                &scanned(Some(dir.join("report.json").display().to_string())),
            )
            .await
            .unwrap();
        assert_eq!(named.worst_cves, vec!["CVE-2024-0001", "CVE-2024-0002"]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn no_report_or_no_scan_is_the_profiles_unscanned_verdict_never_pass() {
        let dir = std::env::temp_dir().join(format!("qflows-judge-gone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let judge = judge(&dir);
        let gone = scanned(Some(dir.join("gone.json").display().to_string()));
        let prod = judge
            .judge_images(in_cluster("prod", vec![gone.clone()]))
            .await
            .unwrap();
        assert_eq!(prod.images[0].verdict, Some(Verdict::Fail));
        // A lenient profile cannot re-judge it either: the entity's `fail` stays.
        let failed_gone = ImageResult {
            verdict: Some(Verdict::Fail),
            ..gone.clone()
        };
        let sandbox = judge
            .judge_images(in_cluster("sandbox", vec![failed_gone.clone()]))
            .await
            .unwrap();
        assert_eq!(sandbox.images[0].verdict, Some(Verdict::Fail));
        let no_ref = ImageResult {
            result_ref: None,
            ..failed_gone
        };
        let sandbox = judge
            .judge_images(in_cluster("sandbox", vec![no_ref]))
            .await
            .unwrap();
        assert_eq!(sandbox.images[0].verdict, Some(Verdict::Fail));
        let timed_out = ImageResult {
            status: ImageStatus::TimedOut,
            verdict: None,
            result_ref: None,
            ..gone
        };
        let dev = judge
            .judge_images(in_cluster("dev", vec![timed_out]))
            .await
            .unwrap();
        assert_eq!(dev.images[0].verdict, Some(Verdict::Audit));
        // A reference outside the store is refused, not read.
        let outside = scanned(Some("/etc/passwd".into()));
        assert!(
            judge
                .judge_images(in_cluster("prod", vec![outside]))
                .await
                .is_err()
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_qscanner_deny_or_a_missing_report_is_never_a_pass() {
        let dir = std::env::temp_dir().join(format!("qflows-judge-qs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let judge = judge(&dir);
        let write = |name: &str, report: Value| {
            let path = dir.join(name);
            std::fs::write(&path, report.to_string()).unwrap();
            scanned(Some(path.display().to_string()))
        };
        // No vulnerability above sandbox's (disabled) threshold, but Qualys' policy denies.
        let denied = write(
            "denied.json",
            json!({"backend": "qscanner", "policy": "DENY", "reportAvailable": true,
                   "vulnerabilities": [], "secrets": []}),
        );
        let audited = write(
            "audited.json",
            json!({"backend": "qscanner", "policy": "AUDIT", "reportAvailable": true,
                   "vulnerabilities": [], "secrets": []}),
        );
        // Exit 40: the empty list says nothing.
        let unfetched = write(
            "unfetched.json",
            json!({"backend": "qscanner", "reportAvailable": false,
                   "vulnerabilities": [], "secrets": []}),
        );
        let shapeless = write("shapeless.json", json!({"backend": "registry"}));
        let judged = judge
            .judge_images(in_cluster(
                "sandbox",
                vec![denied, audited, unfetched, shapeless],
            ))
            .await
            .unwrap();
        let verdicts: Vec<_> = judged.images.iter().map(|i| i.verdict).collect();
        assert_eq!(
            verdicts,
            vec![
                Some(Verdict::Fail),
                Some(Verdict::Audit),
                Some(Verdict::Audit),
                Some(Verdict::Audit)
            ],
            "{judged:?}"
        );
        assert!(
            judged.images[2]
                .reason
                .as_deref()
                .unwrap()
                .contains("exit 40"),
            "{judged:?}"
        );
        assert_eq!(judged.profile, "sandbox");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn unscanned_none_gives_no_verdict() {
        let dir = std::env::temp_dir().join(format!("qflows-judge-none-{}", std::process::id()));
        let profiles = GateProfiles::builtin(Profile::builtin(GatePolicy::default(), None));
        let judge = Judge::new(
            Arc::new(Profiles::Builtin(Arc::new(profiles))),
            ResultsStore::Local(LocalResults::new(&dir)),
        );
        let failed = ImageResult {
            status: ImageStatus::Failed,
            verdict: None,
            result_ref: None,
            ..scanned(None)
        };
        let judged = judge
            .judge_images(in_cluster("any", vec![failed]))
            .await
            .unwrap();
        assert_eq!(
            (judged.profile.as_str(), judged.images[0].verdict),
            ("default", None)
        );
    }

    #[test]
    fn max_image_age_days_fails_an_old_image_and_only_when_its_age_is_known() {
        const DAY_MS: u64 = 86_400_000;
        let now = 1_800_000_000u64;
        let profile = Profile {
            max_image_age_days: Some(30),
            ..Profile::builtin(GatePolicy::default(), Some(Verdict::Audit))
        };
        let aged = |days: u64| Findings {
            image_created_ms: Some(now * 1000 - days * DAY_MS),
            ..Findings::default()
        };
        let old = judge_findings(&profile, &aged(31), now);
        assert_eq!(old.verdict, Some(Verdict::Fail));
        assert_eq!(
            old.reason.as_deref(),
            Some("built 31 days ago; profile `default` allows 30")
        );
        // 30 full days is still within 30.
        assert_eq!(
            judge_findings(&profile, &aged(30), now).verdict,
            Some(Verdict::Pass)
        );
        // Built "in the future" (clock skew) is age 0, not a wrap-around.
        let future = Findings {
            image_created_ms: Some((now + 86_400) * 1000),
            ..Findings::default()
        };
        assert_eq!(
            judge_findings(&profile, &future, now).verdict,
            Some(Verdict::Pass)
        );
        // Unknown build time: the rule does not apply.
        assert_eq!(
            judge_findings(&profile, &Findings::default(), now).verdict,
            Some(Verdict::Pass)
        );
        // No limit in the profile: any age passes.
        let unlimited = Profile {
            max_image_age_days: None,
            ..profile
        };
        assert_eq!(
            judge_findings(&unlimited, &aged(3650), now).verdict,
            Some(Verdict::Pass)
        );
        // The report field as `scan.Collect` writes it.
        let read = Findings::read(&json!({"vulnerabilities": [], "imageCreatedMs": 5u64}));
        assert_eq!((read.image_created_ms, read.unusable), (Some(5), None));
    }

    #[test]
    fn qscanner_reports_and_image_age() {
        let report = json!({
            "backend": "qscanner",
            "imageCreatedMs": 1_000u64,
            "vulnerabilities": [{"qid": 1, "severity": 5, "cves": ["CVE-2024-0009"],
                                  "packages": [{"name": "libc", "fixed": "2.1"}]}],
            "secrets": [{"ruleId": "aws"}],
        });
        let f = Findings::read(&report);
        assert_eq!(f.items.len(), 1);
        assert!(f.items[0].fixable);
        assert_eq!((f.secrets, f.image_created_ms), (1, Some(1000)));
        assert_eq!(repository_of("r.io:5000/a/b:1@sha256:00"), "r.io:5000/a/b");
        assert_eq!(repository_of("r.io:5000/a/b"), "r.io:5000/a/b");
    }
}
