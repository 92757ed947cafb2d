//! Listing what runs in a scope: ECS tasks, Kubernetes pods, Azure container groups and apps.
//!
//! (Being built on branch `inventory-list`: until it lands every scope answers
//! [`ListError::Unsupported`], and `Inventory` fails rather than report an empty scope.)

use qflows_workflows::inventory::InventoryScope;
use qflows_workflows::inventory::model::RunningContainer;

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// This worker cannot list that kind of scope.
    #[error("this worker cannot list {0} scopes")]
    Unsupported(&'static str),
}

/// Lists running containers with the worker's credentials.
#[derive(Debug, Clone, Default)]
pub struct Lister {}

impl Lister {
    /// Every container running in `scope`. `progress` is called with the number of containers
    /// listed so far, after each page (the activity heartbeats with it).
    pub async fn list(
        &self,
        scope: &InventoryScope,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Vec<RunningContainer>, ListError> {
        let _ = progress;
        Err(ListError::Unsupported(match scope {
            InventoryScope::Aws { .. } => "aws",
            InventoryScope::Kubernetes { .. } => "kubernetes",
            InventoryScope::Azure { .. } => "azure",
        }))
    }
}

impl crate::failure::IntoFailure for ListError {
    fn into_failure(self) -> temporalio_sdk::activities::ActivityError {
        crate::failure::failure(self, "InventoryUnsupported", false, None)
    }
}
