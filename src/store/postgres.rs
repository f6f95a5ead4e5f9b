//! The store for many nodes: PostgreSQL. Row locks on a thread serialize its seqs
//! across connections and nodes; unique indexes make workflows and idempotency
//! exactly-once; a batch takes its thread locks in id order so that two nodes'
//! batches can never deadlock.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::events::{self, EventRow, TAKE_EVENT_SEQS, opened_events};
use super::refresh;
use super::rows::{
    CredentialsRow, FREELANCER_COLUMNS, FreelancerRow, INSERT_MESSAGE, JOB_COLUMNS, JobRow, MESSAGE_COLUMNS,
    MOVE_MARKER, MessageRow, ParticipantRow, THREAD_COLUMNS, ThreadRow, USER_COLUMNS, UserRow, group_participants,
    select_system_by_key,
};
use super::{
    Appended, Backlog, Cursor, Delivery, ExternalJob, ExternalUser, InboxFrom, NewEvent, NewJob, NewMessage,
    NewProposal, NewSystemMessage, NewUser, OpenThread, Opened, ReadMarker, RefreshToken, Result, Rotation, Store,
    StoreError, StoreOptions, StoredEvent, ThreadKey, host_message, repeated,
};
use crate::domain::{
    ClientMsgId, Freelancer, Job, JobId, MessageRecord, Page, PageRequest, Participant, Profile, Proposal, Seq,
    SystemMessage, ThreadId, ThreadKind, ThreadRecord, Timestamp, User, UserId,
};

/// Connections per node: enough for the committer, the workflows and the reads of a
/// busy node, few enough that many nodes stay under the server's `max_connections`.
const POOL: u32 = 16;
/// How long a request waits for a free connection before answering `unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Whether writes record webhook events.
    events: bool,
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names.
    ///
    /// # Errors
    /// A malformed URL, or a server that cannot be reached or refuses the login.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?).await
    }

    /// Connects with prepared options (tests use them to pick a schema).
    ///
    /// # Errors
    /// A server that cannot be reached or refuses the login.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // The savepoint retry of a racing `client_msg_id` must see the row the
            // other transaction committed, which a REPEATABLE READ snapshot hides:
            // set the level ourselves instead of trusting the server's default.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(
                        &mut *conn,
                        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool, events: false })
    }

    /// The store with `options` in force.
    #[must_use]
    pub fn with_options(mut self, options: StoreOptions) -> Self {
        self.events = options.events;
        self
    }

    /// Brings the schema up to date; safe to run from several nodes at once (the
    /// migrator takes an advisory lock).
    ///
    /// # Errors
    /// A migration that fails, or a database newer than this binary.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await.map_err(|e| StoreError::Other(Box::new(e)))
    }
}

/// Takes a thread's next seq and moves it to the top of its participants' inboxes.
/// The row lock it takes serializes the thread's seqs across nodes.
const BUMP_THREAD: &str = "UPDATE threads SET last_seq = last_seq + 1, \
     activity = nextval('thread_activity') WHERE id = $1 RETURNING last_seq";

/// Inserts a system message as the thread's next seq inside `tx`.
async fn insert_system_message(
    tx: &mut Transaction<'_, Postgres>,
    thread: ThreadId,
    message: SystemMessage,
    now: Timestamp,
) -> Result<MessageRecord> {
    let seq: i64 = sqlx::query_scalar(BUMP_THREAD).bind(thread.0).fetch_one(&mut **tx).await?;
    let record = MessageRecord::system(thread, Seq(seq), message, now);
    insert_message(tx, &record).await?;
    Ok(record)
}

