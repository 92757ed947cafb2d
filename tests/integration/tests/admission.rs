//! `qflows admission` against the real kube-apiserver, with the webhook registered over TLS:
//! real verdicts from the `ImageScan` entities (the Qualys emulator, moto's ECR, the real
//! Temporal server and `qflows worker`), the real `qflows admission` binary.
//!
//! Needs the Kubernetes testbed (`eval "$(scripts/kube-testbed --env)"`).

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use qflows_integration::kube::KubeApiServer;
use qflows_integration::{
    Moto, TestEnv, free_port, push_ecr_image, pushed_digest, scan_on_deploy, scrape_metrics,
};
use qflows_workflows::scan::model::Verdict;
use qualys_emulator::EmulatorConfig;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// The webhook's own deadline in this test.
const TIMEOUT_MS: u64 = 1000;

const PROFILES: &str = r#"
profiles:
  production:
    failSeverity: 5
    enforce: deny
    unscanned: audit
  sandbox:
    failSeverity: 5
    enforce: audit
selectors:
  - profile: production
    match: {namespace: prod}
  - profile: sandbox
    match: {namespace: sandbox}
"#;

fn pod(name: &str, image: &str, break_glass: Option<&str>) -> Pod {
    let mut annotations = serde_json::Map::new();
    if let Some(reason) = break_glass {
        annotations.insert("qflows.io/break-glass".into(), json!(reason));
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": image}]}
    }))
    .unwrap()
}

fn deployment(name: &str, image: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    }))
    .unwrap()
}

fn webhook(port: u16, ca_pem: &str) -> Value {
    use base64::Engine;
    let rule = |group: &str, resources: &[&str]| {
        json!({"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
               "resources": resources, "scope": "Namespaced"})
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "qflows-admission"},
        "webhooks": [{
            "name": "images.admission.qflows.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 3,
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}/validate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": ["kube-system", "qflows"]}]},
            "rules": [rule("", &["pods"]), rule("apps", &["deployments"])],
        }]
    })
}

