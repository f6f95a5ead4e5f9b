//! Private row shapes shared by both backends, and their conversion into domain
//! types. `FromRow` is generic over the database, so one struct serves both.

use std::sync::Arc;

use sqlx::FromRow;
use uuid::Uuid;

use super::{Result, StoreError};
use crate::domain::{
    Freelancer, Job, JobId, JobRef, JobStatus, MessageId, MessageKind, MessageRecord, Money, Participant, Role, Seq,
    ThreadId, ThreadKind, ThreadRecord, Timestamp, User, UserId,
};

pub(super) const USER_COLUMNS: &str = "u.id, u.username, u.full_name, u.role, u.external_id";
pub(super) const FREELANCER_COLUMNS: &str =
    "u.id, u.username, u.full_name, u.role, u.external_id, u.headline, u.skills, u.hourly_rate_cents";
pub(super) const JOB_COLUMNS: &str = "j.id, j.title, j.description, j.status, j.created_at, j.external_id, \
     u.id AS client_id, u.username AS client_username, u.full_name AS client_full_name, u.role AS client_role, \
     u.external_id AS client_external_id";
pub(super) const MESSAGE_COLUMNS: &str =
    "m.id, m.thread_id, m.seq, m.kind, m.sender_id, m.actor_id, m.text, m.metadata, m.client_msg_id, m.created_at";

/// Stores one message, on both stores and the SQLite writer thread.
pub(super) const INSERT_MESSAGE: &str = "INSERT INTO messages (id, thread_id, seq, kind, sender_id, actor_id, text, metadata, client_msg_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/// Moves a read marker forward (never back), answering where it now stands.
pub(super) const MOVE_MARKER: &str = "UPDATE thread_participants SET last_read_seq = $3 \
     WHERE thread_id = $1 AND user_id = $2 AND last_read_seq < $3 RETURNING last_read_seq";

/// The system message the host stored in a thread under a key.
pub(super) fn select_system_by_key() -> String {
    format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.thread_id = $1 AND m.sender_id IS NULL AND m.client_msg_id = $2"
    )
}

/// A stored value the domain cannot hold: a bug or a damaged database, never a
/// default.
pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("corrupt row: {what}").into())
}

#[derive(FromRow)]
pub(super) struct UserRow {
    id: i64,
    username: String,
    full_name: String,
    role: String,
    external_id: Option<String>,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self> {
        Ok(Self {
            id: UserId(r.id),
            username: r.username,
            full_name: r.full_name,
            role: Role::parse(&r.role).map_err(|_| corrupt("users.role"))?,
            external_id: r.external_id,
        })
    }
}

#[derive(FromRow)]
pub(super) struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl CredentialsRow {
    pub(super) fn into_parts(self) -> Result<(User, String)> {
        Ok((self.user.try_into()?, self.password_hash))
    }
}

#[derive(FromRow)]
pub(super) struct FreelancerRow {
    #[sqlx(flatten)]
    user: UserRow,
    headline: String,
    skills: String,
    hourly_rate_cents: Option<i64>,
}

impl TryFrom<FreelancerRow> for Freelancer {
    type Error = StoreError;
    fn try_from(r: FreelancerRow) -> Result<Self> {
        Ok(Self {
            user: r.user.try_into()?,
            headline: r.headline,
            skills: serde_json::from_str(&r.skills).map_err(|_| corrupt("users.skills"))?,
            hourly_rate: r.hourly_rate_cents.map(Money::from_cents),
        })
    }
}

#[derive(FromRow)]
pub(super) struct JobRow {
    id: i64,
    title: String,
    description: String,
    status: String,
    created_at: i64,
    external_id: Option<String>,
    client_id: i64,
    client_username: String,
    client_full_name: String,
    client_role: String,
    client_external_id: Option<String>,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self> {
        let client = UserRow {
            id: r.client_id,
            username: r.client_username,
            full_name: r.client_full_name,
            role: r.client_role,
            external_id: r.client_external_id,
        };
        Ok(Self {
            id: JobId(r.id),
            title: r.title,
            description: r.description,
            client: client.try_into()?,
            status: JobStatus::parse(&r.status).ok_or_else(|| corrupt("jobs.status"))?,
            created_at: Timestamp::from_millis(r.created_at).ok_or_else(|| corrupt("jobs.created_at"))?,
            external_id: r.external_id,
        })
    }
}

#[derive(FromRow)]
pub(super) struct MessageRow {
    id: Uuid,
    thread_id: Uuid,
    seq: i64,
    kind: String,
    sender_id: Option<i64>,
    actor_id: Option<i64>,
    text: String,
    metadata: String,
    client_msg_id: Option<String>,
    created_at: i64,
}

