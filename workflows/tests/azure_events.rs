//! `scan::classify` for Azure: the Event Grid and CloudEvents samples in `tests/data/events/`
//! (copied from `shared/research/samples/`) and hand-made variants of them.

use qflows_workflows::scan::{Classified, EventSource, ScanRequest, classify};
use serde_json::{Value, json};
use std::path::Path;

/// One event of a sample (Event Grid samples are delivery arrays).
fn sample(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/events")
        .join(name);
    let value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    match value {
        Value::Array(mut events) => events.remove(0),
        event => event,
    }
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

#[test]
fn acr_push_in_event_grid_schema_names_the_pushed_digest() {
    let request = scan(&sample("eventgrid-acr-image-pushed.json"));
    assert_eq!(request.source, EventSource::AcrImagePush);
    assert_eq!(
        request.event_id.as_deref(),
        Some("831e1650-001e-001b-66ab-eeb76e069631")
    );
    assert_eq!(
        request.images[0].to_string(),
        "contosoapps.azurecr.io/billing/api:4.1.0@sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5"
    );
    assert!(
        request
            .azure_resource
            .as_deref()
            .unwrap()
            .ends_with("/registries/contosoapps")
    );
}

#[test]
fn acr_push_with_data_as_a_string_and_as_a_cloud_event() {
    let from_string = scan(&sample(
        "azure-eventgrid-acr-imagepushed-data-as-string.json",
    ));
    let cloud_event = scan(&sample("azure-cloudevents-acr-imagepushed.json"));
    assert_eq!(from_string.images, cloud_event.images);
    assert_eq!(
        from_string.images[0].to_string(),
        "contosoprod.azurecr.io/payments/web-api:1.15.0@sha256:d8fe269c626056ae9b7f7fc7761d344d6f6c456157ca82a722a5a3985ae52263"
    );
}

#[test]
fn container_group_and_container_app_writes_name_the_resource() {
    let aci = scan(&sample("eventgrid-aci-resource-write-success.json"));
    assert_eq!(aci.source, EventSource::AciContainerGroupWrite);
    assert!(aci.images.is_empty());
    assert_eq!(
        aci.azure_resource.as_deref(),
        Some(
            "/subscriptions/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/resourceGroups/apps-rg/providers/Microsoft.ContainerInstance/containerGroups/report-worker"
        )
    );
    let app = scan(&sample(
        "azure-cloudevents-resourcewritesuccess-containerapp.json",
    ));
    assert_eq!(app.source, EventSource::ContainerAppWrite);
    assert!(
        app.azure_resource
            .as_deref()
            .unwrap()
            .ends_with("/providers/Microsoft.App/containerApps/web-api")
    );
}

#[test]
fn other_azure_events_are_ignored_with_a_reason() {
    let mut other_write = sample("eventgrid-aci-resource-write-success.json");
    other_write["data"]["operationName"] = "Microsoft.Storage/storageAccounts/write".into();
    assert!(ignored(&other_write).contains("deploys no containers"));
    let mut failed = sample("eventgrid-aci-resource-write-success.json");
    failed["eventType"] = "Microsoft.Resources.ResourceWriteFailure".into();
    assert!(ignored(&failed).contains("only successful resource writes"));
    let mut deleted = sample("eventgrid-acr-image-pushed.json");
    deleted["eventType"] = "Microsoft.ContainerRegistry.ImageDeleted".into();
    assert!(ignored(&deleted).contains("nothing new to scan"));
    assert!(ignored(&sample("eventgrid-subscription-validation.json")).contains("handshake"));
}

#[test]
fn malformed_azure_events_name_the_field() {
    let field = |event: &Value| classify(event).unwrap_err().field;
    let mut no_digest = sample("eventgrid-acr-image-pushed.json");
    no_digest["data"]["target"]
        .as_object_mut()
        .unwrap()
        .remove("digest");
    assert_eq!(field(&no_digest), "data.target.digest");
    let mut bad_digest = sample("eventgrid-acr-image-pushed.json");
    bad_digest["data"]["target"]["digest"] = "sha256:nothex".into();
    assert_eq!(field(&bad_digest), "data.target");
    let mut bad_data = sample("eventgrid-acr-image-pushed.json");
    bad_data["data"] = "{not json".into();
    assert_eq!(field(&bad_data), "data");
    let mut bad_resource = sample("eventgrid-aci-resource-write-success.json");
    bad_resource["data"]["resourceUri"] =
        "/subscriptions/x/providers/Microsoft.App/containerApps/a".into();
    assert_eq!(field(&bad_resource), "data.resourceUri");
    let unknown =
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "com.example.thing"});
    assert_eq!(field(&unknown), "type");
    let mut no_operation = sample("eventgrid-aci-resource-write-success.json");
    no_operation["data"]
        .as_object_mut()
        .unwrap()
        .remove("operationName");
    assert_eq!(field(&no_operation), "data.operationName");
}

