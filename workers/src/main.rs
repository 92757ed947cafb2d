//! `qflows`: Temporal workers that run Qualys container-security automation as durable workflows.

use clap::{CommandFactory, Parser, Subcommand};
use qflows::admission::{self, render::RenderArgs};
use qflows::bridge::{self, BridgeArgs};
use qflows::cli::{self, EnsureRegistryArgs};
use qflows::config::{
    AdmissionArgs, LogArgs, QualysArgs, ScanArgs, TemporalArgs, WorkerArgs, check_unknown_variables,
};
#[cfg(feature = "dev")]
use qflows::dev::{self, DevArgs};
use qflows::inventory::{self, InventoryRunArgs, ReportArgs, ScheduleInventoryArgs};
use qflows::policy::{self, GenerateArgs, ListArgs, ReviewArgs, ScheduleCdrArgs};
use qflows::qualys_cli::{self, QualysOutputArgs};
use qflows::quarantine::{self, DecideArgs, StartArgs, StatusArgs};
use qflows::scan_cli::{self, ScanCommand, ScanImagesArgs};
use qflows::sensor::{self, DeployArgs, SensorArgs};
use qflows::telemetry;
use qflows::worker::{self, WorkerConfig};
use std::process::ExitCode;

// Findings parsing and the worker allocate many small objects; mimalloc is markedly faster at
// that than glibc malloc (see `qflows-bench policy`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "qflows",
    version,
    about = "Qualys container security as durable Temporal workflows"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

