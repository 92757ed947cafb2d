//! Unit tests: command line and environment, report parsing, exit codes, validation.

use super::report::{self, find_outputs, parse_json, parse_sarif, parse_scan_result};
use super::*;
use crate::qualys::{Pod, Secret};
use std::path::PathBuf;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.qflows-test-token.c2lnbmF0dXJl";
const REG_PASSWORD: &str = "ecr-password-0123456789abcdef";
const SESSION_TOKEN: &str = "aws-session-token-FwoGZXIvYXdzE";

const SARIF_SHAPE: &str = include_str!("testdata/qscanner-report-sarif.shape.json");
const SARIF_ADO: &str = include_str!("testdata/qualys-qscanner-report-sarif.json");
const SCANRESULT_SECRETS: &str = include_str!("testdata/qscanner-scanresult-secrets.official.json");
const SCANRESULT_FULL: &str = include_str!("testdata/qualys-qscanner-scanresult.json");

/// A directory removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "qflows-qscanner-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(work: &std::path::Path) -> QScannerConfig {
    QScannerConfig::new("/bin/true", Pod::US2, Secret::new(TOKEN), work)
}

fn ecr_job() -> ScanJob {
    ScanJob {
        image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/app@sha256:\
                0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
            .to_string(),
        mode: ScanMode::EvaluatePolicy {
            policy_tags: vec!["prod".into(), "pci".into()],
        },
        registry: Some(RegistryCredentials {
            username: Some("AWS".into()),
            password: Some(Secret::new(REG_PASSWORD)),
            token: None,
        }),
        extra_env: vec![
            ("AWS_ACCESS_KEY_ID".into(), Secret::new("ASIAEXAMPLEKEY123")),
            ("AWS_SESSION_TOKEN".into(), Secret::new(SESSION_TOKEN)),
        ],
        scan_id: "scan-1".into(),
    }
}

#[test]
fn argv_is_exact_and_never_contains_a_secret() {
    let dir = TempDir::new("argv");
    let scanner = QScanner::new(config(&dir.0)).unwrap();
    let job = ecr_job();
    let spec = scanner.command(&job);
    let out = dir.0.join("scan-1").to_string_lossy().into_owned();
    assert_eq!(spec.program, PathBuf::from("/bin/true"));
    assert_eq!(
        spec.args,
        [
            "--pod",
            "US2",
            "--scan-types",
            "pkg,secret",
            "--output-dir",
            out.as_str(),
            "--mode",
            "evaluate-policy",
            "--policy-tags",
            "prod,pci",
            "--report-format",
            "sarif",
            "--format",
            "json",
            "--log-level",
            "info",
            "image",
            job.image.as_str(),
        ]
    );
    for arg in &spec.args {
        for secret in [TOKEN, REG_PASSWORD, SESSION_TOKEN, "ASIAEXAMPLEKEY123"] {
            assert!(!arg.contains(secret), "argv leaks a secret: {arg}");
        }
        assert!(!arg.contains("access-token"), "{arg}");
    }
    assert_eq!(spec.current_dir, dir.0.join("scan-1"));

    // Get-report, gateway URL, cache dir and offline scan.
    let mut cfg = config(&dir.0);
    cfg.gateway_url = Some("https://gateway.qg2.apps.qualys.com".into());
    cfg.cache_dir = Some(dir.0.join("cache"));
    cfg.offline_scan = true;
    cfg.scan_types = vec!["pkg".into()];
    let scanner = QScanner::new(cfg).unwrap();
    let job = ScanJob {
        mode: ScanMode::GetReport,
        ..ecr_job()
    };
    let args = scanner.command(&job).args;
    let cache = dir.0.join("cache").to_string_lossy().into_owned();
    assert_eq!(
        args,
        [
            "--gateway-url",
            "https://gateway.qg2.apps.qualys.com",
            "--scan-types",
            "pkg",
            "--output-dir",
            out.as_str(),
            "--cache-dir",
            cache.as_str(),
            "--mode",
            "get-report",
            "--report-format",
            "sarif",
            "--format",
            "json",
            "--offline-scan=true",
            "--log-level",
            "info",
            "image",
            job.image.as_str(),
        ]
    );
    assert!(!args.iter().any(|a| a == "--pod" || a == "--policy-tags"));
}

