//! The SQL both stores run, written once: every query, its binds and its
//! transaction, generic over a [`Backend`]. A backend brings the few fragments in
//! which the two dialects differ, its pool(s), and the batch write of sent
//! messages, the one path each tunes to its engine (`sqlite.rs`, `postgres.rs`).

use std::collections::HashMap;
use std::future::Future;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Transaction, Type};
use uuid::Uuid;

use super::events::{self, EventRow, INSERT_EVENT, TAKE_EVENT_SEQS, opened_events};
use super::refresh;
use super::rows::{
    CredentialsRow, FREELANCER_COLUMNS, FreelancerRow, INSERT_MESSAGE, JOB_COLUMNS, JobRow, MESSAGE_COLUMNS,
    MOVE_MARKER, MessageRow, ParticipantRow, THREAD_COLUMNS, ThreadRow, USER_COLUMNS, UserRow, select_system_by_key,
};
use super::{
    Appended, Backlog, Delivery, ExternalJob, ExternalUser, InboxFrom, NewEvent, NewJob, NewMessage, NewProposal,
    NewSystemMessage, NewUser, OpenThread, Opened, ReadMarker, RefreshToken, Result, Rotation, Store, StoreError,
    StoreOptions, StoredEvent, ThreadKey, host_message, repeated,
};
use crate::domain::{
    Cursor, Freelancer, Job, JobId, MessageRecord, Page, PageRequest, Participant, Profile, Proposal, Seq,
    SystemMessage, ThreadId, ThreadKind, ThreadRecord, Timestamp, User, UserId,
};

/// What a database engine brings to [`SqlStore`]: where the dialects differ, how
/// its connections are pooled, and how it writes a batch of sent messages.
pub trait Backend: Send + Sync + 'static {
    type Db: Database;

    /// Opens a write transaction.
    const BEGIN: &'static str;
    /// The next value of the inbox order: unique and increasing across all threads.
    const NEXT_ACTIVITY: &'static str;
    /// Equality under which two NULLs are equal.
    const NULL_SAFE_EQ: &'static str;

    /// The connections writes go through.
    fn writer(&self) -> &Pool<Self::Db>;
    /// The connections reads go through (the writer's on an engine without
    /// separate readers).
    fn reader(&self) -> &Pool<Self::Db>;
    /// How many rows a statement wrote.
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;
    /// The participants of `threads`, by thread ([`participants_sql`] with a test
    /// that `p.thread_id` is one of them): the one query whose SQL differs by how
    /// a list is bound.
    fn participants_of(&self, threads: &[Uuid])
    -> impl Future<Output = Result<HashMap<Uuid, Vec<Participant>>>> + Send;
    /// Stores a batch of sent messages as [`Store::append_messages`] says, with a
    /// `message.created` event for each new one when `events` is set.
    fn append_batch(&self, batch: Vec<NewMessage>, events: bool) -> impl Future<Output = BatchResult> + Send;
    /// See [`Store::release_memory`].
    fn release_memory(&self) -> impl Future<Output = Result<()>> + Send;
    /// See [`Store::queues_batches`].
    const QUEUES_BATCHES: bool;
}

/// The answer to a batch: the outer error means nothing was stored.
pub type BatchResult = Result<Vec<Result<Appended>>>;

/// The one SQL implementation of [`Store`]; `SqliteStore` and `PostgresStore` name
/// it over their backends.
#[derive(Debug, Clone)]
pub struct SqlStore<B> {
    pub(super) backend: B,
    /// Whether writes record webhook events.
    pub(super) events: bool,
}

impl<B> SqlStore<B> {
    pub(super) fn new(backend: B) -> Self {
        Self { backend, events: false }
    }

    /// The store with `options` in force.
    #[must_use]
    pub fn with_options(mut self, options: StoreOptions) -> Self {
        self.events = options.events;
        self
    }
}

/// Takes a thread's next seq and moves it to the top of its participants' inboxes.
/// The row lock it takes (SQLite: the write lock) serializes the thread's seqs.
pub(super) fn bump_thread<B: Backend>() -> String {
    format!(
        "UPDATE threads SET last_seq = last_seq + 1, activity = {} WHERE id = $1 RETURNING last_seq",
        B::NEXT_ACTIVITY
    )
}

/// The message a sender already stored in a thread under a key.
pub(super) fn select_by_key() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.sender_id = $1 AND m.thread_id = $2 AND m.client_msg_id = $3"
    )
}

