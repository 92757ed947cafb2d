//! CdrToPolicy end to end: emulated Qualys CDR findings → the worker binary → policy files, and
//! review by updates; `qflows policy generate` offline on a findings file with broken entries.

use qflows::cli::policy::{promote_as_shown, query_policies, send_review};
use qflows_integration::{
    TestEnv, decoded_payloads, history_json, qflows_bin, record_history, wait_for,
};
use qflows_workflows::CdrToPolicy;
use qflows_workflows::cdr::evidence::Enforcement;
use qflows_workflows::cdr::model::{PoliciesView, PolicyRecord, ReviewRequest};
use qflows_workflows::clock::rfc3339;
use qualys_emulator::EmulatorConfig;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, SystemTime};
use temporalio_client::{Client, WorkflowStartOptions};

fn minutes_ago(m: u64) -> String {
    rfc3339(SystemTime::now() - Duration::from_secs(m * 60))
}

/// Three workloads' findings: IMDS from payments, mining and a reverse shell from batch.
fn findings() -> Vec<Value> {
    vec![
        json!({"uuid": "f-imds-1", "threatCategory": "Cloud_Credentials_Accessed_By_Network_Utility",
               "severity": 4, "timestamp": minutes_ago(50), "processPath": "/usr/bin/curl",
               "destinationIp": "169.254.169.254", "destinationPort": 80,
               "podLabels": {"app": "payments-api", "io.kubernetes.pod.namespace": "shop"},
               "mitreRulesInfo": {"T1552.005": {}}}),
        json!({"uuid": "f-imds-2", "threatCategory": "Cloud_Credentials_Accessed_By_Network_Utility",
               "severity": 3, "timestamp": minutes_ago(40), "processName": "wget",
               "destinationIp": "fd00:ec2::254",
               "podLabels": {"app": "payments-api", "io.kubernetes.pod.namespace": "shop"}}),
        json!({"uuid": "f-mine-1", "threatCategory": "Crypto_Mining", "severity": 2,
               "timestamp": minutes_ago(30), "processPath": "/tmp/xmrig",
               "destinationIp": "45.9.148.3", "destinationPort": 3333, "namespace": "batch",
               "podLabels": {"app": "reports"}}),
        json!({"uuid": "f-shell-1", "threatCategory": "Reverse_Shell", "severity": 4,
               "timestamp": minutes_ago(20), "processPath": "/bin/bash",
               "destinationIp": "203.0.113.9", "destinationPort": 4444, "namespace": "batch",
               "podLabels": {"app": "reports"}}),
        // Counted and skipped: no category, unknown category.
        json!({"uuid": "f-none", "timestamp": minutes_ago(10)}),
        json!({"uuid": "f-ssh", "threatCategory": "SSH_Password_Brute_Force", "timestamp": minutes_ago(10)}),
    ]
}

async fn policies(client: &Client, id: &str) -> anyhow::Result<PoliciesView> {
    query_policies(client, id).await
}

async fn review(
    client: &Client,
    id: &str,
    promote: bool,
    policy: &str,
) -> Result<PolicyRecord, String> {
    let mut request = ReviewRequest {
        policy: policy.into(),
        by: "alice@example.com".into(),
        reason: "seen only in attack traffic".into(),
        timeout_secs: 60,
        observed: None,
    };
    if promote {
        // As `qflows policy promote` does: show the observed values, promote exactly those.
        request = promote_as_shown(client, id, request)
            .await
            .map_err(|e| format!("{e:?}"))?;
    }
    send_review(client, id, request, promote)
        .await
        .map_err(|e| format!("{e:?}"))
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.yaml"))).unwrap_or_default()
}

async fn start(env: &TestEnv, queue: &str, id: &str, input: Value) -> anyhow::Result<()> {
    env.client
        .start_workflow(
            CdrToPolicy::run,
            input,
            WorkflowStartOptions::new(queue, id).build(),
        )
        .await?;
    Ok(())
}

/// A worker keeping CdrToPolicy's evidence in the test's directory.
fn worker(env: &TestEnv) -> qflows_integration::WorkerBuilder {
    let results = env.dir.join("results");
    env.worker()
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
}

