//! ScanOnDeploy on Azure end to end: an ACI deployment event → Resource Manager (contract fake,
//! through azure_identity's managed-identity credential) → ACR tag → digest (fake) → QScanner
//! (stand-in) with ACR pull credentials → the report in Azure Blob Storage (Azurite).

use qflows_integration::azure::{AzureFake, Azurite};
use qflows_integration::{TestEnv, history_json, record_history, scan_on_deploy, workspace_root};
use qflows_workflows::scan::model::ImageStatus;
use qualys_emulator::EmulatorConfig;
use serde_json::Value;

const ACI: &str = "/subscriptions/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b/resourceGroups/apps-rg/providers/Microsoft.ContainerInstance/containerGroups/report-worker";

fn sample(name: &str) -> Value {
    let path = workspace_root()
        .join("workflows/tests/data/events")
        .join(name);
    match serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap() {
        Value::Array(mut events) => events.remove(0),
        event => event,
    }
}

struct Setup {
    env: TestEnv,
    fake: AzureFake,
    azurite: Azurite,
    worker: qflows_integration::Worker,
    digest: String,
}

async fn setup() -> anyhow::Result<Setup> {
    setup_with(|_| {}, &[]).await
}

/// [`setup`], with the fake configured by `prepare` and more worker variables.
async fn setup_with(
    prepare: impl FnOnce(&AzureFake),
    worker_env: &[(&str, &str)],
) -> anyhow::Result<Setup> {
    let env = TestEnv::start(EmulatorConfig::default()).await?;
    let fake = AzureFake::start().await?;
    prepare(&fake);
    fake.put_resource(ACI, sample("arm-container-group.json"));
    let digest = format!("sha256:{}", "a7".repeat(32));
    fake.put_manifest("reports/worker", "7.0.1", &digest);
    let azurite = Azurite::start().await?;
    azurite.create_container("qflows-results").await?;
    let standin = qflows_integration::qflows_bin()?.with_file_name("qscanner");
    let results = format!(
        "{}/qflows-results/scans?{}",
        azurite.account_url,
        azurite.sas()
    );
    let mut builder = env
        .worker()
        .env("QFLOWS_QSCANNER_BIN", Some(standin.to_str().unwrap()))
        .env("QFLOWS_RESULTS", Some(&results))
        .env("QFLOWS_SCAN_POLL_INITIAL_SECS", Some("1"));
    for (key, value) in fake.worker_env() {
        builder = builder.env(key, Some(&value));
    }
    for (key, value) in worker_env {
        builder = builder.env(key, Some(value));
    }
    let worker = builder.start(&env.dir).await?;
    Ok(Setup {
        env,
        fake,
        azurite,
        worker,
        digest,
    })
}

