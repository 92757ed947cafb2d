//! `qflows`: Temporal workers that run Qualys container-security automation as durable workflows.
//!
//! This file parses the command line, sets up logging and dispatches: the long-running services
//! (`worker`, `dev`, `bridge`, `admission`) to their modules, every other command to `cli`.

use clap::{Args, CommandFactory, Parser, Subcommand};
use qflows::admission::{self, render::RenderArgs};
use qflows::bridge::{self, BridgeArgs};
use qflows::cli;
use qflows::config::{
    AdmissionArgs, LogArgs, QualysArgs, ScanArgs, TemporalArgs, WorkerArgs, check_unknown_variables,
};
#[cfg(feature = "dev")]
use qflows::dev::{self, DevArgs};
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
        serve: ServeArgs,
    },
    /// Run a local Temporal dev server, the worker and (without credentials) the Qualys emulator.
    #[cfg(feature = "dev")]
    Dev {
        #[command(flatten)]
        dev: DevArgs,
        #[command(flatten)]
        serve: ServeArgs,
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
    // `scan`, `registry`, `qualys`, `policy`, `sensor`, `quarantine`, `schedule`, `inventory`,
    // `report`: the commands in `cli/`, listed after these in the help.
    #[command(flatten)]
    Cli(cli::Command),
}

/// What the worker serves with, in `worker` and in `dev`: Qualys, the worker's tuning, the scan.
#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    qualys: QualysArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    scan: ScanArgs,
}

#[derive(Debug, Subcommand)]
enum AdmissionCommand {
    /// Print the webhook's manifests (deploy/kubernetes/admission) for GitOps, offline.
    Render {
        #[command(flatten)]
        args: RenderArgs,
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
    let failure = match &cli.command {
        Command::Cli(command) => command.error_exit_code(),
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

/// Runs a command: the services and offline `admission render` exit 0 when they return, the
/// `cli` commands with their own code.
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    check_unknown_variables(&Cli::command(), std::env::vars().map(|(k, _)| k))?;
    match command {
        Command::Worker { temporal, serve } => {
            let ServeArgs {
                qualys,
                worker: args,
                scan,
            } = serve;
            let config =
                WorkerConfig::from_args(temporal, &qualys.with_env_secrets(), args, &scan)?;
            worker::run(config, worker::shutdown_signal()).await?;
        }
        #[cfg(feature = "dev")]
        Command::Dev { dev: args, serve } => {
            let ServeArgs {
                qualys,
                worker,
                scan,
            } = serve;
            dev::run(args, qualys.with_env_secrets(), worker, scan).await?;
        }
        #[cfg(not(feature = "dev"))]
        Command::Dev { .. } => anyhow::bail!(
            "this qflows was built without the `dev` feature, so it has no dev loop and no Qualys \
             emulator (the container image is built so). Run it from a checkout with the default \
             features: `cargo run -p qflows -- dev` (or `cargo install --path workers` for a \
             `qflows` that has it)"
        ),
        Command::Bridge { temporal, args } => bridge::run(temporal, args).await?,
        Command::Admission {
            command: Some(AdmissionCommand::Render { args }),
            ..
        } => print!("{}", admission::render::render_text(&args)?),
        Command::Admission {
            temporal,
            args,
            scan,
            command: None,
        } => admission::run(temporal, args, scan).await?,
        Command::Cli(command) => return cli::run(command).await,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod known_variables_tests;
