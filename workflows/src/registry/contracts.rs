//! The activities `EnsureRegistry` and `EnsureAwsConnector` call (and `registry.EnsureShared`,
//! which `ImageScan` calls to start or join the canonical `EnsureRegistry`): name, input and
//! output of each. Implemented in `activities/src/registry/`; registered in
//! `workers/src/worker/queues.rs`.
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

use super::model::{
    ConnectorRequest, EnsureRegistryInput, EnsureRegistryOutput, QualysAwsBase, RegistryPlan,
    RegistryRef, RoleChange, ScanRoleRequest,
};

activity_contract! {
    /// Applies the worker's defaults (scan role name, IAM propagation wait) to an input.
    PlanRegistry = "registry.Plan": EnsureRegistryInput => RegistryPlan;

    /// Looks the registry up in Qualys by its URI; `None` when Qualys has none.
    FindRegistry = "qualys.FindRegistry": String => Option<RegistryRef>;

    /// Reads Qualys' AWS account and external ID (`GET /registry/aws-base`).
    GetAwsBase = "qualys.GetAwsBase": () => QualysAwsBase;

    /// Creates or updates the IAM role Qualys assumes (trust policy with `sts:ExternalId`).
    EnsureScanRole = "aws.EnsureScanRole": ScanRoleRequest => RoleChange;

    /// Makes sure Qualys has an AWS connector for the role; true when it created one.
    EnsureConnector = "qualys.EnsureConnector": ConnectorRequest => bool;

    /// Creates the ECR registry in Qualys unless it already exists (idempotent).
    CreateRegistry = "qualys.CreateRegistry": RegistryPlan => RegistryRef;

    /// Runs (or joins) the account's `EnsureAwsConnector` (workflow ID
    /// `registry-connector-<account>`) and waits for it; true when a connector was created.
    EnsureConnectorShared = "registry.EnsureConnectorShared": ConnectorRequest => bool;

    /// Runs (or joins) `EnsureRegistry` for an account and region under its canonical workflow ID
    /// (`registry-<account>-<region>`) and returns its result.
    EnsureRegistryShared = "registry.EnsureShared": EnsureRegistryInput => EnsureRegistryOutput;
}
