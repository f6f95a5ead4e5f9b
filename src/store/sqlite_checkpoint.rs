//! The SQLite WAL's checkpoints, copied in the background. A checkpoint copies
//! what the WAL holds into the database file and syncs it; once everything is
//! copied, the next write starts the WAL over. A commit that found the WAL past
//! `WAL_CHECKPOINT_PAGES` checkpointed it itself, and that commit, with every
//! message waiting on it, waited for a copy of up to 64 MiB. Here a thread copies
//! while the writers go on (`PASSIVE`: it never takes the write lock). A pass
//! between two batches copies everything and lets the WAL start over.
//!
//! Under back-to-back batches no pass finds a moment without a commit, so the
//! message writer finishes one itself once the WAL is past the limit
//! ([`WriterCheckpoints`]): right after a background pass ends, when what is left
//! to copy is only what was committed during that pass, instead of whenever a
//! commit crossed the limit, when it was everything since the last pass.
//!
//! Each time, the thread runs two passes back to back and counts them as one:
//! the first copies the bulk and syncs the database file as it goes (the VFS's
//! pacing, `sqlite_vfs`), so it lasts tens of milliseconds under load; the second
//! copies only what was committed meanwhile. What the message writer copies is
//! then what came during the second: at 16,000 msg/s its checkpoints (a stall for
//! every sender) took 7-11 ms on average instead of 16-18
//! (`docs/benchmarks.md`, 2026-12-06, seventh session).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use super::{Result, StoreError, sqlite_vfs};

/// How often the background pass runs: a commit that restarts the WAL copies at
/// most this long's writes. Each pass copies the hot pages (each busy thread's tail
/// of its indexes) again however few messages they gained, so longer passes copy
/// less per message: at 1 s instead of 250 ms this thread's CPU halved in a closed
/// loop (1.4–2.0 → 0.6–0.8 µs a message; `docs/benchmarks.md`, 2026-12-06, third session).
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How far past its limit the WAL may grow while the message writer waits for a
/// background pass to end before checkpointing anyway.
const PAST_LIMIT: u32 = 4;

/// The number of background passes that have ended.
pub(super) type Passes = Arc<AtomicU64>;

/// The handle of the checkpointing thread; the thread ends when the last handle drops.
#[derive(Debug, Clone)]
pub(super) struct Checkpointer {
    _alive: mpsc::Sender<()>,
    passes: Passes,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode) every `every`.
    pub(super) fn start(path: &Path, busy_timeout: Duration, every: Duration) -> Result<Self> {
        // Through the bulk-writing VFS: a pass syncs the database file as it copies.
        let conn = sqlite_vfs::open(path, "the WAL checkpointer").map_err(other)?;
        sqlite_vfs::pace_checkpoints(&conn);
        conn.busy_timeout(busy_timeout).map_err(other)?;
        // FULL: the database file is synced after each copy.
        conn.execute_batch("PRAGMA synchronous = FULL;").map_err(other)?;
        let (alive, until_dropped) = mpsc::channel::<()>();
        let passes = Passes::default();
        let ended = Arc::clone(&passes);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = until_dropped.recv_timeout(every) {
                    // The bulk, then what was committed during it: the message
                    // writer finishes only what comes during the second, short pass.
                    checkpoint(&conn, "a background WAL checkpoint failed");
                    checkpoint(&conn, "a background WAL checkpoint failed");
                    ended.fetch_add(1, Ordering::Release);
                }
            })
            .map_err(|e| StoreError::Other(Box::new(e)))?;
        Ok(Self { _alive: alive, passes })
    }

    /// The count of passes that have ended, as it goes up.
    pub(super) fn passes(&self) -> Passes {
        Arc::clone(&self.passes)
    }
}

/// Copies what it can of the WAL without taking the write lock.
pub(super) fn checkpoint(conn: &Connection, failed: &str) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        // A full disk or a vanished file: the next pass tries again, and the
        // writers report the fault to their callers.
        tracing::warn!(error = %e, "{failed}");
    }
}

/// When the message writer checkpoints the WAL itself, after a commit: once the
/// WAL is past `limit` frames, at the first commit after a background pass ends
/// (what is left is what came during the pass), or at once past `PAST_LIMIT`
/// times the limit.
pub(super) struct WriterCheckpoints {
    passes: Passes,
    /// The passes ended when the WAL was last under the limit.
    seen: u64,
    limit: u32,
}

impl WriterCheckpoints {
    pub(super) fn new(passes: Passes, limit: u32) -> Self {
        let seen = passes.load(Ordering::Acquire);
        Self { passes, seen, limit }
    }

    /// Whether to checkpoint now, after a commit that left `frames` in the WAL.
    pub(super) fn due(&mut self, frames: u32) -> bool {
        let passes = self.passes.load(Ordering::Acquire);
        if frames < self.limit {
            self.seen = passes;
            return false;
        }
        if passes == self.seen && frames < self.limit.saturating_mul(PAST_LIMIT) {
            return false;
        }
        self.seen = passes;
        true
    }

    /// Checkpoints if it is due, after a commit that left `frames` in the WAL.
    pub(super) fn after_commit(&mut self, conn: &Connection, frames: u32) {
        if self.due(frames) {
            checkpoint(conn, "the message writer's WAL checkpoint failed");
        }
    }

    /// The WAL length past which any other writer's commit checkpoints it
    /// (`wal_autocheckpoint`): past where this one would have.
    pub(super) fn other_writers_limit(limit: u32) -> u32 {
        limit.saturating_mul(PAST_LIMIT)
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
    fn the_writer_checkpoints_past_the_limit_after_a_pass_ends_or_far_past_it() {
        let passes = Passes::default();
        let mut writer = WriterCheckpoints::new(Arc::clone(&passes), 100);
        assert!(!writer.due(50), "under the limit");
        assert!(!writer.due(150), "past it, but no pass has ended since");
        passes.fetch_add(1, Ordering::Release);
        assert!(writer.due(160), "a pass ended: what is left is small");
        assert!(!writer.due(170), "not again before the next pass");
        assert!(writer.due(400), "far past the limit: at once");
        assert!(!writer.due(10), "the WAL started over");
        passes.fetch_add(1, Ordering::Release);
        assert!(!writer.due(20), "a pass ended while under the limit");
        assert!(!writer.due(120), "past it: waits for the next pass");
        passes.fetch_add(1, Ordering::Release);
        assert!(writer.due(130));
    }

    #[test]
    fn a_writer_that_checkpoints_itself_keeps_its_wal_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL);")
            .unwrap();
        let wal = crate::store::sqlite_wal_hook::WalLength::watch(&conn);
        // No background pass ever ends: only the bound of `PAST_LIMIT` applies.
        let limit = 32;
        let mut writer = WriterCheckpoints::new(Passes::default(), limit);
        let mut longest = 0;
        for i in 0..400 {
            conn.execute("INSERT INTO t (id, b) VALUES (?1, zeroblob(4000))", [i]).unwrap();
            longest = longest.max(wal.frames());
            writer.after_commit(&conn, wal.frames());
        }
        // 400 rows written, each commit a few frames (1,201 in all): without the
        // writer's checkpoints the WAL would hold them all.
        assert!(longest <= limit * PAST_LIMIT + 4, "the WAL reached {longest} frames");
        let file = std::fs::metadata(dir.path().join("test.db-wal")).unwrap().len();
        assert!(file <= u64::from(limit * PAST_LIMIT + 4) * (4096 + 24) + 32, "the WAL file has {file} bytes");
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 400);
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
