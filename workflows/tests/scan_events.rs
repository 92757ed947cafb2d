//! `scan::classify` against the recorded event samples in `tests/data/events/` (copied from
//! `shared/research/samples/`), and hand-made variants of them.

mod scan_events {
    use qflows_workflows::scan::{
        Classified, EcsServiceRef, EventSource, ImageRef, RegistryKind, ScanRequest, classify,
    };
    use serde_json::{Value, json};
    use std::path::Path;

    const ACCOUNT: &str = "111122223333";
    const ECR: &str = "111122223333.dkr.ecr.us-east-1.amazonaws.com";

    fn sample(name: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/events")
            .join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn scan(event: &Value) -> ScanRequest {
        match classify(event) {
            Ok(Classified::Scan(request)) => request,
            other => panic!("expected a scan, got {other:?}"),
        }
    }

    fn ignored(event: &Value) -> String {
        match classify(event) {
            Ok(Classified::Ignored { reason }) => reason,
            other => panic!("expected ignored, got {other:?}"),
        }
    }

    fn images(request: &ScanRequest) -> Vec<String> {
        request.images.iter().map(ToString::to_string).collect()
    }

    fn ecr_kind() -> RegistryKind {
        RegistryKind::Ecr {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            fips: false,
            dual_stack: false,
        }
    }

    #[test]
    fn ecr_image_action_push_sample() {
        let request = scan(&sample("ecr-image-action-push.json"));
        assert_eq!(request.source, EventSource::EcrImagePush);
        assert_eq!(
            request.event_id.as_deref(),
            Some("4f5ec4d5-4b53-1a8c-7e2b-6a1f2d3c9e01")
        );
        assert_eq!(request.account_id.as_deref(), Some(ACCOUNT));
        assert_eq!(request.region.as_deref(), Some("us-east-1"));
        let digest = "sha256:3b8c6f0a5d2e9f417c3a9b0e6d1f2a7c8e4b5d6f7a8091b2c3d4e5f60718293a";
        assert_eq!(
            images(&request),
            [format!("{ECR}/payments/api:1.14.2@{digest}")]
        );
        let image = &request.images[0];
        assert_eq!(image.kind(), ecr_kind());
        assert_eq!(image.pinned(), Some(format!("{ECR}/payments/api@{digest}")));
        assert_eq!(
            (request.task_definition, request.service, request.cluster),
            (None, None, None)
        );
    }

    #[test]
    fn ecr_delete_and_scan_result_samples_are_ignored() {
        assert_eq!(
            ignored(&sample("aws-eventbridge-ecr-image-action-delete.json")),
            "ECR DELETE action: nothing to scan"
        );
        let reason = ignored(&sample("aws-eventbridge-ecr-image-scan.json"));
        assert!(reason.contains("scan-result event"), "{reason}");
    }

    #[test]
    fn cloudtrail_ecr_put_image_sample() {
        let request = scan(&sample("cloudtrail-ecr-putimage.json"));
        assert_eq!(request.source, EventSource::EcrPutImage);
        assert_eq!(
            request.event_id.as_deref(),
            Some("6a7e8feb-b491-4cf7-a9f1-bf3703467718")
        );
        // No recipientAccountId or awsRegion in this record: registryId and the envelope's region.
        assert_eq!(request.account_id.as_deref(), Some(ACCOUNT));
        assert_eq!(request.region.as_deref(), Some("us-east-1"));
        assert_eq!(
            images(&request),
            [format!(
                "{ECR}/my-app:v1.2.3@sha256:4f67c83422ec747235357c04556616234e66fc3fa39cb4f40b2d4441ddd8f100"
            )]
        );
    }

    #[test]
    fn cloudtrail_register_task_definition_sample() {
        let request = scan(&sample("cloudtrail-ecs-register-task-definition.json"));
        assert_eq!(request.source, EventSource::EcsRegisterTaskDefinition);
        assert_eq!(
            request.event_id.as_deref(),
            Some("a6b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d")
        );
        assert_eq!(
            images(&request),
            [
                format!("{ECR}/checkout:2.3.0"),
                "public.ecr.aws/aws-observability/aws-for-fluent-bit:2.32.0".into(),
            ]
        );
        assert_eq!(request.images[0].kind(), ecr_kind());
        assert_eq!(request.images[1].kind(), RegistryKind::EcrPublic);
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/checkout:12")
        );
    }

