//! `deploy/aws/`: the SQS-mode stack is created by moto's CloudFormation, and its EventBridge rules
//! route exactly the sample deploy events in `workflows/tests/data/events/` (each to its own rule,
//! unrelated events to none) into the queue the bridge polls, which has its dead-letter queue.
//! The API-destination template carries the same rule patterns; moto cannot create its
//! connection and API destination, so it and both templates are checked with cfn-lint (the
//! CloudFormation resource specification) and read statically.
//!
//! moto 5.2's EventBridge has no `TestEventPattern`, so the patterns are exercised the way AWS
//! uses them: `PutEvents` on the default bus, then what arrived in the rules' SQS targets.

use aws_sdk_sqs::types::QueueAttributeName;
use qflows_integration::{Moto, find_tool, workspace_root};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The stack's name: its rules are `<stack>-ecr-push` and so on.
const STACK: &str = "qflows";

/// The logical IDs of the four rules and the suffix of their names.
const RULES: [(&str, &str); 4] = [
    ("EcrPushRule", "ecr-push"),
    ("EcsTaskStateChangeRule", "ecs-task-state"),
    ("EcsApiCallRule", "ecs-api"),
    ("EcrPutImageRule", "ecr-putimage"),
];

fn template_path(name: &str) -> PathBuf {
    workspace_root().join("deploy/aws").join(name)
}

fn read_template(name: &str) -> anyhow::Result<Value> {
    Ok(serde_yaml_ng::from_str(&std::fs::read_to_string(
        template_path(name),
    )?)?)
}

