//! The embedded default store: one SQLite file in WAL mode. All writes go through a
//! single connection, so they are serialized without `SQLITE_BUSY` retries, while
//! reads use a pool of read-only connections that never block the writer.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use uuid::Uuid;

use super::events::{self, EventRow, INSERT_EVENT, TAKE_EVENT_SEQS, opened_events};
use super::refresh;
use super::rows::{
    CredentialsRow, FREELANCER_COLUMNS, FreelancerRow, INSERT_MESSAGE, JOB_COLUMNS, JobRow, MESSAGE_COLUMNS,
    MOVE_MARKER, MessageRow, ParticipantRow, THREAD_COLUMNS, ThreadRow, USER_COLUMNS, UserRow, group_participants,
    select_system_by_key,
};
use super::sqlite_writer::{MessageWriter, SHRINK_MEMORY, WAL_CHECKPOINT_PAGES};
use super::{
    Appended, Backlog, Cursor, Delivery, ExternalJob, ExternalUser, InboxFrom, NewEvent, NewJob, NewMessage,
    NewProposal, NewSystemMessage, NewUser, OpenThread, Opened, ReadMarker, RefreshToken, Result, Rotation, Store,
    StoreError, StoreOptions, StoredEvent, ThreadKey, host_message, repeated,
};
use crate::domain::{
    Freelancer, Job, JobId, MessageRecord, Page, PageRequest, Participant, Profile, Proposal, Seq, SystemMessage,
    ThreadId, ThreadKind, ThreadRecord, Timestamp, User, UserId,
};

/// Readers beyond two cores only queue on the file; a few cover concurrent requests.
const READERS: u32 = 4;
/// How long a statement waits for a lock (the other writer, a checkpoint, another
/// process) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Every write transaction takes the write lock first: with two writers (sqlx's and
/// the message writer's), a deferred one could read a snapshot that is stale by the
/// time it writes, and SQLite would refuse it without waiting.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    messages: MessageWriter,
    /// Whether writes record webhook events.
    events: bool,
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
            // As the message writer's: a commit here must not checkpoint the WAL it fills.
            .pragma("wal_autocheckpoint", WAL_CHECKPOINT_PAGES.to_string());
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Other(Box::new(e)))?;
        }
        let writer = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        let messages = MessageWriter::start(options.get_filename(), BUSY_TIMEOUT)?;
        let reader = SqlitePoolOptions::new().max_connections(READERS).connect_with(options.read_only(true)).await?;
        Ok(Self { writer, reader, messages, events: false })
    }

    /// The store with `options` in force.
    #[must_use]
    pub fn with_options(mut self, options: StoreOptions) -> Self {
        self.events = options.events;
        self
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
        sqlx::migrate!("./migrations/sqlite").run(&self.writer).await.map_err(|e| StoreError::Other(Box::new(e)))
    }
}

/// Takes a thread's next seq and moves it to the top of its participants' inboxes.
/// Writes are serialized (`BEGIN IMMEDIATE` on both writers), which makes
/// `MAX(activity) + 1` race-free.
pub(super) const BUMP_THREAD: &str = "UPDATE threads SET last_seq = last_seq + 1, \
     activity = (SELECT MAX(activity) + 1 FROM threads) WHERE id = $1 RETURNING last_seq";

/// Inserts a system message as the thread's next seq inside `tx`.
async fn insert_system_message(
    tx: &mut Transaction<'_, Sqlite>,
    thread: ThreadId,
    message: SystemMessage,
    now: Timestamp,
) -> Result<MessageRecord> {
    let seq: i64 = sqlx::query_scalar(BUMP_THREAD).bind(thread.0).fetch_one(&mut **tx).await?;
    let record = MessageRecord::system(thread, Seq(seq), message, now);
    insert_message(tx, &record).await?;
    Ok(record)
}

/// Records events inside `tx`, with the next seqs (the counter is taken last, so
/// its lock is held only to the commit).
async fn record_events(tx: &mut Transaction<'_, Sqlite>, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let last: i64 = sqlx::query_scalar(TAKE_EVENT_SEQS).bind(n).fetch_one(&mut **tx).await?;
    let now = Timestamp::now().millis();
    for (seq, e) in (last - n + 1..).zip(events) {
        sqlx::query(INSERT_EVENT)
            .bind(seq)
            .bind(uuid::Uuid::new_v4())
            .bind(e.kind.as_str())
            .bind(e.thread_id.0)
            .bind(e.thread_seq.map(|s| s.0))
            .bind(e.user_id.map(|u| u.0))
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The message a sender already stored in a thread under a key.
pub(super) fn select_by_key() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.sender_id = $1 AND m.thread_id = $2 AND m.client_msg_id = $3"
    )
}

