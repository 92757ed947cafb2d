//! What the stand-in finds in an image: scripted by the scenario file named by
//! `QSCANNER_STANDIN_SCENARIO`, else derived from the image reference.
//!
//! Scenario file: a JSON object mapping an image-reference substring to an entry (the longest
//! matching key wins):
//!
//! ```json
//! {
//!   "slow":   {"sleep_ms": 30000},
//!   "gone":   {"exit_code": 6, "stderr": "MANIFEST_UNKNOWN"},
//!   "denied": {"policy": "DENY", "vulns": [{"qid": 1, "severity": 5, "title": "t"}]},
//!   "leaky":  {"secrets": [{"rule_id": "r", "target": "/app/.env", "match": "AKIA..."}]},
//!   "broken": {"omit": ["sarif"], "corrupt": ["scan_result"]}
//! }
//! ```
//!
//! Without a scenario (or for fields an entry leaves out): references containing `vulnerable`
//! have a severity-5 and a severity-3 vulnerability, `clean` ones (and all others) none;
//! references containing `secret` have one secret (with `Match` content).

use serde_json::Value;

/// One vulnerability.
#[derive(Debug, Clone, PartialEq)]
pub struct Vuln {
    /// QID.
    pub qid: u64,
    /// 1..5.
    pub severity: u64,
    /// Title.
    pub title: String,
    /// CVE ids.
    pub cves: Vec<String>,
    /// Package name.
    pub package: String,
    /// Installed version.
    pub installed: String,
    /// Fixed version.
    pub fixed: Option<String>,
}

/// One secret.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretHit {
    /// Rule id.
    pub rule_id: String,
    /// Category.
    pub category: String,
    /// `HIGH`, `CRITICAL`, …
    pub severity: String,
    /// Title.
    pub title: String,
    /// File in the image.
    pub target: String,
    /// Line.
    pub start_line: u64,
    /// The matched content (written as `Match`, as QScanner does with show-secret-content).
    pub matched: Option<String>,
}

/// What happens to one scan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Forced exit code.
    pub exit_code: Option<i32>,
    /// Time spent "scanning".
    pub sleep_ms: u64,
    /// Vulnerabilities.
    pub vulns: Vec<Vuln>,
    /// Secrets.
    pub secrets: Vec<SecretHit>,
    /// `ALLOW`, `DENY` or `AUDIT` for evaluate-policy.
    pub policy: Option<String>,
    /// An extra line for stderr.
    pub stderr: Option<String>,
    /// Output files not to write although the exit code says success: `sarif`, `scan_result`.
    pub omit: Vec<String>,
    /// Output files to write as malformed JSON: `sarif`, `scan_result`.
    pub corrupt: Vec<String>,
}

impl Plan {
    /// Whether `file` (`sarif`, `scan_result`) is omitted.
    pub fn omits(&self, file: &str) -> bool {
        self.omit.iter().any(|f| f == file)
    }

    /// Whether `file` (`sarif`, `scan_result`) is written corrupt.
    pub fn corrupts(&self, file: &str) -> bool {
        self.corrupt.iter().any(|f| f == file)
    }
}