#[test]
fn env_is_minimal_and_carries_the_credentials() {
    let dir = TempDir::new("env");
    let scanner = QScanner::new(config(&dir.0)).unwrap();
    let spec = scanner.command(&ecr_job());
    let value = |n: &str| spec.env_value(n).map(|s| s.expose().to_string());
    assert_eq!(value("QUALYS_ACCESS_TOKEN").as_deref(), Some(TOKEN));
    assert_eq!(value("QSCANNER_REGISTRY_USERNAME").as_deref(), Some("AWS"));
    assert_eq!(
        value("QSCANNER_REGISTRY_PASSWORD").as_deref(),
        Some(REG_PASSWORD)
    );
    assert_eq!(value("QSCANNER_REGISTRY_TOKEN"), None);
    assert_eq!(value("AWS_SESSION_TOKEN").as_deref(), Some(SESSION_TOKEN));
    assert_eq!(value("AWS_REGION").as_deref(), Some("us-east-1"));
    assert_eq!(
        value("HOME").as_deref(),
        Some(dir.0.to_string_lossy().as_ref())
    );
    assert!(value("PATH").is_some_and(|p| !p.is_empty()));
    assert!(value("TMPDIR").is_some());
    // Nothing but the documented variables.
    let mut allowed: Vec<&str> = vec![
        "PATH",
        "HOME",
        "TMPDIR",
        "QUALYS_ACCESS_TOKEN",
        "QSCANNER_REGISTRY_USERNAME",
        "QSCANNER_REGISTRY_PASSWORD",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SESSION_TOKEN",
    ];
    allowed.extend(PASSTHROUGH_ENV);
    for name in spec.env_names() {
        assert!(allowed.contains(&name), "unexpected variable {name}");
    }
    let mut names = spec.env_names();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), spec.env.len(), "a name appears twice");

    // A registry token, and an explicit region that wins over the ECR host.
    let job = ScanJob {
        registry: Some(RegistryCredentials {
            username: None,
            password: None,
            token: Some(Secret::new("registry-bearer-token-xyz")),
        }),
        extra_env: vec![("AWS_REGION".into(), Secret::new("eu-west-1"))],
        ..ecr_job()
    };
    let spec = scanner.command(&job);
    assert_eq!(
        spec.env_value("QSCANNER_REGISTRY_TOKEN")
            .map(Secret::expose),
        Some("registry-bearer-token-xyz")
    );
    assert!(spec.env_value("QSCANNER_REGISTRY_USERNAME").is_none());
    assert_eq!(
        spec.env_value("AWS_REGION").map(Secret::expose),
        Some("eu-west-1")
    );
}

#[test]
fn command_debug_redacts_env_values() {
    let dir = TempDir::new("debug");
    let scanner = QScanner::new(config(&dir.0)).unwrap();
    let spec = scanner.command(&ecr_job());
    let debug = format!("{spec:?}");
    for secret in [TOKEN, REG_PASSWORD, SESSION_TOKEN] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("QUALYS_ACCESS_TOKEN"), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
    let cfg_debug = format!("{:?}", scanner.config());
    assert!(!cfg_debug.contains(TOKEN), "{cfg_debug}");
}

#[test]
fn ecr_regions() {
    assert_eq!(
        ecr_region("123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1"),
        Some("us-east-1")
    );
    assert_eq!(
        ecr_region("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/a@sha256:00"),
        Some("us-gov-west-1")
    );
    assert_eq!(ecr_region("docker.io/library/nginx:latest"), None);
    assert_eq!(
        ecr_region("12345.dkr.ecr.us-east-1.amazonaws.com/app"),
        None
    );
}

