//! Handing events to Temporal: classify first (so nothing malformed is started), then start
//! `ScanOnDeploy` under the event's workflow ID, exactly once.

use super::delivery::Event;
use super::metrics::EventOutcome;
use crate::config::TemporalArgs;
use crate::temporal;
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::{Classified, classify};
use std::future::Future;
use std::time::Duration;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{Client, WorkflowIdReusePolicy, WorkflowStartOptions};
use tokio::sync::Mutex;

/// Why an event was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `ScanOnDeploy` would refuse it: the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// Temporal did not accept the start; the sender should deliver again.
    #[error("Temporal did not accept the start ({0}); deliver again later")]
    Unavailable(&'static str),
}

/// Starts workflows for events. The bridge's HTTP and SQS front ends share one.
pub trait Starter: Send + Sync + 'static {
    /// Classifies `event` and, when it asks for a scan, starts its workflow.
    fn start(&self, event: &Event)
    -> impl Future<Output = Result<EventOutcome, StartError>> + Send;
    /// Whether Temporal answers now.
    fn ready(&self) -> impl Future<Output = bool> + Send;
}

/// Classifies an event as `ScanOnDeploy` would: `Ok(None)` means ignored.
pub fn check(event: &Event) -> Result<Option<String>, StartError> {
    match classify(&event.body) {
        Ok(Classified::Scan(_)) => Ok(None),
        Ok(Classified::Ignored { reason }) => Ok(Some(reason)),
        Err(e) => Err(StartError::Invalid(format!("event {}: {e}", event.id))),
    }
}

/// The real starter: a Temporal client, connected on first use and reused.
pub struct TemporalStarter {
    args: TemporalArgs,
    task_queue: String,
    timeout: Duration,
    client: Mutex<Option<Client>>,
}

impl TemporalStarter {
    /// A starter for `task_queue`; each Temporal call gets at most `timeout`.
    pub fn new(args: TemporalArgs, task_queue: String, timeout: Duration) -> Self {
        Self {
            args,
            task_queue,
            timeout,
            client: Mutex::new(None),
        }
    }

    /// The client, connecting if there is none yet (Temporal may be down when the bridge starts).
    async fn client(&self) -> Result<Client, StartError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        match tokio::time::timeout(self.timeout, temporal::connect(&self.args, "qflows-bridge"))
            .await
        {
            Ok(Ok(client)) => {
                *slot = Some(client.clone());
                Ok(client)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot connect to Temporal");
                Err(StartError::Unavailable("connect"))
            }
            Err(_) => Err(StartError::Unavailable("connect-timeout")),
        }
    }
}

impl Starter for TemporalStarter {
    async fn start(&self, event: &Event) -> Result<EventOutcome, StartError> {
        if let Some(reason) = check(event)? {
            tracing::info!(event_id = %event.id, %reason, "event ignored");
            return Ok(EventOutcome::Ignored);
        }
        let client = self.client().await?;
        // Any run under this ID, open or closed, means the event was delivered before.
        let options = WorkflowStartOptions::new(self.task_queue.clone(), event.workflow_id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .build();
        let started = tokio::time::timeout(
            self.timeout,
            client.start_workflow(ScanOnDeploy::run, event.body.clone(), options),
        )
        .await;
        match started {
            Ok(Ok(_)) => {
                tracing::info!(event_id = %event.id, workflow_id = %event.workflow_id, "workflow started");
                Ok(EventOutcome::Started)
            }
            Ok(Err(WorkflowStartError::AlreadyStarted { .. })) => Ok(EventOutcome::Duplicate),
            Ok(Err(WorkflowStartError::Rpc(status))) => {
                tracing::warn!(event_id = %event.id, code = ?status.code(), "Temporal refused the start");
                Err(StartError::Unavailable(code_label(status.code())))
            }
            Ok(Err(e)) => {
                tracing::warn!(event_id = %event.id, error = %e, "start failed");
                Err(StartError::Unavailable("start"))
            }
            Err(_) => Err(StartError::Unavailable("start-timeout")),
        }
    }

    async fn ready(&self) -> bool {
        use temporalio_client::NamespacedClient;
        use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceRequest;
        let Ok(client) = self.client().await else {
            return false;
        };
        let request = DescribeNamespaceRequest {
            namespace: client.namespace(),
            ..Default::default()
        };
        let call = async {
            client
                .connection()
                .workflow_service()
                .describe_namespace(temporalio_client::tonic::Request::new(request))
                .await
        };
        matches!(tokio::time::timeout(self.timeout, call).await, Ok(Ok(_)))
    }
}

/// A bounded label for a gRPC status code.
fn code_label(code: temporalio_client::tonic::Code) -> &'static str {
    use temporalio_client::tonic::Code;
    match code {
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline-exceeded",
        Code::ResourceExhausted => "resource-exhausted",
        Code::NotFound => "not-found",
        Code::PermissionDenied | Code::Unauthenticated => "permission-denied",
        Code::InvalidArgument => "invalid-argument",
        _ => "other",
    }
}
