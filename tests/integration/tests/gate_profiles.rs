//! Gate profiles end to end: one digest, one Qualys scan, a verdict per deployment scope, from
//! the `qflows worker` binary with `QFLOWS_GATE_PROFILES_FILE`, the real Temporal server, moto's
//! ECR and the Qualys emulator.

use qflows_integration::{
    MOTO_ACCOUNT, Moto, TestEnv, push_ecr_image, pushed_digest, qflows_bin, record_history,
    scan_on_deploy, vulnerabilities, wait_for,
};
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::{ImageStatus, ScanOnDeployOutput, Verdict};
use qflows_workflows::scan::search;
use qualys_emulator::EmulatorConfig;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::process::Command;

const REPOSITORY: &str = "probe/gated";

/// Production strict and enforcing, sandbox lenient and auditing: the README's example.
const PROFILES: &str = r#"
profiles:
  production:
    failSeverity: 4
    maxHigh: 0
    enforce: deny
    unscanned: fail
    maxImageAgeDays: 30
  sandbox:
    failSeverity: 5
    enforce: audit
selectors:
  - profile: production
    match: { ecsCluster: prod }
  - profile: sandbox
    match: { ecsCluster: "sandbox*" }
"#;

/// An `ECS Task State Change` of a task running the digest in `cluster`.
fn task_running(id: &str, cluster: &str, image: &str, digest: &str) -> Value {
    let arn =
        |kind: &str, name: &str| format!("arn:aws:ecs:us-east-1:{MOTO_ACCOUNT}:{kind}/{name}");
    json!({
        "version": "0", "id": id, "detail-type": "ECS Task State Change", "source": "aws.ecs",
        "account": MOTO_ACCOUNT, "region": "us-east-1", "time": "2026-12-01T00:00:00Z",
        "resources": [arn("task", &format!("{cluster}/{id}"))],
        "detail": {
            "clusterArn": arn("cluster", cluster),
            "taskArn": arn("task", &format!("{cluster}/{id}")),
            "taskDefinitionArn": arn("task-definition", "gated:1"),
            "lastStatus": "RUNNING", "desiredStatus": "RUNNING",
            "containers": [{"name": "app", "image": image, "imageDigest": digest,
                            "lastStatus": "RUNNING"}]
        }
    })
}

/// Qualys scans so far: schedules created, images they scanned.
fn scans(env: &TestEnv) -> (u64, u64) {
    let stats = env.qualys.stats();
    (stats.schedules_created, stats.image_scans)
}

/// The `QflowsGateResult` and `QflowsGateProfile` the run stored.
async fn stored(env: &TestEnv, workflow_id: &str) -> anyhow::Result<(String, String)> {
    let attributes = env
        .client
        .get_workflow_handle::<ScanOnDeploy>(workflow_id)
        .describe(Default::default())
        .await?
        .search_attributes();
    Ok((
        attributes.get(&search::GATE_RESULT).unwrap_or_default(),
        attributes.get(&search::GATE_PROFILE).unwrap_or_default(),
    ))
}

fn only_image(out: &ScanOnDeployOutput) -> &qflows_workflows::scan::model::ImageResult {
    assert_eq!(out.images.len(), 1, "{out:?}");
    &out.images[0]
}

