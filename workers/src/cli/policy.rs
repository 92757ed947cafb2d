//! `qflows policy …`: CDR findings → Tetragon policies offline, and review commands for a
//! running CdrToPolicy (`qflows schedule cdr` is in `schedule.rs`).

use crate::config::TemporalArgs;
use crate::temporal;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use qflows_activities::cdr::generate::read_document_grouped;
use qflows_activities::cdr::generate::{Generation, Grouper, generate};
use qflows_activities::cdr::output::{Outcome, write_file};
use qflows_activities::cdr::render::RenderOptions;
use qflows_workflows::CdrToPolicy;
use qflows_workflows::cdr::evidence::{AuditStyle, Enforcement, TetragonVersion, dns_label};
use qflows_workflows::cdr::model::{
    FindingsReport, PoliciesQuery, PoliciesView, PolicyRecord, ReviewRequest,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use temporalio_client::{WorkflowExecuteUpdateOptions, WorkflowQueryOptions};

/// `qflows policy …`.
#[allow(missing_docs)] // the fields are flag groups, documented where they are defined
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Findings file → validated policy files, offline (no Temporal, no Qualys): for PR review.
    Generate {
        #[command(flatten)]
        args: GenerateArgs,
    },
    /// Switch a policy of a running CdrToPolicy to enforcement.
    Promote {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: ReviewArgs,
    },
    /// Return a policy of a running CdrToPolicy to audit.
    Rollback {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: ReviewArgs,
    },
    /// Print the policies a running CdrToPolicy manages (every page of the `policiesPage` query).
    List {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: ListArgs,
    },
}

/// `qflows policy …`: generate offline, promote or roll back a review, list.
pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Generate { args } => {
            let output = args.output.clone();
            let summary = generate_offline(args)?;
            print_summary(&summary, &output);
            Ok(())
        }
        PolicyCommand::Promote { temporal, args } => review(&temporal, args, true).await,
        PolicyCommand::Rollback { temporal, args } => review(&temporal, args, false).await,
        PolicyCommand::List { temporal, args } => list(&temporal, args).await,
    }
}

/// `--action`: the form policies are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Audit: events only.
    #[value(name = "Post")]
    Post,
    /// Block: Sigkill (and Override where the hook allows it), scoped to the workload.
    #[value(name = "Sigkill")]
    Sigkill,
}

/// `--audit-style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Style {
    /// `Post` actions.
    Post,
    /// Block actions under `policy-mode: monitor`.
    Monitor,
}

impl From<Style> for AuditStyle {
    fn from(s: Style) -> Self {
        match s {
            Style::Post => AuditStyle::Post,
            Style::Monitor => AuditStyle::Monitor,
        }
    }
}

/// `--tetragon-version`: the oldest Tetragon release, e.g. `1.7`.
pub fn version(s: &str) -> Result<TetragonVersion, String> {
    TetragonVersion::parse(s)
}

/// Flags of `qflows policy generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Findings file: the CDR API's answer (`{"content": [...]}`) or a JSON array of findings.
    #[arg(long)]
    pub findings: PathBuf,
    /// `Post` (audit) or `Sigkill` (block).
    #[arg(long, value_enum, default_value = "Post")]
    pub action: Action,
    /// Directory for one `<name>.yaml` per policy.
    #[arg(long)]
    pub output: PathBuf,
    /// Oldest Tetragon release the policies must load on (at least 1.4).
    #[arg(long, value_parser = version, default_value = "1.7")]
    pub tetragon_version: TetragonVersion,
    /// How `Post` policies are written: `post`, or `monitor` (block actions under
    /// `policy-mode: monitor`).
    #[arg(long, value_enum, default_value = "post")]
    pub audit_style: Style,
    /// Label `qflows.io/policy-set` of the generated policies.
    #[arg(long, default_value = "default")]
    pub policy_set: String,
}

/// What an offline run did.
#[derive(Debug, Default)]
pub struct GenerateSummary {
    /// Findings report.
    pub findings: FindingsReport,
    /// Rendered and refused policies.
    pub generation: Generation,
    /// Files created, updated, unchanged.
    pub written: [usize; 3],
    /// Time per phase.
    pub phases: Phases,
}

/// How long each phase of a run took.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    /// Reading the file.
    pub read: Duration,
    /// Parsing findings and grouping them into evidence.
    pub parse_and_group: Duration,
    /// Rendering and validating policies.
    pub render_and_validate: Duration,
    /// Writing policy files.
    pub write: Duration,
}

