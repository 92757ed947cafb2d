//! `qflows scan`: scan images by hand, read a digest's verdict, ask its entity for a rescan.
//!
//! - `qflows scan <image-ref>…` starts `ScanOnDeploy` with the manual `{"images": […]}` input
//!   (references checked here first, as the workflow would), under an ID derived from the set
//!   of references (`scan-cli-<hash>`, "use existing": identical commands join one run), waits,
//!   and prints each image's verdict with its worst findings from the stored report.
//! - `qflows scan status <digest|ref@digest>`: the `ImageScan` entity's `result` query while it
//!   runs, else the digest's verdict record in the results store.
//! - `qflows scan rescan <digest|ref@digest>`: the entity's `rescan` signal.
//!
//! Exit codes: 0 pass or audit, 1 a scanned image failed the gate, 2 an error or an image that
//! could not be scanned (failed, timed out, skipped: never a pass).

use super::findings::{self, Finding};
use super::output::{OutputFormat, clean};
use crate::config::{ResultsArgs, TemporalArgs};
use crate::temporal;
use clap::{Args, Subcommand};
use qflows_activities::results::ResultsStore;
use qflows_workflows::scan::model::{
    ImageResult, ImageStatus, ScanOnDeployOutput, Verdict, image_scan_id,
};
use qflows_workflows::scan::{Classified, ImageRef, classify, search};
use qflows_workflows::{ImageScan, ScanOnDeploy};
use serde::Serialize;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use temporalio_client::errors::{WorkflowGetResultError, WorkflowInteractionError};
use temporalio_client::{
    WorkflowExecutionStatus, WorkflowGetResultOptions, WorkflowIdConflictPolicy,
    WorkflowStartOptions,
};

/// Exit code: every image passed (or is in audit).
pub const EXIT_PASS: u8 = 0;
/// Exit code: a scanned image failed the gate.
pub const EXIT_FAIL: u8 = 1;
/// Exit code: an error, or an image that could not be scanned.
pub const EXIT_ERROR: u8 = 2;

/// Longest `--reason` of a rescan (it is kept in the entity's history).
const MAX_REASON_CHARS: usize = 500;

/// Flags of `qflows scan <image-ref>…`.
#[derive(Debug, Clone, Args)]
pub struct ScanImagesArgs {
    /// Images to scan: `nginx:1.27`, `<account>.dkr.ecr.<region>.amazonaws.com/app:1.0`, or
    /// any reference with `@sha256:…` to pin the digest.
    #[arg(value_name = "IMAGE-REF", required = true)]
    pub images: Vec<String>,
    /// Wait for the verdict and exit by it (the default).
    #[arg(long, overrides_with = "no_wait")]
    pub wait: bool,
    /// Start the scan, print its workflow ID and exit 0 without waiting.
    #[arg(long, overrides_with = "wait")]
    pub no_wait: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Findings shown per image, worst first (0: none).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Stop waiting after this many seconds and exit 2 (the scan goes on; `qflows scan status`
    /// reads it later). 0: wait as long as the workflow does (at most 6 h).
    #[arg(long, default_value_t = 0)]
    pub timeout_secs: u64,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Where the reports are (for the findings).
    #[command(flatten)]
    pub results: ResultsArgs,
}

/// `qflows scan status` and `qflows scan rescan`.
#[derive(Debug, Subcommand)]
pub enum ScanCommand {
    /// The verdict of a digest: its ImageScan entity's `result` query while it runs, else the
    /// last verdict in the results store.
    Status {
        /// Where Temporal is.
        #[command(flatten)]
        temporal: TemporalArgs,
        /// What to look up.
        #[command(flatten)]
        args: StatusArgs,
    },
    /// Ask a digest's running ImageScan entity for a new Qualys scan.
    Rescan {
        /// Where Temporal is.
        #[command(flatten)]
        temporal: TemporalArgs,
        /// What to rescan.
        #[command(flatten)]
        args: RescanArgs,
    },
}

/// Flags of `qflows scan status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The digest (`sha256:…`) or a reference that carries it (`repo:tag@sha256:…`). A tag
    /// alone names no digest: `qflows scan <ref>` resolves and scans it.
    #[arg(value_name = "IMAGE-REF|DIGEST")]
    pub target: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Findings shown, worst first (0: none).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Where the verdict records and reports are.
    #[command(flatten)]
    pub results: ResultsArgs,
}

