//! Sending, typing, paging, reading and counting messages.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::committer::{Job, Reply, SendJob};
use super::members::ThreadMembers;
use super::{Chat, Error, Result};
use crate::bus::{Ack, ConnectionId, Event};
use crate::domain::{
    ClientMsgId, Cursor, ErrorCode, InboxCursor, Message, MessageText, Page, Seq, Thread, ThreadId, User, UserId,
};
use crate::store::{InboxFrom, NewMessage, OpenThread, ReadMarker, ThreadKey};

/// Where a message goes: a thread, or the direct thread with a user (created if needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendTarget {
    Thread(ThreadId),
    Recipient(UserId),
}

/// A message that is stored: `duplicate` when its `client_msg_id` had been used, in
/// which case `message` is the first one and nothing new was written.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: Message,
    pub duplicate: bool,
}

/// A send that passed every check made before storing, ready to queue.
#[derive(Debug)]
pub struct PreparedSend {
    new: NewMessage,
    members: Arc<ThreadMembers>,
}

impl PreparedSend {
    /// The thread it goes into (for a `recipient_id` send, the pair's direct thread).
    pub fn thread_id(&self) -> ThreadId {
        self.new.thread_id
    }

    /// Its key, shared with the message (the sending connection awaits its ack by it).
    pub fn client_msg_id(&self) -> Option<Arc<str>> {
        self.new.client_msg_id.as_ref().map(ClientMsgId::shared)
    }

    /// The committer's job for it, acknowledged on `connection`.
    fn acked_on(self, connection: ConnectionId) -> Job {
        let ack = Ack { user: self.new.sender, connection, client_msg_id: self.client_msg_id() };
        Job::Send(SendJob { new: self.new, members: self.members, reply: Reply::Connection(ack) })
    }
}

/// How far [`Chat::prepare_send_now`] got.
#[derive(Debug)]
pub enum Preparing {
    /// Every check passed: ready to submit.
    Ready(PreparedSend),
    /// Every check passed but the thread's, which needs the store
    /// ([`Chat::finish_prepare`]).
    Pending(PendingSend),
}

/// A send whose thread or members are not cached yet.
#[derive(Debug)]
pub struct PendingSend {
    sender: UserId,
    target: SendTarget,
    text: String,
    client_msg_id: Option<ClientMsgId>,
}

/// `members` when `user` is one of them; outsiders are never told that a thread exists.
fn member_of(members: Arc<ThreadMembers>, user: UserId) -> Result<Arc<ThreadMembers>> {
    if members.contains(user) { Ok(members) } else { Err(Error::not_found("thread")) }
}

/// A send refused because the committer is gone: the server is stopping.
fn shutting_down() -> Error {
    Error::rejected(ErrorCode::Unavailable, "the server is shutting down; send again")
}

/// A page of the inbox and the cursor of the page after it (`None` on the last).
#[derive(Debug, Clone)]
pub struct Inbox {
    pub page: Page<Thread>,
    pub next: Option<InboxCursor>,
}

/// What a `sync` must replay: each thread with a message after the seq the client
/// named, with that seq; and the last seq of every thread the user is in, so the
/// connection knows where each thread stands once the replay is done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    pub replay: Vec<(ThreadId, Seq)>,
    pub heads: Vec<(ThreadId, Seq)>,
}

/// Unread counts across a user's threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadTotals {
    pub total: i64,
    pub threads: BTreeMap<ThreadId, i64>,
}

impl Chat {
    /// The participants of a thread that `user` is in, from the cache when possible.
    ///
    /// # Errors
    /// `not_found` when the thread does not exist or `user` is not in it: outsiders
    /// are never told that a thread exists.
    async fn members_for(&self, thread: ThreadId, user: UserId) -> Result<Arc<ThreadMembers>> {
        let members = match self.members.get(thread) {
            Some(m) => m,
            None => {
                let users: Vec<User> = self.store().participants(thread).await?.into_iter().map(|p| p.user).collect();
                if users.is_empty() {
                    return Err(Error::not_found("thread"));
                }
                self.members.insert(thread, users)
            }
        };
        member_of(members, user)
    }

    fn check_rate(&self, user: &User) -> Result<()> {
        if self.rate.allow(user.id) {
            Ok(())
        } else {
            Err(Error::rejected(ErrorCode::RateLimited, "too many messages; slow down"))
        }
    }

    /// Validates a send and finds its thread and participants: everything that can
    /// be refused before storing.
    ///
    /// # Errors
    /// `rate_limited`; `payload_too_large` for text over the limit;
    /// `validation_failed` for empty text or a bad `client_msg_id`; `not_found` for a
    /// thread the sender is not in or an unknown recipient.
    pub async fn prepare_send(
        &self,
        sender: &User,
        target: SendTarget,
        text: String,
        client_msg_id: Option<&str>,
    ) -> Result<PreparedSend> {
        match self.prepare_send_now(sender, target, text, client_msg_id)? {
            Preparing::Ready(prepared) => Ok(prepared),
            Preparing::Pending(pending) => self.finish_prepare(pending).await,
        }
    }

