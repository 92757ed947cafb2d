//! The bridge's HTTP front end: authenticate, bound, read, start, answer.
//!
//! The answer tells the sender what to do next: 2xx only once Temporal has accepted every event
//! (or already had it), 503 with `Retry-After` when it has not (deliver again: nothing is lost,
//! and redelivery cannot start a second run), 400 for what no retry can fix.
//!
//! A delivery is answered within its sender's deadline ([`Shared::deadline`]): the events of a
//! batch start concurrently (at most [`Shared::start_concurrency`] at once), and those not
//! started when the deadline comes are answered 503 — the sender delivers the batch again, and
//! the events that did start are duplicates then.

use super::delivery::{self, Delivery, Event, Malformed};
use super::metrics::{EventOutcome, Metrics, Rejection, Route};
use super::starter::{StartError, Starter};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use futures::StreamExt;
use qflows_activities::qualys::Secret;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// Everything the handlers share.
pub struct Shared<S> {
    /// The key senders must present.
    pub key: Secret,
    /// The header an EventBridge connection's API-key auth sends.
    pub api_key_header: HeaderName,
    /// Largest body read.
    pub max_body_bytes: usize,
    /// Starts the workflows.
    pub starter: S,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// How long an EventBridge delivery (and an SQS message) may take, arrival to answer.
    pub aws_deadline: Duration,
    /// How long an Event Grid or CloudEvents delivery may take, arrival to answer.
    pub azure_deadline: Duration,
    /// Events of one delivery started at once.
    pub start_concurrency: usize,
}

impl<S> Shared<S> {
    /// The time a delivery on `route` that arrived at `arrived` must be answered by:
    /// EventBridge API destinations wait 5 s, Event Grid 30 s.
    pub fn deadline(&self, route: Route, arrived: Instant) -> Instant {
        arrived
            + match route {
                Route::Aws | Route::Sqs => self.aws_deadline,
                Route::Azure | Route::CloudEvents => self.azure_deadline,
            }
    }
}

/// The bridge's routes.
pub fn router<S: Starter>(shared: Arc<Shared<S>>) -> Router {
    Router::new()
        .route("/events/aws", post(aws::<S>))
        .route(
            "/events/azure",
            post(azure::<S>).options(webhook_validation),
        )
        .route(
            "/events/cloudevents",
            post(cloudevents::<S>).options(webhook_validation),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::<S>))
        .route("/metrics", get(metrics::<S>))
        .with_state(shared)
}

async fn aws<S: Starter>(State(shared): State<Arc<Shared<S>>>, request: Request) -> Response {
    deliver(&shared, Route::Aws, request).await
}

async fn azure<S: Starter>(State(shared): State<Arc<Shared<S>>>, request: Request) -> Response {
    deliver(&shared, Route::Azure, request).await
}

async fn cloudevents<S: Starter>(
    State(shared): State<Arc<Shared<S>>>,
    request: Request,
) -> Response {
    deliver(&shared, Route::CloudEvents, request).await
}

async fn ready<S: Starter>(State(shared): State<Arc<Shared<S>>>) -> Response {
    if shared.starter.ready().await {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporal is not reachable\n",
        )
            .into_response()
    }
}

async fn metrics<S: Starter>(State(shared): State<Arc<Shared<S>>>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        shared.metrics.render(),
    )
        .into_response()
}

/// The CloudEvents webhook validation (abuse protection): a sender asks with `OPTIONS` and
/// `WebHook-Request-Origin`; allowing it starts nothing, and every delivery still needs the key.
async fn webhook_validation(headers: HeaderMap) -> Response {
    let Some(origin) = headers.get("webhook-request-origin") else {
        return (
            StatusCode::BAD_REQUEST,
            error_body("OPTIONS without a WebHook-Request-Origin header"),
        )
            .into_response();
    };
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert("webhook-allowed-origin", origin.clone());
    out.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    out.insert("allow", HeaderValue::from_static("POST, OPTIONS"));
    response
}

async fn deliver<S: Starter>(shared: &Shared<S>, route: Route, request: Request) -> Response {
    let arrived = Instant::now();
    let response = match read(shared, route, request).await {
        Ok(Delivery::Validation { code }) => {
            shared.metrics.handshake();
            tracing::info!("answered the Event Grid subscription validation");
            (
                StatusCode::OK,
                axum::Json(json!({ "validationResponse": code })),
            )
                .into_response()
        }
        Ok(Delivery::Events(events)) => {
            start_all(shared, route, &events, shared.deadline(route, arrived)).await
        }
        Err((why, response)) => {
            shared.metrics.rejected(route, why);
            response
        }
    };
    shared.metrics.latency(route, arrived.elapsed());
    response
}