/// Flags of `qflows scan rescan`.
#[derive(Debug, Clone, Args)]
pub struct RescanArgs {
    /// The digest (`sha256:…`) or a reference that carries it (`repo:tag@sha256:…`).
    #[arg(value_name = "IMAGE-REF|DIGEST", required_unless_present = "running")]
    pub target: Option<String>,
    /// Instead: every digest the latest inventories list as running.
    #[arg(long, conflicts_with = "target")]
    pub running: bool,
    /// With --running: only these scopes (`aws-<account>-<region>`, `k8s-<cluster>`,
    /// `azure-<subscription>`; default: every scope an inventory ran for).
    #[arg(long = "scope", requires = "running")]
    pub scopes: Vec<String>,
    /// Why (kept in the entity's history; at most 500 characters).
    #[arg(long)]
    pub reason: Option<String>,
    /// Where the inventories are (with --running).
    #[command(flatten)]
    pub results: ResultsArgs,
}

/// `qflows scan …`: runs the command and turns its outcome into the exit code (errors: 2).
pub async fn run(
    temporal: TemporalArgs,
    args: ScanImagesArgs,
    command: Option<ScanCommand>,
) -> ExitCode {
    let outcome = match command {
        None => scan(&temporal, args).await,
        Some(ScanCommand::Status { temporal, args }) => status(&temporal, args).await,
        Some(ScanCommand::Rescan { temporal, args }) => rescan(&temporal, args).await,
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The checked references and the manual input that scans them.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanPlan {
    /// The references, parsed, in the order given.
    pub images: Vec<ImageRef>,
    /// `{"images": […]}` for `ScanOnDeploy`.
    pub input: serde_json::Value,
    /// `scan-cli-<hash of the sorted canonical references>`.
    pub workflow_id: String,
}

/// Checks every reference as `ScanOnDeploy` will, naming the bad one, and derives the
/// workflow ID from the set of references (order and duplicates do not matter).
pub fn plan(references: &[String]) -> anyhow::Result<ScanPlan> {
    if references.is_empty() {
        anyhow::bail!("IMAGE-REF: give at least one image reference");
    }
    let mut images = Vec::new();
    for (i, reference) in references.iter().enumerate() {
        let image =
            ImageRef::parse(reference).map_err(|e| anyhow::anyhow!("IMAGE-REF #{} {e}", i + 1))?;
        images.push(image);
    }
    let input = serde_json::json!({ "images": references });
    match classify(&input) {
        Ok(Classified::Scan(_)) => {}
        Ok(Classified::Ignored { reason }) => {
            anyhow::bail!("ScanOnDeploy would ignore these images: {reason}")
        }
        Err(e) => anyhow::bail!("IMAGE-REF: {e}"),
    }
    let mut canonical: Vec<String> = images.iter().map(ImageRef::canonical).collect();
    canonical.sort();
    canonical.dedup();
    let hash = qflows_activities::results::blobs::sha256_hex(canonical.join("\n").as_bytes());
    Ok(ScanPlan {
        images,
        input,
        workflow_id: format!("scan-cli-{}", &hash[..16]),
    })
}

/// One image of the output: its result and its worst findings.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    /// The result, as the workflow gave it.
    #[serde(flatten)]
    pub result: ImageResult,
    /// The worst findings of the stored report (at most `--top`).
    pub findings: Vec<Finding>,
    /// Findings in the report.
    pub findings_total: usize,
    /// Why the findings could not be read (the verdict stands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_error: Option<String>,
}

/// The output of `qflows scan`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// The `ScanOnDeploy` run.
    pub workflow_id: String,
    /// `pass`, `audit`, `fail`, or `error` (an image could not be scanned).
    pub outcome: &'static str,
    /// The exit code.
    pub exit_code: u8,
    /// The worst verdict the workflow gave (unscanned images carry the worker's
    /// `QFLOWS_GATE_UNSCANNED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// One entry per image.
    pub images: Vec<ImageReport>,
}

