//! `qflows admission`: a Kubernetes validating admission webhook that answers from the
//! `ImageScan` entities' verdicts under the gate profiles.
//!
//! | File | Concern |
//! |---|---|
//! | [`review`] | AdmissionReview in and out; images, labels and break-glass read from objects |
//! | [`decide`] | image → digest → result → verdict under the scope's profile → decision |
//! | [`entities`] | the entities' `result`, cached with a TTL; scans started for unknown digests |
//! | [`tls`] | the serving certificate, reloaded when its files change |
//! | [`http`] | the HTTPS listener (`POST /validate`) and the metrics listener |
//! | [`metrics`] | `qflows_admission_*` |
//! | [`render`] | the shipped manifests, for GitOps (`qflows admission render`) |
//!
//! Every answer comes within `QFLOWS_ADMISSION_TIMEOUT_MS`; the shipped webhook configuration
//! fails open (`failurePolicy: Ignore`), so a webhook that is down admits everything.

pub mod decide;
pub mod decision;
pub mod entities;
pub mod http;
pub mod metrics;
pub mod render;
pub mod review;
pub mod tls;

use crate::config::{AdmissionArgs, AdmissionSettings, ScanArgs, TemporalArgs};
use entities::{Entities, ResultCache, TemporalEntities};
use qflows_activities::gate::judge::Judge;
use qflows_activities::resolve::{Resolver, ResolverSettings};
use std::net::SocketAddr;
use std::sync::Arc;

/// A running webhook.
pub struct AdmissionServer {
    /// The HTTPS address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The metrics address.
    pub metrics_addr: SocketAddr,
    /// Its counters.
    pub metrics: Arc<metrics::Metrics>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics_server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdmissionServer {
    /// Binds both listeners and serves `decider`'s answers until `shutdown`.
    pub async fn start(
        settings: &AdmissionSettings,
        decider: decide::Decider,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Self> {
        let cert = tls::ReloadingCert::open(&settings.cert_file, &settings.key_file)?;
        let bind = |addr: SocketAddr, variable: &'static str| async move {
            tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                crate::config::ConfigError::Invalid {
                    variable,
                    problem: format!("cannot listen on {addr}: {e}"),
                }
            })
        };
        let listener = bind(settings.listen, "QFLOWS_ADMISSION_LISTEN").await?;
        let metrics_listener = bind(settings.metrics_addr, "QFLOWS_ADMISSION_METRICS_ADDR").await?;
        let metrics_addr = metrics_listener.local_addr()?;
        let metrics = decider.metrics.clone();
        let tls = http::TlsListener::new(listener, cert)?;
        let addr = axum::serve::Listener::local_addr(&tls)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let app = http::router(Arc::new(decider));
        let server = tokio::spawn(
            axum::serve(tls, app)
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
        let metrics_server = tokio::spawn(
            axum::serve(metrics_listener, http::metrics_router(metrics.clone()))
                .with_graceful_shutdown(stopped(stop_rx))
                .into_future(),
        );
        Ok(Self {
            addr,
            metrics_addr,
            metrics,
            server,
            metrics_server,
        })
    }

    /// Waits until both listeners stop.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.server.await;
        let metrics = self.metrics_server.await;
        served??;
        metrics??;
        Ok(())
    }
}

/// The decider of `qflows admission`: the worker's gate profiles and results store, the
/// entities in Temporal, tags resolved as ScanOnDeploy resolves them.
pub async fn decider(
    temporal: TemporalArgs,
    settings: &AdmissionSettings,
    scan: &ScanArgs,
) -> anyhow::Result<decide::Decider> {
    let profiles = Arc::new(scan.profiles()?);
    let results = crate::config::ResultsArgs {
        results: scan.results.clone(),
    }
    .store()
    .await?;
    let judge = Arc::new(Judge::new(profiles, results));
    let aws = Arc::new(qflows_activities::aws::Aws::new());
    let resolver = Resolver::new(
        aws,
        ResolverSettings {
            cross_account_role_name: scan.cross_account_role_name.clone(),
            ..Default::default()
        },
    );
    let resolver = match crate::worker::azure_settings(scan)
        .map_err(anyhow::Error::from)
        .and_then(|s| qflows_activities::azure::Azure::from_env(s).map_err(anyhow::Error::from))
    {
        Ok(azure) => resolver.with_azure(azure),
        Err(e) => {
            tracing::info!("Azure access not set up ({e}); ACR tags will not be resolved");
            resolver
        }
    };
    let entities: Arc<dyn Entities> =
        Arc::new(TemporalEntities::new(temporal, settings.task_queue.clone()));
    Ok(decide::Decider {
        judge,
        cache: ResultCache::new(entities, settings.cache_ttl),
        resolver: Some(Arc::new(resolver)),
        cluster: settings.cluster.clone(),
        timeout: settings.timeout,
        metrics: Arc::new(metrics::Metrics::default()),
    })
}

/// `qflows admission`: serve until SIGTERM/ctrl-c.
pub async fn run(
    temporal: TemporalArgs,
    args: AdmissionArgs,
    scan: ScanArgs,
) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let decider = decider(temporal, &settings, &scan).await?;
    let server =
        AdmissionServer::start(&settings, decider, crate::worker::shutdown_signal()).await?;
    tracing::info!(addr = %server.addr, metrics = %server.metrics_addr, "admission webhook listening");
    eprintln!(
        "qflows admission listening on https://{} (metrics on http://{})",
        server.addr, server.metrics_addr
    );
    server.wait().await
}
