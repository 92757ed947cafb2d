//! EnsureRegistry end to end: real Temporal, the `qflows worker` binary, the Qualys emulator, moto.

use futures::future::join_all;
use qflows_integration::{
    Moto, TestEnv, ensure_registry, history_json, record_history, run_workflow, scrape_metrics,
    wait_for,
};
use qualys_emulator::{EmulatorConfig, Faults, RateLimitRule, RegistryCreateResponse};
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

    // A second run (the first one has completed) finds it and creates nothing.
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
    record_history(
        &env.client,
        "registry-123456789012-us-east-1",
        "ensure_registry_created",
    )
    .await?;
    record_history(&env.client, "registry-again", "ensure_registry_found").await?;
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
        "ensure_registry_auth_failed",
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

    for id in ["s-1", "s-2", "s-3"] {
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
        "ensure_registry_created_role",
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