// Without `dev`, `Worker` is the only variant with every flag group; the enum is parsed once.
#[cfg_attr(not(feature = "dev"), allow(clippy::large_enum_variant))]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve qflows' workflows and activities on a Temporal task queue.
    Worker {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        qualys: QualysArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        scan: ScanArgs,
    },
    /// Run a local Temporal dev server, the worker and (without credentials) the Qualys emulator.
    #[cfg(feature = "dev")]
    Dev {
        #[command(flatten)]
        dev: DevArgs,
        #[command(flatten)]
        qualys: QualysArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        scan: ScanArgs,
    },
    /// Not in this build: `qflows` was built without its `dev` feature (as the container image
    /// is). `cargo run -p qflows -- dev` builds it with the feature.
    #[cfg(not(feature = "dev"))]
    Dev {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Turn EventBridge, Event Grid, CloudEvents and SQS deliveries into ScanOnDeploy workflows.
    Bridge {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: BridgeArgs,
    },
    /// Kubernetes validating admission webhook: refuse, warn about or record images that fail
    /// their gate profile (HTTPS on QFLOWS_ADMISSION_LISTEN); `render` prints its manifests.
    #[command(args_conflicts_with_subcommands = true)]
    Admission {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: AdmissionArgs,
        #[command(flatten)]
        scan: ScanArgs,
        #[command(subcommand)]
        command: Option<AdmissionCommand>,
    },
    /// Scan images by hand (runs ScanOnDeploy and waits, like `trivy image`), read a
    /// digest's verdict, or ask for a rescan. Exit 0 pass/audit, 1 fail, 2 error or not scanned.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Scan {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: ScanImagesArgs,
        #[command(subcommand)]
        command: Option<ScanCommand>,
    },
    /// Qualys registry connectors.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// How qflows reaches Qualys.
    Qualys {
        #[command(subcommand)]
        command: QualysCommand,
    },
    /// Tetragon TracingPolicies from Qualys CDR findings.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The Qualys registry sensor: render it, or roll it out (runs DeploySensor).
    Sensor {
        #[command(subcommand)]
        command: SensorCommand,
    },
    /// Take a failing image out of an ECS service or a container app, once someone approves
    /// (runs Quarantine).
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Temporal Schedules for qflows' workflows.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// What runs where: list a scope once and tell each running image's entity (runs Inventory).
    Inventory {
        #[command(subcommand)]
        command: InventoryCommand,
    },
    /// What runs where and its verdict, failing first (from the latest inventories).
    Report {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: ReportArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AdmissionCommand {
    /// Print the webhook's manifests (deploy/kubernetes/admission) for GitOps, offline.
    Render {
        #[command(flatten)]
        args: RenderArgs,
    },
}

#[derive(Debug, Subcommand)]
enum InventoryCommand {
    /// Take one scope's inventory now (or join the one under way) and print its summary.
    Run {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: InventoryRunArgs,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
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

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
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

#[derive(Debug, Subcommand)]
enum QualysCommand {
    /// The gateway, the auth mode, the token's expiry, Qualys' AWS account and external ID,
    /// and the rate-limit state (no secret is printed).
    Info {
        #[command(flatten)]
        qualys: QualysArgs,
        #[command(flatten)]
        args: QualysOutputArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Every registry of the Qualys subscription.
    List {
        #[command(flatten)]
        qualys: QualysArgs,
        #[command(flatten)]
        args: QualysOutputArgs,
    },
    /// Find or create the registry for an AWS account and region (runs EnsureRegistry).
    Ensure {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: EnsureRegistryArgs,
    },
}

// Parsed once per process: the size difference of its variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum QuarantineCommand {
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

#[derive(Debug, Subcommand)]
enum SensorCommand {
    /// Print the task definition or manifests DeploySensor applies (for GitOps), offline.
    Render {
        #[command(flatten)]
        args: SensorArgs,
    },
    /// Roll the sensor out and wait: converge, verify with Qualys, or roll back.
    Deploy {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: SensorArgs,
        #[command(flatten)]
        deploy: DeployArgs,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    qflows_activities::kube::install_tls_provider();
    let cli = Cli::parse();
    if let Err(e) = telemetry::init_logging(&cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // `qflows scan` keeps 1 for "failed the gate": its errors exit 2.
    let failure = match cli.command {
        Command::Scan { .. } => ExitCode::from(scan_cli::EXIT_ERROR),
        _ => ExitCode::FAILURE,
    };
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            failure
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    check_unknown_variables(&Cli::command(), std::env::vars().map(|(k, _)| k))?;
    match command {
        // The one command with its own exit codes (the gate's verdict).
        Command::Scan {
            temporal,
            args,
            command,
        } => Ok(scan_cli::run(temporal, args, command).await),
        other => {
            run_to_completion(other).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Every command but `scan`: exit 0 when it returns, an error otherwise.
async fn run_to_completion(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Worker {
            temporal,
            qualys,
            worker: args,
            scan,
        } => {
            let config =
                WorkerConfig::from_args(temporal, &qualys.with_env_secrets(), args, &scan)?;
            worker::run(config, worker::shutdown_signal()).await
        }
        #[cfg(feature = "dev")]
        Command::Dev {
            dev: args,
            qualys,
            worker,
            scan,
        } => dev::run(args, qualys.with_env_secrets(), worker, scan).await,
        #[cfg(not(feature = "dev"))]
        Command::Dev { .. } => Err(anyhow::anyhow!(
            "this qflows was built without the `dev` feature, so it has no dev loop and no Qualys \
             emulator (the container image is built so). Run it from a checkout with the default \
             features: `cargo run -p qflows -- dev` (or `cargo install --path workers` for a \
             `qflows` that has it)"
        )),
        Command::Bridge { temporal, args } => bridge::run(temporal, args).await,
        Command::Admission {
            command: Some(AdmissionCommand::Render { args }),
            ..
        } => {
            print!("{}", admission::render::render_text(&args)?);
            Ok(())
        }
        Command::Admission {
            temporal,
            args,
            scan,
            command: None,
        } => admission::run(temporal, args, scan).await,
        Command::Registry { command } => run_registry(command).await,
        Command::Qualys {
            command: QualysCommand::Info { qualys, args },
        } => qualys_cli::info(&qualys.with_env_secrets(), args).await,
        Command::Policy { command } => run_policy(command).await,
        Command::Sensor { command } => run_sensor(command).await,
        Command::Quarantine { command } => run_quarantine(command).await,
        Command::Schedule { command } => run_schedule(command).await,
        Command::Inventory {
            command: InventoryCommand::Run { temporal, args },
        } => inventory::run(&temporal, args).await,
        Command::Report { temporal, args } => inventory::report(&temporal, args).await,
        Command::Scan { .. } => unreachable!("dispatched by run"),
    }
}

/// `qflows registry …`: list the subscription's registries, or find or create one
/// (EnsureRegistry).
async fn run_registry(command: RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::List { qualys, args } => {
            qualys_cli::registry_list(&qualys.with_env_secrets(), args).await
        }
        RegistryCommand::Ensure { temporal, args } => cli::ensure_registry(&temporal, args).await,
    }
}

/// `qflows policy …`: generate offline, promote or roll back a review, list.
async fn run_policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Generate { args } => {
            let output = args.output.clone();
            let summary = policy::generate_offline(args)?;
            policy::print_summary(&summary, &output);
            Ok(())
        }
        PolicyCommand::Promote { temporal, args } => policy::review(&temporal, args, true).await,
        PolicyCommand::Rollback { temporal, args } => policy::review(&temporal, args, false).await,
        PolicyCommand::List { temporal, args } => policy::list(&temporal, args).await,
    }
}

/// `qflows sensor …`: render the sensor's deployment offline, or deploy it (DeploySensor).
async fn run_sensor(command: SensorCommand) -> anyhow::Result<()> {
    match command {
        SensorCommand::Render { args } => sensor::render(&args),
        SensorCommand::Deploy {
            temporal,
            args,
            deploy,
        } => sensor::deploy(&temporal, &args, deploy).await,
    }
}

/// `qflows quarantine …`: start, approve, reject, status.
async fn run_quarantine(command: QuarantineCommand) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::Start { temporal, args } => quarantine::start(&temporal, args).await,
        QuarantineCommand::Approve { temporal, args } => {
            quarantine::decide(&temporal, args, true).await
        }
        QuarantineCommand::Reject { temporal, args } => {
            quarantine::decide(&temporal, args, false).await
        }
        QuarantineCommand::Status { temporal, args } => quarantine::status(&temporal, args).await,
    }
}

/// `qflows schedule …`: run CdrToPolicy or an inventory on a fixed interval.
async fn run_schedule(command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::Cdr { temporal, args } => policy::schedule_cdr(&temporal, args).await,
        ScheduleCommand::Inventory { temporal, args } => inventory::schedule(&temporal, args).await,
    }
}

#[cfg(test)]
mod known_variables_tests;
