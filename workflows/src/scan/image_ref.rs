//! Container image references: the `distribution/reference` grammar, Docker's normalisation, and
//! which kind of registry a reference points at.
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [domain "/"] path-component ["/" path-component]*
//! domain    := host [":" port]          host := domain-name | IPv4 | "[" IPv6 "]"
//! path-component := [a-z0-9]+ (separator [a-z0-9]+)*      separator := [_.] | __ | -+
//! tag       := [\w][\w.-]{0,127}
//! digest    := sha256:<64 lowercase hex>   (other algorithms are refused)
//! ```
//!
//! Normalisation follows Docker (`ParseNormalizedNamed`): a name without a domain is on Docker Hub
//! (`nginx` → `docker.io/library/nginx`); the first component is a domain only if it contains `.`
//! or `:`, is `localhost`, or has an uppercase letter; `index.docker.io` becomes `docker.io`.
//! Host names are lowercased (DNS is case-insensitive), repository paths must already be lowercase.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest reference [`ImageRef::parse`] accepts, in bytes.
pub const MAX_REFERENCE_LEN: usize = 4096;
/// Longest name as written (registry and repository path), and longest repository path, as in
/// `distribution/reference` (`NameTotalLengthMax`).
pub const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 128;
/// The Docker Hub registry, as references name it after normalisation.
pub const DOCKER_HUB: &str = "docker.io";
/// The ECR Public registry.
pub const ECR_PUBLIC: &str = "public.ecr.aws";

/// How much of a rejected reference an [`ImageRefError`] quotes, in characters.
const QUOTED_REFERENCE_CHARS: usize = 200;

/// A parsed, normalised image reference.
///
/// `Display` prints `registry/repository[:tag][@digest]`, which [`ImageRef::parse`] reads back
/// unchanged; [`ImageRef::canonical`] is Docker's form (`:latest` implied, digest wins over tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    /// Normalised `domain[:port]`; Docker Hub is `docker.io`.
    pub registry: String,
    /// Repository path; Docker Hub official images are `library/<name>`.
    pub repository: String,
    /// The tag, when the reference has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The manifest digest, `sha256:<64 lowercase hex>`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Which kind of registry an image lives in (see [`ImageRef::kind`]).
