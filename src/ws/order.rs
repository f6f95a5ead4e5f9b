//! The order of one connection's events, as a plain state machine (no socket, no
//! clock of its own), so every interleaving can be tested without a server.
//!
//! Per thread it knows the last seq it delivered. A message that leaves a gap
//! (another node's earlier message is still on its way through the bus) is held
//! until the gap fills or its hold runs out, when the writer reads the gap from the
//! store ([`Sequencer::due`], [`Sequencer::filled`]). A message at or below the last
//! seq was delivered already and is dropped. A `read` event waits for the message
//! it names. During a `sync` live events are held while the replay is written.
//!
//! The sending connection's own message may reach it from the store (a replay or
//! a fill) before its ack comes through the committer: it is then written as the
//! ack, and the late ack is dropped, so the sender sees each message once, in
//! order, and always as `message_ack`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::protocol;
use crate::domain::{Message, Seq, ThreadId, UserId};

/// How long a message waits for the ones before it to come through the bus before
/// they are read from the store: well above a cross-node hop through Redis (a
/// millisecond or two), well below what a person notices.
pub(crate) const HOLD: Duration = Duration::from_millis(200);
/// While the bus runs late (a node behind on what Redis sends it), a hold lasts this
/// many times the bus's lag: the missing message is most likely still on its way,
/// and reading it from the store for every held connection was more work for a node
/// already behind. On two nodes under a closed loop, 200 ms holds read ~12,000 gaps
/// in 20 s on the node that fell behind, which then fell further behind and stored
/// a third of what the other did (`docs/benchmarks.md`, 2026-12-07).
const LAG_HOLDS: u32 = 2;
/// The longest a hold lasts however late the bus runs.
const MAX_HOLD: Duration = Duration::from_secs(5);

/// How long a hold lasts while the bus's lag is `bus_lag`.
fn hold_for(bus_lag: Duration) -> Duration {
    (bus_lag * LAG_HOLDS).clamp(HOLD, MAX_HOLD)
}

/// Events held per connection (gaps and a `sync` together); a connection past it
/// is closed with 1013 and syncs again.
const MAX_HELD: usize = 8192;
/// Keys remembered for the acks this connection waits for; past it they are
/// forgotten (a replayed own message is then written as `new_message`).
const MAX_AWAITED: usize = 1024;

/// How a message reached the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Through the bus, to a device that did not send it.
    Live,
    /// Through the bus, to the connection that sent it (the frame is the ack).
    Ack { client_msg_id: Option<Arc<str>> },
    /// Read from the store for a `sync`.
    Replay,
    /// Read from the store to fill a gap.
    Fill,
}

/// One message frame for this connection.
#[derive(Debug, Clone)]
pub(crate) struct MessageItem {
    pub(crate) message: Arc<Message>,
    pub(crate) frame: Utf8Bytes,
    pub(crate) delivery: Delivery,
}

impl MessageItem {
    pub(crate) fn new(message: Arc<Message>, frame: Utf8Bytes, delivery: Delivery) -> Self {
        Self { message, frame, delivery }
    }

    fn thread(&self) -> ThreadId {
        self.message.thread_id
    }

    fn seq(&self) -> Seq {
        self.message.seq
    }
}

/// What a connection's writer is handed.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A frame with no ordering duty: typing, error, pong, the answer to a repeated key.
    Frame(Utf8Bytes),
    /// An `error` about a queued message: the connection no longer awaits its ack.
    /// Its thread, when known (a refusal after queueing does not say).
    Refused { thread: Option<ThreadId>, client_msg_id: Option<Arc<str>>, frame: Utf8Bytes },
    /// A message, delivered once and in seq order per thread.
    Message(MessageItem),
    /// A `read` event: written only once message `up_to` of its thread is.
    Read { thread: ThreadId, up_to: Seq, frame: Utf8Bytes },
    /// The connection sent a message into this thread (with this key, if any) and
    /// awaits its ack.
    Expect { thread: ThreadId, client_msg_id: Option<Arc<str>> },
    /// Start of a `sync`: hold live events until [`Outgoing::Release`].
    Hold,
    /// End of a `sync`: this frame (`synced`, or an error), then the held events.
    /// `heads` is where every thread of the user stood when the sync was planned
    /// (`None` when it failed).
    Release { trailer: Utf8Bytes, heads: Option<Vec<(ThreadId, Seq)>> },
}

