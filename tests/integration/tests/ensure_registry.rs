//! EnsureRegistry end to end: real Temporal, the `qflows worker` binary, the Qualys emulator, moto.

use futures::future::join_all;
use qflows_integration::{
    Moto, TestEnv, ensure_registry, free_port, history_json, record_history, run_workflow,
    scrape_metrics, wait_for,
};
use qflows_workflows::registry::model::EnsureRegistryOutput;
use qualys_emulator::{Duplicates, EmulatorConfig, Faults, RateLimitRule, RegistryCreateResponse};
use serde_json::json;
use std::time::{Duration, Instant};

fn input(account: &str) -> serde_json::Value {
    json!({"accountId": account, "region": "us-east-1"})
}

#[tokio::test]
async fn creates_once_then_finds_the_registry() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().start(&env.dir).await?;

    let first = ensure_registry(&env.client, &worker.task_queue, input("123456789012"))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.registry_name, "ecr-123456789012-us-east-1");
    assert_eq!(
        first.role_arn,
        "arn:aws:iam::123456789012:role/qualys-registry-scan-role"
    );
    assert!(!first.registry_uuid.is_empty());

    // (Recorded before the next run replaces the canonical ID's latest run.)
    record_history(
        &env.client,
        "registry-123456789012-us-east-1",
        "ensure_registry_once_created",
    )
    .await?;
    record_history(
        &env.client,
        "registry-connector-123456789012",
        "ensure_registry_once_connector_created",
    )
    .await?;

    // A second run under another ID (the first one has completed) runs the canonical ID again,
    // which finds the registry and creates nothing.
    let again = run_workflow(
        &env.client,
        &worker.task_queue,
        "registry-again",
        input("123456789012"),
    )
    .await
    .unwrap();
    assert!(!again.created);
    assert_eq!(again.registry_uuid, first.registry_uuid);
    let stats = env.qualys.stats();
    assert_eq!(stats.registries_created, 1);
    assert_eq!(stats.connectors_created, 1);
    assert_eq!(stats.calls.get("POST /csapi/v1.3/registry"), Some(&1));
    record_history(&env.client, "registry-again", "ensure_registry_once_joined").await?;
    record_history(
        &env.client,
        "registry-123456789012-us-east-1",
        "ensure_registry_once_found",
    )
    .await?;
    Ok(())
}

/// Every registry call takes `ms` longer: the window in which concurrent runs that did not
/// share one claim would all find nothing and all create.
fn slow_registry_calls(ms: u64) -> Faults {
    Faults {
        latency_ms: ms,
        latency_rate: 1.0,
        paths: Some(vec!["/csapi/v1.3/registry".into()]),
        ..Default::default()
    }
}

/// Qualys at its most permissive: duplicate registries and connectors are made, not refused, so
/// any second create shows as a second object.
fn duplicates_allowed() -> EmulatorConfig {
    EmulatorConfig {
        duplicate_registries: Duplicates::Allow,
        duplicate_connectors: Duplicates::Allow,
        ..Default::default()
    }
}

/// Starts `EnsureRegistry` under `ids` at once (as the Temporal UI's random default IDs do)
/// and waits for all of them.
async fn run_all(
    env: &TestEnv,
    task_queue: &str,
    runs: &[(String, serde_json::Value)],
) -> Vec<EnsureRegistryOutput> {
    let started = runs
        .iter()
        .map(|(id, input)| run_workflow(&env.client, task_queue, id, input.clone()));
    join_all(started)
        .await
        .into_iter()
        .zip(runs)
        .map(|(r, (id, _))| r.unwrap_or_else(|f| panic!("{id}: {f:?}")))
        .collect()
}

#[tokio::test]
async fn twenty_runs_under_twenty_workflow_ids_make_one_registry_and_one_connector()
-> anyhow::Result<()> {
    let env = TestEnv::start(duplicates_allowed()).await?;
    env.qualys.set_faults(slow_registry_calls(300));
    let worker = env.worker().start(&env.dir).await?;
    let runs: Vec<_> = (0..20)
        .map(|i| (format!("ui-{i:02}-{}", free_port()), input("444455556666")))
        .collect();
    let results = run_all(&env, &worker.task_queue, &runs).await;
    let uuid = &results[0].registry_uuid;
    assert!(
        results.iter().all(|r| &r.registry_uuid == uuid),
        "all see one registry"
    );
    let stats = env.qualys.stats();
    assert_eq!(stats.registries_created, 1, "{stats:?}");
    assert_eq!(stats.connectors_created, 1, "{stats:?}");
    assert_eq!(stats.calls.get("POST /csapi/v1.3/registry"), Some(&1));
    assert_eq!(
        stats.calls.get("POST /csapi/v1.3/registry/aws/connector"),
        Some(&1)
    );
    assert_eq!(env.qualys.registries().len(), 1);
    assert_eq!(env.qualys.connectors().len(), 1);
    Ok(())
}

