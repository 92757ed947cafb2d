//! The results store: full scan reports as JSON documents with a stable schema.
//!
//! Workflow history keeps a reference (the path or `s3://` URL) and a summary; the report lives
//! here. Two backends share one layout, `scan-results/<repository>/<digest>/<scannedAt>.json` —
//! the layout of the ECR scanner's S3 bucket:
//!
//! - [`LocalResults`]: a directory. Documents are written via a temporary file and a rename.
//! - [`S3Results`]: a bucket and key prefix (`s3://bucket/prefix`), written with
//!   `Content-Type: application/json` and SSE-S3 (`AES256`), like the ECR scanner.
//!
//! Either way a retried write replaces the same document instead of adding one: the key depends
//! only on the repository, the digest and the workflow's `scannedAt`. [`ResultsStore`] is the
//! async front for both; [`ResultsStore::location_kind`] reads a `QFLOWS_RESULTS`-style location.

use crate::aws::{Aws, AwsError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use qflows_workflows::FailureType;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use temporalio_sdk::activities::ActivityError;

/// Version of the document schema (`schemaVersion`).
pub const SCHEMA_VERSION: u32 = 1;

/// What every stored scan report holds, whichever backend (`registry`, `qscanner`) made it: the
/// image, when and how it was scanned, and the gate's verdict under the built-in profile. The
/// backend adds its own fields (vulnerabilities and its facts) to the map.
pub fn report_fields(
    input: &qflows_workflows::scan::image_scan::input::ImageScanInput,
    backend: &str,
    scanned_at: &str,
    verdict: qflows_workflows::scan::model::Verdict,
    summary: &qflows_workflows::scan::model::SeveritySummary,
    gate: &crate::gate::GatePolicy,
) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(fields) = serde_json::json!({
        "schemaVersion": SCHEMA_VERSION,
        "image": input.image.to_string(),
        "registry": input.image.registry,
        "repository": input.image.repository,
        "tag": input.image.tag,
        "digest": input.digest,
        "backend": backend,
        "scannedAt": scanned_at,
        "verdict": verdict,
        "summary": summary,
        "gate": gate,
        "profile": qflows_workflows::scan::profile::DEFAULT_PROFILE,
    }) else {
        unreachable!("a JSON object literal is an object")
    };
    fields
}

/// A local directory of results.
#[derive(Debug, Clone)]
pub struct LocalResults {
    root: PathBuf,
}

impl LocalResults {
    /// Results under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Writes `document` for an image and returns its path.
    pub fn put(
        &self,
        repository: &str,
        digest: &str,
        scanned_at: &str,
        document: &impl Serialize,
    ) -> std::io::Result<PathBuf> {
        let dir = self
            .root
            .join("scan-results")
            .join(safe_path(repository))
            .join(safe_segment(digest));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.json", safe_segment(scanned_at)));
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(document).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// One path segment: no separators, no `..`.
fn safe_segment(s: &str) -> String {
    sanitize(s, "-_.")
}

/// `s` with every character outside ASCII alphanumerics and `keep` replaced by `_`; never
/// empty, `.` or `..`.
fn sanitize(s: &str, keep: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || keep.contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.trim_matches('.').is_empty() {
        "_".to_string()
    } else {
        cleaned
    }
}

/// A repository path (`team/app`), each segment made safe.
fn safe_path(repository: &str) -> PathBuf {
    repository.split('/').map(safe_segment).collect()
}

/// Errors writing to the results store, classified for retrying.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or failed transiently (network, throttling, a 5xx, a full
    /// or busy disk): worth retrying.
    #[error("results store {store} is unavailable: {message}")]
    Unavailable {
        /// The store: a directory, or `s3://bucket`.
        store: String,
        /// What happened (no credentials).
        message: String,
    },
    /// The store refused a read or write (access denied, no such bucket, a read-only directory, an
    /// invalid request): retrying will not help until someone fixes the configuration.
    #[error("results store {store} refused: {message}")]
    Denied {
        /// The store: a directory, or `s3://bucket`.
        store: String,
        /// What happened (no credentials).
        message: String,
    },
}

impl StoreError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    /// Bounded failure type name for Temporal and metrics.
    pub fn type_name(&self) -> FailureType {
        match self {
            StoreError::Unavailable { .. } => FailureType::ResultsStoreUnavailable,
            StoreError::Denied { .. } => FailureType::ResultsStoreDenied,
        }
    }

