//! Notifications about scans: an SNS topic and/or a generic, Slack-compatible webhook.
//!
//! SNS messages keep the seed scanners' formats so that existing subscribers keep working:
//!
//! - a verdict change uses the Fargate scanner's `Fargate Scan: <repo> - <C>C/<H>H` subject and
//!   snake_case body, plus qflows' own keys (`digest`, `verdict`, `previous_verdict`, …);
//! - a failed scan uses its `Scan Failed: <repo>` subject and `status: "failed"` body;
//! - secrets use the ECR scanner's `Security Alert: <repo>:<tag>` subject and camelCase body.
//!
//! The webhook gets `{"text": "<one line>", "notification": <Notification>}`: Slack (and
//! Mattermost, Rocket.Chat, …) show the text; other consumers read the structured notification.
//!
//! Webhook URLs often carry a secret (Slack's do): errors and logs name only the URL's host.

use crate::aws::AwsError;
use aws_sdk_sns::types::MessageAttributeValue;
use qflows_workflows::FailureType;
use qflows_workflows::scan::model::{SeveritySummary, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;
use tracing::{debug, warn};

/// SNS's limit on a subject's length, in characters.
pub const SUBJECT_MAX_CHARS: usize = 100;

/// How long a webhook call may take, from connecting to reading the response.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest error text put in an SNS body (SNS messages are limited to 256 KB).
const ERROR_MAX_CHARS: usize = 2000;

/// Longest error text put in the webhook's one-line `text`.
const TEXT_ERROR_MAX_CHARS: usize = 300;

/// Longest excerpt of a rejecting webhook's response kept in the error.
const RESPONSE_EXCERPT_CHARS: usize = 200;

/// Longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NotificationKind {
    /// An image's verdict changed (or an image got its first verdict).
    VerdictChanged,
    /// A scan failed.
    ScanFailed,
    /// Secrets were found in an image.
    SecretsFound,
}

impl NotificationKind {
    /// The kind as serialized (`verdictChanged`, `scanFailed`, `secretsFound`).
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::VerdictChanged => "verdictChanged",
            NotificationKind::ScanFailed => "scanFailed",
            NotificationKind::SecretsFound => "secretsFound",
        }
    }
}

/// One notification about one image. It crosses the activity boundary, as camelCase JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// What happened.
    pub kind: NotificationKind,
    /// The image as deployed, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1.0`.
    pub image: String,
    /// Its repository, e.g. `payments/api`.
    pub repository: String,
    /// Its tag, when it was deployed by tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `sha256:…` manifest digest.
    pub digest: String,
    /// The account of the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The region of the deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The event source that triggered the scan, e.g. `ecrImagePush`, `ecsRegisterTaskDefinition`.
    pub trigger: String,
    /// The task definition deployed, when the trigger was an ECS event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// The ECS service deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The ECS cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The gate's verdict now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The verdict before this scan, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_verdict: Option<Verdict>,
    /// Counts by severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SeveritySummary>,
    /// Where the full report is stored (a path or `s3://` URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_ref: Option<String>,
    /// Why the scan failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the scan finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<String>,
    /// Where inventories see the image running now (`<scope>: <place>`, a sample).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running_in: Vec<String>,
    /// The same on every channel and every retry of one alert: receivers drop duplicates by it
    /// (SNS: the `qflows.id` message attribute and, on FIFO topics, the deduplication ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Notification {
    /// A notification with the required fields set and every optional one empty.
    pub fn new(
        kind: NotificationKind,
        image: impl Into<String>,
        repository: impl Into<String>,
        digest: impl Into<String>,
        trigger: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            image: image.into(),
            repository: repository.into(),
            tag: None,
            digest: digest.into(),
            account_id: None,
            region: None,
            trigger: trigger.into(),
            task_definition: None,
            service: None,
            cluster: None,
            verdict: None,
            previous_verdict: None,
            summary: None,
            result_ref: None,
            error: None,
            scanned_at: None,
            running_in: Vec::new(),
            id: None,
        }
    }
}

/// Errors sending a notification, classified for retrying.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The channel could not be reached or failed transiently (timeout, connection error,
    /// throttling, HTTP 429 or 5xx): worth retrying.
    #[error("{channel} notification failed: {message}")]
    Unavailable {
        /// `SNS (topic <name>)` or `webhook (<host>)`.
        channel: String,
        /// What happened (never credentials or the webhook's path).
        message: String,
        /// How long the receiver asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The channel refused the notification (HTTP 4xx, access denied, no such topic, an invalid
    /// request): retrying will not help.
    #[error("{channel} rejected the notification: {message}")]
    Rejected {
        /// `SNS (topic <name>)` or `webhook (<host>)`.
        channel: String,
        /// What happened (never credentials or the webhook's path).
        message: String,
    },
}

