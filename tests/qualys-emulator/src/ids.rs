//! Generated data: random UUIDs, stable hashes (SHAs, digests, UUIDs derived from a name) and
//! deterministic vulnerabilities. No cryptography: FNV-1a and splitmix64 are enough to be
//! stable and well spread.

use serde_json::{Value, json};

/// FNV-1a, 64 bits.
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator byte that cannot occur in the parts' UTF-8.
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// splitmix64: the next state and its output.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64 lower-case hex digits derived from `parts` (stable across runs and versions).
pub(crate) fn hex64(parts: &[&str]) -> String {
    let mut state = fnv1a(parts);
    (0..4)
        .map(|_| format!("{:016x}", splitmix(&mut state)))
        .collect()
}

/// Formats 32 hex digits as 8-4-4-4-12 with a version nibble.
fn uuid_shape(hex: &str, version: char) -> String {
    let mut h: Vec<char> = hex.chars().take(32).collect();
    h[12] = version;
    // RFC 4122 variant: 8, 9, a or b.
    h[16] = ['8', '9', 'a', 'b'][h[16].to_digit(16).unwrap_or(0) as usize % 4];
    let s: String = h.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

/// A random UUID v4.
pub(crate) fn uuid_v4() -> String {
    let hex = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    uuid_shape(&hex, '4')
}

/// A UUID derived from `parts` (version 3 shape, like the image UUIDs in the samples).
pub(crate) fn uuid_from(parts: &[&str]) -> String {
    uuid_shape(&hex64(parts), '3')
}

/// True for 64 hex digits.
pub(crate) fn is_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The lower-case SHA of `s` without a `sha256:` prefix, if it is one.
pub(crate) fn normalize_sha(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    is_sha(s).then(|| s.to_ascii_lowercase())
}

/// One entry of the synthetic vulnerability catalogue.
struct Known {
    qid: u64,
    title: &'static str,
    severity: u8,
    cves: &'static [&'static str],
    package: &'static str,
    installed: &'static str,
    fixed: &'static str,
}

/// Synthetic but plausible findings (real CVE IDs, invented QIDs except the two from the
/// samples).
const CATALOGUE: &[Known] = &[
    Known {
        qid: 379952,
        title: "OpenSSL Multiple Vulnerabilities",
        severity: 5,
        cves: &["CVE-2024-5535"],
        package: "openssl",
        installed: "3.0.2-0ubuntu1.15",
        fixed: "3.0.2-0ubuntu1.18",
    },
    Known {
        qid: 378901,
        title: "zlib Heap Overflow",
        severity: 4,
        cves: &["CVE-2022-37434"],
        package: "zlib1g",
        installed: "1:1.2.11.dfsg-2ubuntu9",
        fixed: "1:1.2.11.dfsg-2ubuntu9.2",
    },
    Known {
        qid: 380101,
        title: "glibc ld.so Buffer Overflow (Looney Tunables)",
        severity: 5,
        cves: &["CVE-2023-4911"],
        package: "libc6",
        installed: "2.35-0ubuntu3.1",
        fixed: "2.35-0ubuntu3.4",
    },
    Known {
        qid: 380217,
        title: "OpenSSH Signal Handler Race Condition (regreSSHion)",
        severity: 5,
        cves: &["CVE-2024-6387"],
        package: "openssh-client",
        installed: "1:8.9p1-3ubuntu0.6",
        fixed: "1:8.9p1-3ubuntu0.10",
    },
    Known {
        qid: 379541,
        title: "curl SOCKS5 Heap Buffer Overflow",
        severity: 4,
        cves: &["CVE-2023-38545", "CVE-2023-38546"],
        package: "curl",
        installed: "7.81.0-1ubuntu1.13",
        fixed: "7.81.0-1ubuntu1.14",
    },
    Known {
        qid: 378512,
        title: "Expat Use After Free",
        severity: 3,
        cves: &["CVE-2022-40674"],
        package: "expat",
        installed: "2.1.0-10.21.amzn1",
        fixed: "2.1.0-14.31.amzn1",
    },
    Known {
        qid: 379610,
        title: "nghttp2 HTTP/2 Rapid Reset Denial of Service",
        severity: 3,
        cves: &["CVE-2023-44487"],
        package: "libnghttp2-14",
        installed: "1.43.0-1ubuntu0.1",
        fixed: "1.43.0-1ubuntu0.2",
    },
    Known {
        qid: 380034,
        title: "glibc iconv Out-of-Bounds Write",
        severity: 4,
        cves: &["CVE-2024-2961"],
        package: "libc-bin",
        installed: "2.35-0ubuntu3.6",
        fixed: "2.35-0ubuntu3.7",
    },
    Known {
        qid: 379702,
        title: "OpenSSL Incorrect Cipher Key and IV Length Processing",
        severity: 2,
        cves: &["CVE-2023-5363"],
        package: "libssl3",
        installed: "3.0.2-0ubuntu1.10",
        fixed: "3.0.2-0ubuntu1.12",
    },
    Known {
        qid: 378230,
        title: "BusyBox Out-of-Bounds Read",
        severity: 2,
        cves: &["CVE-2022-48174"],
        package: "busybox",
        installed: "1.35.0-r29",
        fixed: "1.36.1-r1",
    },
    Known {
        qid: 105943,
        title: "EOL/Obsolete Software: Package Manager Cache Present",
        severity: 1,
        cves: &[],
        package: "apt",
        installed: "2.4.10",
        fixed: "2.4.12",
    },
];

