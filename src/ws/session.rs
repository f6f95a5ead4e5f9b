//! One WebSocket connection: a reader loop that turns frames into chat calls, and
//! a writer task that drains the connection's bounded queue with one flush per
//! wakeup. The writer delivers each message once: during a `sync` it holds live
//! messages, replays the missed ones in seq order, then releases the held ones
//! that the replay did not already cover.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use super::hub::{Closer, Delivery, Outgoing};
use super::protocol::{self, FrameError, RawFrame};
use crate::auth::TokenKind;
use crate::chat::{self, SendTarget};
use crate::domain::{ConnectionId, ErrorCode, Seq, ThreadId, User, UserId};
use crate::http::AppState;
use crate::store::Cursor;

/// Close code for a missing, expired or forged token (the contract's 4401).
const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code for a policy refusal, such as too many connections.
const CLOSE_POLICY: u16 = 1008;
/// How long a close frame may take to leave before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames written per wakeup before a flush: enough to batch a burst into few
/// syscalls, few enough that one flush is never huge.
const WRITE_BATCH: usize = 128;
/// Recently delivered messages remembered to drop a replayed duplicate.
const RECENT: usize = 4096;
/// Live messages held during one `sync`; a client that falls this far behind while
/// catching up is closed and syncs again.
const MAX_HELD: usize = 8192;
/// How long a new connection waits for the bus to subscribe for its user.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);
/// A sync replays in pages of this many messages.
const SYNC_PAGE: u32 = 200;

/// Serves one upgraded socket until it closes. `user` is `None` when the client
/// will authenticate with a first `auth` frame.
pub(crate) async fn run(socket: WebSocket, state: AppState, user: Option<User>) {
    let (mut sink, mut stream) = socket.split();
    let limits = state.config.ws;
    let user = match user {
        Some(user) => user,
        None => match timeout(limits.auth_timeout, first_frame_auth(&mut stream, &state)).await {
            Ok(Ok(user)) => user,
            Ok(Err(reason)) => return close_now(&mut sink, CLOSE_UNAUTHORIZED, reason).await,
            Err(_) => return close_now(&mut sink, CLOSE_UNAUTHORIZED, "no auth frame in time").await,
        },
    };
    let (queue, rx) = mpsc::channel(limits.queue);
    let closer = Closer::new(&state.closing);
    let Ok((registration, subscribed)) = state.hub.register(user.id, queue.clone(), closer.clone()) else {
        return close_now(&mut sink, CLOSE_POLICY, "too many connections for this user").await;
    };
    // Read no frame before other nodes' events for this user can reach this node, so
    // a client's first exchange (a ping, a sync) proves it will hear the rest.
    if let Some(subscribed) = subscribed
        && !matches!(timeout(SUBSCRIBE_WAIT, subscribed).await, Ok(Ok(())))
    {
        tracing::warn!(user = %user.id, "the bus did not confirm the subscription in time; the client may need to sync");
    }
    tracing::debug!(user = %user.id, connection = registration.id().0, "websocket connected");
    let writer = tokio::spawn(write_loop(sink, rx, closer.clone(), limits.ping_interval));
    let mut session = Session { state: &state, user: &user, connection: registration.id(), queue, closer };
    let client_closed = session.read_loop(&mut stream, &state.shutdown, limits.idle_timeout).await;
    if client_closed {
        session.closer.close(1000, "");
    }
    // On shutdown the writer is closed later, once every queued send has been stored
    // and acked (see `App::run_until_stopped`).
    let writer_done = writer.await;
    drop(registration);
    if let Err(e) = writer_done {
        tracing::error!(error = %e, "websocket writer failed");
    }
    if !client_closed {
        // The closing handshake: let the client read our close frame and answer it
        // before the socket goes, or it may see a reset instead of the close code.
        let _ = timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
    tracing::debug!(user = %user.id, "websocket closed");
}

/// The close code for a failed read: 1009 for a frame over the size limit.
fn read_error_close(e: axum::Error) -> (u16, &'static str) {
    match e.into_inner().downcast::<tungstenite::Error>().map(|e| *e) {
        Ok(tungstenite::Error::Capacity(_)) => (1009, "frame too large"),
        _ => (1002, "protocol error"),
    }
}

async fn close_now(sink: &mut SplitSink<WebSocket, WsMessage>, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = timeout(CLOSE_TIMEOUT, sink.send(WsMessage::Close(Some(frame)))).await;
}

/// Waits for `{"type":"auth","token":"…"}` and returns its user.
async fn first_frame_auth(stream: &mut SplitStream<WebSocket>, state: &AppState) -> Result<User, &'static str> {
    loop {
        let text = match stream.next().await {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            _ => return Err("expected an auth frame"),
        };
        let frame = protocol::parse(text.as_str()).map_err(|_| "expected an auth frame")?;
        let (Some("auth"), Some(token)) = (frame.kind.as_deref(), frame.token) else {
            return Err("the first frame must be {\"type\":\"auth\",\"token\":…}");
        };
        let id = state.keys.verify(&token, TokenKind::Access).map_err(|_| "invalid or expired token")?;
        return state.chat.authenticated_user(id).await.map_err(|_| "unknown user");
    }
}

