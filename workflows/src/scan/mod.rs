//! Deciding what to scan: the pure parsing half of `ScanOnDeploy`.
//!
//! - [`image_ref`] parses and normalises container image references (the
//!   `distribution/reference` grammar) and recognises ECR, ECR Public, ACR and Docker Hub hosts.
//! - [`classify`] (here) reads one deploy event and hands it to the reader of its cloud; each
//!   reader says which images, task definition, service or resource the deployment asks to scan,
//!   as a [`ScanRequest`] (`request`: the types every reader shares).
//! - `aws` reads the raw EventBridge event a user routes to the workflow (ECR pushes, ECS
//!   deployments via CloudTrail, ECS task state changes) or the manual `{"images": […]}` form.
//! - `azure` does the same for Azure: ACR pushes and container group, container app and job
//!   writes, in the Event Grid or CloudEvents schema.
//!
//! Adding a cloud means a new reader module and one more arm in [`classify_with`].
//!
//! Everything here is deterministic (no I/O, clocks or randomness; outputs keep event order), so
//! it can run inside workflow code.

pub(crate) mod alert;
pub(crate) mod aws;
pub(crate) mod azure;
pub mod contracts;
pub mod image_ref;
pub mod image_scan;
pub mod model;
pub mod on_deploy;
pub mod profile;
pub(crate) mod request;
pub mod search;

use crate::input::InputError;
use request::type_name;
use serde_json::Value;

pub use azure::{IMAGE_MEDIA_TYPES, check_arm_resource_id};
pub use image_ref::{ImageRef, ImageRefError, RegistryKind};
pub use request::{Classified, EcsServiceRef, EventSource, Rules, ScanRequest};

const SHAPES: &str = "an EventBridge event (an object with `source`, `detail-type` and a `detail` \
                      object) or {\"images\": [\"<image>\", …], \"account\"?: \"<12 digits>\", \
                      \"region\"?: \"<region>\"}";

/// Reads a deploy event and says what it asks to scan.
///
/// Accepts an EventBridge event (see the `aws` table; Azure events: `azure`) or the manual form
/// `{"images": ["<ref>", …], "account"?: "<12 digits>", "region"?: "<region>"}`. Unknown or
/// malformed events are an [`InputError`] naming the offending JSON path.
pub fn classify(event: &Value) -> Result<Classified, InputError> {
    classify_with(event, Rules::default())
}

/// [`classify`] as it was before Azure resource IDs were checked for path tricks
/// (`ScanOnDeploy` patch `azure-resource-id-checks`): only for replaying runs started before,
/// whose resolve activity refuses such IDs anyway before they reach a URL.
pub fn classify_before_resource_id_checks(event: &Value) -> Result<Classified, InputError> {
    let rules = Rules {
        skip_azure_resource_id_checks: true,
        ..Rules::default()
    };
    classify_with(event, rules)
}

/// [`classify`] under older [`Rules`].
pub fn classify_with(event: &Value, rules: Rules) -> Result<Classified, InputError> {
    let checks = if rules.skip_azure_resource_id_checks {
        azure::Checks::BeforeResourceIdChecks
    } else {
        azure::Checks::All
    };
    let Value::Object(obj) = event else {
        let hint = if event.is_array() {
            " (an Event Grid delivery is an array: give its events one at a time, as `qflows bridge` does)"
        } else {
            ""
        };
        return Err(InputError::field(
            ".",
            format!("expected {SHAPES}, found {}{hint}", type_name(event)),
        ));
    };
    if azure::is_azure(obj) {
        azure::classify(obj, checks, rules.scan_acr_artifacts)
    } else if ["detail-type", "source", "detail"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        aws::eventbridge(event, rules)
    } else if obj.contains_key("images") {
        aws::manual(event)
    } else {
        Err(InputError::field(
            ".",
            format!("unrecognised event: expected {SHAPES}"),
        ))
    }
}

/// Whether `event` is an ACR push that [`classify`] ignores as not an image (a Helm chart, a
/// cosign signature): what `ScanOnDeploy`'s `acr-artifacts-ignored` patch changed.
pub fn is_acr_artifact_push(event: &serde_json::Value) -> bool {
    let old = Rules {
        scan_acr_artifacts: true,
        ..Rules::default()
    };
    matches!(classify(event), Ok(Classified::Ignored { .. }))
        && matches!(classify_with(event, old), Ok(Classified::Scan(_)))
}
