//! What a finished scan yields.

use crate::qualys::SeverityCounts;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The verdict of `--mode evaluate-policy` (docs/qualys-api.md §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PolicyVerdict {
    /// Exit 0: the image passes the central policies.
    Allow,
    /// Exit 42: a policy denies the image.
    Deny,
    /// Exit 43: no policy was evaluated (audit).
    Audit,
}

/// A vulnerable package of a [`Finding`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VulnerablePackage {
    /// Package name, e.g. `libc6:amd64` or `openssl`.
    pub name: String,
    /// Installed version.
    pub installed: Option<String>,
    /// Version that fixes the vulnerability, if any.
    pub fixed: Option<String>,
}

/// One vulnerability (Qualys QID) of the SARIF report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Qualys QID.
    pub qid: u64,
    /// Severity 1 (info) … 5 (critical); `None` when the report gives none (the finding is
    /// then not counted in [`ScanOutcome::severity_counts`]).
    pub severity: Option<u8>,
    /// Title, e.g. `Debian Security Update for glibc (CVE-2025-0395)`.
    pub title: String,
    /// CVE ids.
    pub cves: Vec<String>,
    /// Qualys Detection Score (0–100), when given.
    pub qds: Option<u32>,
    /// The vulnerable packages.
    pub packages: Vec<VulnerablePackage>,
}

/// One secret found in the image, without the secret itself: QScanner's `Match` field is never
/// read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretFinding {
    /// Id of the secret-detection rule.
    pub rule_id: String,
    /// Rule category, e.g. `AWS`, `Github`.
    pub category: Option<String>,
    /// Severity as QScanner writes it, e.g. `HIGH`, `CRITICAL`.
    pub severity: Option<String>,
    /// Rule title, e.g. `AWS Access Key ID`.
    pub title: Option<String>,
    /// File in the image.
    pub target: String,
    /// First line of the match in the file.
    pub start_line: Option<u64>,
}

/// A finished scan: QScanner exited with 0, 40, 42 or 43 and its outputs were parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanOutcome {
    /// QScanner's exit code (0, 40, 42 or 43).
    pub exit_code: i32,
    /// The policy verdict (`evaluate-policy` mode, or an unexpected 42/43 in `get-report`).
    pub policy: Option<PolicyVerdict>,
    /// Whether the vulnerability report was read. `false` after exit 40 ("SBOM uploaded but
    /// vuln report failed"): then `vulnerabilities` is empty and says nothing.
    pub report_available: bool,
    /// The 64-hex image id, without `sha256:`.
    pub image_id: Option<String>,
    /// The image digest, `sha256:…`.
    pub image_digest: Option<String>,
    /// Operating system, e.g. `Debian Linux 12.6`.
    pub os: Option<String>,
    /// Vulnerabilities, one per QID, most severe first.
    pub vulnerabilities: Vec<Finding>,
    /// Vulnerability counts by severity.
    pub severity_counts: SeverityCounts,
    /// Secrets found (without their content).
    pub secrets: Vec<SecretFinding>,
    /// `(ScanType, Status)` of each scan QScanner ran, e.g. `("os", "SUCCESS")`.
    pub scans_performed: Vec<(String, String)>,
    /// Things worth knowing that did not fail the scan (partial results, failed sub-scans,
    /// missing fields).
    pub warnings: Vec<String>,
    /// The attempt directory QScanner wrote into; it is removed when the run returns (read
    /// what is needed from this outcome, not from the files).
    pub output_dir: PathBuf,
    /// How long QScanner ran.
    pub duration: Duration,
}