/// The outcome of a set of results: a failed gate wins (it is certain whatever the others
/// show), then any image that could not be scanned, then pass or audit.
pub fn outcome(results: &[ImageResult]) -> (&'static str, u8) {
    let scanned = |r: &&ImageResult| r.status == ImageStatus::Scanned;
    if results
        .iter()
        .filter(scanned)
        .any(|r| r.verdict == Some(Verdict::Fail))
    {
        return ("fail", EXIT_FAIL);
    }
    if results.is_empty() || results.iter().any(|r| r.status != ImageStatus::Scanned) {
        return ("error", EXIT_ERROR);
    }
    if results.iter().any(|r| r.verdict == Some(Verdict::Audit)) {
        ("audit", EXIT_PASS)
    } else if results.iter().all(|r| r.verdict == Some(Verdict::Pass)) {
        ("pass", EXIT_PASS)
    } else {
        // Scanned without a verdict: nothing says it passed.
        ("error", EXIT_ERROR)
    }
}

async fn scan(temporal: &TemporalArgs, args: ScanImagesArgs) -> anyhow::Result<u8> {
    let plan = plan(&args.images)?;
    let store = args.results.store().await?;
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let options = start_options(&client, &args.task_queue, &plan).await;
    let handle = client
        .start_workflow(ScanOnDeploy::run, plan.input.clone(), options)
        .await
        .map_err(|e| anyhow::anyhow!("starting ScanOnDeploy {}: {e}", plan.workflow_id))?;
    let count = plan.images.len();
    let images = if count == 1 { "image" } else { "images" };
    let scanning = format!("scanning {count} {images}");
    if args.no_wait && !args.wait {
        print_started(&scanning, &plan.workflow_id, args.format);
        return Ok(EXIT_PASS);
    }
    eprintln!(
        "{scanning}: workflow {}, waiting for the verdict…",
        plan.workflow_id
    );
    let waiting = handle.get_result(WorkflowGetResultOptions::default());
    let output = wait_for_scan(waiting, args.timeout_secs, &plan.workflow_id).await?;
    let (outcome, exit_code) = outcome(&output.images);
    let mut reports = Vec::new();
    for result in output.images {
        reports.push(image_report(&store, result, args.top).await);
    }
    let report = ScanReport {
        workflow_id: plan.workflow_id,
        outcome,
        exit_code,
        verdict: output.verdict,
        images: reports,
    };
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print!("{}", render_scan(&report, colours())),
    }
    Ok(exit_code)
}

/// How `qflows scan` starts ScanOnDeploy: under the plan's ID ("use existing": identical
/// commands join one run), with the design memo, and with its search attributes when the
/// namespace has them all.
async fn start_options(
    client: &temporalio_client::Client,
    task_queue: &str,
    plan: &ScanPlan,
) -> WorkflowStartOptions {
    let request = match classify(&plan.input) {
        Ok(Classified::Scan(request)) => request,
        _ => unreachable!("plan() classified the input"),
    };
    let mut options = WorkflowStartOptions::new(task_queue.to_owned(), plan.workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .build();
    options.memo = Some(qflows_activities::scan::design_memo());
    let searchable = temporal::missing_search_attributes(client)
        .await
        .is_ok_and(|missing| missing.is_empty());
    if searchable {
        options.search_attributes = search::at_start(&request);
    }
    options
}

/// `--no-wait`: how to follow the started workflow (stderr), and its ID (stdout).
fn print_started(scanning: &str, workflow_id: &str, format: OutputFormat) {
    eprintln!(
        "{scanning}: workflow {workflow_id} (`qflows scan status <digest>` or \
         `temporal workflow show -w {workflow_id}` to follow it)"
    );
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"workflowId": workflow_id, "started": true})
        ),
        OutputFormat::Table => println!("{workflow_id}"),
    }
}

