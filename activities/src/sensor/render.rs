//! Rendering the sensor: pure functions shared by the CLI (`qflows sensor render`) and the
//! activities, so what is printed is exactly what is applied.

use qflows_workflows::sensor::model::{DeploySensorInput, SensorTarget};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The task definition family of the sensor on ECS.
pub const ECS_FAMILY: &str = "qualys-registry-sensor";
/// The container name in the task definition.
pub const ECS_CONTAINER: &str = "qualys-container-sensor";
/// Docker label carrying a digest of the rendered spec: equal digests mean nothing to change.
pub const SPEC_LABEL: &str = "qflows.spec-digest";

/// An ECS task definition in the shape of `aws ecs register-task-definition --cli-input-json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    /// Family.
    pub family: String,
    /// `bridge`.
    pub network_mode: String,
    /// `["EC2"]`.
    pub requires_compatibilities: Vec<String>,
    /// Task CPU units.
    pub cpu: String,
    /// Task memory (MiB).
    pub memory: String,
    /// Role ECS uses to read the secrets and write logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// The one sensor container.
    pub container_definitions: Vec<Container>,
    /// Host volumes.
    pub volumes: Vec<Volume>,
}

/// The sensor container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Always true.
    pub essential: bool,
    /// CPU units.
    pub cpu: i32,
    /// Memory (MiB).
    pub memory: i32,
    /// Arguments.
    pub command: Vec<String>,
    /// Plain environment (no secrets).
    pub environment: Vec<NameValue>,
    /// Secrets as references (`valueFrom` is an ARN): values never pass through qflows.
    pub secrets: Vec<SecretRef>,
    /// Mounts.
    pub mount_points: Vec<MountPoint>,
    /// awslogs.
    pub log_configuration: LogConfiguration,
    /// Labels, including [`SPEC_LABEL`].
    pub docker_labels: std::collections::BTreeMap<String, String>,
}

/// An environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// A secret reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Environment variable name.
    pub name: String,
    /// Secrets Manager or SSM ARN.
    pub value_from: String,
}

/// A mount point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    /// Volume name.
    pub source_volume: String,
    /// Path in the container.
    pub container_path: String,
    /// Read-only?
    pub read_only: bool,
}

/// Log configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogConfiguration {
    /// `awslogs`.
    pub log_driver: String,
    /// Driver options.
    pub options: std::collections::BTreeMap<String, String>,
}

/// A host volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name.
    pub name: String,
    /// Host path.
    pub host: HostPath,
}

/// A host path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPath {
    /// Path on the instance.
    pub source_path: String,
}

/// The sensor task's host volumes: name, path on the instance, path in the container,
/// read-only.
const ECS_VOLUMES: [(&str, &str, &str, bool); 4] = [
    (
        "docker_sock",
        "/var/run/docker.sock",
        "/var/run/docker.sock",
        false,
    ),
    (
        "persistent_volume",
        "/usr/local/qualys/sensor/data",
        "/usr/local/qualys/qpa/data",
        false,
    ),
    (
        "agent_data",
        "/etc/qualys",
        "/usr/local/qualys/qpa/data/conf/agent-data",
        false,
    ),
    ("docker_root", "/var/lib/docker", "/var/lib/docker", true),
];

/// The sensor's ECS task definition (docs/qualys-api.md §5: the official definition with the
/// registry arguments, the docker socket and docker root mounts, awslogs). Its container is
/// labelled ([`SPEC_LABEL`]) with the digest of the definition without that label.
pub fn ecs_task_definition(input: &DeploySensorInput) -> TaskDefinition {
    let mut container = ecs_container(input);
    let mut definition = TaskDefinition {
        family: ECS_FAMILY.into(),
        network_mode: "bridge".into(),
        requires_compatibilities: vec!["EC2".into()],
        cpu: "256".into(),
        memory: "512".into(),
        execution_role_arn: input.execution_role_arn.clone(),
        container_definitions: vec![],
        volumes: ECS_VOLUMES
            .iter()
            .map(|(name, host, _, _)| Volume {
                name: name.to_string(),
                host: HostPath {
                    source_path: host.to_string(),
                },
            })
            .collect(),
    };
    definition.container_definitions = vec![container.clone()];
    let digest = digest(&serde_json::to_vec(&definition).unwrap_or_default());
    container.docker_labels.insert(SPEC_LABEL.into(), digest);
    definition.container_definitions = vec![container];
    definition
}

