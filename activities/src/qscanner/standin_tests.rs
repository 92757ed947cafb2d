//! The runner against the stand-in `qscanner` (tests/qscanner-standin), spawned for real.
//!
//! Build it first: `cargo build -p qscanner-standin` (same target directory).

use super::tests::TempDir;
use super::*;
use crate::qualys::{Pod, Secret};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Instant;

const TOKEN: &str = "standin-qualys-token-0123456789abcdefghij";
const REG_PASSWORD: &str = "standin-ecr-password-0123456789";

/// `<target dir>/debug/qscanner`, next to this test executable's `deps` directory.
fn standin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in <target>/debug/deps");
    let path = dir.join("qscanner");
    assert!(
        path.is_file(),
        "the qscanner stand-in is not at {}: build it first: cargo build -p qscanner-standin",
        path.display()
    );
    path
}

struct Harness {
    dir: TempDir,
    log: PathBuf,
    scenario: PathBuf,
}

impl Harness {
    fn new(name: &str, scenario: Value) -> Self {
        let dir = TempDir::new(name);
        let log = dir.0.join("invocations.jsonl");
        let scenario_path = dir.0.join("scenario.json");
        std::fs::write(&scenario_path, scenario.to_string()).unwrap();
        Self {
            log,
            scenario: scenario_path,
            dir,
        }
    }

    fn config(&self) -> QScannerConfig {
        let mut cfg = QScannerConfig::new(
            standin(),
            Pod::US2,
            Secret::new(TOKEN),
            self.dir.0.join("work"),
        );
        cfg.cache_dir = Some(self.dir.0.join("cache"));
        cfg.offline_scan = true;
        cfg
    }

    fn scanner(&self) -> QScanner {
        QScanner::new(self.config()).unwrap()
    }

    fn job(&self, image: &str, mode: ScanMode) -> ScanJob {
        ScanJob {
            image: image.to_string(),
            mode,
            registry: None,
            extra_env: vec![
                (
                    "QSCANNER_STANDIN_LOG".into(),
                    Secret::new(self.log.to_string_lossy()),
                ),
                (
                    "QSCANNER_STANDIN_SCENARIO".into(),
                    Secret::new(self.scenario.to_string_lossy()),
                ),
            ],
            scan_id: "scan-1".into(),
        }
    }

    /// No attempt directory is left under the work directory.
    fn assert_no_attempt_left(&self) {
        let work = self.dir.0.join("work");
        let left: Vec<String> = std::fs::read_dir(&work)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", work.display());
    }

