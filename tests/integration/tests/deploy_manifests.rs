//! `deploy/kubernetes/`: every manifest is accepted by a real kube-apiserver (server-side apply,
//! dry run), a broken copy is refused, and the security settings of both Deployments are what
//! deploy/README.md promises, read back from the server's answer field by field.
//!
//! Needs `QFLOWS_ETCD` and `QFLOWS_KUBE_APISERVER` (`eval "$(scripts/kube-testbed --env)"`).

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{self, Scope};
use qflows_integration::kube::KubeApiServer;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The field manager of the dry runs (as `kubectl apply --server-side --field-manager qflows`).
const MANAGER: &str = "qflows";

/// The namespace the manifests (and kustomization.yaml) use.
const NAMESPACE: &str = "qflows";

/// Words that mark an environment variable as secret: such a variable must come from a Secret.
const SECRET_WORDS: [&str; 4] = ["KEY", "PASSWORD", "SECRET", "TOKEN"];

/// Variables whose names contain a secret word but hold no secret.
/// Names that look secret but are not: a header name, and the path of the mounted TLS key (the
/// key itself is in the Secret volume).
const NOT_SECRET: [&str; 2] = [
    "QFLOWS_BRIDGE_API_KEY_HEADER",
    "QFLOWS_ADMISSION_TLS_KEY_FILE",
];

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// One document of one manifest file.
struct Manifest {
    file: String,
    object: Value,
}

impl Manifest {
    fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every YAML document of every `*.yaml` in deploy/kubernetes except kustomization.yaml (which is
/// kustomize's input, not a Kubernetes object), and the names of the files read.
fn read_manifests() -> anyhow::Result<(Vec<Manifest>, Vec<String>)> {
    let mut files: Vec<String> = std::fs::read_dir(manifests_dir())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    files.retain(|f| f.ends_with(".yaml") || f.ends_with(".yml"));
    files.retain(|f| f != "kustomization.yaml");
    files.sort();
    let mut manifests = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(manifests_dir().join(file))?;
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let object = Value::deserialize(document)?;
            if object.is_null() {
                continue;
            }
            manifests.push(Manifest {
                file: file.clone(),
                object,
            });
        }
    }
    Ok((manifests, files))
}

/// The manifest of `kind` named `name`.
fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> &'a Value {
    &manifests
        .iter()
        .find(|m| m.kind() == kind && m.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
        .object
}

/// An API server of 1.20 serves PodDisruptionBudget only as policy/v1beta1 (policy/v1 came in
/// 1.21 and is the only version from 1.25 on, so the manifest says policy/v1). The fields the
/// manifest uses (`minAvailable`, `selector.matchLabels`) are the same in both versions.
const PDB_FALLBACK: (&str, &str) = ("policy/v1", "policy/v1beta1");

/// Dry-run applies `object` and returns the server's answer (the object as it would be stored,
/// defaults filled in), or the API error.
async fn dry_run_apply(client: &kube::Client, object: &Value) -> anyhow::Result<Value> {
    let mut object = object.clone();
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), api_version.clone()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, &kind);
    let (resource, capabilities) = match discovery::pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(_) if api_version == PDB_FALLBACK.0 && kind == "PodDisruptionBudget" => {
            object["apiVersion"] = json!(PDB_FALLBACK.1);
            let gvk = GroupVersionKind::gvk("policy", "v1beta1", &kind);
            discovery::pinned_kind(client, &gvk).await?
        }
        Err(e) => anyhow::bail!("the server does not serve {api_version} {kind}: {e}"),
    };
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(NAMESPACE);
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let name = object["metadata"]["name"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("{kind} without metadata.name"))?
        .to_owned();
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).dry_run(),
            &Patch::Apply(&object),
        )
        .await?;
    Ok(serde_json::to_value(applied)?)
}

/// The HTTP status of a refused API call.
fn refused_status(result: anyhow::Result<Value>) -> u16 {
    match result {
        Err(e) => match e.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(status)) => status.code,
            _ => panic!("expected an API error, got {e:#}"),
        },
        Ok(v) => panic!("the server accepted a broken object: {v:#}"),
    }
}

