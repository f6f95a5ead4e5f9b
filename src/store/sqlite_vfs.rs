//! The VFS of the two connections that write the SQLite files in bulk: the message
//! writer and the background checkpointer. It is SQLite's own (`unix`) but for two
//! things, each measured (`docs/benchmarks.md`). SQLite has no such options and no
//! crate wraps its VFS this way, hence this module (with `src/memory.rs`, the
//! crate's only unsafe code).
//!
//! **A WAL's writes are gathered into few large ones.** SQLite writes each WAL
//! frame with two `pwrite`s, its 24-byte header and then its page, and the kernel's
//! write path costs per call and per 4 KiB of the file a call touches: a 4,120-byte
//! frame touches three, so a batch that dirties 1,000 pages made 2,000 calls that
//! touched 3,000. Under the closed loop those calls were 17.5% of the writer's time
//! (2026-12-06, second session). Here a write that continues the last one is
//! appended to a buffer, and the buffer goes to the file in one call when it fills,
//! and before a sync, a read, a truncation, a size query or a close.
//!
//! Why this is safe, by how SQLite uses a WAL:
//! - Only the connection holding the WAL's write lock writes frames, and other
//!   connections read only committed frames. With `synchronous = FULL` every
//!   commit syncs the WAL, which writes the buffer first, before the commit is
//!   published; what a commit made durable is on disk before it returns.
//! - A transaction that is rolled back after spilling pages to the WAL does not
//!   sync, and its frames would reach the file later, over frames another
//!   connection wrote meanwhile at the same place. [`discard`] drops them; the
//!   writer calls it before each transaction, and closing the file drops them too.
//! - A device without power-safe overwrite makes SQLite pad a commit past a sync
//!   and write the padding after it; such a WAL is written as SQLite asks, one call
//!   per write.
//!
//! **A checkpoint syncs the database file as it goes**, every [`SYNC_EVERY`] bytes
//! it copies, not only at its end. A pass copies tens of MiB into the file, and its
//! one sync at the end made the disk write them all at once: each commit's own WAL
//! sync, queued behind them, took 20-30 ms instead of 0.2, once a pass, and every
//! message waiting on that commit took as long. Syncing early is always safe: what
//! a checkpoint copies is already durable in the WAL, and SQLite still syncs the
//! file before it lets the WAL start over.

#![allow(unsafe_code, reason = "a SQLite VFS is a table of C callbacks: no safe wrapper exists")]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::ptr;
use std::sync::OnceLock;

use rusqlite::{Connection, OpenFlags, ffi};

/// The VFS's name, given when a connection is opened.
pub(super) const NAME: &str = "confab-bulk";
const NAME_C: &CStr = c"confab-bulk";

/// The largest write the buffer gathers: 31 frames of 4 KiB pages. The `unix` VFS
/// writes at most 128 KiB - 1 bytes a call (it masks the count with `0x1ffff`),
/// and past a few dozen frames a call's own cost is lost in copying the pages.
/// The buffer is freed when the node goes quiet ([`release`]).
const GATHER_BYTES: usize = 0x1ffff;

/// How many bytes a paced checkpoint copies into the database file between two
/// syncs: a WAL sync then waits for at most this much of the file to reach the
/// disk. On the benchmark machine, beside a pass of 40 MiB, a small file's sync
/// took up to 24-31 ms with one sync at the end of the pass, and at most 3-5 ms
/// with one every 256 KiB; the pass took 40-64 ms instead of 30
/// (`docs/benchmarks.md`, 2026-12-06, seventh session).
const SYNC_EVERY: usize = 256 * 1024;

/// A file opened through this VFS: SQLite's `sqlite3_file` header, then ours,
/// then (at [`INNER`]) the `unix` VFS's file it wraps.
#[repr(C)]
struct Wrapped {
    base: ffi::sqlite3_file,
    /// A WAL's gathered writes; `null` for a database file, and for a WAL whose
    /// writes pass straight through (no power-safe overwrite).
    pending: *mut Pending,
    /// A database file's writes since it was last synced; `None` for a WAL.
    paced: Option<Paced>,
}

/// What a database file has had written since its last sync.
#[derive(Default)]
struct Paced {
    unsynced: usize,
    /// Syncs made before SQLite asked for one (for the tests).
    #[cfg(test)]
    early: u64,
}