    /// Classifies a local I/O error: permissions and read-only file systems are not retryable.
    fn from_io(store: &Path, err: std::io::Error) -> Self {
        let store = store.display().to_string();
        let message = err.to_string();
        match err.kind() {
            std::io::ErrorKind::PermissionDenied
            | std::io::ErrorKind::ReadOnlyFilesystem
            | std::io::ErrorKind::NotADirectory
            | std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::InvalidData => StoreError::Denied { store, message },
            _ => StoreError::Unavailable { store, message },
        }
    }
}

impl crate::failure::IntoFailure for StoreError {
    fn into_failure(self) -> ActivityError {
        let type_name = self.type_name();
        let retryable = self.is_retryable();
        crate::failure::failure(self, type_name, retryable, None)
    }
}

/// S3 error codes worth retrying beyond the generic AWS ones ([`AwsError::from_sdk`]).
const S3_RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "OperationAborted",
    "InternalError",
    "ServiceUnavailable",
];

/// Turns a classified S3 failure into a [`StoreError`]; `status` is the HTTP status when there
/// was a response, `code` the S3 error code.
fn s3_store_error(bucket: &str, code: &str, status: Option<u16>, err: AwsError) -> StoreError {
    let store = format!("s3://{bucket}");
    let message = err.to_string();
    let retryable = err.is_retryable()
        || S3_RETRYABLE_CODES.contains(&code)
        || status.is_some_and(|s| s == 429 || s >= 500);
    if retryable {
        StoreError::Unavailable { store, message }
    } else {
        StoreError::Denied { store, message }
    }
}

/// Results in an S3 bucket, under an optional key prefix.
#[derive(Debug, Clone)]
pub struct S3Results {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Results {
    /// Results in `bucket` under `prefix` (`""` for the bucket root). A non-empty prefix is a
    /// folder: `reports` and `reports/` both give keys `reports/scan-results/…`; a leading `/` is
    /// dropped.
    ///
    /// The client decides region, credentials and endpoint (against moto or MinIO it needs
    /// `force_path_style(true)`; [`Aws::s3`] sets that when an endpoint is overridden).
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: normalize_prefix(&prefix.into()),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix: empty, or ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key of an image's document:
    /// `<prefix>scan-results/<repository>/<digest>/<scannedAt>.json`.
    ///
    /// Digest and timestamp keep their `:` (the ECR scanner's keys do too); characters outside
    /// S3's safe set become `_`, and empty, `.` and `..` segments become `_`.
    pub fn key(&self, repository: &str, digest: &str, scanned_at: &str) -> String {
        object_key(&self.prefix, repository, digest, scanned_at)
    }

    /// Writes `document` and returns its `s3://bucket/key` reference. Retrying overwrites the
    /// same object.
    pub async fn put(
        &self,
        repository: &str,
        digest: &str,
        scanned_at: &str,
        document: &impl Serialize,
    ) -> Result<String, StoreError> {
        self.put_key(self.key(repository, digest, scanned_at), document)
            .await
    }

    /// Reads the object `key`; `None` when there is none.
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => {
                let bytes = object
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        store: format!("s3://{}", self.bucket),
                        message: format!("reading {key}: {e}"),
                    })?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                let code = e.code().unwrap_or_default().to_string();
                let status = e.raw_response().map(|r| r.status().as_u16());
                if status == Some(404) {
                    return Ok(None);
                }
                Err(s3_store_error(
                    &self.bucket,
                    &code,
                    status,
                    AwsError::from_sdk("s3:GetObject", e),
                ))
            }
        }
    }

    /// Writes `document` at `key`, overwriting.
    async fn put_key(&self, key: String, document: &impl Serialize) -> Result<String, StoreError> {
        let body = serde_json::to_vec_pretty(document).map_err(|e| StoreError::Denied {
            store: format!("s3://{}", self.bucket),
            message: format!("the document is not JSON: {e}"),
        })?;
        self.put_bytes(&key, body).await
    }

    /// Writes the JSON `body` at `key` (SSE-S3), overwriting; returns `s3://bucket/key`.
    async fn put_bytes(&self, key: &str, body: Vec<u8>) -> Result<String, StoreError> {
        match self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from(body))
            .send()
            .await
        {
            Ok(_) => Ok(format!("s3://{}/{key}", self.bucket)),
            Err(e) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                let code = e.code().unwrap_or_default().to_string();
                let status = e.raw_response().map(|r| r.status().as_u16());
                Err(s3_store_error(
                    &self.bucket,
                    &code,
                    status,
                    AwsError::from_sdk("s3:PutObject", e),
                ))
            }
        }
    }
}

