//! `qflows bridge` against a real Temporal dev server: sample deliveries start the right
//! workflows once, handshakes answer as documented, bad deliveries get precise refusals, and
//! with Temporal down nothing is lost.

use qflows::bridge::Bridge;
use qflows::config::TemporalArgs;
use qflows::telemetry::SUBMIT_LATENCY;
use qflows_bench::scraped::ScrapedHistogram;
use qflows_integration::bridge::{KEY, Sender, args, start as bridge};
use qflows_integration::{Temporal, TestEnv, wait_for, workspace_root};
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::ImageStatus;
use qualys_emulator::EmulatorConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use temporalio_client::{Client, WorkflowGetResultOptions};

fn sample(name: &str) -> Value {
    let path = workspace_root()
        .join("workflows/tests/data/events")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The workflow type of `id`, or `None` when no such workflow exists.
async fn workflow_type(client: &Client, id: &str) -> Option<String> {
    let handle = client.get_workflow_handle::<ScanOnDeploy>(id.to_string());
    let description = handle.describe(Default::default()).await.ok()?;
    Some(
        description
            .raw_description
            .workflow_execution_info?
            .r#type?
            .name,
    )
}

#[tokio::test]
async fn sample_events_start_their_workflows_once() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 200,
        ..Default::default()
    })
    .await?;
    let results = env.dir.join("results");
    let worker_metrics = format!("127.0.0.1:{}", qflows_integration::free_port());
    let worker = env
        .worker()
        .env("QFLOWS_METRICS_LISTEN", Some(&worker_metrics))
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
        .start(&env.dir)
        .await?;
    let bridge = bridge(&env.temporal, &env.dir, &worker.task_queue).await?;
    let send = Sender::new(&bridge);

    // An ECR push: started under its event id, scanned by the worker.
    let push = sample("ecr-image-action-push.json");
    env.pushed(&push);
    let (status, body) = send.post("/events/aws", &push).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let push_id = "deploy-aws-4f5ec4d5-4b53-1a8c-7e2b-6a1f2d3c9e01";
    assert_eq!(
        body["events"],
        json!([{"id": "4f5ec4d5-4b53-1a8c-7e2b-6a1f2d3c9e01", "workflowId": push_id, "outcome": "started"}])
    );
    // Delivered again (EventBridge retries on timeouts): the same workflow, no second run.
    let (status, body) = send.post("/events/aws", &push).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"][0]["outcome"], "duplicate");
    let output = env
        .client
        .get_workflow_handle::<ScanOnDeploy>(push_id.to_string())
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(output.status, "scanned", "{output:?}");
    assert_eq!(output.images[0].status, ImageStatus::Scanned, "{output:?}");
    // Once completed, a redelivery is still a duplicate.
    let (_, body) = send.post("/events/aws", &push).await;
    assert_eq!(body["events"][0]["outcome"], "duplicate");
    assert_eq!(env.qualys.stats().schedules_created, 1);

    // CloudTrail ECS RunTask and the ECS task state change start ScanOnDeploy too; a running
    // task is keyed by its ARN, so ECS reporting it again is a duplicate.
    for (file, id) in [
        (
            "aws-eventbridge-cloudtrail-ecs-runtask.json",
            "deploy-aws-656175b1-a875-4aef-9acc-3ef6f03e25b1",
        ),
        (
            "aws-eventbridge-ecs-task-state-change.json",
            "deploy-aws-task-",
        ),
    ] {
        let (status, body) = send.post("/events/aws", &sample(file)).await;
        assert_eq!(status, StatusCode::OK, "{file}: {body}");
        assert_eq!(body["events"][0]["outcome"], "started", "{file}: {body}");
        let started = body["events"][0]["workflowId"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(started.starts_with(id), "{file}: {started}");
        assert_eq!(
            workflow_type(&env.client, &started).await.as_deref(),
            Some("ScanOnDeploy")
        );
    }
    let mut reported_again = sample("aws-eventbridge-ecs-task-state-change.json");
    reported_again["id"] = json!("another-report-of-the-same-task");
    let (_, body) = send.post("/events/aws", &reported_again).await;
    assert_eq!(body["events"][0]["outcome"], "duplicate", "{body}");

    // Azure's samples on /events/azure: Event Grid schema (arrays, ACR data as a JSON string)
    // and CloudEvents 1.0. Each starts ScanOnDeploy once; a redelivery is a duplicate.
    for (file, workflow_id) in [
        (
            "eventgrid-aci-resource-write-success.json",
            "deploy-azure-7c9e6679-7425-40de-944b-e07fc1f90ae7".to_string(),
        ),
        (
            "azure-eventgrid-acr-imagepushed-data-as-string.json",
            "deploy-azure-b734f818-f923-472b-aec8-50995013fd7c".to_string(),
        ),
        (
            "azure-cloudevents-resourcewritesuccess-containerapp.json",
            "deploy-ce-".to_string(),
        ),
    ] {
        let event = sample(file);
        let (status, body) = send.post("/events/azure", &event).await;
        assert_eq!(status, StatusCode::OK, "{file}: {body}");
        assert_eq!(body["events"][0]["outcome"], "started", "{file}: {body}");
        let started = body["events"][0]["workflowId"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(started.starts_with(&workflow_id), "{file}: {started}");
        assert_eq!(
            workflow_type(&env.client, &started).await.as_deref(),
            Some("ScanOnDeploy"),
            "{file}"
        );
        let (_, again) = send.post("/events/azure", &event).await;
        assert_eq!(
            again["events"][0]["outcome"], "duplicate",
            "{file}: {again}"
        );
    }
    // The ACR push from a CloudEvents-schema subscription on the generic route: CloudEvents are
    // keyed by source and id (`deploy-ce-…`), so it starts one run of its own, once.
    let acr_ce = sample("azure-cloudevents-acr-imagepushed.json");
    let (status, body) = send.post("/events/cloudevents", &acr_ce).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["outcome"], "started", "{body}");
    let (_, again) = send.post("/events/cloudevents", &acr_ce).await;
    assert_eq!(again["events"][0]["outcome"], "duplicate", "{again}");

    // An ECR DELETE asks for no scan: answered, nothing started.
    let (status, body) = send
        .post(
            "/events/aws",
            &sample("aws-eventbridge-ecr-image-action-delete.json"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"][0]["outcome"], "ignored");
    assert_eq!(
        workflow_type(
            &env.client,
            "deploy-aws-dd3b46cb-2c74-f49e-393b-28286b67279d"
        )
        .await,
        None
    );

    let metrics = send
        .http
        .get(format!("{}/metrics", send.base))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("qflows_bridge_events_total{route=\"aws\",outcome=\"started\"} 3"));
    // Two redeliveries of the push, one more report of the running task.
    assert!(metrics.contains("qflows_bridge_events_total{route=\"aws\",outcome=\"duplicate\"} 3"));
    assert!(metrics.contains("qflows_bridge_events_total{route=\"aws\",outcome=\"ignored\"} 1"));

    // The worker publishes its Qualys calls by endpoint family next to the SDK's metrics.
    let scrape = || qflows_integration::scrape_metrics(&worker_metrics);
    let qualys_series = wait_for("Qualys metrics", Duration::from_secs(30), || async {
        let text = scrape().await?;
        let series: Vec<String> = text
            .lines()
            .filter(|l| {
                l.starts_with("qflows_qualys_requests_total{") && l.contains("family=\"images\"")
            })
            .map(str::to_string)
            .collect();
        let counted = series
            .iter()
            .any(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) > Some(0.0));
        counted.then_some(series)
    })
    .await?;
    assert!(!qualys_series.is_empty());
    // And its own: the push's scan request and the one registry scan it submitted.
    let value = |text: &str, name: &str, label: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let (requests, submitted) = wait_for("scan metrics", Duration::from_secs(30), || async {
        let text = scrape().await?;
        let submitted = value(
            &text,
            "qflows_scans_submitted_total",
            "backend=\"registry\"",
        )?;
        let requests = value(&text, "qflows_scan_requests_total", "")?;
        (submitted >= 1.0).then_some((requests, submitted))
    })
    .await?;
    assert!(requests >= submitted, "{requests} < {submitted}");
    // Every first scan an event caused is timed from the event's arrival in Temporal: one
    // observation per submitted scan (the counter and the histogram are exported together).
    let registry = "backend=\"registry\"";
    let (count, sum, le_inf) = wait_for("latency histogram", Duration::from_secs(30), || async {
        let text = scrape().await?;
        let submitted = value(&text, "qflows_scans_submitted_total", registry)?;
        let histogram = ScrapedHistogram::parse(&text, SUBMIT_LATENCY, registry)?;
        let (count, sum) = (histogram.count, histogram.sum);
        let le_inf = histogram
            .buckets
            .last()
            .filter(|(le, _)| le.is_infinite())?
            .1;
        (submitted >= 1.0 && count == submitted).then_some((count, sum, le_inf))
    })
    .await?;
    assert_eq!(le_inf, count);
    assert!(sum > 0.0 && sum / count < 120.0, "sum {sum} over {count}");
    // The SDK metrics deploy/prometheus/qflows-alerts.yaml alerts on are the worker's own names.
    let rules =
        std::fs::read_to_string(workspace_root().join("deploy/prometheus/qflows-alerts.yaml"))?;
    let text = scrape().await.unwrap_or_default();
    let sdk_metrics: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("temporal_"))
        .collect();
    assert!(!sdk_metrics.is_empty());
    for metric in sdk_metrics {
        assert!(
            text.lines().any(|l| l.starts_with(metric)),
            "the worker exports no {metric}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn handshakes_answer_as_documented() -> anyhow::Result<()> {
    let temporal = Temporal::start().await?;
    let dir = tempdir("handshake");
    let bridge = bridge(&temporal, &dir, "qflows").await?;
    let send = Sender::new(&bridge);

    // Event Grid schema: 200 with the validation code (the key is in the subscription's URL).
    let validation = sample("eventgrid-subscription-validation.json");
    let response = send
        .http
        .post(format!("{}/events/azure?code={KEY}", send.base))
        .header("aeg-event-type", "SubscriptionValidation")
        .json(&validation)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await?,
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );
    // Without the key: refused like any delivery.
    let response = send
        .http
        .post(format!("{}/events/azure", send.base))
        .json(&validation)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // CloudEvents webhook validation: OPTIONS with WebHook-Request-Origin.
    for path in ["/events/azure", "/events/cloudevents"] {
        let response = send
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", send.base))
            .header("WebHook-Request-Origin", "eventgrid.azure.net")
            .header("WebHook-Request-Rate", "120")
            .send()
            .await?;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(headers["webhook-allowed-origin"], "eventgrid.azure.net");
        assert_eq!(headers["webhook-allowed-rate"], "*");
        assert_eq!(headers["allow"], "POST, OPTIONS");
    }
    let response = send
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/events/cloudevents", send.base),
        )
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn bad_deliveries_are_refused_precisely() -> anyhow::Result<()> {
    let temporal = Temporal::start().await?;
    let client = temporal.client().await?;
    let dir = tempdir("refusals");
    let bridge = bridge(&temporal, &dir, "qflows").await?;
    let send = Sender::new(&bridge);
    let push = sample("ecr-image-action-push.json");

    // No key, a wrong key: 401, nothing started.
    let url = format!("{}/events/aws", send.base);
    let response = send.http.post(&url).json(&push).send().await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let response = send
        .http
        .post(&url)
        .header("x-api-key", "wrong-key-wrong-key")
        .json(&push)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body = response.text().await?;
    assert!(!body.contains(KEY));
    // Basic auth as an EventBridge connection sends it works.
    let response = send
        .http
        .post(&url)
        .basic_auth("eventbridge", Some(KEY))
        .json(&push)
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);

    // Over the limit: 413, with or without a Content-Length.
    let mut big = push.clone();
    big["detail"]["padding"] = Value::String("x".repeat(70 * 1024));
    let (status, _) = send.post("/events/aws", &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        chunked_post(bridge.addr, "/events/aws", 80, 1024).await?,
        413,
        "a chunked body has no Content-Length: the limit applies while reading"
    );

    // Malformed: 400 naming the problem.
    let response = send
        .http
        .post(&url)
        .header("x-api-key", KEY)
        .body("{\"id\": ")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await?;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("the body is not JSON"),
        "{body}"
    );
    let mut no_id = push.clone();
    no_id.as_object_mut().unwrap().remove("id");
    let (status, body) = send.post("/events/aws", &no_id).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "`id` is missing");
    // Readable, but not an event ScanOnDeploy takes: the field is named, nothing is started.
    let mut bad_digest = push.clone();
    bad_digest["id"] = "bad-digest-1".into();
    bad_digest["detail"]["image-digest"] = "sha256:nothex".into();
    let (status, body) = send.post("/events/aws", &bad_digest).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("detail.image-digest"),
        "{body}"
    );
    assert_eq!(
        workflow_type(&client, "deploy-aws-bad-digest-1").await,
        None
    );
    // A CloudEvent missing `source`, in a batch: the index and attribute are named.
    let (status, body) = send
        .post(
            "/events/cloudevents",
            &json!([{"specversion": "1.0", "id": "1", "type": "t"}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "event [0]: `source` is missing");
    Ok(())
}

#[tokio::test]
async fn with_temporal_down_the_bridge_answers_503_and_loses_nothing() -> anyhow::Result<()> {
    let dir = tempdir("outage");
    let mut temporal = Temporal::start_persistent(&dir.join("temporal.db")).await?;
    let bridge = bridge(&temporal, &dir, "qflows").await?;
    let send = Sender::new(&bridge);
    let event = |n: usize| {
        let mut event = sample("ecr-image-action-push.json");
        event["id"] = format!("outage-{n}").into();
        event
    };

    let (status, _) = send.post("/events/aws", &event(0)).await;
    assert_eq!(status, StatusCode::OK);

    temporal.stop().await?;
    for n in 0..5 {
        let response = send
            .http
            .post(format!("{}/events/aws", send.base))
            .header("x-api-key", KEY)
            .json(&event(n))
            .send()
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "event {n}"
        );
        assert!(response.headers().contains_key("retry-after"));
    }
    let ready = send
        .http
        .get(format!("{}/readyz", send.base))
        .send()
        .await?;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let healthy = send
        .http
        .get(format!("{}/healthz", send.base))
        .send()
        .await?;
    assert_eq!(healthy.status(), StatusCode::OK);

    // Temporal returns with its state; the senders deliver again.
    temporal.restart().await?;
    wait_for(
        "the bridge to be ready",
        Duration::from_secs(60),
        || async {
            let ready = send
                .http
                .get(format!("{}/readyz", send.base))
                .send()
                .await
                .ok()?;
            (ready.status() == StatusCode::OK).then_some(())
        },
    )
    .await?;
    let mut outcomes = Vec::new();
    for n in 0..5 {
        let (status, body) = send.post("/events/aws", &event(n)).await;
        assert_eq!(status, StatusCode::OK, "event {n}: {body}");
        outcomes.push(body["events"][0]["outcome"].as_str().unwrap().to_string());
    }
    // outage-0 was accepted before the outage: the database kept it.
    assert_eq!(
        outcomes,
        ["duplicate", "started", "started", "started", "started"]
    );
    let client = temporal.client().await?;
    for n in 0..5 {
        assert_eq!(
            workflow_type(&client, &format!("deploy-aws-outage-{n}"))
                .await
                .as_deref(),
            Some("ScanOnDeploy"),
            "outage-{n}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_batch_in_one_delivery_starts_every_event_once() -> anyhow::Result<()> {
    let temporal = Temporal::start().await?;
    let client = temporal.client().await?;
    let dir = tempdir("batch");
    let bridge = bridge(&temporal, &dir, "qflows").await?;
    let send = Sender::new(&bridge);
    // An Event Grid delivery of 60 ACR pushes (output batching), started concurrently.
    let push = match sample("eventgrid-acr-image-pushed.json") {
        Value::Array(mut events) => events.remove(0),
        event => event,
    };
    let batch: Vec<Value> = (0..60)
        .map(|i| {
            let mut event = push.clone();
            event["id"] = format!("batch-{i:02}").into();
            event
        })
        .collect();
    let (status, body) = send
        .post("/events/azure", &Value::Array(batch.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report = body["events"].as_array().unwrap();
    assert_eq!(report.len(), 60);
    for (i, entry) in report.iter().enumerate() {
        assert_eq!(entry["id"], format!("batch-{i:02}"), "in delivery order");
        assert_eq!(entry["outcome"], "started", "{entry}");
    }
    for i in [0, 29, 59] {
        assert_eq!(
            workflow_type(&client, &format!("deploy-azure-batch-{i:02}"))
                .await
                .as_deref(),
            Some("ScanOnDeploy")
        );
    }
    // Event Grid delivers the batch again: every event is a duplicate, nothing starts twice.
    let (status, body) = send.post("/events/azure", &Value::Array(batch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["outcome"] == "duplicate"),
        "{body}"
    );
    let metrics = send
        .http
        .get(format!("{}/metrics", send.base))
        .send()
        .await?
        .text()
        .await?;
    assert!(metrics.contains("qflows_bridge_events_total{route=\"azure\",outcome=\"started\"} 60"));
    assert!(
        metrics.contains("qflows_bridge_events_total{route=\"azure\",outcome=\"duplicate\"} 60")
    );
    Ok(())
}

#[tokio::test]
async fn a_temporal_that_never_answers_delays_no_delivery_past_its_deadline() -> anyhow::Result<()>
{
    // A "Temporal" that takes connections and never answers: every connect hangs.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0")?;
    let dir = tempdir("hang");
    let temporal = TemporalArgs {
        address: Some(black_hole.local_addr()?.to_string()),
        namespace: Some("default".into()),
        profile: None,
    };
    let args = args(&dir, "qflows");
    let (aws_deadline, azure_deadline) = (
        Duration::from_secs(args.start_timeout_secs),
        Duration::from_secs(args.azure_timeout_secs),
    );
    let bridge = Bridge::start(temporal, args, std::future::pending()).await?;
    let send = Sender::new(&bridge);
    let aws = |n: usize| {
        let mut event = sample("ecr-image-action-push.json");
        event["id"] = format!("hang-{n}").into();
        event
    };
    let azure = sample("eventgrid-aci-resource-write-success.json");
    let timed = |path: &'static str, body: Value| {
        let send = &send;
        async move {
            let started = std::time::Instant::now();
            let response = send
                .http
                .post(format!("{}{path}", send.base))
                .header("x-api-key", KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status(),
                response.headers().contains_key("retry-after"),
                started.elapsed(),
            )
        }
    };
    // Four deliveries at once while the connect hangs: none waits behind another, each is
    // answered 503 (deliver again) by its own sender's deadline. (Slack of 2 s for a busy
    // machine; a lock held across the connect would have answered the last one after 4 × 2 s.)
    let (a, b, c, d) = tokio::join!(
        timed("/events/aws", aws(1)),
        timed("/events/aws", aws(2)),
        timed("/events/aws", aws(3)),
        timed("/events/azure", azure),
    );
    for (what, (status, retry_after, took), deadline) in [
        ("aws 1", a, aws_deadline),
        ("aws 2", b, aws_deadline),
        ("aws 3", c, aws_deadline),
        ("azure", d, azure_deadline),
    ] {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}");
        assert!(retry_after, "{what}");
        assert!(
            took < deadline + Duration::from_secs(2),
            "{what} took {took:?}, deadline {deadline:?}"
        );
        eprintln!("{what}: 503 after {took:?} (deadline {deadline:?})");
    }
    drop(black_hole);
    Ok(())
}

#[tokio::test]
async fn azure_resource_ids_with_path_tricks_are_refused_naming_the_field() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().start(&env.dir).await?;
    let bridge = bridge(&env.temporal, &env.dir, &worker.task_queue).await?;
    let send = Sender::new(&bridge);
    let mut event = sample("eventgrid-aci-resource-write-success.json");
    let good = event[0]["data"]["resourceUri"]
        .as_str()
        .unwrap()
        .to_string();
    event[0]["id"] = "dots-1".into();
    // `..` as the resource group: the shape of a resource ID, the path of another resource.
    event[0]["data"]["resourceUri"] = good
        .replace("/resourceGroups/apps-rg/", "/resourceGroups/../")
        .into();
    // The bridge refuses it (400 naming the field): nothing is started, the sender dead-letters.
    let (status, body) = send.post("/events/azure", &event).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("`data.resourceUri`"),
        "{body}"
    );
    assert_eq!(
        workflow_type(&env.client, "deploy-azure-dots-1").await,
        None
    );
    // Started by hand, ScanOnDeploy refuses it the same way before any activity runs.
    let failure = qflows_integration::scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "refused-resource-id",
        event[0].clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        failure.type_name.as_deref(),
        Some("InvalidInput"),
        "{failure:?}"
    );
    assert!(
        failure.message.contains("`data.resourceUri`"),
        "{failure:?}"
    );
    assert!(failure.message.contains("`..` path segment"), "{failure:?}");
    qflows_integration::record_history(
        &env.client,
        "refused-resource-id",
        "scan_on_deploy_refused_resource_id",
    )
    .await?;
    Ok(())
}

/// POSTs `chunks` chunks of `size` bytes with chunked transfer encoding (no Content-Length)
/// and returns the status code.
async fn chunked_post(
    addr: std::net::SocketAddr,
    path: &str,
    chunks: usize,
    size: usize,
) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {KEY}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let chunk = format!("{size:x}\r\n{}\r\n", "y".repeat(size));
    for _ in 0..chunks {
        // The server may answer and close before the whole body is sent.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no HTTP response: {text:?}"))?;
    Ok(status.parse()?)
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("qflows-bridge-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
