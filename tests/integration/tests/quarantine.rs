//! Quarantine end to end: real Temporal, the `qflows worker` binary and the `qflows quarantine`
//! CLI, against moto's ECS (and the Resource Manager fake for container apps).
//!
//! Each ECS scenario has its own service in one moto cluster: the service runs revision 2 of
//! its family (the failing image), revision 1 runs the image before it. moto runs no tasks, so
//! "verify" reads the service's task definition, as it does against ECS.

use aws_sdk_ecs::types::ContainerDefinition;
use qflows::cli::quarantine::send_decision;
use qflows_integration::azure::AzureFake;
use qflows_integration::{
    Moto, TestEnv, push_ecr_image, pushed_digest, qflows_bin, record_history, vulnerabilities,
    wait_for,
};
use qflows_workflows::Quarantine;
use qflows_workflows::quarantine::model::{QuarantineDecision, QuarantineStatus, QuarantineView};
use qualys_emulator::EmulatorConfig;
use serde_json::json;
use std::time::Duration;
use temporalio_client::{Client, WorkflowGetResultOptions, WorkflowQueryOptions};

const DIGEST: &str = "sha256:5f1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d";
const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
const REPO: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web";

async fn register(ecs: &aws_sdk_ecs::Client, family: &str, image: &str) -> String {
    ecs.register_task_definition()
        .family(family)
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image(image)
                .memory(128)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .task_definition
        .unwrap()
        .task_definition_arn
        .unwrap()
}

/// A service in cluster `prod` running revision 2 of its family (`bad`), revision 1 (`good`)
/// registered before it. Returns (revision 1, revision 2).
async fn service(ecs: &aws_sdk_ecs::Client, name: &str, good: &str, bad: &str) -> (String, String) {
    let r1 = register(ecs, name, good).await;
    let r2 = register(ecs, name, bad).await;
    ecs.create_service()
        .cluster("prod")
        .service_name(name)
        .task_definition(&r2)
        .desired_count(1)
        .send()
        .await
        .unwrap();
    (r1, r2)
}

async fn running(ecs: &aws_sdk_ecs::Client, name: &str) -> String {
    let out = ecs
        .describe_services()
        .cluster("prod")
        .services(name)
        .send()
        .await
        .unwrap();
    out.services()[0].task_definition().unwrap().to_string()
}

