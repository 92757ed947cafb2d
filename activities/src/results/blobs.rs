//! Content-addressed documents in the results store: `<prefix>blobs/<area>/<hh>/<sha256>.json`,
//! where `<sha256>` is the hex SHA-256 of the bytes and `<hh>` its first two characters.
//!
//! CdrToPolicy keeps each policy's evidence and its state between runs here, and only the hashes
//! in workflow history. Writing the same bytes twice writes the same object (a retried activity
//! is harmless); reading checks the bytes against the hash, so a document cannot be swapped.

use super::{ResultsStore, StoreError, s3_store_error, without_query};
use crate::aws::AwsError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_hash(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_area(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 64
        && a.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `blobs/<area>/<hh>/<hash>.json`.
fn relative(area: &str, hash: &str) -> String {
    format!("blobs/{area}/{}/{hash}.json", &hash[..2])
}

impl ResultsStore {
    /// Stores `bytes` (a JSON document) in `area` and returns its SHA-256 (hex).
    pub async fn put_blob(&self, area: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        let hash = sha256_hex(&bytes);
        self.check(area, &hash)?;
        let key = relative(area, &hash);
        match self {
            ResultsStore::Local(local) => {
                let path = local.root().join(&key);
                let root = local.root().to_path_buf();
                let written = tokio::task::spawn_blocking(move || write_once(&path, &bytes))
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        store: root.display().to_string(),
                        message: format!("the write task failed: {e}"),
                    })?;
                written.map_err(|e| StoreError::from_io(&root, e))?;
            }
            ResultsStore::S3(s3) => {
                let key = format!("{}{key}", s3.prefix);
                if let Err(e) = s3
                    .client
                    .put_object()
                    .bucket(&s3.bucket)
                    .key(&key)
                    .content_type("application/json")
                    .server_side_encryption(ServerSideEncryption::Aes256)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                {
                    use aws_sdk_s3::error::ProvideErrorMetadata;
                    let code = e.code().unwrap_or_default().to_string();
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    return Err(s3_store_error(
                        &s3.bucket,
                        &code,
                        status,
                        AwsError::from_sdk("s3:PutObject", e),
                    ));
                }
            }
            ResultsStore::Blob(blob) => {
                let key = format!("{}{key}", blob.prefix);
                if let Err(e) = blob
                    .client
                    .blob_client(&key)
                    .upload(azure_core::http::RequestContent::from(bytes), None)
                    .await
                {
                    return Err(blob_error(&blob.container, &e));
                }
            }
        }
        Ok(hash)
    }

    /// Reads the document `hash` of `area`, checked against its hash. A missing or altered
    /// document is a permanent failure ([`StoreError::Denied`]).
    pub async fn get_blob(&self, area: &str, hash: &str) -> Result<Vec<u8>, StoreError> {
        self.check(area, hash)?;
        let key = relative(area, hash);
        let (store, bytes) = match self {
            ResultsStore::Local(local) => {
                let path = local.root().join(&key);
                let root = local.root().to_path_buf();
                let read = tokio::task::spawn_blocking(move || std::fs::read(&path))
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        store: root.display().to_string(),
                        message: format!("the read task failed: {e}"),
                    })?;
                let store = root.display().to_string();
                match read {
                    Ok(b) => (store, b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(StoreError::Denied {
                            store,
                            message: format!("no document {key}"),
                        });
                    }
                    Err(e) => return Err(StoreError::from_io(&root, e)),
                }
            }
            ResultsStore::S3(s3) => {
                let key = format!("{}{key}", s3.prefix);
                let store = format!("s3://{}", s3.bucket);
                let object = match s3
                    .client
                    .get_object()
                    .bucket(&s3.bucket)
                    .key(&key)
                    .send()
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        use aws_sdk_s3::error::ProvideErrorMetadata;
                        let code = e.code().unwrap_or_default().to_string();
                        let status = e.raw_response().map(|r| r.status().as_u16());
                        return Err(s3_store_error(
                            &s3.bucket,
                            &code,
                            status,
                            AwsError::from_sdk("s3:GetObject", e),
                        ));
                    }
                };
                let body = object
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        store: store.clone(),
                        message: format!("reading {key}: {e}"),
                    })?;
                (store, body.into_bytes().to_vec())
            }
            ResultsStore::Blob(blob) => {
                let key = format!("{}{key}", blob.prefix);
                let store = blob.container.clone();
                let result = blob
                    .client
                    .blob_client(&key)
                    .download(None)
                    .await
                    .map_err(|e| blob_error(&blob.container, &e))?;
                let body = result
                    .body
                    .collect()
                    .await
                    .map_err(|e| blob_error(&blob.container, &e))?;
                (store, body.to_vec())
            }
        };
        if sha256_hex(&bytes) != hash {
            return Err(StoreError::Denied {
                store,
                message: format!("document {key} does not match its hash"),
            });
        }
        Ok(bytes)
    }

    fn check(&self, area: &str, hash: &str) -> Result<(), StoreError> {
        if is_area(area) && is_hash(hash) {
            return Ok(());
        }
        Err(StoreError::Denied {
            store: self.describe(),
            message: format!("{area:?}/{hash:?} is not an area and a SHA-256 in hex"),
        })
    }
}

/// Writes `bytes` to `path` unless it exists (same name, same content), via a temporary file.
fn write_once(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    if path.is_file() {
        return Ok(());
    }
    let dir = path.parent().expect("a blob path has a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("{}.tmp", fastrand::u64(..)));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn blob_error(container: &str, e: &azure_core::Error) -> StoreError {
    // The error text may hold the request URL and with it a SAS: keep only the kind.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::LocalResults;

    #[tokio::test]
    async fn local_blobs_are_content_addressed_and_checked() {
        let dir = std::env::temp_dir().join(format!("qflows-blobs-{}", std::process::id()));
        let store = ResultsStore::from(LocalResults::new(&dir));
        let doc = br#"{"a":1}"#.to_vec();
        let hash = store.put_blob("cdr", doc.clone()).await.unwrap();
        assert_eq!(hash, sha256_hex(&doc));
        assert_eq!(store.put_blob("cdr", doc.clone()).await.unwrap(), hash);
        assert_eq!(store.get_blob("cdr", &hash).await.unwrap(), doc);
        let path = dir.join(relative("cdr", &hash));
        std::fs::write(&path, b"{\"a\":2}").unwrap();
        let err = store.get_blob("cdr", &hash).await.unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(!err.is_retryable());
        let missing = store.get_blob("cdr", &"0".repeat(64)).await.unwrap_err();
        assert!(missing.to_string().contains("no document"), "{missing}");
        assert!(store.get_blob("cdr", "../../etc/passwd").await.is_err());
        assert!(store.get_blob("../x", &hash).await.is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
