//! The use-cases: register and sign in, the marketplace, Hire Me and proposals,
//! sending, reading and paging messages. REST and WebSocket both call these, so
//! authorization, idempotency and seq are written once. Talks only to the `Store`
//! trait; imports no axum, sqlx or redis.

mod accounts;
mod marketplace;
mod members;
mod messaging;
mod workflows;

use std::sync::Arc;

use crate::domain::{ErrorCode, Thread, ValidationError};
use crate::store::{Store, StoreError};

pub use accounts::Registration;
pub use messaging::{SendTarget, Sent, UnreadTotals};
pub use workflows::{Opening, ProposalSubmitted};

use members::Members;

/// The bounds a deployment can tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest message text in characters: long enough for any chat message, short
    /// enough that one message cannot balloon every recipient's memory.
    pub max_text_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_text_chars: 4000 }
    }
}

/// The application's use-cases over a store.
#[derive(Clone)]
pub struct Chat {
    store: Arc<dyn Store>,
    limits: Limits,
    members: Arc<Members>,
}

impl Chat {
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Self {
        Self { store, limits, members: Arc::new(Members::default()) }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// Where a Hire Me or proposal sends the browser.
pub fn redirect_url(thread: &Thread) -> String {
    format!("/dashboard/inbox/{}", thread.id)
}

/// Why a use-case failed: a refusal with the contract's code, or a fault of ours.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{code}: {detail}")]
    Rejected { code: ErrorCode, detail: String },
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn rejected(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::Rejected { code, detail: detail.into() }
    }

    pub fn not_found(what: &str) -> Self {
        Self::rejected(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::rejected(ErrorCode::Forbidden, detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::rejected(ErrorCode::ValidationFailed, detail)
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Rejected { code, .. } => *code,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// What the client is told: the refusal's reason, never an internal cause.
    pub fn detail(&self) -> String {
        match self {
            Self::Rejected { detail, .. } => detail.clone(),
            Self::Unavailable(_) => "the database is unavailable; try again shortly".to_owned(),
            Self::Internal(_) => "internal server error".to_owned(),
        }
    }
}

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Self::validation(e.detail())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::rejected(ErrorCode::Conflict, format!("already exists ({what})")),
            StoreError::NotFound(what) => Self::not_found(what),
            e @ StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Other(e) => Self::Internal(e),
        }
    }
}
