//! The QScanner backend as an activity: pull credentials, a fresh token, the run with heartbeats,
//! then the same gate and results store as registry scans.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::failure::IntoFailure;
use crate::gate::judge::Judge;
use crate::gate::{GateItem, GatePolicy, evaluate};
use crate::qscanner::{
    PolicyVerdict, Progress, QScanner, QScannerConfig, RegistryAllowlist, RegistryCredentials,
    ScanJob, ScanMode, ScanOutcome,
};
use crate::qualys::QualysClient;
use crate::resolve::Resolver;
use crate::results::{ResultsStore, report_fields};
use qflows_workflows::scan::contracts;
use qflows_workflows::scan::image_scan::input::{ImageScanInput, QScannerScan};
use qflows_workflows::scan::model::{ImageResult, ImageStatus, SeveritySummary, Verdict};
use qflows_workflows::scan::{ImageRef, RegistryKind};
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
    /// Scans one image with QScanner: refuse a registry not allowed, run QScanner, judge what
    /// it found, store the report. A failure of any step is an error (Temporal retries it),
    /// never a verdict.
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
            return Ok(refused(input, reason));
        }
        let outcome = self.run_qscanner(&ctx, input).await?;
        let gate = self.judge.profiles().default_profile().gate.clone();
        let (verdict, summary) = judge(&gate, &outcome);
        let document = report_document(&request, &gate, &outcome, verdict, &summary);
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

impl QScannerActivities {
    /// Runs QScanner on the image with a fresh Qualys token and the image's pull credentials,
    /// heartbeating its progress, and removes its output directory once read.
    async fn run_qscanner(
        &self,
        ctx: &ActivityContext,
        input: &ImageScanInput,
    ) -> Result<ScanOutcome, ActivityError> {
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
        let image = input
            .image
            .pinned()
            .unwrap_or_else(|| input.image.to_string());
        let job = ScanJob {
            image,
            mode: self.mode.clone(),
            registry: self.pull_credentials(&input.image).await?,
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
        Ok(outcome)
    }

    /// The credentials QScanner pulls `image` with, if it needs any.
    async fn pull_credentials(
        &self,
        image: &ImageRef,
    ) -> Result<Option<RegistryCredentials>, ActivityError> {
        match image.kind() {
            // ECR images: credentials from the image's own account (assumed role if needed).
            RegistryKind::Ecr {
                account_id, region, ..
            } => {
                let (username, password) = self
                    .resolver
                    .ecr_pull_credentials(&account_id, &region)
                    .await
                    .map_err(IntoFailure::into_failure)?;
                Ok(Some(RegistryCredentials {
                    username: Some(username),
                    password: Some(password),
                    token: None,
                }))
            }
            // ACR images: the ACR refresh token of the worker's Azure identity.
            RegistryKind::Acr { .. } => match self.resolver.azure() {
                Ok(azure) => {
                    let refresh = azure
                        .acr_refresh_token(&image.registry)
                        .await
                        .map_err(IntoFailure::into_failure)?;
                    Ok(Some(RegistryCredentials {
                        username: Some(crate::azure::ACR_TOKEN_USER.to_string()),
                        password: Some(crate::qualys::Secret::new(refresh)),
                        token: None,
                    }))
                }
                Err(_) => Ok(None),
            },
            _ => Ok(None),
        }
    }
}

/// The result of a scan refused before QScanner ran (the registry is not allowed).
fn refused(input: &ImageScanInput, reason: String) -> ImageResult {
    ImageResult {
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
    }
}

/// The gate's verdict on what QScanner found; in evaluate-policy mode Qualys' central policy
/// has the last word.
fn judge(gate: &GatePolicy, outcome: &ScanOutcome) -> (Verdict, SeveritySummary) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secrets = outcome.secrets.len() as u64;
    let (mut verdict, summary) = evaluate(
        gate,
        outcome.vulnerabilities.iter().map(GateItem::from),
        secrets,
        now,
    );
    match outcome.policy {
        Some(PolicyVerdict::Deny) => verdict = Verdict::Fail,
        Some(PolicyVerdict::Audit) if verdict == Verdict::Pass => verdict = Verdict::Audit,
        _ => {}
    }
    (verdict, summary)
}

/// The report stored in the results store (its JSON shape is what readers of the store see).
fn report_document(
    request: &QScannerScan,
    gate: &GatePolicy,
    outcome: &ScanOutcome,
    verdict: Verdict,
    summary: &SeveritySummary,
) -> serde_json::Value {
    let mut document = report_fields(
        &request.input,
        "qscanner",
        &request.scanned_at,
        verdict,
        summary,
        gate,
    );
    for (key, value) in [
        ("policy", json!(outcome.policy)),
        ("reportAvailable", json!(outcome.report_available)),
        ("os", json!(outcome.os)),
        ("vulnerabilities", json!(outcome.vulnerabilities)),
        ("secrets", json!(outcome.secrets)),
        ("warnings", json!(outcome.warnings)),
    ] {
        document.insert(key.into(), value);
    }
    serde_json::Value::Object(document)
}
