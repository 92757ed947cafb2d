//! `qflows dev` as a new user meets it: start it, paste the command it prints, read the result.

use qflows_integration::{find_tool, free_port, qflows_bin, wait_for};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn dev_runs_the_printed_command_to_a_registry_uuid_and_stops_on_ctrl_c() -> anyhow::Result<()>
{
    let temporal = find_tool("temporal", "QFLOWS_TEMPORAL_BIN")?;
    let (port, ui, emulator, bridge) = (free_port(), free_port(), free_port(), free_port());
    let results = std::env::temp_dir().join(format!("qflows-dev-loop-{}", std::process::id()));
    let mut dev = Command::new(qflows_bin()?)
        .args([
            "dev",
            "--dev-dir",
            "none",
            "--emulator-scan-delay-secs",
            "1",
        ])
        .args([
            "--temporal-port",
            &port.to_string(),
            "--ui-port",
            &ui.to_string(),
        ])
        .args(["--emulator-port", &emulator.to_string()])
        .args(["--bridge-port", &bridge.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("QFLOWS_TEMPORAL_BIN", &temporal)
        .env("QFLOWS_METRICS_LISTEN", "off")
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", "1")
        .env("QFLOWS_RESULTS", &results)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;

    // Read the banner until the "Try it" commands.
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let commands = tokio::time::timeout(Duration::from_secs(60), async {
        let mut commands = Vec::new();
        while let Some(line) = lines.next_line().await? {
            banner.push(line.clone());
            let line = line.trim().to_string();
            if line.contains(" workflow ") || line.starts_with("curl ") {
                commands.push(line);
            } else if line.starts_with("Ctrl-C") {
                break;
            }
        }
        anyhow::Ok(commands)
    })
    .await??;
    let find = |what: &str| {
        commands
            .iter()
            .find(|c| c.contains(what))
            .cloned()
            .unwrap_or_else(|| panic!("no `{what}` command in {commands:?}"))
    };
    let (start, show) = (find("--type EnsureRegistry"), find(" workflow show"));
    let (curl, show_deploy) = (find("curl "), find("--workflow-id deploy-aws-"));
    assert!(
        banner
            .iter()
            .any(|l| l.contains(&format!("http://127.0.0.1:{ui}"))),
        "UI URL: {banner:?}"
    );

    let sh = |line: String| async move {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .current_dir(qflows_integration::workspace_root())
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "`{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };
    sh(start).await?;
    let result = wait_for("the workflow to complete", Duration::from_secs(60), || {
        let show = show.clone();
        async move {
            let out = sh(show).await.ok()?;
            (out.contains("registryUuid") && out.contains("\"created\":true")).then_some(out)
        }
    })
    .await?;
    assert!(result.contains("ecr-123456789012-us-east-1"), "{result}");

    // The printed curl delivers the sample ECR push through the dev loop's bridge.
    let answer = sh(curl).await?;
    assert!(answer.contains("\"outcome\":\"started\""), "{answer}");
    let scanned = wait_for(
        "the deploy scan to complete",
        Duration::from_secs(90),
        || {
            let show = show_deploy.clone();
            async move {
                let out = sh(show).await.ok()?;
                out.contains("\"status\":\"scanned\"").then_some(out)
            }
        },
    )
    .await?;
    assert!(scanned.contains("payments/api"), "{scanned}");

    // Ctrl-C stops the worker, the emulator and the dev server.
    Command::new("kill")
        .args(["-INT", &dev.id().unwrap().to_string()])
        .status()
        .await?;
    let status = tokio::time::timeout(Duration::from_secs(30), dev.wait()).await??;
    assert!(status.success(), "dev exited with {status}");
    for p in [port, emulator, bridge] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still open"
        );
    }
    Ok(())
}
