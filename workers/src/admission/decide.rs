//! One AdmissionReview → one answer: every image to a digest, the digest's verdict under the
//! profile its scope selects, the profile's `enforce` applied, all within the deadline.
//!
//! An image whose verdict is not known in time (no scan yet, Temporal or the registry slow or
//! down, the report unreadable) gets its profile's `unscanned` verdict: a failure is never a
//! verdict, and never a pass unless the profile says so.

pub use super::decision::Decision;
use super::entities::ResultCache;
use super::metrics::Metrics;
use super::review::{AdmissionRequest, Answer, Kind, MAX_RECORDED_LEN, Subject, printable};
use qflows_activities::gate::judge::{Judge, Judgement, repository_of};
use qflows_activities::gate::profiles::Profile;
use qflows_activities::resolve::{Resolver, resolve_request};
use qflows_workflows::scan::profile::GateScope;
use qflows_workflows::scan::{EventSource, ImageRef, ScanRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One image's outcome.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The image as written in the object (printable, bounded).
    pub image: String,
    /// What was done.
    pub decision: Decision,
    /// The judgement.
    pub judgement: Judgement,
    /// Whether the image had a result (else: the unscanned rule, and why).
    pub unknown_because: Option<String>,
}

/// Decides AdmissionReviews.
pub struct Decider {
    /// Verdicts under profiles.
    pub judge: Arc<Judge>,
    /// Entity results.
    pub cache: Arc<ResultCache>,
    /// Tag → digest (ECR, ACR), as ScanOnDeploy resolves.
    pub resolver: Option<Arc<Resolver>>,
    /// `QFLOWS_KUBERNETES_CLUSTER`.
    pub cluster: Option<String>,
    /// `QFLOWS_ADMISSION_TIMEOUT_MS`.
    pub timeout: Duration,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// Time kept back from the deadline to write the answer.
fn reserve(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_millis(50))
}

impl Decider {
    /// The answer to `request`, within the deadline, counted.
    pub async fn review(&self, request: &AdmissionRequest) -> Answer {
        let started = Instant::now();
        let answer = self.answer(request, started).await;
        self.metrics.latency(started.elapsed());
        answer
    }

