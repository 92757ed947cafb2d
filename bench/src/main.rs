//! `qflows-bench`: qflows' benchmarks and chaos runs. Each prints figures (see the README's
//! Benchmarks section); none is part of the product binary or image.

use clap::{CommandFactory, Parser, Subcommand};
use qflows::config::{
    LogArgs, QualysArgs, ScanArgs, TemporalArgs, WorkerArgs, check_unknown_variables,
};
use qflows::telemetry;
use qflows::worker::{WorkerConfig, shutdown_signal};
use qflows_bench::{admission, bridge, chaos, cost, overhead, policy, qscanner_report, scan};
use std::process::ExitCode;

// The product binary's allocator, so that the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "qflows-bench",
    version,
    about = "qflows' benchmarks: each prints figures"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay ECR push events over a set of digests; print scans submitted, calls and latencies.
    Scan {
        #[command(flatten)]
        args: scan::BenchScanArgs,
    },
    /// Write a QScanner SARIF report of a given size, read it as the worker does; print the
    /// time and the peak RSS (and the first reader's, for comparison).
    QscannerReport {
        #[command(flatten)]
        args: qscanner_report::BenchQScannerReportArgs,
    },
    /// Generate policies from synthetic CDR findings; print findings/s and peak memory.
    Policy {
        #[command(flatten)]
        args: policy::BenchPolicyArgs,
    },
    /// SIGKILL the worker and restart Temporal during a burst; count lost and doubled work.
    Chaos {
        #[command(flatten)]
        args: chaos::ChaosArgs,
    },
    /// Deliver events through the bridge into Temporal; print accepted events/s and latency.
    Bridge {
        #[command(flatten)]
        args: bridge::BenchBridgeArgs,
    },
    /// A burst of deploy events through the bridge to a worker process; print throughput,
    /// latency, Qualys calls, and the worker's memory and CPU.
    Burst {
        #[command(flatten)]
        args: chaos::BurstArgs,
    },
    /// ScanOnDeploy against a no-op workflow with as many activities: qflows' own cost.
    Overhead {
        #[command(flatten)]
        args: overhead::OverheadArgs,
    },
    /// History events and Temporal Cloud actions per deploy event, by kind of event.
    Cost {
        #[command(flatten)]
        args: cost::CostArgs,
    },
    /// AdmissionReviews over HTTPS to the `qflows admission` process; print answers/s and
    /// latency for cached verdicts and for unknown images.
    Admission {
        #[command(flatten)]
        args: admission::BenchAdmissionArgs,
    },
    /// The worker `burst` and `chaos` start as a process: `qflows worker`'s flags, and
    /// `BenchNoop` (the baseline) on `<task queue>-baseline` beside it.
    #[command(hide = true)]
    Worker {
        #[command(flatten)]
        args: Box<WorkerFlags>,
    },
}

/// `qflows worker`'s flags.
#[derive(Debug, clap::Args)]
struct WorkerFlags {
    #[command(flatten)]
    temporal: TemporalArgs,
    #[command(flatten)]
    qualys: QualysArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    scan: ScanArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    qflows_activities::kube::install_tls_provider();
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
    check_unknown_variables(&Cli::command(), std::env::vars().map(|(k, _)| k))?;
    match command {
        Command::Scan { args } => scan::scan(args).await,
        Command::QscannerReport { args } => qscanner_report::run(args).await,
        Command::Policy { args } => policy::bench_policy(args),
        Command::Chaos { args } => chaos::run(args).await,
        Command::Bridge { args } => bridge::run(args).await,
        Command::Burst { args } => chaos::run(args.into()).await,
        Command::Overhead { args } => overhead::run(args).await,
        Command::Cost { args } => cost::run(args).await,
        Command::Admission { args } => admission::run(args).await,
        Command::Worker { args } => {
            let WorkerFlags {
                temporal,
                qualys,
                worker,
                scan,
            } = *args;
            let config =
                WorkerConfig::from_args(temporal, &qualys.with_env_secrets(), worker, &scan)?;
            qflows_bench::worker::run(config, shutdown_signal()).await
        }
    }
}
