//! The bus of many nodes: Redis pub/sub, one channel per user
//! (`{prefix}:user:{id}`). A node subscribes only to the users connected to it, so
//! traffic grows with what each node needs, not with the number of nodes. An event
//! is delivered on its own node at once and published, in one pipelined round
//! trip, to each recipient's channel with the origin node's id; nodes ignore their
//! own echoes and deliver an event heard on a user's channel to that user only.
//!
//! Per user rather than per thread: a message of a two-person thread costs two
//! PUBLISHes in one round trip, while per-thread channels would make every node
//! subscribe to every thread of every connected user (hundreds per inbox) and
//! re-subscribe whenever a thread is created.
//!
//! When Redis goes away, local delivery goes on and `/readyz` reports the bus down;
//! both connections retry with backoff, and once back (resubscribing in batches of
//! channels), every connection of this node is closed with 1013, spread over a few
//! seconds, so its client syncs what it missed. Events this node
//! could not publish are followed, once it can, by a notice on their recipients'
//! channels, whose nodes then close those users' connections the same way.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Bus, Event, Subscriber};
use crate::config::redact_url;
use crate::domain::UserId;

/// Events waiting to be published; past this they are dropped (and counted), as a
/// doorbell may be: clients recover with `sync`.
const OUTGOING: usize = 16_384;
/// Events published per round trip.
const PIPELINE: usize = 256;
/// Reconnection backoff: from 100 ms, doubling, up to 5 s.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Channels per SUBSCRIBE when a node (re)subscribes for all its users: a few
/// round trips for tens of thousands of users, none of them a huge command.
const SUBSCRIBE_BATCH: usize = 1_000;
/// How often the subscription connection proves it is alive (a half-open TCP
/// connection would otherwise look like a quiet one forever).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// What travels on a channel: an event, or word that events for the channel's user
/// were lost (their node then closes that user's connections so they sync). Sent
/// as `Envelope<&Event>`, read as `Envelope<Event>`: one shape both ways.
#[derive(Serialize, Deserialize)]
struct Envelope<E> {
    node: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<E>,
    /// When it was published (milliseconds since the Unix epoch, the publishing
    /// node's clock): the receiving node learns how late the bus runs. Absent from
    /// a node older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
}

/// How every envelope this node publishes begins (serde writes a struct's fields in
/// order, `node` first). The node's own events come back on its users' channels, as
/// many as it hears from other nodes when a pair's users are on two nodes; this
/// test drops them before they are read. Any other beginning is read in full, and
/// an echo written otherwise is still dropped after it is read.
fn echo_prefix(node: u64) -> Vec<u8> {
    format!("{{\"node\":{node},").into_bytes()
}

/// The wall clock in milliseconds since the Unix epoch (a clock before 1970 gives 0).
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

enum Interest {
    Watch(UserId, tokio::sync::oneshot::Sender<()>),
    Unwatch(UserId),
}

/// The Redis implementation of [`Bus`].
pub struct RedisBus {
    node: u64,
    subscriber: Arc<dyn Subscriber>,
    outgoing: mpsc::Sender<Event>,
    interest: mpsc::UnboundedSender<Interest>,
    subscribed: Arc<AtomicBool>,
    publishing: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    /// Users whose events were dropped: their nodes are told to make them sync.
    missed: Arc<Mutex<HashSet<UserId>>>,
    stop: CancellationToken,
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisBus {
    /// Connects to Redis (failing at once if it does not answer) and starts the
    /// publishing and subscribing tasks.
    ///
    /// # Errors
    /// A malformed URL, or a Redis that does not answer a PING.
    pub async fn connect(url: &str, prefix: &str, subscriber: Arc<dyn Subscriber>) -> anyhow::Result<Self> {
        let shown = redact_url(url);
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("the Redis URL {shown} is malformed: {e}"))?;
        let mut con = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| anyhow::anyhow!("Redis at {shown} did not answer within {CONNECT_TIMEOUT:?}; check that it runs and the address is right"))?
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {shown}: {e}; check that it runs and the address is right"))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(|e| anyhow::anyhow!("Redis at {shown} refused PING: {e}; check the password in the URL"))?;

        let (outgoing, events) = mpsc::channel(OUTGOING);
        let (interest, interests) = mpsc::unbounded_channel();
        let bus = Self {
            node: rand::random(),
            subscriber,
            outgoing,
            interest,
            subscribed: Arc::new(AtomicBool::new(false)),
            publishing: Arc::new(AtomicBool::new(true)),
            dropped: Arc::new(AtomicU64::new(0)),
            missed: Arc::default(),
            stop: CancellationToken::new(),
        };
        let channels = Channels { prefix: prefix.to_owned() };
        tokio::spawn(publish_loop(PublishTask {
            client: client.clone(),
            con: Some(con),
            events,
            channels: channels.clone(),
            node: bus.node,
            healthy: bus.publishing.clone(),
            missed: bus.missed.clone(),
            stop: bus.stop.clone(),
        }));
        tokio::spawn(subscribe_loop(SubscribeTask {
            client,
            channels,
            node: bus.node,
            echo: echo_prefix(bus.node),
            subscriber: bus.subscriber.clone(),
            interests,
            healthy: bus.subscribed.clone(),
            stop: bus.stop.clone(),
        }));
        Ok(bus)
    }
}

