//! Operating at scale: `deploy/grafana/qflows.json` and the worker's KEDA `ScaledObject`.
//!
//! - The dashboard loads: valid JSON of Grafana's dashboard model (panels on the 24-column grid,
//!   unique IDs, every panel on the `datasource` variable, every `$variable` defined), and every
//!   PromQL expression parses in Prometheus' own parser (`promtool check rules` over a rules file
//!   made of the expressions). Needs `QFLOWS_PROMTOOL` (`eval "$(scripts/kube-testbed --env)"`).
//! - Every metric it queries is exported by a live worker or bridge, scraped after real deploy
//!   events, a Qualys outage and a 429 storm, with the labels it groups by and matches on; every
//!   qflows metric it queries is in the README.
//! - The ScaledObject's triggers are exactly the task queues the live worker polls, each with
//!   the task types (workflow, activity) its pollers ask for.
//!
//! (deploy_manifests.rs dry-runs the ScaledObject against kube-apiserver with KEDA's CRD.)

use qflows_integration::bridge::{Sender, start as bridge};
use qflows_integration::{TestEnv, scrape_metrics, wait_for, workspace_root};
use qualys_emulator::{EmulatorConfig, Faults};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

fn dashboard_path() -> PathBuf {
    workspace_root().join("deploy/grafana/qflows.json")
}

fn dashboard() -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(dashboard_path())?;
    Ok(serde_json::from_str(&text)?)
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// `(panel title, refId, expression)` of every query.
fn expressions(dashboard: &Value) -> Vec<(String, String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| {
                    (
                        title.clone(),
                        t["refId"].as_str().unwrap_or_default().to_string(),
                        t["expr"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
        .collect()
}

/// The queries of the template variables (`label_values(<metric>, <label>)`).
fn variable_queries(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Grafana's built-in variables the dashboard may use, and what they become for promtool.
const BUILTINS: [(&str, &str); 3] = [
    ("$__rate_interval", "5m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
];

/// `expr` as Prometheus would receive it: built-ins replaced by durations, `$name` variables by
/// a regex matching anything (they are used only as `label=~"$name"`).
fn substituted(expr: &str, variables: &BTreeSet<String>) -> String {
    let mut out = expr.to_string();
    for (builtin, value) in BUILTINS {
        out = out.replace(builtin, value);
    }
    for name in variables {
        out = out.replace(&format!("${{{name}}}"), ".+");
        out = out.replace(&format!("${name}"), ".+");
    }
    out
}

/// The `$name` / `${name}` references of `text`.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The `qflows_*` and `temporal_*` series names an expression reads.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("qflows_") || w.starts_with("temporal_"))
        .map(str::to_string)
        .collect()
}

/// The series names of a Prometheus text exposition, and the labels of each series.
fn scraped(text: &str) -> Vec<(String, BTreeMap<String, String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = line[..name_end].to_string();
            let mut labels = BTreeMap::new();
            if line[name_end..].starts_with('{') {
                let body = &line[name_end + 1..line.rfind('}').unwrap_or(line.len())];
                for pair in body.split("\",") {
                    if let Some((k, v)) = pair.split_once("=\"") {
                        labels.insert(k.trim().to_string(), v.trim_end_matches('"').to_string());
                    }
                }
            }
            (name, labels)
        })
        .collect()
}

/// The labels an expression groups by (`by (..)`) or matches on (`{label=~..}`), without `le`
/// and the labels Prometheus adds when it scrapes (`instance`, `job`).
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        rest = &rest[i + 4..];
        let end = rest.find(')').unwrap_or(rest.len());
        out.extend(rest[..end].split(',').map(|l| l.trim().to_string()));
    }
    let mut rest = expr;
    while let Some(i) = rest.find('{') {
        rest = &rest[i + 1..];
        let end = rest.find('}').unwrap_or(rest.len());
        for matcher in rest[..end].split(',') {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out.retain(|l| !l.is_empty() && !["le", "instance", "job"].contains(&l.as_str()));
    out
}

/// Where `promtool` is (or why it cannot run).
fn promtool() -> anyhow::Result<PathBuf> {
    std::env::var_os("QFLOWS_PROMTOOL")
        .map(PathBuf::from)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "QFLOWS_PROMTOOL is not set: run `eval \"$(scripts/kube-testbed --env)\"` (scripts/test does)"
            )
        })
}