/// Asserts the pod-level and container-level security settings both Deployments share.
fn assert_locked_down(deployment: &Value, what: &str) {
    let pod = &deployment["spec"]["template"]["spec"];
    let pod_security = &pod["securityContext"];
    assert_eq!(
        pod_security["runAsNonRoot"],
        json!(true),
        "{what}: pod runAsNonRoot"
    );
    let uid = pod_security["runAsUser"].as_i64().unwrap_or(0);
    assert!(
        uid > 0,
        "{what}: pod runAsUser must be a numeric non-root UID, got {uid}"
    );
    assert_eq!(
        pod_security["seccompProfile"]["type"],
        json!("RuntimeDefault"),
        "{what}: pod seccomp"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert!(!containers.is_empty(), "{what}: no containers");
    for container in containers {
        let name = container["name"].as_str().unwrap_or("?");
        let security = &container["securityContext"];
        let at = format!("{what}/{name}");
        assert_eq!(security["runAsNonRoot"], json!(true), "{at}: runAsNonRoot");
        assert_eq!(security["runAsUser"].as_i64(), Some(uid), "{at}: runAsUser");
        assert_eq!(
            security["readOnlyRootFilesystem"],
            json!(true),
            "{at}: readOnlyRootFilesystem"
        );
        assert_eq!(
            security["allowPrivilegeEscalation"],
            json!(false),
            "{at}: allowPrivilegeEscalation"
        );
        assert_eq!(security["privileged"], json!(false), "{at}: privileged");
        assert_eq!(
            security["capabilities"]["drop"],
            json!(["ALL"]),
            "{at}: capabilities.drop"
        );
        assert!(
            security["capabilities"]["add"].is_null(),
            "{at}: adds capabilities"
        );
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][bound][resource].is_string(),
                    "{at}: resources.{bound}.{resource} missing"
                );
            }
        }
        // Read-only root: /tmp is a writable emptyDir.
        let tmp = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == json!("/tmp"))
            .unwrap_or_else(|| panic!("{at}: no /tmp mount"));
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == tmp["name"])
            .unwrap_or_else(|| panic!("{at}: no volume {}", tmp["name"]));
        assert!(
            volume["emptyDir"].is_object(),
            "{at}: /tmp is not an emptyDir"
        );
        assert_secrets_by_reference(container, &at);
    }
}

/// Every variable whose name looks secret comes from a Secret (`secretKeyRef`), never a literal;
/// `envFrom` names only ConfigMaps and Secrets.
fn assert_secrets_by_reference(container: &Value, at: &str) {
    for env in container["env"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().unwrap_or_default();
        let looks_secret =
            SECRET_WORDS.iter().any(|w| name.contains(w)) && !NOT_SECRET.contains(&name);
        if looks_secret {
            assert!(
                env.get("value").is_none(),
                "{at}: {name} has a literal value; secrets must come from a Secret"
            );
            assert!(
                env["valueFrom"]["secretKeyRef"]["name"].is_string()
                    && env["valueFrom"]["secretKeyRef"]["key"].is_string(),
                "{at}: {name} is not a secretKeyRef: {env}"
            );
        }
    }
    for source in container["envFrom"].as_array().into_iter().flatten() {
        assert!(
            source["configMapRef"]["name"].is_string() || source["secretRef"]["name"].is_string(),
            "{at}: envFrom {source}"
        );
    }
}

/// The container port named by a probe's `httpGet.port` (a name or a number).
fn probe_port(container: &Value, probe: &str) -> i64 {
    let port = &container[probe]["httpGet"]["port"];
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = port
        .as_str()
        .unwrap_or_else(|| panic!("{probe}: no httpGet.port"));
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == json!(name))
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("{probe}: no container port named {name}"))
}

/// The literal `value` of the container's variable `name`.
fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == json!(name))?["value"]
        .as_str()
}

