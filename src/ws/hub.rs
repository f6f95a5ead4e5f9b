//! This node's live connections by user, and delivery of bus events into their
//! bounded outgoing queues. Delivery never waits: a connection whose queue is full
//! is closed with 1013 and recovers with `sync`, so one slow client costs the
//! server a bounded queue, never unbounded memory or a stalled sender.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};

use foldhash::HashMap;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

use super::close;
use super::order::{Delivery, MessageItem, Outgoing};
use super::protocol;
use super::queue::{Closer, QueueTx, Refused};
use crate::bus::{Bus, ConnectionId, Event, Subscriber};
use crate::domain::UserId;

/// When the bus comes back, this node's connections are closed over a window so
/// their clients do not all reconnect (and sync) at the same instant: one
/// millisecond per connection, at most this long.
const MISSED_CLOSE_WINDOW_MAX: std::time::Duration = std::time::Duration::from_secs(5);
const MISSED: &str = "events may have been missed; reconnect and sync";

#[derive(Debug, Clone)]
struct Conn {
    id: ConnectionId,
    queue: QueueTx,
    closer: Closer,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone)]
struct HubMetrics {
    connections: IntGauge,
    slow_closes: IntCounter,
    frames: IntCounter,
    /// What each connection's writer records.
    writers: WriterMetrics,
}

/// What a connection's writer records: how deep its queue was each time it woke,
/// and closes because its writes stopped completing.
#[derive(Debug, Clone)]
pub(crate) struct WriterMetrics {
    pub(crate) queue_depth: Histogram,
    pub(crate) write_timeouts: IntCounter,
    pub(crate) gap_fills: IntCounter,
    /// How late the bus runs: a writer holds a gap longer while it is late.
    pub(crate) bus_lag: Gauge,
}

/// This node's connections.
#[derive(Debug)]
pub struct Hub {
    users: RwLock<HashMap<UserId, Vec<Conn>>>,
    /// Set (under `users`' write lock) once the server closes every connection: one
    /// that registers later is closed at once.
    closed_all: AtomicBool,
    node: u64,
    next: AtomicU64,
    max_per_user: usize,
    metrics: HubMetrics,
    /// The bus to tell when a user's first connection opens or last one closes.
    bus: OnceLock<Weak<dyn Bus>>,
    /// WebSocket connections per client address.
    addresses: Mutex<HashMap<IpAddr, usize>>,
}

/// Refused registration: the user has too many open connections.
#[derive(Debug)]
pub(crate) struct TooManyConnections;

impl Hub {
    /// # Errors
    /// Only if the metrics cannot be registered (a name clash, which is a bug).
    pub fn new(max_per_user: usize, registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = HubMetrics {
            connections: IntGauge::new("ws_connections", "Open WebSocket connections on this node")?,
            slow_closes: IntCounter::new(
                "ws_slow_consumer_closes_total",
                "Connections closed with 1013 for falling behind",
            )?,
            frames: IntCounter::new("ws_frames_queued_total", "Frames queued to WebSocket connections")?,
            writers: WriterMetrics {
                queue_depth: Histogram::with_opts(
                    HistogramOpts::new(
                        "ws_queue_depth",
                        "Events waiting in a connection's queue when its writer wakes",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
                )?,
                write_timeouts: IntCounter::new(
                    "ws_write_timeout_closes_total",
                    "Connections closed with 1013 because a write did not complete in time (a client not reading)",
                )?,
                gap_fills: IntCounter::new(
                    "ws_gap_fills_total",
                    "Gaps in a thread's messages read from the store after a hold ran out (the bus was late or lost them)",
                )?,
                bus_lag: Gauge::new(
                    "bus_lag_seconds",
                    "How long the last event heard from another node took from its publication to this node \
                     (as the two nodes' clocks tell)",
                )?,
            },
        };
        registry.register(Box::new(metrics.connections.clone()))?;
        registry.register(Box::new(metrics.slow_closes.clone()))?;
        registry.register(Box::new(metrics.frames.clone()))?;
        registry.register(Box::new(metrics.writers.queue_depth.clone()))?;
        registry.register(Box::new(metrics.writers.write_timeouts.clone()))?;
        registry.register(Box::new(metrics.writers.gap_fills.clone()))?;
        registry.register(Box::new(metrics.writers.bus_lag.clone()))?;
        Ok(Self {
            users: RwLock::default(),
            closed_all: AtomicBool::new(false),
            node: rand::random::<u64>() << 32,
            next: AtomicU64::new(1),
            max_per_user,
            metrics,
            bus: OnceLock::new(),
            addresses: Mutex::default(),
        })
    }

    /// Connects the hub to the bus that feeds it, so the bus hears which users are here.
    pub fn attach(&self, bus: &Arc<dyn Bus>) {
        let _ = self.bus.set(Arc::downgrade(bus));
    }

    fn bus(&self) -> Option<Arc<dyn Bus>> {
        self.bus.get().and_then(Weak::upgrade)
    }

    /// A place for one more connection from `address`, if it has fewer than `max`.
    pub(crate) fn admit_address(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<AddressSlot> {
        // An IPv6 subscriber holds a whole /64: counted as one address.
        let address = crate::chat::client_key(address);
        let mut addresses = self.addresses.lock().unwrap_or_else(PoisonError::into_inner);
        let count = addresses.entry(address).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot { hub: self.clone(), address })
    }

    /// Where writers record how deep their queue was when they woke.
    pub(crate) fn writer_metrics(&self) -> &WriterMetrics {
        &self.metrics.writers
    }

    pub(crate) fn connections_of(&self, user: UserId) -> usize {
        self.users.read().unwrap_or_else(PoisonError::into_inner).get(&user).map_or(0, Vec::len)
    }

    /// Adds a connection; it is removed when the returned guard drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        user: UserId,
        queue: QueueTx,
        closer: Closer,
    ) -> Result<(HubSlot, Option<tokio::sync::oneshot::Receiver<()>>), TooManyConnections> {
        let id = ConnectionId(self.node | (self.next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff));
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        let conns = users.entry(user).or_default();
        if conns.len() >= self.max_per_user {
            return Err(TooManyConnections);
        }
        // Every connection asks, so each can wait until the subscription is in place.
        let subscribed = self.bus().and_then(|bus| bus.watch(user));
        if self.closed_all.load(Ordering::Relaxed) {
            closer.close(close::SHUTTING_DOWN, close::SHUTTING_DOWN_REASON);
        }
        conns.push(Conn { id, queue, closer });
        self.metrics.connections.inc();
        Ok((HubSlot { hub: self.clone(), user, id }, subscribed))
    }

