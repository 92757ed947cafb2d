//! The emulator over HTTP, in process: auth, csapi, CDR, rate limits, faults, stats and the
//! admin API.

use qualys_emulator::{
    Duplicates, Emulator, EmulatorConfig, Faults, PushedImage, RateLimitRule,
    RegistryCreateResponse, RunningEmulator, SeedImage, VulnShape,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, Instant};

const ACCOUNT: &str = "111122223333";
const URI: &str = "https://111122223333.dkr.ecr.us-east-1.amazonaws.com";
const HOST: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";

/// A running emulator, a client and a token from `POST /auth`.
struct Env {
    qualys: RunningEmulator,
    http: Client,
    token: String,
}

impl Env {
    async fn start(cfg: EmulatorConfig) -> Self {
        let qualys = Emulator::start(cfg.clone(), ([127, 0, 0, 1], 0).into())
            .await
            .expect("start");
        let http = Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let resp = login(&http, &qualys, &cfg.username, &cfg.password).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let token = resp.text().await.unwrap();
        Self {
            qualys,
            http,
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.qualys.base_url())
    }

    async fn get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET")
    }

    async fn get_query(&self, path: &str, query: &[(&str, &str)]) -> Response {
        self.http
            .get(self.url(path))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET")
    }

    async fn post(&self, path: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// `GET /registry?filter=registryUri:"<uri>"&pageNumber=1&pageSize=50`.
    async fn find_registry(&self, uri: &str) -> Response {
        let filter = format!("registryUri:\"{uri}\"");
        self.get_query(
            "/csapi/v1.3/registry",
            &[("filter", &filter), ("pageNumber", "1"), ("pageSize", "50")],
        )
        .await
    }

    async fn create_registry(&self) -> Response {
        self.post("/csapi/v1.3/registry", &registry_body(ACCOUNT, "us-east-1"))
            .await
    }

    async fn images_of(&self, repo: &str) -> Value {
        let filter = format!("repo.repository:\"{repo}\"");
        let resp = self
            .get_query(
                "/csapi/v1.3/images",
                &[("filter", &filter), ("pageSize", "50"), ("pageNumber", "1")],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }
}

async fn login(
    http: &Client,
    qualys: &RunningEmulator,
    username: &str,
    password: &str,
) -> Response {
    http.post(format!("{}/auth", qualys.base_url()))
        .form(&[
            ("username", username),
            ("password", password),
            ("token", "true"),
        ])
        .send()
        .await
        .expect("POST /auth")
}

fn registry_body(account: &str, region: &str) -> Value {
    json!({
        "aws": {
            "accountId": account,
            "arn": format!("arn:aws:iam::{account}:role/qualys-fargate-scan-role"),
            "region": region,
            "accountType": "Global"
        },
        "credentialType": "AWS",
        "registryType": "AWS",
        "registryUri": format!("https://{account}.dkr.ecr.{region}.amazonaws.com"),
        "registryName": format!("ecr-{account}-{region}")
    })
}

fn schedule_body(repo: &str, tag: &str) -> Value {
    json!({
        "filters": [{"repoTags": [{"repo": repo, "tag": tag}], "days": null}],
        "name": format!("ECR-{repo}-20260702141822"),
        "onDemand": true,
        "schedule": "00:00",
        "forceScan": true,
        "registryType": "AWS"
    })
}

/// Polls `check` every 50 ms until it returns `Some`; panics after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn assert_error_body(body: &Value, code: &str) {
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(
        body["timestamp"].as_u64().unwrap() > 1_600_000_000_000,
        "{body}"
    );
}

