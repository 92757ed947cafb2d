//! `qflows`: Temporal workers that run Qualys container-security automation as durable workflows.

use clap::{Parser, Subcommand};
use qflows::bench::{self, BenchScanArgs};
use qflows::cli::{self, EnsureRegistryArgs};
use qflows::config::{
    LogArgs, QualysArgs, ScanArgs, TemporalArgs, WorkerArgs, check_unknown_variables,
};
use qflows::dev::{self, DevArgs};
use qflows::telemetry;
use qflows::worker::{self, WorkerConfig};
use std::process::ExitCode;

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
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Qualys registry connectors.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Replay ECR push events over a set of digests; print scans submitted, calls and latencies.
    Scan {
        #[command(flatten)]
        args: BenchScanArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Find or create the registry for an AWS account and region (runs EnsureRegistry).
    Ensure {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: EnsureRegistryArgs,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init_logging(&cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    check_unknown_variables(std::env::vars().map(|(k, _)| k))?;
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
        Command::Dev {
            dev: args,
            qualys,
            worker,
            scan,
        } => dev::run(args, qualys.with_env_secrets(), worker, scan).await,
        Command::Bench {
            command: BenchCommand::Scan { args },
        } => bench::scan(args).await,
        Command::Registry {
            command: RegistryCommand::Ensure { temporal, args },
        } => cli::ensure_registry(&temporal, args).await,
    }
}
