//! One WebSocket connection, one task: a reader loop that turns frames into chat
//! calls, and beside it a writer loop that drains the connection's bounded queue
//! with one flush per wakeup. The writer puts every thread's messages in seq
//! order, each once (see `order`), reading from the store the gaps the bus does
//! not fill.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message as WsMessage, Utf8Bytes};

use super::close;
use super::hub::{AddressSlot, HubSlot, WriterMetrics};
use super::order::{Delivery, Gap, MessageItem, Outgoing, Overflow, Sequencer};
use super::protocol::{self, FrameError, RawFrame};
use super::queue::{self, Closer, QueueRx, QueueTx};
use super::{Socket, WsState};
use crate::auth::jwt::CLOCK_LEEWAY;
use crate::bus::ConnectionId;
use crate::chat::{self, PendingSend, PreparedSend, Preparing, SendTarget};
use crate::domain::{Cursor, ErrorCode, Seq, ThreadId, Timestamp, User, UserId, error_chain};
use crate::server::ConnectionSlot;

/// How long a close frame may take to leave before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames written per wakeup before a flush: enough to batch a burst into few
/// syscalls, few enough that one flush is never huge.
const WRITE_BATCH: usize = 128;
/// How long a new connection waits for the bus to subscribe for its user.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(3);
/// A deadline beyond any token's life.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// The shortest time between the end of one `sync` and the start of the next.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Typing events passed on per thread and connection: at most one per interval.
const TYPING_INTERVAL: Duration = Duration::from_secs(2);
/// Threads whose last typing event a connection remembers before forgetting old ones.
const MAX_TYPING_THREADS: usize = 64;
/// A sync replays in pages of this many messages.
const SYNC_PAGE: u32 = 200;

/// What the connection holds once it is upgraded, authenticated and registered:
/// all that lives as long as it does.
pub(crate) struct Live {
    sink: SplitSink<Socket, WsMessage>,
    stream: SplitStream<Socket>,
    state: Arc<WsState>,
    user: User,
    expires: Timestamp,
    queue: QueueTx,
    rx: QueueRx,
    closer: Closer,
    hub_slot: HubSlot,
    /// The connection's places on its address and on the server, freed with it.
    held: (AddressSlot, Option<ConnectionSlot>),
}

/// Authenticates and registers an upgraded socket; `None` when it was refused (and
/// told why). `user` (with when its token expires) is `None` when the client will
/// authenticate with a first `auth` frame.
///
/// Separate from `Live::serve` so the caller can box it: a task keeps room for the
/// largest state it can be in for all its life, and an idle connection should not
/// pay for waits that ended when it started.
pub(crate) async fn connect(
    socket: Socket,
    state: Arc<WsState>,
    user: Option<(User, Timestamp)>,
    held: (AddressSlot, Option<ConnectionSlot>),
) -> Option<Live> {
    let (mut sink, mut stream) = socket.split();
    let limits = &state.limits;
    let (user, expires) = match user {
        Some(user) => user,
        None => match timeout(limits.auth_timeout, first_frame_auth(&mut stream, &state)).await {
            Ok(Ok(user)) => user,
            Ok(Err(reason)) => return close_now(&mut sink, close::UNAUTHORIZED, reason).await,
            Err(_) => return close_now(&mut sink, close::UNAUTHORIZED, "no auth frame in time").await,
        },
    };
    let (queue, rx, closer) = queue::queue(limits.queue, limits.queue_bytes);
    let Ok((hub_slot, subscribed)) = state.hub.register(user.id, queue.clone(), closer.clone()) else {
        return close_now(&mut sink, close::POLICY, "too many connections for this user").await;
    };
    // Read no frame before other nodes' events for this user can reach this node, so
    // a client's first exchange (a ping, a sync) proves it will hear the rest.
    if let Some(subscribed) = subscribed
        && !matches!(timeout(SUBSCRIBE_WAIT, subscribed).await, Ok(Ok(())))
    {
        tracing::warn!(user = %user.id, "the bus did not confirm the subscription in time; the client may need to sync");
    }
    tracing::debug!(user = %user.id, connection = hub_slot.id().0, "websocket connected");
    Some(Live { sink, stream, state, user, expires, queue, rx, closer, hub_slot, held })
}