#[test]
fn jobs_are_validated() {
    let ok = ecr_job();
    assert!(command::validate_job(&ok).is_ok());
    for bad_id in ["", "../x", "a/b", ".hidden", "-x", "a b", &"x".repeat(129)] {
        let job = ScanJob {
            scan_id: bad_id.to_string(),
            ..ecr_job()
        };
        let err = command::validate_job(&job).unwrap_err();
        assert_eq!(err.type_name(), "QScannerInvalidInput", "{bad_id}");
        assert!(!err.is_retryable());
    }
    for bad_image in ["", "--help", "app latest", "app\n"] {
        let job = ScanJob {
            image: bad_image.to_string(),
            ..ecr_job()
        };
        assert!(command::validate_job(&job).is_err(), "{bad_image:?}");
    }
    for reserved in ["QUALYS_ACCESS_TOKEN", "HOME", "QSCANNER_REGISTRY_PASSWORD"] {
        let job = ScanJob {
            extra_env: vec![(reserved.to_string(), Secret::new("x"))],
            ..ecr_job()
        };
        assert!(command::validate_job(&job).is_err(), "{reserved}");
    }
    let job = ScanJob {
        extra_env: vec![("BAD-NAME".to_string(), Secret::new("x"))],
        ..ecr_job()
    };
    assert!(command::validate_job(&job).is_err());
    let job = ScanJob {
        mode: ScanMode::EvaluatePolicy {
            policy_tags: vec!["a,b".into()],
        },
        ..ecr_job()
    };
    assert!(command::validate_job(&job).is_err());
}

#[test]
fn new_checks_the_configuration() {
    let dir = TempDir::new("new");
    let missing = QScannerConfig::new(dir.0.join("nope"), Pod::US2, Secret::new(TOKEN), &dir.0);
    let err = QScanner::new(missing).unwrap_err();
    assert_eq!(err.type_name(), "QScannerNotFound");
    assert!(!err.is_retryable());

    let not_exec = dir.0.join("qscanner");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let err = QScanner::new(QScannerConfig::new(
        &not_exec,
        Pod::US2,
        Secret::new(TOKEN),
        &dir.0,
    ))
    .unwrap_err();
    assert_eq!(err.type_name(), "QScannerNotFound");
    assert!(err.to_string().contains("not executable"), "{err}");

    let mut cfg = config(&dir.0);
    cfg.pod = None;
    assert_eq!(
        QScanner::new(cfg).unwrap_err().type_name(),
        "QScannerConfigError"
    );
    let mut cfg = config(&dir.0);
    cfg.access_token = Secret::new(" ");
    assert!(QScanner::new(cfg).is_err());
    let mut cfg = config(&dir.0);
    cfg.scan_types = vec!["pkg".into(), "viruses".into()];
    assert!(QScanner::new(cfg).is_err());
    let mut cfg = config(&dir.0);
    cfg.gateway_url = Some("ftp://x".into());
    assert!(QScanner::new(cfg).is_err());
    let mut cfg = config(&dir.0);
    cfg.timeout = std::time::Duration::ZERO;
    assert!(QScanner::new(cfg).is_err());
}

#[test]
fn sarif_official_shape() {
    let doc = parse_json(SARIF_SHAPE.as_bytes(), "x-Report.sarif.json").unwrap();
    let r = parse_sarif(&doc, "x-Report.sarif.json").unwrap();
    assert_eq!(
        r.image_id.as_deref(),
        Some("2e5b8d3ef33ebde2b2a943fadb241a63de1535a007a7bd185e7037abfff99f63")
    );
    assert_eq!(
        r.image_digest.as_deref(),
        Some("sha256:0000000000000000000000000000000000000000000000000000000000000000")
    );
    assert_eq!(r.os.as_deref(), Some("Debian Linux 12.6"));
    assert_eq!(r.findings.len(), 1);
    let f = &r.findings[0];
    assert_eq!(f.qid, 6019286);
    assert_eq!(f.severity, Some(4));
    assert_eq!(f.title, "Debian Security Update for glibc (CVE-2025-0395)");
    assert_eq!(f.cves, ["CVE-2025-0395"]);
    assert_eq!(f.qds, Some(35));
    assert_eq!(f.packages.len(), 2);
    assert_eq!(f.packages[0].name, "libc-bin");
    assert_eq!(f.packages[0].installed.as_deref(), Some("2.36-9+deb12u7"));
    assert_eq!(f.packages[0].fixed.as_deref(), Some("2.36-9+deb12u10"));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let counts = report::count(&r.findings);
    assert_eq!(counts.severity4, 1);
    assert_eq!(counts.total(), 1);
}

