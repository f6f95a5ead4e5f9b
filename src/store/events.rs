//! The webhook outbox as both stores keep it: the row shapes and the SQL they
//! share. An event row names what it describes (a thread, a message's seq, a
//! reader); the dispatcher renders it when it sends it, so the hot path writes a
//! few small columns, not a copy of the message.

use sqlx::FromRow;
use uuid::Uuid;

use super::rows::corrupt;
use super::{Result, StoreError};
use crate::domain::{Seq, ThreadId, Timestamp, UserId};

/// What an event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    MessageCreated,
    ThreadCreated,
    ThreadRead,
}

impl EventKind {
    /// The contract's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageCreated => "message.created",
            Self::ThreadCreated => "thread.created",
            Self::ThreadRead => "thread.read",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "message.created" => Ok(Self::MessageCreated),
            "thread.created" => Ok(Self::ThreadCreated),
            "thread.read" => Ok(Self::ThreadRead),
            _ => Err(corrupt("events.kind")),
        }
    }
}

/// An event to record in the transaction of what it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub thread_id: ThreadId,
    /// The message's seq (`message.created`) or the read marker (`thread.read`).
    pub thread_seq: Option<Seq>,
    /// Who read (`thread.read`).
    pub user_id: Option<UserId>,
}

impl NewEvent {
    pub fn message(thread_id: ThreadId, seq: Seq) -> Self {
        Self { kind: EventKind::MessageCreated, thread_id, thread_seq: Some(seq), user_id: None }
    }

    pub fn thread(thread_id: ThreadId) -> Self {
        Self { kind: EventKind::ThreadCreated, thread_id, thread_seq: None, user_id: None }
    }

    pub fn read(thread_id: ThreadId, user: UserId, up_to: Seq) -> Self {
        Self { kind: EventKind::ThreadRead, thread_id, thread_seq: Some(up_to), user_id: Some(user) }
    }
}

/// The events of a thread a find-or-create made: the thread, then its first message.
pub(super) fn opened_events(opened: &super::Opened) -> Vec<NewEvent> {
    if !opened.created {
        return Vec::new();
    }
    let mut events = vec![NewEvent::thread(opened.thread_id)];
    events.extend(opened.first_message.iter().map(|m| NewEvent::message(m.thread_id, m.seq)));
    events
}

/// A recorded event with its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The deployment-wide position: 1, 2, 3… in commit order.
    pub seq: i64,
    pub id: Uuid,
    pub kind: EventKind,
    pub thread_id: ThreadId,
    pub thread_seq: Option<Seq>,
    pub user_id: Option<UserId>,
    pub created_at: Timestamp,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Failed; try again at this time.
    Retry {
        at: Timestamp,
        error: String,
    },
    /// Failed for the last time: the event stays replayable but is not sent again.
    GaveUp {
        error: String,
    },
}

/// How many events wait, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: i64,
    pub oldest: Option<Timestamp>,
}

/// Takes `$1` event seqs and answers the last one. The counter's row lock is held
/// to the commit, so a transaction that takes seqs later commits later: seqs have
/// no gaps (a rollback gives its seqs back) and a reader that saw seq N has seen
/// every seq before it. It is taken last in every transaction, after any thread
/// lock, so it adds no lock cycle.
pub(super) const TAKE_EVENT_SEQS: &str = "UPDATE event_counter SET last = last + $1 WHERE id = 1 RETURNING last";

pub(super) const INSERT_EVENT: &str = "INSERT INTO events \
     (seq, id, kind, thread_id, thread_seq, user_id, created_at, next_attempt_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)";

const EVENT_COLUMNS: &str = "e.seq, e.id, e.kind, e.thread_id, e.thread_seq, e.user_id, e.created_at, e.attempts";

/// Events after a cursor, oldest first (the replay route).
pub(super) fn select_after() -> String {
    format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2")
}

/// The oldest events that may be sent now: due, and not of a thread that has an
/// event waiting for a retry (events of a thread go in order). A thread's waiting
/// event is always its oldest pending one: the events after it are not tried
/// while it waits. Only a tried event waits: one recorded a moment after this
/// round's `now` is not yet due, but must not hold its thread back (a busy thread
/// would never be sent). The waiting threads are a small set found by their
/// index, so the query costs the same however large the backlog; a correlated
/// `NOT EXISTS` per candidate made PostgreSQL scan the backlog once per row.
pub(super) fn select_due() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events e \
         WHERE e.delivered_at IS NULL AND e.failed_at IS NULL AND e.next_attempt_at <= $1 \
         AND e.thread_id NOT IN (SELECT b.thread_id FROM events b \
             WHERE b.delivered_at IS NULL AND b.failed_at IS NULL AND b.next_attempt_at > $1 AND b.attempts > 0) \
         ORDER BY e.seq LIMIT $2"
    )
}

pub(super) const DELIVERED: &str = "UPDATE events SET delivered_at = $2, attempts = attempts + 1 WHERE seq = $1";
pub(super) const RETRY: &str =
    "UPDATE events SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE seq = $1";
pub(super) const GAVE_UP: &str =
    "UPDATE events SET attempts = attempts + 1, failed_at = $2, last_error = $3 WHERE seq = $1";
/// Takes or renews the one delivery lease: free when it lapsed, or already ours.
pub(super) const TAKE_LEASE: &str =
    "UPDATE event_lease SET holder = $1, until = $3 WHERE id = 1 AND (holder = $1 OR until < $2)";
/// Forgets what was sent (or given up) before the retention window.
pub(super) const PRUNE: &str =
    "DELETE FROM events WHERE created_at < $1 AND (delivered_at IS NOT NULL OR failed_at IS NOT NULL)";
pub(super) const BACKLOG: &str =
    "SELECT COUNT(*), MIN(created_at) FROM events WHERE delivered_at IS NULL AND failed_at IS NULL";

#[derive(FromRow)]
pub(super) struct EventRow {
    seq: i64,
    id: Uuid,
    kind: String,
    thread_id: Uuid,
    thread_seq: Option<i64>,
    user_id: Option<i64>,
    created_at: i64,
    attempts: i64,
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self> {
        Ok(Self {
            seq: r.seq,
            id: r.id,
            kind: EventKind::parse(&r.kind)?,
            thread_id: ThreadId(r.thread_id),
            thread_seq: r.thread_seq.map(Seq),
            user_id: r.user_id.map(UserId),
            created_at: created_at(r.created_at)?,
            attempts: u32::try_from(r.attempts).map_err(|_| corrupt("events.attempts"))?,
        })
    }
}

/// An event's stored `created_at`; one no timestamp can show is a corrupt row.
pub(super) fn created_at(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millis(ms).ok_or_else(|| corrupt("events.created_at"))
}

/// How many seqs `events` take from the counter (`TAKE_EVENT_SEQS`); the first of
/// them is the counter's answer less this, plus one.
pub(super) fn seq_count(events: &[NewEvent]) -> Result<i64> {
    i64::try_from(events.len()).map_err(|e| StoreError::Other(Box::new(e)))
}

/// The SQL and binds of one delivery outcome.
pub(super) fn delivery_update(outcome: &Delivery, now: Timestamp) -> (&'static str, i64, Option<&str>) {
    match outcome {
        Delivery::Delivered => (DELIVERED, now.millis(), None),
        Delivery::Retry { at, error } => (RETRY, at.millis(), Some(error.as_str())),
        Delivery::GaveUp { error } => (GAVE_UP, now.millis(), Some(error.as_str())),
    }
}