impl Live {
    /// Serves the connection until it closes or its token expires.
    ///
    /// Not an `async fn`, and it moves out of `self` rather than binding its
    /// fields: an argument moved into a local is held twice by the task.
    #[expect(clippy::manual_async_fn, reason = "an async fn would hold `self` twice")]
    pub(crate) fn serve(self) -> impl Future<Output = ()> + Send {
        async move {
            let limits = &self.state.limits;
            // The writer runs in this task, beside the reader, not in a task of its
            // own: it borrows what the reader holds (the user, the chat, the closer)
            // instead of copies, and the connection pays for one task, not two.
            let filler = Filler { chat: &self.state.chat, user: &self.user };
            let writer = write_loop(
                self.sink,
                self.rx,
                &self.closer,
                (limits.ping_interval, limits.write_timeout),
                &filler,
                self.state.hub.writer_metrics(),
            );
            let mut stream = self.stream;
            let mut session = Session {
                state: &self.state,
                user: &self.user,
                connection: self.hub_slot.id(),
                queue: self.queue,
                closer: &self.closer,
                expires: expiry_deadline(self.expires),
                last_sync: None,
                typing_sent: HashMap::new(),
            };
            let reader = async {
                let client_closed = session.read_loop(&mut stream, &self.state.shutdown, limits.idle_timeout).await;
                if client_closed {
                    session.closer.close(close::NORMAL, "");
                }
                client_closed
            };
            // On shutdown the writer is closed later, once every queued send has been
            // stored and acked (see `App::run_until_stopped`).
            let (client_closed, ()) = tokio::join!(reader, writer);
            drop(self.hub_slot);
            // (A client that does not read gets no closing handshake: see `write_loop`.)
            if !client_closed && self.closer.reason().1 != NOT_READING {
                // The closing handshake: let the client read our close frame and answer
                // it before the socket goes, or it may see a reset instead of the code.
                let _ = timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(frame)) = stream.next().await {
                        if matches!(frame, WsMessage::Close(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
            tracing::debug!(user = %self.user.id, "websocket closed");
            // Named so the block holds them (it captures only the fields it uses):
            // the places are given back only now.
            drop(self.held);
        }
    }
}

/// The close code for a failed read: 1009 for a frame over the size limit.
fn read_error_close(e: &tungstenite::Error) -> (u16, &'static str) {
    match e {
        tungstenite::Error::Capacity(_) => (close::TOO_LARGE, "frame too large"),
        _ => (close::PROTOCOL_ERROR, "protocol error"),
    }
}

/// Refuses a connection that is not live yet (so it has no `Live`).
async fn close_now(sink: &mut SplitSink<Socket, WsMessage>, code: u16, reason: &'static str) -> Option<Live> {
    let frame = CloseFrame { code: code.into(), reason: Utf8Bytes::from_static(reason) };
    let _ = timeout(CLOSE_TIMEOUT, sink.send(WsMessage::Close(Some(frame)))).await;
    None
}

/// When a token that expires at `exp` stops its connection: with the leeway every
/// token check allows, so a client's `auth` sent just before the expiry is in time.
fn expiry_deadline(exp: Timestamp) -> Instant {
    let left = u64::try_from(exp.millis().saturating_sub(Timestamp::now().millis())).unwrap_or(0);
    Instant::now() + (Duration::from_millis(left) + CLOCK_LEEWAY).min(FAR_FUTURE)
}

/// Waits for `{"type":"auth","token":"…"}` and returns its user.
async fn first_frame_auth(
    stream: &mut SplitStream<Socket>,
    state: &WsState,
) -> Result<(User, Timestamp), &'static str> {
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
        return state.authenticate(&token).await.map_err(|_| "invalid or expired token, or an unknown user");
    }
}

struct Session<'a> {
    state: &'a WsState,
    user: &'a User,
    connection: ConnectionId,
    queue: QueueTx,
    closer: &'a Closer,
    /// When the token the connection lives on expires (moved by each `auth`).
    expires: Instant,
    /// When the last `sync` ended: the next one waits for `SYNC_INTERVAL` after it.
    last_sync: Option<Instant>,
    /// When this connection last passed on a typing event, per thread.
    typing_sent: HashMap<ThreadId, Instant>,
}

