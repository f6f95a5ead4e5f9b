//! The `pairs` scenario: users in pairs, one connection each, every user sending
//! `message` frames by `recipient_id` to its partner. Closed loop: a window of
//! unacknowledged messages per user, the next sent as each ack comes. Open loop
//! (`rate`): every user sends on a fixed schedule whatever the answers, so the
//! latencies are those of a server under a given load, not of its queue at
//! saturation.
//!
//! Each text carries its sender, its number and its send time, so the partner's
//! connection measures delivery latency and the run can tell, per message, whether
//! what was acked was delivered (within a grace period) and stored (read back over
//! REST for a sample of pairs). Only messages sent inside the measured window
//! (after the warm-up, before the end) count.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::stats::Latency;
use crate::users::SignedIn;

/// How a `pairs` run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Unacknowledged messages per user (closed loop).
    pub window: usize,
    /// Messages per second across all users (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// How long after the end a delivery may still arrive before it counts as lost.
    pub grace: Duration,
    /// Pairs whose threads are read back over REST to check that what was acked is stored.
    pub verify_pairs: usize,
    /// The server's process, to sample its CPU and memory.
    pub server_pid: Option<u32>,
    /// Idempotency keys that begin with 16 random-looking hex digits, as a client's
    /// UUID v4 would, instead of growing within each user's run: the server's key
    /// index then takes every insert at a random place (`Keys::key`).
    pub random_keys: bool,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub users: usize,
    pub window: usize,
    /// The open loop's offered messages/s; absent for a closed loop.
    pub offered_per_second: Option<f64>,
    pub seconds: f64,
    pub acked: u64,
    pub delivered: u64,
    pub acked_per_second: f64,
    pub delivered_per_second: f64,
    /// Send to the partner's receipt.
    pub delivery_ms: Latency,
    /// Send to the sender's ack.
    pub ack_ms: Latency,
    pub errors: BTreeMap<String, u64>,
    /// Acked, but never delivered to the partner within the grace period.
    pub lost_undelivered: u64,
    /// Acked, but not in the thread's history when read back (for the verified pairs).
    pub lost_in_store: Option<u64>,
    pub verified_messages: u64,
    pub server_cpu_percent: Option<f64>,
    pub server_rss_mib: Option<f64>,
}

