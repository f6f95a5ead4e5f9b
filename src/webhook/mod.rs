//! Webhook delivery: one node at a time (a lease in the database) takes the due
//! events from the outbox, renders them, signs them and POSTs them, threads side
//! by side and each thread's events in order. A 2xx is a delivery; anything else
//! is retried with doubling delays and jitter, until the attempts run out (the
//! event stays replayable from `/api/server/events/`). A crash between a POST and
//! its record sends that event again: delivery is at least once.
//!
//! A leader lease rather than a lease per event: it keeps each thread's order
//! across nodes with no coordination beyond one row, and one node's concurrent
//! POSTs are far more than a receiver takes.

pub mod sign;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::chat::Chat;
use crate::config::WebhookConfig;
use crate::domain::{ThreadId, Timestamp};
use crate::store::{Delivery, StoredEvent};

/// How long the lease lasts; the holder renews it every round, and a round stops
/// taking new events at half of it (a POST may still take its 10 s timeout).
const LEASE: Duration = Duration::from_secs(30);
/// How often a node without the lease looks whether it lapsed.
const STANDBY_POLL: Duration = Duration::from_secs(1);
/// How often the holder looks for new events when there were none.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Events taken per round: a round costs a lease renewal, a read and one commit
/// of its outcomes whatever its size, so larger rounds deliver more per second.
const ROUND: u32 = 1024;
/// How often the backlog (a count over the waiting events) is measured.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);
/// Threads whose events are POSTed at once.
const CONCURRENCY: usize = 16;
/// How often sent events past the retention window are deleted (more often when
/// the window itself is shorter).
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What an operator watches: deliveries by outcome, how long they take, how many
/// events wait and since when, and whether this node is the one delivering.
#[derive(Clone)]
struct WebhookMetrics {
    attempts: IntCounterVec,
    seconds: Histogram,
    pending: IntGauge,
    lag_seconds: IntGauge,
    leader: IntGauge,
}

impl WebhookMetrics {
    fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            attempts: IntCounterVec::new(
                Opts::new(
                    "webhook_attempts_total",
                    "Webhook delivery attempts by outcome (delivered, failed, gave_up)",
                ),
                &["outcome"],
            )?,
            seconds: Histogram::with_opts(HistogramOpts::new(
                "webhook_attempt_seconds",
                "Time from a webhook POST to its answer (or failure)",
            ))?,
            pending: IntGauge::new("webhook_pending_events", "Events recorded and not yet delivered")?,
            lag_seconds: IntGauge::new("webhook_lag_seconds", "Age of the oldest event not yet delivered")?,
            leader: IntGauge::new("webhook_leader", "1 while this node holds the delivery lease")?,
        };
        // Every outcome is shown from the start, at 0.
        for outcome in ["delivered", "failed", "gave_up"] {
            m.attempts.with_label_values(&[outcome]);
        }
        registry.register(Box::new(m.attempts.clone()))?;
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        Ok(m)
    }
}

/// When the periodic chores of the delivering node last ran.
struct Clock {
    pruned: Instant,
    measured: Instant,
    prune_every: Duration,
}

struct Dispatcher {
    chat: Chat,
    config: WebhookConfig,
    retention: Duration,
    client: reqwest::Client,
    /// This node's name in the lease.
    holder: String,
    metrics: WebhookMetrics,
}