/// The sensor container of the task definition (no labels yet): registry mode, the
/// credentials as Secrets Manager or SSM references, the volumes mounted, logs to CloudWatch.
fn ecs_container(input: &DeploySensorInput) -> Container {
    let mut environment = vec![];
    if let Some(pod_url) = &input.pod_url {
        environment.push(NameValue {
            name: "POD_URL".into(),
            value: pod_url.clone(),
        });
    }
    Container {
        name: ECS_CONTAINER.into(),
        image: input.image().to_string(),
        essential: true,
        cpu: 10,
        memory: 512,
        command: vec![
            "--ecs-mode".into(),
            "--registry-sensor".into(),
            "--enable-console-logs".into(),
        ],
        environment,
        secrets: vec![
            SecretRef {
                name: "ACTIVATIONID".into(),
                value_from: input.activation_id_ref.clone(),
            },
            SecretRef {
                name: "CUSTOMERID".into(),
                value_from: input.customer_id_ref.clone(),
            },
        ],
        mount_points: ECS_VOLUMES
            .iter()
            .map(|(name, _, path, ro)| MountPoint {
                source_volume: name.to_string(),
                container_path: path.to_string(),
                read_only: *ro,
            })
            .collect(),
        log_configuration: ecs_log_configuration(input.region.clone().unwrap_or_default()),
        docker_labels: Default::default(),
    }
}