impl NotifyError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, NotifyError::Unavailable { .. })
    }

    /// Bounded failure type name for Temporal and metrics.
    pub fn type_name(&self) -> FailureType {
        match self {
            NotifyError::Unavailable { .. } => FailureType::NotifyUnavailable,
            NotifyError::Rejected { .. } => FailureType::NotifyRejected,
        }
    }

    /// How long the receiver asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            NotifyError::Unavailable { retry_after, .. } => *retry_after,
            NotifyError::Rejected { .. } => None,
        }
    }
}

impl crate::failure::IntoFailure for NotifyError {
    fn into_failure(self) -> ActivityError {
        let type_name = self.type_name();
        let retryable = self.is_retryable();
        let retry_after = self.retry_after();
        ActivityError::application(
            ApplicationFailure::builder(self)
                .type_name(type_name.into())
                .non_retryable(!retryable)
                .maybe_next_retry_delay(retry_after)
                .build(),
        )
    }
}

/// Sends notifications to an SNS topic and/or a webhook; either may be absent.
#[derive(Clone)]
pub struct Notifier {
    sns: Option<(aws_sdk_sns::Client, String)>,
    webhook: Option<(reqwest::Client, url::Url)>,
}

impl std::fmt::Debug for Notifier {
    // Not derived: the webhook URL may hold a secret token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("sns_topic", &self.sns.as_ref().map(|(_, arn)| arn))
            .field(
                "webhook_host",
                &self.webhook.as_ref().map(|(_, url)| host_of(url)),
            )
            .finish()
    }
}

impl Notifier {
    /// A notifier for an SNS topic (client and topic ARN) and/or a webhook URL.
    pub fn new(sns: Option<(aws_sdk_sns::Client, String)>, webhook: Option<url::Url>) -> Self {
        let webhook = webhook.map(|url| {
            let client = reqwest::Client::builder()
                .timeout(WEBHOOK_TIMEOUT)
                .connect_timeout(WEBHOOK_TIMEOUT)
                // A redirected POST turns into a GET; a webhook that moved is a configuration error.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("qflows/", env!("CARGO_PKG_VERSION")))
                .build()
                // Only fails when the TLS backend cannot start; the per-request timeout still holds.
                .unwrap_or_default();
            (client, url)
        });
        Self { sns, webhook }
    }

    /// Whether any channel is configured.
    pub fn is_enabled(&self) -> bool {
        self.sns.is_some() || self.webhook.is_some()
    }

    /// Sends `n` to every configured channel. A failure on one channel does not skip the other;
    /// the first error (SNS before webhook) is returned and any other is logged.
    ///
    /// A retry resends to both channels, so a channel that succeeded may see the message twice;
    /// callers that must avoid that can call [`Notifier::send_sns`] and
    /// [`Notifier::send_webhook`] separately.
    pub async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let (sns, webhook) = tokio::join!(self.send_sns(n), self.send_webhook(n));
        match (sns, webhook) {
            (Err(first), Err(second)) => {
                warn!(error = %second, "webhook notification failed as well");
                Err(first)
            }
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    }

