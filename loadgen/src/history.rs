//! The `history` scenario: shows that the cost of sending and of reading history
//! does not grow with what is stored. It preloads messages with the `pairs` load
//! until the store holds at least the asked number, then runs `pairs` again for
//! the send throughput, then reads history pages of sampled pairs (the newest page,
//! then pages before random points) one at a time, for their latency.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::pairs;
use crate::stats::Latency;
use crate::users::SignedIn;

/// How a `history` run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Messages to store before measuring.
    pub preload: u64,
    /// The measured send run (its window, duration, and so on).
    pub send: pairs::Options,
    /// History pages read, and their size.
    pub pages: usize,
    pub page_limit: u32,
}

/// What a `history` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub preloaded: u64,
    pub preload_seconds: f64,
    /// The send run with the history in place.
    pub send: pairs::Report,
    pub page_ms: Latency,
    pub page_errors: u64,
}

/// Runs the scenario over `users`, against `bases` as `pairs` does.
///
/// # Errors
/// A connection that cannot be opened.
pub async fn run(bases: &[String], users: &[SignedIn], options: &Options) -> anyhow::Result<Report> {
    let base = bases.first().context("no server to run against")?;
    let started = Instant::now();
    let mut preloaded = 0;
    let chunk = pairs::Options {
        warmup: Duration::ZERO,
        // Chunks no longer than the measured run (short in tests), at most 10 s.
        duration: options.send.duration.min(Duration::from_secs(10)),
        grace: options.send.grace.min(Duration::from_secs(2)),
        verify_pairs: 0,
        rate: None,
        ..options.send.clone()
    };
    while preloaded < options.preload {
        let report = pairs::run(bases, users, &chunk).await?;
        anyhow::ensure!(report.acked > 0, "the server acknowledged nothing while preloading");
        preloaded += report.acked;
        eprintln!("preloaded {preloaded}/{} messages", options.preload);
    }
    let preload_seconds = started.elapsed().as_secs_f64();
    let send = pairs::run(bases, users, &options.send).await?;
    let (page_ms, page_errors) = read_pages(base, users, options).await;
    Ok(Report { preloaded, preload_seconds, send, page_ms, page_errors })
}

/// Reads `options.pages` pages, one at a time: for each sampled pair the newest
/// page, then a page before a point spread through its history.
async fn read_pages(base: &str, users: &[SignedIn], options: &Options) -> (Latency, u64) {
    let client = reqwest::Client::new();
    let pairs = (users.len() / 2).max(1);
    let (mut micros, mut errors) = (Vec::with_capacity(options.pages), 0);
    let mut heads: Vec<Option<i64>> = vec![None; pairs];
    for n in 0..options.pages {
        let pair = n % pairs;
        let (me, other) = (&users[2 * pair], &users[2 * pair + 1]);
        let limit = options.page_limit;
        let url = match heads[pair] {
            // Before a point that walks down through the history, page after page.
            Some(head) if head > 1 => {
                let before = head - (n / pairs) as i64 * i64::from(limit) % head;
                format!(
                    "{base}/api/messaging/messages/?user_id={}&before_seq={}&limit={limit}",
                    other.id,
                    before.max(2)
                )
            }
            _ => format!("{base}/api/messaging/messages/?user_id={}&limit={limit}", other.id),
        };
        let at = Instant::now();
        let page = client.get(url).bearer_auth(&me.token).send().await.and_then(reqwest::Response::error_for_status);
        let body: Option<Value> = match page {
            Ok(res) => res.json().await.ok(),
            Err(_) => None,
        };
        micros.push(at.elapsed().as_micros() as u64);
        match body.as_ref().and_then(|b| b["results"].as_array()) {
            Some(results) => {
                if heads[pair].is_none() {
                    heads[pair] = results.iter().filter_map(|m| m["seq"].as_i64()).max();
                }
            }
            None => errors += 1,
        }
    }
    (Latency::of(micros), errors)
}