/// The participants of some threads; a backend adds the test of `p.thread_id`.
pub(super) fn participants_sql(one_of: &str) -> String {
    format!(
        "SELECT p.thread_id, {USER_COLUMNS}, p.last_read_seq FROM thread_participants p \
         JOIN users u ON u.id = p.user_id WHERE p.thread_id {one_of} ORDER BY p.thread_id, u.id"
    )
}

/// The unread count of `$viewer` in thread `t`, for a participant row `p` of theirs.
const UNREAD_SUBQUERY: &str = "(SELECT COUNT(*) FROM messages x WHERE x.thread_id = t.id \
     AND x.seq > p.last_read_seq AND (x.actor_id IS NULL OR x.actor_id <> p.user_id))";

/// A user's read marker in a thread and the thread's last seq.
const READ_POSITION: &str = "SELECT p.last_read_seq, t.last_seq FROM thread_participants p \
     JOIN threads t ON t.id = p.thread_id WHERE p.thread_id = $1 AND p.user_id = $2";

/// Where an external user or job goes when its id is new: nothing when another
/// writer inserted it first (the caller then updates that row).
const ON_NEW_EXTERNAL_ID: &str = "ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO NOTHING RETURNING id";

type Row<B> = <<B as Backend>::Db as Database>::Row;

/// An external user's write can break only the username's uniqueness (a conflict
/// on the external id inserts nothing): another node took the name meanwhile.
fn username_conflict(e: sqlx::Error) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict("users.username".to_owned()),
        other => other,
    }
}