    async fn answer(&self, request: &AdmissionRequest, started: Instant) -> Answer {
        let admit = Answer {
            allowed: true,
            ..Default::default()
        };
        let (Some(kind), Some(object)) = (Kind::of(&request.kind), &request.object) else {
            return admit;
        };
        // Status, scale and the like carry no new images; ephemeral containers do.
        if request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty() && s != "ephemeralcontainers")
        {
            return admit;
        }
        let mut subject = Subject::read(kind, request.namespace.as_deref(), object);
        // An update is judged on the images it brings: editing a workload that already runs
        // does not get it refused for an image admitted before.
        if request.operation == "UPDATE"
            && let Some(old) = &request.old_object
        {
            let before = Subject::read(kind, request.namespace.as_deref(), old);
            subject.images.retain(|i| !before.images.contains(i));
            subject
                .images_over_limit
                .retain(|i| !before.images.contains(i));
        }
        if subject.images.is_empty() && subject.images_over_limit.is_empty() {
            return admit;
        }
        let scope = GateScope {
            kubernetes_cluster: self.cluster.clone(),
            namespace: subject.namespace.clone(),
            labels: subject.labels.clone(),
            ..Default::default()
        };
        let deadline =
            tokio::time::Instant::from_std(started + self.timeout - reserve(self.timeout));
        let break_glass = subject.break_glass.is_some();
        let profiles = self.judge.profiles();
        let mut judged: Vec<Judged> =
            futures::future::join_all(subject.images.iter().map(|image| {
                let profile = profiles.select(&scope, Some(&repository(image)));
                async move {
                    let timeout_ms = self.timeout.as_millis();
                    let outcome =
                        tokio::time::timeout_at(deadline, self.judge_image(profile, image))
                            .await
                            .unwrap_or_else(|_| Err(format!("no verdict within {timeout_ms} ms")));
                    judged_image(image, profile, outcome, break_glass)
                }
            }))
            .await;
        for image in &subject.images_over_limit {
            let profile = profiles.select(&scope, Some(&repository(image)));
            judged.push(judged_image(
                image,
                profile,
                Err("more images than the webhook judges per object".into()),
                break_glass,
            ));
        }
        self.record(request, &subject, &judged);
        answer_of(&judged)
    }

    /// The image's judgement, or why there is none.
    async fn judge_image(&self, profile: &Profile, image: &str) -> Result<Judgement, String> {
        let reference = ImageRef::parse(image).map_err(|e| e.to_string())?;
        let digest = match &reference.digest {
            Some(d) => d.clone(),
            None => self.resolve(&reference).await?,
        };
        let (result, _) = self.cache.result(&reference, &digest).await?;
        let Some(result) = result else {
            return Err("not scanned yet (its scan has been started)".into());
        };
        self.judge
            .judge(profile, &result)
            .await
            .map_err(|e| format!("the scan's report could not be read: {e}"))
    }

    async fn resolve(&self, reference: &ImageRef) -> Result<String, String> {
        let Some(resolver) = &self.resolver else {
            return Err("a tag, and no registry access to resolve it".into());
        };
        let request = ScanRequest {
            source: EventSource::Manual,
            event_id: None,
            account_id: None,
            region: None,
            images: vec![reference.clone()],
            task_definition: None,
            service: None,
            cluster: None,
            azure_resource: None,
        };
        let resolved = resolve_request(resolver, &request)
            .await
            .map_err(|e| format!("the tag could not be resolved: {e}"))?;
        resolved
            .into_iter()
            .next()
            .and_then(|r| r.digest.ok_or(r.skipped.unwrap_or_default()).ok())
            .ok_or_else(|| {
                "a tag qflows cannot resolve to a digest (only ECR and ACR tags are; use \
                 image@sha256:…)"
                    .into()
            })
    }

    fn record(&self, request: &AdmissionRequest, subject: &Subject, judged: &[Judged]) {
        let namespace = subject.namespace.as_deref().unwrap_or("");
        let name = printable(request.name.as_deref().unwrap_or(""), 253);
        for j in judged {
            self.metrics.decision(j.decision, &j.judgement.profile);
            match j.decision {
                Decision::BreakGlass => tracing::warn!(
                    image = %j.image,
                    profile = %j.judgement.profile,
                    namespace,
                    object = %name,
                    kind = %printable(&request.kind.kind, 64),
                    user = %printable(&request.user_info.username, MAX_RECORDED_LEN),
                    reason = %subject.break_glass.as_deref().unwrap_or(""),
                    "admission: break-glass admitted an image its profile denies"
                ),
                Decision::Allowed => {}
                decision => tracing::info!(
                    image = %j.image,
                    profile = %j.judgement.profile,
                    namespace,
                    object = %name,
                    decision = decision.as_str(),
                    verdict = ?j.judgement.verdict,
                    worst = %j.judgement.worst_cves.join(","),
                    why = j.unknown_because.as_deref().unwrap_or(""),
                    "admission decision"
                ),
            }
        }
    }
}

/// `registry/repository` of a reference as the profiles' repository globs see it.
fn repository(image: &str) -> String {
    match ImageRef::parse(image) {
        Ok(r) => format!("{}/{}", r.registry, r.repository),
        Err(_) => repository_of(image),
    }
}

fn judged_image(
    image: &str,
    profile: &Profile,
    outcome: Result<Judgement, String>,
    break_glass: bool,
) -> Judged {
    let image = printable(image, 200);
    let (judgement, unknown_because) = match outcome {
        Ok(j) => {
            // A result that was not a scan (skipped, failed, timed out) is judged as unscanned
            // by the profile already; say so.
            let unknown = (j.summary.is_none() && j.verdict == profile.unscanned)
                .then(|| j.reason.clone().unwrap_or_else(|| "no usable scan".into()));
            (j, unknown)
        }
        Err(why) => (
            Judgement {
                verdict: profile.unscanned,
                profile: profile.name.clone(),
                enforce: profile.enforce,
                summary: None,
                worst_cves: Vec::new(),
                reason: Some(why.clone()),
            },
            Some(why),
        ),
    };
    let decision = Decision::of(
        judgement.verdict,
        judgement.enforce,
        unknown_because.is_none(),
        break_glass,
    );
    Judged {
        image,
        decision,
        judgement,
        unknown_because,
    }
}

/// Why an image fails, for messages: counts and the worst CVEs, or why it has no verdict.
fn failure_text(j: &Judged) -> String {
    let profile = &j.judgement.profile;
    if let Some(why) = &j.unknown_because {
        return format!(
            "image {} has no verdict ({}) and gate profile `{profile}` treats unscanned images \
             as {:?}",
            j.image,
            printable(why, 200),
            j.judgement.verdict
        );
    }
    let mut text = format!("image {} fails gate profile `{profile}`", j.image);
    if let Some(s) = &j.judgement.summary {
        text.push_str(&format!(
            ": {} critical, {} high, {} medium",
            s.critical, s.high, s.medium
        ));
        if s.secrets > 0 {
            text.push_str(&format!(", {} secrets", s.secrets));
        }
    }
    if !j.judgement.worst_cves.is_empty() {
        text.push_str(&format!("; worst: {}", j.judgement.worst_cves.join(", ")));
    }
    if let Some(reason) = &j.judgement.reason {
        text.push_str(&format!("; {}", printable(reason, 200)));
    }
    text
}

