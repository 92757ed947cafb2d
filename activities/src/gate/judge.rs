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
    /// The verdict (an image without a usable scan gets the profile's `unscanned`).
    pub verdict: Verdict,
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

/// Applies profiles to results.
pub struct Judge {
    profiles: Arc<Profiles>,
    results: ResultsStore,
    cache: Mutex<(HashMap<String, Arc<Findings>>, VecDeque<String>)>,
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
        let mut worst: Option<(Verdict, String)> = None;
        for mut result in request.images {
            let profile = profiles.select(&request.scope, Some(&repository_of(&result.image)));
            let judged = self.judge(profile, &result).await?;
            if worst.as_ref().is_none_or(|(w, _)| judged.verdict > *w) {
                worst = Some((judged.verdict, judged.profile.clone()));
            }
            result.verdict = Some(judged.verdict);
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
    /// `unscanned` verdict — never `pass` unless the profile says so.
    pub async fn judge(
        &self,
        profile: &Profile,
        result: &ImageResult,
    ) -> Result<Judgement, StoreError> {
        let unscanned = |reason: Option<String>| Judgement {
            verdict: profile.unscanned,
            profile: profile.name.clone(),
            enforce: profile.enforce,
            summary: result.summary,
            worst_cves: Vec::new(),
            reason: reason.or_else(|| result.reason.clone()),
        };
        let (ImageStatus::Scanned, Some(result_ref)) = (result.status, &result.result_ref) else {
            return Ok(unscanned(None));
        };
        let Some(findings) = self.findings(result_ref).await? else {
            return Ok(unscanned(Some(
                "the scan's report is no longer in the results store".into(),
            )));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let (mut verdict, summary) =
            evaluate(&profile.gate, findings.gate_items(), findings.secrets, now);
        let mut reason = None;
        if let (Some(days), Some(created_ms)) =
            (profile.max_image_age_days, findings.image_created_ms)
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
        Ok(Judgement {
            verdict,
            profile: profile.name.clone(),
            enforce: profile.enforce,
            summary: Some(summary),
            worst_cves: worst_cves(profile, &findings, now),
            reason,
        })
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

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (HashMap<String, Arc<Findings>>, VecDeque<String>)> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The counted findings' CVEs, worst severity first.
fn worst_cves(profile: &Profile, findings: &Findings, now: u64) -> Vec<String> {
    let mut counted: Vec<&Item> = findings
        .items
        .iter()
        .filter(|i| !(profile.gate.fixable_only && !i.fixable))
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

/// `registry/repository` of an image reference as results show it (`host/repo:tag`,
/// `host/repo@sha256:…`).
pub fn repository_of(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or_default();
    match without_digest.rfind(':') {
        Some(i) if i > without_digest.rfind('/').unwrap_or(0) => without_digest[..i].to_string(),
        _ => without_digest.to_string(),
    }
}

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
        let builtin = Profile::builtin(GatePolicy::default(), None);
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
