//! `EnsureRegistry`: find or create the Qualys registry connector for an AWS account and region.
//!
//! Started with workflow ID `registry-<accountId>-<region>` (see [`workflow_id`]) and the
//! "use existing" conflict policy, any number of concurrent callers attach to one run, so Qualys
//! gets exactly one registry. Every step is also idempotent on its own: a retried or repeated run
//! finds what an earlier one made instead of making it twice.
//!
//! [`workflow_id`]: crate::registry::workflow_id

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::contracts::{
    CreateRegistry, EnsureConnector, EnsureScanRole, FindRegistry, GetAwsBase, PlanRegistry,
};
use crate::failure::{activity_failed, invalid_input};
use crate::input;
use crate::options;
use crate::registry::{
    ConnectorRequest, EnsureRegistryInput, EnsureRegistryOutput, RoleChange, ScanRoleRequest,
};
use std::time::Duration;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// The `EnsureRegistry` workflow. Input: [`EnsureRegistryInput`] as JSON; output:
/// [`EnsureRegistryOutput`].
#[workflow]
#[derive(Default)]
pub struct EnsureRegistry;

#[workflow_methods]
impl EnsureRegistry {
    /// Finds the registry, or creates the role (optionally), connector and registry.
    #[run(name = "EnsureRegistry")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: serde_json::Value,
    ) -> WorkflowResult<EnsureRegistryOutput> {
        let input: EnsureRegistryInput = input::parse(input).map_err(invalid_input)?;
        // Qualys and AWS calls: retried while transient, for up to an hour.
        let opts = options::retrying(120, 3600);

        let plan = ctx
            .execute_activity(PlanRegistry, input.clone(), opts.clone())
            .await
            .map_err(|e| activity_failed("plan", e))?;

        let existing = ctx
            .execute_activity(FindRegistry, plan.registry_uri.clone(), opts.clone())
            .await
            .map_err(|e| activity_failed("find registry", e))?;
        if let Some(registry) = existing {
            return Ok(EnsureRegistryOutput {
                registry_uuid: registry.registry_uuid,
                registry_name: registry.registry_name,
                role_arn: plan.role_arn,
                created: false,
            });
        }

        let qualys = ctx
            .execute_activity(GetAwsBase, (), opts.clone())
            .await
            .map_err(|e| activity_failed("get Qualys AWS base", e))?;

        if input.create_role {
            let request = ScanRoleRequest {
                role_arn: plan.role_arn.clone(),
                qualys: qualys.clone(),
            };
            let change = ctx
                .execute_activity(EnsureScanRole, request, opts.clone())
                .await
                .map_err(|e| activity_failed("ensure IAM role", e))?;
            if change != RoleChange::Unchanged {
                // IAM is eventually consistent: Qualys' first AssumeRole may fail if it comes too soon.
                ctx.timer(Duration::from_secs(plan.iam_propagation_wait_secs))
                    .await;
            }
        }

        let connector = ConnectorRequest {
            plan: plan.clone(),
            external_id: qualys.external_id,
        };
        ctx.execute_activity(EnsureConnector, connector, opts.clone())
            .await
            .map_err(|e| activity_failed("ensure Qualys AWS connector", e))?;

        let registry = ctx
            .execute_activity(CreateRegistry, plan.clone(), opts)
            .await
            .map_err(|e| activity_failed("create registry", e))?;
        Ok(EnsureRegistryOutput {
            registry_uuid: registry.registry_uuid,
            registry_name: registry.registry_name,
            role_arn: plan.role_arn,
            created: true,
        })
    }
}
