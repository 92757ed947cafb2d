//! Where verdicts come from: the digest's `ImageScan` entity (query `result`), cached in memory
//! for a TTL; a digest with no result gets its scan started (fire-and-forget).
//!
//! Lookups run in their own tasks: a slow one that ends after the answer was given still fills
//! the cache for the next request, and no request waits longer than its deadline.

use crate::config::TemporalArgs;
use parking_lot::Mutex;
use qflows_workflows::ImageScan;
use qflows_workflows::scan::ImageRef;
use qflows_workflows::scan::image_scan::input::ImageScanInput;
use qflows_workflows::scan::model::{ImageResult, entity_task_queue, image_scan_id};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temporalio_client::{Client, WorkflowQueryOptions};
use tokio::sync::OnceCell;

/// A digest with no result yet is asked again after at most this long (its scan may finish).
pub const UNKNOWN_TTL: Duration = Duration::from_secs(5);
/// Digests kept in the cache; past it, expired entries go, then everything (it refills).
pub const MAX_CACHED: usize = 20_000;

/// A boxed future (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The entities, as the webhook uses them.
pub trait Entities: Send + Sync + 'static {
    /// The entity's `result`: `Ok(None)` when it has none or does not exist; `Err` when it
    /// cannot be asked (Temporal down).
    fn result(&self, digest: &str) -> BoxFuture<'_, Result<Option<ImageResult>, String>>;
    /// Starts the digest's entity unless it runs (its first scan begins at once).
    fn start_scan(&self, image: ImageRef, digest: String) -> BoxFuture<'_, Result<(), String>>;
}

/// The entities in Temporal, through a client connected on first use (the webhook starts and
/// answers while Temporal is down).
pub struct TemporalEntities {
    temporal: TemporalArgs,
    task_queue: String,
    client: Mutex<Arc<OnceCell<Client>>>,
}

impl TemporalEntities {
    /// Entities on `task_queue`'s workers.
    pub fn new(temporal: TemporalArgs, task_queue: String) -> Self {
        Self {
            temporal,
            task_queue,
            client: Mutex::new(Arc::new(OnceCell::new())),
        }
    }

    /// The client, connecting if needed (a failed attempt is retried by the next caller).
    async fn client(&self) -> Result<Client, String> {
        let cell = self.client.lock().clone();
        cell.get_or_try_init(|| async {
            crate::temporal::connect(&self.temporal, "qflows-admission")
                .await
                .map_err(|e| format!("{e:#}"))
        })
        .await
        .cloned()
    }

    /// Whether Temporal answers now (for `/readyz`).
    pub async fn ready(&self) -> bool {
        self.client().await.is_ok()
    }
}

impl Entities for TemporalEntities {
    fn result(&self, digest: &str) -> BoxFuture<'_, Result<Option<ImageResult>, String>> {
        let id = image_scan_id(digest);
        let digest = digest.to_string();
        Box::pin(async move {
            let client = self.client().await?;
            match client
                .get_workflow_handle::<ImageScan>(id)
                .query(ImageScan::result, (), WorkflowQueryOptions::default())
                .await
            {
                Ok(result) => Ok(result),
                // Never deployed (or its run ended): no result.
                Err(temporalio_client::errors::WorkflowQueryError::NotFound(_)) => Ok(None),
                Err(e) => Err(format!("query {}: {e}", image_scan_id(&digest))),
            }
        })
    }

    fn start_scan(&self, image: ImageRef, digest: String) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let client = self.client().await?;
            let input = ImageScanInput {
                digest,
                image,
                event_accepted_at_ms: None,
                carried: None,
                backfill: false,
            };
            qflows_activities::scan::start_entity(
                &client,
                &entity_task_queue(&self.task_queue),
                input,
            )
            .await
            .map_err(|e| e.to_string())
        })
    }
}

/// What the cache knows of a digest.
#[derive(Debug, Clone)]
enum Entry {
    /// A lookup is under way: wait for it.
    Pending(tokio::sync::watch::Receiver<Option<Option<ImageResult>>>),
    /// Known until `until`.
    Known {
        result: Option<Box<ImageResult>>,
        until: Instant,
    },
}

/// Results by digest, with a TTL; one lookup per digest at a time.
pub struct ResultCache {
    entities: Arc<dyn Entities>,
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

/// Where a result came from (for the answer's latency accounting and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cache.
    Cache,
    /// The entity, now.
    Entity,
}