/// awslogs to `/qflows/<family>` in `region` (the group created when missing).
fn ecs_log_configuration(region: String) -> LogConfiguration {
    LogConfiguration {
        log_driver: "awslogs".into(),
        options: [
            ("awslogs-group", format!("/qflows/{ECS_FAMILY}")),
            ("awslogs-region", region),
            ("awslogs-stream-prefix", "qcs-sensor".into()),
            ("awslogs-create-group", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}

/// 64-bit FNV-1a of `bytes`, hex: stable across runs and builds.
fn digest(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The namespace of the sensor on Kubernetes.
pub const KUBE_NAMESPACE: &str = "qualys-sensor";
/// The DaemonSet (and ServiceAccount, role, …) name.
pub const KUBE_NAME: &str = "qualys-registry-sensor";

/// What differs between providers, in one place: node placement and the runtime socket.
struct Provider {
    /// Host path of the container runtime socket.
    runtime_socket: &'static str,
    /// `--container-runtime` argument.
    runtime: &'static str,
    /// Node selector.
    node_selector: Value,
    /// Tolerations.
    tolerations: Value,
}

fn provider(target: SensorTarget) -> Provider {
    let linux = json!({"kubernetes.io/os": "linux"});
    match target {
        SensorTarget::Aks => Provider {
            runtime_socket: "/run/containerd/containerd.sock",
            runtime: "containerd",
            node_selector: linux,
            // AKS system pools are tainted CriticalAddonsOnly; the sensor runs on them too.
            tolerations: json!([{"key": "CriticalAddonsOnly", "operator": "Exists"}]),
        },
        SensorTarget::Gke => Provider {
            runtime_socket: "/run/containerd/containerd.sock",
            runtime: "containerd",
            node_selector: linux,
            // GKE Sandbox nodes cannot host it; everything else may.
            tolerations: json!([]),
        },
        _ => Provider {
            runtime_socket: "/run/containerd/containerd.sock",
            runtime: "containerd",
            // Fargate nodes run no DaemonSets (their taint keeps the sensor off them).
            node_selector: linux,
            tolerations: json!([]),
        },
    }
}

fn secret_key_ref(reference: &str) -> Value {
    let (name, key) = reference.split_once(':').unwrap_or((reference, ""));
    json!({"secretKeyRef": {"name": name, "key": key}})
}

/// CPU the sensor container requests, in millicores (as the nelssec manifests,
/// docs/qualys-api.md §5).
pub const SENSOR_CPU_REQUEST_MILLI: u64 = 250;
/// Memory the sensor container requests, in MiB.
pub const SENSOR_MEMORY_REQUEST_MIB: u64 = 512;
/// The sensor container's CPU limit, in millicores.
pub const SENSOR_CPU_LIMIT_MILLI: u64 = 500;
/// The sensor container's memory limit, in MiB.
pub const SENSOR_MEMORY_LIMIT_MIB: u64 = 1024;
/// Sensor pods the namespace's ResourceQuota admits: one per node of the largest cluster
/// Kubernetes supports (5,000 nodes), plus room for the pods a rolling update is replacing
/// (a terminating pod counts until it is gone). A DaemonSet must never meet its quota: a pod it
/// cannot create leaves a node unscanned, silently.
pub const QUOTA_SENSOR_PODS: u64 = 5_100;
/// Seconds a new sensor pod must stay Ready before the DaemonSet counts it available (a
/// container that starts and dies within this is caught by the roll-out, not by Qualys).
pub const MIN_READY_SECONDS: u64 = 30;
/// Host directory of the sensor's data (its identity and scan state), as on ECS and in
/// Qualys' own DaemonSet: a pod re-created on the node is the same sensor to Qualys.
pub const HOST_SENSOR_DATA: &str = "/usr/local/qualys/sensor/data";
/// Host directory of the agent data (host ID) mounted under the data directory.
pub const HOST_AGENT_DATA: &str = "/etc/qualys";

/// A CPU quantity in the API server's canonical form (`4`, `250m`), so what is applied compares
/// equal to what is stored.
fn cpu(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// A memory quantity in canonical form (`512Mi`, `8Gi`).
fn memory(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}Gi", mib / 1024)
    } else {
        format!("{mib}Mi")
    }
}

/// The labels that let the namespace run the sensor under Pod Security Admission: it needs a
/// hostPath socket and SYS_ADMIN, which `baseline` and `restricted` refuse. `audit` and `warn`
/// follow, so a cluster-wide default cannot make the API server warn about or audit it either.
pub fn pod_security_labels() -> Value {
    json!({
        "pod-security.kubernetes.io/enforce": "privileged",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/audit": "privileged",
        "pod-security.kubernetes.io/audit-version": "latest",
        "pod-security.kubernetes.io/warn": "privileged",
        "pod-security.kubernetes.io/warn-version": "latest",
    })
}

/// The sensor's Kubernetes objects, in apply order: namespace (Pod Security `privileged`),
/// ServiceAccount, ClusterRole and binding, NetworkPolicy (egress DNS, HTTPS, the API server
/// and the input's extra ports only; no ingress), ResourceQuota (sized never to bind on the
/// DaemonSet, [`QUOTA_SENSOR_PODS`]), LimitRange, PodDisruptionBudget and the hardened
/// DaemonSet (last). The credentials are `secretKeyRef`s to a Secret the operator manages: their
/// values never pass through qflows.
pub fn kube_manifests(input: &DeploySensorInput) -> Vec<Value> {
    let ns = KUBE_NAMESPACE;
    let mut namespace_labels = sensor_labels();
    if let (Some(all), Some(psa)) = (
        namespace_labels.as_object_mut(),
        pod_security_labels().as_object(),
    ) {
        all.extend(psa.clone());
    }
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": namespace_labels}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(true),
            "automountServiceAccountToken": true}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": metadata(false),
            "rules": [{"apiGroups": [""], "resources": ["pods", "nodes", "namespaces"],
                       "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": metadata(false),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": KUBE_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": KUBE_NAME, "namespace": ns}]}),
        // No ingress rules with policy type Ingress denies all ingress.
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata(true),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": KUBE_NAME}},
            "policyTypes": ["Ingress", "Egress"],
            "egress": egress_rules(input)}}),
        resource_quota(),
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": metadata(true),
            "spec": {"limits": [{"type": "Container",
                "default": {"cpu": cpu(SENSOR_CPU_LIMIT_MILLI), "memory": memory(SENSOR_MEMORY_LIMIT_MIB)},
                "defaultRequest": {"cpu": cpu(SENSOR_CPU_REQUEST_MILLI), "memory": memory(SENSOR_MEMORY_REQUEST_MIB)}}]}}),
        // Voluntary disruptions (node drains, upgrades) take at most one sensor pod at a time.
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(true),
            "spec": {"maxUnavailable": 1,
                     "selector": {"matchLabels": {"app.kubernetes.io/name": KUBE_NAME}}}}),
        daemonset(input),
    ]
}

/// The labels of every sensor object (and of its pods).
fn sensor_labels() -> Value {
    json!({"app.kubernetes.io/name": KUBE_NAME, "app.kubernetes.io/managed-by": "qflows"})
}

