//! The data `EnsureRegistry` exchanges, and the pure rules that name things.
//!
//! Names follow the Fargate scanner's conventions (`docs/qualys-api.md` §6.2): the Qualys registry
//! for an AWS account and region is `ecr-<account>-<region>`, its URI is the ECR registry host.

use crate::input::{InputError, Validate};
use serde::{Deserialize, Serialize};

/// Role name assumed by Qualys when the worker configures none (`QFLOWS_SCAN_ROLE_NAME`).
pub const DEFAULT_SCAN_ROLE_NAME: &str = "qualys-registry-scan-role";

/// Input of the `EnsureRegistry` workflow (camelCase JSON, unknown keys rejected).
///
/// ```json
/// {"accountId": "123456789012", "region": "us-east-1", "roleArn": null, "createRole": false}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnsureRegistryInput {
    /// The AWS account (12 digits) whose ECR registry Qualys should scan.
    pub account_id: String,
    /// The AWS region of the ECR registry, e.g. `us-east-1`.
    pub region: String,
    /// The IAM role Qualys assumes to read ECR. Defaults to the worker's configured role name
    /// (`qualys-registry-scan-role` unless `QFLOWS_SCAN_ROLE_NAME` says otherwise) in `accountId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Create or update that role (trust policy to the Qualys account with `sts:ExternalId`).
    #[serde(default)]
    pub create_role: bool,
}

impl EnsureRegistryInput {
    /// The workflow ID every caller should use, so that concurrent callers share one run.
    pub fn workflow_id(&self) -> String {
        workflow_id(&self.account_id, &self.region)
    }
}

/// `registry-<accountId>-<region>`: the one workflow ID per registry.
pub fn workflow_id(account_id: &str, region: &str) -> String {
    format!("registry-{account_id}-{region}")
}

/// `registry-connector-<accountId>`: the one workflow ID per AWS account that may create its
/// Qualys AWS connector (`EnsureAwsConnector`). Every region's `EnsureRegistry` of the account
/// goes through it, so two regions never create two connectors.
pub fn connector_workflow_id(account_id: &str) -> String {
    format!("registry-connector-{account_id}")
}

impl Validate for EnsureRegistryInput {
    fn validate(&self) -> Result<(), InputError> {
        validate_account_id("accountId", &self.account_id)?;
        validate_region("region", &self.region)?;
        if let Some(arn) = &self.role_arn {
            let Some(role) = parse_role_arn(arn) else {
                return Err(InputError::field(
                    "roleArn",
                    format!(
                        "`{arn}` is not an IAM role ARN (arn:<partition>:iam::<12 digits>:role/<name>)"
                    ),
                ));
            };
            if role.partition != partition(&self.region) {
                return Err(InputError::field(
                    "roleArn",
                    format!(
                        "partition `{}` does not match region `{}` (expected `{}`)",
                        role.partition,
                        self.region,
                        partition(&self.region)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks a 12-digit AWS account ID.
pub fn validate_account_id(field: &str, value: &str) -> Result<(), InputError> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(InputError::field(
            field,
            format!("`{value}` is not a 12-digit AWS account ID"),
        ))
    }
}

/// Checks an AWS region name such as `us-east-1`, `us-gov-west-1` or `cn-north-1`.
pub fn validate_region(field: &str, value: &str) -> Result<(), InputError> {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = parts.len() >= 3
        && parts.len() <= 4
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(InputError::field(
            field,
            format!("`{value}` is not an AWS region name (like us-east-1)"),
        ))
    }
}

/// The AWS partition of a region: `aws`, `aws-cn` or `aws-us-gov`.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Qualys' `accountType` for a region: `US_Gov` for GovCloud, else `Global`.
pub fn qualys_account_type(region: &str) -> &'static str {
    if partition(region) == "aws-us-gov" {
        "US_Gov"
    } else {
        "Global"
    }
}

/// The ECR registry host of an account and region, e.g. `123456789012.dkr.ecr.us-east-1.amazonaws.com`.
pub fn ecr_host(account_id: &str, region: &str) -> String {
    let suffix = if partition(region) == "aws-cn" {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("{account_id}.dkr.ecr.{region}.{suffix}")
}

/// The parts of an IAM role ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn<'a> {
    /// `aws`, `aws-cn`, `aws-us-gov`.
    pub partition: &'a str,
    /// The 12-digit account.
    pub account_id: &'a str,
    /// The role name, with its path if it has one.
    pub name: &'a str,
}

/// Parses `arn:<partition>:iam::<account>:role/<path/name>`.
pub fn parse_role_arn(arn: &str) -> Option<RoleArn<'_>> {
    let rest = arn.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("iam::")?;
    let (account_id, rest) = rest.split_once(':')?;
    let name = rest.strip_prefix("role/")?;
    let name_ok = !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b));
    let partition_ok = matches!(partition, "aws" | "aws-cn" | "aws-us-gov");
    (partition_ok && name_ok && validate_account_id("", account_id).is_ok()).then_some(RoleArn {
        partition,
        account_id,
        name,
    })
}

