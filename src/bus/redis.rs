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
//! both connections retry with backoff, and once back, every connection of this
//! node is closed with 1013 so its client syncs what it missed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Bus, Sink};
use crate::domain::{Event, UserId};

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

/// What travels on a channel: the event and the node it came from.
#[derive(Serialize)]
struct Outgoing<'a> {
    node: u64,
    event: &'a Event,
}

#[derive(Deserialize)]
struct Envelope {
    node: u64,
    event: Event,
}

enum Interest {
    Watch(UserId, tokio::sync::oneshot::Sender<()>),
    Unwatch(UserId),
}

/// The Redis implementation of [`Bus`].
pub struct RedisBus {
    node: u64,
    sink: Arc<dyn Sink>,
    outgoing: mpsc::Sender<Event>,
    interest: mpsc::UnboundedSender<Interest>,
    subscribed: Arc<AtomicBool>,
    publishing: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl RedisBus {
    /// Connects to Redis (failing at once if it does not answer) and starts the
    /// publishing and subscribing tasks.
    ///
    /// # Errors
    /// A malformed URL, or a Redis that does not answer a PING.
    pub async fn connect(url: &str, prefix: &str, sink: Arc<dyn Sink>) -> anyhow::Result<Self> {
        let shown = crate::store::redact_url(url);
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
            sink,
            outgoing,
            interest,
            subscribed: Arc::new(AtomicBool::new(false)),
            publishing: Arc::new(AtomicBool::new(true)),
            dropped: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        };
        let channels = Channels { prefix: prefix.to_owned() };
        tokio::spawn(publish_loop(
            client.clone(),
            Some(con),
            events,
            channels.clone(),
            bus.node,
            bus.publishing.clone(),
            bus.stop.clone(),
        ));
        tokio::spawn(subscribe_loop(SubscribeTask {
            client,
            channels,
            node: bus.node,
            sink: bus.sink.clone(),
            interests,
            healthy: bus.subscribed.clone(),
            stop: bus.stop.clone(),
        }));
        Ok(bus)
    }
}

impl Bus for RedisBus {
    fn publish(&self, event: Event) {
        self.sink.deliver(&event);
        if event.recipients().is_empty() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outgoing.try_send(event) {
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

    fn parse(&self, channel: &str) -> Option<UserId> {
        channel.strip_prefix(&self.prefix)?.strip_prefix(":user:")?.parse().ok().map(UserId)
    }
}

async fn publish_loop(
    client: redis::Client,
    mut con: Option<redis::aio::MultiplexedConnection>,
    mut events: mpsc::Receiver<Event>,
    channels: Channels,
    node: u64,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(PIPELINE);
    let mut backoff = BACKOFF_MIN;
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            event = events.recv() => event,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < PIPELINE {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        if con.is_none() {
            match tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection()).await {
                Ok(Ok(c)) => {
                    con = Some(c);
                    backoff = BACKOFF_MIN;
                }
                _ => {
                    healthy.store(false, Ordering::Relaxed);
                    batch.clear();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        let mut pipe = redis::pipe();
        for event in batch.drain(..) {
            let Ok(payload) = serde_json::to_vec(&Outgoing { node, event: &event }) else { continue };
            for user in event.recipients() {
                pipe.publish(channels.user(*user), payload.as_slice()).ignore();
            }
        }
        let Some(c) = con.as_mut() else { continue };
        match pipe.query_async::<()>(c).await {
            Ok(()) => healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, "publishing to Redis failed; reconnecting");
                healthy.store(false, Ordering::Relaxed);
                con = None;
            }
        }
    }
}

struct SubscribeTask {
    client: redis::Client,
    channels: Channels,
    node: u64,
    sink: Arc<dyn Sink>,
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
                _ = task.interests.recv() => {},
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
        while self.interests.try_recv().is_ok() {}
        let mut watched: HashSet<UserId> = self.sink.local_users().into_iter().collect();
        if !watched.is_empty() {
            let names: Vec<String> = watched.iter().map(|u| self.channels.user(*u)).collect();
            if let Err(e) = sink.subscribe(names).await {
                tracing::warn!(error = %e, "subscribing to Redis failed; retrying");
                return false;
            }
        }
        self.healthy.store(true, Ordering::Relaxed);
        if was_down {
            tracing::info!("Redis is back; closing this node's connections so their clients sync");
            self.sink.events_missed();
        }
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return true,
                interest = self.interests.recv() => {
                    let result = match interest {
                        Some(Interest::Watch(user, done)) => {
                            let result = if watched.insert(user) { sink.subscribe(self.channels.user(user)).await } else { Ok(()) };
                            if result.is_ok() {
                                let _ = done.send(());
                            }
                            result
                        }
                        Some(Interest::Unwatch(user)) if watched.remove(&user) => sink.unsubscribe(self.channels.user(user)).await,
                        Some(Interest::Unwatch(_)) => Ok(()),
                        None => return true,
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "changing a Redis subscription failed; reconnecting");
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
        let envelope: Envelope = match serde_json::from_slice(message.get_payload_bytes()) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable event on the Redis bus was ignored");
                return;
            }
        };
        if envelope.node == self.node {
            return;
        }
        if let Some(event) = envelope.event.only_for(user) {
            self.sink.deliver(&event);
        }
    }
}