///
/// Serialised with a `kind` tag: `{"kind": "ecr", "accountId": "…", "region": "…", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum RegistryKind {
    /// A private Amazon ECR registry, `<account>.dkr.ecr[-fips].<region>.<suffix>` or the
    /// dual-stack `<account>.dkr-ecr.<region>.on.aws` forms.
    Ecr {
        /// The 12-digit account owning the registry.
        account_id: String,
        /// The AWS region of the registry.
        region: String,
        /// A FIPS endpoint (`dkr.ecr-fips`).
        fips: bool,
        /// A dual-stack (IPv6) endpoint (`.on.aws`, `.on.amazonwebservices.com.cn`).
        dual_stack: bool,
    },
    /// Amazon ECR Public, `public.ecr.aws`.
    EcrPublic,
    /// An Azure Container Registry, `<name>.azurecr.io` (`.cn` Azure China, `.us` US Gov).
    Acr {
        /// The first DNS label of the login server (for registries with a hashed domain name
        /// label, `<name>-<hash>`).
        name: String,
    },
    /// Docker Hub, `docker.io`.
    DockerHub,
    /// Any other registry.
    Other,
}

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference `{reference}`: {problem}")]
pub struct ImageRefError {
    /// The rejected reference (at most 200 characters of it).
    pub reference: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ImageRefError {
    /// An error about `reference`, quoting at most 200 characters of it.
    pub fn new(reference: &str, problem: impl Into<String>) -> Self {
        let reference = if reference.chars().count() > QUOTED_REFERENCE_CHARS {
            let mut quoted: String = reference.chars().take(QUOTED_REFERENCE_CHARS - 1).collect();
            quoted.push('…');
            quoted
        } else {
            reference.to_string()
        };
        Self {
            reference,
            problem: problem.into(),
        }
    }
}

impl ImageRef {
    /// Parses and normalises an image reference such as `nginx`, `ghcr.io/org/app:1.2` or
    /// `123456789012.dkr.ecr.us-east-1.amazonaws.com/web@sha256:…`.
    pub fn parse(s: &str) -> Result<ImageRef, ImageRefError> {
        let err = |problem: String| ImageRefError::new(s, problem);
        if s.is_empty() {
            return Err(err("the reference is empty".into()));
        }
        if s.len() > MAX_REFERENCE_LEN {
            return Err(err(format!("longer than {MAX_REFERENCE_LEN} characters")));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains whitespace or control characters".into()));
        }
        if s.len() == 64 && s.bytes().all(is_lower_hex) {
            return Err(err(
                "cannot specify 64-byte hexadecimal strings (an image ID is not a reference)"
                    .into(),
            ));
        }

        let (name_tag, digest) = match s.split_once('@') {
            Some((name_tag, digest)) => (name_tag, Some(digest)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = name_tag.rfind('/');
        let (name, tag) = match name_tag.rfind(':') {
            Some(i) if last_slash.is_none_or(|j| i > j) => {
                (&name_tag[..i], Some(&name_tag[i + 1..]))
            }
            _ => (name_tag, None),
        };

        let (domain, remainder) = match name.split_once('/') {
            Some((first, rest)) if is_domain_like(first) => (Some(first), rest),
            _ => (None, name),
        };
        if remainder.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err(format!(
                "repository name must be lowercase (`{remainder}`)"
            )));
        }
        let registry = match domain {
            None => DOCKER_HUB.to_string(),
            Some(domain) => {
                check_domain(domain).map_err(err)?;
                normalise_domain(domain)
            }
        };
        let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
            format!("library/{remainder}")
        } else {
            remainder.to_string()
        };
        check_repository(&repository).map_err(err)?;
        // Docker limits the whole name, registry included (`NameTotalLengthMax`). Counted on
        // the normalised name, so that the canonical form (`docker.io/library/…`) re-parses.
        if registry.len() + 1 + repository.len() > MAX_REPOSITORY_LEN {
            return Err(err(format!(
                "repository name must not be longer than {MAX_REPOSITORY_LEN} characters, \
                 registry included (Docker Hub names count as `docker.io/library/<name>`)"
            )));
        }
        if let Some(tag) = tag {
            check_tag(tag).map_err(err)?;
        }
        if let Some(digest) = digest {
            check_digest(digest).map_err(err)?;
        }
        Ok(ImageRef {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// Which kind of registry the image is in.
    pub fn kind(&self) -> RegistryKind {
        registry_kind(&self.registry)
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository@digest`, when the digest is known.
    pub fn pinned(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|digest| format!("{}/{}@{digest}", self.registry, self.repository))
    }

    /// The tag; `latest` when the reference has neither tag nor digest (what a pull would fetch);
    /// `None` for a digest-only reference.
    pub fn tag_or_latest(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => Some(tag),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// Docker's canonical form (`ParseDockerRef`): `registry/repository@digest` when the digest is
    /// known (the tag is dropped), else `registry/repository:<tag or latest>`. Two references
    /// with the same canonical form name the same image.
    pub fn canonical(&self) -> String {
        match (&self.tag, &self.digest) {
            (_, Some(digest)) => format!("{}/{}@{digest}", self.registry, self.repository),
            (Some(tag), None) => format!("{}/{}:{tag}", self.registry, self.repository),
            (None, None) => format!("{}/{}:latest", self.registry, self.repository),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// The kind of a (normalised) registry host.
pub fn registry_kind(registry: &str) -> RegistryKind {
    if registry == DOCKER_HUB {
        RegistryKind::DockerHub
    } else if registry == ECR_PUBLIC {
        RegistryKind::EcrPublic
    } else if let Some(ecr) = ecr_kind(registry) {
        ecr
    } else if let Some(name) = acr_name(registry) {
        RegistryKind::Acr {
            name: name.to_string(),
        }
    } else {
        RegistryKind::Other
    }
}

/// Suffixes of private ECR hosts (amazon-ecr-credential-helper's pattern).
const ECR_SUFFIXES: [&str; 9] = [
    "amazonaws.com",
    "amazonaws.com.cn",
    "amazonaws.eu",
    "on.aws",
    "on.amazonwebservices.com.cn",
    "sc2s.sgov.gov",
    "c2s.ic.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
];

/// `^(\d{12})\.dkr[.-]ecr(-fips)?\.([a-zA-Z0-9][a-zA-Z0-9-_]*)\.(<suffix>)$`.
fn ecr_kind(host: &str) -> Option<RegistryKind> {
    let (account, rest) = host.split_once('.')?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = rest
        .strip_prefix("dkr.ecr")
        .or_else(|| rest.strip_prefix("dkr-ecr"))?;
    let (fips, rest) = match rest.strip_prefix("-fips") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let (region, suffix) = rest.strip_prefix('.')?.split_once('.')?;
    let region_ok = region
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (region_ok && ECR_SUFFIXES.contains(&suffix)).then(|| RegistryKind::Ecr {
        account_id: account.to_string(),
        region: region.to_string(),
        fips,
        dual_stack: suffix.starts_with("on."),
    })
}

/// `<label>.azurecr.io|cn|us` → `label`.
fn acr_name(host: &str) -> Option<&str> {
    [".azurecr.io", ".azurecr.cn", ".azurecr.us"]
        .iter()
        .find_map(|suffix| host.strip_suffix(suffix))
        .filter(|label| !label.is_empty() && !label.contains('.'))
}

/// Docker's rule for whether the first path component names a registry.
fn is_domain_like(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// Lowercases a host (DNS names are case-insensitive) and maps `index.docker.io` to `docker.io`.
///
/// A domain recognised only by its uppercase letters keeps them, so that it stays a domain when
/// the reference is printed and parsed again.
fn normalise_domain(domain: &str) -> String {
    let lower = domain.to_ascii_lowercase();
    if !is_domain_like(&lower) {
        return domain.to_string();
    }
    if lower == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        lower
    }
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// `host[:port]` with host a DNS name, an IPv4 address or a bracketed IPv6 address.
fn check_domain(domain: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid reference format: registry `{domain}` {why}"
        ))
    };
    let (host_ok, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((ipv6, after)) = rest.split_once(']') else {
            return bad("has an unterminated IPv6 address");
        };
        let ipv6_ok = !ipv6.is_empty() && ipv6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return bad("has text after the IPv6 address"),
            },
        };
        (ipv6_ok, port)
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        (
            !host.is_empty() && host.split('.').all(is_domain_component),
            port,
        )
    };
    if !host_ok {
        return bad("is not a valid host name");
    }
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("has an invalid port");
    }
    Ok(())
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
}

/// Checks a repository path: lowercase path components separated by `/`, at most 255 characters.
pub(crate) fn check_repository(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("invalid reference format: the repository name is empty".into());
    }
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name must be lowercase (`{path}`)"));
    }
    if path.len() > MAX_REPOSITORY_LEN {
        return Err(format!(
            "repository name must not be longer than {MAX_REPOSITORY_LEN} characters"
        ));
    }
    if let Some(bad) = path.split('/').find(|c| !is_path_component(c)) {
        return Err(format!(
            "invalid reference format: repository path component `{bad}` must be lowercase \
             letters and digits separated by `.`, `_`, `__` or dashes"
        ));
    }
    Ok(())
}

/// `[a-z0-9]+ ((?:[._]|__|[-]+) [a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false; // empty, or a separator at the start, end or next to another
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[\w][\w.-]{0,127}`.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && word(tag.as_bytes()[0])
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid reference format: tag `{tag}` must be 1 to {MAX_TAG_LEN} letters, digits, \
             `_`, `.` or `-`, not starting with `.` or `-`"
        ))
    }
}

/// `sha256:<64 lowercase hex>`; other well-formed algorithms are refused by name.
pub(crate) fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "invalid reference format: digest `{digest}` must be `sha256:<64 hex>`"
        ));
    };
    if algorithm == "sha256" {
        if hex.len() == 64 && hex.bytes().all(is_lower_hex) {
            return Ok(());
        }
        return Err("sha256 digest must be 64 lowercase hex chars".into());
    }
    if is_digest_algorithm(algorithm)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(format!(
            "only sha256 digests are supported (got `{algorithm}`)"
        ));
    }
    Err(format!(
        "invalid reference format: digest `{digest}` must be `sha256:<64 hex>`"
    ))
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*`.
fn is_digest_algorithm(algorithm: &str) -> bool {
    !algorithm.is_empty()
        && algorithm.split(['-', '_', '+', '.']).all(|part| {
            part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/image-references.json"
    ));
    const DIGEST: &str = "sha256:47f8581563aecdd7339e97469826ab59e92e83aab4c274d48370251de95dfdc9";

    fn parse(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn problem(s: &str) -> String {
        match ImageRef::parse(s) {
            Ok(r) => panic!("{s} parsed as {r:?}"),
            Err(e) => e.problem,
        }
    }

    fn opt(v: &Value, key: &str) -> Option<String> {
        v[key].as_str().map(str::to_string)
    }

    #[test]
    fn all_vectors_pass() {
        let doc: Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 31);
        for v in vectors {
            let input = v["input"].as_str().unwrap();
            if !v["valid"].as_bool().unwrap() {
                let problem = problem(input);
                let expected = v["error"].as_str().unwrap();
                let expected = expected.split(" (").next().unwrap();
                assert!(
                    problem.contains(expected),
                    "{input}: `{problem}` lacks `{expected}`"
                );
                continue;
            }
            let r = parse(input);
            assert_eq!(
                Some(r.registry.clone()),
                opt(v, "normalized_domain"),
                "{input}"
            );
            assert_eq!(
                Some(r.repository.clone()),
                opt(v, "normalized_repository"),
                "{input}"
            );
            assert_eq!(r.tag, opt(v, "tag"), "{input}");
            assert_eq!(r.digest, opt(v, "digest"), "{input}");
            assert_eq!(Some(r.canonical()), opt(v, "canonical"), "{input}");
            // Display round-trips.
            assert_eq!(parse(&r.to_string()), r, "{input}");
            let reg = &v["registry"];
            let kind = r.kind();
            match reg["kind"].as_str().unwrap() {
                "dockerhub" => assert_eq!(kind, RegistryKind::DockerHub, "{input}"),
                "ecr-public" => assert_eq!(kind, RegistryKind::EcrPublic, "{input}"),
                "other" => assert_eq!(kind, RegistryKind::Other, "{input}"),
                "acr" => {
                    let name = reg["registry"].as_str().unwrap().to_string();
                    assert_eq!(kind, RegistryKind::Acr { name }, "{input}");
                    let suffix = reg["cloud_suffix"].as_str().unwrap();
                    assert!(
                        r.registry.ends_with(&format!(".azurecr.{suffix}")),
                        "{input}"
                    );
                }
                "ecr" => {
                    let suffix = reg["suffix"].as_str().unwrap();
                    let expected = RegistryKind::Ecr {
                        account_id: reg["account"].as_str().unwrap().into(),
                        region: reg["region"].as_str().unwrap().into(),
                        fips: reg["fips"].as_bool().unwrap(),
                        dual_stack: suffix.starts_with("on."),
                    };
                    assert_eq!(kind, expected, "{input}");
                    assert!(r.registry.ends_with(&format!(".{suffix}")), "{input}");
                }
                other => panic!("unknown kind {other}"),
            }
        }
    }

    #[test]
    fn normalises_docker_hub_and_hosts() {
        assert_eq!(
            parse("docker.io/nginx").to_string(),
            "docker.io/library/nginx"
        );
        assert_eq!(parse("index.docker.io/nginx").repository, "library/nginx");
        assert_eq!(parse("Index.Docker.IO/nginx").registry, "docker.io");
        assert_eq!(parse("GHCR.io/org/app").registry, "ghcr.io");
        assert_eq!(parse("LOCALHOST/app").registry, "localhost");
        // An uppercase first component is a domain and keeps its case so it stays one.
        let r = parse("MyRegistry/app");
        assert_eq!(
            (r.registry.as_str(), r.kind()),
            ("MyRegistry", RegistryKind::Other)
        );
        assert_eq!(parse(&r.to_string()), r);
        // A bare `host:port` without a path is Docker Hub's `library/host` with a tag.
        let r = parse("localhost:5000");
        assert_eq!(r.to_string(), "docker.io/library/localhost:5000");
        assert_eq!(parse("10.0.0.1:5000/app").registry, "10.0.0.1:5000");
        assert_eq!(parse("[::1]/app").registry, "[::1]");
    }

    #[test]
    fn tags_digests_and_helpers() {
        let r = parse(&format!("ghcr.io/org/app:1.2@{DIGEST}"));
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.to_string(), format!("ghcr.io/org/app:1.2@{DIGEST}"));
        assert_eq!(r.canonical(), format!("ghcr.io/org/app@{DIGEST}"));
        assert_eq!(r.pinned(), Some(format!("ghcr.io/org/app@{DIGEST}")));
        assert_eq!(r.tag_or_latest(), Some("1.2"));
        assert_eq!(r.name(), "ghcr.io/org/app");
        let r = parse("nginx");
        assert_eq!((r.tag_or_latest(), r.pinned()), (Some("latest"), None));
        assert_eq!(parse(&format!("nginx@{DIGEST}")).tag_or_latest(), None);
        assert_eq!(
            "nginx:1".parse::<ImageRef>().unwrap().tag.as_deref(),
            Some("1")
        );
    }

    #[test]
    fn rejects_bad_references() {
        assert!(problem("").contains("empty"));
        assert!(problem(" nginx").contains("whitespace"));
        assert!(problem("nginx\n").contains("whitespace"));
        assert!(problem(&"a".repeat(5000)).contains("longer than 4096"));
        assert!(problem("nginx:").contains("tag"));
        assert!(problem("nginx@").contains("digest"));
        assert!(problem("nginx@sha256").contains("digest"));
        assert!(problem(&format!("nginx@{DIGEST}@{DIGEST}")).contains("sha256 digest"));
        let sha512 = format!("nginx@sha512:{}", "a".repeat(128));
        assert_eq!(
            problem(&sha512),
            "only sha256 digests are supported (got `sha512`)"
        );
        assert!(problem("nginx@md5:xyz").contains("invalid reference format"));
        for bad in [
            "/app",
            "app/",
            "a//b",
            "-app",
            "app-",
            "a.-b",
            "a..b",
            "a___b",
            "ex ample.com/a",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "exa_mple.com/a",
            "-ex.com/a",
            "ex.com:/a",
            "ex.com:99999999/a",
            "[zz]:5000/a",
            "[::1/a",
        ] {
            assert!(problem(bad).contains("registry"), "{bad}");
        }
        assert!(problem(&format!("ex.com/{}", "a".repeat(256))).contains("255"));
        // 255 for the whole name, as Docker counts it: registry, `/` and path.
        assert!(ImageRef::parse(&format!("ex.com/{}", "a".repeat(248))).is_ok());
        assert!(problem(&format!("ex.com/{}", "a".repeat(249))).contains("registry included"));
        // Docker Hub names count as `docker.io/library/<name>`.
        assert!(ImageRef::parse(&"a".repeat(237)).is_ok());
        assert!(problem(&"a".repeat(238)).contains("registry included"));
        assert!(ImageRef::parse("a-----b/c__d/e.f").is_ok());
    }

    #[test]
    fn error_display_and_truncation() {
        let e = ImageRef::parse("Nginx").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid image reference `Nginx`: repository name must be lowercase (`Nginx`)"
        );
        let long = format!("x y{}", "é".repeat(300));
        let e = ImageRef::parse(&long).unwrap_err();
        assert_eq!(e.reference.chars().count(), 200);
        assert!(e.reference.ends_with('…'));
    }

    #[test]
    fn registry_kinds() {
        let kind = |host: &str| parse(&format!("{host}/app")).kind();
        let ecr = |region: &str, fips, dual_stack| RegistryKind::Ecr {
            account_id: "111122223333".into(),
            region: region.into(),
            fips,
            dual_stack,
        };
        assert_eq!(
            kind("111122223333.dkr.ecr.eu-west-1.amazonaws.com"),
            ecr("eu-west-1", false, false)
        );
        assert_eq!(
            kind("111122223333.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn"),
            ecr("cn-north-1", false, true)
        );
        assert_eq!(
            kind("111122223333.dkr-ecr-fips.us-east-1.on.aws"),
            ecr("us-east-1", true, true)
        );
        assert_eq!(
            kind("111122223333.dkr.ecr.eusc-de-east-1.amazonaws.eu"),
            ecr("eusc-de-east-1", false, false)
        );
        assert_eq!(
            kind("111122223333.dkr.ecr.us-iso-east-1.c2s.ic.gov"),
            ecr("us-iso-east-1", false, false)
        );
        assert_eq!(
            kind("111122223333.dkr.ecr.us-isob-east-1.sc2s.sgov.gov"),
            ecr("us-isob-east-1", false, false)
        );
        assert_eq!(
            kind("111122223333.DKR.ECR.US-EAST-1.AMAZONAWS.COM"),
            ecr("us-east-1", false, false)
        );
        for other in [
            "11112222333.dkr.ecr.us-east-1.amazonaws.com",
            "111122223333.dkr.ecr.us-east-1.amazonaws.com:443",
            "111122223333.dkr.ecr.us-east-1.example.com",
            "111122223333.ecr.us-east-1.amazonaws.com",
            "foo.azurecr.io.evil.com",
            "a.b.azurecr.io",
            "registry-1.docker.io",
        ] {
            assert_eq!(kind(other), RegistryKind::Other, "{other}");
        }
        assert_eq!(
            kind("myreg-abc123hash.azurecr.io"),
            RegistryKind::Acr {
                name: "myreg-abc123hash".into()
            }
        );
        assert_eq!(
            kind("MyReg.azurecr.io"),
            RegistryKind::Acr {
                name: "myreg".into()
            }
        );
    }

    #[test]
    fn serialises_camel_case() {
        let r = parse(&format!(
            "111122223333.dkr.ecr.us-east-1.amazonaws.com/app@{DIGEST}"
        ));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"registry": "111122223333.dkr.ecr.us-east-1.amazonaws.com",
                               "repository": "app", "digest": DIGEST})
        );
        assert_eq!(serde_json::from_value::<ImageRef>(json).unwrap(), r);
        let kind = serde_json::to_value(r.kind()).unwrap();
        assert_eq!(
            kind,
            serde_json::json!({"kind": "ecr", "accountId": "111122223333", "region": "us-east-1",
                               "fips": false, "dualStack": false})
        );
        assert_eq!(
            serde_json::from_value::<RegistryKind>(kind).unwrap(),
            r.kind()
        );
        assert_eq!(
            serde_json::to_value(RegistryKind::DockerHub).unwrap(),
            serde_json::json!({"kind": "dockerHub"})
        );
    }

    /// Inputs on which `scripts/fuzz` once found a failure (`tests/data/fuzz/image_refs/`):
    /// each either is refused or round-trips through its canonical form.
    #[test]
    fn fuzz_findings_stay_fixed() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/image_refs");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if let Ok(image) = ImageRef::parse(text) {
                let canonical = image.canonical();
                let again = ImageRef::parse(&canonical).expect("the canonical form re-parses");
                assert_eq!(again.canonical(), canonical);
            }
            seen += 1;
        }
        assert!(seen > 0, "no fuzz findings were read");
    }
}