#[tokio::test]
async fn kubernetes_manifests_pass_a_server_side_dry_run_and_are_locked_down() -> anyhow::Result<()>
{
    let (manifests, files) = read_manifests()?;
    assert!(
        manifests.len() >= 10,
        "only {} objects read",
        manifests.len()
    );

    // kustomization.yaml lists every manifest file and puts everything in the namespace.
    let kustomization: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(
        manifests_dir().join("kustomization.yaml"),
    )?)?;
    assert_eq!(kustomization["namespace"], json!(NAMESPACE));
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed, files,
        "kustomization.yaml resources vs the files in deploy/kubernetes"
    );
    for manifest in &manifests {
        let namespace = &manifest.object["metadata"]["namespace"];
        assert!(
            namespace.is_null() || *namespace == json!(NAMESPACE),
            "{} {}: namespace {namespace}",
            manifest.file,
            manifest.name()
        );
    }

    let server = KubeApiServer::start().await?;
    let client = server.client().await?;
    let namespace =
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE } });
    Api::<Namespace>::all(client.clone())
        .patch(
            NAMESPACE,
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&namespace),
        )
        .await?;

    // Every object: accepted by the server, and only dry-run (nothing is stored).
    let mut answers: BTreeMap<(String, String), Value> = BTreeMap::new();
    for manifest in &manifests {
        let answer = dry_run_apply(&client, &manifest.object)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: {} {} refused: {e:#}",
                    manifest.file,
                    manifest.kind(),
                    manifest.name()
                )
            })?;
        assert_eq!(answer["metadata"]["name"], json!(manifest.name()));
        answers.insert(
            (manifest.kind().to_owned(), manifest.name().to_owned()),
            answer,
        );
    }
    let kinds: Vec<&str> = manifests.iter().map(Manifest::kind).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ClusterRole",
        "ClusterRoleBinding",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in deploy/kubernetes");
    }
    let deployments =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), NAMESPACE);
    assert!(
        deployments
            .list(&Default::default())
            .await?
            .items
            .is_empty(),
        "a dry run stored a Deployment"
    );

    // The check can fail: broken copies are refused.
    let worker = find(&manifests, "Deployment", "qflows-worker");
    let mut negative = worker.clone();
    negative["spec"]["replicas"] = json!(-1);
    assert_eq!(refused_status(dry_run_apply(&client, &negative).await), 422);
    let mut bad_probe = worker.clone();
    bad_probe["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] =
        json!("no-such-port-name-is-this-long");
    assert_eq!(
        refused_status(dry_run_apply(&client, &bad_probe).await),
        422
    );
    let mut misspelt = worker.clone();
    misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] =
        json!(true);
    assert!(
        dry_run_apply(&client, &misspelt).await.is_err(),
        "a misspelt field was accepted"
    );

    // Both Deployments, as the server would store them.
    let worker = &answers[&("Deployment".into(), "qflows-worker".into())];
    let bridge = &answers[&("Deployment".into(), "qflows-bridge".into())];
    assert_locked_down(worker, "qflows-worker");
    assert_locked_down(bridge, "qflows-bridge");

    // Worker: `qflows worker`, probes on its metrics endpoint, drains within the grace period.
    let pod = &worker["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(["worker"]));
    assert_eq!(pod["serviceAccountName"], json!("qflows-worker"));
    let config = find(&manifests, "ConfigMap", "qflows-worker");
    let metrics_listen = config["data"]["QFLOWS_METRICS_LISTEN"]
        .as_str()
        .expect("QFLOWS_METRICS_LISTEN");
    let metrics_port: i64 = metrics_listen.rsplit(':').next().expect("port").parse()?;
    assert!(
        metrics_listen.starts_with("0.0.0.0:"),
        "metrics must listen beyond loopback: {metrics_listen}"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["path"],
            json!("/metrics"),
            "worker {probe}"
        );
        assert_eq!(
            probe_port(container, probe),
            metrics_port,
            "worker {probe} port"
        );
    }
    let grace: i64 = config["data"]["QFLOWS_SHUTDOWN_GRACE_SECS"]
        .as_str()
        .expect("grace")
        .parse()?;
    let termination = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination > grace,
        "terminationGracePeriodSeconds {termination} <= QFLOWS_SHUTDOWN_GRACE_SECS {grace}"
    );
    let secret_names: Vec<&str> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["valueFrom"]["secretKeyRef"].is_object())
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in ["QUALYS_USERNAME", "QUALYS_PASSWORD", "QUALYS_API_TOKEN"] {
        assert!(
            secret_names.contains(&name),
            "worker: {name} is not from a Secret"
        );
    }
    // The RBAC for CdrToPolicy binds the worker's ServiceAccount.
    let binding = find(&manifests, "ClusterRoleBinding", "qflows-tracingpolicies");
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": "qflows-worker", "namespace": NAMESPACE }])
    );
    // The inventory of this cluster may list pods, and do nothing else.
    let binding = find(&manifests, "ClusterRoleBinding", "qflows-inventory");
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": "qflows-worker", "namespace": NAMESPACE }])
    );
    let role = find(&manifests, "ClusterRole", "qflows-inventory");
    assert_eq!(
        role["rules"],
        json!([{ "apiGroups": [""], "resources": ["pods"], "verbs": ["list"] }])
    );

    // Bridge: `qflows bridge` on 0.0.0.0:8089, /healthz and /readyz, key from a Secret.
    let pod = &bridge["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(["bridge"]));
    assert_eq!(pod["serviceAccountName"], json!("qflows-bridge"));
    assert_eq!(pod["automountServiceAccountToken"], json!(false));
    assert_eq!(
        env_value(container, "QFLOWS_BRIDGE_LISTEN"),
        Some("0.0.0.0:8089")
    );
    assert_eq!(container["ports"][0]["containerPort"], json!(8089));
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        json!("/healthz")
    );
    assert_eq!(probe_port(container, "livenessProbe"), 8089);
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        json!("/readyz")
    );
    assert_eq!(probe_port(container, "readinessProbe"), 8089);
    let key = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == json!("QFLOWS_BRIDGE_KEY"))
        .expect("QFLOWS_BRIDGE_KEY");
    assert_eq!(
        key["valueFrom"]["secretKeyRef"],
        json!({ "name": "qflows-bridge", "key": "QFLOWS_BRIDGE_KEY" })
    );
    let service = &answers[&("Service".into(), "qflows-bridge".into())];
    assert_eq!(service["spec"]["ports"][0]["port"], json!(8089));
    assert_eq!(
        service["spec"]["selector"],
        bridge["spec"]["selector"]["matchLabels"]
    );
    let pdb = &answers[&("PodDisruptionBudget".into(), "qflows-bridge".into())];
    assert_eq!(pdb["spec"]["selector"], bridge["spec"]["selector"]);
    assert_eq!(pdb["spec"]["minAvailable"], json!(1));

    // The bridge's NetworkPolicy admits 8089 only.
    let policy = &answers[&("NetworkPolicy".into(), "qflows-bridge".into())];
    assert_eq!(policy["spec"]["podSelector"], bridge["spec"]["selector"]);
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{ "ports": [{ "port": 8089, "protocol": "TCP" }] }])
    );
    let egress_ports: Vec<i64> = policy["spec"]["egress"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    assert_eq!(egress_ports, [53, 53, 7233, 443]);

    // ConfigMaps carry no secrets.
    for manifest in manifests.iter().filter(|m| m.kind() == "ConfigMap") {
        for name in manifest.object["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(
                !SECRET_WORDS.iter().any(|w| name.contains(w))
                    || NOT_SECRET.contains(&name.as_str()),
                "ConfigMap {}: {name} looks like a secret",
                manifest.name()
            );
        }
    }
    // Every variable the manifests set is one qflows reads: it rejects unknown QFLOWS_* names
    // at start-up, so a typo here would crash-loop the pods.
    let mut variables: Vec<(String, Option<String>)> = Vec::new();
    for manifest in &manifests {
        if manifest.kind() == "ConfigMap" {
            variables.extend(
                manifest.object["data"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned))),
            );
        }
        for container in manifest.object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            variables.extend(
                container["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        let name = e["name"].as_str()?.to_owned();
                        Some((name, e["value"].as_str().map(str::to_owned)))
                    }),
            );
        }
    }
    assert!(variables.iter().any(|(v, _)| v == "QFLOWS_BRIDGE_KEY"));
    assert_variables_known(&variables)?;

    // No Secret objects with values in git.
    assert!(
        !kinds.contains(&"Secret"),
        "deploy/kubernetes holds a Secret"
    );
    Ok(())
}