    /// Publishes `n` to the SNS topic ([`sns_message`]); does nothing without one.
    ///
    /// The message carries the attribute `qflows.kind` (and `qflows.verdict` when set) for
    /// subscription filter policies. On a FIFO topic the group is the repository and the
    /// deduplication ID is derived from the message, so a retry within SNS's five-minute window
    /// is dropped.
    pub async fn send_sns(&self, n: &Notification) -> Result<(), NotifyError> {
        let Some((client, topic_arn)) = &self.sns else {
            return Ok(());
        };
        let channel = format!(
            "SNS (topic {})",
            topic_arn.rsplit(':').next().unwrap_or(topic_arn)
        );
        let (subject, body) = sns_message(n);
        let string_attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| NotifyError::Rejected {
                    channel: channel.clone(),
                    message: format!("invalid message attribute: {e}"),
                })
        };
        let mut publish = client
            .publish()
            .topic_arn(topic_arn)
            .subject(&subject)
            .message(&body)
            .message_attributes("qflows.kind", string_attribute(n.kind.as_str())?);
        if let Some(verdict) = n.verdict {
            publish = publish
                .message_attributes("qflows.verdict", string_attribute(verdict_word(verdict))?);
        }
        if let Some(id) = &n.id {
            publish = publish.message_attributes("qflows.id", string_attribute(id)?);
        }
        if topic_arn.ends_with(".fifo") {
            let dedup = n.id.clone().unwrap_or_else(|| format!("{subject}\n{body}"));
            publish = publish
                .message_group_id(fifo_group_id(&n.repository))
                .message_deduplication_id(format!("{:016x}", fnv1a(dedup.as_bytes())));
        }
        match publish.send().await {
            Ok(out) => {
                debug!(message_id = ?out.message_id(), %channel, "notification published");
                Ok(())
            }
            Err(e) => {
                use aws_sdk_sns::error::ProvideErrorMetadata;
                let code = e.code().unwrap_or_default().to_string();
                let status = e.raw_response().map(|r| r.status().as_u16());
                let aws = AwsError::from_sdk("sns:Publish", e);
                let err = sns_error(channel, &code, status, aws);
                warn!(error = %err, "SNS notification failed");
                Err(err)
            }
        }
    }

    /// POSTs [`webhook_body`] to the webhook; does nothing without one. 2xx is success;
    /// 408, 429, 5xx, timeouts and connection errors are retryable; any other status is not.
    pub async fn send_webhook(&self, n: &Notification) -> Result<(), NotifyError> {
        let Some((client, url)) = &self.webhook else {
            return Ok(());
        };
        let channel = format!("webhook ({})", host_of(url));
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NotifyError::Rejected {
                channel,
                message: format!("unsupported URL scheme `{}`", url.scheme()),
            });
        }
        let result = client
            .post(url.clone())
            .timeout(WEBHOOK_TIMEOUT)
            .json(&webhook_body(n))
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                let err = webhook_transport_error(channel, url, e);
                warn!(error = %err, "webhook notification failed");
                return Err(err);
            }
        };
        let status = response.status();
        if status.is_success() {
            debug!(%channel, status = status.as_u16(), "webhook notified");
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(RETRY_AFTER_MAX));
        // The body is only for the error message: a failure to read it changes nothing.
        let excerpt = response.text().await.unwrap_or_default();
        let excerpt: String = one_line(&excerpt)
            .chars()
            .take(RESPONSE_EXCERPT_CHARS)
            .collect();
        let mut message = format!("HTTP {status}");
        if !excerpt.is_empty() {
            message.push_str(": ");
            message.push_str(&excerpt);
        }
        let message = redact(&message, url);
        let code = status.as_u16();
        let err = if code == 408 || code == 429 || status.is_server_error() {
            NotifyError::Unavailable {
                channel,
                message,
                retry_after,
            }
        } else {
            NotifyError::Rejected { channel, message }
        };
        warn!(error = %err, "webhook notification failed");
        Err(err)
    }
}

/// SNS error codes worth retrying beyond the generic AWS ones.
const SNS_RETRYABLE_CODES: &[&str] = &[
    "Throttled",
    "ThrottledException",
    "KMSThrottling",
    "InternalError",
    "InternalErrorException",
];

/// Turns a classified SNS failure into a [`NotifyError`].
fn sns_error(channel: String, code: &str, status: Option<u16>, err: AwsError) -> NotifyError {
    let retryable = err.is_retryable()
        || SNS_RETRYABLE_CODES.contains(&code)
        || status.is_some_and(|s| s == 429 || s >= 500);
    let message = err.to_string();
    if retryable {
        NotifyError::Unavailable {
            channel,
            message,
            retry_after: None,
        }
    } else {
        NotifyError::Rejected { channel, message }
    }
}

/// A webhook call that got no HTTP response: retryable unless the request could not be built.
fn webhook_transport_error(channel: String, url: &url::Url, err: reqwest::Error) -> NotifyError {
    let builder = err.is_builder();
    let timeout = err.is_timeout();
    let connect = err.is_connect();
    // reqwest's Display names the full URL; drop it, then describe the cause chain.
    let err = err.without_url();
    let mut message = if timeout {
        format!("no answer within {} s", WEBHOOK_TIMEOUT.as_secs())
    } else if connect {
        "could not connect".to_string()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    let message = redact(&message, url);
    if builder {
        NotifyError::Rejected { channel, message }
    } else {
        NotifyError::Unavailable {
            channel,
            message,
            retry_after: None,
        }
    }
}

/// The URL's host (and port), the only part of a webhook URL that may be shown.
fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => "no host".to_string(),
    }
}