#[tokio::test]
async fn an_aci_deployment_ends_in_a_blob_result() -> anyhow::Result<()> {
    let Setup {
        env,
        fake,
        azurite,
        worker,
        digest,
    } = setup().await?;
    // Resource Manager throttles the first read: the activity waits and tries again.
    fake.throttle_arm(1);
    let event = sample("eventgrid-aci-resource-write-success.json");
    let out = scan_on_deploy(&env.client, &worker.task_queue, "aci-1", event)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}\n{}", worker.logs()))?;
    assert_eq!(out.status, "scanned");
    assert_eq!(out.images.len(), 2, "{out:?}");

    // The ACR image: tag resolved to the digest through the token exchange, scanned by QScanner.
    let acr = &out.images[0];
    assert_eq!(acr.digest, digest);
    assert!(
        acr.image
            .starts_with("contosoapps.azurecr.io/reports/worker:7.0.1"),
        "{acr:?}"
    );
    assert_eq!(acr.status, ImageStatus::Scanned, "{acr:?}");
    assert_eq!(acr.backend.as_deref(), Some("qscanner"));
    // MCR by tag cannot be pinned to a digest: reported, not guessed.
    assert_eq!(
        out.images[1].status,
        ImageStatus::Skipped,
        "{:?}",
        out.images[1]
    );

    // The full report is a blob in Azurite; the reference carries no SAS.
    let reference = acr.result_ref.as_deref().unwrap();
    assert!(!reference.contains("sig="), "{reference}");
    let prefix = format!("{}/qflows-results/", azurite.account_url);
    let name = reference
        .strip_prefix(&prefix)
        .expect("a blob URL in the container");
    assert!(
        name.starts_with(&format!("scans/scan-results/reports/worker/{digest}/")),
        "{name}"
    );
    assert!(
        azurite
            .list_blobs("qflows-results")
            .await?
            .contains(&name.to_string())
    );
    let report: Value = serde_json::from_slice(&azurite.get_blob("qflows-results", name).await?)?;
    assert_eq!(report["digest"], digest.as_str());
    assert_eq!(report["backend"], "qscanner");

    let calls = fake.calls();
    assert_eq!(
        calls.get("arm"),
        Some(&2),
        "one throttled read, one served: {calls:?}"
    );
    assert!(
        calls.get("oauth2/exchange").copied().unwrap_or(0) >= 1,
        "{calls:?}"
    );

    // No token or SAS reached the workflow history.
    let history = history_json(&env.client, "aci-1").await?;
    for secret in ["aad-token-", "acr-refresh-", "acr-access-", "sig="] {
        assert!(!history.contains(secret), "{secret} in history");
    }
    record_history(&env.client, "aci-1", "scan_on_deploy_aci").await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_azure_resource_fails_clearly() -> anyhow::Result<()> {
    let Setup { env, worker, .. } = setup().await?;

    // A container app that Resource Manager does not know: a clear, final failure.
    let failure = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "aca-missing",
        sample("azure-cloudevents-resourcewritesuccess-containerapp.json"),
    )
    .await
    .unwrap_err();
    assert!(failure.message.contains("resolve images"), "{failure:?}");
    let history = history_json(&env.client, "aca-missing").await?;
    assert!(
        history.contains("AzureNotFound"),
        "the failure type is kept"
    );
    assert!(
        history.contains("containerApps/web-api"),
        "the resource is named"
    );
    Ok(())
}

#[tokio::test]
async fn an_acr_push_is_scanned_by_its_pushed_digest() -> anyhow::Result<()> {
    let Setup {
        env,
        fake,
        azurite,
        worker,
        ..
    } = setup().await?;
    // ACR delivers `data` as a JSON string in the Event Grid schema; the digest is in it, so
    // nothing needs resolving: the pull still goes through the AAD → ACR token exchange.
    let pushed = "sha256:d8fe269c626056ae9b7f7fc7761d344d6f6c456157ca82a722a5a3985ae52263";
    let out = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "acr-push-1",
        sample("azure-eventgrid-acr-imagepushed-data-as-string.json"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}\n{}", worker.logs()))?;
    assert_eq!(out.status, "scanned", "{out:?}");
    assert_eq!(out.images.len(), 1, "{out:?}");
    let image = &out.images[0];
    assert_eq!(image.digest, pushed);
    assert!(
        image
            .image
            .starts_with("contosoprod.azurecr.io/payments/web-api"),
        "{image:?}"
    );
    assert_eq!(image.status, ImageStatus::Scanned, "{image:?}");
    let reference = image.result_ref.as_deref().unwrap();
    let name = reference
        .strip_prefix(&format!("{}/qflows-results/", azurite.account_url))
        .expect("a blob URL in the container");
    assert!(
        name.starts_with(&format!("scans/scan-results/payments/web-api/{pushed}/")),
        "{name}"
    );
    let report: Value = serde_json::from_slice(&azurite.get_blob("qflows-results", name).await?)?;
    assert_eq!(report["digest"], pushed);
    assert!(
        fake.calls().get("oauth2/exchange").copied().unwrap_or(0) >= 1,
        "{:?}",
        fake.calls()
    );
    Ok(())
}

