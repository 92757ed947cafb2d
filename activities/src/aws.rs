//! AWS access: clients from the standard credential chain, and the IAM role Qualys assumes.
//!
//! Credentials and endpoints come from the usual places (environment, shared config and
//! credential files, SSO, web identity, container and instance metadata), so the worker runs the
//! same on a laptop, in EKS with IRSA, or in ECS. `AWS_ENDPOINT_URL` points every client at
//! another endpoint, which is how the tests use moto.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use qflows_workflows::FailureType;
use qflows_workflows::registry::model::{QualysAwsBase, RoleChange, parse_role_arn};
use serde_json::{Value, json};
use std::fmt::Debug;
use tokio::sync::OnceCell;

/// Errors from AWS calls, classified for retrying.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The caller's credentials may not do this (or there are none): retrying will not help.
    #[error("AWS {operation} was denied ({code}): {message}")]
    AccessDenied {
        /// The API operation, e.g. `iam:CreateRole`.
        operation: &'static str,
        /// AWS error code.
        code: String,
        /// AWS error message.
        message: String,
    },
    /// The request itself is wrong (bad ARN, malformed policy): retrying will not help.
    #[error("AWS {operation} rejected the request ({code}): {message}")]
    Invalid {
        /// The API operation.
        operation: &'static str,
        /// AWS error code.
        code: String,
        /// AWS error message.
        message: String,
    },
    /// Throttling, a 5xx, a timeout or a network failure: worth retrying.
    #[error("AWS {operation} failed ({code}): {message}")]
    Transient {
        /// The API operation.
        operation: &'static str,
        /// AWS error code, or the kind of failure.
        code: String,
        /// What happened.
        message: String,
    },
}

impl AwsError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AwsError::Transient { .. })
    }

    /// Bounded failure type name for Temporal and metrics.
    pub fn type_name(&self) -> FailureType {
        match self {
            AwsError::AccessDenied { .. } => FailureType::AwsAccessDenied,
            AwsError::Invalid { .. } => FailureType::AwsInvalidRequest,
            AwsError::Transient { .. } => FailureType::AwsUnavailable,
        }
    }

    /// Classifies an SDK error from `operation`.
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: Debug,
    {
        let code = err.code().unwrap_or_default().to_string();
        let message = err.message().map(str::to_string).unwrap_or_else(|| {
            // DisplayErrorContext walks the source chain (the top level only says "dispatch failure").
            aws_smithy_types::error::display::DisplayErrorContext(&err).to_string()
        });
        let service_error = matches!(err, SdkError::ServiceError(_));
        if !service_error {
            let code = if code.is_empty() {
                "Unavailable".into()
            } else {
                code
            };
            return AwsError::Transient {
                operation,
                code,
                message,
            };
        }
        match code.as_str() {
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "InvalidClientTokenId"
            | "ExpiredToken"
            | "SignatureDoesNotMatch" => AwsError::AccessDenied {
                operation,
                code,
                message,
            },
            "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "ServiceUnavailable"
            | "ServiceFailure"
            | "InternalFailure"
            | "InternalError" => AwsError::Transient {
                operation,
                code,
                message,
            },
            _ => AwsError::Invalid {
                operation,
                code,
                message,
            },
        }
    }
}

/// Shared AWS configuration, loaded once from the standard chain on first use.
#[derive(Debug, Default)]
pub struct Aws {
    base: OnceCell<SdkConfig>,
}

impl Aws {
    /// A handle that loads the configuration lazily (no AWS access at worker start-up).
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle with a configuration given up front (tests, or an embedding program); region
    /// is still chosen per client.
    pub fn with_config(config: SdkConfig) -> Self {
        Self {
            base: OnceCell::new_with(Some(config)),
        }
    }

    /// The shared configuration with `region` set.
    pub async fn config(&self, region: &str) -> SdkConfig {
        let base = self
            .base
            .get_or_init(|| aws_config::defaults(BehaviorVersion::latest()).load())
            .await;
        base.to_builder()
            .region(Region::new(region.to_string()))
            .build()
    }

    /// An IAM client for the partition of `region`.
    pub async fn iam(&self, region: &str) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config(region).await)
    }

    /// An S3 client in `region`. With an overridden endpoint (`AWS_ENDPOINT_URL`: moto, MinIO)
    /// it addresses buckets by path, which those servers need.
    pub async fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        let config = self.config(region).await;
        let path_style = config.endpoint_url().is_some();
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(path_style)
                .build(),
        )
    }

    /// An SNS client in `region`.
    pub async fn sns(&self, region: &str) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::new(&self.config(region).await)
    }
}

/// The AWS managed policy that lets Qualys read ECR.
const ECR_READ_ONLY: &str = "policy/AmazonEC2ContainerRegistryReadOnly";

/// The trust policy that lets the Qualys account assume the role with its external ID.
pub fn trust_policy(partition: &str, qualys: &QualysAwsBase) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:{partition}:iam::{}:root", qualys.account_id)},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": qualys.external_id}}
        }]
    })
}