/// Removes anything of `url` beyond its host from `message`: the whole URL, its path and query,
/// and each long path segment or query value (where tokens live).
fn redact(message: &str, url: &url::Url) -> String {
    const MASK: &str = "[redacted]";
    let mut secrets: Vec<String> = vec![url.as_str().to_string()];
    if url.path().len() > 1 {
        secrets.push(url.path().to_string());
    }
    if let Some(query) = url.query() {
        secrets.push(query.to_string());
    }
    if let Some(segments) = url.path_segments() {
        secrets.extend(segments.filter(|s| s.len() >= 8).map(str::to_string));
    }
    secrets.extend(
        url.query_pairs()
            .map(|(_, v)| v.into_owned())
            .filter(|v| v.len() >= 8),
    );
    if !url.username().is_empty() {
        secrets.push(url.username().to_string());
    }
    if let Some(password) = url.password() {
        secrets.push(password.to_string());
    }
    // Longest first, so a segment does not break up a longer match.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = message.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), MASK);
    }
    out
}

/// The SNS subject and body (JSON) for a notification, in the seed scanners' formats.
///
/// - [`NotificationKind::VerdictChanged`]: subject `Fargate Scan: <repo> - <C>C/<H>H` (or
///   `- <VERDICT>` without counts); body `{trigger, repository, tag, task_definition, service,
///   cluster, vulnerabilities{total, critical, high, medium, low}, scanned_at}` plus `digest,
///   image, verdict, previous_verdict, result_ref, secrets, account_id, region`.
/// - [`NotificationKind::ScanFailed`]: subject `Scan Failed: <repo>`; body `{trigger,
///   repository, task_definition, error, status: "failed"}` plus `digest, image, tag`.
/// - [`NotificationKind::SecretsFound`]: subject `Security Alert: <repo>:<tag>` (`untagged`
///   without a tag); body `{repository, imageDigest, imageTag, scannedAt, summary{vulnerabilities,
///   critical, high, secrets}}` plus `image, accountId, region, trigger, resultRef, verdict`.
///
/// Absent values are `null`. Subjects are at most [`SUBJECT_MAX_CHARS`] characters, on one line,
/// without control characters.
pub fn sns_message(n: &Notification) -> (String, String) {
    let (subject, body) = match n.kind {
        NotificationKind::VerdictChanged => verdict_changed_message(n),
        NotificationKind::ScanFailed => scan_failed_message(n),
        NotificationKind::SecretsFound => secrets_found_message(n),
    };
    (sns_subject(&subject), body.to_string())
}

/// The raw subject and the body of a [`NotificationKind::VerdictChanged`] message.
fn verdict_changed_message(n: &Notification) -> (String, Value) {
    let subject = match (&n.summary, n.verdict) {
        (Some(s), _) => format!(
            "Fargate Scan: {} - {}C/{}H",
            n.repository, s.critical, s.high
        ),
        (None, Some(v)) => format!(
            "Fargate Scan: {} - {}",
            n.repository,
            verdict_word(v).to_uppercase()
        ),
        (None, None) => format!("Fargate Scan: {} - no results", n.repository),
    };
    let body = json!({
        "trigger": n.trigger,
        "repository": n.repository,
        "tag": n.tag,
        "task_definition": n.task_definition,
        "service": n.service,
        "cluster": n.cluster,
        "vulnerabilities": n.summary.map(|s| json!({
            "total": s.total(),
            "critical": s.critical,
            "high": s.high,
            "medium": s.medium,
            "low": s.low,
        })),
        "scanned_at": n.scanned_at,
        "digest": n.digest,
        "image": n.image,
        "verdict": n.verdict,
        "previous_verdict": n.previous_verdict,
        "result_ref": n.result_ref,
        "secrets": n.summary.map(|s| s.secrets),
        "account_id": n.account_id,
        "region": n.region,
        "running_in": n.running_in,
    });
    (subject, body)
}

/// The raw subject and the body of a [`NotificationKind::ScanFailed`] message.
fn scan_failed_message(n: &Notification) -> (String, Value) {
    let subject = format!("Scan Failed: {}", n.repository);
    let body = json!({
        "trigger": n.trigger,
        "repository": n.repository,
        "task_definition": n.task_definition,
        "error": n.error.as_deref().map(|e| truncate(e, ERROR_MAX_CHARS)),
        "status": "failed",
        "digest": n.digest,
        "image": n.image,
        "tag": n.tag,
    });
    (subject, body)
}

