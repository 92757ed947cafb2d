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
const NOT_SECRET: [&str; 1] = ["QFLOWS_BRIDGE_API_KEY_HEADER"];

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
    let mut variables: Vec<String> = Vec::new();
    for manifest in &manifests {
        if manifest.kind() == "ConfigMap" {
            variables.extend(
                manifest.object["data"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.clone()),
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
                    .filter_map(|e| e["name"].as_str().map(str::to_owned)),
            );
        }
    }
    assert!(variables.iter().any(|v| v == "QFLOWS_BRIDGE_KEY"));
    qflows::config::check_unknown_variables(variables)?;

    // No Secret objects with values in git.
    assert!(
        !kinds.contains(&"Secret"),
        "deploy/kubernetes holds a Secret"
    );
    Ok(())
}
