//! Behaviours every [`Bus`] must show, each written once and run on every bus by
//! [`bus_conformance_tests!`]. A behaviour of several nodes (who hears what, what
//! happens when a node loses the bus) runs only on buses that span nodes, which
//! implement [`LossyCluster`]; on the in-process bus every node is the same node.

use std::sync::Arc;

use confab::bus::Bus;
use confab::bus::Event;
use confab::domain::{Seq, ThreadId, UserId};

use crate::recorder::{Recorder, WAIT};

const ALICE: UserId = UserId(1);
const BOB: UserId = UserId(2);
const CAROL: UserId = UserId(3);
/// Who "reads" in the test events; nobody watches them.
const WRITER: UserId = UserId(9);

/// One node: its bus and the subscriber standing in for its hub.
pub(crate) struct Node {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) subscriber: Arc<Recorder>,
}

impl Node {
    /// `user` connects here: a local user of the subscriber, then watched on the bus,
    /// waiting (when the bus answers) until events published from now on arrive.
    pub(crate) async fn watch(&self, user: UserId) {
        self.subscriber.add_local(user);
        if let Some(subscribed) = self.bus.watch(user) {
            let answer = tokio::time::timeout(WAIT, subscribed).await;
            answer.expect("the bus subscribes in time").expect("the bus is running");
        }
    }

    /// `user`'s last connection here closed.
    pub(crate) fn unwatch(&self, user: UserId) {
        self.subscriber.remove_local(user);
        self.bus.unwatch(user);
    }

    /// Publishes `read` events numbered `seqs` to `recipients`, in that order.
    pub(crate) fn publish(&self, seqs: impl IntoIterator<Item = i64>, recipients: &[UserId]) {
        let thread_id = ThreadId(uuid::Uuid::nil());
        for seq in seqs {
            let recipients = Arc::from(recipients);
            self.bus.publish(Event::Read { thread_id, user_id: WRITER, up_to_seq: Seq(seq), recipients });
        }
    }
}

/// The nodes of one deployment on a fresh bus.
pub(crate) trait Cluster: Sized {
    async fn start(nodes: usize) -> Self;
    /// Node `i`; on a single-node bus, every `i` is the one node.
    fn node(&self, i: usize) -> &Node;
}

/// Nodes that reach each other over a server they can lose.
pub(crate) trait LossyCluster: Cluster {
    /// Events published while cut off that are sure to be more than a node can hold.
    const OVERFLOW: i64;
    /// Drops node `i`'s connections to the bus's server, which refuses it until [`Self::restore`].
    async fn cut(&self, i: usize);
    async fn restore(&self, i: usize);
}

/// (a) Every recipient's node hears each event once per recipient (a node with
/// several of them too), per user in publish order, and a bus that lost nothing
/// reports nothing missed.
pub(crate) async fn each_recipient_hears_each_event_once_in_publish_order<C: Cluster>() {
    let cluster = C::start(3).await;
    let (alice_node, bob_node) = (cluster.node(1), cluster.node(2));
    alice_node.watch(ALICE).await;
    bob_node.watch(BOB).await;
    bob_node.watch(CAROL).await;

    cluster.node(0).publish(1..=100, &[ALICE, BOB, CAROL]);
    alice_node.subscriber.wait_for_seq(ALICE, 100).await;
    bob_node.subscriber.wait_for_seq(BOB, 100).await;
    bob_node.subscriber.wait_for_seq(CAROL, 100).await;

    let all: Vec<i64> = (1..=100).collect();
    assert_eq!(alice_node.subscriber.heard().seqs_for(ALICE), all);
    assert_eq!(bob_node.subscriber.heard().seqs_for(BOB), all);
    assert_eq!(bob_node.subscriber.heard().seqs_for(CAROL), all);
    for node in [alice_node, bob_node] {
        let heard = node.subscriber.heard();
        assert_eq!((heard.all_missed, heard.users_missed.as_slice()), (0, &[][..]), "nothing was lost");
    }
}

