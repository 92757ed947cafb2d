//! Reading what QScanner writes into `--output-dir` (docs/qualys-api.md §4.5).
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
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
#[cfg(test)]
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The methods of a lenient visitor for the JSON shapes it does not expect: each answers
/// `$empty` (an array or object is read to its end first), so a field of the wrong shape reads
/// as absent instead of failing the whole report.
macro_rules! other_shapes_are {
    ($out:ty = $empty:expr; $($shape:ident),+) => {
        $(other_shapes_are!(@ $shape, $out, $empty);)+
    };
    (@ unit, $out:ty, $empty:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok($empty)
        }
    };
    (@ none, $out:ty, $empty:expr) => {
        fn visit_none<E: de::Error>(self) -> Result<$out, E> {
            Ok($empty)
        }
    };
    (@ str, $out:ty, $empty:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$out, E> {
            Ok($empty)
        }
    };
    (@ bool, $out:ty, $empty:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok($empty)
        }
    };
    (@ i64, $out:ty, $empty:expr) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok($empty)
        }
    };
    (@ u64, $out:ty, $empty:expr) => {
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok($empty)
        }
    };
    (@ f64, $out:ty, $empty:expr) => {
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok($empty)
        }
    };
    (@ seq, $out:ty, $empty:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$out, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($empty)
        }
    };
    (@ map, $out:ty, $empty:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$out, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($empty)
        }
    };
}

/// Output files larger than this are refused. Reports are read as a stream into typed structs
/// (only the fields used are kept), so memory follows the distinct vulnerabilities, not the file:
/// `qflows-bench qscanner-report` measured a 100 MB report under the 256 MiB the README gives
/// QScanner's share of the worker's 512 Mi limit. The cap keeps a runaway file from taking the
/// worker's time.
pub(crate) const MAX_FILE_BYTES: u64 = 192 * 1024 * 1024;

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

/// Reads a JSON file into `T` from a buffered stream, refusing files over [`MAX_FILE_BYTES`]
/// (checked before reading, and enforced while reading). Errors name the file and the position,
/// never the content.
pub(crate) async fn read_typed<T>(path: &Path, what: &'static str) -> Result<T, QScannerError>
where
    T: for<'de> Deserialize<'de> + Send + 'static,
{
    use std::io::Read;
    let label = file_label(path);
    let bad = |message: String| QScannerError::BadOutput {
        file: label.clone(),
        message,
    };
    let path = path.to_path_buf();
    let parsed = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| format!("cannot read: {e}"))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > MAX_FILE_BYTES {
            return Err(format!(
                "{len} bytes, more than the {MAX_FILE_BYTES} bytes accepted"
            ));
        }
        let reader = std::io::BufReader::with_capacity(64 * 1024, file.take(MAX_FILE_BYTES));
        serde_json::from_reader::<_, T>(reader).map_err(|e| {
            format!(
                "malformed or not a {what} document ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            )
        })
    })
    .await
    .map_err(|e| bad(format!("reading was interrupted: {e}")))?;
    parsed.map_err(bad)
}

/// Parses JSON; a syntax error reports its kind and position only.
#[cfg(test)]
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

#[cfg(test)]
fn not_a(label: &str, what: &str) -> QScannerError {
    QScannerError::BadOutput {
        file: label.to_string(),
        message: format!("not a {what} document (expected a JSON object)"),
    }
}

#[cfg(test)]
fn bad_shape(label: &str, e: &serde_json::Error) -> QScannerError {
    QScannerError::BadOutput {
        file: label.to_string(),
        message: format!("unexpected shape ({:?} error)", e.classify()),
    }
}

/// `sha256:ABC…` → `abc…`.
pub(crate) fn normalize_image_id(id: &str) -> String {
    id.trim()
        .strip_prefix("sha256:")
        .unwrap_or(id.trim())
        .to_ascii_lowercase()
}