/// Authenticates, bounds and parses a request.
async fn read<S: Starter>(
    shared: &Shared<S>,
    route: Route,
    request: Request,
) -> Result<Delivery, (Rejection, Response)> {
    let (parts, body) = request.into_parts();
    if !authorized(
        &parts.headers,
        &parts.uri,
        &shared.api_key_header,
        &shared.key,
    ) {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            error_body("missing or wrong key (x-api-key, Authorization, or ?code=)"),
        )
            .into_response();
        response.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"qflows bridge\""),
        );
        return Err((Rejection::Unauthenticated, response));
    }
    let too_large = || {
        (
            Rejection::TooLarge,
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                error_body(&format!(
                    "the body is larger than {} bytes (QFLOWS_BRIDGE_MAX_BODY_BYTES)",
                    shared.max_body_bytes
                )),
            )
                .into_response(),
        )
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > shared.max_body_bytes) {
        return Err(too_large());
    }
    let bytes: Bytes = match axum::body::to_bytes(Body::new(body), shared.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let over_limit = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if over_limit {
                return Err(too_large());
            }
            return Err(bad(Rejection::Malformed, "the body could not be read"));
        }
    };
    let parsed = match route {
        Route::Aws | Route::Sqs => delivery::eventbridge(&bytes),
        Route::Azure | Route::CloudEvents => {
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if parts.headers.contains_key("ce-specversion") {
                let headers = parts
                    .headers
                    .iter()
                    .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
                delivery::binary(headers, content_type, &bytes)
            } else {
                delivery::structured(&bytes, route == Route::Azure)
            }
        }
    };
    parsed.map_err(|Malformed(message)| bad(Rejection::Malformed, &message))
}

fn bad(why: Rejection, message: &str) -> (Rejection, Response) {
    (
        why,
        (StatusCode::BAD_REQUEST, error_body(message)).into_response(),
    )
}

/// Starts `events`, at most [`Shared::start_concurrency`] at once, and gives each one's outcome
/// (in order) by `deadline`: an event whose start has not answered by then, or that was still
/// waiting for its turn, is [`StartError::Unavailable`] (`"deadline"`).
pub(super) async fn start_events<S: Starter>(
    shared: &Shared<S>,
    events: &[Event],
    deadline: Instant,
) -> Vec<Result<EventOutcome, StartError>> {
    // Made up front (they do nothing until polled), so no closure is part of the future's type:
    // that keeps it `Send` for any lifetime, as axum needs.
    let mut starts = Vec::with_capacity(events.len());
    for event in events {
        starts.push(start_one(shared, event, deadline));
    }
    futures::stream::iter(starts)
        .buffered(shared.start_concurrency.max(1))
        .collect()
        .await
}

async fn start_one<S: Starter>(
    shared: &Shared<S>,
    event: &Event,
    deadline: Instant,
) -> Result<EventOutcome, StartError> {
    if Instant::now() >= deadline {
        return Err(StartError::Unavailable("deadline"));
    }
    tokio::time::timeout_at(deadline, shared.starter.start(event, deadline))
        .await
        .unwrap_or(Err(StartError::Unavailable("deadline")))
}

/// Starts every event by `deadline`; the worst outcome decides the status.
pub(super) async fn start_all<S: Starter>(
    shared: &Shared<S>,
    route: Route,
    events: &[Event],
    deadline: Instant,
) -> Response {
    let mut report = Vec::with_capacity(events.len());
    let mut unavailable = None;
    let mut invalid = None;
    let outcomes = start_events(shared, events, deadline).await;
    for (event, outcome) in events.iter().zip(outcomes) {
        let mut entry = json!({ "id": event.id, "workflowId": event.workflow_id });
        match outcome {
            Ok(outcome) => {
                shared.metrics.event(route, outcome);
                entry["outcome"] = outcome.as_str().into();
                if outcome == EventOutcome::Ignored {
                    entry
                        .as_object_mut()
                        .expect("an object")
                        .remove("workflowId");
                }
            }
            Err(e) => {
                entry["error"] = e.to_string().into();
                match e {
                    StartError::Unavailable(_) => unavailable.get_or_insert(e),
                    StartError::Invalid(_) => invalid.get_or_insert(e),
                };
            }
        }
        report.push(entry);
    }
    if let Some(e) = unavailable {
        shared.metrics.rejected(route, Rejection::Unavailable);
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": e.to_string(), "events": report })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("10"));
        return response;
    }
    if let Some(e) = invalid {
        shared.metrics.rejected(route, Rejection::InvalidEvent);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": e.to_string(), "events": report })),
        )
            .into_response();
    }
    (StatusCode::OK, axum::Json(json!({ "events": report }))).into_response()
}

