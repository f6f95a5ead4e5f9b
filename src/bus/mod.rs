//! Carries [`Event`]s to the nodes whose users must hear of them. Best effort by
//! design: the store is the truth, and a client that missed an event recovers it
//! with `sync`. Knows nothing of WebSockets: it hands events to a [`Subscriber`].

mod event;
mod redis;

use std::sync::Arc;

use crate::domain::UserId;

pub use event::{Ack, ConnectionId, Event};
pub use redis::RedisBus;

/// Where a node's bus delivers events: this node's hub of live connections.
pub trait Subscriber: Send + Sync + 'static {
    fn deliver(&self, event: &Event);
    /// An event from another node reached this one `lag` after it was published:
    /// how late the bus runs now.
    fn heard_after(&self, _lag: std::time::Duration) {}
    /// The users with a live connection here (to subscribe for after a reconnect).
    fn local_users(&self) -> Vec<UserId>;
    /// Events may have been lost (the bus was down): close every connection with
    /// 1013 so each client reconnects and syncs.
    fn events_missed(&self);
    /// The same, for one user's connections.
    fn user_missed_events(&self, user: UserId);
}

/// Publishes events to every node.
pub trait Bus: Send + Sync + 'static {
    /// Hands `event` to every node that has a connection of one of its recipients,
    /// this one first. Never blocks and never fails the caller: delivery is best effort.
    fn publish(&self, event: Event);

    /// `user` now has a connection on this node: hear their events from now on. The
    /// answer, when there is one, completes once other nodes' events for `user`
    /// reach this node.
    fn watch(&self, _user: UserId) -> Option<tokio::sync::oneshot::Receiver<()>> {
        None
    }

    /// `user`'s last connection on this node closed.
    fn unwatch(&self, _user: UserId) {}

    /// Whether the bus is connected (for `/readyz`).
    fn is_healthy(&self) -> bool {
        true
    }

    /// Stops the bus's background work (at shutdown).
    fn close(&self) {}
}

impl std::fmt::Debug for dyn Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bus")
    }
}

/// The single-node bus: events go straight to this node's subscriber, in publish order.
pub struct LocalBus {
    subscriber: Arc<dyn Subscriber>,
}

impl LocalBus {
    pub fn new(subscriber: Arc<dyn Subscriber>) -> Self {
        Self { subscriber }
    }
}

impl Bus for LocalBus {
    fn publish(&self, event: Event) {
        self.subscriber.deliver(&event);
    }
}
