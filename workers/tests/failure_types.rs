//! Failure type names are a public contract: `FailureType` lists them, the README documents them
//! and the alert rules match on them. These tests read the README and `deploy/prometheus` and
//! fail naming any difference.

use qflows_activities::qualys::QualysError;
use qflows_workflows::FailureType;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workers/ has a parent")
        .to_path_buf()
}

/// The `backticked` words of `cell`.
fn backticked(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2)
}

/// The cells of a table row (`| a | b |`), or `None` for a line that is not one.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// Every name in the first column of the README's failure-type tables (those whose first header
/// is "Failure type" or "Type"), with the line it is on.
fn readme_failure_types(readme: &str) -> Vec<(String, usize)> {
    let mut names = Vec::new();
    let mut in_table = false;
    for (n, line) in readme.lines().enumerate() {
        let Some(row) = cells(line) else {
            in_table = false;
            continue;
        };
        if !in_table {
            // A header row starts a table; the separator row below it has no names.
            in_table = matches!(row[0], "Failure type" | "Type");
            if in_table {
                continue;
            }
        }
        if in_table {
            for name in backticked(row[0]) {
                names.push((name.to_string(), n + 1));
            }
        }
    }
    names
}

fn all() -> BTreeSet<&'static str> {
    FailureType::ALL.iter().map(|t| t.as_str()).collect()
}

#[test]
fn the_readme_lists_exactly_the_failure_types() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let found = readme_failure_types(&readme);
    let documented: BTreeSet<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    let not_types: Vec<String> = found
        .iter()
        .filter(|(n, _)| FailureType::from_name(n).is_none())
        .map(|(n, line)| format!("{n} (README.md:{line})"))
        .collect();
    let undocumented: Vec<&str> = all().difference(&documented).copied().collect();
    assert!(
        not_types.is_empty() && undocumented.is_empty(),
        "README failure-type tables and FailureType differ:\n  in the README, not a FailureType: \
         {not_types:?}\n  FailureType variants the README does not list: {undocumented:?}"
    );
}

/// The `error_type` label values the rules and their tests name: `error_type="X"`,
/// `error_type=~"X|Y"` in expressions and `error_type: X` in expected labels.
fn alert_error_types(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("error_type") {
        let rest = &text[at + "error_type".len()..];
        let value = if let Some(v) = rest.strip_prefix("=~\"").or(rest.strip_prefix("=\"")) {
            v.split('"').next().unwrap_or_default()
        } else if let Some(v) = rest.strip_prefix(": ") {
            v.lines().next().unwrap_or_default().trim()
        } else {
            continue;
        };
        out.extend(value.split('|').map(|v| v.trim().to_string()));
    }
    out
}

#[test]
fn the_alert_rules_name_only_failure_types() {
    let dir = workspace().join("deploy/prometheus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/prometheus")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule files in {}", dir.display());
    let kinds: BTreeSet<&str> = QualysError::KINDS.into_iter().collect();
    let mut named = 0;
    let mut unknown = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a rule file");
        for value in alert_error_types(&text) {
            named += 1;
            // `qflows_qualys_errors_total` is labelled by the Qualys error kind (`auth`, …),
            // `qflows_activity_failures_total` by the failure type (`QualysAuthFailed`, …).
            let known = if value.starts_with(|c: char| c.is_ascii_lowercase()) {
                kinds.contains(value.as_str())
            } else {
                FailureType::from_name(&value).is_some()
            };
            if !known {
                unknown.push(format!("{value} ({})", file.display()));
            }
        }
    }
    assert!(
        named > 0,
        "the rules name no error_type at all: the parser is broken"
    );
    assert!(
        unknown.is_empty(),
        "alert rules name error types qflows never records: {unknown:?}"
    );
}

#[test]
fn the_parsers_see_what_they_should() {
    let readme = "\
| Failure type | Cause |\n|---|---|\n| `A`, `B` | x `NotAName` |\n\ntext `C`\n\
| Type | When |\n|---|---|\n| `D` | y |\n\n| Other | z |\n|---|---|\n| `E` | w |\n";
    let names: Vec<String> = readme_failure_types(readme)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["A", "B", "D"]);
    let rules = "expr: x{error_type=~\"auth|forbidden\"} y{error_type=\"AwsAccessDenied\",r=\"f\"}\n\
                 summary: {{ $labels.error_type }}\n  error_type: QualysRateLimited\n";
    assert_eq!(
        alert_error_types(rules),
        ["auth", "forbidden", "AwsAccessDenied", "QualysRateLimited"]
    );
}
