//! The CDR area: the activities behind `CdrToPolicy` (this module, declared in
//! `qflows_workflows::cdr::contracts`) and the pure code they run, which the offline
//! `qflows policy generate` and the benchmark call too:
//!
//! - [`findings`]: tolerant reading of findings;
//! - [`generate`]: findings → evidence per policy ([`Grouper`]) → validated policies;
//! - [`render`]: one policy design per category, audit and block forms;
//! - [`output`]: where policies go (a directory, a cluster), idempotently.
//!
//! The TracingPolicy model and its validator are the `qflows-tetragon` crate.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

pub mod findings;
pub mod generate;
pub mod output;
pub mod render;

use crate::failure::IntoFailure;
use crate::qualys::{CdrFinding, CdrPage, CdrQuery, QualysClient};
use crate::results::{ResultsStore, StoreError};
use findings::{SkipReason, observe};
use futures::{StreamExt, TryStreamExt};
use generate::{Generation, Grouper, GrouperCheckpoint, generate_with};
use output::{PolicyOutputError, publish};
use parking_lot::Mutex;
use qflows_workflows::cdr::contracts;
use qflows_workflows::cdr::evidence::{AuditStyle, Evidence, PolicyKey, TetragonVersion};
use qflows_workflows::cdr::model::{
    EvidenceBatch, EvidenceRef, FetchFindings, ImportLegacy, KubeTarget, MergeEvidence, MergedPage,
    OutputSettings, PAGE_POLICIES, PAYLOAD_BUDGET, PolicyRecord, PolicyUpdate, PublishBatch,
    PublishPolicies, PublishReport, WindowBatch,
};
use render::{RenderOptions, block_refusal, observed};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::info;

/// A cluster target's identity: kubeconfig path and context.
type ClusterKey = (Option<String>, Option<String>);

/// The CdrToPolicy activities.
pub struct CdrActivities {
    qualys: QualysClient,
    store: ResultsStore,
    clients: Mutex<HashMap<ClusterKey, kube::Client>>,
    /// The batch the last merge page read (a window's pages are merged one after the other).
    batch: Mutex<Option<(String, Arc<Batch>)>>,
}

/// Store areas (`blobs/<area>/…` in the results store).
const EVIDENCE_AREA: &str = "cdr-evidence";
const BATCH_AREA: &str = "cdr-batch";
const STATE_AREA: &str = "cdr-state";
const CHECKPOINT_AREA: &str = "cdr-checkpoint";

/// Findings per page of a CDR read.
const FINDINGS_PER_PAGE: u32 = 100;
/// A read stores its progress every this many pages (a retried attempt resumes there).
const CHECKPOINT_PAGES: u64 = 50;
/// Store reads and writes in flight at once in one activity.
const STORE_CONCURRENCY: usize = 16;

/// One policy's stored evidence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct EvidenceDoc {
    key: PolicyKey,
    evidence: Evidence,
}

/// A window's evidence per policy name (the stored batch).
type Batch = BTreeMap<String, (PolicyKey, Evidence)>;

/// Where a CDR read is, for the next attempt: the offset of the last stored checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ReadProgress {
    offset: u64,
    checkpoint: Option<String>,
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("CdrToPolicy documents serialise")
}

impl CdrActivities {
    /// Activities reading findings with this Qualys client and keeping evidence in `store`.
    pub fn new(qualys: QualysClient, store: ResultsStore) -> Self {
        Self {
            qualys,
            store,
            clients: Mutex::new(HashMap::new()),
            batch: Mutex::new(None),
        }
    }

    async fn client(&self, target: &KubeTarget) -> Result<kube::Client, PolicyOutputError> {
        let key = (target.kubeconfig.clone(), target.context.clone());
        if let Some(c) = self.clients.lock().get(&key) {
            return Ok(c.clone());
        }
        let c = crate::kube::client(target).await?;
        self.clients.lock().insert(key, c.clone());
        Ok(c)
    }

