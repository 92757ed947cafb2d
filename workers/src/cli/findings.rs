//! Findings of a stored scan report, for people: the worst first, as plain text that cannot
//! move the cursor.
//!
//! Reports hold one of two shapes (activities/src/scan/mod.rs, activities/src/scan/qscanner.rs):
//! registry scans keep Qualys' vulnerabilities (`qid`, `severity`, `title`, `cveIds`,
//! `fixedVersion`, and Qualys' own fields such as `software[]` or the `result` table), QScanner
//! scans keep `qid`, `severity`, `title`, `cves` and `packages[]`. Everything in a finding is
//! attacker-controlled (a package can be named anything): text is stripped of control
//! characters and cut before it reaches a terminal.

use super::output::clean;
use serde::Serialize;
use serde_json::Value;

/// One vulnerability, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Qualys severity, 5 (critical) … 1.
    pub severity: u8,
    /// The first CVE, else `QID <n>`.
    pub id: String,
    /// Qualys ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qid: Option<u64>,
    /// Every CVE.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cves: Vec<String>,
    /// The vulnerable package.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// Its installed version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
    /// The version that fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    /// Title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Severity names, 1 … 5.
pub fn severity_name(severity: u8) -> &'static str {
    match severity {
        5 => "critical",
        4 => "high",
        3 => "medium",
        2 => "low",
        _ => "info",
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn first_text(o: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| text(o.get(*k)))
}

fn severity(v: Option<&Value>) -> Option<u8> {
    match v? {
        Value::Number(n) => n.as_u64().map(|n| n.clamp(1, 5) as u8),
        Value::String(s) => match s.trim().to_ascii_uppercase().as_str() {
            "CRITICAL" | "URGENT" => Some(5),
            "HIGH" => Some(4),
            "MEDIUM" | "SERIOUS" => Some(3),
            "LOW" => Some(2),
            "INFO" | "MINIMAL" => Some(1),
            n => n.parse::<u64>().ok().map(|n| n.clamp(1, 5) as u8),
        },
        _ => None,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|i| text(Some(i))).collect(),
        Some(Value::String(s)) => s
            .split([',', ' ', ';'])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Package, installed and required version from Qualys' `#table` result text.
fn from_result_table(result: &str) -> Option<(String, Option<String>, Option<String>)> {
    let mut lines = result.lines().filter(|l| !l.trim().is_empty());
    if !lines.next()?.starts_with("#table") {
        return None;
    }
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let row: Vec<&str> = lines.next()?.split_whitespace().collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .and_then(|i| row.get(i))
            .map(|v| v.to_string())
    };
    Some((
        column("Package")?,
        column("Installed_Version"),
        column("Required_Version"),
    ))
}

/// One finding of a report's `vulnerabilities`, in either shape.
fn finding(v: &Value) -> Option<Finding> {
    let o = v.as_object()?;
    let qid = o.get("qid").and_then(|q| match q {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let mut cves = strings(o.get("cveIds"));
    if cves.is_empty() {
        cves = strings(o.get("cves"));
    }
    let mut package = None;
    let mut installed = None;
    let mut fixed = first_text(o, &["fixedVersion", "fixVersion"]);
    // QScanner: packages[] {name, installed, fixed}; Qualys: software[] {name, version, fixVersion}.
    for (list, name, have, fix) in [
        ("packages", "name", "installed", "fixed"),
        ("software", "name", "version", "fixVersion"),
    ] {
        if package.is_some() {
            break;
        }
        if let Some(first) = o
            .get(list)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().filter_map(Value::as_object).next())
        {
            package = text(first.get(name));
            installed = text(first.get(have));
            fixed = fixed.or_else(|| text(first.get(fix)));
        }
    }
    if package.is_none()
        && let Some((p, i, f)) = o
            .get("result")
            .and_then(Value::as_str)
            .and_then(from_result_table)
    {
        package = Some(p);
        installed = i;
        fixed = fixed.or(f);
    }
    let severity = severity(o.get("severity"))
        .or_else(|| severity(o.get("customerSeverity")))
        .unwrap_or(1);
    let id = match (cves.first(), qid) {
        (Some(cve), _) => cve.clone(),
        (None, Some(qid)) => format!("QID {qid}"),
        (None, None) => "-".to_string(),
    };
    Some(Finding {
        severity,
        id,
        qid,
        cves,
        package,
        installed,
        fixed,
        title: text(o.get("title")),
    })
}

/// Every finding of a stored report (its `vulnerabilities`).
pub fn from_report(report: &Value) -> Vec<Finding> {
    report
        .get("vulnerabilities")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(finding).collect())
        .unwrap_or_default()
}

