//! The failure type names qflows records: one enum, so that a name is written once.
//!
//! Every failure a workflow or an activity ends with carries one of these names as its Temporal
//! application-failure type. They are a public contract: they are stored in workflow histories,
//! label `qflows_activity_failures_total{error_type}`, and alert rules and the README match on
//! them. A name never changes once shipped; a new failure gets a new variant here and a row in
//! the README's "Failure types" table (`workers/tests/failure_types.rs` checks that the README,
//! the alert rules and [`FailureType::ALL`] agree).

use std::fmt;

/// Declares [`FailureType`] from one list, so the variants, [`FailureType::ALL`] and
/// [`FailureType::as_str`] cannot disagree; each name is its variant's identifier.
macro_rules! failure_types {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// A failure type name (see the module documentation).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FailureType {
            $($(#[doc = $doc])+ $name,)+
        }

        impl FailureType {
            /// Every failure type, in declaration order.
            pub const ALL: &'static [FailureType] = &[$(FailureType::$name,)+];

            /// The name recorded in histories and metrics, e.g. `QualysAuthFailed`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(FailureType::$name => stringify!($name),)+
                }
            }
        }
    };
}

failure_types! {
    /// The workflow input (or a scope, an event) is malformed; the message names the field.
    InvalidInput,
    /// An activity's timeout ran out (a workflow ends with the cause's type).
    ActivityTimeout,
    /// An activity could not reach Temporal (start, signal or describe a workflow).
    TemporalUnavailable,
    /// The EnsureRegistry run a scan or another caller joined failed.
    EnsureRegistryFailed,
    /// Bad username/password, or a token rejected after one re-login.
    QualysAuthFailed,
    /// 403 (e.g. the Container Security module is not enabled).
    QualysForbidden,
    /// A 4xx that a retry cannot fix.
    QualysBadRequest,
    /// 404 from Qualys.
    QualysNotFound,
    /// 429 beyond what the client waits out in-process.
    QualysRateLimited,
    /// 5xx from Qualys.
    QualysServerError,
    /// A Qualys request timed out.
    QualysTimeout,
    /// Connection refused or dropped.
    QualysUnreachable,
    /// A truncated body or an answer of the wrong shape.
    QualysBadResponse,
    /// The Qualys client's configuration is invalid (URL, credentials missing).
    QualysConfigError,
    /// A registry scan's result is not there yet (the workflow polls again).
    QualysScanPending,
    /// Qualys says a registry or connector exists but does not list it yet.
    QualysNotListedYet,
    /// AWS refused the identity.
    AwsAccessDenied,
    /// AWS rejected the request as invalid.
    AwsInvalidRequest,
    /// Throttling, 5xx, timeouts or network failures from AWS.
    AwsUnavailable,
    /// No usable Azure identity (or no Azure access on this worker).
    AzureCredentials,
    /// The Azure resource does not exist (or a `nextLink` points elsewhere).
    AzureNotFound,
    /// Azure refused the identity.
    AzureRefused,
    /// Throttling, 5xx, timeouts or network failures from Azure.
    AzureUnavailable,
    /// An Azure answer of the wrong shape.
    AzureBadResponse,
    /// Unknown context, unreadable kubeconfig.
    KubeConfigError,
    /// The kubeconfig's credentials could not be obtained.
    KubeAuthFailed,
    /// 401/403 from the API server.
    KubeForbidden,
    /// 404 from the API server.
    KubeNotFound,
    /// The API server rejected the request (400, 422, other 4xx).
    KubeRejected,
    /// 429, 5xx or network failures from the API server.
    KubeUnavailable,
    /// An expired `continue` token (410).
    KubeListExpired,
    /// An API-server answer of the wrong shape.
    KubeBadResponse,
    /// The Tetragon policy directory could not be written.
    PolicyDirectoryError,
    /// An Azure scope on a worker without Azure access.
    InventoryUnsupported,
    /// The AWS credentials belong to another account than the scope's.
    InventoryWrongAccount,
    /// More than 1,000,000 containers in a scope.
    InventoryTooLarge,
    /// The results store is unreachable or busy.
    ResultsStoreUnavailable,
    /// The results store refused (permissions, a missing bucket, a read-only file system).
    ResultsStoreDenied,
    /// The SNS topic or webhook is unreachable or busy.
    NotifyUnavailable,
    /// The SNS topic or webhook refused the notification.
    NotifyRejected,
    /// The QScanner binary is missing.
    QScannerNotFound,
    /// The QScanner configuration is invalid.
    QScannerConfigError,
    /// A scan job with an invalid image or ID.
    QScannerInvalidInput,
    /// QScanner's files or process could not be handled.
    QScannerIoError,
    /// QScanner ran past its timeout.
    QScannerTimeout,
    /// The scan was cancelled.
    QScannerCancelled,
    /// QScanner's report is missing or malformed.
    QScannerBadOutput,
    /// QScanner exited with a generic failure.
    QScannerFailed,
    /// QScanner rejected its parameters.
    QScannerInvalidParameter,
    /// QScanner could not fetch or read the image.
    QScannerArtifactFailed,
    /// A QScanner scanner failed.
    QScannerScanFailed,
    /// A result handler or an upload to Qualys failed.
    QScannerUploadFailed,
    /// The policy evaluation result could not be fetched.
    QScannerPolicyUnavailable,
    /// QScanner was killed (a signal, or exit 124/137).
    QScannerKilled,
    /// The Qualys credentials Secret is missing.
    SensorCredentialsMissing,
    /// The cluster kind or platform is not supported.
    SensorUnsupportedCluster,
    /// The pre-flight checks refused the deployment.
    SensorPreflightRefused,
    /// A roll-back could not reach the cluster; retried.
    SensorRollbackIncomplete,
    /// The deployment failed its checks and was rolled back.
    SensorRolledBack,
    /// A roll-back could not restore everything (the message names what remains).
    SensorRollbackFailed,
    /// The cluster or Qualys could not be observed within the deadline.
    SensorUnobservable,
    /// The quarantined service or revision changed since the quarantine was proposed.
    QuarantineTargetChanged,
    /// An approved quarantine does not show on the platform yet; retried.
    QuarantineUnverified,
}

