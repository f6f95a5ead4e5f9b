//! Durable state behind one trait of atomic domain operations, implemented once in
//! SQL (`sql.rs`) over two backends, SQLite and PostgreSQL, each with its own
//! migrations. `tests/store/conformance.rs` holds the behaviours both must pass.
//! Knows nothing of HTTP.

mod events;
mod postgres;
mod refresh;
mod rows;
mod sql;
mod sqlite;
mod sqlite_checkpoint;
mod sqlite_vfs;
mod sqlite_wal_hook;
mod sqlite_writer;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::redact_url;
use crate::domain::{
    ClientMsgId, Cursor, Freelancer, InboxCursor, Job, JobId, JobStatus, MessageId, MessageKind, MessageRecord, Money,
    Page, PageRequest, Participant, Profile, Proposal, Role, Seq, SystemMessage, ThreadId, ThreadRecord, Timestamp,
    User, UserId,
};

pub use events::{Backlog, Delivery, EventKind, NewEvent, StoredEvent};
pub use postgres::{PostgresBackend, PostgresStore};
pub use sql::{Backend, BatchResult, SqlStore};
pub use sqlite::{SqliteBackend, SqliteStore};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write (a taken username, a second proposal).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row the operation needs does not exist.
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A `client_msg_id` already names another message of this sender in this
    /// thread (one with another text): the new one is refused, nothing is written.
    #[error("the client_msg_id was already used for another message")]
    KeyReused,
    /// The database could not be reached or is overloaded; worth retrying later.
    #[error("database unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything else: a bug or a corrupt row.
    #[error("database error")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Self::Unavailable(Box::new(e)),
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                Self::Conflict(db.constraint().unwrap_or("unique").to_owned())
            }
            sqlx::Error::Database(ref db) if is_unavailable(db.as_ref()) => Self::Unavailable(Box::new(e)),
            other => Self::Other(Box::new(other)),
        }
    }
}

/// A database that is down, full, read-only or overloaded: the write may work
/// later, so the client is told `unavailable` (send again), not `internal`.
fn is_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
    let code = db.code().unwrap_or_default();
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // The primary result code is the low byte: BUSY 5, LOCKED 6, NOMEM 7,
        // READONLY 8, IOERR 10, FULL 13, CANTOPEN 14 (the same list as the writer's).
        code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5..=8 | 10 | 13 | 14))
    } else {
        // SQLSTATE classes: 08 connection exception, 53 insufficient resources
        // (disk full, out of memory, too many connections), 57P operator intervention.
        code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A new account; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub full_name: String,
    pub role: Role,
    pub profile: Profile,
}

/// A user the host marketplace owns, as its token or its server API names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUser {
    pub external_id: String,
    /// Set on creation, and changed on update when given.
    pub username: Option<String>,
    pub full_name: String,
    pub role: Role,
}

/// A job the host marketplace owns, by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalJob {
    pub external_id: String,
    pub client: UserId,
    pub title: String,
    pub description: String,
    pub status: JobStatus,
}

/// A system message the host posts into a thread (no sender, no actor: unread for
/// everyone in it), idempotent by its key within the thread.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSystemMessage {
    pub thread_id: ThreadId,
    pub text: String,
    pub metadata: serde_json::Value,
    pub client_msg_id: Option<ClientMsgId>,
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Record webhook events in the outbox (only when webhooks are configured: it
    /// costs a row per message).
    pub events: bool,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub client: UserId,
    pub title: String,
    pub description: String,
}

/// What makes a two-person thread unique: the unordered pair, plus the job for a
/// job thread. The store enforces it with a unique index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKey {
    Direct { a: UserId, b: UserId },
    Job { job: JobId, a: UserId, b: UserId },
}

impl ThreadKey {
    /// The pair with the lower id first, as the unique index stores it.
    pub fn ordered_pair(&self) -> (UserId, UserId) {
        let (Self::Direct { a, b } | Self::Job { a, b, .. }) = *self;
        if a <= b { (a, b) } else { (b, a) }
    }
}

/// Find-or-create of a two-person thread; `first_message` is written only when the
/// thread is created, in the same transaction.
#[derive(Debug, Clone)]
pub struct OpenThread {
    pub key: ThreadKey,
    pub first_message: Option<SystemMessage>,
}

/// The outcome of [`Store::open_thread`].
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub thread_id: ThreadId,
    pub created: bool,
    pub first_message: Option<MessageRecord>,
}

#[derive(Debug, Clone)]
pub struct NewProposal {
    pub job: JobId,
    pub freelancer: User,
    pub cover_letter: String,
    pub bid_amount: Money,
}

/// A message to append; the store assigns its id, seq and timestamp.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub thread_id: ThreadId,
    pub sender: UserId,
    pub text: String,
    pub client_msg_id: Option<ClientMsgId>,
}

/// The outcome of an append: `duplicate` when the (sender, thread, `client_msg_id`)
/// was already stored with the same text, in which case `message` is the first one.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub message: MessageRecord,
    pub duplicate: bool,
}