#[test]
fn resource_ids_with_path_tricks_are_refused_naming_the_field() {
    let write = sample("eventgrid-aci-resource-write-success.json");
    let good = write["data"]["resourceUri"].as_str().unwrap().to_string();
    let tricks = [
        good.replace("/resourceGroups/apps-rg/", "/resourceGroups/../"),
        good.replace("/resourceGroups/apps-rg/", "/resourceGroups/./"),
        good.replace("/report-worker", "/.."),
        good.replace("/report-worker", "/..."),
        good.replace("/report-worker", "/%2e%2e"),
        good.replace("/report-worker", "/a?api-version=1"),
        good.replace("/report-worker", "/a#x"),
        good.replace("/apps-rg/", "/apps-rg//"),
        good.replace("/report-worker", "/a\\..\\b"),
        format!("{good}/../../../../providers/Microsoft.Authorization/roleAssignments"),
    ];
    for trick in &tricks {
        let mut event = write.clone();
        event["data"]["resourceUri"] = trick.as_str().into();
        let err = classify(&event).unwrap_err();
        assert_eq!(err.field, "data.resourceUri", "{trick}: {err}");
        // From `subject` when `data.resourceUri` is absent: that field is named.
        let mut event = write.clone();
        event["data"].as_object_mut().unwrap().remove("resourceUri");
        event["subject"] = trick.as_str().into();
        assert_eq!(classify(&event).unwrap_err().field, "subject", "{trick}");
    }
    let mut dots = write.clone();
    dots["data"]["resourceUri"] = tricks[0].as_str().into();
    assert!(
        classify(&dots)
            .unwrap_err()
            .problem
            .contains("`..` path segment"),
        "the problem is said"
    );
    // Names with dots inside are ARM names like any other.
    let mut dotted = write.clone();
    dotted["data"]["resourceUri"] = good.replace("/report-worker", "/report.worker.v2").into();
    assert!(matches!(classify(&dotted), Ok(Classified::Scan(_))));

    // The ACR push's registry ID (`topic`, or `source` in CloudEvents) too.
    let mut push = sample("eventgrid-acr-image-pushed.json");
    let topic = push["topic"].as_str().unwrap().to_string();
    push["topic"] = format!("{topic}/../../../x").into();
    assert_eq!(classify(&push).unwrap_err().field, "topic");
    let mut ce = sample("azure-cloudevents-acr-imagepushed.json");
    let source = ce["source"].as_str().unwrap().to_string();
    assert!(source.starts_with("/subscriptions/"), "{source}");
    ce["source"] = format!("{source}/..").into();
    assert_eq!(classify(&ce).unwrap_err().field, "source");
}

#[test]
fn runs_started_before_the_checks_classify_as_they_did() {
    // What `ScanOnDeploy` falls back to when replaying a run recorded before the checks.
    let mut event = sample("eventgrid-aci-resource-write-success.json");
    let good = event["data"]["resourceUri"].as_str().unwrap().to_string();
    event["data"]["resourceUri"] = good
        .replace("/resourceGroups/apps-rg/", "/resourceGroups/../")
        .into();
    assert!(classify(&event).is_err());
    assert!(matches!(
        qflows_workflows::scan::classify_before_resource_id_checks(&event),
        Ok(Classified::Scan(_))
    ));
}

/// An ACR push with `target` changed.
fn acr_push_with(target: Value) -> Value {
    let mut event = sample("eventgrid-acr-image-pushed.json");
    let data = event["data"].as_object_mut().unwrap();
    let t = data["target"].as_object_mut().unwrap();
    for (k, v) in target.as_object().unwrap() {
        t.insert(k.clone(), v.clone());
    }
    event
}

#[test]
fn acr_pushes_of_signatures_and_charts_are_ignored_and_images_are_scanned() {
    let digest = "a".repeat(64);
    // cosign pushes its signature as an OCI image manifest tagged sha256-<digest>.sig.
    let reason = ignored(&acr_push_with(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "tag": format!("sha256-{digest}.sig")})));
    assert!(reason.contains("cosign sig"), "{reason}");
    let reason = ignored(&acr_push_with(json!({
        "mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "tag": "1.2.0"})));
    assert!(reason.contains("not a container image"), "{reason}");
    let reason = ignored(&acr_push_with(
        json!({"mediaType": "application/vnd.oci.artifact.manifest.v1+json"}),
    ));
    assert!(reason.contains("artifact"), "{reason}");
    for media_type in qflows_workflows::scan::IMAGE_MEDIA_TYPES {
        scan(&acr_push_with(
            json!({"mediaType": media_type, "tag": "1.2.0"}),
        ));
    }
    // What the patch `acr-artifacts-ignored` changed, for runs started before it.
    assert!(qflows_workflows::scan::is_acr_artifact_push(
        &acr_push_with(json!({"tag": format!("sha256-{digest}.att")}))
    ));
    assert!(!qflows_workflows::scan::is_acr_artifact_push(&sample(
        "eventgrid-acr-image-pushed.json"
    )));
}