/// A sensor object's metadata: its name and labels, and the namespace when `namespaced`.
fn metadata(namespaced: bool) -> Value {
    let mut m = json!({"name": KUBE_NAME, "labels": sensor_labels()});
    if namespaced {
        m["namespace"] = json!(KUBE_NAMESPACE);
    }
    m
}

/// The NetworkPolicy's egress: DNS, HTTPS, the API server, and the input's extra ports.
fn egress_rules(input: &DeploySensorInput) -> Vec<Value> {
    let mut egress = vec![
        json!({"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}),
        json!({"ports": [{"protocol": "TCP", "port": 443}]}),
        json!({"ports": [{"protocol": "TCP", "port": 6443}]}),
    ];
    if !input.extra_egress_ports.is_empty() {
        let ports: Vec<Value> = input
            .extra_egress_ports
            .iter()
            .map(|e| json!({"protocol": e.protocol, "port": e.port}))
            .collect();
        egress.push(json!({ "ports": ports }));
    }
    egress
}

/// The namespace's ResourceQuota: room for [`QUOTA_SENSOR_PODS`] sensor pods.
fn resource_quota() -> Value {
    let pods = QUOTA_SENSOR_PODS;
    json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": metadata(true),
        "spec": {"hard": {
            "requests.cpu": cpu(pods * SENSOR_CPU_REQUEST_MILLI),
            "requests.memory": memory(pods * SENSOR_MEMORY_REQUEST_MIB),
            "limits.cpu": cpu(pods * SENSOR_CPU_LIMIT_MILLI),
            "limits.memory": memory(pods * SENSOR_MEMORY_LIMIT_MIB),
            "pods": pods.to_string()}}})
}

/// The sensor DaemonSet: one pod a node (the provider's placement), rolled one at a time, the
/// runtime socket and the sensor's host directories mounted.
fn daemonset(input: &DeploySensorInput) -> Value {
    let p = provider(input.target);
    let container = sensor_container(input, &p);
    // No host network, PID or IPC: left unset (false), as the API server stores them.
    let mut daemonset = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": metadata(true),
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": KUBE_NAME}},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "minReadySeconds": MIN_READY_SECONDS,
        "template": {
            "metadata": {"labels": sensor_labels()},
            "spec": {
                "serviceAccountName": KUBE_NAME,
                "nodeSelector": p.node_selector,
                "tolerations": p.tolerations,
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [
                    {"name": "runtime-socket", "hostPath": {"path": p.runtime_socket, "type": "Socket"}},
                    {"name": "persistent-volume", "hostPath": {"path": HOST_SENSOR_DATA, "type": "DirectoryOrCreate"}},
                    {"name": "agent-volume", "hostPath": {"path": HOST_AGENT_DATA, "type": "DirectoryOrCreate"}}
                ]
            }
        }
    }});
    // Empty lists are not stored by the API server: leave them out so applied == stored.
    if let Some(pod) = daemonset["spec"]["template"]["spec"].as_object_mut()
        && pod["tolerations"].as_array().is_some_and(Vec::is_empty)
    {
        pod.remove("tolerations");
    }
    daemonset
}

/// The DaemonSet's sensor container, hardened: no privilege, only the capabilities it needs,
/// not Ready until its credentials and data directory are usable.
fn sensor_container(input: &DeploySensorInput, p: &Provider) -> Value {
    let mut env = vec![
        json!({"name": "ACTIVATIONID", "valueFrom": secret_key_ref(&input.activation_id_ref)}),
        json!({"name": "CUSTOMERID", "valueFrom": secret_key_ref(&input.customer_id_ref)}),
    ];
    if let Some(pod_url) = &input.pod_url {
        env.push(json!({"name": "POD_URL", "value": pod_url}));
    }
    json!({
        "name": "qualys-container-sensor",
        "image": input.image(),
        "args": ["--k8s-mode", "--registry-sensor", "--container-runtime", p.runtime,
                 "--enable-console-logs"],
        "env": env,
        "resources": {"requests": {"cpu": cpu(SENSOR_CPU_REQUEST_MILLI),
                                   "memory": memory(SENSOR_MEMORY_REQUEST_MIB)},
                      "limits": {"cpu": cpu(SENSOR_CPU_LIMIT_MILLI),
                                 "memory": memory(SENSOR_MEMORY_LIMIT_MIB)}},
        // Not Ready while a credential is empty (an External Secrets template
        // that rendered nothing) or the data directory is not writable: such a
        // pod would start and never register.
        "readinessProbe": {
            "exec": {"command": ["/bin/sh", "-c", READINESS_CHECK]},
            "initialDelaySeconds": 5,
            "periodSeconds": 20,
            "failureThreshold": 3
        },
        "securityContext": {
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "seccompProfile": {"type": "RuntimeDefault"},
            "capabilities": {"drop": ["ALL"],
                             "add": ["SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"]}
        },
        "volumeMounts": [
            {"name": "runtime-socket", "mountPath": p.runtime_socket, "readOnly": true},
            {"name": "persistent-volume", "mountPath": "/usr/local/qualys/qpa/data"},
            {"name": "agent-volume", "mountPath": "/usr/local/qualys/qpa/data/conf/agent-data"}
        ]
    })
}

