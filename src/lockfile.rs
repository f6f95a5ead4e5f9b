//! Exclusive lock files: one process per data directory and per SQLite file.
//!
//! Two nodes on one SQLite file would each believe they own its seqs and caches;
//! two on one data directory would share a signing key file they both may write.
//! The lock is the operating system's (`flock`), so it goes with the process,
//! however it ends: a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} {path} is in use by another Confab process{pid}; {hint}")]
    Held { what: &'static str, path: String, pid: String, hint: &'static str },
    #[error("cannot lock {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Takes the lock at `path` (creating it), writing this process's id into it for
/// the next one's error message; held until the returned file is dropped.
///
/// # Errors
/// [`LockError::Held`] when another process holds it; an I/O error otherwise.
pub fn lock(path: &Path, what: &'static str, hint: &'static str) -> Result<File, LockError> {
    let io = |source| LockError::Io { path: path.display().to_string(), source };
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let pid = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
            return Err(LockError::Held { what, path: path.display().to_string(), pid, hint });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(file)
}
