//! `ScanAlert`: delivers one alert of an `ImageScan` entity, one activity per channel.
//!
//! The entity starts it as a child that outlives the entity's run (parent close policy
//! "abandon"), so a notifier that is down for hours delays neither the entity's answers nor its
//! continue-as-new. SNS and the webhook are separate activities with their own retries: a
//! webhook that stays down never makes SNS send the alert twice. Each retries for up to a day;
//! the result says which channels delivered.

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::failure::root_message;
use crate::scan::contracts::{NotifySns, NotifyWebhook};
use crate::scan::model::NotifyRequest;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, WorkflowContext, WorkflowResult,
};

/// Input of `ScanAlert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertInput {
    /// What to report.
    pub request: NotifyRequest,
    /// Publish to the SNS topic.
    pub sns: bool,
    /// Post to the webhook.
    pub webhook: bool,
}

/// Result of `ScanAlert`: per channel, `delivered` or why not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertOutput {
    /// SNS: `delivered`, the failure, or absent when not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<String>,
    /// The webhook: `delivered`, the failure, or absent when not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// The alert delivery workflow.
#[workflow]
#[derive(Default)]
pub struct ScanAlert;

#[workflow_methods]
impl ScanAlert {
    /// Sends the alert on every configured channel, concurrently.
    #[run(name = "ScanAlert")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: AlertInput,
    ) -> WorkflowResult<AlertOutput> {
        let sns = async {
            if !input.sns {
                return None;
            }
            let sent = ctx
                .execute_activity(NotifySns, input.request.clone(), channel())
                .await;
            Some(outcome(sent))
        };
        let webhook = async {
            if !input.webhook {
                return None;
            }
            let sent = ctx
                .execute_activity(NotifyWebhook, input.request.clone(), channel())
                .await;
            Some(outcome(sent))
        };
        let (sns, webhook) = temporalio_sdk::workflows::join!(sns, webhook);
        Ok(AlertOutput { sns, webhook })
    }
}

/// One channel's delivery: retried from 1 s doubling to 5 min, for up to a day.
fn channel() -> ActivityOptions {
    ActivityOptions::with_close_timeouts(ActivityCloseTimeouts::ScheduleAndStartToClose {
        schedule_to_close: Duration::from_secs(24 * 3600),
        start_to_close: Duration::from_secs(30),
    })
    .retry_policy(
        RetryPolicy::builder()
            .initial_interval(Duration::from_secs(1))
            .backoff_coefficient(2.0)
            .maximum_interval(Duration::from_secs(300))
            .build(),
    )
    .build()
}

fn outcome(sent: Result<(), ActivityExecutionError>) -> String {
    match sent {
        Ok(()) => "delivered".into(),
        Err(e) => root_message(&e),
    }
}
