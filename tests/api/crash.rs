//! The server process stops under load, as the real binary on a SQLite data
//! directory: killed with SIGKILL (a crash, a power cut), or asked to stop with
//! SIGTERM (a deploy). Senders keep an acked log; after a restart on the same
//! directory every acked message is stored once with the seq its ack named, seqs
//! have no gap, and each recipient recovers all of it with `sync`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::ledger::{self, Acked};
use crate::support::{JWT_SECRET, TestApp, TestUser};

const BIN: &str = env!("CARGO_BIN_EXE_confab");
const PAIRS: usize = 20;
const WINDOW: usize = 8;

/// The server binary, serving on a free port of its own.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(dir: &std::path::Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
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

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill runs");
        assert!(sent.success(), "kill {signal}");
    }

    /// Waits for the process to end; its exit status, or a panic past `limit`.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
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

/// Pairs with their direct threads, then every client sending with a window of
/// unacknowledged messages until its connection ends.
async fn load(front: &TestApp, run: &str) -> (Vec<(TestUser, String)>, Vec<tokio::task::JoinHandle<Acked>>) {
    let mut threads = Vec::new();
    let mut senders = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut urls = Vec::new();
    for n in 0..PAIRS {
        let client = front.signup(&format!("{run}c{n}"), "client").await;
        let freelancer = front.signup(&format!("{run}f{n}"), "freelancer").await;
        let thread = front.hire(&client, &freelancer).await;
        urls.push(front.ws_url(&format!("/ws/chat/?token={}", client.token)));
        threads.push((freelancer, thread));
    }
    for (n, (url, (_, thread))) in urls.into_iter().zip(&threads).enumerate() {
        senders.push(tokio::spawn(ledger::send_until_stopped(
            url,
            thread.clone(),
            format!("p{n}"),
            WINDOW,
            stop.clone(),
        )));
    }
    (threads, senders)
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

async fn stop_under_load(signal: &str) -> (std::process::ExitStatus, usize, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(dir.path());
    let front = TestApp::front(&server.base);
    let (threads, senders) = load(&front, "u").await;
    // Wait until the load is in full swing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while front.metric("confab_commit_batch_messages_sum").await < 5_000.0 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.signal(signal);
    let status = server.wait(Duration::from_secs(20));
    let mut acked = Vec::new();
    for sender in senders {
        acked.push(sender.await.expect("sender"));
    }
    let counts: Vec<_> = acked.iter().map(|a| (a.seqs.len(), &a.refused)).collect();
    assert!(acked.iter().all(|a| !a.seqs.is_empty()), "every sender had acks before the stop: {counts:?}");

    let restarted = Server::start(dir.path());
    let front = TestApp::front(&restarted.base);
    let (total_acked, total_stored) = verify(&front, &threads, &acked).await;
    // And the restarted node serves: one more message each way.
    let (reader, thread) = &threads[0];
    front.say(reader, thread, "after the restart").await;
    (status, total_acked, total_stored)
}

#[tokio::test]
async fn a_server_killed_with_sigkill_under_load_has_every_acked_message_after_its_restart() {
    let (_, acked, stored) = stop_under_load("-KILL").await;
    eprintln!("SIGKILL under load: {acked} acked, all present; {stored} stored (the rest never acked)");
}

#[tokio::test]
async fn sigterm_under_load_stores_every_acked_message_and_exits_0_in_time() {
    let (status, acked, stored) = stop_under_load("-TERM").await;
    assert!(status.success(), "exit status {status:?}");
    eprintln!("SIGTERM under load: {acked} acked, all present; {stored} stored");
}
