//! `qflows schedule inventory` and `qflows schedule cdr`: Temporal Schedules that run a
//! scope's `Inventory`, or `CdrToPolicy` (replacing the CDR policy operator's CronJob), on a
//! fixed interval, overlapping runs skipped.

use super::flags::parse_every;
use super::inventory::{ScopeArgs, workflow_id};
use super::policy::{Style, version};
use crate::config::TemporalArgs;
use crate::temporal;
use clap::{Args, Subcommand};
use qflows_workflows::cdr::evidence::TetragonVersion;
use qflows_workflows::cdr::model::{CdrToPolicyInput, KubeTarget, OutputSettings, ReviewSettings};
use qflows_workflows::input::parse;
use qflows_workflows::inventory::InventoryInput;
use qflows_workflows::{CdrToPolicy, Inventory};
use std::time::Duration;
use temporalio_client::Client;
use temporalio_client::schedules::{
    CreateScheduleOptions, ScheduleAction, ScheduleHandle, ScheduleOverlapPolicy, ScheduleSpec,
};

/// `qflows schedule …`.
#[allow(missing_docs)] // the fields are flag groups, documented where they are defined
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Take a scope's inventory on a fixed interval (overlapping runs are skipped).
    Inventory {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: ScheduleInventoryArgs,
    },
    /// Run CdrToPolicy on a fixed interval (replaces the CDR policy operator's CronJob).
    Cdr {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: ScheduleCdrArgs,
    },
}

/// `qflows schedule …`: run CdrToPolicy or an inventory on a fixed interval.
pub async fn run(command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::Cdr { temporal, args } => schedule_cdr(&temporal, args).await,
        ScheduleCommand::Inventory { temporal, args } => schedule_inventory(&temporal, args).await,
    }
}

/// Creates the Schedule `id`: `action` every `every`, overlapping runs skipped, the first one
/// now if `trigger_now`; `note` says which command made it.
async fn create(
    client: &Client,
    id: &str,
    action: ScheduleAction,
    every: Duration,
    trigger_now: bool,
    note: &str,
) -> anyhow::Result<ScheduleHandle<Client>> {
    let options = CreateScheduleOptions::builder()
        .action(action)
        .spec(ScheduleSpec::from_interval(every))
        .overlap_policy(ScheduleOverlapPolicy::Skip)
        .trigger_immediately(trigger_now)
        .note(note)
        .build();
    client
        .create_schedule(id, options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create schedule {id}: {e}"))
}

/// Flags of `qflows schedule inventory`.
#[derive(Debug, Clone, Args)]
pub struct ScheduleInventoryArgs {
    /// The scope.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// How often, e.g. 6h. What a run sees counts as running for three intervals.
    #[arg(long, value_parser = parse_every)]
    pub every: Duration,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Take the first inventory now rather than after one interval.
    #[arg(long)]
    pub trigger_now: bool,
}

/// Runs missed while Temporal or the workers were down are caught up within this window
/// only: one late inventory is as good as many.
const CATCHUP_WINDOW: Duration = Duration::from_secs(3600);

/// `qflows schedule inventory`: a Temporal Schedule per scope (overlapping runs skipped).
pub async fn schedule_inventory(
    temporal: &TemporalArgs,
    args: ScheduleInventoryArgs,
) -> anyhow::Result<()> {
    let scope = args.scope.scope()?;
    if args.every < Duration::from_secs(60) {
        anyhow::bail!("--every: an inventory at most once a minute");
    }
    let input = InventoryInput {
        scope: scope.clone(),
        stale_after_secs: Some(args.every.as_secs().saturating_mul(3)),
    };
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let id = workflow_id(&scope);
    let action = ScheduleAction::start_workflow(
        Inventory::run,
        serde_json::to_value(&input)?,
        args.task_queue.clone(),
        id.clone(),
    );
    let note = "created by qflows schedule inventory";
    let handle = create(&client, &id, action, args.every, args.trigger_now, note).await?;
    // The create call takes no catch-up window (SDK 1.1): set it right after.
    handle
        .update(
            |u| {
                u.set_catchup_window(CATCHUP_WINDOW);
            },
            Default::default(),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("schedule {id} created, but its catch-up window not set: {e}")
        })?;
    eprintln!(
        "schedule {id} created: Inventory of {} every {} s on task queue {}",
        scope.id(),
        args.every.as_secs(),
        args.task_queue
    );
    Ok(())
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
    let note = "created by qflows schedule cdr";
    create(&client, &id, action, args.every, args.trigger_now, note).await?;
    eprintln!(
        "schedule {id} created: CdrToPolicy every {} s on task queue {}",
        args.every.as_secs(),
        args.task_queue
    );
    Ok(())
}
