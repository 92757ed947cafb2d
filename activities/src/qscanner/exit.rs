//! QScanner's exit codes: the official table (docs/qualys-api.md §4.4, QScanner 4.8.0 README
//! l.2728-2775), and what each one means for a scan.
//!
//! Not the tables some seed projects carry (qualys-jenkins' "20 = auth failed, 50 = threshold
//! exceeded", qualys-aci's "1 = vulnerabilities found"): those are wrong.

use qflows_workflows::FailureType;
use serde::{Deserialize, Serialize};

/// What an exit code means for the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitDisposition {
    /// 0: success (in `evaluate-policy` mode: the policy verdict is ALLOW).
    Success,
    /// 40: the SBOM was uploaded but the vulnerability report could not be fetched. The scan
    /// result is a partial success: inventory and secrets, no vulnerabilities.
    ReportUnavailable,
    /// 42: the policy verdict is DENY (the report was fetched).
    PolicyDeny,
    /// 43: the policy verdict is AUDIT (no policy was evaluated).
    PolicyAudit,
    /// Every other code: the scan failed.
    Failure {
        /// Which group of failures, hence the Temporal failure type name.
        category: FailureCategory,
        /// Whether running the scan again may succeed.
        retryable: bool,
    },
}

/// A group of failure exit codes. Each maps to one Temporal failure type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// 1, 3 and codes that are not in the table: `QScannerFailed`.
    Generic,
    /// 2: `QScannerInvalidParameter`.
    InvalidParameter,
    /// 5–10, the artifact (image) could not be read or pulled: `QScannerArtifactFailed`.
    Artifact,
    /// 11–21, a scanner failed: `QScannerScanFailed`.
    Scan,
    /// 30–39, a result handler or an upload to Qualys failed: `QScannerUploadFailed`.
    Upload,
    /// 41, the policy evaluation result could not be fetched: `QScannerPolicyUnavailable`.
    PolicyResult,
    /// 124, 137 and 129–159 (a shell's 128 + signal), or ended by a signal: `QScannerKilled`.
    Killed,
}

impl FailureCategory {
    /// The Temporal failure type name of this category.
    pub fn type_name(&self) -> FailureType {
        match self {
            FailureCategory::Generic => FailureType::QScannerFailed,
            FailureCategory::InvalidParameter => FailureType::QScannerInvalidParameter,
            FailureCategory::Artifact => FailureType::QScannerArtifactFailed,
            FailureCategory::Scan => FailureType::QScannerScanFailed,
            FailureCategory::Upload => FailureType::QScannerUploadFailed,
            FailureCategory::PolicyResult => FailureType::QScannerPolicyUnavailable,
            FailureCategory::Killed => FailureType::QScannerKilled,
        }
    }
}

/// One exit code: its documented name and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCodeInfo {
    /// The code.
    pub code: i32,
    /// The documented name, e.g. `EXIT_IMAGE_ARTIFACT_FAILED`, or a description for codes the
    /// table does not list.
    pub name: &'static str,
    /// What it means.
    pub disposition: ExitDisposition,
}