#[tokio::test]
async fn findings_become_policies_that_are_promoted_and_rolled_back() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    env.qualys.set_cdr_findings(findings());
    let metrics = format!("127.0.0.1:{}", qflows_integration::free_port());
    let worker = env
        .worker()
        .env("QFLOWS_METRICS_LISTEN", Some(&metrics))
        .start(&env.dir)
        .await?;
    let out = env.dir.join("policies");
    let id = "cdr-review";
    start(
        &env,
        &worker.task_queue,
        id,
        json!({"policySet": "review", "lookbackHours": 2,
               "output": {"directory": out.to_str().unwrap()}}),
    )
    .await?;

    let view = wait_for("the first sync", Duration::from_secs(60), || async {
        policies(&env.client, id)
            .await
            .ok()
            .filter(|v| v.last_sync.is_some())
    })
    .await?;
    let sync = view.last_sync.clone().unwrap();
    assert_eq!(sync.findings.findings, 6, "{sync:?}");
    assert_eq!(sync.findings.used, 4);
    assert_eq!(sync.findings.skipped["no-category"], 1);
    assert_eq!(
        sync.findings.unknown_categories["SSH_Password_Brute_Force"],
        1
    );
    let names: Vec<&str> = view.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "t1059-004-revshell-batch-reports",
            "t1496-mining-batch-reports",
            "t1552-005-imds-shop-payments-api"
        ]
    );
    assert_eq!(sync.publish.created.len(), 3, "{sync:?}");
    assert!(
        view.policies
            .iter()
            .all(|p| p.enforcement == Enforcement::Audit)
    );
    let imds = "t1552-005-imds-shop-payments-api";
    // Two findings for one workload merged into one policy.
    assert_eq!(view.policies[2].evidence.finding_count, 2);
    let yaml = read(&out, imds);
    assert!(
        yaml.contains("action: Post") && !yaml.contains("Sigkill"),
        "{yaml}"
    );
    assert!(
        yaml.contains("qflows.io/finding-ids: f-imds-1,f-imds-2"),
        "{yaml}"
    );

    // Refused before it enters history: unknown policy, missing reason.
    let err = review(&env.client, id, true, "t9999-nothing")
        .await
        .unwrap_err();
    assert!(err.contains("no policy"), "{err}");
    let err = review(&env.client, id, false, imds).await.unwrap_err();
    assert!(err.contains("already in audit"), "{err}");

    // promote → Sigkill (and Override) in the written policy.
    let promoted = review(&env.client, id, true, imds).await.unwrap();
    assert_eq!(promoted.enforcement, Enforcement::Enforce);
    assert_eq!(promoted.promoted.as_ref().unwrap().by, "alice@example.com");
    let yaml = read(&out, imds);
    assert!(
        yaml.contains("action: Sigkill") && !yaml.contains("action: Post"),
        "{yaml}"
    );
    assert!(yaml.contains("qflows.io/enforcement: enforce"), "{yaml}");
    // Only the promoted policy changed.
    assert!(read(&out, "t1496-mining-batch-reports").contains("action: Post"));

    // rollback → Post again.
    let rolled = review(&env.client, id, false, imds).await.unwrap();
    assert_eq!(rolled.enforcement, Enforcement::Audit);
    assert!(rolled.hold, "a human rollback holds automatic promotion");
    let yaml = read(&out, imds);
    assert!(
        yaml.contains("action: Post") && !yaml.contains("Sigkill"),
        "{yaml}"
    );

    // The worker counted one promotion and one revert.
    let changes = wait_for("policy metrics", Duration::from_secs(30), || async {
        let text = qflows_integration::scrape_metrics(&metrics).await?;
        let value = |change: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("qflows_policy_enforcement_changes_total")
                        && l.contains(&format!("change=\"{change}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        let changes = (value("promoted")?, value("reverted")?);
        (changes.1 >= 1.0).then_some(changes)
    })
    .await?;
    assert_eq!(changes, (1.0, 1.0));

    // Both reviews are in the workflow's history, with who and why.
    let history = history_json(&env.client, id).await?;
    let payloads = decoded_payloads(&serde_json::from_str(&history)?);
    for needle in ["\"promote\"", "\"rollback\""] {
        assert!(history.contains(needle), "history lacks {needle}");
    }
    // EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED = 43: both updates completed.
    let events: Value = serde_json::from_str(&history)?;
    let completed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_type"] == 43)
        .count();
    assert_eq!(completed, 2, "two completed updates in history");
    for needle in [
        "alice@example.com",
        "seen only in attack traffic",
        "\"enforcement\":\"enforce\"",
    ] {
        assert!(payloads.contains(needle), "history payloads lack {needle}");
    }
    record_history(&env.client, id, "cdr_to_policy_limits_review").await?;
    Ok(())
}

#[tokio::test]
async fn new_findings_update_only_the_affected_policy() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    env.qualys.set_cdr_findings(findings());
    let worker = worker(&env).start(&env.dir).await?;
    let out = env.dir.join("policies");
    let id = "cdr-merge";
    start(
        &env,
        &worker.task_queue,
        id,
        json!({"policySet": "merge", "lookbackHours": 2, "syncEveryMinutes": 600,
               "output": {"directory": out.to_str().unwrap()}}),
    )
    .await?;
    let first = wait_for("the first sync", Duration::from_secs(60), || async {
        policies(&env.client, id)
            .await
            .ok()
            .filter(|v| v.last_sync.is_some())
    })
    .await?;
    let first_end = first.last_sync.unwrap().window.1;
    let before_mining = read(&out, "t1496-mining-batch-reports");

    // A new IMDS finding for the same workload arrives after the first window; the next sync
    // merges it.
    let now = wait_for(
        "the clock to pass the first window",
        Duration::from_secs(5),
        || async { Some(rfc3339(SystemTime::now())).filter(|now| *now > first_end) },
    )
    .await?;
    let mut more = findings();
    more.push(json!({"uuid": "f-imds-3", "threatCategory": "Cloud_Credentials_Accessed_By_Network_Utility",
        "timestamp": now, "processPath": "/usr/bin/python3",
        "destinationIp": "169.254.170.2",
        "podLabels": {"app": "payments-api", "io.kubernetes.pod.namespace": "shop"}}));
    env.qualys.set_cdr_findings(more);
    env.client
        .get_workflow_handle::<CdrToPolicy>(id)
        .signal(CdrToPolicy::request_sync, (), Default::default())
        .await?;
    let view = wait_for("the second sync", Duration::from_secs(60), || async {
        policies(&env.client, id).await.ok().filter(|v| {
            v.last_sync
                .as_ref()
                .is_some_and(|s| s.findings.findings == 1)
        })
    })
    .await?;
    let sync = view.last_sync.unwrap();
    assert_eq!(
        sync.publish.updated,
        ["t1552-005-imds-shop-payments-api"],
        "{sync:?}"
    );
    assert_eq!(sync.publish.created.len(), 0);
    // Only what changed is published: the other two are not even rewritten.
    assert!(sync.publish.unchanged.is_empty(), "{sync:?}");
    assert_eq!(view.policies.len(), 3, "merged, not a near-duplicate");
    let yaml = read(&out, "t1552-005-imds-shop-payments-api");
    assert!(yaml.contains("qflows.io/finding-count: '3'"), "{yaml}");
    assert!(yaml.contains("/usr/bin/python3"), "{yaml}");
    assert_eq!(read(&out, "t1496-mining-batch-reports"), before_mining);
    Ok(())
}

