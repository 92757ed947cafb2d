//! The S3 results store and the notifier against real servers: moto for S3 and SNS (started on a
//! free loopback port, killed on drop), and a local axum server standing in for a webhook.
//!
//! moto is found in `QFLOWS_MOTO_BIN`, the workspace's `.venv/bin`, or PATH
//! (`scripts/bootstrap` installs it).

use aws_config::{BehaviorVersion, Region, SdkConfig};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use qflows_activities::aws::Aws;
use qflows_activities::notify::{Notification, NotificationKind, Notifier, sns_message};
use qflows_activities::results::{ResultsStore, S3Results};
use qflows_workflows::scan::model::{SeveritySummary, Verdict};
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DIGEST: &str = "sha256:4f67c83422ec747235357c04556616234e66fc3fa39cb4f40b2d4441ddd8f100";
const SECRET: &str = "XXXXSECRETTOKENXXXX";

/// A running moto server, killed on drop.
struct Moto {
    endpoint: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn moto_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("QFLOWS_MOTO_BIN") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.venv/bin/moto_server"
    ));
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("moto_server not found: run scripts/bootstrap (or set QFLOWS_MOTO_BIN)")
        })
}

impl Moto {
    async fn start() -> Self {
        let bin = moto_bin();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e} (run scripts/bootstrap)", bin.display()));
        let mut moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let http = reqwest::Client::new();
        let probe = format!("{}/moto-api/", moto.endpoint);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if http.get(&probe).send().await.is_ok() {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited early: {status}");
            }
            assert!(Instant::now() < deadline, "moto did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::from_keys(
                "testing", "testing", None,
            ))
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    async fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    async fn sns(&self) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.config().await)
    }

    /// moto's record of what was published to `topic_arn`: `(message, subject, attributes,
    /// group id)` per message, from `GET /moto-api/data.json`.
    async fn published(&self, topic_arn: &str) -> Vec<(String, String, Value, Value)> {
        let data: Value = reqwest::get(format!("{}/moto-api/data.json", self.endpoint))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let topic = data["sns"]["Topic"]
            .as_array()
            .expect("moto lists SNS topics")
            .iter()
            .find(|t| t["arn"] == topic_arn)
            .unwrap_or_else(|| panic!("topic {topic_arn} not in moto's data"));
        topic["sent_notifications"]
            .as_array()
            .expect("moto records sent notifications")
            .iter()
            .map(|n| {
                (
                    n[1].as_str().unwrap().to_string(),
                    n[2].as_str().unwrap_or_default().to_string(),
                    n[3].clone(),
                    n[4].clone(),
                )
            })
            .collect()
    }
}

fn notification() -> Notification {
    Notification {
        tag: Some("v1.2.3".into()),
        account_id: Some("111122223333".into()),
        region: Some("us-east-1".into()),
        verdict: Some(Verdict::Fail),
        previous_verdict: Some(Verdict::Pass),
        summary: Some(SeveritySummary {
            critical: 2,
            high: 5,
            medium: 14,
            low: 10,
            fixable: 3,
            secrets: 1,
        }),
        result_ref: Some(format!(
            "s3://qflows-results/scan-results/my-app/{DIGEST}/t.json"
        )),
        scanned_at: Some("2026-11-22T19:32:17Z".into()),
        ..Notification::new(
            NotificationKind::VerdictChanged,
            "111122223333.dkr.ecr.us-east-1.amazonaws.com/my-app:v1.2.3",
            "my-app",
            DIGEST,
            "ecrImagePush",
        )
    }
}

