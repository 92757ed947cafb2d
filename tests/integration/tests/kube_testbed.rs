//! The Kubernetes test harness itself: a real kube-apiserver 1.20 with Tetragon's CRDs accepts,
//! stores and validates TracingPolicies, several servers run side by side, and dropping one
//! leaves no process behind.
//!
//! Needs `QFLOWS_ETCD` and `QFLOWS_KUBE_APISERVER` (`eval "$(scripts/kube-testbed --env)"`).

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use qflows_integration::kube::{
    KubeApiServer, tracing_policy_namespaced_resource, tracing_policy_resource,
};
use serde_json::{Value, json};
use std::net::TcpStream;

/// The field manager of everything these tests apply.
const MANAGER: &str = "qflows";

/// A TracingPolicy(Namespaced) that posts connects to the cloud metadata address.
fn imds_policy(kind: &str, name: &str, arg1_type: &str, operator: &str) -> Value {
    json!({
        "apiVersion": "cilium.io/v1alpha1",
        "kind": kind,
        "metadata": { "name": name },
        "spec": {
            "kprobes": [{
                "call": "security_socket_connect",
                "syscall": false,
                "args": [
                    { "index": 0, "type": "socket" },
                    { "index": 1, "type": arg1_type },
                ],
                "selectors": [{
                    "matchArgs": [{ "index": 1, "operator": operator, "values": ["169.254.169.254"] }],
                    "matchActions": [{ "action": "Post" }],
                }],
            }],
        },
    })
}

/// Whether `actual` holds everything in `expected` (objects may have more keys: the server adds
/// the CRD's defaults).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Value::Array(a), Value::Array(e)) => {
            a.len() == e.len() && a.iter().zip(e).all(|(av, ev)| contains(av, ev))
        }
        _ => actual == expected,
    }
}

/// The HTTP status of a failed API call, or a panic with the error.
fn api_status<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn apply(api: &Api<DynamicObject>, policy: &Value) -> Result<DynamicObject, kube::Error> {
    let name = policy["metadata"]["name"].as_str().expect("name");
    api.patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(policy))
        .await
}

#[tokio::test]
async fn tracing_policy_is_applied_idempotently_and_validated() -> anyhow::Result<()> {
    let server = KubeApiServer::start().await?;
    server.install_tetragon_crds().await?;
    let api: Api<DynamicObject> = Api::all_with(server.client().await?, &tracing_policy_resource());

    let policy = imds_policy("TracingPolicy", "imds-connect", "sockaddr", "SAddr");
    let applied = apply(&api, &policy).await?;
    let version = applied
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion");

    let read = api.get("imds-connect").await?;
    let spec = &read.data["spec"];
    assert!(contains(spec, &policy["spec"]), "read back: {spec:#}");
    // The server applied the CRD's defaults.
    assert_eq!(spec["kprobes"][0]["return"], json!(false));
    assert_eq!(spec["kprobes"][0]["args"][1]["maxData"], json!(false));
    assert_eq!(
        read.metadata.resource_version.as_deref(),
        Some(version.as_str())
    );
    let managers: Vec<_> = read
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert_eq!(managers, [MANAGER]);

    // Applying the identical object again changes nothing: same generation, same spec. (The
    // 1.20 API server may still write the object when the second apply falls in another second
    // than the first — it stamps the manager's entry anew — so the resourceVersion is not
    // compared: that made this test fail under load.)
    let again = apply(&api, &policy).await?;
    assert_eq!(again.metadata.generation, read.metadata.generation);
    assert_eq!(
        serde_json::to_value(&again.data["spec"])?,
        serde_json::to_value(&read.data["spec"])?
    );

    // The CRD's schema is enforced: values outside the enums are rejected as Invalid (422).
    let bad_type = imds_policy("TracingPolicy", "bad-type", "notatype", "SAddr");
    assert_eq!(api_status(apply(&api, &bad_type).await), 422);
    let bad_operator = imds_policy("TracingPolicy", "bad-operator", "sockaddr", "NotAnOperator");
    assert_eq!(api_status(apply(&api, &bad_operator).await), 422);
    assert_eq!(api_status(api.get("bad-type").await), 404);
    Ok(())
}

#[tokio::test]
async fn tracing_policy_namespaced_lives_in_its_namespace() -> anyhow::Result<()> {
    let server = KubeApiServer::start().await?;
    server.install_tetragon_crds().await?;
    let client = server.client().await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": "workloads" },
    });
    namespaces
        .patch(
            "workloads",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&namespace),
        )
        .await?;

    let resource = tracing_policy_namespaced_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "workloads", &resource);
    let policy = imds_policy(
        "TracingPolicyNamespaced",
        "imds-connect",
        "sockaddr",
        "SAddr",
    );
    let applied = apply(&api, &policy).await?;
    assert_eq!(applied.metadata.namespace.as_deref(), Some("workloads"));

    let read = api.get("imds-connect").await?;
    let spec = &read.data["spec"];
    assert!(contains(spec, &policy["spec"]), "read back: {spec:#}");
    let elsewhere: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    assert_eq!(api_status(elsewhere.get("imds-connect").await), 404);
    let all: Api<DynamicObject> = Api::all_with(client, &resource);
    let listed = all.list(&Default::default()).await?;
    assert_eq!(listed.items.len(), 1);

    // Schema validation applies to the namespaced kind too.
    let bad = imds_policy("TracingPolicyNamespaced", "bad", "notatype", "SAddr");
    assert_eq!(api_status(apply(&api, &bad).await), 422);
    Ok(())
}

#[tokio::test]
async fn servers_run_side_by_side_and_drop_leaves_nothing_running() -> anyhow::Result<()> {
    let (first, second) = tokio::try_join!(KubeApiServer::start(), KubeApiServer::start())?;
    assert_ne!(first.url(), second.url());
    assert_ne!(first.etcd_url(), second.etcd_url());
    assert_ne!(first.token(), second.token());
    assert_eq!(first.context(), "qflows-test");
    assert!(first.kubeconfig_path().is_file());

    // Separate stores: a namespace made in one does not appear in the other.
    let namespace =
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "only-first" } });
    let in_first: Api<Namespace> = Api::all(first.client().await?);
    in_first
        .patch(
            "only-first",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&namespace),
        )
        .await?;
    let in_second: Api<Namespace> = Api::all(second.client().await?);
    assert_eq!(api_status(in_second.get("only-first").await), 404);

    // The kubeconfig's token is what authenticates: another token is refused.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()?;
    let wrong = http
        .get(format!("{}/api/v1/namespaces", first.url()))
        .bearer_auth(second.token())
        .send()
        .await?;
    assert_eq!(wrong.status().as_u16(), 401);

    // Drop kills both processes and waits for them: their ports are closed at once.
    let addresses = [first.url(), first.etcd_url()]
        .map(|u| u.rsplit('/').next().expect("host:port").to_owned());
    let dir = first.dir().to_owned();
    drop(first);
    for address in addresses {
        assert!(
            TcpStream::connect(&address).is_err(),
            "{address} still accepts connections after drop"
        );
    }
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
    in_second.get("default").await?;
    Ok(())
}
