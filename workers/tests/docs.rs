//! What the code cites lives in the repository: every `docs/qualys-api.md §x.y` (and `§2.1 #n`,
//! a row of its endpoint table) in a source file names a section that exists, and no comment
//! points at a copy of the document outside the repository.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workers/ has a parent")
        .to_path_buf()
}

/// Source and documentation files of the workspace (not build output, not git's).
fn sources(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if !matches!(name, "target" | ".git" | "node_modules") && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if [".rs", ".md", ".toml", ".yaml", ".yml"]
                .iter()
                .any(|e| name.ends_with(e))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The sections of the document (`1`, `1.1`, …) and the rows of §2.1's table (`2.1 #6`).
fn sections(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut section = String::new();
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("### ").or(line.strip_prefix("## ")) {
            let number: String = heading
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            section = number.trim_end_matches('.').to_string();
            if !section.is_empty() {
                out.insert(section.clone());
            }
        } else if section == "2.1"
            && let Some(row) = line.strip_prefix("| ")
        {
            let n: String = row.chars().take_while(char::is_ascii_digit).collect();
            if !n.is_empty() {
                out.insert(format!("2.1 #{n}"));
            }
        }
    }
    out
}

/// A section number at the start of `text` (`2`, `2.6`), and the rest.
fn number(text: &str) -> Option<(String, &str)> {
    let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).count();
    let major = digits(text);
    if major == 0 {
        return None;
    }
    let rest = &text[major..];
    let minor = rest.strip_prefix('.').map_or(0, digits);
    let len = if minor > 0 { major + 1 + minor } else { major };
    Some((text[..len].to_string(), &text[len..]))
}

/// Every section `text` cites: `§2.6`, `§ 2.6`, ranges `§4.1–4.3` / `§2.1–§2.5` (both ends),
/// and table rows `§2.1 #6`, `§2.1 #1–#11`.
fn citations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices('§') {
        let rest = text[at + '§'.len_utf8()..].trim_start_matches(' ');
        let Some((first, mut rest)) = number(rest) else {
            continue;
        };
        out.push(first.clone());
        if let Some(after) = rest.strip_prefix('–')
            && let Some((last, r)) = number(after.trim_start_matches('§'))
        {
            out.push(last);
            rest = r;
        }
        let mut rows = rest.strip_prefix(" #");
        while let Some(r) = rows {
            let Some((n, r)) = number(r) else { break };
            out.push(format!("{first} #{n}"));
            rows = r.strip_prefix("–#");
        }
    }
    out
}

#[test]
fn every_cited_section_exists() {
    let root = workspace();
    let doc_path = root.join("docs/qualys-api.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/qualys-api.md");
    let known = sections(&doc);
    for s in ["1.1", "2.1", "2.6", "4.4", "6.2", "2.1 #14"] {
        assert!(known.contains(s), "the parser misses §{s}: {known:?}");
    }
    let mut cited = 0;
    let mut missing = Vec::new();
    let mut elsewhere = Vec::new();
    for file in sources(&root) {
        if file == doc_path || file.ends_with("workers/tests/docs.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if !text.contains("qualys-api.md") {
            continue;
        }
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("qualys-api.md") {
                if !line[..at].ends_with("docs/") {
                    elsewhere.push(format!("{shown}:{}", n + 1));
                }
            }
            // In a file that cites the document, every § is one of its sections.
            for section in citations(line) {
                cited += 1;
                if !known.contains(&section) {
                    missing.push(format!("§{section} ({shown}:{})", n + 1));
                }
            }
        }
    }
    assert!(
        cited > 40,
        "only {cited} citations found: the parser is broken"
    );
    assert!(
        missing.is_empty(),
        "cited sections docs/qualys-api.md does not have: {missing:?}"
    );
    assert!(
        elsewhere.is_empty(),
        "citations of qualys-api.md not in docs/: {elsewhere:?}"
    );
}

#[test]
fn the_citation_parser_reads_every_form() {
    assert_eq!(
        citations("(§2.6) §4.1–4.3, §2.1–§2.5 and § 1.2; §2.1 #1–#11, §2.1 #14 §4."),
        // `§2.1–§2.5`'s second `§` is read again on its own.
        [
            "2.6", "4.1", "4.3", "2.1", "2.5", "2.5", "1.2", "2.1", "2.1 #1", "2.1 #11", "2.1",
            "2.1 #14", "4"
        ]
    );
    let doc = "## 2. CS\n### 2.1 Endpoints\n| # | x |\n|---|---|\n| 6 | create |\n### 2.2 Body\n| 7 | no |\n";
    let found: Vec<String> = sections(doc).into_iter().collect();
    assert_eq!(found, ["2", "2.1", "2.1 #6", "2.2"]);
}

/// `a/{b,c}.rs` → `a/b.rs`, `a/c.rs`.
fn expand(path: &str) -> Vec<String> {
    match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) if open < close => path[open + 1..close]
            .split(',')
            .map(|alt| format!("{}{alt}{}", &path[..open], &path[close + 1..]))
            .collect(),
        _ => vec![path.to_string()],
    }
}

#[test]
fn every_path_architecture_md_names_exists() {
    let root = workspace();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let tops = [
        "workflows/",
        "activities/",
        "workers/",
        "tests/",
        "deploy/",
        "docs/",
    ];
    let mut checked = 0;
    let mut missing = Vec::new();
    let links = text
        .split("](")
        .skip(1)
        .filter_map(|s| s.split(')').next())
        .map(|l| l.split('#').next().unwrap_or_default());
    for path in text.split('`').skip(1).step_by(2).chain(links) {
        if path.is_empty() || path.contains("://") {
            continue;
        }
        let is_path = tops.iter().any(|t| path.starts_with(t)) || path.ends_with(".md");
        if !is_path {
            continue;
        }
        for path in expand(path) {
            checked += 1;
            if !root.join(&path).exists() {
                missing.push(path);
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} paths found: the parser is broken"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}
