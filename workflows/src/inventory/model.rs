//! The types `Inventory` exchanges: a scope, what runs in it, and what an entity is told.
//!
//! Everything here is read from a platform's API (ECS tasks, Kubernetes pods, Azure container
//! groups and apps), so every string is attacker-controlled: places are bounded in number and
//! length, digests are checked, and a scope's identity is built from validated fields only.

use crate::input::{InputError, Validate};
use crate::scan::ImageRef;
use serde::{Deserialize, Serialize};

/// At most this many places (where a digest runs) are kept per digest and scope: the count is
/// exact, the list a sample, so one image in 10,000 pods stays a small payload.
pub const MAX_PLACES: usize = 8;
/// A place is cut to this many characters.
pub const MAX_PLACE_CHARS: usize = 200;
/// At most this many containers without a digest are kept in an inventory record.
pub const MAX_UNRESOLVED: usize = 200;

/// Where an inventory looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum InventoryScope {
    /// Every ECS cluster of an AWS account in one region (running tasks).
    #[serde(rename = "aws", rename_all = "camelCase")]
    Aws {
        /// The 12-digit account ID.
        account_id: String,
        /// The region, e.g. `us-east-1`.
        region: String,
        /// A role to assume for the account (default: the worker's cross-account role, as
        /// ScanOnDeploy resolves).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role_arn: Option<String>,
    },
    /// A Kubernetes cluster (every pod in every namespace).
    #[serde(rename = "kubernetes", rename_all = "camelCase")]
    Kubernetes {
        /// The name the cluster is reported under (a DNS-label-like name).
        cluster: String,
        /// The kubeconfig context to use (default: the current context, or in-cluster).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<String>,
    },
    /// An Azure subscription (container groups, container apps and jobs).
    #[serde(rename = "azure", rename_all = "camelCase")]
    Azure {
        /// The subscription ID (a GUID).
        subscription_id: String,
    },
}

impl InventoryScope {
    /// The scope's identity: workflow IDs, store paths and `running` signals use it.
    /// `aws-<account>-<region>`, `k8s-<cluster>`, `azure-<subscription>`.
    pub fn id(&self) -> String {
        match self {
            InventoryScope::Aws {
                account_id, region, ..
            } => format!("aws-{account_id}-{region}"),
            InventoryScope::Kubernetes { cluster, .. } => format!("k8s-{cluster}"),
            InventoryScope::Azure { subscription_id } => format!("azure-{subscription_id}"),
        }
    }

    /// Checks every field, naming the one that is wrong.
    pub fn validate(&self) -> Result<(), InputError> {
        match self {
            InventoryScope::Aws {
                account_id,
                region,
                role_arn,
            } => validate_aws(account_id, region, role_arn.as_deref()),
            InventoryScope::Kubernetes { cluster, context } => {
                validate_kubernetes(cluster, context.as_deref())
            }
            InventoryScope::Azure { subscription_id } => validate_azure(subscription_id),
        }
    }
}

/// An AWS scope: a 12-digit account, a region name, an IAM role ARN when given.
fn validate_aws(account_id: &str, region: &str, role_arn: Option<&str>) -> Result<(), InputError> {
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InputError::field(
            "scope.accountId",
            format!("{account_id:?} is not a 12-digit AWS account ID"),
        ));
    }
    if !is_lowercase_label(region, 4..=25) {
        return Err(InputError::field(
            "scope.region",
            format!("{region:?} is not an AWS region"),
        ));
    }
    if let Some(arn) = role_arn {
        let ok = arn.starts_with("arn:aws") && arn.contains(":iam::") && arn.contains(":role/");
        if !ok || arn.len() > 2048 {
            return Err(InputError::field(
                "scope.roleArn",
                format!("{arn:?} is not an IAM role ARN"),
            ));
        }
    }
    Ok(())
}

/// Whether `name` is `len` lowercase letters, digits or '-', neither starting nor ending with '-'
/// (an AWS region, a DNS label).
fn is_lowercase_label(name: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A Kubernetes scope: a DNS-label cluster name, a kubeconfig context of 1-253 characters when
/// given.
fn validate_kubernetes(cluster: &str, context: Option<&str>) -> Result<(), InputError> {
    if !is_lowercase_label(cluster, 1..=63) {
        return Err(InputError::field(
            "scope.cluster",
            format!("{cluster:?} must be 1-63 lowercase letters, digits or '-'"),
        ));
    }
    if context.is_some_and(|c| c.is_empty() || c.len() > 253) {
        return Err(InputError::field(
            "scope.context",
            "must be 1-253 characters",
        ));
    }
    Ok(())
}

/// An Azure scope: a subscription GUID.
fn validate_azure(subscription_id: &str) -> Result<(), InputError> {
    let parts: Vec<&str> = subscription_id.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = parts.len() == 5
        && parts
            .iter()
            .zip(lens)
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(InputError::field(
            "scope.subscriptionId",
            format!("{subscription_id:?} is not a subscription GUID"),
        ));
    }
    Ok(())
}

/// Input of `Inventory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryInput {
    /// Where to look.
    pub scope: InventoryScope,
    /// How long a digest this inventory saw counts as running without being seen again
    /// (default 2 days; `qflows schedule inventory` sets three schedule intervals). An image
    /// nobody lists any more stops being rescanned after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after_secs: Option<u64>,
}

