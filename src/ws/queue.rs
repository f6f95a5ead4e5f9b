//! A connection's outgoing queue, bounded twice: by frames (tokio's bounded mpsc)
//! and by the bytes of those frames. The frame bound alone let a client that stops
//! reading hold 1,024 frames of 15,000-character messages, ~15 MiB, before it was
//! closed; with the byte bound a connection holds at most `max_bytes` of frames
//! waiting, plus the one batch its writer is writing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};

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

/// Makes the two ends of a queue of `frames` items and `max_bytes` bytes.
pub(crate) fn queue(frames: usize, max_bytes: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(frames);
    let bytes = Arc::new(AtomicUsize::new(0));
    (QueueTx { tx, bytes: bytes.clone(), max_bytes }, QueueRx { rx, bytes, taken: 0 })
}

/// The sending end, cloned for the hub and the session.
#[derive(Debug, Clone)]
pub(crate) struct QueueTx {
    tx: mpsc::Sender<Outgoing>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl QueueTx {
    /// Queues `item` unless either bound is reached (`Full`: the caller closes).
    pub(crate) fn try_send(&self, item: Outgoing) -> Result<(), TrySendError<Outgoing>> {
        let size = weight(&item);
        if self.bytes.fetch_add(size, Ordering::AcqRel) + size > self.max_bytes {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(TrySendError::Full(item));
        }
        self.tx.try_send(item).inspect_err(|_| {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
        })
    }

    /// Queues `item`, waiting for a free slot; its bytes count, but never refuse it
    /// (a replay waits on [`QueueTx::has_room`] before it sends).
    pub(crate) async fn send(&self, item: Outgoing) -> Result<(), SendError<Outgoing>> {
        let size = weight(&item);
        self.bytes.fetch_add(size, Ordering::AcqRel);
        self.tx.send(item).await.inspect_err(|_| {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
        })
    }

    /// Whether `items` more frames fit while `frames` slots and half the bytes stay
    /// free for live events.
    pub(crate) fn has_room(&self, items: usize, frames: usize) -> bool {
        self.tx.capacity() >= items + frames && self.bytes.load(Ordering::Acquire) <= self.max_bytes / 2
    }

    pub(crate) fn max_capacity(&self) -> usize {
        self.tx.max_capacity()
    }

    /// Reserves `n` slots at once, for a replay's chunk.
    pub(crate) async fn reserve_many(&self, n: usize) -> Result<Permits<'_>, SendError<()>> {
        let permits = self.tx.reserve_many(n).await?;
        Ok(Permits { permits, bytes: &self.bytes })
    }
}

/// Reserved slots; each item sent through them counts its bytes.
pub(crate) struct Permits<'a> {
    permits: mpsc::PermitIterator<'a, Outgoing>,
    bytes: &'a AtomicUsize,
}

impl Permits<'_> {
    /// Sends into the next reserved slot; `false` when none is left.
    pub(crate) fn send(&mut self, item: Outgoing) -> bool {
        let Some(permit) = self.permits.next() else { return false };
        self.bytes.fetch_add(weight(&item), Ordering::AcqRel);
        permit.send(item);
        true
    }
}

/// The writer's end. What it takes keeps counting until [`QueueRx::written`]: the
/// batch being written holds its frames until the write completes.
#[derive(Debug)]
pub(crate) struct QueueRx {
    rx: mpsc::Receiver<Outgoing>,
    bytes: Arc<AtomicUsize>,
    taken: usize,
}

impl QueueRx {
    pub(crate) async fn recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.recv().await?;
        self.taken += weight(&item);
        Some(item)
    }

    pub(crate) fn try_recv(&mut self) -> Result<Outgoing, TryRecvError> {
        let item = self.rx.try_recv()?;
        self.taken += weight(&item);
        Ok(item)
    }

    /// What was taken since the last call has been written (or dropped).
    pub(crate) fn written(&mut self) {
        self.bytes.fetch_sub(std::mem::take(&mut self.taken), Ordering::AcqRel);
    }

    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    use super::*;

    fn frame(len: usize) -> Outgoing {
        Outgoing::Frame(Utf8Bytes::from("x".repeat(len)))
    }

    #[tokio::test]
    async fn the_byte_bound_refuses_what_the_frame_bound_would_take_until_the_writer_has_written() {
        let (tx, mut rx) = queue(100, 10_000);
        for _ in 0..4 {
            assert!(tx.try_send(frame(2_000)).is_ok());
        }
        assert!(matches!(tx.try_send(frame(2_000)), Err(TrySendError::Full(_))), "over 10,000 bytes");
        assert!(tx.try_send(frame(100)).is_ok(), "a small frame still fits");
        // Taken but not yet written: still counted.
        assert!(rx.recv().await.is_some());
        assert!(matches!(tx.try_send(frame(2_000)), Err(TrySendError::Full(_))), "the batch is being written");
        rx.written();
        assert!(tx.try_send(frame(2_000)).is_ok(), "room once the write completed");
        assert!(!tx.has_room(1, 0), "a replay waits while over half the bytes are queued");
    }

    #[tokio::test]
    async fn a_refused_send_leaves_no_bytes_counted() {
        let (tx, mut rx) = queue(1, 10_000);
        assert!(tx.try_send(frame(10)).is_ok());
        assert!(tx.try_send(frame(10)).is_err(), "the frame bound");
        let _ = rx.recv().await;
        rx.written();
        assert!(tx.has_room(1, 0));
        assert!(tx.try_send(frame(9_900)).is_ok(), "all the bytes are free again");
    }
}