/// With an explicit window and no review time, a run syncs once and completes: the history the
/// replay test uses for the one-shot (scheduled) form.
#[tokio::test]
async fn an_explicit_window_runs_once_and_completes() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    env.qualys.set_cdr_findings(findings());
    let worker = worker(&env).start(&env.dir).await?;
    let out = env.dir.join("policies");
    let handle = env
        .client
        .start_workflow(
            CdrToPolicy::run,
            json!({"policySet": "once", "startAt": minutes_ago(120), "endAt": rfc3339(SystemTime::now()),
                   "review": {"openHours": 0}, "tetragonVersion": "1.4",
                   "output": {"directory": out.to_str().unwrap()}}),
            WorkflowStartOptions::new(&worker.task_queue, "cdr-once").build(),
        )
        .await?;
    let view = handle.get_result(Default::default()).await?;
    assert_eq!(view.policies.len(), 3);
    let files = std::fs::read_dir(&out)?.count();
    assert_eq!(files, 3);
    // v1.4 output: no features of later releases.
    let yaml = read(&out, "t1552-005-imds-shop-payments-api");
    assert!(!yaml.contains("containerSelector"), "{yaml}");
    record_history(&env.client, "cdr-once", "cdr_to_policy_limits_once").await?;
    Ok(())
}

#[tokio::test]
async fn bad_input_fails_naming_the_field() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = worker(&env).start(&env.dir).await?;
    let handle = env
        .client
        .start_workflow(
            CdrToPolicy::run,
            json!({"policySet": "Bad Name", "output": {"directory": "/tmp/x"}}),
            WorkflowStartOptions::new(&worker.task_queue, "cdr-bad").build(),
        )
        .await?;
    let err = format!(
        "{:?}",
        handle.get_result(Default::default()).await.unwrap_err()
    );
    assert!(err.contains("policySet"), "{err}");
    let handle = env
        .client
        .start_workflow(
            CdrToPolicy::run,
            json!({"policySet": "ok", "output": {"directory": "/tmp/x"}, "tetragonVersion": "1.2"}),
            WorkflowStartOptions::new(&worker.task_queue, "cdr-bad-version").build(),
        )
        .await?;
    let err = format!(
        "{:?}",
        handle.get_result(Default::default()).await.unwrap_err()
    );
    assert!(err.contains("too old"), "{err}");
    Ok(())
}

fn run_generate(findings: &Path, out: &Path, action: &str) -> std::process::Output {
    std::process::Command::new(qflows_bin().unwrap())
        .args(["policy", "generate", "--findings"])
        .arg(findings)
        .args(["--action", action, "--output"])
        .arg(out)
        .env_clear()
        .output()
        .unwrap()
}