/// The role ARN for a role name in an account, in the region's partition.
pub fn role_arn(account_id: &str, region: &str, role_name: &str) -> String {
    format!(
        "arn:{}:iam::{account_id}:role/{role_name}",
        partition(region)
    )
}

/// Everything `EnsureRegistry` will look for or create, with the worker's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryPlan {
    /// AWS account.
    pub account_id: String,
    /// AWS region.
    pub region: String,
    /// `https://<ecr host>`, how Qualys identifies the registry.
    pub registry_uri: String,
    /// `ecr-<account>-<region>`.
    pub registry_name: String,
    /// The role Qualys assumes.
    pub role_arn: String,
    /// Qualys `accountType`: `Global` or `US_Gov`.
    pub account_type: String,
    /// The Qualys AWS connector name for this role.
    pub connector_name: String,
    /// How long to wait after changing the IAM role before Qualys uses it.
    pub iam_propagation_wait_secs: u64,
}

/// What the worker's configuration contributes to a [`RegistryPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryDefaults {
    /// Role name used when the input has no `roleArn`.
    pub scan_role_name: String,
    /// Seconds to wait for IAM propagation after a role change.
    pub iam_propagation_wait_secs: u64,
}

impl RegistryPlan {
    /// Applies the worker's defaults to a validated input.
    pub fn new(input: &EnsureRegistryInput, defaults: &RegistryDefaults) -> Self {
        let (account, region) = (&input.account_id, &input.region);
        let role_arn = input
            .role_arn
            .clone()
            .unwrap_or_else(|| role_arn(account, region, &defaults.scan_role_name));
        Self {
            account_id: account.clone(),
            region: region.clone(),
            registry_uri: format!("https://{}", ecr_host(account, region)),
            registry_name: format!("ecr-{account}-{region}"),
            account_type: qualys_account_type(region).to_string(),
            connector_name: format!("qflows-{account}"),
            role_arn,
            iam_propagation_wait_secs: defaults.iam_propagation_wait_secs,
        }
    }
}

/// A Qualys registry as the workflows need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryRef {
    /// Qualys' UUID for the registry.
    pub registry_uuid: String,
    /// Its name in Qualys.
    pub registry_name: String,
}

/// Qualys' AWS identity for the role trust policy (`GET /csapi/v1.3/registry/aws-base`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QualysAwsBase {
    /// The AWS account Qualys assumes roles from.
    pub account_id: String,
    /// The `sts:ExternalId` Qualys presents (a stringified integer).
    pub external_id: String,
}

/// Input of the activity that creates or updates the role Qualys assumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanRoleRequest {
    /// The role to create or update.
    pub role_arn: String,
    /// Who may assume it.
    pub qualys: QualysAwsBase,
}

/// What the role activity changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RoleChange {
    /// The role did not exist and was created.
    Created,
    /// The trust policy or permissions were updated.
    Updated,
    /// Already as required.
    Unchanged,
}

/// Input of the activity that makes sure Qualys has an AWS connector for the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorRequest {
    /// The plan being carried out.
    pub plan: RegistryPlan,
    /// Qualys' external ID for the connector.
    pub external_id: String,
}

impl ConnectorRequest {
    /// The workflow ID of the account's connector step ([`connector_workflow_id`]).
    pub fn workflow_id(&self) -> String {
        connector_workflow_id(&self.plan.account_id)
    }
}

impl Validate for ConnectorRequest {
    fn validate(&self) -> Result<(), InputError> {
        let plan = &self.plan;
        validate_account_id("plan.accountId", &plan.account_id)?;
        validate_region("plan.region", &plan.region)?;
        match parse_role_arn(&plan.role_arn) {
            Some(role) if role.account_id == plan.account_id => {}
            Some(_) => {
                return Err(InputError::field(
                    "plan.roleArn",
                    format!(
                        "`{}` is not a role of account {}",
                        plan.role_arn, plan.account_id
                    ),
                ));
            }
            None => {
                return Err(InputError::field(
                    "plan.roleArn",
                    format!("`{}` is not an IAM role ARN", plan.role_arn),
                ));
            }
        }
        if self.external_id.trim().is_empty() {
            return Err(InputError::field("externalId", "empty"));
        }
        Ok(())
    }
}

/// Output of the `EnsureAwsConnector` workflow: which role's connector it ensured.
///
/// ```json
/// {"roleArn": "arn:aws:iam::123456789012:role/qualys-registry-scan-role", "created": true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorOutcome {
    /// The role the connector is for (callers for another role of the account run again).
    pub role_arn: String,
    /// Whether this run created it (false: Qualys already had it).
    pub created: bool,
}