    fn invocations(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

/// No such process, or only a zombie waiting for a reaper.
fn process_gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn get_report_with_vulnerabilities_and_a_secret() {
    let h = Harness::new("report", json!({}));
    let job = h.job(
        "registry.example/vulnerable-secret:1.0",
        ScanMode::GetReport,
    );
    let mut beats = Vec::new();
    let outcome = h
        .scanner()
        .run(&job, |p| beats.push(p), std::future::pending())
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(outcome.policy, None);
    assert!(outcome.report_available);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let id = outcome.image_id.clone().unwrap();
    assert_eq!(id.len(), 64);
    // The attempt directory (outputs, TMPDIR) is gone once the run returned.
    assert!(
        !outcome.output_dir.exists(),
        "{}",
        outcome.output_dir.display()
    );
    h.assert_no_attempt_left();
    assert!(
        outcome
            .image_digest
            .as_deref()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(outcome.os.as_deref(), Some("Debian Linux 12.6"));
    assert_eq!(outcome.vulnerabilities.len(), 2);
    assert_eq!(outcome.vulnerabilities[0].qid, 379952);
    assert_eq!(outcome.vulnerabilities[0].severity, Some(5));
    assert_eq!(outcome.vulnerabilities[0].cves, ["CVE-2024-5535"]);
    assert_eq!(
        outcome.vulnerabilities[0].packages[0].fixed.as_deref(),
        Some("3.0.2-0ubuntu1.18")
    );
    assert_eq!(outcome.severity_counts.severity5, 1);
    assert_eq!(outcome.severity_counts.severity3, 1);
    assert_eq!(outcome.secrets.len(), 1);
    assert_eq!(outcome.secrets[0].target, "/app/config/.env");
    assert_eq!(outcome.secrets[0].start_line, Some(3));
    let scans: Vec<&str> = outcome
        .scans_performed
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(scans, ["metadata", "os", "sca", "secret"]);
    // The secret's content was in the file but is not in the outcome.
    let debug = format!("{outcome:?}");
    let json = serde_json::to_string(&outcome).unwrap();
    for text in [&debug, &json] {
        assert!(!text.contains("AKIASTANDINLEAKED01"), "{text}");
    }
    // Heartbeats: at start and before parsing.
    assert_eq!(beats.first().map(|p| p.stage), Some(ScanStage::Started));
    assert_eq!(beats.last().map(|p| p.stage), Some(ScanStage::Parsing));
    assert!(beats.iter().all(|p| p.scan_id == "scan-1"));

    let calls = h.invocations();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call["access_token_set"], true);
    assert_eq!(call["token_in_argv"], false);
    let argv = names(call, "argv");
    assert!(argv.iter().all(|a| !a.contains(TOKEN)), "{argv:?}");
    // The same command, writing into this attempt's own directory, with TMPDIR inside it.
    let mut shown = h.scanner().command(&job).args;
    let at = shown.iter().position(|a| a == "--output-dir").unwrap() + 1;
    let attempt = argv[at].clone();
    assert!(
        attempt.starts_with(&format!("{}/scan-1.", h.dir.0.join("work").display())),
        "{attempt}"
    );
    shown[at] = attempt.clone();
    assert_eq!(argv, shown);
    assert_eq!(
        call["tmpdir"].as_str(),
        Some(format!("{attempt}/tmp").as_str())
    );
    let env = names(call, "env");
    assert!(env.contains(&"QUALYS_ACCESS_TOKEN".to_string()), "{env:?}");
    // The child saw only the runner's variables: nothing of this test process (cargo sets
    // CARGO_*, RUST_* and more).
    let all = names(call, "all_env_names");
    let mut allowed: Vec<&str> = vec![
        "PATH",
        "HOME",
        "TMPDIR",
        "QUALYS_ACCESS_TOKEN",
        "QSCANNER_STANDIN_LOG",
        "QSCANNER_STANDIN_SCENARIO",
    ];
    allowed.extend(PASSTHROUGH_ENV);
    for name in &all {
        assert!(allowed.contains(&name.as_str()), "leaked variable {name}");
    }
    assert_eq!(
        call["home"].as_str(),
        Some(h.dir.0.join("work").to_string_lossy().as_ref())
    );
}

#[tokio::test]
async fn ecr_credentials_reach_the_scanner_by_environment() {
    let h = Harness::new("ecr", json!({}));
    let mut job = h.job(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/clean@sha256:\
         0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
        ScanMode::GetReport,
    );
    job.registry = Some(RegistryCredentials {
        username: Some("AWS".into()),
        password: Some(Secret::new(REG_PASSWORD)),
        token: None,
    });
    job.extra_env.push((
        "AWS_SESSION_TOKEN".into(),
        Secret::new("assumed-role-session-token-value"),
    ));
    let outcome = h
        .scanner()
        .run(&job, |_| {}, std::future::pending())
        .await
        .unwrap();
    assert!(outcome.vulnerabilities.is_empty());
    assert!(outcome.secrets.is_empty());
    assert_eq!(outcome.severity_counts.total(), 0);
    assert_eq!(
        outcome.image_digest.as_deref(),
        Some("sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9")
    );
    let call = &h.invocations()[0];
    let env = names(call, "env");
    for name in [
        "QSCANNER_REGISTRY_USERNAME",
        "QSCANNER_REGISTRY_PASSWORD",
        "AWS_REGION",
        "AWS_SESSION_TOKEN",
        "QUALYS_ACCESS_TOKEN",
    ] {
        assert!(env.contains(&name.to_string()), "{name} missing: {env:?}");
    }
    let argv = names(call, "argv");
    assert!(
        argv.iter()
            .all(|a| !a.contains(REG_PASSWORD) && !a.contains("session-token"))
    );
}

#[tokio::test]
async fn exit_40_is_a_partial_success() {
    let h = Harness::new("partial", json!({"partial": {"exit_code": 40}}));
    let job = h.job("registry.example/partial-secret:2", ScanMode::GetReport);
    let outcome = h
        .scanner()
        .run(&job, |_| {}, std::future::pending())
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, 40);
    assert!(!outcome.report_available);
    assert!(outcome.vulnerabilities.is_empty());
    assert_eq!(outcome.policy, None);
    assert!(
        outcome
            .warnings
            .iter()
            .any(|w| w.contains("EXIT_FAILED_TO_GET_VULN_REPORT")),
        "{:?}",
        outcome.warnings
    );
    // Inventory and secrets are still there.
    assert_eq!(outcome.secrets.len(), 1);
    assert!(outcome.image_id.is_some());
}

#[tokio::test]
async fn evaluate_policy_allow_deny_audit() {
    let h = Harness::new(
        "policy",
        json!({
            "denied": {"policy": "DENY", "vulns": [{"qid": 11, "severity": 4, "title": "t"}]},
            "audited": {"policy": "AUDIT"},
        }),
    );
    let mode = ScanMode::EvaluatePolicy {
        policy_tags: vec!["prod".into(), "pci".into()],
    };
    let scanner = h.scanner();
    let cases = [
        ("registry.example/denied:1", 42, PolicyVerdict::Deny),
        ("registry.example/audited:1", 43, PolicyVerdict::Audit),
        ("registry.example/clean:1", 0, PolicyVerdict::Allow),
        ("registry.example/vulnerable:1", 42, PolicyVerdict::Deny),
    ];
    for (image, code, verdict) in cases {
        let job = h.job(image, mode.clone());
        let outcome = scanner
            .run(&job, |_| {}, std::future::pending())
            .await
            .unwrap();
        assert_eq!(outcome.exit_code, code, "{image}");
        assert_eq!(outcome.policy, Some(verdict), "{image}");
        assert!(outcome.report_available, "{image}");
        assert!(
            outcome.warnings.is_empty(),
            "{image}: {:?}",
            outcome.warnings
        );
    }
    let calls = h.invocations();
    assert_eq!(calls.len(), cases.len());
    let argv = names(&calls[0], "argv");
    let tags = argv.iter().position(|a| a == "--policy-tags").unwrap();
    assert_eq!(argv[tags + 1], "prod,pci");
    assert!(argv.contains(&"evaluate-policy".to_string()));
}

#[tokio::test]
async fn failure_exit_codes_are_classified() {
    let h = Harness::new(
        "failures",
        json!({
            "missing": {"exit_code": 6},
            "badparam": {"exit_code": 2},
            "noos": {"exit_code": 17},
            "upload": {"exit_code": 37, "stderr": "upload failed with token standin-qualys-token-0123456789abcdefghij"},
            "policyres": {"exit_code": 41},
        }),
    );
    let scanner = h.scanner();
    let cases = [
        (
            "missing",
            "QScannerArtifactFailed",
            true,
            "EXIT_IMAGE_ARTIFACT_FAILED",
        ),
        (
            "badparam",
            "QScannerInvalidParameter",
            false,
            "EXIT_INVALID_PARAMETER",
        ),
        ("noos", "QScannerScanFailed", false, "EXIT_OS_NOT_SUPPORTED"),
        (
            "upload",
            "QScannerUploadFailed",
            true,
            "EXIT_SBOM_UPLOAD_FAILED",
        ),
        (
            "policyres",
            "QScannerPolicyUnavailable",
            true,
            "EXIT_FAILED_TO_GET_POLICY_EVALUATION_RESULT",
        ),
    ];
    for (image, type_name, retryable, name) in cases {
        let job = h.job(&format!("registry.example/{image}:1"), ScanMode::GetReport);
        let err = scanner
            .run(&job, |_| {}, std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(err.type_name(), type_name, "{image}: {err}");
        assert_eq!(err.is_retryable(), retryable, "{image}");
        let msg = err.to_string();
        assert!(msg.contains(name), "{msg}");
        assert!(!msg.contains(TOKEN), "{msg}");
    }
    let err = scanner
        .run(
            &h.job("registry.example/missing:1", ScanMode::GetReport),
            |_| {},
            std::future::pending(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
}

#[tokio::test]
async fn missing_or_malformed_outputs_are_errors() {
    let h = Harness::new(
        "outputs",
        json!({
            "nosarif": {"omit": ["sarif"]},
            "noresult": {"omit": ["scan_result"]},
            "corrupt": {"corrupt": ["scan_result"]},
        }),
    );
    let scanner = h.scanner();
    // An earlier attempt's report must not be taken for this one's.
    let job = h.job("registry.example/vulnerable:1", ScanMode::GetReport);
    scanner
        .run(&job, |_| {}, std::future::pending())
        .await
        .unwrap();
    for image in ["nosarif", "noresult", "corrupt"] {
        let job = h.job(&format!("registry.example/{image}:1"), ScanMode::GetReport);
        let err = scanner
            .run(&job, |_| {}, std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(err.type_name(), "QScannerBadOutput", "{image}: {err}");
        assert!(!err.to_string().contains("corrupt-secret"), "{err}");
    }
}

#[tokio::test]
async fn timeout_kills_a_slow_scan() {
    let h = Harness::new("timeout", json!({"slow": {"sleep_ms": 30000}}));
    let mut cfg = h.config();
    cfg.timeout = std::time::Duration::from_secs(1);
    let scanner = QScanner::new(cfg).unwrap();
    let job = h.job("registry.example/slow:1", ScanMode::GetReport);
    let started = Instant::now();
    let err = scanner
        .run(&job, |_| {}, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, QScannerError::Timeout { .. }), "{err:?}");
    assert_eq!(err.type_name(), "QScannerTimeout");
    assert!(err.is_retryable());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let calls = h.invocations();
    assert_eq!(calls.len(), 1);
    let pid = calls[0]["pid"].as_u64().unwrap();
    assert!(process_gone(pid), "qscanner {pid} still runs");
    h.assert_no_attempt_left();
}

#[tokio::test]
async fn cancel_kills_the_scan() {
    let h = Harness::new("cancel", json!({"slow": {"sleep_ms": 30000}}));
    let job = h.job("registry.example/slow:1", ScanMode::GetReport);
    let started = Instant::now();
    let err = h
        .scanner()
        .run(
            &job,
            |_| {},
            tokio::time::sleep(std::time::Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, QScannerError::Cancelled), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let pid = h.invocations()[0]["pid"].as_u64().unwrap();
    assert!(process_gone(pid), "qscanner {pid} still runs");
    h.assert_no_attempt_left();
}

#[tokio::test]
async fn heartbeats_while_scanning() {
    let h = Harness::new("heartbeat", json!({"slowish": {"sleep_ms": 1500}}));
    let mut cfg = h.config();
    cfg.heartbeat_interval = std::time::Duration::from_millis(200);
    let scanner = QScanner::new(cfg).unwrap();
    let job = h.job("registry.example/slowish:1", ScanMode::GetReport);
    let mut beats: Vec<Progress> = Vec::new();
    let outcome = scanner
        .run(&job, |p| beats.push(p), std::future::pending())
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, 0);
    let scanning = beats
        .iter()
        .filter(|p| p.stage == ScanStage::Scanning)
        .count();
    assert!(scanning >= 4, "{beats:?}");
    assert_eq!(beats[0].stage, ScanStage::Started);
    assert_eq!(beats.last().unwrap().stage, ScanStage::Parsing);
    assert!(beats.windows(2).all(|w| w[0].elapsed <= w[1].elapsed));
    assert!(outcome.duration >= std::time::Duration::from_millis(1500));
}

#[tokio::test]
async fn invalid_jobs_never_start_the_scanner() {
    let h = Harness::new("invalid", json!({}));
    let mut job = h.job("registry.example/clean:1", ScanMode::GetReport);
    job.scan_id = "../escape".into();
    let err = h
        .scanner()
        .run(&job, |_| {}, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.type_name(), "QScannerInvalidInput");
    assert!(h.invocations().is_empty());
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new("group", json!({}));
    // A "qscanner" that starts a grandchild and waits for it.
    let script = h.dir.0.join("qscanner-with-child");
    std::fs::write(
        &script,
        "#!/bin/sh\nsleep 30 &\necho $! > \"$HOME/grandchild.pid\"\nwait\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = h.config();
    cfg.binary = script;
    cfg.timeout = std::time::Duration::from_secs(1);
    let scanner = QScanner::new(cfg).unwrap();
    let job = h.job("registry.example/app:1", ScanMode::GetReport);
    let err = scanner
        .run(&job, |_| {}, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, QScannerError::Timeout { .. }), "{err:?}");
    let pid: u64 = std::fs::read_to_string(h.dir.0.join("work/grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SIGKILL is asynchronous for the grandchild; give it a moment.
    for _ in 0..50 {
        if process_gone(pid) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("grandchild {pid} survived the timeout");
}

#[tokio::test]
async fn a_failed_scan_leaves_no_directory_and_start_up_sweeps_dead_attempts() {
    let h = Harness::new("failed", json!({"broken": {"exit_code": 6}}));
    let job = h.job("registry.example/broken:1", ScanMode::GetReport);
    let err = h
        .scanner()
        .run(&job, |_| {}, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(err.type_name(), "QScannerArtifactFailed", "{err}");
    h.assert_no_attempt_left();

    // What a worker killed mid-scan leaves: an attempt directory whose lock nobody holds, and
    // one created before its lock. A live attempt (its lock held) and QScanner's cache stay.
    let work = h.dir.0.join("work");
    let dead = work.join("scan-9.4242-0-0000beef");
    std::fs::create_dir_all(dead.join("tmp")).unwrap();
    std::fs::write(dead.join(".lock"), b"").unwrap();
    std::fs::write(dead.join("tmp/layer.tar"), b"x").unwrap();
    let unlocked = work.join("scan-8.4242-1-0000cafe");
    std::fs::create_dir_all(&unlocked).unwrap();
    let cache = work.join(".cache/qualys/qscanner");
    std::fs::create_dir_all(&cache).unwrap();
    let live = workdir::AttemptDir::create(&work, "scan-7").unwrap();
    assert_eq!(sweep_work_dir(&work).unwrap(), 2);
    assert!(!dead.exists() && !unlocked.exists());
    assert!(live.path().is_dir() && cache.is_dir());
    drop(live);
    h.assert_no_attempt_left();
}