    /// [`Chat::prepare_send`] as far as it goes without the store: all of it when
    /// the thread and its members are cached, as they are for every send but a
    /// pair's or a thread's first. A WebSocket send that ends here costs its
    /// connection no future (`ws::session`).
    ///
    /// # Errors
    /// Those of [`Chat::prepare_send`]; a `Pending` send has passed all but the
    /// thread's.
    pub fn prepare_send_now(
        &self,
        sender: &User,
        target: SendTarget,
        text: String,
        client_msg_id: Option<&str>,
    ) -> Result<Preparing> {
        self.check_rate(sender)?;
        let text = MessageText::parse(text, self.limits.max_text_chars)?.into_inner();
        let client_msg_id = client_msg_id.map(ClientMsgId::parse).transpose()?;
        let thread_id = match target {
            SendTarget::Thread(id) => Some(id),
            SendTarget::Recipient(to) => self.members.direct(sender.id, to),
        };
        let sender = sender.id;
        match thread_id.and_then(|id| Some((id, self.members.get(id)?))) {
            Some((thread_id, members)) => {
                let members = member_of(members, sender)?;
                Ok(Preparing::Ready(PreparedSend {
                    new: NewMessage { thread_id, sender, text, client_msg_id },
                    members,
                }))
            }
            None => Ok(Preparing::Pending(PendingSend { sender, target, text, client_msg_id })),
        }
    }

    /// The rest of [`Chat::prepare_send`]: the thread and its members, read from
    /// the store.
    ///
    /// # Errors
    /// `not_found` for a thread the sender is not in or an unknown recipient.
    pub async fn finish_prepare(&self, pending: PendingSend) -> Result<PreparedSend> {
        let PendingSend { sender, target, text, client_msg_id } = pending;
        let thread_id = match target {
            SendTarget::Thread(id) => id,
            SendTarget::Recipient(to) => self.direct_thread_with(sender, to).await?,
        };
        let members = self.members_for(thread_id, sender).await?;
        Ok(PreparedSend { new: NewMessage { thread_id, sender, text, client_msg_id }, members })
    }

    pub(super) async fn enqueue(&self, job: Job) -> Result<()> {
        self.sends.send(job).await.map_err(|_| shutting_down())
    }