/// The raw subject and the body of a [`NotificationKind::SecretsFound`] message.
fn secrets_found_message(n: &Notification) -> (String, Value) {
    let tag = n.tag.as_deref().unwrap_or("untagged");
    let subject = format!("Security Alert: {}:{tag}", n.repository);
    let body = json!({
        "repository": n.repository,
        "imageDigest": n.digest,
        "imageTag": tag,
        "scannedAt": n.scanned_at,
        "summary": n.summary.map(|s| json!({
            "vulnerabilities": s.total(),
            "critical": s.critical,
            "high": s.high,
            "secrets": s.secrets,
        })),
        "image": n.image,
        "accountId": n.account_id,
        "region": n.region,
        "trigger": n.trigger,
        "resultRef": n.result_ref,
        "verdict": n.verdict,
    });
    (subject, body)
}

/// The webhook's JSON body: `{"text": <one Slack-compatible line>, "notification": <n>}`.
pub fn webhook_body(n: &Notification) -> Value {
    json!({
        "text": webhook_text(n),
        "notification": n,
    })
}

/// The one-line, Slack-compatible summary, e.g.
/// `:red_circle: qflows: payments/api:1.14.2 (sha256:3b8c…) FAIL — 2 critical, 5 high (was pass)`.
fn webhook_text(n: &Notification) -> String {
    let image = match &n.tag {
        Some(tag) => format!("{}:{tag}", n.repository),
        None => n.repository.clone(),
    };
    let subject = format!("{} ({})", slack_escape(&image), short_digest(&n.digest));
    let counts = |s: &SeveritySummary| format!("{} critical, {} high", s.critical, s.high);
    let text = match n.kind {
        NotificationKind::VerdictChanged => {
            let emoji = match n.verdict {
                Some(Verdict::Fail) => ":red_circle:",
                Some(Verdict::Audit) => ":large_yellow_circle:",
                Some(Verdict::Pass) => ":large_green_circle:",
                None => ":white_circle:",
            };
            let verdict = n
                .verdict
                .map(|v| verdict_word(v).to_uppercase())
                .unwrap_or_else(|| "NO VERDICT".into());
            let mut text = format!("{emoji} qflows: {subject} {verdict}");
            match &n.summary {
                Some(s) => {
                    text.push_str(" — ");
                    text.push_str(&counts(s));
                    if s.secrets > 0 {
                        text.push_str(&format!(", {} secret(s)", s.secrets));
                    }
                }
                None => text.push_str(" — no scan results"),
            }
            if let Some(previous) = n.previous_verdict {
                text.push_str(&format!(" (was {})", verdict_word(previous)));
            }
            if let Some(first) = n.running_in.first() {
                text.push_str(&format!(" — running in {}", slack_escape(first)));
                if n.running_in.len() > 1 {
                    text.push_str(&format!(" and {} more", n.running_in.len() - 1));
                }
            }
            text
        }
        NotificationKind::ScanFailed => {
            let error = n.error.as_deref().unwrap_or("unknown error");
            format!(
                ":warning: qflows: scan of {subject} failed — {}",
                slack_escape(&truncate(error, TEXT_ERROR_MAX_CHARS))
            )
        }
        NotificationKind::SecretsFound => {
            let mut text = format!(":closed_lock_with_key: qflows: {subject}");
            match &n.summary {
                Some(s) => {
                    text.push_str(&format!(" has {} secret(s) — {}", s.secrets, counts(s)));
                }
                None => text.push_str(" has secrets"),
            }
            text
        }
    };
    one_line(&text)
}

/// `pass`, `audit` or `fail`.
fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Audit => "audit",
        Verdict::Fail => "fail",
    }
}

/// `sha256:` and the first 12 hex digits, then `…`.
fn short_digest(digest: &str) -> String {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
    let short: String = hex.chars().take(12).collect();
    let ellipsis = if hex.chars().count() > 12 { "…" } else { "" };
    let digest = if algorithm.is_empty() {
        format!("{short}{ellipsis}")
    } else {
        format!("{algorithm}:{short}{ellipsis}")
    };
    slack_escape(&digest)
}

