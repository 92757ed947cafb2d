//! The activities `CdrToPolicy` calls: name, input and output of each. Implemented in
//! `activities/src/cdr/`; registered in `workers/src/worker/queues.rs`.
//!
//! Activity type names are part of the wire contract (they are stored in workflow histories):
//! never rename one that has shipped.

use super::model::{
    EvidenceBatch, FetchFindings, ImportLegacy, MergeEvidence, MergedPage, PolicyRecord,
    PolicyUpdate, PublishBatch, PublishPolicies, PublishReport, WindowBatch,
};

activity_contract! {
    /// Reads the CDR findings of a window (all pages) and groups them into evidence per policy.
    FetchCdrEvidence = "cdr.FetchEvidence": FetchFindings => EvidenceBatch;

    /// Renders, validates and writes/applies policies (idempotent: unchanged ones are no-ops).
    PublishCdrPolicies = "cdr.Publish": PublishPolicies => PublishReport;

    /// Reads every page of a window's findings (heartbeating, resumable), groups them into
    /// evidence per policy and stores the batch; answers with its hash and the first names.
    FetchCdrWindow = "cdr.FetchWindow": FetchFindings => WindowBatch;

    /// Merges a stored batch into the named policies' stored evidence (one page).
    MergeCdrEvidence = "cdr.MergeEvidence": MergeEvidence => MergedPage;

    /// Renders policies from their stored evidence, validates and writes/applies them (a batch).
    PublishCdrBatch = "cdr.PublishBatch": PublishBatch => PublishReport;

    /// Stores a chunk of CdrToPolicy's state (for continue-as-new); answers with its hash.
    SaveCdrState = "cdr.SaveState": Vec<PolicyRecord> => String;

    /// Loads a chunk of CdrToPolicy's state by its hash.
    LoadCdrState = "cdr.LoadState": String => Vec<PolicyRecord>;

    /// Stores the evidence of records carried by a run from before `cdr-limits`.
    ImportCdrLegacy = "cdr.ImportLegacy": ImportLegacy => Vec<PolicyUpdate>;
}