#[tokio::test]
async fn a_us_government_worker_asks_for_its_own_audience() -> anyhow::Result<()> {
    let gov = "https://management.usgovcloudapi.net";
    let Setup {
        env,
        fake,
        worker,
        digest,
        // Azurite stops when dropped: keep it for the whole test.
        azurite: _azurite,
    } = setup_with(
        |fake| fake.expect_arm_audience(gov),
        &[("QFLOWS_AZURE_CLOUD", "usgovernment")],
    )
    .await?;
    let out = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "aci-usgov",
        sample("eventgrid-aci-resource-write-success.json"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}\n{}", worker.logs()))?;
    assert_eq!(out.status, "scanned", "{out:?}");
    assert_eq!(out.images[0].digest, digest);
    let resources = fake.token_resources();
    assert!(resources.iter().any(|r| r == gov), "{resources:?}");
    assert!(
        !resources.iter().any(|r| r.contains("management.azure.com")),
        "{resources:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_acr_refusing_the_arm_audience_still_resolves_once_per_registry() -> anyhow::Result<()> {
    let Setup {
        env,
        fake,
        worker,
        digest,
        // Azurite stops when dropped: keep it for the whole test.
        azurite: _azurite,
    } = setup_with(|fake| fake.refuse_arm_audience_for_acr(), &[]).await?;
    let out = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "aci-acr-audience",
        sample("eventgrid-aci-resource-write-success.json"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}\n{}", worker.logs()))?;
    assert_eq!(out.images[0].digest, digest, "{out:?}");
    assert_eq!(out.images[0].status, ImageStatus::Scanned, "{out:?}");
    // The tag lookup and QScanner's pull share one refresh token: one exchange.
    assert_eq!(
        fake.calls().get("oauth2/exchange"),
        Some(&1),
        "{:?}",
        fake.calls()
    );
    assert!(
        fake.token_resources()
            .iter()
            .any(|r| r == qflows_integration::azure::ACR_AUDIENCE)
    );
    Ok(())
}

#[tokio::test]
async fn signatures_are_ignored_and_privately_pulled_images_skipped() -> anyhow::Result<()> {
    let Setup {
        env,
        fake,
        worker,
        azurite: _azurite,
        ..
    } = setup().await?;
    // A cosign signature pushed next to the image: nothing to scan.
    let mut event = sample("azure-eventgrid-acr-imagepushed-data-as-string.json");
    let mut data: Value = serde_json::from_str(event["data"].as_str().unwrap())?;
    data["target"]["tag"] = format!("sha256-{}.sig", "d8".repeat(32)).into();
    data["target"]["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    event["data"] = data.to_string().into();
    let out = scan_on_deploy(&env.client, &worker.task_queue, "acr-cosign", event)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}\n{}", worker.logs()))?;
    assert_eq!(out.status, "ignored", "{out:?}");
    assert!(
        out.reason.as_deref().unwrap_or("").contains("cosign"),
        "{out:?}"
    );
    record_history(
        &env.client,
        "acr-cosign",
        "scan_on_deploy_acr_signature_ignored",
    )
    .await?;

    // A container group pulling from a private registry with its own credentials.
    let private = format!("registry.example.com/team/app@sha256:{}", "b3".repeat(32));
    let mut group = sample("arm-container-group.json");
    group["properties"]["containers"][1]["properties"]["image"] = private.clone().into();
    group["properties"]["imageRegistryCredentials"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"server": "registry.example.com", "username": "ci"}));
    fake.put_resource(ACI, group);
    let out = scan_on_deploy(
        &env.client,
        &worker.task_queue,
        "aci-private",
        sample("eventgrid-aci-resource-write-success.json"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}\n{}", worker.logs()))?;
    let skipped = out
        .images
        .iter()
        .find(|i| i.image.starts_with("registry.example.com/"))
        .expect("the private image is reported");
    assert_eq!(skipped.status, ImageStatus::Skipped, "{skipped:?}");
    assert!(
        skipped
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("registry credentials of its own"),
        "{skipped:?}"
    );
    // The ACR image is still scanned with qflows' identity.
    assert_eq!(out.images[0].status, ImageStatus::Scanned, "{out:?}");
    Ok(())
}
