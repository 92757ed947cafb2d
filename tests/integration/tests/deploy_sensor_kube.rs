//! DeploySensor on Kubernetes against a real kube-apiserver (1.20, no kubelet or controllers).
//!
//! Nothing ever runs the DaemonSet's pods, so its status stays empty and a roll-out never
//! completes: that is the real timeout path, and the roll-back restores the previous spec. For
//! the success path the test plays the DaemonSet controller, patching the status subresource
//! to one ready, updated pod, and plays the sensor phoning home through the Qualys emulator.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use qflows_activities::sensor::render::kube_manifests;
use qflows_integration::kube::{CONTEXT, KubeApiServer};
use qflows_integration::{
    TestEnv, decoded_payloads, deploy_sensor, history_json, qflows_bin, record_history,
};
use qflows_workflows::sensor::DeploySensorInput;
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

/// Plays the DaemonSet controller once the DaemonSet exists: one pod, ready and updated.
async fn mark_ready(kube: kube::Client) {
    let api: Api<DaemonSet> = Api::namespaced(kube, "qualys-sensor");
    loop {
        if let Ok(ds) = api.get("qualys-registry-sensor").await {
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

    // 1. Success: the "controller" reports the pod ready, the "sensor" registers.
    env.qualys
        .add_sensor(json!({"hostname": "node-1", "registrySensor": true}));
    let ready = tokio::spawn(mark_ready(kube.clone()));
    let first = deploy_sensor(&env.client, q, "sensor-kube-first", input(&kubeconfig, v1))
        .await
        .unwrap();
    ready.await?;
    assert!(first.changed);
    assert_eq!(first.sensors, 1);

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
        failed.message.contains("roll-out did not complete within 3 s")
            && failed.message.contains(&format!(
                "DaemonSet qualys-sensor/qualys-registry-sensor restored to its previous spec (image {v1})"
            )),
        "{}",
        failed.message
    );
    let ds = daemonsets.get("qualys-registry-sensor").await?;
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some(v1));

    // 4. A reference to a key the Secret lacks is refused before anything is applied, naming
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
        "sensor-eks-test",
        "sensor-kube-rolled-back",
        "sensor-kube-no-key",
    ] {
        let history: Value = serde_json::from_str(&history_json(&env.client, id).await?)?;
        let payloads = decoded_payloads(&history);
        assert!(payloads.contains("qualys-credentials:activation-id"));
        assert!(!payloads.contains(ACTIVATION_VALUE) && !payloads.contains(CUSTOMER_VALUE));
    }
    record_history(
        &env.client,
        "sensor-kube-first",
        "deploy_sensor_eks_created",
    )
    .await?;
    record_history(
        &env.client,
        "sensor-kube-rolled-back",
        "deploy_sensor_eks_rolled_back",
    )
    .await?;
    Ok(())
}
