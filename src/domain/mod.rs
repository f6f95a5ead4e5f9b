//! The contract's nouns and rules as plain data: users, jobs, threads, messages,
//! the validated input types and the error codes. No I/O, no async, no axum, no SQL.

mod cursor;
mod error;
pub mod flexible_id;
mod ids;
mod marketplace;
mod message;
mod text;
mod thread;
mod time;
mod user;

pub use cursor::{Cursor, InboxCursor};
pub use error::{ErrorCode, error_chain};
pub use ids::{ClientMsgId, JobId, MessageId, Seq, ThreadId, UserId};
pub use marketplace::{Freelancer, Job, JobRef, JobStatus, Money, Profile, Proposal};
pub use message::{Message, MessageKind, MessageRecord, SystemMessage};
pub use text::{FullName, LongText, MessageText, Password, ShortText, Username, ValidationError};
pub use thread::{Participant, Thread, ThreadKind, ThreadRecord};
pub use time::Timestamp;
pub use user::{Person, Role, User, UserRef};

/// A page request: the contract caps every list at 200 items so one call can never
/// make the server read an unbounded result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub offset: u64,
}

impl PageRequest {
    pub const MAX_LIMIT: u32 = 200;
    pub const DEFAULT_LIMIT: u32 = 50;

    /// Validates a client's `limit`/`offset`.
    ///
    /// # Errors
    /// A limit outside 1..=200.
    pub fn parse(limit: Option<i64>, offset: Option<i64>) -> Result<Self, ValidationError> {
        let limit = match limit {
            None => Self::DEFAULT_LIMIT,
            Some(l) if (1..=i64::from(Self::MAX_LIMIT)).contains(&l) => l as u32,
            Some(_) => return Err(ValidationError::new("limit must be between 1 and 200")),
        };
        let offset = match offset {
            None => 0,
            Some(o) if o >= 0 => o as u64,
            Some(_) => return Err(ValidationError::new("offset must not be negative")),
        };
        Ok(Self { limit, offset })
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self { limit: Self::DEFAULT_LIMIT, offset: 0 }
    }
}

/// One page of a list, in the contract's `{"results", "has_more"}` shape.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub results: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows: the extra row only says
    /// that there is more.
    pub fn from_overfetch(mut rows: Vec<T>, limit: u32) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Self { results: rows, has_more }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { results: self.results.into_iter().map(f).collect(), has_more: self.has_more }
    }
}
