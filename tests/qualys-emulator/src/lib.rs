//! A stateful emulator of the Qualys gateway APIs qflows uses, for integration tests and for
//! `qflows dev` when no Qualys credentials exist.
//!
//! It follows the facts and samples collected in `docs/qualys-api.md` and
//! `samples/qualys/` (the section numbers below refer to that document):
//!
//! - **Auth (§1.1)**: `POST /auth` with the form `username`, `password`, `token=true` answers
//!   **201** with a raw JWT (HS512-shaped, claims like `auth-jwt-claims.json`, `modulesAllowed`
//!   includes `CS`, lifetime [`EmulatorConfig::token_ttl_secs`]); wrong credentials get 401
//!   `Unauthorized user`. Every other endpoint needs `Authorization: Bearer <jwt>` (or a
//!   pre-issued [`EmulatorConfig::api_tokens`] token), else 401 with the standard error body.
//! - **Container Security (§2.1–§2.5)** under `/csapi/v1.3` (and `v1.2`): the AWS base,
//!   connectors, registries (search by `registryUri`/`registryName` with **204** when nothing
//!   matches, create with one of three documented answer shapes, no de-duplication),
//!   on-demand registry schedules that pull what the emulated registry holds under a tag
//!   ([`RunningEmulator::push_image`]) and make that image **unknown (404)**, then `PENDING`,
//!   then `SUCCESS` (a `forceScan` of a scanned image keeps showing the old scan until the new
//!   one completes), image lists (filtered by `repo.*`, sorted by `created`, records that keep
//!   tags which moved to other images, `repoDigests` without the `sha256:` prefix as in the
//!   official sample), details/vulnerabilities/counts, and sensors. Errors use
//!   `{"errorCode":"<code> <REASON>","message","timestamp"}`; 1-based `pageNumber` paging.
//! - **CDR (§3.1, §3.2)**: `GET /cdr-api/rest/v1/findings/` with mandatory ISO-8601
//!   `startAt`/`endAt`, `offSet`/`limit` paging and the `{"content","totalElements"}` envelope.
//! - **Rate limits (§2.6)**: a sliding window per endpoint family (the documented table plus
//!   `cdr`), `X-RateLimit-Limit`/`-Window-Sec`/`-Remaining` on every answer of a limited family,
//!   and 429 with `X-RateLimit-ToWait-Sec` and `Retry-After` when the window is full.
//! - **Faults**: 5xx, 429 storms, latency, malformed bodies and dropped connections
//!   ([`Faults`]).
//! - **Observation**: [`Stats`] counts calls per route template, limit violations, faults,
//!   creations and the peak concurrency; the admin API under `/__emulator/` exposes the same
//!   controls as [`RunningEmulator`] to other processes.
//!
//! Not emulated: the bulk `/images/list` and `/containers` APIs, tags, compliance, software,
//! schedule update/cancel, and QQL beyond simple `field:value` terms.
//!
//! # Use in process
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use qualys_emulator::{Emulator, EmulatorConfig, Faults};
//! let qualys = Emulator::start(EmulatorConfig::default(), ([127, 0, 0, 1], 0).into()).await?;
//! let gateway = qualys.base_url(); // http://127.0.0.1:PORT
//! qualys.set_faults(Faults { throttle_429_rate: 0.3, ..Faults::default() });
//! // … run a client against `gateway`, then:
//! let stats = qualys.stats();
//! assert_eq!(stats.calls.get("POST /csapi/v1.3/registry"), Some(&1));
//! qualys.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Admin API (no auth, no limits, no faults, not counted)
//!
//! | Route | Body / answer |
//! |---|---|
//! | `GET /__emulator/health` | `{"status":"ok"}` |
//! | `GET /__emulator/stats` | [`Stats`] as JSON (snake_case fields) |
//! | `POST /__emulator/reset-stats` | 204 |
//! | `GET`/`PUT /__emulator/faults` | [`Faults`] JSON; 204 |
//! | `PUT /__emulator/rate-limits` | `[`[`RateLimitRule`]`]`; 204 (windows reset) |
//! | `POST /__emulator/images` | [`SeedImage`] JSON; 201 `{"sha"}` |
//! | `POST /__emulator/pushes` | [`PushedImage`] JSON (what a registry tag points to); 204 |
//! | `PUT /__emulator/cdr-findings` | an array or `{"content":[…]}`; 204 |
//! | `GET /__emulator/registries` | the registry objects |
//! | `POST /__emulator/sensors` | a sensor object (defaults filled); 201 with it |

