//! Reading what QScanner writes into `--output-dir` (qualys-api.md §4.5).
//!
//! - `<imageId>-Report.sarif.json`: the vulnerabilities. Rules (`runs[].tool.driver.rules[]`)
//!   carry severity, CVEs and QDS; results (`runs[].results[]`) carry the QID and the vulnerable
//!   software; `runs[].properties` the image id, digest and OS. Both known shapes are accepted:
//!   `severity` or `customerSeverity`, `cve-ids` or `cves`, `QID` or `qid`, `vulnerableSoftware[]`
//!   or flat `packageName`/`installedVersion`/`fixedVersion`, numbers as strings.
//! - `<imageId>-ScanResult.json`: `ScansPerformed` and `SecretResults` (without `Match`, which is
//!   never read), and `Metadata.TargetMetadata.ImageMetadata` as a fallback for image facts.
//! - `_` is accepted instead of `-` as the separator (FAQ Q4).
//!
//! Unknown fields are ignored and missing optional fields are fine. Malformed JSON is
//! [`QScannerError::BadOutput`] naming the file and the position, never the content.

use super::error::QScannerError;
use super::outcome::{Finding, SecretFinding, VulnerablePackage};
use crate::qualys::SeverityCounts;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Output files larger than this are refused rather than read into memory.
pub(crate) const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

const SARIF_SUFFIXES: [&str; 2] = ["-Report.sarif.json", "_Report.sarif.json"];
const SCAN_RESULT_SUFFIXES: [&str; 2] = ["-ScanResult.json", "_ScanResult.json"];

/// The files found in an output directory.
#[derive(Debug, Default)]
pub(crate) struct OutputFiles {
    pub(crate) sarif: Option<PathBuf>,
    pub(crate) scan_result: Option<PathBuf>,
    pub(crate) warnings: Vec<String>,
}

/// Finds the report and the scan result in `dir` by suffix. When several match, the first in
/// name order wins and a warning says so.
pub(crate) fn find_outputs(dir: &Path) -> Result<OutputFiles, QScannerError> {
    let entries = std::fs::read_dir(dir).map_err(|e| QScannerError::BadOutput {
        file: dir.display().to_string(),
        message: format!("cannot list the output directory: {e}"),
    })?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| QScannerError::BadOutput {
            file: dir.display().to_string(),
            message: format!("cannot list the output directory: {e}"),
        })?;
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false)
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    let mut out = OutputFiles::default();
    let mut pick = |suffixes: &[&str], what: &str| -> Option<PathBuf> {
        let matching: Vec<&String> = names
            .iter()
            .filter(|n| suffixes.iter().any(|s| n.ends_with(s) && n.len() > s.len()))
            .collect();
        if matching.len() > 1 {
            out.warnings.push(format!(
                "{} {what} files in the output directory; read {}",
                matching.len(),
                matching[0]
            ));
        }
        matching.first().map(|n| dir.join(n))
    };
    let sarif = pick(&SARIF_SUFFIXES, "SARIF report");
    let scan_result = pick(&SCAN_RESULT_SUFFIXES, "ScanResult");
    out.sarif = sarif;
    out.scan_result = scan_result;
    Ok(out)
}

/// The file name of `path`, for messages.
pub(crate) fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Reads and parses a JSON file; errors name the file and never quote its content.
pub(crate) async fn read_json(path: &Path) -> Result<Value, QScannerError> {
    let label = file_label(path);
    let bad = |message: String| QScannerError::BadOutput {
        file: label.clone(),
        message,
    };
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(bad(format!(
            "{} bytes, more than the {} bytes accepted",
            meta.len(),
            MAX_FILE_BYTES
        )));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    parse_json(&bytes, &label)
}

/// Parses JSON; a syntax error reports its kind and position only.
pub(crate) fn parse_json(bytes: &[u8], label: &str) -> Result<Value, QScannerError> {
    serde_json::from_slice(bytes).map_err(|e| QScannerError::BadOutput {
        file: label.to_string(),
        message: format!(
            "malformed JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// Lenient accessors.

/// The first of `keys` present (and not null) in `v`.
fn field<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    let obj = v.as_object()?;
    keys.iter()
        .filter_map(|k| obj.get(*k))
        .find(|v| !v.is_null())
}

/// A string, or a number written as a string.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-negative integer, or one written as a string (`"35"`, `"35.0"`).
fn integer(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f.round() as u64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f.round() as u64)
            })
        }
        _ => None,
    }
}

