//! SQS mode, for networks EventBridge cannot reach: EventBridge → SQS → the bridge.
//!
//! Long-poll, start, then delete. A message is deleted only once its workflow exists (started now
//! or before); one whose start failed stays and comes back after its visibility timeout; one that
//! can never start (malformed, or not an event `ScanOnDeploy` accepts) is left for the queue's
//! redrive policy to move to its dead-letter queue after `maxReceiveCount` receives.

use super::delivery::{self, Delivery, Malformed};
use super::http::{Shared, start_events};
use super::metrics::{Rejection, Route};
use super::starter::{StartError, Starter};
use crate::config::ProcessEnv;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait of one receive (SQS' maximum).
const WAIT_SECS: i32 = 20;

/// The SQS client for `queue_url`, from the standard AWS configuration (`AWS_REGION`,
/// credentials chain, `AWS_ENDPOINT_URL`), the region defaulting to the one in the queue URL.
pub async fn client(queue_url: &str, process: &ProcessEnv) -> aws_sdk_sqs::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if process.aws_region.is_none()
        && let Some(region) = region_of(queue_url)
    {
        loader = loader.region(aws_config::Region::new(region));
    }
    aws_sdk_sqs::Client::new(&loader.load().await)
}

/// `us-east-1` from `https://sqs.us-east-1.amazonaws.com/123456789012/name`.
fn region_of(queue_url: &str) -> Option<String> {
    let host = url::Url::parse(queue_url).ok()?.host_str()?.to_string();
    let mut labels = host.split('.');
    (labels.next()? == "sqs").then(|| labels.next().map(str::to_string))?
}

/// Receives and starts until the process stops. Errors reaching SQS are logged and retried with
/// a capped backoff; they never end the loop.
pub async fn run<S: Starter>(
    shared: Arc<Shared<S>>,
    client: aws_sdk_sqs::Client,
    queue_url: String,
) {
    warn_without_redrive(&client, &queue_url).await;
    let mut failures: u32 = 0;
    loop {
        let received = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECS)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        let messages = match received {
            Ok(output) => {
                failures = 0;
                output.messages.unwrap_or_default()
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_secs(1 << failures.min(5));
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), ?pause, "SQS receive failed");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let handled = messages
            .iter()
            .map(|message| handle(&shared, &client, &queue_url, message));
        futures::future::join_all(handled).await;
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Its workflow exists (or it asks for no scan): deleted.
    Deleted,
    /// Temporal did not accept it: left, to come back.
    Retried,
    /// It can never start: left for the dead-letter queue.
    Poison,
}

async fn handle<S: Starter>(
    shared: &Shared<S>,
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    message: &Message,
) -> Handled {
    let arrived = Instant::now();
    let id = message.message_id().unwrap_or("?");
    let outcome = match parse(message.body().unwrap_or("")) {
        Err(Malformed(problem)) => {
            shared.metrics.rejected(Route::Sqs, Rejection::Malformed);
            tracing::error!(message_id = id, %problem, "SQS message is not an EventBridge event; leaving it for the dead-letter queue");
            Handled::Poison
        }
        Ok(events) => {
            let mut outcome = Handled::Deleted;
            let deadline = shared.deadline(Route::Sqs, arrived.into());
            for result in start_events(shared, &events, deadline).await {
                match result {
                    Ok(result) => shared.metrics.event(Route::Sqs, result),
                    Err(StartError::Invalid(problem)) => {
                        shared.metrics.rejected(Route::Sqs, Rejection::InvalidEvent);
                        tracing::error!(message_id = id, %problem, "event refused; leaving it for the dead-letter queue");
                        outcome = Handled::Poison;
                    }
                    Err(e @ StartError::Unavailable(_)) => {
                        shared.metrics.rejected(Route::Sqs, Rejection::Unavailable);
                        tracing::warn!(message_id = id, error = %e, "start failed; the message will be received again");
                        outcome = Handled::Retried;
                        break;
                    }
                }
            }
            outcome
        }
    };
    let receipt = message.receipt_handle().unwrap_or_default();
    match outcome {
        Handled::Deleted => {
            if let Err(e) = client
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(receipt)
                .send()
                .await
            {
                // It will be received again; its start is then a duplicate, and it is deleted then.
                tracing::warn!(message_id = id, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "delete failed");
            }
        }
        Handled::Retried => {
            // Come back soon, a little later each time, rather than after the full visibility timeout.
            let receives: i32 = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let delay = (5 * receives).clamp(5, 300);
            let _ = client
                .change_message_visibility()
                .queue_url(queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(delay)
                .send()
                .await;
        }
        Handled::Poison => {}
    }
    shared.metrics.latency(Route::Sqs, arrived.elapsed());
    outcome
}

/// An SQS body: the EventBridge event, or an SNS notification wrapping one (EventBridge → SNS → SQS).
fn parse(body: &str) -> Result<Vec<delivery::Event>, Malformed> {
    let unwrapped = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        (v.get("Type").and_then(Value::as_str) == Some("Notification"))
            .then(|| v.get("Message").and_then(Value::as_str).map(str::to_string))
            .flatten()
    });
    let body = unwrapped.as_deref().unwrap_or(body);
    match delivery::eventbridge(body.as_bytes())? {
        Delivery::Events(events) => Ok(events),
        Delivery::Validation { .. } => Err(Malformed("not an EventBridge event".into())),
    }
}

async fn warn_without_redrive(client: &aws_sdk_sqs::Client, queue_url: &str) {
    let attributes = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await;
    match attributes {
        Ok(output) => {
            let has_redrive = output
                .attributes()
                .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy));
            if has_redrive {
                tracing::info!(queue_url, "reading events from SQS");
            } else {
                tracing::warn!(
                    queue_url,
                    "the queue has no redrive policy: messages that can never start will be received again and again; give it a dead-letter queue"
                );
            }
        }
        Err(e) => {
            tracing::warn!(queue_url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "cannot read the queue's attributes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_from_queue_url() {
        assert_eq!(
            region_of("https://sqs.eu-west-1.amazonaws.com/123456789012/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("http://127.0.0.1:5555/123456789012/q"), None);
    }

    #[test]
    fn sns_envelopes_are_unwrapped() {
        let event =
            r#"{"id":"e1","source":"aws.ecr","detail-type":"ECR Image Action","detail":{}}"#;
        let sns = serde_json::json!({"Type": "Notification", "Message": event}).to_string();
        assert_eq!(parse(&sns).unwrap()[0].workflow_id, "deploy-aws-e1");
        assert_eq!(parse(event).unwrap()[0].workflow_id, "deploy-aws-e1");
        assert!(parse("nope").is_err());
    }
}
