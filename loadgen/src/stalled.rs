//! The `stalled` scenario: many connections that stop reading while others send to
//! them, to show that the server's memory stays within its configured bounds and
//! that it closes the stalled connections (its write timeout) instead of buffering
//! for them forever.
//!
//! Users come in pairs: the even one holds `per_user` connections with a small
//! receive buffer and never reads them; the odd one sends to it over a WebSocket
//! of its own (a window of unacknowledged messages) for the flood's duration. The
//! server's RSS is sampled all along; its `/metrics` tell how many connections it
//! still holds and why it closed the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::users::SignedIn;

/// How a `stalled` run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stalled connections per stalled user.
    pub per_user: usize,
    /// Seconds of sending to the stalled users.
    pub flood: Duration,
    /// Characters per message.
    pub text_len: usize,
    /// Unacknowledged messages per sender.
    pub window: usize,
    /// Seconds after the flood before the server's connections are counted.
    pub settle: Duration,
    pub server_pid: Option<u32>,
}

/// What a `stalled` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub stalled_connections: usize,
    pub senders: usize,
    pub messages_acked: u64,
    pub send_errors: BTreeMap<String, u64>,
    pub server_rss_before_mib: Option<f64>,
    pub server_rss_peak_mib: Option<f64>,
    pub server_rss_after_mib: Option<f64>,
    /// (peak − before) / stalled connections.
    pub server_rss_peak_per_stalled_kib: Option<f64>,
    /// The server's open WebSocket connections after the settle time (the senders'
    /// are closed by then): the stalled ones it still holds.
    pub server_connections_after: Option<f64>,
    pub server_write_timeout_closes: Option<f64>,
    pub server_slow_consumer_closes: Option<f64>,
}

/// Runs the scenario over `users` (pairs: even ones stall, odd ones send).
///
/// # Errors
/// A base URL that is not `http://host:port`, or a connection that cannot open.
pub async fn run(base: &str, users: &[SignedIn], options: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(users.len() >= 2, "stalled needs at least one pair of users");
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let host = base.strip_prefix("http://").context("stalled takes an http:// base URL")?.trim_end_matches('/');
    let server = tokio::net::lookup_host(host).await?.next().with_context(|| format!("resolving {host}"))?;
    let rss = || options.server_pid.and_then(crate::proc::sample).map(|(_, rss)| rss);
    let rss_before = rss();

    let mut stalled = Vec::new();
    for pair in users.chunks_exact(2) {
        for _ in 0..options.per_user {
            let socket = TcpSocket::new_v4()?;
            // A small window: the server's writes stall after a few KiB.
            socket.set_recv_buffer_size(4096)?;
            let tcp = socket.connect(server).await.context("connecting")?;
            let url = format!("ws://{server}/ws/chat/?token={}", pair[0].token);
            let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.context("the WebSocket handshake")?;
            stalled.push(ws); // held, never read
        }
    }
    eprintln!("{} stalled connections open; flooding them for {:?}", stalled.len(), options.flood);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for pair in users.chunks_exact(2) {
        let url = format!("ws://{server}/ws/chat/?token={}", pair[1].token);
        let (to, text) = (pair[0].id, "s".repeat(options.text_len));
        let (stop, acked, window) = (stop.clone(), acked.clone(), options.window.max(1));
        senders.push(tokio::spawn(async move { send(url, to, text, window, &stop, &acked).await }));
    }
    let started = Instant::now();
    let mut peak = rss_before;
    while started.elapsed() < options.flood {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss());
    }
    stop.store(true, Ordering::Relaxed);
    let mut send_errors = BTreeMap::new();
    for sender in senders {
        for (code, n) in sender.await.unwrap_or_default() {
            *send_errors.entry(code).or_insert(0) += n;
        }
    }
    let settled = Instant::now();
    while settled.elapsed() < options.settle {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss());
    }
    let metrics = metrics(base).await;
    let rss_after = rss();
    drop(stalled);
    let kib = |rss: u64| rss as f64 / 1024.0;
    let stalled_connections = users.len() / 2 * options.per_user;
    Ok(Report {
        stalled_connections,
        senders: users.len() / 2,
        messages_acked: acked.load(Ordering::Relaxed),
        send_errors,
        server_rss_before_mib: rss_before.map(kib),
        server_rss_peak_mib: peak.map(kib),
        server_rss_after_mib: rss_after.map(kib),
        server_rss_peak_per_stalled_kib: match (rss_before, peak) {
            (Some(b), Some(p)) if stalled_connections > 0 => Some((p as f64 - b as f64) / stalled_connections as f64),
            _ => None,
        },
        server_connections_after: metric(&metrics, "confab_ws_connections"),
        server_write_timeout_closes: metric(&metrics, "confab_ws_write_timeout_closes_total"),
        server_slow_consumer_closes: metric(&metrics, "confab_ws_slow_consumer_closes_total"),
    })
}

/// Sends to `to` with `window` in flight until `stop`; the errors it got, by code.
async fn send(
    url: String,
    to: i64,
    text: String,
    window: usize,
    stop: &AtomicBool,
    acked: &AtomicU64,
) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
        errors.insert("connect".to_owned(), 1);
        return errors;
    };
    let (mut sink, mut stream) = ws.split();
    let (mut n, mut in_flight) = (0u64, 0usize);
    loop {
        while in_flight < window && !stop.load(Ordering::Relaxed) {
            let frame =
                json!({"type": "message", "recipient_id": to, "text": text, "client_msg_id": format!("st-{n}")});
            if sink.send(Frame::text(frame.to_string())).await.is_err() {
                return errors;
            }
            n += 1;
            in_flight += 1;
        }
        if in_flight == 0 {
            let _ = sink.close().await;
            return errors;
        }
        let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await else {
            return errors;
        };
        let Frame::Text(text) = frame else { continue };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(text.as_str()) else { continue };
        match event["type"].as_str() {
            Some("message_ack") => {
                acked.fetch_add(1, Ordering::Relaxed);
                in_flight -= 1;
            }
            Some("error") => {
                *errors.entry(event["error"].as_str().unwrap_or("?").to_owned()).or_insert(0) += 1;
                in_flight -= 1;
            }
            _ => {}
        }
    }
}

async fn metrics(base: &str) -> String {
    let url = format!("{}/metrics", base.trim_end_matches('/'));
    match reqwest::get(url).await {
        Ok(res) => res.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
