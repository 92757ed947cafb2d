//! Verdicts that stay correct over time: the `ImageScan` entity against the Qualys emulator (a
//! registry that tags move in, slow scans, forced rescans), moto's ECR and SNS, and the real
//! Temporal server, through the `qflows worker` binary.

use qflows_integration::{
    Moto, TestEnv, WebhookSink, WorkerBuilder, push_ecr_image, pushed_digest, record_history,
    scan_on_deploy, vulnerabilities, wait_for,
};
use qflows_workflows::ImageScan;
use qflows_workflows::scan::model::{ImageStatus, Verdict};
use qualys_emulator::{EmulatorConfig, SeedImage};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// Fast polls, a short first retry, results in the scratch directory, AWS in moto.
fn worker(env: &TestEnv, moto: &Moto) -> WorkerBuilder {
    let results = env.dir.join("results");
    env.worker()
        .aws(moto)
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("2"))
        .env("QFLOWS_SCAN_RETRY_INITIAL_SECS", Some("2"))
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
}

fn with_id(mut event: Value, id: &str) -> Value {
    event["id"] = json!(id);
    event
}

/// The image-family calls Qualys saw (`GET /images…`), by route.
fn image_calls(stats: &qualys_emulator::Stats) -> BTreeMap<String, u64> {
    stats
        .calls
        .iter()
        .filter(|(route, _)| route.contains("/images"))
        .map(|(route, n)| (route.clone(), *n))
        .collect()
}

