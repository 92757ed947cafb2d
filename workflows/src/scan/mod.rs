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
pub mod search;

pub use azure::check_arm_resource_id;
pub use events::{
    Classified, EcsServiceRef, EventSource, Rules, ScanRequest, classify,
    classify_before_resource_id_checks, classify_with,
};
pub use image_ref::{ImageRef, ImageRefError, RegistryKind};