/// Escapes the three characters Slack's mrkdwn treats as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Control characters (newlines included) become spaces; runs of whitespace collapse.
fn one_line(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A valid SNS subject: one line, no control characters, at most [`SUBJECT_MAX_CHARS`].
fn sns_subject(raw: &str) -> String {
    let line = one_line(raw);
    let cut: String = line.chars().take(SUBJECT_MAX_CHARS).collect();
    let cut = cut.trim_end();
    if cut.is_empty() {
        "qflows".to_string()
    } else {
        cut.to_string()
    }
}

/// A FIFO message group ID: the repository, in SNS's allowed characters, at most 128.
fn fifo_group_id(repository: &str) -> String {
    let id: String = repository
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect();
    if id.is_empty() { "qflows".into() } else { id }
}

/// 64-bit FNV-1a: a stable hash for FIFO deduplication IDs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const DIGEST: &str = "sha256:3b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4";

    fn sample(kind: NotificationKind) -> Notification {
        Notification {
            tag: Some("1.14.2".into()),
            account_id: Some("111122223333".into()),
            region: Some("us-east-1".into()),
            task_definition: Some(
                "arn:aws:ecs:us-east-1:111122223333:task-definition/payments:42".into(),
            ),
            service: Some("payments".into()),
            cluster: Some("prod".into()),
            verdict: Some(Verdict::Fail),
            previous_verdict: Some(Verdict::Pass),
            summary: Some(SeveritySummary {
                critical: 2,
                high: 5,
                medium: 14,
                low: 10,
                fixable: 9,
                secrets: 1,
            }),
            result_ref: Some(format!(
                "s3://results/scan-results/payments/api/{DIGEST}/t.json"
            )),
            error: None,
            scanned_at: Some("2026-11-22T19:32:17Z".into()),
            running_in: Vec::new(),
            ..Notification::new(
                kind,
                "111122223333.dkr.ecr.us-east-1.amazonaws.com/payments/api:1.14.2",
                "payments/api",
                DIGEST,
                "ecsUpdateService",
            )
        }
    }

    /// The keys of a seed sample's SNS message.
    fn seed_keys(file: &str, pointer: &str) -> BTreeSet<String> {
        let path = format!(
            "{}/../../shared/research/samples/qualys/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        // The samples live in the shared research folder; fall back to their key sets as
        // documented there (docs/qualys-api.md §6.1, §6.2) when it is not beside the repository.
        let Ok(text) = std::fs::read_to_string(&path) else {
            return BTreeSet::new();
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        keys(value.pointer(pointer).unwrap())
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn verdict_change_matches_the_fargate_format() {
        let (subject, body) = sns_message(&sample(NotificationKind::VerdictChanged));
        assert_eq!(subject, "Fargate Scan: payments/api - 2C/5H");
        let body: Value = serde_json::from_str(&body).unwrap();
        let fargate = set(&[
            "trigger",
            "repository",
            "tag",
            "task_definition",
            "service",
            "cluster",
            "vulnerabilities",
            "scanned_at",
        ]);
        for seed in [
            seed_keys("notification-fargate-sns.json", "/Message"),
            seed_keys("qualys-notification-fargate.json", "")
                .into_iter()
                .filter(|k| k != "_comment")
                .collect(),
        ] {
            assert!(seed.is_empty() || seed == fargate, "seed keys {seed:?}");
        }
        assert!(keys(&body).is_superset(&fargate), "{body}");
        let vulnerabilities = set(&["total", "critical", "high", "medium", "low"]);
        let seed_vulns = seed_keys("notification-fargate-sns.json", "/Message/vulnerabilities");
        assert!(seed_vulns.is_empty() || seed_vulns == vulnerabilities);
        assert_eq!(keys(&body["vulnerabilities"]), vulnerabilities);
        assert_eq!(
            body["vulnerabilities"],
            json!({"total": 31, "critical": 2, "high": 5, "medium": 14, "low": 10})
        );
        assert_eq!(body["trigger"], "ecsUpdateService");
        assert_eq!(body["repository"], "payments/api");
        assert_eq!(body["tag"], "1.14.2");
        assert_eq!(body["cluster"], "prod");
        assert_eq!(body["scanned_at"], "2026-11-22T19:32:17Z");
        // qflows' extras.
        assert_eq!(body["digest"], DIGEST);
        assert_eq!(body["verdict"], "fail");
        assert_eq!(body["previous_verdict"], "pass");
        assert_eq!(body["secrets"], 1);
        assert!(body["result_ref"].as_str().unwrap().starts_with("s3://"));

        // Without counts the subject says the verdict; absent values are null, keys stay.
        let mut n = sample(NotificationKind::VerdictChanged);
        n.summary = None;
        n.verdict = Some(Verdict::Audit);
        n.previous_verdict = None;
        n.tag = None;
        let (subject, body) = sns_message(&n);
        assert_eq!(subject, "Fargate Scan: payments/api - AUDIT");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(keys(&body).is_superset(&fargate));
        assert!(body["vulnerabilities"].is_null() && body["tag"].is_null());
        assert!(body["previous_verdict"].is_null());
    }

    #[test]
    fn scan_failure_matches_the_fargate_format() {
        let mut n = sample(NotificationKind::ScanFailed);
        n.error = Some("Qualys did not finish within 30 minutes".into());
        n.verdict = None;
        n.summary = None;
        let (subject, body) = sns_message(&n);
        assert_eq!(subject, "Scan Failed: payments/api");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert!(
            keys(&body).is_superset(&set(&[
                "trigger",
                "repository",
                "task_definition",
                "error",
                "status"
            ])),
            "{body}"
        );
        assert_eq!(body["status"], "failed");
        assert_eq!(body["error"], "Qualys did not finish within 30 minutes");
        assert_eq!(body["digest"], DIGEST);

        n.error = Some("x".repeat(10_000));
        let (_, body) = sns_message(&n);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body["error"].as_str().unwrap().chars().count(),
            ERROR_MAX_CHARS
        );
    }

    #[test]
    fn secrets_match_the_ecr_scanner_format() {
        let (subject, body) = sns_message(&sample(NotificationKind::SecretsFound));
        assert_eq!(subject, "Security Alert: payments/api:1.14.2");
        let body: Value = serde_json::from_str(&body).unwrap();
        let ecr = set(&[
            "repository",
            "imageDigest",
            "imageTag",
            "scannedAt",
            "summary",
        ]);
        let seed = seed_keys("notification-ecr-scanner-sns.json", "/Message");
        assert!(seed.is_empty() || seed == ecr, "seed keys {seed:?}");
        assert!(keys(&body).is_superset(&ecr), "{body}");
        let summary = set(&["vulnerabilities", "critical", "high", "secrets"]);
        let seed = seed_keys("notification-ecr-scanner-sns.json", "/Message/summary");
        assert!(seed.is_empty() || seed == summary);
        assert_eq!(
            body["summary"],
            json!({"vulnerabilities": 31, "critical": 2, "high": 5, "secrets": 1})
        );
        assert_eq!(body["imageDigest"], DIGEST);
        assert_eq!(body["imageTag"], "1.14.2");
        assert_eq!(body["scannedAt"], "2026-11-22T19:32:17Z");

        let mut n = sample(NotificationKind::SecretsFound);
        n.tag = None;
        let (subject, body) = sns_message(&n);
        assert_eq!(subject, "Security Alert: payments/api:untagged");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["imageTag"],
            "untagged"
        );
    }

    #[test]
    fn subjects_are_short_single_lines() {
        let mut n = sample(NotificationKind::VerdictChanged);
        n.repository = format!("team/{}", "a".repeat(250));
        for kind in [
            NotificationKind::VerdictChanged,
            NotificationKind::ScanFailed,
            NotificationKind::SecretsFound,
        ] {
            n.kind = kind;
            let (subject, _) = sns_message(&n);
            assert!(subject.chars().count() <= SUBJECT_MAX_CHARS, "{subject}");
            assert!(
                subject.chars().count() >= SUBJECT_MAX_CHARS - 1,
                "{subject}"
            );
        }
        // Newlines, tabs and other control characters never reach SNS.
        n.kind = NotificationKind::SecretsFound;
        n.repository = "evil\r\nBcc: x\u{7}\u{1b}[31m".into();
        n.tag = Some("v1\n".into());
        let (subject, _) = sns_message(&n);
        assert!(!subject.chars().any(char::is_control), "{subject:?}");
        assert_eq!(subject, "Security Alert: evil Bcc: x [31m:v1");
        // Multi-byte characters are counted as characters and never split.
        n.repository = "é".repeat(300);
        let (subject, _) = sns_message(&n);
        assert_eq!(subject.chars().count(), SUBJECT_MAX_CHARS);
        assert_eq!(sns_subject(" \n "), "qflows");
    }

    #[test]
    fn webhook_text_is_one_slack_line() {
        let body = webhook_body(&sample(NotificationKind::VerdictChanged));
        assert_eq!(
            body["text"],
            ":red_circle: qflows: payments/api:1.14.2 (sha256:3b8c9d0e1f2a…) FAIL — 2 critical, \
             5 high, 1 secret(s) (was pass)"
        );
        assert_eq!(body["notification"]["digest"], DIGEST);
        assert_eq!(body["notification"]["kind"], "verdictChanged");
        assert_eq!(body["notification"]["previousVerdict"], "pass");
        let back: Notification = serde_json::from_value(body["notification"].clone()).unwrap();
        assert_eq!(back, sample(NotificationKind::VerdictChanged));

        // Where it runs comes from inventories (attacker-controlled names): escaped.
        let mut running = sample(NotificationKind::VerdictChanged);
        running.running_in = vec![
            "k8s-prod: k8s:shop/pod/<@channel>/web".into(),
            "aws-111122223333-us-east-1: ecs:prod/service:web".into(),
        ];
        let text = webhook_body(&running)["text"].as_str().unwrap().to_string();
        assert!(
            text.ends_with(
                "(was pass) — running in k8s-prod: k8s:shop/pod/&lt;@channel&gt;/web and 1 more"
            ),
            "{text}"
        );
        let (_, sns) = sns_message(&running);
        let sns: Value = serde_json::from_str(&sns).unwrap();
        assert_eq!(
            sns["running_in"][1],
            "aws-111122223333-us-east-1: ecs:prod/service:web"
        );

        let mut failed = sample(NotificationKind::ScanFailed);
        failed.error = Some("boom <@channel>\nsecond line & more".into());
        let text = webhook_body(&failed)["text"].as_str().unwrap().to_string();
        assert_eq!(
            text,
            ":warning: qflows: scan of payments/api:1.14.2 (sha256:3b8c9d0e1f2a…) failed — \
             boom &lt;@channel&gt; second line &amp; more"
        );

        let secrets = webhook_body(&sample(NotificationKind::SecretsFound));
        assert_eq!(
            secrets["text"],
            ":closed_lock_with_key: qflows: payments/api:1.14.2 (sha256:3b8c9d0e1f2a…) has 1 \
             secret(s) — 2 critical, 5 high"
        );

        let mut pass = Notification::new(
            NotificationKind::VerdictChanged,
            "img",
            "app",
            "sha256:ab",
            "manual",
        );
        pass.verdict = Some(Verdict::Pass);
        assert_eq!(
            webhook_body(&pass)["text"],
            ":large_green_circle: qflows: app (sha256:ab) PASS — no scan results"
        );
        // Optional fields are omitted from the structured notification.
        assert!(webhook_body(&pass)["notification"].get("tag").is_none());
    }

    #[test]
    fn classifies_and_names_errors() {
        let rejected = NotifyError::Rejected {
            channel: "webhook (h)".into(),
            message: "HTTP 404".into(),
        };
        assert!(!rejected.is_retryable());
        assert_eq!(rejected.type_name(), "NotifyRejected");
        let unavailable = NotifyError::Unavailable {
            channel: "webhook (h)".into(),
            message: "HTTP 503".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(unavailable.is_retryable());
        assert_eq!(unavailable.type_name(), "NotifyUnavailable");
        assert_eq!(unavailable.retry_after(), Some(Duration::from_secs(3)));

        let aws = |code: &str| AwsError::Invalid {
            operation: "sns:Publish",
            code: code.into(),
            message: "m".into(),
        };
        assert!(sns_error("SNS".into(), "Throttled", Some(400), aws("Throttled")).is_retryable());
        assert!(sns_error("SNS".into(), "X", Some(502), aws("X")).is_retryable());
        assert!(!sns_error("SNS".into(), "NotFound", Some(404), aws("NotFound")).is_retryable());
        assert!(
            !sns_error(
                "SNS".into(),
                "AuthorizationError",
                Some(403),
                aws("AuthorizationError")
            )
            .is_retryable()
        );
    }

    #[test]
    fn redacts_everything_but_the_host() {
        let url: url::Url =
            "https://hooks.slack.com/services/T000AAAA/B000BBBB/XXXXSECRETXXXX?token=abcdefgh123"
                .parse()
                .unwrap();
        let message = format!(
            "Cannot POST {} ({url}) XXXXSECRETXXXX abcdefgh123",
            url.path()
        );
        let redacted = redact(&message, &url);
        assert!(!redacted.contains("SECRET"), "{redacted}");
        assert!(!redacted.contains("abcdefgh123"), "{redacted}");
        assert!(!redacted.contains("T000AAAA"), "{redacted}");
        let notifier = Notifier::new(None, Some(url));
        let debug = format!("{notifier:?}");
        assert!(
            debug.contains("hooks.slack.com") && !debug.contains("SECRET"),
            "{debug}"
        );
        assert!(notifier.is_enabled());
        assert!(!Notifier::new(None, None).is_enabled());
    }

    #[test]
    fn helpers() {
        assert_eq!(short_digest("sha256:abc"), "sha256:abc");
        assert_eq!(short_digest("nodigest"), "nodigest");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(fifo_group_id("team/app"), "team/app");
        assert_eq!(fifo_group_id(" "), "qflows");
        // FNV-1a test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
