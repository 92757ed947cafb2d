//! `qflows admission render`: the manifests of deploy/kubernetes/admission (compiled in, so
//! what is printed is what is shipped), for a namespace and Service name, with the webhook's
//! `caBundle` when the CA is given (without cert-manager's injector).

use base64::Engine;
use clap::Args;
use serde_yaml_ng::Value;
use std::path::PathBuf;

/// The Deployment, ServiceAccount, Service, PDB and NetworkPolicy.
pub const ADMISSION_YAML: &str =
    include_str!("../../../deploy/kubernetes/admission/admission.yaml");
/// The ValidatingWebhookConfiguration.
pub const WEBHOOK_YAML: &str = include_str!("../../../deploy/kubernetes/admission/webhook.yaml");
/// cert-manager's Issuers and Certificates.
pub const CERT_MANAGER_YAML: &str =
    include_str!("../../../deploy/kubernetes/admission/cert-manager/certificate.yaml");

/// The namespace and Service name the files use.
const SHIPPED_NAMESPACE: &str = "qflows";
const SHIPPED_SERVICE: &str = "qflows-admission";

/// Flags of `qflows admission render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Namespace qflows admission runs in (excluded from admission, with kube-system).
    #[arg(long, default_value = SHIPPED_NAMESPACE)]
    pub namespace: String,
    /// Name of its Service (the serving certificate must name `<service>.<namespace>.svc`).
    #[arg(long, default_value = SHIPPED_SERVICE)]
    pub service_name: String,
    /// PEM CA that signed the serving certificate: written into the webhook's `caBundle` (and
    /// the cert-manager annotation dropped). Without it, cert-manager's CA injector fills it.
    #[arg(long)]
    pub ca_bundle_file: Option<PathBuf>,
    /// Also print cert-manager's Issuers and Certificates (the cert-manager overlay).
    #[arg(long)]
    pub cert_manager: bool,
}

fn documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

use serde::Deserialize;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The manifests as YAML documents.
pub fn render(args: &RenderArgs) -> anyhow::Result<Vec<Value>> {
    for (flag, value) in [
        ("--namespace", &args.namespace),
        ("--service-name", &args.service_name),
    ] {
        anyhow::ensure!(
            is_dns_label(value),
            "{flag}: `{value}` is not a DNS label (a-z, 0-9, -)"
        );
    }
    let ca_bundle = match &args.ca_bundle_file {
        None => None,
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--ca-bundle-file {}: {e}", path.display()))?;
            anyhow::ensure!(
                pem.contains("-----BEGIN CERTIFICATE-----"),
                "--ca-bundle-file {}: no PEM certificate in it",
                path.display()
            );
            Some(base64::engine::general_purpose::STANDARD.encode(pem.trim().as_bytes()))
        }
    };
    let mut docs = documents(ADMISSION_YAML)?;
    docs.extend(documents(WEBHOOK_YAML)?);
    if args.cert_manager {
        docs.extend(documents(CERT_MANAGER_YAML)?);
    }
    let (ns, svc) = (args.namespace.as_str(), args.service_name.as_str());
    for doc in &mut docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if doc["metadata"].get("namespace").is_some() {
            doc["metadata"]["namespace"] = ns.into();
        }
        match kind.as_str() {
            "Service" => doc["metadata"]["name"] = svc.into(),
            "Certificate" if doc["metadata"]["name"] == SHIPPED_SERVICE => {
                doc["spec"]["dnsNames"] = Value::Sequence(vec![
                    format!("{svc}.{ns}.svc").into(),
                    format!("{svc}.{ns}.svc.cluster.local").into(),
                ]);
            }
            "ValidatingWebhookConfiguration" => {
                let annotations = &mut doc["metadata"]["annotations"];
                if ca_bundle.is_some() {
                    if let Some(map) = annotations.as_mapping_mut() {
                        map.remove("cert-manager.io/inject-ca-from");
                    }
                } else {
                    annotations["cert-manager.io/inject-ca-from"] =
                        format!("{ns}/{SHIPPED_SERVICE}").into();
                }
                for webhook in doc["webhooks"].as_sequence_mut().into_iter().flatten() {
                    let client = &mut webhook["clientConfig"];
                    client["service"]["name"] = svc.into();
                    client["service"]["namespace"] = ns.into();
                    if let Some(ca) = &ca_bundle {
                        client["caBundle"] = ca.clone().into();
                    }
                    for expr in webhook["namespaceSelector"]["matchExpressions"]
                        .as_sequence_mut()
                        .into_iter()
                        .flatten()
                    {
                        expr["values"] = Value::Sequence(vec!["kube-system".into(), ns.into()]);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(docs)
}

/// The manifests as one multi-document YAML text.
pub fn render_text(args: &RenderArgs) -> anyhow::Result<String> {
    let mut out = String::new();
    for doc in render(args)? {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&doc)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RenderArgs {
        RenderArgs {
            namespace: SHIPPED_NAMESPACE.into(),
            service_name: SHIPPED_SERVICE.into(),
            ca_bundle_file: None,
            cert_manager: false,
        }
    }

    #[test]
    fn the_defaults_print_the_shipped_files_unchanged() {
        let mut shipped = documents(ADMISSION_YAML).unwrap();
        shipped.extend(documents(WEBHOOK_YAML).unwrap());
        let text = render_text(&args()).unwrap();
        assert_eq!(documents(&text).unwrap(), shipped);
    }

    #[test]
    fn namespace_service_and_ca_bundle_are_applied_everywhere() {
        let dir = std::env::temp_dir().join(format!("qflows-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let docs = render(&RenderArgs {
            namespace: "security".into(),
            service_name: "gate".into(),
            ca_bundle_file: Some(ca),
            cert_manager: true,
        })
        .unwrap();
        let text = serde_yaml_ng::to_string(&docs).unwrap();
        assert!(!text.contains("namespace: qflows"), "{text}");
        let webhook = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
            .unwrap();
        let hook = &webhook["webhooks"][0];
        assert_eq!(hook["clientConfig"]["service"]["name"], "gate");
        assert_eq!(hook["clientConfig"]["service"]["namespace"], "security");
        assert!(
            hook["clientConfig"]["caBundle"]
                .as_str()
                .unwrap()
                .starts_with("LS0t")
        );
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"][0]["values"],
            Value::Sequence(vec!["kube-system".into(), "security".into()])
        );
        assert!(
            webhook["metadata"]["annotations"]
                .get("cert-manager.io/inject-ca-from")
                .is_none()
        );
        let cert = docs
            .iter()
            .find(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == SHIPPED_SERVICE)
            .unwrap();
        assert_eq!(cert["spec"]["dnsNames"][0], "gate.security.svc");
        assert!(
            render(&RenderArgs {
                namespace: "Bad_NS".into(),
                ..args()
            })
            .is_err()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
