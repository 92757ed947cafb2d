//! Types of the `DeploySensor` workflow: its input (references to credentials, never values),
//! what applying changed, roll-out status, and the result.

use crate::input::{InputError, Validate};
use serde::{Deserialize, Serialize};

/// Where the Qualys registry sensor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorTarget {
    /// Amazon ECS: a task definition and a DAEMON service.
    Ecs,
    /// Amazon EKS: a DaemonSet.
    Eks,
    /// Azure AKS: a DaemonSet.
    Aks,
    /// Google GKE: a DaemonSet.
    Gke,
}

impl SensorTarget {
    /// The lower-case name (`ecs`, `eks`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SensorTarget::Ecs => "ecs",
            SensorTarget::Eks => "eks",
            SensorTarget::Aks => "aks",
            SensorTarget::Gke => "gke",
        }
    }
}

/// The image the sensor runs unless the input names another (pinned like the Qualys chart).
pub const DEFAULT_SENSOR_IMAGE: &str = "docker.io/qualys/qcs-sensor:1.40.1-0";

/// Input of `DeploySensor`. Credentials are references: a Secrets Manager ARN on ECS, the
/// name of a Kubernetes Secret key on Kubernetes; their values never enter the workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploySensorInput {
    /// Where to deploy.
    pub target: SensorTarget,
    /// The ECS cluster name, or the Kubernetes cluster's name (for reports).
    pub cluster: String,
    /// AWS region (required for `ecs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// kubeconfig context (Kubernetes targets; the current context when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_context: Option<String>,
    /// kubeconfig path on the worker (default: `$KUBECONFIG` or `~/.kube/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Sensor image (default [`DEFAULT_SENSOR_IMAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Reference to the activation ID: a Secrets Manager ARN on ECS, `<secret>:<key>` of a
    /// Secret in namespace `qualys-sensor` on Kubernetes.
    pub activation_id_ref: String,
    /// Reference to the customer ID (like `activation_id_ref`).
    pub customer_id_ref: String,
    /// The Qualys CMS QAG URL (`POD_URL`), not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_url: Option<String>,
    /// ECS task execution role (needed by ECS to read the secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// ECS service name (default `qualys-registry-sensor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// How long the roll-out may take before it is rolled back (default 900 s).
    #[serde(default = "default_rollout_timeout_secs")]
    pub rollout_timeout_secs: u64,
    /// How long to wait for the sensor to register with Qualys (default 600 s).
    #[serde(default = "default_verify_timeout_secs")]
    pub verify_timeout_secs: u64,
    /// Time between status polls (default 15 s).
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
}

fn default_rollout_timeout_secs() -> u64 {
    900
}
fn default_verify_timeout_secs() -> u64 {
    600
}
fn default_poll_interval_secs() -> u64 {
    15
}

/// The ECS service name unless the input names another.
pub const DEFAULT_SERVICE_NAME: &str = "qualys-registry-sensor";

impl DeploySensorInput {
    /// The image to run.
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(DEFAULT_SENSOR_IMAGE)
    }

    /// The ECS service name.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or(DEFAULT_SERVICE_NAME)
    }
}

impl Validate for DeploySensorInput {
    fn validate(&self) -> Result<(), InputError> {
        if self.cluster.trim().is_empty() {
            return Err(InputError::field("cluster", "must not be empty"));
        }
        if self.poll_interval_secs == 0 {
            return Err(InputError::field("pollIntervalSecs", "must be at least 1"));
        }
        for (field, value) in [
            ("activationIdRef", &self.activation_id_ref),
            ("customerIdRef", &self.customer_id_ref),
        ] {
            if value.trim().is_empty() {
                return Err(InputError::field(field, "must not be empty"));
            }
            if self.target != SensorTarget::Ecs && !value.contains(':') {
                return Err(InputError::field(
                    field,
                    "must name a Secret key as `<secret>:<key>` on Kubernetes, not a value",
                ));
            }
            if self.target == SensorTarget::Ecs && !value.starts_with("arn:") {
                return Err(InputError::field(
                    field,
                    "must be a Secrets Manager (or SSM parameter) ARN on ECS, not a value",
                ));
            }
        }
        if self.target == SensorTarget::Ecs && self.region.is_none() {
            return Err(InputError::field("region", "is required for target `ecs`"));
        }
        Ok(())
    }
}

/// What applying the sensor changed, and what to restore if the roll-out fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensorApplied {
    /// Whether anything changed (false on a repeated run).
    pub changed: bool,
    /// What now runs: the task definition ARN (ECS) or DaemonSet (Kubernetes).
    pub applied: String,
    /// What ran before: the previous task definition ARN, or `None` when the service is new.
    pub previous: Option<String>,
    /// Whether the service (or DaemonSet) was created by this run.
    pub created: bool,
}

/// A deployment in flight: what the status and roll-back activities get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensorDeployment {
    /// The workflow input.
    pub input: DeploySensorInput,
    /// What apply did.
    pub applied: SensorApplied,
}

/// Where a roll-out stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Tasks or pods wanted.
    pub desired: i64,
    /// Tasks running or pods ready.
    pub ready: i64,
    /// Tasks or pods on the new spec.
    pub updated: i64,
    /// True once the roll-out is complete.
    pub done: bool,
}

/// Result of `DeploySensor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploySensorOutput {
    /// The target.
    pub target: SensorTarget,
    /// The cluster.
    pub cluster: String,
    /// Whether this run changed anything.
    pub changed: bool,
    /// What runs now.
    pub applied: String,
    /// Registry sensors Qualys lists.
    pub sensors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse;
    use serde_json::json;

    #[test]
    fn ecs_needs_references_and_a_region() {
        let ok = json!({"target": "ecs", "cluster": "c", "region": "us-east-1",
            "activationIdRef": "arn:aws:secretsmanager:us-east-1:1:secret:a",
            "customerIdRef": "arn:aws:secretsmanager:us-east-1:1:secret:c"});
        let input: DeploySensorInput = parse(ok.clone()).unwrap();
        assert_eq!(input.image(), DEFAULT_SENSOR_IMAGE);
        let mut value = ok.clone();
        value["activationIdRef"] = json!("1234-5678");
        assert_eq!(
            parse::<DeploySensorInput>(value).unwrap_err().field,
            "activationIdRef"
        );
        let mut value = ok.clone();
        value["target"] = json!("aks");
        value["customerIdRef"] = json!("1234-5678");
        assert_eq!(
            parse::<DeploySensorInput>(value).unwrap_err().field,
            "customerIdRef"
        );
        let mut value = ok;
        value.as_object_mut().unwrap().remove("region");
        assert_eq!(
            parse::<DeploySensorInput>(value).unwrap_err().field,
            "region"
        );
    }
}