#[tokio::test]
async fn auth_answers_201_with_a_jwt_and_401_for_bad_credentials() {
    let cfg = EmulatorConfig {
        password: "p@ss w&rd+=%".into(),
        ..Default::default()
    };
    let env = Env::start(cfg.clone()).await;
    let parts: Vec<&str> = env.token.split('.').collect();
    assert_eq!(parts.len(), 3, "{}", env.token);
    assert_eq!(parts[0], "eyJhbGciOiJIUzUxMiJ9");

    let resp = login(&env.http, &env.qualys, &cfg.username, &cfg.password).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(
        header(&resp, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );

    let resp = login(&env.http, &env.qualys, &cfg.username, "wrong").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.text().await.unwrap(), "Unauthorized user");
    let resp = login(&env.http, &env.qualys, "someone-else", &cfg.password).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = env
        .http
        .post(env.url("/auth"))
        .form(&[("username", "qflows-dev")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let stats = env.qualys.stats();
    assert_eq!(stats.auth_failures, 2);
    assert_eq!(stats.calls.get("POST /auth"), Some(&5));
}

#[tokio::test]
async fn every_other_endpoint_needs_a_valid_bearer_token() {
    let cfg = EmulatorConfig {
        api_tokens: vec!["pre-issued".into()],
        ..Default::default()
    };
    let env = Env::start(cfg).await;
    let url = env.url("/csapi/v1.3/registry/aws-base");

    let resp = env.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_error_body(&body, "401 UNAUTHORIZED");
    assert_eq!(body["message"], "Unauthorized user");

    let resp = env
        .http
        .get(&url)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = env
        .http
        .get(&url)
        .bearer_auth("pre-issued")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = env.get("/csapi/v1.3/registry/aws-base").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let base: Value = resp.json().await.unwrap();
    assert_eq!(base["accountId"].as_str().unwrap().len(), 12);
    assert!(
        base["externalId"].is_i64(),
        "externalId is an int64: {base}"
    );

    let cdr = env
        .http
        .get(env.url("/cdr-api/rest/v1/findings/"))
        .send()
        .await
        .unwrap();
    assert_eq!(cdr.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(env.qualys.stats().rejected_tokens, 3);
}

#[tokio::test]
async fn issued_tokens_expire() {
    let cfg = EmulatorConfig {
        token_ttl_secs: 1,
        ..Default::default()
    };
    let env = Env::start(cfg).await;
    assert_eq!(
        env.get("/csapi/v1.3/sensors").await.status(),
        StatusCode::OK
    );
    eventually("the token to expire", Duration::from_secs(5), || async {
        (env.get("/csapi/v1.3/sensors").await.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
}

#[tokio::test]
async fn registry_search_is_204_until_created_with_each_answer_shape() {
    for shape in [
        RegistryCreateResponse::Object,
        RegistryCreateResponse::BareString,
        RegistryCreateResponse::Empty,
    ] {
        let env = Env::start(EmulatorConfig {
            registry_create_response: shape,
            ..Default::default()
        })
        .await;
        let resp = env.find_registry(URI).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{shape:?}");
        assert!(resp.bytes().await.unwrap().is_empty());

        let resp = env.create_registry().await;
        assert_eq!(resp.status(), StatusCode::OK);
        let text = resp.text().await.unwrap();
        let uuid_from_answer = match shape {
            RegistryCreateResponse::Object => Some(
                serde_json::from_str::<Value>(&text).unwrap()["registryUuid"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            RegistryCreateResponse::BareString => {
                Some(serde_json::from_str::<String>(&text).unwrap())
            }
            RegistryCreateResponse::Empty => {
                assert!(text.is_empty());
                None
            }
        };

        let resp = env.find_registry(URI).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let page: Value = resp.json().await.unwrap();
        assert_eq!(page["count"], 1);
        let registry = &page["data"][0];
        let uuid = registry["registryUuid"].as_str().unwrap().to_string();
        assert_eq!(uuid.len(), 36);
        if let Some(u) = uuid_from_answer {
            assert_eq!(u, uuid);
        }
        assert_eq!(registry["registryUri"], URI);
        assert_eq!(registry["registryName"], "ecr-111122223333-us-east-1");
        assert_eq!(registry["awsAccountId"], ACCOUNT);
        assert_eq!(registry["awsRegion"], "us-east-1");
        assert_eq!(registry["registryType"], "AWS");

        // A trailing slash does not matter; another URI does not match.
        assert_eq!(
            env.find_registry(&format!("{URI}/")).await.status(),
            StatusCode::OK
        );
        let other = "https://111122223333.dkr.ecr.us-west-2.amazonaws.com";
        assert_eq!(
            env.find_registry(other).await.status(),
            StatusCode::NO_CONTENT
        );
        let by_name = env
            .get_query(
                "/csapi/v1.3/registry",
                &[("filter", "registryName:\"ecr-111122223333-us-east-1\"")],
            )
            .await;
        assert_eq!(by_name.status(), StatusCode::OK);

        let details: Value = env
            .get(&format!("/csapi/v1.3/registry/{uuid}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(details["registryUuid"], json!(uuid));
        let missing = env
            .get("/csapi/v1.3/registry/00000000-0000-4000-8000-000000000000")
            .await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_error_body(&missing.json().await.unwrap(), "404 NOT_FOUND");

        // By default a second create is refused as Qualys refused it, and nothing is made.
        let again = env.create_registry().await;
        assert_eq!(again.status(), StatusCode::BAD_REQUEST);
        let body: Value = again.json().await.unwrap();
        assert_error_body(&body, "400 BAD_REQUEST");
        assert_eq!(body["message"], "Registry already exists");
        let stats = env.qualys.stats();
        assert_eq!((stats.registries_created, stats.duplicates_refused), (1, 1));
        assert_eq!(env.qualys.registries().len(), 1);
    }
}

#[tokio::test]
async fn duplicate_registries_can_be_allowed_and_listing_can_lag() {
    // Duplicates allowed: a second create makes a second registry.
    let env = Env::start(EmulatorConfig {
        duplicate_registries: Duplicates::Allow,
        ..Default::default()
    })
    .await;
    assert_eq!(env.create_registry().await.status(), StatusCode::OK);
    assert_eq!(env.create_registry().await.status(), StatusCode::OK);
    let page: Value = env.find_registry(URI).await.json().await.unwrap();
    assert_eq!(page["count"], 2);
    assert_eq!(env.qualys.stats().registries_created, 2);

    // A lagging list: the new registry is not listed yet, but a create already sees it.
    let env = Env::start(EmulatorConfig {
        registry_list_lag_ms: 1500,
        ..Default::default()
    })
    .await;
    assert_eq!(env.create_registry().await.status(), StatusCode::OK);
    assert_eq!(
        env.find_registry(URI).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        env.create_registry().await.status(),
        StatusCode::BAD_REQUEST,
        "Qualys knows it before it lists it"
    );
    eventually(
        "the registry to be listed",
        Duration::from_secs(10),
        || async { (env.find_registry(URI).await.status() == StatusCode::OK).then_some(()) },
    )
    .await;
    assert_eq!(env.qualys.stats().registries_created, 1);
}

#[tokio::test]
async fn registry_requests_are_validated() {
    let env = Env::start(EmulatorConfig::default()).await;
    let mut bad_uri = registry_body(ACCOUNT, "us-east-1");
    bad_uri["registryUri"] = json!("https://999999999999.dkr.ecr.us-east-1.amazonaws.com");
    let mut bad_arn = registry_body(ACCOUNT, "us-east-1");
    bad_arn["aws"]["arn"] = json!("arn:aws:iam::1111:role/x");
    let mut bad_account = registry_body(ACCOUNT, "us-east-1");
    bad_account["aws"]["accountId"] = json!("12345");
    let mut no_aws = registry_body(ACCOUNT, "us-east-1");
    no_aws.as_object_mut().unwrap().remove("aws");
    for body in [bad_uri, bad_arn, bad_account, no_aws, json!({}), json!([1])] {
        let resp = env.post("/csapi/v1.3/registry", &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_error_body(&resp.json().await.unwrap(), "400 BAD_REQUEST");
    }
    let resp = env
        .get_query("/csapi/v1.3/registry", &[("pageNumber", "0")])
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(env.qualys.stats().registries_created, 0);
    let valid = env
        .post(
            "/csapi/v1.3/registry/validate",
            &registry_body(ACCOUNT, "us-east-1"),
        )
        .await;
    assert_eq!(valid.json::<Value>().await.unwrap(), json!(true));
}

#[tokio::test]
async fn connectors_check_the_arn_and_external_id() {
    let env = Env::start(EmulatorConfig::default()).await;
    let base: Value = env
        .get("/csapi/v1.3/registry/aws-base")
        .await
        .json()
        .await
        .unwrap();
    let external = base["externalId"].to_string();
    let body = |arn: &str, external: &str| json!({"arn": arn, "description": "Auto-created connector", "externalId": external, "name": "ecr-connector-1", "accountType": "Global"});
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/qualys-fargate-scan-role");
    assert_eq!(
        env.post("/csapi/v1.3/registry/aws/connector", &body(&arn, "42"))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        env.post(
            "/csapi/v1.3/registry/aws/connector",
            &body("arn:aws:iam::x:role/r", &external)
        )
        .await
        .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        env.post("/csapi/v1.3/registry/aws/connector", &body(&arn, &external))
            .await
            .status(),
        StatusCode::OK
    );

    let all: Value = env
        .get("/csapi/v1.3/registry/aws/connectors")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        all,
        json!([{"name": "ecr-connector-1", "arn": arn, "description": "Auto-created connector"}])
    );
    let mine: Value = env
        .get(&format!("/csapi/v1.3/registry/aws/connectors/{ACCOUNT}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let others: Value = env
        .get("/csapi/v1.3/registry/aws/connectors/999999999999")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(others, json!([]));
    assert_eq!(env.qualys.stats().connectors_created, 1);

    // By default another connector for the account is made (Qualys made three for one
    // account); refusing duplicates answers 400 "already exists" instead.
    assert_eq!(
        env.post("/csapi/v1.3/registry/aws/connector", &body(&arn, &external))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(env.qualys.connectors().len(), 2);
    let strict = Env::start(EmulatorConfig {
        duplicate_connectors: Duplicates::Reject,
        ..Default::default()
    })
    .await;
    let same = body(&arn, &external);
    let create = || strict.post("/csapi/v1.3/registry/aws/connector", &same);
    assert_eq!(create().await.status(), StatusCode::OK);
    let refused = create().await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let message = refused.json::<Value>().await.unwrap()["message"].clone();
    assert!(
        message.as_str().unwrap().contains("already exists"),
        "{message}"
    );
    let other_role = format!("arn:aws:iam::{ACCOUNT}:role/another");
    assert_eq!(
        strict
            .post(
                "/csapi/v1.3/registry/aws/connector",
                &body(&other_role, &external)
            )
            .await
            .status(),
        StatusCode::BAD_REQUEST,
        "one connector per account"
    );
    let stats = strict.qualys.stats();
    assert_eq!((stats.connectors_created, stats.duplicates_refused), (1, 2));
}

#[tokio::test]
async fn a_scheduled_image_is_unknown_then_pending_then_scanned() {
    let cfg = EmulatorConfig {
        scan_delay_ms: 600,
        ..Default::default()
    };
    let env = Env::start(cfg).await;
    let created: Value = env.create_registry().await.json().await.unwrap();
    let registry = created["registryUuid"].as_str().unwrap().to_string();
    let schedule_path = format!("/csapi/v1.3/registry/{registry}/schedule");

    let unknown = env
        .post(
            "/csapi/v1.3/registry/nope/schedule",
            &schedule_body("my-app", "v1.2.3"),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Qualys scans what the registry holds under the tag: first nothing, then a push.
    let missing = env
        .post(&schedule_path, &schedule_body("my-app", "v1.2.3"))
        .await;
    assert_eq!(missing.status(), StatusCode::OK);
    assert_eq!(env.qualys.stats().scans_of_missing_tags, 1);
    assert_eq!(env.images_of("my-app").await["count"], 0);
    let digest = "9f1c2b7e0d4a5f6c8b3e2d1a0f9e8d7c6b5a49382716f5e4d3c2b1a09f8e7d6c";
    env.qualys.push_image(PushedImage {
        registry: HOST.into(),
        repository: "my-app".into(),
        tag: "v1.2.3".into(),
        digest: format!("sha256:{digest}"),
        vulnerabilities: Vec::new(),
    });

    let started = Instant::now();
    let resp = env
        .post(&schedule_path, &schedule_body("my-app", "v1.2.3"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let schedule: Value = resp.json().await.unwrap();
    assert_eq!(
        schedule.as_str().unwrap().len(),
        36,
        "a bare JSON string: {schedule}"
    );

    // Not known right after the schedule.
    let listed = env.images_of("my-app").await;
    if started.elapsed() < Duration::from_millis(250) {
        assert_eq!(listed, json!({"data": [], "count": 0}));
    }

    let image = eventually(
        "the image to be listed",
        Duration::from_secs(10),
        || async {
            let page = env.images_of("my-app").await;
            (page["count"] == 1).then(|| page["data"][0].clone())
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "known after half the scan delay"
    );
    let sha = image["sha"].as_str().unwrap().to_string();
    assert_eq!(sha.len(), 64);
    assert_eq!(
        image["repo"],
        json!([{"registry": HOST, "tag": "v1.2.3", "repository": "my-app"}])
    );
    assert_eq!(
        image["repoDigests"],
        json!([{"registry": HOST, "digest": digest, "repository": "my-app"}]),
        "the manifest digest, without sha256: as in the official sample"
    );
    assert_ne!(sha, digest, "the image ID is not the manifest digest");
    assert!(
        image["created"].as_str().unwrap().parse::<u64>().is_ok(),
        "created is epoch ms as a string"
    );
    assert_eq!(image["registryUuid"], json!(registry));

    let details = eventually("the scan to finish", Duration::from_secs(10), || async {
        let resp = env.get(&format!("/csapi/v1.3/images/{sha}")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let d: Value = resp.json().await.unwrap();
        if d["scanStatus"] != "SUCCESS" {
            assert_eq!(d["scanStatus"], "PENDING");
            let early = env.get(&format!("/csapi/v1.3/images/{sha}/vuln")).await;
            assert_eq!(
                early.status(),
                StatusCode::NOT_FOUND,
                "no vulnerabilities before SUCCESS"
            );
        }
        (d["scanStatus"] == "SUCCESS").then_some(d)
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(details["sha"], json!(sha));
    assert!(details["layers"].is_array());

    let vulns: Value = env
        .get(&format!("/csapi/v1.3/images/{sha}/vuln"))
        .await
        .json()
        .await
        .unwrap();
    let details_list = vulns["details"]
        .as_array()
        .expect("official {details:[…]} shape");
    assert!(!details_list.is_empty());
    for v in details_list {
        for key in [
            "severity",
            "customerSeverity",
            "typeDetected",
            "risk",
            "category",
            "discoveryType",
            "firstFound",
            "lastFound",
            "result",
            "qid",
            "title",
            "cveids",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert!(
            v["result"]
                .as_str()
                .unwrap()
                .starts_with("#table cols=\"3\"")
        );
    }
    let counts: Value = env
        .get(&format!("/csapi/v1.3/images/{sha}/vuln/count"))
        .await
        .json()
        .await
        .unwrap();
    let total: u64 = (1..=5)
        .map(|i| counts[format!("severity{i}Count")].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, details_list.len());
    assert_eq!(details["vulnerabilities"], counts);

    // The same image by sha filter; a schedule list; bad and unknown SHAs.
    let by_sha = env
        .get_query("/csapi/v1.3/images", &[("filter", &format!("sha:{sha}"))])
        .await;
    assert_eq!(by_sha.json::<Value>().await.unwrap()["count"], 1);
    let schedules: Value = env.get(&schedule_path).await.json().await.unwrap();
    assert_eq!(schedules["data"][1]["scheduleUuid"], schedule);
    assert_eq!(schedules["data"][1]["status"], "SUCCESS");
    let bad = env.get("/csapi/v1.3/images/my-app:v1.2.3").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["message"],
        "Invalid Image SHA provided"
    );
    let missing = env
        .get(&format!("/csapi/v1.3/images/{}", "0".repeat(64)))
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_error_body(&missing.json().await.unwrap(), "404 NOT_FOUND");
    assert_eq!(env.qualys.stats().schedules_created, 2);
    assert_eq!(env.qualys.stats().image_scans, 1);

    // The registry counts its image now.
    let page: Value = env.find_registry(URI).await.json().await.unwrap();
    assert_eq!(page["data"][0]["totalImages"], 1);
    assert_eq!(page["data"][0]["totalScannedImages"], 1);
}

#[tokio::test]
async fn seeded_images_keep_their_sha_and_vulnerabilities_in_both_shapes() {
    let sha = "4f67c83422ec747235357c04556616234e66fc3fa39cb4f40b2d4441ddd8f100";
    let vuln = json!({"qid": 379952, "title": "OpenSSL Multiple Vulnerabilities", "severity": 5, "cveids": ["CVE-2024-5535"]});
    for shape in [VulnShape::Details, VulnShape::Data] {
        let cfg = EmulatorConfig {
            scan_delay_ms: 0,
            vuln_shape: shape,
            ..Default::default()
        };
        let env = Env::start(cfg).await;
        env.qualys.seed_image(SeedImage {
            registry: HOST.into(),
            repository: "payments-api".into(),
            tag: Some("v1.4.2".into()),
            sha: sha.into(),
            digest: None,
            vulnerabilities: vec![vuln.clone()],
            scanned: false,
        });
        assert_eq!(
            env.get(&format!("/csapi/v1.3/images/{sha}")).await.status(),
            StatusCode::NOT_FOUND
        );
        let registry: Value = env.create_registry().await.json().await.unwrap();
        let path = format!(
            "/csapi/v1.3/registry/{}/schedule",
            registry["registryUuid"].as_str().unwrap()
        );
        assert_eq!(
            env.post(&path, &schedule_body("payments-api", "v1.4.2"))
                .await
                .status(),
            StatusCode::OK
        );
        let resp = env.get(&format!("/csapi/v1.3/images/{sha}/vuln")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        match shape {
            VulnShape::Details => assert_eq!(body, json!({"details": [vuln]})),
            VulnShape::Data => assert_eq!(body, json!({"data": [vuln], "count": 1})),
        }
        let counts: Value = env
            .get(&format!("/csapi/v1.3/images/{sha}/vuln/count"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(counts["severity5Count"], 1);
    }
}

#[tokio::test]
async fn a_moved_tag_and_a_forced_rescan_answer_as_qualys_does() {
    let env = Env::start(EmulatorConfig {
        scan_delay_ms: 400,
        ..Default::default()
    })
    .await;
    let registry: Value = env.create_registry().await.json().await.unwrap();
    let path = format!(
        "/csapi/v1.3/registry/{}/schedule",
        registry["registryUuid"].as_str().unwrap()
    );
    let (d1, d2) = ("1".repeat(64), "2".repeat(64));
    let push = |digest: &str, severities: &[u8]| PushedImage {
        registry: HOST.into(),
        repository: "app".into(),
        tag: "latest".into(),
        digest: format!("sha256:{digest}"),
        vulnerabilities: severities.iter().map(|s| json!({"severity": s})).collect(),
    };
    let list = |sort: Option<&'static str>| {
        let env = &env;
        async move {
            let mut q = vec![("filter", "repo.repository:\"app\" and repo.tag:\"latest\"")];
            if let Some(sort) = sort {
                q.push(("sort", sort));
            }
            env.get_query("/csapi/v1.3/images", &q)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let details = |digest: String| {
        let env = &env;
        async move {
            let page = list(None).await;
            let sha = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["repoDigests"][0]["digest"] == json!(digest))
                .map(|i| i["sha"].as_str().unwrap().to_string())?;
            let d: Value = env
                .get(&format!("/csapi/v1.3/images/{sha}"))
                .await
                .json()
                .await
                .unwrap();
            Some(d)
        }
    };

    env.qualys.push_image(push(&d1, &[1]));
    env.post(&path, &schedule_body("app", "latest")).await;
    eventually("d1 scanned", Duration::from_secs(10), || async {
        details(d1.clone())
            .await
            .filter(|d| d["scanStatus"] == "SUCCESS")
    })
    .await;
    // The tag moves: a scan of it now pulls d2. The old record still lists the tag.
    env.qualys.push_image(push(&d2, &[5]));
    env.post(&path, &schedule_body("app", "latest")).await;
    let d2_scanned = eventually("d2 scanned", Duration::from_secs(10), || async {
        details(d2.clone())
            .await
            .filter(|d| d["scanStatus"] == "SUCCESS")
    })
    .await;
    assert_eq!(d2_scanned["vulnerabilities"]["severity5Count"], 1);
    let newest_first = list(Some("created:desc")).await;
    assert_eq!(newest_first["count"], 2, "both records list the tag");
    assert_eq!(
        newest_first["data"][0]["repoDigests"][0]["digest"],
        json!(d2)
    );
    let unsorted = list(None).await;
    assert_eq!(
        unsorted["data"][0]["repoDigests"][0]["digest"],
        json!(d1),
        "oldest first without a sort"
    );

    // The knowledge base learns more about d2; a forced rescan finds it, and until the rescan
    // completes Qualys shows the previous scan.
    env.qualys.push_image(push(&d2, &[5, 4]));
    env.post(&path, &schedule_body("app", "latest")).await;
    let during = details(d2.clone()).await.unwrap();
    assert_eq!(during["scanStatus"], "SUCCESS");
    assert_eq!(during["lastScanned"], d2_scanned["lastScanned"]);
    let after = eventually("the rescan", Duration::from_secs(10), || async {
        details(d2.clone())
            .await
            .filter(|d| d["lastScanned"] != d2_scanned["lastScanned"])
    })
    .await;
    assert_eq!(after["vulnerabilities"]["severity4Count"], 1);
    let stats = env.qualys.stats();
    assert_eq!(
        (stats.image_scans, stats.image_rescans),
        (2, 1),
        "{stats:?}"
    );
}

#[tokio::test]
async fn the_sixth_request_in_the_window_is_throttled() {
    let cfg = EmulatorConfig {
        rate_limits: vec![RateLimitRule::new("registry", 5, 2)],
        ..Default::default()
    };
    let env = Env::start(cfg).await;
    for i in 0..5u32 {
        let resp = env.get("/csapi/v1.3/registry/aws-base").await;
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        assert_eq!(header(&resp, "x-ratelimit-limit"), Some("5"));
        assert_eq!(header(&resp, "x-ratelimit-window-sec"), Some("2"));
        assert_eq!(
            header(&resp, "x-ratelimit-remaining"),
            Some((4 - i).to_string().as_str())
        );
    }
    let resp = env.find_registry(URI).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "x-ratelimit-limit"), Some("5"));
    assert_eq!(header(&resp, "x-ratelimit-window-sec"), Some("2"));
    assert_eq!(header(&resp, "x-ratelimit-remaining"), Some("0"));
    let wait: u64 = header(&resp, "x-ratelimit-towait-sec")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        header(&resp, "retry-after"),
        Some(wait.to_string().as_str())
    );
    assert_error_body(&resp.json().await.unwrap(), "429 TOO_MANY_REQUESTS");

    // Other families are not limited (no rule), /auth never is.
    assert_eq!(
        env.get("/csapi/v1.3/sensors").await.status(),
        StatusCode::OK
    );
    let stats = env.qualys.stats();
    assert_eq!(stats.rate_limit_violations.get("registry"), Some(&1));
    assert_eq!(stats.rate_limit_violations.len(), 1);
    assert!(stats.injected_faults.is_empty());

    // After the advertised wait the window has room again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        env.get("/csapi/v1.3/registry/aws-base").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        env.qualys.stats().rate_limit_violations.get("registry"),
        Some(&1)
    );
}

#[tokio::test]
async fn injected_5xx_hits_every_csapi_call_but_not_auth() {
    let env = Env::start(EmulatorConfig::default()).await;
    env.qualys.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Default::default()
    });
    for path in [
        "/csapi/v1.3/registry/aws-base",
        "/csapi/v1.3/images",
        "/csapi/v1.3/sensors",
        "/csapi/v1.3/registry",
    ] {
        let resp = env.get(path).await;
        let status = resp.status().as_u16();
        assert!([500, 502, 503].contains(&status), "{path}: {status}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["errorCode"]
                .as_str()
                .unwrap()
                .starts_with(&status.to_string()),
            "{body}"
        );
    }
    let login = login(&env.http, &env.qualys, "qflows-dev", "qflows-dev-password").await;
    assert_eq!(login.status(), StatusCode::CREATED);
    let stats = env.qualys.stats();
    assert_eq!(stats.injected_faults.get("5xx"), Some(&4));
    assert_eq!(stats.registries_created, 0);
}

#[tokio::test]
async fn injected_429s_carry_wait_headers_and_are_not_violations() {
    let env = Env::start(EmulatorConfig::default()).await;
    env.qualys.set_faults(Faults {
        throttle_429_rate: 1.0,
        ..Default::default()
    });
    let (mut with_retry_after, mut without) = (0, 0);
    for _ in 0..40 {
        let resp = env.get("/csapi/v1.3/registry/aws-base").await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&resp, "x-ratelimit-towait-sec"), Some("1"));
        assert_eq!(header(&resp, "x-ratelimit-remaining"), Some("0"));
        assert_eq!(header(&resp, "x-ratelimit-limit"), Some("1000"));
        match header(&resp, "retry-after") {
            Some(v) => {
                assert_eq!(v, "1");
                with_retry_after += 1;
            }
            None => without += 1,
        }
    }
    assert!(
        with_retry_after > 0 && without > 0,
        "{with_retry_after}/{without}"
    );
    let stats = env.qualys.stats();
    assert_eq!(stats.injected_faults.get("429"), Some(&40));
    assert!(stats.rate_limit_violations.is_empty());
}

#[tokio::test]
async fn dropped_connections_are_transport_errors() {
    let env = Env::start(EmulatorConfig::default()).await;
    env.qualys.set_faults(Faults {
        drop_rate: 1.0,
        paths: Some(vec!["/csapi/".into()]),
        ..Default::default()
    });
    for _ in 0..6 {
        let result = async {
            let resp = env
                .http
                .get(env.url("/csapi/v1.3/registry/aws-base"))
                .bearer_auth(&env.token)
                .send()
                .await?;
            resp.bytes().await
        }
        .await;
        let err = result.expect_err("the connection was dropped");
        assert!(!err.is_status(), "{err:?}");
    }
    assert_eq!(env.qualys.stats().injected_faults.get("drop"), Some(&6));
    // Paths outside the prefixes are untouched.
    let resp = env
        .http
        .get(env.url("/cdr-api/rest/v1/findings/"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_bodies_and_latency() {
    let env = Env::start(EmulatorConfig::default()).await;
    env.qualys.set_faults(Faults {
        malformed_rate: 1.0,
        ..Default::default()
    });
    let resp = env.get("/csapi/v1.3/registry/aws-base").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.unwrap();
    assert!(
        serde_json::from_slice::<Value>(&bytes).is_err(),
        "{bytes:?}"
    );

    env.qualys.set_faults(Faults {
        latency_ms: 300,
        latency_rate: 1.0,
        ..Default::default()
    });
    let started = Instant::now();
    let resp = env.get("/csapi/v1.3/registry/aws-base").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = env.qualys.stats();
    assert_eq!(stats.injected_faults.get("malformed"), Some(&1));
    assert_eq!(stats.injected_faults.get("latency"), Some(&1));
}

#[tokio::test]
async fn max_in_flight_counts_concurrent_requests() {
    let env = Env::start(EmulatorConfig::default()).await;
    env.qualys.set_faults(Faults {
        latency_ms: 500,
        latency_rate: 1.0,
        ..Default::default()
    });
    let calls = (0..6).map(|_| env.get("/csapi/v1.3/sensors"));
    for resp in futures_util::future::join_all(calls).await {
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let max = env.qualys.stats().max_in_flight;
    assert!((4..=6).contains(&max), "{max}");
}

fn finding(i: usize, timestamp: &str) -> Value {
    json!({
        "uuid": format!("f-{i:02}"),
        "threatCategory": if i.is_multiple_of(2) { "Cloud_Credentials_Accessed_By_Network_Utility" } else { "Network_Scanning_Utility" },
        "severity": 1 + i % 4,
        "timestamp": timestamp,
        "resourceType": "container",
        "mitreRulesInfo": {"T1046": {}}
    })
}

#[tokio::test]
async fn cdr_findings_page_by_offset_within_the_time_window() {
    let env = Env::start(EmulatorConfig::default()).await;
    // 25 findings, one per hour from 2026-01-10T00:30Z.
    let findings: Vec<Value> = (0..25)
        .map(|i| finding(i, &format!("2026-01-10T{:02}:30:00.000Z", i % 24)))
        .collect();
    let mut findings = findings;
    findings[24]["timestamp"] = json!("2026-01-11T00:30:00.000Z");
    env.qualys.set_cdr_findings(findings);

    // 05:00 to 24:59 holds hours 05..=23 plus the next day's 00:30: 20 findings.
    let env = &env;
    let page = |offset: &'static str, limit: &'static str| async move {
        let q = [
            ("startAt", "2026-01-10T05:00:00.000Z"),
            ("endAt", "2026-01-11T00:59:59.999Z"),
            ("offSet", offset),
            ("limit", limit),
        ];
        let resp = env.get_query("/cdr-api/rest/v1/findings/", &q).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json::<Value>().await.unwrap()
    };
    let mut seen = Vec::new();
    for (offset, expected, number) in [("0", 7, 0), ("7", 7, 1), ("14", 6, 2), ("21", 0, 3)] {
        let p = page(offset, "7").await;
        assert_eq!(p["totalElements"], 20);
        assert_eq!(p["size"], 7);
        assert_eq!(p["number"], number);
        let content = p["content"].as_array().unwrap();
        assert_eq!(content.len(), expected, "offSet {offset}");
        seen.extend(
            content
                .iter()
                .map(|f| f["uuid"].as_str().unwrap().to_string()),
        );
    }
    let expected: Vec<String> = (5..25).map(|i| format!("f-{i:02}")).collect();
    assert_eq!(seen, expected);

    // Defaults, the path without a trailing slash, severity, and mandatory times.
    let all: Value = env
        .get_query(
            "/cdr-api/rest/v1/findings",
            &[
                ("startAt", "2026-01-01T00:00:00Z"),
                ("endAt", "2026-02-01T00:00:00Z"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["totalElements"], 25);
    assert_eq!(all["size"], 100);
    let critical: Value = env
        .get_query(
            "/cdr-api/rest/v1/findings/",
            &[
                ("startAt", "2026-01-01T00:00:00Z"),
                ("endAt", "2026-02-01T00:00:00Z"),
                ("severity", "CRITICAL"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        critical["totalElements"], 6,
        "severity 4 = CRITICAL: i = 3, 7, …, 23"
    );
    for q in [
        vec![("endAt", "2026-02-01T00:00:00Z")],
        vec![("startAt", "yesterday"), ("endAt", "2026-02-01T00:00:00Z")],
        vec![
            ("startAt", "2026-01-01T00:00:00Z"),
            ("endAt", "2026-02-01T00:00:00Z"),
            ("severity", "5"),
        ],
        vec![
            ("startAt", "2026-01-01T00:00:00Z"),
            ("endAt", "2026-02-01T00:00:00Z"),
            ("limit", "1001"),
        ],
    ] {
        let resp = env.get_query("/cdr-api/rest/v1/findings/", &q).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{q:?}");
        assert_error_body(&resp.json().await.unwrap(), "400 BAD_REQUEST");
    }
}

#[tokio::test]
async fn stats_count_calls_by_route_template() {
    let env = Env::start(EmulatorConfig {
        scan_delay_ms: 0,
        ..Default::default()
    })
    .await;
    let registry: Value = env.create_registry().await.json().await.unwrap();
    let id = registry["registryUuid"].as_str().unwrap();
    env.post(
        &format!("/csapi/v1.3/registry/{id}/schedule"),
        &schedule_body("app", "1"),
    )
    .await;
    env.get(&format!("/csapi/v1.3/registry/{id}")).await;
    env.get(&format!("/csapi/v1.3/images/{}", "a".repeat(64)))
        .await;
    env.get(&format!("/csapi/v1.3/images/{}", "b".repeat(64)))
        .await;
    env.get(&format!("/csapi/v1.3/images/{}/vuln", "b".repeat(64)))
        .await;
    env.get("/csapi/v1.2/sensors").await;
    env.get("/nowhere").await;
    env.http
        .get(env.url("/__emulator/health"))
        .send()
        .await
        .unwrap();

    let calls = env.qualys.stats().calls;
    let expected: Vec<(&str, u64)> = vec![
        ("GET /csapi/v1.2/sensors", 1),
        ("GET /csapi/v1.3/images/{sha}", 2),
        ("GET /csapi/v1.3/images/{sha}/vuln", 1),
        ("GET /csapi/v1.3/registry/{registryId}", 1),
        ("GET /nowhere", 1),
        ("POST /auth", 1),
        ("POST /csapi/v1.3/registry", 1),
        ("POST /csapi/v1.3/registry/{registryId}/schedule", 1),
    ];
    let got: Vec<(&str, u64)> = calls.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(got, expected);
    env.qualys.reset_stats();
    assert!(env.qualys.stats().calls.is_empty());
}

#[tokio::test]
async fn the_admin_api_mirrors_the_library() {
    let env = Env::start(EmulatorConfig {
        scan_delay_ms: 0,
        ..Default::default()
    })
    .await;
    let admin = |p: &str| env.url(&format!("/__emulator{p}"));
    let health: Value = env
        .http
        .get(admin("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    let resp = env
        .http
        .put(admin("/faults"))
        .json(&json!({"error_5xx_rate": 1.0, "paths": ["/csapi/v1.3/images"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        env.get("/csapi/v1.3/images")
            .await
            .status()
            .is_server_error()
    );
    let resp = env
        .http
        .put(admin("/faults"))
        .json(&json!({"unknown": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    env.http
        .put(admin("/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();

    let resp = env
        .http
        .put(admin("/rate-limits"))
        .json(&json!([{"family": "images", "limit": 1, "window_secs": 60}]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(env.get("/csapi/v1.3/images").await.status(), StatusCode::OK);
    assert_eq!(
        env.get("/csapi/v1.3/images").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    env.http
        .put(admin("/rate-limits"))
        .json(&json!([]))
        .send()
        .await
        .unwrap();

    let seeded: Value = env
        .http
        .post(admin("/images"))
        .json(&json!({"registry": HOST, "repository": "web", "tag": "2.3.1", "scanned": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sha = seeded["sha"].as_str().unwrap();
    let image: Value = env
        .get(&format!("/csapi/v1.3/images/{sha}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(image["scanStatus"], "SUCCESS");

    let cdr = json!({"content": [finding(1, "2026-01-10T10:00:00Z")], "totalElements": 1});
    assert_eq!(
        env.http
            .put(admin("/cdr-findings"))
            .json(&cdr)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    let page: Value = env
        .get_query(
            "/cdr-api/rest/v1/findings/",
            &[
                ("startAt", "2026-01-10T00:00:00Z"),
                ("endAt", "2026-01-11T00:00:00Z"),
            ],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["totalElements"], 1);

    let sensor: Value = env
        .http
        .post(admin("/sensors"))
        .json(&json!({"hostname": "registry-sensor-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sensor["registrySensor"], true);
    let sensors: Value = env.get("/csapi/v1.3/sensors").await.json().await.unwrap();
    assert_eq!(sensors["count"], 1);
    assert_eq!(sensors["data"][0]["hostname"], "registry-sensor-1");

    env.create_registry().await;
    let registries: Value = env
        .http
        .get(admin("/registries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(registries.as_array().unwrap().len(), 1);
    assert_eq!(registries[0]["registryUri"], URI);

    let stats: Value = env
        .http
        .get(admin("/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["registries_created"], 1);
    assert_eq!(stats["injected_faults"]["5xx"], 1);
    assert_eq!(stats["rate_limit_violations"]["images"], 1);
    assert!(
        stats["calls"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.contains("__emulator"))
    );
    assert_eq!(
        env.http
            .post(admin("/reset-stats"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(env.qualys.stats(), Default::default());
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let env = Env::start(EmulatorConfig::default()).await;
    let url = env.url("/__emulator/health");
    assert!(env.http.get(&url).send().await.is_ok());
    env.qualys.clone().shutdown().await;
    let fresh = Client::new();
    assert!(fresh.get(&url).send().await.is_err());
}
