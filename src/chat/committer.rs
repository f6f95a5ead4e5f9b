//! The single task that writes messages: it takes whatever jobs are queued (up to
//! a batch), commits consecutive sends in one transaction, runs each workflow's
//! find-or-create in its turn, and publishes every stored message in commit order.
//! One commit per batch is what lets the server keep up under load; one publisher
//! (system messages and the answers to repeated keys included) is what keeps every
//! connection's events in seq order on a node. At low load a batch is one job and
//! nothing waits. Under load a batch is published while the next one is stored, so
//! the store's writer does not wait for the fan-out (pairs, closed loop: 1.19×).
//! A store that queues batches (SQLite's one writer) is also handed the next batch
//! before the one it is storing is done, so its writer goes from one batch to the
//! next without waiting for this task to be scheduled again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntGauge, Registry};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::members::ThreadMembers;
use super::{Error, Sent};
use crate::bus::{Ack, Bus, Event};
use crate::domain::{ClientMsgId, ErrorCode, Message, Proposal, User, UserId, error_chain};
use crate::store::{Appended, NewMessage, NewProposal, NewSystemMessage, OpenThread, Opened, Store, StoreError};

/// A batch takes everything queued up to this. Larger batches amortize the
/// commit's page writes and fsync: on the pairs benchmark, 256 gave 15k msg/s,
/// 1,024 gave 21k and 4,096 gave 29k (docs/benchmarks.md). At low load a batch is
/// whatever is queued, often one send, so nothing waits for a batch to fill.
const MAX_BATCH: usize = 4096;
/// How long one batch may take to store before its senders get `unavailable`.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the committer is asked to do.
pub(super) enum Job {
    Send(SendJob),
    /// Boxed: rare, and much larger than a send.
    Open(Box<OpenJob>),
    /// A host's system message (server API), published in commit order too.
    System(Box<SystemJob>),
}

pub(super) struct SystemJob {
    pub(super) new: NewSystemMessage,
    pub(super) reply: oneshot::Sender<Result<Sent, Error>>,
}

pub(super) struct SendJob {
    pub(super) new: NewMessage,
    pub(super) members: Arc<ThreadMembers>,
    pub(super) reply: Reply,
}

/// A workflow's find-or-create of a thread (with its proposal, when there is one).
/// It runs here so that its system message, seq 1, is published before any message
/// that follows it in the thread.
pub(super) struct OpenJob {
    pub(super) open: OpenThread,
    pub(super) proposal: Option<NewProposal>,
    /// The two people of the thread, to address and render the system message.
    pub(super) participants: [User; 2],
    pub(super) reply: oneshot::Sender<Result<(Option<Proposal>, Opened), StoreError>>,
}

/// Where the outcome of a send goes.
pub(super) enum Reply {
    /// A REST caller waiting for the stored message.
    Caller(oneshot::Sender<Result<Sent, Error>>),
    /// A WebSocket connection: `message_ack` or an `error` event, through the bus.
    Connection(Ack),
}

/// What an operator watches to see whether the committer keeps up: how full its
/// batches are, how long the store takes per batch, and how many sends wait.
#[derive(Debug, Clone)]
pub(super) struct CommitMetrics {
    batch_size: Histogram,
    store_seconds: Histogram,
    publish_seconds: Histogram,
    queued: IntGauge,
}

impl CommitMetrics {
    pub(super) fn new() -> Result<Self, prometheus::Error> {
        let sizes = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
        let seconds = vec![0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
        Ok(Self {
            batch_size: Histogram::with_opts(
                HistogramOpts::new("commit_batch_messages", "Messages stored per committed batch").buckets(sizes),
            )?,
            store_seconds: Histogram::with_opts(
                HistogramOpts::new("commit_store_seconds", "Time the store took to commit one batch of messages")
                    .buckets(seconds.clone()),
            )?,
            publish_seconds: Histogram::with_opts(
                HistogramOpts::new("commit_publish_seconds", "Time spent publishing one committed batch")
                    .buckets(seconds),
            )?,
            queued: IntGauge::new("commit_queue", "Jobs waiting for the committer when it took its last batch")?,
        })
    }

    pub(super) fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.batch_size.clone()))?;
        registry.register(Box::new(self.store_seconds.clone()))?;
        registry.register(Box::new(self.publish_seconds.clone()))?;
        registry.register(Box::new(self.queued.clone()))
    }
}

