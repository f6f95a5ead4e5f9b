//! The single task that stores sent messages: it takes whatever sends are queued
//! (up to a batch), commits them in one transaction, then publishes each in commit
//! order. One commit per batch is what lets the server keep up under load; one
//! publisher is what keeps every connection's events in seq order. At low load a
//! batch is one message and nothing waits.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::members::ThreadMembers;
use super::{Error, Sent};
use crate::bus::Bus;
use crate::domain::{Ack, ErrorCode, Event, Message};
use crate::store::{Appended, NewMessage, Store, StoreError};

/// Past a few hundred messages a transaction gains little and delays the first ack.
const MAX_BATCH: usize = 256;

pub(super) struct SendJob {
    pub(super) new: NewMessage,
    pub(super) members: Arc<ThreadMembers>,
    pub(super) reply: Reply,
}

/// Where the outcome of a send goes.
pub(super) enum Reply {
    /// A REST caller waiting for the stored message.
    Caller(oneshot::Sender<Result<Sent, Error>>),
    /// A WebSocket connection: `message_ack` or an `error` event, through the bus.
    Connection(Ack),
}

pub(super) fn spawn(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    mut jobs: mpsc::Receiver<SendJob>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = tokio::select! {
                biased;
                job = jobs.recv() => job,
                () = stop.cancelled() => None,
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            commit(&store, &bus, &mut batch).await;
        }
        // Stopping: store what was queued before the stop, then end.
        jobs.close();
        while let Some(job) = jobs.recv().await {
            batch.push(job);
            if batch.len() == MAX_BATCH {
                commit(&store, &bus, &mut batch).await;
            }
        }
        if !batch.is_empty() {
            commit(&store, &bus, &mut batch).await;
        }
    })
}

async fn commit(store: &Arc<dyn Store>, bus: &Arc<dyn Bus>, batch: &mut Vec<SendJob>) {
    let (news, rest): (Vec<NewMessage>, Vec<(Arc<ThreadMembers>, Reply)>) =
        batch.drain(..).map(|j| (j.new, (j.members, j.reply))).unzip();
    match store.append_messages(news).await {
        Ok(results) => {
            for ((members, reply), result) in rest.into_iter().zip(results) {
                finish(store, bus, members, reply, result);
            }
        }
        Err(e) => {
            let (code, detail) = match e {
                StoreError::Unavailable(_) => (ErrorCode::Unavailable, "the database is unavailable; send again"),
                _ => (ErrorCode::Internal, "the message could not be stored; send again"),
            };
            tracing::error!(error = %super::error_chain(&e), messages = rest.len(), "storing a batch of messages failed");
            for (_, reply) in rest {
                fail(bus, reply, Error::rejected(code, detail));
            }
        }
    }
}

fn finish(
    store: &Arc<dyn Store>,
    bus: &Arc<dyn Bus>,
    members: Arc<ThreadMembers>,
    reply: Reply,
    result: Result<Appended, StoreError>,
) {
    match result {
        Ok(Appended { message, duplicate: false }) => {
            let message = Arc::new(Message::fresh(message, members.users.iter()));
            let ack = match &reply {
                Reply::Connection(ack) => Some(ack.clone()),
                Reply::Caller(_) => None,
            };
            bus.publish(Event::Message { message: message.clone(), recipients: members.ids.clone(), ack });
            if let Reply::Caller(tx) = reply {
                let _ = tx.send(Ok(Sent { message: Message::clone(&message), duplicate: false }));
            }
        }
        Ok(Appended { message, duplicate: true }) => {
            // Rare: answer with the first message as it is now, off the hot path.
            let (store, bus) = (store.clone(), bus.clone());
            tokio::spawn(async move {
                let sender = message.sender_id.unwrap_or(crate::domain::UserId(0));
                let view = match store.thread(message.thread_id, sender).await {
                    Ok(Some(thread)) => Ok(Message::view(message, &thread.participants)),
                    Ok(None) => Err(Error::not_found("thread")),
                    Err(e) => Err(e.into()),
                };
                match (view, reply) {
                    (Ok(m), Reply::Caller(tx)) => {
                        let _ = tx.send(Ok(Sent { message: m, duplicate: true }));
                    }
                    (Ok(m), Reply::Connection(ack)) => {
                        bus.publish(Event::Message { message: Arc::new(m), recipients: Arc::new([]), ack: Some(ack) });
                    }
                    (Err(e), reply) => fail(&bus, reply, e),
                }
            });
        }
        Err(e) => fail(bus, reply, e.into()),
    }
}

fn fail(bus: &Arc<dyn Bus>, reply: Reply, error: Error) {
    match reply {
        Reply::Caller(tx) => {
            let _ = tx.send(Err(error));
        }
        Reply::Connection(ack) => bus.publish(Event::Refused {
            user: ack.user,
            connection: ack.connection,
            code: error.code(),
            detail: error.detail(),
            client_msg_id: ack.client_msg_id,
        }),
    }
}
