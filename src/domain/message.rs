use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Job, MessageId, Participant, Person, Seq, ThreadId, Timestamp, User, UserId, UserRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    User,
    System,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::System => "system",
        }
    }

    /// The kind [`Self::as_str`] names; `None` for anything else (a corrupt row).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

/// A message as stored. `actor_id` is who caused it: the sender of a user message,
/// the user whose action produced a system message. A message is never unread for
/// its own actor.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    pub id: MessageId,
    pub thread_id: ThreadId,
    pub seq: Seq,
    pub kind: MessageKind,
    pub sender_id: Option<UserId>,
    pub actor_id: Option<UserId>,
    pub text: String,
    pub metadata: serde_json::Value,
    pub client_msg_id: Option<Arc<str>>,
    pub created_at: Timestamp,
}

impl MessageRecord {
    /// A new user message taking `seq` in its thread.
    pub fn user(thread_id: ThreadId, seq: Seq, sender: UserId, text: String, client_msg_id: Option<Arc<str>>) -> Self {
        Self {
            id: MessageId::generate(),
            thread_id,
            seq,
            kind: MessageKind::User,
            sender_id: Some(sender),
            actor_id: Some(sender),
            text,
            metadata: json!({}),
            client_msg_id,
            created_at: Timestamp::now(),
        }
    }

    /// A new system message taking `seq` in its thread.
    pub fn system(thread_id: ThreadId, seq: Seq, message: SystemMessage, created_at: Timestamp) -> Self {
        Self {
            id: MessageId::generate(),
            thread_id,
            seq,
            kind: MessageKind::System,
            sender_id: None,
            actor_id: Some(message.actor),
            text: message.text,
            metadata: message.metadata,
            client_msg_id: None,
            created_at,
        }
    }
}

/// The contract's Message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    #[schema(value_type = String, format = Uuid)]
    pub id: MessageId,
    #[schema(value_type = String, format = Uuid)]
    pub thread_id: ThreadId,
    #[schema(value_type = i64)]
    pub seq: Seq,
    pub kind: MessageKind,
    pub sender: Option<UserRef>,
    pub recipient: Option<UserRef>,
    pub text: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: Timestamp,
    pub is_read: bool,
    #[schema(value_type = Option<String>)]
    pub client_msg_id: Option<Arc<str>>,
}

impl Message {
    /// Builds the view of a message from its thread's participants and their read
    /// markers. `recipient` is the other person of a two-person thread; `is_read`
    /// says every participant other than the actor has read up to it.
    pub fn view(record: MessageRecord, participants: &[Participant]) -> Self {
        let is_read =
            participants.iter().filter(|p| Some(p.user.id) != record.actor_id).all(|p| p.last_read_seq >= record.seq);
        Self::build(record, participants.iter().map(|p| &p.user), is_read)
    }

    /// The view of a message that was just stored: nobody else can have read it yet.
    pub fn fresh<'a, P: Person + 'a>(record: MessageRecord, users: impl IntoIterator<Item = &'a P> + Clone) -> Self {
        let actor = record.actor_id;
        let is_read = !users.clone().into_iter().any(|u| Some(u.id()) != actor);
        Self::build(record, users, is_read)
    }

    fn build<'a, P: Person + 'a>(
        record: MessageRecord,
        users: impl IntoIterator<Item = &'a P> + Clone,
        is_read: bool,
    ) -> Self {
        let find = |id: Option<UserId>| id.and_then(|id| users.clone().into_iter().find(|u| u.id() == id));
        let sender = find(record.sender_id).map(P::to_ref);
        let mut everyone = users.clone().into_iter();
        let recipient = match (everyone.next(), everyone.next(), everyone.next()) {
            (Some(a), Some(b), None) => {
                let from = record.actor_id.or(record.sender_id);
                if Some(a.id()) == from { Some(b.to_ref()) } else { Some(a.to_ref()) }
            }
            _ => None,
        };
        Self {
            id: record.id,
            thread_id: record.thread_id,
            seq: record.seq,
            kind: record.kind,
            sender,
            recipient,
            text: record.text,
            metadata: record.metadata,
            timestamp: record.created_at,
            is_read,
            client_msg_id: record.client_msg_id,
        }
    }
}

/// A message the server writes into a thread when a workflow creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemMessage {
    pub actor: UserId,
    pub text: String,
    pub metadata: serde_json::Value,
}

impl SystemMessage {
    /// The first message of a thread a client opened with Hire Me (seed text).
    pub fn hire(client: &User, freelancer: &User) -> Self {
        Self {
            actor: client.id,
            text: format!("Client {} started a conversation with you", client.full_name),
            metadata: json!({
                "action": "hire_freelancer",
                "client_id": client.id,
                "client_name": client.full_name,
                "freelancer_id": freelancer.id,
                "freelancer_name": freelancer.full_name,
            }),
        }
    }

    /// The first message of a job thread a freelancer opened with a proposal (seed text).
    pub fn proposal(freelancer: &User, job: &Job) -> Self {
        Self {
            actor: freelancer.id,
            text: format!("Freelancer {} has submitted a proposal for job: {}", freelancer.full_name, job.title),
            metadata: json!({
                "action": "proposal",
                "job_id": job.id,
                "job_title": job.title,
                "freelancer_id": freelancer.id,
                "freelancer_name": freelancer.full_name,
                "client_id": job.client.id,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Role, ThreadId};

    fn user(id: i64) -> User {
        User {
            id: UserId(id),
            username: format!("u{id}"),
            full_name: format!("U {id}"),
            role: Role::Client,
            external_id: None,
        }
    }

    fn record(seq: i64, sender: Option<i64>, actor: Option<i64>) -> MessageRecord {
        MessageRecord {
            id: MessageId::generate(),
            thread_id: ThreadId::generate(),
            seq: Seq(seq),
            kind: if sender.is_some() { MessageKind::User } else { MessageKind::System },
            sender_id: sender.map(UserId),
            actor_id: actor.map(UserId),
            text: "hi".to_owned(),
            metadata: json!({}),
            client_msg_id: None,
            created_at: Timestamp::from_millis(0).unwrap(),
        }
    }

    #[test]
    fn a_message_is_read_once_every_other_participant_has_read_past_it() {
        let parts = |a, b| {
            vec![
                Participant { user: user(1), last_read_seq: Seq(a) },
                Participant { user: user(2), last_read_seq: Seq(b) },
            ]
        };
        let m = Message::view(record(3, Some(1), Some(1)), &parts(0, 2));
        assert!(!m.is_read);
        assert_eq!(m.recipient.map(|r| r.id), Some(UserId(2)));
        assert!(Message::view(record(3, Some(1), Some(1)), &parts(0, 3)).is_read);
    }

    #[test]
    fn a_system_message_is_addressed_to_the_participant_who_did_not_cause_it() {
        let users = [user(1), user(2)];
        let m = Message::fresh(record(1, None, Some(1)), &users);
        assert_eq!(m.sender, None);
        assert_eq!(m.recipient.map(|r| r.id), Some(UserId(2)));
        assert!(!m.is_read);
    }
}
