//! ScanOnDeploy end to end: ECR push events through the worker binary to the Qualys emulator.

use futures::future::join_all;
use qflows_integration::{
    TestEnv, WebhookSink, decoded_payloads, history_json, record_history, scan_on_deploy, wait_for,
};
use qflows_workflows::scan::model::{ImageStatus, Verdict};
use qualys_emulator::{EmulatorConfig, Faults};
use serde_json::{Value, json};
use std::time::Duration;

fn push_event() -> Value {
    let text = std::fs::read_to_string(
        qflows_integration::workspace_root()
            .join("workflows/tests/data/events/ecr-image-action-push.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fast_scans(env: &TestEnv) -> qflows_integration::WorkerBuilder {
    let results = env.dir.join("results");
    env.worker()
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("2"))
        .env("QFLOWS_SCAN_TTL_SECS", Some("30"))
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
}

#[tokio::test]
async fn an_ecr_push_is_scanned_gated_and_stored() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 1500,
        ..Default::default()
    })
    .await?;
    let worker = fast_scans(&env).start(&env.dir).await?;
    env.pushed(&push_event());
    let out = scan_on_deploy(&env.client, &worker.task_queue, "push-1", push_event())
        .await
        .unwrap();
    assert_eq!(out.status, "scanned");
    assert_eq!(out.images.len(), 1);
    let image = &out.images[0];
    assert_eq!(image.status, ImageStatus::Scanned, "{image:?}");
    assert_eq!(
        image.digest,
        "sha256:3b8c6f0a5d2e9f417c3a9b0e6d1f2a7c8e4b5d6f7a8091b2c3d4e5f60718293a"
    );
    assert!(
        image
            .image
            .starts_with("111122223333.dkr.ecr.us-east-1.amazonaws.com/payments/api:1.14.2"),
        "{image:?}"
    );
    let summary = image.summary.expect("a summary");
    let expected = if summary.critical > 0 {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    assert_eq!(image.verdict, Some(expected));
    assert_eq!(out.verdict, Some(expected));
    // The full report is in the results store, not in the workflow history.
    let report: Value =
        serde_json::from_slice(&std::fs::read(image.result_ref.as_ref().unwrap())?)?;
    assert_eq!(report["schemaVersion"], 1);
    assert_eq!(report["digest"], json!(image.digest));
    assert_eq!(
        report["vulnerabilities"].as_array().unwrap().len() as u64,
        summary.total()
    );
    let stats = env.qualys.stats();
    assert_eq!(stats.schedules_created, 1, "{stats:?}");
    assert_eq!(
        stats.registries_created, 1,
        "the registry was ensured on the way"
    );
    record_history(&env.client, "push-1", "scan_on_deploy_push").await?;

    // The scan carries the moment its deploy event reached Temporal, for the
    // event→submitted latency histogram: the deploy workflow's own start time.
    let started = env
        .client
        .get_workflow_handle::<qflows_workflows::ScanOnDeploy>("push-1")
        .describe(Default::default())
        .await?
        .start_time()
        .expect("a start time");
    let started_ms = started.duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let entity_id = format!("scan-{}", image.digest);
    let submitted = submit_inputs(&history_json(&env.client, &entity_id).await?)?;
    assert_eq!(submitted.len(), 1, "{submitted:?}");
    assert_eq!(
        submitted[0]["eventAcceptedAtMs"],
        json!(started_ms),
        "{submitted:?}"
    );

    // A rescan runs on the rescan task queue (served by the same worker) and refreshes the result.
    let entity = env
        .client
        .get_workflow_handle::<qflows_workflows::ImageScan>(format!("scan-{}", image.digest));
    let vuln_calls = |stats: &qualys_emulator::Stats| {
        stats
            .calls
            .get("GET /csapi/v1.3/images/{sha}/vuln")
            .copied()
            .unwrap_or(0)
    };
    let before = vuln_calls(&env.qualys.stats());
    entity
        .signal(
            qflows_workflows::ImageScan::request_rescan,
            "test".to_string(),
            Default::default(),
        )
        .await?;
    wait_for(
        "the rescan to collect results again",
        Duration::from_secs(60),
        || async { (vuln_calls(&env.qualys.stats()) > before).then_some(()) },
    )
    .await?;
    let refreshed = wait_for("the refreshed result", Duration::from_secs(30), || async {
        entity
            .query(qflows_workflows::ImageScan::result, (), Default::default())
            .await
            .ok()
            .flatten()
    })
    .await?;
    assert_eq!(refreshed.status, ImageStatus::Scanned);
    assert!(
        worker.logs().contains("rescan_task_queue"),
        "the rescan worker runs"
    );
    record_history(
        &env.client,
        &format!("scan-{}", image.digest),
        "image_scan_registry",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_events_for_one_digest_cause_one_scan_and_one_alert() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 2000,
        ..Default::default()
    })
    .await?;
    let hook = WebhookSink::start().await?;
    // Fail on any vulnerability, so the first verdict is an alert.
    let worker = fast_scans(&env)
        .env("QFLOWS_GATE_FAIL_SEVERITY", Some("1"))
        .env("QFLOWS_WEBHOOK_URL", Some(&hook.url))
        .start(&env.dir)
        .await?;
    env.pushed(&push_event());
    let (client, task_queue) = (&env.client, &worker.task_queue);
    let runs = (0..25).map(|i| async move {
        let mut event = push_event();
        event["id"] = json!(format!("event-{i}"));
        scan_on_deploy(client, task_queue, &format!("deploy-{i}"), event).await
    });
    let outputs: Vec<_> = join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        outputs
            .iter()
            .all(|o| o.images[0].status == ImageStatus::Scanned)
    );
    let stats = env.qualys.stats();
    assert_eq!(
        stats.schedules_created, 1,
        "25 events, one digest, one scan: {stats:?}"
    );
    assert_eq!(stats.registries_created, 1);
    assert!(
        outputs.iter().all(|o| o.verdict == Some(Verdict::Fail)),
        "{:?}",
        outputs[0]
    );
    let alerts = wait_for("the alert", Duration::from_secs(30), || async {
        let got = hook.received();
        (!got.is_empty()).then_some(got)
    })
    .await?;
    assert_eq!(
        alerts.len(),
        1,
        "one alert per digest, not per event: {alerts:?}"
    );
    assert_eq!(alerts[0]["notification"]["kind"], "verdictChanged");
    assert!(
        alerts[0]["text"].as_str().unwrap().contains("payments/api"),
        "{}",
        alerts[0]
    );
    Ok(())
}

