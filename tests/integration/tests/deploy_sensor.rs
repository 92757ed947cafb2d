//! DeploySensor on ECS end to end: real Temporal, the `qflows worker` binary, the Qualys
//! emulator and moto.
//!
//! moto runs no tasks: a DAEMON service on its cluster wants 0 tasks and its one deployment is
//! COMPLETED at once, so the roll-out wait passes and verification with Qualys decides. The
//! real sensor registers itself once it runs; here the test plays that part through the
//! emulator (`add_sensor`) on the success path, and leaves Qualys without a sensor on the
//! failure path, where the roll-back runs for real against moto. The sensor registers once the
//! service runs the task definition (after the run's plan), as a real one would.

use qflows_activities::sensor::render::{SPEC_LABEL, ecs_task_definition};
use qflows_integration::{
    Moto, TestEnv, decoded_payloads, deploy_sensor, history_json, qflows_bin, record_history,
};
use qflows_workflows::sensor::model::DeploySensorInput;
use qualys_emulator::EmulatorConfig;
use serde_json::json;
use std::collections::BTreeMap;

const ACTIVATION: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:qualys/activation-AbCdEf";
const CUSTOMER: &str =
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:qualys/customer-GhIjKl";

fn input(image: &str) -> serde_json::Value {
    json!({
        "target": "ecs",
        "cluster": "sensors",
        "region": "us-east-1",
        "image": image,
        "activationIdRef": ACTIVATION,
        "customerIdRef": CUSTOMER,
        "podUrl": "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "rolloutTimeoutSecs": 5,
        "verifyTimeoutSecs": 3,
        "pollIntervalSecs": 1
    })
}

async fn service(ecs: &aws_sdk_ecs::Client) -> aws_sdk_ecs::types::Service {
    let out = ecs
        .describe_services()
        .cluster("sensors")
        .services("qualys-registry-sensor")
        .send()
        .await
        .unwrap();
    out.services()[0].clone()
}

