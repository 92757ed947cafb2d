//! `qflows quarantine …`: propose a quarantine (starts `Quarantine`), approve or reject it, and
//! read its recorded state.

use super::flags::parse_duration;
use crate::config::TemporalArgs;
use crate::temporal;
use clap::{Args, Subcommand};
use qflows_workflows::Quarantine;
use qflows_workflows::input::parse;
use qflows_workflows::quarantine::model::{QuarantineDecision, QuarantineInput, QuarantineView};
use std::time::Duration;
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowIdConflictPolicy, WorkflowQueryOptions,
    WorkflowStartOptions,
};

/// `qflows quarantine …`.
// Parsed once per process: the size difference of its variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[allow(missing_docs)] // the fields are flag groups, documented where they are defined
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Propose a quarantine: reads the target, then waits for approval (changes nothing yet).
    Start {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: StartArgs,
    },
    /// Approve: roll the ECS service back to its previous task definition, or deactivate the
    /// container app revision; prints the recorded state.
    Approve {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: DecideArgs,
    },
    /// Reject: nothing changes.
    Reject {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: DecideArgs,
    },
    /// Print what a quarantine recorded (target, plan, decision, what changed).
    Status {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: StatusArgs,
    },
}

/// `qflows quarantine …`: start, approve, reject, status.
pub async fn run(command: QuarantineCommand) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::Start { temporal, args } => start(&temporal, args).await,
        QuarantineCommand::Approve { temporal, args } => decide(&temporal, args, true).await,
        QuarantineCommand::Reject { temporal, args } => decide(&temporal, args, false).await,
        QuarantineCommand::Status { temporal, args } => status(&temporal, args).await,
    }
}

/// Flags of `qflows quarantine start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// ECS cluster of the service.
    #[arg(long, requires = "service", conflicts_with = "revision_id")]
    pub cluster: Option<String>,
    /// ECS service to roll back.
    #[arg(long, requires = "cluster")]
    pub service: Option<String>,
    /// ECS region (default us-east-1).
    #[arg(long, requires = "cluster")]
    pub region: Option<String>,
    /// AWS account that owns the service (default: the worker's own).
    #[arg(long, requires = "cluster")]
    pub account_id: Option<String>,
    /// Roll back to this task definition (`family:revision` or ARN) instead of the previous one.
    #[arg(long, requires = "cluster")]
    pub rollback_to: Option<String>,
    /// Container app revision to deactivate (its Resource Manager ID).
    #[arg(long, required_unless_present = "cluster")]
    pub revision_id: Option<String>,
    /// The image as it runs.
    #[arg(long)]
    pub image: String,
    /// The quarantined digest, sha256:<64 hex>.
    #[arg(long)]
    pub digest: String,
    /// The verdict's summary (worst CVEs), recorded with the quarantine.
    #[arg(long, default_value = "")]
    pub summary: String,
    /// How long the approval waits (30s, 1h, 2d); then it lapses and changes nothing.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub approval_timeout: Duration,
    /// Who proposes it (recorded).
    #[arg(long)]
    pub proposed_by: Option<String>,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
}

/// Flags of `qflows quarantine approve|reject`.
#[derive(Debug, Clone, Args)]
pub struct DecideArgs {
    /// Workflow ID (`qflows quarantine start` prints it).
    pub workflow_id: String,
    /// Who decides.
    #[arg(long)]
    pub by: String,
    /// Why.
    #[arg(long)]
    pub reason: String,
}

/// Flags of `qflows quarantine status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Workflow ID.
    pub workflow_id: String,
}

/// The workflow input of `args`, checked as the workflow would check it.
pub fn input(args: &StartArgs) -> anyhow::Result<QuarantineInput> {
    let target = match &args.revision_id {
        Some(id) => serde_json::json!({"kind": "containerApp", "revisionId": id}),
        None => serde_json::json!({
            "kind": "ecs",
            "cluster": args.cluster,
            "service": args.service,
            "region": args.region,
            "accountId": args.account_id,
            "rollbackTo": args.rollback_to,
        }),
    };
    let mut target = target;
    if let Some(map) = target.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let value = serde_json::json!({
        "target": target,
        "image": args.image,
        "digest": args.digest,
        "verdict": {"verdict": "fail", "summary": args.summary},
        "approvalTimeoutSecs": args.approval_timeout.as_secs(),
        "proposedBy": args.proposed_by,
    });
    Ok(parse(value)?)
}

/// `qflows quarantine start`: starts the proposal (or finds the one running for the same
/// target and digest) and prints its workflow ID.
pub async fn start(temporal: &TemporalArgs, args: StartArgs) -> anyhow::Result<()> {
    let input = input(&args)?;
    let workflow_id = input.workflow_id();
    let client = temporal::connect(temporal, "qflows-cli").await?;
    client
        .start_workflow(
            Quarantine::run,
            serde_json::to_value(&input)?,
            WorkflowStartOptions::new(args.task_queue, workflow_id.clone())
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .build(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting {workflow_id}: {e}"))?;
    eprintln!(
        "quarantine {workflow_id} proposed (or already waiting); nothing changes until \
         `qflows quarantine approve {workflow_id} --by … --reason …`"
    );
    println!("{workflow_id}");
    Ok(())
}

/// Sends `approve` (or `reject`) and returns the recorded state once the run has acted.
pub async fn send_decision(
    client: &temporalio_client::Client,
    workflow_id: &str,
    decision: QuarantineDecision,
    approve: bool,
) -> anyhow::Result<QuarantineView> {
    let handle = client.get_workflow_handle::<Quarantine>(workflow_id);
    let opts = WorkflowExecuteUpdateOptions::default();
    let result = if approve {
        handle
            .execute_update(Quarantine::approve, decision, opts)
            .await
    } else {
        handle
            .execute_update(Quarantine::reject, decision, opts)
            .await
    };
    result.map_err(|e| anyhow::anyhow!("{workflow_id}: {e}"))
}

/// `qflows quarantine approve|reject`.
pub async fn decide(
    temporal: &TemporalArgs,
    args: DecideArgs,
    approve: bool,
) -> anyhow::Result<()> {
    let decision = QuarantineDecision {
        by: args.by,
        reason: args.reason,
    };
    if let Some(why) = decision.refusal() {
        anyhow::bail!("{why}");
    }
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let view = send_decision(&client, &args.workflow_id, decision, approve).await?;
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}

/// `qflows quarantine status`: the `state` query.
pub async fn status(temporal: &TemporalArgs, args: StatusArgs) -> anyhow::Result<()> {
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let view = client
        .get_workflow_handle::<Quarantine>(&args.workflow_id)
        .query(Quarantine::state, (), WorkflowQueryOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.workflow_id))?;
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}
