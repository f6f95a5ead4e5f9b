//! A connection's outgoing queue, bounded twice: by frames and by the bytes of
//! those frames. The frame bound alone let a client that stops reading hold 1,024
//! frames of 15,000-character messages, ~15 MiB, before it was closed; with the
//! byte bound a connection holds at most `max_bytes` of frames waiting, plus the
//! one batch its writer is writing.
//!
//! Written here rather than taken from tokio or flume because of memory: tokio's
//! bounded mpsc allocates a block of 32 slots when it is made (2.3 KiB, a fifth of
//! an idle connection), and flume's queue keeps whatever it grew to in a burst. This
//! one holds a `VecDeque` that is empty until something is queued and is given back
//! when the writer has drained it ([`QueueRx::shrink`]). One mutex guards it: the
//! hub pushes and the writer takes, rarely at the same instant.
//!
//! The connection's [`Closer`] lives in the same allocation: a child cancellation
//! token and a shared reason cost an idle connection two allocations (176 bytes)
//! more, where the queue's lock and one more `Notify` do the same.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::close;
use super::order::Outgoing;

/// Per item, besides its frame: the queue slot and the item's own fields.
const ITEM_OVERHEAD: usize = 64;

/// The bytes an item holds while it waits.
fn weight(item: &Outgoing) -> usize {
    ITEM_OVERHEAD
        + match item {
            Outgoing::Frame(frame) | Outgoing::Refused { frame, .. } | Outgoing::Read { frame, .. } => frame.len(),
            Outgoing::Release { trailer, .. } => trailer.len(),
            // The frame and the message it was made from (whose text it repeats).
            Outgoing::Message(item) => item.frame.len() + item.message.text.len(),
            Outgoing::Expect { .. } | Outgoing::Hold => 0,
        }
}

/// Why [`QueueTx::try_send`] did not queue an item.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A bound is reached: the connection is too slow and is closed.
    Full,
    /// The connection's writer is gone.
    Closed,
}

struct State {
    items: VecDeque<Outgoing>,
    /// The bytes of the items queued and of those taken but not yet written.
    bytes: usize,
    senders: usize,
    receiver: bool,
    /// Why the connection closes (code, reason); `None` while it is open.
    close: Option<(u16, &'static str)>,
}

struct Shared {
    state: Mutex<State>,
    frames: usize,
    max_bytes: usize,
    /// Wakes the writer: an item was queued, or the last sender went.
    ready: Notify,
    /// Wakes a sender waiting for room: the writer took items, or went.
    room: Notify,
    /// Wakes whoever waits for the connection to close (its reader and writer).
    closed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes the two ends of a queue of `frames` items and `max_bytes` bytes, and the
/// connection's closer.
pub(crate) fn queue(frames: usize, max_bytes: usize) -> (QueueTx, QueueRx, Closer) {
    let state = State { items: VecDeque::new(), bytes: 0, senders: 1, receiver: true, close: None };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        frames: frames.max(1),
        max_bytes,
        ready: Notify::new(),
        room: Notify::new(),
        closed: Notify::new(),
    });
    let closer = Closer { shared: shared.clone() };
    (QueueTx { shared: shared.clone() }, QueueRx { shared, taken: 0 }, closer)
}

/// Ends a connection with a close code; the first reason given wins. Held by the
/// hub (a full queue, a server shutting down) and by the connection itself.
#[derive(Clone)]
pub(crate) struct Closer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closer").field("close", &self.shared.lock().close).finish()
    }
}

impl Closer {
    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        let mut state = self.shared.lock();
        if state.close.is_none() {
            state.close = Some((code, reason));
            drop(state);
            self.shared.closed.notify_waiters();
        }
    }

    /// Closes for a write that did not complete. This reason replaces any earlier
    /// one (a full queue, say): it decides that no close frame or closing handshake
    /// is tried on a socket that cannot be written, so the connection leaves at once.
    pub(crate) fn close_unwritable(&self, code: u16, reason: &'static str) {
        self.shared.lock().close = Some((code, reason));
        self.shared.closed.notify_waiters();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().close.is_some()
    }

    /// Returns once the connection is closing.
    pub(crate) async fn closed(&self) {
        let mut notified = std::pin::pin!(self.shared.closed.notified());
        loop {
            // Registered before the check, so a close between the two still wakes us.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.as_mut().await;
            notified.set(self.shared.closed.notified());
        }
    }

    /// The close code and reason; a connection that ends without one (every
    /// sender gone) is the server shutting down, 1001.
    pub(crate) fn reason(&self) -> (u16, &'static str) {
        self.shared.lock().close.unwrap_or((close::SHUTTING_DOWN, close::SHUTTING_DOWN_REASON))
    }
}

