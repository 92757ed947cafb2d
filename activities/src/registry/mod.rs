//! The activities behind `EnsureRegistry` and `EnsureAwsConnector`: Qualys registry and
//! connector calls, the IAM role, and starting or joining the canonical runs.
//!
//! Each one is idempotent, because Temporal may run an activity again after a crash or a lost
//! response: creating re-reads first, so a retried create finds what the first attempt made, and
//! Qualys answering "already exists" to a create means re-read and succeed.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

use crate::aws::{Aws, ensure_scan_role};
use crate::failure::IntoFailure;
use crate::heartbeat;
use crate::qualys::{CreateAwsConnector, CreateEcrRegistry, QualysClient, Registry};
use backon::{ExponentialBuilder, Retryable};
use qflows_workflows::FailureType;
use qflows_workflows::registry::contracts;
use qflows_workflows::registry::model::{
    ConnectorRequest, EnsureRegistryInput, EnsureRegistryOutput, QualysAwsBase, RegistryDefaults,
    RegistryPlan, RegistryRef, RoleChange, ScanRoleRequest,
};
use qflows_workflows::{EnsureAwsConnector, EnsureRegistry};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temporalio_client::errors::WorkflowGetResultError;
use temporalio_client::{
    Client, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions,
};
use temporalio_common::HasWorkflowDefinition;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, warn};

/// How often a caller waiting on a canonical run heartbeats.
/// Runs of another role of the same account a connector caller waits out before giving up (the
/// activity is then retried).
const MAX_CONNECTOR_ROUNDS: usize = 5;

/// Where the canonical runs are started: the Temporal client and the task queue
/// `EnsureRegistry` and `EnsureAwsConnector` run on when started from here
/// (`<task queue>-registry`: their own pollers, so a burst of deploy workflows never queues in
/// front of the one workflow every scan of the account waits for).
#[derive(Clone)]
pub struct CanonicalRuns {
    /// Temporal.
    pub temporal: Client,
    /// The task queue of the canonical runs.
    pub task_queue: String,
    /// Registries ensured lately, by input: a scan of the same account and region within
    /// [`RECENT_REGISTRY`] reuses the answer instead of starting another `EnsureRegistry` run.
    recent: Arc<std::sync::Mutex<HashMap<String, (EnsureRegistryOutput, Instant)>>>,
}

/// How long an ensured registry is reused without asking again (a registry deleted in Qualys
/// meanwhile fails the scan's submission, which is retried after this).
const RECENT_REGISTRY: Duration = Duration::from_secs(600);

impl CanonicalRuns {
    /// Canonical runs started by `temporal` on `task_queue`.
    pub fn new(temporal: Client, task_queue: String) -> Self {
        Self {
            temporal,
            task_queue,
            recent: Arc::default(),
        }
    }

    fn recent_registry(&self, key: &str) -> Option<EnsureRegistryOutput> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .get(key)
            .filter(|(_, at)| at.elapsed() < RECENT_REGISTRY)
            .map(|(out, _)| out.clone())
    }

    fn remember_registry(&self, key: String, output: &EnsureRegistryOutput) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, (_, at)| at.elapsed() < RECENT_REGISTRY);
        recent.insert(key, (output.clone(), Instant::now()));
    }
}

/// State shared by the registry activities.
pub struct RegistryActivities {
    qualys: QualysClient,
    aws: Arc<Aws>,
    defaults: RegistryDefaults,
    runs: CanonicalRuns,
}

impl RegistryActivities {
    /// Activities that use this Qualys client, AWS configuration, worker defaults, and start
    /// canonical runs with `runs`.
    pub fn new(
        qualys: QualysClient,
        aws: Arc<Aws>,
        defaults: RegistryDefaults,
        runs: CanonicalRuns,
    ) -> Self {
        Self {
            qualys,
            aws,
            defaults,
            runs,
        }
    }

