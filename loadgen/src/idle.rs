//! The `idle` scenario: opens many authenticated connections, holds them, and
//! reports how fast they were accepted, how many failed, and what each costs the
//! server in resident memory; then proves they are live by sending through a sample
//! and checking that every connection of each recipient receives the message.
//!
//! One source address has about 28,000 ephemeral ports, and binding one gets slower
//! as they fill (at 19,000 on one address, 600 connections/s instead of 7,000):
//! connections to a loopback server are spread over 127.0.0.2, 127.0.0.3, …, a
//! thousand each, so a run is capped neither by the ports nor by the search.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::SinkExt;
use futures::stream::{self, SplitSink, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::users::SignedIn;

/// Connections per source address before the next one is used.
const PER_SOURCE: usize = 1_000;

/// How an `idle` run goes.
#[derive(Debug, Clone)]
pub struct Options {
    pub connections: usize,
    /// Handshakes in flight at a time.
    pub concurrency: usize,
    /// How long the connections are held before the server's memory is read.
    pub hold: Duration,
    /// Connections that send a message to prove the rest are live.
    pub sample: usize,
    pub server_pid: Option<u32>,
    /// How long the server's RSS must stay within 512 KiB before each of the two
    /// samples (zero: sample at once). Right after the sign-ins the server may
    /// still hold their hashing memory, which it gives back within seconds; a
    /// per-connection figure taken across that is noise.
    pub steady: Duration,
}

/// What an `idle` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub requested: usize,
    pub opened: usize,
    pub failed: usize,
    pub errors: BTreeMap<String, u64>,
    pub connect_seconds: f64,
    pub connections_per_second: f64,
    pub server_rss_before_mib: Option<f64>,
    pub server_rss_held_mib: Option<f64>,
    /// (RSS held − RSS before) / connections opened.
    pub server_rss_per_connection_kib: Option<f64>,
    /// Connections still open at the end of the hold (none closed by the server).
    pub open_after_hold: usize,
    pub sample_sent: usize,
    pub sample_acked: u64,
    /// Deliveries expected: every connection of each sampled recipient, and the
    /// sender's other connections.
    pub sample_expected_deliveries: u64,
    pub sample_delivered: u64,
}

type Socket = WebSocketStream<TcpStream>;

/// What a connection's reader saw.
#[derive(Debug, Default)]
struct Seen {
    acks: AtomicU64,
    deliveries: AtomicU64,
    closed: AtomicU64,
}

struct Held {
    user: usize,
    sink: SplitSink<Socket, Frame>,
    seen: Arc<Seen>,
}

/// How far the server's RSS may move and still count as steady.
const STEADY_KIB: u64 = 512;
/// The longest wait for a steady RSS; past it, the last sample is taken.
const STEADY_AT_MOST: Duration = Duration::from_secs(30);

/// The server's RSS in KiB once it has stayed within [`STEADY_KIB`] for `steady`.
async fn settled_rss(pid: Option<u32>, steady: Duration) -> Option<u64> {
    let pid = pid?;
    let read = || crate::proc::sample(pid).map(|(_, rss)| rss);
    if steady.is_zero() {
        return read();
    }
    let deadline = Instant::now() + STEADY_AT_MOST;
    let mut steady_since = (Instant::now(), read()?);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = read()?;
        if now.abs_diff(steady_since.1) > STEADY_KIB {
            steady_since = (Instant::now(), now);
        }
        if steady_since.0.elapsed() >= steady || Instant::now() >= deadline {
            return Some(now);
        }
    }
}