/// (b) A node hears only the users it watches: not those watched elsewhere only,
/// and not one it stopped watching.
pub(crate) async fn a_node_hears_only_the_users_it_watches<C: LossyCluster>() {
    let cluster = C::start(3).await;
    let (node_1, node_2) = (cluster.node(1), cluster.node(2));
    node_1.watch(ALICE).await;
    node_2.watch(BOB).await;

    // Event 3 reaches each node after anything published before it.
    cluster.node(0).publish([1], &[ALICE]);
    cluster.node(0).publish([2], &[BOB]);
    cluster.node(0).publish([3], &[ALICE, BOB]);
    node_1.subscriber.wait_for_seq(ALICE, 3).await;
    node_2.subscriber.wait_for_seq(BOB, 3).await;
    let (heard_1, heard_2) = (node_1.subscriber.heard(), node_2.subscriber.heard());
    assert_eq!((heard_1.seqs_for(ALICE), heard_1.seqs_for(BOB)), (vec![1, 3], vec![]), "node 1 never watched Bob");
    assert_eq!((heard_2.seqs_for(BOB), heard_2.seqs_for(ALICE)), (vec![2, 3], vec![]), "node 2 never watched Alice");
    drop((heard_1, heard_2));

    // Watching Carol after unwatching Alice completes once the bus has let go of Alice.
    node_1.unwatch(ALICE);
    node_1.watch(CAROL).await;
    cluster.node(0).publish([4], &[ALICE]);
    cluster.node(0).publish([5], &[CAROL]);
    node_1.subscriber.wait_for_seq(CAROL, 5).await;
    assert_eq!(node_1.subscriber.heard().seqs_for(ALICE), vec![1, 3], "node 1 stopped watching Alice");
}

/// (c) A node whose connection to the bus dropped is told, once back, that it may
/// have missed events (its clients then sync), and hears its users again.
pub(crate) async fn a_node_back_on_the_bus_is_told_it_may_have_missed_events<C: LossyCluster>() {
    let cluster = C::start(2).await;
    let node = cluster.node(1);
    node.watch(ALICE).await;

    cluster.cut(1).await;
    cluster.restore(1).await;
    node.subscriber.wait_until("the notice that events may have been missed", |h| h.all_missed > 0).await;
    cluster.node(0).publish([1], &[ALICE]);
    node.subscriber.wait_for_seq(ALICE, 1).await;
}

/// (c) Events a node could not publish are followed, once it can, by a notice to the
/// nodes of their recipients, which make those users sync.
pub(crate) async fn a_recipient_of_events_a_node_could_not_publish_is_told<C: LossyCluster>() {
    let cluster = C::start(2).await;
    let (publisher, node) = (cluster.node(0), cluster.node(1));
    node.watch(ALICE).await;
    node.watch(BOB).await;

    cluster.cut(0).await;
    publisher.publish(1..=C::OVERFLOW, &[ALICE]);
    cluster.restore(0).await;
    node.subscriber.wait_until("the notice that Alice missed events", |h| h.users_missed.contains(&ALICE)).await;
    assert!(!node.subscriber.heard().users_missed.contains(&BOB), "Bob missed nothing");
}

/// (e) A node learns how late the bus runs from each event another node published
/// (a writer holds a gap longer while it is late); its own echoes tell it nothing.
pub(crate) async fn a_node_hears_how_late_other_nodes_events_come<C: LossyCluster>() {
    let cluster = C::start(2).await;
    cluster.node(1).watch(ALICE).await;
    cluster.node(0).watch(ALICE).await;
    cluster.node(0).publish(1..=20, &[ALICE]);
    cluster.node(1).subscriber.wait_for_seq(ALICE, 20).await;
    let lags = cluster.node(1).subscriber.heard().lags.clone();
    assert_eq!(lags.len(), 20, "one per event heard from the other node");
    assert!(lags.iter().all(|lag| *lag < WAIT), "{lags:?}");
    assert!(cluster.node(0).subscriber.heard().lags.is_empty(), "the publisher hears nothing of its own");
}

/// Stamps every behaviour as a `#[tokio::test]` for `$cluster`; with `lossy`, the
/// behaviours of nodes that can lose the bus too.
macro_rules! bus_conformance_tests {
    ($cluster:ty) => {
        $crate::conformance::bus_conformance_tests!(@tests $cluster; each_recipient_hears_each_event_once_in_publish_order);
    };
    ($cluster:ty, lossy) => {
        $crate::conformance::bus_conformance_tests!($cluster);
        $crate::conformance::bus_conformance_tests!(@tests $cluster;
            a_node_hears_only_the_users_it_watches,
            a_node_back_on_the_bus_is_told_it_may_have_missed_events,
            a_recipient_of_events_a_node_could_not_publish_is_told,
            a_node_hears_how_late_other_nodes_events_come,
        );
    };
    (@tests $cluster:ty; $($behaviour:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $behaviour() {
                $crate::conformance::$behaviour::<$cluster>().await;
            }
        )+
    };
}

pub(crate) use bus_conformance_tests;