pub(super) fn spawn(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    mut jobs: mpsc::Receiver<Job>,
    stop: CancellationToken,
    metrics: CommitMetrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let early = store.queues_batches();
        let committer = Committer { store, bus, metrics, early };
        let mut batch = Vec::new();
        let mut flow = Flow::default();
        loop {
            let first = if flow.busy() {
                // Another batch is ready: store it beside the publishing. None is: finish
                // the batches in hand now, so an ack never waits for a later send.
                match jobs.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        committer.step(&mut flow).await;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                // Nothing in hand: give the buffer back. A burst grows it to as many as
                // MAX_BATCH jobs (~480 KiB), which kept after the burst would stay
                // resident for good (`docs/benchmarks.md`, memory after load).
                batch = Vec::new();
                tokio::select! {
                    biased;
                    job = jobs.recv() => job,
                    () = stop.cancelled() => None,
                }
            };
            let Some(first) = first else { break };
            batch.reserve(jobs.len().min(MAX_BATCH - 1) + 1);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            committer.metrics.queued.set(i64::try_from(jobs.len()).unwrap_or(i64::MAX));
            committer.run(&mut batch, &mut flow).await;
        }
        // Stopping: store what was queued before the stop, then end.
        jobs.close();
        while let Some(job) = jobs.recv().await {
            batch.push(job);
            if batch.len() == MAX_BATCH {
                committer.run(&mut batch, &mut flow).await;
            }
        }
        if !batch.is_empty() {
            committer.run(&mut batch, &mut flow).await;
        }
        committer.settle(&mut flow).await;
    })
}

/// Who sent a message and under which key, kept for its answer.
struct Sender {
    user: UserId,
    key: Option<Arc<str>>,
}

/// A batch the store has answered, waiting to be published.
struct Stored {
    rest: Vec<(Arc<ThreadMembers>, Reply, Sender)>,
    outcome: Result<Vec<Result<Appended, StoreError>>, StoreError>,
}

/// A batch handed to the store and not yet answered.
type Storing<'a> = Pin<Box<dyn Future<Output = Stored> + Send + 'a>>;

/// The batches in hand, oldest first: one the store answered, waiting to be
/// published, and one the store is storing (only with a store that queues batches).
#[derive(Default)]
struct Flow<'a> {
    pending: Option<Stored>,
    storing: Option<Storing<'a>>,
}

impl Flow<'_> {
    fn busy(&self) -> bool {
        self.pending.is_some() || self.storing.is_some()
    }
}

struct Committer {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    metrics: CommitMetrics,
    /// The store queues batches: hand it the next one before the last is answered.
    early: bool,
}

