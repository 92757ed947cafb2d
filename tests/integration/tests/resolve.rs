//! Image resolution against moto: ECS task definitions and services, ECR tags to digests.

use qflows_activities::aws::{Aws, AwsError};
use qflows_activities::resolve::{ResolveError, Resolver, ResolverSettings, resolve_request};
use qflows_integration::Moto;
use qflows_workflows::scan::{Classified, ScanRequest, classify};
use serde_json::json;
use std::sync::Arc;

const ACCOUNT: &str = "123456789012";

async fn resolver(moto: &Moto) -> Resolver {
    let creds = aws_credential_types::Credentials::from_keys("testing", "testing", None);
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(&moto.endpoint)
        .load()
        .await;
    Resolver::new(
        Arc::new(Aws::with_config(config.clone())),
        ResolverSettings::default(),
    )
}

/// Creates repository `web` with tag `1.0` in moto's ECR and returns the digest moto reports.
async fn push_web_image(moto: &Moto) -> anyhow::Result<String> {
    let config = moto.sdk_config().await;
    let ecr = aws_sdk_ecr::Client::new(&config);
    ecr.create_repository()
        .repository_name("web")
        .send()
        .await?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                   "digest": format!("sha256:{}", "a".repeat(64))},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654,
                    "digest": format!("sha256:{}", "b".repeat(64))}]
    });
    ecr.put_image()
        .repository_name("web")
        .image_manifest(manifest.to_string())
        .image_tag("1.0")
        .send()
        .await?;
    // moto's digest is not sha256(manifest): read it back.
    let described = ecr.describe_images().repository_name("web").send().await?;
    Ok(described.image_details()[0]
        .image_digest()
        .unwrap()
        .to_string())
}

async fn register_two_containers(moto: &Moto) -> anyhow::Result<String> {
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    let container = |name: &str, image: &str| {
        aws_sdk_ecs::types::ContainerDefinition::builder()
            .name(name)
            .image(image)
            .memory(128)
            .build()
    };
    let registered = ecs
        .register_task_definition()
        .family("shop")
        .container_definitions(container(
            "web",
            &format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/web:1.0"),
        ))
        .container_definitions(container("proxy", "nginx:1.25"))
        .send()
        .await?;
    Ok(registered
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_string())
}

fn request(event: serde_json::Value) -> ScanRequest {
    match classify(&event).expect("valid event") {
        Classified::Scan(request) => request,
        Classified::Ignored { reason } => panic!("ignored: {reason}"),
    }
}

#[tokio::test]
async fn task_definitions_resolve_to_ecr_digests_and_docker_hub_refs() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let digest = push_web_image(&moto).await?;
    let arn = register_two_containers(&moto).await?;
    let resolver = resolver(&moto).await;

    // RunTask by task-definition ARN: the event names no images, only the task definition.
    let run_task = json!({
        "version": "0", "id": "e1", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ecs",
        "account": ACCOUNT, "region": "us-east-1", "time": "2026-11-22T00:00:00Z", "resources": [],
        "detail": {"eventSource": "ecs.amazonaws.com", "eventName": "RunTask", "awsRegion": "us-east-1",
                   "recipientAccountId": ACCOUNT, "requestParameters": {"taskDefinition": arn, "cluster": "default"},
                   "responseElements": {"tasks": [{"taskDefinitionArn": arn}]}}
    });
    let resolved = resolve_request(&resolver, &request(run_task)).await?;
    assert_eq!(resolved.len(), 2, "{resolved:?}");
    assert_eq!(resolved[0].image.repository, "web");
    assert_eq!(resolved[0].digest.as_deref(), Some(digest.as_str()));
    assert_eq!(
        resolved[1].image.to_string(),
        "docker.io/library/nginx:1.25"
    );
    assert_eq!(
        resolved[1].digest, None,
        "Docker Hub images are not resolved through ECR"
    );
    assert_eq!(resolved[1].skipped, None);
    Ok(())
}

