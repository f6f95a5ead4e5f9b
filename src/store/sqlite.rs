//! The embedded default store: one SQLite file in WAL mode. All writes go through a
//! single connection, so they are serialized without `SQLITE_BUSY` retries, while
//! reads use a pool of read-only connections that never block the writer. Sent
//! messages are written by their own thread (`sqlite_writer.rs`), and the WAL is
//! checkpointed by another (`sqlite_checkpoint.rs`).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::SqliteQueryResult;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Sqlite};
use uuid::Uuid;

use super::rows::group_participants;
use super::sql::{Backend, BatchResult, SqlStore, participants_sql};
use super::sqlite_checkpoint::{CHECKPOINT_EVERY, Checkpointer, WriterCheckpoints};
use super::sqlite_writer::{MessageWriter, WAL_CHECKPOINT_PAGES};
use super::{NewMessage, Result, StoreError};
use crate::domain::Participant;

/// Readers beyond two cores only queue on the file; a few cover concurrent requests.
const READERS: u32 = 4;
/// How long a statement waits for a lock (the other writer, a checkpoint, another
/// process) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite implementation of [`super::Store`].
pub type SqliteStore = SqlStore<SqliteBackend>;

/// SQLite's pools and message writer, and its dialect.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    writer: SqlitePool,
    reader: SqlitePool,
    messages: MessageWriter,
    /// Held so that the checkpointing thread lives as long as the store.
    _checkpoints: Checkpointer,
}

impl Backend for SqliteBackend {
    type Db = Sqlite;

    /// Every write transaction takes the write lock first: with two writers
    /// (sqlx's and the message writer's), a deferred one could read a snapshot
    /// that is stale by the time it writes, and SQLite would refuse it without
    /// waiting.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    /// Writes are serialized (`BEGIN IMMEDIATE` on both writers), which makes
    /// `MAX(activity) + 1` race-free.
    const NEXT_ACTIVITY: &'static str = "(SELECT COALESCE(MAX(activity), 0) + 1 FROM threads)";
    const NULL_SAFE_EQ: &'static str = "IS";
    /// Batches go to the message writer's thread through a channel, one at a time.
    const QUEUES_BATCHES: bool = true;

    fn writer(&self) -> &Pool<Sqlite> {
        &self.writer
    }

    fn reader(&self) -> &Pool<Sqlite> {
        &self.reader
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn participants_of(&self, threads: &[Uuid]) -> Result<HashMap<Uuid, Vec<Participant>>> {
        let list = vec!["?"; threads.len()].join(", ");
        let sql = participants_sql(&format!("IN ({list})"));
        let mut query = sqlx::query_as(&sql);
        for t in threads {
            query = query.bind(*t);
        }
        group_participants(query.fetch_all(&self.reader).await?)
    }

    async fn append_batch(&self, batch: Vec<NewMessage>, events: bool) -> BatchResult {
        self.messages.append(batch, events).await
    }

    async fn release_memory(&self) -> Result<()> {
        self.messages.shrink().await?;
        // The pools' idle connections are closed, not just shrunk: each has a thread
        // of its own (sqlx's SQLite worker), and glibc gives back a thread's cache of
        // small free blocks only when the thread ends (`docs/benchmarks.md`,
        // 2026-12-05). A pool opens a connection again when one is next needed. Only
        // the connections no one is using: a busy one is not waited for, it goes the
        // next time.
        for pool in [&self.writer, &self.reader] {
            let mut idle = Vec::new();
            while let Some(conn) = pool.try_acquire() {
                idle.push(conn);
            }
            for conn in idle {
                conn.close().await?;
            }
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file a `sqlite://` URL names.
    ///
    /// # Errors
    /// A malformed URL, or a file that cannot be created or opened.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the message is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Past where the message writer checkpoints: a commit here (accounts,
            // threads, read markers) checkpoints only a WAL no one else keeps short.
            .pragma("wal_autocheckpoint", WriterCheckpoints::other_writers_limit(WAL_CHECKPOINT_PAGES).to_string());
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Other(Box::new(e)))?;
        }
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        let checkpoints = Checkpointer::start(options.get_filename(), BUSY_TIMEOUT, CHECKPOINT_EVERY)?;
        let messages = MessageWriter::start(options.get_filename(), BUSY_TIMEOUT, checkpoints.passes())?;
        let reader = SqlitePoolOptions::new().max_connections(READERS).connect_with(options.read_only(true)).await?;
        Ok(Self::new(SqliteBackend { writer, reader, messages, _checkpoints: checkpoints }))
    }

    /// Takes the one-node lock of the database file a `sqlite://` URL names (none
    /// for an in-memory database), held until the returned file drops. A node's
    /// writer caches what it owns (seqs, members), so a second node serving the
    /// same file would act on stale state; one-off commands (`tokens`, `demo`)
    /// do not take it and may run beside a node.
    ///
    /// # Errors
    /// A malformed URL, or a file another node holds.
    pub fn lock_for_node(url: &str) -> Result<Option<std::fs::File>> {
        let options = SqliteConnectOptions::from_str(url)?;
        let db = options.get_filename();
        if db.as_os_str().is_empty() || db.as_os_str() == ":memory:" {
            return Ok(None);
        }
        if let Some(dir) = db.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Other(Box::new(e)))?;
        }
        let mut path = db.as_os_str().to_owned();
        path.push(".lock");
        let hint = "one node per SQLite file (several nodes share a PostgreSQL database instead)";
        crate::lockfile::lock(std::path::Path::new(&path), "the SQLite database", hint)
            .map(Some)
            .map_err(|e| StoreError::Other(Box::new(e)))
    }

    /// Brings the schema up to date.
    ///
    /// # Errors
    /// A migration that fails, or a database newer than this binary.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.backend.writer)
            .await
            .map_err(|e| StoreError::Other(Box::new(e)))
    }
}
