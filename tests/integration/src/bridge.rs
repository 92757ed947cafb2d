//! A `qflows bridge` in the test process, and a sender that posts to it with the key.

use crate::Temporal;
use qflows::bridge::{Bridge, BridgeArgs};
use qflows::config::TemporalArgs;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;

/// The key test bridges accept.
pub const KEY: &str = "test-bridge-key-0123456789";

/// Bridge settings for tests: the key in a file under `dir`, a free port, short deadlines.
pub fn args(dir: &Path, task_queue: &str) -> BridgeArgs {
    let key_file = dir.join("bridge.key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("writable scratch dir");
    BridgeArgs {
        listen: "127.0.0.1:0".parse().expect("an address"),
        key_file: Some(key_file),
        api_key_header: "x-api-key".into(),
        max_body_bytes: 64 * 1024,
        start_timeout_secs: 2,
        azure_timeout_secs: 5,
        start_concurrency: 16,
        sqs_queue_url: None,
        task_queue: task_queue.into(),
    }
}

/// Starts a bridge for `temporal` that starts workflows on `task_queue`.
pub async fn start(temporal: &Temporal, dir: &Path, task_queue: &str) -> anyhow::Result<Bridge> {
    let temporal = TemporalArgs {
        address: Some(temporal.address.clone()),
        namespace: Some("default".into()),
        profile: None,
    };
    Bridge::start(temporal, args(dir, task_queue), std::future::pending()).await
}

/// Posts deliveries to a bridge with the key.
pub struct Sender {
    /// The HTTP client (for requests [`Sender::post`] does not make).
    pub http: reqwest::Client,
    /// `http://<bridge address>`.
    pub base: String,
}

impl Sender {
    /// A sender for `bridge`.
    pub fn new(bridge: &Bridge) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("http://{}", bridge.addr),
        }
    }

    /// Posts `body` to `path`; the status and the JSON answer (`null` if it is not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-api-key", KEY)
            .json(body)
            .send()
            .await
            .expect("the bridge answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}
