//! The activity `Inventory` calls: name, input and output. Implemented in
//! `activities/src/inventory/`; registered in `workers/src/worker/queues.rs`.
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

use super::model::{InventoryInput, InventorySummary};

activity_contract! {
    /// Lists what runs in a scope, stores the inventory, and tells each running digest's entity
    /// (`running`, signal-with-start). Heartbeats while it works.
    TakeInventory = "inventory.Take": InventoryInput => InventorySummary;
}