    async fn put<T: serde::Serialize>(
        &self,
        area: &str,
        value: &T,
    ) -> Result<String, ActivityError> {
        self.store
            .put_blob(area, json(value))
            .await
            .map_err(IntoFailure::into_failure)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        area: &str,
        hash: &str,
    ) -> Result<T, ActivityError> {
        let bytes = self
            .store
            .get_blob(area, hash)
            .await
            .map_err(IntoFailure::into_failure)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Denied {
                store: self.store.describe(),
                message: format!("{area} document {hash} is not readable: {e}"),
            }
            .into_failure()
        })
    }

    /// The batch `hash`, from memory when the previous page read it.
    async fn batch(&self, hash: &str) -> Result<Arc<Batch>, ActivityError> {
        if let Some((h, b)) = self.batch.lock().as_ref()
            && h == hash
        {
            return Ok(b.clone());
        }
        let groups: Vec<(String, PolicyKey, Evidence)> = self.get(BATCH_AREA, hash).await?;
        let batch: Arc<Batch> = Arc::new(
            groups
                .into_iter()
                .map(|(name, key, evidence)| (name, (key, evidence)))
                .collect(),
        );
        *self.batch.lock() = Some((hash.to_string(), batch.clone()));
        Ok(batch)
    }

    /// Stores `doc` and describes it as the workflow keeps it.
    async fn store_evidence(
        &self,
        name: String,
        doc: EvidenceDoc,
        version: TetragonVersion,
    ) -> Result<PolicyUpdate, ActivityError> {
        let hash = self.put(EVIDENCE_AREA, &doc).await?;
        Ok(PolicyUpdate {
            name,
            observed: observed(doc.key.category, &doc.evidence),
            block_refusal: block_refusal(&doc.key, version),
            evidence: EvidenceRef::of(hash, &doc.evidence),
            key: doc.key,
        })
    }

    /// Where a retried read resumes: the last stored checkpoint (its offset and the grouper it
    /// stored), or the start of the window.
    async fn resume_read(
        &self,
        ctx: &ActivityContext,
    ) -> Result<(ReadProgress, Grouper), ActivityError> {
        let mut saved: ReadProgress = ctx
            .heartbeat_details()
            .deserialize()
            .ok()
            .flatten()
            .unwrap_or_default();
        let grouper = match &saved.checkpoint {
            Some(hash) => {
                Grouper::resume(self.get::<GrouperCheckpoint>(CHECKPOINT_AREA, hash).await?)
            }
            None => {
                saved.offset = 0;
                Grouper::default()
            }
        };
        Ok((saved, grouper))
    }

    /// Reads the page `offset` findings into `query`'s window, heartbeating `saved` every 15 s
    /// while the read lasts.
    async fn read_page(
        &self,
        ctx: &ActivityContext,
        query: &CdrQuery,
        offset: u64,
        saved: &ReadProgress,
    ) -> Result<CdrPage<CdrFinding>, ActivityError> {
        let read = self.qualys.cdr_findings_page(query, offset);
        tokio::pin!(read);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
        let page = loop {
            tokio::select! {
                r = &mut read => break r,
                _ = tick.tick() => {
                    let _ = ctx.record_heartbeat(saved.clone()).await;
                }
            }
        };
        page.map_err(IntoFailure::into_failure)
    }

    /// Stores a window's batch, if it holds any policy; its hash.
    async fn store_batch(&self, batch: &Batch) -> Result<Option<String>, ActivityError> {
        if batch.is_empty() {
            return Ok(None);
        }
        let doc: Vec<(&String, &PolicyKey, &Evidence)> =
            batch.iter().map(|(n, (k, e))| (n, k, e)).collect();
        Ok(Some(self.put(BATCH_AREA, &doc).await?))
    }

    async fn publish_generated(
        &self,
        policy_set: &str,
        output: &OutputSettings,
        removed: &[String],
        generation: Generation,
    ) -> Result<PublishReport, ActivityError> {
        let client = match &output.kubernetes {
            Some(target) => Some(
                self.client(target)
                    .await
                    .map_err(IntoFailure::into_failure)?,
            ),
            None => None,
        };
        let mut report = publish(
            policy_set,
            output,
            removed,
            &generation.policies,
            client.as_ref(),
        )
        .await
        .map_err(IntoFailure::into_failure)?;
        report.refused.extend(generation.refused);
        info!(
            created = report.created.len(),
            updated = report.updated.len(),
            unchanged = report.unchanged.len(),
            deleted = report.deleted.len(),
            refused = report.refused.len(),
            "policies published"
        );
        Ok(report)
    }
}

/// Adds a page's findings to `grouper`; the items it could not read count too (as skipped).
fn add_page(grouper: &mut Grouper, page: &CdrPage<CdrFinding>) {
    for f in &page.items {
        grouper.add(observe(f));
    }
    for _ in page.items.len() as u64..page.read {
        grouper.add(Err(SkipReason::NotAnObject.into()));
    }
}

/// How a publish request wants its policies written (both publish activities render this way).
fn render_options(
    policy_set: &str,
    tetragon_version: TetragonVersion,
    audit_style: AuditStyle,
) -> RenderOptions {
    RenderOptions {
        tetragon_version,
        audit_style,
        policy_set: Some(policy_set.to_string()),
    }
}