impl Validate for InventoryInput {
    fn validate(&self) -> Result<(), InputError> {
        self.scope.validate()?;
        if self.stale_after_secs == Some(0) {
            return Err(InputError::field("staleAfterSecs", "must be positive"));
        }
        Ok(())
    }
}

/// Default of [`InventoryInput::stale_after_secs`].
pub const DEFAULT_STALE_AFTER_SECS: u64 = 2 * 86_400;

/// One running container, as a platform lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningContainer {
    /// The image digest it runs (`sha256:<64 hex>`), when the platform reports one or the
    /// registry resolved its tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The image reference as the platform reports it.
    pub image: String,
    /// Where it runs, e.g. `ecs:prod/service:web`, `k8s:default/pod/web-5d9c/nginx`,
    /// `aci:rg/group/c1` (at most [`MAX_PLACE_CHARS`]).
    pub place: String,
    /// Why no digest is known (the container is then not scanned from the inventory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

/// One digest of an inventory: where it runs (a sample) and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningDigest {
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// A reference to scan it by (the most common one listed).
    pub image: ImageRef,
    /// Containers running it in the scope.
    pub count: u64,
    /// Up to [`MAX_PLACES`] of them.
    pub places: Vec<String>,
}

/// What one inventory found: written to the results store at
/// `inventory/<scope id>/<taken at>.json`, and read by `qflows report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRecord {
    /// Where it looked.
    pub scope: InventoryScope,
    /// [`InventoryScope::id`].
    pub scope_id: String,
    /// When the listing ended (RFC 3339).
    pub taken_at: String,
    /// Containers listed.
    pub containers: u64,
    /// Running digests, most containers first.
    pub digests: Vec<RunningDigest>,
    /// Containers without a digest (at most [`MAX_UNRESOLVED`]) and how many there were.
    pub unresolved: Vec<RunningContainer>,
    /// Containers without a digest in all.
    pub unresolved_count: u64,
}

/// "This digest runs here": the signal (`running`) an inventory sends each running digest's
/// `ImageScan` entity (signal-with-start: it starts the entity if none runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningAt {
    /// [`InventoryScope::id`].
    pub scope_id: String,
    /// Containers running it in the scope.
    pub count: u64,
    /// A sample of where ([`MAX_PLACES`] at most).
    pub places: Vec<String>,
    /// When the inventory saw it (seconds since the epoch).
    pub seen_secs: u64,
    /// Until when it counts as running without another inventory seeing it.
    pub until_secs: u64,
}

/// Output of `Inventory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventorySummary {
    /// [`InventoryScope::id`].
    pub scope_id: String,
    /// Containers listed.
    pub containers: u64,
    /// Distinct running digests.
    pub digests: u64,
    /// Containers without a digest.
    pub unresolved: u64,
    /// Entities told (a `running` signal, starting those not running).
    pub signalled: u64,
    /// Where the [`InventoryRecord`] was stored.
    pub record_ref: String,
}

/// Cuts a place to [`MAX_PLACE_CHARS`] characters (on a character boundary).
pub fn bounded_place(place: &str) -> String {
    place.chars().take(MAX_PLACE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_ids_and_validation() {
        let aws = InventoryScope::Aws {
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
            role_arn: None,
        };
        assert_eq!(aws.id(), "aws-123456789012-eu-west-1");
        assert!(aws.validate().is_ok());
        let bad = InventoryScope::Aws {
            account_id: "12345".into(),
            region: "eu-west-1".into(),
            role_arn: None,
        };
        assert_eq!(bad.validate().unwrap_err().field, "scope.accountId");
        let k8s = InventoryScope::Kubernetes {
            cluster: "prod-eu".into(),
            context: None,
        };
        assert_eq!(k8s.id(), "k8s-prod-eu");
        let k8s_bad = InventoryScope::Kubernetes {
            cluster: "../etc".into(),
            context: None,
        };
        assert_eq!(k8s_bad.validate().unwrap_err().field, "scope.cluster");
        let az = InventoryScope::Azure {
            subscription_id: "00000000-1111-2222-3333-444444444444".into(),
        };
        assert!(az.validate().is_ok());
        let az_bad = InventoryScope::Azure {
            subscription_id: "0000/../x".into(),
        };
        assert_eq!(az_bad.validate().unwrap_err().field, "scope.subscriptionId");
    }

    #[test]
    fn scopes_read_as_json() {
        let input: InventoryInput = serde_json::from_value(serde_json::json!({
            "scope": {"kind": "aws", "accountId": "123456789012", "region": "us-east-1"}
        }))
        .unwrap();
        assert_eq!(input.scope.id(), "aws-123456789012-us-east-1");
        let err = serde_json::from_value::<InventoryInput>(serde_json::json!({
            "scope": {"kind": "gcp", "project": "x"}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("gcp"), "{err}");
    }

    #[test]
    fn places_are_bounded() {
        let long = "é".repeat(500);
        assert_eq!(bounded_place(&long).chars().count(), MAX_PLACE_CHARS);
    }
}