// The bounds say what the shared code asks of a database. sqlx states them per
// type and Rust does not carry a where clause from one impl to another, so the
// same list stands here and on the `Store` impl below: a deliberate repeat (the
// alternative, a macro stamping the whole store out per database, hides the code
// from rustfmt and the reader). The row types named in them are the store's
// own, which is why the bounds are more private than the (public) store.
#[expect(private_bounds, reason = "the row types are private to the store")]
impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db>,
    usize: ColumnIndex<Row<B>>,
    for<'r> UserRow: FromRow<'r, Row<B>>,
    for<'r> CredentialsRow: FromRow<'r, Row<B>>,
    for<'r> FreelancerRow: FromRow<'r, Row<B>>,
    for<'r> JobRow: FromRow<'r, Row<B>>,
    for<'r> MessageRow: FromRow<'r, Row<B>>,
    for<'r> ParticipantRow: FromRow<'r, Row<B>>,
    for<'r> ThreadRow: FromRow<'r, Row<B>>,
    for<'r> EventRow: FromRow<'r, Row<B>>,
{
    async fn begin(&self) -> Result<Transaction<'static, B::Db>> {
        Ok(self.backend.writer().begin_with(B::BEGIN).await?)
    }

    /// Inserts a system message as the thread's next seq inside `tx`.
    async fn insert_system_message(
        tx: &mut Transaction<'_, B::Db>,
        thread: ThreadId,
        message: SystemMessage,
        now: Timestamp,
    ) -> Result<MessageRecord> {
        let seq: i64 = sqlx::query_scalar(&bump_thread::<B>()).bind(thread.0).fetch_one(&mut **tx).await?;
        let record = MessageRecord::system(thread, Seq(seq), message, now);
        Self::insert_message(tx, &record).await?;
        Ok(record)
    }

    async fn insert_message(tx: &mut Transaction<'_, B::Db>, m: &MessageRecord) -> Result<()> {
        sqlx::query(INSERT_MESSAGE)
            .bind(m.id.0)
            .bind(m.thread_id.0)
            .bind(m.seq.0)
            .bind(m.kind.as_str())
            .bind(m.sender_id.map(|u| u.0))
            .bind(m.actor_id.map(|u| u.0))
            .bind(m.text.as_str())
            .bind(m.metadata.to_string())
            .bind(m.client_msg_id.as_deref())
            .bind(m.created_at.millis())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Records a few events inside `tx`, with the next seqs (the counter is taken
    /// last, so its lock is held only to the commit). A batch of messages records
    /// its events in the backend's batch write instead.
    async fn record_events(&self, tx: &mut Transaction<'_, B::Db>, events: &[NewEvent]) -> Result<()> {
        if !self.events || events.is_empty() {
            return Ok(());
        }
        let n = events::seq_count(events)?;
        let last: i64 = sqlx::query_scalar(TAKE_EVENT_SEQS).bind(n).fetch_one(&mut **tx).await?;
        let now = Timestamp::now().millis();
        for (seq, e) in (last - n + 1..).zip(events) {
            sqlx::query(INSERT_EVENT)
                .bind(seq)
                .bind(Uuid::new_v4())
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

    /// Find-or-create inside an open transaction, so a proposal can share it.
    async fn open_thread_in(tx: &mut Transaction<'_, B::Db>, open: OpenThread) -> Result<Opened> {
        let (lo, hi) = open.key.ordered_pair();
        let (kind, job) = match open.key {
            ThreadKey::Direct { .. } => (ThreadKind::Direct, None),
            ThreadKey::Job { job, .. } => (ThreadKind::Job, Some(job.0)),
        };
        let now = Timestamp::now();
        let id = ThreadId::generate();
        let insert = format!(
            "INSERT INTO threads (id, kind, job_id, user_lo, user_hi, last_seq, created_at, activity) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, {}) ON CONFLICT DO NOTHING",
            B::NEXT_ACTIVITY
        );
        let inserted = sqlx::query(&insert)
            .bind(id.0)
            .bind(kind.as_str())
            .bind(job)
            .bind(lo.0)
            .bind(hi.0)
            .bind(now.millis())
            .execute(&mut **tx)
            .await?;
        if B::rows_affected(&inserted) == 0 {
            let existing = format!(
                "SELECT id FROM threads WHERE kind = $1 AND user_lo = $2 AND user_hi = $3 AND job_id {} $4",
                B::NULL_SAFE_EQ
            );
            let existing: Uuid = sqlx::query_scalar(&existing)
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
            Some(m) => Some(Self::insert_system_message(tx, id, m, now).await?),
            None => None,
        };
        Ok(Opened { thread_id: id, created: true, first_message })
    }

    /// Moves a read marker forward to `target`; `None` when it stood there or past it.
    async fn move_marker<'e>(
        on: impl Executor<'e, Database = B::Db>,
        id: ThreadId,
        user: UserId,
        target: i64,
    ) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(MOVE_MARKER).bind(id.0).bind(user.0).bind(target).fetch_optional(on).await?)
    }

    /// `user`'s read marker in a thread and the thread's last seq, read from
    /// `pool`; `None` when `user` is not in it.
    async fn read_position(pool: &Pool<B::Db>, id: ThreadId, user: UserId) -> Result<Option<(i64, i64)>> {
        Ok(sqlx::query_as(READ_POSITION).bind(id.0).bind(user.0).fetch_optional(pool).await?)
    }

    async fn participants_of(&self, threads: &[Uuid]) -> Result<HashMap<Uuid, Vec<Participant>>> {
        if threads.is_empty() {
            return Ok(HashMap::new());
        }
        self.backend.participants_of(threads).await
    }

    /// Thread rows with their participants, in the rows' order.
    async fn with_participants(&self, rows: Vec<ThreadRow>) -> Result<Vec<ThreadRecord>> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut participants = self.participants_of(&ids).await?;
        rows.into_iter()
            .map(|r| {
                let p = participants.remove(&r.id).unwrap_or_default();
                r.into_record(p)
            })
            .collect()
    }

    async fn job_where(&self, pool: &Pool<B::Db>, condition: &str, value: i64) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id WHERE {condition}");
        sqlx::query_as::<_, JobRow>(&sql).bind(value).fetch_optional(pool).await?.map(Job::try_from).transpose()
    }

    async fn user_where(&self, condition: &str, value: &str) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users u WHERE {condition}"))
            .bind(value)
            .fetch_optional(self.backend.reader())
            .await?
            .map(User::try_from)
            .transpose()
    }

    /// Updates the host's user by external id inside `tx`, answering their id when
    /// they exist.
    async fn update_external_user(tx: &mut Transaction<'_, B::Db>, user: &ExternalUser) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "UPDATE users SET full_name = $2, role = $3, username = COALESCE($4, username) \
             WHERE external_id = $1 RETURNING id",
        )
        .bind(user.external_id.as_str())
        .bind(user.full_name.as_str())
        .bind(user.role.as_str())
        .bind(user.username.as_deref())
        .fetch_optional(&mut **tx)
        .await
        .map_err(username_conflict)
    }

    async fn update_external_job(tx: &mut Transaction<'_, B::Db>, job: &ExternalJob) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "UPDATE jobs SET client_id = $2, title = $3, description = $4, status = $5 \
             WHERE external_id = $1 RETURNING id",
        )
        .bind(job.external_id.as_str())
        .bind(job.client.0)
        .bind(job.title.as_str())
        .bind(job.description.as_str())
        .bind(job.status.as_str())
        .fetch_optional(&mut **tx)
        .await?)
    }

    async fn insert_refresh_token(tx: &mut Transaction<'_, B::Db>, token: &RefreshToken) -> Result<()> {
        sqlx::query(refresh::INSERT)
            .bind(token.id.as_str())
            .bind(token.family.as_str())
            .bind(token.user.0)
            .bind(token.expires_at.millis())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn user_on(pool: &Pool<B::Db>, id: i64) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?
            .map(User::try_from)
            .transpose()
    }

    /// A user just written, through the writer (it sees its own commit); one that
    /// is not there is a fault, not a `NotFound` for the client.
    async fn written_user(&self, id: i64) -> Result<User> {
        Self::user_on(self.backend.writer(), id)
            .await?
            .ok_or_else(|| StoreError::Other(format!("user {id} vanished after its write").into()))
    }

    async fn written_job(&self, id: i64) -> Result<Job> {
        self.job_where(self.backend.writer(), "j.id = $1", id)
            .await?
            .ok_or_else(|| StoreError::Other(format!("job {id} vanished after its write").into()))
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> Uuid: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db>,
    usize: ColumnIndex<Row<B>>,
    for<'r> UserRow: FromRow<'r, Row<B>>,
    for<'r> CredentialsRow: FromRow<'r, Row<B>>,
    for<'r> FreelancerRow: FromRow<'r, Row<B>>,
    for<'r> JobRow: FromRow<'r, Row<B>>,
    for<'r> MessageRow: FromRow<'r, Row<B>>,
    for<'r> ParticipantRow: FromRow<'r, Row<B>>,
    for<'r> ThreadRow: FromRow<'r, Row<B>>,
    for<'r> EventRow: FromRow<'r, Row<B>>,
{
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.backend.reader()).await?;
        Ok(())
    }

    async fn release_memory(&self) -> Result<()> {
        self.backend.release_memory().await
    }

    fn queues_batches(&self) -> bool {
        B::QUEUES_BATCHES
    }

    async fn create_user(&self, new: NewUser) -> Result<User> {
        let skills = serde_json::to_string(&new.profile.skills).map_err(|e| StoreError::Other(Box::new(e)))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, full_name, role, headline, skills, hourly_rate_cents, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(new.username.as_str())
        .bind(new.password_hash.as_str())
        .bind(new.full_name.as_str())
        .bind(new.role.as_str())
        .bind(new.profile.headline.as_str())
        .bind(skills)
        .bind(new.profile.hourly_rate.map(|m| m.cents()))
        .bind(Timestamp::now().millis())
        .fetch_one(self.backend.writer())
        .await?;
        Ok(User { id: UserId(id), username: new.username, full_name: new.full_name, role: new.role, external_id: None })
    }

    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        sqlx::query_as::<_, CredentialsRow>(&format!(
            "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = $1"
        ))
        .bind(username)
        .fetch_optional(self.backend.reader())
        .await?
        .map(CredentialsRow::into_parts)
        .transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        Self::user_on(self.backend.reader(), id.0).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        self.user_where("u.username = $1", username).await
    }

    async fn set_profile(&self, id: UserId, profile: &Profile) -> Result<()> {
        let skills = serde_json::to_string(&profile.skills).map_err(|e| StoreError::Other(Box::new(e)))?;
        let updated = sqlx::query("UPDATE users SET headline = $1, skills = $2, hourly_rate_cents = $3 WHERE id = $4")
            .bind(profile.headline.as_str())
            .bind(skills)
            .bind(profile.hourly_rate.map(|m| m.cents()))
            .bind(id.0)
            .execute(self.backend.writer())
            .await?;
        if B::rows_affected(&updated) == 0 { Err(StoreError::NotFound("user")) } else { Ok(()) }
    }

    async fn freelancers(&self, page: PageRequest) -> Result<Page<Freelancer>> {
        let rows: Vec<FreelancerRow> = sqlx::query_as(&format!(
            "SELECT {FREELANCER_COLUMNS} FROM users u WHERE u.role = 'freelancer' ORDER BY u.id LIMIT $1 OFFSET $2"
        ))
        .bind(i64::from(page.limit) + 1)
        .bind(page.offset as i64)
        .fetch_all(self.backend.reader())
        .await?;
        let rows = rows.into_iter().map(Freelancer::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit))
    }

    async fn freelancer(&self, id: UserId) -> Result<Option<Freelancer>> {
        sqlx::query_as::<_, FreelancerRow>(&format!(
            "SELECT {FREELANCER_COLUMNS} FROM users u WHERE u.id = $1 AND u.role = 'freelancer'"
        ))
        .bind(id.0)
        .fetch_optional(self.backend.reader())
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
        .bind(new.title.as_str())
        .bind(new.description.as_str())
        .bind(Timestamp::now().millis())
        .fetch_one(self.backend.writer())
        .await?;
        self.written_job(id).await
    }

    async fn jobs(&self, page: PageRequest) -> Result<Page<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id ORDER BY j.id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(i64::from(page.limit) + 1)
        .bind(page.offset as i64)
        .fetch_all(self.backend.reader())
        .await?;
        let rows = rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit))
    }

    async fn job(&self, id: JobId) -> Result<Option<Job>> {
        self.job_where(self.backend.reader(), "j.id = $1", id.0).await
    }

    async fn open_thread(&self, open: OpenThread) -> Result<Opened> {
        let mut tx = self.begin().await?;
        let opened = Self::open_thread_in(&mut tx, open).await?;
        self.record_events(&mut tx, &opened_events(&opened)).await?;
        tx.commit().await?;
        Ok(opened)
    }

    async fn submit_proposal(&self, new: NewProposal, thread: OpenThread) -> Result<(Proposal, Opened)> {
        let mut tx = self.begin().await?;
        let opened = Self::open_thread_in(&mut tx, thread).await?;
        let now = Timestamp::now();
        // A unique violation here drops `tx`, which rolls the thread back too.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO proposals (job_id, freelancer_id, cover_letter, bid_amount_cents, thread_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(new.job.0)
        .bind(new.freelancer.id.0)
        .bind(new.cover_letter.as_str())
        .bind(new.bid_amount.cents())
        .bind(opened.thread_id.0)
        .bind(now.millis())
        .fetch_one(&mut *tx)
        .await?;
        self.record_events(&mut tx, &opened_events(&opened)).await?;
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

    async fn append_messages(&self, batch: Vec<NewMessage>) -> BatchResult {
        self.backend.append_batch(batch, self.events).await
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
        .fetch_optional(self.backend.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(self.with_participants(vec![row]).await?.pop())
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
        let rows: Vec<ThreadRow> = query.fetch_all(self.backend.reader()).await?;
        Ok(Page::from_overfetch(self.with_participants(rows).await?, limit))
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
            .fetch_all(self.backend.reader())
            .await?;
        let records = rows.into_iter().map(MessageRecord::try_from).collect::<Result<Vec<_>>>()?;
        let mut page = Page::from_overfetch(records, limit);
        if from_top {
            page.results.reverse();
        }
        Ok(page)
    }

    async fn mark_read(&self, id: ThreadId, user: UserId, up_to: Option<Seq>) -> Result<ReadMarker> {
        // Where the marker stands is read on a reader, so a read receipt that moves
        // nothing never queues behind (or holds) a writer.
        let Some((current, last)) = Self::read_position(self.backend.reader(), id, user).await? else {
            return Err(StoreError::NotFound("thread"));
        };
        let target = up_to.map_or(last, |s| s.0.min(last));
        let mut marker = (current, false);
        if target > current {
            // One statement, or one short transaction when the move records an
            // event with it: a read receipt is otherwise one statement.
            let moved = if self.events {
                let mut tx = self.begin().await?;
                let moved = Self::move_marker(&mut *tx, id, user, target).await?;
                if let Some(m) = moved {
                    self.record_events(&mut tx, &[NewEvent::read(id, user, Seq(m))]).await?;
                }
                tx.commit().await?;
                moved
            } else {
                Self::move_marker(self.backend.writer(), id, user, target).await?
            };
            marker = match moved {
                Some(m) => (m, true),
                // Another read moved it further meanwhile.
                None => {
                    let now = Self::read_position(self.backend.writer(), id, user).await?;
                    (now.map_or(target, |(m, _)| m), false)
                }
            };
        }
        let unread: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE thread_id = $1 AND seq > $2 AND (actor_id IS NULL OR actor_id <> $3)",
        )
        .bind(id.0)
        .bind(marker.0)
        .bind(user.0)
        .fetch_one(self.backend.reader())
        .await?;
        Ok(ReadMarker { up_to_seq: Seq(marker.0), unread_count: unread, moved: marker.1 })
    }

    async fn thread_heads(&self, user: UserId) -> Result<Vec<(ThreadId, Seq)>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT t.id, t.last_seq FROM thread_participants p JOIN threads t ON t.id = p.thread_id WHERE p.user_id = $1",
        )
        .bind(user.0)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows.into_iter().map(|(t, s)| (ThreadId(t), Seq(s))).collect())
    }

    async fn direct_thread(&self, a: UserId, b: UserId) -> Result<Option<ThreadId>> {
        let (lo, hi) = ThreadKey::Direct { a, b }.ordered_pair();
        let id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM threads WHERE kind = 'direct' AND user_lo = $1 AND user_hi = $2")
                .bind(lo.0)
                .bind(hi.0)
                .fetch_optional(self.backend.reader())
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
        .fetch_one(self.backend.reader())
        .await?;
        Ok(n)
    }

    async fn unread_by_thread(&self, user: UserId) -> Result<Vec<(ThreadId, i64)>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
            "SELECT t.id, {UNREAD_SUBQUERY} AS n FROM thread_participants p JOIN threads t ON t.id = p.thread_id \
             WHERE p.user_id = $1 AND t.last_seq > p.last_read_seq"
        ))
        .bind(user.0)
        .fetch_all(self.backend.reader())
        .await?;
        Ok(rows.into_iter().filter(|(_, n)| *n > 0).map(|(t, n)| (ThreadId(t), n)).collect())
    }

    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<User>> {
        self.user_where("u.external_id = $1", external_id).await
    }

    async fn upsert_external_user(&self, user: ExternalUser) -> Result<(User, bool)> {
        let mut tx = self.begin().await?;
        if let Some(name) = &user.username {
            let holder: Option<Option<String>> =
                sqlx::query_scalar("SELECT external_id FROM users WHERE username = $1")
                    .bind(name.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if holder.is_some_and(|h| h.as_deref() != Some(user.external_id.as_str())) {
                return Err(StoreError::Conflict("users.username".to_owned()));
            }
        }
        // Update, else insert; an insert that meets a row another node inserted
        // meanwhile (PostgreSQL) inserts nothing, and the update then finds it. Up
        // to five statements where PostgreSQL alone could use one upsert (telling
        // an insert by `xmax = 0`), so that both engines run the same SQL: this is
        // the server API, not the message path.
        let mut created = false;
        let mut id = Self::update_external_user(&mut tx, &user).await?;
        if id.is_none() {
            let username = user.username.as_deref().unwrap_or(&user.external_id);
            id = sqlx::query_scalar(&format!(
                "INSERT INTO users (username, password_hash, full_name, role, external_id, created_at) \
                 VALUES ($1, '', $2, $3, $4, $5) {ON_NEW_EXTERNAL_ID}"
            ))
            .bind(username)
            .bind(user.full_name.as_str())
            .bind(user.role.as_str())
            .bind(user.external_id.as_str())
            .bind(Timestamp::now().millis())
            .fetch_optional(&mut *tx)
            .await
            .map_err(username_conflict)?;
            created = id.is_some();
        }
        if id.is_none() {
            id = Self::update_external_user(&mut tx, &user).await?;
        }
        let id = id.ok_or_else(|| StoreError::Other("an external user was neither updated nor inserted".into()))?;
        tx.commit().await?;
        Ok((self.written_user(id).await?, created))
    }

    async fn upsert_external_job(&self, job: ExternalJob) -> Result<(Job, bool)> {
        let mut tx = self.begin().await?;
        let mut created = false;
        let mut id = Self::update_external_job(&mut tx, &job).await?;
        if id.is_none() {
            id = sqlx::query_scalar(&format!(
                "INSERT INTO jobs (client_id, title, description, status, external_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) {ON_NEW_EXTERNAL_ID}"
            ))
            .bind(job.client.0)
            .bind(job.title.as_str())
            .bind(job.description.as_str())
            .bind(job.status.as_str())
            .bind(job.external_id.as_str())
            .bind(Timestamp::now().millis())
            .fetch_optional(&mut *tx)
            .await?;
            created = id.is_some();
        }
        if id.is_none() {
            id = Self::update_external_job(&mut tx, &job).await?;
        }
        let id = id.ok_or_else(|| StoreError::Other("an external job was neither updated nor inserted".into()))?;
        tx.commit().await?;
        Ok((self.written_job(id).await?, created))
    }

    async fn append_system_message(&self, new: NewSystemMessage) -> Result<Appended> {
        // Two nodes storing one key at once: the loser's insert hits the unique
        // index, nothing of it is kept, and the second try finds the winner's.
        for attempt in 1..=2 {
            let mut tx = self.begin().await?;
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
            let seq: Option<i64> =
                sqlx::query_scalar(&bump_thread::<B>()).bind(new.thread_id.0).fetch_optional(&mut *tx).await?;
            let Some(seq) = seq else { return Err(StoreError::NotFound("thread")) };
            let record = host_message(new.clone(), Seq(seq));
            match Self::insert_message(&mut tx, &record).await {
                Err(StoreError::Conflict(_)) if attempt == 1 => continue,
                other => other?,
            }
            self.record_events(&mut tx, &[NewEvent::message(record.thread_id, record.seq)]).await?;
            tx.commit().await?;
            return Ok(Appended { message: record, duplicate: false });
        }
        Err(StoreError::Other("a system message's key kept conflicting".into()))
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Page<StoredEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(&events::select_after())
            .bind(after)
            .bind(i64::from(limit) + 1)
            .fetch_all(self.backend.reader())
            .await?;
        let rows = rows.into_iter().map(StoredEvent::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, limit))
    }

    async fn due_events(&self, now: Timestamp, limit: u32) -> Result<Vec<StoredEvent>> {
        // On a reader: on SQLite each read starts a WAL snapshot that holds every
        // commit made before it, the last round's delivery records included, and
        // keeps the single writer free for the writes that wait on it.
        let rows: Vec<EventRow> = sqlx::query_as(&events::select_due())
            .bind(now.millis())
            .bind(i64::from(limit))
            .fetch_all(self.backend.reader())
            .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn record_deliveries(&self, outcomes: &[(i64, Delivery)]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let mut tx = self.begin().await?;
        for (seq, outcome) in outcomes {
            let (sql, at, error) = events::delivery_update(outcome, now);
            sqlx::query(sql).bind(*seq).bind(at).bind(error).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn take_event_lease(&self, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool> {
        let taken = sqlx::query(events::TAKE_LEASE)
            .bind(holder)
            .bind(now.millis())
            .bind(until.millis())
            .execute(self.backend.writer())
            .await?;
        Ok(B::rows_affected(&taken) == 1)
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64> {
        let pruned = sqlx::query(events::PRUNE).bind(before.millis()).execute(self.backend.writer()).await?;
        Ok(B::rows_affected(&pruned))
    }

    async fn event_backlog(&self) -> Result<Backlog> {
        let (pending, oldest): (i64, Option<i64>) =
            sqlx::query_as(events::BACKLOG).fetch_one(self.backend.reader()).await?;
        Ok(Backlog { pending, oldest: oldest.map(events::created_at).transpose()? })
    }

    async fn add_refresh_token(&self, token: RefreshToken) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(refresh::FORGET_EXPIRED).bind(Timestamp::now().millis()).execute(&mut *tx).await?;
        Self::insert_refresh_token(&mut tx, &token).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rotate_refresh_token(&self, id: &str, next: RefreshToken) -> Result<Rotation> {
        let mut tx = self.begin().await?;
        let live: Option<(String, i64)> =
            sqlx::query_as(refresh::SPEND).bind(id).bind(Timestamp::now().millis()).fetch_optional(&mut *tx).await?;
        let rotation = match live {
            Some((family, user)) if family == next.family && user == next.user.0 => {
                Self::insert_refresh_token(&mut tx, &next).await?;
                Rotation::Rotated
            }
            // Signed by us but not of this family: nothing to rotate (and the
            // transaction, with its spend, is dropped).
            Some(_) => return Ok(Rotation::Unknown),
            None => {
                let family: Option<String> =
                    sqlx::query_scalar(refresh::FAMILY_OF).bind(id).fetch_optional(&mut *tx).await?;
                let Some(family) = family else { return Ok(Rotation::Unknown) };
                sqlx::query(refresh::SPEND_FAMILY).bind(family).execute(&mut *tx).await?;
                Rotation::Reused
            }
        };
        tx.commit().await?;
        Ok(rotation)
    }
}
