//! `qflows bridge`: cloud event deliveries → `ScanOnDeploy` workflows, none lost, none doubled.
//!
//! | Route | Sender |
//! |---|---|
//! | `POST /events/aws` | EventBridge API destination (one event per request) |
//! | `POST, OPTIONS /events/azure` | Event Grid: its own schema (with the validation handshake) or CloudEvents |
//! | `POST, OPTIONS /events/cloudevents` | any CloudEvents 1.0 sender: structured, batch or binary mode |
//! | `GET /healthz`, `/readyz`, `/metrics` | probes (ready = Temporal answers) and Prometheus |
//!
//! Each event's workflow ID comes from the event's own id ([`delivery`]), and a start under an ID
//! that has ever run is a duplicate, so a redelivery never starts a second scan. The answer is
//! 2xx only once Temporal holds the workflow; otherwise 503, and the sender delivers again. A
//! batch's events start concurrently, and every delivery is answered within its sender's
//! deadline ([`http`]); connecting to Temporal holds no lock ([`starter`]).
//! [`sqs`] is the same for a queue.

pub mod delivery;
pub mod http;
pub mod metrics;
pub mod sqs;
pub mod starter;

use crate::config::{ConfigError, TemporalArgs};
use axum::http::HeaderName;
use clap::Args;
use qflows_activities::qualys::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Flags of `qflows bridge`.
#[derive(Debug, Clone, Args)]
pub struct BridgeArgs {
    /// Address to listen on (use 0.0.0.0:8089 in a container).
    #[arg(long, env = "QFLOWS_BRIDGE_LISTEN", default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,
    /// File holding the key senders must present (a mounted secret). Otherwise the key comes from
    /// `QFLOWS_BRIDGE_KEY`, which has no flag: secrets never go on a command line.
    #[arg(long, env = "QFLOWS_BRIDGE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Header carrying the key from an EventBridge connection with API-key authorization.
    #[arg(
        long,
        env = "QFLOWS_BRIDGE_API_KEY_HEADER",
        default_value = "x-api-key"
    )]
    pub api_key_header: String,
    /// Bodies larger than this get 413.
    #[arg(long, env = "QFLOWS_BRIDGE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Deadline of an EventBridge delivery (`/events/aws`) and of each SQS message, arrival to
    /// answer: events not started by then are answered 503 (API destinations give up after 5 s).
    #[arg(long, env = "QFLOWS_BRIDGE_START_TIMEOUT_SECS", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub start_timeout_secs: u64,
    /// Deadline of an Event Grid or CloudEvents delivery (`/events/azure`,
    /// `/events/cloudevents`), arrival to answer (Event Grid waits 30 s).
    #[arg(long, env = "QFLOWS_BRIDGE_AZURE_TIMEOUT_SECS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub azure_timeout_secs: u64,
    /// Events of one delivery (an Event Grid or CloudEvents batch) started at once.
    #[arg(long, env = "QFLOWS_BRIDGE_START_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub start_concurrency: u64,
    /// Also read EventBridge events from this SQS queue (long polling).
    #[arg(long, env = "QFLOWS_BRIDGE_SQS_QUEUE_URL")]
    pub sqs_queue_url: Option<String>,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
}

impl BridgeArgs {
    /// The key: from `--key-file`, else `QFLOWS_BRIDGE_KEY`; refused when short.
    pub fn key(&self) -> Result<Secret, ConfigError> {
        let (key, variable) = match &self.key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    variable: "QFLOWS_BRIDGE_KEY_FILE",
                    problem: format!("cannot read {}: {e}", path.display()),
                })?;
                (text.trim().to_string(), "QFLOWS_BRIDGE_KEY_FILE")
            }
            None => (
                crate::config::bridge_key_from_env().unwrap_or_default(),
                "QFLOWS_BRIDGE_KEY",
            ),
        };
        if key.is_empty() {
            return Err(ConfigError::Missing(
                "QFLOWS_BRIDGE_KEY: the bridge needs a key senders present (set QFLOWS_BRIDGE_KEY or QFLOWS_BRIDGE_KEY_FILE; e.g. `openssl rand -hex 32`)".into(),
            ));
        }
        if key.len() < 16 {
            return Err(ConfigError::Invalid {
                variable,
                problem: "the key is shorter than 16 characters".into(),
            });
        }
        Ok(Secret::new(key))
    }
}

/// A running bridge.
pub struct Bridge {
    /// Where it listens (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Its counters.
    pub metrics: Arc<metrics::Metrics>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    sqs: Option<tokio::task::JoinHandle<()>>,
}

impl Bridge {
    /// Binds and serves with Temporal as the starter.
    pub async fn start(
        temporal: TemporalArgs,
        args: BridgeArgs,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let starter = starter::TemporalStarter::new(
            temporal,
            args.task_queue.clone(),
            Duration::from_secs(args.start_timeout_secs.max(1)),
        );
        Self::with_starter(args, starter, shutdown).await
    }

    /// Binds and serves with any starter.
    pub async fn with_starter<S: starter::Starter>(
        args: BridgeArgs,
        starter: S,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let key = args.key()?;
        let api_key_header = HeaderName::from_bytes(
            args.api_key_header.to_ascii_lowercase().as_bytes(),
        )
        .map_err(|_| ConfigError::Invalid {
            variable: "QFLOWS_BRIDGE_API_KEY_HEADER",
            problem: format!("`{}` is not a header name", args.api_key_header),
        })?;
        let metrics = Arc::new(metrics::Metrics::default());
        let shared = Arc::new(http::Shared {
            key,
            api_key_header,
            max_body_bytes: args.max_body_bytes,
            starter,
            metrics: metrics.clone(),
            aws_deadline: Duration::from_secs(args.start_timeout_secs.max(1)),
            azure_deadline: Duration::from_secs(args.azure_timeout_secs.max(1)),
            start_concurrency: usize::try_from(args.start_concurrency.max(1)).unwrap_or(1),
        });
        let sqs = match &args.sqs_queue_url {
            Some(url) => {
                let client = sqs::client(url, &crate::config::ProcessEnv::read()).await;
                Some(tokio::spawn(sqs::run(shared.clone(), client, url.clone())))
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| ConfigError::Invalid {
                variable: "QFLOWS_BRIDGE_LISTEN",
                problem: format!("cannot listen on {}: {e}", args.listen),
            })?;
        let addr = listener.local_addr()?;
        let app = http::router(shared);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        });
        Ok(Self {
            addr,
            metrics,
            server,
            sqs,
        })
    }

    /// Waits until the server stops (after the shutdown future resolves and in-flight
    /// deliveries are answered).
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await;
        if let Some(sqs) = self.sqs {
            sqs.abort();
        }
        served??;
        Ok(())
    }
}

/// `qflows bridge`: serve until SIGTERM/ctrl-c.
pub async fn run(temporal: TemporalArgs, args: BridgeArgs) -> anyhow::Result<()> {
    let sqs = args.sqs_queue_url.clone();
    let bridge = Bridge::start(temporal, args, crate::worker::shutdown_signal()).await?;
    tracing::info!(addr = %bridge.addr, sqs = sqs.as_deref().unwrap_or("-"), "bridge listening");
    eprintln!("qflows bridge listening on http://{}", bridge.addr);
    bridge.wait().await
}