mod admin;
mod auth;
mod cdr;
mod config;
mod faults;
mod http;
mod ids;
mod images;
mod limits;
mod qql;
mod registry;
mod routes;
mod server;
mod state;
mod stats;
mod time;

pub use config::{
    Duplicates, EmulatorConfig, Faults, PushedImage, RateLimitRule, RegistryCreateResponse, Seed,
    SeedImage, UnknownTags, VulnShape, cdr_findings_from_json, seed_images_from_json,
};
pub use stats::Stats;

use parking_lot::Mutex;
use serde_json::Value;
use state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts emulators.
pub struct Emulator;

impl Emulator {
    /// Binds `listen` (port 0 picks a free port) and serves `cfg` in a background task of the
    /// current Tokio runtime. Fails only if the address cannot be bound.
    pub async fn start(
        cfg: EmulatorConfig,
        listen: SocketAddr,
    ) -> std::io::Result<RunningEmulator> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg));
        let app =
            server::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!(error = %e, "qualys-emulator server failed");
            }
        });
        tracing::info!(%addr, "qualys-emulator listening");
        Ok(RunningEmulator {
            inner: Arc::new(Inner {
                addr,
                shared,
                stop: stop_tx,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

struct Inner {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop serving.
        let _ = self.stop.send(true);
    }
}

/// A running emulator. Clones share it; it stops on [`RunningEmulator::shutdown`] or when the
/// last clone is dropped.
#[derive(Clone)]
pub struct RunningEmulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RunningEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningEmulator")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl RunningEmulator {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://IP:PORT` (no trailing slash): the gateway URL to give clients.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.shared.stats.lock().clone()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        *self.inner.shared.stats.lock() = Stats::default();
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, f: Faults) {
        *self.inner.shared.faults.lock() = f;
    }

    /// Replaces the rate-limit rules (families not listed become unlimited) and empties the
    /// windows.
    pub fn set_rate_limits(&self, rules: Vec<RateLimitRule>) {
        self.inner.shared.set_rate_limits(&rules);
    }

    /// Adds an image (replacing one with the same registry/repository/tag or SHA).
    pub fn seed_image(&self, img: SeedImage) {
        self.inner.shared.world.lock().seed_image(img);
    }

    /// Tells the emulated registry that `registry/repository:tag` now points to a digest (a
    /// push, or a tag that moved): registry scans of the tag pull that digest, as Qualys pulls
    /// from the real registry.
    pub fn push_image(&self, image: PushedImage) {
        let PushedImage {
            registry,
            repository,
            tag,
            digest,
            vulnerabilities,
        } = image;
        self.inner
            .shared
            .world
            .lock()
            .push(&registry, &repository, &tag, &digest, vulnerabilities);
    }

    /// Replaces the CDR findings.
    pub fn set_cdr_findings(&self, f: Vec<Value>) {
        self.inner.shared.world.lock().cdr_findings = f;
    }

    /// Makes the CDR endpoint answer 403 Forbidden (as for a user without the CDR permission),
    /// or serve again.
    pub fn set_cdr_forbidden(&self, forbidden: bool) {
        self.inner.shared.world.lock().cdr_forbidden = forbidden;
    }

    /// Makes the next CDR request for page `offset` answer 503, once (a read that breaks
    /// midway).
    pub fn fail_cdr_page_once(&self, offset: u64) {
        self.inner.shared.world.lock().cdr_fail_once_at = Some(offset as i64);
    }

    /// Adds a sensor (a JSON object; `sensorUuid`, `hostname`, `status`, `registrySensor`, …
    /// are filled when missing) and returns it; `None` if it is not an object.
    pub fn add_sensor(&self, sensor: Value) -> Option<Value> {
        images::add_sensor(&self.inner.shared, sensor)
    }

    /// Forgets every sensor (a sensor that was removed or never phoned home).
    pub fn clear_sensors(&self) {
        self.inner.shared.world.lock().sensors.clear();
    }

    /// The registries as `GET /registry/{id}` shows them, in creation order.
    pub fn registries(&self) -> Vec<Value> {
        registry::all_registries(&self.inner.shared)
    }

    /// Every AWS connector (`name`, `arn`, `description`), in creation order.
    pub fn connectors(&self) -> Vec<Value> {
        self.inner.shared.world.lock().connectors.clone()
    }

    /// Every registry schedule created so far (`name`, `registryUuid`, `filters`, `createdMs`).
    pub fn schedules(&self) -> Vec<Value> {
        registry::all_schedules(&self.inner.shared)
    }

    /// Stops accepting connections, lets requests in flight finish (up to 5 s) and waits for
    /// the server task.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let task = self.inner.task.lock().take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}
