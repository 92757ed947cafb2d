//! CLI commands that start workflows: inputs are checked here, before anything is started.

use crate::config::TemporalArgs;
use crate::temporal;
use clap::Args;
use qflows_workflows::EnsureRegistry;
use qflows_workflows::input::parse;
use qflows_workflows::registry::model::EnsureRegistryInput;
use temporalio_client::{WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions};

/// Flags of `qflows registry ensure`.
#[derive(Debug, Clone, Args)]
pub struct EnsureRegistryArgs {
    /// AWS account ID (12 digits).
    #[arg(long)]
    pub account_id: String,
    /// AWS region, e.g. us-east-1.
    #[arg(long)]
    pub region: String,
    /// Role Qualys assumes (default: the worker's QFLOWS_SCAN_ROLE_NAME in the account).
    #[arg(long)]
    pub role_arn: Option<String>,
    /// Create or update that IAM role.
    #[arg(long)]
    pub create_role: bool,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Start and return at once instead of waiting for the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// Starts (or attaches to) `EnsureRegistry` for an account and region and prints its result.
pub async fn ensure_registry(
    temporal: &TemporalArgs,
    args: EnsureRegistryArgs,
) -> anyhow::Result<()> {
    let input = serde_json::json!({
        "accountId": args.account_id,
        "region": args.region,
        "roleArn": args.role_arn,
        "createRole": args.create_role,
    });
    // Reject bad input before starting anything, with the same message the workflow would give.
    let typed: EnsureRegistryInput = parse(input.clone())?;
    let workflow_id = typed.workflow_id();
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let handle = client
        .start_workflow(
            EnsureRegistry::run,
            input,
            WorkflowStartOptions::new(args.task_queue, workflow_id.clone())
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .build(),
        )
        .await?;
    eprintln!("workflow {workflow_id} started (or already running)");
    if args.no_wait {
        return Ok(());
    }
    let output = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("EnsureRegistry {workflow_id} failed: {e:?}"))?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