#[test]
fn policy_generate_writes_the_valid_policies_and_reports_the_rest() {
    let dir = std::env::temp_dir().join(format!("qflows-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("findings.json");
    let mut content = findings();
    content.extend([
        json!(42),
        json!(null),
        json!({"threatCategory": {"x": 1}, "severity": [1]}),
    ]);
    // A workload-less finding: an audit policy for all pods, but never a blocking one.
    content.push(json!({"uuid": "f-anon", "threatCategory": "Container_Escape"}));
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"content": content})).unwrap(),
    )
    .unwrap();

    let out = dir.join("audit");
    let run = run_generate(&file, &out, "Post");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("findings: 10 read, 5 used, 5 skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("skipped 2: not-an-object"), "{stderr}");
    assert!(stderr.contains("skipped 2: no-category"), "{stderr}");
    assert!(
        stderr.contains("unknown category \"SSH_Password_Brute_Force\""),
        "{stderr}"
    );
    assert!(stderr.contains("4 written"), "{stderr}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
    let first = std::fs::read(out.join("t1611-escape-all-pods.yaml")).unwrap();
    // Again: nothing changes, byte for byte.
    let again = run_generate(&file, &out, "Post");
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 new, 0 changed, 4 unchanged"));
    assert_eq!(
        std::fs::read(out.join("t1611-escape-all-pods.yaml")).unwrap(),
        first
    );

    let block = dir.join("block");
    let run = run_generate(&file, &block, "Sigkill");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("3 written") && stderr.contains("1 refused"),
        "{stderr}"
    );
    assert!(stderr.contains("refused t1611-escape-all-pods"), "{stderr}");
    assert!(!block.join("t1611-escape-all-pods.yaml").exists());

    // Not a findings document at all: a clear error, exit 1, nothing written.
    std::fs::write(&file, b"{\"items\": 3}").unwrap();
    let run = run_generate(&file, &dir.join("none"), "Post");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a findings document"), "{stderr}");
    assert!(!dir.join("none").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `qflows schedule cdr` creates a Temporal Schedule whose runs are CdrToPolicy syncs.
#[tokio::test]
async fn schedule_cdr_runs_cdr_to_policy_on_an_interval() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    env.qualys.set_cdr_findings(findings());
    let worker = worker(&env).start(&env.dir).await?;
    let out = env.dir.join("scheduled");
    let run = tokio::process::Command::new(qflows_bin()?)
        .args([
            "schedule",
            "cdr",
            "--every",
            "1h",
            "--trigger-now",
            "--policy-set",
            "nightly",
        ])
        .arg("--output-dir")
        .arg(&out)
        .args(["--temporal-address", &env.temporal.address])
        .args(["--task-queue", &worker.task_queue])
        .env_clear()
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("schedule cdr-nightly created"), "{stderr}");
    // The triggered run syncs once and writes the policies.
    let files = wait_for(
        "the scheduled run's policies",
        Duration::from_secs(60),
        || async {
            let n = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
            (n == 3).then_some(n)
        },
    )
    .await?;
    assert_eq!(files, 3);
    // A bad interval is refused before anything is created.
    let bad = tokio::process::Command::new(qflows_bin()?)
        .args([
            "schedule",
            "cdr",
            "--every",
            "10s",
            "--output-dir",
            "/tmp/x",
        ])
        .env_clear()
        .output()
        .await?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 1m"));
    Ok(())
}

/// A target that cannot take the policy: the sync keeps its state and reports why, and a
/// promotion that cannot be applied changes nothing.
#[tokio::test]
async fn an_unpublishable_promotion_changes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    env.qualys.set_cdr_findings(findings());
    let worker = worker(&env).start(&env.dir).await?;
    let id = "cdr-unreachable";
    start(
        &env,
        &worker.task_queue,
        id,
        json!({"policySet": "unreachable", "lookbackHours": 2,
               "output": {"kubernetes": {"kubeconfig": env.dir.join("missing-kubeconfig")}}}),
    )
    .await?;
    let view = wait_for("the first sync", Duration::from_secs(60), || async {
        policies(&env.client, id)
            .await
            .ok()
            .filter(|v| v.last_sync.is_some())
    })
    .await?;
    let sync = view.last_sync.unwrap();
    let why = sync.publish_error.expect("a publish error");
    assert!(why.contains("kubernetes configuration"), "{why}");
    assert_eq!(view.policies.len(), 3, "the state is kept");
    let err = review(&env.client, id, true, "t1496-mining-batch-reports")
        .await
        .unwrap_err();
    assert!(err.contains("lapsed"), "{err}");
    let after = policies(&env.client, id).await?;
    assert!(
        after
            .policies
            .iter()
            .all(|p| p.enforcement == Enforcement::Audit)
    );
    Ok(())
}