    /// Closes every connection with 1001, and any that registers from now on: the
    /// server is stopping, and every accepted send is stored, so each writer flushes
    /// its acks and closes.
    pub fn close_all(&self) {
        let users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        self.closed_all.store(true, Ordering::Relaxed);
        for conn in users.values().flatten() {
            conn.closer.close(close::SHUTTING_DOWN, close::SHUTTING_DOWN_REASON);
        }
    }

    /// Gives the maps' spare room back (they keep the size of the busiest moment):
    /// for when the node goes quiet.
    pub fn release_memory(&self) {
        self.users.write().unwrap_or_else(PoisonError::into_inner).shrink_to_fit();
        self.addresses.lock().unwrap_or_else(PoisonError::into_inner).shrink_to_fit();
    }

    fn push(&self, conn: &Conn, item: Outgoing) {
        match conn.queue.try_send(item) {
            Ok(()) => self.metrics.frames.inc(),
            Err(Refused::Full) => {
                if !conn.closer.is_closed() {
                    self.metrics.slow_closes.inc();
                    conn.closer.close(close::TRY_AGAIN, "too slow to keep up; reconnect and sync");
                }
            }
            Err(Refused::Closed) => {}
        }
    }

    /// Pushes `item` to every connection of `recipients` but `skip`, making the frame
    /// (once) only if someone here gets it.
    fn fan_out(&self, recipients: &[UserId], skip: Option<ConnectionId>, make: impl FnOnce() -> Outgoing) {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        let mut targets = recipients.iter().filter_map(|u| users.get(u)).flatten().filter(|c| Some(c.id) != skip);
        let Some(mut conn) = targets.next() else { return };
        // The last connection takes the item itself: a frame's first clone copies
        // nothing but allocates its shared count, and most events have one target.
        let item = make();
        for next in targets {
            self.push(conn, item.clone());
            conn = next;
        }
        self.push(conn, item);
    }

    /// Pushes the item `make` builds to one connection, building it only if that
    /// connection is here: on the other nodes of a cluster it never is.
    fn to_connection(&self, user: UserId, id: ConnectionId, make: impl FnOnce() -> Outgoing) {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = users.get(&user).and_then(|c| c.iter().find(|c| c.id == id)) {
            self.push(conn, make());
        }
    }
}

impl Subscriber for Hub {
    fn heard_after(&self, lag: std::time::Duration) {
        self.metrics.writers.bus_lag.set(lag.as_secs_f64());
    }

    fn local_users(&self) -> Vec<UserId> {
        self.users.read().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    fn events_missed(&self) {
        let mut closers: Vec<Closer> = {
            let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
            users.values().flatten().map(|c| c.closer.clone()).collect()
        };
        // Each at a random instant of the window (a shuffle, then an even pace).
        rand::seq::SliceRandom::shuffle(closers.as_mut_slice(), &mut rand::thread_rng());
        let window = MISSED_CLOSE_WINDOW_MAX.min(std::time::Duration::from_millis(closers.len() as u64));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return closers.iter().for_each(|c| c.close(close::TRY_AGAIN, MISSED));
        };
        runtime.spawn(async move {
            let started = tokio::time::Instant::now();
            let count = closers.len().max(1) as u32;
            for (n, closer) in closers.iter().enumerate() {
                tokio::time::sleep_until(started + window * n as u32 / count).await;
                closer.close(close::TRY_AGAIN, MISSED);
            }
        });
    }