/// One user's side of a run.
#[derive(Debug, Default)]
struct Side {
    /// (message number, message id) of this user's acked sends in the window.
    acked: Vec<(u64, String)>,
    /// (sender index, message number) of the deliveries in the window.
    delivered: Vec<(usize, u64)>,
    delivery_us: Vec<u64>,
    ack_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// Runs the scenario over `users` (paired 0–1, 2–3, …; an odd last one sits out).
/// With several servers (nodes of one deployment), user `i` connects to
/// `bases[i % n]`, so with two nodes every pair spans both.
///
/// # Errors
/// No server, or a connection that cannot be opened.
pub async fn run(bases: &[String], users: &[SignedIn], options: &Options) -> anyhow::Result<Report> {
    let base = bases.first().context("no server to run against")?.as_str();
    let paired = users.len() / 2 * 2;
    let epoch = Instant::now();
    // Keys unique to this run: a later run over the same users (history's preload
    // runs, a second benchmark) must not reuse an earlier run's keys.
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let mut sockets = Vec::with_capacity(paired);
    for (i, user) in users[..paired].iter().enumerate() {
        let ws_base = bases[i % bases.len()].replacen("http", "ws", 1);
        let url = format!("{ws_base}/ws/chat/?token={}", user.token);
        // `true`: TCP_NODELAY, so a send is not held back waiting for an ACK.
        let config = WebSocketConfig::default().read_buffer_size(crate::READ_BUFFER);
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .context("opening a WebSocket")?;
        sockets.push(socket);
    }
    let start = epoch + Duration::from_millis(50);
    let measure_from = start + options.warmup;
    let stop = measure_from + options.duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let partner = users[i ^ 1].id;
            let pace = match options.rate {
                // Users start at evenly spread phases so the offered load is smooth.
                Some(rate) => {
                    let period = Duration::from_secs_f64(paired as f64 / rate.max(0.001));
                    Pace::Open { period, phase: period.mul_f64(i as f64 / paired as f64) }
                }
                None => Pace::Closed { window: options.window.max(1) },
            };
            let grace = options.grace;
            let keys = Keys { run_id, me: i, random: options.random_keys };
            tokio::spawn(
                async move { one_user(socket, keys, partner, pace, epoch, start, measure_from, stop, grace).await },
            )
        })
        .collect();
    let cpu_before = sample_at(options.server_pid, measure_from).await;
    let cpu_after = sample_at(options.server_pid, stop).await;
    let mut sides = Vec::with_capacity(tasks.len());
    for task in tasks {
        sides.push(task.await.context("a user's task")??);
    }

    let seconds = options.duration.as_secs_f64();
    let delivered: HashSet<(usize, u64)> = sides.iter().flat_map(|s| s.delivered.iter().copied()).collect();
    let mut lost_undelivered = 0;
    for (i, side) in sides.iter().enumerate() {
        lost_undelivered += side.acked.iter().filter(|(n, _)| !delivered.contains(&(i, *n))).count() as u64;
    }
    let (lost_in_store, verified_messages) = verify(base, users, &sides, options.verify_pairs).await;
    let mut errors = BTreeMap::new();
    for side in &sides {
        for (code, n) in &side.errors {
            *errors.entry(code.clone()).or_insert(0) += n;
        }
    }
    let acked = sides.iter().map(|s| s.acked.len() as u64).sum();
    let delivered_count = sides.iter().map(|s| s.delivered.len() as u64).sum();
    let (server_cpu_percent, server_rss_mib) = match (cpu_before, cpu_after) {
        (Some((c0, _)), Some((c1, rss))) => (Some((c1 - c0) / seconds * 100.0), Some(rss as f64 / 1024.0)),
        _ => (None, None),
    };
    Ok(Report {
        users: paired,
        window: options.window,
        offered_per_second: options.rate,
        seconds,
        acked,
        delivered: delivered_count,
        acked_per_second: acked as f64 / seconds,
        delivered_per_second: delivered_count as f64 / seconds,
        delivery_ms: Latency::of(sides.iter_mut().flat_map(|s| std::mem::take(&mut s.delivery_us)).collect()),
        ack_ms: Latency::of(sides.iter_mut().flat_map(|s| std::mem::take(&mut s.ack_us)).collect()),
        errors,
        lost_undelivered,
        lost_in_store,
        verified_messages,
        server_cpu_percent,
        server_rss_mib,
    })
}

async fn sample_at(pid: Option<u32>, at: Instant) -> Option<(f64, u64)> {
    let pid = pid?;
    tokio::time::sleep_until(at).await;
    crate::proc::sample(pid)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// When a user sends.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// The next message as each answer comes, `window` unanswered at a time.
    Closed { window: usize },
    /// One message every `period`, the first after `phase`.
    Open { period: Duration, phase: Duration },
}

/// How one user's idempotency keys are made.
#[derive(Debug, Clone, Copy)]
struct Keys {
    run_id: u128,
    me: usize,
    random: bool,
}

impl Keys {
    /// `<run>-<user>-<n>`, or the same behind 16 hex digits that spread the keys over
    /// the whole key space; either way `n` is what follows the last `-` ([`key_number`]).
    fn key(self, n: u64) -> String {
        let Self { run_id, me, random } = self;
        if random {
            let spread = splitmix64((me as u64) << 40 ^ n);
            format!("{spread:016x}-{run_id}-{me}-{n}")
        } else {
            format!("{run_id}-{me}-{n}")
        }
    }
}