#[tokio::test]
async fn events_that_need_no_scan_are_ignored_and_bad_ones_fail_fast() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = fast_scans(&env).start(&env.dir).await?;
    let mut delete = push_event();
    delete["detail"]["action-type"] = json!("DELETE");
    let out = scan_on_deploy(&env.client, &worker.task_queue, "delete", delete)
        .await
        .unwrap();
    assert_eq!(out.status, "ignored");
    assert!(out.reason.unwrap().contains("DELETE"));
    record_history(&env.client, "delete", "scan_on_deploy_ignored").await?;

    // A task on its way to RUNNING is scanned once, when it runs.
    let text = std::fs::read_to_string(
        qflows_integration::workspace_root()
            .join("workflows/tests/data/events/aws-eventbridge-ecs-task-state-change.json"),
    )?;
    let mut pending: Value = serde_json::from_str(&text)?;
    pending["detail"]["lastStatus"] = json!("PENDING");
    let out = scan_on_deploy(&env.client, &worker.task_queue, "task-pending", pending)
        .await
        .unwrap();
    assert_eq!(out.status, "ignored", "{out:?}");
    assert!(out.reason.unwrap().contains("when it is running"));
    record_history(&env.client, "task-pending", "scan_on_deploy_task_pending").await?;

    let mut bad = push_event();
    bad["detail"]["image-digest"] = json!("sha256:nothex");
    let failure = scan_on_deploy(&env.client, &worker.task_queue, "bad", bad)
        .await
        .unwrap_err();
    assert_eq!(
        failure.type_name.as_deref(),
        Some("InvalidInput"),
        "{failure:?}"
    );
    assert!(failure.message.contains("image-digest"), "{failure:?}");

    let manual = json!({"images": ["nginx:1.25", "not a reference"]});
    let failure = scan_on_deploy(&env.client, &worker.task_queue, "manual-bad", manual)
        .await
        .unwrap_err();
    assert!(failure.message.contains("images[1]"), "{failure:?}");
    assert_eq!(
        env.qualys.stats().calls.values().sum::<u64>(),
        0,
        "nothing was done"
    );
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_while_scans_poll_loses_nothing_and_submits_nothing_twice()
-> anyhow::Result<()> {
    // Every image read takes 3 s, so the kill lands in the middle of Qualys calls: their
    // heartbeats stop, and the attempts are retried within the 20-s heartbeat timeout rather than
    // after the 2-minute attempt limit (which outlasts this test's 120-s wait).
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 8000,
        faults: Faults {
            latency_ms: 3000,
            latency_rate: 1.0,
            paths: Some(vec!["/csapi/v1.3/images".to_string()]),
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    let mut worker = fast_scans(&env).start(&env.dir).await?;
    let task_queue = worker.task_queue.clone();
    let events: Vec<Value> = (0..10)
        .map(|i| {
            let mut event = push_event();
            event["id"] = json!(format!("kill-{i}"));
            event["detail"]["repository-name"] = json!(format!("team/app-{}", i % 5));
            event["detail"]["image-digest"] = json!(format!("sha256:{:064x}", i % 5 + 1));
            env.pushed(&event);
            event
        })
        .collect();
    let client = env.client.clone();
    let tq = task_queue.clone();
    let runs = tokio::spawn(async move {
        let runs = events.into_iter().enumerate().map(|(i, e)| {
            let (client, tq) = (client.clone(), tq.clone());
            async move { scan_on_deploy(&client, &tq, &format!("kill-{i}"), e).await }
        });
        join_all(runs).await
    });
    // All five scans submitted: the entities are now polling Qualys on durable timers.
    wait_for("5 submitted scans", Duration::from_secs(60), || async {
        (env.qualys.stats().schedules_created >= 5).then_some(())
    })
    .await?;
    worker.kill().await;
    let _replacement = fast_scans(&env)
        .task_queue(&task_queue)
        .start(&env.dir)
        .await?;

    let outputs = tokio::time::timeout(Duration::from_secs(120), runs).await??;
    for output in outputs {
        let output = output.unwrap();
        assert_eq!(output.images[0].status, ImageStatus::Scanned, "{output:?}");
    }
    let stats = env.qualys.stats();
    assert_eq!(
        stats.schedules_created, 5,
        "no scan was submitted twice: {stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn non_ecr_images_are_scanned_by_qscanner_when_configured() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let standin = qflows_integration::qflows_bin()?.with_file_name("qscanner");
    assert!(
        standin.is_file(),
        "build it first: cargo build -p qscanner-standin"
    );
    let worker = fast_scans(&env)
        .env("QFLOWS_QSCANNER_BIN", Some(standin.to_str().unwrap()))
        .env(
            "QFLOWS_QSCANNER_REGISTRIES",
            Some("ecr,acr,docker.io,ghcr.io"),
        )
        .start(&env.dir)
        .await?;
    let digest = format!("sha256:{}", "c".repeat(64));
    // An event may name any host: QScanner pulls only from the registries it is allowed.
    let metadata = format!("169.254.169.254/latest/meta-data@sha256:{}", "d".repeat(64));
    let event = json!({"images": [
        format!("ghcr.io/acme/vulnerable-app:2.0@{digest}"),
        "nginx:1.25",
        metadata,
    ]});
    let out = scan_on_deploy(&env.client, &worker.task_queue, "qscan-1", event)
        .await
        .unwrap();
    assert_eq!(out.images.len(), 3);
    let refused = &out.images[2];
    assert_eq!(refused.status, ImageStatus::Skipped, "{refused:?}");
    assert!(
        refused
            .reason
            .as_deref()
            .unwrap()
            .contains("local or internal address"),
        "{refused:?}"
    );
    let scanned = &out.images[0];
    assert_eq!(scanned.status, ImageStatus::Scanned, "{scanned:?}");
    assert_eq!(scanned.backend.as_deref(), Some("qscanner"));
    assert!(scanned.summary.is_some());
    // A tag without a digest outside ECR cannot be pinned: reported, not guessed.
    assert_eq!(out.images[1].status, ImageStatus::Skipped);
    assert!(
        out.images[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("no digest"),
        "{:?}",
        out.images[1]
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(scanned.result_ref.as_ref().unwrap())?)?;
    assert_eq!(report["backend"], "qscanner");
    assert!(
        report["vulnerabilities"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{report}"
    );
    Ok(())
}

/// The inputs of every `qualys.FindOrSubmitScan` (the lookup-then-submit step) an `ImageScan`
/// history scheduled.
fn submit_inputs(history: &str) -> anyhow::Result<Vec<Value>> {
    let history: Value = serde_json::from_str(history)?;
    let events = history["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .map(|e| &e["attributes"]["ActivityTaskScheduledEventAttributes"])
        .filter(|a| a["activity_type"]["name"] == "qualys.FindOrSubmitScan")
        .map(|a| Ok(serde_json::from_str(&decoded_payloads(&a["input"]))?))
        .collect()
}