#[tokio::test]
async fn a_tag_moved_to_a_new_digest_gets_a_new_scan_and_its_own_verdict() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 1000,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let worker = worker(&env, &moto).start(&env.dir).await?;
    let tq = &worker.task_queue;

    // Monday: `latest` is a clean image.
    let clean = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/moving",
        "latest",
        "clean",
        vulnerabilities(&[1]),
    )
    .await?;
    let monday = scan_on_deploy(&env.client, tq, "moving-1", clean.clone())
        .await
        .unwrap();
    assert_eq!(monday.images[0].verdict, Some(Verdict::Pass), "{monday:?}");

    // Tuesday: CI pushes a vulnerable image under the same tag. Qualys' record of Monday's
    // image still carries `latest`; it must not be taken for Tuesday's digest.
    let vulnerable = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/moving",
        "latest",
        "vulnerable",
        vulnerabilities(&[5, 3]),
    )
    .await?;
    assert_ne!(pushed_digest(&clean), pushed_digest(&vulnerable));
    let tuesday = scan_on_deploy(&env.client, tq, "moving-2", vulnerable.clone())
        .await
        .unwrap();
    let image = &tuesday.images[0];
    assert_eq!(image.digest, pushed_digest(&vulnerable));
    assert_eq!(image.status, ImageStatus::Scanned, "{image:?}");
    assert_eq!(image.verdict, Some(Verdict::Fail), "{image:?}");
    assert_eq!(image.summary.unwrap().critical, 1, "Tuesday's findings");
    let stats = env.qualys.stats();
    assert_eq!(stats.schedules_created, 2, "a new Qualys scan: {stats:?}");
    assert_eq!(stats.image_scans, 2, "{stats:?}");

    // Monday's digest keeps Monday's verdict.
    let monday_entity = env
        .client
        .get_workflow_handle::<ImageScan>(format!("scan-{}", pushed_digest(&clean)));
    let kept = monday_entity
        .query(ImageScan::result, (), Default::default())
        .await?
        .unwrap();
    assert_eq!(kept.verdict, Some(Verdict::Pass));
    record_history(
        &env.client,
        &format!("scan-{}", pushed_digest(&vulnerable)),
        "image_scan_bounded_moved_tag",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_scan_that_timed_out_is_scanned_for_the_next_deployment_once_qualys_finished()
-> anyhow::Result<()> {
    // Qualys takes 7 s (404 for half of it); the worker gives up after 4 s.
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 7000,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let hook = WebhookSink::start().await?;
    let worker = worker(&env, &moto)
        .env("QFLOWS_SCAN_TIMEOUT_SECS", Some("4"))
        .env("QFLOWS_WEBHOOK_URL", Some(&hook.url))
        .start(&env.dir)
        .await?;
    let tq = &worker.task_queue;
    let event = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/slow",
        "1.0",
        "slow",
        vulnerabilities(&[2]),
    )
    .await?;
    let first = scan_on_deploy(&env.client, tq, "slow-1", event.clone())
        .await
        .unwrap();
    assert_eq!(first.images[0].status, ImageStatus::TimedOut, "{first:?}");
    assert_eq!(
        first.images[0].verdict,
        Some(Verdict::Audit),
        "an unscanned image gets the unscanned verdict, never pass"
    );
    // Qualys finishes; the next deployment gets the real result, without a second submission.
    let submitted = env.qualys.schedules()[0]["createdMs"].as_u64().unwrap();
    let done_at = submitted + 7_500;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(done_at.saturating_sub(now))).await;
    let second = scan_on_deploy(&env.client, tq, "slow-2", with_id(event, "slow-2"))
        .await
        .unwrap();
    assert_eq!(second.images[0].status, ImageStatus::Scanned, "{second:?}");
    assert_eq!(second.images[0].verdict, Some(Verdict::Pass));
    let history =
        qflows_integration::history_json(&env.client, &format!("scan-{}", second.images[0].digest))
            .await?;
    assert_eq!(
        env.qualys.stats().schedules_created,
        1,
        "{:?}\n{}",
        env.qualys.schedules(),
        activity_steps(&history)
    );
    let alerts = hook.received();
    assert_eq!(
        alerts.len(),
        1,
        "one alert for the failure streak: {alerts:?}"
    );
    assert_eq!(alerts[0]["notification"]["kind"], "scanFailed");
    record_history(
        &env.client,
        &format!("scan-{}", second.images[0].digest),
        "image_scan_bounded_timed_out",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_rescan_makes_qualys_scan_again_and_a_new_verdict_alerts() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 500,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let hook = WebhookSink::start().await?;
    let worker = worker(&env, &moto)
        .env("QFLOWS_WEBHOOK_URL", Some(&hook.url))
        .start(&env.dir)
        .await?;
    let event = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/kb",
        "1.0",
        "kb",
        vulnerabilities(&[2]),
    )
    .await?;
    let out = scan_on_deploy(&env.client, &worker.task_queue, "kb-1", event.clone())
        .await
        .unwrap();
    assert_eq!(out.images[0].verdict, Some(Verdict::Pass));
    // Qualys' knowledge base learns of a critical vulnerability in the same image.
    env.qualys.push_image(qualys_emulator::PushedImage {
        registry: ECR.into(),
        repository: "probe/kb".into(),
        tag: "1.0".into(),
        digest: pushed_digest(&event),
        vulnerabilities: vulnerabilities(&[5, 2]),
    });
    let entity = env
        .client
        .get_workflow_handle::<ImageScan>(format!("scan-{}", pushed_digest(&event)));
    entity
        .signal(
            ImageScan::request_rescan,
            "knowledge base update".to_string(),
            Default::default(),
        )
        .await?;
    let rescanned = wait_for("the rescan's verdict", Duration::from_secs(60), || async {
        entity
            .query(ImageScan::result, (), Default::default())
            .await
            .ok()
            .flatten()
            .filter(|r| r.verdict == Some(Verdict::Fail))
    })
    .await?;
    assert_eq!(rescanned.summary.unwrap().critical, 1);
    let stats = env.qualys.stats();
    assert_eq!(stats.schedules_created, 2, "the rescan submitted a scan");
    assert_eq!(
        stats.image_rescans, 1,
        "Qualys scanned the image again: {stats:?}"
    );
    let alerts = wait_for("the alert", Duration::from_secs(30), || async {
        let got = hook.received();
        (!got.is_empty()).then_some(got)
    })
    .await?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["notification"]["kind"], "verdictChanged");
    assert_eq!(alerts[0]["notification"]["previousVerdict"], "pass");
    assert_eq!(alerts[0]["notification"]["verdict"], "fail");
    record_history(
        &env.client,
        &format!("scan-{}", pushed_digest(&event)),
        "image_scan_bounded_rescan",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_digest_deployed_without_a_tag_is_scanned_by_the_tag_ecr_gives_it() -> anyhow::Result<()>
{
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 500,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let worker = worker(&env, &moto).start(&env.dir).await?;
    // ECS runs `repo@sha256:…`: no tag in the deployment; ECR knows the digest as `v7`.
    let pushed = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/pinned",
        "v7",
        "pinned",
        vulnerabilities(&[2]),
    )
    .await?;
    let pinned = format!("{ECR}/probe/pinned@{}", pushed_digest(&pushed));
    let out = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "pinned-1",
        json!({"images": [pinned], "account": "123456789012", "region": "us-east-1"}),
    )
    .await
    .unwrap();
    assert_eq!(out.images[0].status, ImageStatus::Scanned, "{out:?}");
    let schedules = env.qualys.schedules();
    assert_eq!(
        schedules[0]["filters"][0]["repoTags"][0],
        json!({"repo": "probe/pinned", "tag": "v7"}),
        "scanned by the tag ECR gave"
    );
    // A digest ECR holds untagged cannot be selected by a registry scan: skipped, saying why.
    let ecr = aws_sdk_ecr::Client::new(&moto.sdk_config().await);
    ecr.batch_delete_image()
        .repository_name("probe/pinned")
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_tag("v7")
                .build(),
        )
        .send()
        .await?;
    let untagged = format!("{ECR}/probe/pinned@sha256:{}", "e".repeat(64));
    let out = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "pinned-2",
        json!({"images": [untagged], "account": "123456789012", "region": "us-east-1"}),
    )
    .await
    .unwrap();
    assert_eq!(out.images[0].status, ImageStatus::Skipped, "{out:?}");
    assert!(
        out.images[0].reason.as_deref().unwrap().contains("no tag"),
        "{out:?}"
    );
    assert_eq!(env.qualys.stats().schedules_created, 1);
    Ok(())
}