fn denial(result: Result<impl std::fmt::Debug, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            status.message.clone()
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn decisions(metrics: &str, decision: &str, profile: &str) -> u64 {
    let series = format!(
        "qflows_admission_decisions_total{{decision=\"{decision}\",profile=\"{profile}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_webhook_denies_audits_admits_and_fails_open_against_the_apiserver()
-> anyhow::Result<()> {
    let mut env = TestEnv::start(EmulatorConfig::default()).await?;
    let moto = Moto::start().await?;
    let results = env.dir.join("results");
    let worker = env
        .worker()
        .aws(&moto)
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("2"))
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
        .start(&env.dir)
        .await?;
    let tq = worker.task_queue.clone();

    // Real verdicts: a critical finding fails the gate, a low one passes.
    let critical = vec![
        json!({"qid": 379952, "severity": 5, "title": "OpenSSL", "cveIds": ["CVE-2024-5535"]}),
    ];
    let failing = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/failing",
        "1.0",
        "failing",
        critical,
    )
    .await?;
    let passing = push_ecr_image(
        &moto,
        &env.qualys,
        "probe/passing",
        "1.0",
        "passing",
        qflows_integration::vulnerabilities(&[1]),
    )
    .await?;
    let out = scan_on_deploy(&env.client, &tq, "adm-failing", failing.clone())
        .await
        .unwrap();
    assert_eq!(out.images[0].verdict, Some(Verdict::Fail), "{out:?}");
    let out = scan_on_deploy(&env.client, &tq, "adm-passing", passing.clone())
        .await
        .unwrap();
    assert_eq!(out.images[0].verdict, Some(Verdict::Pass), "{out:?}");
    let failing_image = format!("{ECR}/probe/failing@{}", pushed_digest(&failing));
    let passing_image = format!("{ECR}/probe/passing@{}", pushed_digest(&passing));

    // The webhook, over TLS with a CA made here.
    let certs = qflows_bench::certs::write(&env.dir.join("tls"))?;
    let profiles = env.dir.join("profiles.yaml");
    std::fs::write(&profiles, PROFILES)?;
    let (port, metrics_port) = (free_port(), free_port());
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let start_admission = || {
        env.worker()
            .aws(&moto)
            .task_queue(&tq)
            .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
            .env(
                "QFLOWS_GATE_PROFILES_FILE",
                Some(profiles.to_str().unwrap()),
            )
            .env(
                "QFLOWS_ADMISSION_LISTEN",
                Some(&format!("127.0.0.1:{port}")),
            )
            .env("QFLOWS_ADMISSION_METRICS_ADDR", Some(&metrics_addr))
            .env(
                "QFLOWS_ADMISSION_TLS_CERT_FILE",
                Some(certs.cert_file.to_str().unwrap()),
            )
            .env(
                "QFLOWS_ADMISSION_TLS_KEY_FILE",
                Some(certs.key_file.to_str().unwrap()),
            )
            .env("QFLOWS_ADMISSION_TIMEOUT_MS", Some(&TIMEOUT_MS.to_string()))
            .env("QFLOWS_KUBERNETES_CLUSTER", Some("test"))
            .start_command("admission", "qflows admission listening", &env.dir)
    };
    let mut admission = start_admission().await?;

    let kube = KubeApiServer::start().await?;
    let client = kube.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in ["prod", "sandbox"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
    }
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    hooks
        .create(
            &PostParams::default(),
            &serde_json::from_value(webhook(port, &certs.ca_pem))?,
        )
        .await?;
    let prod_pods: Api<Pod> = Api::namespaced(client.clone(), "prod");
    let sandbox_pods: Api<Pod> = Api::namespaced(client.clone(), "sandbox");
    let pp = PostParams::default();

    // The apiserver reads the webhook configuration shortly after it is created.
    let mut message = String::new();
    for _ in 0..50 {
        match prod_pods
            .create(&pp, &pod("failing", &failing_image, None))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 => {
                message = s.message.clone();
                break;
            }
            Ok(_) => {
                prod_pods.delete("failing", &Default::default()).await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("denied pod: {message}");
    for part in [
        failing_image.as_str(),
        "`production`",
        "CVE-2024-5535",
        "qflows.io/break-glass",
    ] {
        assert!(message.contains(part), "{part} not in: {message}");
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "prod");
    let message = denial(
        deployments
            .create(&pp, &deployment("failing", &failing_image))
            .await,
    );
    println!("denied deployment: {message}");
    assert!(
        message.contains(&failing_image) && message.contains("`production`"),
        "{message}"
    );

    // The same image under `audit` is admitted and recorded; a passing image is admitted.
    sandbox_pods
        .create(&pp, &pod("failing", &failing_image, None))
        .await?;
    prod_pods
        .create(&pp, &pod("passing", &passing_image, None))
        .await?;
    // Break-glass admits the denied image, and is counted.
    prod_pods
        .create(&pp, &pod("glass", &failing_image, Some("INC-42 hotfix")))
        .await?;
    let metrics = scrape_metrics(&metrics_addr).await.expect("metrics");
    assert_eq!(decisions(&metrics, "audited", "sandbox"), 1, "{metrics}");
    assert_eq!(
        decisions(&metrics, "break_glass", "production"),
        1,
        "{metrics}"
    );
    assert!(
        decisions(&metrics, "denied", "production") >= 2,
        "{metrics}"
    );
    assert!(
        decisions(&metrics, "allowed", "production") >= 1,
        "{metrics}"
    );
    let logs = admission.logs();
    assert!(
        logs.contains("break-glass")
            && logs.contains("INC-42 hotfix")
            && logs.contains("qflows-admin"),
        "{logs}"
    );

    // Cert reload: new files, the next handshake presents the new certificate (only the new
    // CA verifies it).
    let renewed = qflows_bench::certs::write(&env.dir.join("tls"))?;
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(renewed.ca_pem.as_bytes())?)
        .build()?;
    let answer = https
        .post(format!("https://127.0.0.1:{port}/validate"))
        .body("{}")
        .send()
        .await?;
    assert_eq!(
        answer.status(),
        400,
        "the handshake with the renewed certificate worked"
    );
    // A broken write (mid-rotation) keeps the last good certificate.
    std::fs::write(&certs.cert_file, "")?;

    // Temporal down: a digest the webhook has not cached must still be answered in time, by
    // the unscanned rule (`audit` under production: admitted).
    env.temporal.stop().await?;
    let unknown = format!("{ECR}/probe/unknown@sha256:{}", "ab".repeat(32));
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "operation": "CREATE", "namespace": "prod", "userInfo": {"username": "t"},
                    "object": {"metadata": {"name": "u"}, "spec": {"containers": [{"name": "a", "image": unknown}]}}}
    });
    let began = Instant::now();
    let answer: Value = https
        .post(format!("https://127.0.0.1:{port}/validate"))
        .json(&review)
        .send()
        .await?
        .json()
        .await?;
    let took = began.elapsed();
    println!(
        "with Temporal stopped the webhook answered in {took:?} (QFLOWS_ADMISSION_TIMEOUT_MS={TIMEOUT_MS})"
    );
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(took < Duration::from_millis(TIMEOUT_MS + 1500), "{took:?}");
    let metrics = scrape_metrics(&metrics_addr).await.expect("metrics");
    assert!(
        decisions(&metrics, "unscanned", "production") >= 1,
        "{metrics}"
    );

    // qflows admission stopped: Ignore admits, within the webhook's timeoutSeconds.
    admission.kill().await;
    let began = Instant::now();
    prod_pods
        .create(&pp, &pod("failing-open", &failing_image, None))
        .await?;
    let took = began.elapsed();
    println!("with qflows admission stopped the apiserver admitted in {took:?} (timeoutSeconds 3)");
    assert!(took < Duration::from_secs(10), "{took:?}");
    Ok(())
}