/// The official exit-code table, one arm per documented code.
///
/// Retryability is a judgement on top of the table: failures that depend on the registry, the
/// network or the Qualys backend are retryable (Temporal's retry policy bounds the attempts);
/// invalid parameters, a logger that cannot start, an unsupported OS, a broken archive or an
/// unknown storage driver will fail the same way again.
pub fn exit_code_info(code: i32) -> ExitCodeInfo {
    use ExitDisposition as D;
    use FailureCategory as C;
    let fail = |category, retryable| D::Failure {
        category,
        retryable,
    };
    let (name, disposition) = match code {
        0 => ("EXIT_SUCCESS", D::Success),
        1 => ("EXIT_GENERIC_ERROR", fail(C::Generic, true)),
        2 => ("EXIT_INVALID_PARAMETER", fail(C::InvalidParameter, false)),
        3 => ("EXIT_LOGGER_INIT_FAILED", fail(C::Generic, false)),
        5 => ("EXIT_FILESYSTEM_ARTIFACT_FAILED", fail(C::Artifact, true)),
        // Image not found, pull denied, registry unreachable or throttled, credentials expired:
        // QScanner does not tell them apart, so retry within the policy's bound.
        6 => ("EXIT_IMAGE_ARTIFACT_FAILED", fail(C::Artifact, true)),
        7 => (
            "EXIT_IMAGE_ARCHIVE_ARTIFACT_FAILED",
            fail(C::Artifact, false),
        ),
        8 => (
            "EXIT_IMAGE_STORAGE_DRIVER_ARTIFACT_FAILED",
            fail(C::Artifact, false),
        ),
        9 => ("EXIT_CONTAINER_ARTIFACT_FAILED", fail(C::Artifact, true)),
        10 => ("EXIT_OTHER_ARTIFACT_FAILED", fail(C::Artifact, true)),
        11 => ("EXIT_METADATA_SCAN_FAILED", fail(C::Scan, true)),
        12 => ("EXIT_OS_SCAN_FAILED", fail(C::Scan, true)),
        13 => ("EXIT_SCA_SCAN_FAILED", fail(C::Scan, true)),
        14 => ("EXIT_SECRET_SCAN_FAILED", fail(C::Scan, true)),
        15 => ("EXIT_OS_NOT_FOUND", fail(C::Scan, false)),
        16 => ("EXIT_MALWARE_SCAN_FAILED", fail(C::Scan, true)),
        17 => ("EXIT_OS_NOT_SUPPORTED", fail(C::Scan, false)),
        18 => ("EXIT_FILE_INSIGHT_SCAN_FAILED", fail(C::Scan, true)),
        19 => ("EXIT_COMPLIANCE_SCAN_FAILED", fail(C::Scan, true)),
        20 => ("EXIT_MANIFEST_SCAN_FAILED", fail(C::Scan, true)),
        21 => ("EXIT_WINREGISTRY_SCAN_FAILED", fail(C::Scan, true)),
        30 => ("EXIT_JSON_RESULT_HANDLER_FAILED", fail(C::Upload, true)),
        31 => ("EXIT_CHANGELIST_CREATION_FAILED", fail(C::Upload, true)),
        32 => ("EXIT_CHANGELIST_COMPRESSION_FAILED", fail(C::Upload, true)),
        33 => ("EXIT_CHANGELIST_UPLOAD_FAILED", fail(C::Upload, true)),
        34 => ("EXIT_SPDX_HANDLER_FAILED", fail(C::Upload, true)),
        35 => ("EXIT_CDX_HANDLER_FAILED", fail(C::Upload, true)),
        36 => ("EXIT_SBOM_COMPRESSION_FAILED", fail(C::Upload, true)),
        37 => ("EXIT_SBOM_UPLOAD_FAILED", fail(C::Upload, true)),
        38 => ("EXIT_SECRET_RESULT_CREATION_FAILED", fail(C::Upload, true)),
        39 => ("EXIT_SECRET_RESULT_UPLOAD_FAILED", fail(C::Upload, true)),
        40 => ("EXIT_FAILED_TO_GET_VULN_REPORT", D::ReportUnavailable),
        41 => (
            "EXIT_FAILED_TO_GET_POLICY_EVALUATION_RESULT",
            fail(C::PolicyResult, true),
        ),
        42 => ("EXIT_POLICY_EVALUATION_DENY", D::PolicyDeny),
        43 => ("EXIT_POLICY_EVALUATION_AUDIT", D::PolicyAudit),
        // Not QScanner's own codes: what wrappers and shells report for a killed process.
        124 => ("timed out (timeout(1) wrapper)", fail(C::Killed, true)),
        137 => ("killed (SIGKILL)", fail(C::Killed, true)),
        129..=159 => ("killed by a signal (128 + signal)", fail(C::Killed, true)),
        _ => ("undocumented exit code", fail(C::Generic, true)),
    };
    ExitCodeInfo {
        code,
        name,
        disposition,
    }
}