/// `<prefix>scan-results/<repository>/<digest>/<scannedAt>.json`, shared by S3 and Blob Storage.
fn object_key(prefix: &str, repository: &str, digest: &str, scanned_at: &str) -> String {
    let repository: Vec<String> = repository.split('/').map(safe_key_segment).collect();
    format!(
        "{}scan-results/{}/{}/{}.json",
        prefix,
        repository.join("/"),
        safe_key_segment(digest),
        safe_key_segment(scanned_at)
    )
}

/// Results in an Azure Blob Storage container, same layout as S3.
#[derive(Clone)]
pub struct BlobResults {
    client: Arc<azure_storage_blob::BlobContainerClient>,
    /// The container URL without its query (no SAS), for references and messages.
    container: String,
    prefix: String,
}

impl std::fmt::Debug for BlobResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobResults")
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl BlobResults {
    /// Writes `document` as a block blob (overwriting on retry) and returns its URL (without
    /// any SAS).
    pub async fn put(
        &self,
        repository: &str,
        digest: &str,
        scanned_at: &str,
        document: &impl Serialize,
    ) -> Result<String, StoreError> {
        let key = object_key(&self.prefix, repository, digest, scanned_at);
        self.put_key(key, document).await
    }

    /// Reads the blob `key`; `None` when there is none.
    async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let blob = self.client.blob_client(key);
        match blob.download(None).await {
            Ok(download) => match download.body.collect().await {
                Ok(bytes) => Ok(Some(bytes.to_vec())),
                Err(e) => Err(blob_error(&self.container, &e)),
            },
            Err(e) if e.http_status().map(u16::from) == Some(404) => Ok(None),
            Err(e) => Err(blob_error(&self.container, &e)),
        }
    }

    /// Writes `document` as the blob `key`, overwriting.
    async fn put_key(&self, key: String, document: &impl Serialize) -> Result<String, StoreError> {
        let body = serde_json::to_vec_pretty(document).map_err(|e| StoreError::Denied {
            store: self.container.clone(),
            message: format!("the document is not JSON: {e}"),
        })?;
        self.put_bytes(&key, body).await
    }

    /// Writes `body` as the block blob `key`, overwriting; returns its URL (without any SAS).
    async fn put_bytes(&self, key: &str, body: Vec<u8>) -> Result<String, StoreError> {
        self.client
            .blob_client(key)
            .upload(azure_core::http::RequestContent::from(body), None)
            .await
            .map(|_| format!("{}/{key}", self.container))
            .map_err(|e| blob_error(&self.container, &e))
    }
}

/// A Blob Storage failure, classified. The error text may hold the request URL and with it a
/// SAS: only the status (or the text without queries) is kept.
fn blob_error(container: &str, e: &azure_core::Error) -> StoreError {
    let status = e.http_status().map(u16::from);
    let message = match status {
        Some(code) => format!("HTTP {code}"),
        None => format!("the request failed: {}", without_query(&e.to_string())),
    };
    match status {
        Some(400 | 401 | 403 | 404 | 409) => StoreError::Denied {
            store: container.to_string(),
            message,
        },
        _ => StoreError::Unavailable {
            store: container.to_string(),
            message,
        },
    }
}

/// `text` with every URL query (which may hold a SAS) cut.
fn without_query(text: &str) -> String {
    text.split_whitespace()
        .map(|word| match word.split_once('?') {
            Some((before, _)) if before.contains("://") => format!("{before}?<redacted>"),
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `""`, or the prefix without a leading `/` and with a trailing `/`.
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.is_empty() || trimmed.ends_with('/') {
        trimmed.to_string()
    } else {
        format!("{trimmed}/")
    }
}

/// One S3 key segment: S3's safe characters (plus `:`) kept, the rest `_`; never empty, `.` or `..`.
fn safe_key_segment(s: &str) -> String {
    sanitize(s, "-_.:!*'()")
}

/// Where results go, as read from a `QFLOWS_RESULTS`-style location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultsLocation {
    /// A local directory.
    Local(PathBuf),
    /// `s3://bucket/prefix`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix (`""` or ending with `/`).
        prefix: String,
    },
    /// An Azure Blob Storage container: `https://<account>.blob.core.windows.net/<container>/<prefix>`,
    /// with a SAS in the query or else the worker's Azure identity. On an IP or `localhost`
    /// (Azurite) the account is the first path segment.
    AzureBlob {
        /// The container URL (no query).
        container_url: String,
        /// The SAS query, if any (secret: never printed).
        sas: Option<String>,
        /// The blob name prefix (`""` or ending with `/`).
        prefix: String,
    },
}

