//! What an `ImageScan` entity knows about its digest, and the rules that pick its next step.
//!
//! Plain data and pure functions (no Temporal calls), so each rule is unit-tested here, and the
//! whole state crosses continue-as-new as the next run's input ([`ImageScanInput::carried`]).
//! Everything in it is bounded: references (at most [`MAX_REFERENCES`]), waiting deployments
//! (one workflow ID each, answered within the run that received them or carried), and a few
//! numbers.
//!
//! [`ImageScanInput::carried`]: crate::scan::image_scan::input::ImageScanInput::carried

use crate::inventory::RunningAt;
use crate::scan::model::{
    DeployedAt, ImageResult, ImageStatus, NotifyReason, NotifyRequest, ScanSettings, Verdict,
    notify_reason,
};
use crate::scan::{ImageRef, RegistryKind};
use serde::{Deserialize, Serialize};

/// At most this many references are kept per digest (the most recently deployed).
pub const MAX_REFERENCES: usize = 16;

/// At most this many scopes are kept where the digest runs (the most recently seen).
pub const MAX_RUNNING_SCOPES: usize = 32;

/// A deployment that arrives within this many seconds of a failed attempt (or within the first
/// retry interval, when that is shorter) is answered with that failure instead of starting
/// another attempt at once; the retry timer still runs.
pub const MIN_ATTEMPT_SPACING_SECS: u64 = 60;

/// The entity's durable state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
// Every field defaults (`Entity::default()`'s value) when absent: older runs carried fewer.
#[serde(rename_all = "camelCase", default)]
pub struct Entity {
    /// References seen for this digest, least recently deployed first.
    pub references: Vec<ImageRef>,
    /// Deployments (their `ScanOnDeploy` workflow IDs) waiting for an answer.
    pub waiting: Vec<String>,
    /// The first deployment since the last scan: where an alert says the image runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_deployment: Option<DeployedAt>,
    /// Deployments since the current scan attempt began.
    pub deployments: u64,
    /// When the last deployment arrived (seconds since the epoch, workflow time).
    pub last_deployed_secs: u64,
    /// The result deployments are answered with: the latest completed scan, or, while there
    /// has been none, the latest failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<ImageResult>,
    /// The verdict of the last completed scan (failures never change it), for verdict-change
    /// alerts; read from the results store when the entity first starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<Verdict>,
    /// Whether `last_verdict` has been read from the results store.
    pub verdict_loaded: bool,
    /// Failed, timed-out or skipped attempts in a row.
    pub failures: u32,
    /// Why the current failure streak failed (the last attempt's reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Whether the current failure streak was alerted (one alert per streak).
    pub failure_alerted: bool,
    /// While failing: when to try again (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at_secs: Option<u64>,
    /// Until when the latest completed scan counts as fresh (its TTL).
    pub fresh_until_secs: u64,
    /// How long a result stays fresh (from the last settings read).
    pub ttl_secs: u64,
    /// When the last attempt ended.
    pub last_attempt_secs: u64,
    /// When a registry scan was last submitted (a retry leaves it a scan timeout to finish).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_submitted_secs: Option<u64>,
    /// A rescan was asked for (the reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescan: Option<String>,
    /// Qualys' `lastScanned` of the latest registry scan: a rescan waits for a newer one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualys_scanned_ms: Option<u64>,
    /// A scan attempt that was under way when the previous run continued as new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    /// When the deploy event that started the entity reached Temporal; only the first scan
    /// reports its event→submitted latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_accepted_at_ms: Option<u64>,
    /// Scan attempts so far, over every run.
    pub attempts: u64,
    /// Runs so far (this one included).
    pub runs: u64,
    /// Alerts started so far.
    pub alerts: u64,
    /// The settings of the last attempt (used if the worker cannot be asked for them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<ScanSettings>,
    /// Where inventories last saw the digest running, one entry per scope (at most
    /// [`MAX_RUNNING_SCOPES`]): while one is current the entity stays alive and rescans every
    /// `rescan_running_secs`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<RunningAt>,
    /// Started by an inventory and never deployed since: its scans run on the rescan queue
    /// (a backfill never delays the scans deployments wait for).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

/// A scan attempt under way across continue-as-new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "backend")]
pub enum InFlight {
    /// A registry scan was submitted: the next run waits for it without submitting again.
    Registry {
        /// The reference the schedule selected.
        reference: ImageRef,
        /// When it was submitted (seconds since the epoch): the scan timeout counts from here.
        submitted_secs: u64,
        /// Only a Qualys scan finished after this counts (a rescan).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        newer_than_ms: Option<u64>,
        /// Someone is waiting for it (it runs on the deploy-time queue).
        urgent: bool,
    },
    /// A QScanner run was interrupted: the next run starts it again.
    QScanner {
        /// It was a rescan.
        forced: bool,
        /// Someone is waiting for it.
        urgent: bool,
    },
}

/// What the entity does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Scan the digest. `forced`: the result on hand is not enough (a rescan asks Qualys for
    /// a new scan); `urgent`: deployments wait for it (deploy-time queue, not the rescan queue).
    Scan {
        /// A rescan (submit anew, wait for a newer Qualys scan).
        forced: bool,
        /// Deployments are waiting.
        urgent: bool,
    },
    /// Resume the attempt the previous run left under way.
    Resume,
    /// Answer the waiting deployments with the result on hand.
    Answer,
    /// Nothing to do before this time (seconds since the epoch), unless a signal arrives.
    Wait {
        /// When to look again.
        until_secs: u64,
    },
    /// Nobody deployed the image for a whole TTL: the entity ends.
    End,
}

