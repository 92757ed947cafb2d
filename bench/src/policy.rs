//! `qflows-bench policy`: CdrToPolicy's generation, offline, over synthetic CDR findings. It
//! writes a findings file, then times reading, grouping, rendering, validating and writing the
//! policies (the same code as `qflows policy generate`), and prints findings/s and peak memory.

use clap::Args;
use qflows::cli::policy::{Action, GenerateArgs, Style, generate_offline};
use qflows_workflows::cdr::evidence::TetragonVersion;
use std::time::Instant;

/// Flags of `qflows-bench policy`.
#[derive(Debug, Clone, Args)]
pub struct BenchPolicyArgs {
    /// Findings to generate and turn into policies.
    #[arg(long, default_value_t = 1_000_000)]
    pub findings: usize,
    /// Distinct workloads among them.
    #[arg(long, default_value_t = 200)]
    pub workloads: usize,
    /// Runs over the same file; each is printed, then the median.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// A synthetic finding: the six categories, `workloads` workloads, varied processes and addresses.
fn synthetic(i: usize, workloads: usize) -> serde_json::Value {
    const CATS: [&str; 7] = [
        "Cloud_Credentials_Accessed_By_Network_Utility",
        "Network_Scanning_Utility",
        "Container_Escape",
        "Privilege_Escalation",
        "Crypto_Mining",
        "Reverse_Shell",
        "SSH_Password_Brute_Force",
    ];
    const PROCS: [&str; 5] = [
        "/usr/bin/curl",
        "/usr/bin/wget",
        "/usr/bin/nmap",
        "/bin/bash",
        "/usr/bin/python3",
    ];
    let w = i % workloads;
    serde_json::json!({
        "uuid": format!("{i:08x}-0000-4000-8000-000000000000"),
        "threatCategory": CATS[i % CATS.len()],
        "severity": 1 + i % 4,
        "timestamp": format!("2026-11-22T{:02}:{:02}:{:02}.000Z", (i / 3600) % 24, (i / 60) % 60, i % 60),
        "processPath": PROCS[i % PROCS.len()],
        "destinationIp": format!("198.51.{}.{}", (i / 256) % 256, i % 256),
        "destinationPort": 3333 + (i % 7),
        "podLabels": {"app": format!("svc-{w}"), "io.kubernetes.pod.namespace": format!("team-{}", w % 10)},
        "imageName": format!("111122223333.dkr.ecr.us-east-1.amazonaws.com/svc-{w}:1.{}", i % 9),
        "mitreRulesInfo": {"T0000": {}}
    })
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `qflows-bench policy`: writes a findings file, then times reading, grouping, rendering,
/// validating and writing the policies, and prints findings/s and peak memory.
pub fn bench_policy(args: BenchPolicyArgs) -> anyhow::Result<()> {
    use std::io::Write;
    anyhow::ensure!(
        args.findings > 0 && args.workloads > 0 && args.runs > 0,
        "need findings, workloads and runs > 0"
    );
    let dir = std::env::temp_dir().join(format!("qflows-bench-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("findings.json");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
        w.write_all(b"{\"totalElements\":")?;
        write!(w, "{}", args.findings)?;
        w.write_all(b",\"content\":[")?;
        for i in 0..args.findings {
            if i > 0 {
                w.write_all(b",")?;
            }
            serde_json::to_writer(&mut w, &synthetic(i, args.workloads))?;
        }
        w.write_all(b"]}")?;
        // On disk before the clock starts: the run reads a file at rest, as `policy generate`
        // does, instead of competing with the write-back of the file it has just written.
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let size_mib = std::fs::metadata(&file)?.len() as f64 / 1_048_576.0;
    let rss_before = peak_rss_mib().unwrap_or(0.0);
    let mut totals = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        // A fresh directory per run: every run creates its policy files, as the first does.
        let out = dir.join(format!("policies-{run}"));
        let began = Instant::now();
        let summary = generate_offline(GenerateArgs {
            findings: file.clone(),
            action: Action::Post,
            output: out.clone(),
            tetragon_version: TetragonVersion::DEFAULT,
            audit_style: Style::Post,
            policy_set: "bench".into(),
        })?;
        let elapsed = began.elapsed().as_secs_f64();
        totals.push(elapsed);
        if run == 1 {
            println!(
                "findings:          {} ({size_mib:.0} MiB of JSON)",
                summary.findings.findings
            );
            println!(
                "used / skipped:    {} / {}",
                summary.findings.used,
                summary.findings.skipped.values().sum::<u64>()
            );
            println!(
                "policies:          {} written, {} refused",
                summary.generation.policies.len(),
                summary.generation.refused.len()
            );
        }
        let p = summary.phases;
        println!(
            "run {run}:             {elapsed:.2} s (read {:.2}, parse+group {:.2}, render+validate {:.2}, write {:.2})",
            p.read.as_secs_f64(),
            p.parse_and_group.as_secs_f64(),
            p.render_and_validate.as_secs_f64(),
            p.write.as_secs_f64()
        );
    }
    let peak = peak_rss_mib().unwrap_or(0.0);
    totals.sort_by(f64::total_cmp);
    let median = totals[totals.len() / 2];
    println!(
        "median of {}:       {median:.2} s ({:.0} findings/s)",
        totals.len(),
        args.findings as f64 / median
    );
    println!("peak memory (RSS): {peak:.0} MiB (before the runs: {rss_before:.0} MiB)");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