/// Runs `qflows` with `variables` set (their manifest values, or a placeholder for those from a
/// Secret) and checks it gets past its unknown-variable check: the known variables come from its
/// command line, so only the binary can tell. `policy generate` of a missing file is an offline
/// command that fails right after the check.
fn assert_variables_known(variables: &[(String, Option<String>)]) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let mut command = std::process::Command::new(qflows_integration::qflows_bin()?);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["policy", "generate", "--findings"])
        .arg(dir.join("absent.json"))
        .arg("--output")
        .arg(dir.join("out"));
    for (name, value) in variables {
        command.env(name, value.as_deref().unwrap_or("placeholder"));
    }
    let out = command.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "policy generate of a missing file succeeded"
    );
    assert!(
        !stderr.contains("unknown variable"),
        "qflows refuses a variable the manifests set: {stderr}"
    );
    assert!(
        stderr.contains("absent.json"),
        "qflows stopped before reading the findings (not the error expected): {stderr}"
    );
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("qflows-manifest-vars-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The trigger metadata keys of KEDA's `temporal` scaler (kedacore/keda v2.20,
/// pkg/scalers/temporal_scaler.go: its own keys, and `<key>FromEnv` for those it also resolves
/// from the target container's environment). KEDA ignores keys it does not know, so a misspelt
/// one would silently fall back to a default: only these may appear.
const TEMPORAL_TRIGGER_PARAMETERS: [&str; 25] = [
    "endpoint",
    "endpointFromEnv",
    "namespace",
    "namespaceFromEnv",
    "activationTargetQueueSize",
    "targetQueueSize",
    "taskQueue",
    "taskQueueFromEnv",
    "queueTypes",
    "buildId",
    "buildIdFromEnv",
    "workerDeploymentName",
    "workerDeploymentNameFromEnv",
    "workerDeploymentBuildId",
    "workerDeploymentBuildIdFromEnv",
    "selectAllActive",
    "selectUnversioned",
    "includeRunningWorkflowCount",
    "workflowTaskQueueForCount",
    "workflowTaskQueueForCountFromEnv",
    "apiKeyFromEnv",
    "minConnectTimeout",
    "enableTLS",
    "unsafeSsl",
    "tlsServerName",
];

/// The queues `qflows worker` polls for a `QFLOWS_TASK_QUEUE` (workers/src/worker.rs): deploys,
/// the ImageScan entities, rescans, EnsureRegistry and QScanner runs.
/// `dashboard_metrics_and_autoscaler_queues_are_a_live_worker_s` in tests/operations.rs checks
/// the triggers against the pollers of a running worker.
fn worker_task_queues(task_queue: &str) -> Vec<String> {
    vec![
        task_queue.to_string(),
        qflows_workflows::scan::model::entity_task_queue(task_queue),
        format!("{task_queue}-rescan"),
        format!("{task_queue}-registry"),
        format!("{task_queue}-qscanner"),
    ]
}

/// The value of `name` in the worker container as KEDA resolves it: its `env` (literal, or a
/// Secret reference, reported as `secret:<name>/<key>`), then its `envFrom` ConfigMaps.
fn resolve_env(manifests: &[Manifest], container: &Value, name: &str) -> Option<String> {
    if let Some(env) = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == json!(name))
    {
        if let Some(value) = env["value"].as_str() {
            return Some(value.to_string());
        }
        let secret = &env["valueFrom"]["secretKeyRef"];
        return Some(format!(
            "secret:{}/{}",
            secret["name"].as_str()?,
            secret["key"].as_str()?
        ));
    }
    container["envFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|source| source["configMapRef"]["name"].as_str())
        .find_map(|map| {
            find(manifests, "ConfigMap", map)["data"][name]
                .as_str()
                .map(str::to_string)
        })
}

/// `value` with every JSON-patch `remove` of `patch` (a YAML list of operations) applied; any
/// other operation, or a path that does not exist (which kustomize refuses), is an error.
fn apply_removals(value: &Value, patch: &str) -> anyhow::Result<Value> {
    let mut value = value.clone();
    let operations: Vec<Value> = serde_yaml_ng::from_str(patch)?;
    anyhow::ensure!(!operations.is_empty(), "an empty patch");
    for operation in operations {
        anyhow::ensure!(
            operation["op"] == json!("remove"),
            "only `remove` is expected: {operation}"
        );
        let path = operation["path"].as_str().unwrap_or_default();
        let (parent, last) = path
            .rsplit_once('/')
            .ok_or_else(|| anyhow::anyhow!("not a JSON pointer: {path}"))?;
        let removed = value
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .and_then(|object| object.remove(last));
        anyhow::ensure!(removed.is_some(), "{path} does not exist in the base");
    }
    Ok(value)
}

/// The path of the first value of `given` that `answer` lacks or holds differently (objects may
/// have more keys in `answer`).
fn missing(given: &Value, answer: &Value, path: &str) -> Option<String> {
    match (given, answer) {
        (Value::Object(given), Value::Object(answer)) => given.iter().find_map(|(k, v)| {
            let path = format!("{path}.{k}");
            match answer.get(k) {
                Some(a) => missing(v, a, &path),
                None => Some(path),
            }
        }),
        (Value::Array(given), Value::Array(answer)) if given.len() == answer.len() => given
            .iter()
            .zip(answer)
            .enumerate()
            .find_map(|(i, (g, a))| missing(g, a, &format!("{path}[{i}]"))),
        _ => (given != answer).then(|| path.to_string()),
    }
}

#[tokio::test]
async fn keda_scaled_object_passes_a_dry_run_and_scales_the_worker_on_its_queues()
-> anyhow::Result<()> {
    let (manifests, _) = read_manifests()?;
    let keda_dir = manifests_dir().join("keda");

    // The overlay: the base, the ScaledObject, and the worker without a fixed replica count.
    let kustomization: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(
        keda_dir.join("kustomization.yaml"),
    )?)?;
    assert_eq!(
        kustomization["resources"],
        json!(["..", "worker-scaledobject.yaml"])
    );
    let mut files: Vec<String> = std::fs::read_dir(&keda_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert_eq!(files, ["kustomization.yaml", "worker-scaledobject.yaml"]);
    let patches = kustomization["patches"].as_array().expect("patches");
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(
        patches[0]["target"],
        json!({ "group": "apps", "version": "v1", "kind": "Deployment", "name": "qflows-worker" })
    );
    let base_worker = find(&manifests, "Deployment", "qflows-worker");
    let worker = apply_removals(base_worker, patches[0]["patch"].as_str().expect("patch"))?;
    assert!(worker["spec"].get("replicas").is_none());

    let text = std::fs::read_to_string(keda_dir.join("worker-scaledobject.yaml"))?;
    let scaled_object: Value = serde_yaml_ng::from_str(&text)?;
    assert_eq!(scaled_object["apiVersion"], json!("keda.sh/v1alpha1"));
    assert_eq!(scaled_object["kind"], json!("ScaledObject"));
    assert_eq!(scaled_object["metadata"]["namespace"], json!(NAMESPACE));
    let spec = &scaled_object["spec"];

    // It scales the worker Deployment and reads the worker container's environment.
    let container = &worker["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        spec["scaleTargetRef"],
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": worker["metadata"]["name"],
            "envSourceContainerName": container["name"],
        })
    );
    // KEDA's CEL rule (1.20 has no CEL) and the bounds deploy/README.md promises: never to zero.
    let min = spec["minReplicaCount"].as_i64().expect("minReplicaCount");
    let max = spec["maxReplicaCount"].as_i64().expect("maxReplicaCount");
    assert!(1 <= min && min <= max, "replicas {min}..{max}");
    let fallback = spec["fallback"]["replicas"].as_i64().expect("fallback");
    assert!((min..=max).contains(&fallback), "fallback {fallback}");

    // One `temporal` trigger per queue the worker polls, with parameters KEDA documents.
    let shared = find(&manifests, "ConfigMap", "qflows");
    let task_queue = shared["data"]["QFLOWS_TASK_QUEUE"].as_str().expect("queue");
    let mut queues = Vec::new();
    for trigger in spec["triggers"].as_array().expect("triggers") {
        assert_eq!(trigger["type"], json!("temporal"), "{trigger}");
        let metadata = trigger["metadata"].as_object().expect("metadata");
        for key in metadata.keys() {
            assert!(
                TEMPORAL_TRIGGER_PARAMETERS.contains(&key.as_str()),
                "{key} is not a parameter of KEDA's temporal scaler"
            );
        }
        let param = |key: &str| metadata.get(key).and_then(Value::as_str);
        // The endpoint and the API key as the worker has them.
        assert!(param("endpoint").is_none(), "endpoint: use endpointFromEnv");
        let endpoint = resolve_env(&manifests, container, param("endpointFromEnv").unwrap())
            .expect("endpointFromEnv names no variable of the worker");
        assert_eq!(
            Some(endpoint.as_str()),
            shared["data"]["TEMPORAL_ADDRESS"].as_str()
        );
        let port = endpoint.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
        assert!(matches!(port, Some(Ok(_))), "not host:port: {endpoint}");
        assert_eq!(
            resolve_env(&manifests, container, param("apiKeyFromEnv").unwrap()).as_deref(),
            Some("secret:qflows-temporal/TEMPORAL_API_KEY")
        );
        assert_eq!(
            param("namespace"),
            shared["data"]["TEMPORAL_NAMESPACE"].as_str()
        );
        for key in ["targetQueueSize", "activationTargetQueueSize"] {
            let n: u64 = param(key).unwrap_or("missing").parse()?;
            assert!(key != "targetQueueSize" || n > 0, "{key} {n}");
        }
        let types: Vec<&str> = param("queueTypes")
            .expect("queueTypes")
            .split(',')
            .collect();
        assert!(!types.is_empty());
        for t in &types {
            assert!(["workflow", "activity"].contains(t), "queue type {t}");
        }
        queues.push(param("taskQueue").expect("taskQueue").to_string());
    }
    let mut expected = worker_task_queues(task_queue);
    expected.sort();
    queues.sort();
    assert_eq!(queues, expected, "one trigger per queue the worker polls");

    let server = KubeApiServer::start().await?;
    server.install_keda_crd().await?;
    let client = server.client().await?;
    let namespace =
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE } });
    Api::<Namespace>::all(client.clone())
        .patch(
            NAMESPACE,
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&namespace),
        )
        .await?;

    // The patched worker, and the ScaledObject as written: a 1.20 server silently prunes
    // fields a CRD does not know, so a field missing from the answer means KEDA would not have
    // read it. (The answer may add the CRD's defaults, e.g. `fallback.behavior: static`.)
    let answer = dry_run_apply(&client, &worker).await?;
    assert_eq!(answer["spec"]["replicas"], json!(1), "the server's default");
    let answer = dry_run_apply(&client, &scaled_object).await?;
    if let Some(path) = missing(&scaled_object["spec"], &answer["spec"], "spec") {
        panic!("{path} was pruned: {answer}");
    }
    let mut misspelt = scaled_object.clone();
    misspelt["spec"]["minReplicas"] = json!(2);
    let answer = dry_run_apply(&client, &misspelt).await?;
    assert_eq!(
        missing(&misspelt["spec"], &answer["spec"], "spec").as_deref(),
        Some("spec.minReplicas"),
        "the check can fail: an unknown field is pruned"
    );

    // Broken copies are refused.
    type Breakage = (&'static str, fn(&mut Value));
    let broken: [Breakage; 5] = [
        ("maxReplicaCount 0", |o| {
            o["spec"]["maxReplicaCount"] = json!(0)
        }),
        ("a number as metadata", |o| {
            o["spec"]["triggers"][0]["metadata"]["targetQueueSize"] = json!(50)
        }),
        ("a trigger without type", |o| {
            o["spec"]["triggers"][0]["type"] = json!("")
        }),
        ("no triggers", |o| o["spec"]["triggers"] = json!([])),
        ("no target", |o| {
            o["spec"]["scaleTargetRef"]
                .as_object_mut()
                .unwrap()
                .remove("name");
        }),
    ];
    for (what, breaks) in broken {
        let mut copy = scaled_object.clone();
        breaks(&mut copy);
        assert_eq!(
            refused_status(dry_run_apply(&client, &copy).await),
            422,
            "{what}"
        );
    }

    // The HPA behaviour KEDA copies into the HPA it creates: the server's HPA accepts it as is
    // (autoscaling/v2beta2 on 1.20; its `behavior` is the one autoscaling/v2 kept).
    let behavior = &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
    assert!(behavior["scaleDown"].is_object() && behavior["scaleUp"].is_object());
    let hpa = json!({
        "apiVersion": "autoscaling/v2beta2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": { "name": "keda-hpa-qflows-worker", "namespace": NAMESPACE },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "qflows-worker" },
            "minReplicas": min,
            "maxReplicas": max,
            "metrics": [{
                "type": "External",
                "external": {
                    "metric": { "name": "s0-temporal-default-qflows" },
                    "target": { "type": "AverageValue", "averageValue": "50" },
                },
            }],
            "behavior": behavior,
        },
    });
    let answer = dry_run_apply(&client, &hpa).await?;
    for direction in ["scaleUp", "scaleDown"] {
        let given = &behavior[direction];
        let stored = &answer["spec"]["behavior"][direction];
        assert_eq!(
            stored["stabilizationWindowSeconds"],
            given["stabilizationWindowSeconds"]
        );
        assert_eq!(stored["policies"], given["policies"], "{direction}");
    }
    let mut bad_hpa = hpa.clone();
    bad_hpa["spec"]["behavior"]["scaleDown"]["policies"][0]["periodSeconds"] = json!(3600);
    assert_eq!(refused_status(dry_run_apply(&client, &bad_hpa).await), 422);
    Ok(())
}

