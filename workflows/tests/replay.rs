//! Replays recorded histories against today's workflow code.
//!
//! A change that would break running workflows (a reordered activity, a removed timer) makes
//! these fail with a nondeterminism error; such a change must go behind `ctx.patched(..)`.
//! Histories are recorded from real runs by the integration tests
//! (`QFLOWS_RECORD_HISTORIES=1 scripts/test`) and committed under `tests/histories/`.

use std::path::Path;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn histories(prefix: &str) -> Vec<(String, WorkflowHistory)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/histories exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().unwrap().to_string_lossy().starts_with(prefix)
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable history");
            let history = WorkflowHistory::from_json(&bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), history)
        })
        .collect()
}

/// Replays every recorded history against `options`' workflows, failing on the first mismatch.
async fn replay_all(recorded: Vec<(String, WorkflowHistory)>, options: WorkflowReplayerOptions) {
    let replayer = WorkflowReplayer::new(options).expect("replayer");
    for (name, history) in recorded {
        replayer
            .replay_workflow(history)
            .await
            .unwrap_or_else(|e| panic!("{name} no longer replays: {e}"));
    }
}

#[tokio::test]
async fn ensure_registry_histories_replay() {
    let recorded = histories("ensure_registry");
    assert!(
        recorded.len() >= 3,
        "expected recorded EnsureRegistry histories (found, created with role, failed)"
    );
    // Old runs (before the `registry-exactly-once` patch) and new ones, whose connector step
    // is its own workflow (`ensure_registry_once_connector_*`).
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<qflows_workflows::EnsureRegistry>()
        .expect("register")
        .register_workflow::<qflows_workflows::EnsureAwsConnector>()
        .expect("register")
        .build();
    replay_all(recorded, options).await;
}

/// `image_scan_quarantine_proposed.json` is an entity with `QFLOWS_QUARANTINE=propose` whose
/// failing scan proposed a quarantine (patch `image-scan-quarantine-proposals`, a `Quarantine`
/// child); the older ImageScan histories predate the setting and must not take that path.
///
/// `scan_on_deploy_resource_id_before_checks.json` was recorded with the classifier as it was
/// before patch `azure-resource-id-checks` (an ACI event whose resource group is `..`, refused
/// only by the resolve activity): today's code must take the pre-patch path for it.
/// `scan_on_deploy_gate_profiles_*.json` were recorded by a worker with a profiles file (patch
/// `gate-profiles`, local activity `gate.Judge`); every other one without, so they replay
/// without asking `gate.Judge`.
#[tokio::test]
async fn scan_histories_replay() {
    let mut recorded = histories("scan_on_deploy");
    recorded.extend(histories("image_scan"));
    assert!(
        recorded.len() >= 8,
        "expected recorded ScanOnDeploy and ImageScan histories of both designs (v1: *_v1_*)"
    );
    assert!(
        recorded
            .iter()
            .any(|(name, _)| name.contains("scan_on_deploy_gate_profiles_")),
        "expected recorded ScanOnDeploy histories with gate profiles (patch gate-profiles, \
         gate.Judge)"
    );
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<qflows_workflows::ScanOnDeploy>()
        .expect("register")
        .register_workflow::<qflows_workflows::ImageScan>()
        .expect("register")
        .build();
    replay_all(recorded, options).await;
}

#[tokio::test]
async fn scan_alert_histories_replay() {
    let recorded = histories("scan_alert");
    assert!(
        !recorded.is_empty(),
        "expected a recorded ScanAlert history"
    );
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<qflows_workflows::ScanAlert>()
        .expect("register")
        .build();
    replay_all(recorded, options).await;
}

#[tokio::test]
async fn cdr_to_policy_histories_replay() {
    let recorded = histories("cdr_to_policy");
    assert!(
        recorded.len() >= 10,
        "expected recorded CdrToPolicy histories: from before cdr-limits (one-shot, review with \
         promote and rollback), after it (the same two, observed values, continue-as-new), and \
         the same four after cdr-sync-schedule"
    );
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<qflows_workflows::CdrToPolicy>()
        .expect("register")
        .build();
    replay_all(recorded, options).await;
}

#[tokio::test]
async fn deploy_sensor_histories_replay() {
    let recorded = histories("deploy_sensor");
    assert!(
        recorded.len() >= 9,
        "expected recorded DeploySensor histories of both designs: before sensor-real-clusters \
         (deploy_sensor_ecs_*, deploy_sensor_eks_*) and after it (deploy_sensor_planned_*: created, rolled back, \
         retried apply, drift)"
    );
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<qflows_workflows::DeploySensor>()
        .expect("register")
        .build();
    replay_all(recorded, options).await;
}

/// `inventory_kubernetes.json`: a run that listed a cluster and told its entities;
/// `inventory_invalid.json`: a run refused for its scope.
#[tokio::test]
async fn inventory_histories_replay() {
    let recorded = histories("inventory");
    assert!(
        recorded.len() >= 2,
        "expected recorded Inventory histories (a taken inventory, a refused scope)"
    );
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<qflows_workflows::Inventory>()
        .expect("register")
        .build();
    replay_all(recorded, options).await;
}

/// `quarantine_ecs_rolled_back.json` (refused updates without who/why, then an approval),
/// `quarantine_ecs_expired.json` (the approval lapsed), `quarantine_ecs_rejected.json`,
/// `quarantine_ecs_refused.json` (the previous task definition runs the same image),
/// `quarantine_aca_deactivated.json` (a container app revision) and
/// `quarantine_ecs_proposed_by_entity.json` (proposed by an `ImageScan` entity, then approved).
#[tokio::test]
async fn quarantine_histories_replay() {
    let recorded = histories("quarantine");
    assert!(
        recorded.len() >= 6,
        "expected recorded Quarantine histories (rolled back, expired, rejected, refused, \
         deactivated, proposed by an entity)"
    );
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<qflows_workflows::Quarantine>()
        .expect("register")
        .build();
    replay_all(recorded, options).await;
}