/// ScanOnDeploy's output once it scanned, waiting at most `timeout_secs` (0: no limit); an error
/// when it failed, did not scan, or the time ran out (the scan goes on then).
async fn wait_for_scan(
    waiting: impl std::future::Future<Output = Result<ScanOnDeployOutput, WorkflowGetResultError>>,
    timeout_secs: u64,
    workflow_id: &str,
) -> anyhow::Result<ScanOnDeployOutput> {
    let result = if timeout_secs > 0 {
        match tokio::time::timeout(Duration::from_secs(timeout_secs), waiting).await {
            Ok(result) => result,
            Err(_) => anyhow::bail!(
                "no verdict within --timeout-secs {timeout_secs}: the scan goes on in workflow \
                 {workflow_id} (run the same command again to wait for it)"
            ),
        }
    } else {
        waiting.await
    };
    let output = result.map_err(|e| workflow_failed(workflow_id, e))?;
    if output.status != "scanned" {
        anyhow::bail!(
            "ScanOnDeploy {workflow_id} did not scan: {}",
            output.reason.as_deref().unwrap_or(&output.status)
        );
    }
    Ok(output)
}

/// A workflow that ended without output, said plainly.
fn workflow_failed(workflow_id: &str, e: WorkflowGetResultError) -> anyhow::Error {
    match e {
        WorkflowGetResultError::Failed(failure) => anyhow::anyhow!(
            "ScanOnDeploy {workflow_id} failed: {}",
            failure.failure().message
        ),
        other => anyhow::anyhow!("ScanOnDeploy {workflow_id}: {other}"),
    }
}

/// The result with its worst findings, read from the report its `result_ref` names.
async fn image_report(store: &ResultsStore, result: ImageResult, top: usize) -> ImageReport {
    let mut report = ImageReport {
        result,
        findings: Vec::new(),
        findings_total: 0,
        report_error: None,
    };
    let Some(reference) = report.result.result_ref.clone() else {
        return report;
    };
    match store.read_report(&reference).await {
        Ok(Some(document)) => {
            // A verdict record carries neither: the report does.
            if report.result.summary.is_none() {
                report.result.summary = serde_json::from_value(document["summary"].clone()).ok();
            }
            if report.result.backend.is_none() {
                report.result.backend = document["backend"].as_str().map(str::to_string);
            }
            let all = findings::from_report(&document);
            report.findings_total = all.len();
            report.findings = findings::worst(all, top);
        }
        Ok(None) => report.report_error = Some(format!("report {reference} not found")),
        Err(e) => report.report_error = Some(e.to_string()),
    }
    report
}

/// Whether to colour the table: only on a terminal.
fn colours() -> bool {
    std::io::stdout().is_terminal()
}

/// The verdict word, coloured on a terminal.
fn verdict_word(result: &ImageResult, colour: bool) -> String {
    let (word, code) = match (result.status, result.verdict) {
        (ImageStatus::Scanned, Some(Verdict::Fail)) => ("FAIL", "31"),
        (ImageStatus::Scanned, Some(Verdict::Audit)) => ("AUDIT", "33"),
        (ImageStatus::Scanned, Some(Verdict::Pass)) => ("PASS", "32"),
        (ImageStatus::Scanned, None) => ("NO VERDICT", "31"),
        (ImageStatus::Skipped, _) => ("NOT SCANNED (skipped)", "31"),
        (ImageStatus::TimedOut, _) => ("NOT SCANNED (timed out)", "31"),
        (ImageStatus::Failed, _) => ("NOT SCANNED (scan failed)", "31"),
    };
    if colour {
        format!("\x1b[1;{code}m{word}\x1b[0m")
    } else {
        word.to_string()
    }
}

fn status_word(status: ImageStatus) -> &'static str {
    match status {
        ImageStatus::Scanned => "scanned",
        ImageStatus::Skipped => "skipped",
        ImageStatus::TimedOut => "timed_out",
        ImageStatus::Failed => "failed",
    }
}

