//! Inventory end to end: pods in a real kube-apiserver, ECR in moto, the Qualys emulator, the real
//! Temporal server and the `qflows` binary (worker, `inventory run`, `report`).
//!
//! - What runs keeps a fresh verdict: a digest never scanned is scanned from the inventory, a
//!   running one is rescanned every `QFLOWS_RESCAN_RUNNING_SECS` with no deploy event, a failing
//!   one alerts naming where it runs, and one no scope lists any more stops being rescanned.
//! - `qflows report` in every format.
//! - The benchmark (ignored; run it by name): 3,000 pods over 80 digests, one inventory run, the
//!   Temporal actions it cost and its time.

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use qflows_integration::kube::KubeApiServer;
use qflows_integration::{
    Moto, TestEnv, WebhookSink, WorkerBuilder, push_ecr_image, pushed_digest, qflows_bin,
    record_history, vulnerabilities, wait_for,
};
use qflows_workflows::ImageScan;
use qflows_workflows::inventory::InventorySummary;
use qflows_workflows::scan::model::{ImageResult, Verdict};
use qualys_emulator::EmulatorConfig;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ECR: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";

/// A worker that reads the test cluster's kubeconfig, with fast polls and short rescans.
fn worker(env: &TestEnv, moto: &Moto, kube: &KubeApiServer) -> WorkerBuilder {
    let results = env.dir.join("results");
    env.worker()
        .aws(moto)
        .env("KUBECONFIG", Some(kube.kubeconfig_path().to_str().unwrap()))
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("2"))
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
}

/// Creates `count` pods in `namespace` running `image` (by tag) with `digest` reported by the
/// kubelet, through the status subresource (no kubelet runs here).
async fn run_pods(
    kube: &kube::Client,
    namespace: &str,
    prefix: &str,
    image: &str,
    digest: &str,
    count: usize,
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
    let _ = namespaces.create(&PostParams::default(), &ns).await;
    let pods: Api<Pod> = Api::namespaced(kube.clone(), namespace);
    let repository = image.split(':').next().unwrap_or(image);
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": image}]}
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        let status = json!({"status": {"phase": "Running", "containerStatuses": [{
            "name": "app", "image": image, "imageID": format!("{repository}@{digest}"),
            "ready": true, "restartCount": 0, "state": {"running": {}}}]}});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    Ok(())
}

