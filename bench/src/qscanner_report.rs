//! `qflows-bench qscanner-report`: writes a QScanner SARIF report of a given size (a big Java
//! image's shape: thousands of QIDs, each found in several jars, many results per QID with long
//! messages), then reads it as the worker does and prints the peak resident memory of this
//! process, and, for comparison, what reading it into a `serde_json::Value` (the first reader)
//! costs.

use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flags of `qflows-bench qscanner-report`.
#[derive(Debug, Clone, Args)]
pub struct BenchQScannerReportArgs {
    /// Size of the generated report, in MB (10^6 bytes).
    #[arg(long, default_value_t = 100)]
    pub size_mb: u64,
    /// Distinct QIDs in the report.
    #[arg(long, default_value_t = 4_000)]
    pub qids: u64,
    /// Distinct jars (packages) QIDs are found in.
    #[arg(long, default_value_t = 2_000)]
    pub packages: u64,
    /// Where to write it (removed afterwards); default: the system's temporary directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also read it into a `serde_json::Value`, as the first reader did, and print its peak.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub compare_value: bool,
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Resets the peak (VmHWM) to the current RSS (Linux 4.0+: `echo 5 > /proc/self/clear_refs`).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Writes the report, streaming; returns its size in bytes.
fn generate(path: &Path, args: &BenchQScannerReportArgs) -> anyhow::Result<u64> {
    let target = args.size_mb * 1_000_000;
    let file = std::fs::File::create(path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let written = std::cell::Cell::new(0u64);
    let put = |w: &mut std::io::BufWriter<std::fs::File>, s: &str| -> anyhow::Result<()> {
        w.write_all(s.as_bytes())?;
        written.set(written.get() + s.len() as u64);
        Ok(())
    };
    put(
        &mut w,
        r#"{"version":"2.1.0","$schema":"https://json.schemastore.org/sarif-2.1.0.json","runs":[{"tool":{"driver":{"name":"QScanner","rules":["#,
    )?;
    for q in 0..args.qids {
        let qid = 370_000 + q;
        let sep = if q == 0 { "" } else { "," };
        let rule = serde_json::json!({
            "id": qid.to_string(),
            "shortDescription": {"text": format!("Java library vulnerability {qid} (CVE-2024-{q:05})")},
            "fullDescription": {"text": "A long description of the vulnerability. ".repeat(8)},
            "defaultConfiguration": {"level": "error"},
            "properties": {"severity": 1 + q % 5, "cve-ids": [format!("CVE-2024-{q:05}")],
                           "qds": (q % 100).to_string(), "category": "SCA"}
        });
        put(&mut w, &format!("{sep}{rule}"))?;
    }
    put(
        &mut w,
        r#"]}},"properties":{"imageID":"sha256:2e5b8d3ef33ebde2b2a943fadb241a63de1535a007a7bd185e7037abfff99f63","imageDigest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","os":"Debian Linux 12.6"},"results":["#,
    )?;
    let mut i: u64 = 0;
    while written.get() < target {
        let q = i % args.qids;
        let qid = 370_000 + q;
        let jar = (q * 7 + i / args.qids) % args.packages;
        let sep = if i == 0 { "" } else { "," };
        let result = serde_json::json!({
            "ruleId": qid.to_string(),
            "level": "error",
            "message": {"text": format!(
                "QID {qid} found in /opt/app/lib/lib-{jar}.jar (layer {i}): {}",
                "vulnerable code path reached through the application class loader; ".repeat(4))},
            "locations": [{"physicalLocation": {"artifactLocation": {
                "uri": format!("/opt/app/lib/lib-{jar}.jar!/META-INF/maven/org.example/lib-{jar}/pom.properties")}}}],
            "properties": {"QID": qid, "vulnerableSoftware": [{
                "name": format!("org.example:lib-{jar}"), "installedVersion": "1.2.3",
                "fixedVersion": "1.2.4", "layerSHA": format!("sha256:{i:064x}")}]}
        });
        put(&mut w, &format!("{sep}{result}"))?;
        i += 1;
    }
    put(&mut w, "]}]}")?;
    w.flush()?;
    Ok(written.get())
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BenchQScannerReportArgs) -> anyhow::Result<()> {
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!(
        "qflows-bench-{}-Report.sarif.json",
        std::process::id()
    ));
    let started = Instant::now();
    let size = generate(&path, &args)?;
    println!(
        "report: {:.1} MB ({} QIDs, {} packages) written in {:.1} s: {}",
        size as f64 / 1e6,
        args.qids,
        args.packages,
        started.elapsed().as_secs_f64(),
        path.display()
    );
    let result = measure(&path, &args).await;
    let _ = std::fs::remove_file(&path);
    result
}

async fn measure(path: &Path, args: &BenchQScannerReportArgs) -> anyhow::Result<()> {
    let resettable = reset_peak();
    let base = status_kib("VmRSS:").unwrap_or(0);
    let started = Instant::now();
    let (findings, warnings) = qflows_activities::qscanner::read_sarif_file(path).await?;
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM:").unwrap_or(0);
    let packages: usize = findings.iter().map(|f| f.packages.len()).sum();
    println!(
        "typed stream (the worker's reader): {} findings, {packages} vulnerable packages, {} \
         warnings, in {:.2} s; peak RSS {:.1} MiB (process RSS before: {:.1} MiB){}",
        findings.len(),
        warnings.len(),
        elapsed.as_secs_f64(),
        mib(peak),
        mib(base),
        if resettable {
            ""
        } else {
            " [the peak could not be reset: it includes writing the report]"
        }
    );
    drop(findings);
    if args.compare_value {
        reset_peak();
        let base = status_kib("VmRSS:").unwrap_or(0);
        let started = Instant::now();
        let bytes = tokio::fs::read(path).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)?;
        let elapsed = started.elapsed();
        let peak = status_kib("VmHWM:").unwrap_or(0);
        let results = value["runs"][0]["results"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        println!(
            "serde_json::Value (the first reader): {results} results in {:.2} s; peak RSS {:.1} \
             MiB (process RSS before: {:.1} MiB)",
            elapsed.as_secs_f64(),
            mib(peak),
            mib(base)
        );
    }
    Ok(())
}
