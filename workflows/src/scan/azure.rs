//! Azure deploy and push events: one Event Grid event or CloudEvent, as the bridge delivers it.
//!
//! | Event | Images | Resource |
//! |---|---|---|
//! | `Microsoft.ContainerRegistry.ImagePushed` | `<data.request.host>/<data.target.repository>[:<tag>]@<data.target.digest>` | — |
//! | `Microsoft.Resources.ResourceWriteSuccess`, operation `Microsoft.ContainerInstance/containerGroups/write` | read through ARM | `data.resourceUri` (else `subject`) |
//! | … operation `Microsoft.App/containerApps/write` or `Microsoft.App/jobs/write` | read through ARM | same |
//!
//! Both the Event Grid schema (`eventType`, `topic`) and CloudEvents 1.0 (`type`, `source`) are
//! read; `data` may be an object or a string holding JSON (ACR has delivered both). Image deletes,
//! failed or cancelled writes, deletes, actions, other resource types and the validation
//! handshake are [ignored](Classified::Ignored); anything else is an [`InputError`].
//!
//! Resource IDs come from the event (attacker-controlled) and go into Resource Manager URLs, so
//! [`check_arm_resource_id`] refuses any that could steer the URL elsewhere: `.` or `..`
//! segments, empty segments, and any character outside ARM's own (`%`, `\`, `?`, `#`, `:`,
//! whitespace…). The activity that builds the URL checks again.

use super::image_ref::ImageRef;
use super::request::{Classified, EventSource, ScanRequest, ignored, type_name};
use crate::input::InputError;
use serde_json::Value;

/// Resource-write operations that deploy containers, and what each is.
const DEPLOYING_WRITES: [(&str, EventSource); 3] = [
    (
        "microsoft.containerinstance/containergroups/write",
        EventSource::AciContainerGroupWrite,
    ),
    (
        "microsoft.app/containerapps/write",
        EventSource::ContainerAppWrite,
    ),
    (
        "microsoft.app/jobs/write",
        EventSource::ContainerAppJobWrite,
    ),
];

/// Whether `obj` looks like an Event Grid event or a CloudEvent rather than an EventBridge one.
pub(super) fn is_azure(obj: &serde_json::Map<String, Value>) -> bool {
    obj.contains_key("eventType") || obj.contains_key("specversion")
}

/// Longest resource ID accepted (ARM IDs are far shorter).
const MAX_RESOURCE_ID_LEN: usize = 1024;

