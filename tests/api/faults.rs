//! Faults a deployment meets, each with nothing acknowledged lost: a database that
//! goes down or stops answering, clients that stop reading or vanish, a slow sync,
//! two nodes on one data directory. (Crashes of the process: `crash.rs`.)

use std::time::{Duration, Instant};

use confab::app::App;
use confab::config::{Config, Secret};
use futures::future::join_all;
use serde_json::json;

use crate::link::{Link, Mode};
use crate::pg_schema::{Schema, postgres_url};
use crate::support::{TestApp, TestUser, WAIT, WsClient};

/// A node on a fresh PostgreSQL schema, reached through a link the test controls.
async fn node_behind_link(configure: impl FnOnce(&mut Config)) -> (TestApp, Link, Schema) {
    let schema = Schema::create().await;
    let url = postgres_url();
    let (_, rest) = url.split_once("://").expect("a URL");
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h).split('/').next().expect("host").to_owned();
    let link = Link::start(host_port, Mode::Pass).await;
    let through = link.postgres_url(&schema.url());
    let app = TestApp::spawn_with(move |c| {
        c.database_url = Secret::new(through);
        configure(c);
    })
    .await;
    (app, link, schema)
}

/// A link between clients and the node.
async fn link_to(app: &TestApp) -> Link {
    let port = app.base.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("port");
    Link::start(format!("127.0.0.1:{port}"), Mode::Pass).await
}

async fn pair(app: &TestApp) -> (TestUser, TestUser, String) {
    let (alice, bob) = (app.signup("alice", "client").await, app.signup("bob", "freelancer").await);
    let thread = app.hire(&alice, &bob).await;
    (alice, bob, thread)
}

/// `/readyz` as a load balancer sees it: the status, the body, and how long it took.
async fn readyz(app: &TestApp) -> (u16, serde_json::Value, Duration) {
    let started = Instant::now();
    let res = app.client.get(app.url("/readyz")).timeout(WAIT).send().await.expect("readyz answers");
    let status = res.status().as_u16();
    (status, res.json().await.expect("JSON"), started.elapsed())
}

