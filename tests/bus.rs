//! The `Bus` conformance suite (`bus/conformance.rs`) on every bus: the in-process
//! `LocalBus` (one node), and `RedisBus` nodes on a real Redis
//! (`CONFAB_TEST_REDIS_URL`, default 127.0.0.1:6379), each test with a channel
//! prefix of its own, and each node connecting as an ACL user of its own so a test
//! can cut that node off (`CLIENT KILL USER`) without touching anyone else's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

#[path = "bus/conformance.rs"]
mod conformance;
#[path = "bus/recorder.rs"]
mod recorder;

use std::sync::Arc;

use confab::bus::{LocalBus, RedisBus};

use conformance::{Cluster, LossyCluster, Node};
use recorder::Recorder;

/// The in-process bus: one node, which every node index names.
struct LocalCluster {
    node: Node,
}

impl Cluster for LocalCluster {
    async fn start(_nodes: usize) -> Self {
        let subscriber = Arc::new(Recorder::default());
        Self { node: Node { bus: Arc::new(LocalBus::new(subscriber.clone())), subscriber } }
    }

    fn node(&self, _i: usize) -> &Node {
        &self.node
    }
}

fn redis_url() -> String {
    std::env::var("CONFAB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Nodes on one Redis, each connecting as its own ACL user (`{prefix}-{i}`).
struct RedisCluster {
    nodes: Vec<Node>,
    users: Vec<String>,
    admin: redis::aio::MultiplexedConnection,
}

impl RedisCluster {
    async fn acl(&self, args: &[&str]) {
        redis::cmd("ACL").arg(args).query_async::<()>(&mut self.admin.clone()).await.expect("ACL SETUSER");
    }
}

impl Cluster for RedisCluster {
    async fn start(nodes: usize) -> Self {
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).expect("a Redis URL");
        let mut admin = client.get_multiplexed_async_connection().await.expect("Redis answers");
        let prefix = format!("confab-bus-test-{}", uuid::Uuid::new_v4().simple());
        let (mut cluster_nodes, mut users) = (Vec::new(), Vec::new());
        for i in 0..nodes {
            let user = format!("{prefix}-{i}");
            redis::cmd("ACL")
                .arg(&["SETUSER", &user, "on", "nopass", "allkeys", "allchannels", "allcommands"])
                .query_async::<()>(&mut admin)
                .await
                .expect("ACL SETUSER (Redis 6 or later)");
            // Any password logs a `nopass` user in.
            let node_url = url.replacen("redis://", &format!("redis://{user}:-@"), 1);
            let subscriber = Arc::new(Recorder::default());
            let bus = RedisBus::connect(&node_url, &prefix, subscriber.clone()).await.expect("the bus connects");
            cluster_nodes.push(Node { bus: Arc::new(bus), subscriber });
            users.push(user);
        }
        Self { nodes: cluster_nodes, users, admin }
    }

    fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
}

impl LossyCluster for RedisCluster {
    /// More than `RedisBus`'s publish queue (16,384 events) holds.
    const OVERFLOW: i64 = 20_000;

    async fn cut(&self, i: usize) {
        self.acl(&["SETUSER", &self.users[i], "off"]).await;
        redis::cmd("CLIENT")
            .arg(&["KILL", "USER", &self.users[i]])
            .query_async::<()>(&mut self.admin.clone())
            .await
            .expect("CLIENT KILL USER");
    }

    async fn restore(&self, i: usize) {
        self.acl(&["SETUSER", &self.users[i], "on"]).await;
    }
}

impl Drop for RedisCluster {
    /// Stops the nodes, then removes their users (which closes what is left of their connections).
    fn drop(&mut self) {
        for node in &self.nodes {
            node.bus.close();
        }
        let deleted = redis::Client::open(redis_url().as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut con| redis::cmd("ACL").arg("DELUSER").arg(&self.users).query::<()>(&mut con));
        if let Err(e) = deleted {
            eprintln!("could not remove the test's Redis users {:?}: {e}", self.users);
        }
    }
}

mod local_bus {
    crate::conformance::bus_conformance_tests!(crate::LocalCluster);
}

mod redis_bus {
    crate::conformance::bus_conformance_tests!(crate::RedisCluster, lossy);
}
