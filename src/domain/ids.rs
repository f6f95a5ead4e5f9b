use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ValidationError;

/// A user's id: the contract's integer ids, kept from the original system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

/// A job's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

/// A thread's id: a UUIDv7, so ids sort by creation and index well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ThreadId(pub Uuid);

/// A message's id: a UUIDv7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub Uuid);

/// A message's position in its thread: 1, 2, 3… with no gaps. Clients order, page
/// and resume by it, never by timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Seq(pub i64);

impl ThreadId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses a thread id from a path or frame; any malformed id is simply not found.
    pub fn parse(s: &str) -> Option<Self> {
        Uuid::parse_str(s).ok().map(Self)
    }
}

impl MessageId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl std::fmt::Display for ThreadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Ids arrive from clients as JSON integers; zero and negatives name nothing.
fn positive(value: i64, what: &str) -> Result<i64, ValidationError> {
    if value > 0 { Ok(value) } else { Err(ValidationError::new(format!("{what} must be a positive integer"))) }
}

impl UserId {
    /// # Errors
    /// Zero or negative ids.
    pub fn parse(value: i64, what: &str) -> Result<Self, ValidationError> {
        positive(value, what).map(Self)
    }
}

impl JobId {
    /// # Errors
    /// Zero or negative ids.
    pub fn parse(value: i64, what: &str) -> Result<Self, ValidationError> {
        positive(value, what).map(Self)
    }
}

/// The sender's idempotency key: a repeated key returns the first message. Shared,
/// not copied: the stored message, its ack's routing and the sending connection's
/// wait for the ack all hold the one key the frame brought.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientMsgId(Arc<str>);

impl ClientMsgId {
    /// Long enough for a UUID with a prefix; a bound so keys cannot bloat the index.
    pub const MAX_CHARS: usize = 100;

    /// # Errors
    /// An empty key, one over 100 characters, or one with control characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        // Keys are nearly always ASCII, where a character is a byte and the control
        // characters are those below 0x20 and DEL: one quick pass instead of two of
        // decoding characters.
        let fits = if s.is_ascii() {
            s.len() <= Self::MAX_CHARS && !s.bytes().any(|b| b.is_ascii_control())
        } else {
            s.chars().count() <= Self::MAX_CHARS && !s.chars().any(char::is_control)
        };
        if s.is_empty() || !fits {
            return Err(ValidationError::new("client_msg_id must be 1 to 100 printable characters"));
        }
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> Arc<str> {
        self.0
    }

    /// Another handle on the same key, for a holder that outlives this one (no copy).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_1_to_100_printable_characters_ascii_or_not() {
        let fits = |s: &str| ClientMsgId::parse(s).is_ok();
        for ok in ["c-1", " ", "k \"1\" / \\", &"x".repeat(100), &"é".repeat(100), "\u{1F600}", "a\u{a0}b"] {
            assert!(fits(ok), "{ok:?}");
        }
        let refused =
            ["", &"x".repeat(101), &"é".repeat(101), "a\nb", "\u{0}", "tab\t", "del\u{7f}", "c1\u{85}", "é\u{1f}"];
        for bad in refused {
            assert!(!fits(bad), "{bad:?}");
        }
        assert_eq!(ClientMsgId::parse("c-1").unwrap().as_str(), "c-1");
    }
}
