//! The bridge's HTTP front end: authenticate, bound, read, start, answer.
//!
//! The answer tells the sender what to do next: 2xx only once Temporal has accepted every event
//! (or already had it), 503 with `Retry-After` when it has not (deliver again: nothing is lost,
//! and redelivery cannot start a second run), 400 for what no retry can fix.

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
use qflows_activities::qualys::Secret;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;

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
        Ok(Delivery::Events(events)) => start_all(shared, route, &events).await,
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

/// Starts every event; the worst outcome decides the status.
pub(super) async fn start_all<S: Starter>(
    shared: &Shared<S>,
    route: Route,
    events: &[Event],
) -> Response {
    let mut report = Vec::with_capacity(events.len());
    let mut unavailable = None;
    let mut invalid = None;
    for event in events {
        let mut entry = json!({ "id": event.id, "workflowId": event.workflow_id });
        match shared.starter.start(event).await {
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
}
