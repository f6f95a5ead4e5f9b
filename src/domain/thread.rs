use serde::Serialize;

use super::{InboxCursor, JobRef, Message, MessageRecord, Seq, ThreadId, Timestamp, User};

/// `direct`: two people, no job; `job`: two people about one job; `group`: more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThreadKind {
    Direct,
    Job,
    Group,
}

impl ThreadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Job => "job",
            Self::Group => "group",
        }
    }

    /// The kind [`Self::as_str`] names; `None` for anything else (a corrupt row).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "job" => Some(Self::Job),
            "group" => Some(Self::Group),
            _ => None,
        }
    }
}

/// A member of a thread with how far they have read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub user: User,
    pub last_read_seq: Seq,
}

/// A thread as the store keeps it, seen by one viewer (whose unread count it carries).
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRecord {
    pub id: ThreadId,
    pub kind: ThreadKind,
    pub job: Option<JobRef>,
    pub participants: Vec<Participant>,
    pub last_message: Option<MessageRecord>,
    pub unread_count: i64,
    pub created_at: Timestamp,
    /// The thread's place in inbox order: larger is more recent.
    pub activity: i64,
}

impl ThreadRecord {
    /// The inbox cursor that continues after this thread.
    pub fn cursor(&self) -> InboxCursor {
        InboxCursor { activity: self.activity, id: self.id }
    }
}

/// The contract's Thread.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Thread {
    #[schema(value_type = String, format = Uuid)]
    pub id: ThreadId,
    pub kind: ThreadKind,
    pub job: Option<JobRef>,
    pub participants: Vec<User>,
    #[schema(no_recursion)]
    pub last_message: Option<Message>,
    pub unread_count: i64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl From<ThreadRecord> for Thread {
    fn from(r: ThreadRecord) -> Self {
        let last_message = r.last_message.map(|m| Message::view(m, &r.participants));
        Self {
            id: r.id,
            kind: r.kind,
            job: r.job,
            participants: r.participants.into_iter().map(|p| p.user).collect(),
            last_message,
            unread_count: r.unread_count,
            created_at: r.created_at,
        }
    }
}