    /// Stores a message and delivers it to every participant's connections; it is
    /// committed before this returns.
    ///
    /// # Errors
    /// Those of [`Chat::prepare_send`]; `conflict` for a `client_msg_id` already used
    /// in this thread with another text.
    pub async fn send_message(
        &self,
        sender: &User,
        target: SendTarget,
        text: String,
        client_msg_id: Option<String>,
    ) -> Result<Sent> {
        let PreparedSend { new, members } = self.prepare_send(sender, target, text, client_msg_id.as_deref()).await?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::Send(SendJob { new, members, reply: Reply::Caller(tx) })).await?;
        rx.await.map_err(|_| shutting_down())?
    }

    /// Queues a message sent over a WebSocket. Once stored, the sending connection
    /// gets `message_ack` and every other connection of the participants
    /// `new_message`, in commit order; a refusal after queueing (a reused key, the
    /// database down) arrives as an [`Event::Refused`].
    ///
    /// # Errors
    /// `unavailable` when the server is shutting down.
    pub async fn submit_message(&self, prepared: PreparedSend, connection: ConnectionId) -> Result<()> {
        self.enqueue(prepared.acked_on(connection)).await
    }

    /// [`Chat::submit_message`] without waiting: `Ok(Some(prepared))` gives the send
    /// back when the committer's queue is full, for `submit_message` to wait for room.
    ///
    /// # Errors
    /// `unavailable` when the server is shutting down.
    pub fn try_submit_message(&self, prepared: PreparedSend, connection: ConnectionId) -> Result<Option<PreparedSend>> {
        let permit = match self.sends.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => return Ok(Some(prepared)),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(shutting_down()),
        };
        permit.send(prepared.acked_on(connection));
        Ok(None)
    }

    /// Tells the other participants that `user` is typing.
    ///
    /// # Errors
    /// `rate_limited`; `not_found` when `user` is not in the thread.
    pub async fn typing(&self, user: &User, thread_id: ThreadId) -> Result<()> {
        self.check_rate(user)?;
        let members = self.members_for(thread_id, user.id).await?;
        self.bus.publish(Event::Typing { thread_id, user: user.clone(), recipients: members.others(user.id) });
        Ok(())
    }

    /// The direct thread of `sender` and `to`, created (with no system message) if needed.
    async fn direct_thread_with(&self, sender: UserId, to: UserId) -> Result<ThreadId> {
        if to == sender {
            return Err(Error::validation("you cannot message yourself"));
        }
        if let Some(id) = self.members.direct(sender, to) {
            return Ok(id);
        }
        let id = match self.store().direct_thread(sender, to).await? {
            Some(id) => id,
            None => {
                self.store().user(to).await?.ok_or_else(|| Error::not_found("recipient"))?;
                let open = OpenThread { key: ThreadKey::Direct { a: sender, b: to }, first_message: None };
                self.store().open_thread(open).await?.thread_id
            }
        };
        self.members.remember_direct(sender, to, id);
        Ok(id)
    }

    /// One thread as `viewer` sees it.
    ///
    /// # Errors
    /// `not_found` when it does not exist or `viewer` is not in it.
    pub async fn thread(&self, viewer: &User, id: ThreadId) -> Result<Thread> {
        let record = self.store().thread(id, viewer.id).await?.ok_or_else(|| Error::not_found("thread"))?;
        Ok(record.into())
    }

    /// A page of `viewer`'s threads, most recent activity first.
    pub async fn inbox(&self, viewer: &User, from: InboxFrom, limit: u32) -> Result<Inbox> {
        let page = self.store().inbox(viewer.id, from, limit).await?;
        let next = if page.has_more { page.results.last().map(|t| t.cursor()) } else { None };
        Ok(Inbox { page: page.map(Thread::from), next })
    }

    /// A page of a thread's messages in seq order.
    ///
    /// # Errors
    /// `not_found` when `viewer` is not in the thread.
    pub async fn messages(&self, viewer: &User, id: ThreadId, cursor: Cursor, limit: u32) -> Result<Page<Message>> {
        // Membership from the cache and read markers from one cheap read: loading the
        // thread would count its unread messages, a cost that grows with the history
        // (15 ms a page at 20,000 unread, docs/benchmarks.md).
        self.members_for(id, viewer.id).await?;
        let participants = self.store().participants(id).await?;
        let page = self.store().messages(id, cursor, limit).await?;
        Ok(page.map(|m| Message::view(m, &participants)))
    }

    /// The messages of `viewer`'s direct thread with `other` (seed route).
    ///
    /// # Errors
    /// `not_found` for an unknown user.
    pub async fn messages_with(
        &self,
        viewer: &User,
        other: UserId,
        cursor: Cursor,
        limit: u32,
    ) -> Result<Page<Message>> {
        match self.store().direct_thread(viewer.id, other).await? {
            Some(id) => self.messages(viewer, id, cursor, limit).await,
            None => {
                self.store().user(other).await?.ok_or_else(|| Error::not_found("user"))?;
                Ok(Page { results: Vec::new(), has_more: false })
            }
        }
    }

    /// Moves `viewer`'s read marker forward (to the end by default) and tells the
    /// other participants.
    ///
    /// # Errors
    /// `rate_limited`; `validation_failed` for a negative seq; `not_found` when
    /// `viewer` is not in the thread.
    pub async fn mark_read(&self, viewer: &User, id: ThreadId, up_to: Option<i64>) -> Result<ReadMarker> {
        if up_to.is_some_and(|s| s < 0) {
            return Err(Error::validation("up_to_seq must not be negative"));
        }
        self.check_rate(viewer)?;
        let members = self.members_for(id, viewer.id).await?;
        let marker = self.store().mark_read(id, viewer.id, up_to.map(Seq)).await?;
        if marker.moved {
            self.bus.publish(Event::Read {
                thread_id: id,
                user_id: viewer.id,
                up_to_seq: marker.up_to_seq,
                recipients: members.others(viewer.id),
            });
        }
        Ok(marker)
    }

    /// The last seq of every thread `user` is in.
    pub async fn thread_heads(&self, user: &User) -> Result<Vec<(ThreadId, Seq)>> {
        Ok(self.store().thread_heads(user.id).await?)
    }

    /// What a `sync` must replay for `user`: every thread they are in with a message
    /// after the seq they name (0 for a thread they do not name). Threads they are
    /// not in are ignored.
    pub async fn sync_plan(&self, user: &User, seen: &HashMap<ThreadId, Seq>) -> Result<SyncPlan> {
        let mut heads = self.store().thread_heads(user.id).await?;
        heads.sort();
        let replay = heads
            .iter()
            .filter_map(|&(thread, last)| {
                let from = seen.get(&thread).copied().unwrap_or_default();
                (last > from).then_some((thread, from))
            })
            .collect();
        Ok(SyncPlan { replay, heads })
    }

    /// Messages from `other` to `viewer` that `viewer` has not read (seed route).
    ///
    /// # Errors
    /// `not_found` for an unknown user.
    pub async fn unread_from(&self, viewer: &User, other: UserId) -> Result<i64> {
        self.store().user(other).await?.ok_or_else(|| Error::not_found("user"))?;
        Ok(self.store().unread_from(viewer.id, other).await?)
    }

    pub async fn unread_totals(&self, viewer: &User) -> Result<UnreadTotals> {
        let threads: BTreeMap<ThreadId, i64> = self.store().unread_by_thread(viewer.id).await?.into_iter().collect();
        Ok(UnreadTotals { total: threads.values().sum(), threads })
    }
}