    /// Starts `workflow` under `id` with the "use existing" conflict policy — so it joins the run
    /// there when one is open — and waits for its result, heartbeating. A run that has closed is
    /// not joined: a new one starts, and finds what the closed one made.
    async fn start_or_join<W>(
        &self,
        ctx: &ActivityContext,
        workflow: W,
        input: W::Input,
        id: &str,
    ) -> Result<W::Output, ActivityError>
    where
        W: HasWorkflowDefinition,
        W::Input: Send,
    {
        let handle = self
            .runs
            .temporal
            .start_workflow(
                workflow,
                input,
                WorkflowStartOptions::new(self.runs.task_queue.clone(), id.to_string())
                    .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                    .build(),
            )
            .await
            .map_err(|e| temporal_unavailable(&format!("start {id}"), e))?;
        let wait = handle.get_result(WorkflowGetResultOptions::default());
        heartbeat::beating(ctx, &format!("waiting for {id}"), wait)
            .await
            .map_err(|e| canonical_failed(id, e))
    }
}

fn temporal_unavailable(what: &str, err: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(format!("{what}: {err}"))
            .type_name(FailureType::TemporalUnavailable.into())
            .build(),
    )
}

/// The canonical run ended without a result: non-retryable, with that run's own failure type
/// and message in the text (`registry-… failed: QualysAuthFailed: …`).
fn canonical_failed(id: &str, err: WorkflowGetResultError) -> ActivityError {
    let reason = match &err {
        WorkflowGetResultError::Failed(failure) => {
            use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
            let proto = failure.failure();
            match &proto.failure_info {
                Some(FailureInfo::ApplicationFailureInfo(info)) if !info.r#type.is_empty() => {
                    format!("{}: {}", info.r#type, proto.message)
                }
                _ => proto.message.clone(),
            }
        }
        other => other.to_string(),
    };
    ActivityError::application(
        ApplicationFailure::builder(format!("{id} failed: {reason}"))
            .type_name(FailureType::EnsureRegistryFailed.into())
            .non_retryable(true)
            .build(),
    )
}

/// Qualys said the thing exists, but does not list it (yet): retryable, the next attempt
/// reads again before creating.
fn exists_but_unlisted(what: String) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(what)
            .type_name(FailureType::QualysNotListedYet.into())
            .build(),
    )
}

fn registry_ref(registry: Registry, fallback_name: &str) -> RegistryRef {
    RegistryRef {
        registry_name: registry
            .registry_name
            .unwrap_or_else(|| fallback_name.to_string()),
        registry_uuid: registry.registry_uuid,
    }
}