/// A results location that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid results location `{location}`: {reason}")]
pub struct InvalidLocation {
    /// The location as given.
    pub location: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ResultsLocation {
    /// Parses `s3://bucket[/prefix]` or a directory path. Other `scheme://` forms are refused
    /// rather than taken for a directory name.
    pub fn parse(location: &str) -> Result<Self, InvalidLocation> {
        let invalid = |reason| InvalidLocation {
            location: location.to_string(),
            reason,
        };
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }
        let scheme_end = trimmed.find("://");
        let Some(end) = scheme_end else {
            return Ok(ResultsLocation::Local(PathBuf::from(trimmed)));
        };
        let scheme = trimmed[..end].to_ascii_lowercase();
        if scheme == "https" || scheme == "http" {
            return Self::azure_blob(trimmed).map_err(invalid);
        }
        if scheme != "s3" {
            return Err(invalid(
                "only s3:// URLs, Azure Blob container URLs (https://) and directory paths are supported",
            ));
        }
        let rest = &trimmed[end + 3..];
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            && !bucket.starts_with(['.', '-'])
            && !bucket.ends_with(['.', '-']);
        if !valid_bucket {
            return Err(invalid(
                "the bucket name must be 3-63 lowercase letters, digits, dots or hyphens",
            ));
        }
        Ok(ResultsLocation::S3 {
            bucket: bucket.to_string(),
            prefix: normalize_prefix(prefix),
        })
    }

    fn azure_blob(location: &str) -> Result<Self, &'static str> {
        let url = url::Url::parse(location).map_err(|_| "not a valid URL")?;
        let local = matches!(
            url.host(),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) | Some(url::Host::Domain("localhost"))
        );
        if url.scheme() == "http" && !local {
            return Err("Azure Blob Storage needs https (http only for a local Azurite)");
        }
        let segments: Vec<&str> = url
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let container_segments = if local { 2 } else { 1 };
        if segments.len() < container_segments {
            return Err(
                "the URL must name a container: https://<account>.blob.core.windows.net/<container>[/prefix]",
            );
        }
        let mut container_url = url.clone();
        container_url.set_query(None);
        container_url.set_path(&segments[..container_segments].join("/"));
        let prefix = segments[container_segments..].join("/");
        Ok(ResultsLocation::AzureBlob {
            container_url: container_url.as_str().trim_end_matches('/').to_string(),
            sas: url.query().filter(|q| !q.is_empty()).map(str::to_string),
            prefix: normalize_prefix(&prefix),
        })
    }
}

/// A digest's verdict record (`verdicts/<digest>.json`), as [`ResultsStore::store_scan`]
/// writes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastScan {
    /// The digest.
    pub digest: String,
    /// The image as scanned.
    #[serde(default)]
    pub image: String,
    /// The gate's verdict.
    pub verdict: qflows_workflows::scan::model::Verdict,
    /// When the scan finished (RFC 3339, workflow time).
    #[serde(default)]
    pub scanned_at: String,
    /// Where the full report is.
    #[serde(default)]
    pub result_ref: String,
}

impl LastScan {
    /// The record as the result an entity would answer with (no counts: the record keeps the
    /// verdict only; the report has the rest).
    pub fn into_result(self) -> qflows_workflows::scan::model::ImageResult {
        qflows_workflows::scan::model::ImageResult {
            profile: None,
            digest: self.digest,
            image: self.image,
            status: qflows_workflows::scan::model::ImageStatus::Scanned,
            verdict: Some(self.verdict),
            summary: None,
            result_ref: (!self.result_ref.is_empty()).then_some(self.result_ref),
            reason: None,
            backend: None,
            scanned_at: (!self.scanned_at.is_empty()).then_some(self.scanned_at),
        }
    }
}

/// The results store: a local directory or an S3 bucket.
#[derive(Debug, Clone)]
pub enum ResultsStore {
    /// A local directory.
    Local(LocalResults),
    /// An S3 bucket.
    S3(S3Results),
    /// An Azure Blob Storage container.
    Blob(BlobResults),
}

impl ResultsStore {
    /// Writes the document and returns its reference: a file path for Local, `s3://bucket/key`
    /// for S3. The same repository, digest and `scanned_at` always give the same reference, and
    /// a retry overwrites it.
    pub async fn put(
        &self,
        repository: &str,
        digest: &str,
        scanned_at: &str,
        document: &serde_json::Value,
    ) -> Result<String, StoreError> {
        match self {
            ResultsStore::Local(local) => {
                let local = local.clone();
                let (repository, digest, scanned_at) = (
                    repository.to_string(),
                    digest.to_string(),
                    scanned_at.to_string(),
                );
                let document = document.clone();
                let root = local.root().to_path_buf();
                let written = tokio::task::spawn_blocking(move || {
                    local.put(&repository, &digest, &scanned_at, &document)
                })
                .await
                .map_err(|e| StoreError::Unavailable {
                    store: root.display().to_string(),
                    message: format!("the write task failed: {e}"),
                })?;
                written
                    .map(|path| path.display().to_string())
                    .map_err(|e| StoreError::from_io(&root, e))
            }
            ResultsStore::S3(s3) => s3.put(repository, digest, scanned_at, document).await,
            ResultsStore::Blob(blob) => blob.put(repository, digest, scanned_at, document).await,
        }
    }

