//! Cache, slots and pollers: what `QFLOWS_MAX_CACHED_WORKFLOWS`, `QFLOWS_WORKFLOW_TASK_SLOTS`,
//! `QFLOWS_ACTIVITY_SLOTS` and `QFLOWS_POLLERS` set on every task queue's worker.

use crate::config::{Pollers, WorkerTuning};
use temporalio_sdk::WorkerOptions;

/// `options` with the configured cache, slots and pollers (also what `qflows-bench`'s baseline
/// worker applies to its own queue, so the baseline runs as tuned as the product).
pub fn tuned(mut options: WorkerOptions, tuning: &WorkerTuning) -> WorkerOptions {
    use temporalio_sdk::runtime::{AutoscalingOptions, PollerBehavior};
    options.max_cached_workflows = tuning.max_cached_workflows;
    options.tuner = slots(tuning, tuning.activity_slots).into();
    if let Some(pollers) = tuning.pollers {
        let behavior = match pollers {
            Pollers::Fixed(n) => PollerBehavior::SimpleMaximum(n),
            Pollers::Auto { minimum, maximum } => PollerBehavior::Autoscaling(
                AutoscalingOptions::builder()
                    .minimum(minimum)
                    .maximum(maximum)
                    .initial(5.clamp(minimum, maximum))
                    .build(),
            ),
        };
        options.workflow_task_poller_behavior = Some(behavior);
        options.activity_task_poller_behavior = Some(behavior);
    }
    options
}

/// A tuner with the configured workflow-task slots and `activities` activity (and local
/// activity) slots.
pub(super) fn slots(
    tuning: &WorkerTuning,
    activities: usize,
) -> temporalio_sdk::runtime::worker_tuner::TunerHolder {
    use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
    TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(tuning.workflow_task_slots))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(activities.max(1)))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(tuning.activity_slots))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(10))
        .build()
}
