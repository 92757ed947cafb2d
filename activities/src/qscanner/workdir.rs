//! One directory per QScanner attempt, `<work_dir>/<scan_id>.<pid>-<n>-<random>/`: QScanner's
//! `--output-dir`, with `TMPDIR` inside it (`tmp/`), so nothing of a scan lands in the worker's
//! shared temporary directory. A retry of the same scan on the same host gets another directory,
//! so it can never delete a still-running attempt's outputs.
//!
//! The attempt holds an exclusive `flock` on `<dir>/.lock` while it runs (the descriptor is
//! close-on-exec: QScanner does not inherit it). The directory is removed when the attempt ends,
//! on every path (success, failure, timeout, cancellation, a dropped future). A worker that died
//! mid-scan leaves its directory behind with the lock released: [`sweep`], at start-up, removes
//! every attempt directory whose lock it can take, and leaves locked ones (another live worker
//! sharing the directory) alone.

use super::error::QScannerError;
use rustix::fs::{FlockOperation, flock};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::{info, warn};

const LOCK_FILE: &str = ".lock";

/// A live attempt directory; removed on drop.
pub(crate) struct AttemptDir {
    path: PathBuf,
    _lock: File,
}

impl AttemptDir {
    /// Creates `<work_dir>/<scan_id>.<unique>/` with `tmp/` and the held lock.
    pub(crate) fn create(work_dir: &Path, scan_id: &str) -> Result<Self, QScannerError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "{}-{}-{:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            fastrand::u32(..)
        );
        let path = work_dir.join(format!("{scan_id}.{unique}"));
        std::fs::create_dir_all(path.join("tmp"))
            .map_err(|e| QScannerError::io("creating the attempt directory", &e))?;
        let lock = File::create(path.join(LOCK_FILE))
            .map_err(|e| QScannerError::io("creating the attempt lock", &e))?;
        flock(&lock, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
            QScannerError::io("locking the attempt directory", &std::io::Error::from(e))
        })?;
        Ok(Self { path, _lock: lock })
    }

    /// The directory (QScanner's `--output-dir`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `TMPDIR` for QScanner.
    pub(crate) fn tmp(&self) -> PathBuf {
        self.path.join("tmp")
    }
}

impl Drop for AttemptDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(dir = %self.path.display(), error = %e, "cannot remove a QScanner attempt directory");
        }
    }
}

/// `<scan_id>.<pid>-<n>-<8 hex>`.
fn is_attempt_name(name: &str) -> bool {
    let Some((_, unique)) = name.rsplit_once('.') else {
        return false;
    };
    let parts: Vec<&str> = unique.split('-').collect();
    parts.len() == 3
        && parts[..2]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[2].len() == 8
        && parts[2].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes what dead attempts left under `work_dir` (see the module doc); returns how many
/// directories went. Other entries (QScanner's cache under `HOME`) stay.
pub fn sweep(work_dir: &Path) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(work_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        // QScanner's own cache and config live under HOME = work_dir: keep them.
        let name = entry.file_name();
        if !kind.is_dir() || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let stale = match File::open(path.join(LOCK_FILE)) {
            Ok(lock) => flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok(),
            // Created by an attempt that died before it took its lock.
            Err(e) => {
                e.kind() == std::io::ErrorKind::NotFound && is_attempt_name(&name.to_string_lossy())
            }
        };
        if stale && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        info!(work_dir = %work_dir.display(), removed, "removed what earlier QScanner runs left");
    }
    Ok(removed)
}