/// The readiness check: both credentials non-empty, the data directory writable.
pub const READINESS_CHECK: &str =
    r#"test -n "$ACTIVATIONID" && test -n "$CUSTOMERID" && test -w /usr/local/qualys/qpa/data"#;

/// What `qflows sensor render` prints: the task definition as JSON for ECS, the manifests as a
/// multi-document YAML stream for Kubernetes.
pub fn render(input: &DeploySensorInput) -> Result<String, RenderError> {
    match input.target {
        SensorTarget::Ecs => Ok(serde_json::to_string_pretty(&ecs_task_definition(input))?),
        _ => {
            let mut out = String::new();
            for m in kube_manifests(input) {
                out.push_str("---\n");
                out.push_str(&serde_yaml_ng::to_string(&m)?);
            }
            Ok(out)
        }
    }
}

/// Rendering failed (serialisation only).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// JSON.
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// YAML.
    #[error("rendering YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> DeploySensorInput {
        serde_json::from_value(serde_json::json!({"target": "ecs", "cluster": "c",
            "region": "eu-west-1", "activationIdRef": "arn:a", "customerIdRef": "arn:c"}))
        .unwrap()
    }

    #[test]
    fn secrets_are_references_and_the_digest_follows_the_spec() {
        let td = ecs_task_definition(&input());
        let c = &td.container_definitions[0];
        assert_eq!(c.secrets[0].value_from, "arn:a");
        assert!(c.command.contains(&"--registry-sensor".to_string()));
        let mut other = input();
        other.image = Some("x/y:1".into());
        assert_eq!(other.target, SensorTarget::Ecs);
        let d2 = ecs_task_definition(&other);
        assert_ne!(
            c.docker_labels[SPEC_LABEL],
            d2.container_definitions[0].docker_labels[SPEC_LABEL]
        );
        assert_eq!(ecs_task_definition(&input()), td);
    }
}

#[cfg(test)]
mod kube_tests {
    use super::*;

    fn input(target: &str) -> DeploySensorInput {
        serde_json::from_value(json!({"target": target, "cluster": "c",
            "activationIdRef": "creds:activation-id", "customerIdRef": "creds:customer-id"}))
        .unwrap()
    }

    #[test]
    fn every_provider_gets_the_hardened_daemonset_and_differs_only_in_placement() {
        for target in ["eks", "aks", "gke"] {
            let manifests = kube_manifests(&input(target));
            let kinds: Vec<_> = manifests
                .iter()
                .map(|m| m["kind"].as_str().unwrap())
                .collect();
            assert_eq!(
                kinds,
                [
                    "Namespace",
                    "ServiceAccount",
                    "ClusterRole",
                    "ClusterRoleBinding",
                    "NetworkPolicy",
                    "ResourceQuota",
                    "LimitRange",
                    "PodDisruptionBudget",
                    "DaemonSet"
                ]
            );
            let pod = &manifests[8]["spec"]["template"]["spec"];
            let sc = &pod["containers"][0]["securityContext"];
            assert_eq!(sc["privileged"], json!(false));
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
            let env = &pod["containers"][0]["env"][0];
            assert_eq!(
                env["valueFrom"]["secretKeyRef"],
                json!({"name": "creds", "key": "activation-id"})
            );
            let tolerations = pod.get("tolerations").cloned().unwrap_or(json!([]));
            assert_eq!(tolerations.as_array().unwrap().is_empty(), target != "aks");
        }
        let yaml = render(&input("gke")).unwrap();
        assert_eq!(yaml.matches("---\n").count(), 9);
    }

