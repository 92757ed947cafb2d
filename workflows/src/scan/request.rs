//! What a deploy event asks to scan: the types every cloud's reader ([`super::aws`],
//! [`super::azure`]) produces and [`super::classify`] returns, and the helpers they share.
//!
//! A leaf: the readers and the dispatcher depend on it, it on none of them.

use super::image_ref::ImageRef;
use crate::input::InputError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The outcome of [`classify`](super::classify).
///
/// Serialised as `{"scan": {…}}` or `{"ignored": {"reason": "…"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Classified {
    /// The event is a deployment or push: scan what it names.
    Scan(ScanRequest),
    /// A well-formed event that asks for no scan.
    Ignored {
        /// Why, for the workflow's result and logs.
        reason: String,
    },
}

/// Which kind of event a [`ScanRequest`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventSource {
    /// Native EventBridge `ECR Image Action` (PUSH).
    EcrImagePush,
    /// CloudTrail `PutImage` on `ecr.amazonaws.com`.
    EcrPutImage,
    /// Native EventBridge `ECR Replication Action` (in the destination registry).
    EcrReplication,
    /// CloudTrail ECS `RegisterTaskDefinition`.
    EcsRegisterTaskDefinition,
    /// CloudTrail ECS `RunTask`.
    EcsRunTask,
    /// CloudTrail ECS `StartTask`.
    EcsStartTask,
    /// CloudTrail ECS `CreateService`.
    EcsCreateService,
    /// CloudTrail ECS `UpdateService`.
    EcsUpdateService,
    /// CloudTrail ECS `CreateTaskSet`.
    EcsCreateTaskSet,
    /// Native EventBridge `ECS Task State Change`.
    EcsTaskStateChange,
    /// The manual form `{"images": […], "account"?: …, "region"?: …}`.
    Manual,
    /// Azure Container Registry `ImagePushed` (Event Grid or CloudEvents).
    AcrImagePush,
    /// Azure `ResourceWriteSuccess` for a container group (ACI).
    AciContainerGroupWrite,
    /// Azure `ResourceWriteSuccess` for a container app.
    ContainerAppWrite,
    /// Azure `ResourceWriteSuccess` for a container app job.
    ContainerAppJobWrite,
}

/// What a deploy event asks to scan.
///
/// `images` are the images the event names directly. When it names none, resolve
/// `task_definition` (`ecs:DescribeTaskDefinition`), or failing that `service`
/// (`ecs:DescribeServices`, then its task definition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanRequest {
    /// The kind of event.
    pub source: EventSource,
    /// The EventBridge event `id` (or the CloudTrail `eventID` when the envelope has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The account owning the resources: CloudTrail's `recipientAccountId`, else the envelope's
    /// `account`; the manual form's `account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The region of the resources: CloudTrail's `awsRegion`, else the envelope's `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Images named by the event, in event order, without duplicates (by
    /// [`ImageRef::canonical`], first appearance kept).
    #[serde(default)]
    pub images: Vec<ImageRef>,
    /// The task definition the deployment uses: a full ARN when the event has one (or has
    /// `family:revision` plus account and region), else a bare family as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// The ECS service to resolve, set only when the event names neither images nor a task
    /// definition (an `UpdateService` that only scaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<EcsServiceRef>,
    /// The ECS cluster (name or ARN, as the event gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The Azure resource whose images to read through Resource Manager (a container group,
    /// container app or job), or for an ACR push the registry's resource ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_resource: Option<String>,
}

/// An ECS service to look up with `DescribeServices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsServiceRef {
    /// The cluster (name or ARN); `None` is the account's default cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The service name or ARN.
    pub service: String,
}

/// Rules of [`classify_with`](super::classify_with) that changed over time: a workflow run replays with the rules it
/// started under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Scan `ECS Task State Change` events before the task is `RUNNING` too (PROVISIONING,
    /// PENDING, ACTIVATING), as qflows did at first. Off: each task is scanned once, at RUNNING.
    pub scan_tasks_before_running: bool,
    /// Accept Azure resource IDs with `.`/`..` segments and other path tricks, as qflows did
    /// at first (see [`classify_before_resource_id_checks`](super::classify_before_resource_id_checks)).
    pub skip_azure_resource_id_checks: bool,
    /// Scan ACR pushes of Helm charts, cosign signatures and other non-image artifacts, as
    /// qflows did at first (they fail: there is no image to scan).
    pub scan_acr_artifacts: bool,
}

/// A well-formed event that asks for no scan, and why.
pub(super) fn ignored(reason: impl Into<String>) -> Result<Classified, InputError> {
    Ok(Classified::Ignored {
        reason: reason.into(),
    })
}

/// How an error message names a JSON value's type ("an object", "a string", …).
pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