/// The writes not yet passed down: `bytes` belong at offset `at` of the file.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    at: i64,
    /// Writes SQLite asked for, and calls made to the file (for the tests).
    #[cfg(test)]
    asked: u64,
    #[cfg(test)]
    made: u64,
}

/// Where the wrapped file starts: after our header, 8-byte aligned as SQLite's are.
const INNER: usize = size_of::<Wrapped>().next_multiple_of(8);

/// The `unix` VFS, wrapped (set once, by [`register`]).
static UNIX: OnceLock<VfsPtr> = OnceLock::new();
/// The outcome of registering this VFS, once per process.
static REGISTERED: OnceLock<c_int> = OnceLock::new();

/// A VFS lives as long as the process and SQLite synchronizes its own use of it.
#[derive(Clone, Copy)]
struct VfsPtr(*mut ffi::sqlite3_vfs);
// SAFETY: the pointee is never freed and is only read after registration.
unsafe impl Send for VfsPtr {}
// SAFETY: as above.
unsafe impl Sync for VfsPtr {}

/// Registers the VFS (not as the default) if it is not yet.
///
/// # Errors
/// SQLite's code when it has no `unix` VFS or refuses the registration.
pub(super) fn register() -> Result<(), c_int> {
    let rc = *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` initializes SQLite and returns a VFS that lives
        // as long as the process, or null.
        let unix = unsafe { ffi::sqlite3_vfs_find(c"unix".as_ptr()) };
        if unix.is_null() {
            return ffi::SQLITE_ERROR;
        }
        let _ = UNIX.set(VfsPtr(unix));
        // The `unix` VFS itself, but for the file size, the name and `xOpen`. Its
        // other methods read only `pAppData` and `mxPathname`, which are its own;
        // the system-call overrides (version 3) are left out.
        // SAFETY: `unix` is a valid VFS (above).
        let mut vfs = unsafe { *unix };
        vfs.iVersion = vfs.iVersion.min(2);
        vfs.szOsFile += INNER as c_int;
        vfs.pNext = ptr::null_mut();
        vfs.zName = NAME_C.as_ptr();
        vfs.xOpen = Some(open_file);
        vfs.xSetSystemCall = None;
        vfs.xGetSystemCall = None;
        vfs.xNextSystemCall = None;
        // SAFETY: the VFS is leaked, so it outlives every connection using it.
        unsafe { ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0) }
    });
    if rc == ffi::SQLITE_OK { Ok(()) } else { Err(rc) }
}

/// Opens the database at `path` through this VFS; through SQLite's default, with
/// a warning naming `who`, where this one is unavailable (not a Unix build).
pub(super) fn open(path: &Path, who: &str) -> rusqlite::Result<Connection> {
    match register() {
        Ok(()) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME),
        Err(code) => {
            tracing::warn!(code, "the bulk-writing SQLite VFS is unavailable; {who} uses SQLite's default");
            Connection::open(path)
        }
    }
}

/// Drops what a rolled-back transaction left in the connection's WAL buffer.
/// Call it on the connection's thread before each write transaction: once the
/// write lock is released, another connection may write where those frames go.
pub(super) fn discard(conn: &Connection) {
    with_pending(conn, |pending| pending.bytes.clear());
}

/// Frees the buffer between transactions. Every commit wrote it out, so it holds
/// nothing a commit needs.
pub(super) fn release(conn: &Connection) {
    with_pending(conn, |pending| pending.bytes = Vec::new());
}

/// Makes the connection's checkpoints sync the database file every [`SYNC_EVERY`]
/// bytes they copy. For the background checkpointer only: the message writer's own
/// checkpoints hold up every sender until they end, so they go at the disk's pace.
pub(super) fn pace_checkpoints(conn: &Connection) {
    if let Some(file) = database_of(conn) {
        // SAFETY: a file with our database methods is a `Wrapped`, used only on the
        // connection's thread, which is the caller.
        unsafe { (*file.cast::<Wrapped>()).paced = Some(Paced::default()) };
    }
}

/// The connection's database file, if it was opened through this VFS.
fn database_of(conn: &Connection) -> Option<*mut ffi::sqlite3_file> {
    file_of(conn, ffi::SQLITE_FCNTL_FILE_POINTER, &DATABASE_METHODS)
}

/// The connection's WAL file, if it is open and was opened through this VFS.
fn wal_of(conn: &Connection) -> Option<*mut ffi::sqlite3_file> {
    // The journal's file control: in WAL mode, the WAL.
    file_of(conn, ffi::SQLITE_FCNTL_JOURNAL_POINTER, &WAL_METHODS)
}

/// The file a pointer-returning file control (`op`) gives, if it has `ours` methods.
fn file_of(conn: &Connection, op: c_int, ours: &'static ffi::sqlite3_io_methods) -> Option<*mut ffi::sqlite3_file> {
    let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
    // SAFETY: the handle is valid while `conn` lives, and these file controls only
    // write a file pointer into `file`.
    let rc =
        unsafe { ffi::sqlite3_file_control(conn.handle(), c"main".as_ptr(), op, (&raw mut file).cast::<c_void>()) };
    // SAFETY: a non-null pointer SQLite returned is an open file of the pager.
    (rc == ffi::SQLITE_OK && !file.is_null() && unsafe { ptr::eq((*file).pMethods, ours) }).then_some(file)
}

/// Runs `f` on the connection's WAL buffer, if its WAL was opened through this VFS.
fn with_pending<R>(conn: &Connection, f: impl FnOnce(&mut Pending) -> R) -> Option<R> {
    let file = wal_of(conn)?;
    // SAFETY: a file with our methods is a `Wrapped`; its buffer is used only on
    // the connection's thread, which is the caller, and not past this call.
    unsafe { (*file.cast::<Wrapped>()).pending.as_mut() }.map(f)
}

/// The wrapped file inside one of ours.
///
/// # Safety
/// `file` was allocated by SQLite with this VFS's `szOsFile`.
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: the allocation is `INNER` bytes longer than the wrapped file (`register`).
    unsafe { file.cast::<u8>().add(INNER).cast() }
}

/// The wrapped file's methods.
///
/// # Safety
/// As [`inner`], for a file whose open set our methods.
unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: `open_file` sets our methods only once the wrapped file has its own, and
    // the `unix` VFS's method tables are static.
    unsafe { &*(*inner(file)).pMethods }
}

/// # Safety
/// As [`methods`]; on the thread using the file.
unsafe fn pending<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut Pending> {
    // SAFETY: a file with our methods is a `Wrapped` (see `open_file`).
    unsafe { (*file.cast::<Wrapped>()).pending.as_mut() }
}

/// Passes the buffer down in one write, if the file has one.
///
/// # Safety
/// As [`pending`].
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: the caller's.
    match unsafe { pending(file) } {
        // SAFETY: the caller's.
        Some(p) => unsafe { write_out(p, file) },
        None => ffi::SQLITE_OK,
    }
}

/// Writes `p`, the buffer of `file`, in one call; it is empty afterwards,
/// whatever the outcome.
///
/// # Safety
/// As [`methods`].
unsafe fn write_out(p: &mut Pending, file: *mut ffi::sqlite3_file) -> c_int {
    if p.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    #[cfg(test)]
    {
        p.made += 1;
    }
    let Ok(len) = c_int::try_from(p.bytes.len()) else { return ffi::SQLITE_IOERR_WRITE };
    // SAFETY: the caller's; `bytes` holds `len` bytes.
    let rc = unsafe {
        match methods(file).xWrite {
            Some(write) => write(inner(file), p.bytes.as_ptr().cast(), len, p.at),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    };
    p.bytes.clear();
    rc
}

unsafe extern "C" fn open_file(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(&VfsPtr(unix)) = UNIX.get() else { return ffi::SQLITE_ERROR };
    // SAFETY: `unix` is the registered `unix` VFS.
    let Some(unix_open) = (unsafe { (*unix).xOpen }) else { return ffi::SQLITE_ERROR };
    let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
    if !wal && flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        // Neither a WAL nor a database: the `unix` file itself, in the space SQLite
        // allocated (larger than it needs).
        // SAFETY: SQLite's arguments, passed on.
        return unsafe { unix_open(unix, name, file, flags, out_flags) };
    }
    let ours = file.cast::<Wrapped>();
    // SAFETY: SQLite allocated `szOsFile` bytes at `file`, `INNER` more than the
    // wrapped file needs; nothing there is initialized yet, so ours is written
    // without reading (or dropping) what was there.
    unsafe {
        ptr::write(
            ours,
            Wrapped { base: ffi::sqlite3_file { pMethods: ptr::null() }, pending: ptr::null_mut(), paced: None },
        );
        let wrapped = inner(file);
        (*wrapped).pMethods = ptr::null();
        let rc = unix_open(unix, name, wrapped, flags, out_flags);
        if (*wrapped).pMethods.is_null() {
            return rc;
        }
        // From here SQLite calls our `close` even if the open failed.
        let methods = &*(*wrapped).pMethods;
        if wal {
            let power_safe = methods
                .xDeviceCharacteristics
                .is_some_and(|dc| dc(wrapped) & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0);
            if power_safe {
                (*ours).pending = Box::into_raw(Box::default());
            }
            (*ours).base.pMethods = &WAL_METHODS;
        } else if methods.iVersion >= DATABASE_METHODS.iVersion {
            (*ours).base.pMethods = &DATABASE_METHODS;
        } else {
            // Methods older than ours would have us claim what the file cannot do
            // (shared memory, for the WAL's index): the `unix` file itself, then.
            if let Some(close) = methods.xClose {
                close(wrapped);
            }
            return unix_open(unix, name, file, flags, out_flags);
        }
        rc
    }
}

/// Our methods for a WAL file; version 1, as a WAL needs no more.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// Our methods for a database file: SQLite's version 3, with its shared memory
/// (the WAL's index) and memory mapping passed on.
static DATABASE_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
    ..WAL_METHODS
};

/// Calls one of the wrapped file's methods, or answers `missing` if it has none.
macro_rules! wrapped {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {
        // SAFETY: SQLite calls our methods only on files `open_file` set them for.
        match unsafe { methods($file) }.$method {
            // SAFETY: SQLite's arguments, passed on to the file they belong to.
            Some(f) => unsafe { f(inner($file) $(, $arg)*) },
            None => $missing,
        }
    };
}

/// Drops the buffer rather than writing it: every commit wrote it out, so what is
/// left belongs to a transaction that was rolled back.
unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let closed = wrapped!(file, xClose, ffi::SQLITE_OK);
    // SAFETY: `pending` came from `Box::into_raw` in `open_file`, and the file is gone.
    unsafe {
        let ours = file.cast::<Wrapped>();
        if !(*ours).pending.is_null() {
            drop(Box::from_raw((*ours).pending));
            (*ours).pending = ptr::null_mut();
        }
    }
    closed
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    // SAFETY: SQLite's file, ours, used on its thread.
    match unsafe { flush(file) } {
        ffi::SQLITE_OK => wrapped!(file, xRead, ffi::SQLITE_IOERR_READ, buf, amount, offset),
        rc => rc,
    }
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let Ok(len) = usize::try_from(amount) else { return ffi::SQLITE_IOERR_WRITE };
    // SAFETY: SQLite's file, ours, used on its thread.
    let Some(p) = (unsafe { pending(file) }) else {
        return match wrapped!(file, xWrite, ffi::SQLITE_IOERR_WRITE, data, amount, offset) {
            // SAFETY: as above.
            ffi::SQLITE_OK => unsafe { pace(file, len) },
            rc => rc,
        };
    };
    #[cfg(test)]
    {
        p.asked += 1;
    }
    let continues = !p.bytes.is_empty() && i64::try_from(p.bytes.len()).is_ok_and(|n| p.at + n == offset);
    if !(continues && p.bytes.len() + len <= GATHER_BYTES) {
        // SAFETY: as above.
        let rc = unsafe { write_out(p, file) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if len >= GATHER_BYTES {
            return wrapped!(file, xWrite, ffi::SQLITE_IOERR_WRITE, data, amount, offset);
        }
        if p.bytes.capacity() == 0 {
            p.bytes.reserve_exact(GATHER_BYTES);
        }
        p.at = offset;
    }
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    p.bytes.extend_from_slice(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) });
    ffi::SQLITE_OK
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite's file, ours, used on its thread.
    match unsafe { flush(file) } {
        ffi::SQLITE_OK => wrapped!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size),
        rc => rc,
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite's file, ours, used on its thread.
    match unsafe { flush(file) } {
        ffi::SQLITE_OK => {}
        rc => return rc,
    }
    let rc = wrapped!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags);
    // SAFETY: as above.
    if let (ffi::SQLITE_OK, Some(paced)) = (rc, unsafe { paced(file) }) {
        paced.unsynced = 0;
    }
    rc
}

/// A database file's count of unsynced writes; `None` for a WAL.
///
/// # Safety
/// As [`pending`].
unsafe fn paced<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut Paced> {
    // SAFETY: a file with our methods is a `Wrapped` (see `open_file`).
    unsafe { (*file.cast::<Wrapped>()).paced.as_mut() }
}

/// Counts `len` bytes written to a database file, and syncs it once [`SYNC_EVERY`]
/// are unsynced.
///
/// # Safety
/// As [`pending`].
unsafe fn pace(file: *mut ffi::sqlite3_file, len: usize) -> c_int {
    // SAFETY: the caller's.
    let Some(paced) = (unsafe { paced(file) }) else { return ffi::SQLITE_OK };
    paced.unsynced += len;
    if paced.unsynced < SYNC_EVERY {
        return ffi::SQLITE_OK;
    }
    paced.unsynced = 0;
    #[cfg(test)]
    {
        paced.early += 1;
    }
    wrapped!(file, xSync, ffi::SQLITE_IOERR_FSYNC, ffi::SQLITE_SYNC_NORMAL)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite's file, ours, used on its thread.
    match unsafe { flush(file) } {
        ffi::SQLITE_OK => wrapped!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size),
        rc => rc,
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    wrapped!(file, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    wrapped!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    wrapped!(file, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, out)
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: SQLite's file, ours, used on its thread.
    match unsafe { flush(file) } {
        ffi::SQLITE_OK => wrapped!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg),
        rc => rc,
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    wrapped!(file, xSectorSize, 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    wrapped!(file, xDeviceCharacteristics, 0)
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    wrapped!(file, xShmMap, ffi::SQLITE_IOERR_SHMMAP, region, size, extend, out)
}

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    wrapped!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    wrapped!(file, xShmBarrier, ())
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    wrapped!(file, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    wrapped!(
        file,
        xFetch,
        {
            // Without the method, no mapping: SQLite reads the page instead.
            // SAFETY: SQLite passes a pointer to write the mapping's address to.
            unsafe { out.write(ptr::null_mut()) };
            ffi::SQLITE_OK
        },
        offset,
        amount,
        out
    )
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    wrapped!(file, xUnfetch, ffi::SQLITE_OK, offset, page)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::*;

    /// A page's worth of bytes a row: each row dirties a page of its own.
    const ROW: usize = 4000;

    fn gathering(path: &std::path::Path) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), NAME).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;").unwrap();
        conn
    }

    fn counts(conn: &Connection) -> (u64, u64) {
        with_pending(conn, |p| (p.asked, p.made)).unwrap()
    }

    fn insert(conn: &Connection, rows: std::ops::Range<i64>) {
        let tx = conn.unchecked_transaction().unwrap();
        for i in rows {
            tx.execute("INSERT INTO t (id, b) VALUES (?1, ?2)", (i, vec![i as u8; ROW])).unwrap();
        }
        tx.commit().unwrap();
    }

    /// The ids of the rows another connection (SQLite's own VFS) sees, each
    /// checked to hold what was written, and the database's integrity check.
    fn seen(path: &std::path::Path) -> (Vec<i64>, String) {
        let plain = Connection::open(path).unwrap();
        let mut rows = plain.prepare("SELECT id, b FROM t ORDER BY id").unwrap();
        let ids = rows
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .unwrap()
            .map(|row| {
                let (id, b) = row.unwrap();
                assert!(b == vec![id as u8; ROW], "row {id} holds other bytes");
                id
            })
            .collect();
        let check = plain.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        (ids, check)
    }

    #[test]
    fn a_commit_reaches_the_file_in_a_few_writes_and_is_seen_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let conn = gathering(&path);
        // Checkpoints every 64 pages: the WAL is read back, copied and started over.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 64; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL);")
            .unwrap();
        let before = counts(&conn);
        insert(&conn, 0..200);
        let (asked, made) = counts(&conn);
        let (asked, made) = (asked - before.0, made - before.1);
        assert!(asked >= 400, "SQLite wrote {asked} times for 200 pages");
        assert!(made * 20 <= asked, "{asked} writes went to the file in {made} calls");
        for start in (200..1000).step_by(100) {
            insert(&conn, start..start + 100);
        }
        let all = ((0..1000).collect(), "ok".to_owned());
        assert_eq!(seen(&path), all);
        drop(conn);
        assert_eq!(seen(&path), all);
    }

    /// How often the connection's database file was synced before SQLite asked,
    /// if it paces its checkpoints.
    fn early_syncs(conn: &Connection) -> Option<u64> {
        let file = database_of(conn).unwrap();
        // SAFETY: one of our database files, used on this thread.
        unsafe { (*file.cast::<Wrapped>()).paced.as_ref().map(|p| p.early) }
    }

    /// Writes 1,200 rows of a page each (about 4.8 MiB) and checkpoints them; gives
    /// the database file's size and the syncs made before the end, if paced.
    fn checkpointed(path: &std::path::Path, paced: bool) -> (u64, Option<u64>) {
        let conn = gathering(path);
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL);")
            .unwrap();
        if paced {
            pace_checkpoints(&conn);
        }
        for start in (0..1200).step_by(200) {
            insert(&conn, start..start + 200);
        }
        assert_eq!(early_syncs(&conn).unwrap_or(0), 0, "nothing was copied yet");
        // Another connection reads meanwhile: the WAL's index in shared memory
        // works through our database file.
        assert_eq!(seen(path).0.len(), 1200);
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let early = early_syncs(&conn);
        let all = ((0..1200).collect(), "ok".to_owned());
        assert_eq!(seen(path), all);
        drop(conn);
        assert_eq!(seen(path), all);
        (std::fs::metadata(path).unwrap().len(), early)
    }

    #[test]
    fn a_paced_checkpoint_syncs_the_database_file_as_it_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (copied, early) = checkpointed(&dir.path().join("test.db"), true);
        assert!(copied > 1200 * 4096, "the database file has {copied} bytes");
        let early = early.unwrap();
        let expected = copied / SYNC_EVERY as u64;
        assert!(early.abs_diff(expected) <= 1, "{early} syncs while copying {copied} bytes");
    }

    #[test]
    fn checkpoints_not_paced_sync_only_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let (copied, early) = checkpointed(&dir.path().join("test.db"), false);
        assert!(copied > 1200 * 4096, "the database file has {copied} bytes");
        assert_eq!(early, None);
    }

    #[test]
    fn frames_of_a_rolled_back_transaction_never_overwrite_anothers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let conn = gathering(&path);
        // A cache of 8 pages: a transaction of 100 spills most of them to the WAL.
        conn.execute_batch("PRAGMA cache_size = 8; CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL);").unwrap();
        insert(&conn, 0..10);
        // An empty WAL: the rollback then reads nothing back from it, which would
        // have written the buffer while the write lock was still held.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        let before = counts(&conn).0;
        for i in 10..110 {
            tx.execute("INSERT INTO t (id, b) VALUES (?1, ?2)", (i, vec![i as u8; ROW])).unwrap();
        }
        assert!(counts(&conn).0 > before, "the transaction spilled nothing to the WAL");
        tx.rollback().unwrap();
        assert!(with_pending(&conn, |p| !p.bytes.is_empty()).unwrap(), "the rollback wrote out the buffer");
        // Another connection writes where the rolled-back frames were written, and
        // past them.
        let plain = Connection::open(&path).unwrap();
        plain.execute_batch("PRAGMA synchronous = FULL;").unwrap();
        insert(&plain, 110..250);
        discard(&conn);
        insert(&conn, 250..260);
        let committed = ((0..10).chain(110..260).collect(), "ok".to_owned());
        assert_eq!(seen(&path), committed);
        drop((conn, plain));
        assert_eq!(seen(&path), committed);
    }
}
