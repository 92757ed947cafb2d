//! The benchmark commands still run and still check what they claim, at a tiny scale (their
//! figures are for the README, not for assertions here).

use qflows_integration::{find_tool, qflows_bench_bin};

/// Runs `qflows-bench <args>` and returns its standard output; fails with its output if it fails.
async fn bench(args: &[&str]) -> anyhow::Result<String> {
    let temporal = find_tool("temporal", "QFLOWS_TEMPORAL_BIN")?;
    let out = tokio::process::Command::new(qflows_bench_bin()?)
        .args(["--log", "warn"])
        .args(args)
        .env("QFLOWS_TEMPORAL_BIN", temporal)
        .output()
        .await?;
    let stdout = String::from_utf8(out.stdout)?;
    anyhow::ensure!(
        out.status.success(),
        "qflows-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

fn line<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{output}"))
}

#[tokio::test]
async fn overhead_compares_scans_with_as_many_noop_activities() -> anyhow::Result<()> {
    let out = bench(&["overhead", "--workflows", "3", "--concurrency", "3"]).await?;
    // The scan's activities were counted from its history, and the baseline ran that many.
    // "one ScanOnDeploy  A activities + B local, T timers; its ImageScan C activities + D local, …"
    let counted = line(&out, "one ScanOnDeploy");
    let numbers: Vec<u32> = counted
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let steps = numbers[0] + numbers[1] + numbers[3] + numbers[4];
    // The deploy workflow only attaches (a local activity, no resolve when the event names the
    // digest); the entity does the scan's work.
    assert!(numbers[0] + numbers[1] > 0 && numbers[3] > 0, "{counted}");
    line(&out, &format!("BenchNoop x{steps} "));
    let ratio: f64 = line(&out, "ratio")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()?;
    assert!(ratio > 0.0, "{out}");
    Ok(())
}

#[tokio::test]
async fn burst_counts_every_event_once_and_measures_the_worker() -> anyhow::Result<()> {
    let out = bench(&[
        "burst",
        "--events",
        "40",
        "--digests",
        "5",
        "--events-per-sec",
        "200",
        "--scan-delay-ms",
        "200",
    ])
    .await?;
    assert_eq!(
        line(&out, "lost events").split_whitespace().last(),
        Some("0")
    );
    assert!(
        line(&out, "completed = started").ends_with("40 = 40"),
        "{out}"
    );
    assert!(
        line(&out, "scans submitted").contains("5 for 5 digests"),
        "{out}"
    );
    assert_eq!(
        line(&out, "duplicate submissions")
            .split_whitespace()
            .last(),
        Some("0")
    );
    // The worker's own latency histogram saw each submitted scan once.
    assert!(
        line(&out, "worker's qflows_scan_submit_latency_seconds").contains(": 5 observations"),
        "{out}"
    );
    // The worker process was measured: a peak RSS above zero.
    let rss = line(&out, "worker RSS");
    assert!(!rss.contains("peak 0.0 MiB"), "{rss}");
    Ok(())
}

#[tokio::test]
async fn admission_answers_cached_verdicts_and_unknown_images() -> anyhow::Result<()> {
    let out = bench(&[
        "admission",
        "--digests",
        "2",
        "--requests",
        "10",
        "--concurrency",
        "2",
    ])
    .await?;
    // Of the two scanned images one fails: under `deny`, half the cached answers refuse.
    let cached = out
        .split("unknown images:")
        .next()
        .expect("split yields a first part");
    assert!(
        line(cached, "decisions").contains("allowed/production 5, denied/production 5"),
        "{out}"
    );
    assert!(line(cached, "refused").ends_with(" 5"), "{out}");
    // Every unknown image is answered by the unscanned rule (audit: admitted) and its scan is
    // started.
    let unknown = out
        .split("unknown images:")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no unknown phase in:\n{out}"))?;
    assert!(
        line(unknown, "decisions").contains("unscanned/production 10"),
        "{out}"
    );
    assert!(line(unknown, "refused").ends_with(" 0"), "{out}");
    assert!(
        line(unknown, "scans started")
            .trim_start()
            .starts_with("scans started        10 of 10"),
        "{out}"
    );
    Ok(())
}
