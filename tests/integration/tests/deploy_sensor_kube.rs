//! DeploySensor on Kubernetes against a real kube-apiserver (1.20, no kubelet or controllers).
//!
//! Nothing ever runs the DaemonSet's pods, so its status stays empty and a roll-out never
//! completes: that is the real timeout path, and the roll-back restores the previous spec. For
//! the success path the test plays the DaemonSet controller (a Ready pod on node `node-1`, the
//! status subresource at one ready, updated, available pod) and the sensor phoning home from
//! that node through the Qualys emulator, after the run's plan was made.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use qflows_activities::sensor::render::kube_manifests;
use qflows_integration::kube::{CONTEXT, KubeApiServer};
use qflows_integration::{
    TestEnv, decoded_payloads, deploy_sensor, history_json, qflows_bin, record_history,
};
use qflows_workflows::sensor::model::DeploySensorInput;
use qualys_emulator::EmulatorConfig;
use serde_json::{Value, json};

const ACTIVATION_VALUE: &str = "5f1c0a2e-act1-4b8e-SECRET-activation";
const CUSTOMER_VALUE: &str = "9d3e7b41-cust-4c2a-SECRET-customer";

fn input(kubeconfig: &str, image: &str) -> Value {
    json!({
        "target": "eks",
        "cluster": "test",
        "kubeconfig": kubeconfig,
        "kubeContext": CONTEXT,
        "image": image,
        "activationIdRef": "qualys-credentials:activation-id",
        "customerIdRef": "qualys-credentials:customer-id",
        "podUrl": "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor",
        "rolloutTimeoutSecs": 3,
        "verifyTimeoutSecs": 3,
        "pollIntervalSecs": 1
    })
}

/// `qflows`, without the test environment's `QFLOWS_*` variables.
fn qflows_cli() -> anyhow::Result<tokio::process::Command> {
    let mut cli = tokio::process::Command::new(qflows_bin()?);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("QFLOWS_")) {
        cli.env_remove(key);
    }
    Ok(cli)
}