/// Seqs missing before held events of a thread: strictly between `after` and `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) thread: ThreadId,
    pub(crate) after: Seq,
    pub(crate) before: Seq,
}

/// Too much is held: the connection must close and sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

/// One thread on this connection.
#[derive(Debug, Default)]
struct Line {
    last: Seq,
    /// Everything after `start` up to `last` was delivered on this connection; at
    /// or below it nothing was, so a replay the client asks for still sends it.
    start: Seq,
    /// The first seq the current `sync` replayed below `start`.
    replayed_from: Option<Seq>,
    held: BTreeMap<Seq, MessageItem>,
    /// `read` frames waiting for their message, in arrival order.
    reads: Vec<(Seq, Utf8Bytes)>,
}

/// A thread's hold: since when it waits, and when it is next looked at.
#[derive(Debug, Clone, Copy)]
struct Hold {
    since: Instant,
    until: Instant,
}

impl Hold {
    fn from(now: Instant) -> Self {
        Self { since: now, until: now + HOLD }
    }
}

/// The ordering state of one connection.
#[derive(Debug)]
pub(crate) struct Sequencer {
    me: UserId,
    lines: HashMap<ThreadId, Line>,
    /// Threads with held events, and their holds.
    deadlines: HashMap<ThreadId, Hold>,
    /// Set by a completed `sync`: every thread of the user then has a line, so a
    /// thread without one is new and starts at seq 0. Before it, the first message
    /// seen on a thread sets where it starts.
    complete: bool,
    /// Live events held while a `sync` replays.
    syncing: Option<Vec<Outgoing>>,
    held: usize,
    /// Sends whose ack has not been written, by thread and key (`None`: sent
    /// without a key), with their count.
    awaited: HashMap<(ThreadId, Option<Arc<str>>), u32>,
    /// Own messages written as acks from the store, whose late ack must be dropped.
    converted: HashSet<(ThreadId, Seq)>,
}

impl Sequencer {
    /// A connection that knows nothing of where threads stand.
    #[cfg(test)]
    pub(crate) fn new(me: UserId) -> Self {
        Self::starting_at(me, None)
    }

    /// A connection that knows where each of the user's threads stood just before
    /// it joined the bus: every thread is known from its first message on, and
    /// what was stored in between comes as a gap, filled from the store.
    pub(crate) fn starting_at(me: UserId, heads: Option<Vec<(ThreadId, Seq)>>) -> Self {
        let complete = heads.is_some();
        let lines = heads
            .unwrap_or_default()
            .into_iter()
            .map(|(t, last)| (t, Line { last, start: last, ..Line::default() }))
            .collect();
        Self {
            me,
            lines,
            deadlines: HashMap::new(),
            complete,
            syncing: None,
            held: 0,
            awaited: HashMap::new(),
            converted: HashSet::new(),
        }
    }

    /// Starts a thread just before `seq` if its position said `seq` was already
    /// there: for events that reached the connection before its positions were read.
    pub(crate) fn start_before(&mut self, thread: ThreadId, seq: Seq) {
        if let Some(line) = self.lines.get_mut(&thread)
            && seq <= line.last
        {
            line.last = Seq(seq.0 - 1);
            line.start = line.last;
        }
    }