/// Rewrites the profiles file; its length changes, so the worker sees the change even within
/// the file system's mtime granularity.
fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn one_scan_a_verdict_per_scope_and_a_changed_profile_without_a_rescan() -> anyhow::Result<()>
{
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 1000,
        ..Default::default()
    })
    .await?;
    let moto = Moto::start().await?;
    let profiles = env.dir.join("profiles.yaml");
    rewrite(&profiles, PROFILES);
    let results = env.dir.join("results");
    let worker = env
        .worker()
        .aws(&moto)
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("2"))
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
        .env(
            "QFLOWS_GATE_PROFILES_FILE",
            Some(profiles.to_str().unwrap()),
        )
        .start(&env.dir)
        .await?;
    let tq = &worker.task_queue;

    // One high and one medium vulnerability: within sandbox's critical-only gate, over
    // production's `failSeverity: 4` and `maxHigh: 0`.
    let push = push_ecr_image(
        &moto,
        &env.qualys,
        REPOSITORY,
        "1.0",
        "gated",
        vulnerabilities(&[4, 3]),
    )
    .await?;
    let digest = pushed_digest(&push);
    let image = format!("{MOTO_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{REPOSITORY}:1.0");

    let sandbox = scan_on_deploy(
        &env.client,
        tq,
        "profiles-sandbox",
        task_running("t-sandbox", "sandbox-eu", &image, &digest),
    )
    .await
    .unwrap();
    let scanned = only_image(&sandbox);
    assert_eq!(scanned.status, ImageStatus::Scanned, "{scanned:?}");
    assert_eq!(scanned.digest, digest);
    assert_eq!(
        (scanned.verdict, scanned.profile.as_deref()),
        (Some(Verdict::Pass), Some("sandbox")),
        "{sandbox:?}"
    );
    assert_eq!(sandbox.verdict, Some(Verdict::Pass));
    assert_eq!(sandbox.profile.as_deref(), Some("sandbox"));
    assert_eq!(
        stored(&env, "profiles-sandbox").await?,
        ("pass".into(), "sandbox".into())
    );
    let after_first = scans(&env);
    assert_eq!(after_first, (1, 1), "the first deployment scanned once");
    // The report holds the image's build time for `maxImageAgeDays` (Qualys' `created`).
    let report: Value =
        serde_json::from_slice(&std::fs::read(scanned.result_ref.as_ref().unwrap())?)?;
    assert!(
        report["imageCreatedMs"].as_u64().is_some_and(|ms| ms > 0),
        "{}",
        report["imageCreatedMs"]
    );
    record_history(
        &env.client,
        "profiles-sandbox",
        "scan_on_deploy_gate_profiles_sandbox",
    )
    .await?;

    // The same digest in production: the same findings, no new scan, `fail`.
    let production = scan_on_deploy(
        &env.client,
        tq,
        "profiles-production",
        task_running("t-prod", "prod", &image, &digest),
    )
    .await
    .unwrap();
    let judged = only_image(&production);
    assert_eq!(
        (judged.verdict, judged.profile.as_deref()),
        (Some(Verdict::Fail), Some("production")),
        "{production:?}"
    );
    assert_eq!(judged.result_ref, scanned.result_ref, "the same report");
    assert_eq!(production.profile.as_deref(), Some("production"));
    assert_eq!(
        stored(&env, "profiles-production").await?,
        ("fail".into(), "production".into())
    );
    assert_eq!(scans(&env), after_first, "no second Qualys scan");
    record_history(
        &env.client,
        "profiles-production",
        "scan_on_deploy_gate_profiles_production",
    )
    .await?;

    // Sandbox made strict: the next sandbox deployment fails, from the stored findings.
    let strict = PROFILES.replace(
        "  sandbox:\n    failSeverity: 5\n",
        "  sandbox:\n    failSeverity: 3\n",
    ) + "# sandbox made strict\n";
    assert_ne!(strict, PROFILES);
    rewrite(&profiles, &strict);
    let stricter = scan_on_deploy(
        &env.client,
        tq,
        "profiles-sandbox-strict",
        task_running("t-sandbox-2", "sandbox-eu", &image, &digest),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            only_image(&stricter).verdict,
            only_image(&stricter).profile.as_deref()
        ),
        (Some(Verdict::Fail), Some("sandbox")),
        "{stricter:?}"
    );
    assert_eq!(
        stored(&env, "profiles-sandbox-strict").await?,
        ("fail".into(), "sandbox".into())
    );
    assert_eq!(
        scans(&env),
        after_first,
        "a changed profile needs no rescan"
    );

    // A broken edit (a typo'd key) that would have made sandbox lenient again is refused:
    // the strict profiles stay.
    rewrite(
        &profiles,
        &PROFILES.replace("    failSeverity: 5\n", "    failSeverty: 5\n"),
    );
    let kept = scan_on_deploy(
        &env.client,
        tq,
        "profiles-sandbox-broken-edit",
        task_running("t-sandbox-3", "sandbox-eu", &image, &digest),
    )
    .await
    .unwrap();
    assert_eq!(only_image(&kept).verdict, Some(Verdict::Fail), "{kept:?}");
    wait_for(
        "the refusal in the log",
        Duration::from_secs(10),
        || async {
            let logs = worker.logs();
            (logs.contains("gate profiles change refused") && logs.contains("failSeverty"))
                .then_some(())
        },
    )
    .await?;
    assert_eq!(scans(&env), after_first);
    let (schedules, images) = scans(&env);
    eprintln!(
        "4 deployments of one digest under 2 profiles and 3 profile files: {schedules} Qualys \
         schedule(s), {images} image scan(s)"
    );
    Ok(())
}

/// Runs `qflows worker` with only `vars` set; (exit success, stderr).
async fn worker_with(vars: &[(&str, &str)]) -> anyhow::Result<(bool, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(qflows_bin()?)
            .arg("worker")
            .env_clear()
            .envs(vars.iter().copied())
            .output(),
    )
    .await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

#[tokio::test]
async fn a_profiles_file_with_an_unknown_key_stops_start_up_naming_its_path() -> anyhow::Result<()>
{
    let dir = std::env::temp_dir().join(format!("qflows-profiles-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("profiles.yaml");
    std::fs::write(&file, PROFILES.replace("maxHigh: 0", "maxHihg: 0"))?;
    let base = [
        ("QUALYS_POD", "US2"),
        ("QUALYS_USERNAME", "u"),
        ("QUALYS_PASSWORD", "hunter2-secret"),
        ("QFLOWS_METRICS_LISTEN", "off"),
        // Nothing listens here: an error about the file comes before any connection.
        ("TEMPORAL_ADDRESS", "127.0.0.1:1"),
    ];
    let mut vars = base.to_vec();
    vars.push(("QFLOWS_GATE_PROFILES_FILE", file.to_str().unwrap()));
    let (ok, stderr) = worker_with(&vars).await?;
    assert!(!ok, "must not start: {stderr}");
    assert!(stderr.contains("QFLOWS_GATE_PROFILES_FILE"), "{stderr}");
    assert!(stderr.contains("profiles.production"), "{stderr}");
    assert!(stderr.contains("maxHihg"), "{stderr}");
    assert!(!stderr.contains("cannot reach Temporal"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");

    // A selector's unknown key, in JSON.
    std::fs::write(
        &file,
        r#"{"selectors": [{"profile": "default", "match": {"ecsClusterName": "prod"}}]}"#,
    )?;
    let (ok, stderr) = worker_with(&vars).await?;
    assert!(!ok);
    assert!(
        stderr.contains("selectors[0].match") && stderr.contains("ecsClusterName"),
        "{stderr}"
    );

    // A valid file gets past the configuration: the failure is then the missing Temporal.
    std::fs::write(&file, PROFILES)?;
    let (ok, stderr) = worker_with(&vars).await?;
    assert!(!ok);
    assert!(
        !stderr.contains("QFLOWS_GATE_PROFILES_FILE") && stderr.contains("Temporal"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