/// Output of the `EnsureRegistry` workflow.
///
/// ```json
/// {"registryUuid": "…", "registryName": "ecr-123456789012-us-east-1",
///  "roleArn": "arn:aws:iam::123456789012:role/qualys-registry-scan-role", "created": true}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnsureRegistryOutput {
    /// Qualys' UUID for the registry.
    pub registry_uuid: String,
    /// The registry's name in Qualys.
    pub registry_name: String,
    /// The role Qualys assumes to read the registry.
    pub role_arn: String,
    /// Whether the registry was created by this run — or, for a run started under another
    /// workflow ID, by the canonical run it joined (false: it already existed).
    pub created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse;
    use serde_json::json;

    fn defaults() -> RegistryDefaults {
        RegistryDefaults {
            scan_role_name: DEFAULT_SCAN_ROLE_NAME.into(),
            iam_propagation_wait_secs: 30,
        }
    }

    #[test]
    fn plan_applies_defaults_and_partitions() {
        let input: EnsureRegistryInput =
            parse(json!({"accountId": "123456789012", "region": "us-east-1"})).unwrap();
        let plan = RegistryPlan::new(&input, &defaults());
        assert_eq!(
            plan.registry_uri,
            "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(plan.registry_name, "ecr-123456789012-us-east-1");
        assert_eq!(
            plan.role_arn,
            "arn:aws:iam::123456789012:role/qualys-registry-scan-role"
        );
        assert_eq!(plan.account_type, "Global");
        assert_eq!(input.workflow_id(), "registry-123456789012-us-east-1");

        let cn: EnsureRegistryInput =
            parse(json!({"accountId": "123456789012", "region": "cn-north-1"})).unwrap();
        let plan = RegistryPlan::new(&cn, &defaults());
        assert_eq!(
            plan.registry_uri,
            "https://123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert!(plan.role_arn.starts_with("arn:aws-cn:iam::"));

        let gov: EnsureRegistryInput =
            parse(json!({"accountId": "123456789012", "region": "us-gov-west-1"})).unwrap();
        assert_eq!(RegistryPlan::new(&gov, &defaults()).account_type, "US_Gov");
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        let cases = [
            (
                json!({"accountId": "12345", "region": "us-east-1"}),
                "accountId",
            ),
            (
                json!({"accountId": "123456789012", "region": "US East"}),
                "region",
            ),
            (
                json!({"accountId": "123456789012", "region": "us-east-1", "roleArn": "role/x"}),
                "roleArn",
            ),
            (
                json!({"accountId": "123456789012", "region": "cn-north-1", "roleArn": "arn:aws:iam::123456789012:role/x"}),
                "roleArn",
            ),
            (
                json!({"accountId": 123456789012u64, "region": "us-east-1"}),
                "accountId",
            ),
            (
                json!({"accountId": "123456789012", "region": "us-east-1", "createRole": "yes"}),
                "createRole",
            ),
        ];
        for (value, field) in cases {
            let err = parse::<EnsureRegistryInput>(value.clone()).unwrap_err();
            assert_eq!(err.field, field, "{value} gave {err}");
        }
        let err = parse::<EnsureRegistryInput>(json!({"accountId": "123456789012"})).unwrap_err();
        assert!(err.to_string().contains("missing field `region`"), "{err}");
    }

    #[test]
    fn connector_requests_are_keyed_by_account_and_checked() {
        let input: EnsureRegistryInput =
            parse(json!({"accountId": "123456789012", "region": "eu-west-1"})).unwrap();
        let request = ConnectorRequest {
            plan: RegistryPlan::new(&input, &defaults()),
            external_id: "7364912058341".into(),
        };
        assert_eq!(request.workflow_id(), "registry-connector-123456789012");
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(parse::<ConnectorRequest>(value.clone()).unwrap(), request);
        let mut other_account = value.clone();
        other_account["plan"]["roleArn"] = json!("arn:aws:iam::999999999999:role/x");
        assert_eq!(
            parse::<ConnectorRequest>(other_account).unwrap_err().field,
            "plan.roleArn"
        );
        let mut no_external = value;
        no_external["externalId"] = json!(" ");
        assert_eq!(
            parse::<ConnectorRequest>(no_external).unwrap_err().field,
            "externalId"
        );
    }

    #[test]
    fn role_arns_parse() {
        let r = parse_role_arn("arn:aws:iam::123456789012:role/path/x-y").unwrap();
        assert_eq!(
            (r.partition, r.account_id, r.name),
            ("aws", "123456789012", "path/x-y")
        );
        assert!(parse_role_arn("arn:aws:iam::123:role/x").is_none());
        assert!(parse_role_arn("arn:aws:s3:::bucket").is_none());
        assert!(parse_role_arn("arn:aws:iam::123456789012:role/").is_none());
    }
}