async fn insert_message(tx: &mut Transaction<'_, Postgres>, m: &MessageRecord) -> Result<()> {
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
async fn open_thread_in(tx: &mut Transaction<'_, Postgres>, open: OpenThread) -> Result<Opened> {
    let (lo, hi) = open.key.ordered_pair();
    let (kind, job) = match open.key {
        ThreadKey::Direct { .. } => (ThreadKind::Direct, None),
        ThreadKey::Job { job, .. } => (ThreadKind::Job, Some(job.0)),
    };
    let now = Timestamp::now();
    let id = ThreadId::generate();
    let inserted = sqlx::query(
        "INSERT INTO threads (id, kind, job_id, user_lo, user_hi, last_seq, created_at, activity) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, nextval('thread_activity')) ON CONFLICT DO NOTHING",
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
            "SELECT id FROM threads WHERE kind = $1 AND user_lo = $2 AND user_hi = $3 AND job_id IS NOT DISTINCT FROM $4",
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

/// Records events inside `tx` in one statement, with the next seqs (the counter is
/// taken last, so its lock is held only to the commit).
async fn record_events(tx: &mut Transaction<'_, Postgres>, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
    let last: i64 = sqlx::query_scalar(TAKE_EVENT_SEQS).bind(n).fetch_one(&mut **tx).await?;
    let seqs: Vec<i64> = (last - n + 1..=last).collect();
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::new_v4()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let threads: Vec<Uuid> = events.iter().map(|e| e.thread_id.0).collect();
    let thread_seqs: Vec<Option<i64>> = events.iter().map(|e| e.thread_seq.map(|s| s.0)).collect();
    let users: Vec<Option<i64>> = events.iter().map(|e| e.user_id.map(|u| u.0)).collect();
    sqlx::query(
        "INSERT INTO events (seq, id, kind, thread_id, thread_seq, user_id, created_at, next_attempt_at) \
         SELECT s, i, k, t, ts, u, $7, $7 FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::uuid[], \
         $5::bigint[], $6::bigint[]) AS v(s, i, k, t, ts, u)",
    )
    .bind(&seqs)
    .bind(&ids)
    .bind(&kinds)
    .bind(&threads)
    .bind(&thread_seqs)
    .bind(&users)
    .bind(Timestamp::now().millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves a read marker forward to `target`; `None` when it stood there or past it.
async fn move_marker<'e>(e: impl sqlx::PgExecutor<'e>, id: ThreadId, user: UserId, target: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(MOVE_MARKER).bind(id.0).bind(user.0).bind(target).fetch_optional(e).await?)
}

/// What a message of a batch turns out to be.
enum Planned {
    /// Its key is stored already: the answer is that message (or `KeyReused`).
    Repeat(MessageRecord),
    /// Its key came earlier in the same batch, at this index.
    RepeatOf(usize),
    New,
}

/// Takes `$2[i]` seqs of thread `$1[i]`, locking the rows in id order first (so two
/// nodes' batches wait for each other instead of deadlocking), and answers each
/// thread's new last seq. Threads that do not exist are absent from the answer.
const TAKE_SEQS: &str = "WITH v AS (SELECT * FROM UNNEST($1::uuid[], $2::bigint[]) AS v(id, n)), \
     locked AS (SELECT t.id FROM threads t WHERE t.id IN (SELECT id FROM v) ORDER BY t.id FOR UPDATE) \
     UPDATE threads t SET last_seq = t.last_seq + v.n, activity = nextval('thread_activity') \
     FROM v WHERE t.id = v.id AND t.id IN (SELECT id FROM locked) RETURNING t.id, t.last_seq";

/// The stored messages among a batch's (sender, thread, key)s.
async fn stored_keys(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[NewMessage],
) -> Result<HashMap<(i64, Uuid, String), MessageRecord>> {
    let (mut senders, mut threads, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for new in batch {
        if let Some(key) = &new.client_msg_id {
            senders.push(new.sender.0);
            threads.push(new.thread_id.0);
            keys.push(key.as_str().to_owned());
        }
    }
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<MessageRow> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m \
         JOIN UNNEST($1::bigint[], $2::uuid[], $3::text[]) AS k(sender, thread, key) \
         ON m.sender_id = k.sender AND m.thread_id = k.thread AND m.client_msg_id = k.key"
    ))
    .bind(&senders)
    .bind(&threads)
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        let m = MessageRecord::try_from(row)?;
        let Some(key) = m.client_msg_id.clone() else { continue };
        let Some(sender) = m.sender_id else { continue };
        stored.insert((sender.0, m.thread_id.0, key), m);
    }
    Ok(stored)
}

/// Inserts many messages in one statement.
async fn insert_messages<'a>(
    tx: &mut Transaction<'_, Postgres>,
    messages: impl Iterator<Item = &'a MessageRecord>,
) -> Result<()> {
    let mut c = MessageColumns::default();
    for m in messages {
        c.ids.push(m.id.0);
        c.threads.push(m.thread_id.0);
        c.seqs.push(m.seq.0);
        c.kinds.push(m.kind.as_str().to_owned());
        c.senders.push(m.sender_id.map(|u| u.0));
        c.actors.push(m.actor_id.map(|u| u.0));
        c.texts.push(m.text.clone());
        c.metadata.push(m.metadata.to_string());
        c.keys.push(m.client_msg_id.clone());
        c.created.push(m.created_at.millis());
    }
    if c.ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO messages (id, thread_id, seq, kind, sender_id, actor_id, text, metadata, client_msg_id, created_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], \
         $7::text[], $8::text[], $9::text[], $10::bigint[])",
    )
    .bind(&c.ids)
    .bind(&c.threads)
    .bind(&c.seqs)
    .bind(&c.kinds)
    .bind(&c.senders)
    .bind(&c.actors)
    .bind(&c.texts)
    .bind(&c.metadata)
    .bind(&c.keys)
    .bind(&c.created)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A batch of messages column by column, for `UNNEST`.