#[test]
fn sarif_ado_shape() {
    let doc = parse_json(SARIF_ADO.as_bytes(), "y-Report.sarif.json").unwrap();
    let r = parse_sarif(&doc, "y-Report.sarif.json").unwrap();
    assert_eq!(r.findings.len(), 1);
    let f = &r.findings[0];
    assert_eq!(f.qid, 379952);
    assert_eq!(f.severity, Some(5));
    assert_eq!(f.title, "OpenSSL Multiple Vulnerabilities");
    assert_eq!(f.cves, ["CVE-2024-5535"]);
    assert_eq!(
        f.packages,
        [VulnerablePackage {
            name: "openssl".into(),
            installed: Some("3.0.2-0ubuntu1.15".into()),
            fixed: Some("3.0.2-0ubuntu1.18".into()),
        }]
    );
    assert_eq!(report::count(&r.findings).severity5, 1);
}

#[test]
fn sarif_tolerates_variants_and_merges_by_qid() {
    let doc = serde_json::json!({
        "runs": [{
            "tool": {"driver": {"rules": [
                {"id": "100", "name": "From name", "properties": {"customerSeverity": "3", "cves": "CVE-1, CVE-2"}},
                {"id": "200", "properties": {"severity": 9}}
            ]}},
            "properties": {"imageId": "sha256:ABCDEF", "operatingSystem": "Alpine 3.20", "unknown": [1, 2]},
            "results": [
                {"ruleId": "100", "properties": {"qid": "100", "vulnerableSoftware": [{"name": "a", "installedVersion": "1"}]}},
                {"ruleId": "100", "properties": {"QID": 100, "cve-ids": ["CVE-3"], "vulnerableSoftware": [{"name": "b"}]}},
                {"ruleId": "200", "message": {"text": "fallback title"}},
                {"ruleId": "not-a-qid"}
            ]
        }]
    });
    let r = parse_sarif(&doc, "z").unwrap();
    assert_eq!(r.image_id.as_deref(), Some("abcdef"));
    assert_eq!(r.os.as_deref(), Some("Alpine 3.20"));
    assert_eq!(r.findings.len(), 2);
    let a = &r.findings[0];
    assert_eq!((a.qid, a.severity), (100, Some(3)));
    assert_eq!(a.title, "From name");
    assert_eq!(a.cves, ["CVE-1", "CVE-2", "CVE-3"]);
    assert_eq!(a.packages.len(), 2);
    let b = &r.findings[1];
    assert_eq!((b.qid, b.severity), (200, None));
    assert_eq!(b.title, "fallback title");
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);

    // No runs at all is a warning, not an error; a non-object is an error.
    assert!(
        parse_sarif(&serde_json::json!({}), "e")
            .unwrap()
            .findings
            .is_empty()
    );
    assert!(parse_sarif(&serde_json::json!([]), "e").is_err());
}

