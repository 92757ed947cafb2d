//! The QScanner backend as an activity: pull credentials, a fresh token, the run with heartbeats,
//! then the same gate and results store as registry scans.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::failure::IntoFailure;
use crate::gate::judge::Judge;
use crate::gate::{GateItem, evaluate};
use crate::qscanner::{
    PolicyVerdict, Progress, QScanner, QScannerConfig, RegistryAllowlist, RegistryCredentials,
    ScanJob, ScanMode,
};
use crate::qualys::QualysClient;
use crate::resolve::Resolver;
use crate::results::{ResultsStore, SCHEMA_VERSION};
use qflows_workflows::scan::RegistryKind;
use qflows_workflows::scan::contracts;
use qflows_workflows::scan::image_scan::input::QScannerScan;
use qflows_workflows::scan::model::{ImageResult, ImageStatus, Verdict};
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// State of the QScanner activity.
pub struct QScannerActivities {
    config: QScannerConfig,
    mode: ScanMode,
    qualys: QualysClient,
    resolver: Arc<Resolver>,
    judge: Arc<Judge>,
    results: ResultsStore,
    registries: RegistryAllowlist,
}

impl QScannerActivities {
    /// `config` is a template: each scan gets the client's current Qualys token. QScanner
    /// pulls only from `registries`.
    pub fn new(
        config: QScannerConfig,
        mode: ScanMode,
        qualys: QualysClient,
        resolver: Arc<Resolver>,
        judge: Arc<Judge>,
        results: ResultsStore,
        registries: RegistryAllowlist,
    ) -> Self {
        Self {
            config,
            mode,
            qualys,
            resolver,
            judge,
            results,
            registries,
        }
    }
}

#[activities]
impl QScannerActivities {
    /// Scans one image with QScanner.
    #[activity(definition = contracts::QScanImage)]
    pub async fn scan(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: QScannerScan,
    ) -> Result<ImageResult, ActivityError> {
        let input = &request.input;
        // The reference comes from an event: never connect where an attacker points.
        if let Some(reason) = self.registries.refusal(&input.image) {
            tracing::warn!(image = %input.image, "QScanner scan refused: {reason}");
            return Ok(ImageResult {
                profile: None,
                digest: input.digest.clone(),
                image: input.image.to_string(),
                status: ImageStatus::Skipped,
                verdict: None,
                summary: None,
                result_ref: None,
                reason: Some(reason),
                backend: Some("qscanner".into()),
                scanned_at: None,
            });
        }
        let token = self
            .qualys
            .bearer_token()
            .await
            .map_err(IntoFailure::into_failure)?;
        crate::metrics::scan_submitted(
            crate::metrics::Backend::QScanner,
            input.event_accepted_at_ms,
        );
        let scanner = QScanner::new(QScannerConfig {
            access_token: token,
            ..self.config.clone()
        })
        .map_err(IntoFailure::into_failure)?;
        // ECR images: pull with credentials from the image's own account (assumed role if needed).
        let registry = match input.image.kind() {
            RegistryKind::Ecr {
                account_id, region, ..
            } => {
                let (username, password) = self
                    .resolver
                    .ecr_pull_credentials(&account_id, &region)
                    .await
                    .map_err(IntoFailure::into_failure)?;
                Some(RegistryCredentials {
                    username: Some(username),
                    password: Some(password),
                    token: None,
                })
            }
            // ACR images: the ACR refresh token of the worker's Azure identity.
            RegistryKind::Acr { .. } => match self.resolver.azure() {
                Ok(azure) => {
                    let refresh = azure
                        .acr_refresh_token(&input.image.registry)
                        .await
                        .map_err(IntoFailure::into_failure)?;
                    Some(RegistryCredentials {
                        username: Some(crate::azure::ACR_TOKEN_USER.to_string()),
                        password: Some(crate::qualys::Secret::new(refresh)),
                        token: None,
                    })
                }
                Err(_) => None,
            },
            _ => None,
        };
        let image = input
            .image
            .pinned()
            .unwrap_or_else(|| input.image.to_string());
        let job = ScanJob {
            image,
            mode: self.mode.clone(),
            registry,
            extra_env: Vec::new(),
            scan_id: format!("scan-{}", input.digest.trim_start_matches("sha256:")),
        };
        let heartbeat = ctx.clone();
        let outcome = scanner
            .run(
                &job,
                move |progress: Progress| {
                    let ctx = heartbeat.clone();
                    tokio::spawn(async move {
                        let _ = ctx.record_heartbeat(progress).await;
                    });
                },
                ctx.cancelled(),
            )
            .await
            .map_err(IntoFailure::into_failure)?;
        let _ = std::fs::remove_dir_all(&outcome.output_dir);

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let secrets = outcome.secrets.len() as u64;
        let gate = self.judge.profiles().default_profile().gate.clone();
        let (mut verdict, summary) = evaluate(
            &gate,
            outcome.vulnerabilities.iter().map(GateItem::from),
            secrets,
            now,
        );
        // In evaluate-policy mode Qualys' central policy has the last word.
        match outcome.policy {
            Some(PolicyVerdict::Deny) => verdict = Verdict::Fail,
            Some(PolicyVerdict::Audit) if verdict == Verdict::Pass => verdict = Verdict::Audit,
            _ => {}
        }
        let document = json!({
            "schemaVersion": SCHEMA_VERSION,
            "image": input.image.to_string(),
            "registry": input.image.registry,
            "repository": input.image.repository,
            "tag": input.image.tag,
            "digest": input.digest,
            "backend": "qscanner",
            "scannedAt": request.scanned_at,
            "verdict": verdict,
            "summary": summary,
            "gate": gate,
            "profile": qflows_workflows::scan::profile::DEFAULT_PROFILE,
            "policy": outcome.policy,
            "reportAvailable": outcome.report_available,
            "os": outcome.os,
            "vulnerabilities": outcome.vulnerabilities,
            "secrets": outcome.secrets,
            "warnings": outcome.warnings,
        });
        let mut result = self
            .results
            .store_scan(
                input,
                "qscanner",
                &request.scanned_at,
                verdict,
                summary,
                &document,
            )
            .await
            .map_err(IntoFailure::into_failure)?;
        if !outcome.report_available {
            result.reason =
                Some("QScanner uploaded the SBOM but could not fetch the report (exit 40)".into());
        }
        Ok(result)
    }
}