/// Checks that `id` is a plain Resource Manager path, `/subscriptions/<…>/…`: non-empty segments
/// of ARM's characters (letters, digits, `-_.()`), none of them `.` or `..` or only dots, at
/// most 1,024 characters. One trailing `/` is tolerated. The error names `field`.
pub fn check_arm_resource_id(field: &str, id: &str) -> Result<(), InputError> {
    let refuse = |why: String| Err(InputError::field(field, format!("`{id}` {why}")));
    if id.len() > MAX_RESOURCE_ID_LEN {
        return Err(InputError::field(
            field,
            format!(
                "is {} characters long; a resource ID has at most {MAX_RESOURCE_ID_LEN}",
                id.len()
            ),
        ));
    }
    let Some(rest) = id.strip_prefix('/') else {
        return refuse("is not a resource ID: it must start with /subscriptions/".into());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for (i, segment) in rest.split('/').enumerate() {
        if i == 0 && !segment.eq_ignore_ascii_case("subscriptions") {
            return refuse("is not a resource ID: it must start with /subscriptions/".into());
        }
        if segment.is_empty() {
            return refuse("has an empty path segment (`//`)".into());
        }
        if segment.bytes().all(|b| b == b'.') {
            return refuse(format!(
                "has a `{segment}` path segment, which would move the Resource Manager URL"
            ));
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.()".contains(*c)))
        {
            return refuse(format!(
                "has {} in a path segment; resource IDs use letters, digits and -_.() only",
                describe_char(bad)
            ));
        }
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("the character U+{:04X}", u32::from(c))
    } else {
        format!("`{c}`")
    }
}

/// Whether the checks of [`check_arm_resource_id`] apply. Runs of `ScanOnDeploy` started
/// before they existed classify as they did when they replay ([`Checks::BeforeResourceIdChecks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checks {
    /// Everything, resource IDs included.
    All,
    /// As before resource IDs were checked for path tricks.
    BeforeResourceIdChecks,
}

/// Manifest types of container images (and image indexes): an ACR push of anything else — a
/// Helm chart, a cosign signature or attestation, an SBOM, any other OCI artifact — is ignored.
pub const IMAGE_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// Why an ACR push is not of a container image, if it is not: its `target.mediaType` is not an
/// image manifest, or its tag is cosign's (`sha256-<digest>.sig`, `.att`, `.sbom`; cosign pushes
/// those as OCI image manifests).
fn not_an_image(data: &serde_json::Map<String, Value>) -> Option<String> {
    let target = data.get("target")?.as_object()?;
    if let Some(media_type) = target.get("mediaType").and_then(Value::as_str)
        && !media_type.is_empty()
        && !IMAGE_MEDIA_TYPES.contains(&media_type)
    {
        return Some(format!(
            "ACR push of a `{media_type}` artifact, not a container image: nothing to scan"
        ));
    }
    let tag = target.get("tag").and_then(Value::as_str)?;
    let (digest, suffix) = tag.strip_prefix("sha256-")?.rsplit_once('.')?;
    (digest.len() == 64
        && digest.bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(suffix, "sig" | "att" | "sbom"))
    .then(|| {
        format!("ACR push of a cosign {suffix} (`{tag}`), not a container image: nothing to scan")
    })
}

/// Classifies one Event Grid event or CloudEvent. With `scan_artifacts` (runs of `ScanOnDeploy`
/// from before patch `acr-artifacts-ignored`), ACR pushes of non-image artifacts are scanned as
/// they were.
pub(super) fn classify(
    event: &serde_json::Map<String, Value>,
    checks: Checks,
    scan_artifacts: bool,
) -> Result<Classified, InputError> {
    let cloud_event = event.contains_key("specversion");
    let type_field = if cloud_event { "type" } else { "eventType" };
    let event_type = string(event, type_field)?;
    let id = event.get("id").and_then(Value::as_str).map(str::to_string);
    let subject = event.get("subject").and_then(Value::as_str).unwrap_or("");
    let topic_field = if cloud_event { "source" } else { "topic" };
    let topic = event.get(topic_field).and_then(Value::as_str).unwrap_or("");
    match event_type {
        "Microsoft.ContainerRegistry.ImagePushed" => {
            let data = data(event)?;
            if checks == Checks::All && topic.starts_with("/subscriptions/") {
                check_arm_resource_id(topic_field, topic)?;
            }
            if !scan_artifacts && let Some(reason) = not_an_image(&data) {
                return ignored(reason);
            }
            acr_push(&data, id, topic)
        }
        "Microsoft.ContainerRegistry.ImageDeleted"
        | "Microsoft.ContainerRegistry.ChartPushed"
        | "Microsoft.ContainerRegistry.ChartDeleted" => {
            ignored(format!("{event_type}: nothing new to scan"))
        }
        "Microsoft.Resources.ResourceWriteSuccess" => {
            let data = data(event)?;
            resource_write(&data, id, subject, checks)
        }
        "Microsoft.EventGrid.SubscriptionValidationEvent" => {
            ignored("the Event Grid subscription handshake (the bridge answers it)".to_string())
        }
        other if other.starts_with("Microsoft.Resources.Resource") => ignored(format!(
            "{other}: only successful resource writes deploy containers"
        )),
        other => Err(InputError::field(
            type_field,
            format!(
                "unsupported Azure event `{other}`; supported: Microsoft.ContainerRegistry.ImagePushed \
                 and Microsoft.Resources.ResourceWriteSuccess for container groups, container apps \
                 and container app jobs"
            ),
        )),
    }
}

/// `data`, as an object or a string holding one.
fn data(
    event: &serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>, InputError> {
    match event.get("data") {
        Some(Value::Object(data)) => Ok(data.clone()),
        Some(Value::String(text)) => match serde_json::from_str(text) {
            Ok(Value::Object(data)) => Ok(data),
            Ok(_) => Err(InputError::field(
                "data",
                "a string that holds JSON, but not an object",
            )),
            Err(e) => Err(InputError::field(
                "data",
                format!("a string that is not JSON: {e}"),
            )),
        },
        Some(other) => Err(InputError::field(
            "data",
            format!("expected an object, found {}", type_name(other)),
        )),
        None => Err(InputError::field("data", "missing")),
    }
}

fn acr_push(
    data: &serde_json::Map<String, Value>,
    id: Option<String>,
    topic: &str,
) -> Result<Classified, InputError> {
    let target = object(data, "target", "data.target")?;
    let request = object(data, "request", "data.request")?;
    let host = string(request, "host").map_err(|e| rename(e, "data.request.host"))?;
    let repository =
        string(target, "repository").map_err(|e| rename(e, "data.target.repository"))?;
    let digest = string(target, "digest").map_err(|e| rename(e, "data.target.digest"))?;
    let tag = target
        .get("tag")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    let reference = match tag {
        Some(tag) => format!("{host}/{repository}:{tag}@{digest}"),
        None => format!("{host}/{repository}@{digest}"),
    };
    let image = ImageRef::parse(&reference)
        .map_err(|e| InputError::field("data.target", format!("`{reference}`: {e}")))?;
    Ok(Classified::Scan(ScanRequest {
        source: EventSource::AcrImagePush,
        event_id: id,
        account_id: None,
        region: None,
        images: vec![image],
        task_definition: None,
        service: None,
        cluster: None,
        azure_resource: Some(topic.to_string()).filter(|t| t.starts_with("/subscriptions/")),
    }))
}

fn resource_write(
    data: &serde_json::Map<String, Value>,
    id: Option<String>,
    subject: &str,
    checks: Checks,
) -> Result<Classified, InputError> {
    let operation = string(data, "operationName").map_err(|e| rename(e, "data.operationName"))?;
    let Some((_, source)) = DEPLOYING_WRITES
        .iter()
        .find(|(op, _)| op.eq_ignore_ascii_case(operation))
    else {
        return ignored(format!("{operation}: deploys no containers"));
    };
    let from_data = data
        .get("resourceUri")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    let (resource, field) = match from_data {
        Some(r) => (r, "data.resourceUri"),
        None => (subject, "subject"),
    };
    if checks == Checks::All {
        check_arm_resource_id(field, resource)?;
    }
    check_resource_id(field, resource, *source)?;
    Ok(Classified::Scan(ScanRequest {
        source: *source,
        event_id: id,
        account_id: None,
        region: None,
        images: Vec::new(),
        task_definition: None,
        service: None,
        cluster: None,
        azure_resource: Some(resource.to_string()),
    }))
}

/// `/subscriptions/<id>/resourceGroups/<rg>/providers/<namespace>/<type>/<name>` of the right type.
fn check_resource_id(field: &str, resource: &str, source: EventSource) -> Result<(), InputError> {
    let segments: Vec<&str> = resource.trim_end_matches('/').split('/').collect();
    let (namespace, kind) = match source {
        EventSource::AciContainerGroupWrite => ("microsoft.containerinstance", "containergroups"),
        EventSource::ContainerAppJobWrite => ("microsoft.app", "jobs"),
        _ => ("microsoft.app", "containerapps"),
    };
    let well_formed = segments.len() == 9
        && segments[0].is_empty()
        && segments[1].eq_ignore_ascii_case("subscriptions")
        && segments[3].eq_ignore_ascii_case("resourcegroups")
        && segments[5].eq_ignore_ascii_case("providers")
        && segments[6].eq_ignore_ascii_case(namespace)
        && segments[7].eq_ignore_ascii_case(kind)
        && segments.iter().skip(1).all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.()".contains(c))
        });
    if well_formed {
        Ok(())
    } else {
        Err(InputError::field(
            field,
            format!(
                "`{resource}` is not a resource ID of the form \
                 /subscriptions/<id>/resourceGroups/<group>/providers/{namespace}/{kind}/<name>"
            ),
        ))
    }
}

fn object<'a>(
    parent: &'a serde_json::Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a serde_json::Map<String, Value>, InputError> {
    match parent.get(key) {
        Some(Value::Object(o)) => Ok(o),
        Some(other) => Err(InputError::field(
            path,
            format!("expected an object, found {}", type_name(other)),
        )),
        None => Err(InputError::field(path, "missing")),
    }
}

fn string<'a>(
    parent: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<&'a str, InputError> {
    match parent.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(InputError::field(key, "empty")),
        Some(other) => Err(InputError::field(
            key,
            format!("expected a string, found {}", type_name(other)),
        )),
        None => Err(InputError::field(key, "missing")),
    }
}

fn rename(mut e: InputError, path: &str) -> InputError {
    e.field = path.to_string();
    e
}
