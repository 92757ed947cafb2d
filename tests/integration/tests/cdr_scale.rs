//! CdrToPolicy at scale against the real Temporal server: one policy per workload for 1,500
//! workloads, one of them promoted to enforce, through 30 `sync` signals with new findings
//! arriving between them. Prints what each sync costs in history and the largest payloads.
//!
//! `fifteen_hundred_workloads_survive_thirty_syncs_and_an_outage` runs it on a server that
//! suggests continue-as-new early (so the state crosses several runs), with a CDR outage (403)
//! over two syncs, and checks that nothing is lost. `measure_cdr_scale` (ignored;
//! `QFLOWS_CDR_SCALE_POLICIES`, `QFLOWS_CDR_SCALE_SYNCS`) runs it on a default server at any size
//! and only reports, for the README's figures.

use qflows::cli::policy::{query_policies, send_review};
use qflows_integration::{Temporal, TestEnv, history_json};
use qflows_workflows::CdrToPolicy;
use qflows_workflows::cdr::evidence::Enforcement;
use qflows_workflows::cdr::model::{PoliciesView, ReviewRequest};
use qflows_workflows::clock::rfc3339;
use qualys_emulator::EmulatorConfig;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};
use temporalio_client::{
    Client, WorkflowExecutionInfo, WorkflowHandle, WorkflowQueryOptions, WorkflowStartOptions,
};

const CATEGORIES: [&str; 6] = [
    "Cloud_Credentials_Accessed_By_Network_Utility",
    "Crypto_Mining",
    "Reverse_Shell",
    "Container_Escape",
    "Privilege_Escalation",
    "Network_Scanning_Utility",
];

/// The finding number `seq` for workload `w`: one category per workload, so one policy each.
fn finding(w: usize, seq: usize, at: SystemTime) -> Value {
    let category = CATEGORIES[w % CATEGORIES.len()];
    let mut f = json!({
        "uuid": format!("f-{w:05}-{seq:03}"),
        "threatCategory": category,
        "severity": 1 + (w + seq) % 4,
        "timestamp": rfc3339(at),
        "namespace": format!("team-{}", w % 20),
        "podLabels": {"app": format!("svc-{w:05}")},
        "imageName": format!("111122223333.dkr.ecr.us-east-1.amazonaws.com/svc-{w:05}:1.{seq}"),
    });
    let extra = match w % CATEGORIES.len() {
        0 => json!({"processPath": "/usr/bin/curl", "destinationIp": "169.254.169.254",
                    "destinationPort": 80}),
        1 => {
            json!({"processPath": "/tmp/xmrig", "destinationIp": format!("45.9.{}.{}", w % 250, seq % 250),
                    "destinationPort": 3333})
        }
        2 => {
            json!({"processPath": "/bin/bash", "destinationIp": "203.0.113.9", "destinationPort": 4444})
        }
        5 => json!({"processPath": "/usr/bin/nmap"}),
        _ => json!({"processPath": "/usr/bin/unshare"}),
    };
    f.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    f
}

/// What one run of the scenario measured.
#[derive(Debug, Default)]
struct Figures {
    policies: usize,
    syncs_done: usize,
    /// Per sync: (history bytes added, events added) within one run.
    per_sync: Vec<(i64, i64)>,
    runs: usize,
    /// Findings windows read (`cdr.FetchWindow` activities) in all runs.
    fetches: usize,
    /// Largest payload per kind (bytes, with the activity or event it was in).
    largest: BTreeMap<String, (usize, String)>,
    largest_query: usize,
    total_history_bytes: i64,
    total_events: i64,
    outcome: String,
}

