//! Where a page starts: [`Cursor`] in a thread's messages (by seq), and the
//! inbox's keyset cursor, where a page of threads ends in the inbox order
//! (activity, then id, both descending), opaque to clients: base64url of the pair.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{Seq, ThreadId, ValidationError};

/// Where a page of messages starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The newest messages.
    Latest,
    /// The messages right after this seq.
    After(Seq),
    /// The messages right before this seq.
    Before(Seq),
    /// The first messages strictly between the two seqs.
    Between(Seq, Seq),
}

impl Cursor {
    /// The open seq range `(lower, upper)` a page reads, and whether it reads from
    /// the top (the newest first, reversed afterwards).
    pub fn range(self) -> (i64, i64, bool) {
        match self {
            Self::Latest => (i64::MIN, i64::MAX, true),
            Self::Before(s) => (i64::MIN, s.0, true),
            Self::After(s) => (s.0, i64::MAX, false),
            Self::Between(a, b) => (a.0, b.0, false),
        }
    }
}

/// The position just after a thread in the inbox order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxCursor {
    pub activity: i64,
    pub id: ThreadId,
}

/// 8 bytes of activity then the 16 of the thread id.
const ENCODED_LEN: usize = 24;

impl InboxCursor {
    /// The string a client sends back as `?cursor=`.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; ENCODED_LEN];
        bytes[..8].copy_from_slice(&self.activity.to_be_bytes());
        bytes[8..].copy_from_slice(self.id.0.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// # Errors
    /// Anything that is not a cursor this server made.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("cursor is malformed; send back the `next` of the previous page");
        let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| bad())?;
        let bytes: [u8; ENCODED_LEN] = bytes.try_into().map_err(|_| bad())?;
        let (activity, id) = bytes.split_at(8);
        let activity = i64::from_be_bytes(activity.try_into().map_err(|_| bad())?);
        let id = uuid::Uuid::from_slice(id).map_err(|_| bad())?;
        Ok(Self { activity, id: ThreadId(id) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_its_round_trip_and_garbage_is_refused() {
        let cursor = InboxCursor { activity: 1_234_567, id: ThreadId::generate() };
        let text = cursor.encode();
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{text}");
        assert_eq!(InboxCursor::parse(&text), Ok(cursor));
        for bad in ["", "abc", "!!!!", &text[1..], &format!("{text}AA")] {
            assert!(InboxCursor::parse(bad).is_err(), "{bad:?}");
        }
    }
}
