//! The `qflows` binary's library half: configuration, the worker, the dev loop and CLI commands.
//!
//! `main.rs` only parses the command line and dispatches here, so integration tests and other
//! binaries can run the same code.

pub mod admission;
pub mod bridge;
pub mod cli;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
mod histogram;
pub mod telemetry;
pub mod temporal;
pub mod worker;
