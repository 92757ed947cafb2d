//! End-to-end tests of the client against the scripted [`TestServer`](super::test_server).

use super::test_server::{Reply, Req, TestServer};
use super::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const JWT: &str =
    "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhY21lX2FwaV91c2VyIiwiZXhwIjoxNzY3MjI1NjAwfQ.c2lnbmF0dXJl";
const JWT2: &str =
    "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhY21lX2FwaV91c2VyIiwiZXhwIjoxNzY3MjI5MjAwfQ.c2Vjb25kc2ln";
const USERNAME: &str = "acme_user";
const PASSWORD: &str = "p@ss w&rd=1";
const SHA: &str = "4f67c83422ec747235357c04556616234e66fc3fa39cb4f40b2d4441ddd8f100";
const ECR: &str = "https://111122223333.dkr.ecr.us-east-1.amazonaws.com";

fn password_config(server: &TestServer) -> QualysConfig {
    QualysConfig::new(
        server.url.clone(),
        QualysAuth::Password {
            username: USERNAME.into(),
            password: Secret::new(PASSWORD),
        },
    )
}

fn token_config(server: &TestServer, token: &str) -> QualysConfig {
    QualysConfig::new(server.url.clone(), QualysAuth::Token(Secret::new(token)))
}

fn client(cfg: QualysConfig) -> QualysClient {
    QualysClient::new(cfg).expect("valid config")
}

/// `/auth` answers 201 with the JWT; everything else with `api`.
fn with_login(
    api: impl Fn(&Req) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    move |req: &Req| {
        if req.path == "/auth" {
            Reply::text(201, JWT)
        } else {
            api(req)
        }
    }
}

fn aws_base_reply() -> Reply {
    Reply::json(
        200,
        json!({"accountId": "805950163170", "externalId": 1234567890123u64}),
    )
}

fn image_json(sha: &str, repo: &str) -> serde_json::Value {
    json!({"sha": sha, "repo": [{"registry": "111122223333.dkr.ecr.us-east-1.amazonaws.com", "repository": repo, "tag": "v1"}],
           "created": "1717026901000", "scanStatus": "SUCCESS"})
}

// ---------------------------------------------------------------------------------------------
// Auth.

#[tokio::test]
async fn logs_in_once_and_reuses_the_token() {
    let server = TestServer::start(with_login(|_| aws_base_reply())).await;
    let qualys = client(password_config(&server));
    let calls = (0..10).map(|_| {
        let q = qualys.clone();
        tokio::spawn(async move { q.aws_base().await })
    });
    for call in futures::future::join_all(calls).await {
        let base = call.unwrap().unwrap();
        assert_eq!(base.external_id, "1234567890123");
        assert_eq!(base.account_id, "805950163170");
    }
    assert_eq!(server.count("/auth"), 1, "one login shared by all callers");
    let requests = server.requests();
    let login = requests.iter().find(|r| r.path == "/auth").unwrap();
    assert_eq!(login.method, "POST");
    assert_eq!(
        login.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&login.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(
        form,
        vec![
            ("username".into(), USERNAME.into()),
            ("password".into(), PASSWORD.into()),
            ("token".into(), "true".into())
        ]
    );
    assert!(login.raw_query.is_empty());
    let api = server.api_requests();
    assert_eq!(api.len(), 10);
    for r in &api {
        assert_eq!(r.path, "/csapi/v1.3/registry/aws-base");
        assert_eq!(r.bearer(), Some(JWT));
        assert_eq!(r.header("accept"), Some("application/json"));
        assert!(!r.raw_query.contains(JWT));
    }
    let m = qualys.metrics();
    assert_eq!(m.logins, 1);
    assert_eq!(m.requests["registry"], 10);
    assert_eq!(m.errors.values().sum::<u64>(), 0);
}

#[tokio::test]
async fn logs_in_again_once_after_a_401() {
    let logins = AtomicUsize::new(0);
    let server = TestServer::start(move |req| match req.path.as_str() {
        "/auth" => match logins.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::text(200, JWT),
            _ => Reply::text(201, &format!("  {JWT2}\n")),
        },
        _ if req.bearer() == Some(JWT) => Reply::json(401, json!({"message": "expired"})),
        _ => aws_base_reply(),
    })
    .await;
    let qualys = client(password_config(&server));
    qualys.aws_base().await.expect("success after re-login");
    assert_eq!(server.count("/auth"), 2);
    let api = server.api_requests();
    assert_eq!(api.len(), 2);
    assert_eq!(api[1].bearer(), Some(JWT2));
    // The new token is cached.
    qualys.aws_base().await.unwrap();
    assert_eq!(server.count("/auth"), 2);
    assert_eq!(qualys.metrics().retries, 1);
}