/// `qflows quarantine <args…>` against the test's Temporal: (success, stdout, stderr).
async fn cli(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(qflows_bin().unwrap())
        .arg("quarantine")
        .args(args)
        .args(["--temporal-address", &env.temporal.address])
        .env_clear()
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn start_ecs(
    env: &TestEnv,
    queue: &str,
    service: &str,
    image: &str,
    timeout: &str,
) -> String {
    let (ok, stdout, stderr) = cli(
        env,
        &[
            "start",
            "--cluster",
            "prod",
            "--service",
            service,
            "--region",
            "us-east-1",
            "--image",
            image,
            "--digest",
            DIGEST,
            "--summary",
            "CVE-2024-3094 (critical, fixable)",
            "--approval-timeout",
            timeout,
            "--proposed-by",
            "alice",
            "--task-queue",
            queue,
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("nothing changes until"), "{stderr}");
    stdout.trim().to_string()
}

async fn state(client: &Client, id: &str) -> Option<QuarantineView> {
    client
        .get_workflow_handle::<Quarantine>(id)
        .query(Quarantine::state, (), WorkflowQueryOptions::default())
        .await
        .ok()
}

async fn awaiting(client: &Client, id: &str) -> QuarantineView {
    wait_for("the approval wait", Duration::from_secs(60), || async {
        state(client, id)
            .await
            .filter(|v| v.status == QuarantineStatus::AwaitingApproval)
    })
    .await
    .unwrap()
}

async fn result(client: &Client, id: &str) -> QuarantineView {
    client
        .get_workflow_handle::<Quarantine>(id)
        .get_result(WorkflowGetResultOptions::default())
        .await
        .unwrap()
}

fn decision(by: &str, reason: &str) -> QuarantineDecision {
    QuarantineDecision {
        by: by.into(),
        reason: reason.into(),
    }
}

#[tokio::test]
async fn ecs_approval_rolls_back_and_a_lapse_a_rejection_or_a_bad_update_change_nothing()
-> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    ecs.create_cluster().cluster_name("prod").send().await?;
    let good = format!("{REPO}:1");
    let bad = format!("{REPO}:2");
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().aws(&moto).start(&env.dir).await?;
    let q = worker.task_queue.clone();
    let client = &env.client;

    // 1. Approval: the service runs revision 1 again.
    let (r1, r2) = service(&ecs, "web", &good, &bad).await;
    let id = start_ecs(&env, &q, "web", &bad, "10m").await;
    assert_eq!(
        id,
        format!("quarantine-ecs-self-us-east-1-prod-web-{}", &DIGEST[7..])
    );
    let waiting = awaiting(client, &id).await;
    let plan = waiting.plan.clone().unwrap();
    assert_eq!(plan.current.as_deref(), Some(r2.as_str()));
    assert_eq!(plan.previous.as_deref(), Some(r1.as_str()));
    assert!(
        plan.previous_from.contains("newest ACTIVE revision"),
        "{plan:?}"
    );
    assert_eq!(plan.previous_containers[0].image, good);
    // Proposing it again finds the same run.
    assert_eq!(start_ecs(&env, &q, "web", &bad, "10m").await, id);
    // A decision without who (or why) is refused by the validator and changes nothing.
    for (by, reason) in [("", "exploited"), ("bob", " ")] {
        let err = send_decision(client, &id, decision(by, reason), true)
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("needs `by` and `reason`"),
            "{err:#}"
        );
    }
    assert_eq!(running(&ecs, "web").await, r2);
    assert_eq!(
        state(client, &id).await.unwrap().status,
        QuarantineStatus::AwaitingApproval
    );
    let (ok, stdout, stderr) = cli(
        &env,
        &[
            "approve",
            &id,
            "--by",
            "bob",
            "--reason",
            "CVE-2024-3094 is exploited",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let view: QuarantineView = serde_json::from_str(&stdout)?;
    assert_eq!(view.status, QuarantineStatus::RolledBack, "{stdout}");
    assert_eq!(running(&ecs, "web").await, r1);
    let note = view.decision.clone().unwrap();
    assert_eq!((note.action.as_str(), note.by.as_str()), ("approve", "bob"));
    assert!(view.applied.as_ref().unwrap().changed);
    assert!(view.verified.as_deref().unwrap().contains(&r1), "{view:?}");
    assert_eq!(result(client, &id).await, view);
    // Once over, a decision is refused (Temporal: the run is closed); the status command
    // prints what was recorded.
    assert!(
        send_decision(client, &id, decision("carol", "again"), false)
            .await
            .is_err()
    );
    let (ok, stdout, stderr) = cli(&env, &["status", &id]).await;
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<QuarantineView>(&stdout)?, view);
    record_history(client, &id, "quarantine_ecs_rolled_back").await?;

    // 2. A lapsed approval changes nothing.
    let (_, r2) = service(&ecs, "lapse", &good, &bad).await;
    let id = start_ecs(&env, &q, "lapse", &bad, "3s").await;
    let view = result(client, &id).await;
    assert_eq!(view.status, QuarantineStatus::Expired, "{view:?}");
    assert!(view.decision.is_none() && view.applied.is_none());
    assert_eq!(running(&ecs, "lapse").await, r2);
    record_history(client, &id, "quarantine_ecs_expired").await?;

    // 3. A rejection changes nothing.
    let (_, r2) = service(&ecs, "reject", &good, &bad).await;
    let id = start_ecs(&env, &q, "reject", &bad, "10m").await;
    awaiting(client, &id).await;
    let (ok, stdout, stderr) = cli(
        &env,
        &[
            "reject",
            &id,
            "--by",
            "carol",
            "--reason",
            "the CVE is not reachable",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let view: QuarantineView = serde_json::from_str(&stdout)?;
    assert_eq!(view.status, QuarantineStatus::Rejected);
    assert_eq!(view.decision.unwrap().by, "carol");
    assert!(view.applied.is_none());
    assert_eq!(running(&ecs, "reject").await, r2);
    record_history(client, &id, "quarantine_ecs_rejected").await?;

    // 4. A previous task definition that runs the same image is refused: nothing to approve.
    let (_, r2) = service(&ecs, "same", &bad, &bad).await;
    let id = start_ecs(&env, &q, "same", &bad, "10m").await;
    let view = result(client, &id).await;
    assert_eq!(view.status, QuarantineStatus::Refused, "{view:?}");
    assert!(
        view.reason
            .as_deref()
            .unwrap()
            .contains("runs the quarantined image too"),
        "{view:?}"
    );
    assert_eq!(running(&ecs, "same").await, r2);
    record_history(client, &id, "quarantine_ecs_refused").await?;

    // 5. An image the service does not run is refused as well.
    let (_, r2) = service(&ecs, "other", &good, &good).await;
    let id = start_ecs(&env, &q, "other", &bad, "10m").await;
    let view = result(client, &id).await;
    assert_eq!(view.status, QuarantineStatus::Refused, "{view:?}");
    assert!(view.reason.unwrap().contains("nothing to quarantine"));
    assert_eq!(running(&ecs, "other").await, r2);

    // Attacker-controlled names never reach a workflow.
    let (ok, _, stderr) = cli(
        &env,
        &[
            "start",
            "--cluster",
            "prod",
            "--service",
            "web/../x",
            "--image",
            &bad,
            "--digest",
            DIGEST,
            "--task-queue",
            &q,
        ],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("target.service"), "{stderr}");
    Ok(())
}

const APP: &str = "/subscriptions/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/resourceGroups/shop/providers/Microsoft.App/containerApps/web";

fn revision(name: &str, image: &str, active: bool) -> serde_json::Value {
    json!({
        "id": format!("{APP}/revisions/{name}"),
        "name": name,
        "type": "Microsoft.App/containerApps/revisions",
        "properties": {
            "active": active,
            "trafficWeight": if active { 50 } else { 0 },
            "template": {"containers": [{"name": "web", "image": image}]}
        }
    })
}

#[tokio::test]
async fn container_app_approval_deactivates_the_revision() -> anyhow::Result<()> {
    let fake = AzureFake::start().await?;
    let bad = "shop.azurecr.io/web:2";
    fake.put_resource(
        &format!("{APP}/revisions/web--r2"),
        revision("web--r2", bad, true),
    );
    fake.put_resource(
        &format!("{APP}/revisions/web--r1"),
        revision("web--r1", "shop.azurecr.io/web:1", true),
    );
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let mut builder = env.worker();
    for (k, v) in fake.worker_env() {
        builder = builder.env(k, Some(&v));
    }
    let worker = builder.start(&env.dir).await?;
    let client = &env.client;
    let rev = format!("{APP}/revisions/web--r2");
    let (ok, stdout, stderr) = cli(
        &env,
        &[
            "start",
            "--revision-id",
            &rev,
            "--image",
            bad,
            "--digest",
            DIGEST,
            "--approval-timeout",
            "10m",
            "--task-queue",
            &worker.task_queue,
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let id = stdout.trim().to_string();
    assert_eq!(
        id,
        format!(
            "quarantine-aca-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0-shop-web-web--r2-{}",
            &DIGEST[7..]
        )
    );
    let waiting = awaiting(client, &id).await;
    let plan = waiting.plan.unwrap();
    assert_eq!(plan.revision_active, Some(true));
    assert_eq!(plan.other_active_revisions, vec!["web--r1".to_string()]);
    let (ok, stdout, stderr) = cli(
        &env,
        &[
            "approve",
            &id,
            "--by",
            "bob",
            "--reason",
            "CVE-2024-3094 is exploited",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let view: QuarantineView = serde_json::from_str(&stdout)?;
    assert_eq!(view.status, QuarantineStatus::Deactivated, "{stdout}");
    assert!(view.verified.unwrap().contains("inactive"));
    assert_eq!(fake.calls().get("arm/deactivate"), Some(&1));
    // The fake's revision is inactive now; the other one still serves.
    assert_eq!(fake.resource(&rev).unwrap()["properties"]["active"], false);
    assert_eq!(
        fake.resource(&format!("{APP}/revisions/web--r1")).unwrap()["properties"]["active"],
        true
    );
    record_history(client, &id, "quarantine_aca_deactivated").await?;

    // A revision Resource Manager does not know (`ResourceNotFound`) is refused; an ID that is
    // not a revision's never reaches a workflow.
    let gone = format!("{APP}/revisions/web--r9");
    let (ok, stdout, stderr) = cli(
        &env,
        &[
            "start",
            "--revision-id",
            &gone,
            "--image",
            bad,
            "--digest",
            DIGEST,
            "--task-queue",
            &worker.task_queue,
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let view = result(client, stdout.trim()).await;
    assert_eq!(view.status, QuarantineStatus::Refused, "{view:?}");
    assert!(view.reason.unwrap().contains("does not exist"));
    let (ok, _, stderr) = cli(
        &env,
        &[
            "start",
            "--revision-id",
            APP,
            "--image",
            bad,
            "--digest",
            DIGEST,
        ],
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("target.revisionId"), "{stderr}");
    Ok(())
}

/// `QFLOWS_QUARANTINE=propose`: an inventory sees a failing image running in an ECS service;
/// its entity proposes a quarantine there (and none for the passing image), which waits for a
/// person, whose approval rolls the service back.
#[tokio::test]
async fn a_failing_image_an_inventory_sees_in_a_service_is_proposed_once_approved_rolled_back()
-> anyhow::Result<()> {
    use aws_sdk_ecs::types::LaunchType;
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 300,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let worker = env
        .worker()
        .aws(&moto)
        .env("QFLOWS_QUARANTINE", Some("propose"))
        .env("QFLOWS_QUARANTINE_APPROVAL_SECS", Some("600"))
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("2"))
        .env(
            "QFLOWS_RESULTS",
            Some(env.dir.join("results").to_str().unwrap()),
        )
        .start(&env.dir)
        .await?;
    assert!(
        worker.logs().contains("QFLOWS_QUARANTINE=propose"),
        "{}",
        worker.logs()
    );
    let q = worker.task_queue.clone();
    let client = &env.client;
    let good = push_ecr_image(
        &moto,
        &env.qualys,
        "shop/web",
        "1.0",
        "web-1",
        vulnerabilities(&[2]),
    )
    .await?;
    let bad = push_ecr_image(
        &moto,
        &env.qualys,
        "shop/web",
        "2.0",
        "web-2",
        vulnerabilities(&[5, 4]),
    )
    .await?;
    let (good, bad) = (pushed_digest(&good), pushed_digest(&bad));
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    ecs.create_cluster().cluster_name("prod").send().await?;
    let images = (format!("{ECR}/shop/web:1.0"), format!("{ECR}/shop/web:2.0"));
    let (r1, r2) = service(&ecs, "web", &images.0, &images.1).await;
    // moto's CreateService starts no tasks: run one as the service's deployment would.
    ecs.run_task()
        .cluster("prod")
        .task_definition(&r2)
        .group("service:web")
        .count(1)
        .launch_type(LaunchType::Fargate)
        .send()
        .await?;

    let out = tokio::process::Command::new(qflows_bin()?)
        .args(["--log", "warn", "inventory", "run", "--task-queue", &q])
        .args(["--aws-account", "123456789012", "--region", "us-east-1"])
        .env("TEMPORAL_ADDRESS", &env.temporal.address)
        .env("QFLOWS_RESULTS", env.dir.join("results"))
        .output()
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let id = format!(
        "quarantine-ecs-123456789012-us-east-1-prod-web-{}",
        bad.trim_start_matches("sha256:")
    );
    let view = wait_for("the proposal", Duration::from_secs(120), || async {
        state(client, &id)
            .await
            .filter(|v| v.status == QuarantineStatus::AwaitingApproval)
    })
    .await?;
    let input = view.input.clone().unwrap();
    assert_eq!(input.digest, bad);
    assert_eq!(
        input.proposed_by.as_deref(),
        Some("qflows (ImageScan entity)")
    );
    assert!(input.verdict.summary.contains("critical 1"), "{input:?}");
    assert_eq!(view.plan.unwrap().previous.as_deref(), Some(r1.as_str()));
    // Nothing changed before approval, and the passing image proposed nothing.
    assert_eq!(running(&ecs, "web").await, r2);
    let good_id = format!(
        "quarantine-ecs-123456789012-us-east-1-prod-web-{}",
        good.trim_start_matches("sha256:")
    );
    assert!(state(client, &good_id).await.is_none());

    let (ok, stdout, stderr) = cli(
        &env,
        &[
            "approve",
            &id,
            "--by",
            "bob",
            "--reason",
            "critical CVE in production",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    let view: QuarantineView = serde_json::from_str(&stdout)?;
    assert_eq!(view.status, QuarantineStatus::RolledBack, "{stdout}");
    assert_eq!(running(&ecs, "web").await, r1);
    record_history(client, &id, "quarantine_ecs_proposed_by_entity").await?;
    record_history(
        client,
        &format!("scan-{bad}"),
        "image_scan_quarantine_proposed",
    )
    .await?;
    Ok(())
}