impl FailureType {
    /// The failure type named `name`, if it is one of qflows'.
    pub fn from_name(name: &str) -> Option<FailureType> {
        FailureType::ALL
            .iter()
            .copied()
            .find(|t| t.as_str() == name)
    }
}

impl fmt::Display for FailureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<FailureType> for String {
    fn from(t: FailureType) -> String {
        t.as_str().to_string()
    }
}

impl PartialEq<str> for FailureType {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for FailureType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::FailureType;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_distinct_and_round_trip() {
        let names: BTreeSet<&str> = FailureType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            names.len(),
            FailureType::ALL.len(),
            "a name is listed twice"
        );
        for &t in FailureType::ALL {
            assert_eq!(FailureType::from_name(t.as_str()), Some(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        assert_eq!(FailureType::from_name("qualysauthfailed"), None);
        assert_eq!(FailureType::from_name(""), None);
    }

    #[test]
    fn shipped_names_are_unchanged() {
        // Names stored in histories and matched by alert rules: spelled out, not derived.
        for (t, name) in [
            (FailureType::InvalidInput, "InvalidInput"),
            (FailureType::QualysConfigError, "QualysConfigError"),
            (FailureType::QualysScanPending, "QualysScanPending"),
            (FailureType::TemporalUnavailable, "TemporalUnavailable"),
            (FailureType::InventoryWrongAccount, "InventoryWrongAccount"),
            (FailureType::SensorRollbackFailed, "SensorRollbackFailed"),
            (
                FailureType::QScannerArtifactFailed,
                "QScannerArtifactFailed",
            ),
        ] {
            assert_eq!(t.as_str(), name);
        }
    }
}