#[derive(Default)]
struct MessageColumns {
    ids: Vec<Uuid>,
    threads: Vec<Uuid>,
    seqs: Vec<i64>,
    kinds: Vec<String>,
    senders: Vec<Option<i64>>,
    actors: Vec<Option<i64>>,
    texts: Vec<String>,
    metadata: Vec<String>,
    keys: Vec<Option<String>>,
    created: Vec<i64>,
}

/// The unread count of `$viewer` in thread `t`, for a participant row `p` of theirs.
const UNREAD_SUBQUERY: &str = "(SELECT COUNT(*) FROM messages x WHERE x.thread_id = t.id \
     AND x.seq > p.last_read_seq AND (x.actor_id IS NULL OR x.actor_id <> p.user_id))";

/// How often a batch is tried when PostgreSQL aborts it for a deadlock.
const BATCH_ATTEMPTS: u32 = 3;

/// A deadlock (40P01) or serialization failure (40001): the transaction did nothing
/// and may simply be run again.
fn is_transient(e: &StoreError) -> bool {
    let StoreError::Other(source) = e else { return false };
    source
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "40001")
}

impl PostgresStore {
    /// One attempt at [`Store::append_messages`]: thread locks in id order (stable, so
    /// one thread's messages keep their order), so batches rarely wait in a cycle.
    /// One batch in a handful of statements, whatever its size: one read of the keys
    /// already stored, one update that takes every thread's seqs (its row locks, in
    /// thread order, serialize the threads across nodes), one multi-row insert. Per
    /// message, three round trips to the server made a batch of thousands take
    /// seconds.
    async fn append_batch(&self, batch: Vec<NewMessage>) -> Result<Vec<Result<Appended>>> {
        let mut tx = self.pool.begin().await?;
        let stored = stored_keys(&mut tx, &batch).await?;
        // What each message is: a repeat of a stored one, of an earlier one in this
        // batch, or new (counted per thread).
        let mut plan: Vec<Planned> = Vec::with_capacity(batch.len());
        let mut first_in_batch: HashMap<(i64, Uuid, &str), usize> = HashMap::new();
        let mut per_thread: BTreeMap<Uuid, i64> = BTreeMap::new();
        for (i, new) in batch.iter().enumerate() {
            let key = new.client_msg_id.as_ref().map(|k| (new.sender.0, new.thread_id.0, k.as_str()));
            if let Some(k) = key {
                if let Some(first) = stored.get(&(k.0, k.1, k.2.to_owned())) {
                    plan.push(Planned::Repeat(first.clone()));
                    continue;
                }
                if let Some(&earlier) = first_in_batch.get(&k) {
                    plan.push(Planned::RepeatOf(earlier));
                    continue;
                }
                first_in_batch.insert(k, i);
            }
            *per_thread.entry(new.thread_id.0).or_default() += 1;
            plan.push(Planned::New);
        }
        let (threads, counts): (Vec<Uuid>, Vec<i64>) = per_thread.into_iter().unzip();
        let heads: HashMap<Uuid, i64> =
            sqlx::query_as(TAKE_SEQS).bind(&threads).bind(&counts).fetch_all(&mut *tx).await?.into_iter().collect();
        // Each thread's new seqs, first to last, in batch order.
        let mut next: HashMap<Uuid, i64> =
            threads.iter().zip(&counts).filter_map(|(t, n)| heads.get(t).map(|last| (*t, last - n + 1))).collect();
        let mut records: Vec<Option<MessageRecord>> = vec![None; batch.len()];
        for (i, new) in batch.iter().enumerate() {
            if !matches!(plan[i], Planned::New) {
                continue;
            }
            if let Some(seq) = next.get_mut(&new.thread_id.0) {
                let key = new.client_msg_id.clone().map(ClientMsgId::into_inner);
                records[i] = Some(MessageRecord::user(new.thread_id, Seq(*seq), new.sender, new.text.clone(), key));
                *seq += 1;
            }
        }
        insert_messages(&mut tx, records.iter().flatten()).await?;
        if self.events {
            let created: Vec<NewEvent> =
                records.iter().flatten().map(|m| NewEvent::message(m.thread_id, m.seq)).collect();
            record_events(&mut tx, &created).await?;
        }
        tx.commit().await?;
        let mut results = Vec::with_capacity(batch.len());
        for (i, new) in batch.iter().enumerate() {
            results.push(match &plan[i] {
                Planned::Repeat(first) => repeated(first.clone(), &new.text),
                Planned::RepeatOf(earlier) => match &records[*earlier] {
                    Some(first) => repeated(first.clone(), &new.text),
                    None => Err(StoreError::NotFound("thread")),
                },
                // Cloned, not taken: a later repeat of its key answers with it too.
                Planned::New => match records[i].clone() {
                    Some(message) => Ok(Appended { message, duplicate: false }),
                    None => Err(StoreError::NotFound("thread")),
                },
            });
        }
        Ok(results)
    }

