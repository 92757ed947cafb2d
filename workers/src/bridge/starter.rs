//! Handing events to Temporal: classify first (so nothing malformed is started), then start
//! `ScanOnDeploy` under the event's workflow ID, exactly once, before the delivery's deadline.
//!
//! The Temporal client is made on first use and shared. No lock is held while connecting: one
//! connection attempt runs in its own task (bounded by [`CONNECT_TIMEOUT`]) and every delivery
//! that needs the client waits for it only until its own deadline, so a connect that hangs
//! delays no delivery past its deadline and blocks nothing else.

use super::delivery::Event;
use super::metrics::EventOutcome;
use crate::config::TemporalArgs;
use crate::temporal;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::image_scan::input::ImageScanInput;
use qflows_workflows::scan::model::entity_task_queue;
use qflows_workflows::scan::{Classified, ScanRequest, classify, search};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{Client, WorkflowIdReusePolicy, WorkflowStartOptions};
use tokio::time::Instant;

/// The longest one attempt to connect to Temporal may take; then it is abandoned, and the next
/// delivery that needs the client tries again.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Classifies `event` and, when it asks for a scan, starts its workflow — answering by
    /// `deadline` (the bridge also stops waiting then).
    fn start(
        &self,
        event: &Event,
        deadline: Instant,
    ) -> impl Future<Output = Result<EventOutcome, StartError>> + Send;
    /// Whether Temporal answers now.
    fn ready(&self) -> impl Future<Output = bool> + Send;
}

/// Classifies an event as `ScanOnDeploy` will (a refusal names the field).
pub fn check(event: &Event) -> Result<Classified, StartError> {
    classify(&event.body).map_err(|e| StartError::Invalid(format!("event {}: {e}", event.id)))
}

/// How qflows starts a `ScanOnDeploy` for an event: under its workflow ID, refusing any ID that
/// ever ran (a redelivery is a duplicate), with the design memo and — when the namespace has
/// them (`search_attributes`) — the search attributes the event gives, set at start where they
/// cost nothing.
pub fn start_options(
    task_queue: &str,
    workflow_id: &str,
    request: &ScanRequest,
    search_attributes: bool,
) -> WorkflowStartOptions {
    let mut options = WorkflowStartOptions::new(task_queue.to_string(), workflow_id.to_string())
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .build();
    options.memo = Some(qflows_activities::scan::design_memo());
    if search_attributes {
        options.search_attributes = search::at_start(request);
    }
    options
}

/// Digests the bridge started an entity for lately: the first event of a digest starts its
/// scan at once; later ones need not (the deploy workflow attaches to the running entity).
#[derive(Default)]
struct RecentDigests {
    seen: HashMap<String, Instant>,
}

impl RecentDigests {
    /// How long a digest counts as recent, and how many are kept.
    const FOR: Duration = Duration::from_secs(600);
    const MAX: usize = 10_000;

    /// True the first time `digest` is seen within [`Self::FOR`].
    fn first(&mut self, digest: &str, now: Instant) -> bool {
        if self.seen.get(digest).is_some_and(|t| now < *t + Self::FOR) {
            return false;
        }
        if self.seen.len() >= Self::MAX {
            self.seen.retain(|_, t| now < *t + Self::FOR);
            if self.seen.len() >= Self::MAX {
                self.seen.clear();
            }
        }
        self.seen.insert(digest.to_string(), now);
        true
    }
}

/// Makes a Temporal client (the real one connects with [`temporal::connect`]).
pub type Connect = Arc<dyn Fn() -> BoxFuture<'static, anyhow::Result<Client>> + Send + Sync>;

/// One connection attempt, shared by every caller that waits for it.
type Attempt = Shared<BoxFuture<'static, Result<Client, &'static str>>>;

/// The client, or the attempt to make one.
enum Slot {
    Empty,
    Connecting { attempt: Attempt, generation: u64 },
    Ready(Client),
}

/// The slot, and how many attempts were made (so an attempt only settles its own).
struct Connection {
    slot: Slot,
    attempts: u64,
}

