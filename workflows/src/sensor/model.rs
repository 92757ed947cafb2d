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
    /// Egress the sensor's NetworkPolicy allows besides DNS (53), HTTPS (443) and the API
    /// server (6443): private registries on 5000 or 8443, a proxy on 3128 (Kubernetes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_egress_ports: Vec<EgressPort>,
}

/// One extra egress port of the sensor's NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressPort {
    /// The port, 1–65535.
    pub port: u32,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    "TCP".into()
}

/// Most extra egress ports an input may name.
pub const MAX_EXTRA_EGRESS_PORTS: usize = 20;

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
        if self.extra_egress_ports.len() > MAX_EXTRA_EGRESS_PORTS {
            return Err(InputError::field(
                "extraEgressPorts",
                format!("at most {MAX_EXTRA_EGRESS_PORTS} ports"),
            ));
        }
        for (i, p) in self.extra_egress_ports.iter().enumerate() {
            if !(1..=65535).contains(&p.port) {
                return Err(InputError::field(
                    format!("extraEgressPorts[{i}].port"),
                    format!("{} is not a port (1-65535)", p.port),
                ));
            }
            if !matches!(p.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
                return Err(InputError::field(
                    format!("extraEgressPorts[{i}].protocol"),
                    format!("`{}` must be TCP, UDP or SCTP", p.protocol),
                ));
            }
        }
        if self.target == SensorTarget::Ecs && !self.extra_egress_ports.is_empty() {
            return Err(InputError::field(
                "extraEgressPorts",
                "applies to Kubernetes targets only (ECS has no NetworkPolicy)",
            ));
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

impl DeploySensorOutput {
    /// A run's result: what it `applied` to the input's target, and the sensors counted.
    pub fn new(input: DeploySensorInput, applied: SensorApplied, sensors: u64) -> Self {
        DeploySensorOutput {
            target: input.target,
            cluster: input.cluster,
            changed: applied.changed,
            applied: applied.applied,
            sensors,
        }
    }
}

/// The workflow ID of the deployment to one real target: `sensor-ecs-<account>-<region>-<cluster>`
/// for ECS (two clusters named `default` in two regions or accounts are two targets), and
/// `sensor-kube-<API server host:port/path>` for Kubernetes (every kube context, target name or
/// cluster name that reaches one API server is one target). `qflows sensor deploy` starts runs
/// under this ID; before it, the ID was `sensor-<target>-<cluster>` ([`legacy_workflow_id`]).
pub fn sensor_workflow_id(target: &SensorScope) -> String {
    match target {
        SensorScope::Ecs {
            account_id,
            region,
            cluster,
        } => format!("sensor-ecs-{account_id}-{region}-{cluster}"),
        SensorScope::Kube { server } => format!("sensor-kube-{}", normalize_server(server)),
    }
}

/// The workflow ID `qflows sensor deploy` used before [`sensor_workflow_id`].
pub fn legacy_workflow_id(input: &DeploySensorInput) -> String {
    format!("sensor-{}-{}", input.target.as_str(), input.cluster)
}

/// `https://API.example:443/` → `api.example:443`: the scheme and a trailing `/` dropped, the
/// host lower-cased.
pub fn normalize_server(server: &str) -> String {
    let rest = server
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(server)
        .trim_end_matches('/');
    match rest.split_once('/') {
        Some((host, path)) => format!("{}/{path}", host.to_ascii_lowercase()),
        None => rest.to_ascii_lowercase(),
    }
}

/// What one sensor deployment targets, for its workflow ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SensorScope {
    /// An ECS cluster.
    Ecs {
        /// The AWS account.
        account_id: String,
        /// The region.
        region: String,
        /// The cluster name.
        cluster: String,
    },
    /// A Kubernetes cluster, by its API server URL.
    Kube {
        /// The API server URL.
        server: String,
    },
}

