//! The `qualys-emulator` binary: flags, the ready line, seed files and a graceful SIGTERM exit.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_binary_prints_its_address_serves_seeds_and_exits_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("qualys-emulator-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vulns = dir.join("vulns.json");
    let sha = "9c1b2a3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    std::fs::write(
        &vulns,
        json!({
            "111122223333.dkr.ecr.us-east-1.amazonaws.com/payments-api:v1.4.2": {
                "sha": sha, "scanned": true, "details": [{"severity": 4, "qid": 1}]
            }
        })
        .to_string(),
    )
    .unwrap();
    let cdr = dir.join("cdr.json");
    std::fs::write(
        &cdr,
        json!({"content": [{"uuid": "a", "severity": 4, "timestamp": "2026-01-10T16:41:07.123Z"}], "totalElements": 1}).to_string(),
    )
    .unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({"api_tokens": ["from-config"], "vuln_shape": "data"}).to_string(),
    )
    .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_qualys-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--scan-delay-ms",
            "10",
            "--username",
            "u",
            "--password",
            "p@ss",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--vulns-file")
        .arg(&vulns)
        .arg("--cdr-file")
        .arg(&cdr)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qualys-emulator");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let base = line
        .trim()
        .strip_prefix("qualys-emulator listening on ")
        .unwrap_or_else(|| panic!("ready line: {line:?}"))
        .to_string();
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"),
        "{base}"
    );

    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/auth"))
        .form(&[("username", "u"), ("password", "p@ss"), ("token", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let vulns: Value = http
        .get(format!("{base}/csapi/v1.3/images/{sha}/vuln"))
        .bearer_auth("from-config")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        vulns,
        json!({"data": [{"severity": 4, "qid": 1}], "count": 1})
    );
    let findings: Value = http
        .get(format!("{base}/cdr-api/rest/v1/findings/"))
        .query(&[
            ("startAt", "2026-01-10T00:00:00Z"),
            ("endAt", "2026-01-11T00:00:00Z"),
        ])
        .bearer_auth("from-config")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(findings["totalElements"], 1);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("qualys-emulator did not exit on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_with_unknown_fields_is_refused() {
    let dir = std::env::temp_dir().join(format!("qualys-emulator-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(&config, r#"{"scan_delay": 5}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qualys-emulator"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scan_delay"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