    /// `user`'s read marker in a thread and the thread's last seq; `None` when `user`
    /// is not in it.
    async fn read_position(&self, id: ThreadId, user: UserId) -> Result<Option<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT p.last_read_seq, t.last_seq FROM thread_participants p JOIN threads t ON t.id = p.thread_id \
             WHERE p.thread_id = $1 AND p.user_id = $2",
        )
        .bind(id.0)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn participants_of(&self, threads: &[Uuid]) -> Result<HashMap<Uuid, Vec<Participant>>> {
        if threads.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<ParticipantRow> = sqlx::query_as(&format!(
            "SELECT p.thread_id, {USER_COLUMNS}, p.last_read_seq FROM thread_participants p \
             JOIN users u ON u.id = p.user_id WHERE p.thread_id = ANY($1) ORDER BY p.thread_id, u.id"
        ))
        .bind(threads)
        .fetch_all(&self.pool)
        .await?;
        group_participants(rows)
    }

    async fn fetch_job(&self, where_clause: &str, a: i64, b: Option<&str>) -> Result<Option<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id WHERE {where_clause}");
        let mut q = sqlx::query_as::<_, JobRow>(&sql).bind(a);
        if let Some(b) = b {
            q = q.bind(b);
        }
        q.fetch_optional(&self.pool).await?.map(Job::try_from).transpose()
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
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
        .fetch_one(&self.pool)
        .await?;
        Ok(User { id: UserId(id), username: new.username, full_name: new.full_name, role: new.role, external_id: None })
    }

    async fn credentials(&self, username: &str) -> Result<Option<(User, String)>> {
        sqlx::query_as::<_, CredentialsRow>(&format!(
            "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        .map(CredentialsRow::into_parts)
        .transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = $1"))
            .bind(username)
            .fetch_optional(&self.pool)
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
            .execute(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        let rows = rows.into_iter().map(Freelancer::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit))
    }

    async fn freelancer(&self, id: UserId) -> Result<Option<Freelancer>> {
        sqlx::query_as::<_, FreelancerRow>(&format!(
            "SELECT {FREELANCER_COLUMNS} FROM users u WHERE u.id = $1 AND u.role = 'freelancer'"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
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
        .fetch_one(&self.pool)
        .await?;
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id WHERE j.id = $1");
        sqlx::query_as::<_, JobRow>(&sql).bind(id).fetch_one(&self.pool).await?.try_into()
    }

    async fn jobs(&self, page: PageRequest) -> Result<Page<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs j JOIN users u ON u.id = j.client_id ORDER BY j.id DESC LIMIT $1 OFFSET $2"
        ))
        .bind(i64::from(page.limit) + 1)
        .bind(page.offset as i64)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let opened = open_thread_in(&mut tx, open).await?;
        if self.events {
            record_events(&mut tx, &opened_events(&opened)).await?;
        }
        tx.commit().await?;
        Ok(opened)
    }

    async fn submit_proposal(&self, new: NewProposal, thread: OpenThread) -> Result<(Proposal, Opened)> {
        let mut tx = self.pool.begin().await?;
        let opened = open_thread_in(&mut tx, thread).await?;
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
        if self.events {
            record_events(&mut tx, &opened_events(&opened)).await?;
        }
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
        // A deadlock or serialization failure (two nodes' batches waiting on each
        // other's keys) aborts the whole transaction; nothing was stored, so try again.
        let mut attempt = 1;
        loop {
            match self.append_batch(batch.clone()).await {
                Err(e) if attempt < BATCH_ATTEMPTS && is_transient(&e) => {
                    tracing::warn!(attempt, error = %e, "a batch of messages met a deadlock; retrying");
                    attempt += 1;
                }
                // Another node stored one of the batch's keys meanwhile: nothing of this
                // batch was stored; the next try finds that message and answers with it.
                Err(StoreError::Conflict(index)) if attempt < BATCH_ATTEMPTS && index == "messages_client_msg_id" => {
                    attempt += 1;
                }
                other => return other,
            }
        }
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
        .fetch_optional(&self.pool)
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
        let rows: Vec<ThreadRow> = query.fetch_all(&self.pool).await?;
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
            .fetch_all(&self.pool)
            .await?;
        let records = rows.into_iter().map(MessageRecord::try_from).collect::<Result<Vec<_>>>()?;
        let mut page = Page::from_overfetch(records, limit);
        if from_top {
            page.results.reverse();
        }
        Ok(page)
    }

    async fn mark_read(&self, id: ThreadId, user: UserId, up_to: Option<Seq>) -> Result<ReadMarker> {
        let Some((current, last)) = self.read_position(id, user).await? else {
            return Err(StoreError::NotFound("thread"));
        };
        let target = up_to.map_or(last, |s| s.0.min(last));
        let mut marker = (current, false);
        if target > current {
            // One statement, or one short transaction when the move records an
            // event: the row lock lasts only as long as the update, and a marker
            // that would not move is not touched.
            let updated = if self.events {
                let mut tx = self.pool.begin().await?;
                let updated = move_marker(&mut *tx, id, user, target).await?;
                if let Some(m) = updated {
                    record_events(&mut tx, &[NewEvent::read(id, user, Seq(m))]).await?;
                }
                tx.commit().await?;
                updated
            } else {
                move_marker(&self.pool, id, user, target).await?
            };
            marker = match updated {
                Some(m) => (m, true),
                None => (self.read_position(id, user).await?.map_or(target, |(m, _)| m), false),
            };
        }
        let unread: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE thread_id = $1 AND seq > $2 AND (actor_id IS NULL OR actor_id <> $3)",
        )
        .bind(id.0)
        .bind(marker.0)
        .bind(user.0)
        .fetch_one(&self.pool)
        .await?;
        Ok(ReadMarker { up_to_seq: Seq(marker.0), unread_count: unread, moved: marker.1 })
    }

    async fn thread_heads(&self, user: UserId) -> Result<Vec<(ThreadId, Seq)>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT t.id, t.last_seq FROM thread_participants p JOIN threads t ON t.id = p.thread_id WHERE p.user_id = $1",
        )
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(t, s)| (ThreadId(t), Seq(s))).collect())
    }

    async fn direct_thread(&self, a: UserId, b: UserId) -> Result<Option<ThreadId>> {
        let (lo, hi) = ThreadKey::Direct { a, b }.ordered_pair();
        let id: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM threads WHERE kind = 'direct' AND user_lo = $1 AND user_hi = $2")
                .bind(lo.0)
                .bind(hi.0)
                .fetch_optional(&self.pool)
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
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    async fn unread_by_thread(&self, user: UserId) -> Result<Vec<(ThreadId, i64)>> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(&format!(
            "SELECT t.id, {UNREAD_SUBQUERY} AS n FROM thread_participants p JOIN threads t ON t.id = p.thread_id \
             WHERE p.user_id = $1 AND t.last_seq > p.last_read_seq"
        ))
        .bind(user.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().filter(|(_, n)| *n > 0).map(|(t, n)| (ThreadId(t), n)).collect())
    }

    async fn add_refresh_token(&self, token: RefreshToken) -> Result<()> {
        refresh::postgres::add(&self.pool, "BEGIN", token).await
    }

    async fn rotate_refresh_token(&self, id: &str, next: RefreshToken) -> Result<Rotation> {
        refresh::postgres::rotate(&self.pool, "BEGIN", id, next).await
    }

    async fn user_by_external_id(&self, external_id: &str) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users u WHERE u.external_id = $1"))
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn upsert_external_user(&self, user: ExternalUser) -> Result<(User, bool)> {
        // One statement: two nodes provisioning the same user at once both land on
        // the unique index, and one of them updates. `xmax = 0` tells an insert.
        let username = user.username.clone().unwrap_or_else(|| user.external_id.clone());
        let row: Option<(i64, bool)> = sqlx::query_as(
            "INSERT INTO users (username, password_hash, full_name, role, external_id, created_at) \
             VALUES ($1, '', $2, $3, $4, $5) \
             ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO UPDATE SET full_name = EXCLUDED.full_name, \
             role = EXCLUDED.role, username = CASE WHEN $6 THEN EXCLUDED.username ELSE users.username END \
             RETURNING id, (xmax = 0)",
        )
        .bind(&username)
        .bind(&user.full_name)
        .bind(user.role.as_str())
        .bind(&user.external_id)
        .bind(Timestamp::now().millis())
        .bind(user.username.is_some())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict("users.username".to_owned()),
            other => other,
        })?;
        let Some((id, created)) = row else { return Err(StoreError::Other("the user upsert answered no row".into())) };
        let user = self.user(UserId(id)).await?.ok_or_else(|| StoreError::Other("the upserted user is gone".into()))?;
        Ok((user, created))
    }

    async fn upsert_external_job(&self, job: ExternalJob) -> Result<(Job, bool)> {
        let (id, created): (i64, bool) = sqlx::query_as(
            "INSERT INTO jobs (client_id, title, description, status, external_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (external_id) WHERE external_id IS NOT NULL DO UPDATE SET client_id = EXCLUDED.client_id, \
             title = EXCLUDED.title, description = EXCLUDED.description, status = EXCLUDED.status \
             RETURNING id, (xmax = 0)",
        )
        .bind(job.client.0)
        .bind(&job.title)
        .bind(&job.description)
        .bind(job.status.as_str())
        .bind(&job.external_id)
        .bind(Timestamp::now().millis())
        .fetch_one(&self.pool)
        .await?;
        let job = self.job(JobId(id)).await?.ok_or_else(|| StoreError::Other("the upserted job is gone".into()))?;
        Ok((job, created))
    }

    async fn append_system_message(&self, new: NewSystemMessage) -> Result<Appended> {
        // Two nodes storing one key at once: the loser's insert hits the unique
        // index, nothing of it is kept, and the second try finds the winner's.
        for attempt in 1..=2 {
            let mut tx = self.pool.begin().await?;
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
                sqlx::query_scalar(BUMP_THREAD).bind(new.thread_id.0).fetch_optional(&mut *tx).await?;
            let Some(seq) = seq else { return Err(StoreError::NotFound("thread")) };
            let record = host_message(new.clone(), Seq(seq));
            match insert_message(&mut tx, &record).await {
                Err(StoreError::Conflict(_)) if attempt == 1 => continue,
                other => other?,
            }
            if self.events {
                record_events(&mut tx, &[NewEvent::message(record.thread_id, record.seq)]).await?;
            }
            tx.commit().await?;
            return Ok(Appended { message: record, duplicate: false });
        }
        Err(StoreError::Other("a system message's key kept conflicting".into()))
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Page<StoredEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(&events::select_after())
            .bind(after)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let rows = rows.into_iter().map(StoredEvent::try_from).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, limit))
    }

    async fn due_events(&self, now: Timestamp, limit: u32) -> Result<Vec<StoredEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(&events::select_due())
            .bind(now.millis())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn record_deliveries(&self, outcomes: &[(i64, Delivery)]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
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
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(taken == 1)
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64> {
        Ok(sqlx::query(events::PRUNE).bind(before.millis()).execute(&self.pool).await?.rows_affected())
    }

    async fn event_backlog(&self) -> Result<Backlog> {
        let (pending, oldest): (i64, Option<i64>) = sqlx::query_as(events::BACKLOG).fetch_one(&self.pool).await?;
        Ok(Backlog { pending, oldest: oldest.map(events::created_at).transpose()? })
    }
}
