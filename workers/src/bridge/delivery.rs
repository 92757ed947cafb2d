//! What a delivery holds: EventBridge events, Event Grid arrays and CloudEvents, each turned into
//! the events to start workflows for — or into a subscription handshake to answer.
//!
//! Parsing is pure: no I/O, no clock. Every problem is a [`Malformed`] naming what is wrong, so
//! the sender's dead-letter queue (and whoever reads it) knows why the delivery was refused.

use base64::Engine;
use serde_json::{Map, Value};

/// The Event Grid event type of the subscription validation handshake.
pub const EVENT_GRID_VALIDATION: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";

/// Longest event id accepted (Event Grid and EventBridge use GUIDs; CloudEvents ids are free text).
const MAX_ID_LEN: usize = 256;

/// Which kind of sender a delivery came from; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    /// EventBridge (API destination or SQS).
    Aws,
    /// Event Grid, in its own schema.
    EventGrid,
    /// Any CloudEvents 1.0 sender, Event Grid included.
    CloudEvents,
}

impl Sender {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Aws => "aws",
            Sender::EventGrid => "eventgrid",
            Sender::CloudEvents => "cloudevents",
        }
    }
}

/// One event to hand to `ScanOnDeploy`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The sender's format.
    pub sender: Sender,
    /// The event's own id, as sent.
    pub id: String,
    /// The workflow ID derived from the id: a redelivered event maps to the same workflow.
    pub workflow_id: String,
    /// The event as `ScanOnDeploy` takes it (one event object).
    pub body: Value,
}

/// What a delivery asks of the bridge.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// Events to start workflows for (Event Grid and CloudEvents may batch).
    Events(Vec<Event>),
    /// Event Grid's subscription validation: answer `{"validationResponse": code}`.
    Validation {
        /// The `data.validationCode` to echo.
        code: String,
    },
}

/// Why a delivery could not be read. The message names the field or header at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn malformed(message: impl Into<String>) -> Malformed {
    Malformed(message.into())
}

/// An EventBridge delivery: one event object (API destination body or SQS message body).
pub fn eventbridge(body: &[u8]) -> Result<Delivery, Malformed> {
    let value = json(body)?;
    let Value::Object(event) = value else {
        return Err(malformed(
            "expected one EventBridge event (a JSON object with `id`, `source`, `detail-type`, `detail`)",
        ));
    };
    let id = required_id(&event, "id")?;
    Ok(Delivery::Events(vec![Event {
        sender: Sender::Aws,
        workflow_id: aws_workflow_id(&event, &id),
        id,
        body: Value::Object(event),
    }]))
}

/// `deploy-aws-<event id>`; for an ECS task that is running, `deploy-aws-task-<hash of the
/// task ARN>`: ECS sends `ECS Task State Change` again when a running task's containers change
/// (health, network bindings), and each task is one deployment to scan, once.
fn aws_workflow_id(event: &serde_json::Map<String, Value>, id: &str) -> String {
    let detail = event.get("detail");
    let task = detail
        .and_then(|d| d.get("taskArn"))
        .and_then(Value::as_str)
        .filter(|_| {
            event.get("detail-type").and_then(Value::as_str) == Some("ECS Task State Change")
        })
        .filter(|_| {
            detail
                .and_then(|d| d.get("lastStatus"))
                .and_then(Value::as_str)
                == Some("RUNNING")
        });
    match task {
        Some(arn) => format!("deploy-aws-task-{:016x}", fnv1a64(arn.as_bytes())),
        None => format!("deploy-aws-{id}"),
    }
}