#[test]
fn scan_result_secrets_drop_the_match() {
    let doc = parse_json(SCANRESULT_SECRETS.as_bytes(), "x-ScanResult.json").unwrap();
    let r = parse_scan_result(&doc, "x-ScanResult.json").unwrap();
    assert_eq!(
        r.scans_performed,
        [
            ("metadata".to_string(), "SUCCESS".to_string()),
            ("secret".to_string(), "SUCCESS".to_string())
        ]
    );
    assert_eq!(r.secrets.len(), 2);
    let s = &r.secrets[0];
    assert_eq!(s.rule_id, "5ec62a0c-c95f-11ed-afa1-0242ac120002");
    assert_eq!(s.category.as_deref(), Some("AWS"));
    assert_eq!(s.severity.as_deref(), Some("HIGH"));
    assert_eq!(s.title.as_deref(), Some("AWS Account Id"));
    assert_eq!(s.target, "/home/app/my_credentials.txt");
    assert_eq!(s.start_line, Some(7));
    assert_eq!(r.secrets[1].severity.as_deref(), Some("CRITICAL"));
    // The secret itself is nowhere: not in the structure, its Debug or its JSON.
    let debug = format!("{:?}", r.secrets);
    let json = serde_json::to_string(&r.secrets).unwrap();
    for text in [&debug, &json] {
        assert!(!text.contains("1234-5678-9123"), "{text}");
        assert!(!text.contains("Match"), "{text}");
    }
    assert!(r.warnings.is_empty());

    let doc = parse_json(SCANRESULT_FULL.as_bytes(), "y_ScanResult.json").unwrap();
    let r = parse_scan_result(&doc, "y_ScanResult.json").unwrap();
    assert_eq!(r.secrets.len(), 1);
    let debug = format!("{r:?}");
    assert!(!debug.contains("AKIA"), "{debug}");
    assert_eq!(
        r.image_id.as_deref(),
        Some("9c1b2a3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9")
    );
    assert_eq!(
        r.image_digest.as_deref(),
        Some("sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9")
    );
    assert_eq!(r.os.as_deref(), Some("ubuntu 22.04"));
    assert_eq!(r.scans_performed.len(), 3);

    let failed = serde_json::json!({"ScansPerformed": [{"ScanType": "sca", "Status": "FAILED"}]});
    let r = parse_scan_result(&failed, "f").unwrap();
    assert_eq!(r.warnings.len(), 1);
}