#[tokio::test]
async fn the_last_verdict_outlives_the_entity_so_a_new_one_does_not_alert_again()
-> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 300,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let hook = WebhookSink::start().await?;
    // Results stay fresh 3 s: an entity nobody deploys for 3 s ends.
    let worker = worker(&env, &moto)
        .env("QFLOWS_SCAN_TTL_SECS", Some("3"))
        .env("QFLOWS_WEBHOOK_URL", Some(&hook.url))
        .start(&env.dir)
        .await?;
    let event = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/again",
        "1",
        "again",
        vulnerabilities(&[5]),
    )
    .await?;
    let first = scan_on_deploy(&env.client, &worker.task_queue, "again-1", event.clone())
        .await
        .unwrap();
    assert_eq!(first.verdict, Some(Verdict::Fail));
    let entity = env
        .client
        .get_workflow_handle::<ImageScan>(format!("scan-{}", pushed_digest(&event)));
    wait_for("the entity to end", Duration::from_secs(60), || async {
        entity.get_result(Default::default()).await.ok().map(|_| ())
    })
    .await?;
    // A new entity for the digest: same verdict, no second alert.
    let second = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "again-2",
        with_id(event, "again-2"),
    )
    .await
    .unwrap();
    assert_eq!(second.verdict, Some(Verdict::Fail));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alerts = hook.received();
    assert_eq!(
        alerts.len(),
        1,
        "one verdictChanged alert in all: {alerts:?}"
    );
    Ok(())
}