/// A window's evidence by policy name.
fn by_name(groups: Vec<(PolicyKey, Evidence)>) -> Batch {
    let mut batch: Batch = BTreeMap::new();
    for (key, evidence) in groups {
        match batch.entry(key.name()) {
            Entry::Vacant(v) => {
                v.insert((key, evidence));
            }
            // Two workloads whose names collide feed one policy, as they always did.
            Entry::Occupied(mut o) => o.get_mut().1.merge(&evidence),
        }
    }
    batch
}

/// `2026-01-10T16:45:00Z` → `2026-01-10T16:45:00.000Z` (start) / `.999Z` (end), the format the
/// CDR API is called with.
fn with_millis(t: &str, millis: &str) -> String {
    match t.strip_suffix('Z') {
        Some(base) if !base.contains('.') => format!("{base}.{millis}Z"),
        _ => t.to_string(),
    }
}

fn cdr_query(q: &FetchFindings) -> CdrQuery {
    CdrQuery {
        cloud_provider: q.filters.cloud_provider.clone(),
        severity: q.filters.severity.clone(),
        resource_type: q.filters.resource_type.clone(),
        ..CdrQuery::new(
            with_millis(&q.start_at, "000"),
            with_millis(&q.end_at, "999"),
        )
    }
}

#[activities]
impl CdrActivities {
    /// Reads every page of the window's findings and groups them into evidence per policy (runs
    /// from before `cdr-limits`).
    #[activity(definition = contracts::FetchCdrEvidence)]
    pub async fn fetch_evidence(
        self: Arc<Self>,
        _ctx: ActivityContext,
        q: FetchFindings,
    ) -> Result<EvidenceBatch, ActivityError> {
        let findings = self
            .qualys
            .cdr_findings(&cdr_query(&q))
            .await
            .map_err(IntoFailure::into_failure)?;
        let mut grouper = Grouper::default();
        for f in &findings {
            grouper.add(observe(f));
        }
        let (groups, report) = grouper.finish();
        info!(
            findings = report.findings,
            used = report.used,
            policies = groups.len(),
            "CDR findings read"
        );
        Ok(EvidenceBatch { groups, report })
    }

    /// Renders, validates and publishes the policy set (runs from before `cdr-limits`). Enforced
    /// policies block on their category's own values only: nobody approved observed ones.
    #[activity(definition = contracts::PublishCdrPolicies)]
    pub async fn publish(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: PublishPolicies,
    ) -> Result<PublishReport, ActivityError> {
        let opts = render_options(
            &request.policy_set,
            request.tetragon_version,
            request.audit_style,
        );
        let generation = generate_with(
            request
                .policies
                .iter()
                .map(|p| (&p.key, &p.evidence, p.enforcement, None)),
            &opts,
        );
        let (set, output, removed) = (&request.policy_set, &request.output, &request.removed);
        self.publish_generated(set, output, removed, generation)
            .await
    }

    /// Reads every page of a window's findings, heartbeating after each (a retried attempt
    /// resumes from its last stored checkpoint), groups them and stores the batch.
    #[activity(definition = contracts::FetchCdrWindow)]
    pub async fn fetch_window(
        self: Arc<Self>,
        ctx: ActivityContext,
        q: FetchFindings,
    ) -> Result<WindowBatch, ActivityError> {
        let query = CdrQuery {
            limit: FINDINGS_PER_PAGE,
            ..cdr_query(&q)
        };
        let (mut saved, mut grouper) = self.resume_read(&ctx).await?;
        let resumed_at = saved.offset;
        let mut offset = saved.offset;
        let mut pages = 0u64;
        loop {
            let page = self.read_page(&ctx, &query, offset, &saved).await?;
            add_page(&mut grouper, &page);
            pages += 1;
            offset += page.read;
            if page.last {
                break;
            }
            if pages.is_multiple_of(CHECKPOINT_PAGES) {
                saved = ReadProgress {
                    offset,
                    checkpoint: Some(self.put(CHECKPOINT_AREA, &grouper.checkpoint()).await?),
                };
            }
            let _ = ctx.record_heartbeat(saved.clone()).await;
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
        }
        let (groups, report) = grouper.finish();
        let batch = by_name(groups);
        info!(
            findings = report.findings,
            used = report.used,
            policies = batch.len(),
            pages,
            resumed_at,
            "CDR findings read"
        );
        let first: Vec<String> = batch.keys().take(PAGE_POLICIES).cloned().collect();
        let hash = self.store_batch(&batch).await?;
        Ok(WindowBatch {
            batch: hash,
            policies: batch.len() as u64,
            first,
            report,
        })
    }

