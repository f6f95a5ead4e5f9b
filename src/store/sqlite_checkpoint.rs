//! The SQLite WAL's checkpoints, copied in the background. A checkpoint copies
//! what the WAL holds into the database file and syncs it; once everything is
//! copied, the next write starts the WAL over. A commit that found the WAL past
//! `WAL_CHECKPOINT_PAGES` checkpointed it itself, and that commit, with every
//! message waiting on it, waited for a copy of up to 64 MiB. Here a thread copies
//! while the writers go on (`PASSIVE`: it never takes the write lock). A pass
//! between two batches copies everything and lets the WAL start over; under
//! back-to-back batches, the commit past the limit still checkpoints, but copies
//! only what came since the last pass.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use super::{Result, StoreError};

/// How often the background pass runs: a commit that restarts the WAL copies at
/// most this long's writes.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The handle of the checkpointing thread; the thread ends when the last handle drops.
#[derive(Debug, Clone)]
pub(super) struct Checkpointer {
    _alive: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode) every `every`.
    pub(super) fn start(path: &Path, busy_timeout: Duration, every: Duration) -> Result<Self> {
        let conn = Connection::open(path).map_err(other)?;
        conn.busy_timeout(busy_timeout).map_err(other)?;
        // FULL: the database file is synced after each copy.
        conn.execute_batch("PRAGMA synchronous = FULL;").map_err(other)?;
        let (alive, until_dropped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = until_dropped.recv_timeout(every) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        // A full disk or a vanished file: the next pass tries again,
                        // and the writers report the fault to their callers.
                        tracing::warn!(error = %e, "a background WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Other(Box::new(e)))?;
        Ok(Self { _alive: alive })
    }
}

fn other(e: rusqlite::Error) -> StoreError {
    StoreError::Other(Box::new(e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    /// 64 KiB a row, 32 rows: 2 MiB that live in the WAL until a checkpoint
    /// copies them into the database file.
    const BLOB: usize = 64 * 1024;
    const ROWS: usize = 32;

    /// The database file's size once a writer that never checkpoints itself has
    /// written, waiting up to `wait` for it to reach what was written.
    fn database_size(dir: &Path, checkpoints: bool, wait: Duration) -> u64 {
        let path = dir.join("test.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
                 CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL);",
            )
            .unwrap();
        let every = Duration::from_millis(10);
        let _checkpointer = checkpoints.then(|| Checkpointer::start(&path, Duration::from_secs(5), every).unwrap());
        for i in 0..ROWS {
            writer.execute("INSERT INTO t (id, b) VALUES (?1, ?2)", (i as i64, vec![i as u8; BLOB])).unwrap();
        }
        let written = (ROWS * BLOB) as u64;
        let deadline = std::time::Instant::now() + wait;
        loop {
            let size = std::fs::metadata(&path).unwrap().len();
            if size >= written || std::time::Instant::now() >= deadline {
                return size;
            }
            std::thread::sleep(every);
        }
    }

    #[test]
    fn the_wal_is_copied_into_the_database_in_the_background() {
        let written = (ROWS * BLOB) as u64;
        let dir = tempfile::tempdir().unwrap();
        let without = database_size(dir.path(), false, Duration::from_millis(200));
        assert!(without < written, "nothing else checkpoints: {without} bytes");
        let dir = tempfile::tempdir().unwrap();
        let with = database_size(dir.path(), true, Duration::from_secs(10));
        assert!(with >= written, "the database file holds {with} of {written} bytes");
    }
}
