//! CdrToPolicy against a real kube-apiserver with Tetragon's CRDs: server-side apply is
//! idempotent, a changed finding set updates exactly the affected policy, and review switches the
//! applied policy between Post and Sigkill.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject};
use qflows::cli::policy::{promote_as_shown, query_policies, send_review};
use qflows_activities::cdr::output::{api_resource, prune};
use qflows_integration::kube::KubeApiServer;
use qflows_integration::{TestEnv, wait_for};
use qflows_workflows::CdrToPolicy;
use qflows_workflows::cdr::model::{PoliciesView, ReviewRequest};
use qflows_workflows::clock::rfc3339;
use qualys_emulator::EmulatorConfig;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use temporalio_client::{Client, WorkflowStartOptions};

const ID: &str = "cdr-kube";

fn finding(id: &str, category: &str, minutes_ago: u64, extra: Value) -> Value {
    let mut f = json!({"uuid": id, "threatCategory": category, "severity": 3,
        "timestamp": rfc3339(SystemTime::now() - Duration::from_secs(minutes_ago * 60)),
        "namespace": "shop", "podLabels": {"app": "payments-api"}});
    f.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    f
}

async fn view(client: &Client) -> Option<PoliciesView> {
    query_policies(client, ID).await.ok()
}

async fn syncs(client: &Client, n: u64) -> anyhow::Result<PoliciesView> {
    // Each sync reads one window; the report of the latest is in the query.
    wait_for(
        &format!("sync with {n} finding(s)"),
        Duration::from_secs(60),
        || async {
            view(client).await.filter(|v| {
                v.last_sync
                    .as_ref()
                    .is_some_and(|s| s.findings.findings == n)
            })
        },
    )
    .await
}