#[tokio::test]
async fn s3_store_writes_the_documented_key_once_with_sse() {
    let moto = Moto::start().await;
    let s3 = moto.s3().await;
    s3.create_bucket()
        .bucket("qflows-results")
        .send()
        .await
        .unwrap();

    // Built the way the worker builds it: from a location and the shared AWS configuration
    // (which must pick path-style addressing for moto by itself).
    let aws = Aws::with_config(moto.config().await);
    let store = ResultsStore::from_location("s3://qflows-results/team-a", &aws, "us-east-1")
        .await
        .unwrap();
    assert_eq!(store.describe(), "s3://qflows-results/team-a/");
    let scanned_at = "2026-11-22T19:32:17Z";
    let first = json!({"schemaVersion": 1, "repository": "payments/api", "attempt": 1});
    let reference = store
        .put("payments/api", DIGEST, scanned_at, &first)
        .await
        .unwrap();
    let key = format!("team-a/scan-results/payments/api/{DIGEST}/{scanned_at}.json");
    assert_eq!(reference, format!("s3://qflows-results/{key}"));

    let object = s3
        .get_object()
        .bucket("qflows-results")
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        object.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    assert_eq!(object.content_type(), Some("application/json"));
    let body = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), first);

    // A retry writes the same key: still one object, with the latest content.
    let second = json!({"schemaVersion": 1, "repository": "payments/api", "attempt": 2});
    let again = store
        .put("payments/api", DIGEST, scanned_at, &second)
        .await
        .unwrap();
    assert_eq!(again, reference);
    let listed = s3
        .list_objects_v2()
        .bucket("qflows-results")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, vec![key.as_str()]);
    let head = s3
        .head_object()
        .bucket("qflows-results")
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256)
    );
    let body = s3
        .get_object()
        .bucket("qflows-results")
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), second);

    // No such bucket: a configuration error, not retried.
    let missing = ResultsStore::S3(S3Results::new(s3.clone(), "no-such-bucket", ""));
    let err = missing
        .put("payments/api", DIGEST, scanned_at, &first)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.type_name(), "ResultsStoreDenied");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");

    // Nothing listening: retryable.
    let down = aws_sdk_s3::config::Builder::from(&moto.config().await)
        .endpoint_url(format!("http://127.0.0.1:{}", free_port()))
        .force_path_style(true)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let down = ResultsStore::S3(S3Results::new(
        aws_sdk_s3::Client::from_conf(down),
        "qflows-results",
        "",
    ));
    let err = down
        .put("payments/api", DIGEST, scanned_at, &first)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.type_name(), "ResultsStoreUnavailable");
    assert!(!err.to_string().contains("testing"), "{err}");
}

/// What the webhook server received: path, content type, JSON body.
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A webhook on a free loopback port whose answer depends on the path's first segment:
/// `ok` → 200, `e500` → 500, `e429` → 429 with `Retry-After: 7`, anything else → 404 with a body
/// that echoes the path (as many servers do).
async fn webhook_server() -> (String, Received) {
    async fn handle(
        State(received): State<Received>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let path = uri.path().to_string();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        received
            .lock()
            .unwrap()
            .push((path.clone(), content_type, json));
        match path.split('/').nth(1) {
            Some("ok") => (StatusCode::OK, "ok").into_response(),
            Some("e500") => (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response(),
            Some("e429") => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "7")],
                "rate_limited",
            )
                .into_response(),
            _ => (StatusCode::NOT_FOUND, format!("Cannot POST {path}")).into_response(),
        }
    }
    let received: Received = Arc::default();
    let app = Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, received)
}

fn hook(base: &str, behaviour: &str) -> url::Url {
    format!("{base}/{behaviour}/services/T000AAAA/B000BBBB/{SECRET}")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn webhook_receives_text_and_notification() {
    let (base, received) = webhook_server().await;
    let notifier = Notifier::new(None, Some(hook(&base, "ok")));
    assert!(notifier.is_enabled());
    notifier.send(&notification()).await.unwrap();

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (path, content_type, body) = &received[0];
    assert_eq!(path, &format!("/ok/services/T000AAAA/B000BBBB/{SECRET}"));
    assert_eq!(content_type, "application/json");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with(":red_circle: qflows: my-app:v1.2.3 (sha256:4f67c83422ec…) FAIL"),
        "{text}"
    );
    assert!(
        text.contains("2 critical, 5 high") && text.ends_with("(was pass)"),
        "{text}"
    );
    assert_eq!(body["notification"]["digest"], DIGEST);
    assert_eq!(body["notification"]["kind"], "verdictChanged");
    assert_eq!(body["notification"]["summary"]["critical"], 2);
    let back: Notification = serde_json::from_value(body["notification"].clone()).unwrap();
    assert_eq!(back, notification());
}