impl Committer {
    /// Runs the jobs in queue order: consecutive sends as one transaction. Each
    /// batch is left in `flow` to be published while the next one is stored; a
    /// workflow or a system message first stores and publishes every batch in
    /// hand, so every event still goes out in commit order.
    async fn run<'a>(&'a self, batch: &mut Vec<Job>, flow: &mut Flow<'a>) {
        let mut sends = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Send(send) => sends.push(send),
                Job::Open(open) => {
                    self.commit(std::mem::take(&mut sends), flow).await;
                    self.settle(flow).await;
                    self.open(*open).await;
                }
                Job::System(job) => {
                    self.commit(std::mem::take(&mut sends), flow).await;
                    self.settle(flow).await;
                    let SystemJob { new, reply } = *job;
                    let _ = reply.send(self.system(new).await);
                }
            }
        }
        self.commit(sends, flow).await;
    }

    async fn open(&self, job: OpenJob) {
        let OpenJob { open, proposal, participants, reply } = job;
        let outcome = match proposal {
            Some(new) => self.store.submit_proposal(new, open).await.map(|(p, o)| (Some(p), o)),
            None => self.store.open_thread(open).await.map(|o| (None, o)),
        };
        if let Ok((_, opened)) = &outcome
            && let Some(record) = &opened.first_message
        {
            let message = Arc::new(Message::fresh(record.clone(), participants.iter()));
            let recipients = participants.iter().map(|u| u.id).collect();
            self.bus.publish(Event::Message { message, recipients, ack: None });
        }
        let _ = reply.send(outcome);
    }

    /// Stores a host's system message and delivers it to everyone in the thread
    /// (a repeat of its key answers the first one and delivers nothing).
    async fn system(&self, new: NewSystemMessage) -> Result<Sent, Error> {
        let key = new.client_msg_id.as_ref().map(|k| k.as_str().to_owned());
        let stored = match tokio::time::timeout(COMMIT_TIMEOUT, self.store.append_system_message(new)).await {
            Ok(stored) => stored,
            Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
        };
        let Appended { message, duplicate } = stored.map_err(|e| match e {
            StoreError::KeyReused => Error::rejected(
                ErrorCode::Conflict,
                format!(
                    "client_msg_id {:?} was already used in this thread for a message with another text",
                    key.unwrap_or_default()
                ),
            ),
            other => other.into(),
        })?;
        let participants = self.store.participants(message.thread_id).await?;
        let message = Message::view(message, &participants);
        if !duplicate {
            let recipients = participants.iter().map(|p| p.user.id).collect();
            self.bus.publish(Event::Message { message: Arc::new(message.clone()), recipients, ack: None });
        }
        Ok(Sent { message, duplicate })
    }

    /// Stores `sends` while the batch stored before them (`pending`) is published:
    /// the store's writer and the publishing (the frames, the fan-out) overlap
    /// instead of taking turns. `sends` is then pending. A store that queues batches
    /// is handed `sends` at once, behind the batch it is storing, which is then
    /// awaited (and becomes pending) while `sends` waits in its queue.
    async fn commit<'a>(&'a self, sends: Vec<SendJob>, flow: &mut Flow<'a>) {
        if sends.is_empty() {
            return;
        }
        if !self.early {
            let mut previous = flow.pending.take();
            // The store goes first: it hands the batch to the writer, then publishing runs.
            let (stored, ()) = futures::join!(self.store(sends), self.publish(&mut previous));
            flow.pending = Some(stored);
            return;
        }
        let mut next: Storing<'a> = Box::pin(self.store(sends));
        // Polled once, the batch is in the store's queue.
        if let Poll::Ready(stored) = futures::poll!(next.as_mut()) {
            next = Box::pin(std::future::ready(stored));
        }
        if flow.storing.is_some() {
            self.step(flow).await;
        }
        flow.storing = Some(next);
    }

    /// Moves the oldest batch in hand on: the one being stored is awaited while the
    /// one before it is published; with none being stored, the pending one is published.
    async fn step(&self, flow: &mut Flow<'_>) {
        match flow.storing.take() {
            Some(storing) => {
                let mut previous = flow.pending.take();
                let (stored, ()) = futures::join!(storing, self.publish(&mut previous));
                flow.pending = Some(stored);
            }
            None => self.publish(&mut flow.pending).await,
        }
    }

    /// Stores and publishes every batch in hand, in order: before a workflow or a
    /// system message, and at the end.
    async fn settle(&self, flow: &mut Flow<'_>) {
        while flow.busy() {
            self.step(flow).await;
        }
    }

    async fn store(&self, sends: Vec<SendJob>) -> Stored {
        let mut news = Vec::with_capacity(sends.len());
        let mut rest = Vec::with_capacity(sends.len());
        for job in sends {
            let sent = Sender { user: job.new.sender, key: job.new.client_msg_id.as_ref().map(ClientMsgId::shared) };
            news.push(job.new);
            rest.push((job.members, job.reply, sent));
        }
        self.metrics.batch_size.observe(news.len() as f64);
        let started = Instant::now();
        // A database that stopped answering (a dead link, a hung server) must not hold
        // every sender forever: past the deadline the batch is refused, never acked.
        // (It may still commit; a resend with its key then finds it.)
        let outcome = match tokio::time::timeout(COMMIT_TIMEOUT, self.store.append_messages(news)).await {
            Ok(stored) => stored,
            Err(elapsed) => Err(StoreError::Unavailable(Box::new(elapsed))),
        };
        self.metrics.store_seconds.observe(started.elapsed().as_secs_f64());
        Stored { rest, outcome }
    }

    /// Answers and delivers a stored batch, if one is pending.
    async fn publish(&self, pending: &mut Option<Stored>) {
        let Some(Stored { rest, outcome }) = pending.take() else { return };
        match outcome {
            Ok(results) => {
                let started = Instant::now();
                for ((members, reply, sent), result) in rest.into_iter().zip(results) {
                    self.finish(members, reply, sent, result).await;
                }
                self.metrics.publish_seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                let (code, detail) = match e {
                    StoreError::Unavailable(_) => (ErrorCode::Unavailable, "the database is unavailable; send again"),
                    _ => (ErrorCode::Internal, "the message could not be stored; send again"),
                };
                tracing::error!(error = %error_chain(&e), messages = rest.len(), "storing a batch of messages failed");
                for (_, reply, _) in rest {
                    self.fail(reply, Error::rejected(code, detail));
                }
            }
        }
    }

    async fn finish(
        &self,
        members: Arc<ThreadMembers>,
        reply: Reply,
        sent: Sender,
        result: Result<Appended, StoreError>,
    ) {
        match result {
            Ok(Appended { message, duplicate: false }) => {
                let message = Arc::new(Message::fresh(message, members.users.iter()));
                let (ack, caller) = match reply {
                    Reply::Connection(ack) => (Some(ack), None),
                    Reply::Caller(tx) => (None, Some(tx)),
                };
                self.bus.publish(Event::Message { message: message.clone(), recipients: members.ids.clone(), ack });
                if let Some(tx) = caller {
                    let _ = tx.send(Ok(Sent { message: Message::clone(&message), duplicate: false }));
                }
            }
            Ok(Appended { message, duplicate: true }) => {
                // A retry: answer with the first message as it is now (its read state
                // may have changed). Rare, so one read here costs little, and answering
                // from this task keeps the answer in publish order.
                let participants = match self.store.thread(message.thread_id, sent.user).await {
                    Ok(Some(thread)) => thread.participants,
                    Ok(None) => return self.fail(reply, Error::Internal("a stored message's thread is gone".into())),
                    Err(e) => return self.fail(reply, e.into()),
                };
                let message = Message::view(message, &participants);
                match reply {
                    Reply::Caller(tx) => {
                        let _ = tx.send(Ok(Sent { message, duplicate: true }));
                    }
                    Reply::Connection(ack) => {
                        self.bus.publish(Event::Message {
                            message: Arc::new(message),
                            recipients: Arc::new([]),
                            ack: Some(ack),
                        });
                    }
                }
            }
            Err(StoreError::KeyReused) => {
                let detail = format!(
                    "client_msg_id {:?} was already used in this thread for a message with another text; \
                     use a new key for a new message",
                    sent.key.unwrap_or_default()
                );
                self.fail(reply, Error::rejected(ErrorCode::Conflict, detail));
            }
            Err(e) => self.fail(reply, e.into()),
        }
    }

    fn fail(&self, reply: Reply, error: Error) {
        match reply {
            Reply::Caller(tx) => {
                let _ = tx.send(Err(error));
            }
            Reply::Connection(ack) => self.bus.publish(Event::Refused {
                user: ack.user,
                connection: ack.connection,
                code: error.code(),
                detail: error.detail(),
                client_msg_id: ack.client_msg_id,
            }),
        }
    }
}