async fn insert_message(tx: &mut Transaction<'_, Sqlite>, m: &MessageRecord) -> Result<()> {
    sqlx::query(INSERT_MESSAGE)
        .bind(m.id.0)
        .bind(m.thread_id.0)
        .bind(m.seq.0)
        .bind(m.kind.as_str())
        .bind(m.sender_id.map(|u| u.0))
        .bind(m.actor_id.map(|u| u.0))
        .bind(&m.text)
        .bind(m.metadata.to_string())
        .bind(&m.client_msg_id)
        .bind(m.created_at.millis())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Find-or-create inside an open transaction, so a proposal can share it.
async fn open_thread_in(tx: &mut Transaction<'_, Sqlite>, open: OpenThread) -> Result<Opened> {
    let (lo, hi) = open.key.ordered_pair();
    let (kind, job) = match open.key {
        ThreadKey::Direct { .. } => (ThreadKind::Direct, None),
        ThreadKey::Job { job, .. } => (ThreadKind::Job, Some(job.0)),
    };
    let now = Timestamp::now();
    let id = ThreadId::generate();
    let inserted = sqlx::query(
        "INSERT INTO threads (id, kind, job_id, user_lo, user_hi, last_seq, created_at, activity) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, (SELECT COALESCE(MAX(activity), 0) + 1 FROM threads)) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id.0)
    .bind(kind.as_str())
    .bind(job)
    .bind(lo.0)
    .bind(hi.0)
    .bind(now.millis())
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        let existing: Uuid = sqlx::query_scalar(
            "SELECT id FROM threads WHERE kind = $1 AND user_lo = $2 AND user_hi = $3 AND job_id IS $4",
        )
        .bind(kind.as_str())
        .bind(lo.0)
        .bind(hi.0)
        .bind(job)
        .fetch_one(&mut **tx)
        .await?;
        return Ok(Opened { thread_id: ThreadId(existing), created: false, first_message: None });
    }
    sqlx::query("INSERT INTO thread_participants (thread_id, user_id) VALUES ($1, $2), ($1, $3)")
        .bind(id.0)
        .bind(lo.0)
        .bind(hi.0)
        .execute(&mut **tx)
        .await?;
    let first_message = match open.first_message {
        Some(m) => Some(insert_system_message(tx, id, m, now).await?),
        None => None,
    };
    Ok(Opened { thread_id: id, created: true, first_message })
}

/// Moves a read marker forward to `target`; `None` when it stood there or past it.
async fn move_marker<'e>(
    e: impl sqlx::SqliteExecutor<'e>,
    id: ThreadId,
    user: UserId,
    target: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(MOVE_MARKER).bind(id.0).bind(user.0).bind(target).fetch_optional(e).await?)
}

/// The unread count of `$viewer` in thread `t`, for a participant row `p` of theirs.
const UNREAD_SUBQUERY: &str = "(SELECT COUNT(*) FROM messages x WHERE x.thread_id = t.id \
     AND x.seq > p.last_read_seq AND (x.actor_id IS NULL OR x.actor_id <> p.user_id))";

/// `user`'s read marker in a thread and the thread's last seq; `None` when `user`
/// is not in it.
async fn read_position(pool: &SqlitePool, id: ThreadId, user: UserId) -> Result<Option<(i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT p.last_read_seq, t.last_seq FROM thread_participants p JOIN threads t ON t.id = p.thread_id \
         WHERE p.thread_id = $1 AND p.user_id = $2",
    )
    .bind(id.0)
    .bind(user.0)
    .fetch_optional(pool)
    .await?)
}

