//! The store for many nodes: PostgreSQL. Row locks on a thread serialize its seqs
//! across connections and nodes; unique indexes make workflows and idempotency
//! exactly-once; a batch takes its thread locks in id order so that two nodes'
//! batches can never deadlock, and is tried again when PostgreSQL aborts it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::postgres::PgQueryResult;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Pool, Postgres, Transaction};
use uuid::Uuid;

use super::events::{self, NewEvent, TAKE_EVENT_SEQS};
use super::rows::{MESSAGE_COLUMNS, MessageRow, group_participants};
use super::sql::{Backend, BatchResult, SqlStore, participants_sql};
use super::{Appended, NewMessage, Result, StoreError, repeated};
use crate::domain::{ClientMsgId, MessageRecord, Participant, Seq, Timestamp};

/// Connections per node: enough for the committer, the workflows and the reads of a
/// busy node, few enough that many nodes stay under the server's `max_connections`.
const POOL: u32 = 16;
/// How long a request waits for a free connection before answering `unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL implementation of [`super::Store`].
pub type PostgresStore = SqlStore<PostgresBackend>;

/// PostgreSQL's pool (reads and writes share it) and its dialect.
#[derive(Debug, Clone)]
pub struct PostgresBackend {
    pool: PgPool,
    careful: Careful,
}

/// How many batches still look their keys up before inserting, shared by the
/// node's batches. A batch that met a stored key sets it: a client that resends
/// (after a reconnect, a node's restart) tends to resend many, and each batch
/// that meets one otherwise runs twice.
#[derive(Debug, Clone, Default)]
struct Careful(Arc<AtomicU32>);

/// Batches that look their keys up after one met a stored key.
const CAREFUL_BATCHES: u32 = 64;

impl Careful {
    /// Whether this batch looks its keys up first (and counts it).
    fn take_one(&self) -> bool {
        self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    fn after_repeat(&self) {
        self.0.store(CAREFUL_BATCHES, Ordering::Relaxed);
    }
}

impl Backend for PostgresBackend {
    type Db = Postgres;

    const BEGIN: &'static str = "BEGIN";
    /// A sequence: nodes take values without waiting on each other.
    const NEXT_ACTIVITY: &'static str = "nextval('thread_activity')";
    const NULL_SAFE_EQ: &'static str = "IS NOT DISTINCT FROM";
    /// Batches run on pooled connections, two at once if handed over together.
    const QUEUES_BATCHES: bool = false;