/// A frame's handling that waits: the store, a token check, room in a queue.
enum Later<'t> {
    /// Any frame but a `message`.
    Frame(RawFrame<'t>),
    /// A send whose thread is not cached, with its key.
    Prepare(PendingSend, Option<Cow<'t, str>>),
    /// A send that waits for room in the committer's queue; its `Expect` is queued.
    Submit(PreparedSend, Option<Cow<'t, str>>),
}

impl Session<'_> {
    /// Reads frames until the connection ends; true when the client closed it.
    async fn read_loop(
        &mut self,
        stream: &mut SplitStream<Socket>,
        shutdown: &tokio_util::sync::CancellationToken,
        idle_timeout: Duration,
    ) -> bool {
        let mut deadline = Instant::now() + idle_timeout;
        loop {
            // One timer for both ends of the connection's life (idle and expiry): a
            // timer is a large part of what an idle connection holds.
            let frame = tokio::select! {
                biased;
                () = self.closer.closed() => return false,
                () = shutdown.cancelled() => return false,
                () = sleep_until(deadline.min(self.expires)) => {
                    if self.expires <= deadline {
                        self.closer.close(close::UNAUTHORIZED, "the access token has expired; send auth with a fresh one before it does");
                    } else {
                        self.closer.close(close::IDLE, "idle timeout");
                    }
                    return false;
                }
                frame = stream.next() => frame,
            };
            match frame {
                // The client is silent from the end of the work it asked for: a `sync`
                // slower than the idle timeout does not make it look idle.
                // What needs no wait (most sends) is handled at once; the rest is boxed:
                // waiting on it is most of this future's size, and an idle connection
                // is not handling a frame.
                Some(Ok(WsMessage::Text(text))) => {
                    if let Some(later) = self.handle_now(text.as_str()) {
                        Box::pin(self.handle_later(later)).await;
                    }
                }
                Some(Ok(WsMessage::Binary(_))) => self.error(
                    ErrorCode::ValidationFailed,
                    "binary frames are not supported; send JSON text frames",
                    None,
                ),
                // A raw frame is never produced by reading; pings are answered by tungstenite.
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                Some(Ok(WsMessage::Close(_))) | None => return true,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    let (code, reason) = read_error_close(&e);
                    self.closer.close(code, reason);
                    return false;
                }
            }
            deadline = Instant::now() + idle_timeout;
        }
    }

    /// A fresh token of the same user extends the connection's life; another
    /// user's token closes it at once; a bad one is refused and changes nothing.
    async fn reauthenticate(&mut self, token: Option<&str>) {
        let Some(token) = token else {
            return self.error(ErrorCode::ValidationFailed, "an auth frame needs a \"token\"", None);
        };
        let (user, expires) = match self.state.authenticate(token).await {
            Ok(verified) => verified,
            Err(e) => {
                let detail = format!("{}; this connection keeps its token", e.detail());
                return self.error(ErrorCode::Unauthorized, &detail, None);
            }
        };
        if user.id != self.user.id {
            return self.closer.close(close::UNAUTHORIZED, "an auth frame with another user's token");
        }
        self.expires = expiry_deadline(expires);
        self.push(Outgoing::Frame(protocol::authed(expires.millis() / 1000)));
    }

    /// Queues a frame for this connection; a full queue closes it (it will sync).
    fn push(&self, item: Outgoing) {
        if let Err(queue::Refused::Full) = self.queue.try_send(item) {
            self.closer.close(close::TRY_AGAIN, "too slow to keep up; reconnect and sync");
        }
    }

    /// Queues a frame, waiting for room (a replay must not be dropped).
    async fn push_wait(&self, item: Outgoing) -> bool {
        tokio::select! {
            biased;
            () = self.closer.closed() => false,
            sent = self.queue.send(item) => sent,
        }
    }

    fn error(&self, code: ErrorCode, detail: &str, client_msg_id: Option<&str>) {
        self.push(Outgoing::Frame(protocol::error(code, detail, client_msg_id)));
    }

    fn refused(&self, e: &chat::Error, client_msg_id: Option<&str>) {
        self.error(e.code(), &e.detail(), client_msg_id);
    }

    /// Handles a frame as far as it can without waiting: all of a `message` whose
    /// thread is cached while the committer's queue has room. What is left is
    /// returned for [`Session::handle_later`].
    fn handle_now<'t>(&mut self, text: &'t str) -> Option<Later<'t>> {
        let mut frame = match protocol::parse(text) {
            Ok(frame) => frame,
            Err(FrameError { code, detail, client_msg_id }) => {
                self.error(code, &detail, client_msg_id.as_deref());
                return None;
            }
        };
        if frame.kind.as_deref() != Some("message") {
            return Some(Later::Frame(frame));
        }
        let key = frame.client_msg_id.take();
        let (target, text) = self.message_fields(frame, key.as_deref())?;
        let chat = &self.state.chat;
        match chat.prepare_send_now(self.user, target, text, key.as_deref()) {
            Ok(Preparing::Ready(prepared)) => self.submit_now(prepared, key),
            Ok(Preparing::Pending(pending)) => Some(Later::Prepare(pending, key)),
            Err(e) => {
                self.refused(&e, key.as_deref());
                None
            }
        }
    }

    /// What [`Session::handle_now`] left: the frames that wait for the store, a
    /// token check or room.
    async fn handle_later(&mut self, later: Later<'_>) {
        let frame = match later {
            Later::Frame(frame) => frame,
            Later::Prepare(pending, key) => match self.state.chat.finish_prepare(pending).await {
                Ok(prepared) => {
                    if let Some(Later::Submit(prepared, key)) = self.submit_now(prepared, key) {
                        self.submit(prepared, key).await;
                    }
                    return;
                }
                Err(e) => return self.refused(&e, key.as_deref()),
            },
            Later::Submit(prepared, key) => return self.submit(prepared, key).await,
        };
        match frame.kind.as_deref() {
            Some("typing") => {
                let Some(thread) = self.thread_field(frame.thread_id.as_deref(), None) else { return };
                // A typing indicator says "still typing" for seconds; more often is noise.
                let now = Instant::now();
                if self.typing_sent.get(&thread).is_some_and(|at| now.duration_since(*at) < TYPING_INTERVAL) {
                    return;
                }
                if self.typing_sent.len() >= MAX_TYPING_THREADS {
                    self.typing_sent.retain(|_, at| now.duration_since(*at) < TYPING_INTERVAL);
                }
                self.typing_sent.insert(thread, now);
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
            Some("auth") => self.reauthenticate(frame.token.as_deref()).await,
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

    /// A `message` frame's target and text; `None` when it lacks them (the
    /// client is told).
    fn message_fields(&self, frame: RawFrame<'_>, key: Option<&str>) -> Option<(SendTarget, String)> {
        let target = match (frame.thread_id.as_deref(), frame.recipient_id) {
            (Some(_), Some(_)) => {
                self.error(ErrorCode::ValidationFailed, "give thread_id or recipient_id, not both", key);
                return None;
            }
            (None, None) => {
                self.error(ErrorCode::ValidationFailed, "missing field `thread_id` or `recipient_id`", key);
                return None;
            }
            (Some(raw), None) => SendTarget::Thread(self.thread_field(Some(raw), key)?),
            (None, Some(to)) => match UserId::parse(to, "recipient_id") {
                Ok(to) => SendTarget::Recipient(to),
                Err(e) => {
                    self.error(ErrorCode::ValidationFailed, e.detail(), key);
                    return None;
                }
            },
        };
        let Some(text) = frame.text else {
            self.error(ErrorCode::ValidationFailed, "missing field `text`", key);
            return None;
        };
        Some((target, text))
    }

    /// Queues a prepared send if the committer has room; else it is left for
    /// [`Session::submit`].
    fn submit_now<'t>(&self, prepared: PreparedSend, key: Option<Cow<'t, str>>) -> Option<Later<'t>> {
        // Before the send is queued, so the writer knows of it before its ack can come.
        let (thread, shared) = (prepared.thread_id(), prepared.client_msg_id());
        self.push(Outgoing::Expect { thread, client_msg_id: shared.clone() });
        match self.state.chat.try_submit_message(prepared, self.connection) {
            Ok(None) => None,
            Ok(Some(prepared)) => Some(Later::Submit(prepared, key)),
            Err(e) => {
                self.refused_send(&e, thread, shared, key.as_deref());
                None
            }
        }
    }

    /// Queues a prepared send whose `Expect` is queued, waiting for room.
    async fn submit(&self, prepared: PreparedSend, key: Option<Cow<'_, str>>) {
        let (thread, shared) = (prepared.thread_id(), prepared.client_msg_id());
        if let Err(e) = self.state.chat.submit_message(prepared, self.connection).await {
            self.refused_send(&e, thread, shared, key.as_deref());
        }
    }

    /// A send refused after its `Expect` was queued: the writer forgets the send as
    /// it writes the error.
    fn refused_send(&self, e: &chat::Error, thread: ThreadId, shared: Option<Arc<str>>, key: Option<&str>) {
        let frame = protocol::error(e.code(), &e.detail(), key);
        self.push(Outgoing::Refused { thread: Some(thread), client_msg_id: shared, frame });
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
        // One sync at a time (this loop reads no frame meanwhile), and at most one per
        // interval: a client looping on `sync` waits instead of replaying in a loop.
        if let Some(last) = self.last_sync {
            tokio::select! {
                biased;
                () = self.closer.closed() => return,
                () = sleep_until(last + SYNC_INTERVAL) => {}
            }
        }
        if !self.push_wait(Outgoing::Hold).await {
            return;
        }
        let replayed = self.replay(&seen).await;
        self.last_sync = Some(Instant::now());
        let release = match replayed {
            Ok(Some(heads)) => Outgoing::Release { trailer: protocol::synced(), heads: Some(heads) },
            Ok(None) => return,
            Err(e) => Outgoing::Release { trailer: protocol::error(e.code(), &e.detail(), None), heads: None },
        };
        self.push_wait(release).await;
    }

    /// Queues the missed messages and answers where each thread stood; `Ok(None)`
    /// when the connection closed meanwhile. Each chunk waits until half the queue
    /// is free besides, so live events that arrive during a long replay still find room.
    async fn replay(&self, seen: &HashMap<ThreadId, Seq>) -> Result<Option<Vec<(ThreadId, Seq)>>, chat::Error> {
        let chat = &self.state.chat;
        let headroom = self.queue.max_capacity() / 2;
        let chunk = (self.queue.max_capacity() / 4).max(1);
        let plan = chat.sync_plan(self.user, seen).await?;
        for (thread, mut after) in plan.replay {
            loop {
                let page = chat.messages(self.user, thread, Cursor::After(after), SYNC_PAGE).await?;
                for part in page.results.chunks(chunk) {
                    // Wait for room for this chunk and the headroom, but take only the
                    // chunk's: live events must still find the headroom free.
                    while !self.queue.has_room(part.len(), headroom) {
                        tokio::select! {
                            biased;
                            () = self.closer.closed() => return Ok(None),
                            () = tokio::time::sleep(Duration::from_millis(5)) => {}
                        }
                    }
                    let items = part
                        .iter()
                        .map(|message| {
                            let frame = protocol::new_message(message);
                            Outgoing::Message(MessageItem::new(Arc::new(message.clone()), frame, Delivery::Replay))
                        })
                        .collect();
                    let sent = tokio::select! {
                        biased;
                        () = self.closer.closed() => return Ok(None),
                        sent = self.queue.send_all(items) => sent,
                    };
                    if !sent {
                        return Ok(None);
                    }
                    if let Some(last) = part.last() {
                        after = last.seq;
                    }
                }
                if !page.has_more {
                    break;
                }
            }
        }
        Ok(Some(plan.heads))
    }
}