/// Whether the policy file's exec hook (`security_bprm_check`) matches a binary at `path`.
fn exec_matches(yaml: &str, path: &str) -> bool {
    let policy: Value = serde_yaml_ng::from_str(yaml).unwrap();
    policy["spec"]["kprobes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["call"] == "security_bprm_check")
        .flat_map(|k| k["selectors"].as_array().unwrap().clone())
        .any(|sel| {
            sel["matchArgs"].as_array().unwrap().iter().all(|a| {
                let values: Vec<&str> = a["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                match a["operator"].as_str().unwrap() {
                    "Equal" => values.contains(&path),
                    "Postfix" => values.iter().any(|v| path.ends_with(v)),
                    "Prefix" => values.iter().any(|v| path.starts_with(v)),
                    other => panic!("unexpected operator {other}"),
                }
            })
        })
}

async fn sync_and_wait(env: &TestEnv, id: &str, after: &str) -> anyhow::Result<PoliciesView> {
    env.client
        .get_workflow_handle::<CdrToPolicy>(id)
        .signal(CdrToPolicy::request_sync, (), Default::default())
        .await?;
    wait_for("the next sync", Duration::from_secs(90), || async {
        policies(&env.client, id).await.ok().filter(|v| {
            v.last_sync
                .as_ref()
                .is_some_and(|s| s.window.1.as_str() > after)
        })
    })
    .await
}

/// Waits until the wall clock is past `end` (a window's end) and returns the time.
async fn past(end: &str) -> anyhow::Result<String> {
    wait_for(
        "the clock to pass the window",
        Duration::from_secs(5),
        || async { Some(rfc3339(SystemTime::now())).filter(|now| now.as_str() > end) },
    )
    .await
}

/// An attacker runs nmap renamed `/tmp/gunicorn` in a pod whose server is
/// `/usr/local/bin/gunicorn`: the policy names `/tmp/gunicorn` as observed, never matches the
/// app's binary, is not promoted automatically, and blocks exactly what its reviewer saw.
#[tokio::test]
async fn a_renamed_scanner_never_kills_the_app_and_waits_for_a_review() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let scan = |id: &str, path: &str, at: String| {
        json!({"uuid": id, "threatCategory": "Network_Scanning_Utility", "severity": 3,
               "timestamp": at, "processPath": path, "namespace": "shop",
               "podLabels": {"app": "payments-api"}})
    };
    let mut all = vec![
        scan("f-scan-1", "/tmp/gunicorn", minutes_ago(30)),
        // A workload with nothing observed: quiet, it promotes itself.
        json!({"uuid": "f-esc-1", "threatCategory": "Container_Escape", "severity": 4,
               "timestamp": minutes_ago(20), "processPath": "/usr/bin/unshare",
               "namespace": "batch", "podLabels": {"app": "reports"}}),
    ];
    env.qualys.set_cdr_findings(all.clone());
    let worker = worker(&env).start(&env.dir).await?;
    let out = env.dir.join("policies");
    let id = "cdr-observed";
    start(
        &env,
        &worker.task_queue,
        id,
        json!({"policySet": "observed", "lookbackHours": 2, "syncEveryMinutes": 600,
               "review": {"autoPromoteAfterQuietHours": 0},
               "output": {"directory": out.to_str().unwrap()}}),
    )
    .await?;
    let scanning = "t1046-scanning-shop-payments-api";
    let escape = "t1611-escape-batch-reports";
    let view = wait_for(
        "the first sync and the automatic promotion",
        Duration::from_secs(60),
        || async {
            policies(&env.client, id).await.ok().filter(|v| {
                v.policies
                    .iter()
                    .any(|p| p.name == escape && p.enforcement == Enforcement::Enforce)
            })
        },
    )
    .await?;
    let p = view.policies.iter().find(|p| p.name == scanning).unwrap();
    assert_eq!(
        p.enforcement,
        Enforcement::Audit,
        "observed values wait for a person"
    );
    assert_eq!(
        p.observed.binaries.iter().collect::<Vec<_>>(),
        ["/tmp/gunicorn"]
    );
    let auto = view.policies.iter().find(|p| p.name == escape).unwrap();
    assert_eq!(auto.promoted.as_ref().unwrap().by, "qflows");
    let yaml = read(&out, scanning);
    assert!(
        yaml.contains("qflows.io/observed-binaries: /tmp/gunicorn"),
        "{yaml}"
    );
    assert!(exec_matches(&yaml, "/tmp/gunicorn"));
    assert!(
        exec_matches(&yaml, "/usr/bin/nmap"),
        "known scanners match by name"
    );
    assert!(!exec_matches(&yaml, "/usr/local/bin/gunicorn"), "{yaml}");

    // A promotion that does not name what the reviewer saw is refused before it enters history.
    let blind = ReviewRequest {
        policy: scanning.into(),
        by: "alice@example.com".into(),
        reason: "looks like a scan".into(),
        timeout_secs: 60,
        observed: None,
    };
    let err = format!(
        "{:?}",
        send_review(&env.client, id, blind.clone(), true)
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("values taken from findings") && err.contains("/tmp/gunicorn"),
        "{err}"
    );
    let seen = p.observed_digest.clone();

    // New evidence arrives before the promotion: the digest the reviewer saw no longer holds.
    let end = view.last_sync.clone().unwrap().window.1;
    let now = past(&end).await?;
    all.push(scan("f-scan-2", "/var/tmp/.x/scan", now));
    env.qualys.set_cdr_findings(all.clone());
    let view = sync_and_wait(&env, id, &end).await?;
    let p = view.policies.iter().find(|p| p.name == scanning).unwrap();
    assert_eq!(p.observed.binaries.len(), 2, "{:?}", p.observed);
    let stale = ReviewRequest {
        observed: Some(seen),
        ..blind.clone()
    };
    let err = format!(
        "{:?}",
        send_review(&env.client, id, stale, true).await.unwrap_err()
    );
    assert!(err.contains("not what the reviewer saw"), "{err}");

    // Reviewed as it stands now: exactly those two paths block.
    let reviewed = ReviewRequest {
        observed: Some(p.observed_digest.clone()),
        ..blind.clone()
    };
    let promoted = send_review(&env.client, id, reviewed, true).await?;
    assert_eq!(promoted.enforcement, Enforcement::Enforce);
    assert_eq!(promoted.approved.as_ref(), Some(&p.observed));
    let yaml = read(&out, scanning);
    assert!(yaml.contains("action: Sigkill"), "{yaml}");
    assert!(exec_matches(&yaml, "/tmp/gunicorn") && exec_matches(&yaml, "/var/tmp/.x/scan"));
    assert!(!exec_matches(&yaml, "/usr/local/bin/gunicorn"), "{yaml}");

    // Evidence after the promotion is listed but does not widen the kill rule.
    let end = view.last_sync.clone().unwrap().window.1;
    let now = past(&end).await?;
    all.push(scan("f-scan-3", "/dev/shm/payload", now));
    env.qualys.set_cdr_findings(all.clone());
    let view = sync_and_wait(&env, id, &end).await?;
    let p = view.policies.iter().find(|p| p.name == scanning).unwrap();
    assert_eq!(p.enforcement, Enforcement::Enforce);
    assert!(p.observed.binaries.contains("/dev/shm/payload"));
    assert!(p.unreviewed().binaries.contains("/dev/shm/payload"));
    let yaml = read(&out, scanning);
    assert!(!exec_matches(&yaml, "/dev/shm/payload"), "{yaml}");
    assert!(
        yaml.contains("qflows.io/observed-unreviewed: binaries /dev/shm/payload"),
        "{yaml}"
    );
    record_history(&env.client, id, "cdr_to_policy_limits_observed").await?;
    Ok(())
}