/// The sending end, cloned for the hub and the session.
pub(crate) struct QueueTx {
    shared: Arc<Shared>,
}

impl Clone for QueueTx {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self { shared: self.shared.clone() }
    }
}

impl Drop for QueueTx {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.shared.ready.notify_one();
        }
    }
}

impl std::fmt::Debug for QueueTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("QueueTx").field("items", &state.items.len()).field("bytes", &state.bytes).finish()
    }
}

impl QueueTx {
    /// Queues `item` unless either bound is reached (`Full`: the caller closes).
    pub(crate) fn try_send(&self, item: Outgoing) -> Result<(), Refused> {
        let size = weight(&item);
        let mut state = self.shared.lock();
        if !state.receiver {
            return Err(Refused::Closed);
        }
        if state.items.len() >= self.shared.frames || state.bytes + size > self.shared.max_bytes {
            return Err(Refused::Full);
        }
        state.bytes += size;
        state.items.push_back(item);
        drop(state);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Queues `items` together once there are slots for all of them; their bytes
    /// count, but never refuse them (a replay waits on [`QueueTx::has_room`] before
    /// it sends). False when the writer is gone.
    pub(crate) async fn send_all(&self, items: Vec<Outgoing>) -> bool {
        loop {
            // Registered before the check, so a wakeup between the two is kept.
            let room = self.shared.room.notified();
            {
                let mut state = self.shared.lock();
                if !state.receiver {
                    return false;
                }
                if state.items.len() + items.len() <= self.shared.frames.max(items.len()) {
                    state.bytes += items.iter().map(weight).sum::<usize>();
                    state.items.extend(items);
                    drop(state);
                    self.shared.ready.notify_one();
                    return true;
                }
            }
            room.await;
        }
    }

    /// Queues `item`, waiting for a free slot (see [`QueueTx::send_all`]).
    pub(crate) async fn send(&self, item: Outgoing) -> bool {
        self.send_all(vec![item]).await
    }

    /// Whether `items` more frames fit while `frames` slots and half the bytes stay
    /// free for live events.
    pub(crate) fn has_room(&self, items: usize, frames: usize) -> bool {
        let state = self.shared.lock();
        self.shared.frames.saturating_sub(state.items.len()) >= items + frames
            && state.bytes <= self.shared.max_bytes / 2
    }

    pub(crate) fn max_capacity(&self) -> usize {
        self.shared.frames
    }
}

/// The writer's end. What it takes keeps counting until [`QueueRx::written`]: the
/// batch being written holds its frames until the write completes.
pub(crate) struct QueueRx {
    shared: Arc<Shared>,
    taken: usize,
}

impl std::fmt::Debug for QueueRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueRx").field("taken", &self.taken).finish_non_exhaustive()
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.lock();
            state.receiver = false;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: an item may hold the last reference to a message.
        drop(items);
        self.shared.room.notify_one();
    }
}