/// Reads from the store the messages a gap is missing.
struct Filler<'a> {
    chat: &'a chat::Chat,
    user: &'a User,
}

impl Filler<'_> {
    async fn read(&self, gap: Gap) -> Result<Vec<MessageItem>, chat::Error> {
        let mut items = Vec::new();
        let mut after = gap.after;
        loop {
            let page = self.chat.messages(self.user, gap.thread, Cursor::Between(after, gap.before), SYNC_PAGE).await?;
            for message in page.results {
                after = message.seq;
                let frame = protocol::new_message(&message);
                items.push(MessageItem::new(Arc::new(message), frame, Delivery::Fill));
            }
            if !page.has_more {
                return Ok(items);
            }
        }
    }
}

/// Where each of the user's threads stands as the connection starts, so every
/// thread is in order from its first message (a thread created later starts at 1).
/// Events queued while the positions were read were published after the connection
/// joined the hub: each thread starts just before the first of them, so none is
/// taken for one sent before the connection. Without the positions (the database
/// is down), ordering starts at each thread's first message.
async fn starting_order(filler: &Filler<'_>, rx: &mut QueueRx) -> (Sequencer, Vec<Outgoing>) {
    let heads = match filler.chat.thread_heads(filler.user).await {
        Ok(heads) => Some(heads),
        Err(e) => {
            tracing::warn!(user = %filler.user.id, error = %error_chain(&e), "reading thread positions failed");
            None
        }
    };
    let mut early = Vec::new();
    while let Some(item) = rx.try_recv() {
        early.push(item);
    }
    let mut order = Sequencer::starting_at(filler.user.id, heads);
    for item in &early {
        if let Outgoing::Message(m) = item {
            order.start_before(m.message.thread_id, m.message.seq);
        }
    }
    (order, early)
}

