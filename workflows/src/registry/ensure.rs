//! `EnsureRegistry`: find or create the Qualys registry connector for an AWS account and region,
//! and `EnsureAwsConnector`, the account's one connector step.
//!
//! Exactly once, whatever the caller does:
//!
//! - The registry's workflow ID `registry-<accountId>-<region>` ([`workflow_id`]) is its claim.
//!   A run started under any other ID (the Temporal UI's random default, a script) creates
//!   nothing: it starts or joins the run under the canonical ID with the "use existing" conflict
//!   policy (`registry.EnsureShared`, as scans do) and returns that run's result.
//! - The AWS connector belongs to the account, not to a region: every region's run creates it
//!   through `EnsureAwsConnector` under `registry-connector-<accountId>`
//!   ([`connector_workflow_id`]), joined the same way, so two regions never make two connectors.
//! - Every step is idempotent on its own: a retried or repeated run finds what an earlier one
//!   made, and Qualys answering "already exists" to a create means re-read and succeed.
//!
//! Runs recorded before these rules (no `registry-exactly-once` marker in their history) replay
//! as they ran.
//!
//! [`workflow_id`]: crate::registry::model::workflow_id
//! [`connector_workflow_id`]: crate::registry::model::connector_workflow_id

// `#[workflow_methods]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::failure::{activity_failed, invalid_input};
use crate::input;
use crate::options;
use crate::registry::contracts::{
    CreateRegistry, EnsureConnector, EnsureConnectorShared, EnsureRegistryShared, EnsureScanRole,
    FindRegistry, GetAwsBase, PlanRegistry,
};
use crate::registry::model::{
    ConnectorOutcome, ConnectorRequest, EnsureRegistryInput, EnsureRegistryOutput, QualysAwsBase,
    RegistryPlan, RoleChange, ScanRoleRequest,
};
use std::time::Duration;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

/// The patch that brought joining under the canonical ID and the per-account connector step.
pub const EXACTLY_ONCE_PATCH: &str = "registry-exactly-once";

/// Options of the activities that start or join a canonical run and wait for it: they heartbeat
/// while waiting, so a killed worker's wait is taken over within 30 s (and joins the same run).
fn joining() -> ActivityOptions {
    options::heartbeating(options::retrying(900, 3600), 30)
}

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
        let exactly_once = ctx.patched(EXACTLY_ONCE_PATCH);
        let canonical = input.workflow_id();
        if exactly_once && ctx.workflow_id() != canonical {
            // Not the registry's claim: run it under the canonical ID (or join the run there).
            return ctx
                .execute_activity(EnsureRegistryShared, input, joining())
                .await
                .map_err(|e| activity_failed(&format!("join {canonical}"), e));
        }
        ensure(ctx, input, exactly_once).await
    }
}

/// The registry's claim: plan; a registry Qualys already has ends the run; otherwise the scan
/// role (when asked for), the account's connector and the registry.
async fn ensure(
    ctx: &WorkflowContext<EnsureRegistry>,
    input: EnsureRegistryInput,
    exactly_once: bool,
) -> WorkflowResult<EnsureRegistryOutput> {
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
        ensure_role(ctx, &plan, &qualys, &opts).await?;
    }

    let connector = ConnectorRequest {
        plan: plan.clone(),
        external_id: qualys.external_id,
    };
    ensure_connector(ctx, connector, exactly_once, &opts).await?;

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

/// The IAM role Qualys assumes to scan (`aws.EnsureScanRole`), and, when it changed, the wait
/// for IAM to propagate it.
async fn ensure_role(
    ctx: &WorkflowContext<EnsureRegistry>,
    plan: &RegistryPlan,
    qualys: &QualysAwsBase,
    opts: &ActivityOptions,
) -> WorkflowResult<()> {
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
    Ok(())
}

/// The account's Qualys AWS connector: since [`EXACTLY_ONCE_PATCH`] the account's one
/// connector step, shared with its other regions; before, this run's own.
async fn ensure_connector(
    ctx: &WorkflowContext<EnsureRegistry>,
    connector: ConnectorRequest,
    exactly_once: bool,
    opts: &ActivityOptions,
) -> WorkflowResult<()> {
    if exactly_once {
        ctx.execute_activity(EnsureConnectorShared, connector, joining())
            .await
            .map_err(|e| activity_failed("ensure Qualys AWS connector", e))?;
    } else {
        ctx.execute_activity(EnsureConnector, connector, opts.clone())
            .await
            .map_err(|e| activity_failed("ensure Qualys AWS connector", e))?;
    }
    Ok(())
}

/// The `EnsureAwsConnector` workflow: makes sure Qualys has the AWS connector for an account's
/// role. Input: [`ConnectorRequest`] as JSON; output: [`ConnectorOutcome`].
///
/// `EnsureRegistry` starts it under `registry-connector-<accountId>` with the "use existing"
/// conflict policy, so one run per account creates the connector however many regions ask at
/// once. Started under another ID, it joins the canonical run the same way.
#[workflow]
#[derive(Default)]
pub struct EnsureAwsConnector;

#[workflow_methods]
impl EnsureAwsConnector {
    /// Lists the account's connectors and creates the role's one unless Qualys has it.
    #[run(name = "EnsureAwsConnector")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: serde_json::Value,
    ) -> WorkflowResult<ConnectorOutcome> {
        let request: ConnectorRequest = input::parse(input).map_err(invalid_input)?;
        let role_arn = request.plan.role_arn.clone();
        let canonical = request.workflow_id();
        let created = if ctx.workflow_id() != canonical {
            ctx.execute_activity(EnsureConnectorShared, request, joining())
                .await
                .map_err(|e| activity_failed(&format!("join {canonical}"), e))?
        } else {
            ctx.execute_activity(EnsureConnector, request, options::retrying(120, 3600))
                .await
                .map_err(|e| activity_failed("ensure Qualys AWS connector", e))?
        };
        Ok(ConnectorOutcome { role_arn, created })
    }
}