    /// Writes `bytes` at `path` (relative to the store's root or prefix), overwriting (a local
    /// file through a temporary file and a rename); returns its reference (a file path, an
    /// `s3://` or blob URL).
    pub(crate) async fn put_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        match self {
            ResultsStore::Local(local) => {
                let file = local.root().join(path);
                let root = local.root().to_path_buf();
                tokio::task::spawn_blocking(move || {
                    if let Some(dir) = file.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let tmp = file.with_extension(format!("{:016x}.tmp", fastrand::u64(..)));
                    std::fs::write(&tmp, bytes)?;
                    std::fs::rename(&tmp, &file)?;
                    Ok(file.display().to_string())
                })
                .await
                .map_err(|e| StoreError::Unavailable {
                    store: root.display().to_string(),
                    message: format!("the write task failed: {e}"),
                })?
                .map_err(|e| StoreError::from_io(&root, e))
            }
            ResultsStore::S3(s3) => s3.put_bytes(&format!("{}{path}", s3.prefix), bytes).await,
            ResultsStore::Blob(blob) => {
                blob.put_bytes(&format!("{}{path}", blob.prefix), bytes)
                    .await
            }
        }
    }

    /// Reads the bytes at `path`; `None` when there is nothing there.
    pub(crate) async fn get_bytes(&self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            ResultsStore::Local(local) => match tokio::fs::read(local.root().join(path)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(StoreError::from_io(local.root(), e)),
            },
            ResultsStore::S3(s3) => s3.get_bytes(&format!("{}{path}", s3.prefix)).await,
            ResultsStore::Blob(blob) => blob.get_bytes(&format!("{}{path}", blob.prefix)).await,
        }
    }

    /// The path of a digest's verdict record: `verdicts/<digest>.json`.
    fn verdict_path(digest: &str) -> String {
        format!(
            "verdicts/{}.json",
            safe_key_segment(digest).replace(':', "_")
        )
    }

    /// The verdict of the digest's last completed scan, if one was stored.
    pub async fn last_verdict(
        &self,
        digest: &str,
    ) -> Result<Option<qflows_workflows::scan::model::Verdict>, StoreError> {
        Ok(self.last_scan(digest).await?.map(|r| r.verdict))
    }

    /// Stores a scope's inventory at `inventory/<scope id>/<taken at>.json` and as its
    /// `latest.json`; returns the reference of the first.
    pub async fn store_inventory(
        &self,
        record: &qflows_workflows::inventory::InventoryRecord,
    ) -> Result<String, StoreError> {
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        let scope = safe_key_segment(&record.scope_id);
        let stamp = safe_key_segment(&record.taken_at.replace(':', "-"));
        let reference = self
            .put_bytes(&format!("inventory/{scope}/{stamp}.json"), bytes.clone())
            .await?;
        self.put_bytes(&format!("inventory/{scope}/latest.json"), bytes)
            .await?;
        Ok(reference)
    }

    /// The latest inventory of a scope (`inventory/<scope id>/latest.json`), if one was stored.
    pub async fn latest_inventory(
        &self,
        scope_id: &str,
    ) -> Result<Option<qflows_workflows::inventory::InventoryRecord>, StoreError> {
        let path = format!("inventory/{}/latest.json", safe_key_segment(scope_id));
        Ok(self
            .get_bytes(&path)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The digest's verdict record (`verdicts/<digest>.json`), if one was stored: the verdict
    /// of its last completed scan, when, and where the report is.
    pub async fn last_scan(&self, digest: &str) -> Result<Option<LastScan>, StoreError> {
        let record = self.get_bytes(&Self::verdict_path(digest)).await?;
        Ok(record.and_then(|b| serde_json::from_slice::<LastScan>(&b).ok()))
    }

    /// Reads the report a result's `result_ref` names, if this store holds it: a file under
    /// the store's directory, an object of its bucket, a blob of its container. A reference
    /// outside the store is refused (it came from workflow state, not from this store's
    /// configuration); a report that is gone is `None`.
    pub async fn read_report(
        &self,
        result_ref: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let outside = || StoreError::Denied {
            store: self.describe(),
            message: format!("`{result_ref}` is not in this results store (QFLOWS_RESULTS)"),
        };
        let relative = match self {
            ResultsStore::Local(local) => {
                let path = Path::new(result_ref);
                let inside = path
                    .strip_prefix(local.root())
                    .ok()
                    .filter(|rest| {
                        rest.components()
                            .all(|c| matches!(c, std::path::Component::Normal(_)))
                    })
                    .ok_or_else(outside)?;
                inside.to_string_lossy().to_string()
            }
            ResultsStore::S3(s3) => {
                let key = result_ref
                    .strip_prefix("s3://")
                    .and_then(|rest| rest.strip_prefix(s3.bucket.as_str()))
                    .and_then(|rest| rest.strip_prefix('/'))
                    .ok_or_else(outside)?;
                key.strip_prefix(s3.prefix.as_str())
                    .ok_or_else(outside)?
                    .to_string()
            }
            ResultsStore::Blob(blob) => {
                let key = result_ref
                    .strip_prefix(blob.container.as_str())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .ok_or_else(outside)?;
                key.strip_prefix(blob.prefix.as_str())
                    .ok_or_else(outside)?
                    .to_string()
            }
        };
        if relative
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(outside());
        }
        let Some(bytes) = self.get_bytes(&relative).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Denied {
                store: self.describe(),
                message: format!("`{result_ref}` is not a JSON report: {e}"),
            })
    }

    /// Stores a finished scan's report and returns the small result workflows keep. The
    /// digest's verdict record (`verdicts/<digest>.json`: verdict, when, where the report is)
    /// is written after the report, so that a new entity for the digest knows the last verdict.
    pub async fn store_scan(
        &self,
        input: &qflows_workflows::scan::image_scan::input::ImageScanInput,
        backend: &str,
        scanned_at: &str,
        verdict: qflows_workflows::scan::model::Verdict,
        summary: qflows_workflows::scan::model::SeveritySummary,
        document: &serde_json::Value,
    ) -> Result<qflows_workflows::scan::model::ImageResult, StoreError> {
        let result_ref = self
            .put(&input.image.repository, &input.digest, scanned_at, document)
            .await?;
        let record = serde_json::json!({
            "schemaVersion": SCHEMA_VERSION,
            "digest": input.digest,
            "image": input.image.to_string(),
            "verdict": verdict,
            "scannedAt": scanned_at,
            "resultRef": result_ref,
        });
        let record = serde_json::to_vec_pretty(&record).unwrap_or_default();
        self.put_bytes(&Self::verdict_path(&input.digest), record)
            .await?;
        Ok(qflows_workflows::scan::model::ImageResult {
            profile: Some(qflows_workflows::scan::profile::DEFAULT_PROFILE.into()),
            digest: input.digest.clone(),
            image: input.image.to_string(),
            status: qflows_workflows::scan::model::ImageStatus::Scanned,
            verdict: Some(verdict),
            summary: Some(summary),
            result_ref: Some(result_ref),
            reason: None,
            backend: Some(backend.to_string()),
            scanned_at: Some(scanned_at.to_string()),
        })
    }

    /// Parses `QFLOWS_RESULTS`-style locations: `s3://bucket/prefix` or a directory path.
    pub fn location_kind(location: &str) -> Result<ResultsLocation, InvalidLocation> {
        ResultsLocation::parse(location)
    }

    /// The store for a location; S3 clients come from `aws` in `region` (the bucket's region).
    pub async fn from_location(
        location: &str,
        aws: &Aws,
        region: &str,
    ) -> Result<Self, InvalidLocation> {
        Ok(match ResultsLocation::parse(location)? {
            ResultsLocation::Local(root) => ResultsStore::Local(LocalResults::new(root)),
            ResultsLocation::S3 { bucket, prefix } => {
                ResultsStore::S3(S3Results::new(aws.s3(region).await, bucket, prefix))
            }
            ResultsLocation::AzureBlob {
                container_url,
                sas,
                prefix,
            } => {
                let invalid = |reason| InvalidLocation {
                    location: container_url.clone(),
                    reason,
                };
                let mut url =
                    url::Url::parse(&container_url).map_err(|_| invalid("not a valid URL"))?;
                url.set_query(sas.as_deref());
                let credential = match &sas {
                    Some(_) => None,
                    None => Some(crate::azure::credential_from_env().map_err(|_| {
                        invalid("no SAS in the URL and no Azure identity in the environment")
                    })?),
                };
                let client = azure_storage_blob::BlobContainerClient::new(url, credential, None)
                    .map_err(|_| {
                        invalid("Azure Blob Storage refused the URL (a token needs https)")
                    })?;
                ResultsStore::Blob(BlobResults {
                    client: Arc::new(client),
                    container: container_url,
                    prefix,
                })
            }
        })
    }

    /// Where the store writes: a directory, or `s3://bucket/prefix`.
    pub fn describe(&self) -> String {
        match self {
            ResultsStore::Local(local) => local.root().display().to_string(),
            ResultsStore::S3(s3) => format!("s3://{}/{}", s3.bucket, s3.prefix),
            ResultsStore::Blob(blob) => format!("{}/{}", blob.container, blob.prefix),
        }
    }
}