/// Hands the connection's order what is queued, up to a write batch.
fn accept_queued(
    order: &mut Sequencer,
    rx: &mut QueueRx,
    now: Instant,
    frames: &mut Vec<Utf8Bytes>,
) -> Result<(), Overflow> {
    while frames.len() < WRITE_BATCH {
        match rx.try_recv() {
            Some(item) => order.accept(item, now, frames)?,
            None => break,
        }
    }
    Ok(())
}

/// Waits for the earliest hold to run out; never, when nothing is held.
///
/// The timer is boxed: a deadline is set only while messages are held for a gap,
/// and an idle connection's task should not keep room for it.
async fn hold_expiry(deadline: Option<Instant>) {
    match deadline {
        Some(at) => Box::pin(sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

/// Why a connection whose writes stopped completing was closed.
const NOT_READING: &str = "not reading what the server sends; reconnect and sync";

/// How a batch of writes ended.
enum Written {
    Done,
    /// The connection failed.
    Closed,
    /// The client did not take the frames within the write timeout.
    TimedOut,
}

impl Written {
    /// Closes the connection as the outcome says; true when it did.
    fn closes(self, closer: &Closer, metrics: &WriterMetrics) -> bool {
        match self {
            Self::Done => return false,
            Self::Closed => closer.close(close::NORMAL, ""),
            Self::TimedOut => {
                metrics.write_timeouts.inc();
                closer.close_unwritable(close::TRY_AGAIN, NOT_READING);
            }
        }
        true
    }
}

/// Writes `frames`, within `limit`. Not raced against the closer: dropping a write
/// midway would drop the frames in it (the acks of stored messages, on shutdown);
/// the limit bounds how long a close waits for it.
async fn write_all(
    sink: &mut SplitSink<Socket, WsMessage>,
    frames: impl Iterator<Item = WsMessage>,
    limit: Duration,
) -> Written {
    let mut feed = futures::stream::iter(frames.map(Ok));
    match timeout(limit, sink.send_all(&mut feed)).await {
        Ok(Ok(())) => Written::Done,
        Ok(Err(_)) => Written::Closed,
        Err(_) => Written::TimedOut,
    }
}

/// Not an `async fn`, for the reason `Live::serve` is not.
#[expect(clippy::manual_async_fn, reason = "an async fn would hold its arguments twice")]
fn write_loop<'a>(
    mut sink: SplitSink<Socket, WsMessage>,
    mut rx: QueueRx,
    closer: &'a Closer,
    (ping_interval, write_timeout): (Duration, Duration),
    filler: &'a Filler<'a>,
    metrics: &'a WriterMetrics,
) -> impl Future<Output = ()> + Send + 'a {
    async move {
        let too_slow = "too slow to keep up; reconnect and sync";
        let (mut order, early) = starting_order(filler, &mut rx).await;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        // Grown on demand and given back when the queue runs dry: an idle connection
        // keeps no batch buffers (they were most of its memory). Keeping them while
        // the connection is busy broke the memory target: see `docs/benchmarks.md`,
        // 2026-12-07, eleventh session.
        let mut frames = Vec::new();
        let mut out = Vec::new();
        let now = Instant::now();
        for item in early {
            if order.accept(item, now, &mut frames).is_err() {
                closer.close(close::TRY_AGAIN, too_slow);
            }
        }
        if !frames.is_empty() {
            let first = write_all(&mut sink, frames.drain(..).map(WsMessage::Text), write_timeout);
            Box::pin(first).await.closes(closer, metrics);
        }
        'run: loop {
            tokio::select! {
                biased;
                () = closer.closed() => break,
                _ = ping.tick() => out.push(WsMessage::Ping(Bytes::new())),
                () = hold_expiry(order.next_deadline()) => {
                    let now = Instant::now();
                    // What is queued first: a writer woken late may have the missing
                    // message in its own queue.
                    if accept_queued(&mut order, &mut rx, now, &mut frames).is_err() {
                        closer.close(close::TRY_AGAIN, too_slow);
                        break;
                    }
                    let bus_lag = Duration::try_from_secs_f64(metrics.bus_lag.get()).unwrap_or_default();
                    for gap in order.due(now, bus_lag) {
                        metrics.gap_fills.inc();
                        match Box::pin(filler.read(gap)).await {
                            Ok(items) => order.filled(gap, items, now, &mut frames),
                            Err(e) => {
                                tracing::warn!(error = %error_chain(&e), "filling a gap in a thread failed");
                                closer.close(close::TRY_AGAIN, "missed messages could not be read; reconnect and sync");
                                break 'run;
                            }
                        }
                    }
                }
                item = rx.recv() => {
                    let Some(item) = item else { break };
                    metrics.queue_depth.observe((rx.len() + 1) as f64);
                    let now = Instant::now();
                    let accepted =
                        order.accept(item, now, &mut frames).and_then(|()| accept_queued(&mut order, &mut rx, now, &mut frames));
                    if accepted.is_err() {
                        closer.close(close::TRY_AGAIN, too_slow);
                        break;
                    }
                }
            }
            out.extend(frames.drain(..).map(WsMessage::Text));
            if out.is_empty() {
                rx.written();
                continue;
            }
            // Boxed, like every await of this loop but the wait for work: the task keeps
            // room for its largest state for all its life, and an idle connection waits.
            let stalled = Box::pin(write_all(&mut sink, out.drain(..), write_timeout)).await.closes(closer, metrics);
            rx.written();
            if stalled {
                break;
            }
            if rx.is_empty() {
                frames.shrink_to(0);
                out.shrink_to(0);
                rx.shrink();
            }
        }
        Box::pin(finish(&mut sink, &mut rx, order, frames, closer)).await;
    }
}