fn push_unique(into: &mut Vec<String>, items: Vec<String>) {
    for item in items {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SARIF report, as typed structs read from a stream. Only the fields used are kept; everything
// else is skipped as it is read. Results are folded as they arrive (one entry per rule and QID),
// so memory follows the number of distinct vulnerabilities, not the size of the file.

/// The facts read from `*-Report.sarif.json`.
#[derive(Debug, Default)]
pub(crate) struct SarifReport {
    pub(crate) image_id: Option<String>,
    pub(crate) image_digest: Option<String>,
    pub(crate) os: Option<String>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) warnings: Vec<String>,
}

#[derive(Deserialize, Default)]
struct SarifDoc {
    #[serde(default)]
    runs: LVec<Obj<Run>>,
}

#[derive(Deserialize, Default)]
struct Run {
    #[serde(default)]
    properties: Obj<RunProps>,
    #[serde(default)]
    tool: Obj<Tool>,
    #[serde(default)]
    results: Results,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct RunProps {
    #[serde(default)]
    imageID: LText,
    #[serde(default)]
    imageId: LText,
    #[serde(default)]
    imageSha: LText,
    #[serde(default)]
    imageDigest: LText,
    #[serde(default)]
    digest: LText,
    #[serde(default)]
    os: LText,
    #[serde(default)]
    operatingSystem: LText,
    #[serde(default)]
    OS: LText,
}

#[derive(Deserialize, Default)]
struct Tool {
    #[serde(default)]
    driver: Obj<Driver>,
}

#[derive(Deserialize, Default)]
struct Driver {
    #[serde(default)]
    rules: LVec<Obj<Rule>>,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct Rule {
    #[serde(default)]
    id: LText,
    #[serde(default)]
    shortDescription: Obj<TextObj>,
    #[serde(default)]
    name: LText,
    #[serde(default)]
    fullDescription: Obj<TextObj>,
    #[serde(default)]
    properties: Obj<Props>,
}

#[derive(Deserialize, Default)]
struct TextObj {
    #[serde(default)]
    text: LText,
}

/// Properties of a rule or a result: every spelling the known shapes use.
#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct Props {
    #[serde(default)]
    QID: LInt,
    #[serde(default)]
    qid: LInt,
    #[serde(default)]
    severity: LInt,
    #[serde(default)]
    customerSeverity: LInt,
    #[serde(default, rename = "cve-ids")]
    cve_ids: LStrings,
    #[serde(default)]
    cves: LStrings,
    #[serde(default)]
    cveIds: LStrings,
    #[serde(default, rename = "CVE-IDs")]
    cve_ids_upper: LStrings,
    #[serde(default)]
    qds: LInt,
    #[serde(default)]
    QDS: LInt,
    #[serde(default)]
    vulnerableSoftware: LVec<Obj<Software>>,
    #[serde(default)]
    softwares: LVec<Obj<Software>>,
    #[serde(default)]
    Softwares: LVec<Obj<Software>>,
    #[serde(default)]
    packageName: LText,
    #[serde(default)]
    package: LText,
    #[serde(default)]
    installedVersion: LText,
    #[serde(default)]
    fixedVersion: LText,
}

impl Props {
    fn qid(&self) -> Option<u64> {
        self.QID.0.or(self.qid.0)
    }
    fn severity(&self) -> Option<u8> {
        let valid = |s: Option<u64>| s.filter(|s| (1..=5).contains(s)).map(|s| s as u8);
        // The first spelling present wins, as in the reports that carry both.
        match self.severity.0 {
            Some(s) => valid(Some(s)),
            None => valid(self.customerSeverity.0),
        }
    }
    fn cves(&self) -> Vec<String> {
        [&self.cve_ids, &self.cves, &self.cveIds, &self.cve_ids_upper]
            .into_iter()
            .find(|c| c.present)
            .map(|c| c.items.clone())
            .unwrap_or_default()
    }
    fn qds(&self) -> Option<u32> {
        self.qds
            .0
            .or(self.QDS.0)
            .map(|q| q.min(u64::from(u32::MAX)) as u32)
    }
    fn packages(&self) -> Vec<VulnerablePackage> {
        let list = [&self.vulnerableSoftware, &self.softwares, &self.Softwares]
            .into_iter()
            .find(|l| l.present)
            .map(|l| l.items.as_slice())
            .unwrap_or(&[]);
        let mut out: Vec<VulnerablePackage> = list
            .iter()
            .filter_map(|s| {
                let s = &s.0;
                Some(VulnerablePackage {
                    name: s.name.0.clone().or_else(|| s.Name.0.clone())?,
                    installed: s
                        .installedVersion
                        .0
                        .clone()
                        .or_else(|| s.installed_version.0.clone())
                        .or_else(|| s.version.0.clone()),
                    fixed: s
                        .fixedVersion
                        .0
                        .clone()
                        .or_else(|| s.fixed_version.0.clone()),
                })
            })
            .collect();
        if out.is_empty()
            && let Some(name) = self
                .packageName
                .0
                .clone()
                .or_else(|| self.package.0.clone())
        {
            out.push(VulnerablePackage {
                name,
                installed: self.installedVersion.0.clone(),
                fixed: self.fixedVersion.0.clone(),
            });
        }
        out
    }
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct Software {
    #[serde(default)]
    name: LText,
    #[serde(default)]
    Name: LText,
    #[serde(default)]
    installedVersion: LText,
    #[serde(default)]
    installed_version: LText,
    #[serde(default)]
    version: LText,
    #[serde(default)]
    fixedVersion: LText,
    #[serde(default)]
    fixed_version: LText,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct SarifResult {
    #[serde(default)]
    ruleId: LText,
    #[serde(default)]
    ruleIndex: LInt,
    #[serde(default)]
    properties: Obj<Props>,
    #[serde(default)]
    message: Obj<TextObj>,
}

/// What the results of one rule and QID add up to.
#[derive(Default)]
struct Folded {
    severity: Option<u8>,
    cves: Vec<String>,
    qds: Option<u32>,
    packages: Vec<VulnerablePackage>,
    message: Option<String>,
}

/// The key results are folded by: rule id, rule index, the result's own QID.
type ResultKey = (Option<String>, Option<u64>, Option<u64>);

/// A run's results, folded as they are read (by [`ResultKey`]).
#[derive(Default)]
struct Results(BTreeMap<ResultKey, Folded>);

impl<'de> Deserialize<'de> for Results {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Results;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("SARIF results")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Results, A::Error> {
                let mut out = Results::default();
                while let Some(Obj(r)) = seq.next_element::<Obj<SarifResult>>()? {
                    let props = &r.properties.0;
                    let key = (r.ruleId.0.clone(), r.ruleIndex.0, props.qid());
                    let entry = out.0.entry(key).or_default();
                    if entry.severity.is_none() {
                        entry.severity = props.severity();
                    }
                    if entry.qds.is_none() {
                        entry.qds = props.qds();
                    }
                    if entry.message.is_none() {
                        entry.message = r.message.0.text.0.clone();
                    }
                    push_unique(&mut entry.cves, props.cves());
                    for p in props.packages() {
                        if !entry.packages.contains(&p) {
                            entry.packages.push(p);
                        }
                    }
                }
                Ok(out)
            }
            other_shapes_are!(Results = Results::default(); map, unit, none, str, bool, i64, u64, f64);
        }
        d.deserialize_any(V)
    }
}

/// Reads the vulnerabilities of a SARIF report already in memory (tests, small documents).
#[cfg(test)]
pub(crate) fn parse_sarif(doc: &Value, label: &str) -> Result<SarifReport, QScannerError> {
    if !doc.is_object() {
        return Err(not_a(label, "SARIF"));
    }
    let parsed = SarifDoc::deserialize(doc).map_err(|e| bad_shape(label, &e))?;
    Ok(sarif_report(parsed, label))
}

/// Reads the vulnerabilities of a SARIF report file, streaming (see [`read_typed`]).
pub(crate) async fn read_sarif(path: &Path) -> Result<SarifReport, QScannerError> {
    let label = file_label(path);
    let Top(parsed) = read_typed::<Top<SarifDoc>>(path, "SARIF").await?;
    Ok(sarif_report(parsed, &label))
}

/// The report of a parsed SARIF document: the image facts of the first run that has them, and
/// one finding per QID over all runs, most severe first.
fn sarif_report(doc: SarifDoc, label: &str) -> SarifReport {
    let mut report = SarifReport::default();
    let runs = doc.runs.items;
    if runs.is_empty() {
        report
            .warnings
            .push(format!("{label}: the SARIF report has no runs"));
    }
    let mut by_qid: BTreeMap<u64, Finding> = BTreeMap::new();
    let mut unidentified = 0usize;
    for Obj(run) in runs {
        take_image_facts(&mut report, &run.properties.0);
        unidentified += fold_results(run, &mut by_qid);
    }
    let mut findings: Vec<Finding> = by_qid.into_values().collect();
    let unrated = findings.iter().filter(|f| f.severity.is_none()).count();
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
    report
}

/// Takes the image ID, digest and OS from a run's properties where the report has none yet.
fn take_image_facts(report: &mut SarifReport, p: &RunProps) {
    if report.image_id.is_none() {
        report.image_id = p
            .imageID
            .0
            .clone()
            .or_else(|| p.imageId.0.clone())
            .or_else(|| p.imageSha.0.clone())
            .map(|id| normalize_image_id(&id));
    }
    if report.image_digest.is_none() {
        report.image_digest = p.imageDigest.0.clone().or_else(|| p.digest.0.clone());
    }
    if report.os.is_none() {
        report.os =
            p.os.0
                .clone()
                .or_else(|| p.operatingSystem.0.clone())
                .or_else(|| p.OS.0.clone());
    }
}

/// Folds a run's results into `by_qid`, each with its rule (by id, else by index); returns how
/// many results had no QID (own, rule's, or a numeric rule id) and were skipped.
fn fold_results(run: Run, by_qid: &mut BTreeMap<u64, Finding>) -> usize {
    let rules_list = run.tool.0.driver.0.rules.items;
    let rules: BTreeMap<&str, &Rule> = rules_list
        .iter()
        .filter_map(|Obj(r)| r.id.0.as_deref().map(|id| (id, r)))
        .collect();
    let empty = Props::default();
    let mut unidentified = 0usize;
    for ((rule_id, rule_index, own_qid), folded) in run.results.0 {
        let rule = rule_id
            .as_deref()
            .and_then(|id| rules.get(id).copied())
            .or_else(|| rule_index.and_then(|i| rules_list.get(i as usize).map(|r| &r.0)));
        let rule_props = rule.map(|r| &r.properties.0).unwrap_or(&empty);
        let Some(qid) = own_qid
            .or_else(|| rule_props.qid())
            .or_else(|| rule_id.as_deref().and_then(|id| id.trim().parse().ok()))
        else {
            unidentified += 1;
            continue;
        };
        let entry = by_qid.entry(qid).or_insert_with(|| Finding {
            qid,
            ..Finding::default()
        });
        merge_result(entry, rule, rule_props, folded);
    }
    unidentified
}

/// Merges one result into its QID's finding: the rule's facts before the result's own, and
/// what the finding already has before either (the first run to say wins); CVEs and packages
/// are united.
fn merge_result(entry: &mut Finding, rule: Option<&Rule>, rule_props: &Props, folded: Folded) {
    let severity = rule_props.severity().or(folded.severity);
    let title = rule
        .and_then(|r| {
            r.shortDescription
                .0
                .text
                .0
                .clone()
                .or_else(|| r.name.0.clone())
                .or_else(|| r.fullDescription.0.text.0.clone())
        })
        .or(folded.message)
        .unwrap_or_default();
    let mut cves = rule_props.cves();
    push_unique(&mut cves, folded.cves);
    let qds = rule_props.qds().or(folded.qds);
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
    for p in folded.packages {
        if !entry.packages.contains(&p) {
            entry.packages.push(p);
        }
    }
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
// ScanResult, typed and streamed like the report. `Match` is not a field of [`SecretEntry`]: it
// is skipped as it is read and never held in memory.

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

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct ScanResultDoc {
    #[serde(default)]
    ScansPerformed: LVec<Obj<ScanPerformed>>,
    #[serde(default)]
    SecretResults: LVec<Obj<SecretResult>>,
    #[serde(default)]
    Metadata: Obj<Metadata>,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct ScanPerformed {
    #[serde(default)]
    ScanType: LText,
    #[serde(default)]
    Status: LText,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct SecretResult {
    #[serde(default)]
    Target: LText,
    #[serde(default)]
    Secrets: LVec<Obj<SecretEntry>>,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct SecretEntry {
    #[serde(default)]
    RuleID: LText,
    #[serde(default)]
    Category: LText,
    #[serde(default)]
    Severity: LText,
    #[serde(default)]
    Title: LText,
    #[serde(default)]
    StartLine: LInt,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct Metadata {
    #[serde(default)]
    TargetMetadata: Obj<TargetMetadata>,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct TargetMetadata {
    #[serde(default)]
    ImageMetadata: Obj<ImageMetadata>,
    #[serde(default)]
    OS: LText,
}

#[derive(Deserialize, Default)]
#[allow(non_snake_case)]
struct ImageMetadata {
    #[serde(default)]
    ImageID: LText,
    #[serde(default)]
    ImageId: LText,
    #[serde(default)]
    RepoDigests: LStrings,
    #[serde(default)]
    OS: LText,
}

/// Reads scans performed, secrets (never their `Match`) and image metadata from a document in
/// memory (tests).
#[cfg(test)]
pub(crate) fn parse_scan_result(doc: &Value, label: &str) -> Result<ScanResult, QScannerError> {
    if !doc.is_object() {
        return Err(not_a(label, "ScanResult"));
    }
    let parsed = ScanResultDoc::deserialize(doc).map_err(|e| bad_shape(label, &e))?;
    Ok(scan_result(parsed))
}

/// Reads a ScanResult file, streaming (see [`read_typed`]).
pub(crate) async fn read_scan_result(path: &Path) -> Result<ScanResult, QScannerError> {
    let Top(parsed) = read_typed::<Top<ScanResultDoc>>(path, "ScanResult").await?;
    Ok(scan_result(parsed))
}

fn scan_result(doc: ScanResultDoc) -> ScanResult {
    let mut out = ScanResult::default();
    for Obj(scan) in doc.ScansPerformed.items {
        let Some(scan_type) = scan.ScanType.0 else {
            continue;
        };
        let status = scan.Status.0.unwrap_or_else(|| "UNKNOWN".to_string());
        if !status.eq_ignore_ascii_case("SUCCESS") {
            out.warnings.push(format!(
                "the {scan_type} scan finished with status {status}"
            ));
        }
        out.scans_performed.push((scan_type, status));
    }
    for Obj(result) in doc.SecretResults.items {
        let target = result.Target.0.unwrap_or_default();
        for Obj(secret) in result.Secrets.items {
            out.secrets.push(SecretFinding {
                rule_id: secret.RuleID.0.unwrap_or_default(),
                category: secret.Category.0,
                severity: secret.Severity.0,
                title: secret.Title.0,
                target: target.clone(),
                start_line: secret.StartLine.0,
            });
        }
    }
    let target = doc.Metadata.0.TargetMetadata.0;
    let image = target.ImageMetadata.0;
    out.image_id = image
        .ImageID
        .0
        .or(image.ImageId.0)
        .map(|i| normalize_image_id(&i));
    out.image_digest = image
        .RepoDigests
        .items
        .iter()
        .find_map(|d| d.rsplit_once('@').map(|(_, digest)| digest.to_string()));
    out.os = image.OS.0.or(target.OS.0);
    out
}

// ---------------------------------------------------------------------------------------------
// Lenient typed values: what the `Value` accessors of the first parser accepted, without a
// `Value` tree.

/// A document that must be a JSON object.
struct Top<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Top<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Top<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Top<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Top)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An object of type `T`, or `T::default()` for anything else (skipped).
#[derive(Default)]
struct Obj<T>(T);

impl<'de, T: Deserialize<'de> + Default> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Default> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
            other_shapes_are!(Obj<T> = Obj(T::default()); seq, unit, none, str, bool, i64, u64, f64);
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A list of `T`, empty for anything that is not an array; `present` says an array was there.
struct LVec<T> {
    items: Vec<T>,
    present: bool,
}

impl<T> Default for LVec<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            present: false,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for LVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = LVec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LVec<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    items.push(item);
                }
                Ok(LVec {
                    items,
                    present: true,
                })
            }
            other_shapes_are!(LVec<T> = LVec::default(); map, unit, none, str, bool, i64, u64, f64);
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A non-empty string (trimmed), or a number written as one; `None` for anything else.
#[derive(Default)]
struct LText(Option<String>);

impl<'de> Deserialize<'de> for LText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Scalar).map(|s| {
            LText(match s {
                ScalarValue::Text(t) => Some(t),
                ScalarValue::U(n) => Some(n.to_string()),
                ScalarValue::I(n) => Some(n.to_string()),
                ScalarValue::F(n) => Some(n.to_string()),
                ScalarValue::Other => None,
            })
        })
    }
}

/// A non-negative integer, or one written as a string (`"35"`, `"35.0"`); `None` otherwise.
#[derive(Default)]
struct LInt(Option<u64>);

impl<'de> Deserialize<'de> for LInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let from_f = |f: f64| (f.is_finite() && f >= 0.0).then(|| f.round() as u64);
        d.deserialize_any(Scalar).map(|s| {
            LInt(match s {
                ScalarValue::U(n) => Some(n),
                ScalarValue::I(n) => u64::try_from(n).ok(),
                ScalarValue::F(f) => from_f(f),
                ScalarValue::Text(t) => t
                    .parse::<u64>()
                    .ok()
                    .or_else(|| t.parse::<f64>().ok().and_then(from_f)),
                ScalarValue::Other => None,
            })
        })
    }
}

