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
    let (port, ui, emulator) = (free_port(), free_port(), free_port());
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
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .env("QFLOWS_TEMPORAL_BIN", &temporal)
        .env("QFLOWS_METRICS_LISTEN", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;

    // Read the banner until the "Try it" commands.
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let (start, show) = tokio::time::timeout(Duration::from_secs(60), async {
        let (mut start, mut show) = (None, None);
        while let Some(line) = lines.next_line().await? {
            banner.push(line.clone());
            let line = line.trim().to_string();
            if line.contains(" workflow start") {
                start = Some(line);
            } else if line.contains(" workflow show") {
                show = Some(line);
                break;
            }
        }
        anyhow::Ok((start, show))
    })
    .await??;
    let (start, show) = (
        start.expect("a start command"),
        show.expect("a show command"),
    );
    assert!(
        banner
            .iter()
            .any(|l| l.contains(&format!("http://127.0.0.1:{ui}"))),
        "UI URL: {banner:?}"
    );

    let sh = |line: String| async move {
        let out = Command::new("sh").arg("-c").arg(&line).output().await?;
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

    // Ctrl-C stops the worker, the emulator and the dev server.
    Command::new("kill")
        .args(["-INT", &dev.id().unwrap().to_string()])
        .status()
        .await?;
    let status = tokio::time::timeout(Duration::from_secs(30), dev.wait()).await??;
    assert!(status.success(), "dev exited with {status}");
    for p in [port, emulator] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still open"
        );
    }
    Ok(())
}