impl Figures {
    fn print(&self) {
        eprintln!("== CdrToPolicy at {} policies ==", self.policies);
        eprintln!("outcome: {}", self.outcome);
        eprintln!(
            "syncs done: {}; runs: {}; windows read: {}; history in all runs: {:.2} MB in {} events",
            self.syncs_done,
            self.runs,
            self.fetches,
            self.total_history_bytes as f64 / 1e6,
            self.total_events
        );
        let steady: Vec<&(i64, i64)> = self.per_sync.iter().skip(1).collect();
        if let Some(first) = self.per_sync.first() {
            eprintln!(
                "first sync: {:.1} KB, {} events",
                first.0 as f64 / 1e3,
                first.1
            );
        }
        if !steady.is_empty() {
            let mut sizes: Vec<i64> = steady.iter().map(|s| s.0).collect();
            sizes.sort();
            let mut counts: Vec<i64> = steady.iter().map(|s| s.1).collect();
            counts.sort();
            eprintln!(
                "later syncs, median: {:.1} KB and {} events",
                sizes[sizes.len() / 2] as f64 / 1e3,
                counts[counts.len() / 2]
            );
            let n = steady.len() as f64;
            let bytes = steady.iter().map(|s| s.0).sum::<i64>() as f64 / n;
            let events = steady.iter().map(|s| s.1).sum::<i64>() as f64 / n;
            let max = steady.iter().map(|s| s.0).max().unwrap_or(0);
            eprintln!(
                "later syncs: {:.1} KB and {events:.1} events each on average (largest {:.1} KB)",
                bytes / 1e3,
                max as f64 / 1e3
            );
        }
        for (kind, (bytes, what)) in &self.largest {
            eprintln!("largest {kind}: {:.1} KB ({what})", *bytes as f64 / 1e3);
        }
        eprintln!(
            "largest `policies` query answer: {:.1} KB",
            self.largest_query as f64 / 1e3
        );
    }
}

fn run_handle(
    client: &Client,
    id: &str,
    run_id: Option<String>,
) -> WorkflowHandle<Client, CdrToPolicy> {
    WorkflowHandle::new(
        client.clone(),
        WorkflowExecutionInfo::builder()
            .namespace("default")
            .workflow_id(id)
            .maybe_run_id(run_id)
            .build(),
    )
}

/// (run ID, history bytes, events) of the latest run.
async fn describe(client: &Client, id: &str) -> anyhow::Result<(String, i64, i64)> {
    let d = run_handle(client, id, None)
        .describe(Default::default())
        .await?;
    let info = d
        .raw_description
        .workflow_execution_info
        .clone()
        .unwrap_or_default();
    Ok((
        d.run_id().to_string(),
        info.history_size_bytes,
        info.history_length,
    ))
}