/// The answer to a key that is already stored: the first message when the text is
/// the same (a retry), a [`StoreError::KeyReused`] when it is not (another message
/// under an old key must never be acknowledged as the first one).
fn repeated(first: MessageRecord, text: &str) -> Result<Appended> {
    if first.text == text { Ok(Appended { message: first, duplicate: true }) } else { Err(StoreError::KeyReused) }
}

/// A host's system message: no sender and no actor, so it is unread for everyone.
fn host_message(new: NewSystemMessage, seq: Seq) -> MessageRecord {
    MessageRecord {
        id: MessageId::generate(),
        thread_id: new.thread_id,
        seq,
        kind: MessageKind::System,
        sender_id: None,
        actor_id: None,
        text: new.text,
        metadata: new.metadata,
        client_msg_id: new.client_msg_id.map(ClientMsgId::into_inner),
        created_at: Timestamp::now(),
    }
}

/// Where a page of the inbox starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxFrom {
    /// The most recently active thread.
    Start,
    /// Legacy offset paging: skips this many threads (may repeat or skip threads
    /// whose activity moves during a walk).
    Offset(u64),
    /// The threads after this one in activity order (keyset paging).
    After(InboxCursor),
}

/// The outcome of [`Store::mark_read`]; `moved` is false when the marker already
/// stood there (nothing was written, and nobody needs telling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMarker {
    pub up_to_seq: Seq,
    pub unread_count: i64,
    pub moved: bool,
}

/// A refresh token to remember: its `jti`, the sign-in (family) it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: String,
    pub family: String,
    pub user: UserId,
    pub expires_at: Timestamp,
}

/// The outcome of [`Store::rotate_refresh_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live: it is spent now and the next one is recorded.
    Rotated,
    /// The token was spent already (or expired): it was copied, so its whole family
    /// is spent now; nothing new is recorded.
    Reused,
    /// No such token (never issued here, or long expired).
    Unknown,
}

