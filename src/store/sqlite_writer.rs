//! The SQLite store's hot path: every batch of sent messages is written by one
//! thread of its own over a synchronous connection (rusqlite) with cached prepared
//! statements. Through sqlx's driver each statement was a round trip to its worker
//! thread, and a batch of 256 messages (three statements each) spent ~47 ms waiting
//! on those hand-offs; here the whole batch is one hand-off, and its statements run
//! back to back on the thread that owns the connection. See `docs/benchmarks.md`.
//! Ids are bound as borrowed 16-byte blobs (what rusqlite's `Uuid` binding stores,
//! without its copy into a new `Vec` for every id of every message).
//!
//! Writes elsewhere in the store (accounts, threads, read markers) stay on sqlx's
//! single writer connection. Both writers open their transactions with
//! `BEGIN IMMEDIATE`, so they take SQLite's write lock before reading and never
//! act on a stale snapshot; the busy timeout makes each wait for the other.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt, HashSet};
use rusqlite::{Connection, ErrorCode as SqliteCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::events::{self, INSERT_EVENT, NewEvent, TAKE_EVENT_SEQS};
use super::rows::INSERT_MESSAGE;
use super::rows::{MessageRow, sqlite_message_row};
use super::sql::BatchResult;
use super::sql::{Backend, select_by_key};
use super::sqlite::SqliteBackend;
use super::sqlite_checkpoint::{Passes, WriterCheckpoints};
use super::sqlite_vfs;
use super::sqlite_wal_hook::WalLength;
use super::{Appended, NewMessage, Result, StoreError, repeated};
use crate::domain::{ClientMsgId, MessageRecord, Seq, ThreadId, UserId};

/// The writer's page cache: the hot ends of the messages table and its indexes.
const CACHE_KIB: u32 = 32 * 1024;

/// Frees a connection's page cache; the pages are read back from the file (most
/// likely the OS's cache of it) as they are needed again.
pub(super) const SHRINK_MEMORY: &str = "PRAGMA shrink_memory";

/// The WAL's length, in pages, past which the message writer copies it into the
/// database (SQLite's default is 1,000). Every batch dirties the same hot pages
/// (the tail of each busy thread in the `(thread_id, seq)` and key indexes): with
/// 1,000 users a batch outgrew the default, so nearly every commit also
/// checkpointed, copying those pages again and syncing the database file while
/// every sender waited. At 16,384 pages (64 MiB at 4 KiB a page) that is rare; the
/// WAL file stays up to a few times that size on disk. Open loop at 16,500 msg/s:
/// delivery p50 108 → 19 ms, p99 190 → 87 ms (`docs/benchmarks.md`, 2026-12-04).
/// `sqlite_checkpoint` copies the WAL in the background every second, and past
/// this length the writer finishes a background pass itself, after the batch's
/// answers (`WriterCheckpoints`).
pub(super) const WAL_CHECKPOINT_PAGES: u32 = 16_384;

/// A batch's messages, inserted unless the sender already stored one under the key
/// in the thread: the common case is one statement, and only a repeat looks the
/// earlier message up. Other conflicts stay errors.
const INSERT_UNLESS_KEY_USED: &str =
    "ON CONFLICT (sender_id, thread_id, client_msg_id) WHERE client_msg_id IS NOT NULL DO NOTHING";

/// A thread's seq, read once per batch.
const THREAD_SEQ: &str = "SELECT last_seq FROM threads WHERE id = $1";

/// Whether a sender the writer has not seen before is a user.
const USER_EXISTS: &str = "SELECT 1 FROM users WHERE id = $1";

/// A thread's new last seq and activity, once per batch (in the order of each
/// thread's last message, so the inbox orders them as if one by one).
fn set_thread_tip() -> String {
    // `?N`, not `$N`: SQLite numbers `$` parameters in the order they first appear.
    format!("UPDATE threads SET last_seq = ?2, activity = {} WHERE id = ?1", SqliteBackend::NEXT_ACTIVITY)
}

/// The shared SQL the writer runs (`sql.rs`), built once for the thread's life.
struct Statements {
    by_key: String,
    insert: String,
    set_tip: String,
}

/// Tells whether another connection committed since this one last asked; changes
/// of this connection's own never move it.
const DATA_VERSION: &str = "PRAGMA data_version";

/// The most threads whose last seq the writer remembers between batches; past
/// it, it forgets them all and reads each again once.
const KNOWN_TIPS: usize = 65_536;

/// Each thread's last seq as the writer committed it, so that a batch reads from
/// the threads table only those it has not written lately (the read was 8.5% of
/// the writer's time in a closed loop). Valid only while no other connection has
/// committed: the accounts writer also takes seqs (system messages), so any
/// commit of another connection's empties it.
#[derive(Default)]
struct KnownTips {
    data_version: Option<i64>,
    last_seqs: HashMap<ThreadId, i64>,
}

impl KnownTips {
    /// Forgets everything unless `data_version` is the one the writer last saw.
    fn check(&mut self, data_version: i64) {
        if self.data_version != Some(data_version) {
            self.last_seqs.clear();
            self.data_version = Some(data_version);
        }
    }

    /// Keeps `last_seqs` (a committed batch's tips added to what was known before
    /// it), or nothing if they are more than the bound.
    fn remember(&mut self, last_seqs: HashMap<ThreadId, i64>) {
        self.last_seqs = if last_seqs.len() <= KNOWN_TIPS { last_seqs } else { HashMap::new() };
    }

    /// Forgets everything, and gives the memory back.
    fn forget(&mut self) {
        self.last_seqs = HashMap::new();
        self.data_version = None;
    }
}

/// The most senders the writer remembers as users; past it, it forgets them all.
const KNOWN_SENDERS: usize = 65_536;

/// Senders the writer has found in the users table. Its connection leaves foreign
/// keys unchecked (see `MessageWriter::start`), so it checks each sender itself,
/// once: users are never deleted, so a sender found once stays a user.
#[derive(Default)]
struct KnownSenders(HashSet<UserId>);

impl KnownSenders {
    /// Whether `sender` is a user, asking the database only the first time.
    fn check(&mut self, tx: &rusqlite::Transaction<'_>, sender: UserId) -> Result<bool> {
        if self.0.contains(&sender) {
            return Ok(true);
        }
        let found =
            tx.prepare_cached(USER_EXISTS).and_then(|mut s| s.exists(params![sender.0])).map_err(from_sqlite)?;
        if found {
            if self.0.len() >= KNOWN_SENDERS {
                self.0.clear();
            }
            self.0.insert(sender);
        }
        Ok(found)
    }

    /// Forgets everything, and gives the memory back.
    fn forget(&mut self) {
        self.0 = HashSet::default();
    }
}

/// Where a thread stands inside a batch.
struct Tip {
    last_seq: i64,
    /// The batch position of its last new message; `None` while it has none.
    last_message: Option<usize>,
}

/// What the writing thread is asked to do.
enum Job {
    /// Store these messages in one transaction.
    Batch {
        messages: Vec<NewMessage>,
        /// Record a `message.created` event for each new message.
        events: bool,
        reply: oneshot::Sender<BatchResult>,
    },
    /// Free the connection's page cache (see `Store::release_memory`).
    Shrink(oneshot::Sender<Result<()>>),
}

/// The handle of the writing thread; the thread ends when the last handle drops.
#[derive(Debug, Clone)]
pub(super) struct MessageWriter {
    jobs: mpsc::Sender<Job>,
}

impl MessageWriter {
    /// Opens a connection to the database at `path` (already created and migrated)
    /// and starts the thread that owns it.
    /// `passes` counts the background checkpointer's passes (`sqlite_checkpoint`).
    pub(super) fn start(path: &Path, busy_timeout: Duration, passes: Passes) -> Result<Self> {
        let conn = sqlite_vfs::open(path, "the message writer").map_err(from_sqlite)?;
        conn.busy_timeout(busy_timeout).map_err(from_sqlite)?;
        // FULL: a batch is on disk before any of its messages is acknowledged. The
        // cache: SQLite's default 2 MiB made a batch of a few thousand messages read
        // its index pages back from the file and spill dirty pages mid-transaction.
        // Foreign keys unchecked on this connection only: the writer checks each
        // message's parents itself, and once, where SQLite's checks cost three index
        // seeks a message, 6-8% of this thread (`docs/benchmarks.md`, 2026-12-06,
        // sixth session). A thread's row is read in the batch's transaction, or known
        // from an earlier batch with no other commit since (`KnownTips`); a sender is
        // looked up the first time (`KnownSenders`); neither is ever deleted. The
        // schema keeps its foreign keys, and every other connection enforces them.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; \
             PRAGMA cache_size = -{CACHE_KIB};"
        ))
        .map_err(from_sqlite)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || {
                let mut conn = conn;
                // Declared after `conn`, so dropped before it.
                let wal = WalLength::watch(&conn);
                let mut checkpoints = WriterCheckpoints::new(passes, WAL_CHECKPOINT_PAGES);
                let statements = Statements {
                    by_key: select_by_key(),
                    insert: format!("{INSERT_MESSAGE} {INSERT_UNLESS_KEY_USED}"),
                    set_tip: set_thread_tip(),
                };
                let mut known = KnownTips::default();
                let mut senders = KnownSenders::default();
                while let Ok(job) = queue.recv() {
                    match job {
                        Job::Batch { messages, events, reply } => {
                            let answer =
                                append_batch(&mut conn, &statements, &mut known, &mut senders, messages, events);
                            let _ = reply.send(answer);
                            // After the answer: the batch's senders do not wait for it.
                            checkpoints.after_commit(&conn, wal.frames());
                        }
                        Job::Shrink(reply) => {
                            known.forget();
                            senders.forget();
                            let _ = reply.send(shrink(&conn));
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Other(Box::new(e)))?;
        Ok(Self { jobs })
    }

    /// Stores a batch in one transaction (one fsync), answering each message.
    pub(super) async fn append(&self, messages: Vec<NewMessage>, events: bool) -> BatchResult {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Batch { messages, events, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Frees the writer's page cache, between two batches.
    pub(super) async fn shrink(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Shrink(reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Frees the page cache and the WAL's write buffer.
fn shrink(conn: &Connection) -> Result<()> {
    conn.execute_batch(SHRINK_MEMORY).map_err(from_sqlite)?;
    sqlite_vfs::release(conn);
    Ok(())
}

fn stopped() -> StoreError {
    StoreError::Other("the SQLite writer thread has stopped".into())
}

/// One transaction: each thread's seq is read once and written once, however many
/// of the batch's messages it has (a batch of 3,300 messages over 500 threads made
/// 3,300 updates of the threads table, each moving its activity index entry).
fn append_batch(
    conn: &mut Connection,
    statements: &Statements,
    known: &mut KnownTips,
    senders: &mut KnownSenders,
    messages: Vec<NewMessage>,
    events: bool,
) -> BatchResult {
    // Frames a rolled-back batch spilled to the WAL and never wrote out.
    sqlite_vfs::discard(conn);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(from_sqlite)?;
    // Read under the write lock: no other connection commits until this one ends.
    let data_version = tx.prepare_cached(DATA_VERSION).and_then(|mut s| s.query_row([], |r| r.get(0)));
    known.check(data_version.map_err(from_sqlite)?);
    // Taken out for the batch: a batch that fails leaves nothing remembered.
    let mut remembered = std::mem::take(&mut known.last_seqs);
    let mut tips: HashMap<ThreadId, Option<Tip>> = HashMap::new();
    let mut results = Vec::with_capacity(messages.len());
    {
        // Prepared once a batch: looking a statement up in the cache hashes its SQL.
        let mut batch = BatchStatements {
            thread_seq: tx.prepare_cached(THREAD_SEQ).map_err(from_sqlite)?,
            insert: tx.prepare_cached(&statements.insert).map_err(from_sqlite)?,
            by_key: &statements.by_key,
            known: &remembered,
            senders,
        };
        for (n, new) in messages.into_iter().enumerate() {
            results.push(append_one(&tx, &mut batch, &mut tips, n, new)?);
        }
    }
    let mut moved: Vec<(ThreadId, i64, usize)> = tips
        .into_iter()
        .filter_map(|(thread, tip)| tip.and_then(|t| t.last_message.map(|n| (thread, t.last_seq, n))))
        .collect();
    moved.sort_unstable_by_key(|&(_, _, n)| n);
    let mut set_tip = tx.prepare_cached(&statements.set_tip).map_err(from_sqlite)?;
    for &(thread, last_seq, _) in &moved {
        if set_tip.execute(params![thread.0.as_bytes(), last_seq]).map_err(from_sqlite)? != 1 {
            return Err(StoreError::Other("a thread of the batch vanished before its seq was written".into()));
        }
    }
    drop(set_tip);
    if events {
        let created: Vec<NewEvent> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|a| !a.duplicate)
            .map(|a| NewEvent::message(a.message.thread_id, a.message.seq))
            .collect();
        record_events(&tx, &created)?;
    }
    tx.commit().map_err(from_sqlite)?;
    remembered.extend(moved.into_iter().map(|(thread, last_seq, _)| (thread, last_seq)));
    known.remember(remembered);
    Ok(results)
}

/// What each message of a batch uses.
struct BatchStatements<'tx, 's> {
    thread_seq: rusqlite::CachedStatement<'tx>,
    insert: rusqlite::CachedStatement<'tx>,
    by_key: &'s str,
    known: &'s HashMap<ThreadId, i64>,
    senders: &'s mut KnownSenders,
}

/// The batch's events, with the next seqs (taken last: see `TAKE_EVENT_SEQS`).
fn record_events(tx: &rusqlite::Transaction<'_>, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events::seq_count(events)?;
    let last: i64 = tx
        .prepare_cached(TAKE_EVENT_SEQS)
        .and_then(|mut s| s.query_row(params![n], |r| r.get(0)))
        .map_err(from_sqlite)?;
    let now = crate::domain::Timestamp::now().millis();
    let mut insert = tx.prepare_cached(INSERT_EVENT).map_err(from_sqlite)?;
    for (seq, e) in (last - n + 1..).zip(events) {
        insert
            .execute(params![
                seq,
                uuid::Uuid::new_v4().as_bytes(),
                e.kind.as_str(),
                e.thread_id.0.as_bytes(),
                e.thread_seq.map(|s| s.0),
                e.user_id.map(|u| u.0),
                now
            ])
            .map_err(from_sqlite)?;
    }
    Ok(())
}

/// One message inside the batch's transaction; the inner `Err` refuses only it.
fn append_one(
    tx: &rusqlite::Transaction<'_>,
    statements: &mut BatchStatements<'_, '_>,
    tips: &mut HashMap<ThreadId, Option<Tip>>,
    n: usize,
    new: NewMessage,
) -> Result<Result<Appended>> {
    let tip = match tips.entry(new.thread_id) {
        Entry::Occupied(seen) => seen.into_mut(),
        Entry::Vacant(unseen) => {
            let last_seq = match statements.known.get(&new.thread_id) {
                Some(&last_seq) => Some(last_seq),
                None => statements
                    .thread_seq
                    .query_row(params![new.thread_id.0.as_bytes()], |r| r.get(0))
                    .optional()
                    .map_err(from_sqlite)?,
            };
            unseen.insert(last_seq.map(|last_seq| Tip { last_seq, last_message: None }))
        }
    };
    let Some(tip) = tip else { return Ok(Err(StoreError::NotFound("thread"))) };
    if !statements.senders.check(tx, new.sender)? {
        return Ok(Err(StoreError::NotFound("user")));
    }
    let seq = tip.last_seq + 1;
    let key = new.client_msg_id.map(ClientMsgId::into_inner);
    let m = MessageRecord::user(new.thread_id, Seq(seq), new.sender, new.text, key);
    let inserted = statements
        .insert
        .execute(params![
            m.id.0.as_bytes(),
            m.thread_id.0.as_bytes(),
            m.seq.0,
            m.kind.as_str(),
            m.sender_id.map(|u| u.0),
            m.actor_id.map(|u| u.0),
            m.text,
            metadata_text(&m.metadata),
            m.client_msg_id,
            m.created_at.millis(),
        ])
        .map_err(from_sqlite)?;
    if inserted == 0 {
        // The sender used this key in this thread before: answer with that message.
        let existing: Option<MessageRow> = tx
            .prepare_cached(statements.by_key)
            .and_then(|mut s| {
                s.query_row(
                    params![new.sender.0, new.thread_id.0.as_bytes(), m.client_msg_id.as_deref()],
                    sqlite_message_row,
                )
                .optional()
            })
            .map_err(from_sqlite)?;
        let Some(row) = existing else {
            return Err(StoreError::Other("a message was not inserted, and no message has its key".into()));
        };
        return Ok(repeated(row.try_into()?, &m.text));
    }
    tip.last_seq = seq;
    tip.last_message = Some(n);
    Ok(Ok(Appended { message: m, duplicate: false }))
}

/// The text a message's metadata is stored as; a user message's empty object needs
/// no allocation.
fn metadata_text(metadata: &serde_json::Value) -> Cow<'static, str> {
    match metadata {
        serde_json::Value::Object(map) if map.is_empty() => Cow::Borrowed("{}"),
        other => Cow::Owned(other.to_string()),
    }
}

/// A full disk, a read-only or vanished file, or a lock held too long is worth
/// retrying later (`unavailable`); anything else is a fault.
fn from_sqlite(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            SqliteCode::DatabaseBusy
            | SqliteCode::DatabaseLocked
            | SqliteCode::DiskFull
            | SqliteCode::ReadOnly
            | SqliteCode::CannotOpen
            | SqliteCode::SystemIoFailure
            | SqliteCode::OutOfMemory,
        ) => StoreError::Unavailable(Box::new(e)),
        Some(SqliteCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
        _ => StoreError::Other(Box::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tips_are_forgotten_when_another_connection_commits_or_too_many_pile_up() {
        let mut known = KnownTips::default();
        known.check(7);
        let (a, b) = (ThreadId::generate(), ThreadId::generate());
        known.remember([(a, 3), (b, 5)].into_iter().collect());
        known.check(7);
        assert_eq!((known.last_seqs.get(&a), known.last_seqs.get(&b)), (Some(&3), Some(&5)));
        known.check(8);
        assert!(known.last_seqs.is_empty(), "another connection committed");
        known.remember((0..KNOWN_TIPS).map(|_| (ThreadId::generate(), 1)).collect());
        assert_eq!(known.last_seqs.len(), KNOWN_TIPS);
        known.remember((0..=KNOWN_TIPS).map(|_| (ThreadId::generate(), 1)).collect());
        assert!(known.last_seqs.is_empty(), "past the bound, nothing is remembered");
        known.remember([(a, 4)].into_iter().collect());
        known.forget();
        known.check(8);
        assert!(known.last_seqs.is_empty());
    }

    #[test]
    fn a_sender_is_looked_up_until_found_and_then_remembered() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY); INSERT INTO users VALUES (1);").unwrap();
        let mut senders = KnownSenders::default();
        let tx = conn.transaction().unwrap();
        assert!(senders.check(&tx, UserId(1)).unwrap());
        assert!(!senders.check(&tx, UserId(2)).unwrap());
        tx.execute("INSERT INTO users VALUES (2)", []).unwrap();
        assert!(senders.check(&tx, UserId(2)).unwrap(), "a refused sender is asked about again");
        tx.execute("DELETE FROM users", []).unwrap();
        assert!(senders.check(&tx, UserId(1)).unwrap() && senders.check(&tx, UserId(2)).unwrap(), "remembered");
        senders.forget();
        assert!(!senders.check(&tx, UserId(1)).unwrap(), "forgotten, so asked again");
    }
}