struct Session<'a> {
    state: &'a AppState,
    user: &'a User,
    connection: ConnectionId,
    queue: mpsc::Sender<Outgoing>,
    closer: Closer,
}

impl Session<'_> {
    /// Reads frames until the connection ends; true when the client closed it.
    async fn read_loop(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        shutdown: &tokio_util::sync::CancellationToken,
        idle_timeout: Duration,
    ) -> bool {
        let mut deadline = Instant::now() + idle_timeout;
        loop {
            let frame = tokio::select! {
                biased;
                () = self.closer.closed() => return false,
                () = shutdown.cancelled() => return false,
                () = sleep_until(deadline) => {
                    self.closer.close(1001, "idle timeout");
                    return false;
                }
                frame = stream.next() => frame,
            };
            deadline = Instant::now() + idle_timeout;
            match frame {
                Some(Ok(WsMessage::Text(text))) => self.handle(text.as_str()).await,
                Some(Ok(WsMessage::Binary(_))) => self.error(
                    ErrorCode::ValidationFailed,
                    "binary frames are not supported; send JSON text frames",
                    None,
                ),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => return true,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    let (code, reason) = read_error_close(e);
                    self.closer.close(code, reason);
                    return false;
                }
            }
        }
    }

    /// Queues a frame for this connection; a full queue closes it (it will sync).
    fn push(&self, item: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(item) {
            self.closer.close(super::hub::CLOSE_TRY_AGAIN, "too slow to keep up; reconnect and sync");
        }
    }

    /// Queues a frame, waiting for room (a replay must not be dropped).
    async fn push_wait(&self, item: Outgoing) -> bool {
        tokio::select! {
            biased;
            () = self.closer.closed() => false,
            sent = self.queue.send(item) => sent.is_ok(),
        }
    }

    fn error(&self, code: ErrorCode, detail: &str, client_msg_id: Option<&str>) {
        self.push(Outgoing::Frame(protocol::error(code, detail, client_msg_id)));
    }

    fn refused(&self, e: &chat::Error, client_msg_id: Option<&str>) {
        self.error(e.code(), &e.detail(), client_msg_id);
    }

    async fn handle(&mut self, text: &str) {
        let frame = match protocol::parse(text) {
            Ok(frame) => frame,
            Err(FrameError { code, detail, client_msg_id }) => {
                return self.error(code, &detail, client_msg_id.as_deref());
            }
        };
        match frame.kind.as_deref() {
            Some("message") => self.message(frame).await,
            Some("typing") => {
                let Some(thread) = self.thread_field(frame.thread_id.as_deref(), None) else { return };
                if let Err(e) = self.state.chat.typing(self.user, thread).await {
                    self.refused(&e, None);
                }
            }
            Some("read") => {
                let Some(thread) = self.thread_field(frame.thread_id.as_deref(), None) else { return };
                if let Err(e) = self.state.chat.mark_read(self.user, thread, frame.up_to_seq).await {
                    self.refused(&e, None);
                }
            }
            Some("sync") => self.sync(frame.threads.unwrap_or_default()).await,
            Some("ping") => self.push(Outgoing::Frame(protocol::pong())),
            Some("auth") => self.error(ErrorCode::ValidationFailed, "this connection is already authenticated", None),
            Some(other) => {
                let detail = format!("unknown frame type {other:?}; expected message, typing, read, sync or ping");
                self.error(ErrorCode::ValidationFailed, &detail, frame.client_msg_id.as_deref());
            }
            None => {
                self.error(ErrorCode::ValidationFailed, "the frame has no \"type\"", frame.client_msg_id.as_deref())
            }
        }
    }

    /// Parses a required `thread_id`; a malformed id names no thread the user is in.
    fn thread_field(&self, raw: Option<&str>, client_msg_id: Option<&str>) -> Option<ThreadId> {
        match raw {
            None => {
                self.error(ErrorCode::ValidationFailed, "missing field `thread_id`", client_msg_id);
                None
            }
            Some(raw) => {
                let id = ThreadId::parse(raw);
                if id.is_none() {
                    self.error(ErrorCode::NotFound, "thread not found", client_msg_id);
                }
                id
            }
        }
    }

    async fn message(&mut self, frame: RawFrame) {
        let key = frame.client_msg_id.as_deref();
        let target = match (frame.thread_id.as_deref(), frame.recipient_id) {
            (Some(_), Some(_)) => {
                return self.error(ErrorCode::ValidationFailed, "give thread_id or recipient_id, not both", key);
            }
            (None, None) => {
                return self.error(ErrorCode::ValidationFailed, "missing field `thread_id` or `recipient_id`", key);
            }
            (Some(raw), None) => match self.thread_field(Some(raw), key) {
                Some(id) => SendTarget::Thread(id),
                None => return,
            },
            (None, Some(to)) => match UserId::parse(to, "recipient_id") {
                Ok(to) => SendTarget::Recipient(to),
                Err(e) => return self.error(ErrorCode::ValidationFailed, e.detail(), key),
            },
        };
        let Some(text) = frame.text else {
            return self.error(ErrorCode::ValidationFailed, "missing field `text`", key);
        };
        let chat = &self.state.chat;
        if let Err(e) = chat.submit_message(self.user, self.connection, target, text, frame.client_msg_id.clone()).await
        {
            self.refused(&e, frame.client_msg_id.as_deref());
        }
    }

    /// Replays every message after the seqs the client names, then `synced`.
    async fn sync(&mut self, threads: HashMap<String, i64>) {
        let mut seen = HashMap::with_capacity(threads.len());
        for (raw, seq) in threads {
            let (Some(id), true) = (ThreadId::parse(&raw), seq >= 0) else {
                let detail = format!("sync: {raw:?} must be a thread id with a seq of 0 or more");
                return self.error(ErrorCode::ValidationFailed, &detail, None);
            };
            seen.insert(id, Seq(seq));
        }
        if !self.push_wait(Outgoing::Hold).await {
            return;
        }
        let trailer = match self.replay(&seen).await {
            Ok(true) => protocol::synced(),
            Ok(false) => return,
            Err(e) => protocol::error(e.code(), &e.detail(), None),
        };
        self.push_wait(Outgoing::Release(trailer)).await;
    }

    /// Queues the missed messages; `Ok(false)` when the connection closed meanwhile.
    /// Each chunk waits until half the queue is free besides, so live events that
    /// arrive during a long replay still find room.
    async fn replay(&self, seen: &HashMap<ThreadId, Seq>) -> Result<bool, chat::Error> {
        let chat = &self.state.chat;
        let headroom = self.queue.max_capacity() / 2;
        let chunk = (self.queue.max_capacity() / 4).max(1);
        for (thread, mut after) in chat.sync_plan(self.user, seen).await? {
            loop {
                let page = chat.messages(self.user, thread, Cursor::After(after), SYNC_PAGE).await?;
                for part in page.results.chunks(chunk) {
                    let permits = tokio::select! {
                        biased;
                        () = self.closer.closed() => return Ok(false),
                        permits = self.queue.reserve_many(part.len() + headroom) => permits,
                    };
                    let Ok(mut permits) = permits else { return Ok(false) };
                    for message in part {
                        after = message.seq;
                        let frame = protocol::new_message(message);
                        let item = Outgoing::Message { thread, seq: message.seq, frame, delivery: Delivery::Replay };
                        if let Some(permit) = permits.next() {
                            permit.send(item);
                        }
                    }
                    // Dropping the rest of the permits gives the headroom back at once.
                }
                if !page.has_more {
                    break;
                }
            }
        }
        Ok(true)
    }
}