/// SplitMix64's output function: a bijection of `u64` (so unique inputs give unique
/// keys) whose outputs follow no order of its inputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[expect(clippy::too_many_arguments, reason = "one user's share of the run's settings")]
async fn one_user(
    socket: Socket,
    keys: Keys,
    partner: i64,
    pace: Pace,
    epoch: Instant,
    start: Instant,
    measure_from: Instant,
    stop: Instant,
    grace: Duration,
) -> anyhow::Result<Side> {
    let me = keys.me;
    let (mut sink, mut stream) = socket.split();
    let mut side = Side::default();
    let mut next: u64 = 0;
    let mut sent_at: BTreeMap<u64, Instant> = BTreeMap::new();
    tokio::time::sleep_until(start).await;
    // One send time, in whole microseconds, goes both into `sent_at` (the ack's window)
    // and into the text (the delivery's window): two readings of the clock, or one
    // rounded and one not, could fall either side of `measure_from` or `stop`, and a
    // message counted as acked but not as sent would read as lost.
    let stamp = || epoch + Duration::from_micros(epoch.elapsed().as_micros() as u64);
    let frame = |n: u64, at: Instant| {
        let micros = at.duration_since(epoch).as_micros();
        let text = format!("lg:{me}:{n}:{micros}");
        Frame::text(
            json!({"type": "message", "recipient_id": partner, "text": text, "client_msg_id": keys.key(n)}).to_string(),
        )
    };
    let mut ticks = match pace {
        Pace::Closed { window } => {
            for _ in 0..window {
                let at = stamp();
                sent_at.insert(next, at);
                sink.feed(frame(next, at)).await?;
                next += 1;
            }
            sink.flush().await?;
            None
        }
        Pace::Open { period, phase } => Some(schedule(start + phase, period)),
    };
    let end = stop + grace;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = tick(&mut ticks), if Instant::now() < stop => {
                let at = stamp();
                sent_at.insert(next, at);
                sink.send(frame(next, at)).await?;
                next += 1;
                continue;
            }
            () = tokio::time::sleep_until(end) => break,
        };
        let Some(Ok(Frame::Text(text))) = event else {
            if matches!(event, Some(Ok(_))) {
                continue;
            }
            break;
        };
        let now = Instant::now();
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        let mut answered = None;
        match event["type"].as_str() {
            Some("message_ack") => {
                let n = key_number(&event["client_msg_id"]);
                if let Some(n) = n
                    && let Some(at) = sent_at.remove(&n)
                {
                    if at >= measure_from && at < stop {
                        side.ack_us.push(now.duration_since(at).as_micros() as u64);
                        let id = event["message"]["id"].as_str().unwrap_or_default().to_owned();
                        side.acked.push((n, id));
                    }
                    answered = Some(n);
                }
            }
            Some("new_message") => {
                let text = event["message"]["text"].as_str().unwrap_or_default();
                if let Some((sender, n, micros)) = parse_text(text) {
                    let sent = epoch + Duration::from_micros(micros);
                    if sent >= measure_from && sent < stop {
                        let since = epoch.elapsed().as_micros() as u64;
                        side.delivery_us.push(since.saturating_sub(micros));
                        side.delivered.push((sender, n));
                    }
                }
            }
            Some("error") => {
                *side.errors.entry(event["error"].as_str().unwrap_or("unknown").to_owned()).or_insert(0) += 1;
                if let Some(n) = key_number(&event["client_msg_id"])
                    && sent_at.remove(&n).is_some()
                {
                    answered = Some(n);
                }
            }
            _ => {}
        }
        // Closed loop: one answered, one more sent; the window stays full until the end.
        if answered.is_some() && ticks.is_none() && now < stop {
            let at = stamp();
            sent_at.insert(next, at);
            sink.send(frame(next, at)).await?;
            next += 1;
        }
    }
    let _ = sink.close().await;
    Ok(side)
}