/// Reads a findings file and returns the generation (no I/O besides the read).
pub fn generate_from_file(
    path: &std::path::Path,
    enforcement: Enforcement,
    opts: &RenderOptions,
) -> anyhow::Result<(FindingsReport, Generation, Phases)> {
    let t0 = Instant::now();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let t1 = Instant::now();
    // One pass: each finding is read with its strings borrowed from `bytes` and recorded
    // into its group at once (no per-finding allocation, no second thread to feed).
    let mut grouper = Grouper::default();
    let parsed = read_document_grouped(&bytes, &mut grouper);
    parsed.with_context(|| {
        format!(
            "{} is not a findings document (a JSON array of findings, or {{\"content\": [...]}})",
            path.display()
        )
    })?;
    drop(bytes);
    let t2 = Instant::now();
    let (groups, report) = grouper.finish();
    let generation = generate(groups.iter().map(|(k, e)| (k, e, enforcement)), opts);
    let phases = Phases {
        read: t1 - t0,
        parse_and_group: t2 - t1,
        render_and_validate: t2.elapsed(),
        write: Duration::ZERO,
    };
    Ok((report, generation, phases))
}

/// `qflows policy generate`: findings file → validated policy files, no Temporal, no Qualys.
pub fn generate_offline(args: GenerateArgs) -> anyhow::Result<GenerateSummary> {
    let opts = RenderOptions {
        tetragon_version: args.tetragon_version,
        audit_style: args.audit_style.into(),
        policy_set: Some(dns_label(&args.policy_set)),
    };
    let enforcement = match args.action {
        Action::Post => Enforcement::Audit,
        Action::Sigkill => Enforcement::Enforce,
    };
    let (findings, generation, mut phases) =
        generate_from_file(&args.findings, enforcement, &opts)?;
    let started = Instant::now();
    let mut written = [0; 3];
    for g in &generation.policies {
        let i = match write_file(&args.output, g)? {
            Outcome::Created => 0,
            Outcome::Updated => 1,
            Outcome::Unchanged => 2,
        };
        written[i] += 1;
    }
    phases.write = started.elapsed();
    Ok(GenerateSummary {
        findings,
        generation,
        written,
        phases,
    })
}

/// Prints the summary of an offline run (to stderr: stdout stays free for pipes).
pub fn print_summary(s: &GenerateSummary, output: &std::path::Path) {
    let f = &s.findings;
    eprintln!(
        "findings: {} read, {} used, {} skipped",
        f.findings,
        f.used,
        f.skipped.values().sum::<u64>()
    );
    for (reason, n) in &f.skipped {
        eprintln!("  skipped {n}: {reason}");
    }
    for (name, n) in &f.unknown_categories {
        eprintln!("  unknown category {name:?}: {n} finding(s), no policy generated");
    }
    eprintln!(
        "policies: {} written to {} ({} new, {} changed, {} unchanged), {} refused",
        s.generation.policies.len(),
        output.display(),
        s.written[0],
        s.written[1],
        s.written[2],
        s.generation.refused.len()
    );
    for g in &s.generation.policies {
        eprintln!("  {}.yaml", g.name);
    }
    for (name, why) in &s.generation.refused {
        eprintln!("  refused {name}: {why}");
    }
}

/// Flags naming a running CdrToPolicy.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Policy set (workflow ID `cdr-<policy-set>`), or use --workflow-id.
    #[arg(long, default_value = "default")]
    pub policy_set: String,
    /// Workflow ID of the CdrToPolicy, when not `cdr-<policy-set>`.
    #[arg(long)]
    pub workflow_id: Option<String>,
}

impl TargetArgs {
    fn workflow_id(&self) -> String {
        self.workflow_id
            .clone()
            .unwrap_or_else(|| format!("cdr-{}", self.policy_set))
    }
}

/// Flags of `qflows policy promote|rollback`.
#[derive(Debug, Clone, Args)]
pub struct ReviewArgs {
    /// Which workflow.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Policy name (see `qflows policy list`).
    #[arg(long)]
    pub policy: String,
    /// Reviewer.
    #[arg(long)]
    pub by: String,
    /// Reason.
    #[arg(long)]
    pub reason: String,
    /// The request lapses if not applied within this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// `promote`: the `observedDigest` of the values you reviewed (`qflows policy list --policy
    /// …`). Without it, the command shows the policy's observed values and promotes exactly those.
    #[arg(long)]
    pub observed: Option<String>,
}

/// Flags of `qflows policy list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Which workflow.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Only this policy.
    #[arg(long)]
    pub policy: Option<String>,
    /// Only policies in this enforcement (`audit` or `enforce`).
    #[arg(long, value_parser = enforcement)]
    pub enforcement: Option<Enforcement>,
    /// Only policies with observed values (they wait for a person before they can block).
    #[arg(long)]
    pub observed_only: bool,
}

fn enforcement(s: &str) -> Result<Enforcement, String> {
    match s {
        "audit" => Ok(Enforcement::Audit),
        "enforce" => Ok(Enforcement::Enforce),
        _ => Err(format!("{s:?}: use audit or enforce")),
    }
}

