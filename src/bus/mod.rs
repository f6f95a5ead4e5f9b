//! Carries [`Event`]s to the nodes whose users must hear of them. Best effort by
//! design: the store is the truth, and a client that missed an event recovers it
//! with `sync`. Knows nothing of WebSockets: it hands events to a [`Sink`].

use std::sync::Arc;

use crate::domain::Event;

/// Where a node's bus delivers events: this node's hub of live connections.
pub trait Sink: Send + Sync + 'static {
    fn deliver(&self, event: &Event);
}

/// Publishes events to every node.
pub trait Bus: Send + Sync + 'static {
    /// Hands `event` to every node that has a connection of one of its recipients.
    /// Never blocks and never fails the caller: delivery is best effort.
    fn publish(&self, event: Event);

    /// Whether the bus is connected (for `/readyz`).
    fn is_healthy(&self) -> bool {
        true
    }
}

/// The single-node bus: events go straight to this node's sink, in publish order.
pub struct LocalBus {
    sink: Arc<dyn Sink>,
}

impl LocalBus {
    pub fn new(sink: Arc<dyn Sink>) -> Self {
        Self { sink }
    }
}

impl Bus for LocalBus {
    fn publish(&self, event: Event) {
        self.sink.deliver(&event);
    }
}