#[tokio::test]
async fn a_second_401_is_a_final_auth_error() {
    let server = TestServer::start(with_login(|_| Reply::empty(401))).await;
    let qualys = client(password_config(&server));
    let err = qualys.aws_base().await.unwrap_err();
    assert!(matches!(err, QualysError::Auth { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(err.kind(), "auth");
    assert_eq!(server.count("/auth"), 2);
    assert_eq!(server.api_requests().len(), 2);
    assert_eq!(qualys.metrics().errors["auth"], 1);
}

#[tokio::test]
async fn a_bad_password_is_an_auth_error_without_the_password() {
    let server = TestServer::start(|req| {
        // A server that echoes what it got.
        Reply::text(
            401,
            &format!("Unauthorized user: {}", String::from_utf8_lossy(&req.body)),
        )
    })
    .await;
    let qualys = client(password_config(&server));
    let err = qualys.aws_base().await.unwrap_err();
    let QualysError::Auth { message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        message,
        "Qualys rejected the username/password (401 Unauthorized user) at POST /auth"
    );
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(
            !shown.contains(PASSWORD) && !shown.contains("p%40ss"),
            "{shown}"
        );
    }
    assert!(!err.is_retryable());
    assert!(server.api_requests().is_empty());
    assert!(matches!(
        qualys.check_auth().await,
        Err(QualysError::Auth { .. })
    ));
}

#[tokio::test]
async fn a_rejected_ready_token_fails_at_once() {
    let server = TestServer::start(|_| Reply::empty(401)).await;
    let qualys = client(token_config(&server, "ready-token-1"));
    qualys.check_auth().await.expect("no-op in token mode");
    assert!(server.requests().is_empty());
    let err = qualys.aws_base().await.unwrap_err();
    assert!(
        matches!(&err, QualysError::Auth { message } if message.contains("token rejected or expired"))
    );
    assert!(!err.to_string().contains("ready-token-1"));
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].bearer(), Some("ready-token-1"));
}

#[tokio::test]
async fn an_old_token_is_renewed() {
    let server = TestServer::start(with_login(|_| aws_base_reply())).await;
    let mut cfg = password_config(&server);
    cfg.token_refresh_after = Duration::ZERO;
    let qualys = client(cfg);
    qualys.aws_base().await.unwrap();
    qualys.aws_base().await.unwrap();
    assert_eq!(server.count("/auth"), 2);
}

// ---------------------------------------------------------------------------------------------
// Registries and connectors.

#[tokio::test]
async fn registry_search_204_is_none_and_the_filter_is_encoded_once() {
    let server = TestServer::start(with_login(|_| Reply::empty(204))).await;
    let qualys = client(password_config(&server));
    assert_eq!(qualys.find_registry_by_uri(ECR).await.unwrap(), None);
    let api = server.api_requests();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].path, "/csapi/v1.3/registry");
    assert_eq!(
        api[0].param("filter").as_deref(),
        Some(r#"registryUri:"https://111122223333.dkr.ecr.us-east-1.amazonaws.com""#)
    );
    assert_eq!(api[0].param("pageNumber").as_deref(), Some("1"));
    assert_eq!(api[0].param("pageSize").as_deref(), Some("50"));
}