/// The plain-text form of one image: verdict, facts, findings.
fn render_image(out: &mut String, image: &ImageReport, colour: bool) {
    use std::fmt::Write;
    let r = &image.result;
    let _ = writeln!(out, "{}  {}", clean(&r.image, 200), verdict_word(r, colour));
    if !r.digest.is_empty() {
        let _ = writeln!(out, "  digest    {}", clean(&r.digest, 80));
    }
    let mut status = status_word(r.status).to_string();
    if let Some(backend) = &r.backend {
        status.push_str(&format!(" by {}", clean(backend, 20)));
    }
    if let Some(at) = &r.scanned_at {
        status.push_str(&format!(" at {}", clean(at, 40)));
    }
    let _ = writeln!(out, "  status    {status}");
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "  reason    {}", clean(reason, 300));
    }
    if r.status != ImageStatus::Scanned
        && let Some(verdict) = r.verdict
    {
        let _ = writeln!(
            out,
            "  policy    {} for images that could not be scanned (QFLOWS_GATE_UNSCANNED)",
            verdict_text(verdict)
        );
    }
    if let Some(s) = &r.summary {
        let _ = writeln!(
            out,
            "  found     {} critical, {} high, {} medium, {} low ({} fixable), {} secrets",
            s.critical, s.high, s.medium, s.low, s.fixable, s.secrets
        );
    }
    if let Some(reference) = &r.result_ref {
        let _ = writeln!(out, "  report    {}", clean(reference, 300));
    }
    if let Some(error) = &image.report_error {
        let _ = writeln!(out, "  findings  not shown: {}", clean(error, 300));
    }
    if !image.findings.is_empty() {
        let _ = writeln!(
            out,
            "  worst {} of {} findings:",
            image.findings.len(),
            image.findings_total
        );
        findings::render_table(out, &image.findings, "    ");
    }
}

fn verdict_text(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "pass",
        Verdict::Audit => "audit",
        Verdict::Fail => "fail",
    }
}

/// The plain-text form of `qflows scan`'s report.
pub fn render_scan(report: &ScanReport, colour: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for image in &report.images {
        render_image(&mut out, image, colour);
        out.push('\n');
    }
    let count =
        |f: &dyn Fn(&ImageResult) -> bool| report.images.iter().filter(|i| f(&i.result)).count();
    let scanned_with = |v: Verdict| {
        move |r: &ImageResult| r.status == ImageStatus::Scanned && r.verdict == Some(v)
    };
    let parts = [
        (count(&scanned_with(Verdict::Pass)), "passed"),
        (count(&scanned_with(Verdict::Audit)), "in audit"),
        (count(&scanned_with(Verdict::Fail)), "failed the gate"),
        (
            count(&|r: &ImageResult| r.status != ImageStatus::Scanned),
            "could not be scanned",
        ),
    ];
    let parts: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    let _ = writeln!(
        out,
        "{}: {} {}: {} (workflow {}, exit {})",
        report.outcome,
        report.images.len(),
        if report.images.len() == 1 {
            "image"
        } else {
            "images"
        },
        parts.join(", "),
        report.workflow_id,
        report.exit_code
    );
    out
}

/// The digest a `status` or `rescan` target names, or an error naming the argument.
pub fn digest_of(target: &str) -> anyhow::Result<String> {
    let target = target.trim();
    if let Some(hex) = target.strip_prefix("sha256:") {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Ok(target.to_string());
        }
        anyhow::bail!(
            "IMAGE-REF|DIGEST `{}` is not a digest: sha256: and 64 lowercase hex digits",
            clean(target, 100)
        );
    }
    let image = ImageRef::parse(target).map_err(|e| anyhow::anyhow!("IMAGE-REF|DIGEST {e}"))?;
    match image.digest {
        Some(digest) => Ok(digest),
        None => anyhow::bail!(
            "IMAGE-REF|DIGEST `{}` names no digest: entities are per digest, and qflows does not \
             resolve tags here. Give the digest (`sha256:…`) or `{}@sha256:…`; \
             `qflows scan {}` resolves the tag and scans it",
            clean(target, 100),
            image.name(),
            clean(target, 100)
        ),
    }
}