/// Every durable operation Confab needs, each atomic on its own.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database does (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Frees what the store holds in this process (page caches, idle connections),
    /// once a burst of load is over, so the node's memory goes back to its idle
    /// level. Nothing is lost: what was cached is read again when needed. A store
    /// that caches nothing of note in the process (PostgreSQL's caches are the
    /// server's) keeps this default.
    async fn release_memory(&self) -> Result<()> {
        Ok(())
    }

    /// Whether a batch handed to [`Store::append_messages`] while another is being
    /// stored waits behind it and is stored after it, in the order handed over (one
    /// writer with a queue). The committer then hands over the next batch early, so
    /// the writer never waits for it. A store that may run two batches at once (a
    /// pool of connections) keeps the default.
    fn queues_batches(&self) -> bool {
        false
    }

    /// # Errors
    /// `Conflict` when the username is taken.
    async fn create_user(&self, new: NewUser) -> Result<User>;
    /// The user and their password hash, for sign-in.
    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>>;
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    /// # Errors
    /// `NotFound` for an unknown user.
    async fn set_profile(&self, id: UserId, profile: &Profile) -> Result<()>;
    async fn freelancers(&self, page: PageRequest) -> Result<Page<Freelancer>>;
    async fn freelancer(&self, id: UserId) -> Result<Option<Freelancer>>;

    async fn create_job(&self, new: NewJob) -> Result<Job>;
    async fn jobs(&self, page: PageRequest) -> Result<Page<Job>>;
    async fn job(&self, id: JobId) -> Result<Option<Job>>;

    /// Finds or creates the thread of `open.key`. Exactly once under any concurrency:
    /// insert-if-absent on a unique index, the first message in the same transaction.
    async fn open_thread(&self, open: OpenThread) -> Result<Opened>;
    /// Stores a proposal and finds or creates its job thread in one transaction.
    ///
    /// # Errors
    /// `Conflict` when this freelancer already proposed on this job; nothing is written.
    async fn submit_proposal(&self, new: NewProposal, thread: OpenThread) -> Result<(Proposal, Opened)>;
    /// Appends a message with the thread's next seq, or returns the first message with
    /// the same (sender, thread, `client_msg_id`) when its text is the same.
    ///
    /// # Errors
    /// `NotFound` for an unknown thread; `KeyReused` for a key already stored in this
    /// thread with another text.
    async fn append_message(&self, new: NewMessage) -> Result<Appended> {
        let mut results = self.append_messages(vec![new]).await?;
        results.pop().unwrap_or(Err(StoreError::Other("an empty batch answer".into())))
    }
    /// Appends many messages in one transaction (group commit), each exactly as
    /// [`Store::append_message`] would: the answers are in the order of `batch`, and
    /// one message's refusal (an unknown thread) does not affect the others. An
    /// outer `Err` means nothing was stored.
    async fn append_messages(&self, batch: Vec<NewMessage>) -> Result<Vec<Result<Appended>>>;

    /// The thread as `viewer` sees it; `None` when it does not exist or `viewer` is not in it.
    async fn thread(&self, id: ThreadId, viewer: UserId) -> Result<Option<ThreadRecord>>;
    /// The participants of a thread with their read markers (empty for an unknown
    /// thread): cheap, no unread count.
    async fn participants(&self, id: ThreadId) -> Result<Vec<Participant>>;
    /// `viewer`'s threads, most recent activity first (ties broken by id, so the
    /// order is total and a keyset walk repeats and skips nothing).
    async fn inbox(&self, viewer: UserId, from: InboxFrom, limit: u32) -> Result<Page<ThreadRecord>>;
    /// A page of a thread's messages, always in seq order.
    async fn messages(&self, id: ThreadId, cursor: Cursor, limit: u32) -> Result<Page<MessageRecord>>;
    /// Moves `user`'s read marker forward to `up_to` (default: the last message); it
    /// never moves back and never passes the thread's last seq. A marker that would
    /// not move writes nothing; the unread count is read outside any write.
    ///
    /// # Errors
    /// `NotFound` when `user` is not in the thread.
    async fn mark_read(&self, id: ThreadId, user: UserId, up_to: Option<Seq>) -> Result<ReadMarker>;
    /// Every thread `user` is in, with its last seq (for `sync`).
    async fn thread_heads(&self, user: UserId) -> Result<Vec<(ThreadId, Seq)>>;
    /// The direct thread of two users, if they have one.
    async fn direct_thread(&self, a: UserId, b: UserId) -> Result<Option<ThreadId>>;
    /// Messages `from` sent to `to` in their two-person threads that `to` has not read.
    async fn unread_from(&self, to: UserId, from: UserId) -> Result<i64>;
    /// `user`'s unread count in each thread that has any.
    async fn unread_by_thread(&self, user: UserId) -> Result<Vec<(ThreadId, i64)>>;

    /// The user the host knows by `external_id`.
    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<User>>;
    /// Creates the host's user, or updates their name and role (and username, when
    /// given); answers whether it was created.
    ///
    /// # Errors
    /// `Conflict` when the username belongs to someone else; nothing is written.
    async fn upsert_external_user(&self, user: ExternalUser) -> Result<(User, bool)>;
    /// Creates or updates the host's job; answers whether it was created.
    async fn upsert_external_job(&self, job: ExternalJob) -> Result<(Job, bool)>;
    /// Appends a host's system message as the thread's next seq, or answers the
    /// first one stored under its key (`duplicate`).
    ///
    /// # Errors
    /// `NotFound` for an unknown thread; `KeyReused` for a key stored with another text.
    async fn append_system_message(&self, new: NewSystemMessage) -> Result<Appended>;

    /// Recorded events after `after`, oldest first.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Page<StoredEvent>>;
    /// Up to `limit` events that may be sent at `now`, oldest first; an event waits
    /// while an earlier one of its thread waits for a retry.
    async fn due_events(&self, now: Timestamp, limit: u32) -> Result<Vec<StoredEvent>>;
    /// Records a round's outcomes in one transaction (one commit, not one per event).
    async fn record_deliveries(&self, outcomes: &[(i64, Delivery)]) -> Result<()>;
    /// Takes or renews the delivery lease for `holder` until `until`; false while
    /// another holder's lease runs.
    async fn take_event_lease(&self, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool>;
    /// Deletes events sent (or given up) that were recorded before `before`.
    async fn prune_events(&self, before: Timestamp) -> Result<u64>;
    async fn event_backlog(&self) -> Result<Backlog>;

    /// Records the first refresh token of a sign-in (and forgets expired ones).
    async fn add_refresh_token(&self, token: RefreshToken) -> Result<()>;
    /// Spends token `id` and records `next` (of the same family and user) in one
    /// transaction, exactly once under concurrency: of two rotations of one token,
    /// one is `Rotated` and the other `Reused`.
    async fn rotate_refresh_token(&self, id: &str, next: RefreshToken) -> Result<Rotation>;
}

/// Opens the store a database URL names: `sqlite://…` (the default is a file in the
/// data directory) or `postgres://…`, and runs its migrations.
///
/// # Errors
/// An unknown scheme, or a database that cannot be opened or migrated.
pub async fn connect(url: &str, options: StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url).await?.with_options(options);
        store.migrate().await?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let shown = redact_url(url);
        let store = PostgresStore::connect(url).await.map(|s| s.with_options(options)).map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to PostgreSQL at {shown}: {}; check that the server is running, \
                 that the address and database are right, and that the user may log in",
                error_text(&e)
            )
        })?;
        store.migrate().await.map_err(|e| anyhow::anyhow!("migrating PostgreSQL at {shown}: {}", error_text(&e)))?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("unsupported database URL scheme (expected sqlite:// or postgres://)")
    }
}

fn error_text(e: &StoreError) -> String {
    crate::domain::error_chain(e)
}