async fn until_ready(app: &TestApp) {
    let deadline = Instant::now() + 2 * WAIT;
    while readyz(app).await.0 != 200 {
        assert!(Instant::now() < deadline, "the node did not become ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_database_outage_refuses_sends_readyz_says_so_at_once_and_service_resumes_by_itself() {
    let (app, link, _schema) = node_behind_link(|_| {}).await;
    let (alice, bob, thread) = pair(&app).await;
    let mut a = app.ws(&alice).await;
    a.send(json!({"type": "message", "thread_id": thread, "text": "before", "client_msg_id": "k-0"})).await;
    assert_eq!(a.next().await["type"], "message_ack");

    // The database stops: its connections close and new ones are refused.
    link.set(Mode::Down);
    let (status, body, took) = readyz(&app).await;
    assert_eq!((status, body["database"].as_str()), (503, Some("unavailable")), "{body}");
    assert_eq!(body["bus"], "ok", "{body}");
    assert!(took < Duration::from_secs(1), "readyz took {took:?}");
    a.send(json!({"type": "message", "thread_id": thread, "text": "during", "client_msg_id": "k-1"})).await;
    let refused = a.next().await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"].as_str()),
        (Some("error"), Some("unavailable")),
        "{refused}"
    );
    assert_eq!(refused["client_msg_id"], "k-1", "the error names the send it refuses");
    let rest = app.post(&format!("/api/chat/threads/{thread}/messages/"), &alice.token, json!({"text": "x"})).await;
    assert_eq!((rest.0, rest.1["error"].as_str()), (503, Some("unavailable")), "{}", rest.1);

    // It comes back: the pool reconnects by itself, with no restart.
    link.set(Mode::Pass);
    until_ready(&app).await;
    a.send(json!({"type": "message", "thread_id": thread, "text": "during", "client_msg_id": "k-1"})).await;
    let ack = a.next().await;
    assert_eq!((ack["type"].as_str(), ack["client_msg_id"].as_str()), (Some("message_ack"), Some("k-1")), "{ack}");
    let texts: Vec<_> = crate::ledger::stored(&app, &bob, &thread)
        .await
        .iter()
        .map(|m| m["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(texts.len(), 3, "the hire's message, `before` and `during`, once each: {texts:?}");
}

#[tokio::test]
async fn a_database_that_stops_answering_hangs_neither_readyz_nor_requests() {
    let (app, link, _schema) = node_behind_link(|c| c.http_request_timeout = Duration::from_secs(2)).await;
    let (alice, _bob, thread) = pair(&app).await;

    // Packets to the database are dropped: nothing answers and nothing closes.
    link.set(Mode::Hold);
    let (status, body, took) = readyz(&app).await;
    assert_eq!((status, body["database"].as_str()), (503, Some("unavailable")), "{body}");
    assert!(took < Duration::from_secs(1), "readyz took {took:?}");
    let started = Instant::now();
    let page = app.get(&format!("/api/chat/threads/{thread}/messages/"), &alice.token).await;
    assert_eq!((page.0, page.1["error"].as_str()), (503, Some("unavailable")), "{}", page.1);
    assert!(started.elapsed() < Duration::from_secs(4), "the request took {:?}", started.elapsed());

    link.set(Mode::Pass);
    until_ready(&app).await;
    assert_eq!(app.get(&format!("/api/chat/threads/{thread}/messages/"), &alice.token).await.0, 200);
}

#[tokio::test]
async fn a_client_that_vanishes_without_a_close_is_dropped_within_the_idle_timeout() {
    let app = TestApp::spawn_with(|c| {
        c.ws.ping_interval = Duration::from_millis(50);
        c.ws.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let alice = app.signup("alice", "client").await;
    let link = link_to(&app).await;
    let gone = WsClient::connect(&format!("ws://127.0.0.1:{}/ws/chat/?token={}", link.port, alice.token)).await;
    assert_eq!(app.metric("confab_ws_connections").await, 1.0);

    link.set(Mode::Hold);
    let started = Instant::now();
    while app.metric("confab_ws_connections").await > 0.0 {
        assert!(started.elapsed() < Duration::from_secs(3), "the vanished client is still registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gone);
}

/// Bob, connected through a link that holds his bytes, stops reading while Alice
/// posts 15,000-character messages to him until the node counts `closed_by` once;
/// then he is gone from the hub, the other close counter is 0, and he recovers
/// every message with sync.
async fn stalled_reader_closed_by(closed_by: &str, other: &str, configure: impl FnOnce(&mut Config)) {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_text_chars = 16_000;
        c.limits.messages_per_second = 100_000;
        c.limits.message_burst = 100_000;
        configure(c);
    })
    .await;
    let (alice, bob, thread) = pair(&app).await;
    let link = link_to(&app).await;
    let mut stuck = WsClient::connect(&format!("ws://127.0.0.1:{}/ws/chat/?token={}", link.port, bob.token)).await;
    stuck.assert_nothing_pending().await;

    link.set(Mode::Hold);
    let text = "x".repeat(15_000);
    let path = format!("/api/chat/threads/{thread}/messages/");
    let mut sent = 0;
    while app.metric(closed_by).await < 1.0 {
        assert!(sent < 4_000, "no {closed_by} after {sent} messages");
        let batch = (0..10).map(|_| app.post(&path, &alice.token, json!({"text": text})));
        assert!(join_all(batch).await.iter().all(|(s, _)| *s == 201));
        sent += 10;
    }
    assert_eq!(app.metric(other).await, 0.0, "closed by {closed_by}, not {other}");
    let started = Instant::now();
    while app.metric("confab_ws_connections").await > 0.0 {
        assert!(started.elapsed() < WAIT, "the stalled connection is still registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Sending went on for everyone else, and Bob recovers everything with sync.
    let recovered = crate::ledger::synced(&app, &bob, &thread).await;
    assert_eq!(recovered.len(), sent + 1, "every message, the hire's first");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_when_a_write_does_not_complete_in_time() {
    stalled_reader_closed_by("confab_ws_write_timeout_closes_total", "confab_ws_slow_consumer_closes_total", |c| {
        c.ws.write_timeout = Duration::from_millis(300);
        // The write timeout on its own: no byte bound that long messages reach first.
        c.ws.queue_bytes = 1 << 30;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_no_more_than_the_queue_byte_bound() {
    // The frame bound (1,024) would let ~15 MiB of these wait; the byte bound closes
    // the connection once 256 KiB wait behind a write that does not complete.
    stalled_reader_closed_by("confab_ws_slow_consumer_closes_total", "confab_ws_write_timeout_closes_total", |c| {
        c.ws.write_timeout = Duration::from_secs(3);
        c.ws.queue_bytes = 256 * 1024;
    })
    .await;
}

#[tokio::test]
async fn a_sync_slower_than_the_idle_timeout_keeps_its_connection() {
    let (app, link, _schema) = node_behind_link(|c| {
        c.ws.ping_interval = Duration::from_millis(50);
        c.ws.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let (alice, bob, thread) = pair(&app).await;
    for n in 0..5 {
        app.say(&alice, &thread, &format!("m{n}")).await;
    }
    let mut b = app.ws(&bob).await;
    b.assert_nothing_pending().await;
    // Every round trip to the database now takes 400 ms: the sync takes longer than
    // the idle timeout, during which the server reads nothing from the client.
    link.set(Mode::Lag(Duration::from_millis(200)));
    let started = Instant::now();
    b.send(json!({"type": "sync", "threads": {thread.clone(): 0}})).await;
    let mut replayed = 0;
    loop {
        let event = b.next().await;
        match event["type"].as_str() {
            Some("new_message") => replayed += 1,
            Some("synced") => break,
            _ => panic!("unexpected {event}"),
        }
    }
    assert!(started.elapsed() > Duration::from_millis(300), "the sync was slow ({:?})", started.elapsed());
    assert_eq!(replayed, 6);
    link.set(Mode::Pass);
    b.assert_nothing_pending().await;
}

#[tokio::test]
async fn a_second_node_on_one_data_directory_or_one_sqlite_file_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = |data: &str, db: Option<&std::path::Path>| {
        let mut c = Config::new(dir.path().join(data));
        c.listen = "127.0.0.1:0".parse().expect("address");
        if let Some(db) = db {
            c.database_url = Secret::new(format!("sqlite://{}", db.display()));
        }
        c
    };
    let first = App::build(config("one", None)).await.expect("the first node starts");
    let second = App::build(config("one", None)).await.err().expect("a second node on the same data directory");
    let text = format!("{second:#}");
    assert!(text.contains("in use by another Confab process") && text.contains("--data-dir"), "{text}");
    assert!(text.contains(&format!("pid {}", std::process::id())), "names the holder: {text}");
    drop(first);
    // The lock goes with the node (its last tasks end a moment after it is dropped).
    let started = Instant::now();
    let again = loop {
        match App::build(config("one", None)).await {
            Ok(app) => break app,
            Err(e) => assert!(started.elapsed() < WAIT, "the lock outlived its node: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let shared = dir.path().join("shared.db");
    let _a = App::build(config("a", Some(&shared))).await.expect("a node on the file");
    let b = App::build(config("b", Some(&shared))).await.err().expect("a second node on the same SQLite file");
    let text = format!("{b:#}");
    assert!(text.contains("SQLite") && text.contains("in use by another Confab process"), "{text}");
    drop(again);
}

/// A small tmpfs of the test's own (the test runs as root, as CI does), unmounted
/// when dropped; `fill` takes all of its free space.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mounting a tmpfs needs root (the test command runs as root, as CI does)");
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }

    /// (A remount read-only is refused while the node holds files open for
    /// writing; a disk that turns read-only under a running node is `ExtDisk`.)
    fn remount(&self, mode: &str) {
        let done = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .status()
            .expect("mount runs");
        assert!(done.success(), "remount {mode}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Sends `text` over `ws` with `key` until the answer is an error; returns how many
/// were acked before, and that error.
async fn send_until_refused(ws: &mut WsClient, thread: &str, prefix: &str) -> (usize, serde_json::Value) {
    let text = "x".repeat(4_000);
    for n in 0..100_000 {
        ws.send(json!({"type": "message", "thread_id": thread, "text": text, "client_msg_id": format!("{prefix}{n}")}))
            .await;
        let answer = ws.next().await;
        if answer["type"] != "message_ack" {
            return (n, answer);
        }
    }
    panic!("the disk never filled");
}

#[tokio::test]
async fn a_full_disk_refuses_sends_keeps_the_store_whole_and_service_resumes_when_space_returns() {
    let disk = SmallDisk::mount("24m");
    let data = disk.path().join("data");
    let db = data.join("confab.db");
    let url = format!("sqlite://{}", db.display());
    let mut app = TestApp::spawn_with(|c| {
        c.data_dir = data.clone();
        c.database_url = Secret::new(url);
    })
    .await;
    let (alice, bob, thread) = pair(&app).await;
    let mut a = app.ws(&alice).await;

    let filler = disk.fill();
    let (acked_full, refused) = send_until_refused(&mut a, &thread, "full-").await;
    assert_eq!(refused["error"], "unavailable", "{refused}");
    assert_eq!(refused["client_msg_id"], format!("full-{acked_full}"), "the error names the refused send");
    std::fs::remove_file(&filler).expect("space returns");
    a.send(json!({"type": "message", "thread_id": thread, "text": "again", "client_msg_id": "after-full"})).await;
    assert_eq!(a.next().await["type"], "message_ack", "sends resume when space returns");

    // Every acked message is there once, and the file is whole.
    let stored = crate::ledger::stored(&app, &bob, &thread).await;
    let keys: Vec<&str> = stored.iter().filter_map(|m| m["client_msg_id"].as_str()).collect();
    assert_eq!(keys.len(), acked_full + 1, "{acked_full} acked before the disk was full, 1 after");
    assert!(keys.contains(&"after-full"));
    app.stop().await;
    let conn = rusqlite::Connection::open(&db).expect("open the store");
    let check: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity check");
    assert_eq!(check, "ok", "PRAGMA integrity_check");
}

#[tokio::test]
async fn a_read_only_data_directory_at_start_is_a_clear_error() {
    let disk = SmallDisk::mount("4m");
    disk.remount("ro");
    let mut config = Config::new(disk.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("address");
    let error = App::build(config).await.err().expect("no node starts on a read-only directory");
    let text = format!("{error:#}");
    assert!(text.contains("Read-only file system") && text.contains(&disk.path().display().to_string()), "{text}");
}

/// A small ext4 filesystem on a loop device, mounted `errors=remount-ro`: the way a
/// real disk turns read-only under a running node is an I/O error that ext4 answers
/// by remounting itself read-only, and `trigger_fs_error` raises exactly that.
struct ExtDisk {
    dir: tempfile::TempDir,
    image: tempfile::TempDir,
    device: String,
}

fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program).args(args).output().expect("the program runs");
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl ExtDisk {
    fn mount() -> Self {
        let image = tempfile::tempdir().expect("temp dir");
        let file = image.path().join("disk.img");
        std::fs::File::create(&file).and_then(|f| f.set_len(32 << 20)).expect("image");
        let file = file.to_str().expect("a UTF-8 path");
        run("mkfs.ext4", &["-q", file]);
        let device = run("losetup", &["-f", "--show", file]);
        let dir = tempfile::tempdir().expect("temp dir");
        let disk = Self { dir, image, device };
        disk.mount_again();
        disk
    }

    fn mount_again(&self) {
        run("mount", &["-o", "errors=remount-ro", &self.device, self.path().to_str().expect("UTF-8")]);
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// What a failing disk does: ext4 records an error and goes read-only at once.
    fn fail(&self) {
        let name = self.device.rsplit('/').next().expect("a device name");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "a test fault").expect("trigger the error");
    }

    /// Unmounts, repairs with `e2fsck` as an operator would, and mounts again.
    async fn repair(&self) {
        // The stopped node's last handles (the pool, the writer thread) close a moment later.
        let deadline = Instant::now() + WAIT;
        let umount =
            || std::process::Command::new("umount").arg(self.path()).stderr(std::process::Stdio::null()).status();
        while !umount().expect("umount").success() {
            assert!(Instant::now() < deadline, "the stopped node still holds the disk");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Exit 1 means "errors corrected", which is what is expected here.
        let fsck = std::process::Command::new("e2fsck").args(["-fy", &self.device]).output().expect("e2fsck");
        assert!(fsck.status.code().is_some_and(|c| c <= 1), "e2fsck: {}", String::from_utf8_lossy(&fsck.stdout));
        self.mount_again();
    }
}

impl Drop for ExtDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
        let _ = std::process::Command::new("losetup").args(["-d", &self.device]).status();
        let _ = &self.image;
    }
}

#[tokio::test]
async fn a_data_directory_that_turns_read_only_under_writes_refuses_sends_and_keeps_every_acked_message() {
    let disk = ExtDisk::mount();
    let data = disk.path().join("data");
    let db = data.join("confab.db");
    let url = format!("sqlite://{}", db.display());
    let on_disk = |c: &mut Config| {
        c.data_dir = data.clone();
        c.database_url = Secret::new(url.clone());
    };
    let mut app = TestApp::spawn_with(|c| {
        on_disk(c);
        c.limits.messages_per_second = 100_000;
        c.limits.message_burst = 100_000;
    })
    .await;
    let (alice, bob, thread) = pair(&app).await;
    let mut a = app.ws(&alice).await;
    let mut acked = Vec::new();
    for n in 0..50 {
        let key = format!("before-{n}");
        a.send(json!({"type": "message", "thread_id": thread, "text": "x".repeat(2_000), "client_msg_id": key})).await;
        assert_eq!(a.next().await["type"], "message_ack");
        acked.push(key);
    }

    // ext4 goes read-only a moment after the error: a send whose write and fsync
    // landed before that is acked (and must survive); from then on, each is refused.
    disk.fail();
    let mut refused = 0;
    for n in 0..200 {
        let key = format!("read-only-{n}");
        a.send(json!({"type": "message", "thread_id": thread, "text": "late", "client_msg_id": key})).await;
        let answer = a.next().await;
        if answer["type"] == "message_ack" {
            assert_eq!(refused, 0, "once refused, no later send is acked: {answer}");
            acked.push(key);
            continue;
        }
        assert_eq!(answer["error"], "unavailable", "a send to a read-only disk is refused, never acked: {answer}");
        assert_eq!(answer["client_msg_id"], key, "the error names its send");
        refused += 1;
        if refused == 5 {
            break;
        }
    }
    assert_eq!(refused, 5, "sends to the read-only disk were refused");
    let (status, body) = app.get(&format!("/api/chat/threads/{thread}/messages/?limit=1"), &bob.token).await;
    assert!(status == 200 || status == 503, "reads answer or say unavailable: {status} {body}");
    drop(a);
    app.stop().await;

    // The operator repairs the disk; the store is whole and has every acked message once.
    disk.repair().await;
    let conn = rusqlite::Connection::open(&db).expect("open the store");
    let check: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity check");
    assert_eq!(check, "ok", "PRAGMA integrity_check");
    drop(conn);
    let app = TestApp::spawn_with(on_disk).await;
    let stored = crate::ledger::stored(&app, &bob, &thread).await;
    let keys: Vec<&str> = stored.iter().filter_map(|m| m["client_msg_id"].as_str()).collect();
    assert_eq!(keys, acked, "every acked message once, in order, and none of the refused ones");
    let mut a = app.ws(&alice).await;
    a.send(json!({"type": "message", "thread_id": thread, "text": "again", "client_msg_id": "after"})).await;
    assert_eq!(a.next().await["type"], "message_ack", "service resumes on the repaired disk");
}

#[tokio::test]
async fn when_redis_comes_back_a_nodes_connections_are_closed_over_a_window_not_at_once() {
    let mut redis = crate::cluster::OwnRedis::start().await;
    let cluster = crate::cluster::Cluster::start_on(1, redis.url()).await;
    let node = &cluster.nodes[0];
    let mut sockets = Vec::new();
    for n in 0..13 {
        let user = node.signup(&format!("u{n}"), "client").await;
        for _ in 0..16 {
            sockets.push(node.ws(&user).await);
        }
    }
    redis.stop();
    let deadline = Instant::now() + WAIT;
    while readyz(node).await.0 != 503 {
        assert!(Instant::now() < deadline, "readyz never reported the bus down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.restart().await;
    let closes = sockets.iter_mut().map(|s| async {
        let code = s.until_close().await.0;
        (code, Instant::now())
    });
    let closes = join_all(closes).await;
    assert!(closes.iter().all(|(code, _)| *code == 1013), "every connection is told to sync");
    let first = closes.iter().map(|(_, at)| *at).min().expect("closes");
    let last = closes.iter().map(|(_, at)| *at).max().expect("closes");
    // 208 connections: a window of 208 ms, each close at its own instant in it.
    assert!(last - first >= Duration::from_millis(100), "the closes took {:?}", last - first);
    until_ready(node).await;
}