#[activities]
impl RegistryActivities {
    /// Applies the worker's defaults to the workflow input.
    #[activity(definition = contracts::PlanRegistry)]
    pub async fn plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: EnsureRegistryInput,
    ) -> Result<RegistryPlan, ActivityError> {
        Ok(RegistryPlan::new(&input, &self.defaults))
    }

    /// Finds the registry by URI.
    #[activity(definition = contracts::FindRegistry)]
    pub async fn find_registry(
        self: Arc<Self>,
        _ctx: ActivityContext,
        registry_uri: String,
    ) -> Result<Option<RegistryRef>, ActivityError> {
        let found = self
            .qualys
            .find_registry_by_uri(&registry_uri)
            .await
            .map_err(IntoFailure::into_failure)?;
        Ok(found.map(|r| registry_ref(r, "")))
    }

    /// Reads Qualys' AWS account and external ID.
    #[activity(definition = contracts::GetAwsBase)]
    pub async fn get_aws_base(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<QualysAwsBase, ActivityError> {
        let base = self
            .qualys
            .aws_base()
            .await
            .map_err(IntoFailure::into_failure)?;
        Ok(QualysAwsBase {
            account_id: base.account_id,
            external_id: base.external_id,
        })
    }

    /// Creates or updates the IAM role Qualys assumes.
    #[activity(definition = contracts::EnsureScanRole)]
    pub async fn ensure_scan_role(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ScanRoleRequest,
    ) -> Result<RoleChange, ActivityError> {
        let region = match request.role_arn.split(':').nth(1) {
            Some("aws-cn") => "cn-north-1",
            Some("aws-us-gov") => "us-gov-west-1",
            _ => "us-east-1",
        };
        let iam = self.aws.iam(region).await;
        let change = ensure_scan_role(&iam, &request.role_arn, &request.qualys)
            .await
            .map_err(IntoFailure::into_failure)?;
        info!(role_arn = %request.role_arn, ?change, "IAM role for Qualys ensured");
        Ok(change)
    }

    /// Creates the Qualys AWS connector for the role unless one exists.
    #[activity(definition = contracts::EnsureConnector)]
    pub async fn ensure_connector(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ConnectorRequest,
    ) -> Result<bool, ActivityError> {
        connector_for_role(&self.qualys, request).await
    }

    /// Runs or joins `EnsureRegistry` under its canonical workflow ID `registry-<account>-<region>`
    /// and returns its result (scans use it, and runs started under another ID).
    #[activity(definition = contracts::EnsureRegistryShared)]
    pub async fn ensure_registry_shared(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: EnsureRegistryInput,
    ) -> Result<EnsureRegistryOutput, ActivityError> {
        let id = input.workflow_id();
        let value =
            serde_json::to_value(&input).map_err(|e| temporal_unavailable("encode input", e))?;
        let key = value.to_string();
        if let Some(output) = self.runs.recent_registry(&key) {
            return Ok(output);
        }
        let output = self
            .start_or_join(&ctx, EnsureRegistry::run, value, &id)
            .await?;
        self.runs.remember_registry(key, &output);
        Ok(output)
    }

    /// Runs or joins the account's `EnsureAwsConnector` (`registry-connector-<account>`) and
    /// returns whether a connector was created. A run there for another role of the account is
    /// waited out, then this role's runs.
    #[activity(definition = contracts::EnsureConnectorShared)]
    pub async fn ensure_connector_shared(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: ConnectorRequest,
    ) -> Result<bool, ActivityError> {
        let id = request.workflow_id();
        let value =
            serde_json::to_value(&request).map_err(|e| temporal_unavailable("encode input", e))?;
        for _ in 0..MAX_CONNECTOR_ROUNDS {
            let outcome = self
                .start_or_join(&ctx, EnsureAwsConnector::run, value.clone(), &id)
                .await?;
            if outcome.role_arn == request.plan.role_arn {
                return Ok(outcome.created);
            }
            info!(%id, joined = %outcome.role_arn, wanted = %request.plan.role_arn, "joined the connector run of another role; running again");
        }
        Err(temporal_unavailable(
            &format!(
                "{id} kept serving other roles than {}",
                request.plan.role_arn
            ),
            "will retry",
        ))
    }

    /// Creates the ECR registry in Qualys, unless it already exists.
    #[activity(definition = contracts::CreateRegistry)]
    pub async fn create_registry(
        self: Arc<Self>,
        _ctx: ActivityContext,
        plan: RegistryPlan,
    ) -> Result<RegistryRef, ActivityError> {
        find_or_create_registry(&self.qualys, &plan).await
    }
}

/// Lists the account's connectors and creates the role's one unless Qualys has it; true when
/// this call created it.
pub(crate) async fn connector_for_role(
    qualys: &QualysClient,
    request: ConnectorRequest,
) -> Result<bool, ActivityError> {
    let plan = &request.plan;
    let connectors = qualys
        .list_aws_connectors(Some(&plan.account_id))
        .await
        .map_err(IntoFailure::into_failure)?;
    if connectors.iter().any(|c| c.arn == plan.role_arn) {
        return Ok(false);
    }
    let create = CreateAwsConnector {
        arn: plan.role_arn.clone(),
        description: format!(
            "ECR scanning for account {} (managed by qflows)",
            plan.account_id
        ),
        external_id: request.external_id,
        name: plan.connector_name.clone(),
        account_type: plan.account_type.clone(),
    };
    match qualys.create_aws_connector(&create).await {
        Ok(()) => {
            info!(connector = %plan.connector_name, "Qualys AWS connector created");
            Ok(true)
        }
        Err(e) if e.is_already_exists() => {
            // Made by an earlier attempt whose answer was lost, or by someone else: Qualys
            // has it. Read it back rather than fail.
            let listed = qualys
                .list_aws_connectors(Some(&plan.account_id))
                .await
                .map_err(IntoFailure::into_failure)?;
            if listed.iter().any(|c| c.arn == plan.role_arn) {
                info!(role_arn = %plan.role_arn, "Qualys already has the AWS connector");
                return Ok(false);
            }
            warn!(role_arn = %plan.role_arn, error = %e, "Qualys says the connector exists but does not list it");
            Err(exists_but_unlisted(format!(
                "Qualys answered that the connector for {} already exists ({e}), but does not \
                 list one for it in account {}",
                plan.role_arn, plan.account_id
            )))
        }
        Err(e) => Err(e.into_failure()),
    }
}

