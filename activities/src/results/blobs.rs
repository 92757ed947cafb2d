//! Content-addressed documents in the results store: `<prefix>blobs/<area>/<hh>/<sha256>.json`,
//! where `<sha256>` is the hex SHA-256 of the bytes and `<hh>` its first two characters.
//!
//! CdrToPolicy keeps each policy's evidence and its state between runs here, and only the hashes
//! in workflow history. Writing the same bytes twice writes the same object (a retried activity
//! is harmless); reading checks the bytes against the hash, so a document cannot be swapped.

use super::{ResultsStore, StoreError};
use sha2::{Digest, Sha256};

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
        // Same name, same content: writing it again (a retried activity) changes nothing.
        self.put_bytes(&relative(area, &hash), bytes).await?;
        Ok(hash)
    }

    /// Reads the document `hash` of `area`, checked against its hash. A missing or altered
    /// document is a permanent failure ([`StoreError::Denied`]).
    pub async fn get_blob(&self, area: &str, hash: &str) -> Result<Vec<u8>, StoreError> {
        self.check(area, hash)?;
        let key = relative(area, hash);
        let denied = |message: String| StoreError::Denied {
            store: self.describe(),
            message,
        };
        let bytes = self
            .get_bytes(&key)
            .await?
            .ok_or_else(|| denied(format!("no document {key}")))?;
        if sha256_hex(&bytes) != hash {
            return Err(denied(format!("document {key} does not match its hash")));
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
