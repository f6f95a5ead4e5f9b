//! What the bus carries between nodes: events of threads, addressed to their
//! participants, and the connection ids that route an ack back to its sender.

use std::sync::Arc;

use crate::domain::{ErrorCode, Message, Seq, ThreadId, User, UserId};

/// One live connection of a user, unique across nodes (a random node prefix in the
/// high bits), so an event can name the connection that must get the ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(pub u64);

/// Who gets the `message_ack` of a message sent over a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ack {
    pub user: UserId,
    pub connection: ConnectionId,
    pub client_msg_id: Option<Arc<str>>,
}

/// What happens in a thread that its participants' live connections must hear of.
/// The bus carries these; it is a doorbell, not the truth: a lost event is
/// recovered by `sync` from the store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A stored message: `new_message` to every connection of `recipients` except
    /// the acked one, which gets `message_ack`.
    Message { message: Arc<Message>, recipients: Arc<[UserId]>, ack: Option<Ack> },
    /// `user` is typing in `thread_id` (sent to the other participants only).
    Typing { thread_id: ThreadId, user: User, recipients: Arc<[UserId]> },
    /// `user_id` has read `thread_id` up to `up_to_seq` (sent to the other participants only).
    Read { thread_id: ThreadId, user_id: UserId, up_to_seq: Seq, recipients: Arc<[UserId]> },
    /// A message sent over a WebSocket was refused after it was queued.
    Refused { user: UserId, connection: ConnectionId, code: ErrorCode, detail: String, client_msg_id: Option<Arc<str>> },
}

impl Event {
    /// The same event addressed to `user` alone: what a node delivers when it hears
    /// the event on `user`'s channel, so a node that holds several recipients still
    /// delivers each of them exactly once.
    pub fn only_for(&self, user: UserId) -> Option<Self> {
        let only: Arc<[UserId]> = Arc::new([user]);
        match self {
            Self::Message { message, recipients, .. } if recipients.contains(&user) => {
                Some(Self::Message { message: message.clone(), recipients: only, ack: None })
            }
            Self::Typing { thread_id, user: who, recipients } if recipients.contains(&user) => {
                Some(Self::Typing { thread_id: *thread_id, user: who.clone(), recipients: only })
            }
            Self::Read { thread_id, user_id, up_to_seq, recipients } if recipients.contains(&user) => {
                Some(Self::Read { thread_id: *thread_id, user_id: *user_id, up_to_seq: *up_to_seq, recipients: only })
            }
            _ => None,
        }
    }

    /// The users whose channels carry this event to other nodes (none for a refusal,
    /// which only the sending connection's node needs).
    pub fn recipients(&self) -> &[UserId] {
        match self {
            Self::Message { recipients, .. } | Self::Typing { recipients, .. } | Self::Read { recipients, .. } => {
                recipients
            }
            Self::Refused { .. } => &[],
        }
    }
}
