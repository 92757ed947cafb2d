//! The activities `Quarantine` calls: name, input and output of each. Implemented in
//! `activities/src/quarantine/`; registered in `workers/src/worker/queues.rs`.
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

use super::model::{QuarantineApplied, QuarantineChange, QuarantineInput, QuarantinePlan};

activity_contract! {
    /// Reads what a quarantine would change: the ECS service's current and previous task
    /// definitions, or the container app revision and the app's other active revisions; says
    /// why approval could not help, if it could not.
    InspectQuarantine = "quarantine.Inspect": QuarantineInput => QuarantinePlan;

    /// Rolls the ECS service back to the planned previous task definition (only if it still
    /// runs the planned current one), or deactivates the container app revision. Idempotent.
    QuarantineApply = "quarantine.Apply": QuarantineChange => QuarantineApplied;

    /// Checks the change took (the service and its PRIMARY deployment run the previous task
    /// definition; the revision is inactive); a retryable failure until it does.
    QuarantineVerify = "quarantine.Verify": QuarantineChange => String;
}
