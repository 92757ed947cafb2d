//! Which registries QScanner may pull from (`QFLOWS_QSCANNER_REGISTRIES`).
//!
//! An image reference in a deploy event is attacker-controlled: without a limit, an event
//! naming `169.254.169.254/x` or `10.0.0.5:2375/x` would make the worker connect there. Entries,
//! comma-separated:
//!
//! | Entry | Allows |
//! |---|---|
//! | `ecr` | every private ECR host (`<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`, dual-stack) |
//! | `ecr:<account>` | the ECR hosts of one account |
//! | `acr` / `acr:<name>` | Azure Container Registry hosts (`*.azurecr.io`, `.cn`, `.us`) / one registry |
//! | `docker.io` | Docker Hub |
//! | `ecr-public` | `public.ecr.aws` |
//! | `host[:port]` | exactly that host (and port) |
//! | `*.domain` | hosts under `domain` (not `domain` itself) |
//!
//! The default is `ecr,acr,docker.io`. A host that is an IP address, `localhost`, or ends in
//! `.local`, `.internal` or `.localhost` is refused unless an entry names it exactly.

use qflows_workflows::scan::{ImageRef, RegistryKind};
use std::net::IpAddr;

/// The default allowlist.
pub const DEFAULT_REGISTRIES: &str = "ecr,acr,docker.io";

/// One entry of the allowlist.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Ecr(Option<String>),
    Acr(Option<String>),
    DockerHub,
    EcrPublic,
    Host(String),
    Suffix(String),
}

/// The registries QScanner may pull from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryAllowlist {
    entries: Vec<Entry>,
}

impl Default for RegistryAllowlist {
    fn default() -> Self {
        Self::parse(DEFAULT_REGISTRIES).expect("the default allowlist parses")
    }
}

impl RegistryAllowlist {
    /// Parses a comma-separated list (see the [module](self) table); the error names the entry.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let entry = raw.to_ascii_lowercase();
            let host_like = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
            };
            entries.push(match entry.as_str() {
                "ecr" => Entry::Ecr(None),
                "acr" => Entry::Acr(None),
                "docker.io" | "docker-hub" => Entry::DockerHub,
                "ecr-public" | "public.ecr.aws" => Entry::EcrPublic,
                e if e.starts_with("ecr:") => {
                    let account = &e[4..];
                    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(format!("`{raw}`: ecr:<account> needs a 12-digit account"));
                    }
                    Entry::Ecr(Some(account.to_string()))
                }
                e if e.starts_with("acr:") && host_like(&e[4..]) => {
                    Entry::Acr(Some(e[4..].to_string()))
                }
                e if e.starts_with("*.") && host_like(&e[2..]) && e[2..].contains('.') => {
                    Entry::Suffix(e[1..].to_string())
                }
                e if host_like(e) && !e.contains('*') => Entry::Host(e.to_string()),
                _ => {
                    return Err(format!(
                        "`{raw}` is not a registry entry (ecr, ecr:<account>, acr, acr:<name>, \
                         docker.io, ecr-public, a host, or *.domain)"
                    ));
                }
            });
        }
        if entries.is_empty() {
            return Err("no registry listed".into());
        }
        Ok(Self { entries })
    }

    /// Why QScanner may not pull `image`, or `None` when it may.
    pub fn refusal(&self, image: &ImageRef) -> Option<String> {
        let host = image.registry.to_ascii_lowercase();
        let exact = self
            .entries
            .iter()
            .any(|e| matches!(e, Entry::Host(h) if *h == host));
        if exact {
            return None;
        }
        if is_local(&host) {
            return Some(format!(
                "registry `{host}` is a local or internal address: QScanner pulls from it only \
                 when QFLOWS_QSCANNER_REGISTRIES names it exactly"
            ));
        }
        let kind = image.kind();
        let allowed = self.entries.iter().any(|e| match (e, &kind) {
            (Entry::Ecr(None), RegistryKind::Ecr { .. }) => true,
            (Entry::Ecr(Some(a)), RegistryKind::Ecr { account_id, .. }) => a == account_id,
            (Entry::Acr(None), RegistryKind::Acr { .. }) => true,
            (Entry::Acr(Some(n)), RegistryKind::Acr { name }) => n.eq_ignore_ascii_case(name),
            (Entry::DockerHub, RegistryKind::DockerHub) => true,
            (Entry::EcrPublic, RegistryKind::EcrPublic) => true,
            (Entry::Suffix(s), _) => host.split(':').next().unwrap_or("").ends_with(s.as_str()),
            _ => false,
        });
        (!allowed).then(|| {
            format!("registry `{host}` is not in QFLOWS_QSCANNER_REGISTRIES: QScanner does not pull from it")
        })
    }
}

/// An IP address, `localhost` or an internal-only name (with or without a port).
fn is_local(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || [".local", ".internal", ".localhost", ".localdomain"]
            .iter()
            .any(|s| name.ends_with(s))
        || !name.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(list: &RegistryAllowlist, reference: &str) -> bool {
        list.refusal(&ImageRef::parse(reference).unwrap()).is_some()
    }

    #[test]
    fn the_default_allows_ecr_acr_and_docker_hub_only() {
        let list = RegistryAllowlist::default();
        assert!(!refused(
            &list,
            "111122223333.dkr.ecr.us-east-1.amazonaws.com/app:1"
        ));
        assert!(!refused(&list, "contoso.azurecr.io/app:1"));
        assert!(!refused(&list, "nginx:1.27"));
        for bad in [
            "169.254.169.254/latest/meta-data:x",
            "10.0.0.5:2375/app:1",
            "[fd00::1]:5000/app:1",
            "localhost:5000/app:1",
            "registry.internal/app:1",
            "ghcr.io/acme/app:1",
            "public.ecr.aws/nginx/nginx:1",
        ] {
            assert!(refused(&list, bad), "{bad}");
        }
    }

    #[test]
    fn entries_name_accounts_hosts_and_domains() {
        let list =
            RegistryAllowlist::parse("ecr:111122223333, ghcr.io, *.corp.example, 10.0.0.5:5000")
                .unwrap();
        assert!(!refused(
            &list,
            "111122223333.dkr.ecr.eu-west-1.amazonaws.com/a:1"
        ));
        assert!(refused(
            &list,
            "999988887777.dkr.ecr.eu-west-1.amazonaws.com/a:1"
        ));
        assert!(!refused(&list, "ghcr.io/acme/app:1"));
        assert!(!refused(&list, "registry.corp.example/app:1"));
        assert!(refused(&list, "corp.example.evil.io/app:1"));
        assert!(!refused(&list, "10.0.0.5:5000/app:1"), "named exactly");
        assert!(refused(&list, "10.0.0.5:5001/app:1"));
        assert!(refused(&list, "nginx:1"));
        for bad in ["", "ecr:12", "*", "*.com", "http://x", "a b"] {
            assert!(RegistryAllowlist::parse(bad).is_err(), "{bad:?}");
        }
    }
}