fn s(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn n(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn default_vulns(target: &str) -> Vec<Vuln> {
    if !target.contains("vulnerable") {
        return Vec::new();
    }
    vec![
        Vuln {
            qid: 379952,
            severity: 5,
            title: "OpenSSL Multiple Vulnerabilities".into(),
            cves: vec!["CVE-2024-5535".into()],
            package: "openssl".into(),
            installed: "3.0.2-0ubuntu1.15".into(),
            fixed: Some("3.0.2-0ubuntu1.18".into()),
        },
        Vuln {
            qid: 6019286,
            severity: 3,
            title: "Debian Security Update for glibc (CVE-2025-0395)".into(),
            cves: vec!["CVE-2025-0395".into()],
            package: "libc6:amd64".into(),
            installed: "2.36-9+deb12u7".into(),
            fixed: Some("2.36-9+deb12u10".into()),
        },
    ]
}

fn default_secrets(target: &str) -> Vec<SecretHit> {
    if !target.contains("secret") {
        return Vec::new();
    }
    vec![SecretHit {
        rule_id: "5ec62a0c-c95f-11ed-afa1-0242ac120002".into(),
        category: "AWS".into(),
        severity: "HIGH".into(),
        title: "AWS Access Key ID".into(),
        target: "/app/config/.env".into(),
        start_line: 3,
        matched: Some("AWS_ACCESS_KEY_ID=AKIASTANDINLEAKED01".into()),
    }]
}

fn vuln(v: &Value, index: usize) -> Vuln {
    Vuln {
        qid: n(v, "qid").unwrap_or(100_000 + index as u64),
        severity: n(v, "severity").unwrap_or(3).clamp(1, 5),
        title: s(v, "title").unwrap_or_else(|| format!("Stand-in vulnerability {index}")),
        cves: match v.get("cves") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        },
        package: s(v, "package").unwrap_or_else(|| "standin-pkg".into()),
        installed: s(v, "installed").unwrap_or_else(|| "1.0.0".into()),
        fixed: s(v, "fixed"),
    }
}

fn secret(v: &Value, index: usize) -> SecretHit {
    SecretHit {
        rule_id: s(v, "rule_id").unwrap_or_else(|| format!("standin-rule-{index}")),
        category: s(v, "category").unwrap_or_else(|| "Generic".into()),
        severity: s(v, "severity").unwrap_or_else(|| "HIGH".into()),
        title: s(v, "title").unwrap_or_else(|| "Stand-in secret".into()),
        target: s(v, "target").unwrap_or_else(|| "/app/secret.txt".into()),
        start_line: n(v, "start_line").unwrap_or(1),
        matched: s(v, "match"),
    }
}

/// The plan for `target`, from the scenario document (if any) and the defaults.
pub fn plan(target: &str, scenario: Option<&Value>) -> Result<Plan, String> {
    let entry = match scenario {
        None => None,
        Some(Value::Object(map)) => map
            .iter()
            .filter(|(key, _)| target.contains(key.as_str()))
            .max_by_key(|(key, _)| key.len())
            .map(|(_, v)| v),
        Some(_) => return Err("the scenario must be a JSON object".into()),
    };
    let mut plan = Plan {
        vulns: default_vulns(target),
        secrets: default_secrets(target),
        ..Plan::default()
    };
    let Some(entry) = entry else {
        return Ok(plan);
    };
    if !entry.is_object() {
        return Err("a scenario entry must be a JSON object".into());
    }
    plan.exit_code = n(entry, "exit_code").map(|c| c as i32);
    plan.sleep_ms = n(entry, "sleep_ms").unwrap_or(0);
    if let Some(Value::Array(items)) = entry.get("vulns") {
        plan.vulns = items.iter().enumerate().map(|(i, v)| vuln(v, i)).collect();
    }
    if let Some(Value::Array(items)) = entry.get("secrets") {
        plan.secrets = items
            .iter()
            .enumerate()
            .map(|(i, v)| secret(v, i))
            .collect();
    }
    plan.policy = s(entry, "policy").map(|p| p.to_ascii_uppercase());
    if let Some(p) = &plan.policy
        && !matches!(p.as_str(), "ALLOW" | "DENY" | "AUDIT")
    {
        return Err(format!("policy must be ALLOW, DENY or AUDIT, not {p}"));
    }
    plan.stderr = s(entry, "stderr");
    let names = |key: &str| -> Vec<String> {
        match entry.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        }
    };
    plan.omit = names("omit");
    plan.corrupt = names("corrupt");
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_reference() {
        assert!(plan("repo/clean:1", None).unwrap().vulns.is_empty());
        let p = plan("repo/vulnerable-secret:1", None).unwrap();
        assert_eq!(p.vulns[0].severity, 5);
        assert_eq!(p.secrets.len(), 1);
    }

    #[test]
    fn longest_key_wins() {
        let doc = serde_json::json!({
            "app": {"exit_code": 6},
            "app-slow": {"sleep_ms": 5, "policy": "deny", "vulns": [{"qid": 7}]}
        });
        let p = plan("repo/app-slow:1", Some(&doc)).unwrap();
        assert_eq!(p.exit_code, None);
        assert_eq!(p.sleep_ms, 5);
        assert_eq!(p.policy.as_deref(), Some("DENY"));
        assert_eq!(p.vulns[0].qid, 7);
        assert_eq!(plan("repo/app:1", Some(&doc)).unwrap().exit_code, Some(6));
        assert!(plan("x", Some(&serde_json::json!([]))).is_err());
    }
}
