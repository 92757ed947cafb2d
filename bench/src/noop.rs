//! `BenchNoop`: the baseline of `qflows-bench overhead`, `burst` and `chaos`. It runs `steps`
//! activities that do nothing, one after another, so that ScanOnDeploy's time can be compared
//! with the engine's own cost for the same number of activities on the same server. Only the
//! benchmarks' worker ([`qflows::worker`]) registers it, on its own task queue
//! ([`baseline_queue`]); the product `qflows worker` does not know it.

// `#[workflow_methods]` and `#[activities]` generate undocumented marker constants; everything
// written here is documented.
#![allow(missing_docs)]

use qflows_workflows::failure::activity_failed;
use qflows_workflows::options;
use std::sync::Arc;
use temporalio_common::ActivityDefinition;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// The task queue the benchmarks' worker serves `BenchNoop` on, beside `task_queue` (a queue
/// of its own: the product worker on `task_queue` would fail a workflow type it does not know).
pub fn baseline_queue(task_queue: &str) -> String {
    format!("{task_queue}-baseline")
}

/// Does nothing: the unit of `BenchNoop`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

impl ActivityDefinition for Noop {
    type Input = ();
    type Output = ();
    fn name(&self) -> &str {
        "bench.Noop"
    }
}

/// The `BenchNoop` workflow. Input: the number of activities; output: the number run.
#[workflow]
#[derive(Default)]
pub struct BenchNoop;

#[workflow_methods]
impl BenchNoop {
    /// Runs `steps` no-op activities in sequence.
    #[run(name = "BenchNoop")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, steps: u32) -> WorkflowResult<u32> {
        for _ in 0..steps {
            ctx.execute_activity(Noop, (), options::retrying(30, 300))
                .await
                .map_err(|e| activity_failed("no-op", e))?;
        }
        Ok(steps)
    }
}

/// Activities that do nothing, so the engine's own cost per activity can be measured.
pub struct BenchActivities;

#[activities]
impl BenchActivities {
    /// Returns at once.
    #[activity(definition = Noop)]
    pub async fn noop(self: Arc<Self>, _ctx: ActivityContext) -> Result<(), ActivityError> {
        Ok(())
    }
}