/// An Event Grid or CloudEvents delivery in structured or batch mode: an Event Grid–schema
/// array, one CloudEvent, or an array of CloudEvents. `event_grid` allows the Event Grid schema
/// (the `/events/azure` route); generic CloudEvents senders get only CloudEvents.
pub fn structured(body: &[u8], event_grid: bool) -> Result<Delivery, Malformed> {
    let value = json(body)?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(malformed("expected a JSON object or an array of events")),
    };
    if items.is_empty() {
        return Err(malformed("the delivery holds no events (an empty array)"));
    }
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let at = |m: String| malformed(format!("event [{index}]: {m}"));
        let Value::Object(object) = item else {
            return Err(at("not a JSON object".into()));
        };
        if object.contains_key("specversion") {
            events.push(cloud_event(object).map_err(|e| at(e.0))?);
        } else if event_grid {
            if object.get("eventType").and_then(Value::as_str) == Some(EVENT_GRID_VALIDATION) {
                let code = object
                    .get("data")
                    .and_then(|d| d.get("validationCode"))
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| at("validation event without `data.validationCode`".into()))?;
                return Ok(Delivery::Validation {
                    code: code.to_string(),
                });
            }
            events.push(event_grid_event(object).map_err(|e| at(e.0))?);
        } else {
            return Err(at(
                "not a CloudEvent: `specversion` is missing (structured mode needs \
                 Content-Type application/cloudevents+json; binary mode needs ce-* headers)"
                    .into(),
            ));
        }
    }
    Ok(Delivery::Events(events))
}

/// A CloudEvent in binary mode: attributes in `ce-*` headers, the body is `data`.
///
/// `headers` are `(lower-case name, value)` pairs. The event is rebuilt in structured form so
/// `ScanOnDeploy` sees one shape whatever the mode.
pub fn binary<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Delivery, Malformed> {
    let mut object = Map::new();
    for (name, value) in headers {
        if let Some(attribute) = name.strip_prefix("ce-") {
            if attribute.is_empty() {
                continue;
            }
            object.insert(attribute.to_string(), Value::String(value.to_string()));
        }
    }
    if let Some(content_type) = content_type {
        object.insert(
            "datacontenttype".into(),
            Value::String(content_type.to_string()),
        );
    }
    if !body.is_empty() {
        let data = if content_type.is_some_and(is_json_media_type) {
            serde_json::from_slice(body)
                .map_err(|e| malformed(format!("body (the event's data) is not JSON: {e}")))?
        } else {
            match std::str::from_utf8(body) {
                Ok(text) => Value::String(text.to_string()),
                Err(_) => Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
            }
        };
        object.insert("data".into(), data);
    }
    Ok(Delivery::Events(vec![cloud_event(object)?]))
}

/// Whether a media type is JSON (`application/json`, `text/json`, `…+json`).
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

fn cloud_event(mut object: Map<String, Value>) -> Result<Event, Malformed> {
    match object.get("specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(other) => {
            return Err(malformed(format!(
                "`specversion` is {other:?}; only CloudEvents 1.0 is supported"
            )));
        }
        None => return Err(malformed("`specversion` is missing or not a string")),
    }
    let id = required_id(&object, "id")?;
    let source = required_string(&object, "source")?;
    required_string(&object, "type")?;
    // `data_base64` carrying JSON becomes `data`, so the workflow reads one field.
    if let Some(encoded) = object.get("data_base64").and_then(Value::as_str) {
        let json_content = object
            .get("datacontenttype")
            .and_then(Value::as_str)
            .is_none_or(is_json_media_type);
        if json_content {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| malformed(format!("`data_base64` is not base64: {e}")))?;
            let data: Value = serde_json::from_slice(&bytes)
                .map_err(|e| malformed(format!("`data_base64` does not hold JSON: {e}")))?;
            object.remove("data_base64");
            object.insert("data".into(), data);
        }
    }
    Ok(Event {
        sender: Sender::CloudEvents,
        workflow_id: format!("deploy-ce-{:016x}-{id}", fnv1a64(source.as_bytes())),
        id,
        body: Value::Object(object),
    })
}

fn event_grid_event(object: Map<String, Value>) -> Result<Event, Malformed> {
    let id = required_id(&object, "id")?;
    required_string(&object, "eventType")?;
    Ok(Event {
        sender: Sender::EventGrid,
        workflow_id: format!("deploy-azure-{id}"),
        id,
        body: Value::Object(object),
    })
}