/// Where `qflows scan status` found its answer.
#[derive(Debug, Clone, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum Source {
    /// The running `ImageScan` entity's `result` query.
    Entity {
        /// Its workflow ID.
        workflow_id: String,
    },
    /// The digest's verdict record in the results store (no entity runs).
    ResultsStore {
        /// The store.
        store: String,
        /// What became of the entity (`not found`, `completed`, …).
        entity: String,
    },
}

/// The output of `qflows scan status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The digest asked about.
    pub digest: String,
    /// Who answered.
    pub source: Source,
    /// `pass`, `audit`, `fail`, or `error` (nothing known, or not scanned).
    pub outcome: &'static str,
    /// The exit code.
    pub exit_code: u8,
    /// The entity's result, or the verdict record read back as one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageReport>,
    /// What is known when there is no result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The entity's state: `Some(true)` running, `Some(false)` closed, `None` never started.
async fn entity_state(
    client: &temporalio_client::Client,
    workflow_id: &str,
) -> anyhow::Result<(Option<bool>, String)> {
    let handle = client.get_workflow_handle::<ImageScan>(workflow_id);
    match handle.describe(Default::default()).await {
        Ok(d) if d.status() == WorkflowExecutionStatus::Running => {
            Ok((Some(true), "running".into()))
        }
        Ok(d) => Ok((
            Some(false),
            format!("{:?}", d.status())
                .to_ascii_lowercase()
                .replace('_', " "),
        )),
        Err(WorkflowInteractionError::NotFound(_)) => Ok((None, "never started".into())),
        Err(e) => Err(anyhow::anyhow!("describing {workflow_id}: {e}")),
    }
}

async fn status(temporal: &TemporalArgs, args: StatusArgs) -> anyhow::Result<u8> {
    let digest = digest_of(&args.target)?;
    let store = args.results.store().await?;
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let workflow_id = image_scan_id(&digest);
    let (state, entity) = entity_state(&client, &workflow_id).await?;
    // Where the answer comes from, what it says, and the note for either case.
    let (source, result, note_if_known, note_if_unknown) = if state == Some(true) {
        let handle = client.get_workflow_handle::<ImageScan>(&workflow_id);
        let result = handle
            .query(ImageScan::result, (), Default::default())
            .await
            .map_err(|e| anyhow::anyhow!("querying {workflow_id}: {e}"))?;
        let source = Source::Entity {
            workflow_id: workflow_id.clone(),
        };
        let unknown = "the entity runs and has no result yet: its first scan is under way";
        (source, result, None, unknown.to_string())
    } else {
        let source = Source::ResultsStore {
            store: store.describe(),
            entity: entity.clone(),
        };
        let result = store
            .last_scan(&digest)
            .await?
            .map(|last| last.into_result());
        let known = format!(
            "no ImageScan entity runs for this digest ({workflow_id}: {entity}); this is \
             its last completed scan"
        );
        let unknown = format!(
            "nothing known: no ImageScan entity runs ({workflow_id}: {entity}) and the \
             results store has no verdict for it; `qflows scan <image-ref>@{digest}` scans it"
        );
        (source, result, Some(known), unknown)
    };
    let report = match result {
        Some(result) => {
            let (outcome, exit_code) = outcome(std::slice::from_ref(&result));
            StatusReport {
                digest: digest.clone(),
                source,
                outcome,
                exit_code,
                image: Some(image_report(&store, result, args.top).await),
                note: note_if_known,
            }
        }
        None => StatusReport {
            digest: digest.clone(),
            source,
            outcome: "error",
            exit_code: EXIT_ERROR,
            image: None,
            note: Some(note_if_unknown),
        },
    };
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print!("{}", render_status(&report, colours())),
    }
    Ok(report.exit_code)
}

