//! `qscanner`: a stand-in for the proprietary Qualys QScanner 4.8 CLI, for tests.
//!
//! It honours the documented interface (docs/qualys-api.md §4): global flags, then `image <ref>`;
//! `--pod`/`--gateway-url` and a token (`QUALYS_ACCESS_TOKEN`, `--access-token`, or client id
//! and secret) are required outside `inventory-only` mode (FAQ Q1; missing → exit 2);
//! `HOME` or `XDG_CONFIG_HOME` must be set (FAQ Q7); `--version` prints `4.8.0-2`. It writes
//! into `--output-dir` (default `$HOME/qualys/qscanner/data`):
//!
//! - `<imageId>-ScanResult.json` (with `--format json`, the default),
//! - `<imageId>-Report.sarif.json` (`get-report`/`evaluate-policy` with `--report-format sarif`),
//!   `<imageId>-Report.json` (`json`), `<imageId>-gitlab_secret_report.json` (`gitlab`), the
//!   table on stdout (`table`),
//! - `<invocation>-ScanMetadata.json`,
//!
//! and exits with the official codes: 0, 40 (report unavailable), 42/43 (policy DENY/AUDIT),
//! or whatever a scenario forces (see [`scenario`]; it can also omit or corrupt the report and
//! the ScanResult). The image id is 64 hex digits derived from
//! the reference.
//!
//! With `QSCANNER_STANDIN_LOG` set, each invocation appends one JSON line to that file, at
//! start: `pid`, `argv`, the names (never values) of the `QSCANNER_*`/`QUALYS_*`/`AWS_*`
//! variables and of all variables, whether `QUALYS_ACCESS_TOKEN` was non-empty, and whether
//! argv carried a token.

mod args;
mod outputs;
mod scenario;

use args::{Invocation, Options};
use scenario::Plan;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The version this stand-in imitates.
pub const VERSION: &str = "4.8.0-2";

const EXIT_GENERIC_ERROR: u8 = 1;
const EXIT_INVALID_PARAMETER: u8 = 2;
const EXIT_JSON_RESULT_HANDLER_FAILED: u8 = 30;
const EXIT_FAILED_TO_GET_VULN_REPORT: u8 = 40;
const EXIT_POLICY_EVALUATION_DENY: u8 = 42;
const EXIT_POLICY_EVALUATION_AUDIT: u8 = 43;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    record_invocation(&argv);
    // Like QScanner unpacking layers: scratch files in TMPDIR, which the runner must clean up.
    if let Some(tmp) = env_nonempty("TMPDIR") {
        let _ = std::fs::write(
            std::path::Path::new(&tmp).join("qscanner-standin-layer.tmp"),
            b"layer",
        );
    }
    match args::parse(&argv) {
        Err(e) => {
            eprintln!("ERROR\tinvalid parameter: {e}");
            ExitCode::from(EXIT_INVALID_PARAMETER)
        }
        Ok(Invocation::Version) => {
            println!("{VERSION}");
            ExitCode::SUCCESS
        }
        Ok(Invocation::Help) => {
            println!(
                "Usage: qscanner <global_options> image <image-ref>\n\
                 (qflows test stand-in for QScanner {VERSION})"
            );
            ExitCode::SUCCESS
        }
        Ok(Invocation::Image(opts)) => ExitCode::from(scan(&opts)),
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Appends the invocation record to `$QSCANNER_STANDIN_LOG`.
fn record_invocation(argv: &[String]) {
    let Some(log) = env_nonempty("QSCANNER_STANDIN_LOG") else {
        return;
    };
    let mut all: Vec<String> = std::env::vars_os()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    all.sort();
    let interesting: Vec<&String> = all
        .iter()
        .filter(|n| n.starts_with("QSCANNER_") || n.starts_with("QUALYS_") || n.starts_with("AWS_"))
        .collect();
    let token = env_nonempty("QUALYS_ACCESS_TOKEN");
    let token_in_argv = argv
        .iter()
        .any(|a| a == "--access-token" || a.starts_with("--access-token="))
        || token
            .as_deref()
            .is_some_and(|t| argv.iter().any(|a| a.contains(t)));
    let line = json!({
        "pid": std::process::id(),
        "argv": argv,
        "env": interesting,
        "all_env_names": all,
        "access_token_set": token.is_some(),
        "token_in_argv": token_in_argv,
        "home": env_nonempty("HOME"),
        "tmpdir": env_nonempty("TMPDIR"),
    });
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = written {
        eprintln!("WARN\tqscanner stand-in: cannot append to QSCANNER_STANDIN_LOG: {e}");
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn write_json(dir: &Path, name: &str, value: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
}

/// Writes one of the files a scenario may omit (`omit`) or break (`corrupt`).
fn write_scripted(
    plan: &Plan,
    key: &str,
    dir: &Path,
    name: &str,
    value: &Value,
) -> Result<(), String> {
    if plan.omits(key) {
        return Ok(());
    }
    if plan.corrupts(key) {
        return std::fs::write(dir.join(name), "{\"Match\": \"corrupt-secret\" ,,,")
            .map_err(|e| format!("writing {name}: {e}"));
    }
    write_json(dir, name, value)
}

fn load_scenario() -> Result<Option<Value>, String> {
    let Some(path) = env_nonempty("QSCANNER_STANDIN_SCENARIO") else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("parsing {path}: {e}"))
}

/// The `image` command. Returns the exit code.
fn scan(opts: &Options) -> u8 {
    let home = env_nonempty("HOME").or_else(|| env_nonempty("XDG_CONFIG_HOME"));
    let Some(home) = home else {
        eprintln!("FATAL\t$HOME is not defined: HOME or XDG_CONFIG_HOME must be set");
        return EXIT_GENERIC_ERROR;
    };
    if opts.mode != "inventory-only" {
        let gateway = opts.pod.is_some() || opts.gateway_url.is_some();
        let token = env_nonempty("QUALYS_ACCESS_TOKEN").is_some()
            || opts
                .access_token_flag
                .as_deref()
                .is_some_and(|t| !t.is_empty())
            || opts.client_credentials;
        if !gateway || !token {
            eprintln!(
                "ERROR\tGateway URL (--gateway-url or --pod) and Access token (--access-token) \
                 are required for mode {}",
                opts.mode
            );
            return EXIT_INVALID_PARAMETER;
        }
    }
    let plan = match load_scenario().and_then(|doc| scenario::plan(&opts.target, doc.as_ref())) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("ERROR\tqscanner stand-in scenario: {e}");
            return EXIT_GENERIC_ERROR;
        }
    };
    let out_dir = opts
        .output_dir
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&home).join("qualys/qscanner/data"));
    eprintln!(
        "INFO\tScanning image {} (mode {}, scan types {})",
        opts.target,
        opts.mode,
        opts.scan_types.join(",")
    );
    if plan.sleep_ms > 0 {
        std::thread::sleep(Duration::from_millis(plan.sleep_ms));
    }
    if let Some(line) = &plan.stderr {
        eprintln!("ERROR\t{line}");
    }
    if let Some(code) = plan.exit_code
        && !matches!(code, 0 | 40 | 42 | 43)
    {
        if code == 6 {
            eprintln!(
                "ERROR\tfailed to get image artifact {}: MANIFEST_UNKNOWN: manifest unknown",
                opts.target
            );
        } else {
            eprintln!("ERROR\tscan failed (stand-in scenario exit code {code})");
        }
        return u8::try_from(code).unwrap_or(EXIT_GENERIC_ERROR);
    }
    match write_outputs(opts, &plan, &out_dir) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ERROR\t{e}");
            EXIT_JSON_RESULT_HANDLER_FAILED
        }
    }
}