/// Plays the sensor: registers with Qualys once the service in `region` runs a task definition
/// of `image`.
async fn register_when_running(
    moto_endpoint: String,
    region: &'static str,
    cluster: &'static str,
    image: &'static str,
    qualys: qualys_emulator::RunningEmulator,
) {
    let creds = aws_credential_types::Credentials::from_keys("testing", "testing", None);
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(creds)
        .endpoint_url(moto_endpoint)
        .load()
        .await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    loop {
        if let Ok(out) = ecs
            .describe_services()
            .cluster(cluster)
            .services("qualys-registry-sensor")
            .send()
            .await
            && let Some(td) = out.services().first().and_then(|s| s.task_definition())
            && let Ok(d) = ecs
                .describe_task_definition()
                .task_definition(td)
                .send()
                .await
            && d.task_definition()
                .and_then(|t| t.container_definitions().first())
                .and_then(|c| c.image())
                == Some(image)
        {
            qualys.add_sensor(json!({"hostname": format!("ip-10-0-1-17.{region}"),
                "registrySensor": true, "sensorVersion": image.rsplit(':').next().unwrap()}));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn deploys_once_then_changes_nothing_then_rolls_back() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    ecs.create_cluster().cluster_name("sensors").send().await?;
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().aws(&moto).start(&env.dir).await?;
    let q = &worker.task_queue;

    // 1. First deployment: the sensor phones home, so verification passes.
    let v1 = "docker.io/qualys/qcs-sensor:1.40.1-0";
    tokio::spawn(register_when_running(
        moto.endpoint.clone(),
        "us-east-1",
        "sensors",
        v1,
        env.qualys.clone(),
    ));
    let first = deploy_sensor(&env.client, q, "sensor-first", input(v1))
        .await
        .unwrap();
    assert!(first.changed);
    assert_eq!(first.sensors, 1);

    // The service and task definition are exactly what render produces.
    let svc = service(&ecs).await;
    assert_eq!(svc.task_definition(), Some(first.applied.as_str()));
    assert_eq!(
        svc.scheduling_strategy().map(|s| s.as_str()),
        Some("DAEMON")
    );
    let typed: DeploySensorInput = serde_json::from_value(input(v1))?;
    let wanted = ecs_task_definition(&typed);
    let td = ecs
        .describe_task_definition()
        .task_definition(&first.applied)
        .send()
        .await?
        .task_definition
        .unwrap();
    assert_eq!(td.family(), Some("qualys-registry-sensor"));
    assert_eq!(td.network_mode().map(|m| m.as_str()), Some("bridge"));
    assert_eq!(td.cpu(), Some("256"));
    assert_eq!(td.memory(), Some("512"));
    assert_eq!(
        td.execution_role_arn(),
        Some("arn:aws:iam::123456789012:role/ecsTaskExecutionRole")
    );
    let volumes: Vec<(String, String)> = td
        .volumes()
        .iter()
        .map(|v| {
            (
                v.name().unwrap().to_string(),
                v.host().unwrap().source_path().unwrap().to_string(),
            )
        })
        .collect();
    let wanted_volumes: Vec<(String, String)> = wanted
        .volumes
        .iter()
        .map(|v| (v.name.clone(), v.host.source_path.clone()))
        .collect();
    assert_eq!(volumes, wanted_volumes);
    assert!(volumes.contains(&("docker_sock".into(), "/var/run/docker.sock".into())));
    assert!(volumes.contains(&("docker_root".into(), "/var/lib/docker".into())));
    let c = &td.container_definitions()[0];
    let w = &wanted.container_definitions[0];
    assert_eq!(c.image(), Some(v1));
    assert_eq!(
        c.command(),
        ["--ecs-mode", "--registry-sensor", "--enable-console-logs"]
    );
    assert_eq!(c.command(), w.command.as_slice());
    let secrets: Vec<(&str, &str)> = c
        .secrets()
        .iter()
        .map(|s| (s.name(), s.value_from()))
        .collect();
    assert_eq!(
        secrets,
        [("ACTIVATIONID", ACTIVATION), ("CUSTOMERID", CUSTOMER)]
    );
    let env_vars: Vec<(&str, &str)> = c
        .environment()
        .iter()
        .map(|e| (e.name().unwrap(), e.value().unwrap()))
        .collect();
    assert_eq!(
        env_vars,
        [(
            "POD_URL",
            "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor"
        )]
    );
    let mounts: Vec<(&str, &str, bool)> = c
        .mount_points()
        .iter()
        .map(|m| {
            (
                m.source_volume().unwrap(),
                m.container_path().unwrap(),
                m.read_only().unwrap_or(false),
            )
        })
        .collect();
    let wanted_mounts: Vec<(&str, &str, bool)> = w
        .mount_points
        .iter()
        .map(|m| {
            (
                m.source_volume.as_str(),
                m.container_path.as_str(),
                m.read_only,
            )
        })
        .collect();
    assert_eq!(mounts, wanted_mounts);
    let log = c.log_configuration().unwrap();
    assert_eq!(log.log_driver().as_str(), "awslogs");
    let options: BTreeMap<String, String> = log
        .options()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(options, w.log_configuration.options);
    assert_eq!(
        c.docker_labels().unwrap().get(SPEC_LABEL),
        w.docker_labels.get(SPEC_LABEL)
    );

    // `qflows sensor render` prints exactly this task definition.
    let mut render = tokio::process::Command::new(qflows_bin()?);
    // The test's own QFLOWS_* variables (QFLOWS_BIN_DIR, …) are not the CLI's.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("QFLOWS_")) {
        render.env_remove(key);
    }
    let rendered = render
        .args([
            "sensor",
            "render",
            "--target",
            "ecs",
            "--cluster",
            "sensors",
            "--region",
            "us-east-1",
            "--image",
            v1,
            "--activation-id-ref",
            ACTIVATION,
            "--customer-id-ref",
            CUSTOMER,
            "--pod-url",
            "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor",
            "--execution-role-arn",
            "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        ])
        .output()
        .await?;
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&rendered.stdout)?;
    assert_eq!(printed, serde_json::to_value(&wanted)?);

    // 2. The same input again changes nothing: no new revision, same service.
    let again = deploy_sensor(&env.client, q, "sensor-again", input(v1))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.applied, first.applied);
    let revisions = ecs
        .list_task_definitions()
        .family_prefix("qualys-registry-sensor")
        .send()
        .await?;
    assert_eq!(revisions.task_definition_arns().len(), 1);

    // 3. A new image whose sensor never registers: rolled back to the first revision.
    env.qualys.clear_sensors();
    let failed = deploy_sensor(
        &env.client,
        q,
        "sensor-rolled-back",
        input("docker.io/qualys/qcs-sensor:9.9.9-0"),
    )
    .await
    .unwrap_err();
    assert_eq!(failed.type_name.as_deref(), Some("SensorRolledBack"));
    assert!(
        failed
            .message
            .contains("0 of the 1 sensors this run started registered")
            && failed
                .message
                .contains(&format!("restored to task definition {}", first.applied)),
        "{}",
        failed.message
    );
    assert_eq!(
        service(&ecs).await.task_definition(),
        Some(first.applied.as_str())
    );
    // The failed revision is deregistered: only the first one is active.
    let active = ecs
        .list_task_definitions()
        .family_prefix("qualys-registry-sensor")
        .status(aws_sdk_ecs::types::TaskDefinitionStatus::Active)
        .send()
        .await?;
    assert_eq!(
        active.task_definition_arns(),
        std::slice::from_ref(&first.applied)
    );

    // Histories carry references (ARNs) only: ECS reads the values itself at task start.
    for id in ["sensor-first", "sensor-again", "sensor-rolled-back"] {
        let history: serde_json::Value =
            serde_json::from_str(&history_json(&env.client, id).await?)?;
        let payloads = decoded_payloads(&history);
        assert!(
            payloads.contains(ACTIVATION),
            "the input reached the history"
        );
        assert!(!payloads.contains("\"ACTIVATIONID\",\"value\""));
    }
    // New names: the first design's histories (deploy_sensor_ecs_*) stay as recorded.
    record_history(
        &env.client,
        "sensor-first",
        "deploy_sensor_planned_ecs_created",
    )
    .await?;
    record_history(
        &env.client,
        "sensor-rolled-back",
        "deploy_sensor_planned_ecs_rolled_back",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_after_the_service_update_still_restores_the_task_definition()
-> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    ecs.create_cluster().cluster_name("sensors").send().await?;
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().aws(&moto).start(&env.dir).await?;
    let q = worker.task_queue.clone();
    let v1 = "docker.io/qualys/qcs-sensor:1.40.1-0";
    tokio::spawn(register_when_running(
        moto.endpoint.clone(),
        "us-east-1",
        "sensors",
        v1,
        env.qualys.clone(),
    ));
    let first = deploy_sensor(&env.client, &q, "sensor-ecs-first", input(v1))
        .await
        .unwrap();
    drop(worker);

    // This worker exits right after UpdateService: the apply never reports.
    let mut crashing = env
        .worker()
        .aws(&moto)
        .task_queue(&q)
        .env(
            "QFLOWS_FAULT_EXIT_AFTER",
            Some("sensor-ecs-service-updated"),
        )
        .start(&env.dir)
        .await?;
    let v2 = "docker.io/qualys/qcs-sensor:9.9.9-0";
    let run = tokio::spawn({
        let (client, q, input) = (env.client.clone(), q.clone(), input(v2));
        async move { deploy_sensor(&client, &q, "sensor-ecs-crash", input).await }
    });
    let status =
        tokio::time::timeout(std::time::Duration::from_secs(60), crashing.wait()).await??;
    assert_eq!(status.code(), Some(70), "{}", crashing.logs());
    assert_ne!(
        service(&ecs).await.task_definition(),
        Some(first.applied.as_str())
    );
    // The retried apply finds v2 in place; the roll-back still restores the first revision.
    let _worker = env
        .worker()
        .aws(&moto)
        .task_queue(&q)
        .start(&env.dir)
        .await?;
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
            .contains(&format!("restored to task definition {}", first.applied)),
        "{}",
        failed.message
    );
    assert_eq!(
        service(&ecs).await.task_definition(),
        Some(first.applied.as_str())
    );
    record_history(
        &env.client,
        "sensor-ecs-crash",
        "deploy_sensor_planned_ecs_retried_apply",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn two_clusters_named_default_in_two_regions_deploy_independently() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    for region in ["us-east-1", "eu-west-1"] {
        let config = moto
            .sdk_config()
            .await
            .into_builder()
            .region(aws_config::Region::new(region))
            .build();
        aws_sdk_ecs::Client::new(&config)
            .create_cluster()
            .cluster_name("default")
            .send()
            .await?;
    }
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().aws(&moto).start(&env.dir).await?;
    let v1 = "docker.io/qualys/qcs-sensor:1.40.1-0";
    let mut runs = Vec::new();
    for region in ["us-east-1", "eu-west-1"] {
        tokio::spawn(register_when_running(
            moto.endpoint.clone(),
            region,
            "default",
            v1,
            env.qualys.clone(),
        ));
        // Through the CLI, which names the workflow after account, region and cluster.
        let mut cli = tokio::process::Command::new(qflows_bin()?);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("QFLOWS_")) {
            cli.env_remove(key);
        }
        cli.env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .args([
                "sensor",
                "deploy",
                "--temporal-address",
                &env.temporal.address,
            ])
            .args(["--task-queue", worker.task_queue.as_str()])
            .args(["--rollout-timeout-secs", "5", "--verify-timeout-secs", "5"])
            .args([
                "--poll-interval-secs",
                "1",
                "--target",
                "ecs",
                "--cluster",
                "default",
            ])
            .args(["--region", region, "--image", v1])
            .args([
                "--activation-id-ref",
                ACTIVATION,
                "--customer-id-ref",
                CUSTOMER,
            ])
            .args([
                "--execution-role-arn",
                "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
            ]);
        runs.push((region, cli.output()));
    }
    for (region, run) in runs {
        let out = run.await?;
        assert!(
            out.status.success(),
            "{region}: {}
{}",
            String::from_utf8_lossy(&out.stderr),
            worker.logs()
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(result["changed"], true, "{region}: {result}");
        assert_eq!(result["sensors"], 1, "{region}: {result}");
        // Each region has its own run, under its own ID.
        history_json(
            &env.client,
            &format!("sensor-ecs-123456789012-{region}-default"),
        )
        .await?;
    }
    Ok(())
}

/// `qflows sensor deploy` for an ECS target, without AWS (the account is given).
fn deploy_cli(
    env: &TestEnv,
    task_queue: &str,
    cluster: &str,
    image: &str,
) -> anyhow::Result<tokio::process::Command> {
    let mut cli = tokio::process::Command::new(qflows_bin()?);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("QFLOWS_")) {
        cli.env_remove(key);
    }
    cli.args([
        "sensor",
        "deploy",
        "--temporal-address",
        &env.temporal.address,
    ])
    .args([
        "--task-queue",
        task_queue,
        "--target",
        "ecs",
        "--cluster",
        cluster,
    ])
    .args([
        "--region",
        "us-east-1",
        "--account-id",
        "123456789012",
        "--image",
        image,
    ])
    .args([
        "--activation-id-ref",
        ACTIVATION,
        "--customer-id-ref",
        CUSTOMER,
    ]);
    Ok(cli)
}

#[tokio::test]
async fn a_second_deploy_with_another_image_is_refused_while_one_runs() -> anyhow::Result<()> {
    use temporalio_client::{WorkflowIdConflictPolicy, WorkflowStartOptions};
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    // No worker polls this queue: the runs started below stay running.
    let queue = format!("no-worker-{}", qflows_integration::free_port());
    let v1 = "docker.io/qualys/qcs-sensor:1.40.1-0";
    let v2 = "docker.io/qualys/qcs-sensor:1.41.0-0";
    for (id, cluster) in [
        // Under the target's ID, and under the ID earlier versions used.
        ("sensor-ecs-123456789012-us-east-1-default", "default"),
        ("sensor-ecs-legacy", "legacy"),
    ] {
        let mut running = input(v1);
        running["cluster"] = cluster.into();
        env.client
            .start_workflow(
                qflows_workflows::DeploySensor::run,
                running,
                WorkflowStartOptions::new(queue.as_str(), id)
                    .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
                    .build(),
            )
            .await?;
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            deploy_cli(&env, &queue, cluster, v2)?.output(),
        )
        .await??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{id}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "DeploySensor {id} is already running for this target with a different input \
                 (image {v1}; you asked for {v2})"
            )),
            "{id}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("temporal workflow cancel -w {id}")),
            "{stderr}"
        );
        // The running deployment is untouched: still its one run, with its own input.
        let history: serde_json::Value =
            serde_json::from_str(&history_json(&env.client, id).await?)?;
        assert!(
            history["events"].as_array().is_some_and(|e| e.len() <= 3),
            "{id}: {history}"
        );
    }
    Ok(())
}