/// Finds the registry, else creates it and reads back its UUID when the answer has none.
pub(crate) async fn find_or_create_registry(
    qualys: &QualysClient,
    plan: &RegistryPlan,
) -> Result<RegistryRef, ActivityError> {
    let find = || async {
        qualys
            .find_registry_by_uri(&plan.registry_uri)
            .await
            .map_err(IntoFailure::into_failure)
    };
    // An earlier attempt may have created it before its response was lost.
    if let Some(existing) = find().await? {
        return Ok(registry_ref(existing, &plan.registry_name));
    }
    let request = CreateEcrRegistry {
        account_id: plan.account_id.clone(),
        arn: plan.role_arn.clone(),
        region: plan.region.clone(),
        account_type: plan.account_type.clone(),
        registry_uri: plan.registry_uri.clone(),
        registry_name: plan.registry_name.clone(),
    };
    let already = match qualys.create_ecr_registry(&request).await {
        Ok(Some(registry_uuid)) => {
            info!(registry = %plan.registry_name, "Qualys registry created");
            return Ok(RegistryRef {
                registry_uuid,
                registry_name: plan.registry_name.clone(),
            });
        }
        Ok(None) => {
            info!(registry = %plan.registry_name, "Qualys registry created");
            false
        }
        // Created meanwhile (by an attempt whose answer was lost, or by someone else) but
        // not listed when we looked: it is there, read it back.
        Err(e) if e.is_already_exists() => {
            info!(registry = %plan.registry_uri, error = %e, "Qualys already has the registry; reading it back");
            true
        }
        Err(e) => return Err(e.into_failure()),
    };
    // No UUID to go on (the create answered none — Qualys documents a plain string, often
    // empty — or answered "already exists"): look it up, giving Qualys a moment to list it.
    // Failing here would make the retry create a second registry, so wait in-process
    // (bounded) rather than fail fast.
    let lookup = || async {
        match find().await? {
            Some(created) => Ok(created),
            None => Err(exists_but_unlisted(format!(
                "registry {} {} but Qualys does not list it yet",
                plan.registry_uri,
                if already {
                    "already exists"
                } else {
                    "was created"
                }
            ))),
        }
    };
    let created = lookup
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(12),
        )
        .await?;
    Ok(registry_ref(created, &plan.registry_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qualys::test_server::{Reply, Req, TestServer};
    use crate::qualys::{QualysAuth, QualysConfig, Secret};
    use qflows_workflows::registry::model::DEFAULT_SCAN_ROLE_NAME;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const URI: &str = "https://111122223333.dkr.ecr.us-east-1.amazonaws.com";
    const ROLE: &str = "arn:aws:iam::111122223333:role/qualys-registry-scan-role";

    fn qualys(server: &TestServer) -> QualysClient {
        QualysClient::new(QualysConfig::new(
            server.url.clone(),
            QualysAuth::Token(Secret::new("test-token-0123456789")),
        ))
        .expect("valid config")
    }

    fn plan() -> RegistryPlan {
        let input = EnsureRegistryInput {
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            role_arn: None,
            create_role: false,
        };
        RegistryPlan::new(
            &input,
            &RegistryDefaults {
                scan_role_name: DEFAULT_SCAN_ROLE_NAME.into(),
                iam_propagation_wait_secs: 0,
            },
        )
    }

    fn posts(server: &TestServer, path: &str) -> usize {
        server
            .api_requests()
            .iter()
            .filter(|r: &&Req| r.method == "POST" && r.path == path)
            .count()
    }

    #[tokio::test]
    async fn a_registry_that_already_exists_is_read_back() {
        // Not listed when looked for, "already exists" on create, listed after a while: what
        // Qualys answers when someone else created it a moment ago.
        let refused = Arc::new(AtomicBool::new(false));
        let lists_after = Arc::new(AtomicUsize::new(0));
        let (r, l) = (refused.clone(), lists_after.clone());
        let server = TestServer::start(move |req| match req.method.as_str() {
            "POST" => {
                r.store(true, Ordering::SeqCst);
                Reply::json(
                    400,
                    json!({"errorCode": "400 BAD_REQUEST", "message": "Registry already exists"}),
                )
            }
            _ if r.load(Ordering::SeqCst) && l.fetch_add(1, Ordering::SeqCst) >= 1 => Reply::json(
                200,
                json!({"count": 1, "data": [{"registryUuid": "theirs", "registryName": "ecr-x", "registryUri": URI}]}),
            ),
            _ => Reply::empty(204),
        })
        .await;
        let got = find_or_create_registry(&qualys(&server), &plan())
            .await
            .expect("re-read, not failed");
        assert_eq!(got.registry_uuid, "theirs");
        assert_eq!(posts(&server, "/csapi/v1.3/registry"), 1, "one create");
        assert!(
            lists_after.load(Ordering::SeqCst) >= 2,
            "read back until listed"
        );
    }

    #[tokio::test]
    async fn other_refusals_of_a_registry_create_still_fail() {
        let server = TestServer::start(|req: &Req| match req.method.as_str() {
            "POST" => Reply::json(400, json!({"message": "aws.arn is mandatory"})),
            _ => Reply::empty(204),
        })
        .await;
        assert!(
            find_or_create_registry(&qualys(&server), &plan())
                .await
                .is_err()
        );
        assert_eq!(posts(&server, "/csapi/v1.3/registry"), 1);
    }

    fn connector_request() -> ConnectorRequest {
        ConnectorRequest {
            plan: plan(),
            external_id: "1234567890123".into(),
        }
    }

    /// A server whose connector list is empty until the first create, and whose create answers
    /// "already exists"; `listed_after` says whether the list then shows the connector.
    async fn connector_server(listed_after: bool) -> TestServer {
        let created = Arc::new(AtomicBool::new(false));
        TestServer::start(move |req| match req.method.as_str() {
            "POST" => {
                created.store(true, Ordering::SeqCst);
                Reply::json(
                    400,
                    json!({"errorCode": "400 BAD_REQUEST", "message": "AWS connector already exists for account 111122223333"}),
                )
            }
            _ if listed_after && created.load(Ordering::SeqCst) => {
                Reply::json(200, json!([{"name": "qflows-111122223333", "arn": ROLE}]))
            }
            _ => Reply::json(200, json!([])),
        })
        .await
    }

    #[tokio::test]
    async fn a_connector_that_already_exists_is_read_back() {
        let server = connector_server(true).await;
        let created = connector_for_role(&qualys(&server), connector_request())
            .await
            .expect("re-read, not failed");
        assert!(!created, "Qualys had it: this call created nothing");
        assert_eq!(posts(&server, "/csapi/v1.3/registry/aws/connector"), 1);

        // Qualys says it exists but does not list it: a retryable failure (the retry reads
        // again before it creates), never a second connector from this call.
        let server = connector_server(false).await;
        let err = connector_for_role(&qualys(&server), connector_request())
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("QualysNotListedYet"), "{err:?}");
        assert_eq!(posts(&server, "/csapi/v1.3/registry/aws/connector"), 1);
    }

    #[tokio::test]
    async fn a_listed_connector_is_not_created_again() {
        let server = TestServer::start(|req: &Req| match req.method.as_str() {
            "POST" => Reply::empty(200),
            _ => Reply::json(200, json!([{"name": "c", "arn": ROLE}])),
        })
        .await;
        assert!(
            !connector_for_role(&qualys(&server), connector_request())
                .await
                .unwrap()
        );
        assert_eq!(posts(&server, "/csapi/v1.3/registry/aws/connector"), 0);
    }
}