/// deploy/kubernetes/admission: every object passes a server-side dry run, the Deployment is
/// locked down like the others, the webhook fails open within the API server's timeout and
/// skips kube-system and qflows' namespace, the cert-manager overlay names the Secret the
/// Deployment mounts, and `qflows admission render` prints exactly these files.
#[tokio::test]
async fn admission_manifests_pass_a_dry_run_and_render_prints_them() -> anyhow::Result<()> {
    let dir = manifests_dir().join("admission");
    let kustomization: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml"))?)?;
    assert_eq!(kustomization["namespace"], json!(NAMESPACE));
    assert_eq!(
        kustomization["resources"],
        json!(["admission.yaml", "webhook.yaml"])
    );
    let docs = |file: &str| -> anyhow::Result<Vec<Value>> {
        let text = std::fs::read_to_string(dir.join(file))?;
        let mut out = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc)?;
            if !value.is_null() {
                out.push(value);
            }
        }
        Ok(out)
    };
    let mut objects = docs("admission.yaml")?;
    objects.extend(docs("webhook.yaml")?);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ValidatingWebhookConfiguration"
        ]
    );
    let by_kind = |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap();
    let deployment = by_kind("Deployment");
    assert_locked_down(deployment, "admission Deployment");
    let hook = &by_kind("ValidatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["timeoutSeconds"], 3);
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(
        hook["namespaceSelector"]["matchExpressions"][0],
        json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]})
    );
    assert_eq!(
        hook["clientConfig"]["service"]["name"],
        by_kind("Service")["metadata"]["name"]
    );
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    let cert_manager = docs("cert-manager/certificate.yaml")?;
    let serving = cert_manager
        .iter()
        .find(|o| o["kind"] == "Certificate" && o["metadata"]["name"] == "qflows-admission")
        .expect("the serving Certificate");
    assert_eq!(
        volumes[0]["secret"]["secretName"],
        serving["spec"]["secretName"]
    );
    assert_eq!(
        by_kind("ValidatingWebhookConfiguration")["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        json!(format!("{NAMESPACE}/qflows-admission"))
    );
    assert_eq!(
        serving["spec"]["dnsNames"][0],
        json!(format!("qflows-admission.{NAMESPACE}.svc"))
    );

    // `qflows admission render` (defaults) prints these very objects.
    let out = std::process::Command::new(qflows_integration::qflows_bin()?)
        .args(["admission", "render"])
        .env_clear()
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rendered = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&out.stdout)?) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            rendered.push(value);
        }
    }
    assert_eq!(
        rendered, objects,
        "render's output vs deploy/kubernetes/admission"
    );

    let server = KubeApiServer::start().await?;
    let client = server.client().await?;
    let namespace =
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NAMESPACE } });
    Api::<Namespace>::all(client.clone())
        .patch(
            NAMESPACE,
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&namespace),
        )
        .await?;
    for object in &objects {
        dry_run_apply(&client, object).await.map_err(|e| {
            anyhow::anyhow!(
                "admission: {} {} refused: {e:#}",
                object["kind"],
                object["metadata"]["name"]
            )
        })?;
    }
    Ok(())
}
