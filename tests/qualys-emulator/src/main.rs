//! `qualys-emulator`: serves the Qualys gateway emulator until Ctrl-C or SIGTERM.
//!
//! Prints `qualys-emulator listening on http://ADDR` on stdout once it accepts connections
//! (with the real port when `--listen` has port 0); logs go to stderr (`RUST_LOG`, default
//! `info`).

use anyhow::Context;
use clap::Parser;
use qualys_emulator::{Emulator, EmulatorConfig, cdr_findings_from_json, seed_images_from_json};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A stateful emulator of the Qualys gateway APIs (auth, csapi v1.3, CDR) with rate limits and
/// fault injection.
#[derive(Parser, Debug)]
#[command(name = "qualys-emulator", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "QUALYS_EMULATOR_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// A JSON EmulatorConfig (unknown fields are errors); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Milliseconds from an on-demand registry scan to the image being scanned.
    #[arg(long)]
    scan_delay_ms: Option<u64>,
    /// Images to preload: an array of SeedImage, {"images":[…]}, or a map from
    /// `registry/repository[:tag]` to vulnerabilities.
    #[arg(long)]
    vulns_file: Option<PathBuf>,
    /// CDR findings to preload: an array or {"content":[…]}.
    #[arg(long)]
    cdr_file: Option<PathBuf>,
    /// The username `POST /auth` accepts.
    #[arg(long)]
    username: Option<String>,
    /// Its password.
    #[arg(long)]
    password: Option<String>,
    /// A pre-issued bearer token to accept (repeatable).
    #[arg(long = "api-token")]
    api_tokens: Vec<String>,
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn config(args: &Args) -> anyhow::Result<EmulatorConfig> {
    let mut cfg = match &args.config {
        Some(path) => EmulatorConfig::from_json(&read(path)?)
            .with_context(|| format!("invalid config {}", path.display()))?,
        None => EmulatorConfig::default(),
    };
    if let Some(ms) = args.scan_delay_ms {
        cfg.scan_delay_ms = ms;
    }
    if let Some(u) = &args.username {
        cfg.username = u.clone();
    }
    if let Some(p) = &args.password {
        cfg.password = p.clone();
    }
    cfg.api_tokens.extend(args.api_tokens.iter().cloned());
    if let Some(path) = &args.vulns_file {
        let images = seed_images_from_json(&read(path)?)
            .with_context(|| format!("invalid {}", path.display()))?;
        cfg.seed.images.extend(images);
    }
    if let Some(path) = &args.cdr_file {
        let findings = cdr_findings_from_json(&read(path)?)
            .with_context(|| format!("invalid {}", path.display()))?;
        cfg.seed.cdr_findings.extend(findings);
    }
    Ok(cfg)
}

/// Ctrl-C or SIGTERM.
async fn terminated() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let cfg = config(&args)?;
    let running = Emulator::start(cfg, args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "qualys-emulator listening on {}", running.base_url())?;
        out.flush()?;
    }
    terminated().await;
    tracing::info!("stopping");
    running.shutdown().await;
    Ok(())
}