    /// `250m` → 250, `4` → 4000 (millicores); `512Mi` → 512, `8Gi` → 8192 (MiB).
    fn milli(q: &str) -> u64 {
        match q.strip_suffix('m') {
            Some(m) => m.parse().unwrap(),
            None => q.parse::<u64>().unwrap() * 1000,
        }
    }
    fn mib(q: &str) -> u64 {
        match (q.strip_suffix("Mi"), q.strip_suffix("Gi")) {
            (Some(m), _) => m.parse().unwrap(),
            (_, Some(g)) => g.parse::<u64>().unwrap() * 1024,
            _ => panic!("unexpected quantity {q}"),
        }
    }

    #[test]
    fn the_quota_admits_a_sensor_on_every_node_of_a_large_cluster() {
        let manifests = kube_manifests(&input("eks"));
        let quota = &manifests[5]["spec"]["hard"];
        let pod = &manifests[8]["spec"]["template"]["spec"]["containers"][0]["resources"];
        for nodes in [17, 500, 5_000] {
            assert!(quota["pods"].as_str().unwrap().parse::<u64>().unwrap() > nodes);
            for (bound, key) in [("requests", "cpu"), ("limits", "cpu")] {
                let each = milli(pod[bound][key].as_str().unwrap());
                let hard = milli(quota[format!("{bound}.{key}")].as_str().unwrap());
                // One pod more than nodes: the one a rolling update is replacing.
                assert!((nodes + 1) * each <= hard, "{nodes} nodes: {bound}.{key}");
            }
            for bound in ["requests", "limits"] {
                let each = mib(pod[bound]["memory"].as_str().unwrap());
                let hard = mib(quota[format!("{bound}.memory")].as_str().unwrap());
                assert!((nodes + 1) * each <= hard, "{nodes} nodes: {bound}.memory");
            }
        }
        // The quantities are in the API server's canonical form (so a re-apply writes nothing).
        assert_eq!(quota["requests.cpu"], "1275");
        assert_eq!(quota["requests.memory"], "2550Gi");
        assert_eq!(pod["requests"]["cpu"], "250m");
        assert_eq!(pod["limits"]["memory"], "1Gi");
    }

    #[test]
    fn the_namespace_is_privileged_and_the_sensor_keeps_its_identity_on_the_node() {
        let manifests = kube_manifests(&input("aks"));
        let labels = &manifests[0]["metadata"]["labels"];
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(
                labels[format!("pod-security.kubernetes.io/{mode}")],
                "privileged"
            );
        }
        let ds = &manifests[8]["spec"];
        assert_eq!(ds["minReadySeconds"], MIN_READY_SECONDS);
        let pod = &ds["template"]["spec"];
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(volumes.iter().all(|v| v.get("emptyDir").is_none()));
        let data = volumes
            .iter()
            .find(|v| v["name"] == "persistent-volume")
            .unwrap();
        assert_eq!(
            data["hostPath"],
            json!({"path": HOST_SENSOR_DATA, "type": "DirectoryOrCreate"})
        );
        let probe = &pod["containers"][0]["readinessProbe"]["exec"]["command"];
        assert!(
            probe[2]
                .as_str()
                .unwrap()
                .contains(r#"test -n "$ACTIVATIONID""#)
        );
    }

    #[test]
    fn extra_egress_ports_open_only_what_is_named() {
        let mut with_ports = input("eks");
        with_ports.extra_egress_ports = vec![
            qflows_workflows::sensor::model::EgressPort {
                port: 5000,
                protocol: "TCP".into(),
            },
            qflows_workflows::sensor::model::EgressPort {
                port: 3128,
                protocol: "TCP".into(),
            },
        ];
        let egress = &kube_manifests(&with_ports)[4]["spec"]["egress"];
        assert_eq!(egress.as_array().unwrap().len(), 4);
        assert_eq!(
            egress[3],
            json!({"ports": [{"protocol": "TCP", "port": 5000}, {"protocol": "TCP", "port": 3128}]})
        );
        let plain = &kube_manifests(&input("eks"))[4]["spec"]["egress"];
        assert_eq!(plain.as_array().unwrap().len(), 3);
        let bad: Result<DeploySensorInput, _> = qflows_workflows::input::parse(json!({
            "target": "eks", "cluster": "c", "activationIdRef": "s:a", "customerIdRef": "s:c",
            "extraEgressPorts": [{"port": 70000}]}));
        assert_eq!(bad.unwrap_err().field, "extraEgressPorts[0].port");
    }
}