impl SqliteStore {
    async fn participants_of(&self, threads: &[Uuid]) -> Result<HashMap<Uuid, Vec<Participant>>> {
        if threads.is_empty() {
            return Ok(HashMap::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT p.thread_id, {USER_COLUMNS}, p.last_read_seq FROM thread_participants p \
             JOIN users u ON u.id = p.user_id WHERE p.thread_id IN ("
        ));
        let mut list = q.separated(", ");
        for t in threads {
            list.push_bind(*t);
        }
        q.push(") ORDER BY p.thread_id, u.id");
        let rows: Vec<ParticipantRow> = q.build_query_as().fetch_all(&self.reader).await?;
        group_participants(rows)
    }

    async fn fetch_job(&self, where_clause: &str, a: i64, b: Option<&str>) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id WHERE {where_clause}");
        let mut q = sqlx::query_as::<_, JobRow>(&sql).bind(a);
        if let Some(b) = b {
            q = q.bind(b);
        }
        q.fetch_optional(&self.reader).await?.map(Job::try_from).transpose()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_user(&self, new: NewUser) -> Result<User> {
        let skills = serde_json::to_string(&new.profile.skills).map_err(|e| StoreError::Other(Box::new(e)))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, full_name, role, headline, skills, hourly_rate_cents, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&new.username)
        .bind(&new.password_hash)
        .bind(&new.full_name)
        .bind(new.role.as_str())
        .bind(&new.profile.headline)
        .bind(skills)
        .bind(new.profile.hourly_rate.map(|m| m.cents()))
        .bind(Timestamp::now().millis())
        .fetch_one(&self.writer)
        .await?;
        Ok(User { id: UserId(id), username: new.username, full_name: new.full_name, role: new.role, external_id: None })
    }

    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        sqlx::query_as::<_, CredentialsRow>(&format!(
            "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.reader)
        .await?
        .map(CredentialsRow::into_parts)
        .transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"))
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1"))
            .bind(username)
            .fetch_optional(&self.reader)
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn set_profile(&self, id: UserId, profile: &Profile) -> Result<()> {
        let skills = serde_json::to_string(&profile.skills).map_err(|e| StoreError::Other(Box::new(e)))?;
        let updated = sqlx::query("UPDATE users SET headline = $1, skills = $2, hourly_rate_cents = $3 WHERE id = $4")
            .bind(&profile.headline)
            .bind(skills)
            .bind(profile.hourly_rate.map(|m| m.cents()))
            .bind(id.0)
            .execute(&self.writer)
            .await?
            .rows_affected();
        if updated == 0 { Err(StoreError::NotFound("user")) } else { Ok(()) }
    }

    async fn freelancers(&self, page: PageRequest) -> Result<Page<Freelancer>> {
        let rows: Vec<FreelancerRow> = sqlx::query_as(&format!(
            "SELECT {FREELANCER_COLUMNS} FROM users u WHERE u.role = 'freelancer' ORDER BY u.id LIMIT $1 OFFSET $2"
        ))
        .bind(i64::from(page.limit) + 1)
        .bind(page.offset as i64)
        .fetch_all(&self.reader)
        .await?;
        let rows = rows.into_iter().map(Freelancer::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit))
    }

    async fn freelancer(&self, id: UserId) -> Result<Option<Freelancer>> {
        sqlx::query_as::<_, FreelancerRow>(&format!(
            "SELECT {FREELANCER_COLUMNS} FROM users u WHERE u.id = $1 AND u.role = 'freelancer'"
        ))
        .bind(id.0)
        .fetch_optional(&self.reader)
        .await?
        .map(Freelancer::try_from)
        .transpose()
    }

    async fn create_job(&self, new: NewJob) -> Result<Job> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (client_id, title, description, status, created_at) \
             VALUES ($1, $2, $3, 'open', $4) RETURNING id",
        )
        .bind(new.client.0)
        .bind(&new.title)
        .bind(&new.description)
        .bind(Timestamp::now().millis())
        .fetch_one(&self.writer)
        .await?;
        // Read back through the writer: a reader may not see the commit yet.
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id WHERE j.id = $1");
        sqlx::query_as::<_, JobRow>(&sql).bind(id).fetch_one(&self.writer).await?.try_into()
    }

    async fn jobs(&self, page: PageRequest) -> Result<Page<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id ORDER BY j.id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(i64::from(page.limit) + 1)
        .bind(page.offset as i64)
        .fetch_all(&self.reader)
        .await?;
        let rows = rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit))
    }

    async fn job(&self, id: JobId) -> Result<Option<Job>> {
        self.fetch_job("j.id = $1", id.0, None).await
    }

    async fn job_by_title(&self, client: UserId, title: &str) -> Result<Option<Job>> {
        self.fetch_job("j.client_id = $1 AND j.title = $2", client.0, Some(title)).await
    }

    async fn open_thread(&self, open: OpenThread) -> Result<Opened> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        let opened = open_thread_in(&mut tx, open).await?;
        if self.events {
            record_events(&mut tx, &opened_events(&opened)).await?;
        }
        tx.commit().await?;
        Ok(opened)
    }

    async fn submit_proposal(&self, new: NewProposal, thread: OpenThread) -> Result<(Proposal, Opened)> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        let opened = open_thread_in(&mut tx, thread).await?;
        if self.events {
            record_events(&mut tx, &opened_events(&opened)).await?;
        }
        let now = Timestamp::now();
        // A unique violation here drops `tx`, which rolls the thread back too.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO proposals (job_id, freelancer_id, cover_letter, bid_amount_cents, thread_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(new.job.0)
        .bind(new.freelancer.id.0)
        .bind(&new.cover_letter)
        .bind(new.bid_amount.cents())
        .bind(opened.thread_id.0)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let proposal = Proposal {
            id,
            job_id: new.job,
            freelancer: new.freelancer,
            cover_letter: new.cover_letter,
            bid_amount: new.bid_amount,
            thread_id: opened.thread_id,
            created_at: now,
        };
        Ok((proposal, opened))
    }

    async fn append_messages(&self, batch: Vec<NewMessage>) -> Result<Vec<Result<Appended>>> {
        self.messages.append(batch, self.events).await
    }

    async fn release_memory(&self) -> Result<()> {
        self.messages.shrink().await?;
        // Only the connections no one is using: a busy one is not waited for, it
        // is shrunk the next time.
        for pool in [&self.writer, &self.reader] {
            let mut idle = Vec::new();
            while let Some(conn) = pool.try_acquire() {
                idle.push(conn);
            }
            for conn in &mut idle {
                sqlx::query(SHRINK_MEMORY).execute(&mut **conn).await?;
            }
        }
        Ok(())
    }

    async fn thread(&self, id: ThreadId, viewer: UserId) -> Result<Option<ThreadRecord>> {
        let row: Option<ThreadRow> = sqlx::query_as(&format!(
            "SELECT {THREAD_COLUMNS}, {UNREAD_SUBQUERY} AS unread_count FROM threads t \
             JOIN thread_participants p ON p.thread_id = t.id AND p.user_id = $2 \
             LEFT JOIN jobs j ON j.id = t.job_id \
             LEFT JOIN messages m ON m.thread_id = t.id AND m.seq = t.last_seq \
             WHERE t.id = $1"
        ))
        .bind(id.0)
        .bind(viewer.0)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut participants = self.participants_of(&[row.id]).await?;
        let participants = participants.remove(&row.id).unwrap_or_default();
        row.into_record(participants).map(Some)
    }

    async fn participants(&self, id: ThreadId) -> Result<Vec<Participant>> {
        let participants = self.participants_of(&[id.0]).await?;
        Ok(participants.into_values().flatten().collect())
    }

    async fn inbox(&self, viewer: UserId, from: InboxFrom, limit: u32) -> Result<Page<ThreadRecord>> {
        let (after, offset) = match from {
            InboxFrom::Start => ("", 0),
            InboxFrom::Offset(n) => ("", n),
            InboxFrom::After(_) => ("AND (t.activity, t.id) < ($3, $4)", 0),
        };
        let sql = format!(
            "SELECT {THREAD_COLUMNS}, {UNREAD_SUBQUERY} AS unread_count FROM thread_participants p \
             JOIN threads t ON t.id = p.thread_id \
             LEFT JOIN jobs j ON j.id = t.job_id \
             LEFT JOIN messages m ON m.thread_id = t.id AND m.seq = t.last_seq \
             WHERE p.user_id = $1 {after} ORDER BY t.activity DESC, t.id DESC LIMIT $2 OFFSET {offset}"
        );
        let mut query = sqlx::query_as::<_, ThreadRow>(&sql).bind(viewer.0).bind(i64::from(limit) + 1);
        if let InboxFrom::After(cursor) = from {
            query = query.bind(cursor.activity).bind(cursor.id.0);
        }
        let rows: Vec<ThreadRow> = query.fetch_all(&self.reader).await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut participants = self.participants_of(&ids).await?;
        let records = rows
            .into_iter()
            .map(|r| {
                let p = participants.remove(&r.id).unwrap_or_default();
                r.into_record(p)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(records, limit))
    }

    async fn messages(&self, id: ThreadId, cursor: Cursor, limit: u32) -> Result<Page<MessageRecord>> {
        let (lower, upper, from_top) = cursor.range();
        let order = if from_top { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.thread_id = $1 AND m.seq > $2 AND m.seq < $3 \
             ORDER BY m.seq {order} LIMIT $4"
        );
        let rows: Vec<MessageRow> = sqlx::query_as(&sql)
            .bind(id.0)
            .bind(lower)
            .bind(upper)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.reader)
            .await?;
        let records = rows.into_iter().map(MessageRecord::try_from).collect::<Result<Vec<_>>>()?;
        let mut page = Page::from_overfetch(records, limit);
        if from_top {
            page.results.reverse();
        }
        Ok(page)
    }

    async fn mark_read(&self, id: ThreadId, user: UserId, up_to: Option<Seq>) -> Result<ReadMarker> {
        // Read where the marker stands on a reader, so a read receipt that moves
        // nothing never queues behind (or holds) the single writer.
        let Some((current, last)) = read_position(&self.reader, id, user).await? else {
            return Err(StoreError::NotFound("thread"));
        };
        let target = up_to.map_or(last, |s| s.0.min(last));
        let mut marker = (current, false);
        if target > current {
            // A transaction only when the move records an event with it: a read
            // receipt is otherwise one statement, as before the outbox.
            let updated = if self.events {
                let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
                let updated = move_marker(&mut *tx, id, user, target).await?;
                if let Some(m) = updated {
                    record_events(&mut tx, &[NewEvent::read(id, user, Seq(m))]).await?;
                }
                tx.commit().await?;
                updated
            } else {
                move_marker(&self.writer, id, user, target).await?
            };
            marker = match updated {
                Some(m) => (m, true),
                // Another read moved it further meanwhile.
                None => (read_position(&self.writer, id, user).await?.map_or(target, |(m, _)| m), false),
            };
        }
        let unread: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE thread_id = $1 AND seq > $2 AND (actor_id IS NULL OR actor_id <> $3)",
        )
        .bind(id.0)
        .bind(marker.0)
        .bind(user.0)
        .fetch_one(&self.reader)
        .await?;
        Ok(ReadMarker { up_to_seq: Seq(marker.0), unread_count: unread, moved: marker.1 })
    }

    async fn thread_heads(&self, user: UserId) -> Result<Vec<(ThreadId, Seq)>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT t.id, t.last_seq FROM thread_participants p JOIN threads t ON t.id = p.thread_id WHERE p.user_id = $1",
        )
        .bind(user.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|(t, s)| (ThreadId(t), Seq(s))).collect())
    }

    async fn direct_thread(&self, a: UserId, b: UserId) -> Result<Option<ThreadId>> {
        let (lo, hi) = ThreadKey::Direct { a, b }.ordered_pair();
        let id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM threads WHERE kind = 'direct' AND user_lo = $1 AND user_hi = $2")
                .bind(lo.0)
                .bind(hi.0)
                .fetch_optional(&self.reader)
                .await?;
        Ok(id.map(ThreadId))
    }

    async fn unread_from(&self, to: UserId, from: UserId) -> Result<i64> {
        let (lo, hi) = ThreadKey::Direct { a: to, b: from }.ordered_pair();
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM threads t \
             JOIN thread_participants p ON p.thread_id = t.id AND p.user_id = $1 \
             JOIN messages m ON m.thread_id = t.id AND m.seq > p.last_read_seq AND m.sender_id = $2 \
             WHERE t.user_lo = $3 AND t.user_hi = $4",
        )
        .bind(to.0)
        .bind(from.0)
        .bind(lo.0)
        .bind(hi.0)
        .fetch_one(&self.reader)
        .await?;
        Ok(n)
    }

    async fn unread_by_thread(&self, user: UserId) -> Result<Vec<(ThreadId, i64)>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
            "SELECT t.id, {UNREAD_SUBQUERY} AS n FROM thread_participants p JOIN threads t ON t.id = p.thread_id \
             WHERE p.user_id = $1 AND t.last_seq > p.last_read_seq"
        ))
        .bind(user.0)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().filter(|(_, n)| *n > 0).map(|(t, n)| (ThreadId(t), n)).collect())
    }

    async fn add_refresh_token(&self, token: RefreshToken) -> Result<()> {
        refresh::sqlite::add(&self.writer, BEGIN_WRITE, token).await
    }

    async fn rotate_refresh_token(&self, id: &str, next: RefreshToken) -> Result<Rotation> {
        refresh::sqlite::rotate(&self.writer, BEGIN_WRITE, id, next).await
    }

    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.external_id = $1"))
            .bind(external_id)
            .fetch_optional(&self.reader)
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn upsert_external_user(&self, user: ExternalUser) -> Result<(User, bool)> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        let by_external = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.external_id = $1");
        let existing: Option<UserRow> =
            sqlx::query_as(&by_external).bind(&user.external_id).fetch_optional(&mut *tx).await?;
        let created = existing.is_none();
        if let Some(name) = &user.username {
            let holder: Option<Option<String>> =
                sqlx::query_scalar("SELECT external_id FROM users WHERE username = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if holder.is_some_and(|h| h.as_deref() != Some(user.external_id.as_str())) {
                return Err(StoreError::Conflict("users.username".to_owned()));
            }
        }
        if created {
            let username = user.username.clone().unwrap_or_else(|| user.external_id.clone());
            sqlx::query(
                "INSERT INTO users (username, password_hash, full_name, role, external_id, created_at) \
                 VALUES ($1, '', $2, $3, $4, $5)",
            )
            .bind(username)
            .bind(&user.full_name)
            .bind(user.role.as_str())
            .bind(&user.external_id)
            .bind(Timestamp::now().millis())
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE users SET full_name = $2, role = $3, username = COALESCE($4, username) WHERE external_id = $1",
            )
            .bind(&user.external_id)
            .bind(&user.full_name)
            .bind(user.role.as_str())
            .bind(&user.username)
            .execute(&mut *tx)
            .await?;
        }
        let row: UserRow = sqlx::query_as(&by_external).bind(&user.external_id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok((row.try_into()?, created))
    }

    async fn upsert_external_job(&self, job: ExternalJob) -> Result<(Job, bool)> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        let updated = sqlx::query(
            "UPDATE jobs SET client_id = $2, title = $3, description = $4, status = $5 WHERE external_id = $1",
        )
        .bind(&job.external_id)
        .bind(job.client.0)
        .bind(&job.title)
        .bind(&job.description)
        .bind(job.status.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let created = updated == 0;
        if created {
            sqlx::query(
                "INSERT INTO jobs (client_id, title, description, status, external_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(job.client.0)
            .bind(&job.title)
            .bind(&job.description)
            .bind(job.status.as_str())
            .bind(&job.external_id)
            .bind(Timestamp::now().millis())
            .execute(&mut *tx)
            .await?;
        }
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id WHERE j.external_id = $1");
        let row: JobRow = sqlx::query_as(&sql).bind(&job.external_id).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok((row.try_into()?, created))
    }

    async fn append_system_message(&self, new: NewSystemMessage) -> Result<Appended> {
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        if let Some(key) = &new.client_msg_id {
            let first: Option<MessageRow> = sqlx::query_as(&select_system_by_key())
                .bind(new.thread_id.0)
                .bind(key.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(first) = first {
                return repeated(first.try_into()?, &new.text);
            }
        }
        let seq: Option<i64> = sqlx::query_scalar(BUMP_THREAD).bind(new.thread_id.0).fetch_optional(&mut *tx).await?;
        let Some(seq) = seq else { return Err(StoreError::NotFound("thread")) };
        let record = host_message(new, Seq(seq));
        insert_message(&mut tx, &record).await?;
        if self.events {
            record_events(&mut tx, &[NewEvent::message(record.thread_id, record.seq)]).await?;
        }
        tx.commit().await?;
        Ok(Appended { message: record, duplicate: false })
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Page<StoredEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(&events::select_after())
            .bind(after)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.reader)
            .await?;
        let rows = rows.into_iter().map(StoredEvent::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, limit))
    }

    async fn due_events(&self, now: Timestamp, limit: u32) -> Result<Vec<StoredEvent>> {
        // On a reader: each read starts a WAL snapshot that holds every commit made
        // before it, the last round's delivery records included, and keeps the
        // single writer free for the writes that wait on it.
        let rows: Vec<EventRow> = sqlx::query_as(&events::select_due())
            .bind(now.millis())
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn record_deliveries(&self, outcomes: &[(i64, Delivery)]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let mut tx = self.writer.begin_with(BEGIN_WRITE).await?;
        for (seq, outcome) in outcomes {
            let (sql, at, error) = events::delivery_update(outcome, now);
            sqlx::query(sql).bind(seq).bind(at).bind(error).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn take_event_lease(&self, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool> {
        let taken = sqlx::query(events::TAKE_LEASE)
            .bind(holder)
            .bind(now.millis())
            .bind(until.millis())
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(taken == 1)
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(events::PRUNE).bind(before.millis()).execute(&self.writer).await?.rows_affected())
    }

    async fn event_backlog(&self) -> Result<Backlog> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(events::BACKLOG).fetch_one(&self.reader).await?;
        Ok(Backlog { pending, oldest: oldest.map(events::created_at).transpose()? })
    }
}