/// Sends `promote` (or `rollback`) to a running CdrToPolicy and returns the policy as applied.
pub async fn send_review(
    client: &temporalio_client::Client,
    workflow_id: &str,
    request: ReviewRequest,
    promote: bool,
) -> anyhow::Result<PolicyRecord> {
    let handle = client.get_workflow_handle::<CdrToPolicy>(workflow_id);
    let opts = WorkflowExecuteUpdateOptions::default();
    let result = if promote {
        handle
            .execute_update(CdrToPolicy::promote, request, opts)
            .await
    } else {
        handle
            .execute_update(CdrToPolicy::rollback, request, opts)
            .await
    };
    result.map_err(|e| anyhow::anyhow!("{workflow_id}: {e:?}"))
}

/// Every policy of a running CdrToPolicy matching `filter`: all pages of the `policiesPage`
/// query, as one view (a worker from before paging answers only `policies`, all at once). Pages
/// read across a sync are read again, so the view is of one moment.
pub async fn query_policies_matching(
    client: &temporalio_client::Client,
    workflow_id: &str,
    filter: PoliciesQuery,
) -> anyhow::Result<PoliciesView> {
    let handle = client.get_workflow_handle::<CdrToPolicy>(workflow_id);
    let mut attempts = 0;
    'again: loop {
        attempts += 1;
        let mut all: Option<PoliciesView> = None;
        let mut offset = 0;
        loop {
            let query = PoliciesQuery {
                offset,
                ..filter.clone()
            };
            let page = match handle
                .query(
                    CdrToPolicy::policies_page,
                    query,
                    WorkflowQueryOptions::default(),
                )
                .await
            {
                Ok(page) => page,
                Err(e) if all.is_none() && format!("{e:?}").contains("policiesPage") => {
                    return handle
                        .query(CdrToPolicy::policies, (), WorkflowQueryOptions::default())
                        .await
                        .map_err(|e| anyhow::anyhow!("{workflow_id}: {e:?}"));
                }
                Err(e) => return Err(anyhow::anyhow!("{workflow_id}: {e:?}")),
            };
            let next = page.next_offset;
            match &mut all {
                None => all = Some(page),
                Some(view) if view.last_sync != page.last_sync && attempts < 5 => {
                    continue 'again;
                }
                Some(view) => {
                    view.policies.extend(page.policies);
                    view.total = page.total;
                }
            }
            match next {
                Some(n) if n > offset => offset = n,
                _ => break,
            }
        }
        let mut view = all.unwrap_or_default();
        view.next_offset = None;
        return Ok(view);
    }
}

/// Every policy of a running CdrToPolicy, and its last sync report.
pub async fn query_policies(
    client: &temporalio_client::Client,
    workflow_id: &str,
) -> anyhow::Result<PoliciesView> {
    query_policies_matching(client, workflow_id, PoliciesQuery::default()).await
}

/// One policy of a running CdrToPolicy, if it has it.
pub async fn query_policy(
    client: &temporalio_client::Client,
    workflow_id: &str,
    name: &str,
) -> anyhow::Result<Option<PolicyRecord>> {
    let filter = PoliciesQuery {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let view = query_policies_matching(client, workflow_id, filter).await?;
    Ok(view.policies.into_iter().find(|p| p.name == name))
}

/// A `promote` request for what the policy shows now: its observed values' digest (printed, so
/// the reviewer sees exactly what will block).
pub async fn promote_as_shown(
    client: &temporalio_client::Client,
    workflow_id: &str,
    mut request: ReviewRequest,
) -> anyhow::Result<ReviewRequest> {
    let Some(policy) = query_policy(client, workflow_id, &request.policy).await? else {
        anyhow::bail!(
            "{workflow_id} has no policy {:?} (see qflows policy list)",
            request.policy
        );
    };
    eprintln!(
        "{}: observed values its blocking form will carry: {} (observedDigest {})",
        policy.name,
        policy.observed.describe(),
        policy.observed_digest
    );
    request.observed = Some(policy.observed_digest);
    Ok(request)
}

/// `qflows policy promote` / `rollback`: sends the update and prints the policy.
pub async fn review(
    temporal: &TemporalArgs,
    args: ReviewArgs,
    promote: bool,
) -> anyhow::Result<()> {
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let workflow_id = args.target.workflow_id();
    let mut request = ReviewRequest {
        policy: args.policy,
        by: args.by,
        reason: args.reason,
        timeout_secs: args.timeout_secs,
        observed: args.observed,
    };
    if promote && request.observed.is_none() {
        request = promote_as_shown(&client, &workflow_id, request).await?;
    }
    let record = send_review(&client, &workflow_id, request, promote).await?;
    println!("{}", serde_json::to_string_pretty(&record)?);
    Ok(())
}

/// `qflows policy list`: every page of the `policiesPage` query, as one JSON view.
pub async fn list(temporal: &TemporalArgs, args: ListArgs) -> anyhow::Result<()> {
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let filter = PoliciesQuery {
        name: args.policy,
        enforcement: args.enforcement,
        observed_only: args.observed_only,
        ..Default::default()
    };
    let view = query_policies_matching(&client, &args.target.workflow_id(), filter).await?;
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}
