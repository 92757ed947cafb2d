//! The activity behind `Inventory`: list what runs in a scope, store it, tell the entities.
//!
//! 1. [`list::Lister`] lists the scope's running containers (heartbeating the count per page).
//! 2. [`group`] folds them by digest — a count and a bounded sample of places each — and keeps
//!    the containers without a digest apart (bounded too).
//! 3. The [`InventoryRecord`] goes to the results store, at `inventory/<scope>/<taken at>.json`
//!    and `inventory/<scope>/latest.json` (what `qflows report` reads).
//! 4. Each running digest's `ImageScan` entity gets a `running` signal by signal-with-start,
//!    at most [`SIGNAL_CONCURRENCY`] at a time: one Temporal call per digest, never per pod; an
//!    entity that does not run starts as a backfill (its scan runs on the rescan queue).
//!
//! A retried attempt does it all again: listing is read-only, the record is overwritten, and a
//! second `running` signal says what the first one said.

// `#[activities]` generates undocumented marker constants; everything written here is documented.
#![allow(missing_docs)]

pub mod list;

use crate::failure::IntoFailure;
use crate::heartbeat;
use crate::results::ResultsStore;
use crate::scan::design_memo;
use futures::StreamExt;
use list::Lister;
use qflows_workflows::FailureType;
use qflows_workflows::ImageScan;
use qflows_workflows::inventory::contracts;
use qflows_workflows::inventory::model::{
    MAX_PLACES, MAX_UNRESOLVED, RunningContainer, RunningDigest, bounded_place,
};
use qflows_workflows::inventory::{
    InventoryInput, InventoryRecord, InventoryScope, InventorySummary, RunningAt,
};
use qflows_workflows::scan::ImageRef;
use qflows_workflows::scan::image_scan::input::ImageScanInput;
use qflows_workflows::scan::model::image_scan_id;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use temporalio_client::{Client, WorkflowStartOptions};
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::{info, warn};

/// Entities signalled at once.
pub const SIGNAL_CONCURRENCY: usize = 16;

/// The `Inventory` activities.
pub struct InventoryActivities {
    lister: Lister,
    temporal: Client,
    /// The queue `ImageScan` entities run on (they start there).
    entity_queue: String,
    results: ResultsStore,
}

impl InventoryActivities {
    /// Activities that list with `lister`, start entities on `entity_queue` and store records
    /// in `results`.
    pub fn new(
        lister: Lister,
        temporal: Client,
        entity_queue: String,
        results: ResultsStore,
    ) -> Self {
        Self {
            lister,
            temporal,
            entity_queue,
            results,
        }
    }

    /// Tells one digest's entity where it runs, starting it when none runs.
    async fn tell(&self, digest: &RunningDigest, at: RunningAt) -> Result<(), ActivityError> {
        let input = ImageScanInput {
            digest: digest.digest.clone(),
            image: digest.image.clone(),
            event_accepted_at_ms: None,
            carried: None,
            backfill: true,
        };
        let mut options =
            WorkflowStartOptions::new(self.entity_queue.clone(), image_scan_id(&digest.digest))
                .build();
        options.memo = Some(design_memo());
        self.temporal
            .signal_with_start_workflow(ImageScan::run, input, ImageScan::running, at, options)
            .await
            .map(drop)
            .map_err(|e| {
                ActivityError::application(
                    ApplicationFailure::builder(format!(
                        "tell {} it runs: {e}",
                        image_scan_id(&digest.digest)
                    ))
                    .type_name(FailureType::TemporalUnavailable.into())
                    .build(),
                )
            })
    }
}