fn write_outputs(opts: &Options, plan: &Plan, out_dir: &Path) -> Result<u8, String> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("creating the output directory {}: {e}", out_dir.display()))?;
    let now = now_ns();
    let id = outputs::image_id(&opts.target);
    let invocation =
        &outputs::hex64(&format!("{}:{}:{now}", opts.target, std::process::id()))[..32];
    write_json(
        out_dir,
        &format!("{invocation}-ScanMetadata.json"),
        &outputs::scan_metadata(opts, now),
    )?;
    if opts.formats.iter().any(|f| f == "json") {
        write_scripted(
            plan,
            "scan_result",
            out_dir,
            &format!("{id}-ScanResult.json"),
            &outputs::scan_result(opts, plan, now),
        )?;
    }
    eprintln!("INFO\tInventory written; uploading to {}", gateway(opts));
    if matches!(opts.mode.as_str(), "inventory-only" | "scan-only") {
        return Ok(0);
    }
    if plan.exit_code == Some(40) {
        eprintln!("ERROR\tSBOM uploaded but failed to get the vulnerability report: 404 Not Found");
        return Ok(EXIT_FAILED_TO_GET_VULN_REPORT);
    }
    for format in &opts.report_formats {
        match format.as_str() {
            "sarif" => write_scripted(
                plan,
                "sarif",
                out_dir,
                &format!("{id}-Report.sarif.json"),
                &outputs::sarif(opts, plan),
            )?,
            "json" => write_json(
                out_dir,
                &format!("{id}-Report.json"),
                &json!({"_comment": "qscanner stand-in: the real JSON report's shape is unknown",
                        "sarif": outputs::sarif(opts, plan)}),
            )?,
            "gitlab" => write_json(
                out_dir,
                &format!("{id}-gitlab_secret_report.json"),
                &outputs::gitlab_secret_report(plan),
            )?,
            _ => print!("{}", outputs::table(opts, plan)),
        }
    }
    if let Some(code) = plan.exit_code {
        return Ok(u8::try_from(code).unwrap_or(EXIT_GENERIC_ERROR));
    }
    if opts.mode != "evaluate-policy" {
        return Ok(0);
    }
    let verdict = plan.policy.clone().unwrap_or_else(|| {
        let critical = plan.vulns.iter().any(|v| v.severity >= 5);
        if critical { "DENY" } else { "ALLOW" }.to_string()
    });
    eprintln!(
        "INFO\tPolicy evaluation result: {verdict} (tags: {})",
        opts.policy_tags.join(",")
    );
    Ok(match verdict.as_str() {
        "DENY" => EXIT_POLICY_EVALUATION_DENY,
        "AUDIT" => EXIT_POLICY_EVALUATION_AUDIT,
        _ => 0,
    })
}

fn gateway(opts: &Options) -> String {
    opts.gateway_url
        .clone()
        .or_else(|| opts.pod.clone())
        .unwrap_or_else(|| "nowhere".into())
}