/// Walks every payload of a history and keeps the largest per kind.
fn largest_payloads(history: &Value, out: &mut BTreeMap<String, (usize, String)>) {
    use base64::Engine;
    let events = history["events"].as_array().cloned().unwrap_or_default();
    let mut activity_of: BTreeMap<i64, String> = BTreeMap::new();
    fn payload_sizes(v: &Value, sizes: &mut Vec<usize>) {
        match v {
            Value::Object(m) => {
                if let (Some(Value::String(data)), Some(_)) = (m.get("data"), m.get("metadata")) {
                    let n = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map(|b| b.len())
                        .unwrap_or(data.len());
                    sizes.push(n);
                } else {
                    m.values().for_each(|v| payload_sizes(v, sizes));
                }
            }
            Value::Array(a) => a.iter().for_each(|v| payload_sizes(v, sizes)),
            _ => {}
        }
    }
    for e in &events {
        let Some((kind, attrs)) = e["attributes"].as_object().and_then(|m| m.iter().next()) else {
            continue;
        };
        let id = e["event_id"].as_i64().unwrap_or(0);
        let (label, what) = match kind.as_str() {
            "ActivityTaskScheduledEventAttributes" => {
                let name = attrs["activity_type"]["name"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                activity_of.insert(id, name.clone());
                ("activity input", name)
            }
            "ActivityTaskCompletedEventAttributes" => {
                let sched = attrs["scheduled_event_id"].as_i64().unwrap_or(0);
                (
                    "activity output",
                    activity_of.get(&sched).cloned().unwrap_or_default(),
                )
            }
            "WorkflowExecutionStartedEventAttributes" => ("workflow input", "start".into()),
            "WorkflowExecutionContinuedAsNewEventAttributes" => {
                ("continue-as-new input", "carried state".into())
            }
            "WorkflowExecutionCompletedEventAttributes" => ("workflow result", "result".into()),
            other => (
                "other",
                other.trim_end_matches("EventAttributes").to_string(),
            ),
        };
        let mut sizes = Vec::new();
        payload_sizes(attrs, &mut sizes);
        if let Some(max) = sizes.into_iter().max() {
            let slot = out.entry(label.to_string()).or_insert((0, String::new()));
            if max > slot.0 {
                *slot = (max, what);
            }
        }
    }
}

/// Every run of the workflow, newest first: (run ID, history JSON).
async fn all_runs(client: &Client, id: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    let mut run: Option<String> = None;
    loop {
        let handle = run_handle(client, id, run.clone());
        let json: Value = match &run {
            None => serde_json::from_str(&history_json(client, id).await?)?,
            Some(_) => {
                serde_json::from_slice(&handle.fetch_history(Default::default()).to_json().await?)?
            }
        };
        let previous = json["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"]
            ["continued_execution_run_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from);
        out.push((run.clone().unwrap_or_default(), json));
        match previous {
            Some(p) => run = Some(p),
            None => return Ok(out),
        }
    }
}

async fn policies_answer_size(client: &Client, id: &str) -> Option<usize> {
    let view: PoliciesView = client
        .get_workflow_handle::<CdrToPolicy>(id)
        .query(CdrToPolicy::policies, (), WorkflowQueryOptions::default())
        .await
        .ok()?;
    Some(serde_json::to_vec(&view).ok()?.len())
}

/// Polls the `policies` query (all pages) until `check` holds, or gives up after `timeout`.
async fn wait_view(
    client: &Client,
    id: &str,
    timeout: Duration,
    check: impl Fn(&PoliciesView) -> bool,
) -> Option<PoliciesView> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(v) = query_policies(client, id).await
            && check(&v)
        {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    None
}

/// How a scenario runs.
struct Scenario {
    /// Workloads (one policy each).
    workloads: usize,
    /// Syncs after the first.
    syncs: usize,
    /// Fail on the first sync that does not complete.
    strict: bool,
    /// Syncs (numbered from 1) during which the CDR API answers 403.
    outage: &'static [usize],
    /// Dynamic config of the Temporal server.
    temporal: Vec<&'static str>,
}

/// What the scenario ends with, besides the figures.
struct Ended {
    view: PoliciesView,
    /// Findings per workload the emulator served.
    findings_per_workload: BTreeMap<String, u64>,
    /// The promoted policy's name, and its file.
    promoted: (String, String),
    /// Syncs that reported a fetch error.
    failed_syncs: Vec<usize>,
}

/// Runs the scenario: `workloads` workloads, a promote, `syncs` syncs with `workloads / 100`
/// new findings before each.
async fn scenario(sc: Scenario) -> anyhow::Result<(Figures, Ended)> {
    let (n, syncs, strict) = (sc.workloads, sc.syncs, sc.strict);
    let temporal = Temporal::start_with_dynamic_config(&sc.temporal).await?;
    let env = TestEnv::start_on(temporal, EmulatorConfig::default()).await?;
    let started = SystemTime::now() - Duration::from_secs(600);
    let mut findings: Vec<Value> = (0..n).map(|w| finding(w, 0, started)).collect();
    env.qualys.set_cdr_findings(findings.clone());
    let results = env.dir.join("results");
    let worker = env
        .worker()
        .env("QFLOWS_RESULTS", results.to_str())
        .start(&env.dir)
        .await?;
    let out = env.dir.join("policies");
    let id = "cdr-scale";
    env.client
        .start_workflow(
            CdrToPolicy::run,
            json!({"policySet": "scale", "lookbackHours": 1, "syncEveryMinutes": 600,
                   "output": {"directory": out.to_str().unwrap()}}),
            WorkflowStartOptions::new(&worker.task_queue, id).build(),
        )
        .await?;
    let mut fig = Figures {
        policies: n,
        ..Default::default()
    };
    let sync_timeout = Duration::from_secs(180);
    let first = wait_view(&env.client, id, sync_timeout, |v| {
        v.last_sync.is_some() && v.policies.len() == n
    })
    .await;
    let Some(first) = first else {
        fig.outcome = "the first sync did not complete in 3 minutes".into();
        anyhow::ensure!(!strict, "{}", fig.outcome);
        let ended = Ended {
            view: PoliciesView::default(),
            findings_per_workload: BTreeMap::new(),
            promoted: Default::default(),
            failed_syncs: Vec::new(),
        };
        return finish(&env, id, fig, ended).await;
    };
    let (mut run, mut bytes, mut events) = describe(&env.client, id).await?;
    fig.per_sync.push((bytes, events));
    fig.syncs_done = 1;
    fig.largest_query = policies_answer_size(&env.client, id).await.unwrap_or(0);

    // Promote the first workload's IMDS policy.
    let promoted = first
        .policies
        .iter()
        .find(|p| p.name.contains("imds-team-0-svc-00000"))
        .map(|p| p.name.clone())
        .expect("workload 0's IMDS policy");
    let request: ReviewRequest = serde_json::from_value(json!({
        "policy": promoted, "by": "alice@example.com", "reason": "attack traffic only",
        "timeoutSecs": 120}))?;
    send_review(&env.client, id, request, true).await?;
    let mut failed_syncs = Vec::new();

    let mut last_end = first.last_sync.clone().unwrap().window.1;
    let per_sync = (n / 100).max(1);
    let mut view = first;
    for s in 1..=syncs {
        // New findings for a few workloads, timed after the last window.
        while rfc3339(SystemTime::now()) <= last_end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now = SystemTime::now();
        findings.extend((0..per_sync).map(|j| finding((s * 37 + j * 101) % n, s, now)));
        env.qualys.set_cdr_findings(findings.clone());
        env.qualys.set_cdr_forbidden(sc.outage.contains(&s));
        let signalled = env
            .client
            .get_workflow_handle::<CdrToPolicy>(id)
            .signal(CdrToPolicy::request_sync, (), Default::default())
            .await;
        if let Err(e) = signalled {
            fig.outcome = format!("sync {s}: the signal failed: {e}");
            anyhow::ensure!(!strict, "{}", fig.outcome);
            break;
        }
        let end = last_end.clone();
        let Some(next) = wait_view(&env.client, id, sync_timeout, |v| {
            v.last_sync.as_ref().is_some_and(|l| l.window.1 > end)
        })
        .await
        else {
            let status = describe(&env.client, id).await.ok();
            fig.outcome = format!("sync {s} did not complete in 3 minutes (run now: {status:?})");
            anyhow::ensure!(!strict, "{}", fig.outcome);
            break;
        };
        let report = next.last_sync.clone().unwrap();
        last_end = report.window.1.clone();
        if serde_json::to_value(&report)?.get("fetchError").is_some() {
            failed_syncs.push(s);
        }
        let (r, b, e) = describe(&env.client, id).await?;
        if r == run {
            fig.per_sync.push((b - bytes, e - events));
        } else {
            run = r;
        }
        (bytes, events) = (b, e);
        fig.syncs_done = s + 1;
        if let Some(q) = policies_answer_size(&env.client, id).await {
            fig.largest_query = fig.largest_query.max(q);
        }
        view = next;
    }
    if fig.outcome.is_empty() {
        fig.outcome = format!("completed {syncs} syncs after the first");
    }
    let mut findings_per_workload = BTreeMap::new();
    for f in &findings {
        let app = f["podLabels"]["app"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *findings_per_workload.entry(app).or_insert(0) += 1;
    }
    let file = std::fs::read_to_string(out.join(format!("{promoted}.yaml"))).unwrap_or_default();
    let ended = Ended {
        view,
        findings_per_workload,
        promoted: (promoted, file),
        failed_syncs,
    };
    finish(&env, id, fig, ended).await
}

async fn finish(
    env: &TestEnv,
    id: &str,
    mut fig: Figures,
    ended: Ended,
) -> anyhow::Result<(Figures, Ended)> {
    let runs = all_runs(&env.client, id).await?;
    fig.runs = runs.len();
    for (_, history) in &runs {
        largest_payloads(history, &mut fig.largest);
        fig.fetches += history["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["attributes"]["ActivityTaskScheduledEventAttributes"]["activity_type"]["name"]
                    == "cdr.FetchWindow"
            })
            .count();
    }
    let (_, bytes, events) = describe(&env.client, id).await.unwrap_or_default();
    fig.total_history_bytes = bytes;
    fig.total_events = events;
    // Earlier runs: their closing size from describe by run ID.
    for (run, _) in runs.iter().skip(1) {
        if let Ok(d) = run_handle(&env.client, id, Some(run.clone()))
            .describe(Default::default())
            .await
            && let Some(info) = d.raw_description.workflow_execution_info
        {
            fig.total_history_bytes += info.history_size_bytes;
            fig.total_events += info.history_length;
        }
    }
    fig.print();
    Ok((fig, ended))
}

#[tokio::test]
async fn fifteen_hundred_workloads_survive_thirty_syncs_and_an_outage() -> anyhow::Result<()> {
    let (fig, ended) = scenario(Scenario {
        workloads: 1500,
        syncs: 30,
        strict: true,
        outage: &[10, 11],
        // Continue-as-new is suggested after 150 events: the state crosses several runs.
        temporal: vec!["limit.historyCount.suggestContinueAsNew=150"],
    })
    .await?;
    assert_eq!(fig.syncs_done, 31, "{}", fig.outcome);
    assert!(fig.runs >= 3, "expected several runs, got {}", fig.runs);
    // One window per sync: continuing as new adds no sync (each such sync raced the findings
    // written in its second).
    assert_eq!(fig.fetches, fig.syncs_done, "windows read");
    assert_eq!(ended.failed_syncs, [10, 11], "the outage's syncs report it");
    // Every policy is in the query, and nothing any finding said was lost.
    let view = &ended.view;
    assert_eq!((view.policies.len(), view.total), (1500, 1500));
    let miscounted: Vec<String> = view
        .policies
        .iter()
        .filter_map(|p| {
            let sent = ended.findings_per_workload[&p.key.workload.labels["app"]];
            (p.evidence.finding_count != sent).then(|| {
                format!(
                    "{}: {} of {sent} findings",
                    p.name, p.evidence.finding_count
                )
            })
        })
        .collect();
    assert!(miscounted.is_empty(), "{miscounted:#?}");
    for p in &view.policies {
        assert!(!p.unpublished, "{} not published", p.name);
    }
    // The promoted policy is still enforced, in the state and in its file.
    let (name, file) = &ended.promoted;
    let promoted = view.policies.iter().find(|p| p.name == *name).unwrap();
    assert_eq!(promoted.enforcement, Enforcement::Enforce);
    assert_eq!(promoted.promoted.as_ref().unwrap().by, "alice@example.com");
    assert!(
        file.contains("action: Sigkill") && file.contains("qflows.io/enforcement: enforce"),
        "{file}"
    );
    let enforced = view
        .policies
        .iter()
        .filter(|p| p.enforcement == Enforcement::Enforce)
        .count();
    assert_eq!(enforced, 1);
    // Within limits: no payload and no query answer near Temporal's.
    for (kind, (bytes, what)) in &fig.largest {
        assert!(*bytes < 512 * 1024, "largest {kind}: {bytes} B ({what})");
    }
    assert!(fig.largest_query < 1024 * 1024, "{}", fig.largest_query);
    Ok(())
}

#[tokio::test]
#[ignore = "measurement: QFLOWS_CDR_SCALE_POLICIES / QFLOWS_CDR_SCALE_SYNCS pick the size"]
async fn measure_cdr_scale() -> anyhow::Result<()> {
    let get = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (_fig, ended) = scenario(Scenario {
        workloads: get("QFLOWS_CDR_SCALE_POLICIES", 1500),
        syncs: get("QFLOWS_CDR_SCALE_SYNCS", 30),
        strict: false,
        outage: &[],
        temporal: Vec::new(),
    })
    .await?;
    let view = ended.view;
    eprintln!(
        "policies in the query at the end: {}; enforced: {}",
        view.policies.len(),
        view.policies
            .iter()
            .filter(|p| p.enforcement == Enforcement::Enforce)
            .count()
    );
    Ok(())
}
