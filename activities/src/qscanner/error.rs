//! Errors of a QScanner run, and the Temporal failures they become.

use super::exit::FailureCategory;
use qflows_workflows::FailureType;
use std::path::PathBuf;
use std::time::Duration;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// Why a scan produced no [`ScanOutcome`](super::ScanOutcome).
///
/// Messages never contain credentials: process output is redacted before it is kept, and
/// report parsing errors name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum QScannerError {
    /// The binary is missing or not executable.
    #[error("the qscanner binary {path} is unusable: {message}")]
    NotFound {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The worker's QScanner configuration is unusable.
    #[error("invalid qscanner configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The scan job is unusable (image reference, scan id, policy tags, environment names).
    #[error("invalid qscanner scan job: {message}")]
    InvalidJob {
        /// What is wrong.
        message: String,
    },
    /// A local I/O failure: the output directory, spawning, waiting.
    #[error("qscanner I/O failure ({context}): {message}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        message: String,
    },
    /// QScanner exited with a failure code, or was killed by a signal.
    #[error("qscanner {}{}", describe_exit(*code, *signal, name), detail_suffix(detail))]
    Exit {
        /// The exit code, if it exited.
        code: Option<i32>,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// The documented name of the code (see [`exit_code_info`](super::exit_code_info)).
        name: &'static str,
        /// The group of the failure, hence its Temporal type name.
        category: FailureCategory,
        /// Whether running the scan again may succeed.
        retryable: bool,
        /// The last lines QScanner printed (redacted, at most ~800 characters).
        detail: String,
    },
    /// The scan ran longer than the configured timeout; the process was killed.
    #[error("qscanner timed out after {}s and was killed{}", after.as_secs(), detail_suffix(detail))]
    Timeout {
        /// The configured timeout.
        after: Duration,
        /// The last lines QScanner printed (redacted).
        detail: String,
    },
    /// The activity was cancelled; the process was killed.
    #[error("qscanner run cancelled; the process was killed")]
    Cancelled,
    /// QScanner succeeded but its output files are missing or unreadable.
    #[error("qscanner output {file}: {message}")]
    BadOutput {
        /// The file (or directory) concerned.
        file: String,
        /// What is wrong; never the file's content.
        message: String,
    },
}

fn describe_exit(code: Option<i32>, signal: Option<i32>, name: &str) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exited with code {code} ({name})"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended without an exit code".to_string(),
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

impl QScannerError {
    /// Whether Temporal should retry the activity.
    pub fn is_retryable(&self) -> bool {
        match self {
            QScannerError::NotFound { .. }
            | QScannerError::Config { .. }
            | QScannerError::InvalidJob { .. }
            | QScannerError::Cancelled => false,
            QScannerError::Exit { retryable, .. } => *retryable,
            QScannerError::Io { .. }
            | QScannerError::Timeout { .. }
            | QScannerError::BadOutput { .. } => true,
        }
    }

    /// The Temporal failure type name: one of `QScannerNotFound`, `QScannerConfigError`,
    /// `QScannerInvalidInput`, `QScannerIoError`, `QScannerTimeout`, `QScannerCancelled`,
    /// `QScannerBadOutput`, or for exit codes `QScannerFailed`, `QScannerInvalidParameter`,
    /// `QScannerArtifactFailed`, `QScannerScanFailed`, `QScannerUploadFailed`,
    /// `QScannerPolicyUnavailable`, `QScannerKilled`.
    pub fn type_name(&self) -> FailureType {
        match self {
            QScannerError::NotFound { .. } => FailureType::QScannerNotFound,
            QScannerError::Config { .. } => FailureType::QScannerConfigError,
            QScannerError::InvalidJob { .. } => FailureType::QScannerInvalidInput,
            QScannerError::Io { .. } => FailureType::QScannerIoError,
            QScannerError::Exit { category, .. } => category.type_name(),
            QScannerError::Timeout { .. } => FailureType::QScannerTimeout,
            QScannerError::Cancelled => FailureType::QScannerCancelled,
            QScannerError::BadOutput { .. } => FailureType::QScannerBadOutput,
        }
    }

    pub(crate) fn io(context: impl Into<String>, err: &std::io::Error) -> Self {
        QScannerError::Io {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

impl crate::failure::IntoFailure for QScannerError {
    /// [`QScannerError::Cancelled`] becomes Temporal's cancellation; everything else an
    /// application failure typed by [`QScannerError::type_name`].
    fn into_failure(self) -> ActivityError {
        if matches!(self, QScannerError::Cancelled) {
            return ActivityError::cancelled();
        }
        let type_name = self.type_name();
        let retryable = self.is_retryable();
        ActivityError::application(
            ApplicationFailure::builder(self)
                .type_name(type_name.into())
                .non_retryable(!retryable)
                .build(),
        )
    }
}
