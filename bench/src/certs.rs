//! A throwaway CA and a serving certificate for `127.0.0.1` (the admission benchmark and the
//! admission tests serve HTTPS with them).

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use std::path::{Path, PathBuf};

/// A CA and a certificate it signed, written as PEM files.
pub struct Certs {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The serving certificate file.
    pub cert_file: PathBuf,
    /// Its key file.
    pub key_file: PathBuf,
}

/// Makes a new CA and a certificate for 127.0.0.1 and `localhost`, written to
/// `dir/tls.crt` and `dir/tls.key`.
pub fn write(dir: &Path) -> anyhow::Result<Certs> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "qflows test CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(dir)?;
    let cert_file = dir.join("tls.crt");
    let key_file = dir.join("tls.key");
    // Key first, certificate last: a reader sees the pair complete once the certificate changes.
    std::fs::write(&key_file, key.serialize_pem())?;
    std::fs::write(&cert_file, cert.pem())?;
    Ok(Certs {
        ca_pem: ca_cert.pem(),
        cert_file,
        key_file,
    })
}
