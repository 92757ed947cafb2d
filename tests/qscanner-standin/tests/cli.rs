//! The stand-in's documented interface, run as a process.
//!
//! (This integration test also makes `cargo test` build `target/debug/qscanner`, which the
//! runner's tests in `qflows-activities` spawn.)

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_qscanner");

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "qscanner-standin-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(home: Option<&Path>, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().args(args);
    if let Some(home) = home {
        cmd.env("HOME", home);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn version() {
    let out = run(None, &[], &["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4.8.0-2");
}

#[test]
fn gateway_and_token_are_required_outside_inventory_mode() {
    let dir = Dir::new("auth");
    let out = run(Some(&dir.0), &[], &["--pod", "US2", "image", "a/b:1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Access token"), "{stderr}");
    let out = run(
        Some(&dir.0),
        &[("QUALYS_ACCESS_TOKEN", "t")],
        &["image", "a/b:1"],
    );
    assert_eq!(out.status.code(), Some(2));
    // inventory-only needs neither.
    let out = run(
        Some(&dir.0),
        &[],
        &[
            "--mode",
            "inventory-only",
            "--output-dir",
            &dir.0.join("o").to_string_lossy(),
            "image",
            "a/b:1",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let names = files(&dir.0.join("o"));
    assert!(
        names.iter().any(|n| n.ends_with("-ScanResult.json")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with("-Report.sarif.json")),
        "{names:?}"
    );
}

#[test]
fn home_must_be_set() {
    let out = run(
        None,
        &[("QUALYS_ACCESS_TOKEN", "t")],
        &["--pod", "US2", "image", "a/b:1"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn unknown_flags_and_values_are_invalid_parameters() {
    for args in [
        &["--bogus", "image", "x"][..],
        &["--mode", "nope", "image", "x"],
        &["--scan-types", "pkg,virus", "image", "x"],
        &["--pod", "MARS1", "image", "x"],
    ] {
        assert_eq!(run(None, &[], args).status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn get_report_writes_the_documented_files_and_logs_the_invocation() {
    let dir = Dir::new("report");
    let out_dir = dir.0.join("out");
    let log = dir.0.join("log.jsonl");
    let out = run(
        Some(&dir.0),
        &[
            ("QUALYS_ACCESS_TOKEN", "secret-token-value"),
            ("QSCANNER_STANDIN_LOG", &log.to_string_lossy()),
        ],
        &[
            "--gateway-url=https://gateway.qg2.apps.qualys.com",
            "--scan-types",
            "pkg,secret",
            "--output-dir",
            &out_dir.to_string_lossy(),
            "--report-format",
            "table,sarif,gitlab",
            "--offline-scan=true",
            "image",
            "registry.example/vulnerable-secret:1",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("379952"));
    let names = files(&out_dir);
    assert_eq!(names.len(), 4, "{names:?}");
    let id = names
        .iter()
        .find_map(|n| n.strip_suffix("-ScanResult.json"))
        .unwrap();
    assert_eq!(id.len(), 64);
    assert!(names.contains(&format!("{id}-Report.sarif.json")));
    assert!(names.contains(&format!("{id}-gitlab_secret_report.json")));
    assert!(names.iter().any(|n| n.ends_with("-ScanMetadata.json")));
    let sarif: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join(format!("{id}-Report.sarif.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(sarif["runs"][0]["properties"]["imageID"], id);
    assert_eq!(sarif["runs"][0]["results"][0]["properties"]["QID"], 379952);
    let gitlab =
        std::fs::read_to_string(out_dir.join(format!("{id}-gitlab_secret_report.json"))).unwrap();
    assert!(!gitlab.contains("AKIASTANDINLEAKED01"));

    let line: Value = serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["access_token_set"], true);
    assert_eq!(line["token_in_argv"], false);
    let text = line.to_string();
    assert!(!text.contains("secret-token-value"), "{text}");
}

#[test]
fn a_token_on_argv_is_recorded() {
    let dir = Dir::new("argv");
    let log = dir.0.join("log.jsonl");
    let out = run(
        Some(&dir.0),
        &[("QSCANNER_STANDIN_LOG", &log.to_string_lossy())],
        &[
            "--pod",
            "US2",
            "--access-token",
            "tok",
            "--output-dir",
            &dir.0.join("o").to_string_lossy(),
            "image",
            "a/clean:1",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let line: Value = serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["token_in_argv"], true);
    assert_eq!(line["access_token_set"], false);
}

#[test]
fn scenario_scripts_exit_codes_and_policy() {
    let dir = Dir::new("scenario");
    let scenario = dir.0.join("s.json");
    std::fs::write(
        &scenario,
        r#"{"gone": {"exit_code": 6}, "partial": {"exit_code": 40}, "audit": {"policy": "AUDIT"}}"#,
    )
    .unwrap();
    let scenario = scenario.to_string_lossy().into_owned();
    let cases = [
        ("a/gone:1", "get-report", 6),
        ("a/partial:1", "get-report", 40),
        ("a/audit:1", "evaluate-policy", 43),
        ("a/vulnerable:1", "evaluate-policy", 42),
        ("a/clean:1", "evaluate-policy", 0),
    ];
    for (image, mode, code) in cases {
        let out_dir = dir.0.join(image.replace(['/', ':'], "_"));
        let out = run(
            Some(&dir.0),
            &[
                ("QUALYS_ACCESS_TOKEN", "t"),
                ("QSCANNER_STANDIN_SCENARIO", &scenario),
            ],
            &[
                "--pod",
                "US2",
                "--mode",
                mode,
                "--output-dir",
                &out_dir.to_string_lossy(),
                "image",
                image,
            ],
        );
        assert_eq!(out.status.code(), Some(code), "{image}");
        if code == 40 {
            let names = files(&out_dir);
            assert!(
                !names.iter().any(|n| n.ends_with("-Report.sarif.json")),
                "{names:?}"
            );
            assert!(
                names.iter().any(|n| n.ends_with("-ScanResult.json")),
                "{names:?}"
            );
        }
    }
}