/// Runs the command; its standard output, or an error with its standard error.
async fn run_cli(cli: &mut tokio::process::Command) -> anyhow::Result<Vec<u8>> {
    let out = cli.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// The sensor of [`input`] as `qflows sensor` flags.
fn sensor_flags(kubeconfig: &str, image: &str) -> Vec<String> {
    [
        "--target",
        "eks",
        "--cluster",
        "test",
        "--kubeconfig",
        kubeconfig,
        "--kube-context",
        CONTEXT,
        "--image",
        image,
        "--activation-id-ref",
        "qualys-credentials:activation-id",
        "--customer-id-ref",
        "qualys-credentials:customer-id",
        "--pod-url",
        "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor",
    ]
    .map(str::to_string)
    .to_vec()
}

/// Plays the DaemonSet controller once the DaemonSet runs `image`: one pod on `node-1`, ready,
/// updated and available; then plays that node's sensor registering with Qualys.
async fn mark_ready(
    kube: kube::Client,
    image: &str,
    qualys: Option<qualys_emulator::RunningEmulator>,
) {
    let api: Api<DaemonSet> = Api::namespaced(kube.clone(), "qualys-sensor");
    let pods: Api<Pod> = Api::namespaced(kube, "qualys-sensor");
    loop {
        if let Ok(ds) = api.get("qualys-registry-sensor").await
            && ds
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .map(|p| p.containers[0].image.clone())
                == Some(Some(image.to_string()))
        {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": format!("sensor-node-1-{}", image.replace([':', '.', '/'], "-")),
                    "labels": {"app.kubernetes.io/name": "qualys-registry-sensor"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "sensor", "image": image}]}}))
            .unwrap();
            let name = pod.metadata.name.clone().unwrap();
            if pods.create(&PostParams::default(), &pod).await.is_ok() {
                let ready =
                    json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&ready))
                    .await
                    .unwrap();
            }
            let status = json!({"status": {"desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                "numberMisscheduled": 0, "numberReady": 1, "updatedNumberScheduled": 1,
                "numberAvailable": 1, "observedGeneration": ds.metadata.generation}});
            if api
                .patch_status(
                    "qualys-registry-sensor",
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .is_ok()
            {
                if let Some(qualys) = qualys {
                    qualys.add_sensor(json!({"hostname": "node-1", "registrySensor": true,
                        "sensorVersion": image.rsplit(':').next().unwrap()}));
                }
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn applies_hardened_sensor_then_changes_nothing_then_rolls_back_on_timeout()
-> anyhow::Result<()> {
    let server = KubeApiServer::start().await?;
    let kube = server.client().await?;
    let kubeconfig = server.kubeconfig_path().to_string_lossy().to_string();
    // The operator's Secret (qflows only references it).
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "qualys-sensor"}}))?,
        )
        .await?;
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "qualys-sensor");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "qualys-credentials"},
                "stringData": {"activation-id": ACTIVATION_VALUE, "customer-id": CUSTOMER_VALUE}}))?,
        )
        .await?;

    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().start(&env.dir).await?;
    let q = &worker.task_queue;
    let v1 = "docker.io/qualys/qcs-sensor:1.40.1-0";

    // 1. Success: the "controller" reports the pod ready, the "sensor" registers. Another
    // cluster's sensor, active and on the same version, is listed all along: it does not count.
    env.qualys
        .add_sensor(json!({"hostname": "other-cluster-node", "registrySensor": true}));
    let ready = tokio::spawn(mark_ready(kube.clone(), v1, Some(env.qualys.clone())));
    let first = deploy_sensor(&env.client, q, "sensor-kube-first", input(&kubeconfig, v1))
        .await
        .unwrap();
    ready.await?;
    assert!(first.changed);
    assert_eq!(first.sensors, 1);

    // The namespace runs privileged pods under Pod Security admission; the sensor's identity
    // lives on the node.
    let ns = namespaces.get("qualys-sensor").await?;
    let labels = ns.metadata.labels.clone().unwrap_or_default();
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels
                .get(&format!("pod-security.kubernetes.io/{mode}"))
                .map(String::as_str),
            Some("privileged"),
            "{labels:?}"
        );
    }

    // The DaemonSet's hardened context, field by field.
    let daemonsets: Api<DaemonSet> = Api::namespaced(kube.clone(), "qualys-sensor");
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    let managers: Vec<_> = ds
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"qflows".to_string()), "{managers:?}");
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    // Unset means false (the API server does not store false for these).
    assert_ne!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert_ne!(pod.host_ipc, Some(true));
    assert_eq!(
        pod.security_context
            .as_ref()
            .unwrap()
            .seccomp_profile
            .as_ref()
            .unwrap()
            .type_,
        "RuntimeDefault"
    );
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(v1));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(
        caps.add.clone().unwrap(),
        ["SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"]
    );
    let socket = &pod.volumes.as_ref().unwrap()[0];
    assert_eq!(
        socket.host_path.as_ref().unwrap().path,
        "/run/containerd/containerd.sock"
    );
    let data = &pod.volumes.as_ref().unwrap()[1];
    assert!(data.empty_dir.is_none());
    let host = data.host_path.as_ref().unwrap();
    assert_eq!(
        (host.path.as_str(), host.type_.as_deref()),
        ("/usr/local/qualys/sensor/data", Some("DirectoryOrCreate"))
    );
    assert!(c.readiness_probe.is_some());
    assert_eq!(ds.spec.as_ref().unwrap().min_ready_seconds, Some(30));
    let env_vars = c.env.as_ref().unwrap();
    assert_eq!(env_vars[0].name, "ACTIVATIONID");
    let key_ref = env_vars[0]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (key_ref.name.as_str(), key_ref.key.as_str()),
        ("qualys-credentials", "activation-id")
    );

    // The NetworkPolicy, field by field: no ingress, egress DNS 53, HTTPS 443, API 6443 only.
    let policies: Api<NetworkPolicy> = Api::namespaced(kube.clone(), "qualys-sensor");
    let np = policies.get("qualys-registry-sensor").await?.spec.unwrap();
    assert_eq!(np.policy_types.clone().unwrap(), ["Ingress", "Egress"]);
    assert!(np.ingress.clone().unwrap_or_default().is_empty());
    let egress: Vec<(String, String)> = np
        .egress
        .unwrap()
        .iter()
        .flat_map(|rule| {
            assert!(rule.to.is_none());
            rule.ports.clone().unwrap()
        })
        .map(|p| {
            (
                p.protocol.unwrap(),
                serde_json::to_value(p.port.unwrap()).unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        egress,
        [
            ("UDP", "53"),
            ("TCP", "53"),
            ("TCP", "443"),
            ("TCP", "6443")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // The PodDisruptionBudget: policy/v1, or policy/v1beta1 on an API server before 1.21
    // (the test's is 1.20).
    let pdb_version = if kube.list_api_group_resources("policy/v1").await.is_ok() {
        "v1"
    } else {
        "v1beta1"
    };
    let pdbs: Api<DynamicObject> = Api::namespaced_with(
        kube.clone(),
        "qualys-sensor",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("policy", pdb_version, "PodDisruptionBudget"),
            "poddisruptionbudgets",
        ),
    );
    let pdb = pdbs.get("qualys-registry-sensor").await?;
    assert_eq!(pdb.data["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "qualys-registry-sensor"
    );

    // `qflows sensor render` prints exactly the manifests the workflow applies.
    let stdout = run_cli(
        qflows_cli()?
            .args(["sensor", "render"])
            .args(sensor_flags(&kubeconfig, v1)),
    )
    .await?;
    let printed: Vec<Value> = serde_yaml_ng::Deserializer::from_str(std::str::from_utf8(&stdout)?)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let typed: DeploySensorInput = serde_json::from_value(input(&kubeconfig, v1))?;
    assert_eq!(printed, kube_manifests(&typed));

    // 2. The same sensor again, through `qflows sensor deploy`: it writes nothing and prints
    // the workflow's result.
    let version = ds.metadata.resource_version.clone();
    let stdout = run_cli(
        qflows_cli()?
            .args([
                "sensor",
                "deploy",
                "--temporal-address",
                &env.temporal.address,
            ])
            .args(["--task-queue", q.as_str()])
            .args(["--rollout-timeout-secs", "3", "--verify-timeout-secs", "3"])
            .args(["--poll-interval-secs", "1"])
            .args(sensor_flags(&kubeconfig, v1)),
    )
    .await?;
    let again: Value = serde_json::from_slice(&stdout)?;
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["sensors"], 1, "{again}");
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    assert_eq!(ds.metadata.resource_version, version);
    // The CLI's workflow ID names the API server, not the target or cluster name.
    let cli_id = format!(
        "sensor-kube-{}",
        server.url().trim_start_matches("https://")
    );
    history_json(&env.client, &cli_id).await?;

    // Another field manager sets fields of its own on the DaemonSet: they survive the roll-out
    // and the roll-back below.
    let theirs = json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "qualys-registry-sensor", "namespace": "qualys-sensor",
                     "annotations": {"ops.example/owner": "payments"}},
        "spec": {"template": {"metadata": {"annotations": {"ops.example/scrape": "true"}}}}});
    daemonsets
        .patch(
            "qualys-registry-sensor",
            &PatchParams::apply("ops-team"),
            &Patch::Apply(&theirs),
        )
        .await?;

    // 3. A new image: no controller rolls it out, the roll-out times out, v1 comes back.
    let failed = deploy_sensor(
        &env.client,
        q,
        "sensor-kube-rolled-back",
        input(&kubeconfig, "docker.io/qualys/qcs-sensor:9.9.9-0"),
    )
    .await
    .unwrap_err();
    assert_eq!(failed.type_name.as_deref(), Some("SensorRolledBack"));
    assert!(
        failed
            .message
            .contains("roll-out did not complete within 3 s")
            && failed.message.contains(&format!(
                "DaemonSet/qualys-registry-sensor restored to its previous spec (image {v1})"
            )),
        "{}",
        failed.message
    );
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    assert_eq!(
        ds.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("ops.example/owner"))
            .map(String::as_str),
        Some("payments")
    );
    let template = ds.spec.clone().unwrap().template;
    assert_eq!(
        template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("ops.example/scrape"))
            .map(String::as_str),
        Some("true")
    );
    let pod = template.spec.unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some(v1));
    // Another manager's fields stay theirs.
    let managers: Vec<_> = ds
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"ops-team".to_string()), "{managers:?}");

    // 3b. Qualys lists only another cluster's sensors for a new version: the roll-out completes
    // but verification fails, and v1 comes back.
    let v2 = "docker.io/qualys/qcs-sensor:1.41.0-0";
    env.qualys.add_sensor(
        json!({"hostname": "other-cluster-node", "registrySensor": true,
        "sensorVersion": "1.41.0-0"}),
    );
    // The controller, but no sensor phoning home from node-1.
    let ready = tokio::spawn(mark_ready(kube.clone(), v2, None));
    let failed = deploy_sensor(
        &env.client,
        q,
        "sensor-kube-other-cluster",
        input(&kubeconfig, v2),
    )
    .await
    .unwrap_err();
    ready.abort();
    assert_eq!(
        failed.type_name.as_deref(),
        Some("SensorRolledBack"),
        "{}",
        failed.message
    );
    assert!(
        failed
            .message
            .contains("0 of the 1 sensors this run started registered")
            && failed.message.contains("on other hosts"),
        "{}",
        failed.message
    );
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    assert_eq!(
        ds.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some(v1)
    );

    // 3c. Someone changes the image after the apply: the roll-back reports the drift and
    // leaves their change.
    let v3 = "docker.io/qualys/qcs-sensor:9.9.8-0";
    let hotfix = tokio::spawn({
        let daemonsets = daemonsets.clone();
        async move {
            loop {
                if let Ok(ds) = daemonsets.get("qualys-registry-sensor").await
                    && ds
                        .spec
                        .as_ref()
                        .unwrap()
                        .template
                        .spec
                        .as_ref()
                        .unwrap()
                        .containers[0]
                        .image
                        .as_deref()
                        == Some(v3)
                {
                    let patch = json!({"spec": {"template": {"spec": {"containers": [
                        {"name": "qualys-container-sensor", "image": "registry.example/qcs-sensor:hotfix"}]}}}});
                    daemonsets
                        .patch(
                            "qualys-registry-sensor",
                            &PatchParams {
                                field_manager: Some("kubectl-edit".into()),
                                ..Default::default()
                            },
                            &Patch::Strategic(&patch),
                        )
                        .await
                        .unwrap();
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    });
    let failed = deploy_sensor(&env.client, q, "sensor-kube-drift", input(&kubeconfig, v3))
        .await
        .unwrap_err();
    hotfix.await?;
    assert_eq!(
        failed.type_name.as_deref(),
        Some("SensorRollbackFailed"),
        "{}",
        failed.message
    );
    assert!(
        failed
            .message
            .contains("DaemonSet/qualys-registry-sensor: changed since the apply by kubectl-edit"),
        "{}",
        failed.message
    );
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    assert_eq!(
        ds.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.example/qcs-sensor:hotfix")
    );

    // 4. An empty value (a template that rendered nothing) is refused before anything is
    // applied; only its length was read.
    let version = daemonsets
        .get("qualys-registry-sensor")
        .await?
        .metadata
        .resource_version;
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "empty-credentials"},
                "stringData": {"activation-id": "", "customer-id": CUSTOMER_VALUE}}))?,
        )
        .await?;
    let mut empty = input(&kubeconfig, "docker.io/qualys/qcs-sensor:9.9.9-0");
    empty["activationIdRef"] = json!("empty-credentials:activation-id");
    let refused = deploy_sensor(&env.client, q, "sensor-kube-empty", empty)
        .await
        .unwrap_err();
    assert_eq!(
        refused.type_name.as_deref(),
        Some("SensorCredentialsMissing")
    );
    assert!(refused.message.contains("is empty"), "{}", refused.message);
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    assert_eq!(ds.metadata.resource_version, version);

    // 5. A reference to a key the Secret lacks is refused before anything is applied, naming
    // the keys it has (never their values).
    let version = ds.metadata.resource_version.clone();
    let mut bad = input(&kubeconfig, "docker.io/qualys/qcs-sensor:9.9.9-0");
    bad["customerIdRef"] = json!("qualys-credentials:customer_id");
    let refused = deploy_sensor(&env.client, q, "sensor-kube-no-key", bad)
        .await
        .unwrap_err();
    assert_eq!(
        refused.type_name.as_deref(),
        Some("SensorCredentialsMissing")
    );
    assert!(
        refused.message.contains(
            "customerIdRef `qualys-credentials:customer_id`: Secret qualys-sensor/qualys-credentials \
             has no key `customer_id` (its keys: activation-id, customer-id)"
        ),
        "{}",
        refused.message
    );
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    assert_eq!(ds.metadata.resource_version, version);

    // The Secret's values appear in no history.
    for id in [
        "sensor-kube-first",
        cli_id.as_str(),
        "sensor-kube-rolled-back",
        "sensor-kube-no-key",
    ] {
        let history: Value = serde_json::from_str(&history_json(&env.client, id).await?)?;
        let payloads = decoded_payloads(&history);
        assert!(payloads.contains("qualys-credentials:activation-id"));
        assert!(!payloads.contains(ACTIVATION_VALUE) && !payloads.contains(CUSTOMER_VALUE));
    }
    // New names: the histories of the first design (deploy_sensor_eks_*) stay as recorded.
    record_history(
        &env.client,
        "sensor-kube-first",
        "deploy_sensor_planned_eks_created",
    )
    .await?;
    record_history(
        &env.client,
        "sensor-kube-rolled-back",
        "deploy_sensor_planned_eks_rolled_back",
    )
    .await?;
    record_history(
        &env.client,
        "sensor-kube-drift",
        "deploy_sensor_planned_eks_drift",
    )
    .await?;
    Ok(())
}

