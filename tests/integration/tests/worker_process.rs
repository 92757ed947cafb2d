//! The `qflows worker` process as an operator meets it: configuration errors and SIGTERM.

use qflows_integration::{TestEnv, qflows_bin, wait_for};
use qualys_emulator::EmulatorConfig;
use std::time::Duration;
use tokio::process::Command;

/// Runs `qflows worker` with only `vars` set and returns (exit success, stderr).
async fn worker_with(vars: &[(&str, &str)]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(qflows_bin()?)
        .arg("worker")
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    ))
}

#[tokio::test]
async fn invalid_configuration_stops_start_up_naming_the_variable() -> anyhow::Result<()> {
    let creds = [
        ("QUALYS_USERNAME", "u"),
        ("QUALYS_PASSWORD", "hunter2-secret"),
        ("QFLOWS_METRICS_LISTEN", "off"),
    ];
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("QUALYS_POD", "XX9")], "QUALYS_POD"),
        (vec![("QUALYS_PLATFORM", "mars1")], "QUALYS_PLATFORM: "),
        (
            vec![("QUALYS_GATEWAY_URL", "not a url")],
            "QUALYS_GATEWAY_URL",
        ),
        (
            vec![("QUALYS_POD", "US2"), ("QFLOWS_TASKQUEUE", "x")],
            "QFLOWS_TASKQUEUE (did you mean QFLOWS_TASK_QUEUE?)",
        ),
        (
            vec![
                ("QUALYS_POD", "US2"),
                ("QFLOWS_METRICS_LISTEN", "everywhere"),
            ],
            "QFLOWS_METRICS_LISTEN",
        ),
        (
            vec![("QUALYS_POD", "US2"), ("QUALYS_MAX_IN_FLIGHT", "0")],
            "QUALYS_MAX_IN_FLIGHT",
        ),
        (
            vec![("QUALYS_POD", "US2"), ("QUALYS_API_TOKEN", "tok")],
            "not both",
        ),
        (vec![], "QUALYS_POD"),
    ];
    for (extra, expected) in cases {
        let mut vars = creds.to_vec();
        vars.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        vars.extend(extra.iter().copied());
        let (ok, stderr) = worker_with(&vars).await?;
        assert!(!ok, "{extra:?} must not start");
        assert!(
            stderr.contains(expected),
            "{extra:?}: expected `{expected}` in: {stderr}"
        );
        assert!(
            !stderr.contains("hunter2-secret"),
            "the password leaked: {stderr}"
        );
    }
    let (ok, stderr) = worker_with(&[("QUALYS_POD", "US2")]).await?;
    assert!(!ok && stderr.contains("no Qualys credentials"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let mut worker = env.worker().start(&env.dir).await?;
    let pid = worker.pid().expect("running");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await??;
    assert!(status.success(), "exit status {status}");
    wait_for("the shutdown log line", Duration::from_secs(5), || async {
        worker.logs().contains("worker stopped").then_some(())
    })
    .await?;
    Ok(())
}
