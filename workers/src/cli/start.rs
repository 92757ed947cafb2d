//! Starting a workflow from a command: start it (or join the run under the same ID), say so,
//! and wait for its output unless told not to. A leaf: it imports no other command.

use serde::Serialize;
use temporalio_client::{
    Client, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions,
};
use temporalio_common::HasWorkflowDefinition;

/// Starts `workflow` as `workflow_id` on `task_queue`, or joins the run under that ID, and says
/// so on stderr; then, unless `no_wait`, waits and prints its output as JSON. `name` (the
/// workflow's) is the subject of the error when the run fails.
pub async fn start_or_join<W>(
    client: &Client,
    workflow: W,
    input: W::Input,
    task_queue: String,
    workflow_id: String,
    no_wait: bool,
    name: &str,
) -> anyhow::Result<()>
where
    W: HasWorkflowDefinition,
    W::Input: Send,
    W::Output: Serialize,
{
    let handle = client
        .start_workflow(
            workflow,
            input,
            WorkflowStartOptions::new(task_queue, workflow_id.clone())
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .build(),
        )
        .await?;
    eprintln!("workflow {workflow_id} started (or already running)");
    if no_wait {
        return Ok(());
    }
    let output = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{name} {workflow_id} failed: {e:?}"))?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