/// The plain-text form of `qflows scan status`.
pub fn render_status(report: &StatusReport, colour: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let source = match &report.source {
        Source::Entity { workflow_id } => {
            format!("the running entity {workflow_id} (query `result`)")
        }
        Source::ResultsStore { store, entity } => {
            format!("the results store {store} (entity: {entity})")
        }
    };
    let _ = writeln!(out, "{}", report.digest);
    let _ = writeln!(out, "  answered by {source}");
    if let Some(note) = &report.note {
        let _ = writeln!(out, "  {note}");
    }
    if let Some(image) = &report.image {
        out.push('\n');
        render_image(&mut out, image, colour);
    }
    let _ = writeln!(out, "\n{} (exit {})", report.outcome, report.exit_code);
    out
}

/// `--reason`, checked (or the default).
fn rescan_reason(reason: Option<String>) -> anyhow::Result<String> {
    let Some(reason) = reason else {
        return Ok("requested with qflows scan rescan".to_string());
    };
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        anyhow::bail!("--reason: must not be empty");
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        anyhow::bail!("--reason: at most {MAX_REASON_CHARS} characters");
    }
    if reason.chars().any(char::is_control) {
        anyhow::bail!("--reason: must not contain control characters");
    }
    Ok(reason)
}

async fn rescan(temporal: &TemporalArgs, args: RescanArgs) -> anyhow::Result<u8> {
    let reason = rescan_reason(args.reason.clone())?;
    if args.running {
        return rescan_running(temporal, args, reason).await;
    }
    let digest = digest_of(args.target.as_deref().unwrap_or_default())?;
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let workflow_id = image_scan_id(&digest);
    let no_entity = |entity: &str| {
        anyhow::anyhow!(
            "no ImageScan entity runs for {digest} ({workflow_id}: {entity}), so there is nothing \
             to rescan; `qflows scan <image-ref>@{digest}` scans it"
        )
    };
    let (state, entity) = entity_state(&client, &workflow_id).await?;
    if state != Some(true) {
        return Err(no_entity(&entity));
    }
    let handle = client.get_workflow_handle::<ImageScan>(&workflow_id);
    match handle
        .signal(
            ImageScan::request_rescan,
            reason.clone(),
            Default::default(),
        )
        .await
    {
        Ok(()) => {}
        // It ended between the describe and the signal.
        Err(WorkflowInteractionError::NotFound(_)) => return Err(no_entity("ended")),
        Err(e) => anyhow::bail!("signalling {workflow_id}: {e}"),
    }
    println!(
        "rescan requested: {workflow_id} (reason: {reason}); `qflows scan status {digest}` shows \
         the new result once Qualys has scanned it"
    );
    Ok(EXIT_PASS)
}