    fn user_missed_events(&self, user: UserId) {
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        for conn in users.get(&user).into_iter().flatten() {
            conn.closer.close(close::TRY_AGAIN, MISSED);
        }
    }

    fn deliver(&self, event: &Event) {
        match event {
            Event::Message { message, recipients, ack } => {
                // Written once for the delivery and the ack, and only if one is sent.
                let json = std::cell::OnceCell::new();
                let json = || json.get_or_init(|| protocol::MessageJson::new(message));
                self.fan_out(recipients, ack.as_ref().map(|a| a.connection), || {
                    Outgoing::Message(MessageItem::new(
                        message.clone(),
                        protocol::new_message_of(json()),
                        Delivery::Live,
                    ))
                });
                if let Some(ack) = ack {
                    self.to_connection(ack.user, ack.connection, || {
                        let frame = protocol::message_ack_of(ack.client_msg_id.as_deref(), json());
                        let delivery = Delivery::Ack { client_msg_id: ack.client_msg_id.clone() };
                        Outgoing::Message(MessageItem::new(message.clone(), frame, delivery))
                    });
                }
            }
            Event::Typing { thread_id, user, recipients } => {
                self.fan_out(recipients, None, || Outgoing::Frame(protocol::typing(*thread_id, user)));
            }
            Event::Read { thread_id, user_id, up_to_seq, recipients } => {
                self.fan_out(recipients, None, || Outgoing::Read {
                    thread: *thread_id,
                    up_to: *up_to_seq,
                    frame: protocol::read(*thread_id, *user_id, *up_to_seq),
                });
            }
            Event::Refused { user, connection, code, detail, client_msg_id } => {
                self.to_connection(*user, *connection, || Outgoing::Refused {
                    thread: None,
                    client_msg_id: client_msg_id.clone(),
                    frame: protocol::error(*code, detail, client_msg_id.as_deref()),
                });
            }
        }
    }
}

/// A connection's place among its address's; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    hub: Arc<Hub>,
    address: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut addresses = self.hub.addresses.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = addresses.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                addresses.remove(&self.address);
            }
        }
    }
}

/// A connection's place in the hub; dropping it removes the connection.
#[derive(Debug)]
pub(crate) struct HubSlot {
    hub: Arc<Hub>,
    user: UserId,
    id: ConnectionId,
}

impl HubSlot {
    pub(crate) fn id(&self) -> ConnectionId {
        self.id
    }
}

impl Drop for HubSlot {
    fn drop(&mut self) {
        let mut users = self.hub.users.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(conns) = users.get_mut(&self.user) {
            conns.retain(|c| c.id != self.id);
            if conns.is_empty() {
                users.remove(&self.user);
                if let Some(bus) = self.hub.bus() {
                    bus.unwatch(self.user);
                }
            }
        }
        self.hub.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::queue;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    #[test]
    fn close_all_closes_every_connection_and_any_that_registers_after_it() {
        let hub = Arc::new(Hub::new(4, &Registry::new()).unwrap());
        let (tx, _rx, before) = queue::queue(4, 1 << 20);
        let _first = hub.register(UserId(1), tx, before.clone()).unwrap();
        assert!(!before.is_closed());
        hub.close_all();
        assert_eq!(before.reason(), (close::SHUTTING_DOWN, close::SHUTTING_DOWN_REASON));
        assert!(before.is_closed());
        let (tx, _rx, after) = queue::queue(4, 1 << 20);
        let _second = hub.register(UserId(2), tx, after.clone()).unwrap();
        assert!(after.is_closed(), "a connection that registers during shutdown is closed at once");
    }

    #[test]
    fn an_item_for_one_connection_is_built_only_where_that_connection_is() {
        let hub = Arc::new(Hub::new(4, &Registry::new()).unwrap());
        let (tx, mut rx, closer) = queue::queue(4, 1 << 20);
        let (slot, _) = hub.register(UserId(1), tx, closer).unwrap();
        let mut built = 0;
        let mut make = || {
            built += 1;
            Outgoing::Frame(Utf8Bytes::from_static(r#"{"type":"pong"}"#))
        };
        // A connection of another node (as an ack's is on every node but one), or
        // the id under another user: nothing is built, nothing is sent.
        hub.to_connection(UserId(1), ConnectionId(slot.id.0 + 1), &mut make);
        hub.to_connection(UserId(2), slot.id, &mut make);
        assert!(rx.try_recv().is_none());
        hub.to_connection(UserId(1), slot.id, &mut make);
        assert_eq!(built, 1, "built once, for the connection that is here");
        assert!(matches!(rx.try_recv(), Some(Outgoing::Frame(_))));
    }
}