/// The real starter: a Temporal client, connected on first use and reused.
pub struct TemporalStarter {
    connect: Connect,
    task_queue: String,
    probe_timeout: Duration,
    connect_timeout: Duration,
    connection: Arc<Mutex<Connection>>,
    /// Whether the namespace has qflows' search attributes (asked once per client).
    search_attributes: tokio::sync::OnceCell<bool>,
    recent: Mutex<RecentDigests>,
}

fn lock(connection: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    connection.lock().unwrap_or_else(|p| p.into_inner())
}

impl TemporalStarter {
    /// A starter for `task_queue`; `/readyz` waits at most `probe_timeout` for Temporal.
    pub fn new(args: TemporalArgs, task_queue: String, probe_timeout: Duration) -> Self {
        let connect: Connect = Arc::new(move || {
            let args = args.clone();
            async move { temporal::connect(&args, "qflows-bridge").await }.boxed()
        });
        Self::with_connect(connect, task_queue, probe_timeout, CONNECT_TIMEOUT)
    }

    /// A starter that makes its client with `connect`, each attempt bounded by
    /// `connect_timeout`.
    pub fn with_connect(
        connect: Connect,
        task_queue: String,
        probe_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            connect,
            task_queue,
            probe_timeout,
            connect_timeout,
            connection: Arc::new(Mutex::new(Connection {
                slot: Slot::Empty,
                attempts: 0,
            })),
            search_attributes: tokio::sync::OnceCell::new(),
            recent: Mutex::new(RecentDigests::default()),
        }
    }

    /// Whether starts may set qflows' search attributes (setting unregistered ones fails).
    async fn search_attributes(&self, client: &Client) -> bool {
        *self
            .search_attributes
            .get_or_init(|| async {
                temporal::missing_search_attributes(client)
                    .await
                    .is_ok_and(|missing| missing.is_empty())
            })
            .await
    }

    /// Starts the entity of each digest the event names that this bridge has not seen lately,
    /// so its scan begins before the deploy workflow's first task runs (best effort: the deploy
    /// workflow attaches to or starts it anyway).
    async fn start_new_digests(&self, client: &Client, request: &ScanRequest, deadline: Instant) {
        let now = Instant::now();
        let accepted_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
        let new: Vec<_> = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            request
                .images
                .iter()
                .filter(|i| i.digest.as_deref().is_some_and(|d| recent.first(d, now)))
                .cloned()
                .collect()
        };
        let queue = entity_task_queue(&self.task_queue);
        for image in new {
            let input = ImageScanInput {
                digest: image.digest.clone().unwrap_or_default(),
                image,
                event_accepted_at_ms: accepted_at_ms,
                carried: None,
                backfill: false,
            };
            let started = tokio::time::timeout_at(
                deadline,
                qflows_activities::scan::start_entity(client, &queue, input),
            )
            .await;
            if !matches!(started, Ok(Ok(()))) {
                tracing::debug!("could not start an entity ahead; its deploy workflow will");
            }
        }
    }

    /// The client, or the attempt under way, or a new attempt. The lock is held only to look
    /// and swap, never while connecting: the attempt runs in its own task, which stores its
    /// outcome (the client, or an empty slot for the next caller to try again) when it ends.
    fn attempt(&self) -> Result<Client, Attempt> {
        let mut connection = lock(&self.connection);
        match &connection.slot {
            Slot::Ready(client) => return Ok(client.clone()),
            Slot::Connecting { attempt, .. } => return Err(attempt.clone()),
            Slot::Empty => {}
        }
        connection.attempts += 1;
        let generation = connection.attempts;
        let connecting = (self.connect)();
        let limit = self.connect_timeout;
        let shared = self.connection.clone();
        let task = tokio::spawn(async move {
            let outcome = match tokio::time::timeout(limit, connecting).await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot connect to Temporal");
                    Err("connect")
                }
                Err(_) => {
                    tracing::warn!(?limit, "connecting to Temporal timed out");
                    Err("connect-timeout")
                }
            };
            let mut connection = lock(&shared);
            if matches!(connection.slot, Slot::Connecting { generation: g, .. } if g == generation)
            {
                connection.slot = match &outcome {
                    Ok(client) => Slot::Ready(client.clone()),
                    Err(_) => Slot::Empty,
                };
            }
            outcome
        });
        let attempt = async move { task.await.unwrap_or(Err("connect")) }
            .boxed()
            .shared();
        connection.slot = Slot::Connecting {
            attempt: attempt.clone(),
            generation,
        };
        Err(attempt)
    }

    /// The client, connecting if there is none yet (Temporal may be down when the bridge
    /// starts); waits for a connection no later than `deadline`.
    pub async fn client(&self, deadline: Instant) -> Result<Client, StartError> {
        let attempt = match self.attempt() {
            Ok(client) => return Ok(client),
            Err(attempt) => attempt,
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(outcome) => outcome.map_err(StartError::Unavailable),
            // The attempt goes on for the next deliveries; this one answers now.
            Err(_) => Err(StartError::Unavailable("connect-timeout")),
        }
    }
}

