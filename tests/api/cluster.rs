//! Several nodes of one deployment: real servers sharing a fresh PostgreSQL schema
//! and Redis (with a channel prefix of their own), as behind a load balancer.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use confab::config::Secret;

use crate::pg_schema::Schema;
use crate::support::{TestApp, WAIT};

pub(crate) fn redis_url() -> String {
    std::env::var("CONFAB_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub(crate) struct Cluster {
    pub(crate) nodes: Vec<TestApp>,
    pub(crate) redis: String,
    pub(crate) prefix: String,
    _schema: Schema,
}

impl Cluster {
    pub(crate) async fn start(nodes: usize) -> Self {
        Self::start_on(nodes, redis_url()).await
    }

    pub(crate) async fn start_on(count: usize, redis: String) -> Self {
        Self::start_each(vec![redis; count]).await
    }

    /// One node per Redis address (all reaching the same server, some perhaps
    /// through a [`LaggyLink`]); the first address is also the test's own.
    pub(crate) async fn start_each(redis_urls: Vec<String>) -> Self {
        Self::start_with(redis_urls, |_| {}).await
    }

    /// `count` nodes on the test's Redis, each also configured by `configure`.
    pub(crate) async fn start_configured(count: usize, configure: impl Fn(&mut confab::config::Config)) -> Self {
        Self::start_with(vec![redis_url(); count], configure).await
    }

    async fn start_with(redis_urls: Vec<String>, configure: impl Fn(&mut confab::config::Config)) -> Self {
        let schema = Schema::create().await;
        let prefix = format!("confab-test-{}", uuid::Uuid::new_v4().simple());
        let redis = redis_urls.first().cloned().unwrap_or_else(redis_url);
        let mut nodes = Vec::new();
        for node_redis in redis_urls {
            let (db, r, p, configure) = (schema.url(), node_redis, prefix.clone(), &configure);
            nodes.push(
                TestApp::spawn_with(move |c| {
                    c.database_url = Secret::new(db);
                    c.redis_url = Some(Secret::new(r));
                    c.redis_prefix = p;
                    c.limits.messages_per_second = 1000;
                    c.limits.message_burst = 1000;
                    configure(c);
                })
                .await,
            );
        }
        Self { nodes, redis, prefix, _schema: schema }
    }

    /// Waits until `subscribers` nodes listen on `user`'s channel, so an event
    /// published now reaches them.
    pub(crate) async fn wait_subscribed(&self, user: i64, subscribers: i64) {
        let client = redis::Client::open(self.redis.as_str()).expect("redis url");
        let mut con = client.get_multiplexed_async_connection().await.expect("redis answers");
        let channel = format!("{}:user:{user}", self.prefix);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let counts: Vec<(String, i64)> =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut con).await.expect("numsub");
            if counts.first().is_some_and(|(_, n)| *n >= subscribers) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{subscribers} nodes never subscribed to {channel}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A Redis server of a test's own, on a free port, that the test may stop and start.
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut redis = Self { port, child: None };
        redis.restart().await;
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/services.sh checks it is installed)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