#[tokio::test]
async fn webhook_failures_are_classified_without_leaking_the_url() {
    let (base, received) = webhook_server().await;
    let n = notification();

    let err = Notifier::new(None, Some(hook(&base, "e500")))
        .send(&n)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.type_name(), "NotifyUnavailable");
    assert!(err.to_string().contains("500"), "{err}");
    assert!(!err.to_string().contains(SECRET), "{err}");

    let err = Notifier::new(None, Some(hook(&base, "e429")))
        .send(&n)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));

    let err = Notifier::new(None, Some(hook(&base, "e404")))
        .send(&n)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.type_name(), "NotifyRejected");
    let message = err.to_string();
    assert!(
        message.contains("404") && message.contains("Cannot POST"),
        "{message}"
    );
    assert!(!message.contains(SECRET), "{message}");
    assert!(!message.contains("T000AAAA"), "{message}");
    assert!(
        message.contains("127.0.0.1"),
        "the host is named: {message}"
    );
    assert_eq!(received.lock().unwrap().len(), 3);

    // Nothing listening: a connection error, retryable, the URL's path not named.
    let closed = hook(&format!("http://127.0.0.1:{}", free_port()), "ok");
    let err = Notifier::new(None, Some(closed))
        .send(&n)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!err.to_string().contains(SECRET), "{err}");
    assert!(!format!("{err:?}").contains(SECRET), "{err:?}");
}

#[tokio::test]
async fn sns_publishes_the_seed_formats_and_a_failure_does_not_skip_the_webhook() {
    let moto = Moto::start().await;
    let sns = moto.sns().await;
    let topic = sns
        .create_topic()
        .name("qflows-notify")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let (base, received) = webhook_server().await;

    let notifier = Notifier::new(Some((sns.clone(), topic.clone())), Some(hook(&base, "ok")));
    let verdict = notification();
    let mut secrets = notification();
    secrets.kind = NotificationKind::SecretsFound;
    let mut failed = notification();
    failed.kind = NotificationKind::ScanFailed;
    failed.verdict = None;
    failed.summary = None;
    failed.error = Some("Qualys did not finish within 30 minutes".into());
    for n in [&verdict, &secrets, &failed] {
        notifier.send(n).await.unwrap();
    }
    assert_eq!(received.lock().unwrap().len(), 3);

    let published = moto.published(&topic).await;
    assert_eq!(published.len(), 3);
    let expected: Vec<(String, String)> = [&verdict, &secrets, &failed]
        .iter()
        .map(|n| sns_message(n))
        .collect();
    for ((message, subject, attributes, _), (want_subject, want_body)) in
        published.iter().zip(&expected)
    {
        assert_eq!(subject, want_subject);
        assert_eq!(
            serde_json::from_str::<Value>(message).unwrap(),
            serde_json::from_str::<Value>(want_body).unwrap()
        );
        assert!(attributes.get("qflows.kind").is_some(), "{attributes}");
    }
    assert_eq!(published[0].1, "Fargate Scan: my-app - 2C/5H");
    assert_eq!(published[1].1, "Security Alert: my-app:v1.2.3");
    assert_eq!(published[2].1, "Scan Failed: my-app");
    let body: Value = serde_json::from_str(&published[0].0).unwrap();
    assert_eq!(body["vulnerabilities"]["total"], 31);
    assert_eq!(body["verdict"], "fail");
    let body: Value = serde_json::from_str(&published[2].0).unwrap();
    assert_eq!(body["status"], "failed");

    // A FIFO topic gets a group (the repository) and a deduplication ID.
    let fifo = sns
        .create_topic()
        .name("qflows-notify.fifo")
        .attributes("FifoTopic", "true")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    Notifier::new(Some((sns.clone(), fifo.clone())), None)
        .send(&verdict)
        .await
        .unwrap();
    let published = moto.published(&fifo).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].3, "my-app");

    // A topic that does not exist: SNS refuses (not retryable), the webhook is still called.
    let missing = topic.replace("qflows-notify", "no-such-topic");
    let err = Notifier::new(Some((sns.clone(), missing)), Some(hook(&base, "ok")))
        .send(&verdict)
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(err.type_name(), "NotifyRejected");
    assert!(err.to_string().contains("SNS"), "{err}");
    assert_eq!(received.lock().unwrap().len(), 4);

    // Both channels failing: the SNS error comes first.
    let err = Notifier::new(
        Some((sns, topic.replace("qflows-notify", "gone"))),
        Some(hook(&base, "e500")),
    )
    .send(&verdict)
    .await
    .unwrap_err();
    assert!(err.to_string().starts_with("SNS"), "{err}");
    assert_eq!(received.lock().unwrap().len(), 5);
}