fn error_body(message: &str) -> axum::Json<Value> {
    axum::Json(json!({ "error": message }))
}

/// Whether the request carries the key: in the API-key header, as a bearer token, as the
/// password of basic auth, or as the `code` query parameter (Event Grid webhook URLs).
fn authorized(headers: &HeaderMap, uri: &Uri, api_key_header: &HeaderName, key: &Secret) -> bool {
    let key = key.expose().as_bytes();
    let matches = |candidate: &[u8]| bool::from(candidate.ct_eq(key));
    if headers
        .get(api_key_header)
        .is_some_and(|v| matches(v.as_bytes()))
    {
        return true;
    }
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some(token) = value.strip_prefix("Bearer ")
            && matches(token.trim().as_bytes())
        {
            return true;
        }
        if let Some(encoded) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .unwrap_or_default();
            if let Some(colon) = decoded.iter().position(|b| *b == b':')
                && matches(&decoded[colon + 1..])
            {
                return true;
            }
        }
    }
    uri.query().is_some_and(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .any(|(name, value)| name == "code" && matches(value.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(headers: &[(&str, &str)], uri: &str) -> bool {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        authorized(
            &map,
            &uri.parse().unwrap(),
            &HeaderName::from_static("x-api-key"),
            &Secret::new("s3cret"),
        )
    }

    #[test]
    fn every_documented_way_to_present_the_key_works() {
        assert!(check(&[("x-api-key", "s3cret")], "/events/aws"));
        assert!(check(&[("authorization", "Bearer s3cret")], "/events/aws"));
        let basic = base64::engine::general_purpose::STANDARD.encode("eventbridge:s3cret");
        assert!(check(
            &[("authorization", &format!("Basic {basic}"))],
            "/events/aws"
        ));
        assert!(check(&[], "/events/azure?code=s3cret"));
        assert!(check(&[], "/events/azure?x=1&code=s3cret"));
    }

    #[test]
    fn wrong_or_missing_keys_are_refused() {
        assert!(!check(&[], "/events/aws"));
        assert!(!check(&[("x-api-key", "s3cret ")], "/events/aws"));
        assert!(!check(&[("x-api-key", "s3cre")], "/events/aws"));
        assert!(!check(&[("authorization", "Bearer nope")], "/events/aws"));
        let basic = base64::engine::general_purpose::STANDARD.encode("s3cret:");
        assert!(!check(
            &[("authorization", &format!("Basic {basic}"))],
            "/events/aws"
        ));
        assert!(!check(&[], "/events/azure?code=wrong"));
        assert!(!check(&[], "/events/azure?key=s3cret"));
    }

    mod batches {
        use super::super::*;
        use crate::bridge::delivery::Sender;
        use std::collections::BTreeSet;
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        /// Records how many starts run at once. Every start waits at a barrier for `group`
        /// others, so starts made one after another would never get past it (and the delivery
        /// would answer 503 at its deadline). Events whose id starts with `slow` never answer
        /// while `slow` is set. A second start of an event is a duplicate.
        struct Recording {
            barrier: tokio::sync::Barrier,
            in_flight: AtomicUsize,
            most: AtomicUsize,
            slow: AtomicBool,
            started: Mutex<BTreeSet<String>>,
        }

        impl Recording {
            fn new(group: usize) -> Self {
                Self {
                    barrier: tokio::sync::Barrier::new(group),
                    in_flight: AtomicUsize::new(0),
                    most: AtomicUsize::new(0),
                    slow: AtomicBool::new(false),
                    started: Mutex::new(BTreeSet::new()),
                }
            }
        }

        impl Starter for Recording {
            async fn start(
                &self,
                event: &Event,
                _deadline: Instant,
            ) -> Result<EventOutcome, StartError> {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                if event.id.starts_with("slow") && self.slow.load(Ordering::SeqCst) {
                    // Ignores its deadline: the bridge must stop waiting by itself.
                    std::future::pending::<()>().await;
                }
                if !event.id.starts_with("slow") {
                    self.barrier.wait().await;
                }
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                let fresh = self.started.lock().unwrap().insert(event.id.clone());
                Ok(if fresh {
                    EventOutcome::Started
                } else {
                    EventOutcome::Duplicate
                })
            }

            async fn ready(&self) -> bool {
                true
            }
        }

        fn shared(starter: Recording, concurrency: usize) -> Shared<Recording> {
            Shared {
                key: Secret::new("k".repeat(16)),
                api_key_header: HeaderName::from_static("x-api-key"),
                max_body_bytes: 1024,
                starter,
                metrics: Arc::new(Metrics::default()),
                aws_deadline: Duration::from_secs(4),
                azure_deadline: Duration::from_secs(25),
                start_concurrency: concurrency,
            }
        }

        fn events(ids: impl IntoIterator<Item = String>) -> Vec<Event> {
            ids.into_iter()
                .map(|id| Event {
                    sender: Sender::EventGrid,
                    workflow_id: format!("deploy-azure-{id}"),
                    body: json!({"id": id}),
                    id,
                })
                .collect()
        }

        async fn answer(response: Response) -> (StatusCode, Option<String>, Value) {
            let status = response.status();
            let retry = response
                .headers()
                .get(RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_string());
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, retry, serde_json::from_slice(&body).unwrap())
        }

        #[tokio::test(start_paused = true)]
        async fn a_batch_starts_concurrently_within_the_bound() {
            let shared = shared(Recording::new(8), 8);
            let batch = events((0..40).map(|i| format!("e{i}")));
            let t0 = Instant::now();
            let deadline = shared.deadline(Route::Azure, t0);
            let (status, _, body) =
                answer(start_all(&shared, Route::Azure, &batch, deadline).await).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let report = body["events"].as_array().unwrap();
            assert_eq!(report.len(), 40);
            assert!(report.iter().all(|e| e["outcome"] == "started"), "{body}");
            // In order of the delivery, whatever order they finished in.
            assert_eq!(report[7]["id"], "e7");
            assert_eq!(
                shared.starter.most.load(Ordering::SeqCst),
                8,
                "eight at once, never more"
            );
            assert!(Instant::now() < deadline, "answered before the deadline");
        }

        #[tokio::test(start_paused = true)]
        async fn events_not_started_by_the_deadline_are_answered_503_and_started_on_redelivery() {
            let starter = Recording::new(4);
            starter.slow.store(true, Ordering::SeqCst);
            let shared = shared(starter, 16);
            let batch = events(
                ["e0", "slow-1", "e2", "e3", "slow-4", "e5"]
                    .into_iter()
                    .map(String::from),
            );
            let t0 = Instant::now();
            let deadline = shared.deadline(Route::Azure, t0);
            let (status, retry, body) =
                answer(start_all(&shared, Route::Azure, &batch, deadline).await).await;
            assert_eq!(
                Instant::now(),
                t0 + Duration::from_secs(25),
                "answered at the deadline, not later"
            );
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert!(retry.is_some(), "the sender is told to come back");
            let report = body["events"].as_array().unwrap();
            for entry in report {
                if entry["id"].as_str().unwrap().starts_with("slow") {
                    assert!(
                        entry["error"].as_str().unwrap().contains("deadline"),
                        "{entry}"
                    );
                } else {
                    assert_eq!(entry["outcome"], "started", "{entry}");
                }
            }

            // The sender delivers the whole batch again: what started is a duplicate now, and
            // the rest start. Nothing is lost, nothing is started twice.
            shared.starter.slow.store(false, Ordering::SeqCst);
            let deadline = shared.deadline(Route::Azure, Instant::now());
            let (status, _, body) =
                answer(start_all(&shared, Route::Azure, &batch, deadline).await).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let outcomes: Vec<_> = body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["outcome"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                outcomes,
                [
                    "duplicate",
                    "started",
                    "duplicate",
                    "duplicate",
                    "started",
                    "duplicate"
                ]
            );
        }

        #[test]
        fn each_sender_gets_its_own_deadline() {
            let shared = shared(Recording::new(1), 1);
            let t0 = Instant::now();
            assert_eq!(shared.deadline(Route::Aws, t0) - t0, Duration::from_secs(4));
            assert_eq!(shared.deadline(Route::Sqs, t0) - t0, Duration::from_secs(4));
            assert_eq!(
                shared.deadline(Route::Azure, t0) - t0,
                Duration::from_secs(25)
            );
            assert_eq!(
                shared.deadline(Route::CloudEvents, t0) - t0,
                Duration::from_secs(25)
            );
        }
    }
}
