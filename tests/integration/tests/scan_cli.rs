//! A person's commands, as a person (or a CI job) runs them: the `qflows` binary as a process
//! against the Temporal dev server, a worker and the Qualys emulator.
//!
//! `qflows scan` exits 0 on a passing image, 1 on a failing one (with the CVE in the output),
//! 2 on a bad reference or an image that could not be scanned; `scan status` answers from the
//! running entity, then from the results store once there is none; `scan rescan` makes Qualys
//! scan again; `registry list` and `qualys info` print what Qualys holds without any secret.

use qflows_integration::{Moto, TestEnv, Worker, push_ecr_image, qflows_bin, wait_for};
use qualys_emulator::{Emulator, EmulatorConfig, PushedImage};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

const REGISTRY: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";
const PASSWORD: &str = "qflows-dev-password";
const CVE: &str = "CVE-2026-31337";

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", self.stdout))
    }
}

/// The environment a person's shell would have: where Temporal, the workers and the reports
/// are, and the Qualys credentials.
fn cli_env(env: Option<(&TestEnv, &Worker, &Path)>, gateway: &str) -> Vec<(String, String)> {
    let defaults = EmulatorConfig::default();
    let mut vars = vec![
        ("QUALYS_GATEWAY_URL", gateway.to_string()),
        ("QUALYS_USERNAME", defaults.username),
        ("QUALYS_PASSWORD", defaults.password),
        ("QFLOWS_LOG", "warn".to_string()),
    ];
    if let Some((env, worker, results)) = env {
        vars.extend([
            ("TEMPORAL_ADDRESS", env.temporal.address.clone()),
            ("TEMPORAL_NAMESPACE", "default".to_string()),
            ("QFLOWS_TASK_QUEUE", worker.task_queue.clone()),
            ("QFLOWS_RESULTS", results.display().to_string()),
        ]);
    }
    vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Runs `qflows <args>` with `vars` only (and PATH, HOME), printing what it printed, as the
/// README shows it.
async fn qflows(vars: &[(String, String)], args: &[&str]) -> anyhow::Result<Run> {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        Command::new(qflows_bin()?)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output(),
    )
    .await??;
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    };
    println!(
        "$ qflows {}\n{}{}[exit {}]\n",
        args.join(" "),
        run.stdout,
        run.stderr
            .lines()
            .map(|l| format!("(stderr) {l}\n"))
            .collect::<String>(),
        run.code
    );
    Ok(run)
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

/// Tells the emulated registry that `repository:tag` is `digest`, with these vulnerabilities.
fn push(env: &TestEnv, repository: &str, tag: &str, digest: &str, vulnerabilities: Vec<Value>) {
    env.qualys.push_image(PushedImage {
        registry: REGISTRY.into(),
        repository: repository.into(),
        tag: tag.into(),
        digest: digest.into(),
        vulnerabilities,
    });
}

fn reference(repository: &str, tag: &str, digest: &str) -> String {
    format!("{REGISTRY}/{repository}:{tag}@{digest}")
}

fn low_findings() -> Vec<Value> {
    vec![
        json!({"qid": 2001, "severity": 2, "title": "Minor info leak", "cveids": ["CVE-2026-1000"]}),
        json!({"qid": 2002, "severity": 3, "title": "Medium issue in zlib",
               "software": [{"name": "zlib", "version": "1.2.13", "fixVersion": "1.3.1"}]}),
    ]
}

fn critical_findings() -> Vec<Value> {
    let mut v = low_findings();
    v.push(
        json!({"qid": 3001, "severity": 5, "title": "OpenSSL remote code execution",
                  "cveids": [CVE], "software": [{"name": "openssl", "version": "3.0.1",
                  "fixVersion": "3.0.16"}]}),
    );
    v
}

fn no_secret(run: &Run) {
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains(PASSWORD),
            "the password was printed:\n{text}"
        );
        // Every JWT starts with the base64 of `{"`.
        assert!(!text.contains("eyJ"), "a token was printed:\n{text}");
    }
}