/// A message row read by the SQLite writer's synchronous connection, in
/// [`MESSAGE_COLUMNS`]' order.
pub(super) fn sqlite_message_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        thread_id: r.get(1)?,
        seq: r.get(2)?,
        kind: r.get(3)?,
        sender_id: r.get(4)?,
        actor_id: r.get(5)?,
        text: r.get(6)?,
        metadata: r.get(7)?,
        client_msg_id: r.get(8)?,
        created_at: r.get(9)?,
    })
}

impl TryFrom<MessageRow> for MessageRecord {
    type Error = StoreError;
    fn try_from(r: MessageRow) -> Result<Self> {
        Ok(Self {
            id: MessageId(r.id),
            thread_id: ThreadId(r.thread_id),
            seq: Seq(r.seq),
            kind: MessageKind::parse(&r.kind).ok_or_else(|| corrupt("messages.kind"))?,
            sender_id: r.sender_id.map(UserId),
            actor_id: r.actor_id.map(UserId),
            text: r.text,
            metadata: serde_json::from_str(&r.metadata).map_err(|_| corrupt("messages.metadata"))?,
            client_msg_id: r.client_msg_id.map(Arc::from),
            created_at: Timestamp::from_millis(r.created_at).ok_or_else(|| corrupt("messages.created_at"))?,
        })
    }
}

#[derive(FromRow)]
pub(super) struct ParticipantRow {
    pub(super) thread_id: Uuid,
    #[sqlx(flatten)]
    user: UserRow,
    last_read_seq: i64,
}

impl TryFrom<ParticipantRow> for Participant {
    type Error = StoreError;
    fn try_from(r: ParticipantRow) -> Result<Self> {
        Ok(Self { user: r.user.try_into()?, last_read_seq: Seq(r.last_read_seq) })
    }
}

/// A thread row with the viewer's unread count and its last message (if any) joined in.
#[derive(FromRow)]
pub(super) struct ThreadRow {
    pub(super) id: Uuid,
    kind: String,
    job_id: Option<i64>,
    job_title: Option<String>,
    created_at: i64,
    activity: i64,
    unread_count: i64,
    m_id: Option<Uuid>,
    m_seq: Option<i64>,
    m_kind: Option<String>,
    m_sender_id: Option<i64>,
    m_actor_id: Option<i64>,
    m_text: Option<String>,
    m_metadata: Option<String>,
    m_client_msg_id: Option<String>,
    m_created_at: Option<i64>,
}

/// The columns a [`ThreadRow`] needs; the query joins `threads t`, `jobs j` (left)
/// and `messages m` (left, on the last seq) and computes `unread_count`.
pub(super) const THREAD_COLUMNS: &str = "t.id, t.kind, t.job_id, j.title AS job_title, t.created_at, t.activity, \
     m.id AS m_id, m.seq AS m_seq, m.kind AS m_kind, m.sender_id AS m_sender_id, m.actor_id AS m_actor_id, \
     m.text AS m_text, m.metadata AS m_metadata, m.client_msg_id AS m_client_msg_id, m.created_at AS m_created_at";

impl ThreadRow {
    pub(super) fn into_record(self, participants: Vec<Participant>) -> Result<ThreadRecord> {
        let last_message = match (self.m_id, self.m_seq, self.m_kind, self.m_text, self.m_metadata, self.m_created_at) {
            (Some(id), Some(seq), Some(kind), Some(text), Some(metadata), Some(created_at)) => Some(
                MessageRow {
                    id,
                    thread_id: self.id,
                    seq,
                    kind,
                    sender_id: self.m_sender_id,
                    actor_id: self.m_actor_id,
                    text,
                    metadata,
                    client_msg_id: self.m_client_msg_id,
                    created_at,
                }
                .try_into()?,
            ),
            _ => None,
        };
        Ok(ThreadRecord {
            id: ThreadId(self.id),
            kind: ThreadKind::parse(&self.kind).ok_or_else(|| corrupt("threads.kind"))?,
            job: match (self.job_id, self.job_title) {
                (Some(id), Some(title)) => Some(JobRef { id: JobId(id), title }),
                _ => None,
            },
            participants,
            last_message,
            unread_count: self.unread_count,
            created_at: Timestamp::from_millis(self.created_at).ok_or_else(|| corrupt("threads.created_at"))?,
            activity: self.activity,
        })
    }
}

/// Groups participant rows by thread, keeping their order.
pub(super) fn group_participants(
    rows: Vec<ParticipantRow>,
) -> Result<std::collections::HashMap<Uuid, Vec<Participant>>> {
    let mut by_thread: std::collections::HashMap<Uuid, Vec<Participant>> = std::collections::HashMap::new();
    for row in rows {
        let thread = row.thread_id;
        by_thread.entry(thread).or_default().push(row.try_into()?);
    }
    Ok(by_thread)
}
