//! The activities workflows call: name, input and output of each, implemented in `qflows-activities`.
//!
//! Workflows depend on these markers instead of on the activity implementations, so this crate
//! stays free of I/O dependencies. The implementing side declares
//! `#[activity(definition = qflows_workflows::contracts::FindRegistry)]`, and the compiler checks
//! that its input and output types match the ones here.
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

pub use crate::cdr::contracts::*;
pub use crate::inventory::contracts::*;
pub use crate::quarantine::contracts::*;
pub use crate::registry::contracts::*;
pub use crate::scan::contracts::*;
pub use crate::sensor::contracts::*;