#[tokio::test]
async fn regions_of_one_account_share_one_connector() -> anyhow::Result<()> {
    let env = TestEnv::start(duplicates_allowed()).await?;
    env.qualys.set_faults(slow_registry_calls(300));
    let worker = env.worker().start(&env.dir).await?;
    let regions = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"];
    let runs: Vec<_> = regions
        .iter()
        .flat_map(|region| {
            (0..3).map(move |i| {
                (
                    format!("regions-{region}-{i}"),
                    json!({"accountId": "777788889999", "region": region}),
                )
            })
        })
        .collect();
    let results = run_all(&env, &worker.task_queue, &runs).await;
    let mut uuids: Vec<_> = results.iter().map(|r| r.registry_uuid.clone()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), regions.len(), "one registry per region");
    let stats = env.qualys.stats();
    assert_eq!(stats.registries_created, 4, "{stats:?}");
    assert_eq!(
        stats.connectors_created, 1,
        "one connector for the account: {stats:?}"
    );
    assert_eq!(
        env.qualys.connectors()[0]["arn"],
        "arn:aws:iam::777788889999:role/qualys-registry-scan-role"
    );
    Ok(())
}

#[tokio::test]
async fn already_exists_from_qualys_means_read_it_back() -> anyhow::Result<()> {
    // Someone else created the registry a moment ago: Qualys does not list it yet, and refuses
    // a second create with 400 "Registry already exists".
    let config = EmulatorConfig {
        api_tokens: vec!["test-token".into()],
        duplicate_registries: Duplicates::Reject,
        registry_list_lag_ms: 10_000,
        ..Default::default()
    };
    let env = TestEnv::start(config).await?;
    let worker = env.worker().start(&env.dir).await?;
    let account = "121212121212";
    let theirs = reqwest::Client::new()
        .post(format!("{}/csapi/v1.3/registry", env.qualys.base_url()))
        .bearer_auth("test-token")
        .json(&json!({
            "aws": {"accountId": account, "arn": format!("arn:aws:iam::{account}:role/theirs"),
                    "region": "us-east-1", "accountType": "Global"},
            "credentialType": "AWS", "registryType": "AWS",
            "registryUri": format!("https://{account}.dkr.ecr.us-east-1.amazonaws.com"),
            "registryName": "made-in-the-ui"}))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    let out = ensure_registry(&env.client, &worker.task_queue, input(account))
        .await
        .unwrap();
    assert_eq!(json!(out.registry_uuid), theirs["registryUuid"]);
    let stats = env.qualys.stats();
    assert_eq!(
        stats.duplicates_refused, 1,
        "Qualys refused our create: {stats:?}"
    );
    assert_eq!(stats.registries_created, 1, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_mid_run_keeps_the_claim() -> anyhow::Result<()> {
    let env = TestEnv::start(duplicates_allowed()).await?;
    env.qualys.set_faults(slow_registry_calls(1500));
    let mut worker = env.worker().start(&env.dir).await?;
    let task_queue = worker.task_queue.clone();
    let runs: Vec<_> = (0..10)
        .map(|i| (format!("killed-{i}"), input("343434343434")))
        .collect();
    let all = run_all(&env, &task_queue, &runs);
    tokio::pin!(all);
    // Kill the worker while the registry create is in flight.
    let kill = async {
        wait_for("the registry create", Duration::from_secs(120), || async {
            env.qualys
                .stats()
                .calls
                .contains_key("POST /csapi/v1.3/registry")
                .then_some(())
        })
        .await
    };
    tokio::select! {
        done = &mut all => panic!("finished before the kill: {done:?}"),
        killed = kill => killed?,
    }
    worker.kill().await;
    let _replacement = env.worker().task_queue(&task_queue).start(&env.dir).await?;
    let results = all.await;
    assert!(
        results
            .iter()
            .all(|r| r.registry_uuid == results[0].registry_uuid)
    );
    let stats = env.qualys.stats();
    assert_eq!(stats.registries_created, 1, "{stats:?}");
    assert_eq!(stats.connectors_created, 1, "{stats:?}");
    assert_eq!(env.qualys.registries().len(), 1);
    Ok(())
}

#[tokio::test]
async fn finds_the_uuid_when_the_create_response_has_none() -> anyhow::Result<()> {
    let config = EmulatorConfig {
        registry_create_response: RegistryCreateResponse::Empty,
        ..Default::default()
    };
    let env = TestEnv::start(config).await?;
    let worker = env.worker().start(&env.dir).await?;
    let out = ensure_registry(&env.client, &worker.task_queue, input("210987654321"))
        .await
        .unwrap();
    let listed = env.qualys.registries();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["registryUuid"], json!(out.registry_uuid));
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_starts_create_exactly_one_registry() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().start(&env.dir).await?;
    let runs =
        (0..50).map(|_| ensure_registry(&env.client, &worker.task_queue, input("111122223333")));
    let results: Vec<_> = join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let uuid = &results[0].registry_uuid;
    assert!(
        results.iter().all(|r| &r.registry_uuid == uuid),
        "all callers see one registry"
    );
    let stats = env.qualys.stats();
    assert_eq!(stats.registries_created, 1, "{stats:?}");
    assert_eq!(stats.calls.get("POST /csapi/v1.3/registry"), Some(&1));

    // And 50 more after it completed: nothing new.
    let runs =
        (0..50).map(|_| ensure_registry(&env.client, &worker.task_queue, input("111122223333")));
    for r in join_all(runs).await {
        assert!(!r.unwrap().created);
    }
    assert_eq!(env.qualys.stats().registries_created, 1);
    Ok(())
}

#[tokio::test]
async fn completes_under_5xx_and_429_storms_without_exceeding_rate_limits() -> anyhow::Result<()> {
    let config = EmulatorConfig {
        rate_limits: vec![RateLimitRule {
            family: "registry".into(),
            limit: 15,
            window_secs: 2,
        }],
        ..Default::default()
    };
    let env = TestEnv::start(config).await?;
    env.qualys.set_faults(Faults {
        error_5xx_rate: 0.10,
        throttle_429_rate: 0.30,
        ..Default::default()
    });
    let worker = env.worker().start(&env.dir).await?;
    let accounts: Vec<String> = (0..12).map(|i| format!("5000000000{i:02}")).collect();
    let runs = accounts
        .iter()
        .map(|a| ensure_registry(&env.client, &worker.task_queue, input(a)));
    for (account, result) in accounts.iter().zip(join_all(runs).await) {
        let out = result.unwrap_or_else(|f| panic!("{account}: {f:?}"));
        assert!(out.created);
    }
    let stats = env.qualys.stats();
    assert_eq!(stats.registries_created, 12, "{stats:?}");
    assert!(
        stats.injected_faults.get("5xx").copied().unwrap_or(0) > 0,
        "faults were injected: {stats:?}"
    );
    assert!(
        stats.injected_faults.get("429").copied().unwrap_or(0) > 0,
        "{stats:?}"
    );
    let violations: u64 = stats.rate_limit_violations.values().sum();
    assert_eq!(
        violations, 0,
        "the client exceeded the rate limit window: {stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_fail_fast_and_do_not_retry() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let metrics = format!("127.0.0.1:{}", qflows_integration::free_port());
    let worker = env
        .worker()
        .env("QUALYS_PASSWORD", Some("not-the-password"))
        .env("QFLOWS_METRICS_LISTEN", Some(&metrics))
        .start(&env.dir)
        .await?;
    let started = Instant::now();
    let failure = tokio::time::timeout(
        Duration::from_secs(60),
        ensure_registry(&env.client, &worker.task_queue, input("123456789012")),
    )
    .await
    .expect("a bad password must fail the workflow, not retry for hours")
    .unwrap_err();
    assert_eq!(
        failure.type_name.as_deref(),
        Some("QualysAuthFailed"),
        "{failure:?}"
    );
    assert!(failure.message.contains("rejected"), "{failure:?}");
    assert_eq!(
        env.qualys.stats().auth_failures,
        1,
        "one login attempt, no retries"
    );
    // Counted for alerting as a failure Temporal will not retry.
    let series = wait_for("the failure metric", Duration::from_secs(30), || async {
        let text = scrape_metrics(&metrics).await?;
        text.lines()
            .find(|l| {
                l.starts_with("qflows_activity_failures_total{")
                    && l.contains("error_type=\"QualysAuthFailed\"")
                    && !l.ends_with(" 0")
            })
            .map(str::to_string)
    })
    .await?;
    assert!(series.contains("retryable=\"false\""), "{series}");
    record_history(
        &env.client,
        "registry-123456789012-us-east-1",
        "ensure_registry_once_auth_failed",
    )
    .await?;
    eprintln!("failed after {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn malformed_input_fails_at_once_naming_the_field() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().start(&env.dir).await?;
    let failure = run_workflow(
        &env.client,
        &worker.task_queue,
        "bad-input",
        json!({"accountId": "12", "region": "us-east-1"}),
    )
    .await
    .unwrap_err();
    assert_eq!(failure.type_name.as_deref(), Some("InvalidInput"));
    assert!(failure.message.contains("`accountId`"), "{failure:?}");
    let failure = run_workflow(
        &env.client,
        &worker.task_queue,
        "bad-input-2",
        json!("not an object"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        failure.type_name.as_deref(),
        Some("InvalidInput"),
        "{failure:?}"
    );
    assert_eq!(
        env.qualys.stats().calls.values().sum::<u64>(),
        0,
        "nothing was done"
    );
    Ok(())
}

#[tokio::test]
async fn secrets_appear_in_no_log_line_and_no_history_event() -> anyhow::Result<()> {
    let token = "tok-AbCdEf0123456789-secret-bearer-value";
    let config = EmulatorConfig {
        api_tokens: vec![token.into()],
        ..Default::default()
    };
    let env = TestEnv::start(config).await?;
    let password = EmulatorConfig::default().password;
    // Debug logs, so that every request line is there to be checked.
    let with_password = env
        .worker()
        .env("QFLOWS_LOG", Some("debug"))
        .start(&env.dir)
        .await?;
    let with_token = env
        .worker()
        .env("QFLOWS_LOG", Some("debug"))
        .env("QUALYS_USERNAME", None)
        .env("QUALYS_PASSWORD", None)
        .env("QUALYS_API_TOKEN", Some(token))
        .start(&env.dir)
        .await?;
    let bad_password = env
        .worker()
        .env("QUALYS_PASSWORD", Some("wrong-Pa55word-xyz"))
        .start(&env.dir)
        .await?;

    run_workflow(
        &env.client,
        &with_password.task_queue,
        "s-1",
        input("123456789012"),
    )
    .await
    .unwrap();
    run_workflow(
        &env.client,
        &with_token.task_queue,
        "s-2",
        input("223456789012"),
    )
    .await
    .unwrap();
    run_workflow(
        &env.client,
        &bad_password.task_queue,
        "s-3",
        input("323456789012"),
    )
    .await
    .unwrap_err();

    // The runs they joined, and the connector steps, too.
    for id in [
        "s-1",
        "s-2",
        "s-3",
        "registry-123456789012-us-east-1",
        "registry-223456789012-us-east-1",
        "registry-323456789012-us-east-1",
        "registry-connector-123456789012",
        "registry-connector-223456789012",
    ] {
        let history = history_json(&env.client, id).await?;
        for secret in [password.as_str(), token, "wrong-Pa55word-xyz"] {
            assert!(
                !history.contains(secret),
                "{id}'s history contains a secret"
            );
        }
    }
    for worker in [&with_password, &with_token, &bad_password] {
        let logs = worker.logs();
        assert!(logs.contains("worker started"), "the log was captured");
        for secret in [password.as_str(), token, "wrong-Pa55word-xyz"] {
            assert!(
                !logs.contains(secret),
                "worker log contains a secret:\n{logs}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn creates_the_scan_role_in_aws_when_asked() -> anyhow::Result<()> {
    let config = EmulatorConfig {
        api_tokens: vec!["test-token".into()],
        ..Default::default()
    };
    let env = TestEnv::start(config).await?;
    let moto = Moto::start().await?;
    let worker = env.worker().aws(&moto).start(&env.dir).await?;
    let out = ensure_registry(
        &env.client,
        &worker.task_queue,
        json!({"accountId": "123456789012", "region": "us-east-1", "createRole": true}),
    )
    .await
    .unwrap();
    assert!(out.created);
    record_history(
        &env.client,
        "registry-123456789012-us-east-1",
        "ensure_registry_once_created_role",
    )
    .await?;

    let iam = moto.iam().await;
    let role = iam
        .get_role()
        .role_name("qualys-registry-scan-role")
        .send()
        .await?;
    let document = role
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .unwrap_or_default();
    let document = percent_encoding::percent_decode_str(document)
        .decode_utf8_lossy()
        .to_string();
    let policy: serde_json::Value = serde_json::from_str(&document)?;
    let aws_base: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/csapi/v1.3/registry/aws-base",
            env.qualys.base_url()
        ))
        .bearer_auth("test-token")
        .send()
        .await?
        .json()
        .await?;
    let statement = &policy["Statement"][0];
    assert_eq!(statement["Action"], "sts:AssumeRole");
    assert_eq!(
        statement["Principal"]["AWS"],
        json!(format!(
            "arn:aws:iam::{}:root",
            aws_base["accountId"].as_str().unwrap()
        ))
    );
    assert_eq!(
        statement["Condition"]["StringEquals"]["sts:ExternalId"],
        json!(aws_base["externalId"].to_string().trim_matches('"'))
    );
    let attached = iam
        .list_attached_role_policies()
        .role_name("qualys-registry-scan-role")
        .send()
        .await?;
    assert!(
        attached
            .attached_policies()
            .iter()
            .any(|p| p.policy_name() == Some("AmazonEC2ContainerRegistryReadOnly"))
    );
    Ok(())
}