/// A vulnerability in the official `details` shape (docs/qualys-api.md §2.1 #14, sample
/// csapi-image-vuln.official.response.json) plus `qid`, `title`, `cveids` and `software`.
fn details_item(k: &Known, found_ms: u64) -> Value {
    let result = format!(
        "#table cols=\"3\"\nPackage Installed_Version Required_Version\n{} {} {}",
        k.package, k.installed, k.fixed
    );
    json!({
        "qid": k.qid,
        "title": k.title,
        "cveids": k.cves,
        "software": [{"name": k.package, "version": k.installed, "fixVersion": k.fixed}],
        "vulnerability": null,
        "result": result,
        "lastFound": found_ms.to_string(),
        "firstFound": found_ms.to_string(),
        "severity": k.severity,
        "customerSeverity": k.severity,
        "port": null,
        "typeDetected": "CONFIRMED",
        "status": null,
        "risk": u64::from(k.severity) * 10,
        "category": "Ubuntu",
        "discoveryType": ["AUTHENTICATED"],
    })
}

/// Between 1 and 6 vulnerabilities chosen from the SHA (the same SHA always gets the same ones),
/// found at `found_ms`.
pub(crate) fn vulnerabilities_for(sha: &str, found_ms: u64) -> Vec<Value> {
    let mut rng = fastrand::Rng::with_seed(fnv1a(&[sha]));
    let n = rng.usize(1..=6);
    let mut picked: Vec<usize> = (0..CATALOGUE.len()).collect();
    rng.shuffle(&mut picked);
    picked.truncate(n);
    picked.sort_unstable();
    picked
        .into_iter()
        .map(|i| details_item(&CATALOGUE[i], found_ms))
        .collect()
}

/// The severity (1–5) of a vulnerability object: `severity` as a number or numeric string.
pub(crate) fn severity_of(v: &Value) -> Option<u8> {
    let s = match v.get("severity")? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (1..=5).contains(&s).then_some(s as u8)
}

/// `{"severity1Count".."severity5Count"}` of a list of vulnerabilities.
pub(crate) fn severity_counts(vulns: &[Value]) -> Value {
    let mut counts = [0u64; 5];
    for v in vulns {
        if let Some(s) = severity_of(v) {
            counts[usize::from(s) - 1] += 1;
        }
    }
    json!({
        "severity1Count": counts[0],
        "severity2Count": counts[1],
        "severity3Count": counts[2],
        "severity4Count": counts[3],
        "severity5Count": counts[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_shas_and_uuids() {
        let a = hex64(&["reg", "repo", "tag"]);
        assert!(is_sha(&a));
        assert_eq!(a, hex64(&["reg", "repo", "tag"]));
        assert_ne!(a, hex64(&["reg", "repo", "tag2"]));
        assert_ne!(hex64(&["ab", "c"]), hex64(&["a", "bc"]));
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_eq!(uuid_from(&["x"]), uuid_from(&["x"]));
        assert_eq!(
            normalize_sha(&format!("sha256:{}", a.to_uppercase())),
            Some(a)
        );
        assert_eq!(normalize_sha("nginx:latest"), None);
    }

    #[test]
    fn deterministic_vulnerabilities() {
        let sha = hex64(&["x"]);
        let a = vulnerabilities_for(&sha, 1);
        assert_eq!(a, vulnerabilities_for(&sha, 1));
        assert!((1..=6).contains(&a.len()));
        let counts = severity_counts(&a);
        let total: u64 = (1..=5)
            .map(|i| counts[format!("severity{i}Count")].as_u64().unwrap())
            .sum();
        assert_eq!(total as usize, a.len());
    }
}