#[activities]
impl InventoryActivities {
    /// Lists what runs in the scope, stores the record, tells every running digest's entity.
    #[activity(definition = contracts::TakeInventory)]
    pub async fn take(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: InventoryInput,
    ) -> Result<InventorySummary, ActivityError> {
        let scope_id = input.scope.id();
        let listed = Arc::new(AtomicU64::new(0));
        let progress = {
            let listed = listed.clone();
            move |n: u64| listed.store(n, Ordering::Relaxed)
        };
        let containers = heartbeat::beating(
            &ctx,
            &format!("listing {scope_id}"),
            self.lister.list(&input.scope, &progress),
        )
        .await
        .map_err(IntoFailure::into_failure)?;
        let now = SystemTime::now();
        let record = group(
            &input.scope,
            containers,
            qflows_workflows::clock::rfc3339(now),
        );
        let record_ref = heartbeat::beating(
            &ctx,
            "storing the inventory",
            self.results.store_inventory(&record),
        )
        .await
        .map_err(IntoFailure::into_failure)?;
        let seen_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let stale_after = input
            .stale_after_secs
            .unwrap_or(qflows_workflows::inventory::model::DEFAULT_STALE_AFTER_SECS);
        let told = heartbeat::beating(&ctx, "telling the entities", async {
            let tells = record.digests.clone().into_iter().map(|d| {
                let at = RunningAt {
                    scope_id: scope_id.clone(),
                    count: d.count,
                    places: d.places.clone(),
                    seen_secs,
                    until_secs: seen_secs.saturating_add(stale_after),
                };
                let this = self.clone();
                async move { this.tell(&d, at).await }
            });
            futures::stream::iter(tells)
                .buffer_unordered(SIGNAL_CONCURRENCY)
                .collect::<Vec<Result<(), ActivityError>>>()
                .await
        })
        .await;
        let signalled = told.iter().filter(|r| r.is_ok()).count() as u64;
        // Any entity not told fails the attempt: the retry tells them all again (harmless for
        // those told already), so no running digest is left unwatched.
        if let Some(Err(e)) = told.into_iter().find(Result::is_err) {
            warn!(scope = %scope_id, signalled, "not every entity could be told; retrying");
            return Err(e);
        }
        info!(
            scope = %scope_id,
            containers = record.containers,
            digests = record.digests.len(),
            unresolved = record.unresolved_count,
            "inventory taken"
        );
        Ok(InventorySummary {
            scope_id,
            containers: record.containers,
            digests: record.digests.len() as u64,
            unresolved: record.unresolved_count,
            signalled,
            record_ref,
        })
    }
}

/// Whether `digest` is exactly `sha256:` and 64 lowercase hex digits.
pub fn is_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Folds listed containers into the scope's record: one entry per digest, most containers
/// first, each with a count, a bounded sample of places and the reference listed most often.
pub fn group(
    scope: &InventoryScope,
    containers: Vec<RunningContainer>,
    taken_at: String,
) -> InventoryRecord {
    let total = containers.len() as u64;
    let mut by_digest: HashMap<String, DigestTally> = HashMap::new();
    let mut unresolved = Vec::new();
    let mut unresolved_count = 0u64;
    for c in containers {
        if let Some(reason) = unusable(&c) {
            unresolved_count += 1;
            if unresolved.len() < MAX_UNRESOLVED {
                unresolved.push(RunningContainer {
                    digest: None,
                    image: c.image.chars().take(512).collect(),
                    place: bounded_place(&c.place),
                    unresolved: Some(reason),
                });
            }
            continue;
        }
        by_digest
            .entry(c.digest.unwrap_or_default())
            .or_default()
            .add(&c.place, c.image);
    }
    let mut digests: Vec<RunningDigest> = by_digest
        .into_iter()
        .filter_map(|(digest, tally)| tally.into_running(digest))
        .collect();
    digests.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.digest.cmp(&b.digest)));
    InventoryRecord {
        scope: scope.clone(),
        scope_id: scope.id(),
        taken_at,
        containers: total,
        digests,
        unresolved,
        unresolved_count,
    }
}

/// Why `c` cannot count under a digest (none listed, a malformed one, an image reference that
/// does not parse); `None` when it can.
fn unusable(c: &RunningContainer) -> Option<String> {
    match c.digest.as_deref() {
        Some(d) if !is_digest(d) => Some("the listed digest is not sha256:<64 hex>".to_string()),
        Some(_) if ImageRef::parse(&c.image).is_err() => {
            Some("the image reference does not parse".to_string())
        }
        Some(_) => None,
        None => Some(
            c.unresolved
                .clone()
                .unwrap_or_else(|| "no digest listed".into()),
        ),
    }
}