/// Puts the operator's namespace and Secret in place.
async fn operator_secret(kube: &kube::Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "qualys-sensor"}}))?,
        )
        .await?;
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "qualys-sensor");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "qualys-credentials"},
                "stringData": {"activation-id": ACTIVATION_VALUE, "customer-id": CUSTOMER_VALUE}}))?,
        )
        .await?;
    Ok(())
}

/// The resourceVersion of every object in the namespace and of the cluster-scoped ones.
async fn versions(
    kube: &kube::Client,
    kubeconfig: &str,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let typed: DeploySensorInput = serde_json::from_value(input(kubeconfig, "x/y:1"))?;
    let mut out = Vec::new();
    for m in kube_manifests(&typed) {
        let (group, version) = match m["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), m["apiVersion"].as_str().unwrap().to_string()),
        };
        let kind = m["kind"].as_str().unwrap();
        if kind == "PodDisruptionBudget" {
            continue;
        }
        let plural = match kind {
            "NetworkPolicy" => "networkpolicies".to_string(),
            "ResourceQuota" => "resourcequotas".to_string(),
            k => format!("{}s", k.to_lowercase()),
        };
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&group, &version, kind),
            &plural,
        );
        let api: Api<DynamicObject> = match m["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(kube.clone(), ns, &ar),
            None => Api::all_with(kube.clone(), &ar),
        };
        let name = m["metadata"]["name"].as_str().unwrap();
        let rv = api
            .get_opt(name)
            .await?
            .and_then(|o| o.metadata.resource_version);
        out.push((format!("{kind}/{name}"), rv));
    }
    Ok(out)
}

