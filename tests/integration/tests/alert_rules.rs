//! `deploy/prometheus/`: the alerting rules load in Prometheus' own checker, their unit tests pass
//! (`promtool test rules`: each alert fires on the series it is for, at the time it should, and
//! stays quiet on healthy ones), and every qflows metric they use is one qflows exports and the
//! README documents.
//!
//! Needs `QFLOWS_PROMTOOL` (`eval "$(scripts/kube-testbed --env)"`).

use qflows_integration::workspace_root;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn rules_dir() -> PathBuf {
    workspace_root().join("deploy/prometheus")
}

/// Runs promtool in `deploy/prometheus` and returns its output; fails with it if promtool fails.
fn promtool(args: &[&str]) -> anyhow::Result<String> {
    let promtool = std::env::var_os("QFLOWS_PROMTOOL").ok_or_else(|| {
        anyhow::anyhow!(
            "QFLOWS_PROMTOOL is not set: run `eval \"$(scripts/kube-testbed --env)\"` (scripts/test does)"
        )
    })?;
    let out = std::process::Command::new(promtool)
        .args(args)
        .current_dir(rules_dir())
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

/// The `qflows_*` metric families an expression text names (histogram series reduced to their
/// family: `_bucket`, `_sum`, `_count` dropped).
fn qflows_metrics(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("qflows_"))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_string()
        })
        .collect()
}

#[test]
fn rules_load_and_their_unit_tests_pass() -> anyhow::Result<()> {
    let checked = promtool(&["check", "rules", "qflows-alerts.yaml"])?;
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "qflows-alerts.test.yaml"])?;
    assert!(tested.contains("SUCCESS"), "{tested}");
    Ok(())
}

#[test]
fn every_alert_has_a_unit_test() -> anyhow::Result<()> {
    let rules = std::fs::read_to_string(rules_dir().join("qflows-alerts.yaml"))?;
    let tests = std::fs::read_to_string(rules_dir().join("qflows-alerts.test.yaml"))?;
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no test in qflows-alerts.test.yaml"
        );
    }
    Ok(())
}

#[test]
fn rules_use_only_exported_and_documented_metrics() -> anyhow::Result<()> {
    let rules = std::fs::read_to_string(rules_dir().join("qflows-alerts.yaml"))?;
    let used = qflows_metrics(&rules);
    assert!(used.len() >= 7, "{used:?}");
    let root = workspace_root();
    let exported: String = [
        "workers/src/telemetry.rs",
        "workers/src/bridge/metrics.rs",
        "workers/src/admission/metrics.rs",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join(f)))
    .collect::<Result<_, _>>()?;
    let exported = qflows_metrics(&exported);
    let readme = qflows_metrics(&std::fs::read_to_string(root.join("README.md"))?);
    for metric in &used {
        assert!(
            exported.contains(metric),
            "{metric} is not exported by the worker or the bridge"
        );
        assert!(
            readme.contains(metric),
            "{metric} is not documented in README.md"
        );
    }
    Ok(())
}