    fn writer(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn reader(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// One array parameter, so the statement is the same whatever the count.
    async fn participants_of(&self, threads: &[Uuid]) -> Result<HashMap<Uuid, Vec<Participant>>> {
        group_participants(sqlx::query_as(&participants_sql("= ANY($1)")).bind(threads).fetch_all(&self.pool).await?)
    }

    async fn append_batch(&self, batch: Vec<NewMessage>, events: bool) -> BatchResult {
        // Keys are looked up first only for a while after a batch met a stored one
        // (a client resending after a reconnect): otherwise the lookup costs a
        // quarter of the batch's time and finds nothing (`docs/benchmarks.md`,
        // 2026-12-07), and the unique index finds a repeat anyway.
        let mut look_up = self.careful.take_one();
        let mut attempt = 1;
        loop {
            match self.append_batch_once(batch.clone(), events, look_up).await {
                Err(e) if attempt < BATCH_ATTEMPTS && is_transient(&e) => {
                    tracing::warn!(attempt, error = %e, "a batch of messages met a deadlock; retrying");
                    attempt += 1;
                }
                // A key of the batch is stored already (by an earlier batch, or by another
                // node meanwhile): nothing of this batch was stored; the next try looks
                // the keys up and answers with those messages. Not counted as an attempt
                // when the keys were not looked up.
                Err(StoreError::Conflict(index)) if attempt < BATCH_ATTEMPTS && index == "messages_client_msg_id" => {
                    if look_up {
                        attempt += 1;
                    }
                    look_up = true;
                    self.careful.after_repeat();
                }
                other => return other,
            }
        }
    }

    /// PostgreSQL's caches are the server's: nothing of note is held here.
    async fn release_memory(&self) -> Result<()> {
        Ok(())
    }
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
            // A retry after a racing write (a batch's `client_msg_id`, a host
            // system message's key, an external user or job) must see the row the
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
        Ok(Self::new(PostgresBackend { pool, careful: Careful::default() }))
    }

    /// Brings the schema up to date; safe to run from several nodes at once (the
    /// migrator takes an advisory lock).
    ///
    /// # Errors
    /// A migration that fails, or a database newer than this binary.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.backend.pool)
            .await
            .map_err(|e| StoreError::Other(Box::new(e)))
    }
}

/// Records events inside `tx` in one statement, with the next seqs (the counter is
/// taken last, so its lock is held only to the commit).
async fn record_events(tx: &mut Transaction<'_, Postgres>, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events::seq_count(events)?;
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

/// What a message of a batch turns out to be.
enum Planned {
    /// Its key is stored already: the answer is that message (or `KeyReused`).
    Repeat(MessageRecord),
    /// Its key came earlier in the same batch, at this index.
    RepeatOf(usize),
    /// Its sender is no user: refused alone, the rest of the batch goes on.
    Stranger,
    New,
}

/// Takes `$2[i]` seqs of thread `$1[i]`, locking the rows in id order first (so two
/// nodes' batches wait for each other instead of deadlocking), and answers each
/// thread's new last seq. Threads that do not exist are absent from the answer.
const TAKE_SEQS: &str = "WITH v AS (SELECT * FROM UNNEST($1::uuid[], $2::bigint[]) AS v(id, n)), \
     locked AS (SELECT t.id FROM threads t WHERE t.id IN (SELECT id FROM v) ORDER BY t.id FOR UPDATE) \
     UPDATE threads t SET last_seq = t.last_seq + v.n, activity = nextval('thread_activity') \
     FROM v WHERE t.id = v.id AND t.id IN (SELECT id FROM locked) RETURNING t.id, t.last_seq";

/// The batch's senders that are users.
async fn known_senders(tx: &mut Transaction<'_, Postgres>, batch: &[NewMessage]) -> Result<HashSet<i64>> {
    let mut senders: Vec<i64> = batch.iter().map(|new| new.sender.0).collect();
    senders.sort_unstable();
    senders.dedup();
    let found: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1)").bind(&senders).fetch_all(&mut **tx).await?;
    Ok(found.into_iter().collect())
}

/// The stored messages among a batch's (sender, thread, key)s.
async fn stored_keys(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[NewMessage],
) -> Result<HashMap<(i64, Uuid, Arc<str>), MessageRecord>> {
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
        c.keys.push(m.client_msg_id.as_deref().map(str::to_owned));
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

impl PostgresBackend {
    /// One attempt at [`super::Store::append_messages`]: thread locks in id order (stable, so
    /// one thread's messages keep their order), so batches rarely wait in a cycle.
    /// One batch in a handful of statements, whatever its size: one read of the
    /// senders (and, when `look_up`, of the keys already stored), one update that
    /// takes every thread's seqs (its row locks, in thread order, serialize the
    /// threads across nodes), one multi-row insert. Per message, three round trips
    /// to the server made a batch of thousands take seconds.
    ///
    /// The messages table has no foreign keys (migration 0005): their checks, three
    /// a row, were half of the insert's time. A message's thread is proved by the
    /// seq update (a thread that is not there takes no seq, and its locked row
    /// cannot go; threads are never deleted), its sender by the read of the users.
    async fn append_batch_once(&self, batch: Vec<NewMessage>, events: bool, look_up: bool) -> BatchResult {
        let mut tx = self.pool.begin().await?;
        let users = known_senders(&mut tx, &batch).await?;
        let stored = if look_up { stored_keys(&mut tx, &batch).await? } else { HashMap::new() };
        // What each message is: from no user, a repeat of a stored one, of an earlier
        // one in this batch, or new (counted per thread).
        let mut plan: Vec<Planned> = Vec::with_capacity(batch.len());
        let mut first_in_batch: HashMap<(i64, Uuid, &str), usize> = HashMap::new();
        let mut per_thread: BTreeMap<Uuid, i64> = BTreeMap::new();
        for (i, new) in batch.iter().enumerate() {
            if !users.contains(&new.sender.0) {
                plan.push(Planned::Stranger);
                continue;
            }
            if let Some(shared) = &new.client_msg_id {
                let k = (new.sender.0, new.thread_id.0, shared.as_str());
                if let Some(first) = stored.get(&(k.0, k.1, shared.shared())) {
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
        if events {
            let created: Vec<NewEvent> =
                records.iter().flatten().map(|m| NewEvent::message(m.thread_id, m.seq)).collect();
            record_events(&mut tx, &created).await?;
        }
        tx.commit().await?;
        let mut results = Vec::with_capacity(batch.len());
        for (i, new) in batch.iter().enumerate() {
            results.push(match &plan[i] {
                Planned::Stranger => Err(StoreError::NotFound("user")),
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
}

#[cfg(test)]
mod tests {
    use super::{CAREFUL_BATCHES, Careful};

    #[test]
    fn batches_look_keys_up_for_a_while_after_one_met_a_stored_key() {
        let careful = Careful::default();
        assert!(!careful.take_one(), "none looks up before any repeat");
        careful.after_repeat();
        let shared = careful.clone();
        let looked = (0..CAREFUL_BATCHES * 2).filter(|_| shared.take_one()).count();
        assert_eq!(looked, CAREFUL_BATCHES as usize);
        assert!(!careful.take_one());
    }
}