#[tokio::test]
async fn a_worker_killed_after_the_patch_still_rolls_back_and_refusals_write_nothing()
-> anyhow::Result<()> {
    let server = KubeApiServer::start().await?;
    let kube = server.client().await?;
    let kubeconfig = server.kubeconfig_path().to_string_lossy().to_string();
    operator_secret(&kube).await?;
    // The sensor as an earlier qflows run left it: v1, applied by field manager qflows.
    let v1 = "docker.io/qualys/qcs-sensor:1.40.1-0";
    let typed: DeploySensorInput = serde_json::from_value(input(&kubeconfig, v1))?;
    for mut m in kube_manifests(&typed) {
        if m["kind"] == "PodDisruptionBudget" {
            m["apiVersion"] = json!("policy/v1beta1");
        }
        let (group, version) = match m["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), m["apiVersion"].as_str().unwrap().to_string()),
        };
        let kind = m["kind"].as_str().unwrap().to_string();
        let plural = match kind.as_str() {
            "NetworkPolicy" => "networkpolicies".to_string(),
            "ResourceQuota" => "resourcequotas".to_string(),
            k => format!("{}s", k.to_lowercase()),
        };
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&group, &version, &kind),
            &plural,
        );
        let api: Api<DynamicObject> = match m["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(kube.clone(), ns, &ar),
            None => Api::all_with(kube.clone(), &ar),
        };
        let name = m["metadata"]["name"].as_str().unwrap().to_string();
        api.patch(
            &name,
            &PatchParams::apply("qflows").force(),
            &Patch::Apply(&m),
        )
        .await?;
    }
    let daemonsets: Api<DaemonSet> = Api::namespaced(kube.clone(), "qualys-sensor");

    let env = TestEnv::start(EmulatorConfig::default()).await?;
    // This worker exits right after it patched the DaemonSet (the apply activity never reports).
    let mut crashing = env
        .worker()
        .env("QFLOWS_FAULT_EXIT_AFTER", Some("sensor-daemonset-applied"))
        .start(&env.dir)
        .await?;
    let q = crashing.task_queue.clone();
    let v2 = "docker.io/qualys/qcs-sensor:9.9.9-0";
    let run = tokio::spawn({
        let client = env.client.clone();
        let (q, input) = (q.clone(), input(&kubeconfig, v2));
        async move { deploy_sensor(&client, &q, "sensor-kube-crash", input).await }
    });
    let status =
        tokio::time::timeout(std::time::Duration::from_secs(60), crashing.wait()).await??;
    assert_eq!(status.code(), Some(70), "{}", crashing.logs());
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    assert_eq!(
        ds.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some(v2)
    );
    // A new worker retries the apply (which now finds v2 in place) and rolls back to v1 all
    // the same: what to restore was recorded before the patch.
    let _worker = env.worker().task_queue(&q).start(&env.dir).await?;
    let failed = run.await?.unwrap_err();
    assert_eq!(
        failed.type_name.as_deref(),
        Some("SensorRolledBack"),
        "{}",
        failed.message
    );
    assert!(
        failed
            .message
            .contains(&format!("restored to its previous spec (image {v1})")),
        "{}",
        failed.message
    );
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    assert_eq!(
        ds.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some(v1)
    );
    record_history(
        &env.client,
        "sensor-kube-crash",
        "deploy_sensor_planned_eks_retried_apply",
    )
    .await?;

    // A DaemonSet of the same name with another selector (an earlier install by other means):
    // the dry run refuses it, every refusal is reported, nothing is written.
    daemonsets
        .delete("qualys-registry-sensor", &Default::default())
        .await?;
    let legacy: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "qualys-registry-sensor"},
        "spec": {"selector": {"matchLabels": {"app": "legacy-sensor"}},
                 "template": {"metadata": {"labels": {"app": "legacy-sensor"}},
                              "spec": {"containers": [{"name": "s", "image": "qualys/qcs-sensor:latest"}]}}}}))?;
    daemonsets.create(&PostParams::default(), &legacy).await?;
    let before = versions(&kube, &kubeconfig).await?;
    let refused = deploy_sensor(
        &env.client,
        &q,
        "sensor-kube-refused",
        input(&kubeconfig, v2),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.type_name.as_deref(),
        Some("SensorPreflightRefused"),
        "{}",
        refused.message
    );
    assert!(
        refused
            .message
            .contains("DaemonSet/qualys-registry-sensor:")
            && refused.message.contains("immutable")
            && refused.message.contains("nothing was written"),
        "{}",
        refused.message
    );
    assert_eq!(versions(&kube, &kubeconfig).await?, before);

    // GKE Autopilot (it serves API group auto.gke.io) is refused up front.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(kube.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
        "metadata": {"name": "allowlistedworkloads.auto.gke.io"},
        "spec": {"group": "auto.gke.io", "scope": "Cluster",
                 "names": {"plural": "allowlistedworkloads", "singular": "allowlistedworkload",
                           "kind": "AllowlistedWorkload"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object",
                         "x-kubernetes-preserve-unknown-fields": true}}}]}}))?,
    )
    .await?;
    qflows_integration::wait_for(
        "the auto.gke.io group",
        std::time::Duration::from_secs(30),
        || async {
            kube.list_api_groups()
                .await
                .ok()?
                .groups
                .iter()
                .any(|g| g.name == "auto.gke.io")
                .then_some(())
        },
    )
    .await?;
    let mut gke = input(&kubeconfig, v2);
    gke["target"] = json!("gke");
    let refused = deploy_sensor(&env.client, &q, "sensor-kube-autopilot", gke)
        .await
        .unwrap_err();
    assert_eq!(
        refused.type_name.as_deref(),
        Some("SensorUnsupportedCluster"),
        "{}",
        refused.message
    );
    assert!(
        refused.message.contains("GKE Autopilot"),
        "{}",
        refused.message
    );
    assert_eq!(versions(&kube, &kubeconfig).await?, before);
    Ok(())
}