/// An array of strings, or one comma-separated string; `present` when the field was there.
#[derive(Default)]
struct LStrings {
    items: Vec<String>,
    present: bool,
}

impl<'de> Deserialize<'de> for LStrings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LStrings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LStrings, A::Error> {
                let mut items = Vec::new();
                while let Some(LText(t)) = seq.next_element::<LText>()? {
                    items.extend(t);
                }
                Ok(LStrings {
                    items,
                    present: true,
                })
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<LStrings, E> {
                Ok(LStrings {
                    items: s
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    present: true,
                })
            }
            other_shapes_are!(LStrings = LStrings::default(); map, unit, none, bool, i64, u64, f64);
        }
        d.deserialize_any(V)
    }
}

enum ScalarValue {
    Text(String),
    U(u64),
    I(i64),
    F(f64),
    Other,
}

struct Scalar;

impl<'de> Visitor<'de> for Scalar {
    type Value = ScalarValue;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<ScalarValue, E> {
        let s = s.trim();
        Ok(if s.is_empty() {
            ScalarValue::Other
        } else {
            ScalarValue::Text(s.to_string())
        })
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<ScalarValue, E> {
        Ok(ScalarValue::U(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<ScalarValue, E> {
        Ok(ScalarValue::I(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<ScalarValue, E> {
        Ok(ScalarValue::F(n))
    }
    other_shapes_are!(ScalarValue = ScalarValue::Other; bool, unit, none, seq, map);
}