#[tokio::test]
async fn qualys_calls_per_scan_do_not_grow_with_the_repository() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 0,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    // A repository holding 5,000 scanned images, and one holding one.
    for i in 0..5000 {
        env.qualys.seed_image(SeedImage {
            registry: ECR.into(),
            repository: "big/app".into(),
            tag: Some(format!("build-{i}")),
            scanned: true,
            ..Default::default()
        });
    }
    env.qualys.seed_image(SeedImage {
        registry: ECR.into(),
        repository: "small/app".into(),
        tag: Some("build-0".into()),
        scanned: true,
        ..Default::default()
    });
    let worker = worker(&env, &moto).start(&env.dir).await?;
    let tq = &worker.task_queue;
    // The registry exists before the measured scans.
    let warm = push_ecr_image(&moto, &env.qualys, "warm/app", "1", "warm", Vec::new()).await?;
    scan_on_deploy(&env.client, tq, "warm", warm).await.unwrap();

    let mut per_scan = Vec::new();
    for repository in ["small/app", "big/app"] {
        let event = push_ecr_image(
            &moto,
            &env.qualys,
            repository,
            "new",
            repository,
            Vec::new(),
        )
        .await?;
        env.qualys.reset_stats();
        let out = scan_on_deploy(&env.client, tq, &format!("size-{repository}"), event)
            .await
            .unwrap();
        assert_eq!(out.images[0].status, ImageStatus::Scanned, "{out:?}");
        per_scan.push(image_calls(&env.qualys.stats()));
    }
    eprintln!(
        "Qualys image calls per scan: 1-image repository {:?}, 5,000-image repository {:?}",
        per_scan[0], per_scan[1]
    );
    assert_eq!(per_scan[0], per_scan[1]);
    assert_eq!(
        per_scan[1].get("GET /csapi/v1.3/images").copied(),
        Some(2),
        "one listing before the submission, one poll: {:?}",
        per_scan[1]
    );
    Ok(())
}

#[tokio::test]
async fn a_webhook_that_is_down_never_makes_sns_send_an_alert_twice() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 300,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
    let topic = sns
        .create_topic()
        .name("qflows-alerts")
        .send()
        .await?
        .topic_arn()
        .unwrap()
        .to_string();
    let hook = WebhookSink::start().await?;
    let worker = worker(&env, &moto)
        .env("QFLOWS_GATE_FAIL_SEVERITY", Some("3"))
        .env("QFLOWS_SNS_TOPIC_ARN", Some(&topic))
        .env("QFLOWS_WEBHOOK_URL", Some(&hook.url))
        .start(&env.dir)
        .await?;
    // 30 s by default; QFLOWS_TEST_WEBHOOK_DOWN_SECS=600 shows ten minutes (the channel
    // retries for a day, doubling up to 5 min between attempts).
    let down = std::env::var("QFLOWS_TEST_WEBHOOK_DOWN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    hook.go_down_for(Duration::from_secs(down));
    let down_since = Instant::now();
    let event = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/alert",
        "1",
        "alert",
        vulnerabilities(&[4]),
    )
    .await?;
    let out = scan_on_deploy(&env.client, &worker.task_queue, "alert-1", event)
        .await
        .unwrap();
    assert_eq!(out.verdict, Some(Verdict::Fail));
    let delivered = wait_for(
        "the webhook to take the alert",
        Duration::from_secs(down + 400),
        || async {
            let got = hook.received();
            (!got.is_empty()).then_some(got)
        },
    )
    .await?;
    assert!(down_since.elapsed() >= Duration::from_secs(down));
    eprintln!(
        "webhook down {down} s: {} posts until one was taken, after {:.0} s",
        hook.attempts(),
        down_since.elapsed().as_secs_f64()
    );
    assert_eq!(delivered.len(), 1);
    assert!(
        hook.attempts() >= 4,
        "the webhook was retried while down ({} posts)",
        hook.attempts()
    );
    let published = sns_messages(&moto, &topic).await?;
    assert_eq!(published, 1, "SNS got the alert exactly once");
    assert_eq!(
        delivered[0]["notification"]["id"]
            .as_str()
            .map(|s| s.ends_with("/verdictChanged")),
        Some(true),
        "{}",
        delivered[0]
    );
    // The alert's own workflow ran each channel once it could.
    let alert_id = wait_for(
        "the alert workflow to close",
        Duration::from_secs(30),
        || async {
            use futures::StreamExt;
            let mut list = env.client.list_workflows(
                "WorkflowType = 'ScanAlert' AND ExecutionStatus = 'Completed'",
                Default::default(),
            );
            list.next()
                .await
                .and_then(Result::ok)
                .map(|w| w.id().to_string())
        },
    )
    .await?;
    record_history(&env.client, &alert_id, "scan_alert_webhook_down").await?;
    Ok(())
}

