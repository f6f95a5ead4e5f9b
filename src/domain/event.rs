use std::sync::Arc;

use super::{ErrorCode, Message, Seq, ThreadId, User, UserId};

/// One live connection of a user, unique across nodes (a random node prefix in the
/// high bits), so an event can name the connection that must get the ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(pub u64);

/// Who gets the `message_ack` of a message sent over a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub user: UserId,
    pub connection: ConnectionId,
    pub client_msg_id: Option<String>,
}

/// What happens in a thread that its participants' live connections must hear of.
/// The bus carries these; it is a doorbell, not the truth: a lost event is
/// recovered by `sync` from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A stored message: `new_message` to every connection of `recipients` except
    /// the acked one, which gets `message_ack`.
    Message { message: Arc<Message>, recipients: Arc<[UserId]>, ack: Option<Ack> },
    /// `user` is typing in `thread_id` (sent to the other participants only).
    Typing { thread_id: ThreadId, user: User, recipients: Arc<[UserId]> },
    /// `user_id` has read `thread_id` up to `up_to_seq` (sent to the other participants only).
    Read { thread_id: ThreadId, user_id: UserId, up_to_seq: Seq, recipients: Arc<[UserId]> },
    /// A message sent over a WebSocket was refused after it was queued.
    Refused { user: UserId, connection: ConnectionId, code: ErrorCode, detail: String, client_msg_id: Option<String> },
}