/// Makes Qualys answer every sensor listing with 429 once the service in us-east-1 runs a task
/// definition of `image` (after the run's plan listed the sensors it knew).
async fn throttle_sensors_when_running(
    moto_endpoint: String,
    image: &'static str,
    qualys: qualys_emulator::RunningEmulator,
) {
    let creds = aws_credential_types::Credentials::from_keys("testing", "testing", None);
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(moto_endpoint)
        .load()
        .await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    loop {
        if let Ok(out) = ecs
            .describe_services()
            .cluster("sensors")
            .services("qualys-registry-sensor")
            .send()
            .await
            && let Some(td) = out.services().first().and_then(|s| s.task_definition())
            && let Ok(d) = ecs
                .describe_task_definition()
                .task_definition(td)
                .send()
                .await
            && d.task_definition()
                .and_then(|t| t.container_definitions().first())
                .and_then(|c| c.image())
                == Some(image)
        {
            qualys.set_faults(qualys_emulator::Faults {
                throttle_429_rate: 1.0,
                paths: Some(vec!["/csapi/v1.3/sensors".into()]),
                ..Default::default()
            });
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn qualys_throttling_during_verify_is_unobservable_and_rolls_nothing_back()
-> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    ecs.create_cluster().cluster_name("sensors").send().await?;
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let worker = env.worker().aws(&moto).start(&env.dir).await?;
    let v1 = "docker.io/qualys/qcs-sensor:1.40.1-0";
    tokio::spawn(throttle_sensors_when_running(
        moto.endpoint.clone(),
        v1,
        env.qualys.clone(),
    ));
    let failed = deploy_sensor(
        &env.client,
        &worker.task_queue,
        "sensor-throttled",
        input(v1),
    )
    .await
    .unwrap_err();
    assert_eq!(
        failed.type_name.as_deref(),
        Some("SensorUnobservable"),
        "{}\n{}",
        failed.message,
        worker.logs()
    );
    assert!(
        failed.message.contains("not rolled back"),
        "{}",
        failed.message
    );
    // A roll-back would have deleted the service this run created: it still runs v1.
    let svc = service(&ecs).await;
    let td = ecs
        .describe_task_definition()
        .task_definition(svc.task_definition().unwrap())
        .send()
        .await?
        .task_definition
        .unwrap();
    assert_eq!(td.container_definitions()[0].image(), Some(v1));
    let history = history_json(&env.client, "sensor-throttled").await?;
    assert!(
        !history.contains("sensor.RollbackPlanned"),
        "a roll-back ran"
    );
    assert!(
        history.contains("sensor.VerifyRegistered"),
        "verify never ran"
    );
    Ok(())
}
