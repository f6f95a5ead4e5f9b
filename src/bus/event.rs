//! What the bus carries between nodes: events of threads, addressed to their
//! participants, and the connection ids that route an ack back to its sender.

use std::fmt;
use std::sync::Arc;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

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
/// Written by serde's derive; read by hand ([`Event::deserialize`]), in the same shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// Reads what the derived `Serialize` writes, without serde's buffering: a derived
/// internally tagged enum first copies the whole object into serde's private
/// `Content` (every string allocated), then reads the variant from that copy. On
/// two nodes under a closed loop that copy was 3.9% of the nodes' CPU
/// (`docs/benchmarks.md`, 2026-12-07, twelfth session). Serde writes the tag first,
/// so the fields after it are read straight into the variant; an object whose
/// `kind` comes later (another encoder) is buffered, and read the same way.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EventVisitor)
    }
}

/// An event's `kind`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Message,
    Typing,
    Read,
    Refused,
}

/// The fields of each kind, as [`Event`] names them.
#[derive(Deserialize)]
struct MessageFields {
    message: Arc<Message>,
    recipients: Arc<[UserId]>,
    ack: Option<Ack>,
}

#[derive(Deserialize)]
struct TypingFields {
    thread_id: ThreadId,
    user: User,
    recipients: Arc<[UserId]>,
}

#[derive(Deserialize)]
struct ReadFields {
    thread_id: ThreadId,
    user_id: UserId,
    up_to_seq: Seq,
    recipients: Arc<[UserId]>,
}

#[derive(Deserialize)]
struct RefusedFields {
    user: UserId,
    connection: ConnectionId,
    code: ErrorCode,
    detail: String,
    client_msg_id: Option<Arc<str>>,
}

impl Kind {
    /// The event of this kind from `fields`, a map of the event's other fields.
    fn read<'de, D: Deserializer<'de>>(self, fields: D) -> Result<Event, D::Error> {
        Ok(match self {
            Self::Message => {
                let MessageFields { message, recipients, ack } = MessageFields::deserialize(fields)?;
                Event::Message { message, recipients, ack }
            }
            Self::Typing => {
                let TypingFields { thread_id, user, recipients } = TypingFields::deserialize(fields)?;
                Event::Typing { thread_id, user, recipients }
            }
            Self::Read => {
                let ReadFields { thread_id, user_id, up_to_seq, recipients } = ReadFields::deserialize(fields)?;
                Event::Read { thread_id, user_id, up_to_seq, recipients }
            }
            Self::Refused => {
                let RefusedFields { user, connection, code, detail, client_msg_id } =
                    RefusedFields::deserialize(fields)?;
                Event::Refused { user, connection, code, detail, client_msg_id }
            }
        })
    }
}

/// An object's first key: whether it is `kind`.
enum FirstKey {
    Kind,
    Other(String),
}

impl<'de> Deserialize<'de> for FirstKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = FirstKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<FirstKey, E> {
                Ok(if key == "kind" { FirstKey::Kind } else { FirstKey::Other(key.to_owned()) })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event: an object with its `kind`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let first = match map.next_key::<FirstKey>()? {
            Some(FirstKey::Kind) => return map.next_value::<Kind>()?.read(MapAccessDeserializer::new(map)),
            Some(FirstKey::Other(key)) => key,
            None => return Err(de::Error::missing_field("kind")),
        };
        let mut object = serde_json::Map::new();
        object.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            object.insert(key, value);
        }
        let kind = object.remove("kind").ok_or_else(|| de::Error::missing_field("kind"))?;
        let kind = Kind::deserialize(kind).map_err(de::Error::custom)?;
        kind.read(serde_json::Value::Object(object)).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MessageId, MessageKind, Role, Timestamp, UserRef};

    fn message() -> Arc<Message> {
        Arc::new(Message {
            id: MessageId::generate(),
            thread_id: ThreadId(uuid::Uuid::now_v7()),
            seq: Seq(7),
            kind: MessageKind::User,
            sender: Some(UserRef { id: UserId(1), username: "ann".into(), full_name: "Ann \"A\" Lee".into() }),
            recipient: Some(UserRef { id: UserId(2), username: "bob".into(), full_name: "".into() }),
            text: "hi \u{e9}\n\"there\"".into(),
            metadata: serde_json::json!({"job": {"id": 3}}),
            timestamp: Timestamp::from_millis(1_700_000_000_123).unwrap(),
            is_read: false,
            client_msg_id: Some("k-1".into()),
        })
    }

    fn every_kind() -> Vec<Event> {
        let recipients: Arc<[UserId]> = Arc::new([UserId(1), UserId(2)]);
        let thread_id = ThreadId(uuid::Uuid::now_v7());
        vec![
            Event::Message {
                message: message(),
                recipients: recipients.clone(),
                ack: Some(Ack { user: UserId(1), connection: ConnectionId(9), client_msg_id: Some("k-1".into()) }),
            },
            Event::Message { message: message(), recipients: recipients.clone(), ack: None },
            Event::Typing {
                thread_id,
                user: User {
                    id: UserId(1),
                    username: "ann".into(),
                    full_name: "Ann".into(),
                    role: Role::Client,
                    external_id: Some("ext-1".into()),
                },
                recipients: recipients.clone(),
            },
            Event::Read { thread_id, user_id: UserId(2), up_to_seq: Seq(5), recipients },
            Event::Refused {
                user: UserId(1),
                connection: ConnectionId(u64::MAX),
                code: ErrorCode::Conflict,
                detail: "taken".into(),
                client_msg_id: None,
            },
        ]
    }

    #[test]
    fn every_kind_reads_back_as_written() {
        for event in every_kind() {
            let json = serde_json::to_string(&event).unwrap();
            assert!(json.starts_with(r#"{"kind":"#), "{json}");
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event, "{json}");
        }
    }

    #[test]
    fn an_event_whose_kind_comes_last_reads_the_same() {
        for event in every_kind() {
            let written = serde_json::to_string(&event).unwrap();
            let (kind, rest) = written.strip_prefix('{').unwrap().split_once(',').unwrap();
            let json = format!("{{{},{kind}}}", rest.strip_suffix('}').unwrap());
            assert!(json.ends_with(&format!(",{kind}}}")) && !json.starts_with(r#"{"kind""#), "{json}");
            assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), event, "{json}");
        }
    }

    #[test]
    fn fields_it_does_not_know_are_ignored_as_before() {
        let event = every_kind().remove(3);
        let mut object = serde_json::to_value(&event).unwrap();
        object.as_object_mut().unwrap().insert("added_later".into(), serde_json::json!([1, {"a": null}]));
        assert_eq!(serde_json::from_value::<Event>(object).unwrap(), event);
    }

    #[test]
    fn an_event_without_its_kind_or_fields_is_an_error() {
        for json in [
            r#"{}"#,
            r#"{"recipients":[1]}"#,
            r#"{"kind":"unknown","recipients":[1]}"#,
            r#"{"recipients":[1],"kind":"unknown"}"#,
            r#"{"kind":"read","thread_id":"x"}"#,
            r#"{"kind":"read"}"#,
            r#"[1]"#,
        ] {
            assert!(serde_json::from_str::<Event>(json).is_err(), "{json}");
        }
    }
}