impl QueueRx {
    /// The next item; `None` once every sender is gone and nothing is left.
    pub(crate) async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            let ready = self.shared.ready.notified();
            {
                let mut state = self.shared.lock();
                if let Some(item) = state.items.pop_front() {
                    drop(state);
                    self.taken += weight(&item);
                    self.shared.room.notify_one();
                    return Some(item);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Outgoing> {
        let item = self.shared.lock().items.pop_front()?;
        self.taken += weight(&item);
        self.shared.room.notify_one();
        Some(item)
    }

    /// What was taken since the last call has been written (or dropped).
    pub(crate) fn written(&mut self) {
        let taken = std::mem::take(&mut self.taken);
        if taken > 0 {
            let mut state = self.shared.lock();
            state.bytes = state.bytes.saturating_sub(taken);
        }
    }

    /// Gives the queue's memory back if it is empty: an idle connection holds none.
    pub(crate) fn shrink(&mut self) {
        let mut state = self.shared.lock();
        if state.items.is_empty() && state.items.capacity() > 0 {
            state.items = VecDeque::new();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shared.lock().items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_tungstenite::tungstenite::Utf8Bytes;

    use super::*;

    fn frame(len: usize) -> Outgoing {
        Outgoing::Frame(Utf8Bytes::from("x".repeat(len)))
    }

    #[tokio::test]
    async fn the_byte_bound_refuses_what_the_frame_bound_would_take_until_the_writer_has_written() {
        let (tx, mut rx, _closer) = queue(100, 10_000);
        for _ in 0..4 {
            assert!(tx.try_send(frame(2_000)).is_ok());
        }
        assert_eq!(tx.try_send(frame(2_000)), Err(Refused::Full), "over 10,000 bytes");
        assert!(tx.try_send(frame(100)).is_ok(), "a small frame still fits");
        // Taken but not yet written: still counted.
        assert!(rx.recv().await.is_some());
        assert_eq!(tx.try_send(frame(2_000)), Err(Refused::Full), "the batch is being written");
        rx.written();
        assert!(tx.try_send(frame(2_000)).is_ok(), "room once the write completed");
        assert!(!tx.has_room(1, 0), "a replay waits while over half the bytes are queued");
    }

    #[tokio::test]
    async fn a_refused_send_leaves_no_bytes_counted() {
        let (tx, mut rx, _closer) = queue(1, 10_000);
        assert!(tx.try_send(frame(10)).is_ok());
        assert_eq!(tx.try_send(frame(10)), Err(Refused::Full), "the frame bound");
        let _ = rx.recv().await;
        rx.written();
        assert!(tx.has_room(1, 0));
        assert!(tx.try_send(frame(9_900)).is_ok(), "all the bytes are free again");
    }

    #[tokio::test]
    async fn an_idle_queue_holds_no_slots() {
        let (tx, mut rx, _closer) = queue(1_024, 1 << 20);
        assert_eq!(tx.shared.lock().items.capacity(), 0, "nothing allocated until something is queued");
        for _ in 0..100 {
            assert!(tx.try_send(frame(10)).is_ok());
        }
        while rx.try_recv().is_some() {}
        rx.written();
        rx.shrink();
        assert_eq!(tx.shared.lock().items.capacity(), 0, "given back once drained");
        assert!(tx.try_send(frame(10)).is_ok());
        rx.shrink();
        assert_eq!(rx.len(), 1, "a queue that holds items is not shrunk");
    }

    #[tokio::test]
    async fn the_writer_sees_the_end_when_the_last_sender_goes_and_senders_see_the_writer_go() {
        let (tx, mut rx, _closer) = queue(4, 10_000);
        let other = tx.clone();
        assert!(tx.try_send(frame(1)).is_ok());
        drop(tx);
        assert!(rx.recv().await.is_some(), "what was queued is still taken");
        let waiting = tokio::spawn(async move { rx.recv().await.is_none() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(other);
        assert!(waiting.await.is_ok_and(|ended| ended), "recv returns None once no sender is left");

        let (tx, rx, _closer) = queue(4, 10_000);
        drop(rx);
        assert_eq!(tx.try_send(frame(1)), Err(Refused::Closed));
        assert!(!tx.send(frame(1)).await);
    }

    #[tokio::test]
    async fn a_waiting_send_goes_in_once_the_writer_makes_room_for_all_of_it() {
        let (tx, mut rx, _closer) = queue(4, 1 << 20);
        for _ in 0..3 {
            assert!(tx.try_send(frame(1)).is_ok());
        }
        let tx = Arc::new(tx);
        let sender = tx.clone();
        let send = tokio::spawn(async move { sender.send_all(vec![frame(1), frame(1)]).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!send.is_finished(), "two items do not fit in one free slot");
        assert!(rx.recv().await.is_some());
        assert!(send.await.is_ok_and(|sent| sent));
        assert_eq!(rx.len(), 4);

        // A writer that goes wakes a waiting sender, which fails.
        let sender = tx.clone();
        let send = tokio::spawn(async move { sender.send(frame(1)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        assert!(send.await.is_ok_and(|sent| !sent));
    }

    #[tokio::test]
    async fn a_closer_wakes_a_waiter_keeps_the_first_reason_and_lets_an_unwritable_close_replace_it() {
        let (_tx, _rx, closer) = queue(4, 1 << 20);
        assert!(!closer.is_closed());
        let waiter = closer.clone();
        let waiting = tokio::spawn(async move { waiter.closed().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "open: nobody is woken");
        closer.close(close::TRY_AGAIN, "first");
        assert!(tokio::time::timeout(Duration::from_secs(5), waiting).await.is_ok(), "the waiter is woken");
        closer.close(close::NORMAL, "second");
        assert_eq!(closer.reason(), (close::TRY_AGAIN, "first"), "the first reason wins");
        // Closed before anyone waits: the wait returns at once.
        tokio::time::timeout(Duration::from_secs(5), closer.closed()).await.expect("already closed");
        closer.close_unwritable(close::TRY_AGAIN, "unwritable");
        assert_eq!(closer.reason(), (close::TRY_AGAIN, "unwritable"));

        let (_tx, _rx, closer) = queue(4, 1 << 20);
        assert_eq!(closer.reason(), (close::SHUTTING_DOWN, close::SHUTTING_DOWN_REASON), "no reason: shutdown");
    }
}