/// Runs the scenario: connection `i` belongs to `users[i % users.len()]`.
///
/// # Errors
/// A base URL that is not `http://host:port`.
pub async fn run(base: &str, users: &[SignedIn], options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(!users.is_empty(), "idle needs at least one user");
    // Each connection is a descriptor here too.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let server = server_addr(base).await?;
    let rss_before = settled_rss(options.server_pid, options.steady).await;
    let started = Instant::now();
    let results: Vec<(usize, anyhow::Result<(Socket, usize)>)> = stream::iter(0..options.connections)
        .map(|i| {
            let user = i % users.len();
            let url = format!("ws://{server}/ws/chat/?token={}", users[user].token);
            async move { (i, open(server, i, &url).await.map(|s| (s, user))) }
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let mut errors = BTreeMap::new();
    let mut held: Vec<Held> = Vec::with_capacity(results.len());
    for (_, result) in results {
        match result {
            Ok((socket, user)) => {
                let (sink, stream) = socket.split();
                let seen = Arc::new(Seen::default());
                tokio::spawn(read(stream, seen.clone()));
                held.push(Held { user, sink, seen });
            }
            Err(e) => *errors.entry(format!("{e:#}")).or_insert(0) += 1,
        }
    }
    let opened = held.len();
    eprintln!("opened {opened}/{} connections in {connect_seconds:.1} s; holding", options.connections);
    tokio::time::sleep(options.hold).await;
    let rss_held = settled_rss(options.server_pid, options.steady).await;
    let open_after_hold = held.iter().filter(|h| h.seen.closed.load(Ordering::Relaxed) == 0).count();

    // Each sampled connection sends to the next user; every connection of that
    // user, and the sender's other connections, must receive it.
    let mut connections_of = vec![0u64; users.len()];
    for h in &held {
        connections_of[h.user] += 1;
    }
    let step = (opened / options.sample.max(1)).max(1);
    let (mut sent, mut expected) = (0, 0);
    for (n, h) in held.iter_mut().step_by(step).take(options.sample).enumerate() {
        let to = (h.user + 1) % users.len();
        let frame = json!({"type": "message", "recipient_id": users[to].id, "text": "idle: are you there?",
                           "client_msg_id": format!("idle-{n}")});
        if users[to].id != users[h.user].id && h.sink.send(Frame::text(frame.to_string())).await.is_ok() {
            sent += 1;
            expected += connections_of[to] + connections_of[h.user] - 1;
        }
    }
    let count = |held: &[Held]| -> (u64, u64) {
        held.iter().fold((0, 0), |(a, d), h| {
            (a + h.seen.acks.load(Ordering::Relaxed), d + h.seen.deliveries.load(Ordering::Relaxed))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (acked, delivered) = count(&held);
        if acked >= sent as u64 && delivered >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (acked, delivered) = count(&held);
    for mut h in held {
        let _ = h.sink.close().await;
    }
    let kib = |rss: u64| rss as f64 / 1024.0;
    Ok(Report {
        requested: options.connections,
        opened,
        failed: options.connections - opened,
        errors,
        connect_seconds,
        connections_per_second: opened as f64 / connect_seconds.max(1e-9),
        server_rss_before_mib: rss_before.map(kib),
        server_rss_held_mib: rss_held.map(kib),
        server_rss_per_connection_kib: match (rss_before, rss_held) {
            (Some(b), Some(h)) if opened > 0 => Some((h as f64 - b as f64) / opened as f64),
            _ => None,
        },
        open_after_hold,
        sample_sent: sent,
        sample_acked: acked,
        sample_expected_deliveries: expected,
        sample_delivered: delivered,
    })
}

/// The server's socket address, from `http://host:port`.
async fn server_addr(base: &str) -> anyhow::Result<SocketAddr> {
    let host = base.strip_prefix("http://").context("idle takes an http:// base URL")?;
    let host = host.trim_end_matches('/');
    tokio::net::lookup_host(host).await?.next().with_context(|| format!("resolving {host}"))
}

/// One authenticated connection, from a loopback source address of its own share
/// when the server is on loopback. Small buffers: this process holds thousands.
async fn open(server: SocketAddr, i: usize, url: &str) -> anyhow::Result<Socket> {
    let socket = if server.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let IpAddr::V4(ip) = server.ip()
        && ip.is_loopback()
    {
        let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / PER_SOURCE).unwrap_or(u8::MAX - 2));
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).context("binding a source address")?;
    }
    let tcp = socket.connect(server).await.context("connecting")?;
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (socket, _) =
        tokio_tungstenite::client_async_with_config(url, tcp, Some(config)).await.context("the WebSocket handshake")?;
    Ok(socket)
}

/// Reads a connection until it closes, counting acks and deliveries (and answering
/// the server's pings, which tungstenite does while reading).
async fn read(mut stream: futures::stream::SplitStream<Socket>, seen: Arc<Seen>) {
    while let Some(frame) = stream.next().await {
        let Ok(Frame::Text(text)) = frame else {
            if frame.is_err() || matches!(frame, Ok(Frame::Close(_))) {
                break;
            }
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        match event["type"].as_str() {
            Some("message_ack") => seen.acks.fetch_add(1, Ordering::Relaxed),
            Some("new_message") => seen.deliveries.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
    seen.closed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_steady_reading_waits_for_the_memory_to_stay_put() {
        let started = Instant::now();
        let rss = settled_rss(Some(std::process::id()), Duration::from_secs(1)).await;
        assert!(rss.is_some_and(|kib| kib > 0), "{rss:?}");
        assert!(started.elapsed() >= Duration::from_secs(1), "read before a second of steadiness");
        assert_eq!(settled_rss(None, Duration::from_secs(1)).await, None, "no server pid, no reading");
    }
}
