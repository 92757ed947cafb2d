//! The fault-injection hook the sensor appliers (ECS and Kubernetes) call between writes, so
//! the tests can kill a worker mid-apply.

use tracing::warn;

/// Exits the process right after `step` when `QFLOWS_FAULT_EXIT_AFTER` names it: a
/// fault-injection hook for the tests that kill a worker mid-apply (never set in production).
pub(super) fn fault_point(step: &str) {
    if std::env::var("QFLOWS_FAULT_EXIT_AFTER").is_ok_and(|v| v == step) {
        warn!(%step, "QFLOWS_FAULT_EXIT_AFTER: exiting as asked");
        std::process::exit(70);
    }
}
