//! The activities workflows call: name, input and output of each, implemented in `qflows-activities`.
//!
//! Workflows depend on these markers instead of on the activity implementations, so this crate
//! stays free of I/O dependencies. The implementing side declares
//! `#[activity(definition = qflows_workflows::contracts::FindRegistry)]`, and the compiler checks
//! that its input and output types match the ones here.
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

use crate::registry::{
    ConnectorRequest, EnsureRegistryInput, QualysAwsBase, RegistryPlan, RegistryRef, RoleChange,
    ScanRoleRequest,
};
use temporalio_common::ActivityDefinition;

macro_rules! activity_contract {
    ($(#[$doc:meta])* $marker:ident = $name:literal: $input:ty => $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $marker;

        impl ActivityDefinition for $marker {
            type Input = $input;
            type Output = $output;
            fn name(&self) -> &str {
                $name
            }
        }
    };
}

activity_contract!(
    /// Applies the worker's defaults (scan role name, IAM propagation wait) to an input.
    PlanRegistry = "registry.Plan": EnsureRegistryInput => RegistryPlan
);
activity_contract!(
    /// Looks the registry up in Qualys by its URI; `None` when Qualys has none.
    FindRegistry = "qualys.FindRegistry": String => Option<RegistryRef>
);
activity_contract!(
    /// Reads Qualys' AWS account and external ID (`GET /registry/aws-base`).
    GetAwsBase = "qualys.GetAwsBase": () => QualysAwsBase
);
activity_contract!(
    /// Creates or updates the IAM role Qualys assumes (trust policy with `sts:ExternalId`).
    EnsureScanRole = "aws.EnsureScanRole": ScanRoleRequest => RoleChange
);
activity_contract!(
    /// Makes sure Qualys has an AWS connector for the role; true when it created one.
    EnsureConnector = "qualys.EnsureConnector": ConnectorRequest => bool
);
activity_contract!(
    /// Creates the ECR registry in Qualys unless it already exists (idempotent).
    CreateRegistry = "qualys.CreateRegistry": RegistryPlan => RegistryRef
);
