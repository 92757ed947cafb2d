//! `BenchNoop`: the baseline of `qflows bench overhead`. It runs `steps` activities that do
//! nothing, one after another, so that ScanOnDeploy's time can be compared with the engine's own
//! cost for the same number of activities on the same server. Only the benchmark's worker
//! registers it.

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::contracts::Noop;
use crate::failure::activity_failed;
use crate::options;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

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