fn json(body: &[u8]) -> Result<Value, Malformed> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(malformed("the body is empty"));
    }
    serde_json::from_slice(body).map_err(|e| malformed(format!("the body is not JSON: {e}")))
}

fn required_string(object: &Map<String, Value>, field: &str) -> Result<String, Malformed> {
    match object.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(malformed(format!("`{field}` is empty"))),
        Some(_) => Err(malformed(format!("`{field}` is not a string"))),
        None => Err(malformed(format!("`{field}` is missing"))),
    }
}

fn required_id(object: &Map<String, Value>, field: &str) -> Result<String, Malformed> {
    let id = required_string(object, field)?;
    if id.len() > MAX_ID_LEN {
        return Err(malformed(format!(
            "`{field}` is {} characters long; at most {MAX_ID_LEN} are accepted",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(malformed(format!("`{field}` contains control characters")));
    }
    Ok(id)
}

/// FNV-1a, 64 bits: a stable, short stand-in for a CloudEvents `source` in workflow IDs.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events(delivery: Delivery) -> Vec<Event> {
        match delivery {
            Delivery::Events(events) => events,
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn eventbridge_event_maps_its_id_to_the_workflow_id() {
        let body = json!({"id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718", "source": "aws.ecr",
                          "detail-type": "ECR Image Action", "detail": {}});
        let events = events(eventbridge(body.to_string().as_bytes()).unwrap());
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].workflow_id,
            "deploy-aws-6a7e8feb-b491-4cf7-a9f1-bf3703467718"
        );
        assert_eq!(events[0].body, body);
    }

    #[test]
    fn a_running_ecs_task_is_one_workflow_however_often_ecs_reports_it() {
        let task = |id: &str, status: &str| {
            json!({"id": id, "source": "aws.ecs", "detail-type": "ECS Task State Change",
                   "detail": {"lastStatus": status,
                              "taskArn": "arn:aws:ecs:us-east-1:111122223333:task/prod/0f1e"}})
        };
        let id = |event: Value| {
            events(eventbridge(event.to_string().as_bytes()).unwrap())[0]
                .workflow_id
                .clone()
        };
        let running = id(task("a", "RUNNING"));
        assert!(running.starts_with("deploy-aws-task-"), "{running}");
        assert_eq!(
            running,
            id(task("b", "RUNNING")),
            "a second report of the same task"
        );
        assert_eq!(id(task("c", "PENDING")), "deploy-aws-c");
        let other = task("d", "RUNNING").to_string().replace("0f1e", "0f1f");
        assert_ne!(running, id(serde_json::from_str(&other).unwrap()));
    }

    #[test]
    fn eventbridge_problems_are_named() {
        let err = |b: &str| eventbridge(b.as_bytes()).unwrap_err().0;
        assert!(err("").contains("empty"));
        assert!(err("{").contains("not JSON"));
        assert!(err("[]").contains("one EventBridge event"));
        assert!(err(r#"{"source":"aws.ecr"}"#).contains("`id` is missing"));
        assert!(err(r#"{"id":7}"#).contains("`id` is not a string"));
        assert!(err(&format!(r#"{{"id":"{}"}}"#, "x".repeat(300))).contains("at most 256"));
    }

    #[test]
    fn event_grid_validation_is_recognised() {
        let body = json!([{"id": "2d17", "topic": "/subscriptions/x", "subject": "",
            "eventType": EVENT_GRID_VALIDATION, "data": {"validationCode": "512d38b6"},
            "eventTime": "2026-11-20T10:00:00Z", "dataVersion": "2"}]);
        assert_eq!(
            structured(body.to_string().as_bytes(), true).unwrap(),
            Delivery::Validation {
                code: "512d38b6".into()
            }
        );
        // Not on the generic CloudEvents route.
        assert!(structured(body.to_string().as_bytes(), false).is_err());
    }

    #[test]
    fn event_grid_arrays_and_cloud_events_give_one_event_each() {
        let eg = json!([{"id": "a", "eventType": "Microsoft.ContainerRegistry.ImagePushed", "data": "{}"},
                        {"id": "b", "eventType": "Microsoft.ContainerRegistry.ImagePushed", "data": {}}]);
        let got = events(structured(eg.to_string().as_bytes(), true).unwrap());
        assert_eq!(
            got.iter()
                .map(|e| e.workflow_id.as_str())
                .collect::<Vec<_>>(),
            ["deploy-azure-a", "deploy-azure-b"]
        );
        let ce = json!({"specversion": "1.0", "id": "c", "source": "/x", "type": "t", "data": {}});
        let got = events(structured(ce.to_string().as_bytes(), false).unwrap());
        assert_eq!(got[0].sender, Sender::CloudEvents);
        assert!(got[0].workflow_id.starts_with("deploy-ce-"));
        assert!(got[0].workflow_id.ends_with("-c"));
        // The same id from another source is another event.
        let other = json!({"specversion": "1.0", "id": "c", "source": "/y", "type": "t"});
        let other = events(structured(other.to_string().as_bytes(), false).unwrap());
        assert_ne!(other[0].workflow_id, got[0].workflow_id);
    }

    #[test]
    fn cloud_event_problems_are_named_with_their_index() {
        let err = |v: Value| structured(v.to_string().as_bytes(), true).unwrap_err().0;
        assert_eq!(
            err(
                json!([{"specversion": "1.0", "id": "a", "source": "/s", "type": "t"},
                       {"specversion": "1.0", "id": "b", "type": "t"}])
            ),
            "event [1]: `source` is missing"
        );
        assert!(
            err(json!({"specversion": "0.3", "id": "a", "source": "/s", "type": "t"}))
                .contains("only CloudEvents 1.0")
        );
        assert!(err(json!([])).contains("no events"));
        assert!(err(json!([1])).contains("event [0]: not a JSON object"));
        assert!(err(json!({"id": "a"})).contains("`eventType` is missing"));
        assert!(
            structured(json!({"id": "a"}).to_string().as_bytes(), false)
                .unwrap_err()
                .0
                .contains("`specversion` is missing")
        );
    }

    #[test]
    fn data_base64_with_json_becomes_data() {
        let data = base64::engine::general_purpose::STANDARD.encode(br#"{"k":1}"#);
        let ce = json!({"specversion": "1.0", "id": "a", "source": "/s", "type": "t",
                        "datacontenttype": "application/json", "data_base64": data});
        let got = events(structured(ce.to_string().as_bytes(), false).unwrap());
        assert_eq!(got[0].body["data"], json!({"k": 1}));
        assert!(got[0].body.get("data_base64").is_none());
    }

    #[test]
    fn binary_mode_is_rebuilt_in_structured_form() {
        let headers = [
            ("ce-specversion", "1.0"),
            ("ce-id", "42"),
            ("ce-source", "/registry"),
            ("ce-type", "Microsoft.ContainerRegistry.ImagePushed"),
            ("ce-subject", "app:1"),
            ("content-length", "9"),
        ];
        let got = events(binary(headers, Some("application/json"), br#"{"k":"v"}"#).unwrap());
        assert_eq!(
            got[0].body,
            json!({"specversion": "1.0", "id": "42", "source": "/registry",
                   "type": "Microsoft.ContainerRegistry.ImagePushed", "subject": "app:1",
                   "datacontenttype": "application/json", "data": {"k": "v"}})
        );
        let missing = binary([("ce-specversion", "1.0"), ("ce-id", "1")], None, b"");
        assert_eq!(missing.unwrap_err().0, "`source` is missing");
        let bad = binary(
            [
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            Some("application/json"),
            b"{",
        );
        assert!(bad.unwrap_err().0.contains("not JSON"));
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/cloudevents+json"));
        assert!(!is_json_media_type("text/plain"));
    }
}