/// What [`group`] gathers for one digest.
#[derive(Default)]
struct DigestTally {
    count: u64,
    places: Vec<String>,
    references: HashMap<String, u64>,
}

impl DigestTally {
    /// One more container at `place`, listed as `image`.
    fn add(&mut self, place: &str, image: String) {
        self.count += 1;
        if self.places.len() < MAX_PLACES {
            self.places.push(bounded_place(place));
        }
        // Bounded: at most a few distinct references per digest are counted.
        if self.references.len() < 16 || self.references.contains_key(&image) {
            *self.references.entry(image).or_default() += 1;
        }
    }

    /// The record's entry for `digest`, named by the reference listed most often (ties: the
    /// smallest); `None` when that reference does not parse.
    fn into_running(self, digest: String) -> Option<RunningDigest> {
        let (reference, _) = self
            .references
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))?;
        let mut image = ImageRef::parse(reference).ok()?;
        image.digest = None;
        Some(RunningDigest {
            digest,
            image,
            count: self.count,
            places: self.places,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> InventoryScope {
        InventoryScope::Kubernetes {
            cluster: "prod".into(),
            context: None,
        }
    }

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn container(d: Option<String>, image: &str, place: &str) -> RunningContainer {
        RunningContainer {
            digest: d,
            image: image.into(),
            place: place.into(),
            unresolved: None,
        }
    }

    #[test]
    fn containers_fold_into_digests_with_counts_and_bounded_places() {
        let mut containers: Vec<RunningContainer> = (0..3000)
            .map(|i| {
                container(
                    Some(digest((i % 80) as u8)),
                    if i % 3 == 0 {
                        "nginx:1.27"
                    } else {
                        "docker.io/library/nginx:1.27"
                    },
                    &format!("k8s:ns/pod/p{i}/c"),
                )
            })
            .collect();
        containers.push(container(None, "ghcr.io/x/y:1", "k8s:ns/pod/q/c"));
        containers.push(container(
            Some("sha256:XYZ".into()),
            "a:1",
            "k8s:ns/pod/r/c",
        ));
        let record = group(&scope(), containers, "2026-12-01T00:00:00Z".into());
        assert_eq!(record.containers, 3002);
        assert_eq!(record.digests.len(), 80);
        assert_eq!(record.digests.iter().map(|d| d.count).sum::<u64>(), 3000);
        assert!(record.digests.iter().all(|d| d.places.len() == MAX_PLACES));
        assert!(record.digests.windows(2).all(|w| w[0].count >= w[1].count));
        assert_eq!(record.unresolved_count, 2);
        assert_eq!(record.unresolved.len(), 2);
        assert!(
            record.unresolved[1]
                .unresolved
                .as_deref()
                .unwrap()
                .contains("sha256")
        );
        // The reference listed most often, without its digest.
        let first = &record.digests[0];
        assert_eq!(first.image.repository, "library/nginx");
        assert_eq!(first.image.digest, None);
    }

    #[test]
    fn unresolved_containers_are_bounded() {
        let containers = (0..5000)
            .map(|i| container(None, "x:1", &format!("ecs:c/task/{i}")))
            .collect();
        let record = group(&scope(), containers, "t".into());
        assert_eq!(record.unresolved_count, 5000);
        assert_eq!(record.unresolved.len(), MAX_UNRESOLVED);
        assert!(record.digests.is_empty());
    }

    #[test]
    fn only_exact_sha256_digests_count() {
        assert!(is_digest(&digest(1)));
        assert!(!is_digest(&digest(1).to_uppercase()));
        assert!(!is_digest("sha256:abc"));
        assert!(!is_digest(&format!("sha512:{}", "a".repeat(64))));
        assert!(!is_digest(&format!("{}\n", digest(1))));
    }
}