// `Entity::resume`, which reads the `ImageScanInput` that carries this state, is in `input.rs`.
impl Entity {
    /// Whether a completed scan is on hand (not only a failure).
    pub fn has_verdict(&self) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|r| r.status == ImageStatus::Scanned)
    }

    /// An inventory saw the digest running: keep where (one entry per scope, the newest).
    pub fn seen_running(&mut self, at: RunningAt) {
        self.running.retain(|r| r.scope_id != at.scope_id);
        self.running.push(at);
        if self.running.len() > MAX_RUNNING_SCOPES {
            self.running.sort_by_key(|r| r.seen_secs);
            self.running.remove(0);
        }
    }

    /// Whether an inventory saw the digest running recently enough to count (the latest time
    /// one still counts, if any).
    pub fn running_until(&self, now_secs: u64) -> Option<u64> {
        self.running
            .iter()
            .map(|r| r.until_secs)
            .filter(|until| *until > now_secs)
            .max()
    }

    /// Where it runs, for an alert: `<scope>: <place>` for a sample of current places.
    pub fn running_places(&self, now_secs: u64) -> Vec<String> {
        self.running
            .iter()
            .filter(|r| r.until_secs > now_secs)
            .flat_map(|r| r.places.iter().map(move |p| format!("{}: {p}", r.scope_id)))
            .take(crate::inventory::model::MAX_PLACES)
            .collect()
    }

    /// How often a running image is rescanned (from the last settings read).
    fn rescan_running_secs(&self) -> u64 {
        self.settings
            .as_ref()
            .map_or(crate::scan::model::DEFAULT_RESCAN_RUNNING_SECS, |s| {
                s.rescan_running_secs
            })
            .max(1)
    }

    /// A deployment arrived.
    pub fn arrive(&mut self, deployed: DeployedAt, now_secs: u64) {
        self.backfill = false;
        self.deployments += 1;
        self.last_deployed_secs = now_secs;
        if let Some(image) = &deployed.image {
            self.remember(image);
        }
        self.waiting.push(deployed.requester.clone());
        if self.first_deployment.is_none() {
            self.first_deployment = Some(deployed);
        }
    }

    /// Keeps a reference (as the most recent), bounded; references differing only in the digest
    /// part are one reference.
    pub fn remember(&mut self, image: &ImageRef) {
        let same = |r: &ImageRef| {
            r.registry == image.registry && r.repository == image.repository && r.tag == image.tag
        };
        self.references.retain(|r| !same(r));
        self.references.push(image.clone());
        if self.references.len() > MAX_REFERENCES {
            self.references.remove(0);
        }
    }

    /// The most recently deployed reference.
    pub fn reference(&self) -> Option<&ImageRef> {
        self.references.last()
    }

    /// The reference a registry scan selects the image by: a tag ECR says the digest has now
    /// (`ecr_tags`; `None` when ECR could not be asked), preferring the most recently deployed
    /// one; without ECR's word, the most recent reference with a tag. `None`: no tag to scan by.
    pub fn registry_reference(&self, ecr_tags: Option<&[String]>) -> Option<ImageRef> {
        let ecr: Vec<&ImageRef> = self
            .references
            .iter()
            .filter(|r| matches!(r.kind(), RegistryKind::Ecr { .. }))
            .collect();
        let with_tag = |tag: &str, like: &ImageRef| ImageRef {
            tag: Some(tag.to_string()),
            digest: None,
            ..like.clone()
        };
        match ecr_tags {
            Some(tags) => {
                let known = ecr
                    .iter()
                    .rev()
                    .find(|r| r.tag.as_ref().is_some_and(|t| tags.contains(t)));
                match known {
                    Some(r) => Some(with_tag(r.tag.as_deref()?, r)),
                    None => Some(with_tag(tags.first()?, ecr.last()?)),
                }
            }
            None => ecr
                .iter()
                .rev()
                .find_map(|r| Some(with_tag(r.tag.as_deref()?, r))),
        }
    }

    /// What to do next at `now_secs`.
    pub fn next(&self, now_secs: u64) -> Next {
        if self.in_flight.is_some() {
            return Next::Resume;
        }
        let waiting = !self.waiting.is_empty();
        if self.latest.is_none() {
            return Next::Scan {
                forced: false,
                urgent: waiting || !self.backfill,
            };
        }
        if self.rescan.is_some() {
            return Next::Scan {
                forced: true,
                urgent: waiting && !self.has_verdict(),
            };
        }
        if let Some(retry_at) = self.retry_at_secs {
            return self.next_while_failing(now_secs, retry_at, waiting);
        }
        if waiting {
            return Next::Answer;
        }
        self.next_while_holding(now_secs)
    }

    /// [`Entity::next`] while the last attempt failed and a retry is due at `retry_at`.
    fn next_while_failing(&self, now_secs: u64, retry_at: u64, waiting: bool) -> Next {
        // Failing: a real verdict on hand still answers; otherwise a new deployment tries
        // again at once (but not in a tight loop).
        let spacing = self
            .settings
            .as_ref()
            .map_or(MIN_ATTEMPT_SPACING_SECS, |s| {
                s.retry_initial_secs.min(MIN_ATTEMPT_SPACING_SECS)
            });
        if waiting && !self.has_verdict() && now_secs >= self.last_attempt_secs + spacing {
            return Next::Scan {
                forced: false,
                urgent: true,
            };
        }
        if waiting {
            return Next::Answer;
        }
        if now_secs >= retry_at {
            let deployed_lately = now_secs.saturating_sub(self.last_deployed_secs) < self.ttl_secs;
            if !deployed_lately && self.running_until(now_secs).is_none() {
                return Next::End;
            }
            return Next::Scan {
                forced: self.has_verdict(),
                urgent: false,
            };
        }
        Next::Wait {
            until_secs: retry_at,
        }
    }

    /// [`Entity::next`] while a completed scan's result is held and nobody waits: rescan when it
    /// is stale and was deployed meanwhile, or when it is due while running; end when nobody
    /// deploys or runs it; else wait.
    fn next_while_holding(&self, now_secs: u64) -> Next {
        let running_until = self.running_until(now_secs);
        let rescan = Next::Scan {
            forced: true,
            urgent: false,
        };
        if now_secs >= self.fresh_until_secs {
            if self.deployments > 0 {
                return rescan;
            }
            if running_until.is_none() {
                return Next::End;
            }
        }
        // Running somewhere: a rescan every `rescan_running_secs` from the last completed scan,
        // for as long as an inventory keeps seeing it.
        let Some(running_until) = running_until else {
            return Next::Wait {
                until_secs: self.fresh_until_secs,
            };
        };
        let due = self.last_attempt_secs + self.rescan_running_secs();
        if now_secs >= due {
            return rescan;
        }
        let mut until = due.min(running_until);
        if self.fresh_until_secs > now_secs {
            until = until.min(self.fresh_until_secs);
        }
        Next::Wait { until_secs: until }
    }

    /// An attempt begins: deployments and a rescan request count from here.
    pub fn begin_attempt(&mut self, settings: &ScanSettings) {
        self.deployments = 0;
        self.rescan = None;
        self.ttl_secs = settings.ttl_secs;
        self.attempts += 1;
    }

    /// An attempt ended with `result`: keep it, schedule what comes next, and say whether (and
    /// what) to alert. Failures never replace a completed scan's result or verdict; they are
    /// retried with backoff, and alert once per streak.
    pub fn record(
        &mut self,
        result: ImageResult,
        qualys_scanned_ms: Option<u64>,
        settings: &ScanSettings,
        now_secs: u64,
    ) -> Option<NotifyRequest> {
        self.last_attempt_secs = now_secs;
        self.in_flight = None;
        self.event_accepted_at_ms = None;
        let previous = self.last_verdict;
        let deployed = self.first_deployment.take();
        let reason = if result.status == ImageStatus::Scanned {
            self.failures = 0;
            self.failure = None;
            self.failure_alerted = false;
            self.retry_at_secs = None;
            self.fresh_until_secs = now_secs + settings.ttl_secs;
            self.last_verdict = result.verdict.or(previous);
            if qualys_scanned_ms.is_some() {
                self.qualys_scanned_ms = qualys_scanned_ms;
            }
            let reason = notify_reason(&result, previous);
            self.latest = Some(result.clone());
            reason
        } else {
            self.failures = self.failures.saturating_add(1);
            self.failure = result.reason.clone();
            self.retry_at_secs = Some(now_secs + settings.retry_after_secs(self.failures));
            if !self.has_verdict() {
                self.latest = Some(result.clone());
            }
            let reason = notify_reason(&result, previous)
                .filter(|r| *r != NotifyReason::ScanFailed || !self.failure_alerted);
            if reason == Some(NotifyReason::ScanFailed) {
                self.failure_alerted = true;
            }
            reason
        };
        reason.map(|reason| NotifyRequest {
            reason,
            result,
            previous_verdict: previous,
            deployed,
            running: self.running_places(now_secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::EventSource;
    use crate::scan::image_scan::input::ImageScanInput;

    const ECR: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";

    fn image(reference: &str) -> ImageRef {
        ImageRef::parse(reference).unwrap()
    }

    fn settings() -> ScanSettings {
        ScanSettings {
            gate_profiles: false,
            profile_search_attribute: false,
            poll_initial_secs: 10,
            poll_max_secs: 120,
            scan_timeout_secs: 3600,
            ttl_secs: 1000,
            registry_for_ecr: true,
            qscanner_available: false,
            qscanner_timeout_secs: 600,
            search_attributes: false,
            unscanned_verdict: None,
            rescan_task_queue: None,
            qscanner_task_queue: None,
            retry_initial_secs: 300,
            retry_max_secs: 6 * 3600,
            alert_sns: true,
            alert_webhook: true,
            rescan_running_secs: 5000,
            quarantine: None,
        }
    }

    fn input() -> ImageScanInput {
        ImageScanInput {
            digest: format!("sha256:{}", "a".repeat(64)),
            image: image(&format!("{ECR}/app:1.0")),
            event_accepted_at_ms: Some(5),
            carried: None,
            backfill: false,
        }
    }

    fn result(status: ImageStatus, verdict: Option<Verdict>) -> ImageResult {
        ImageResult {
            profile: None,
            digest: input().digest,
            image: input().image.to_string(),
            status,
            verdict,
            summary: None,
            result_ref: None,
            reason: (status != ImageStatus::Scanned).then(|| "Qualys is down".to_string()),
            backend: None,
            scanned_at: None,
        }
    }

    fn deployed(requester: &str, reference: &str) -> DeployedAt {
        DeployedAt {
            requester: requester.into(),
            account_id: None,
            region: None,
            source: EventSource::EcrImagePush,
            image: Some(image(reference)),
        }
    }

    #[test]
    fn a_new_entity_scans_then_answers_then_holds_then_rescans_while_deployed() {
        let s = settings();
        let mut e = Entity::resume(&input(), 100);
        assert_eq!(
            e.next(100),
            Next::Scan {
                forced: false,
                urgent: true
            }
        );
        e.arrive(deployed("d1", &format!("{ECR}/app:1.0")), 100);
        e.begin_attempt(&s);
        assert_eq!(e.deployments, 0);
        let alert = e.record(
            result(ImageStatus::Scanned, Some(Verdict::Pass)),
            Some(7),
            &s,
            110,
        );
        assert_eq!(alert, None, "a first pass is quiet");
        assert_eq!(
            e.event_accepted_at_ms, None,
            "only the first scan reports latency"
        );
        assert_eq!(e.next(110), Next::Answer);
        e.waiting.clear();
        assert_eq!(e.next(110), Next::Wait { until_secs: 1110 });
        // Nobody deployed it during its TTL: it ends.
        assert_eq!(e.next(1110), Next::End);
        // Deployed during the TTL: a forced rescan when it ends, off the deploy-time queue.
        e.arrive(deployed("d2", &format!("{ECR}/app:1.0")), 500);
        e.waiting.clear();
        assert_eq!(
            e.next(1110),
            Next::Scan {
                forced: true,
                urgent: false
            }
        );
    }

    #[test]
    fn failures_answer_at_once_retry_with_backoff_and_alert_once_per_streak() {
        let s = settings();
        let mut e = Entity::resume(&input(), 0);
        e.begin_attempt(&s);
        let alert = e.record(result(ImageStatus::TimedOut, None), None, &s, 3600);
        assert_eq!(alert.map(|a| a.reason), Some(NotifyReason::ScanFailed));
        assert_eq!(e.retry_at_secs, Some(3600 + 300));
        assert_eq!(e.latest.as_ref().unwrap().status, ImageStatus::TimedOut);
        // A deployment right after the failure gets the failure at once...
        e.arrive(deployed("d1", &format!("{ECR}/app:1.0")), 3610);
        assert_eq!(e.next(3610), Next::Answer);
        e.waiting.clear();
        // ...one a minute later tries again at once, on the deploy-time queue.
        e.arrive(deployed("d2", &format!("{ECR}/app:1.0")), 3700);
        assert_eq!(
            e.next(3700),
            Next::Scan {
                forced: false,
                urgent: true
            }
        );
        e.begin_attempt(&s);
        let again = e.record(result(ImageStatus::Failed, None), None, &s, 3710);
        assert_eq!(again, None, "one alert per failure streak");
        assert_eq!(e.retry_at_secs, Some(3710 + 600), "the backoff doubles");
        e.waiting.clear();
        assert_eq!(e.next(3800), Next::Wait { until_secs: 4310 });
        assert_eq!(
            e.next(4310),
            Next::Scan {
                forced: false,
                urgent: false
            }
        );
        // Success ends the streak; the next failure alerts again.
        e.begin_attempt(&s);
        e.record(
            result(ImageStatus::Scanned, Some(Verdict::Fail)),
            None,
            &s,
            4400,
        );
        assert_eq!(e.failures, 0);
        assert_eq!(e.retry_at_secs, None);
        e.begin_attempt(&s);
        let alert = e.record(result(ImageStatus::Failed, None), None, &s, 5000);
        assert_eq!(alert.map(|a| a.reason), Some(NotifyReason::ScanFailed));
        // A failed rescan keeps answering with the last real result, and retries as a rescan.
        assert_eq!(e.latest.as_ref().unwrap().status, ImageStatus::Scanned);
        e.arrive(deployed("d3", &format!("{ECR}/app:1.0")), 5100);
        assert_eq!(e.next(5100), Next::Answer, "the last real result answers");
        e.waiting.clear();
        assert_eq!(e.last_verdict, Some(Verdict::Fail));
        assert_eq!(
            e.next(5000 + 300),
            Next::Scan {
                forced: true,
                urgent: false
            }
        );
        // Not deployed for a TTL while failing: it gives up.
        assert_eq!(e.next(10_000), Next::End);
        assert_eq!(s.retry_after_secs(100), 6 * 3600, "capped");
    }

    #[test]
    fn verdict_changes_alert_against_the_last_real_verdict() {
        let s = settings();
        let mut e = Entity::resume(&input(), 0);
        e.last_verdict = Some(Verdict::Pass);
        e.verdict_loaded = true;
        e.begin_attempt(&s);
        let alert = e
            .record(
                result(ImageStatus::Scanned, Some(Verdict::Fail)),
                None,
                &s,
                10,
            )
            .unwrap();
        assert_eq!(alert.reason, NotifyReason::VerdictChanged);
        assert_eq!(alert.previous_verdict, Some(Verdict::Pass));
        e.begin_attempt(&s);
        e.record(result(ImageStatus::Failed, None), None, &s, 20);
        e.begin_attempt(&s);
        let back = e.record(
            result(ImageStatus::Scanned, Some(Verdict::Fail)),
            None,
            &s,
            30,
        );
        assert_eq!(back, None, "a failure in between is not a verdict");
    }

    #[test]
    fn a_rescan_request_forces_a_scan() {
        let s = settings();
        let mut e = Entity::resume(&input(), 0);
        e.begin_attempt(&s);
        e.record(
            result(ImageStatus::Scanned, Some(Verdict::Pass)),
            Some(7),
            &s,
            10,
        );
        e.rescan = Some("kb update".into());
        assert_eq!(
            e.next(20),
            Next::Scan {
                forced: true,
                urgent: false
            }
        );
        e.begin_attempt(&s);
        assert_eq!(e.rescan, None);
    }

    #[test]
    fn references_are_bounded_and_a_registry_scan_picks_a_tag_ecr_confirms() {
        let mut e = Entity::resume(
            &ImageScanInput {
                image: image(&format!("{ECR}/app@sha256:{}", "a".repeat(64))),
                ..input()
            },
            0,
        );
        assert_eq!(
            e.registry_reference(None),
            None,
            "a digest-only reference has no tag to scan by"
        );
        assert_eq!(
            e.registry_reference(Some(&["v7".to_string()]))
                .unwrap()
                .to_string(),
            format!("{ECR}/app:v7"),
            "ECR names the digest's tag"
        );
        assert_eq!(e.registry_reference(Some(&[])), None, "untagged in ECR");
        e.remember(&image(&format!("{ECR}/app:1.0")));
        e.remember(&image(&format!("{ECR}/app:latest")));
        let ecr = ["1.0".to_string()];
        assert_eq!(
            e.registry_reference(Some(&ecr)).unwrap().tag.as_deref(),
            Some("1.0"),
            "`latest` has moved on: ECR no longer lists it for this digest"
        );
        assert_eq!(
            e.registry_reference(None).unwrap().tag.as_deref(),
            Some("latest")
        );
        for i in 0..40 {
            e.remember(&image(&format!("{ECR}/app:t{i}")));
        }
        assert_eq!(e.references.len(), MAX_REFERENCES);
        assert_eq!(e.reference().unwrap().tag.as_deref(), Some("t39"));
    }

    #[test]
    fn carried_state_survives_the_hand_over() {
        let s = settings();
        let mut e = Entity::resume(&input(), 0);
        e.begin_attempt(&s);
        e.record(
            result(ImageStatus::Scanned, Some(Verdict::Fail)),
            Some(9),
            &s,
            10,
        );
        e.arrive(deployed("d9", &format!("{ECR}/app:2.0")), 11);
        let next = ImageScanInput {
            carried: Some(Box::new(e.clone())),
            ..input()
        };
        let json = serde_json::to_value(&next).unwrap();
        let back: ImageScanInput = serde_json::from_value(json).unwrap();
        let resumed = Entity::resume(&back, 12);
        assert_eq!(resumed.waiting, vec!["d9".to_string()]);
        assert_eq!(resumed.last_verdict, Some(Verdict::Fail));
        assert_eq!(resumed.qualys_scanned_ms, Some(9));
        assert_eq!(resumed.runs, 2);
    }

    fn running(scope: &str, seen: u64, until: u64) -> RunningAt {
        RunningAt {
            scope_id: scope.into(),
            count: 3,
            places: vec!["ecs:prod/service:web".into()],
            seen_secs: seen,
            until_secs: until,
        }
    }

    #[test]
    fn a_running_image_is_rescanned_every_interval_and_ends_once_nobody_sees_it() {
        let s = settings();
        let mut e = Entity::resume(&input(), 100);
        e.begin_attempt(&s);
        e.settings = Some(s.clone());
        e.record(
            result(ImageStatus::Scanned, Some(Verdict::Pass)),
            None,
            &s,
            100,
        );
        // Not running, not deployed since: it would end after its TTL (1,000 s).
        assert_eq!(e.next(1100), Next::End);
        // An inventory sees it until 20,000: it holds past its TTL and rescans at 100 + 5,000.
        e.seen_running(running("aws-1-us-east-1", 900, 20_000));
        assert_eq!(e.next(500), Next::Wait { until_secs: 1100 });
        assert_eq!(e.next(1100), Next::Wait { until_secs: 5100 });
        assert_eq!(
            e.next(5100),
            Next::Scan {
                forced: true,
                urgent: false
            },
            "a rescan of a running image runs on the rescan queue"
        );
        e.begin_attempt(&s);
        e.record(
            result(ImageStatus::Scanned, Some(Verdict::Pass)),
            None,
            &s,
            5200,
        );
        assert_eq!(e.next(6200), Next::Wait { until_secs: 10_200 });
        // The next inventory no longer lists it: once its last sighting lapses, it ends.
        assert_eq!(e.next(20_000), Next::End);
    }

    #[test]
    fn a_running_image_that_fails_to_scan_is_retried_past_its_ttl() {
        let s = settings();
        let mut e = Entity::resume(&input(), 100);
        e.begin_attempt(&s);
        e.record(result(ImageStatus::Failed, None), None, &s, 100);
        let retry_at = e.retry_at_secs.unwrap();
        e.seen_running(running("k8s-prod", 100, retry_at + 10_000));
        assert_eq!(
            e.next(retry_at + 2000),
            Next::Scan {
                forced: false,
                urgent: false
            }
        );
        e.running.clear();
        assert_eq!(e.next(retry_at + 2000), Next::End);
    }

    #[test]
    fn a_backfill_scans_off_the_deploy_queue_until_a_deployment_waits() {
        let backfill = ImageScanInput {
            backfill: true,
            event_accepted_at_ms: None,
            ..input()
        };
        let mut e = Entity::resume(&backfill, 100);
        assert_eq!(
            e.next(100),
            Next::Scan {
                forced: false,
                urgent: false
            }
        );
        e.arrive(deployed("d1", &format!("{ECR}/app:1.0")), 100);
        assert!(!e.backfill, "deployed: no longer a backfill");
        assert_eq!(
            e.next(100),
            Next::Scan {
                forced: false,
                urgent: true
            }
        );
    }

    #[test]
    fn running_scopes_are_one_entry_each_and_bounded() {
        let mut e = Entity::resume(&input(), 100);
        e.seen_running(running("k8s-a", 1, 10));
        e.seen_running(running("k8s-a", 2, 20));
        assert_eq!(e.running.len(), 1);
        assert_eq!(e.running_until(5), Some(20));
        for i in 0..(MAX_RUNNING_SCOPES as u64 + 5) {
            e.seen_running(running(&format!("k8s-{i}"), 100 + i, 1000));
        }
        assert_eq!(e.running.len(), MAX_RUNNING_SCOPES);
        assert!(
            e.running.iter().all(|r| r.scope_id != "k8s-a"),
            "the oldest went"
        );
        assert_eq!(
            e.running_places(0).len(),
            crate::inventory::model::MAX_PLACES,
            "an alert names a bounded sample"
        );
    }

    #[test]
    fn a_running_image_whose_verdict_turns_fail_alerts_naming_where_it_runs() {
        let s = settings();
        let mut e = Entity::resume(&input(), 100);
        e.begin_attempt(&s);
        e.record(
            result(ImageStatus::Scanned, Some(Verdict::Pass)),
            None,
            &s,
            100,
        );
        e.seen_running(running("aws-1-us-east-1", 200, 50_000));
        e.begin_attempt(&s);
        let alert = e
            .record(
                result(ImageStatus::Scanned, Some(Verdict::Fail)),
                None,
                &s,
                5100,
            )
            .expect("a verdict change alerts");
        assert_eq!(alert.reason, NotifyReason::VerdictChanged);
        assert_eq!(
            alert.running,
            vec!["aws-1-us-east-1: ecs:prod/service:web".to_string()]
        );
    }
}
