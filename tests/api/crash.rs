//! The server process stops under load, as the real binary on a SQLite data
//! directory: killed with SIGKILL (a crash, a power cut), or asked to stop with
//! SIGTERM (a deploy). Senders keep an acked log; after a restart on the same
//! directory every acked message is stored once with the seq its ack named, seqs
//! have no gap, and each recipient recovers all of it with `sync`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::ledger::{self, Acked};
use crate::support::{JWT_SECRET, TestApp, TestUser};

const BIN: &str = env!("CARGO_BIN_EXE_confab");
const WINDOW: usize = 8;

/// The server binary, serving on a free port of its own.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(dir: &std::path::Path) -> Self {
        Self::start_with(dir, &[])
    }

    pub(crate) fn start_with(dir: &std::path::Path, args: &[String]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .args(["--rate-limit", "100000", "--rate-burst", "100000", "--signin-attempts-per-minute", "100000"])
            .env("CONFAB_JWT_SECRET", JWT_SECRET)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("confab starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(Instant::now() < deadline, "no address logged in time");
            let line = lines.next().expect("a log line").expect("readable");
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().expect("address").to_owned();
            }
        };
        // Keep reading its log, so a full pipe never stops the server.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Self { child, base: format!("http://{addr}") }
    }

    pub(crate) fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill runs");
        assert!(sent.success(), "kill {signal}");
    }

    /// Waits for the process to end; its exit status, or a panic past `limit`.
    pub(crate) fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both users of each pair sending into their thread, each with a window of
/// unacknowledged messages, until its connection ends or `stop` is set.
struct Load {
    /// Each pair's freelancer (who reads the thread back) and thread.
    threads: Vec<(TestUser, String)>,
    /// Two senders per pair, in the order of `threads`.
    senders: Vec<tokio::task::JoinHandle<Acked>>,
    shared: Arc<ledger::Shared>,
}

impl Load {
    /// Signs the pairs up (`CONFAB_FAULT_PAIRS`, default 20; `scripts/faults.sh`
    /// runs 500, 1,000 users) and starts every sender.
    async fn start(front: &TestApp, run: &str) -> Self {
        let pairs = std::env::var("CONFAB_FAULT_PAIRS").ok().and_then(|n| n.parse().ok()).unwrap_or(20);
        let mut made = Vec::new();
        for chunk in (0..pairs).collect::<Vec<usize>>().chunks(16) {
            let setups = chunk.iter().map(|n| async move {
                let client = front.signup(&format!("{run}c{n}"), "client").await;
                let freelancer = front.signup(&format!("{run}f{n}"), "freelancer").await;
                let thread = front.hire(&client, &freelancer).await;
                (client, freelancer, thread)
            });
            made.extend(futures::future::join_all(setups).await);
        }
        let shared = Arc::new(ledger::Shared::default());
        let mut senders = Vec::new();
        for (n, (client, freelancer, thread)) in made.iter().enumerate() {
            for (side, user) in [("c", client), ("f", freelancer)] {
                let url = front.ws_url(&format!("/ws/chat/?token={}", user.token));
                let sender =
                    ledger::send_until_stopped(url, thread.clone(), format!("{side}{n}"), WINDOW, shared.clone());
                senders.push(tokio::spawn(sender));
            }
        }
        let threads = made.into_iter().map(|(_, freelancer, thread)| (freelancer, thread)).collect();
        Self { threads, senders, shared }
    }