    /// Takes one item; the frames to write now are appended to `out`.
    ///
    /// # Errors
    /// [`Overflow`] when more than the bound would be held.
    pub(crate) fn accept(&mut self, item: Outgoing, now: Instant, out: &mut Vec<Utf8Bytes>) -> Result<(), Overflow> {
        match item {
            Outgoing::Frame(frame) => out.push(frame),
            Outgoing::Refused { thread, client_msg_id, frame } => {
                match thread {
                    Some(thread) => self.forget(thread, client_msg_id.as_ref()),
                    None => self.forget_anywhere(client_msg_id.as_ref()),
                }
                out.push(frame);
            }
            Outgoing::Expect { thread, client_msg_id } => {
                if self.awaited.len() >= MAX_AWAITED {
                    self.awaited.clear();
                }
                *self.awaited.entry((thread, client_msg_id)).or_default() += 1;
            }
            Outgoing::Hold => {
                if self.syncing.is_none() {
                    self.syncing = Some(Vec::new());
                    for line in self.lines.values_mut() {
                        line.replayed_from = None;
                    }
                }
            }
            Outgoing::Message(item) if item.delivery == Delivery::Replay => self.offer(item, now, out)?,
            item @ (Outgoing::Message(_) | Outgoing::Read { .. }) if self.syncing.is_some() => {
                self.held += 1;
                if self.held > MAX_HELD {
                    return Err(Overflow);
                }
                if let Some(held) = &mut self.syncing {
                    held.push(item);
                }
            }
            Outgoing::Message(item) => self.offer(item, now, out)?,
            Outgoing::Read { thread, up_to, frame } => self.offer_read(thread, up_to, frame, now, out)?,
            Outgoing::Release { trailer, heads } => {
                if let Some(heads) = heads {
                    for (thread, head) in heads {
                        let line = self.lines.entry(thread).or_insert_with(|| Line { start: head, ..Line::default() });
                        line.last = line.last.max(head);
                    }
                    self.complete = true;
                }
                out.push(trailer);
                let held = self.syncing.take().unwrap_or_default();
                self.held = self.held.saturating_sub(held.len());
                for thread in self.lines.keys().copied().collect::<Vec<_>>() {
                    self.drain(thread, out);
                }
                for item in held {
                    self.accept(item, now, out)?;
                }
            }
        }
        Ok(())
    }