impl Bus for RedisBus {
    fn publish(&self, event: Event) {
        self.subscriber.deliver(&event);
        if event.recipients().is_empty() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(event)) = self.outgoing.try_send(event) {
            self.missed.lock().unwrap_or_else(PoisonError::into_inner).extend(event.recipients());
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n + 1,
                    "the Redis publish queue is full; events are dropped (clients will sync)"
                );
            }
        }
    }

    fn watch(&self, user: UserId) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let (done, subscribed) = tokio::sync::oneshot::channel();
        self.interest.send(Interest::Watch(user, done)).ok().map(|()| subscribed)
    }

    fn unwatch(&self, user: UserId) {
        let _ = self.interest.send(Interest::Unwatch(user));
    }

    fn is_healthy(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) && self.publishing.load(Ordering::Relaxed)
    }

    fn close(&self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Channels {
    prefix: String,
}

impl Channels {
    fn user(&self, user: UserId) -> String {
        format!("{}:user:{}", self.prefix, user.0)
    }

    /// A channel nobody publishes to: subscribing to it again is a round trip that
    /// proves the connection alive.
    fn heartbeat(&self, node: u64) -> String {
        format!("{}:heartbeat:{node:x}", self.prefix)
    }

    fn parse(&self, channel: &str) -> Option<UserId> {
        channel.strip_prefix(&self.prefix)?.strip_prefix(":user:")?.parse().ok().map(UserId)
    }
}

struct PublishTask {
    client: redis::Client,
    con: Option<redis::aio::MultiplexedConnection>,
    events: mpsc::Receiver<Event>,
    channels: Channels,
    node: u64,
    healthy: Arc<AtomicBool>,
    missed: Arc<Mutex<HashSet<UserId>>>,
    stop: CancellationToken,
}

async fn publish_loop(mut task: PublishTask) {
    let mut batch = Vec::with_capacity(PIPELINE);
    loop {
        // Reconnect first, whether or not there is traffic, so `/readyz` recovers on
        // an idle node too.
        if task.con.is_none() && !task.reconnect().await {
            return;
        }
        let first = tokio::select! {
            () = task.stop.cancelled() => return,
            event = task.events.recv() => event,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < PIPELINE {
            match task.events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        // One retry on a fresh connection; what still fails is dropped, and its
        // recipients' nodes are told to make them sync.
        let sent = task.send(&batch).await || (task.reconnect().await && task.send(&batch).await);
        if !sent {
            let mut missed = task.missed.lock().unwrap_or_else(PoisonError::into_inner);
            for event in &batch {
                missed.extend(event.recipients());
            }
        }
        batch.clear();
    }
}

impl PublishTask {
    /// Connects with backoff until it works (true) or the bus stops (false).
    async fn reconnect(&mut self) -> bool {
        let mut backoff = BACKOFF_MIN;
        loop {
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_multiplexed_async_connection()).await;
            if let Ok(Ok(mut con)) = attempt
                && redis::cmd("PING").query_async::<String>(&mut con).await.is_ok()
            {
                self.con = Some(con);
                self.healthy.store(true, Ordering::Relaxed);
                return true;
            }
            self.healthy.store(false, Ordering::Relaxed);
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Publishes `batch` (and any pending sync notices) in one round trip.
    async fn send(&mut self, batch: &[Event]) -> bool {
        let Some(con) = self.con.as_mut() else { return false };
        let mut pipe = redis::pipe();
        let missed: Vec<UserId> = self.missed.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
        // Serializing these cannot fail in practice; if it did, it is logged (never an
        // empty payload), and an event's recipients are told to sync instead.
        let at = Some(unix_millis());
        if !missed.is_empty() {
            match serde_json::to_vec(&Envelope::<&Event> { node: self.node, event: None, at }) {
                Ok(notice) => {
                    for user in &missed {
                        pipe.publish(self.channels.user(*user), notice.as_slice()).ignore();
                    }
                }
                Err(e) => tracing::error!(error = %e, "serializing a sync notice failed"),
            }
        }
        for event in batch {
            match serde_json::to_vec(&Envelope { node: self.node, event: Some(event), at }) {
                Ok(payload) => {
                    for user in event.recipients() {
                        pipe.publish(self.channels.user(*user), payload.as_slice()).ignore();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "serializing an event for Redis failed; its recipients will sync");
                    self.missed.lock().unwrap_or_else(PoisonError::into_inner).extend(event.recipients());
                }
            }
        }
        match pipe.query_async::<()>(con).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "publishing to Redis failed; reconnecting");
                self.missed.lock().unwrap_or_else(PoisonError::into_inner).extend(missed);
                self.healthy.store(false, Ordering::Relaxed);
                self.con = None;
                false
            }
        }
    }
}

struct SubscribeTask {
    client: redis::Client,
    channels: Channels,
    node: u64,
    /// How this node's own envelopes begin ([`echo_prefix`]).
    echo: Vec<u8>,
    subscriber: Arc<dyn Subscriber>,
    interests: mpsc::UnboundedReceiver<Interest>,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
}

async fn subscribe_loop(mut task: SubscribeTask) {
    let mut backoff = BACKOFF_MIN;
    let mut was_down = false;
    loop {
        if task.stop.is_cancelled() {
            return;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, task.client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => {
                backoff = BACKOFF_MIN;
                if task.listen(pubsub, was_down).await {
                    return;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to Redis; retrying"),
            Err(_) => tracing::warn!("Redis did not answer a subscription in time; retrying"),
        }
        task.healthy.store(false, Ordering::Relaxed);
        was_down = true;
        // While away, interest changes pile up for nothing: the next connection
        // subscribes from the hub's current users anyway.
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                () = task.stop.cancelled() => return,
                interest = task.interests.recv() => if interest.is_none() { return },
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

impl SubscribeTask {
    /// Subscribes for this node's users and delivers what arrives until the
    /// connection drops (false) or the bus stops (true).
    async fn listen(&mut self, pubsub: redis::aio::PubSub, was_down: bool) -> bool {
        let (mut sink, mut stream) = pubsub.split();
        // Watches queued meanwhile are answered by the loop below: their users are
        // among the hub's users subscribed here, or come after this snapshot.
        let mut watched: HashSet<UserId> = self.subscriber.local_users().into_iter().collect();
        let names: Vec<String> = watched.iter().map(|u| self.channels.user(*u)).collect();
        for batch in names.chunks(SUBSCRIBE_BATCH) {
            if !matches!(tokio::time::timeout(CONNECT_TIMEOUT, sink.subscribe(batch)).await, Ok(Ok(()))) {
                tracing::warn!("subscribing to Redis failed; retrying");
                return false;
            }
        }
        self.healthy.store(true, Ordering::Relaxed);
        if was_down {
            tracing::info!("Redis is back; closing this node's connections so their clients sync");
            self.subscriber.events_missed();
        }
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return true,
                _ = heartbeat.tick() => {
                    if !answered(sink.subscribe(self.channels.heartbeat(self.node))).await {
                        tracing::warn!("the Redis subscription connection stopped answering; reconnecting");
                        return false;
                    }
                }
                interest = self.interests.recv() => {
                    // A Redis that stops answering must not stall every new connection.
                    let ok = match interest {
                        Some(Interest::Watch(user, done)) => {
                            let ok = !watched.insert(user) || answered(sink.subscribe(self.channels.user(user))).await;
                            if ok {
                                let _ = done.send(());
                            }
                            ok
                        }
                        Some(Interest::Unwatch(user)) => {
                            !watched.remove(&user) || answered(sink.unsubscribe(self.channels.user(user))).await
                        }
                        None => return true,
                    };
                    if !ok {
                        tracing::warn!("changing a Redis subscription failed; reconnecting");
                        return false;
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("the Redis subscription connection closed; reconnecting");
                        return false;
                    };
                    self.deliver(&message);
                }
            }
        }
    }

    fn deliver(&self, message: &redis::Msg) {
        let Some(user) = self.channels.parse(message.get_channel_name()) else { return };
        let payload = message.get_payload_bytes();
        if payload.starts_with(&self.echo) {
            return;
        }
        let envelope: Envelope<Event> = match serde_json::from_slice(payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable event on the Redis bus was ignored");
                return;
            }
        };
        if envelope.node == self.node {
            return;
        }
        if let Some(at) = envelope.at {
            // A clock behind the publisher's reads as no lag at all.
            self.subscriber.heard_after(Duration::from_millis(unix_millis().saturating_sub(at)));
        }
        match envelope.event {
            Some(event) => {
                if let Some(event) = event.only_for(user) {
                    self.subscriber.deliver(&event);
                }
            }
            None => self.subscriber.user_missed_events(user),
        }
    }
}

/// Whether a subscription change was answered in time.
async fn answered(change: impl std::future::Future<Output = redis::RedisResult<()>>) -> bool {
    matches!(tokio::time::timeout(CONNECT_TIMEOUT, change).await, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::ConnectionId;
    use crate::domain::ErrorCode;

    #[test]
    fn what_a_node_publishes_begins_with_its_echo_prefix_and_no_other_nodes() {
        let event = Event::Refused {
            user: UserId(1),
            connection: ConnectionId(2),
            code: ErrorCode::Conflict,
            detail: "taken".into(),
            client_msg_id: None,
        };
        for node in [0, 12, 123, u64::MAX] {
            let at = Some(unix_millis());
            let published = [
                serde_json::to_vec(&Envelope { node, event: Some(&event), at }).unwrap(),
                serde_json::to_vec(&Envelope::<&Event> { node, event: None, at }).unwrap(),
            ];
            for payload in published {
                assert!(payload.starts_with(&echo_prefix(node)), "{}", String::from_utf8_lossy(&payload));
                for other in [node.wrapping_add(1), node / 10, node.saturating_mul(10).saturating_add(3)] {
                    if other != node {
                        assert!(!payload.starts_with(&echo_prefix(other)), "{other}");
                    }
                }
            }
        }
    }
}