/// The answer for the judged images: refused when any is denied.
fn answer_of(judged: &[Judged]) -> Answer {
    let denied: Vec<String> = judged
        .iter()
        .filter(|j| j.decision == Decision::Denied)
        .map(failure_text)
        .collect();
    let warnings: Vec<String> = judged
        .iter()
        .filter_map(|j| match j.decision {
            Decision::Warned => Some(format!("qflows: {}", failure_text(j))),
            Decision::BreakGlass => Some(format!(
                "qflows: break-glass admitted a denied image, recorded: {}",
                failure_text(j)
            )),
            _ => None,
        })
        .collect();
    if denied.is_empty() {
        return Answer {
            allowed: true,
            message: None,
            warnings,
        };
    }
    let message = format!(
        "qflows admission: {}. To admit it anyway (recorded and alerted), annotate the object \
         with qflows.io/break-glass: \"<reason>\"",
        denied.join("; ")
    );
    Answer {
        allowed: false,
        message: Some(printable(
            &message,
            4 * MAX_RECORDED_LEN * denied.len().min(8),
        )),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qflows_workflows::scan::model::Verdict;
    use qflows_workflows::scan::profile::Enforce;

    #[test]
    fn decisions_follow_verdict_enforce_and_break_glass() {
        use Decision::*;
        use Enforce::{Audit as A, Deny as D, Warn as W};
        use Verdict::{Audit, Fail, Pass};
        let cases = [
            ((Fail, D, true, false), Denied),
            ((Fail, D, true, true), BreakGlass),
            ((Fail, W, true, true), Warned),
            ((Fail, A, true, false), Audited),
            ((Pass, D, true, false), Allowed),
            ((Audit, D, true, false), Audited),
            ((Pass, D, false, false), Unscanned),
            ((Audit, D, false, false), Unscanned),
            ((Fail, D, false, false), Denied),
            ((Fail, D, false, true), BreakGlass),
        ];
        for ((verdict, enforce, known, bg), want) in cases {
            assert_eq!(
                Decision::of(Some(verdict), enforce, known, bg),
                want,
                "{verdict:?} {enforce:?} {known} {bg}"
            );
        }
    }

    fn profile(enforce: Enforce, unscanned: Verdict) -> Profile {
        let mut p = Profile::builtin(
            qflows_activities::gate::GatePolicy::default(),
            Some(unscanned),
        );
        p.name = "production".into();
        p.enforce = enforce;
        p
    }

    #[test]
    fn a_denial_names_the_image_the_profile_and_the_worst_cves() {
        let p = profile(Enforce::Deny, Verdict::Audit);
        let failing = Judgement {
            verdict: Some(Verdict::Fail),
            profile: "production".into(),
            enforce: Enforce::Deny,
            summary: Some(Default::default()),
            worst_cves: vec!["CVE-2026-1".into(), "CVE-2026-2".into()],
            reason: None,
        };
        let j = judged_image("r.example/web:1", &p, Ok(failing), false);
        assert_eq!(j.decision, Decision::Denied);
        let answer = answer_of(&[j]);
        assert!(!answer.allowed);
        let message = answer.message.unwrap();
        for part in [
            "r.example/web:1",
            "`production`",
            "CVE-2026-1, CVE-2026-2",
            "qflows.io/break-glass",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }

        // No verdict in time: the unscanned rule, `audit` here, admits.
        let j = judged_image(
            "r.example/web:2",
            &p,
            Err("no verdict within 2000 ms".into()),
            false,
        );
        assert_eq!(j.decision, Decision::Unscanned);
        assert!(answer_of(&[j]).allowed);
        // … and `fail` under `deny` refuses, saying why.
        let strict = profile(Enforce::Deny, Verdict::Fail);
        let j = judged_image(
            "r.example/web:3",
            &strict,
            Err("no verdict within 2000 ms".into()),
            false,
        );
        let answer = answer_of(&[j]);
        assert!(!answer.allowed);
        assert!(
            answer
                .message
                .unwrap()
                .contains("no verdict within 2000 ms")
        );
    }

    #[test]
    fn repositories_are_registry_and_path() {
        assert_eq!(repository("nginx:1"), "docker.io/library/nginx");
        assert_eq!(
            repository(
                "r.example:5000/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            ),
            "r.example:5000/a/b"
        );
    }
}
