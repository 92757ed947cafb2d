//! What an `ImageScan` entity is started with ([`ImageScanInput`], which also carries the whole
//! [`Entity`] state across continue-as-new), and the requests that hand it on: to start or signal
//! the entity, and to the activities that scan the digest.
//!
//! Kept apart from [`crate::scan::model`]: the entity's state is made of those types, and this
//! input is made of the state, so the dependencies point one way (model ← entity ← input).

use crate::scan::ImageRef;
use crate::scan::image_scan::entity::Entity;
use crate::scan::model::DeployedAt;
use serde::{Deserialize, Serialize};

/// Input of the per-digest `ImageScan` workflow (ID `scan-<digest>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageScanInput {
    /// The digest this entity owns.
    pub digest: String,
    /// The image as first deployed (registry, repository, tag).
    pub image: ImageRef,
    /// When the deploy event that started this entity reached Temporal: its `ScanOnDeploy`'s
    /// start, in milliseconds since the Unix epoch. The first scan reports its
    /// event→submitted latency from it; rescans and older histories have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_accepted_at_ms: Option<u64>,
    /// What the previous run knew, when this run continues it (set by the workflow itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carried: Option<Box<Entity>>,
    /// Started by an inventory, not a deployment: the first scan runs on the rescan queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backfill: bool,
}

/// Request to start (or signal) the `ImageScan` entity for a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartImageScan {
    /// The entity's input (used only when it is not running yet).
    pub input: ImageScanInput,
    /// The deployment to attach.
    pub deployed: DeployedAt,
}

/// Scan an image with QScanner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QScannerScan {
    /// The image and digest.
    pub input: ImageScanInput,
    /// When the scan was asked for (RFC 3339, workflow time): names the stored report.
    pub scanned_at: String,
}

/// Collect a finished scan's results: vulnerabilities, stored report, gate verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectResults {
    /// Qualys image id.
    pub sha: String,
    /// The image and digest.
    pub input: ImageScanInput,
    /// When the scan finished (RFC 3339, workflow time): names the stored report, so a retried
    /// collection overwrites rather than duplicates it.
    pub scanned_at: String,
    /// When the image was built (Qualys' `created`, epoch ms), when known: stored in the
    /// report as `imageCreatedMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ms: Option<u64>,
}

impl Entity {
    /// The state of a new entity, or the one the previous run carried.
    ///
    /// (Here, beside the input it reads, rather than in `entity`: the input
    /// carries the state, so the state's module does not depend on the input's.)
    pub fn resume(input: &ImageScanInput, now_secs: u64) -> Self {
        let mut entity = match &input.carried {
            Some(carried) => (**carried).clone(),
            None => {
                let mut entity = Entity {
                    last_deployed_secs: now_secs,
                    event_accepted_at_ms: input.event_accepted_at_ms,
                    backfill: input.backfill,
                    ..Entity::default()
                };
                entity.remember(&input.image);
                entity
            }
        };
        entity.runs += 1;
        entity
    }
}