/// An open-loop user's send times: `first`, then every `period`. A late tick is
/// sent late, not made up in a burst, and the next one keeps its time: the
/// schedule is the load. (`Delay`, used before, moved every later tick by the
/// lateness, so users made late together, by one burst of deliveries to read,
/// sent together from then on, and the load grew burstier as the run went on:
/// `docs/benchmarks.md`, 2026-12-06, second session.)
fn schedule(first: Instant, period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(first, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticks
}

/// The open loop's next tick; never, for a closed loop.
async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn key_number(key: &Value) -> Option<u64> {
    key.as_str()?.rsplit_once('-')?.1.parse().ok()
}

/// `lg:<sender>:<n>:<micros>`.
fn parse_text(text: &str) -> Option<(usize, u64, u64)> {
    let mut parts = text.strip_prefix("lg:")?.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Reads back the first `pairs` pairs' threads over REST and counts the acked
/// messages that are not there; `None` when the server has no history route.
async fn verify(base: &str, users: &[SignedIn], sides: &[Side], pairs: usize) -> (Option<u64>, u64) {
    if pairs == 0 {
        return (None, 0);
    }
    let client = reqwest::Client::new();
    let (mut missing, mut checked) = (0u64, 0u64);
    for pair in 0..pairs.min(sides.len() / 2) {
        let (a, b) = (2 * pair, 2 * pair + 1);
        let Some(stored) = history(&client, base, &users[a], users[b].id).await else { return (None, checked) };
        for side in [&sides[a], &sides[b]] {
            for (_, id) in &side.acked {
                checked += 1;
                if !stored.contains(id) {
                    missing += 1;
                }
            }
        }
    }
    (Some(missing), checked)
}

/// Every message id of the direct conversation of `me` and `other`.
async fn history(client: &reqwest::Client, base: &str, me: &SignedIn, other: i64) -> Option<HashSet<String>> {
    let mut ids = HashSet::new();
    let mut after = 0i64;
    loop {
        let url = format!("{base}/api/messaging/messages/?user_id={other}&after_seq={after}&limit=200");
        let page: Value =
            client.get(url).bearer_auth(&me.token).send().await.ok()?.error_for_status().ok()?.json().await.ok()?;
        let results = page["results"].as_array()?;
        for m in results {
            ids.insert(m["id"].as_str()?.to_owned());
            after = after.max(m["seq"].as_i64()?);
        }
        if !page["has_more"].as_bool()? || results.is_empty() {
            return Some(ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_keys_carry_what_the_run_counts() {
        assert_eq!(parse_text("lg:7:42:123456"), Some((7, 42, 123_456)));
        assert_eq!(parse_text("hello"), None);
        assert_eq!(key_number(&json!("3-17")), Some(17));
        assert_eq!(key_number(&json!(null)), None);
    }

    #[test]
    fn random_keys_are_unique_out_of_order_and_carry_their_number() {
        let mut seen = HashSet::new();
        let mut in_order = 0;
        let mut last = String::new();
        for me in 0..50 {
            let keys = Keys { run_id: 9, me, random: true };
            for n in 0..200 {
                let key = keys.key(n);
                assert_eq!(key_number(&json!(key)), Some(n));
                in_order += usize::from(key > last);
                last.clone_from(&key);
                assert!(seen.insert(key), "unique");
            }
        }
        // Sequential keys of one user grow; these rise about half the time.
        assert!((4_000..6_000).contains(&in_order), "{in_order} of 10,000 rose");
        assert_eq!(Keys { run_id: 9, me: 3, random: false }.key(5), "9-3-5");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_send_does_not_move_the_ones_after_it() {
        let start = Instant::now();
        let period = Duration::from_millis(10);
        let mut ticks = schedule(start + period, period);
        let mut sent = Vec::new();
        for n in 0..4 {
            ticks.tick().await;
            sent.push(start.elapsed());
            if n == 1 {
                // Busy past the next send time (by more than the 5 ms tokio lets
                // pass as on time), as when reading a burst of deliveries.
                tokio::time::sleep(Duration::from_millis(17)).await;
            }
        }
        let ms = |m| Duration::from_millis(m);
        assert_eq!(sent, [ms(10), ms(20), ms(37), ms(40)], "sent late once, then on time");
    }
}