impl ResultCache {
    /// A cache over `entities`.
    pub fn new(entities: Arc<dyn Entities>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            entities,
            ttl,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// The digest's result: from the cache, else from its entity (a digest with none gets its
    /// scan started). `Err` when the entity could not answer (the caller's deadline bounds the
    /// wait; the lookup goes on and fills the cache).
    pub async fn result(
        self: &Arc<Self>,
        image: &ImageRef,
        digest: &str,
    ) -> Result<(Option<ImageResult>, Source), String> {
        let mut receiver = {
            let mut entries = self.entries.lock();
            match entries.get(digest) {
                Some(Entry::Known { result, until }) if *until > Instant::now() => {
                    return Ok((result.as_deref().cloned(), Source::Cache));
                }
                Some(Entry::Pending(rx)) => rx.clone(),
                _ => {
                    if entries.len() >= MAX_CACHED {
                        let now = Instant::now();
                        entries
                            .retain(|_, e| matches!(e, Entry::Known { until, .. } if *until > now));
                        if entries.len() >= MAX_CACHED {
                            entries.clear();
                        }
                    }
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    entries.insert(digest.to_string(), Entry::Pending(rx.clone()));
                    tokio::spawn(self.clone().look_up(image.clone(), digest.to_string(), tx));
                    rx
                }
            }
        };
        loop {
            if let Some(found) = receiver.borrow_and_update().clone() {
                return Ok((found, Source::Entity));
            }
            if receiver.changed().await.is_err() {
                return Err("the entity could not be asked".into());
            }
        }
    }

    async fn look_up(
        self: Arc<Self>,
        image: ImageRef,
        digest: String,
        done: tokio::sync::watch::Sender<Option<Option<ImageResult>>>,
    ) {
        match self.entities.result(&digest).await {
            Ok(result) => {
                let ttl = if result.is_some() {
                    self.ttl
                } else {
                    self.ttl.min(UNKNOWN_TTL)
                };
                if result.is_none() {
                    // Fire-and-forget: the answer does not wait for the start.
                    let entities = self.entities.clone();
                    let (image, digest) = (image.clone(), digest.clone());
                    tokio::spawn(async move {
                        match entities.start_scan(image, digest.clone()).await {
                            Ok(()) => {
                                tracing::info!(%digest, "admission: started the scan of an unscanned digest")
                            }
                            Err(e) => {
                                tracing::warn!(%digest, error = %e, "admission: could not start a scan")
                            }
                        }
                    });
                }
                self.entries.lock().insert(
                    digest,
                    Entry::Known {
                        result: result.clone().map(Box::new),
                        until: Instant::now() + ttl,
                    },
                );
                let _ = done.send(Some(result));
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "admission: the entity could not be asked");
                self.entries.lock().remove(&digest);
                // Dropping `done` tells the waiters.
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qflows_workflows::scan::model::ImageStatus;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Counting {
        queries: AtomicU64,
        starts: AtomicU64,
        known: Option<ImageResult>,
        down: bool,
    }

    impl Entities for Counting {
        fn result(&self, _: &str) -> BoxFuture<'_, Result<Option<ImageResult>, String>> {
            self.queries.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if self.down {
                    Err("down".into())
                } else {
                    Ok(self.known.clone())
                }
            })
        }
        fn start_scan(&self, _: ImageRef, _: String) -> BoxFuture<'_, Result<(), String>> {
            self.starts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        }
    }

    fn image() -> ImageRef {
        ImageRef::parse(
            "r.example/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        )
        .unwrap()
    }

    #[tokio::test]
    async fn results_are_cached_and_unknown_digests_start_one_scan() {
        let known = ImageResult {
            digest: "sha256:0".into(),
            image: "r.example/app".into(),
            status: ImageStatus::Scanned,
            verdict: None,
            summary: None,
            result_ref: None,
            reason: None,
            backend: None,
            scanned_at: None,
            profile: None,
        };
        let entities = Arc::new(Counting {
            known: Some(known.clone()),
            ..Default::default()
        });
        let cache = ResultCache::new(entities.clone(), Duration::from_secs(60));
        let (first, source) = cache.result(&image(), "sha256:0").await.unwrap();
        assert_eq!((first.as_ref(), source), (Some(&known), Source::Entity));
        let (_, source) = cache.result(&image(), "sha256:0").await.unwrap();
        assert_eq!(source, Source::Cache);
        assert_eq!(entities.queries.load(Ordering::SeqCst), 1);
        assert_eq!(entities.starts.load(Ordering::SeqCst), 0);

        let unknown = Arc::new(Counting::default());
        let cache = ResultCache::new(unknown.clone(), Duration::from_secs(60));
        assert_eq!(cache.result(&image(), "sha256:1").await.unwrap().0, None);
        assert_eq!(
            cache.result(&image(), "sha256:1").await.unwrap().1,
            Source::Cache
        );
        tokio::task::yield_now().await;
        assert_eq!(unknown.starts.load(Ordering::SeqCst), 1);

        let down = Arc::new(Counting {
            down: true,
            ..Default::default()
        });
        let cache = ResultCache::new(down.clone(), Duration::from_secs(60));
        assert!(cache.result(&image(), "sha256:2").await.is_err());
        assert!(
            cache.result(&image(), "sha256:2").await.is_err(),
            "a failure is not cached"
        );
        assert_eq!(down.queries.load(Ordering::SeqCst), 2);
        assert_eq!(down.starts.load(Ordering::SeqCst), 0);
    }
}
