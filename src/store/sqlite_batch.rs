//! A batch of messages written to SQLite with a few set-based statements instead of
//! three per message: one lookup of every idempotency key of the batch, one read of
//! the inbox counter, one `UPDATE … RETURNING` that takes each thread's seqs, and
//! multi-row inserts. sqlx's SQLite driver runs each statement through its worker
//! thread with a channel round trip, so statements, not rows, are what a batch costs.
//! The answers are exactly those of appending the messages one by one, in order.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, Transaction};
use uuid::Uuid;

use super::rows::{MESSAGE_COLUMNS, MessageRow};
use super::{Appended, NewMessage, Result, StoreError, repeated};
use crate::domain::{ClientMsgId, MessageRecord, Seq, ThreadId, UserId};

/// Rows per `INSERT`: 10 parameters each, far below SQLite's 32,766.
const INSERT_ROWS: usize = 500;
/// Keys per lookup: 3 parameters each.
const LOOKUP_KEYS: usize = 1000;

type Key = (UserId, ThreadId, String);

/// What becomes of one message of the batch.
enum Fate {
    /// A key stored before this batch.
    Stored(MessageRecord),
    /// A key taken by an earlier message of this batch (its index).
    Earlier(usize),
    /// A new message: its thread's n-th new message in this batch.
    New { nth: i64 },
}

pub(super) async fn append_batch(
    tx: &mut Transaction<'_, Sqlite>,
    batch: Vec<NewMessage>,
) -> Result<Vec<Result<Appended>>> {
    let stored = stored_keys(tx, &batch).await?;
    let mut fates = Vec::with_capacity(batch.len());
    let mut first_of_key: HashMap<Key, usize> = HashMap::new();
    let mut per_thread: HashMap<ThreadId, i64> = HashMap::new();
    let mut thread_order: Vec<ThreadId> = Vec::new();
    for (i, new) in batch.iter().enumerate() {
        let key = new.client_msg_id.as_ref().map(|k| (new.sender, new.thread_id, k.as_str().to_owned()));
        if let Some(key) = &key {
            if let Some(record) = stored.get(key) {
                fates.push(Fate::Stored(record.clone()));
                continue;
            }
            if let Some(&earlier) = first_of_key.get(key) {
                fates.push(Fate::Earlier(earlier));
                continue;
            }
            first_of_key.insert(key.clone(), i);
        }
        let count = per_thread.entry(new.thread_id).or_insert_with(|| {
            thread_order.push(new.thread_id);
            0
        });
        *count += 1;
        fates.push(Fate::New { nth: *count });
    }
    // Inbox order as if appended one by one: the thread written last is on top.
    let last_index: HashMap<ThreadId, usize> = batch.iter().enumerate().map(|(i, m)| (m.thread_id, i)).collect();
    thread_order.sort_by_key(|t| last_index.get(t).copied().unwrap_or(0));
    let last_seqs = take_seqs(tx, &thread_order, &per_thread).await?;

    // Build the answers in batch order; new messages get `last - count + nth`.
    let mut results: Vec<Result<Appended>> = Vec::with_capacity(batch.len());
    let mut inserts: Vec<MessageRecord> = Vec::new();
    for (new, fate) in batch.into_iter().zip(fates) {
        let answer = match fate {
            Fate::Stored(first) => repeated(first, &new),
            Fate::Earlier(index) => match &results[index] {
                Ok(first) => repeated(first.message.clone(), &new),
                // The earlier one was refused (an unknown thread): so is this one.
                Err(_) => Err(StoreError::NotFound("thread")),
            },
            Fate::New { nth } => match last_seqs.get(&new.thread_id) {
                Some(&last) => {
                    let seq = Seq(last - per_thread.get(&new.thread_id).copied().unwrap_or(0) + nth);
                    let key = new.client_msg_id.map(ClientMsgId::into_inner);
                    let record = MessageRecord::user(new.thread_id, seq, new.sender, new.text, key);
                    inserts.push(record.clone());
                    Ok(Appended { message: record, duplicate: false })
                }
                None => Err(StoreError::NotFound("thread")),
            },
        };
        results.push(answer);
    }
    for chunk in inserts.chunks(INSERT_ROWS) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO messages (id, thread_id, seq, kind, sender_id, actor_id, text, metadata, client_msg_id, created_at) ",
        );
        q.push_values(chunk, |mut row, m| {
            row.push_bind(m.id.0)
                .push_bind(m.thread_id.0)
                .push_bind(m.seq.0)
                .push_bind(m.kind.as_str())
                .push_bind(m.sender_id.map(|u| u.0))
                .push_bind(m.actor_id.map(|u| u.0))
                .push_bind(m.text.clone())
                .push_bind(m.metadata.to_string())
                .push_bind(m.client_msg_id.clone())
                .push_bind(m.created_at.millis());
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(results)
}

/// The messages already stored under the batch's keys.
async fn stored_keys(tx: &mut Transaction<'_, Sqlite>, batch: &[NewMessage]) -> Result<HashMap<Key, MessageRecord>> {
    let keys: Vec<(i64, Uuid, &str)> = batch
        .iter()
        .filter_map(|m| m.client_msg_id.as_ref().map(|k| (m.sender.0, m.thread_id.0, k.as_str())))
        .collect();
    let mut found = HashMap::new();
    for chunk in keys.chunks(LOOKUP_KEYS) {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE (m.sender_id, m.thread_id, m.client_msg_id) IN (VALUES "
        ));
        let mut list = q.separated(", ");
        for (sender, thread, key) in chunk {
            list.push("(");
            list.push_bind_unseparated(*sender);
            list.push_unseparated(", ");
            list.push_bind_unseparated(*thread);
            list.push_unseparated(", ");
            list.push_bind_unseparated(*key);
            list.push_unseparated(")");
        }
        q.push(")");
        let rows: Vec<MessageRow> = q.build_query_as().fetch_all(&mut **tx).await?;
        for row in rows {
            let record = MessageRecord::try_from(row)?;
            if let (Some(sender), Some(key)) = (record.sender_id, record.client_msg_id.clone()) {
                found.insert((sender, record.thread_id, key), record);
            }
        }
    }
    Ok(found)
}