/// resourceVersion and matchActions of every qflows policy in namespace `shop`.
async fn applied(kube: &kube::Client) -> anyhow::Result<BTreeMap<String, (String, Vec<String>)>> {
    let api: Api<DynamicObject> = Api::namespaced_with(kube.clone(), "shop", &api_resource(true));
    let mut out = BTreeMap::new();
    for o in api.list(&Default::default()).await?.items {
        let actions = o.data["spec"]["kprobes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|k| k["selectors"].as_array().unwrap().clone())
            .flat_map(|s| s["matchActions"].as_array().unwrap().clone())
            .map(|a| a["action"].as_str().unwrap().to_string())
            .collect();
        out.insert(
            o.metadata.name.clone().unwrap(),
            (o.metadata.resource_version.clone().unwrap(), actions),
        );
    }
    Ok(out)
}

async fn review(client: &Client, promote: bool, policy: &str) -> anyhow::Result<()> {
    let mut request = ReviewRequest {
        policy: policy.into(),
        by: "alice@example.com".into(),
        reason: "reviewed".into(),
        timeout_secs: 60,
        observed: None,
    };
    if promote {
        request = promote_as_shown(client, ID, request).await?;
    }
    send_review(client, ID, request, promote).await?;
    Ok(())
}

async fn sync_now(client: &Client) -> anyhow::Result<()> {
    client
        .get_workflow_handle::<CdrToPolicy>(ID)
        .signal(CdrToPolicy::request_sync, (), Default::default())
        .await?;
    Ok(())
}

/// A worker keeping CdrToPolicy's evidence in the test's directory.
fn worker(env: &TestEnv) -> qflows_integration::WorkerBuilder {
    let results = env.dir.join("results");
    env.worker()
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
}

#[tokio::test]
async fn applied_policies_are_idempotent_merge_findings_and_follow_review() -> anyhow::Result<()> {
    qflows_activities::kube::install_tls_provider();
    let cluster = KubeApiServer::start().await?;
    cluster.install_tetragon_crds().await?;
    let kube = cluster.client().await?;
    // The workload's namespace exists in a real cluster; here the test makes it.
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    namespaces
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop"}}))?,
        )
        .await?;
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let imds = finding(
        "f-imds",
        "Cloud_Credentials_Accessed_By_Network_Utility",
        30,
        json!({"processPath": "/usr/bin/curl", "destinationIp": "169.254.169.254"}),
    );
    let mining = finding(
        "f-mine",
        "Crypto_Mining",
        20,
        json!({"destinationIp": "45.9.148.3", "destinationPort": 3333}),
    );
    env.qualys
        .set_cdr_findings(vec![imds.clone(), mining.clone()]);
    let worker = worker(&env).start(&env.dir).await?;
    env.client
        .start_workflow(
            CdrToPolicy::run,
            json!({"policySet": "kube", "lookbackHours": 1, "syncEveryMinutes": 600,
                   "output": {"kubernetes": {"kubeconfig": cluster.kubeconfig_path(),
                                             "context": cluster.context()}}}),
            WorkflowStartOptions::new(&worker.task_queue, ID).build(),
        )
        .await?;
    let first = syncs(&env.client, 2).await?;
    let sync = first.last_sync.clone().unwrap();
    assert_eq!(sync.publish.created.len(), 2, "{sync:?}");
    let v1 = applied(&kube).await?;
    let (imds_name, mining_name) = (
        "t1552-005-imds-shop-payments-api",
        "t1496-mining-shop-payments-api",
    );
    assert_eq!(v1.keys().collect::<Vec<_>>(), [mining_name, imds_name]);
    assert!(
        v1.values().all(|(_, a)| a.iter().all(|a| a == "Post")),
        "{v1:?}"
    );

    // A sync without new findings writes nothing: no new resourceVersion.
    let end = sync.window.1.clone();
    wait_for(
        "the clock to pass the window",
        Duration::from_secs(5),
        || async { Some(()).filter(|_| rfc3339(SystemTime::now()) > end) },
    )
    .await?;
    sync_now(&env.client).await?;
    let second = syncs(&env.client, 0).await?;
    let second = second.last_sync.unwrap().publish;
    assert!(
        second.created.is_empty() && second.updated.is_empty(),
        "{second:?}"
    );
    assert_eq!(applied(&kube).await?, v1);

    // A new mining finding: exactly that policy is updated.
    let end = view(&env.client).await.unwrap().last_sync.unwrap().window.1;
    let now = wait_for(
        "the clock to pass the window",
        Duration::from_secs(5),
        || async { Some(rfc3339(SystemTime::now())).filter(|now| *now > end) },
    )
    .await?;
    let mut more = finding(
        "f-mine-2",
        "Crypto_Mining",
        0,
        json!({"destinationIp": "198.51.100.77", "destinationPort": 14444}),
    );
    more["timestamp"] = json!(now);
    env.qualys.set_cdr_findings(vec![imds, mining, more]);
    sync_now(&env.client).await?;
    let third = syncs(&env.client, 1).await?;
    assert_eq!(third.last_sync.unwrap().publish.updated, [mining_name]);
    let v3 = applied(&kube).await?;
    assert_eq!(v3[imds_name], v1[imds_name], "unaffected policy untouched");
    assert_ne!(v3[mining_name].0, v1[mining_name].0);

    // promote → the applied policy's action becomes Sigkill; rollback → Post.
    review(&env.client, true, mining_name).await?;
    let v4 = applied(&kube).await?;
    assert!(v4[mining_name].1.contains(&"Sigkill".to_string()), "{v4:?}");
    assert!(!v4[mining_name].1.contains(&"Post".to_string()), "{v4:?}");
    assert_eq!(v4[imds_name], v1[imds_name]);
    review(&env.client, false, mining_name).await?;
    let v5 = applied(&kube).await?;
    assert!(v5[mining_name].1.iter().all(|a| a == "Post"), "{v5:?}");

    // Pruning deletes only the named policies of its own policy set.
    let names = [mining_name.to_string()].into();
    assert!(prune(&kube, "another-set", &names).await?.is_empty());
    assert_eq!(prune(&kube, "kube", &names).await?, [mining_name]);
    let v6 = applied(&kube).await?;
    assert_eq!(v6.keys().collect::<Vec<_>>(), [imds_name]);
    Ok(())
}
