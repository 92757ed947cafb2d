//! `qflows policy …` and `qflows schedule cdr`: CDR findings → Tetragon policies offline, review
//! commands for a running CdrToPolicy, and the Temporal Schedule that replaces the CDR policy
//! operator's CronJob.

use crate::config::TemporalArgs;
use crate::temporal;
use anyhow::Context;
use clap::{Args, ValueEnum};
use qflows_activities::cdr::generate::read_document_grouped;
use qflows_activities::cdr::generate::{Generation, Grouper, generate};
use qflows_activities::cdr::output::{Outcome, write_file};
use qflows_activities::cdr::render::RenderOptions;
use qflows_workflows::CdrToPolicy;
use qflows_workflows::cdr::evidence::{AuditStyle, Enforcement, TetragonVersion, dns_label};
use qflows_workflows::cdr::model::{
    CdrToPolicyInput, FindingsReport, KubeTarget, OutputSettings, PoliciesQuery, PoliciesView,
    PolicyRecord, ReviewRequest, ReviewSettings,
};
use qflows_workflows::input::parse;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use temporalio_client::schedules::{
    CreateScheduleOptions, ScheduleAction, ScheduleOverlapPolicy, ScheduleSpec,
};
use temporalio_client::{WorkflowExecuteUpdateOptions, WorkflowQueryOptions};

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

fn version(s: &str) -> Result<TetragonVersion, String> {
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

/// Parses `90s`, `30m`, `1h`, `1h30m`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("{s:?}: use a duration like 30m, 1h or 1h30m")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {c}"))?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(format!("{s:?}: use a duration like 30s, 30m, 1h30m or 2d"));
    }
    Ok(Duration::from_secs(total))
}

/// [`parse_duration`], at least a minute.
pub fn parse_every(s: &str) -> Result<Duration, String> {
    let every = parse_duration(s)?;
    if every < Duration::from_secs(60) {
        return Err(format!(
            "{s:?}: use a duration of at least 1m like 30m, 1h or 1h30m"
        ));
    }
    Ok(every)
}

/// Flags of `qflows schedule cdr`.
#[derive(Debug, Clone, Args)]
pub struct ScheduleCdrArgs {
    /// How often: `30m`, `1h`, `1h30m`, `1d`.
    #[arg(long, value_parser = parse_every)]
    pub every: Duration,
    /// Policy set (schedule ID `cdr-<policy-set>`).
    #[arg(long, default_value = "default")]
    pub policy_set: String,
    /// Directory on the worker for the policy files.
    #[arg(long)]
    pub output_dir: Option<String>,
    /// Apply to the cluster of this kubeconfig context (on the worker).
    #[arg(long)]
    pub kube_context: Option<String>,
    /// Apply to the worker's default cluster (in-cluster config or current context).
    #[arg(long)]
    pub apply: bool,
    /// Oldest Tetragon release the policies must load on.
    #[arg(long, value_parser = version, default_value = "1.7")]
    pub tetragon_version: TetragonVersion,
    /// How audit policies are written.
    #[arg(long, value_enum, default_value = "post")]
    pub audit_style: Style,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Start the first run now instead of after one interval.
    #[arg(long)]
    pub trigger_now: bool,
}

/// The input every scheduled run gets: one sync over the last interval (rounded up to hours,
/// plus one hour of overlap so no finding falls between runs), closed straight after.
pub fn scheduled_input(args: &ScheduleCdrArgs) -> anyhow::Result<CdrToPolicyInput> {
    let hours = args.every.as_secs().div_ceil(3600) as u32 + 1;
    let kubernetes = (args.apply || args.kube_context.is_some()).then(|| KubeTarget {
        context: args.kube_context.clone(),
        kubeconfig: None,
    });
    let input = CdrToPolicyInput {
        policy_set: args.policy_set.clone(),
        lookback_hours: hours,
        start_at: None,
        end_at: None,
        filters: Default::default(),
        tetragon_version: args.tetragon_version,
        audit_style: args.audit_style.into(),
        output: OutputSettings {
            directory: args.output_dir.clone(),
            kubernetes,
        },
        review: ReviewSettings {
            open_hours: 0,
            ..Default::default()
        },
        sync_every_minutes: None,
        prune_after_hours: None,
        carried: None,
    };
    // The same checks the workflow makes, before anything is created.
    let value = serde_json::to_value(&input)?;
    let _: CdrToPolicyInput = parse(value)?;
    Ok(input)
}

/// `qflows schedule cdr`: creates the Temporal Schedule.
pub async fn schedule_cdr(temporal: &TemporalArgs, args: ScheduleCdrArgs) -> anyhow::Result<()> {
    let input = scheduled_input(&args)?;
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let id = format!("cdr-{}", args.policy_set);
    let action = ScheduleAction::start_workflow(
        CdrToPolicy::run,
        serde_json::to_value(&input)?,
        args.task_queue.clone(),
        format!("{id}-scheduled"),
    );
    let options = CreateScheduleOptions::builder()
        .action(action)
        .spec(ScheduleSpec::from_interval(args.every))
        .overlap_policy(ScheduleOverlapPolicy::Skip)
        .trigger_immediately(args.trigger_now)
        .note("created by qflows schedule cdr")
        .build();
    client
        .create_schedule(id.clone(), options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create schedule {id}: {e}"))?;
    eprintln!(
        "schedule {id} created: CdrToPolicy every {} s on task queue {}",
        args.every.as_secs(),
        args.task_queue
    );
    Ok(())
}