#[tokio::test]
async fn registry_found_on_page_two() {
    let server = TestServer::start(with_login(|req| {
        let other = |n: u32| json!({"registryUuid": format!("other-{n}"), "registryUri": format!("https://99999999999{n}.dkr.ecr.us-east-1.amazonaws.com")});
        match req.param("pageNo").as_deref() {
            Some("1") => Reply::json(200, json!({"count": 4, "data": [other(1), other(2)]})),
            Some("2") => Reply::json(200, json!({"count": 4, "data": [
                {"registryUuid": "wanted", "registryName": "ecr", "registryUri": "https://111122223333.DKR.ecr.us-east-1.amazonaws.com/", "awsRegion": "us-east-1", "repoCount": 3},
                other(3)]})),
            _ => Reply::json(200, json!({"count": 4, "data": []})),
        }
    }))
    .await;
    let mut cfg = password_config(&server);
    cfg.page_size = 2;
    cfg.page_param = "pageNo".into();
    let qualys = client(cfg);
    let found = qualys
        .find_registry_by_uri(&format!("{ECR}/"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.registry_uuid, "wanted");
    assert_eq!(found.aws_region.as_deref(), Some("us-east-1"));
    assert_eq!(found.extra["repoCount"], 3);
    assert_eq!(
        server.api_requests().len(),
        2,
        "stops at the page with the match"
    );
    // An unrelated URI is not a match even when Qualys returns something.
    assert_eq!(
        qualys
            .find_registry_by_uri("https://555555555555.dkr.ecr.us-east-1.amazonaws.com")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn create_registry_answer_shapes() {
    let answers = [
        Reply::json(200, json!({"registryUuid": "u-object"})),
        Reply::json(200, json!("u-string")),
        Reply::text(200, "u-text\n"),
        Reply::empty(200),
        Reply::empty(204),
    ];
    let n = AtomicUsize::new(0);
    let server = TestServer::start(with_login(move |_| {
        answers[n.fetch_add(1, Ordering::SeqCst)].clone()
    }))
    .await;
    let qualys = client(password_config(&server));
    let req = CreateEcrRegistry {
        account_id: "111122223333".into(),
        arn: "arn:aws:iam::111122223333:role/qualys-scan".into(),
        region: "us-east-1".into(),
        account_type: "Global".into(),
        registry_uri: ECR.into(),
        registry_name: "ecr-111122223333-us-east-1".into(),
    };
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(qualys.create_ecr_registry(&req).await.unwrap());
    }
    assert_eq!(
        got,
        vec![
            Some("u-object".into()),
            Some("u-string".into()),
            Some("u-text".into()),
            None,
            None
        ]
    );
    let sent = &server.api_requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.json(),
        json!({"aws": {"accountId": "111122223333", "arn": "arn:aws:iam::111122223333:role/qualys-scan", "region": "us-east-1", "accountType": "Global"},
               "credentialType": "AWS", "registryType": "AWS", "registryUri": ECR, "registryName": "ecr-111122223333-us-east-1"})
    );
}

#[tokio::test]
async fn schedules_connectors_and_aws_base() {
    let server = TestServer::start(with_login(|req| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/csapi/v1.3/registry/reg-1/schedule") => {
            Reply::json(202, json!({"scheduleUuid": "sched-1"}))
        }
        ("GET", "/csapi/v1.3/registry/aws/connectors/111122223333") => Reply::json(
            200,
            json!([{"name": "c", "arn": "arn:aws:iam::111122223333:role/r", "accountType": "Global"}]),
        ),
        ("GET", "/csapi/v1.3/registry/aws/connectors") => Reply::empty(204),
        ("POST", "/csapi/v1.3/registry/aws/connector") => Reply::empty(200),
        _ => Reply::empty(404),
    }))
    .await;
    let qualys = client(password_config(&server));
    let schedule = OnDemandSchedule {
        name: "ECR-my-app-1".into(),
        repo_tags: vec![RepoTag {
            repo: "my-app".into(),
            tag: "v1.2.3".into(),
        }],
        force_scan: true,
        registry_type: "AWS".into(),
    };
    assert_eq!(
        qualys
            .create_on_demand_schedule("reg-1", &schedule)
            .await
            .unwrap()
            .as_deref(),
        Some("sched-1")
    );
    let connectors = qualys
        .list_aws_connectors(Some("111122223333"))
        .await
        .unwrap();
    assert_eq!(connectors.len(), 1);
    assert_eq!(connectors[0].arn, "arn:aws:iam::111122223333:role/r");
    assert!(qualys.list_aws_connectors(None).await.unwrap().is_empty());
    qualys
        .create_aws_connector(&CreateAwsConnector {
            arn: "arn:aws:iam::111122223333:role/r".into(),
            description: "d".into(),
            external_id: "1234567890123".into(),
            name: "c".into(),
            account_type: "Global".into(),
        })
        .await
        .unwrap();
    let api = server.api_requests();
    assert_eq!(
        api[0].json(),
        json!({"filters": [{"repoTags": [{"repo": "my-app", "tag": "v1.2.3"}], "days": null}],
               "name": "ECR-my-app-1", "onDemand": true, "schedule": "00:00", "forceScan": true, "registryType": "AWS"})
    );
    assert_eq!(api[3].json()["externalId"], "1234567890123");
    let err = qualys.aws_base().await.unwrap_err();
    assert!(
        matches!(&err, QualysError::NotFound { endpoint, .. } if endpoint == "GET /csapi/v1.3/registry/aws-base"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

// ---------------------------------------------------------------------------------------------
// Images, vulnerabilities, sensors, CDR.

#[tokio::test]
async fn images_by_repo_read_every_page() {
    let server = TestServer::start(with_login(|req| {
        let page: u32 = req.param("pageNumber").unwrap().parse().unwrap();
        let img = |i: u32| image_json(&format!("{:064x}", i), "payments-api");
        match page {
            1 => Reply::json(200, json!({"data": [img(1), img(2)], "count": 5})),
            2 => Reply::json(200, json!({"data": [img(3), img(4)], "count": 5})),
            3 => Reply::json(200, json!({"data": [img(5)], "count": 5})),
            _ => panic!("read past the short page"),
        }
    }))
    .await;
    let mut cfg = password_config(&server);
    cfg.page_size = 2;
    let qualys = client(cfg);
    let images = qualys
        .find_images("payments-api", None, |_| false)
        .await
        .unwrap();
    assert_eq!(images.len(), 5);
    assert_eq!(
        images[4].repo[0].repository.as_deref(),
        Some("payments-api")
    );
    let api = server.api_requests();
    assert_eq!(api.len(), 3);
    assert_eq!(
        api[0].param("filter").as_deref(),
        Some(r#"repo.repository:"payments-api""#)
    );
    assert_eq!(api[2].param("pageNumber").as_deref(), Some("3"));
}

#[tokio::test]
async fn images_by_tag_are_narrowed_sorted_and_stop_at_the_first_match() {
    let server = TestServer::start(with_login(|req| {
        let page: u32 = req.param("pageNumber").unwrap().parse().unwrap();
        let img = |i: u32| image_json(&format!("{:064x}", i), "payments-api");
        match page {
            1 => Reply::json(200, json!({"data": [img(1), img(2)], "count": 9})),
            2 => Reply::json(200, json!({"data": [img(3), img(4)], "count": 9})),
            _ => panic!("read past the page with the match"),
        }
    }))
    .await;
    let mut cfg = password_config(&server);
    cfg.page_size = 2;
    let qualys = client(cfg);
    let wanted = format!("{:064x}", 3);
    let images = qualys
        .find_images("payments-api", Some("1.0"), |i| i.sha == wanted)
        .await
        .unwrap();
    assert_eq!(images.len(), 4);
    let api = server.api_requests();
    assert_eq!(api.len(), 2, "stopped after the page holding the match");
    assert_eq!(
        api[0].param("filter").as_deref(),
        Some(r#"repo.repository:"payments-api" and repo.tag:"1.0""#)
    );
    assert_eq!(api[0].param("sort").as_deref(), Some("created:desc"));
}

#[tokio::test]
async fn image_404_is_none_and_a_bad_sha_is_not_sent() {
    let server = TestServer::start(with_login(|req| {
        if req.path.ends_with(SHA) {
            Reply::json(200, image_json(SHA, "nginx"))
        } else {
            Reply::json(
                404,
                json!({"errorCode": "404 NOT_FOUND", "message": "Image not found"}),
            )
        }
    }))
    .await;
    let qualys = client(password_config(&server));
    let img = qualys
        .image(&format!("sha256:{}", SHA.to_uppercase()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(img.sha, SHA);
    assert_eq!(img.scan_status.as_deref(), Some("SUCCESS"));
    let unknown = "0".repeat(64);
    assert_eq!(qualys.image(&unknown).await.unwrap(), None);
    let before = server.api_requests().len();
    let err = qualys.image("nginx:latest").await.unwrap_err();
    assert!(
        matches!(&err, QualysError::BadRequest { status: 0, endpoint, .. } if endpoint == "GET /csapi/v1.3/images/{sha}"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(server.api_requests().len(), before, "nothing sent");
    assert_eq!(
        qualys.metrics().errors["not_found"],
        0,
        "an allowed 404 is no error"
    );
}

#[tokio::test]
async fn vulnerabilities_in_both_shapes_and_counts() {
    let server = TestServer::start(with_login(|req| {
        let sha = req.path.split('/').nth(4).unwrap_or_default();
        if req.path.ends_with("/vuln/count") {
            return Reply::json(200, json!({"severity5Count": 0, "severity3Count": "1", "severity4Count": null, "severity1Count": 0, "severity2Count": 2}));
        }
        assert_eq!(req.param("type").as_deref(), Some("DETAILS"));
        if sha.starts_with('a') {
            Reply::json(200, json!({"details": [{"vulnerability": null, "severity": 5, "customerSeverity": 5, "typeDetected": "CONFIRMED",
                "result": "#table cols=\"3\"\nPackage Installed_Version Required_Version\nexpat 2.1.0-10 2.1.0-14"}]}))
        } else {
            Reply::json(200, json!({"data": [{"qid": 379952, "title": "OpenSSL", "severity": "4", "cveids": ["CVE-2024-5535"]},
                                              {"qid": "378901", "customerSeverity": 3}], "count": 2}))
        }
    }))
    .await;
    let qualys = client(password_config(&server));
    let official = qualys.image_vulnerabilities(&"a".repeat(64)).await.unwrap();
    assert_eq!(official.len(), 1);
    assert_eq!(official[0].severity, 5);
    assert_eq!(official[0].fixed_version.as_deref(), Some("2.1.0-14"));
    let seed = qualys.image_vulnerabilities(&"b".repeat(64)).await.unwrap();
    assert_eq!(seed.len(), 2);
    assert_eq!((seed[0].qid, seed[0].severity), (Some(379952), 4));
    assert_eq!(seed[0].cve_ids, vec!["CVE-2024-5535"]);
    assert_eq!((seed[1].qid, seed[1].severity), (Some(378901), 3));
    let counts = qualys.image_vuln_count(SHA).await.unwrap();
    assert_eq!(
        counts,
        SeverityCounts {
            severity2: 2,
            severity3: 1,
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn sensors_and_cdr_findings_page() {
    let server = TestServer::start(with_login(|req| {
        if req.path == "/csapi/v1.3/sensors" {
            return Reply::json(200, json!({"data": [{"sensorUuid": "s-1", "hostname": "h1", "status": "ACTIVE", "version": "1.2"}], "count": 1}));
        }
        assert_eq!(req.path, "/cdr-api/rest/v1/findings/");
        assert_eq!(req.param("startAt").as_deref(), Some("2026-01-10T16:45:00.000Z"));
        assert_eq!(req.param("endAt").as_deref(), Some("2026-01-11T16:45:00.999Z"));
        assert_eq!(req.param("limit").as_deref(), Some("2"));
        assert_eq!(req.param("resourceType").as_deref(), Some("container"));
        assert_eq!(req.param("query").as_deref(), Some("tc.findings.cloudProvider: AWS"));
        assert_eq!(req.param("severity"), None);
        match req.param("offSet").as_deref() {
            Some("0") => Reply::json(200, json!({"content": [
                {"uuid": "f1", "threatCategory": "Network_Scanning_Utility", "severity": 3, "mitreRulesInfo": {"T1046": {}}},
                {"uuid": "f2", "severity": "CRITICAL", "mitreRulesInfo": [{"technique": "T1552.005"}], "processName": "curl"}],
                "totalElements": 3})),
            Some("2") => Reply::json(200, json!({"content": [{"uuid": "f3", "severity": "low"}], "totalElements": 3})),
            other => panic!("unexpected offset {other:?}"),
        }
    }))
    .await;
    let qualys = client(password_config(&server));
    let sensors = qualys.sensors().await.unwrap();
    assert_eq!(sensors[0].sensor_uuid.as_deref(), Some("s-1"));
    assert_eq!(sensors[0].extra["version"], "1.2");
    let q = CdrQuery {
        limit: 2,
        resource_type: Some("container".into()),
        query: Some("tc.findings.cloudProvider: AWS".into()),
        ..CdrQuery::new("2026-01-10T16:45:00.000Z", "2026-01-11T16:45:00.999Z")
    };
    let findings = qualys.cdr_findings(&q).await.unwrap();
    assert_eq!(findings.len(), 3);
    assert_eq!(findings[0].severity, Some(Severity::High));
    assert_eq!(findings[0].mitre_techniques, vec!["T1046"]);
    assert_eq!(findings[1].severity, Some(Severity::Critical));
    assert_eq!(findings[1].mitre_techniques, vec!["T1552.005"]);
    assert_eq!(findings[1].extra["processName"], "curl");
    assert_eq!(findings[2].severity, Some(Severity::Low));
    assert_eq!(server.count("/cdr-api/rest/v1/findings/"), 2);
    assert_eq!(qualys.metrics().requests["cdr"], 2);
}

// ---------------------------------------------------------------------------------------------
// Throttling and limits.

/// Answers the first API request with `first`, the rest with `aws_base_reply()`.
fn throttle_once(first: Reply) -> impl Fn(&Req) -> Reply + Send + Sync + 'static {
    let n = AtomicUsize::new(0);
    with_login(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            first.clone()
        } else {
            aws_base_reply()
        }
    })
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out() {
    let server =
        TestServer::start(throttle_once(Reply::empty(429).header("Retry-After", "1"))).await;
    let qualys = client(password_config(&server));
    let started = Instant::now();
    qualys.aws_base().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    let api = server.api_requests();
    assert_eq!(api.len(), 2);
    assert!(api[1].at.duration_since(api[0].at) >= Duration::from_secs(1));
    let m = qualys.metrics();
    assert_eq!(
        (m.throttled["registry"], m.retries, m.requests["registry"]),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn a_429_with_only_towait_sec_is_honoured() {
    let server = TestServer::start(throttle_once(
        Reply::empty(429).header("X-RateLimit-ToWait-Sec", "1"),
    ))
    .await;
    let qualys = client(password_config(&server));
    let started = Instant::now();
    qualys.aws_base().await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.api_requests().len(), 2);
}

#[tokio::test]
async fn a_409_is_a_throttle_too() {
    let server =
        TestServer::start(throttle_once(Reply::empty(409).header("Retry-After", "0"))).await;
    let qualys = client(password_config(&server));
    qualys.aws_base().await.unwrap();
    assert_eq!(server.api_requests().len(), 2);
}

#[tokio::test]
async fn a_long_retry_after_returns_rate_limited_at_once() {
    let server = TestServer::start(with_login(|_| {
        Reply::empty(429).header("Retry-After", "120")
    }))
    .await;
    let qualys = client(password_config(&server));
    let started = Instant::now();
    let err = qualys.aws_base().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            err,
            QualysError::RateLimited {
                family: Family::Registry,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(err.is_retryable());
    assert_eq!(server.api_requests().len(), 1);
}

#[tokio::test]
async fn throttle_retries_are_bounded() {
    let server =
        TestServer::start(with_login(|_| Reply::empty(429).header("Retry-After", "0"))).await;
    let mut cfg = password_config(&server);
    cfg.max_throttle_retries = 2;
    let qualys = client(cfg);
    let err = qualys.aws_base().await.unwrap_err();
    assert_eq!(err.kind(), "rate_limited");
    assert_eq!(server.api_requests().len(), 3);
    assert_eq!(qualys.metrics().errors["rate_limited"], 1);
}

#[tokio::test]
async fn the_window_limiter_spaces_requests() {
    let server = TestServer::start(with_login(|_| {
        Reply::json(200, json!({"severity5Count": 1}))
    }))
    .await;
    let mut cfg = password_config(&server);
    cfg.rate_limits = vec![RateLimit {
        family: Family::Images,
        limit: 3,
        window: Duration::from_secs(1),
    }];
    let qualys = client(cfg);
    let calls = (0..7).map(|_| {
        let q = qualys.clone();
        tokio::spawn(async move { q.image_vuln_count(SHA).await })
    });
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap().unwrap().severity5, 1);
    }
    let mut arrivals: Vec<Instant> = server.api_requests().iter().map(|r| r.at).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 7);
    for pair in arrivals.windows(4) {
        assert!(
            pair[3].duration_since(pair[0]) >= Duration::from_secs(1),
            "4 arrivals within one second"
        );
    }
}

#[tokio::test]
async fn remaining_zero_holds_the_family() {
    let n = AtomicUsize::new(0);
    let server = TestServer::start(with_login(move |_| {
        let reply = aws_base_reply()
            .header("X-RateLimit-Limit", "1000")
            .header("X-RateLimit-Window-Sec", "1");
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            reply.header("X-RateLimit-Remaining", "0")
        } else {
            reply.header("X-RateLimit-Remaining", "999")
        }
    }))
    .await;
    let qualys = client(password_config(&server));
    qualys.aws_base().await.unwrap();
    qualys.aws_base().await.unwrap();
    let api = server.api_requests();
    assert!(api[1].at.duration_since(api[0].at) >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_long_hold_returns_rate_limited_without_sending() {
    let server = TestServer::start(with_login(|_| {
        aws_base_reply()
            .header("X-RateLimit-Limit", "1000")
            .header("X-RateLimit-Window-Sec", "3600")
            .header("X-RateLimit-Remaining", "0")
    }))
    .await;
    let qualys = client(password_config(&server));
    qualys.aws_base().await.unwrap();
    let err = qualys.aws_base().await.unwrap_err();
    assert_eq!(err.kind(), "rate_limited");
    assert!(err.retry_after().unwrap() > Duration::from_secs(3500));
    assert_eq!(server.api_requests().len(), 1);
}

#[tokio::test]
async fn at_most_max_in_flight_requests_at_once() {
    let server = TestServer::start(with_login(|_| {
        aws_base_reply().delay(Duration::from_millis(100))
    }))
    .await;
    let mut cfg = password_config(&server);
    cfg.max_in_flight = 2;
    let qualys = client(cfg);
    let calls = (0..8).map(|_| {
        let q = qualys.clone();
        tokio::spawn(async move { q.aws_base().await })
    });
    for call in futures::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    assert_eq!(server.api_requests().len(), 8);
    assert!(
        server.max_concurrent() <= 2,
        "saw {}",
        server.max_concurrent()
    );
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[tokio::test]
async fn a_500_is_a_retryable_server_error_sent_once() {
    let server = TestServer::start(with_login(|_| {
        Reply::json(500, json!({"errorCode": "500 INTERNAL_SERVER_ERROR", "message": "CDR findings currently unavailable"}))
    }))
    .await;
    let qualys = client(password_config(&server));
    let err = qualys.aws_base().await.unwrap_err();
    let QualysError::Server {
        status,
        message,
        endpoint,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 500);
    assert_eq!(endpoint, "GET /csapi/v1.3/registry/aws-base");
    assert!(
        message.contains("CDR findings currently unavailable"),
        "{message}"
    );
    assert!(err.is_retryable());
    assert_eq!(server.api_requests().len(), 1);
}

#[tokio::test]
async fn forbidden_and_bad_request_are_final() {
    let server = TestServer::start(with_login(|req| {
        if req.path.contains("connector") {
            Reply::raw_json(403, r#"{"errorCode":"403 FORBIDDEN","message":"Request Forbidden","timestamp":1700721586546}"#)
        } else {
            Reply::text(422, "bad filter")
        }
    }))
    .await;
    let qualys = client(password_config(&server));
    let err = qualys.list_aws_connectors(None).await.unwrap_err();
    assert!(
        matches!(&err, QualysError::Forbidden { message, .. } if message == "403 FORBIDDEN: Request Forbidden"),
        "{err:?}"
    );
    let err = qualys.sensors().await.unwrap_err();
    assert!(
        matches!(&err, QualysError::BadRequest { status: 422, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn malformed_and_truncated_bodies() {
    let body = r#"{"data":[{"sha":"4f67c8","repo":[]}],"count":1}"#;
    let n = AtomicUsize::new(0);
    let server = TestServer::start(with_login(move |_| {
        match n.fetch_add(1, Ordering::SeqCst) {
            0 => Reply::raw_json(200, &body[..20]),
            _ => Reply::raw_json(200, body).cut_at(20),
        }
    }))
    .await;
    let qualys = client(password_config(&server));
    let err = qualys
        .find_images("nginx", None, |_| false)
        .await
        .unwrap_err();
    assert!(matches!(err, QualysError::Decode { .. }), "{err:?}");
    assert!(err.is_retryable());
    let err = qualys
        .find_images("nginx", None, |_| false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            QualysError::Transport { .. } | QualysError::Decode { .. }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn timeouts_and_refused_connections() {
    let server = TestServer::start(with_login(|_| {
        aws_base_reply().delay(Duration::from_secs(3))
    }))
    .await;
    let mut cfg = password_config(&server);
    cfg.request_timeout = Duration::from_millis(300);
    let err = client(cfg).aws_base().await.unwrap_err();
    assert!(matches!(err, QualysError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());

    let unused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = QualysConfig::new(
        url::Url::parse(&format!("http://{unused}")).unwrap(),
        QualysAuth::Token(Secret::new("t")),
    );
    let err = client(cfg).aws_base().await.unwrap_err();
    assert!(matches!(err, QualysError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn echoed_credentials_never_reach_errors() {
    let server = TestServer::start(|req| match req.path.as_str() {
        "/auth" => Reply::text(201, JWT),
        "/csapi/v1.3/registry/aws-base" => Reply::json(500, json!({
            "errorCode": "500",
            "message": format!("failed for Authorization: Bearer {JWT}; token {JWT}; password={PASSWORD} ({PASSWORD}) raw {JWT}")
        })),
        "/csapi/v1.3/sensors" => Reply::text(400, &format!(
            "bad request username={USERNAME}&password=p%40ss+w%26rd%3D1&token=true; your key: {}; {PASSWORD}",
            req.header("authorization").unwrap_or_default()
        )),
        _ => Reply::text(403, &format!("token was {}", req.bearer().unwrap_or_default())),
    })
    .await;
    let qualys = client(password_config(&server));
    let errors = [
        qualys.aws_base().await.unwrap_err(),
        qualys.sensors().await.unwrap_err(),
    ];
    // A short ready token, echoed verbatim.
    let token_client = client(token_config(&server, "shorttok1"));
    let token_err = token_client.list_aws_connectors(None).await.unwrap_err();
    let secrets = [JWT, PASSWORD, "p%40ss", "shorttok1"];
    for err in errors.iter().chain([&token_err]) {
        for shown in [err.to_string(), format!("{err:?}")] {
            for secret in &secrets {
                assert!(!shown.contains(secret), "{secret} leaked in {shown}");
            }
            assert!(!shown.contains("eyJ"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }
    assert!(!errors[1].to_string().contains("Bearer eyJ"));
}

#[tokio::test]
async fn short_passwords_are_removed_literally() {
    let server = TestServer::start(|req| match req.path.as_str() {
        "/auth" => Reply::text(
            500,
            &format!("cannot log in {}", String::from_utf8_lossy(&req.body)),
        ),
        _ => Reply::empty(500),
    })
    .await;
    let mut cfg = password_config(&server);
    cfg.auth = QualysAuth::Password {
        username: USERNAME.into(),
        password: Secret::new("hunter2"),
    };
    let err = client(cfg).aws_base().await.unwrap_err();
    assert_eq!(err.kind(), "server");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[tokio::test]
async fn invalid_configs_are_refused() {
    let gw = url::Url::parse("https://gateway.qg2.apps.qualys.com").unwrap();
    let mut cfg = QualysConfig::new(gw.clone(), QualysAuth::Token(Secret::new("")));
    assert_eq!(QualysClient::new(cfg.clone()).unwrap_err().kind(), "config");
    cfg.auth = QualysAuth::Token(Secret::new("t"));
    cfg.max_in_flight = 0;
    assert_eq!(QualysClient::new(cfg.clone()).unwrap_err().kind(), "config");
    cfg.max_in_flight = 4;
    QualysClient::new(cfg.clone()).unwrap();
    cfg.gateway = url::Url::parse("ftp://x").unwrap();
    assert!(!QualysClient::new(cfg).unwrap_err().is_retryable());
    let dbg = format!(
        "{:?}",
        QualysConfig::new(gw, QualysAuth::Token(Secret::new("tok-xyz")))
    );
    assert!(!dbg.contains("tok-xyz"));
}
