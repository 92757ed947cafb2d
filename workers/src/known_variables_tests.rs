//! The known `QFLOWS_*` variables are derived from the command line ([`Cli`]'s `env = "…"`
//! attributes): these tests read the sources, the README and the scripts and check that every
//! variable they name is known, so nothing qflows reads or documents can be refused as unknown.

use super::Cli;
use clap::CommandFactory;
use qflows::config::{
    TOOLING_VARIABLES, VARIABLES_WITHOUT_FLAG, check_unknown_variables, flag_variables,
    known_variables,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workers/ has a parent")
        .to_path_buf()
}

/// Every file under `dir` (recursively) whose name ends in `ext` ("" for all).
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(ext) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `QFLOWS_*` name at the start of `text`, if there is one.
fn name_at(text: &str) -> Option<String> {
    let name: String = text
        .chars()
        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    (name.starts_with("QFLOWS_") && name.len() > "QFLOWS_".len()).then_some(name)
}

/// The `QFLOWS_*` names right after each occurrence of `prefix` in `text`.
fn names_after(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .filter_map(|(at, _)| name_at(&text[at + prefix.len()..]))
        .collect()
}

/// Every `QFLOWS_*` name in `text` (not a part of a longer word).
fn all_names(text: &str) -> Vec<String> {
    text.match_indices("QFLOWS_")
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .filter_map(|(at, _)| name_at(&text[at..]))
        .collect()
}

fn unknown<'a>(names: impl IntoIterator<Item = &'a (String, String)>) -> Vec<String> {
    let known = known_variables(&Cli::command());
    names
        .into_iter()
        .filter(|(name, _)| !known.contains(name))
        .map(|(name, place)| format!("{name} ({place})"))
        .collect()
}

#[test]
fn every_env_attribute_is_known() {
    let mut found = Vec::new();
    for file in files(&workspace().join("workers/src"), ".rs") {
        let text = std::fs::read_to_string(&file).expect("a source file");
        for name in names_after(&text, "env = \"") {
            found.push((name, file.display().to_string()));
        }
    }
    assert!(
        found.len() > 30,
        "only {} env attributes found",
        found.len()
    );
    let missing = unknown(&found);
    assert!(missing.is_empty(), "not known from the CLI: {missing:?}");
}

#[test]
fn every_readme_configuration_variable_is_known() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let mut found = Vec::new();
    for (n, line) in readme.lines().enumerate() {
        // A table row's first cell: the configuration tables name their variables there.
        let Some(first) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
            continue;
        };
        for name in all_names(first) {
            found.push((name, format!("README.md:{}", n + 1)));
        }
    }
    assert!(
        found.len() > 30,
        "only {} README variables found",
        found.len()
    );
    let missing = unknown(&found);
    assert!(missing.is_empty(), "documented but not known: {missing:?}");
}

/// Misspelt names the tests set to see them refused.
const DELIBERATE_TYPOS: &[&str] = &["QFLOWS_TASKQUEUE"];

#[test]
fn every_variable_read_directly_is_known() {
    let root = workspace();
    let mut found = Vec::new();
    for dir in ["workers/src", "activities/src", "workflows/src"] {
        for file in files(&root.join(dir), ".rs") {
            let text = std::fs::read_to_string(&file).expect("a source file");
            for prefix in ["env::var(\"", "env::var_os(\"", "env_nonempty(\""] {
                for name in names_after(&text, prefix) {
                    found.push((name, file.display().to_string()));
                }
            }
        }
    }
    // The scripts and tests export variables the binaries they start inherit; deploy/ sets
    // them for the worker and the bridge.
    for dir in ["scripts", ".ci", "tests", "deploy"] {
        for file in files(&root.join(dir), "") {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for name in all_names(&text) {
                if !DELIBERATE_TYPOS.contains(&name.as_str()) {
                    found.push((name, file.display().to_string()));
                }
            }
        }
    }
    let missing = unknown(&found);
    assert!(
        missing.is_empty(),
        "read or exported but not known: {missing:?}"
    );
    // The list of variables without a flag holds only those: each is read somewhere.
    for name in VARIABLES_WITHOUT_FLAG {
        assert!(
            found.iter().any(|(n, _)| n == name),
            "{name} is listed as read without a flag, but nothing reads it"
        );
    }
}

#[test]
fn the_extra_lists_hold_no_flag_variable() {
    let flags = flag_variables(&Cli::command());
    assert!(flags.contains("QFLOWS_TASK_QUEUE"), "{flags:?}");
    assert!(flags.contains("QFLOWS_BRIDGE_SQS_QUEUE_URL"), "{flags:?}");
    let extra: BTreeSet<&str> = VARIABLES_WITHOUT_FLAG
        .iter()
        .chain(TOOLING_VARIABLES)
        .copied()
        .collect();
    let both: Vec<&str> = extra.into_iter().filter(|v| flags.contains(*v)).collect();
    assert!(
        both.is_empty(),
        "listed by hand although a flag reads them: {both:?}"
    );
}

#[test]
fn the_real_command_refuses_a_typo() {
    let err =
        check_unknown_variables(&Cli::command(), ["QFLOWS_SCANBACKEND".to_string()]).unwrap_err();
    assert!(
        err.to_string().contains("did you mean QFLOWS_SCAN_BACKEND"),
        "{err}"
    );
}