fn sample(name: &str) -> anyhow::Result<Value> {
    let path = workspace_root()
        .join("workflows/tests/data/events")
        .join(name);
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// An `Authorization` header moto accepts (it reads the region and service from the scope and
/// does not check signatures).
fn authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// One CloudFormation call (query protocol); the XML answer.
async fn cloudformation(
    http: &reqwest::Client,
    endpoint: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<String> {
    let mut form = vec![("Version", "2010-05-15")];
    form.extend_from_slice(params);
    let response = http
        .post(format!("{endpoint}/"))
        .header("authorization", authorization("cloudformation"))
        .form(&form)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(
        status.is_success(),
        "CloudFormation {params:?}: {status} {body}"
    );
    Ok(body)
}

/// One EventBridge call (JSON 1.1 protocol).
async fn events(
    http: &reqwest::Client,
    endpoint: &str,
    action: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = http
        .post(format!("{endpoint}/"))
        .header("authorization", authorization("events"))
        .header("x-amz-target", format!("AWSEvents.{action}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "EventBridge {action}: {status} {text}");
    Ok(if text.is_empty() {
        json!({})
    } else {
        serde_json::from_str(&text)?
    })
}

/// Everything in the queue now, deleted as read (moto delivers during `PutEvents`, so an empty
/// receive means nothing more is coming).
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<Vec<Value>> {
    let mut bodies = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(bodies);
        }
        for message in messages {
            bodies.push(serde_json::from_str(message.body().unwrap_or("null"))?);
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
    }
}

/// The events to send and the rule (name suffix) each must match; `None`: no rule.
fn cases() -> anyhow::Result<Vec<(String, Value, Option<&'static str>)>> {
    let mut cases = Vec::new();
    for (file, rule) in [
        ("ecr-image-action-push.json", Some("ecr-push")),
        (
            "aws-eventbridge-ecs-task-state-change.json",
            Some("ecs-task-state"),
        ),
        (
            "cloudtrail-ecs-register-task-definition.json",
            Some("ecs-api"),
        ),
        ("cloudtrail-ecs-create-service.json", Some("ecs-api")),
        (
            "aws-eventbridge-cloudtrail-ecs-runtask.json",
            Some("ecs-api"),
        ),
        (
            "aws-eventbridge-cloudtrail-ecs-updateservice.json",
            Some("ecs-api"),
        ),
        ("cloudtrail-ecr-putimage.json", Some("ecr-putimage")),
        ("aws-eventbridge-ecr-image-action-delete.json", None),
        ("aws-eventbridge-ecr-image-scan.json", None),
    ] {
        cases.push((file.to_string(), sample(file)?, rule));
    }
    // Unrelated variants of matching samples: a stopping task, a failed call, a read-only call.
    let mut stopped = sample("aws-eventbridge-ecs-task-state-change.json")?;
    stopped["detail"]["lastStatus"] = json!("STOPPED");
    cases.push(("task state change, STOPPED".into(), stopped, None));
    let mut failed = sample("cloudtrail-ecs-create-service.json")?;
    failed["detail"]["errorCode"] = json!("AccessDenied");
    cases.push(("CreateService with errorCode".into(), failed, None));
    let mut describe = sample("cloudtrail-ecs-create-service.json")?;
    describe["detail"]["eventName"] = json!("DescribeServices");
    cases.push(("CloudTrail DescribeServices".into(), describe, None));
    let mut ecr_other = sample("cloudtrail-ecr-putimage.json")?;
    ecr_other["detail"]["eventName"] = json!("BatchGetImage");
    cases.push(("CloudTrail ECR BatchGetImage".into(), ecr_other, None));
    Ok(cases)
}

#[tokio::test]
async fn sqs_stack_routes_each_sample_event_to_its_rule_and_nothing_else() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let http = reqwest::Client::new();
    let endpoint = moto.endpoint.clone();
    let template = std::fs::read_to_string(template_path("eventbridge-sqs.yaml"))?;
    cloudformation(
        &http,
        &endpoint,
        &[
            ("Action", "CreateStack"),
            ("StackName", STACK),
            ("TemplateBody", &template),
        ],
    )
    .await?;
    let described = cloudformation(
        &http,
        &endpoint,
        &[("Action", "DescribeStacks"), ("StackName", STACK)],
    )
    .await?;
    assert!(
        described.contains("<StackStatus>CREATE_COMPLETE</StackStatus>"),
        "{described}"
    );

    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let queue_url = sqs
        .get_queue_url()
        .queue_name(format!("{STACK}-events"))
        .send()
        .await?
        .queue_url
        .expect("queue url");
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(format!("{STACK}-dlq"))
        .send()
        .await?
        .queue_url
        .expect("dlq url");
    let arn_of = |url: String| {
        let sqs = sqs.clone();
        async move {
            let attributes = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await?
                .attributes
                .unwrap_or_default();
            anyhow::Ok(attributes)
        }
    };
    let queue = arn_of(queue_url.clone()).await?;
    let dlq = arn_of(dlq_url.clone()).await?;
    let queue_arn = queue[&QueueAttributeName::QueueArn].clone();
    let dlq_arn = dlq[&QueueAttributeName::QueueArn].clone();
    // The redrive policy the bridge relies on for events it can never start.
    let redrive: Value = serde_json::from_str(&queue[&QueueAttributeName::RedrivePolicy])?;
    assert_eq!(redrive["deadLetterTargetArn"], json!(dlq_arn));
    assert_eq!(redrive["maxReceiveCount"].as_i64(), Some(5));

    // The four rules exist, enabled, each with the queue as target, retries and the DLQ; a probe
    // queue per rule is added as a second target so each delivery can be attributed to its rule.
    let listed = events(
        &http,
        &endpoint,
        "ListRules",
        json!({ "NamePrefix": format!("{STACK}-") }),
    )
    .await?;
    let mut names: Vec<&str> = listed["Rules"]
        .as_array()
        .expect("Rules")
        .iter()
        .filter_map(|r| r["Name"].as_str())
        .collect();
    names.sort();
    let mut expected: Vec<String> = RULES.iter().map(|(_, s)| format!("{STACK}-{s}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    let mut probes = BTreeMap::new();
    for (_, suffix) in RULES {
        let rule = format!("{STACK}-{suffix}");
        let described = events(&http, &endpoint, "DescribeRule", json!({ "Name": rule })).await?;
        assert_eq!(described["State"], json!("ENABLED"), "{rule}");
        let targets = events(
            &http,
            &endpoint,
            "ListTargetsByRule",
            json!({ "Rule": rule }),
        )
        .await?;
        let targets = targets["Targets"].as_array().expect("Targets");
        assert_eq!(targets.len(), 1, "{rule}: {targets:?}");
        assert_eq!(targets[0]["Arn"], json!(queue_arn), "{rule}");
        assert_eq!(
            targets[0]["DeadLetterConfig"]["Arn"],
            json!(dlq_arn),
            "{rule}"
        );
        assert_eq!(
            targets[0]["RetryPolicy"]["MaximumEventAgeInSeconds"],
            json!(86400),
            "{rule}"
        );
        let probe_url = sqs
            .create_queue()
            .queue_name(format!("probe-{suffix}"))
            .send()
            .await?
            .queue_url
            .expect("probe url");
        let probe_arn = arn_of(probe_url.clone()).await?[&QueueAttributeName::QueueArn].clone();
        events(
            &http,
            &endpoint,
            "PutTargets",
            json!({ "Rule": rule, "Targets": [{ "Id": "probe", "Arn": probe_arn }] }),
        )
        .await?;
        probes.insert(suffix, probe_url);
    }

    let mut matching = 0;
    for (what, event, rule) in cases()? {
        let entry = json!({
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": event["detail"].to_string(),
            "Resources": event["resources"].as_array().cloned().unwrap_or_default(),
        });
        let put = events(&http, &endpoint, "PutEvents", json!({ "Entries": [entry] })).await?;
        assert_eq!(put["FailedEntryCount"], json!(0), "{what}: {put}");
        let mut matched = Vec::new();
        for (suffix, url) in &probes {
            let delivered = drain(&sqs, url).await?;
            assert!(delivered.len() <= 1, "{what}: {suffix} got {delivered:?}");
            if !delivered.is_empty() {
                matched.push(*suffix);
            }
        }
        assert_eq!(matched, rule.into_iter().collect::<Vec<_>>(), "{what}");
        // What the bridge receives: one message per matching event, the event as EventBridge
        // delivers it (source, detail-type and detail intact).
        let delivered = drain(&sqs, &queue_url).await?;
        if rule.is_some() {
            matching += 1;
            assert_eq!(delivered.len(), 1, "{what}: {delivered:?}");
            assert_eq!(delivered[0]["source"], event["source"], "{what}");
            assert_eq!(delivered[0]["detail-type"], event["detail-type"], "{what}");
            assert_eq!(delivered[0]["detail"], event["detail"], "{what}");
        } else {
            assert!(
                delivered.is_empty(),
                "{what} reached the queue: {delivered:?}"
            );
        }
    }
    assert_eq!(matching, 7);
    assert!(drain(&sqs, &dlq_url).await?.is_empty());
    Ok(())
}

#[test]
fn api_destination_template_has_the_same_rules_and_sends_the_key_as_x_api_key() -> anyhow::Result<()>
{
    let sqs = read_template("eventbridge-sqs.yaml")?;
    let api = read_template("eventbridge-api-destination.yaml")?;
    let resources = &api["Resources"];
    for (logical, _) in RULES {
        assert_eq!(
            resources[logical]["Properties"]["EventPattern"],
            sqs["Resources"][logical]["Properties"]["EventPattern"],
            "{logical}: the two templates' patterns differ"
        );
        let targets = resources[logical]["Properties"]["Targets"]
            .as_array()
            .expect("Targets");
        assert_eq!(targets.len(), 1, "{logical}");
        let target = &targets[0];
        assert_eq!(
            target["Arn"],
            json!({ "Fn::GetAtt": ["BridgeDestination", "Arn"] })
        );
        assert_eq!(
            target["RoleArn"],
            json!({ "Fn::GetAtt": ["InvokeRole", "Arn"] })
        );
        assert_eq!(
            target["DeadLetterConfig"]["Arn"],
            json!({ "Fn::GetAtt": ["DeadLetterQueue", "Arn"] })
        );
        assert!(target["RetryPolicy"]["MaximumRetryAttempts"].as_i64() > Some(0));
    }
    let connection = &resources["BridgeConnection"];
    assert_eq!(connection["Type"], json!("AWS::Events::Connection"));
    assert_eq!(
        connection["Properties"]["AuthorizationType"],
        json!("API_KEY")
    );
    let api_key = &connection["Properties"]["AuthParameters"]["ApiKeyAuthParameters"];
    assert_eq!(api_key["ApiKeyName"], json!("x-api-key"));
    // The key is a NoEcho parameter or a Secrets Manager reference, never a literal.
    assert!(
        !api_key["ApiKeyValue"].is_string(),
        "literal key: {api_key}"
    );
    assert_eq!(api["Parameters"]["BridgeKey"]["NoEcho"], json!(true));
    let destination = &resources["BridgeDestination"]["Properties"];
    assert_eq!(destination["HttpMethod"], json!("POST"));
    assert_eq!(
        destination["InvocationEndpoint"],
        json!({ "Fn::Sub": "${BridgeUrl}/events/aws" })
    );
    let role = &resources["InvokeRole"]["Properties"];
    assert_eq!(
        role["Policies"][0]["PolicyDocument"]["Statement"][0]["Action"],
        json!("events:InvokeApiDestination")
    );
    // Both templates let EventBridge (and only for these rules) send to their queues.
    for (template, policy) in [(&sqs, "EventQueuePolicy"), (&api, "DeadLetterQueuePolicy")] {
        let statement =
            &template["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"][0];
        assert_eq!(
            statement["Principal"]["Service"],
            json!("events.amazonaws.com")
        );
        assert_eq!(statement["Action"], json!("sqs:SendMessage"));
        let sources = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
            .as_array()
            .expect("aws:SourceArn");
        assert_eq!(sources.len(), RULES.len(), "{policy}");
    }
    Ok(())
}

#[test]
fn both_templates_pass_cfn_lint() -> anyhow::Result<()> {
    // cfn-lint comes with moto[server] (scripts/bootstrap), next to moto_server.
    let moto = find_tool("moto_server", "QFLOWS_MOTO_BIN")?;
    let lint = moto.with_file_name("cfn-lint");
    anyhow::ensure!(
        lint.is_file(),
        "{} not found: run scripts/bootstrap",
        lint.display()
    );
    for template in ["eventbridge-sqs.yaml", "eventbridge-api-destination.yaml"] {
        let out = std::process::Command::new(&lint)
            .arg(template_path(template))
            .output()?;
        assert!(
            out.status.success(),
            "cfn-lint {template}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check can fail: a rule without its required EventPattern/ScheduleExpression and a
    // misspelt property are reported.
    let broken = std::env::temp_dir().join(format!("qflows-broken-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(template_path("eventbridge-sqs.yaml"))?
        .replace("VisibilityTimeout: 60", "VisibilityTimeOut: 60");
    std::fs::write(&broken, text)?;
    let out = std::process::Command::new(&lint).arg(&broken).output()?;
    let _ = std::fs::remove_file(&broken);
    assert!(
        !out.status.success(),
        "cfn-lint accepted a misspelt property"
    );
    Ok(())
}