/// An array of strings, or a single (comma-separated) string.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|i| text(Some(i))).collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn array(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

/// `sha256:ABC…` → `abc…`.
pub(crate) fn normalize_image_id(id: &str) -> String {
    id.trim()
        .strip_prefix("sha256:")
        .unwrap_or(id.trim())
        .to_ascii_lowercase()
}

fn severity(v: Option<&Value>) -> Option<u8> {
    integer(v).filter(|s| (1..=5).contains(s)).map(|s| s as u8)
}

fn push_unique(into: &mut Vec<String>, items: Vec<String>) {
    for item in items {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SARIF report.

/// The facts read from `*-Report.sarif.json`.
#[derive(Debug, Default)]
pub(crate) struct SarifReport {
    pub(crate) image_id: Option<String>,
    pub(crate) image_digest: Option<String>,
    pub(crate) os: Option<String>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) warnings: Vec<String>,
}

/// Reads the vulnerabilities of a SARIF report.
pub(crate) fn parse_sarif(doc: &Value, label: &str) -> Result<SarifReport, QScannerError> {
    if !doc.is_object() {
        return Err(QScannerError::BadOutput {
            file: label.to_string(),
            message: "not a SARIF document (expected a JSON object)".to_string(),
        });
    }
    let mut report = SarifReport::default();
    let runs = array(doc.get("runs"));
    if runs.is_empty() {
        report
            .warnings
            .push(format!("{label}: the SARIF report has no runs"));
    }
    let mut by_qid: BTreeMap<u64, Finding> = BTreeMap::new();
    let mut unidentified = 0usize;
    let mut unrated = 0usize;
    for run in runs {
        if let Some(props) = run.get("properties") {
            if report.image_id.is_none() {
                report.image_id = text(field(props, &["imageID", "imageId", "imageSha"]))
                    .map(|id| normalize_image_id(&id));
            }
            if report.image_digest.is_none() {
                report.image_digest = text(field(props, &["imageDigest", "digest"]));
            }
            if report.os.is_none() {
                report.os = text(field(props, &["os", "operatingSystem", "OS"]));
            }
        }
        let rules_list = run
            .get("tool")
            .and_then(|t| t.get("driver"))
            .map(|d| array(d.get("rules")))
            .unwrap_or(&[]);
        let rules: BTreeMap<String, &Value> = rules_list
            .iter()
            .filter_map(|r| text(r.get("id")).map(|id| (id, r)))
            .collect();
        for result in array(run.get("results")) {
            let rule = text(result.get("ruleId"))
                .and_then(|id| rules.get(&id).copied())
                .or_else(|| {
                    integer(result.get("ruleIndex")).and_then(|i| rules_list.get(i as usize))
                });
            let empty = Value::Object(Map::new());
            let props = result.get("properties").unwrap_or(&empty);
            let rule_props = rule.and_then(|r| r.get("properties")).unwrap_or(&empty);
            let Some(qid) = integer(field(props, &["QID", "qid"]))
                .or_else(|| integer(field(rule_props, &["QID", "qid"])))
                .or_else(|| integer(result.get("ruleId")))
            else {
                unidentified += 1;
                continue;
            };
            let sev_keys = ["severity", "customerSeverity"];
            let severity = severity(field(rule_props, &sev_keys))
                .or_else(|| severity(field(props, &sev_keys)));
            let title = rule
                .and_then(|r| {
                    text(r.get("shortDescription").and_then(|d| d.get("text")))
                        .or_else(|| text(r.get("name")))
                        .or_else(|| text(r.get("fullDescription").and_then(|d| d.get("text"))))
                })
                .or_else(|| text(result.get("message").and_then(|m| m.get("text"))))
                .unwrap_or_default();
            let cve_keys = ["cve-ids", "cves", "cveIds", "CVE-IDs"];
            let mut cves = strings(field(rule_props, &cve_keys));
            push_unique(&mut cves, strings(field(props, &cve_keys)));
            let qds = integer(field(rule_props, &["qds", "QDS"]))
                .or_else(|| integer(field(props, &["qds", "QDS"])))
                .map(|q| q.min(u64::from(u32::MAX)) as u32);
            let mut packages: Vec<VulnerablePackage> = array(field(
                props,
                &["vulnerableSoftware", "softwares", "Softwares"],
            ))
            .iter()
            .filter_map(|s| {
                Some(VulnerablePackage {
                    name: text(field(s, &["name", "Name"]))?,
                    installed: text(field(
                        s,
                        &["installedVersion", "installed_version", "version"],
                    )),
                    fixed: text(field(s, &["fixedVersion", "fixed_version"])),
                })
            })
            .collect();
            if packages.is_empty()
                && let Some(name) = text(field(props, &["packageName", "package"]))
            {
                packages.push(VulnerablePackage {
                    name,
                    installed: text(field(props, &["installedVersion"])),
                    fixed: text(field(props, &["fixedVersion"])),
                });
            }
            let entry = by_qid.entry(qid).or_insert_with(|| Finding {
                qid,
                ..Finding::default()
            });
            if entry.severity.is_none() {
                entry.severity = severity;
            }
            if entry.title.is_empty() {
                entry.title = title;
            }
            if entry.qds.is_none() {
                entry.qds = qds;
            }
            push_unique(&mut entry.cves, cves);
            for p in packages {
                if !entry.packages.contains(&p) {
                    entry.packages.push(p);
                }
            }
        }
    }
    let mut findings: Vec<Finding> = by_qid.into_values().collect();
    for f in &findings {
        if f.severity.is_none() {
            unrated += 1;
        }
    }
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.qid.cmp(&b.qid)));
    if unidentified > 0 {
        report.warnings.push(format!(
            "{label}: {unidentified} result(s) without a QID were skipped"
        ));
    }
    if unrated > 0 {
        report.warnings.push(format!(
            "{label}: {unrated} finding(s) without a severity are not counted"
        ));
    }
    report.findings = findings;
    Ok(report)
}