/// One Kubernetes object as it was before the run changed anything, and the fields the run's
/// apply gives qflows (read from the server's dry run). Values are kept only for the fields
/// qflows owned before or is about to own, so other managers' fields (an env value someone
/// else set, say) never enter history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectSnapshot {
    /// `apps/v1`, `v1`, …
    pub api_version: String,
    /// `DaemonSet`, …
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace, for namespaced objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Whether the object existed before the run.
    pub existed: bool,
    /// Its UID when it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The previous values of the fields in `managed_before` ∪ `managed_after` (an object in the
    /// object's own shape; `Null` when it did not exist).
    pub previous: serde_json::Value,
    /// qflows' managed fields (`fieldsV1`) before the run.
    pub managed_before: serde_json::Value,
    /// qflows' managed fields after the run's apply, as the dry run answered.
    pub managed_after: serde_json::Value,
    /// The DaemonSet's current ControllerRevision (`name`), when the controller had written one:
    /// its template is what a roll-back restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// The ECS service before the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EcsSnapshot {
    /// Whether the service existed.
    pub service_existed: bool,
    /// The task definition it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_task_definition: Option<String>,
}

/// What `sensor.Prepare` recorded before the first write: the previous state of everything the
/// run may change, the pre-flight's warnings, and the sensors Qualys knew. In history, so a
/// retried apply can never lose what to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensorPlan {
    /// Kubernetes objects, in apply order (empty on ECS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectSnapshot>,
    /// The ECS service (ECS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecs: Option<EcsSnapshot>,
    /// Warnings of the pre-flight (dry run): the API server's `Warning` headers, named by object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// UUIDs of the registry sensors Qualys listed before the run.
    pub baseline_sensors: Vec<String>,
    /// When the plan was made (worker clock, ms since the epoch): sensors this run brought up
    /// registered or checked in after it.
    pub prepared_at_ms: u64,
}

/// A planned deployment: what the later activities get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensorRun {
    /// The workflow input.
    pub input: DeploySensorInput,
    /// What was recorded before any write.
    pub plan: SensorPlan,
    /// Set once the apply reported it changed nothing: sensors registered before count then.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// A look at the roll-out: its status, or why the cluster could not be observed (that is not a
/// reason to roll back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutObservation {
    /// The status, when the cluster answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RolloutStatus>,
    /// Why the cluster could not be observed (unreachable, timed out, 5xx, 401/403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unobservable: Option<String>,
    /// Why pods are not coming up, when the cluster says (e.g. a `FailedCreate` event: the pod
    /// was refused by Pod Security admission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A look at Qualys: how many of this run's sensors registered, or why Qualys could not be
/// asked (401, 429, an outage: not a reason to roll back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyObservation {
    /// Why Qualys could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unobservable: Option<String>,
    /// Sensors registered (or checked in) after the plan, on this cluster's nodes, on this image's
    /// version.
    pub matched: u64,
    /// How many are needed: the ready pods (running tasks), at least one.
    pub needed: u64,
    /// What was seen, for messages (counts of other sensors, hostnames wanted).
    pub detail: String,
}

/// What a roll-back did and what it could not do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RollbackReport {
    /// What was restored or removed.
    pub restored: Vec<String>,
    /// What remains to restore, and why (an error, or a drift: someone else changed the object
    /// since the apply, so it was left as they made it).
    pub remaining: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse;
    use serde_json::json;

    #[test]
    fn one_target_is_one_workflow_id() {
        let ecs = |region: &str| SensorScope::Ecs {
            account_id: "123456789012".into(),
            region: region.into(),
            cluster: "default".into(),
        };
        assert_ne!(
            sensor_workflow_id(&ecs("us-east-1")),
            sensor_workflow_id(&ecs("eu-west-1"))
        );
        assert_eq!(
            sensor_workflow_id(&ecs("us-east-1")),
            "sensor-ecs-123456789012-us-east-1-default"
        );
        let kube = |server: &str| {
            sensor_workflow_id(&SensorScope::Kube {
                server: server.into(),
            })
        };
        assert_eq!(
            kube("https://API.Example:443/"),
            "sensor-kube-api.example:443"
        );
        assert_eq!(
            kube("https://api.example:443"),
            kube("https://api.example:443/")
        );
    }

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