/// `qflows <args>` as a person runs it, against the test's Temporal; stdout on success.
async fn qflows(env: &TestEnv, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(qflows_bin()?)
        .args(["--log", "warn"])
        .args(args)
        .env("TEMPORAL_ADDRESS", &env.temporal.address)
        .env("QFLOWS_RESULTS", env.dir.join("results"))
        .output()
        .await?;
    let stdout = String::from_utf8(out.stdout)?;
    anyhow::ensure!(
        out.status.success(),
        "qflows {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// Takes the test cluster's inventory once through the CLI.
async fn inventory(
    env: &TestEnv,
    kube: &KubeApiServer,
    task_queue: &str,
    stale_after: &str,
) -> anyhow::Result<InventorySummary> {
    let out = qflows(
        env,
        &[
            "inventory",
            "run",
            "--kube-cluster",
            "test",
            "--kube-context",
            kube.context(),
            "--stale-after",
            stale_after,
            "--task-queue",
            task_queue,
        ],
    )
    .await?;
    Ok(serde_json::from_str(&out)?)
}

async fn result_of(env: &TestEnv, digest: &str) -> Option<ImageResult> {
    env.client
        .get_workflow_handle::<ImageScan>(format!("scan-{digest}"))
        .query(ImageScan::result, (), Default::default())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn what_runs_keeps_a_fresh_verdict_until_no_scope_lists_it() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 500,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let kube = KubeApiServer::start().await?;
    let hook = WebhookSink::start().await?;
    let worker = worker(&env, &moto, &kube)
        .env("QFLOWS_RESCAN_RUNNING_SECS", Some("8"))
        .env("QFLOWS_SCAN_TTL_SECS", Some("5"))
        .env("QFLOWS_WEBHOOK_URL", Some(&hook.url))
        .start(&env.dir)
        .await?;
    let tq = worker.task_queue.clone();

    // Two images that were running before qflows was installed: no deploy event ever came.
    let clean = push_ecr_image(
        &moto,
        &env.qualys,
        "shop/web",
        "1.0",
        "web",
        vulnerabilities(&[2]),
    )
    .await?;
    let vulnerable = push_ecr_image(
        &moto,
        &env.qualys,
        "shop/cart",
        "2.1",
        "cart",
        vulnerabilities(&[5, 4]),
    )
    .await?;
    let client = kube.client().await?;
    run_pods(
        &client,
        "shop",
        "web",
        &format!("{ECR}/shop/web:1.0"),
        &pushed_digest(&clean),
        3,
    )
    .await?;
    run_pods(
        &client,
        "shop",
        "cart",
        &format!("{ECR}/shop/cart:2.1"),
        &pushed_digest(&vulnerable),
        2,
    )
    .await?;

    let summary = inventory(&env, &kube, &tq, "30s").await?;
    assert_eq!(summary.scope_id, "k8s-test");
    assert_eq!(summary.containers, 5, "{summary:?}");
    assert_eq!(summary.digests, 2, "{summary:?}");
    assert_eq!(summary.signalled, 2, "{summary:?}");

    // Both are scanned from the inventory (on the rescan queue), once each.
    for (event, verdict) in [(&clean, Verdict::Pass), (&vulnerable, Verdict::Fail)] {
        let digest = pushed_digest(event);
        let result = wait_for(
            "a verdict from the inventory",
            Duration::from_secs(60),
            || async {
                result_of(&env, &digest)
                    .await
                    .filter(|r| r.verdict.is_some())
            },
        )
        .await?;
        assert_eq!(result.verdict, Some(verdict), "{result:?}");
    }
    assert_eq!(
        env.qualys.stats().schedules_created,
        2,
        "one scan per digest never scanned"
    );

    // The failing one alerted, naming where it runs.
    let alerts = wait_for("the fail alert", Duration::from_secs(30), || async {
        let got = hook.received();
        (!got.is_empty()).then_some(got)
    })
    .await?;
    let text = alerts[0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("FAIL") && text.contains("running in k8s-test: k8s:shop/"),
        "{text}"
    );

    // No deploy event, ever: the running images are rescanned (a new Qualys scan each) past
    // their 5-s TTL, every 8 s, for as long as the inventory sees them.
    let before = result_of(&env, &pushed_digest(&clean)).await.unwrap();
    wait_for(
        "rescans of the running images",
        Duration::from_secs(60),
        || async { (env.qualys.stats().schedules_created >= 4).then_some(()) },
    )
    .await?;
    let after = wait_for("a newer verdict", Duration::from_secs(30), || async {
        result_of(&env, &pushed_digest(&clean))
            .await
            .filter(|r| r.scanned_at > before.scanned_at)
    })
    .await?;
    assert_eq!(after.verdict, Some(Verdict::Pass));

    // The report, in every format.
    let table = qflows(&env, &["report"]).await?;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SCOPE"), "{table}");
    assert!(
        lines[1].contains("shop/cart") && lines[1].contains("fail"),
        "failing first:\n{table}"
    );
    assert!(
        lines[2].contains("shop/web") && lines[2].contains("pass"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&qflows(&env, &["report", "--format", "json"]).await?)?;
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(json[0]["critical"], 1, "{json}");
    assert_eq!(json[0]["running"], 2);
    assert_eq!(json[0]["source"], "entity");
    let csv = qflows(&env, &["report", "--format", "csv", "--failing"]).await?;
    assert_eq!(
        csv.lines().count(),
        2,
        "header and the failing image:\n{csv}"
    );
    let md = qflows(&env, &["report", "--format", "markdown"]).await?;
    assert!(md.starts_with("| SCOPE |"), "{md}");
    println!("qflows report:\n{table}\n{md}");
    let rescan = qflows(
        &env,
        &["scan", "rescan", "--running", "--reason", "KB update"],
    )
    .await?;
    assert!(
        rescan
            .contains("rescan requested for 2 running digest(s) over 1 scope(s); 0 had no entity"),
        "{rescan}"
    );

    // The web pods go away: the next inventory no longer lists that digest; once its last
    // sighting lapses (30 s) its entity ends, and Qualys is not asked again.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    for i in 0..3 {
        pods.delete(
            &format!("web-{i}"),
            &DeleteParams::default().grace_period(0),
        )
        .await?;
    }
    let summary = inventory(&env, &kube, &tq, "30s").await?;
    assert_eq!(summary.digests, 1, "{summary:?}");
    let web = env
        .client
        .get_workflow_handle::<ImageScan>(format!("scan-{}", pushed_digest(&clean)));
    let started = Instant::now();
    web.get_result(Default::default()).await?;
    let ended_after = started.elapsed();
    let scans = env.qualys.stats().schedules_created;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cart_rescans = env.qualys.stats().schedules_created - scans;
    assert!(
        cart_rescans <= 2,
        "only the still-running image is rescanned"
    );
    println!("the removed image's entity ended {ended_after:?} after the last inventory");

    record_history(&env.client, "inventory-k8s-test", "inventory_kubernetes").await?;
    record_history(
        &env.client,
        &format!("scan-{}", pushed_digest(&clean)),
        "image_scan_running_backfill",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_scope_is_refused_before_anything_runs() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let out = tokio::process::Command::new(qflows_bin()?)
        .args([
            "inventory",
            "run",
            "--aws-account",
            "12345",
            "--region",
            "us-east-1",
        ])
        .env("TEMPORAL_ADDRESS", &env.temporal.address)
        .output()
        .await?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scope.accountId"), "{stderr}");
    // Started by hand with a bad input, the workflow itself refuses it, naming the field.
    let worker = env.worker().start(&env.dir).await?;
    let handle = env
        .client
        .start_workflow(
            qflows_workflows::Inventory::run,
            json!({"scope": {"kind": "kubernetes", "cluster": "../etc"}}),
            temporalio_client::WorkflowStartOptions::new(
                worker.task_queue.clone(),
                "inventory-bad".to_string(),
            )
            .build(),
        )
        .await?;
    let failure = handle
        .get_result(Default::default())
        .await
        .expect_err("an invalid scope fails the run");
    assert!(
        format!("{failure:?}").contains("scope.cluster"),
        "{failure:?}"
    );
    record_history(&env.client, "inventory-bad", "inventory_invalid").await?;
    Ok(())
}

/// The benchmark: `cargo test -p qflows-integration --test inventory -- --ignored --nocapture`
/// (sizes: `INVENTORY_BENCH_PODS`, default 3,000, over `INVENTORY_BENCH_DIGESTS`, default 80).
#[tokio::test]
#[ignore = "a benchmark: it prints figures for the README"]
async fn bench_one_inventory_of_thousands_of_pods() -> anyhow::Result<()> {
    let pods: usize = std::env::var("INVENTORY_BENCH_PODS").map_or(3000, |v| v.parse().unwrap());
    let digests: usize =
        std::env::var("INVENTORY_BENCH_DIGESTS").map_or(80, |v| v.parse().unwrap());
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 500,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let kube = KubeApiServer::start().await?;
    let worker = worker(&env, &moto, &kube).start(&env.dir).await?;
    let client = kube.client().await?;
    let mut pushed = Vec::new();
    for d in 0..digests {
        let repo = format!("bench/app-{d}");
        let event = push_ecr_image(
            &moto,
            &env.qualys,
            &repo,
            "1.0",
            &repo,
            vulnerabilities(&[3]),
        )
        .await?;
        pushed.push((repo, pushed_digest(&event)));
    }
    let created = Instant::now();
    for (d, (repo, digest)) in pushed.iter().enumerate() {
        let n = pods / digests + usize::from(d < pods % digests);
        run_pods(
            &client,
            &format!("ns-{}", d % 10),
            &format!("app-{d}"),
            &format!("{ECR}/{repo}:1.0"),
            digest,
            n,
        )
        .await?;
    }
    println!(
        "created {pods} pods over {digests} digests in {:?}",
        created.elapsed()
    );

    let flags = ["--kube-cluster", "test", "--kube-context", kube.context()];
    measure(&env, &worker.task_queue, &flags, "k8s-test", pods, &pushed).await
}

/// The ECS benchmark: `cargo test -p qflows-integration --test inventory -- --ignored
/// --nocapture ecs` (3 clusters, 40 services, `INVENTORY_BENCH_TASKS` tasks, default 2,000, over
/// `INVENTORY_BENCH_DIGESTS`, default 60, in moto).
#[tokio::test]
#[ignore = "a benchmark: it prints figures for the README"]
async fn bench_one_inventory_of_thousands_of_ecs_tasks() -> anyhow::Result<()> {
    use aws_sdk_ecs::types::{ContainerDefinition, LaunchType};
    let tasks: usize = std::env::var("INVENTORY_BENCH_TASKS").map_or(2000, |v| v.parse().unwrap());
    let digests: usize =
        std::env::var("INVENTORY_BENCH_DIGESTS").map_or(60, |v| v.parse().unwrap());
    let (clusters, services) = (3usize, 40usize);
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 500,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let worker = env
        .worker()
        .aws(&moto)
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("2"))
        .env(
            "QFLOWS_RESULTS",
            Some(env.dir.join("results").to_str().unwrap()),
        )
        .start(&env.dir)
        .await?;
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let created = Instant::now();
    let mut pushed = Vec::new();
    let mut definitions = Vec::new();
    for d in 0..digests {
        let repo = format!("bench/svc-{d}");
        let event = push_ecr_image(
            &moto,
            &env.qualys,
            &repo,
            "1.0",
            &repo,
            vulnerabilities(&[3]),
        )
        .await?;
        let registered = ecs
            .register_task_definition()
            .family(format!("bench-{d}"))
            .container_definitions(
                ContainerDefinition::builder()
                    .name("app")
                    .image(format!("{ECR}/{repo}:1.0"))
                    .memory(128)
                    .build(),
            )
            .send()
            .await?;
        definitions.push(
            registered
                .task_definition()
                .and_then(|t| t.task_definition_arn())
                .unwrap_or_default()
                .to_string(),
        );
        pushed.push((repo, pushed_digest(&event)));
    }
    for c in 0..clusters {
        ecs.create_cluster()
            .cluster_name(format!("bench-{c}"))
            .send()
            .await?;
    }
    // moto's CreateService starts no tasks: run them as the services' deployments would, with
    // the service's group. Task j runs in service j % 40 with image j % digests.
    let mut groups = std::collections::BTreeMap::<(usize, usize), i32>::new();
    for j in 0..tasks {
        *groups.entry((j % services, j % digests)).or_default() += 1;
    }
    for ((s, d), n) in groups {
        let mut left = n;
        while left > 0 {
            let count = left.min(10);
            left -= count;
            ecs.run_task()
                .cluster(format!("bench-{}", s % clusters))
                .task_definition(&definitions[d])
                .group(format!("service:svc-{s}"))
                .count(count)
                .launch_type(LaunchType::Fargate)
                .send()
                .await?;
        }
    }
    println!(
        "created {tasks} tasks in {services} services over {digests} digests in {:?}",
        created.elapsed()
    );
    let flags = ["--aws-account", "123456789012", "--region", "us-east-1"];
    let scope = "aws-123456789012-us-east-1";
    measure(&env, &worker.task_queue, &flags, scope, tasks, &pushed).await
}

/// Runs one inventory of `scope` through the CLI, waits until every digest has a result, and
/// prints what it cost: time, Temporal actions of the Inventory run and of the entities, scans.
async fn measure(
    env: &TestEnv,
    task_queue: &str,
    scope_flags: &[&str],
    scope: &str,
    containers: usize,
    pushed: &[(String, String)],
) -> anyhow::Result<()> {
    let digests = pushed.len();
    let mut args = vec!["inventory", "run", "--task-queue", task_queue];
    args.extend_from_slice(scope_flags);
    let started = Instant::now();
    let summary: InventorySummary = serde_json::from_str(&qflows(env, &args).await?)?;
    let took = started.elapsed();
    assert_eq!(summary.containers, containers as u64, "{summary:?}");
    assert_eq!(summary.digests, digests as u64, "{summary:?}");
    for (_, digest) in pushed {
        wait_for(
            "every running digest has a result",
            Duration::from_secs(900),
            || async { result_of(env, digest).await },
        )
        .await?;
    }
    let all_scanned = started.elapsed();
    let run =
        qflows_bench::cost::workflow_tally(&env.client, &format!("inventory-{scope}")).await?;
    let mut entities = qflows_bench::cost::Tally::default();
    for (_, digest) in pushed {
        entities = entities
            + qflows_bench::cost::workflow_tally(&env.client, &format!("scan-{digest}")).await?;
    }
    let stats = env.qualys.stats();
    println!("inventory of {scope}: {containers} containers over {digests} digests (debug build)");
    println!(
        "  inventory run          {:.1} s (list, store, {} signal-with-starts)",
        took.as_secs_f64(),
        summary.signalled
    );
    println!(
        "  Inventory workflow     {} history events, {} actions",
        run.events, run.actions
    );
    println!(
        "  entity starts          {} actions (one per digest)",
        summary.signalled
    );
    println!(
        "  every digest scanned   {:.1} s after the start",
        all_scanned.as_secs_f64()
    );
    println!(
        "  the entities, in all   {} history events, {} actions (their start and scans included)",
        entities.events, entities.actions
    );
    println!(
        "  Qualys scans           {} for {digests} digests never scanned",
        stats.schedules_created
    );
    assert_eq!(stats.schedules_created, digests as u64);
    Ok(())
}

#[tokio::test]
async fn a_schedule_per_scope_skips_overlaps_and_catches_up_for_an_hour() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let out = tokio::process::Command::new(qflows_bin()?)
        .args(["--log", "warn", "schedule", "inventory", "--every", "2h"])
        .args(["--kube-cluster", "prod-eu", "--task-queue", "qflows-sched"])
        .env("TEMPORAL_ADDRESS", &env.temporal.address)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("schedule inventory-k8s-prod-eu created"),
        "{stderr}"
    );
    let described = env
        .client
        .get_schedule_handle("inventory-k8s-prod-eu")
        .describe(Default::default())
        .await?;
    let schedule = described.raw().schedule.clone().unwrap_or_default();
    let policies = schedule.policies.unwrap_or_default();
    // SCHEDULE_OVERLAP_POLICY_SKIP = 1.
    assert_eq!(policies.overlap_policy, 1, "{policies:?}");
    assert_eq!(
        policies.catchup_window.map(|d| d.seconds),
        Some(3600),
        "{policies:?}"
    );
    let temporalio_client::schedules::ScheduleDescriptionAction::StartWorkflow(action) =
        described.action()
    else {
        panic!("the schedule starts a workflow");
    };
    assert_eq!(action.workflow_type(), "Inventory");
    assert_eq!(action.task_queue(), "qflows-sched");
    // What one run sees counts as running for three intervals.
    let input: Option<Value> = action.args().await?;
    assert_eq!(
        input,
        Some(
            json!({"scope": {"kind": "kubernetes", "cluster": "prod-eu"}, "staleAfterSecs": 21600})
        )
    );
    // A second schedule for the same scope is refused, naming it.
    let again = tokio::process::Command::new(qflows_bin()?)
        .args(["--log", "warn", "schedule", "inventory", "--every", "2h"])
        .args(["--kube-cluster", "prod-eu"])
        .env("TEMPORAL_ADDRESS", &env.temporal.address)
        .output()
        .await?;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("inventory-k8s-prod-eu"));
    Ok(())
}
