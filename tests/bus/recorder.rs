//! A [`Subscriber`] that records what a node's bus hands it, and lets a test wait (with a
//! timeout) until what it heard satisfies a condition.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use confab::bus::{Event, Subscriber};
use confab::domain::UserId;
use tokio::sync::watch;

/// The longest wait for anything the bus should deliver.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Everything a node heard, in the order it heard it.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    pub(crate) events: Vec<Event>,
    /// Calls of [`Subscriber::events_missed`].
    pub(crate) all_missed: usize,
    /// Arguments of [`Subscriber::user_missed_events`].
    pub(crate) users_missed: Vec<UserId>,
    /// Arguments of [`Subscriber::heard_after`].
    pub(crate) lags: Vec<Duration>,
}

impl Heard {
    /// The `up_to_seq` of every `read` event heard for `user`, in order: what
    /// reached that user's connections on this node.
    pub(crate) fn seqs_for(&self, user: UserId) -> Vec<i64> {
        let for_user = self.events.iter().filter(|e| e.recipients().contains(&user));
        for_user
            .filter_map(|e| match e {
                Event::Read { up_to_seq, .. } => Some(up_to_seq.0),
                _ => None,
            })
            .collect()
    }
}

/// Stands in for a node's hub: its local users are the ones the test watched.
#[derive(Debug)]
pub(crate) struct Recorder {
    heard: watch::Sender<Heard>,
    local: Mutex<BTreeSet<UserId>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self { heard: watch::Sender::new(Heard::default()), local: Mutex::default() }
    }
}

impl Recorder {
    pub(crate) fn add_local(&self, user: UserId) {
        self.local.lock().unwrap_or_else(PoisonError::into_inner).insert(user);
    }

    pub(crate) fn remove_local(&self, user: UserId) {
        self.local.lock().unwrap_or_else(PoisonError::into_inner).remove(&user);
    }

    /// Waits until what was heard satisfies `done`; panics (naming `what`) after [`WAIT`].
    pub(crate) async fn wait_until(&self, what: &str, done: impl FnMut(&Heard) -> bool) {
        let mut heard = self.heard.subscribe();
        match tokio::time::timeout(WAIT, heard.wait_for(done)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => unreachable!("the recorder owns its sender"),
            Err(_) => {
                let heard = self.heard.borrow();
                panic!(
                    "waited {WAIT:?} for {what}; heard {} events, {} bus-wide and {:?} per-user missed notices",
                    heard.events.len(),
                    heard.all_missed,
                    heard.users_missed
                );
            }
        }
    }

    /// Waits until the `read` event numbered `seq` was heard for `user`.
    pub(crate) async fn wait_for_seq(&self, user: UserId, seq: i64) {
        self.wait_until(&format!("event {seq} for user {user}"), |h| h.seqs_for(user).contains(&seq)).await;
    }

    /// What was heard so far; never held across an `await` (the bus records through the same lock).
    pub(crate) fn heard(&self) -> watch::Ref<'_, Heard> {
        self.heard.borrow()
    }
}

impl Subscriber for Recorder {
    fn deliver(&self, event: &Event) {
        self.heard.send_modify(|h| h.events.push(event.clone()));
    }

    fn heard_after(&self, lag: Duration) {
        self.heard.send_modify(|h| h.lags.push(lag));
    }

    fn local_users(&self) -> Vec<UserId> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
    }

    fn events_missed(&self) {
        self.heard.send_modify(|h| h.all_missed += 1);
    }

    fn user_missed_events(&self, user: UserId) {
        self.heard.send_modify(|h| h.users_missed.push(user));
    }
}