/// The messages this connection was sent lately, to drop a duplicate replay.
struct Recent {
    set: HashSet<(ThreadId, Seq)>,
    order: VecDeque<(ThreadId, Seq)>,
}

impl Recent {
    fn new() -> Self {
        // Grown on demand: most connections never come near the bound.
        Self { set: HashSet::new(), order: VecDeque::new() }
    }

    /// Remembers a message; false if it was already delivered.
    fn insert(&mut self, key: (ThreadId, Seq)) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        if self.order.len() == RECENT
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(key);
        true
    }
}

/// The writer's state between wakeups.
struct Writer {
    recent: Recent,
    /// Live messages held while a sync replays; `None` when not syncing.
    held: Option<Vec<Outgoing>>,
    /// The last seq replayed per thread in the current sync.
    replayed: HashMap<ThreadId, Seq>,
}

impl Writer {
    /// Turns a queued item into the frames to write now.
    fn accept(&mut self, item: Outgoing, out: &mut Vec<WsMessage>, closer: &Closer) {
        match item {
            Outgoing::Frame(frame) => out.push(WsMessage::Text(frame)),
            Outgoing::Message { delivery: Delivery::Live | Delivery::Ack, .. } if self.held.is_some() => {
                if let Some(held) = &mut self.held {
                    if held.len() >= MAX_HELD {
                        closer.close(super::hub::CLOSE_TRY_AGAIN, "too slow to keep up; reconnect and sync");
                    }
                    held.push(item);
                }
            }
            Outgoing::Message { thread, seq, frame, delivery } => {
                if delivery == Delivery::Replay {
                    let last = self.replayed.entry(thread).or_default();
                    *last = (*last).max(seq);
                }
                // An ack answers a send, so it is always written; it still counts as
                // delivered, so a later replay of the same message is skipped.
                if self.recent.insert((thread, seq)) || delivery == Delivery::Ack {
                    out.push(WsMessage::Text(frame));
                }
            }
            Outgoing::Hold => {
                self.held = Some(Vec::new());
                self.replayed.clear();
            }
            Outgoing::Release(trailer) => {
                out.push(WsMessage::Text(trailer));
                for item in self.held.take().unwrap_or_default() {
                    if let Outgoing::Message { thread, seq, frame, delivery } = item {
                        let covered = self.replayed.get(&thread).is_some_and(|last| seq <= *last);
                        let fresh = self.recent.insert((thread, seq));
                        if delivery == Delivery::Ack || (fresh && !covered) {
                            out.push(WsMessage::Text(frame));
                        }
                    }
                }
            }
        }
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::Receiver<Outgoing>,
    closer: Closer,
    ping_interval: Duration,
) {
    let mut writer = Writer { recent: Recent::new(), held: None, replayed: HashMap::new() };
    let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
    let mut out = Vec::with_capacity(WRITE_BATCH);
    loop {
        tokio::select! {
            biased;
            () = closer.closed() => break,
            _ = ping.tick() => out.push(WsMessage::Ping(Default::default())),
            item = rx.recv() => {
                let Some(item) = item else { break };
                writer.accept(item, &mut out, &closer);
                while out.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(item) => writer.accept(item, &mut out, &closer),
                        Err(_) => break,
                    }
                }
            }
        }
        if out.is_empty() {
            continue;
        }
        let mut feed = futures::stream::iter(out.drain(..).map(Ok));
        let written = tokio::select! {
            biased;
            () = closer.closed() => false,
            r = sink.send_all(&mut feed) => r.is_ok(),
        };
        if !written {
            closer.close(1000, "");
            break;
        }
    }
    let (code, reason) = closer.reason();
    if code == 1001 {
        // Shutting down: what is queued (the acks of the last stored messages) goes first.
        out.clear();
        while let Ok(item) = rx.try_recv() {
            writer.accept(item, &mut out, &closer);
        }
        let mut feed = futures::stream::iter(out.drain(..).map(Ok));
        let _ = timeout(CLOSE_TIMEOUT, sink.send_all(&mut feed)).await;
    }
    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
    let _ = timeout(CLOSE_TIMEOUT, sink.send(WsMessage::Close(Some(frame)))).await;
}