/// How many messages moto says were published to `topic`.
async fn sns_messages(moto: &Moto, topic: &str) -> anyhow::Result<usize> {
    let data: Value = reqwest::get(format!("{}/moto-api/data.json", moto.endpoint))
        .await?
        .json()
        .await?;
    let topics = data["sns"]["Topic"].as_array().cloned().unwrap_or_default();
    Ok(topics
        .iter()
        .find(|t| t["arn"] == topic)
        .and_then(|t| t["sent_notifications"].as_array().map(Vec::len))
        .unwrap_or(0))
}

#[tokio::test]
async fn qscanner_runs_are_bounded_per_worker() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let moto = Moto::start().await?;
    let standin = qflows_integration::qflows_bin()?.with_file_name("qscanner");
    // Each run takes a second, so runs overlap unless something bounds them.
    let wrapper = env.dir.join("qscanner-slow");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nsleep 1\n\"{}\" \"$@\"\n", standin.display()),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    }
    let worker = worker(&env, &moto)
        .env("QFLOWS_QSCANNER_BIN", Some(wrapper.to_str().unwrap()))
        .env("QFLOWS_QSCANNER_MAX_CONCURRENT", Some("2"))
        .env("QFLOWS_QSCANNER_REGISTRIES", Some("ghcr.io"))
        .start(&env.dir)
        .await?;
    let images: Vec<String> = (1..=20)
        .map(|i| format!("ghcr.io/acme/app-{i}@sha256:{i:064x}"))
        .collect();
    // Count the worker's QScanner children every 50 ms while the scans run (only direct
    // children: the shell's own forks carry its command line for a moment too).
    let marker = wrapper.display().to_string();
    let worker_pid = worker.pid().expect("the worker runs");
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (seen, on) = (most.clone(), watching.clone());
    let watch = tokio::spawn(async move {
        use std::sync::atomic::Ordering::SeqCst;
        while on.load(SeqCst) {
            seen.fetch_max(running(&marker, worker_pid), SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let started = Instant::now();
    let out = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "qscan-burst",
        json!({ "images": images }),
    )
    .await
    .unwrap();
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    watch.await?;
    assert!(
        out.images.iter().all(|i| i.status == ImageStatus::Scanned),
        "{out:?}"
    );
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "20 QScanner scans, at most {most} at once, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(most <= 2, "{most} QScanner runs at once");
    assert_eq!(
        most, 2,
        "the count saw runs overlap (the limit, not luck, held them)"
    );
    Ok(())
}

/// Children of `parent` whose command line names `marker`.
fn running(marker: &str, parent: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let ppid = |stat: &str| -> Option<u32> {
        // `pid (comm) state ppid …`; comm may hold spaces, so read after the last `)`.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| ppid(&s))
                == Some(parent)
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(marker))
        .count()
}

/// The activities a history scheduled, in order, with when (for failure messages).
fn activity_steps(history: &str) -> String {
    let history: Value = serde_json::from_str(history).unwrap_or_default();
    history["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name =
                e["attributes"]["ActivityTaskScheduledEventAttributes"]["activity_type"]["name"]
                    .as_str()?;
            Some(format!("{} {name}", e["event_time"]))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
