//! The `ImageScan` entity at production size: 2,500 deploy events of one digest through the
//! bridge, while Qualys is still scanning it. Every deployment is answered with the one scan,
//! and the entity continues as new instead of growing towards Temporal's limits (warning at
//! 10,240 history events, termination at 51,200; 10,000 signals per run).

use futures::StreamExt;
use qflows_integration::bridge::{Sender, start as start_bridge};
use qflows_integration::{TestEnv, runs_of, workspace_root};
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::ImageStatus;
use qualys_emulator::EmulatorConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use temporalio_client::WorkflowGetResultOptions;

const EVENTS: usize = 2_500;
/// Deployments after the scan finished (answered from the entity's result).
const CACHED: usize = 500;
/// Temporal's history-size warning.
const WARNING: i64 = 10_240;

fn push(i: usize) -> Value {
    let text = std::fs::read_to_string(
        workspace_root().join("workflows/tests/data/events/ecr-image-action-push.json"),
    )
    .unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["id"] = json!(format!("scale-{i}"));
    event
}

#[tokio::test]
async fn thousands_of_deployments_of_one_digest_keep_the_entity_bounded() -> anyhow::Result<()> {
    // Qualys takes 90 s: the deployments arrive while the scan runs (the worker starts their
    // ScanOnDeploy runs well after the bridge took them) and wait for it.
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 90_000,
        ..Default::default()
    })
    .await?;
    env.pushed(&push(0));
    let worker = env
        .worker()
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("2"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("4"))
        .env(
            "QFLOWS_RESULTS",
            Some(env.dir.join("results").to_str().unwrap()),
        )
        .start(&env.dir)
        .await?;
    let bridge = start_bridge(&env.temporal, &env.dir, &worker.task_queue).await?;
    let send = Sender::new(&bridge);

    // Deliver every event, retrying like EventBridge until the bridge says it holds it.
    let started = Instant::now();
    deliver(&send, 0..EVENTS).await;
    let delivered = started.elapsed();
    let outcomes = results(&env.client, 0..EVENTS).await?;
    let finished = started.elapsed();
    let scanned = outcomes
        .iter()
        .filter(|s| **s == ImageStatus::Scanned)
        .count();
    assert_eq!(scanned, EVENTS, "every deployment got the scan's result");
    let stats = env.qualys.stats();
    assert_eq!(stats.schedules_created, 1, "Qualys saw one scan: {stats:?}");

    // The entity continued as new; no run came near the warning.
    let digest = push(0)["detail"]["image-digest"]
        .as_str()
        .unwrap()
        .to_string();
    let entity = format!("scan-{digest}");
    let runs = runs_of(&env.client, &entity).await?;
    let lengths: Vec<i64> = runs.iter().map(|(_, l)| *l).collect();
    let total: i64 = lengths.iter().sum();
    eprintln!(
        "{EVENTS} deployments of one digest while it was scanned: delivered in {:.1} s, all \
         scanned after {:.1} s; the entity ran {} runs with {lengths:?} history events ({total} \
         in all, {:.2} per deployment); Qualys: {} schedule(s)",
        delivered.as_secs_f64(),
        finished.as_secs_f64(),
        runs.len(),
        total as f64 / EVENTS as f64,
        stats.schedules_created,
    );
    assert!(runs.len() >= 2, "it continued as new: {lengths:?}");
    assert!(
        lengths.iter().all(|l| *l < WARNING),
        "every run stayed under Temporal's 10,240-event warning: {lengths:?}"
    );

    // Later deployments of the scanned digest are answered from its result.
    let later = EVENTS..EVENTS + CACHED;
    deliver(&send, later.clone()).await;
    let outcomes = results(&env.client, later).await?;
    assert!(outcomes.iter().all(|s| *s == ImageStatus::Scanned));
    assert_eq!(env.qualys.stats().schedules_created, 1);
    let runs = runs_of(&env.client, &entity).await?;
    let lengths: Vec<i64> = runs.iter().map(|(_, l)| *l).collect();
    let added = lengths.iter().sum::<i64>() - total;
    eprintln!(
        "{CACHED} deployments of the scanned digest: {added} entity history events ({:.2} per \
         deployment); runs now {lengths:?}",
        added as f64 / CACHED as f64
    );
    assert!(lengths.iter().all(|l| *l < WARNING), "{lengths:?}");
    Ok(())
}

/// Delivers events `range`, each until the bridge answers 200 (as EventBridge retries).
async fn deliver(send: &Sender, range: std::ops::Range<usize>) {
    futures::stream::iter(range)
        .for_each_concurrent(32, |i| {
            let send = &send;
            async move {
                let event = push(i);
                loop {
                    let (status, body) = send.post("/events/aws", &event).await;
                    if status == StatusCode::OK {
                        assert_eq!(body["events"][0]["outcome"], "started", "{body}");
                        return;
                    }
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .await;
}

/// The image status of each deployment in `range`, once its `ScanOnDeploy` has ended.
async fn results(
    client: &temporalio_client::Client,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Vec<ImageStatus>> {
    futures::stream::iter(range)
        .map(|i| async move {
            let out = client
                .get_workflow_handle::<ScanOnDeploy>(format!("deploy-aws-scale-{i}"))
                .get_result(WorkflowGetResultOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("deploy {i}: {e:?}"))?;
            anyhow::Ok(out.images[0].status)
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}