/// An outage (5xx beyond the fetch's retry window, then a 403) fails syncs, not the workflow:
/// the state stays, and the next good sync reads everything since the last good window.
#[tokio::test]
async fn a_cdr_outage_over_two_syncs_loses_nothing() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let mut all = findings();
    env.qualys.set_cdr_findings(all.clone());
    let worker = worker(&env).start(&env.dir).await?;
    let out = env.dir.join("policies");
    let id = "cdr-outage";
    // Syncing every minute gives each fetch 30 s of retries before the sync gives up.
    start(
        &env,
        &worker.task_queue,
        id,
        json!({"policySet": "outage", "lookbackHours": 2, "syncEveryMinutes": 1,
               "output": {"directory": out.to_str().unwrap()}}),
    )
    .await?;
    let first = wait_for("the first sync", Duration::from_secs(60), || async {
        policies(&env.client, id)
            .await
            .ok()
            .filter(|v| v.last_sync.is_some())
    })
    .await?;
    let good_end = first.last_sync.clone().unwrap().window.1;
    let imds = "t1552-005-imds-shop-payments-api";
    review(&env.client, id, true, imds).await.unwrap();

    // Down: every CDR call answers 5xx.
    env.qualys.set_faults(qualys_emulator::Faults {
        error_5xx_rate: 1.0,
        paths: Some(vec!["/cdr-api".into()]),
        ..Default::default()
    });
    let now = past(&good_end).await?;
    let imds_finding = |uuid: &str, at: String| {
        json!({"uuid": uuid, "threatCategory": "Cloud_Credentials_Accessed_By_Network_Utility",
               "timestamp": at, "processPath": "/usr/bin/python3", "destinationIp": "169.254.170.2",
               "podLabels": {"app": "payments-api", "io.kubernetes.pod.namespace": "shop"}})
    };
    all.push(imds_finding("f-during-5xx", now));
    env.qualys.set_cdr_findings(all.clone());
    let failed = sync_and_wait(&env, id, &good_end).await?;
    let report = failed.last_sync.clone().unwrap();
    let why = report.fetch_error.clone().expect("a fetch error");
    assert!(why.contains("Qualys server error"), "{why}");
    assert_eq!(failed.policies.len(), 3, "the state is kept");

    // Still down, now refusing: a 403 fails the next sync at once.
    env.qualys.set_cdr_forbidden(true);
    env.qualys.set_faults(Default::default());
    let end = report.window.1.clone();
    let now = past(&end).await?;
    all.push(imds_finding("f-during-403", now));
    env.qualys.set_cdr_findings(all.clone());
    let failed = sync_and_wait(&env, id, &end).await?;
    let report = failed.last_sync.clone().unwrap();
    let why = report.fetch_error.clone().expect("a fetch error");
    assert!(why.contains("403"), "{why}");
    let p = failed.policies.iter().find(|p| p.name == imds).unwrap();
    assert_eq!(p.enforcement, Enforcement::Enforce, "review state kept");
    assert!(read(&out, imds).contains("action: Sigkill"));

    // Back: one sync reads both windows it missed.
    env.qualys.set_cdr_forbidden(false);
    let end = report.window.1.clone();
    past(&end).await?;
    let view = sync_and_wait(&env, id, &end).await?;
    let sync = view.last_sync.clone().unwrap();
    assert_eq!(sync.fetch_error, None, "{sync:?}");
    assert_eq!(sync.findings.findings, 2, "{sync:?}");
    assert!(sync.window.0.as_str() > good_end.as_str(), "{sync:?}");
    let p = view.policies.iter().find(|p| p.name == imds).unwrap();
    assert_eq!(p.evidence.finding_count, 4);
    assert_eq!(p.enforcement, Enforcement::Enforce);
    let yaml = read(&out, imds);
    assert!(yaml.contains("qflows.io/finding-count: '4'"), "{yaml}");
    assert!(yaml.contains("action: Sigkill"), "{yaml}");
    Ok(())
}