/// Starts delivering as `holder` (a name that stays the same across restarts of
/// one node, so a node restarted after a crash takes its own lease back at once);
/// the task ends (and gives the lease up) when `stop` fires.
///
/// # Errors
/// A metric or the HTTP client that cannot be made.
pub fn spawn(
    chat: Chat,
    config: WebhookConfig,
    retention: Duration,
    holder: String,
    registry: &Registry,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .user_agent(concat!("confab-webhooks/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let metrics = WebhookMetrics::new(registry)?;
    let dispatcher = Dispatcher { chat, config, retention, client, holder, metrics };
    Ok(tokio::spawn(async move { dispatcher.run(stop).await }))
}

impl Dispatcher {
    async fn run(self, stop: CancellationToken) {
        let prune_every = PRUNE_EVERY.min(self.retention);
        let long_ago = Instant::now().checked_sub(prune_every.max(BACKLOG_EVERY)).unwrap_or_else(Instant::now);
        let mut clock = Clock { pruned: long_ago, measured: long_ago, prune_every };
        while !stop.is_cancelled() {
            // A round cut short by the stop may leave a POST unrecorded: that event
            // is sent again (at least once).
            let round = tokio::select! {
                () = stop.cancelled() => break,
                round = self.round(&mut clock) => round,
            };
            let pause = match round {
                Ok(Some(0)) => IDLE_POLL,
                Ok(Some(_)) => Duration::ZERO,
                Ok(None) => STANDBY_POLL,
                Err(e) => {
                    tracing::warn!(error = %crate::domain::error_chain(&e), "webhook delivery round failed; retrying");
                    STANDBY_POLL
                }
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        // Hand the lease over at once rather than after it lapses.
        let now = Timestamp::now();
        if self.metrics.leader.get() == 1 {
            let _ = self.chat.store().take_event_lease(&self.holder, now, now).await;
        }
    }

    /// One round: the lease, then the due events. `None` without the lease, else
    /// how many events were attempted.
    async fn round(&self, clock: &mut Clock) -> Result<Option<usize>, crate::store::StoreError> {
        let store = self.chat.store();
        let now = Timestamp::now();
        let until = now.saturating_add(LEASE);
        if !store.take_event_lease(&self.holder, now, until).await? {
            self.metrics.leader.set(0);
            return Ok(None);
        }
        self.metrics.leader.set(1);
        if clock.pruned.elapsed() >= clock.prune_every {
            clock.pruned = Instant::now();
            let before = now.saturating_sub(self.retention);
            let removed = store.prune_events(before).await?;
            if removed > 0 {
                tracing::info!(removed, "forgot webhook events past the retention window");
            }
        }
        let due = store.due_events(now, ROUND).await?;
        // Counting a large backlog takes a while: once a second, and whenever there
        // is nothing to send (so the gauge reaches 0 as soon as it is true).
        if due.is_empty() || clock.measured.elapsed() >= BACKLOG_EVERY {
            clock.measured = Instant::now();
            let backlog = store.event_backlog().await?;
            self.metrics.pending.set(backlog.pending);
            self.metrics.lag_seconds.set(backlog.oldest.map_or(0, |t| (now.millis() - t.millis()).max(0) / 1000));
        }
        let attempted = due.len();
        // Each thread's events in order, one after another; threads side by side.
        let mut threads: Vec<Vec<StoredEvent>> = Vec::new();
        let mut index: HashMap<ThreadId, usize> = HashMap::new();
        for event in due {
            let slot = *index.entry(event.thread_id).or_insert_with(|| {
                threads.push(Vec::new());
                threads.len() - 1
            });
            threads[slot].push(event);
        }
        let deadline = Instant::now() + LEASE / 2;
        let outcomes: Vec<Vec<(i64, Delivery)>> = futures::stream::iter(threads)
            .map(|events| self.deliver_in_order(events, deadline))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        // One commit for the round: a commit per event (an fsync on SQLite) was
        // what limited delivery. A crash before it sends the round again.
        store.record_deliveries(&outcomes.concat()).await?;
        Ok(Some(attempted))
    }

    /// A thread's events, stopping at the first that fails (the rest wait for it).
    async fn deliver_in_order(&self, events: Vec<StoredEvent>, deadline: Instant) -> Vec<(i64, Delivery)> {
        let mut outcomes = Vec::with_capacity(events.len());
        // Rendered together (two reads for the thread); should that fail, each is
        // rendered on its own, so the failure lands on the event that caused it.
        let mut bodies = self.chat.render_thread_events(&events).await.ok().map(Vec::into_iter);
        for event in events {
            if Instant::now() >= deadline {
                break;
            }
            let body = bodies.as_mut().and_then(Iterator::next);
            let outcome = self.attempt(&event, body).await;
            let delivered = outcome == Delivery::Delivered;
            outcomes.push((event.seq, outcome));
            if !delivered {
                break;
            }
        }
        outcomes
    }

    /// One POST of one event (rendered already, or now), and what to do next.
    async fn attempt(&self, event: &StoredEvent, body: Option<serde_json::Value>) -> Delivery {
        let started = Instant::now();
        let sent = self.post(event, body).await;
        self.metrics.seconds.observe(started.elapsed().as_secs_f64());
        let error = match sent {
            Ok(()) => {
                self.metrics.attempts.with_label_values(&["delivered"]).inc();
                return Delivery::Delivered;
            }
            Err(error) => error,
        };
        let attempts = event.attempts.saturating_add(1);
        if attempts >= self.config.max_attempts {
            self.metrics.attempts.with_label_values(&["gave_up"]).inc();
            tracing::error!(
                seq = event.seq,
                attempts,
                error,
                "gave up delivering a webhook event; it stays replayable"
            );
            return Delivery::GaveUp { error };
        }
        self.metrics.attempts.with_label_values(&["failed"]).inc();
        let delay = retry_delay(&self.config, attempts);
        tracing::warn!(
            seq = event.seq,
            attempts,
            retry_in_ms = delay.as_millis() as u64,
            error,
            "a webhook delivery failed"
        );
        Delivery::Retry { at: Timestamp::now().saturating_add(delay), error }
    }

    async fn post(&self, event: &StoredEvent, body: Option<serde_json::Value>) -> Result<(), String> {
        let body = match body {
            Some(body) => body,
            None => self.chat.render_event(event).await.map_err(|e| format!("rendering the event: {}", e.detail()))?,
        };
        let body = serde_json::to_vec(&body).map_err(|e| format!("serializing the event: {e}"))?;
        let t = Timestamp::now().secs();
        let signature = sign::signature(self.config.secret.expose().as_bytes(), t, &body);
        let answer = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Confab-Signature", signature)
            .header("Confab-Event-Id", event.id.to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| format!("no answer: {}", crate::domain::error_chain(&e.without_url())))?;
        let status = answer.status();
        // Read what the receiver answered, so its connection can carry the next POST.
        let _ = answer.bytes().await;
        if status.is_success() { Ok(()) } else { Err(format!("the receiver answered {status}")) }
    }
}

/// The wait after the `attempts`-th failure: the first retry's delay, doubled
/// each time up to the cap, plus up to a quarter more at random so that receivers
/// coming back are not hit by every node's retries at once. With the defaults
/// (30 s, doubling) the first 8 attempts span at least 63 minutes.
fn retry_delay(config: &WebhookConfig, attempts: u32) -> Duration {
    let doubled = config.first_retry.saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(20)));
    let base = doubled.min(config.max_retry);
    base.mul_f64(1.0 + rand::thread_rng().gen_range(0.0..0.25))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn eight_attempts_with_the_defaults_span_more_than_an_hour() {
        let config = WebhookConfig::new("http://x", Secret::new("s"));
        let waited: Duration = (1..8).map(|n| retry_delay(&config, n)).sum();
        assert!(waited >= Duration::from_secs(3600), "{waited:?}");
        assert!(retry_delay(&config, 40) <= config.max_retry.mul_f64(1.25));
    }
}