#[test]
fn dashboard_loads_and_every_expression_parses() -> anyhow::Result<()> {
    let dashboard = dashboard()?;
    assert_eq!(dashboard["title"], "qflows");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["schemaVersion"].as_i64() >= Some(36));

    // Template variables: the Prometheus data source, and the queries Grafana runs for others.
    let variables: Vec<&Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .collect();
    let names: BTreeSet<String> = variables
        .iter()
        .map(|v| v["name"].as_str().expect("a variable name").to_string())
        .collect();
    assert_eq!(names.len(), variables.len(), "duplicate variable names");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let on_datasource = |d: &Value| d["type"] == "prometheus" && d["uid"] == "${datasource}";
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        assert!(on_datasource(&variable["datasource"]), "{variable}");
        let query = variable["query"]["query"].as_str().expect("query.query");
        assert!(
            query.starts_with("label_values(") && query.ends_with(')'),
            "{query}"
        );
        assert_eq!(variable["definition"].as_str(), Some(query));
    }

    // Panels: unique IDs, on the 24-column grid without overlaps, each query on the data source.
    let all = panels(&dashboard);
    assert!(all.len() >= 15, "only {} panels", all.len());
    let mut ids = BTreeSet::new();
    let mut cells: BTreeSet<(i64, i64)> = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    for panel in &all {
        let title = panel["title"].as_str().expect("every panel has a title");
        let id = panel["id"].as_i64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} twice ({title})");
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_i64().expect("gridPos"));
        assert!(
            x >= 0 && w > 0 && h > 0 && x + w <= 24 && y >= 0,
            "{title}: {grid}"
        );
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        let kind = panel["type"].as_str().expect("type");
        kinds.insert(kind.to_string());
        if kind == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat"].contains(&kind),
            "{title}: panel type {kind}"
        );
        assert!(
            panel["description"].as_str().is_some_and(|d| d.len() > 20),
            "{title}: say what it shows"
        );
        assert!(on_datasource(&panel["datasource"]), "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert!(on_datasource(&target["datasource"]), "{title}: {target}");
            let ref_id = target["refId"].as_str().expect("refId");
            assert!(ref_ids.insert(ref_id), "{title}: refId {ref_id} twice");
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| !e.trim().is_empty())
            );
        }
        assert!(
            panel["fieldConfig"]["defaults"]["unit"].is_string(),
            "{title}: no unit"
        );
    }
    assert!(kinds.contains("row") && kinds.contains("stat") && kinds.contains("timeseries"));

    // Every `$variable` is a defined one or a Grafana built-in; every expression reads qflows'
    // or the SDK's metrics.
    let exprs = expressions(&dashboard);
    let builtins: BTreeSet<&str> = BUILTINS
        .iter()
        .map(|(b, _)| b.trim_start_matches('$'))
        .collect();
    for (title, ref_id, expr) in &exprs {
        for name in references(expr) {
            assert!(
                names.contains(&name) || builtins.contains(name.as_str()),
                "{title}/{ref_id}: ${name} is not defined"
            );
        }
        assert!(
            !metric_names(expr).is_empty(),
            "{title}/{ref_id}: reads no qflows or temporal metric: {expr}"
        );
    }

    // Prometheus' parser reads every expression: promtool parses each `expr` of a rules file.
    let mut rules = String::from("groups:\n  - name: qflows-dashboard\n    rules:\n");
    for (i, (title, ref_id, expr)) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      # {title} / {ref_id}\n      - record: qflows_dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&substituted(expr, &names))?
        ));
    }
    for (i, query) in variable_queries(&dashboard).iter().enumerate() {
        let metric = query
            .trim_start_matches("label_values(")
            .split(',')
            .next()
            .unwrap_or_default();
        rules.push_str(&format!(
            "      - record: qflows_dashboard:variable_{i}\n        expr: {}\n",
            serde_json::to_string(metric)?
        ));
    }
    let dir = std::env::temp_dir().join(format!("qflows-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("dashboard-expressions.yaml");
    std::fs::write(&file, &rules)?;
    let out = std::process::Command::new(promtool()?)
        .args(["check", "rules"])
        .arg(&file)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool:\n{text}\n{rules}");
    assert!(
        text.contains(&format!(
            "SUCCESS: {} rules found",
            exprs.len() + variable_queries(&dashboard).len()
        )),
        "{text}"
    );

    // The check can fail: a broken expression is refused.
    std::fs::write(
        &file,
        "groups:\n  - name: broken\n    rules:\n      - record: x:y\n        expr: sum(rate(qflows_scan_requests_total[5m])\n",
    )?;
    let out = std::process::Command::new(promtool()?)
        .args(["check", "rules"])
        .arg(&file)
        .output()?;
    assert!(
        !out.status.success(),
        "promtool accepted a broken expression"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[tokio::test]
async fn dashboard_metrics_and_autoscaler_queues_are_a_live_worker_s() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 1500,
        ..Default::default()
    })
    .await?;
    let standin = qflows_integration::qflows_bin()?.with_file_name("qscanner");
    anyhow::ensure!(
        standin.is_file(),
        "build it first: cargo build -p qscanner-standin"
    );
    let metrics = format!("127.0.0.1:{}", qflows_integration::free_port());
    let results = env.dir.join("results");
    let worker = env
        .worker()
        .env("QFLOWS_METRICS_LISTEN", Some(&metrics))
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
        .env("QFLOWS_QSCANNER_BIN", Some(standin.to_str().unwrap()))
        .start(&env.dir)
        .await?;
    let bridge = bridge(&env.temporal, &env.dir, &worker.task_queue).await?;
    let send = Sender::new(&bridge);

    // Qualys is down (5xx and 429 on every csapi call) when the first deploy arrives: the
    // activity fails, is retried, and succeeds once Qualys is back.
    env.qualys.set_faults(Faults {
        error_5xx_rate: 0.5,
        throttle_429_rate: 1.0,
        paths: Some(vec!["/csapi".into()]),
        ..Default::default()
    });
    let push: Value = serde_json::from_str(&std::fs::read_to_string(
        workspace_root().join("workflows/tests/data/events/ecr-image-action-push.json"),
    )?)?;
    env.pushed(&push);
    let (status, body) = send.post("/events/aws", &push).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counted = |text: &str, name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    wait_for("a failed activity", Duration::from_secs(60), || async {
        let text = scrape_metrics(&metrics).await?;
        (counted(&text, "qflows_activity_failures_total{") > 0.0
            && counted(&text, "qflows_qualys_throttled_total{") > 0.0)
            .then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", worker.logs()))?;
    env.qualys.set_faults(Faults::default());
    // A redelivery, so the bridge counts a duplicate too.
    let (_, again) = send.post("/events/aws", &push).await;
    assert_eq!(again["events"][0]["outcome"], "duplicate", "{again}");

    // The scan is submitted and timed; AwaitScan polls (the SDK counts unfinished polls as
    // failed attempts).
    let worker_text = wait_for("the scan metrics", Duration::from_secs(90), || async {
        let text = scrape_metrics(&metrics).await?;
        (counted(&text, "qflows_scans_submitted_total{") >= 1.0
            && counted(&text, "qflows_scan_submit_latency_seconds_count{") >= 1.0
            && text.contains("temporal_activity_execution_failed"))
        .then_some(text)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", worker.logs()))?;
    let bridge_text = scrape_metrics(&bridge.addr.to_string())
        .await
        .expect("the bridge serves /metrics");

    // Every series the dashboard reads is one of theirs.
    let dashboard = dashboard()?;
    let worker_series = scraped(&worker_text);
    let bridge_series = scraped(&bridge_text);
    let exported: BTreeSet<&str> = worker_series
        .iter()
        .chain(&bridge_series)
        .map(|(name, _)| name.as_str())
        .collect();
    let mut used = BTreeSet::new();
    for (_, _, expr) in expressions(&dashboard) {
        used.extend(metric_names(&expr));
    }
    for query in variable_queries(&dashboard) {
        used.extend(metric_names(&query));
    }
    assert!(used.len() >= 15, "{used:?}");
    // ... and carries the labels the dashboard groups by and matches on.
    let series: Vec<&(String, BTreeMap<String, String>)> =
        worker_series.iter().chain(&bridge_series).collect();
    for (title, ref_id, expr) in expressions(&dashboard) {
        let names = metric_names(&expr);
        for label in label_names(&expr) {
            assert!(
                series
                    .iter()
                    .any(|(name, labels)| names.contains(name) && labels.contains_key(&label)),
                "{title}/{ref_id}: no series of {names:?} has the label {label}"
            );
        }
    }
    let readme = std::fs::read_to_string(workspace_root().join("README.md"))?;
    for metric in &used {
        assert!(
            exported.contains(metric.as_str()),
            "the dashboard reads {metric}, which neither the worker nor the bridge exports"
        );
        if metric.starts_with("qflows_") {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| metric.strip_suffix(s))
                .unwrap_or(metric);
            assert!(readme.contains(family), "{family} is not in README.md");
        }
    }

    // The ScaledObject scales on exactly the queues this worker polls, for the task types it
    // polls them for (sticky queues are per-worker and never scaled on).
    let mut polled: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (name, labels) in &worker_series {
        if name != "temporal_num_pollers" {
            continue;
        }
        let (Some(queue), Some(poller)) = (labels.get("task_queue"), labels.get("poller_type"))
        else {
            continue;
        };
        let kind = match poller.as_str() {
            "workflow_task" => "workflow",
            "activity_task" => "activity",
            _ => continue,
        };
        polled.entry(queue.clone()).or_default().insert(kind);
    }
    let scaled_object: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(
        workspace_root().join("deploy/kubernetes/keda/worker-scaledobject.yaml"),
    )?)?;
    let base = "qflows";
    let mut triggered: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for trigger in scaled_object["spec"]["triggers"]
        .as_array()
        .expect("triggers")
    {
        let queue = trigger["metadata"]["taskQueue"]
            .as_str()
            .expect("taskQueue");
        // The manifests use QFLOWS_TASK_QUEUE=qflows; this worker's queue name differs.
        let suffix = queue.strip_prefix(base).expect("a qflows queue");
        let types = trigger["metadata"]["queueTypes"]
            .as_str()
            .expect("queueTypes");
        triggered
            .entry(format!("{}{suffix}", worker.task_queue))
            .or_default()
            .extend(types.split(','));
    }
    assert_eq!(
        triggered, polled,
        "ScaledObject triggers vs the worker's pollers"
    );
    assert_eq!(polled.len(), 5, "{polled:?}");
    Ok(())
}