impl From<LocalResults> for ResultsStore {
    fn from(local: LocalResults) -> Self {
        ResultsStore::Local(local)
    }
}

impl From<S3Results> for ResultsStore {
    fn from(s3: S3Results) -> Self {
        ResultsStore::S3(s3)
    }
}

pub mod blobs;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_reports_and_verdicts_only_from_inside_the_store() {
        let dir = std::env::temp_dir().join(format!("qflows-read-{}", std::process::id()));
        let store = ResultsStore::Local(LocalResults::new(&dir));
        let input = qflows_workflows::scan::image_scan::input::ImageScanInput {
            digest: format!("sha256:{}", "a".repeat(64)),
            image: qflows_workflows::scan::ImageRef::parse("example.com/team/app:1").unwrap(),
            event_accepted_at_ms: None,
            carried: None,
            backfill: false,
        };
        let result = store
            .store_scan(
                &input,
                "registry",
                "2026-12-01T17:00:00Z",
                qflows_workflows::scan::model::Verdict::Fail,
                Default::default(),
                &serde_json::json!({"vulnerabilities": [{"qid": 1}]}),
            )
            .await
            .unwrap();
        let reference = result.result_ref.unwrap();
        let report = store.read_report(&reference).await.unwrap().unwrap();
        assert_eq!(report["vulnerabilities"][0]["qid"], 1);
        let last = store.last_scan(&input.digest).await.unwrap().unwrap();
        assert_eq!(last.verdict, qflows_workflows::scan::model::Verdict::Fail);
        assert_eq!(last.result_ref, reference);
        assert_eq!(last.scanned_at, "2026-12-01T17:00:00Z");
        assert!(store.last_scan("sha256:none").await.unwrap().is_none());
        for outside in [
            "/etc/passwd".to_string(),
            format!("{}/../x.json", dir.display()),
            "s3://bucket/scan-results/x.json".to_string(),
        ] {
            let err = store.read_report(&outside).await.unwrap_err();
            assert!(
                err.to_string().contains("not in this results store"),
                "{err}"
            );
        }
        let gone = format!("{}/scan-results/none.json", dir.display());
        assert!(store.read_report(&gone).await.unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_idempotently_under_safe_paths() {
        let dir = std::env::temp_dir().join(format!("qflows-results-{}", std::process::id()));
        let store = LocalResults::new(&dir);
        let a = store
            .put(
                "team/../app",
                "sha256:ab",
                "2026-11-22T19:32:17Z",
                &serde_json::json!({"v": 1}),
            )
            .unwrap();
        let b = store
            .put(
                "team/../app",
                "sha256:ab",
                "2026-11-22T19:32:17Z",
                &serde_json::json!({"v": 2}),
            )
            .unwrap();
        assert_eq!(a, b);
        assert!(
            a.starts_with(dir.join("scan-results/team/_/app/sha256_ab")),
            "{a:?}"
        );
        let read: serde_json::Value = serde_json::from_slice(&std::fs::read(&a).unwrap()).unwrap();
        assert_eq!(read["v"], 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn parses_locations() {
        assert_eq!(
            ResultsStore::location_kind("s3://qflows-results").unwrap(),
            ResultsLocation::S3 {
                bucket: "qflows-results".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            ResultsLocation::parse("s3://qflows-results/").unwrap(),
            ResultsLocation::S3 {
                bucket: "qflows-results".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            ResultsLocation::parse(" S3://my.bucket-1/team/reports ").unwrap(),
            ResultsLocation::S3 {
                bucket: "my.bucket-1".into(),
                prefix: "team/reports/".into()
            }
        );
        assert_eq!(
            ResultsLocation::parse("/var/lib/qflows/results").unwrap(),
            ResultsLocation::Local("/var/lib/qflows/results".into())
        );
        assert_eq!(
            ResultsLocation::parse("qflows-results").unwrap(),
            ResultsLocation::Local("qflows-results".into())
        );
        for bad in [
            "",
            "  ",
            "s3://",
            "s3://ab",
            "s3://Upper-Case",
            "s3://under_score",
            "s3://-leading",
            "gs://bucket/x",
            "http://account.blob.core.windows.net/c",
            "https://account.blob.core.windows.net/",
        ] {
            let err = ResultsLocation::parse(bad).unwrap_err();
            assert_eq!(err.location, bad);
        }
        assert_eq!(
            ResultsLocation::parse("https://acct.blob.core.windows.net/results/team?sv=1&sig=x")
                .unwrap(),
            ResultsLocation::AzureBlob {
                container_url: "https://acct.blob.core.windows.net/results".into(),
                sas: Some("sv=1&sig=x".into()),
                prefix: "team/".into(),
            }
        );
        assert_eq!(
            ResultsLocation::parse("http://127.0.0.1:10000/devstoreaccount1/results").unwrap(),
            ResultsLocation::AzureBlob {
                container_url: "http://127.0.0.1:10000/devstoreaccount1/results".into(),
                sas: None,
                prefix: String::new(),
            }
        );
    }

    #[tokio::test]
    async fn s3_keys_follow_the_ecr_scanner_layout() {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        let digest = format!("sha256:{}", "ab".repeat(32));
        let root = S3Results::new(client.clone(), "b", "");
        assert_eq!(
            root.key("team/app", &digest, "2026-11-22T19:32:17Z"),
            format!("scan-results/team/app/{digest}/2026-11-22T19:32:17Z.json")
        );
        for prefix in ["reports", "reports/", "/reports"] {
            let store = S3Results::new(client.clone(), "b", prefix);
            assert_eq!(store.prefix(), "reports/");
            assert!(
                store
                    .key("app", &digest, "t")
                    .starts_with("reports/scan-results/app/")
            );
        }
        // Nothing escapes its segment.
        assert_eq!(
            root.key("team/../a b//c", "sha256:x/y", "t?1#"),
            "scan-results/team/_/a_b/_/c/sha256:x_y/t_1_.json"
        );
    }

    #[test]
    fn classifies_store_errors() {
        let denied = StoreError::from_io(
            Path::new("/r"),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(!denied.is_retryable());
        assert_eq!(denied.type_name(), "ResultsStoreDenied");
        let busy = StoreError::from_io(
            Path::new("/r"),
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        );
        assert!(busy.is_retryable());
        assert_eq!(busy.type_name(), "ResultsStoreUnavailable");

        let aws = |code: &str| AwsError::Invalid {
            operation: "s3:PutObject",
            code: code.into(),
            message: "m".into(),
        };
        assert!(s3_store_error("b", "SlowDown", Some(503), aws("SlowDown")).is_retryable());
        assert!(
            s3_store_error("b", "RequestTimeout", Some(400), aws("RequestTimeout")).is_retryable()
        );
        assert!(s3_store_error("b", "Whatever", Some(500), aws("Whatever")).is_retryable());
        let no_bucket = s3_store_error("b", "NoSuchBucket", Some(404), aws("NoSuchBucket"));
        assert!(!no_bucket.is_retryable());
        assert!(no_bucket.to_string().contains("s3://b"), "{no_bucket}");
        let transient = AwsError::Transient {
            operation: "s3:PutObject",
            code: "Unavailable".into(),
            message: "connection refused".into(),
        };
        assert!(s3_store_error("b", "", None, transient).is_retryable());
    }

    #[tokio::test]
    async fn local_store_put_returns_the_path() {
        let dir = std::env::temp_dir().join(format!("qflows-results-async-{}", std::process::id()));
        let store = ResultsStore::from(LocalResults::new(&dir));
        let doc = serde_json::json!({"schemaVersion": SCHEMA_VERSION});
        let a = store
            .put("app", "sha256:ab", "2026-11-22T19:32:17Z", &doc)
            .await
            .unwrap();
        let b = store
            .put("app", "sha256:ab", "2026-11-22T19:32:17Z", &doc)
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            PathBuf::from(&a),
            dir.join("scan-results/app/sha256_ab/2026-11-22T19_32_17Z.json")
        );
        assert_eq!(store.describe(), dir.display().to_string());
        std::fs::remove_dir_all(&dir).unwrap();

        // A file where the directory should be: the write is refused, not retried forever.
        let file = std::env::temp_dir().join(format!("qflows-results-file-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let err = ResultsStore::Local(LocalResults::new(&file))
            .put("app", "sha256:ab", "t", &doc)
            .await
            .unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(err.type_name(), "ResultsStoreDenied", "{err}");
    }
}