#[tokio::test]
async fn a_register_task_definition_event_with_two_containers_resolves_both() -> anyhow::Result<()>
{
    let moto = Moto::start().await?;
    let digest = push_web_image(&moto).await?;
    let resolver = resolver(&moto).await;
    let event = json!({
        "version": "0", "id": "e2", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ecs",
        "account": ACCOUNT, "region": "us-east-1", "time": "2026-11-22T00:00:00Z", "resources": [],
        "detail": {"eventSource": "ecs.amazonaws.com", "eventName": "RegisterTaskDefinition",
                   "awsRegion": "us-east-1", "recipientAccountId": ACCOUNT,
                   "requestParameters": {"family": "shop", "containerDefinitions": [
                       {"name": "web", "image": format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/web:1.0")},
                       {"name": "proxy", "image": "nginx:1.25"}]},
                   "responseElements": {"taskDefinition": {"taskDefinitionArn":
                       format!("arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/shop:1")}}}
    });
    let resolved = resolve_request(&resolver, &request(event)).await?;
    assert_eq!(resolved.len(), 2);
    assert_eq!(resolved[0].digest.as_deref(), Some(digest.as_str()));
    assert!(resolved[1].digest.is_none());
    Ok(())
}

#[tokio::test]
async fn services_missing_tags_and_unknown_task_definitions() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let digest = push_web_image(&moto).await?;
    let arn = register_two_containers(&moto).await?;
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    ecs.create_cluster().cluster_name("prod").send().await?;
    ecs.create_service()
        .cluster("prod")
        .service_name("shop")
        .task_definition(&arn)
        .desired_count(1)
        .launch_type(aws_sdk_ecs::types::LaunchType::Ec2)
        .send()
        .await?;
    let resolver = resolver(&moto).await;

    // A scale-only UpdateService names only the service.
    let manual_service = ScanRequest {
        service: Some(qflows_workflows::scan::EcsServiceRef {
            cluster: Some("prod".into()),
            service: "shop".into(),
        }),
        ..request(json!({"images": ["nginx"], "account": ACCOUNT, "region": "us-east-1"}))
    };
    let manual_service = ScanRequest {
        images: Vec::new(),
        ..manual_service
    };
    let resolved = resolve_request(&resolver, &manual_service).await?;
    assert_eq!(resolved[0].digest.as_deref(), Some(digest.as_str()));

    let missing_tag = request(
        json!({"images": [format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/web:9.9")],
                                     "account": ACCOUNT, "region": "us-east-1"}),
    );
    let resolved = resolve_request(&resolver, &missing_tag).await?;
    assert_eq!(resolved[0].skipped.as_deref(), Some("tag not found in ECR"));

    let unknown = ScanRequest {
        images: Vec::new(),
        task_definition: Some(format!(
            "arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/nope:7"
        )),
        ..missing_tag
    };
    let err = resolve_request(&resolver, &unknown).await.unwrap_err();
    assert!(
        matches!(err, ResolveError::Aws(AwsError::Invalid { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope:7"), "{err}");

    let (user, password) = resolver.ecr_pull_credentials(ACCOUNT, "us-east-1").await?;
    assert_eq!(user, "AWS");
    assert!(!password.expose().is_empty());
    Ok(())
}

#[tokio::test]
async fn another_accounts_task_definition_is_read_through_the_cross_account_role()
-> anyhow::Result<()> {
    const SPOKE: &str = "210987654321";
    let moto = Moto::start().await?;
    let base = moto.sdk_config().await;
    // Register a task definition in the spoke account (moto keys its state by the caller's account,
    // and assumed-role credentials belong to the role's account).
    let assumed = aws_sdk_sts::Client::new(&base)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{SPOKE}:role/qflows-describe"))
        .role_session_name("test")
        .send()
        .await?;
    let c = assumed.credentials().unwrap();
    let spoke_creds = aws_credential_types::Credentials::from_keys(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
    );
    let spoke = base
        .to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(spoke_creds),
        )
        .build();
    let ecs = aws_sdk_ecs::Client::new(&spoke);
    let container = aws_sdk_ecs::types::ContainerDefinition::builder()
        .name("app")
        .image("redis:7")
        .memory(128)
        .build();
    ecs.register_task_definition()
        .family("spoke-app")
        .container_definitions(container)
        .send()
        .await?;
    let arn = format!("arn:aws:ecs:us-east-1:{SPOKE}:task-definition/spoke-app:1");

    // Without the role, the hub's own credentials do not see it.
    let hub_only = resolver(&moto).await;
    assert!(
        hub_only
            .task_definition_images(SPOKE, "us-east-1", &arn)
            .await
            .is_err()
    );

    let settings = ResolverSettings {
        cross_account_role_name: Some("qflows-describe".into()),
        session_name: "qflows".into(),
        ..Default::default()
    };
    let hub = Resolver::new(Arc::new(Aws::with_config(base)), settings);
    let images = hub.task_definition_images(SPOKE, "us-east-1", &arn).await?;
    assert_eq!(images, vec!["redis:7".to_string()]);
    Ok(())
}