    /// When the earliest hold runs out, if anything is held.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().map(|h| h.until).min()
    }

    /// The gaps whose hold has run out, to be read from the store and handed to
    /// [`Sequencer::filled`]. `bus_lag` is how late the bus runs now: a hold lasts
    /// longer while it is late ([`LAG_HOLDS`]).
    pub(crate) fn due(&mut self, now: Instant, bus_lag: Duration) -> Vec<Gap> {
        let wait = hold_for(bus_lag);
        let mut due = Vec::new();
        for (thread, hold) in &mut self.deadlines {
            if hold.until > now {
                continue;
            }
            if hold.since + wait > now {
                hold.until = hold.since + wait;
            } else {
                due.push(*thread);
            }
        }
        let mut gaps = Vec::with_capacity(due.len());
        for thread in due {
            self.deadlines.remove(&thread);
            let Some(line) = self.lines.get(&thread) else { continue };
            let first_held = line.held.keys().next().copied();
            // Up to the first held message; for a `read` alone, up to the one it names.
            let last_read = line.reads.iter().map(|(s, _)| Seq(s.0 + 1)).max();
            if let Some(before) = first_held.or(last_read) {
                gaps.push(Gap { thread, after: line.last, before });
            }
        }
        gaps
    }

    /// The messages read from the store for `gap`: written in order, then whatever
    /// they unblocked. A seq the store did not have is skipped (it cannot exist, as
    /// seqs have no gaps), so the connection never stalls.
    pub(crate) fn filled(&mut self, gap: Gap, messages: Vec<MessageItem>, now: Instant, out: &mut Vec<Utf8Bytes>) {
        for item in messages {
            if let Some(line) = self.lines.get(&gap.thread)
                && item.seq() > line.last
                && item.seq() < gap.before
            {
                self.write(item, out);
            }
        }
        if let Some(line) = self.lines.get_mut(&gap.thread) {
            if let Some(first) = line.held.keys().next().copied()
                && first.0 > line.last.0 + 1
            {
                line.last = Seq(first.0 - 1);
            }
            if line.held.is_empty() {
                line.last = line.last.max(line.reads.iter().map(|(s, _)| *s).max().unwrap_or_default());
            }
        }
        self.drain(gap.thread, out);
        self.arm(gap.thread, now);
    }

    /// Everything held, in seq order, gaps or not: for a connection that is closing,
    /// so the acks of stored messages still go out.
    pub(crate) fn flush(&mut self, out: &mut Vec<Utf8Bytes>) {
        let now = Instant::now();
        for item in self.syncing.take().unwrap_or_default() {
            let _ = self.accept(item, now, out);
        }
        let threads: Vec<ThreadId> = self.lines.keys().copied().collect();
        for thread in threads {
            let Some(line) = self.lines.get_mut(&thread) else { continue };
            let held = std::mem::take(&mut line.held);
            let reads = std::mem::take(&mut line.reads);
            for (_, item) in held {
                self.write(item, out);
            }
            out.extend(reads.into_iter().map(|(_, frame)| frame));
        }
        self.deadlines.clear();
    }

    fn offer(&mut self, item: MessageItem, now: Instant, out: &mut Vec<Utf8Bytes>) -> Result<(), Overflow> {
        let (thread, seq) = (item.thread(), item.seq());
        let complete = self.complete;
        let line = self.lines.entry(thread).or_insert_with(|| {
            // A thread first heard of now: after a sync it is new (it starts at 0);
            // before one, or in a replay, this message is where it starts.
            let start = Seq(if complete && item.delivery != Delivery::Replay { 0 } else { seq.0 - 1 });
            Line { last: start, start, ..Line::default() }
        });
        let replay = item.delivery == Delivery::Replay;
        if replay && seq <= line.start {
            // Asked for by the client and never sent on this connection. Once the
            // replay reaches `start`, all from its first seq on has been delivered.
            let from = *line.replayed_from.get_or_insert(seq);
            if seq == line.start {
                line.start = Seq(from.0 - 1);
                line.replayed_from = None;
            }
            self.write(item, out);
        } else if seq <= line.last {
            self.duplicate(item, out);
        } else if seq.0 == line.last.0 + 1 || replay {
            self.write(item, out);
            self.drain(thread, out);
        } else {
            if self.held >= MAX_HELD {
                return Err(Overflow);
            }
            if line.held.insert(seq, item).is_none() {
                self.held += 1;
            }
            self.deadlines.entry(thread).or_insert(Hold::from(now));
        }
        Ok(())
    }

    fn offer_read(
        &mut self,
        thread: ThreadId,
        up_to: Seq,
        frame: Utf8Bytes,
        now: Instant,
        out: &mut Vec<Utf8Bytes>,
    ) -> Result<(), Overflow> {
        if !self.complete && !self.lines.contains_key(&thread) {
            // Nothing known of this thread before a sync: nothing to wait for.
            out.push(frame);
            return Ok(());
        }
        let line = self.lines.entry(thread).or_default();
        if up_to <= line.last {
            out.push(frame);
            return Ok(());
        }
        if self.held >= MAX_HELD {
            return Err(Overflow);
        }
        line.reads.push((up_to, frame));
        self.held += 1;
        self.deadlines.entry(thread).or_insert(Hold::from(now));
        Ok(())
    }

    /// A message at or below the thread's last seq: already delivered. Only an ack
    /// that was not already written from the store still goes out (it answers a frame).
    fn duplicate(&mut self, item: MessageItem, out: &mut Vec<Utf8Bytes>) {
        let Delivery::Ack { client_msg_id } = &item.delivery else { return };
        if self.converted.remove(&(item.thread(), item.seq())) {
            return;
        }
        // Also the answer to a repeated key: the first message, delivered long ago.
        self.forget(item.thread(), client_msg_id.as_ref());
        out.push(item.frame);
    }

    /// Writes a message that comes next in its thread.
    fn write(&mut self, item: MessageItem, out: &mut Vec<Utf8Bytes>) {
        let (thread, seq) = (item.thread(), item.seq());
        if let Some(line) = self.lines.get_mut(&thread) {
            line.last = line.last.max(seq);
        }
        match &item.delivery {
            Delivery::Ack { client_msg_id } => {
                self.forget(thread, client_msg_id.as_ref());
                out.push(item.frame);
            }
            Delivery::Live => out.push(item.frame),
            Delivery::Replay | Delivery::Fill => {
                let own = item.message.sender.as_ref().is_some_and(|s| s.id == self.me);
                let key = (thread, item.message.client_msg_id.clone());
                if own && self.awaited.contains_key(&key) {
                    self.forget(thread, key.1.as_ref());
                    if self.converted.len() >= MAX_AWAITED {
                        self.converted.clear();
                    }
                    self.converted.insert((thread, seq));
                    out.push(protocol::message_ack(key.1.as_deref(), &item.message));
                } else {
                    out.push(item.frame);
                }
            }
        }
    }

    /// Writes what the thread's last seq now allows: held messages that follow it
    /// (dropping those it passed) and `read` events it reached.
    fn drain(&mut self, thread: ThreadId, out: &mut Vec<Utf8Bytes>) {
        loop {
            let Some(line) = self.lines.get_mut(&thread) else { return };
            let Some((&seq, _)) = line.held.first_key_value() else { break };
            if seq.0 > line.last.0 + 1 {
                break;
            }
            let Some((_, item)) = line.held.pop_first() else { break };
            self.held = self.held.saturating_sub(1);
            if seq <= line.last {
                self.duplicate(item, out);
            } else {
                self.write(item, out);
            }
        }
        if let Some(line) = self.lines.get_mut(&thread) {
            let last = line.last;
            let before = line.reads.len();
            line.reads.retain(|(up_to, frame)| {
                let ready = *up_to <= last;
                if ready {
                    out.push(frame.clone());
                }
                !ready
            });
            self.held = self.held.saturating_sub(before - line.reads.len());
            if line.held.is_empty() && line.reads.is_empty() {
                self.deadlines.remove(&thread);
            }
        }
    }

    /// Starts a new hold for what is still waiting after a fill.
    fn arm(&mut self, thread: ThreadId, now: Instant) {
        if let Some(line) = self.lines.get(&thread)
            && (!line.held.is_empty() || !line.reads.is_empty())
        {
            self.deadlines.entry(thread).or_insert(Hold::from(now));
        }
    }

    /// One send into `thread` under `key` is answered.
    fn forget(&mut self, thread: ThreadId, key: Option<&Arc<str>>) {
        let entry = (thread, key.cloned());
        if let Some(n) = self.awaited.get_mut(&entry) {
            *n -= 1;
            if *n == 0 {
                self.awaited.remove(&entry);
            }
        }
    }

    /// A refusal that names only the key: forget one send with that key.
    fn forget_anywhere(&mut self, key: Option<&Arc<str>>) {
        let found = self.awaited.keys().find(|(_, k)| k.as_ref() == key).cloned();
        if let Some((thread, key)) = found {
            self.forget(thread, key.as_ref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MessageId, MessageKind, Timestamp, UserRef};

    const ME: UserId = UserId(1);
    const THEM: UserId = UserId(2);

    fn message(thread: ThreadId, seq: i64, from: UserId, key: Option<&str>) -> Arc<Message> {
        Arc::new(Message {
            id: MessageId::generate(),
            thread_id: thread,
            seq: Seq(seq),
            kind: MessageKind::User,
            sender: Some(UserRef { id: from, username: format!("u{}", from.0).into(), full_name: "".into() }),
            recipient: None,
            text: format!("m{seq}"),
            metadata: serde_json::json!({}),
            timestamp: Timestamp::from_millis(0).unwrap(),
            is_read: false,
            client_msg_id: key.map(Arc::from),
        })
    }

    /// A frame that says what it is, so tests read the order of writes.
    fn item(thread: ThreadId, seq: i64, delivery: Delivery) -> MessageItem {
        let from = if matches!(delivery, Delivery::Ack { .. }) { ME } else { THEM };
        let key = match &delivery {
            Delivery::Ack { client_msg_id } => client_msg_id.clone(),
            _ => None,
        };
        let tag = match delivery {
            Delivery::Ack { .. } => "ack",
            Delivery::Live => "live",
            Delivery::Replay => "replay",
            Delivery::Fill => "fill",
        };
        MessageItem::new(message(thread, seq, from, key.as_deref()), format!("{tag} {seq}").into(), delivery)
    }

    fn live(thread: ThreadId, seq: i64) -> Outgoing {
        Outgoing::Message(item(thread, seq, Delivery::Live))
    }

    struct Run {
        order: Sequencer,
        now: Instant,
        out: Vec<Utf8Bytes>,
    }

    impl Run {
        fn new() -> Self {
            Self { order: Sequencer::new(ME), now: Instant::now(), out: Vec::new() }
        }

        fn feed(&mut self, item: Outgoing) {
            self.order.accept(item, self.now, &mut self.out).unwrap();
        }

        fn written(&mut self) -> Vec<String> {
            self.out.drain(..).map(|f| f.as_str().to_owned()).collect()
        }

        /// Lets every hold run out and fills each gap with `have` (seq → frame tag).
        fn expire(&mut self, store: impl Fn(Gap) -> Vec<MessageItem>) -> Vec<Gap> {
            self.now += HOLD;
            let gaps = self.order.due(self.now, Duration::ZERO);
            for gap in &gaps {
                self.order.filled(*gap, store(*gap), self.now, &mut self.out);
            }
            gaps
        }
    }

    fn synced(heads: Vec<(ThreadId, Seq)>) -> Outgoing {
        Outgoing::Release { trailer: "synced".into(), heads: Some(heads) }
    }

    #[test]
    fn in_order_messages_go_straight_out_and_duplicates_are_dropped() {
        let t = ThreadId::generate();
        let mut run = Run::new();
        run.feed(live(t, 4));
        run.feed(live(t, 5));
        run.feed(live(t, 5));
        run.feed(live(t, 3));
        assert_eq!(run.written(), ["live 4", "live 5"]);
        assert_eq!(run.order.next_deadline(), None);
    }

    #[test]
    fn a_message_after_a_gap_is_held_until_the_gap_fills_from_the_bus() {
        let t = ThreadId::generate();
        let mut run = Run::new();
        run.feed(live(t, 1));
        run.feed(live(t, 3));
        run.feed(Outgoing::Message(item(t, 4, Delivery::Ack { client_msg_id: Some("k".into()) })));
        assert_eq!(run.written(), ["live 1"]);
        assert!(run.order.next_deadline().is_some(), "a hold is running");
        run.feed(live(t, 2));
        assert_eq!(run.written(), ["live 2", "live 3", "ack 4"]);
        assert_eq!(run.order.next_deadline(), None, "nothing left held");
    }

    #[test]
    fn a_hold_lasts_longer_while_the_bus_runs_late_and_the_late_copy_ends_it() {
        let t = ThreadId::generate();
        let mut run = Run::new();
        let since = run.now;
        run.feed(live(t, 1));
        run.feed(live(t, 3));
        run.now += HOLD;
        let lag = Duration::from_millis(300);
        assert_eq!(run.order.due(run.now, lag), vec![], "the bus is 300 ms late: not yet");
        assert_eq!(run.order.next_deadline(), Some(since + lag * LAG_HOLDS));
        run.feed(live(t, 2));
        assert_eq!(run.written(), ["live 1", "live 2", "live 3"], "no read from the store");
        assert_eq!(run.order.next_deadline(), None);
        // Held again: past twice the lag, the gap is read.
        run.feed(live(t, 5));
        run.now += lag * LAG_HOLDS;
        assert_eq!(run.order.due(run.now, lag), vec![Gap { thread: t, after: Seq(3), before: Seq(5) }]);
        // However late the bus runs, a hold ends.
        run.feed(live(t, 7));
        run.now += MAX_HOLD;
        assert_eq!(run.order.due(run.now, Duration::from_secs(3600)).len(), 1);
    }

    #[test]
    fn a_gap_the_bus_does_not_fill_is_read_from_the_store() {
        let (t, other) = (ThreadId::generate(), ThreadId::generate());
        let mut run = Run::new();
        run.feed(live(t, 1));
        run.feed(live(t, 4));
        run.feed(live(other, 7));
        assert_eq!(run.written(), ["live 1", "live 7"], "another thread is not held up");
        let gaps =
            run.expire(|gap| (gap.after.0 + 1..gap.before.0).map(|s| item(gap.thread, s, Delivery::Fill)).collect());
        assert_eq!(gaps, vec![Gap { thread: t, after: Seq(1), before: Seq(4) }]);
        assert_eq!(run.written(), ["fill 2", "fill 3", "live 4"]);
        // The late bus copies are dropped.
        run.feed(live(t, 2));
        run.feed(live(t, 3));
        run.feed(live(t, 5));
        assert_eq!(run.written(), ["live 5"]);
    }

    #[test]
    fn a_store_that_lacks_a_seq_does_not_stall_the_thread() {
        let t = ThreadId::generate();
        let mut run = Run::new();
        run.feed(live(t, 1));
        run.feed(live(t, 3));
        run.expire(|_| Vec::new());
        assert_eq!(run.written(), ["live 1", "live 3"]);
    }

    #[test]
    fn a_read_event_waits_for_the_message_it_names() {
        let t = ThreadId::generate();
        let mut run = Run::new();
        run.feed(live(t, 1));
        let read = |up_to| Outgoing::Read { thread: t, up_to: Seq(up_to), frame: format!("read {up_to}").into() };
        run.feed(read(2));
        run.feed(read(1));
        assert_eq!(run.written(), ["live 1", "read 1"]);
        run.feed(live(t, 2));
        assert_eq!(run.written(), ["live 2", "read 2"]);
        // A read of a message that never comes through the bus is filled from the store.
        run.feed(read(3));
        run.expire(|gap| vec![item(gap.thread, 3, Delivery::Fill)]);
        assert_eq!(run.written(), ["fill 3", "read 3"]);
    }

    #[test]
    fn a_sync_holds_live_events_and_releases_only_what_the_replay_did_not_cover() {
        let (t, quiet) = (ThreadId::generate(), ThreadId::generate());
        let mut run = Run::new();
        run.feed(Outgoing::Hold);
        run.feed(live(t, 3));
        run.feed(Outgoing::Message(item(t, 1, Delivery::Replay)));
        run.feed(Outgoing::Message(item(t, 2, Delivery::Replay)));
        run.feed(live(t, 4));
        run.feed(Outgoing::Message(item(t, 3, Delivery::Replay)));
        assert_eq!(run.written(), ["replay 1", "replay 2", "replay 3"]);
        run.feed(synced(vec![(t, Seq(3)), (quiet, Seq(9))]));
        assert_eq!(run.written(), ["synced", "live 4"]);
        // After a sync every thread's position is known: a quiet thread continues
        // from its head, and a thread never heard of is new and starts at seq 1.
        run.feed(live(quiet, 11));
        assert_eq!(run.written(), Vec::<String>::new(), "10 has not come yet");
        run.feed(live(quiet, 10));
        let new = ThreadId::generate();
        run.feed(live(new, 2));
        run.feed(live(new, 1));
        assert_eq!(run.written(), ["live 10", "live 11", "live 1", "live 2"]);
    }

    #[test]
    fn an_own_message_read_from_the_store_before_its_ack_is_written_as_the_ack_once() {
        let t = ThreadId::generate();
        let mut run = Run::new();
        run.feed(Outgoing::Expect { thread: t, client_msg_id: Some("k-1".into()) });
        run.feed(Outgoing::Hold);
        let own = message(t, 1, ME, Some("k-1"));
        run.feed(Outgoing::Message(MessageItem::new(own.clone(), "replay 1".into(), Delivery::Replay)));
        let ack = MessageItem::new(own, "ack 1".into(), Delivery::Ack { client_msg_id: Some("k-1".into()) });
        run.feed(Outgoing::Message(ack));
        run.feed(synced(vec![(t, Seq(1))]));
        let written = run.written();
        assert_eq!(written.len(), 2, "{written:?}");
        let first: serde_json::Value = serde_json::from_str(&written[0]).unwrap();
        assert_eq!((first["type"].as_str(), first["client_msg_id"].as_str()), (Some("message_ack"), Some("k-1")));
        assert_eq!(written[1], "synced", "the late ack was dropped");
    }

    #[test]
    fn a_refused_or_repeated_send_is_answered_at_once() {
        let t = ThreadId::generate();
        let mut run = Run::new();
        run.feed(live(t, 1));
        run.feed(live(t, 3));
        run.feed(Outgoing::Expect { thread: t, client_msg_id: Some("k".into()) });
        run.feed(Outgoing::Refused { thread: None, client_msg_id: Some("k".into()), frame: "error k".into() });
        assert!(run.order.awaited.is_empty(), "no ack is awaited for a refused send");
        // A repeated key is answered with the first message, long delivered: at once.
        run.feed(Outgoing::Expect { thread: t, client_msg_id: Some("old".into()) });
        run.feed(Outgoing::Message(item(t, 1, Delivery::Ack { client_msg_id: Some("old".into()) })));
        assert_eq!(run.written(), ["live 1", "error k", "ack 1"]);
        assert!(run.order.awaited.is_empty());
    }

    #[test]
    fn only_an_own_message_of_the_same_thread_and_key_is_written_as_its_ack() {
        let (t, u) = (ThreadId::generate(), ThreadId::generate());
        let mut run = Run::new();
        // Keys restart per thread: `c-1` awaited in T, an older `c-1` of U is replayed.
        run.feed(Outgoing::Expect { thread: t, client_msg_id: Some("c-1".into()) });
        run.feed(Outgoing::Expect { thread: t, client_msg_id: None });
        run.feed(Outgoing::Hold);
        let older = message(u, 1, ME, Some("c-1"));
        run.feed(Outgoing::Message(MessageItem::new(older, "replay u1".into(), Delivery::Replay)));
        let keyless = message(t, 1, ME, None);
        run.feed(Outgoing::Message(MessageItem::new(keyless.clone(), "replay t1".into(), Delivery::Replay)));
        run.feed(synced(vec![(t, Seq(1)), (u, Seq(1))]));
        let written = run.written();
        assert_eq!(written[0], "replay u1", "another thread's message is not this send's ack");
        let ack: serde_json::Value = serde_json::from_str(&written[1]).unwrap();
        assert_eq!((ack["type"].as_str(), ack["message"]["seq"].as_i64()), (Some("message_ack"), Some(1)));
        assert_eq!(written[2], "synced");
        // The keyless send's real ack comes late: dropped, it was written already.
        run.feed(Outgoing::Message(MessageItem::new(keyless, "ack t1".into(), Delivery::Ack { client_msg_id: None })));
        assert_eq!(run.written(), Vec::<String>::new());
        assert_eq!(run.order.awaited.len(), 1, "`c-1` in T still awaits its ack");
    }

    #[test]
    fn a_connection_that_knows_the_heads_fills_what_was_stored_before_it_joined() {
        let (t, new) = (ThreadId::generate(), ThreadId::generate());
        let mut run =
            Run { order: Sequencer::starting_at(ME, Some(vec![(t, Seq(4))])), now: Instant::now(), out: Vec::new() };
        // Seq 5 was stored between reading the heads and joining the bus.
        run.feed(live(t, 6));
        // A thread created since starts at seq 1, so seq 2 waits for it.
        run.feed(live(new, 2));
        run.feed(live(new, 1));
        assert_eq!(run.written(), ["live 1", "live 2"]);
        run.expire(|gap| (gap.after.0 + 1..gap.before.0).map(|s| item(gap.thread, s, Delivery::Fill)).collect());
        assert_eq!(run.written(), ["fill 5", "live 6"]);
        run.feed(live(t, 4));
        assert_eq!(run.written(), Vec::<String>::new(), "from before the connection: not sent again");
    }

    #[test]
    fn a_replay_sends_what_the_connection_never_sent_and_nothing_twice() {
        let t = ThreadId::generate();
        let mut run =
            Run { order: Sequencer::starting_at(ME, Some(vec![(t, Seq(3))])), now: Instant::now(), out: Vec::new() };
        run.feed(Outgoing::Hold);
        for seq in 2..=3 {
            run.feed(Outgoing::Message(item(t, seq, Delivery::Replay)));
        }
        run.feed(synced(vec![(t, Seq(3))]));
        run.feed(live(t, 4));
        assert_eq!(run.written(), ["replay 2", "replay 3", "synced", "live 4"]);
        run.feed(Outgoing::Hold);
        run.feed(Outgoing::Message(item(t, 4, Delivery::Replay)));
        run.feed(synced(vec![(t, Seq(4))]));
        assert_eq!(run.written(), ["synced"], "4 was sent live on this connection");
        run.feed(Outgoing::Hold);
        for seq in 1..=4 {
            run.feed(Outgoing::Message(item(t, seq, Delivery::Replay)));
        }
        run.feed(synced(vec![(t, Seq(4))]));
        assert_eq!(run.written(), ["replay 1", "synced"], "only 1 was never sent here");
        run.feed(Outgoing::Hold);
        run.feed(Outgoing::Message(item(t, 1, Delivery::Replay)));
        run.feed(synced(vec![(t, Seq(4))]));
        assert_eq!(run.written(), ["synced"]);
    }

    #[test]
    fn holding_past_the_bound_is_an_overflow_and_flush_writes_everything() {
        let t = ThreadId::generate();
        let mut run = Run::new();
        run.feed(live(t, 1));
        for seq in 3..(3 + MAX_HELD as i64) {
            run.feed(live(t, seq));
        }
        assert_eq!(run.order.accept(live(t, 100_000), run.now, &mut run.out), Err(Overflow));
        run.written();
        let mut out = Vec::new();
        run.order.flush(&mut out);
        assert_eq!(out.len(), MAX_HELD);
        assert_eq!(out[0].as_str(), "live 3");
    }
}
