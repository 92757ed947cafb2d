//! The serving certificate, re-read from its files when they change (cert-manager renews the
//! Secret; the kubelet swaps the mounted files): each TLS handshake looks at the files'
//! modification times and presents the newest certificate that loads. A half-written or broken
//! pair keeps the previous one, so a renewal never takes the webhook down.

use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Why a certificate pair cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct CertError {
    /// The file at fault.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// A certificate and key from PEM files, reloaded on change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

/// What identifies a version of the two files.
type Stamp = Option<(SystemTime, u64, SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let meta = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    let (c, k) = (meta(cert)?, meta(key)?);
    Some((c.0, c.1, k.0, k.1))
}

/// Loads a certificate chain and its key.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let err = |path: &Path, problem: String| CertError {
        path: path.display().to_string(),
        problem,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| err(cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(err(cert_file, "holds no PEM certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| err(key_file, format!("no PEM private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| err(key_file, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| err(key_file, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

impl ReloadingCert {
    /// Loads the pair now (a pair that does not load stops start-up).
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, CertError> {
        let stamp = stamp(cert_file, key_file);
        let certified = load(cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: Mutex::new((stamp, certified)),
        }))
    }

    /// The certificate to present now, reloaded first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let now = stamp(&self.cert_file, &self.key_file);
        let mut current = self.current.lock();
        if now.is_some() && now != current.0 {
            match load(&self.cert_file, &self.key_file) {
                Ok(fresh) => {
                    tracing::info!(cert = %self.cert_file.display(), "admission: serving certificate reloaded");
                    *current = (now, fresh);
                }
                Err(e) => {
                    // Mid-rotation (one file new, the other old) or broken: keep serving the
                    // previous pair and try again on the next handshake.
                    tracing::warn!(error = %e, "admission: the new certificate does not load yet; keeping the previous one");
                }
            }
        }
        current.1.clone()
    }

    /// A rustls server configuration presenting this certificate (HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
