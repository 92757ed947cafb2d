//! `qflows bridge --sqs-queue-url` (the binary) against moto's SQS and a real Temporal: started
//! messages are deleted, duplicates start nothing, poison goes to the dead-letter queue, and a
//! message whose start failed stays until Temporal is back.

use aws_sdk_sqs::types::QueueAttributeName;
use qflows_integration::{Moto, Temporal, free_port, qflows_bin, wait_for, workspace_root};
use qflows_workflows::ScanOnDeploy;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use temporalio_client::Client;
use tokio::process::{Child, Command};

fn push(id: &str) -> String {
    let path = workspace_root().join("workflows/tests/data/events/ecr-image-action-push.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["id"] = id.into();
    event.to_string()
}

async fn exists(client: &Client, id: &str) -> bool {
    client
        .get_workflow_handle::<ScanOnDeploy>(id.to_string())
        .describe(Default::default())
        .await
        .is_ok()
}

async fn visible_and_in_flight(sqs: &aws_sdk_sqs::Client, url: &str) -> (i64, i64) {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let get = |name: QueueAttributeName| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1)
    };
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

fn spawn_bridge(
    temporal: &Temporal,
    moto: &Moto,
    queue_url: &str,
    port: u16,
    log: &std::path::Path,
) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(qflows_bin().unwrap())
        .arg("bridge")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TEMPORAL_ADDRESS", &temporal.address)
        .env("QFLOWS_BRIDGE_KEY", "sqs-test-key-0123456789")
        .env("QFLOWS_BRIDGE_LISTEN", format!("127.0.0.1:{port}"))
        .env("QFLOWS_BRIDGE_SQS_QUEUE_URL", queue_url)
        .env("QFLOWS_BRIDGE_START_TIMEOUT_SECS", "2")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn sqs_messages_start_once_and_poison_goes_to_the_dead_letter_queue() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("qflows-bridge-sqs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut temporal = Temporal::start_persistent(&dir.join("temporal.db")).await?;
    let client = temporal.client().await?;
    let moto = Moto::start().await?;
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);

    let dlq = sqs
        .create_queue()
        .queue_name("qflows-events-dlq")
        .send()
        .await?;
    let dlq_url = dlq.queue_url().unwrap().to_string();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let queue = sqs
        .create_queue()
        .queue_name("qflows-events")
        .attributes(QueueAttributeName::VisibilityTimeout, "2")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#),
        )
        .send()
        .await?;
    let url = queue.queue_url().unwrap().to_string();

    let mut bad_digest: Value = serde_json::from_str(&push("sqs-bad"))?;
    bad_digest["detail"]["image-digest"] = "sha256:nothex".into();
    let sns_wrapped = serde_json::json!({"Type": "Notification", "Message": push("sqs-3")});
    for body in [
        push("sqs-1"),
        push("sqs-1"),
        push("sqs-2"),
        sns_wrapped.to_string(),
        "not an event".to_string(),
        bad_digest.to_string(),
    ] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await?;
    }

    let port = free_port();
    let log = dir.join("bridge.log");
    let _bridge = spawn_bridge(&temporal, &moto, &url, port, &log);
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    for id in ["deploy-aws-sqs-1", "deploy-aws-sqs-2", "deploy-aws-sqs-3"] {
        wait_for(id, Duration::from_secs(60), || async {
            exists(&client, id).await.then_some(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", logs()))?;
    }
    // The four good messages are deleted; the two that can never start reach the DLQ.
    wait_for("the queues to settle", Duration::from_secs(60), || async {
        let main = visible_and_in_flight(&sqs, &url).await;
        let dead = visible_and_in_flight(&sqs, &dlq_url).await;
        (main == (0, 0) && dead.0 == 2).then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs()))?;
    assert!(!exists(&client, "deploy-aws-sqs-bad").await);

    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("qflows_bridge_events_total{route=\"sqs\",outcome=\"started\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("qflows_bridge_events_total{route=\"sqs\",outcome=\"duplicate\"} 1"),
        "{metrics}"
    );

    // Temporal goes away: the message stays in the queue until it is back.
    temporal.stop().await?;
    sqs.send_message()
        .queue_url(&url)
        .message_body(push("sqs-outage"))
        .send()
        .await?;
    wait_for("a refused start", Duration::from_secs(60), || async {
        let metrics = qflows_integration::scrape_metrics(&format!("127.0.0.1:{port}")).await?;
        let none_yet = metrics
            .contains("qflows_bridge_rejected_total{route=\"sqs\",reason=\"unavailable\"} 0");
        (!none_yet).then_some(())
    })
    .await?;
    let (visible, in_flight) = visible_and_in_flight(&sqs, &url).await;
    assert_eq!(visible + in_flight, 1, "the message was kept");
    temporal.restart().await?;
    wait_for(
        "the kept message to start",
        Duration::from_secs(90),
        || async { exists(&client, "deploy-aws-sqs-outage").await.then_some(()) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", logs()))?;
    wait_for(
        "the kept message to be deleted",
        Duration::from_secs(60),
        || async { (visible_and_in_flight(&sqs, &url).await == (0, 0)).then_some(()) },
    )
    .await?;
    assert!(
        !logs().contains("sqs-test-key"),
        "the key never reaches the logs"
    );
    Ok(())
}