/// A run from before `cdr-limits` continues as new with its records in the input: the new run
/// stores their evidence, keeps their review state, and an enforced one blocks on its category's
/// own values only until someone approves what findings added.
#[tokio::test]
async fn records_carried_by_an_older_run_are_imported() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    env.qualys.set_cdr_findings(Vec::new());
    let worker = worker(&env).start(&env.dir).await?;
    let out = env.dir.join("policies");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let name = "t1496-mining-batch-reports";
    let legacy = json!({
        "name": name,
        "key": {"category": "mining",
                "workload": {"namespace": "batch", "labels": {"app": "reports"}}},
        "evidence": {"findingCount": 2, "findingIds": ["f-1", "f-2"], "processes": ["/tmp/xmrig"],
                     "addresses": ["45.9.148.3"], "ports": [3333, 8080], "techniques": ["T1496"],
                     "firstSeen": minutes_ago(90), "lastSeen": minutes_ago(80), "maxSeverity": 3},
        "enforcement": "enforce", "changedAt": minutes_ago(70), "changedSecs": now - 4200,
        "evidenceSecs": now - 4800,
        "promoted": {"by": "bob@example.com", "reason": "pool traffic", "at": minutes_ago(70),
                     "atSecs": now - 4200},
        "hold": false
    });
    let id = "cdr-imported";
    start(
        &env,
        &worker.task_queue,
        id,
        json!({"policySet": "imported", "syncEveryMinutes": 600,
               "output": {"directory": out.to_str().unwrap()},
               "carried": {"policies": [legacy], "windowEndSecs": now - 60}}),
    )
    .await?;
    let view = wait_for("the first sync", Duration::from_secs(60), || async {
        policies(&env.client, id)
            .await
            .ok()
            .filter(|v| v.last_sync.is_some())
    })
    .await?;
    let p = &view.policies[0];
    assert_eq!(
        (p.name.as_str(), p.enforcement),
        (name, Enforcement::Enforce)
    );
    assert_eq!(p.promoted.as_ref().unwrap().by, "bob@example.com");
    assert_eq!(p.evidence.finding_count, 2);
    assert_eq!(p.evidence.hash.len(), 64);
    assert_eq!(p.approved, Some(Default::default()));
    assert!(p.observed.addresses.contains("45.9.148.3") && p.observed.ports.contains(&8080));
    let yaml = read(&out, name);
    assert!(yaml.contains("action: Sigkill"), "{yaml}");
    let spec = yaml.split("spec:").nth(1).unwrap_or_default();
    assert!(
        !spec.contains("45.9.148.3") && !spec.contains("'8080'"),
        "{yaml}"
    );
    assert!(yaml.contains("qflows.io/observed-unreviewed"), "{yaml}");
    // Approving what the reviewer sees widens it.
    let approved = review(&env.client, id, true, name).await.unwrap();
    assert_eq!(approved.approved.as_ref(), Some(&p.observed));
    let yaml = read(&out, name);
    assert!(
        yaml.split("spec:").nth(1).unwrap().contains("45.9.148.3"),
        "{yaml}"
    );
    Ok(())
}

/// With a server that suggests continue-as-new early, the state (evidence, enforcement, review
/// notes) crosses runs, and every requested sync is served.
#[tokio::test]
async fn the_state_crosses_continue_as_new() -> anyhow::Result<()> {
    let temporal = qflows_integration::Temporal::start_with_dynamic_config(&[
        "limit.historyCount.suggestContinueAsNew=40",
    ])
    .await?;
    let env = TestEnv::start_on(temporal, EmulatorConfig::default()).await?;
    let mut all = findings();
    env.qualys.set_cdr_findings(all.clone());
    let worker = worker(&env).start(&env.dir).await?;
    let out = env.dir.join("policies");
    let id = "cdr-continued";
    start(
        &env,
        &worker.task_queue,
        id,
        json!({"policySet": "continued", "lookbackHours": 2, "syncEveryMinutes": 600,
               "output": {"directory": out.to_str().unwrap()}}),
    )
    .await?;
    let first = wait_for("the first sync", Duration::from_secs(60), || async {
        policies(&env.client, id)
            .await
            .ok()
            .filter(|v| v.last_sync.is_some())
    })
    .await?;
    let imds = "t1552-005-imds-shop-payments-api";
    let first_run = env
        .client
        .get_workflow_handle::<CdrToPolicy>(id)
        .describe(Default::default())
        .await?
        .run_id()
        .to_string();
    review(&env.client, id, true, imds).await.unwrap();
    let mut end = first.last_sync.unwrap().window.1;
    let mut runs = std::collections::BTreeSet::from([first_run]);
    for i in 0..12 {
        let now = past(&end).await?;
        all.push(
            json!({"uuid": format!("f-more-{i}"), "threatCategory": "Crypto_Mining",
            "timestamp": now, "destinationIp": "45.9.148.3", "destinationPort": 3333,
            "namespace": "batch", "podLabels": {"app": "reports"}}),
        );
        env.qualys.set_cdr_findings(all.clone());
        let view = sync_and_wait(&env, id, &end).await?;
        end = view.last_sync.unwrap().window.1;
        let run = env
            .client
            .get_workflow_handle::<CdrToPolicy>(id)
            .describe(Default::default())
            .await?
            .run_id()
            .to_string();
        runs.insert(run);
    }
    assert!(runs.len() >= 3, "expected several runs, saw {}", runs.len());
    let view = policies(&env.client, id).await?;
    assert_eq!(view.policies.len(), 3);
    let mining = view
        .policies
        .iter()
        .find(|p| p.name == "t1496-mining-batch-reports")
        .unwrap();
    assert_eq!(mining.evidence.finding_count, 13, "every finding, once");
    let p = view.policies.iter().find(|p| p.name == imds).unwrap();
    assert_eq!(p.enforcement, Enforcement::Enforce);
    assert_eq!(p.promoted.as_ref().unwrap().by, "alice@example.com");
    assert!(read(&out, imds).contains("action: Sigkill"));
    assert!(read(&out, "t1496-mining-batch-reports").contains("qflows.io/finding-count: '13'"));
    record_history(&env.client, id, "cdr_to_policy_limits_continued").await?;
    Ok(())
}