    /// Merges a page of a stored batch into the named policies' stored evidence. Stops before
    /// its answer would exceed the payload budget; what is left is named in `next`.
    #[activity(definition = contracts::MergeCdrEvidence)]
    pub async fn merge_evidence(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: MergeEvidence,
    ) -> Result<MergedPage, ActivityError> {
        let batch = self.batch(&request.batch).await?;
        let version = request.tetragon_version;
        let work: Vec<(String, Option<String>, PolicyKey, Evidence)> = request
            .items
            .iter()
            .filter_map(|(name, existing)| {
                let (key, evidence) = batch.get(name)?.clone();
                Some((name.clone(), existing.clone(), key, evidence))
            })
            .collect();
        let merged: Vec<PolicyUpdate> = futures::stream::iter(work)
            .map(|(name, existing, key, evidence)| {
                let this = self.clone();
                async move {
                    let doc = match existing {
                        Some(hash) => {
                            let mut doc: EvidenceDoc = this.get(EVIDENCE_AREA, &hash).await?;
                            doc.evidence.merge(&evidence);
                            doc
                        }
                        None => EvidenceDoc { key, evidence },
                    };
                    this.store_evidence(name, doc, version).await
                }
            })
            .buffered(STORE_CONCURRENCY)
            .try_collect()
            .await?;
        // Keep the answer within the budget: the first updates that fit (at least one).
        let mut bytes = 0;
        let mut updates = Vec::new();
        for u in merged {
            let size = json(&u).len() + 1;
            if !updates.is_empty() && bytes + size > PAYLOAD_BUDGET - 16 * 1024 {
                break;
            }
            bytes += size;
            updates.push(u);
        }
        let done: BTreeSet<&str> = updates.iter().map(|u| u.name.as_str()).collect();
        let mut next: Vec<String> = request
            .items
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| batch.contains_key(n) && !done.contains(n.as_str()))
            .collect();
        if let Some((last, _)) = request.items.last() {
            let room = PAGE_POLICIES.saturating_sub(next.len());
            next.extend(
                batch
                    .range::<String, _>((Bound::Excluded(last.clone()), Bound::Unbounded))
                    .take(room)
                    .map(|(n, _)| n.clone()),
            );
        }
        Ok(MergedPage { updates, next })
    }

    /// Renders policies from their stored evidence and publishes them (one batch).
    #[activity(definition = contracts::PublishCdrBatch)]
    pub async fn publish_batch(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: PublishBatch,
    ) -> Result<PublishReport, ActivityError> {
        let opts = render_options(
            &request.policy_set,
            request.tetragon_version,
            request.audit_style,
        );
        let hashes: Vec<String> = request.items.iter().map(|i| i.evidence.clone()).collect();
        let docs: Vec<EvidenceDoc> = futures::stream::iter(hashes)
            .map(|hash| {
                let this = self.clone();
                async move { this.get::<EvidenceDoc>(EVIDENCE_AREA, &hash).await }
            })
            .buffered(STORE_CONCURRENCY)
            .try_collect()
            .await?;
        let generation = generate_with(
            request.items.iter().zip(&docs).map(|(item, doc)| {
                (
                    &doc.key,
                    &doc.evidence,
                    item.enforcement,
                    item.approved.clone(),
                )
            }),
            &opts,
        );
        let (set, output, removed) = (&request.policy_set, &request.output, &request.removed);
        self.publish_generated(set, output, removed, generation)
            .await
    }

    /// Stores a chunk of CdrToPolicy's state; its hash.
    #[activity(definition = contracts::SaveCdrState)]
    pub async fn save_state(
        self: Arc<Self>,
        _ctx: ActivityContext,
        chunk: Vec<PolicyRecord>,
    ) -> Result<String, ActivityError> {
        self.put(STATE_AREA, &chunk).await
    }

    /// Loads a chunk of CdrToPolicy's state.
    #[activity(definition = contracts::LoadCdrState)]
    pub async fn load_state(
        self: Arc<Self>,
        _ctx: ActivityContext,
        hash: String,
    ) -> Result<Vec<PolicyRecord>, ActivityError> {
        self.get(STATE_AREA, &hash).await
    }

    /// Stores the evidence of records carried by a run from before `cdr-limits`.
    #[activity(definition = contracts::ImportCdrLegacy)]
    pub async fn import_legacy(
        self: Arc<Self>,
        _ctx: ActivityContext,
        request: ImportLegacy,
    ) -> Result<Vec<PolicyUpdate>, ActivityError> {
        let version = request.tetragon_version;
        futures::stream::iter(request.records)
            .map(|r| {
                let this = self.clone();
                let doc = EvidenceDoc {
                    key: r.key,
                    evidence: r.evidence,
                };
                async move { this.store_evidence(r.name, doc, version).await }
            })
            .buffered(STORE_CONCURRENCY)
            .try_collect()
            .await
    }
}
