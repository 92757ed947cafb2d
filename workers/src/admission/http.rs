//! The webhook's two listeners: HTTPS for the API server (`POST /validate`) and plain HTTP for
//! `/metrics`, `/healthz` and `/readyz`.
//!
//! TLS handshakes run in their own tasks (a slow or silent client holds up no one else) and
//! feed finished connections to axum.

use super::decide::Decider;
use super::metrics::Metrics;
use super::review::AdmissionReview;
use super::tls::ReloadingCert;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Largest AdmissionReview read (the API server's own object limit is ~1.5 MiB; a review
/// carries the object twice on UPDATE).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS connections handshaking at once.
const HANDSHAKES: usize = 256;

/// The router of `/validate`.
pub fn router(decider: Arc<Decider>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(decider)
}

async fn validate(State(decider): State<Arc<Decider>>, body: Bytes) -> Response {
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            decider.metrics.invalid();
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    let request = match review.request {
        Some(r)
            if review.api_version == "admission.k8s.io/v1" && review.kind == "AdmissionReview" =>
        {
            r
        }
        _ => {
            decider.metrics.invalid();
            return (
                StatusCode::BAD_REQUEST,
                "expected an admission.k8s.io/v1 AdmissionReview with a request",
            )
                .into_response();
        }
    };
    let answer = decider.review(&request).await;
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.review(&request.uid).to_string(),
    )
        .into_response()
}

/// TLS connections, handshaken, as axum's listener.
pub struct TlsListener {
    connections: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    _accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener`, presenting `cert`.
    pub fn new(listener: TcpListener, cert: Arc<ReloadingCert>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()));
        let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKES);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "admission: accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = tcp.set_nodelay(true);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "admission: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "admission: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            connections: rx,
            addr,
            _accepting: accepting,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(c) => c,
            // The accept loop ended (it does not, short of a panic): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// The plain-HTTP router: `/metrics`, `/healthz`, `/readyz` (ready once serving: the webhook
/// answers without Temporal too, by its profiles' `unscanned` rules).
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
}