impl Starter for TemporalStarter {
    async fn start(&self, event: &Event, deadline: Instant) -> Result<EventOutcome, StartError> {
        let request = match check(event)? {
            Classified::Ignored { reason } => {
                tracing::info!(event_id = %event.id, %reason, "event ignored");
                return Ok(EventOutcome::Ignored);
            }
            Classified::Scan(request) => request,
        };
        let client = self.client(deadline).await?;
        self.start_new_digests(&client, &request, deadline).await;
        let attributes = self.search_attributes(&client).await;
        let options = start_options(&self.task_queue, &event.workflow_id, &request, attributes);
        let started = tokio::time::timeout_at(
            deadline,
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
        let deadline = Instant::now() + self.probe_timeout;
        let Ok(client) = self.client(deadline).await else {
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
        matches!(tokio::time::timeout_at(deadline, call).await, Ok(Ok(_)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A starter whose every connection attempt runs `attempt`, counted.
    fn starter(
        attempt: impl Fn() -> BoxFuture<'static, anyhow::Result<Client>> + Send + Sync + 'static,
    ) -> (TemporalStarter, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let connect: Connect = Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            attempt()
        });
        let starter = TemporalStarter::with_connect(
            connect,
            "q".into(),
            Duration::from_secs(1),
            Duration::from_secs(10),
        );
        (starter, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_connect_holds_no_caller_past_its_own_deadline() {
        let (starter, calls) = starter(|| futures::future::pending().boxed());
        let t0 = Instant::now();
        let wait = |secs: u64| {
            let starter = &starter;
            async move {
                let result = starter.client(t0 + Duration::from_secs(secs)).await;
                (result.map(|_| ()), Instant::now() - t0)
            }
        };
        // Three deliveries at once, with deadlines 1, 2 and 3 s: each answers at its own
        // deadline — none waits behind another's connect — and they share one attempt.
        let (a, b, c) = tokio::join!(wait(1), wait(2), wait(3));
        let unavailable = Err(StartError::Unavailable("connect-timeout"));
        assert_eq!(a, (unavailable.clone(), Duration::from_secs(1)));
        assert_eq!(b, (unavailable.clone(), Duration::from_secs(2)));
        assert_eq!(c, (unavailable.clone(), Duration::from_secs(3)));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one connection attempt");

        // The hung attempt is abandoned after the connect timeout; the next caller tries anew.
        tokio::time::sleep_until(t0 + Duration::from_secs(11)).await;
        let (late, _) = wait(12).await;
        assert_eq!(late, unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connect_is_tried_again_by_the_next_delivery() {
        let (starter, calls) = starter(|| async { anyhow::bail!("refused") }.boxed());
        let deadline = Instant::now() + Duration::from_secs(4);
        for n in 1..=3 {
            assert_eq!(
                starter.client(deadline).await.map(|_| ()),
                Err(StartError::Unavailable("connect"))
            );
            assert_eq!(calls.load(Ordering::SeqCst), n);
        }
    }
}