/// Whether an existing trust policy already lets Qualys in with the right external ID.
fn trusts(document: &str, wanted: &Value) -> bool {
    // IAM returns the policy document URL-encoded.
    let decoded = percent_encoding::percent_decode_str(document).decode_utf8_lossy();
    let Ok(current) = serde_json::from_str::<Value>(&decoded) else {
        return false;
    };
    let wanted = &wanted["Statement"][0];
    let statements = match &current["Statement"] {
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    };
    statements.iter().any(|s| {
        let principal = &s["Principal"]["AWS"];
        let principal_ok = principal == &wanted["Principal"]["AWS"]
            || principal
                .as_array()
                .is_some_and(|a| a.contains(&wanted["Principal"]["AWS"]));
        s["Effect"] == "Allow"
            && principal_ok
            && s["Condition"]["StringEquals"]["sts:ExternalId"]
                == wanted["Condition"]["StringEquals"]["sts:ExternalId"]
    })
}

/// Creates the role Qualys assumes, or brings its trust policy and ECR permissions up to date.
pub async fn ensure_scan_role(
    iam: &aws_sdk_iam::Client,
    role_arn: &str,
    qualys: &QualysAwsBase,
) -> Result<RoleChange, AwsError> {
    let Some(arn) = parse_role_arn(role_arn) else {
        return Err(AwsError::Invalid {
            operation: "iam:CreateRole",
            code: "InvalidRoleArn".into(),
            message: format!("`{role_arn}` is not an IAM role ARN"),
        });
    };
    let (path, name) = match arn.name.rsplit_once('/') {
        Some((path, name)) => (format!("/{path}/"), name),
        None => ("/".to_string(), arn.name),
    };
    let policy = trust_policy(arn.partition, qualys);
    let change = ensure_trusting_role(iam, name, path, &policy).await?;
    let attached = ensure_ecr_read_only(iam, name, arn.partition).await?;
    Ok(if attached && change == RoleChange::Unchanged {
        RoleChange::Updated
    } else {
        change
    })
}

/// Creates role `name` trusting `policy`, or replaces the trust policy of an existing role
/// that does not trust Qualys the way `policy` says.
async fn ensure_trusting_role(
    iam: &aws_sdk_iam::Client,
    name: &str,
    path: String,
    policy: &Value,
) -> Result<RoleChange, AwsError> {
    match iam.get_role().role_name(name).send().await {
        Ok(found) => {
            let document = found
                .role()
                .and_then(|r| r.assume_role_policy_document())
                .unwrap_or_default();
            if trusts(document, policy) {
                return Ok(RoleChange::Unchanged);
            }
            iam.update_assume_role_policy()
                .role_name(name)
                .policy_document(policy.to_string())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("iam:UpdateAssumeRolePolicy", e))?;
            Ok(RoleChange::Updated)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            iam.create_role()
                .role_name(name)
                .path(path)
                .description("Lets Qualys Container Security read ECR (managed by qflows)")
                .assume_role_policy_document(policy.to_string())
                .tags(
                    aws_sdk_iam::types::Tag::builder()
                        .key("managed-by")
                        .value("qflows")
                        .build()
                        .map_err(|e| AwsError::Invalid {
                            operation: "iam:CreateRole",
                            code: "InvalidTag".into(),
                            message: e.to_string(),
                        })?,
                )
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("iam:CreateRole", e))?;
            Ok(RoleChange::Created)
        }
        Err(e) => Err(AwsError::from_sdk("iam:GetRole", e)),
    }
}

/// Attaches the AWS-managed ECR read-only policy to role `name` unless it is attached; returns
/// whether it attached it.
async fn ensure_ecr_read_only(
    iam: &aws_sdk_iam::Client,
    name: &str,
    partition: &str,
) -> Result<bool, AwsError> {
    let policy_arn = format!("arn:{partition}:iam::aws:{ECR_READ_ONLY}");
    let attached = iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:ListAttachedRolePolicies", e))?;
    let has_policy = attached
        .attached_policies()
        .iter()
        .any(|p| p.policy_arn() == Some(policy_arn.as_str()));
    if has_policy {
        return Ok(false);
    }
    iam.attach_role_policy()
        .role_name(name)
        .policy_arn(&policy_arn)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("iam:AttachRolePolicy", e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_policy_matches_itself_and_rejects_other_external_ids() {
        let qualys = QualysAwsBase {
            account_id: "805950163170".into(),
            external_id: "1234567890123".into(),
        };
        let policy = trust_policy("aws", &qualys);
        let encoded = percent_encoding::utf8_percent_encode(
            &policy.to_string(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        assert!(trusts(&encoded, &policy));
        let other = trust_policy(
            "aws",
            &QualysAwsBase {
                external_id: "999".into(),
                ..qualys
            },
        );
        assert!(!trusts(&encoded, &other));
        assert!(!trusts("not json", &policy));
    }
}