/// The `n` worst: by severity, fixable first, then by ID (a stable order).
pub fn worst(mut findings: Vec<Finding>, n: usize) -> Vec<Finding> {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.fixed.is_some().cmp(&a.fixed.is_some()))
            .then(a.id.cmp(&b.id))
    });
    findings.truncate(n);
    findings
}

/// The findings as a plain-text table, each line starting with `indent`.
pub fn render_table(out: &mut String, findings: &[Finding], indent: &str) {
    let dash = || "-".to_string();
    let rows: Vec<[String; 6]> = findings
        .iter()
        .map(|f| {
            [
                severity_name(f.severity).to_string(),
                clean(&f.id, 24),
                f.package.as_deref().map_or_else(dash, |p| clean(p, 30)),
                f.installed.as_deref().map_or_else(dash, |v| clean(v, 24)),
                f.fixed.as_deref().map_or_else(dash, |v| clean(v, 24)),
                f.title.as_deref().map_or_else(dash, |t| clean(t, 70)),
            ]
        })
        .collect();
    let header = ["SEVERITY", "ID", "PACKAGE", "INSTALLED", "FIXED", "TITLE"].map(String::from);
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = indent.to_string();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_report_shapes_are_read_and_the_worst_come_first() {
        let report = json!({"vulnerabilities": [
            {"qid": 1, "severity": 2, "title": "low one"},
            {"qid": 2, "severity": 5, "title": "critical, no fix", "cveIds": ["CVE-2026-0002"]},
            {"qid": 3, "severity": 5, "title": "critical, fixed", "cveIds": ["CVE-2026-0003"],
             "fixedVersion": "1.2.4", "software": [{"name": "openssl", "version": "1.2.3"}]},
            {"qid": 4, "severity": 4, "title": "qscanner", "cves": ["CVE-2026-0004"],
             "packages": [{"name": "libc6", "installed": "2.36", "fixed": "2.37"}]},
            {"qid": 5, "severity": 3, "result":
             "#table cols=\"3\"\nPackage Installed_Version Required_Version\nzlib 1.2 1.3"},
        ]});
        let all = from_report(&report);
        assert_eq!(all.len(), 5);
        let top = worst(all, 3);
        assert_eq!(top[0].id, "CVE-2026-0003");
        assert_eq!(top[0].package.as_deref(), Some("openssl"));
        assert_eq!(top[0].installed.as_deref(), Some("1.2.3"));
        assert_eq!(top[0].fixed.as_deref(), Some("1.2.4"));
        assert_eq!(top[1].id, "CVE-2026-0002");
        assert_eq!(top[2].package.as_deref(), Some("libc6"));
        assert_eq!(top[2].fixed.as_deref(), Some("2.37"));
        let zlib = from_report(&report)
            .into_iter()
            .find(|f| f.qid == Some(5))
            .unwrap();
        assert_eq!(zlib.id, "QID 5");
        assert_eq!(
            (
                zlib.package.as_deref(),
                zlib.installed.as_deref(),
                zlib.fixed.as_deref()
            ),
            (Some("zlib"), Some("1.2"), Some("1.3"))
        );
        assert!(from_report(&json!({})).is_empty());
    }

    #[test]
    fn text_from_findings_cannot_drive_the_terminal() {
        let report = json!({"vulnerabilities": [
            {"qid": 9, "severity": 5, "title": "evil\u{1b}[2J\u{1b}]0;owned\u{7}title\nnext",
             "packages": [{"name": "p\r\u{1b}[31m"}]},
        ]});
        let mut out = String::new();
        render_table(&mut out, &from_report(&report), "");
        assert!(
            !out.contains('\u{1b}') && !out.contains('\r') && !out.contains('\u{7}'),
            "{out:?}"
        );
        assert_eq!(out.lines().count(), 2, "{out}");
        assert_eq!(clean("abcdef", 4), "abc…");
        assert_eq!(clean("abcd", 4), "abcd");
    }
}