/// `qflows scan rescan --running`: a rescan of every digest the latest inventories list, 16
/// signals at a time. A digest whose entity does not run is counted and left alone: the next
/// inventory starts it, and it scans then.
async fn rescan_running(
    temporal: &TemporalArgs,
    args: RescanArgs,
    reason: String,
) -> anyhow::Result<u8> {
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let results = args.results.store().await?;
    let scopes = if args.scopes.is_empty() {
        super::inventory::inventoried_scopes(&client).await?
    } else {
        args.scopes.iter().cloned().collect()
    };
    let mut digests = std::collections::BTreeSet::new();
    for scope in &scopes {
        match results.latest_inventory(scope).await? {
            Some(record) => digests.extend(record.digests.into_iter().map(|d| d.digest)),
            None => eprintln!("{scope}: no inventory stored yet"),
        }
    }
    if digests.is_empty() {
        anyhow::bail!("no running digest: no inventory lists one (run `qflows inventory run`)");
    }
    let signals = digests.iter().map(|digest| {
        let (client, reason) = (&client, reason.clone());
        async move {
            client
                .get_workflow_handle::<ImageScan>(image_scan_id(digest))
                .signal(ImageScan::request_rescan, reason, Default::default())
                .await
        }
    });
    use futures::StreamExt;
    let outcomes: Vec<_> = futures::stream::iter(signals)
        .buffer_unordered(16)
        .collect()
        .await;
    let not_running = outcomes
        .iter()
        .filter(|o| matches!(o, Err(WorkflowInteractionError::NotFound(_))))
        .count();
    if let Some(Err(e)) = outcomes
        .iter()
        .find(|o| matches!(o, Err(e) if !matches!(e, WorkflowInteractionError::NotFound(_))))
    {
        anyhow::bail!("signalling the entities: {e}");
    }
    println!(
        "rescan requested for {} running digest(s) over {} scope(s); {not_running} had no entity \
         running (the next inventory starts them)",
        digests.len() - not_running,
        scopes.len()
    );
    Ok(EXIT_PASS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: ImageStatus, verdict: Option<Verdict>) -> ImageResult {
        ImageResult {
            profile: None,
            digest: format!("sha256:{}", "a".repeat(64)),
            image: "example.com/app:1".into(),
            status,
            verdict,
            summary: None,
            result_ref: None,
            reason: None,
            backend: None,
            scanned_at: None,
        }
    }

    #[test]
    fn only_scanned_images_pass_and_a_failed_gate_wins() {
        use ImageStatus::*;
        let pass = result(Scanned, Some(Verdict::Pass));
        let audit = result(Scanned, Some(Verdict::Audit));
        let fail = result(Scanned, Some(Verdict::Fail));
        assert_eq!(outcome(std::slice::from_ref(&pass)), ("pass", 0));
        assert_eq!(outcome(&[pass.clone(), audit.clone()]), ("audit", 0));
        assert_eq!(outcome(&[pass.clone(), fail.clone()]), ("fail", 1));
        // The worker's unscanned policy may say audit or even pass: not scanned is not a pass.
        for status in [Skipped, TimedOut, Failed] {
            for verdict in [None, Some(Verdict::Pass), Some(Verdict::Audit)] {
                assert_eq!(
                    outcome(&[pass.clone(), result(status, verdict)]),
                    ("error", 2)
                );
            }
        }
        assert_eq!(
            outcome(&[result(Skipped, Some(Verdict::Pass)), fail]),
            ("fail", 1)
        );
        assert_eq!(outcome(&[result(Scanned, None)]), ("error", 2));
        assert_eq!(outcome(&[]), ("error", 2));
    }

    #[test]
    fn the_workflow_id_follows_the_set_of_references() {
        let a = plan(&["nginx:1.27".into(), "ghcr.io/acme/app:2".into()]).unwrap();
        let b = plan(&[
            "ghcr.io/acme/app:2".into(),
            "docker.io/library/nginx:1.27".into(),
        ])
        .unwrap();
        assert_eq!(a.workflow_id, b.workflow_id);
        assert!(a.workflow_id.starts_with("scan-cli-"), "{}", a.workflow_id);
        let c = plan(&["nginx:1.28".into()]).unwrap();
        assert_ne!(a.workflow_id, c.workflow_id);
        assert_eq!(a.input["images"][0], "nginx:1.27");
    }

    #[test]
    fn bad_references_are_named() {
        let err = plan(&["nginx".into(), "Not A Ref".into()]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("IMAGE-REF #2"), "{text}");
        assert!(text.contains("Not A Ref"), "{text}");
    }

    #[test]
    fn status_targets_must_name_a_digest() {
        let digest = format!("sha256:{}", "b".repeat(64));
        assert_eq!(digest_of(&digest).unwrap(), digest);
        assert_eq!(
            digest_of(&format!("example.com/app:1@{digest}")).unwrap(),
            digest
        );
        let err = digest_of("nginx:1.27").unwrap_err().to_string();
        assert!(err.contains("names no digest"), "{err}");
        assert!(err.contains("qflows scan nginx:1.27"), "{err}");
        let err = digest_of("sha256:ABC").unwrap_err().to_string();
        assert!(err.contains("not a digest"), "{err}");
    }
}