/// The writer's last words: on shutdown what is queued, then the close frame.
/// Boxed by its caller, so an idle connection's task keeps no room for it.
async fn finish(
    sink: &mut SplitSink<Socket, WsMessage>,
    rx: &mut QueueRx,
    mut order: Sequencer,
    mut frames: Vec<Utf8Bytes>,
    closer: &Closer,
) {
    let (code, reason) = closer.reason();
    if code == close::SHUTTING_DOWN {
        // Shutting down: what is queued (the acks of the last stored messages) goes
        // first, held or not. (An idle close has the same code and flushes too.)
        let now = Instant::now();
        while let Some(item) = rx.try_recv() {
            let _ = order.accept(item, now, &mut frames);
        }
        order.flush(&mut frames);
        let mut feed = futures::stream::iter(frames.drain(..).map(|f| Ok(WsMessage::Text(f))));
        let _ = timeout(CLOSE_TIMEOUT, sink.send_all(&mut feed)).await;
    }
    if reason == NOT_READING {
        // Its writes do not complete: a close frame would not either. Drop it now,
        // so its memory goes at once.
        return;
    }
    let frame = CloseFrame { code: code.into(), reason: Utf8Bytes::from_static(reason) };
    let _ = timeout(CLOSE_TIMEOUT, sink.send(WsMessage::Close(Some(frame)))).await;
}
