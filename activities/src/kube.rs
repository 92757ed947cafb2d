//! Kubernetes for every area that talks to a cluster (CDR policies, the sensor, the inventory):
//! one way to build a client from a kubeconfig and context, one field manager for server-side
//! apply, one error type that maps API answers to failure types.

use crate::failure::IntoFailure;
use kube::config::{KubeConfigOptions, Kubeconfig};
use qflows_workflows::FailureType;
use qflows_workflows::cdr::model::KubeTarget;
use temporalio_sdk::activities::ActivityError;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "qflows";

/// Errors reaching or using a Kubernetes API server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// No usable kubeconfig / context.
    #[error("kubernetes configuration: {0}")]
    Config(String),
    /// The API server refused or failed a request.
    #[error("kubernetes {action} {name}: {source}")]
    Api {
        /// What was attempted.
        action: &'static str,
        /// Object.
        name: String,
        /// Cause.
        source: kube::Error,
    },
}

impl KubeError {
    /// Stable failure type name.
    pub fn type_name(&self) -> FailureType {
        match self {
            KubeError::Config(_) => FailureType::KubeConfigError,
            KubeError::Api { source, .. } => match source {
                kube::Error::Api(s) if s.code == 401 || s.code == 403 => FailureType::KubeForbidden,
                kube::Error::Api(s) if s.code == 404 => FailureType::KubeNotFound,
                kube::Error::Api(s) if s.code == 422 || s.code == 400 => FailureType::KubeRejected,
                _ => FailureType::KubeUnavailable,
            },
        }
    }

    /// Whether retrying may help (outages, conflicts; not refusals or bad configuration).
    pub fn is_retryable(&self) -> bool {
        self.type_name() == FailureType::KubeUnavailable
    }
}

impl IntoFailure for KubeError {
    fn into_failure(self) -> ActivityError {
        let type_name = self.type_name();
        let retryable = self.is_retryable();
        crate::failure::failure(self, type_name, retryable, None)
    }
}

/// Selects rustls' process-wide crypto provider (ring) once. The dependency graph enables both
/// ring (kube) and aws-lc-rs (the AWS SDK), so rustls cannot pick one by itself; idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A Kubernetes client for a target: its kubeconfig and context, or the usual inference
/// (`$KUBECONFIG`, `~/.kube/config`, in-cluster) when neither is named. Exec credential
/// plugins (`aws eks get-token`, `kubelogin`, `gke-gcloud-auth-plugin`) work as in kubectl.
pub async fn client(target: &KubeTarget) -> Result<kube::Client, KubeError> {
    install_tls_provider();
    let bad = |e: &dyn std::fmt::Display| KubeError::Config(e.to_string());
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match (&target.kubeconfig, &target.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| bad(&e))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| bad(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| bad(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| bad(&e))?,
    };
    kube::Client::try_from(config).map_err(|e| bad(&e))
}

/// True when every field of `want` is in `have` with the same value (objects may have more
/// fields: defaults the API server filled in, fields of other managers).
pub(crate) fn contained(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contained(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contained(a, b))
        }
        (w, h) => w == h,
    }
}
