//! The `qflows` commands a person runs against the workers: one file per command group, so
//! `qflows X …` is in `cli/X.rs` (`qflows report` with `inventory run` in `inventory.rs`).
//!
//! This module only dispatches; the command files import none of it. What several of them share
//! lives in leaves that import no command: `flags.rs` (durations), `output.rs` (`--format`,
//! terminal-safe text, tables), `start.rs` (start or join a workflow, wait for its output) and
//! `findings.rs` (a stored report's findings, for people).
//! Between commands, dependencies point one way: `schedule.rs` takes its scope and policy flags
//! from `inventory.rs` and `policy.rs`, and `scan.rs` the inventoried scopes from `inventory.rs`.

mod findings;
mod flags;
pub mod inventory;
mod output;
pub mod policy;
pub mod qualys;
pub mod quarantine;
pub mod registry;
pub mod scan;
pub mod schedule;
pub mod sensor;
mod start;

use crate::config::TemporalArgs;
use clap::Subcommand;
use inventory::{InventoryCommand, ReportArgs};
use policy::PolicyCommand;
use qualys::QualysCommand;
use quarantine::QuarantineCommand;
use registry::RegistryCommand;
use scan::{ScanCommand, ScanImagesArgs};
use schedule::ScheduleCommand;
use sensor::SensorCommand;
use std::process::ExitCode;

/// The commands of this module, flattened into `qflows`' own (their order is the help's).
#[allow(missing_docs)] // the fields are flag groups, documented where they are defined
#[derive(Debug, Subcommand)]
pub enum Command {
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

impl Command {
    /// The exit code of an error: `qflows scan` keeps 1 for "failed the gate", so its errors
    /// exit 2; every other command exits 1.
    pub fn error_exit_code(&self) -> ExitCode {
        match self {
            Command::Scan { .. } => ExitCode::from(scan::EXIT_ERROR),
            _ => ExitCode::FAILURE,
        }
    }
}

/// Runs a command: `scan` exits with its verdict's code, every other command 0 when it returns.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        // The one command with its own exit codes (the gate's verdict).
        Command::Scan {
            temporal,
            args,
            command,
        } => return Ok(scan::run(temporal, args, command).await),
        Command::Registry { command } => registry::run(command).await?,
        Command::Qualys { command } => qualys::run(command).await?,
        Command::Policy { command } => policy::run(command).await?,
        Command::Sensor { command } => sensor::run(command).await?,
        Command::Quarantine { command } => quarantine::run(command).await?,
        Command::Schedule { command } => schedule::run(command).await?,
        Command::Inventory {
            command: InventoryCommand::Run { temporal, args },
        } => inventory::run(&temporal, args).await?,
        Command::Report { temporal, args } => inventory::report(&temporal, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}
