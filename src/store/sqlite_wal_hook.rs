//! The WAL's length after each commit, as SQLite reports it (`sqlite3_wal_hook`),
//! so that the message writer chooses when to checkpoint instead of SQLite doing it
//! inside whichever commit finds the WAL past its limit (`sqlite_checkpoint.rs`).
//! rusqlite 0.32 does not wrap the hook.

#![allow(unsafe_code, reason = "a SQLite callback: rusqlite 0.32 has no safe wrapper for it")]

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use rusqlite::{Connection, ffi};

/// The WAL length of one connection's last commit. It replaces the connection's
/// automatic checkpoints (`wal_autocheckpoint` sets the same hook), and must be
/// dropped before the connection, which a local declared after it is.
pub(super) struct WalLength {
    db: *mut ffi::sqlite3,
    frames: Box<Cell<c_int>>,
}

impl WalLength {
    /// Watches `conn`'s commits from now on.
    pub(super) fn watch(conn: &Connection) -> Self {
        let frames = Box::new(Cell::new(0));
        // SAFETY: the handle is valid while `conn` lives, and this value, dropped
        // before it, takes the hook away before `frames` is freed.
        let db = unsafe { conn.handle() };
        // SAFETY: as above; `frames` stays at one address while boxed.
        unsafe { ffi::sqlite3_wal_hook(db, Some(record), ptr::from_ref(&*frames).cast_mut().cast()) };
        Self { db, frames }
    }

    /// Frames in the WAL after the last commit (0 before the first).
    pub(super) fn frames(&self) -> u32 {
        u32::try_from(self.frames.get()).unwrap_or(0)
    }
}

impl Drop for WalLength {
    fn drop(&mut self) {
        // SAFETY: the connection outlives this value (see the type's doc).
        unsafe { ffi::sqlite3_wal_hook(self.db, None, ptr::null_mut()) };
    }
}

unsafe extern "C" fn record(frames: *mut c_void, _db: *mut ffi::sqlite3, _name: *const c_char, n: c_int) -> c_int {
    // SAFETY: `frames` is the `Cell` `watch` registered, alive while the hook is,
    // and the hook runs on the connection's thread, inside its commit.
    unsafe { (*frames.cast::<Cell<c_int>>()).set(n) };
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    #[test]
    fn each_commit_reports_the_wal_length_and_nothing_checkpoints_it() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("test.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 2;").unwrap();
        let wal = WalLength::watch(&conn);
        assert_eq!(wal.frames(), 0);
        conn.execute_batch("CREATE TABLE t (b BLOB)").unwrap();
        let mut last = wal.frames();
        assert!(last > 0);
        for _ in 0..5 {
            conn.execute("INSERT INTO t VALUES (zeroblob(5000))", []).unwrap();
            // Past the automatic limit of 2 pages, and still growing: the hook
            // took the place of the automatic checkpoints.
            assert!(wal.frames() > last, "{} after {last}", wal.frames());
            last = wal.frames();
        }
        drop(wal);
        conn.execute("INSERT INTO t VALUES (1)", []).unwrap();
    }
}