/// Takes `count` seqs in each thread and moves the threads to the top of their
/// inboxes, in batch order; answers each existing thread's new last seq.
async fn take_seqs(
    tx: &mut Transaction<'_, Sqlite>,
    order: &[ThreadId],
    counts: &HashMap<ThreadId, i64>,
) -> Result<HashMap<ThreadId, i64>> {
    let mut last = HashMap::with_capacity(order.len());
    if order.is_empty() {
        return Ok(last);
    }
    // The single writer makes reading the counter, then raising it, race-free.
    let top: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(activity), 0) FROM threads").fetch_one(&mut **tx).await?;
    for (chunk_start, chunk) in order.chunks(LOOKUP_KEYS).enumerate().map(|(n, c)| (n * LOOKUP_KEYS, c)) {
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE threads SET last_seq = last_seq + CASE id");
        for thread in chunk {
            q.push(" WHEN ").push_bind(thread.0).push(" THEN ").push_bind(counts.get(thread).copied().unwrap_or(0));
        }
        q.push(" END, activity = CASE id");
        for (n, thread) in chunk.iter().enumerate() {
            q.push(" WHEN ").push_bind(thread.0).push(" THEN ").push_bind(top + 1 + (chunk_start + n) as i64);
        }
        q.push(" END WHERE id IN (");
        let mut ids = q.separated(", ");
        for thread in chunk {
            ids.push_bind(thread.0);
        }
        q.push(") RETURNING id, last_seq");
        let rows: Vec<(Uuid, i64)> = q.build_query_as().fetch_all(&mut **tx).await?;
        last.extend(rows.into_iter().map(|(id, seq)| (ThreadId(id), seq)));
    }
    Ok(last)
}
