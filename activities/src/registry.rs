//! The activities behind `EnsureRegistry`: Qualys registry and connector calls, and the IAM role.
//!
//! Each one is idempotent, because Temporal may run an activity again after a crash or a lost
//! response: creating re-reads first, so a retried create finds what the first attempt made.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::aws::{Aws, ensure_scan_role};
use crate::failure::IntoFailure;
use crate::qualys::{CreateAwsConnector, CreateEcrRegistry, QualysClient, Registry};
use backon::{ExponentialBuilder, Retryable};
use qflows_workflows::contracts;
use qflows_workflows::registry::{
    ConnectorRequest, EnsureRegistryInput, QualysAwsBase, RegistryDefaults, RegistryPlan,
    RegistryRef, RoleChange, ScanRoleRequest,
};
use std::sync::Arc;
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::info;

/// State shared by the registry activities.
pub struct RegistryActivities {
    qualys: QualysClient,
    aws: Arc<Aws>,
    defaults: RegistryDefaults,
}

impl RegistryActivities {
    /// Activities that use this Qualys client, AWS configuration and worker defaults.
    pub fn new(qualys: QualysClient, aws: Arc<Aws>, defaults: RegistryDefaults) -> Self {
        Self {
            qualys,
            aws,
            defaults,
        }
    }
}

fn registry_ref(registry: Registry, fallback_name: &str) -> RegistryRef {
    RegistryRef {
        registry_name: registry
            .registry_name
            .unwrap_or_else(|| fallback_name.to_string()),
        registry_uuid: registry.registry_uuid,
    }
}

#[activities]
impl RegistryActivities {
    /// Applies the worker's defaults to the workflow input.
    #[activity(definition = contracts::PlanRegistry)]
    pub async fn plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: EnsureRegistryInput,
    ) -> Result<RegistryPlan, ActivityError> {
        Ok(RegistryPlan::new(&input, &self.defaults))
    }

    /// Finds the registry by URI.
    #[activity(definition = contracts::FindRegistry)]
    pub async fn find_registry(
        self: Arc<Self>,
        _ctx: ActivityContext,
        registry_uri: String,
    ) -> Result<Option<RegistryRef>, ActivityError> {
        let found = self
            .qualys
            .find_registry_by_uri(&registry_uri)
            .await
            .map_err(IntoFailure::into_failure)?;
        Ok(found.map(|r| registry_ref(r, "")))
    }

    /// Reads Qualys' AWS account and external ID.
    #[activity(definition = contracts::GetAwsBase)]
    pub async fn get_aws_base(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<QualysAwsBase, ActivityError> {
        let base = self
            .qualys
            .aws_base()
            .await
            .map_err(IntoFailure::into_failure)?;
        Ok(QualysAwsBase {
            account_id: base.account_id,
            external_id: base.external_id,
        })
    }

    /// Creates or updates the IAM role Qualys assumes.
    #[activity(definition = contracts::EnsureScanRole)]
    pub async fn ensure_scan_role(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ScanRoleRequest,
    ) -> Result<RoleChange, ActivityError> {
        let region = match request.role_arn.split(':').nth(1) {
            Some("aws-cn") => "cn-north-1",
            Some("aws-us-gov") => "us-gov-west-1",
            _ => "us-east-1",
        };
        let iam = self.aws.iam(region).await;
        let change = ensure_scan_role(&iam, &request.role_arn, &request.qualys)
            .await
            .map_err(IntoFailure::into_failure)?;
        info!(role_arn = %request.role_arn, ?change, "IAM role for Qualys ensured");
        Ok(change)
    }

    /// Creates the Qualys AWS connector for the role unless one exists.
    #[activity(definition = contracts::EnsureConnector)]
    pub async fn ensure_connector(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ConnectorRequest,
    ) -> Result<bool, ActivityError> {
        let plan = &request.plan;
        let connectors = self
            .qualys
            .list_aws_connectors(Some(&plan.account_id))
            .await
            .map_err(IntoFailure::into_failure)?;
        if connectors.iter().any(|c| c.arn == plan.role_arn) {
            return Ok(false);
        }
        let create = CreateAwsConnector {
            arn: plan.role_arn.clone(),
            description: format!(
                "ECR scanning for account {} (managed by qflows)",
                plan.account_id
            ),
            external_id: request.external_id,
            name: plan.connector_name.clone(),
            account_type: plan.account_type.clone(),
        };
        self.qualys
            .create_aws_connector(&create)
            .await
            .map_err(IntoFailure::into_failure)?;
        info!(connector = %plan.connector_name, "Qualys AWS connector created");
        Ok(true)
    }

    /// Creates the ECR registry in Qualys, unless it already exists.
    #[activity(definition = contracts::CreateRegistry)]
    pub async fn create_registry(
        self: Arc<Self>,
        _ctx: ActivityContext,
        plan: RegistryPlan,
    ) -> Result<RegistryRef, ActivityError> {
        let find = || async {
            self.qualys
                .find_registry_by_uri(&plan.registry_uri)
                .await
                .map_err(IntoFailure::into_failure)
        };
        // An earlier attempt may have created it before its response was lost.
        if let Some(existing) = find().await? {
            return Ok(registry_ref(existing, &plan.registry_name));
        }
        let request = CreateEcrRegistry {
            account_id: plan.account_id.clone(),
            arn: plan.role_arn.clone(),
            region: plan.region.clone(),
            account_type: plan.account_type.clone(),
            registry_uri: plan.registry_uri.clone(),
            registry_name: plan.registry_name.clone(),
        };
        let uuid = self
            .qualys
            .create_ecr_registry(&request)
            .await
            .map_err(IntoFailure::into_failure)?;
        info!(registry = %plan.registry_name, "Qualys registry created");
        if let Some(registry_uuid) = uuid {
            return Ok(RegistryRef {
                registry_uuid,
                registry_name: plan.registry_name.clone(),
            });
        }
        // The create response carried no UUID (Qualys documents a plain string, often empty):
        // look it up, giving Qualys a moment to list it. Failing here would make the retry create
        // a second registry, so wait in-process (bounded) rather than fail fast.
        let lookup = || async {
            match find().await? {
                Some(created) => Ok(created),
                None => Err(ActivityError::application(ApplicationFailure::new(
                    format!(
                        "registry {} was created but Qualys does not list it yet",
                        plan.registry_uri
                    ),
                ))),
            }
        };
        let created = lookup
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(12),
            )
            .await?;
        Ok(registry_ref(created, &plan.registry_name))
    }
}