/// Counts findings by severity.
pub(crate) fn count(findings: &[Finding]) -> SeverityCounts {
    let mut counts = SeverityCounts::default();
    for f in findings {
        match f.severity {
            Some(1) => counts.severity1 += 1,
            Some(2) => counts.severity2 += 1,
            Some(3) => counts.severity3 += 1,
            Some(4) => counts.severity4 += 1,
            Some(5) => counts.severity5 += 1,
            _ => {}
        }
    }
    counts
}

// ---------------------------------------------------------------------------------------------
// ScanResult.

/// The facts read from `*-ScanResult.json`.
#[derive(Debug, Default)]
pub(crate) struct ScanResult {
    pub(crate) scans_performed: Vec<(String, String)>,
    pub(crate) secrets: Vec<SecretFinding>,
    pub(crate) image_id: Option<String>,
    pub(crate) image_digest: Option<String>,
    pub(crate) os: Option<String>,
    pub(crate) warnings: Vec<String>,
}

/// Reads scans performed, secrets (never their `Match`) and image metadata.
pub(crate) fn parse_scan_result(doc: &Value, label: &str) -> Result<ScanResult, QScannerError> {
    if !doc.is_object() {
        return Err(QScannerError::BadOutput {
            file: label.to_string(),
            message: "not a ScanResult document (expected a JSON object)".to_string(),
        });
    }
    let mut out = ScanResult::default();
    for scan in array(doc.get("ScansPerformed")) {
        let Some(scan_type) = text(scan.get("ScanType")) else {
            continue;
        };
        let status = text(scan.get("Status")).unwrap_or_else(|| "UNKNOWN".to_string());
        if !status.eq_ignore_ascii_case("SUCCESS") {
            out.warnings.push(format!(
                "the {scan_type} scan finished with status {status}"
            ));
        }
        out.scans_performed.push((scan_type, status));
    }
    for result in array(doc.get("SecretResults")) {
        let target = text(result.get("Target")).unwrap_or_default();
        for secret in array(result.get("Secrets")) {
            // Only these fields are read: `Match` (the secret itself) never leaves the file.
            out.secrets.push(SecretFinding {
                rule_id: text(secret.get("RuleID")).unwrap_or_default(),
                category: text(secret.get("Category")),
                severity: text(secret.get("Severity")),
                title: text(secret.get("Title")),
                target: target.clone(),
                start_line: integer(secret.get("StartLine")),
            });
        }
    }
    let target_meta = doc.get("Metadata").and_then(|m| m.get("TargetMetadata"));
    if let Some(image) = target_meta.and_then(|t| t.get("ImageMetadata")) {
        out.image_id = text(field(image, &["ImageID", "ImageId"])).map(|i| normalize_image_id(&i));
        out.image_digest = strings(image.get("RepoDigests"))
            .iter()
            .find_map(|d| d.rsplit_once('@').map(|(_, digest)| digest.to_string()));
        out.os = text(image.get("OS"));
    }
    if out.os.is_none() {
        out.os = target_meta.and_then(|t| text(t.get("OS")));
    }
    Ok(out)
}
