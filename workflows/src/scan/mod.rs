//! Deciding what to scan: the pure parsing half of `ScanOnDeploy`.
//!
//! - [`image_ref`] parses and normalises container image references (the
//!   `distribution/reference` grammar) and recognises ECR, ECR Public, ACR and Docker Hub hosts.
//! - [`events`] reads the raw EventBridge event a user routes to the workflow (ECR pushes, ECS
//!   deployments via CloudTrail, ECS task state changes) or the manual `{"images": […]}` form, and
//!   says which images, task definition or service the deployment asks to scan.
//! - [`azure`] does the same for Azure: ACR pushes and container group, container app and job
//!   writes, in the Event Grid or CloudEvents schema.
//!
//! Everything here is deterministic (no I/O, clocks or randomness; outputs keep event order), so
//! it can run inside workflow code.

pub mod azure;
pub mod events;
pub mod image_ref;
pub mod model;
pub mod profile;
pub mod search;

pub use azure::{IMAGE_MEDIA_TYPES, check_arm_resource_id};

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
pub use events::{
    Classified, EcsServiceRef, EventSource, Rules, ScanRequest, classify,
    classify_before_resource_id_checks, classify_with,
};
pub use image_ref::{ImageRef, ImageRefError, RegistryKind};