#[test]
fn malformed_json_names_the_file_not_the_content() {
    let err = parse_json(
        b"{\"Match\": \"hunter2-secret\" oops",
        "abc-ScanResult.json",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("abc-ScanResult.json"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert_eq!(err.type_name(), "QScannerBadOutput");
    assert!(err.is_retryable());
}

#[test]
fn outputs_are_found_by_suffix_with_either_separator() {
    let dir = TempDir::new("find");
    for name in [
        "abc_Report.sarif.json",
        "abc-ScanResult.json",
        "abc-ScanResult.spdx.json",
        "inv-ScanMetadata.json",
        "-ScanResult.json",
    ] {
        std::fs::write(dir.0.join(name), "{}").unwrap();
    }
    let found = find_outputs(&dir.0).unwrap();
    assert_eq!(found.sarif, Some(dir.0.join("abc_Report.sarif.json")));
    assert_eq!(found.scan_result, Some(dir.0.join("abc-ScanResult.json")));
    assert!(found.warnings.is_empty(), "{:?}", found.warnings);

    std::fs::write(dir.0.join("def-ScanResult.json"), "{}").unwrap();
    let found = find_outputs(&dir.0).unwrap();
    assert_eq!(found.scan_result, Some(dir.0.join("abc-ScanResult.json")));
    assert_eq!(found.warnings.len(), 1);
}

#[test]
fn exit_code_table() {
    use ExitDisposition as D;
    use FailureCategory as C;
    let failure = |code| match exit_code_info(code).disposition {
        D::Failure {
            category,
            retryable,
        } => (category, retryable),
        other => panic!("{code}: {other:?}"),
    };
    assert_eq!(exit_code_info(0).disposition, D::Success);
    assert_eq!(exit_code_info(0).name, "EXIT_SUCCESS");
    assert_eq!(exit_code_info(40).disposition, D::ReportUnavailable);
    assert_eq!(exit_code_info(40).name, "EXIT_FAILED_TO_GET_VULN_REPORT");
    assert_eq!(exit_code_info(42).disposition, D::PolicyDeny);
    assert_eq!(exit_code_info(43).disposition, D::PolicyAudit);
    assert_eq!(failure(1), (C::Generic, true));
    assert_eq!(failure(2), (C::InvalidParameter, false));
    assert_eq!(exit_code_info(2).name, "EXIT_INVALID_PARAMETER");
    assert_eq!(failure(3), (C::Generic, false));
    assert_eq!(failure(6), (C::Artifact, true));
    assert_eq!(exit_code_info(6).name, "EXIT_IMAGE_ARTIFACT_FAILED");
    assert_eq!(failure(7), (C::Artifact, false));
    assert_eq!(failure(8), (C::Artifact, false));
    assert_eq!(failure(13), (C::Scan, true));
    assert_eq!(failure(15), (C::Scan, false));
    assert_eq!(failure(17), (C::Scan, false));
    assert_eq!(failure(37), (C::Upload, true));
    assert_eq!(exit_code_info(39).name, "EXIT_SECRET_RESULT_UPLOAD_FAILED");
    assert_eq!(failure(41), (C::PolicyResult, true));
    assert_eq!(failure(124), (C::Killed, true));
    assert_eq!(failure(137), (C::Killed, true));
    assert_eq!(failure(143), (C::Killed, true));
    assert_eq!(failure(99), (C::Generic, true));
    assert_eq!(exit_code_info(99).name, "undocumented exit code");
    // Every documented code has its own documented name.
    let documented: Vec<i32> = [0, 1, 2, 3]
        .into_iter()
        .chain(5..=21)
        .chain(30..=43)
        .collect();
    for code in documented {
        let name = exit_code_info(code).name;
        assert!(name.starts_with("EXIT_"), "{code}: {name}");
    }
    assert_eq!(failure(4), (C::Generic, true));
}

#[test]
fn errors_become_typed_failures() {
    use crate::failure::IntoFailure;
    use temporalio_sdk::activities::ActivityError;
    let exit = QScannerError::Exit {
        code: Some(6),
        signal: None,
        name: "EXIT_IMAGE_ARTIFACT_FAILED",
        category: FailureCategory::Artifact,
        retryable: true,
        detail: "MANIFEST_UNKNOWN".into(),
    };
    assert_eq!(exit.type_name(), "QScannerArtifactFailed");
    let msg = exit.to_string();
    assert!(
        msg.contains("code 6 (EXIT_IMAGE_ARTIFACT_FAILED): MANIFEST_UNKNOWN"),
        "{msg}"
    );
    assert!(matches!(exit.into_failure(), ActivityError::Application(_)));
    assert!(matches!(
        QScannerError::Cancelled.into_failure(),
        ActivityError::Cancelled { .. }
    ));
    let timeout = QScannerError::Timeout {
        after: std::time::Duration::from_secs(600),
        detail: String::new(),
    };
    assert_eq!(timeout.type_name(), "QScannerTimeout");
    assert!(timeout.is_retryable());
    assert_eq!(
        timeout.to_string(),
        "qscanner timed out after 600s and was killed"
    );
}

#[test]
fn redactor_removes_job_credentials() {
    let dir = TempDir::new("redact");
    let cfg = config(&dir.0);
    let r = Redactor::for_job(&cfg, &ecr_job());
    let text = format!("auth with {TOKEN} and {REG_PASSWORD}; session {SESSION_TOKEN}; ok");
    let red = r.redact(&text);
    for secret in [TOKEN, REG_PASSWORD, SESSION_TOKEN] {
        assert!(!red.contains(secret), "{red}");
    }
    assert!(red.ends_with("; ok"), "{red}");
    assert_eq!(tail_lines("", "a\n\nb\n"), "a | b");
    assert_eq!(tail_lines("1\n2\n3\n4\n5\n6\n", "x"), "2 | 3 | 4 | 5 | 6");
}

/// How an activity calls the runner (the snippet of the module docs): it must compile, and the
/// future must be `Send`, as activity futures are.
#[allow(dead_code)]
async fn activity_plumbing(
    ctx: temporalio_sdk::activities::ActivityContext,
    scanner: std::sync::Arc<QScanner>,
    job: ScanJob,
) -> Result<ScanOutcome, temporalio_sdk::activities::ActivityError> {
    use crate::failure::IntoFailure;
    let hb = ctx.clone();
    scanner
        .run(
            &job,
            move |p: Progress| {
                let ctx = hb.clone();
                tokio::spawn(async move {
                    let _ = ctx.record_heartbeat(p).await;
                });
            },
            ctx.cancelled(),
        )
        .await
        .map_err(IntoFailure::into_failure)
}

#[allow(dead_code)]
fn activity_plumbing_is_send(
    ctx: temporalio_sdk::activities::ActivityContext,
    scanner: std::sync::Arc<QScanner>,
    job: ScanJob,
) {
    fn send<T: Send>(_: T) {}
    send(activity_plumbing(ctx, scanner, job));
}