/// A large window is read page by page with heartbeats; an attempt that breaks midway is retried
/// from its last checkpoint, and every finding is counted once.
#[tokio::test]
async fn a_read_that_breaks_midway_resumes_from_its_checkpoint() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let at = minutes_ago(30);
    let all: Vec<Value> = (0..6000)
        .map(|i| {
            json!({"uuid": format!("f-{i:05}"),
                   "threatCategory": "Cloud_Credentials_Accessed_By_Network_Utility",
                   "timestamp": at, "destinationIp": "169.254.169.254",
                   "namespace": "shop", "podLabels": {"app": format!("svc-{:02}", i % 60)}})
        })
        .collect();
    env.qualys.set_cdr_findings(all);
    // Page 56 of 60 fails once: the attempt has stored its checkpoint after page 50.
    env.qualys.fail_cdr_page_once(5500);
    let worker = worker(&env).start(&env.dir).await?;
    let id = "cdr-resume";
    start(
        &env,
        &worker.task_queue,
        id,
        json!({"policySet": "resume", "lookbackHours": 2, "syncEveryMinutes": 600,
               "output": {"directory": env.dir.join("policies").to_str().unwrap()}}),
    )
    .await?;
    let view = wait_for("the first sync", Duration::from_secs(120), || async {
        policies(&env.client, id)
            .await
            .ok()
            .filter(|v| v.last_sync.is_some())
    })
    .await?;
    let sync = view.last_sync.clone().unwrap();
    assert_eq!(sync.fetch_error, None, "{sync:?}");
    assert_eq!((sync.findings.findings, sync.findings.used), (6000, 6000));
    assert_eq!(view.policies.len(), 60);
    assert!(
        view.policies
            .iter()
            .all(|p| p.evidence.finding_count == 100),
        "every finding once"
    );
    let logs = worker.logs();
    assert!(logs.contains("resumed_at=5000"), "{logs}");
    Ok(())
}

/// The content-addressed documents CdrToPolicy keeps work in every results store the worker
/// supports: S3 (moto) and Azure Blob Storage (Azurite), and a swapped document is refused.
#[tokio::test]
async fn evidence_documents_round_trip_through_s3_and_blob_storage() -> anyhow::Result<()> {
    use qflows_activities::results::ResultsStore;
    let moto = qflows_integration::Moto::start().await?;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket("qflows-cdr").send().await?;
    let azurite = qflows_integration::azure::Azurite::start().await?;
    azurite.create_container("qflows-results").await?;
    let aws = qflows_activities::aws::Aws::new();
    let stores = [
        ResultsStore::S3(qflows_activities::results::S3Results::new(
            s3.clone(),
            "qflows-cdr",
            "prod",
        )),
        ResultsStore::from_location(
            &format!(
                "{}/qflows-results/prod?{}",
                azurite.account_url,
                azurite.sas()
            ),
            &aws,
            "us-east-1",
        )
        .await?,
    ];
    let doc =
        br#"{"key":{"category":"imds","workload":{}},"evidence":{"findingCount":1}}"#.to_vec();
    for store in &stores {
        let hash = store.put_blob("cdr-evidence", doc.clone()).await?;
        assert_eq!(hash.len(), 64);
        assert_eq!(store.put_blob("cdr-evidence", doc.clone()).await?, hash);
        assert_eq!(store.get_blob("cdr-evidence", &hash).await?, doc);
        let missing = store
            .get_blob("cdr-evidence", &"0".repeat(64))
            .await
            .unwrap_err();
        assert!(!missing.is_retryable(), "{missing}");
    }
    // Someone replaces the S3 object: reading it is refused.
    let hash = stores[0].put_blob("cdr-evidence", doc.clone()).await?;
    let key = format!("prod/blobs/cdr-evidence/{}/{hash}.json", &hash[..2]);
    s3.put_object()
        .bucket("qflows-cdr")
        .key(&key)
        .body(b"{\"forged\":true}".to_vec().into())
        .send()
        .await?;
    let err = stores[0].get_blob("cdr-evidence", &hash).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let names = azurite.list_blobs("qflows-results").await?;
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("prod/blobs/cdr-evidence/")),
        "{names:?}"
    );
    Ok(())
}