    #[test]
    fn cloudtrail_create_service_sample() {
        let request = scan(&sample("cloudtrail-ecs-create-service.json"));
        assert_eq!(request.source, EventSource::EcsCreateService);
        assert!(request.images.is_empty());
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/checkout:12")
        );
        assert_eq!(request.cluster.as_deref(), Some("prod"));
        assert_eq!(request.service, None);
    }

    #[test]
    fn cloudtrail_run_task_sample() {
        let request = scan(&sample("aws-eventbridge-cloudtrail-ecs-runtask.json"));
        assert_eq!(request.source, EventSource::EcsRunTask);
        assert_eq!(
            images(&request),
            [format!("{ECR}/nightly-report:2025.03.1")]
        );
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/nightly-report:7")
        );
        assert_eq!(
            request.cluster.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:cluster/prod")
        );
    }

    #[test]
    fn cloudtrail_update_service_sample() {
        let request = scan(&sample("aws-eventbridge-cloudtrail-ecs-updateservice.json"));
        assert_eq!(request.source, EventSource::EcsUpdateService);
        assert!(request.images.is_empty());
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/web-api:43")
        );
        assert_eq!(request.cluster.as_deref(), Some("prod"));
        assert_eq!(request.service, None);
    }

    #[test]
    fn ecs_task_state_change_sample() {
        let request = scan(&sample("aws-eventbridge-ecs-task-state-change.json"));
        assert_eq!(request.source, EventSource::EcsTaskStateChange);
        assert_eq!(
            images(&request),
            [
                format!(
                    "{ECR}/web-api:1.15.0@sha256:47f8581563aecdd7339e97469826ab59e92e83aab4c274d48370251de95dfdc9"
                ),
                "public.ecr.aws/appmesh/aws-appmesh-envoy:v1.29.6.0-prod@sha256:aa77c04369c5a587bd733ab786d1c308d5aa66940bb323dc70cd4869c5962a5f".into(),
            ]
        );
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/web-api:43")
        );
        assert_eq!(
            request.cluster.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:cluster/prod")
        );

        let mut stopped = sample("aws-eventbridge-ecs-task-state-change.json");
        stopped["detail"]["lastStatus"] = json!("STOPPED");
        assert_eq!(ignored(&stopped), "task stopped");

        // A task passes PROVISIONING, PENDING and ACTIVATING on its way to RUNNING: one scan,
        // at RUNNING. Runs started under the first rules still scan every state.
        for status in ["PROVISIONING", "PENDING", "ACTIVATING"] {
            let mut early = sample("aws-eventbridge-ecs-task-state-change.json");
            early["detail"]["lastStatus"] = json!(status);
            assert!(ignored(&early).contains("scanned once, when it is running"));
            let old_rules = qflows_workflows::scan::Rules {
                scan_tasks_before_running: true,
                ..Default::default()
            };
            assert!(matches!(
                qflows_workflows::scan::classify_with(&early, old_rules),
                Ok(qflows_workflows::scan::Classified::Scan(_))
            ));
        }
    }

    #[test]
    fn a_whole_event_grid_delivery_is_refused_clearly() {
        // The workflow takes one event; the delivery array is the bridge's to split.
        let err = classify(&sample("eventgrid-acr-image-pushed.json")).unwrap_err();
        assert_eq!(err.field, ".");
        assert!(err.problem.contains("Event Grid delivery"), "{err}");
    }

    #[test]
    fn register_task_definition_with_ecr_and_docker_hub() {
        let mut event = sample("cloudtrail-ecs-register-task-definition.json");
        event["detail"]["requestParameters"]["containerDefinitions"] = json!([
            {"name": "app", "image": format!("{ECR}/checkout:2.4.0")},
            {"name": "proxy", "image": "nginx:1.25"},
            {"name": "proxy-again", "image": "docker.io/library/nginx:1.25"},
        ]);
        let request = scan(&event);
        assert_eq!(
            images(&request),
            [
                format!("{ECR}/checkout:2.4.0"),
                "docker.io/library/nginx:1.25".into()
            ]
        );
        assert_eq!(request.images[0].kind(), ecr_kind());
        assert_eq!(request.images[1].kind(), RegistryKind::DockerHub);
        assert_eq!(request.images[1], ImageRef::parse("nginx:1.25").unwrap());
    }

    #[test]
    fn register_task_definition_without_images_still_names_the_task_definition() {
        let mut event = sample("cloudtrail-ecs-register-task-definition.json");
        let detail = &mut event["detail"];
        detail["requestParameters"]
            .as_object_mut()
            .unwrap()
            .remove("containerDefinitions");
        let request = scan(&event);
        assert_eq!(images(&request).len(), 2, "falls back to responseElements");
        detail_remove(
            &mut event,
            "responseElements/taskDefinition/containerDefinitions",
        );
        let request = scan(&event);
        assert!(request.images.is_empty());
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/checkout:12")
        );
    }

    fn detail_remove(event: &mut Value, path: &str) {
        let (parents, last) = path.rsplit_once('/').unwrap();
        let mut node = &mut event["detail"];
        for key in parents.split('/') {
            node = &mut node[key];
        }
        node.as_object_mut().unwrap().remove(last);
    }

    #[test]
    fn run_task_by_task_definition_arn_without_response() {
        let mut event = sample("aws-eventbridge-cloudtrail-ecs-runtask.json");
        event["detail"]
            .as_object_mut()
            .unwrap()
            .remove("responseElements");
        let request = scan(&event);
        assert!(request.images.is_empty());
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/nightly-report:7")
        );
        assert_eq!(
            request.cluster.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:cluster/prod")
        );

        // family:revision becomes an ARN in the record's account, region and partition.
        event["detail"]["requestParameters"]["taskDefinition"] = json!("nightly-report:8");
        event["detail"]["recipientAccountId"] = json!("444455556666");
        event["detail"]["awsRegion"] = json!("cn-north-1");
        let request = scan(&event);
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws-cn:ecs:cn-north-1:444455556666:task-definition/nightly-report:8")
        );
        assert_eq!(request.account_id.as_deref(), Some("444455556666"));
        assert_eq!(request.region.as_deref(), Some("cn-north-1"));
        // A bare family stays as given (DescribeTaskDefinition resolves the latest ACTIVE revision).
        event["detail"]["requestParameters"]["taskDefinition"] = json!("nightly-report");
        assert_eq!(
            scan(&event).task_definition.as_deref(),
            Some("nightly-report")
        );
        event["detail"]["requestParameters"]["taskDefinition"] = json!("nightly/report");
        let err = classify(&event).unwrap_err();
        assert_eq!(err.field, "detail.requestParameters.taskDefinition");
    }

    #[test]
    fn run_task_attaches_container_digests() {
        let mut event = sample("aws-eventbridge-cloudtrail-ecs-runtask.json");
        let digest = "sha256:47f8581563aecdd7339e97469826ab59e92e83aab4c274d48370251de95dfdc9";
        event["detail"]["responseElements"]["tasks"][0]["containers"][0]["imageDigest"] =
            json!(digest);
        let request = scan(&event);
        assert_eq!(
            images(&request),
            [format!("{ECR}/nightly-report:2025.03.1@{digest}")]
        );
        assert_eq!(
            request.images[0].canonical(),
            format!("{ECR}/nightly-report@{digest}")
        );

        event["detail"]["responseElements"]["tasks"][0]["containers"][0]["imageDigest"] =
            json!("sha256:abc");
        let err = classify(&event).unwrap_err();
        assert_eq!(
            err.field,
            "detail.responseElements.tasks[0].containers[0].imageDigest"
        );
    }

    #[test]
    fn start_task_is_a_deploy() {
        let mut event = sample("aws-eventbridge-cloudtrail-ecs-runtask.json");
        event["detail"]["eventName"] = json!("StartTask");
        let request = scan(&event);
        assert_eq!(request.source, EventSource::EcsStartTask);
        assert_eq!(request.images.len(), 1);
    }

    #[test]
    fn update_service_scale_only_names_the_service() {
        let mut event = sample("aws-eventbridge-cloudtrail-ecs-updateservice.json");
        event["detail"]["requestParameters"] =
            json!({"cluster": "prod", "service": "web-api", "desiredCount": 5});
        event["detail"]["responseElements"] = Value::Null;
        let request = scan(&event);
        assert_eq!(request.task_definition, None);
        assert_eq!(
            request.service,
            Some(EcsServiceRef {
                cluster: Some("prod".into()),
                service: "web-api".into()
            })
        );
        // With the response, its task definition is used.
        let mut event = sample("aws-eventbridge-cloudtrail-ecs-updateservice.json");
        event["detail"]["requestParameters"] =
            json!({"cluster": "prod", "service": "web-api", "desiredCount": 5});
        let request = scan(&event);
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/web-api:43")
        );
        assert_eq!(request.service, None);
        // Neither a task definition nor a service: malformed.
        event["detail"]["requestParameters"] = json!({"desiredCount": 5});
        event["detail"]["responseElements"] = json!({});
        let err = classify(&event).unwrap_err();
        assert_eq!(err.field, "detail.requestParameters.service");
    }

    #[test]
    fn create_task_set_uses_the_task_set() {
        let mut event = sample("aws-eventbridge-cloudtrail-ecs-updateservice.json");
        event["detail"]["eventName"] = json!("CreateTaskSet");
        event["detail"]["requestParameters"] =
            json!({"cluster": "prod", "service": "web-api", "taskDefinition": "web-api:44"});
        event["detail"]["responseElements"] = json!({"taskSet": {
            "taskDefinition": "arn:aws:ecs:us-east-1:111122223333:task-definition/web-api:44"}});
        let request = scan(&event);
        assert_eq!(request.source, EventSource::EcsCreateTaskSet);
        assert_eq!(
            request.task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/web-api:44")
        );
        event["detail"]["responseElements"] = Value::Null;
        assert_eq!(
            scan(&event).task_definition.as_deref(),
            Some("arn:aws:ecs:us-east-1:111122223333:task-definition/web-api:44")
        );
    }

    #[test]
    fn cloudtrail_failures_and_non_deployments_are_ignored() {
        let mut event = sample("cloudtrail-ecs-create-service.json");
        event["detail"]["errorCode"] = json!("AccessDenied");
        assert_eq!(ignored(&event), "the API call failed: AccessDenied");
        let mut event = sample("cloudtrail-ecs-create-service.json");
        event["detail"]["eventName"] = json!("DeleteService");
        assert_eq!(ignored(&event), "ECS DeleteService: not a deployment");
        let mut event = sample("cloudtrail-ecr-putimage.json");
        event["detail"]["eventName"] = json!("BatchDeleteImage");
        assert!(ignored(&event).contains("BatchDeleteImage"));
        let mut event = sample("cloudtrail-ecs-create-service.json");
        event["source"] = json!("aws.s3");
        event["detail"]["eventSource"] = json!("s3.amazonaws.com");
        event["detail"]["eventName"] = json!("PutObject");
        assert!(ignored(&event).contains("not a deployment"));
    }

    #[test]
    fn ecr_push_variants() {
        let mut event = sample("ecr-image-action-push.json");
        event["detail"]["result"] = json!("FAILURE");
        assert_eq!(ignored(&event), "failed push");

        let mut event = sample("ecr-image-action-push.json");
        event["detail"].as_object_mut().unwrap().remove("image-tag");
        event["region"] = json!("cn-north-1");
        let request = scan(&event);
        assert_eq!(
            images(&request),
            [
                "111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn/payments/api@sha256:3b8c6f0a5d2e9f417c3a9b0e6d1f2a7c8e4b5d6f7a8091b2c3d4e5f60718293a"
            ]
        );

        let mut event = sample("ecr-image-action-push.json");
        event["detail-type"] = json!("ECR Replication Action");
        event["detail"]["action-type"] = json!("REPLICATE");
        event["account"] = json!("444455556666");
        let request = scan(&event);
        assert_eq!(request.source, EventSource::EcrReplication);
        assert!(
            images(&request)[0]
                .starts_with("444455556666.dkr.ecr.us-east-1.amazonaws.com/payments/api:1.14.2@")
        );
    }

    #[test]
    fn malformed_events_name_the_field() {
        let push = sample("ecr-image-action-push.json");
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (
                Box::new(|e| {
                    e.as_object_mut().unwrap().remove("detail");
                }),
                "detail",
                "missing",
            ),
            (
                Box::new(|e| e["detail"] = json!("x")),
                "detail",
                "expected an object",
            ),
            (
                Box::new(|e| e["detail-type"] = json!(7)),
                "detail-type",
                "expected a string",
            ),
            (
                Box::new(|e| e["detail-type"] = json!("ECR Something New")),
                "detail-type",
                "supported:",
            ),
            (
                Box::new(|e| e["source"] = json!("aws.s3")),
                "detail-type",
                "supported:",
            ),
            (
                Box::new(|e| {
                    e["detail"]
                        .as_object_mut()
                        .unwrap()
                        .remove("repository-name");
                }),
                "detail.repository-name",
                "missing",
            ),
            (
                Box::new(|e| e["detail"]["repository-name"] = json!("Payments")),
                "detail.repository-name",
                "lowercase",
            ),
            (
                Box::new(|e| {
                    e["detail"]["image-digest"] =
                        json!("sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234")
                }),
                "detail.image-digest",
                "64 lowercase hex",
            ),
            (
                Box::new(|e| e["detail"]["image-digest"] = json!(42)),
                "detail.image-digest",
                "expected a string",
            ),
            (
                Box::new(|e| e["detail"]["image-tag"] = json!("-x")),
                "detail.image-tag",
                "tag",
            ),
            (
                Box::new(|e| e["detail"]["action-type"] = json!(null)),
                "detail.action-type",
                "missing",
            ),
            (
                Box::new(|e| e["account"] = json!("1234")),
                "account",
                "12-digit",
            ),
            (
                Box::new(|e| e["region"] = json!("US East")),
                "region",
                "region",
            ),
        ];
        for (i, (mutate, field, problem)) in cases.iter().enumerate() {
            let mut event = push.clone();
            mutate(&mut event);
            let err = classify(&event).unwrap_err();
            assert_eq!(err.field, *field, "case {i}: {err}");
            assert!(err.problem.contains(problem), "case {i}: {err}");
        }
    }

    #[test]
    fn malformed_ecs_events_name_the_field() {
        let mut event = sample("cloudtrail-ecs-register-task-definition.json");
        event["detail"]["requestParameters"]["containerDefinitions"][1]["image"] =
            json!("Bad Image");
        let err = classify(&event).unwrap_err();
        assert_eq!(
            err.field,
            "detail.requestParameters.containerDefinitions[1].image"
        );
        assert!(
            err.problem
                .starts_with("invalid image reference `Bad Image`: "),
            "{err}"
        );

        event["detail"]["requestParameters"]["containerDefinitions"] = json!({"image": "nginx"});
        let err = classify(&event).unwrap_err();
        assert_eq!(err.field, "detail.requestParameters.containerDefinitions");
        assert!(err.problem.contains("expected an array"), "{err}");

        let mut event = sample("cloudtrail-ecs-register-task-definition.json");
        event["detail"]["recipientAccountId"] = json!("not-an-account");
        assert_eq!(
            classify(&event).unwrap_err().field,
            "detail.recipientAccountId"
        );

        let mut event = sample("aws-eventbridge-ecs-task-state-change.json");
        event["detail"]["containers"][1]["image"] = json!(["nginx"]);
        assert_eq!(
            classify(&event).unwrap_err().field,
            "detail.containers[1].image"
        );
        event["detail"]["lastStatus"] = json!(null);
        assert_eq!(classify(&event).unwrap_err().field, "detail.lastStatus");

        let mut event = sample("cloudtrail-ecr-putimage.json");
        event["detail"]["responseElements"] = json!(null);
        let err = classify(&event).unwrap_err();
        assert_eq!(
            err.field,
            "detail.responseElements.image.imageId.imageDigest"
        );

        let mut event = sample("cloudtrail-ecs-create-service.json");
        event["detail"]["eventSource"] = json!(null);
        assert_eq!(classify(&event).unwrap_err().field, "detail.eventSource");
        let mut event = sample("cloudtrail-ecs-create-service.json");
        event["detail"]["responseElements"] = json!([1]);
        assert_eq!(
            classify(&event).unwrap_err().field,
            "detail.responseElements"
        );
        let mut event = sample("cloudtrail-ecs-create-service.json");
        event["detail"]["requestParameters"] = json!({});
        event["detail"]["responseElements"] = json!({});
        let err = classify(&event).unwrap_err();
        assert_eq!(err.field, "detail");
        assert!(err.problem.contains("names no image"), "{err}");
    }

    #[test]
    fn manual_form() {
        let request = scan(
            &json!({"images": ["nginx:1.25", format!("{ECR}/app@sha256:{}", "a".repeat(64)), "nginx:1.25"],
                                   "account": ACCOUNT, "region": "us-east-1"}),
        );
        assert_eq!(request.source, EventSource::Manual);
        assert_eq!(request.account_id.as_deref(), Some(ACCOUNT));
        assert_eq!(request.region.as_deref(), Some("us-east-1"));
        assert_eq!(request.event_id, None);
        assert_eq!(
            images(&request),
            [
                "docker.io/library/nginx:1.25".to_string(),
                format!("{ECR}/app@sha256:{}", "a".repeat(64))
            ]
        );
        let request = scan(&json!({"images": ["nginx", "nginx:latest"]}));
        assert_eq!(
            images(&request),
            ["docker.io/library/nginx"],
            "same image, first kept"
        );
        assert_eq!(request.account_id, None);

        let err = classify(&json!({"images": ["a", "b", "c", "Bad:ref"]})).unwrap_err();
        assert_eq!(err.field, "images[3]");
        assert_eq!(
            err.problem,
            "invalid image reference `Bad:ref`: repository name must be lowercase (`Bad`)"
        );
        let err = classify(&json!({"images": []})).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("images", "must list at least one image")
        );
        let err = classify(&json!({"images": ["nginx"], "acount": ACCOUNT})).unwrap_err();
        assert!(err.problem.contains("unknown field `acount`"), "{err}");
        let err = classify(&json!({"images": ["nginx"], "account": "12"})).unwrap_err();
        assert_eq!(err.field, "account");
        let err = classify(&json!({"images": ["nginx"], "region": "mars"})).unwrap_err();
        assert_eq!(err.field, "region");
        let err = classify(&json!({"images": "nginx"})).unwrap_err();
        assert_eq!(err.field, "images");
        let err = classify(&json!({"images": [1]})).unwrap_err();
        assert_eq!(err.field, "images[0]");
    }

    #[test]
    fn unknown_shapes_are_refused() {
        for value in [
            json!("nginx"),
            json!(null),
            json!(3),
            json!({}),
            json!({"image": "nginx"}),
        ] {
            let err = classify(&value).unwrap_err();
            assert_eq!(err.field, ".", "{value}");
            assert!(err.problem.contains("EventBridge event"), "{err}");
        }
    }

    #[test]
    fn classified_serialises_camel_case() {
        let classified = classify(&sample("aws-eventbridge-cloudtrail-ecs-runtask.json")).unwrap();
        let json = serde_json::to_value(&classified).unwrap();
        assert_eq!(json["scan"]["source"], "ecsRunTask");
        assert_eq!(json["scan"]["accountId"], ACCOUNT);
        assert_eq!(
            json["scan"]["taskDefinition"],
            "arn:aws:ecs:us-east-1:111122223333:task-definition/nightly-report:7"
        );
        assert_eq!(json["scan"]["images"][0]["repository"], "nightly-report");
        assert_eq!(
            serde_json::from_value::<Classified>(json).unwrap(),
            classified
        );
        let json = serde_json::to_value(Classified::Ignored { reason: "x".into() }).unwrap();
        assert_eq!(json, json!({"ignored": {"reason": "x"}}));
    }

    #[test]
    fn classification_is_deterministic() {
        let event = sample("aws-eventbridge-ecs-task-state-change.json");
        let first = serde_json::to_string(&classify(&event).unwrap()).unwrap();
        for _ in 0..5 {
            assert_eq!(
                serde_json::to_string(&classify(&event).unwrap()).unwrap(),
                first
            );
        }
    }
}
