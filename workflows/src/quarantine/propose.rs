//! The quarantines a failing scan proposes (`QFLOWS_QUARANTINE=propose`): which ECS services an
//! `ImageScan` entity's inventories see running the digest, as [`QuarantineInput`]s.
//!
//! Kept apart from [`model`](super::model) so that the scan settings can name
//! [`QuarantineProposals`] without the quarantine types depending on the scan types.

use crate::input::Validate;
use crate::inventory::RunningAt;
use crate::quarantine::model::{
    MAX_SUMMARY_CHARS, QuarantineInput, QuarantineProposals, QuarantineTarget, TargetKind,
    VerdictSummary,
};
use crate::scan::model::{ImageResult, ImageStatus, Verdict};

/// At most this many proposals per scan (one per ECS service the inventories list).
pub const MAX_PROPOSALS_PER_SCAN: usize = 20;

/// The quarantines a failing scan proposes: one per ECS service that an AWS inventory scope
/// (`aws-<account>-<region>`) sees running the digest now (`ecs:<cluster>/service:<service>`),
/// at most [`MAX_PROPOSALS_PER_SCAN`]. Places are attacker-controlled: any that does not make a
/// valid input is left out. Container apps are not proposed from here: an inventory names the
/// app, not the revision that runs the digest (propose those with the CLI).
pub fn proposals(
    result: &ImageResult,
    running: &[RunningAt],
    now_secs: u64,
    settings: &QuarantineProposals,
) -> Vec<QuarantineInput> {
    if result.status != ImageStatus::Scanned || result.verdict != Some(Verdict::Fail) {
        return Vec::new();
    }
    let summary = match &result.summary {
        Some(s) => format!(
            "critical {}, high {}, medium {}, low {} ({} fixable), secrets {}{}",
            s.critical,
            s.high,
            s.medium,
            s.low,
            s.fixable,
            s.secrets,
            result
                .reason
                .as_deref()
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        ),
        None => result.reason.clone().unwrap_or_default(),
    };
    let summary: String = summary.chars().take(MAX_SUMMARY_CHARS).collect();
    let mut out: Vec<QuarantineInput> = Vec::new();
    for at in running.iter().filter(|r| r.until_secs > now_secs) {
        let Some((account, region)) = at
            .scope_id
            .strip_prefix("aws-")
            .and_then(|rest| rest.split_once('-'))
        else {
            continue;
        };
        for place in &at.places {
            let Some((cluster, service)) = place
                .strip_prefix("ecs:")
                .and_then(|rest| rest.split_once("/service:"))
            else {
                continue;
            };
            let input = QuarantineInput {
                target: QuarantineTarget {
                    kind: TargetKind::Ecs,
                    cluster: Some(cluster.to_string()),
                    service: Some(service.to_string()),
                    region: Some(region.to_string()),
                    account_id: Some(account.to_string()),
                    rollback_to: None,
                    revision_id: None,
                },
                image: result.image.clone(),
                digest: result.digest.clone(),
                verdict: VerdictSummary {
                    verdict: "fail".into(),
                    summary: summary.clone(),
                },
                approval_timeout_secs: settings.approval_timeout_secs,
                proposed_by: Some("qflows (ImageScan entity)".into()),
            };
            if input.validate().is_ok() && !out.iter().any(|o| o.target == input.target) {
                out.push(input);
            }
            if out.len() >= MAX_PROPOSALS_PER_SCAN {
                return out;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn a_failing_scan_proposes_one_quarantine_per_running_ecs_service() {
        let result: ImageResult = serde_json::from_value(json!({
            "digest": DIGEST,
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:2",
            "status": "scanned",
            "verdict": "fail",
        }))
        .unwrap();
        let at = |scope: &str, places: &[&str], until: u64| RunningAt {
            scope_id: scope.into(),
            count: places.len() as u64,
            places: places.iter().map(|p| p.to_string()).collect(),
            seen_secs: 1,
            until_secs: until,
        };
        let running = vec![
            at(
                "aws-123456789012-us-east-1",
                &[
                    "ecs:prod/service:web",
                    "ecs:prod/service:web",
                    "ecs:prod/3f2a9c",
                    "ecs:prod/service:we b",
                    "ecs:../service:x",
                ],
                100,
            ),
            at("aws-210987654321-eu-west-1", &["ecs:edge/service:web"], 100),
            at("aws-111111111111-us-east-2", &["ecs:old/service:web"], 10),
            at("k8s-prod", &["k8s:shop/web-1/web"], 100),
            at("azure-0f1e", &["aca:shop/web"], 100),
        ];
        let settings = QuarantineProposals {
            task_queue: "qflows".into(),
            approval_timeout_secs: 600,
        };
        let got = proposals(&result, &running, 50, &settings);
        let ids: Vec<String> = got.iter().map(|i| i.workflow_id()).collect();
        assert_eq!(
            ids,
            vec![
                format!(
                    "quarantine-ecs-123456789012-us-east-1-prod-web-{}",
                    &DIGEST[7..]
                ),
                format!(
                    "quarantine-ecs-210987654321-eu-west-1-edge-web-{}",
                    &DIGEST[7..]
                ),
            ]
        );
        assert_eq!(got[0].approval_timeout_secs, 600);
        // Not a failing completed scan: nothing.
        for (status, verdict) in [
            (ImageStatus::Scanned, Some(Verdict::Pass)),
            (ImageStatus::Failed, Some(Verdict::Fail)),
        ] {
            let r = ImageResult {
                status,
                verdict,
                ..result.clone()
            };
            assert!(proposals(&r, &running, 50, &settings).is_empty());
        }
    }
}