#[tokio::test]
async fn scan_status_rescan_and_registry_list_as_a_person_runs_them() -> anyhow::Result<()> {
    let env = TestEnv::start(EmulatorConfig {
        scan_delay_ms: 1000,
        ..Default::default()
    })
    .await?;
    let results: PathBuf = env.dir.join("results");
    // ECR (moto) resolves tags for references without a digest.
    let moto = Moto::start().await?;
    let worker = env
        .worker()
        .aws(&moto)
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"))
        .env("QFLOWS_SCAN_POLL_MAX_SECS", Some("2"))
        .env("QFLOWS_RESULTS", Some(results.to_str().unwrap()))
        .start(&env.dir)
        .await?;
    let vars = cli_env(Some((&env, &worker, &results)), &env.qualys.base_url());
    let (ok_digest, bad_digest, twice_digest) = (digest(0x11), digest(0x22), digest(0x33));
    push(&env, "team/ok", "1.0", &ok_digest, low_findings());
    push(&env, "team/bad", "2.0", &bad_digest, critical_findings());
    push(&env, "team/twice", "3.0", &twice_digest, low_findings());
    let ok = reference("team/ok", "1.0", &ok_digest);
    let bad = reference("team/bad", "2.0", &bad_digest);

    // A passing image: exit 0, plain text (stdout is not a terminal: no colour codes).
    let run = qflows(&vars, &["scan", &ok]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("PASS"), "{}", run.stdout);
    assert!(
        run.stdout.contains("pass: 1 image: 1 passed"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("zlib"), "{}", run.stdout);
    assert!(
        !run.stdout.contains('\u{1b}'),
        "colour codes: {:?}",
        run.stdout
    );

    // A critical vulnerability: exit 1, the CVE with its package and versions.
    let run = qflows(&vars, &["scan", &bad]).await?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains("FAIL"), "{}", run.stdout);
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains(CVE))
        .unwrap_or_else(|| panic!("no {CVE} in\n{}", run.stdout));
    for cell in [
        "critical",
        "openssl",
        "3.0.1",
        "3.0.16",
        "OpenSSL remote code execution",
    ] {
        assert!(line.contains(cell), "{cell} missing: {line}");
    }
    // The worst finding comes first.
    let table: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("    "))
        .collect();
    assert!(table[1].contains(CVE), "{table:?}");
    assert_eq!(env.qualys.stats().schedules_created, 2);

    // The same in JSON: one document, the same verdict and exit code. The image is not
    // scanned again (its entity answers with its fresh result).
    let run = qflows(&vars, &["scan", &bad, "--format", "json"]).await?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["outcome"], "fail");
    assert_eq!(doc["exitCode"], 1);
    assert!(doc["workflowId"].as_str().unwrap().starts_with("scan-cli-"));
    let image = &doc["images"][0];
    assert_eq!(image["digest"], json!(bad_digest));
    assert_eq!(image["verdict"], "fail");
    assert_eq!(image["summary"]["critical"], 1);
    assert_eq!(image["findingsTotal"], 3);
    assert_eq!(image["findings"][0]["id"], CVE);
    assert_eq!(image["findings"][0]["fixed"], "3.0.16");
    assert_eq!(image["findings"][0]["installed"], "3.0.1");
    assert_eq!(env.qualys.stats().schedules_created, 2, "not scanned again");
    let run = qflows(&vars, &["scan", &ok, "--format", "json", "--top", "1"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["outcome"], "pass");
    assert_eq!(
        run.json()["images"][0]["findings"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let ok_id = run.json()["workflowId"].as_str().unwrap().to_string();

    // --no-wait: started, its ID printed, exit 0.
    let run = qflows(&vars, &["scan", &ok, "--no-wait"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout.trim(),
        ok_id,
        "the same images, the same workflow ID"
    );

    // Both together: the failing one decides.
    let run = qflows(&vars, &["scan", &ok, &bad]).await?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("fail: 2 images: 1 passed, 1 failed the gate"),
        "{}",
        run.stdout
    );

    // A bad reference: exit 2 with the message, before anything starts.
    let calls = env.qualys.stats().calls.values().sum::<u64>();
    let run = qflows(&vars, &["scan", &ok, "Team/App:1"]).await?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("IMAGE-REF #2") && run.stderr.contains("Team/App:1"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("must be lowercase"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(env.qualys.stats().calls.values().sum::<u64>(), calls);

    // An image that cannot be scanned (a Docker Hub tag, no QScanner) is not a pass, whatever
    // the worker's policy for unscanned images (audit by default).
    let run = qflows(&vars, &["scan", "nginx:1.27"]).await?;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("NOT SCANNED (skipped)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 could not be scanned"),
        "{}",
        run.stdout
    );

    // A scan that takes longer than --timeout-secs (Qualys never finds this tag): exit 2, and
    // the scan goes on.
    let never = reference("team/never-pushed", "1.0", &digest(0x44));
    let run = qflows(&vars, &["scan", &never, "--timeout-secs", "3"]).await?;
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.contains("no verdict within --timeout-secs 3"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);

    // A tag alone, as one would type it: ScanOnDeploy resolves it to its digest in ECR.
    let pushed = push_ecr_image(
        &moto,
        &env.qualys,
        "web/app",
        "1.4",
        "web",
        critical_findings(),
    )
    .await?;
    let pushed_digest = pushed["detail"]["image-digest"]
        .as_str()
        .unwrap()
        .to_string();
    let tagged = format!(
        "{}.dkr.ecr.us-east-1.amazonaws.com/web/app:1.4",
        qflows_integration::MOTO_ACCOUNT
    );
    let run = qflows(&vars, &["scan", &tagged, "--top", "1"]).await?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains(&pushed_digest), "{}", run.stdout);
    assert!(run.stdout.contains(CVE), "{}", run.stdout);

    // Two identical commands at once join one run: one scan.
    let twice = reference("team/twice", "3.0", &twice_digest);
    let args = ["scan", twice.as_str(), "--format", "json"];
    let (a, b) = tokio::join!(qflows(&vars, &args), qflows(&vars, &args));
    let (a, b) = (a?, b?);
    assert_eq!((a.code, b.code), (0, 0), "{}\n{}", a.stderr, b.stderr);
    assert_eq!(a.json()["workflowId"], b.json()["workflowId"]);
    let of_twice = env
        .qualys
        .schedules()
        .iter()
        .filter(|s| s["filters"][0]["repoTags"][0]["repo"] == "team/twice")
        .count();
    assert_eq!(of_twice, 1, "{:?}", env.qualys.schedules());

    // `scan status`: the running entity answers.
    let run = qflows(&vars, &["scan", "status", &bad_digest]).await?;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&format!("answered by the running entity scan-{bad_digest}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(CVE), "{}", run.stdout);
    let run = qflows(&vars, &["scan", "status", &ok, "--format", "json"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["source"]["kind"], "entity");
    assert_eq!(
        doc["source"]["workflowId"],
        json!(format!("scan-{ok_digest}"))
    );
    assert_eq!(doc["outcome"], "pass");
    assert_eq!(doc["image"]["status"], "scanned");
    // A tag alone names no digest; an unknown digest is nothing known.
    let run = qflows(
        &vars,
        &["scan", "status", &format!("{REGISTRY}/team/ok:1.0")],
    )
    .await?;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("names no digest"), "{}", run.stderr);
    let run = qflows(&vars, &["scan", "status", &digest(0x99)]).await?;
    assert_eq!(run.code, 2);
    assert!(run.stdout.contains("nothing known"), "{}", run.stdout);

    // `scan rescan`: the entity submits a new Qualys scan.
    let before = env.qualys.stats().schedules_created;
    let run = qflows(
        &vars,
        &["scan", "rescan", &bad, "--reason", "new OpenSSL advisory"],
    )
    .await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("rescan requested"), "{}", run.stdout);
    wait_for("the rescan's schedule", Duration::from_secs(60), || async {
        (env.qualys.stats().schedules_created > before).then_some(())
    })
    .await?;
    let run = qflows(&vars, &["scan", "rescan", &digest(0x99)]).await?;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no ImageScan entity runs")
            && run
                .stderr
                .contains(&format!("qflows scan <image-ref>@{}", digest(0x99))),
        "{}",
        run.stderr
    );

    // Once no entity runs, the results store answers with the last verdict; a rescan is refused.
    let entity = env
        .client
        .get_workflow_handle::<qflows_workflows::ImageScan>(format!("scan-{ok_digest}"));
    entity.terminate(Default::default()).await?;
    let run = qflows(&vars, &["scan", "status", &ok_digest]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "answered by the results store {}",
            results.display()
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("terminated"), "{}", run.stdout);
    assert!(run.stdout.contains("PASS"), "{}", run.stdout);
    let run = qflows(&vars, &["scan", "status", &ok_digest, "--format", "json"]).await?;
    let doc = run.json();
    assert_eq!(doc["source"]["kind"], "resultsStore");
    assert_eq!(
        doc["image"]["summary"]["medium"], 1,
        "the report's summary: {doc}"
    );
    let run = qflows(&vars, &["scan", "rescan", &ok_digest]).await?;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("terminated"), "{}", run.stderr);

    // `registry list`: the registry the scans ensured, without secrets.
    let run = qflows(&vars, &["registry", "list"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("https://{REGISTRY}")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("\n2 registries\n"), "{}", run.stdout);
    no_secret(&run);
    let run = qflows(&vars, &["registry", "list", "--format", "json"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let list = run.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let ours = list
        .iter()
        .find(|r| r["awsAccountId"] == "111122223333")
        .unwrap_or_else(|| panic!("{list:?}"));
    assert!(ours["registryUuid"].is_string());
    assert_eq!(ours["totalImages"], 3);
    no_secret(&run);
    Ok(())
}

#[tokio::test]
async fn qualys_info_shows_the_connection_and_never_a_secret() -> anyhow::Result<()> {
    let token = "qflows-test-api-token-0123456789";
    let qualys = Emulator::start(
        EmulatorConfig {
            api_tokens: vec![token.to_string()],
            ..Default::default()
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await?;
    let vars = cli_env(None, &qualys.base_url());

    let run = qflows(&vars, &["qualys", "info"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for expected in [
        qualys.base_url().as_str(),
        "password (JWT login as qflows-dev)",
        "login         ok",
        "token         JWT, expires",
        "(in ",
        "CS",
        "805950163170",
        "7364912058341",
        "registry",
    ] {
        assert!(run.stdout.contains(expected), "{expected}:\n{}", run.stdout);
    }
    no_secret(&run);
    let run = qflows(&vars, &["qualys", "info", "--format", "json"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["authMode"], "password");
    assert_eq!(doc["auth"], "ok");
    assert_eq!(doc["awsBase"]["accountId"], "805950163170");
    assert_eq!(doc["awsBase"]["externalId"], "7364912058341");
    assert!(doc["token"]["expiresInSecs"].as_i64().unwrap() > 14_000);
    let registry = doc["rateLimits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["family"] == "registry")
        .cloned()
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(registry["advertised"], true, "{registry}");
    assert!(registry["remaining"].is_u64(), "{registry}");
    no_secret(&run);

    // A ready token: shown as such, never printed.
    let token_vars: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| !k.starts_with("QUALYS_USERNAME") && !k.starts_with("QUALYS_PASSWORD"))
        .cloned()
        .chain([("QUALYS_API_TOKEN".to_string(), token.to_string())])
        .collect();
    let run = qflows(&token_vars, &["qualys", "info"]).await?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("token (QUALYS_API_TOKEN"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("not a JWT"), "{}", run.stdout);
    assert!(!run.stdout.contains(token) && !run.stderr.contains(token));
    // A token Qualys does not know: refused, exit 1.
    let unknown: Vec<(String, String)> = token_vars
        .iter()
        .map(|(k, v)| {
            let v = if k == "QUALYS_API_TOKEN" {
                "not-a-known-token-77".to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let run = qflows(&unknown, &["qualys", "info"]).await?;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("login         FAILED"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("not-a-known-token-77")
            && !run.stderr.contains("not-a-known-token-77")
    );

    // Wrong credentials: exit 1, said plainly, still no secret.
    let wrong: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| {
            let v = if k == "QUALYS_PASSWORD" {
                "wrong-pass-42".to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let run = qflows(&wrong, &["qualys", "info"]).await?;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("login         FAILED"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("wrong-pass-42") && !run.stderr.contains("wrong-pass-42"));
    Ok(())
}
