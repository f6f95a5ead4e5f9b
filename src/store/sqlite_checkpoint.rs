//! The SQLite WAL's checkpoints, copied in the background. A checkpoint copies
//! what the WAL holds into the database file and syncs it. The writers still
//! checkpoint when a commit finds the WAL past `WAL_CHECKPOINT_PAGES` (only a
//! checkpoint run between two write transactions lets the next one start the WAL
//! over), but that commit, and every message waiting on it, then waited for a
//! copy of up to 64 MiB. Here a thread copies while the writers go on
//! (`PASSIVE`: it never takes the write lock), so what is left for the commit
//! that restarts the WAL is what came since the last pass.

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

    /// 64 KiB a transaction, 300 of them: 4,800 pages of WAL if nothing checkpoints.
    const BLOB: usize = 64 * 1024;
    const TRANSACTIONS: usize = 300;

    /// The largest the WAL grows while a writer that never checkpoints itself
    /// writes, with the checkpointer running when `checkpoints` is set.
    fn largest_wal(checkpoints: bool) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; \
                 CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL);",
            )
            .unwrap();
        let checkpointer =
            checkpoints.then(|| Checkpointer::start(&path, Duration::from_secs(5), Duration::from_millis(5)).unwrap());
        let wal = dir.path().join("test.db-wal");
        let mut largest = 0;
        for i in 0..TRANSACTIONS {
            // Each row replaces the last: the database itself stays small.
            writer.execute("INSERT OR REPLACE INTO t (id, b) VALUES (1, ?1)", [vec![i as u8; BLOB]]).unwrap();
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
            // A gap between two writes, as between two batches.
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(checkpointer);
        let stored: Vec<u8> = writer.query_row("SELECT b FROM t WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, vec![(TRANSACTIONS - 1) as u8; BLOB]);
        largest
    }

    #[test]
    fn background_passes_let_the_wal_start_over_between_writes() {
        let written = (TRANSACTIONS * BLOB) as u64;
        let without = largest_wal(false);
        assert!(without >= written, "without checkpoints the WAL holds every write: {without} of {written}");
        let with = largest_wal(true);
        assert!(with < written / 4, "the WAL grew to {with} bytes of {written} written");
    }
}