    /// Waits until every sender has had an ack, then until the node has committed
    /// `more` messages besides.
    async fn in_full_swing(&self, front: &TestApp, more: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.shared.started.load(Ordering::Relaxed) < self.senders.len() {
            assert!(Instant::now() < deadline, "not every sender was acked in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now = front.metric("confab_commit_batch_messages_sum").await;
        until_committed(front, now + more).await;
    }

    /// Waits for every sender; one merged log per thread.
    async fn finish(self) -> (Vec<(TestUser, String)>, Vec<Acked>) {
        let mut logs = Vec::new();
        for sender in self.senders {
            logs.push(sender.await.expect("sender"));
        }
        let counts: Vec<usize> = logs.iter().map(|a| a.seqs.len()).collect();
        assert!(counts.iter().all(|n| *n > 0), "every sender had acks before the fault: {counts:?}");
        let mut merged = Vec::new();
        let mut logs = logs.into_iter();
        while let (Some(mut one), Some(other)) = (logs.next(), logs.next()) {
            one.seqs.extend(other.seqs);
            for (code, n) in other.refused {
                *one.refused.entry(code).or_default() += n;
            }
            merged.push(one);
        }
        (self.threads, merged)
    }
}

/// Waits until the node has committed `messages` in all.
async fn until_committed(front: &TestApp, messages: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while front.metric("confab_commit_batch_messages_sum").await < messages {
        assert!(Instant::now() < deadline, "the load did not reach {messages} messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After the restart: every acked message stored once, with no gap, and recovered
/// with `sync` by its recipient; returns (acked, stored) over all threads.
async fn verify(front: &TestApp, threads: &[(TestUser, String)], acked: &[Acked]) -> (usize, usize) {
    let (mut total_acked, mut total_stored) = (0, 0);
    for ((reader, thread), acked) in threads.iter().zip(acked) {
        let stored = ledger::stored(front, reader, thread).await;
        let (a, s) = ledger::check(acked, &stored);
        let recovered = ledger::synced(front, reader, thread).await;
        let ids = |ms: &[serde_json::Value]| ms.iter().map(|m| m["id"].clone()).collect::<Vec<_>>();
        assert_eq!(ids(&recovered), ids(&stored), "sync recovers exactly what is stored, in order");
        total_acked += a;
        total_stored += s;
    }
    (total_acked, total_stored)
}

/// (exit status, acked, stored, pairs)
async fn stop_under_load(signal: &str) -> (std::process::ExitStatus, usize, usize, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path());
    let front = TestApp::front(&server.base);
    let load = Load::start(&front, "u").await;
    load.in_full_swing(&front, 2_000.0).await;
    server.signal(signal);
    let status = server.wait(Duration::from_secs(20));
    let (threads, acked) = load.finish().await;

    let restarted = Server::start(dir.path());
    let front = TestApp::front(&restarted.base);
    let (total_acked, total_stored) = verify(&front, &threads, &acked).await;
    // And the restarted node serves.
    let (reader, thread) = &threads[0];
    front.say(reader, thread, "after the restart").await;
    (status, total_acked, total_stored, threads.len())
}

#[tokio::test]
async fn a_server_killed_with_sigkill_under_load_has_every_acked_message_after_its_restart() {
    let (_, acked, stored, _) = stop_under_load("-KILL").await;
    eprintln!("SIGKILL under load: {acked} acked, all present; {stored} stored (the rest never acked)");
}

#[tokio::test]
async fn sigterm_under_load_stores_every_acked_message_and_exits_0_in_time() {
    let (status, acked, stored, pairs) = stop_under_load("-TERM").await;
    assert!(status.success(), "exit status {status:?}");
    // Each thread's first message is the hire's (never acked); every other stored one was.
    assert_eq!(stored, acked + pairs, "a graceful stop acks everything it stored");
    eprintln!("SIGTERM under load: {acked} acked, all present; {stored} stored");
}

/// A PostgreSQL server of the test's own (initdb into a temp dir, as the
/// `postgres` user, on a free port), so the test can kill it without touching the
/// machine's server that the other tests use.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl OwnPostgres {
    fn bin(name: &str) -> String {
        let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed (scripts/services.sh)");
        let mut found: Vec<_> = versions.filter_map(Result::ok).map(|v| v.path().join("bin").join(name)).collect();
        found.sort();
        found.pop().expect("a PostgreSQL version").display().to_string()
    }

    /// A command run as the `postgres` user (PostgreSQL refuses root), as a direct
    /// child of the test: its exit is reaped here, so a killed server's pid is free
    /// when it restarts (a sandbox's init may never reap an orphan).
    fn as_postgres(program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, "postgres"]).output().expect("id runs");
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("the postgres user exists")
        };
        let mut command = Command::new(program);
        command.uid(id("-u")).gid(id("-g"));
        command
    }

    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let _ = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status();
        let data = dir.path().join("data");
        let init = Self::as_postgres(&Self::bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(init.success(), "initdb (as the postgres user) failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let mut pg = Self { dir, port, child: None };
        pg.restart().await;
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its data directory (after a crash: with recovery).
    async fn restart(&mut self) {
        use std::os::unix::process::CommandExt;
        let data = self.dir.path().join("data");
        let child = Self::as_postgres(&Self::bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
            .arg("-k")
            .arg(self.dir.path())
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while sqlx::PgPool::connect(&self.url()).await.is_err() {
            assert!(Instant::now() < deadline, "the test's PostgreSQL did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL to the postmaster and every backend at once, as a crash does.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn postgresql_killed_with_sigkill_under_load_and_restarted_loses_nothing_acked() {
    let mut pg = OwnPostgres::start().await;
    let url = pg.url();
    let app = TestApp::spawn_with(move |c| {
        c.database_url = confab::config::Secret::new(url);
        c.limits.messages_per_second = 100_000;
        c.limits.message_burst = 100_000;
    })
    .await;
    let load = Load::start(&app, "pg").await;
    load.in_full_swing(&app, 1_000.0).await;
    pg.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = app.send(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!((status, body["database"].as_str()), (503, Some("unavailable")), "{body}");
    pg.restart().await;
    // The pool reconnects by itself; senders are acked again.
    let resumed = app.metric("confab_commit_batch_messages_sum").await;
    until_committed(&app, resumed + 1_000.0).await;
    load.shared.stop.store(true, Ordering::Relaxed);
    let (threads, acked) = load.finish().await;
    let refused: usize = acked.iter().flat_map(|a| a.refused.iter()).map(|(_, n)| n).sum();
    let codes: std::collections::BTreeSet<&String> = acked.iter().flat_map(|a| a.refused.keys()).collect();
    assert!(codes.iter().all(|c| *c == "unavailable"), "sends were refused only as unavailable: {codes:?}");
    let (total_acked, total_stored) = verify(&app, &threads, &acked).await;
    eprintln!("PostgreSQL SIGKILL: {total_acked} acked, all present; {total_stored} stored; {refused} refused");
}

#[tokio::test]
async fn a_node_killed_with_sigkill_under_load_leaves_its_clients_to_the_other_node_with_nothing_lost() {
    let schema = crate::pg_schema::Schema::create().await;
    let prefix = format!("confab-test-{}", uuid::Uuid::new_v4().simple());
    let args = [
        "--database-url".to_owned(),
        schema.url(),
        "--redis-url".to_owned(),
        crate::cluster::redis_url(),
        "--redis-prefix".to_owned(),
        prefix,
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let mut a = Server::start_with(dir_a.path(), &args);
    let b = Server::start_with(dir_b.path(), &args);
    let (front_a, front_b) = (TestApp::front(&a.base), TestApp::front(&b.base));
    let load = Load::start(&front_a, "n").await;
    load.in_full_swing(&front_a, 1_000.0).await;
    a.signal("-KILL");
    a.wait(Duration::from_secs(5));
    let (threads, acked) = load.finish().await;
    // The survivor carries on: its readiness never changed, and the killed node's
    // clients, reconnected to it, send and recover everything.
    assert_eq!(front_b.send(reqwest::Method::GET, "/readyz", None, None).await.0, 200);
    let (total_acked, total_stored) = verify(&front_b, &threads, &acked).await;
    for (reader, thread) in &threads {
        front_b.say(reader, thread, "on the survivor").await;
    }
    eprintln!("node SIGKILL: {total_acked} acked, all present on the survivor; {total_stored} stored");
}

#[tokio::test]
async fn a_redis_outage_under_load_loses_nothing_acked_and_every_client_recovers() {
    let mut redis = crate::cluster::OwnRedis::start().await;
    let cluster = crate::cluster::Cluster::start_on(2, redis.url()).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let load = Load::start(a, "r").await;
    load.in_full_swing(a, 1_000.0).await;
    redis.stop();
    // Sending goes on while the bus is away: stored and acked on the senders' node.
    let during = a.metric("confab_commit_batch_messages_sum").await;
    until_committed(a, during + 1_000.0).await;
    redis.restart().await;
    // The node closes its connections with 1013 once the bus is back; the senders end there.
    let (threads, acked) = load.finish().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.send(reqwest::Method::GET, "/readyz", None, None).await.0 != 200 {
        assert!(Instant::now() < deadline, "the other node did not become ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Read back and recovered on the other node, the one that missed the live events.
    let (total_acked, total_stored) = verify(b, &threads, &acked).await;
    eprintln!("Redis outage under load: {total_acked} acked, all present; {total_stored} stored");
}
