//! A webhook receiver of the test's own on 127.0.0.1:0: it answers with the status
//! the test sets, and records every delivery with its `Confab-Signature` checked
//! independently of the server's code.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::support::WAIT;

pub(crate) const WEBHOOK_SECRET: &str = "webhook-secret-webhook-secret-webhook!";

#[derive(Default)]
struct Shared {
    status: AtomicU16,
    /// Every POST, answered 2xx or not: (status answered, body).
    seen: Mutex<Vec<(u16, Value)>>,
}

pub(crate) struct Receiver {
    pub(crate) url: String,
    shared: Arc<Shared>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start() -> Self {
        let shared = Arc::new(Shared { status: AtomicU16::new(200), ..Shared::default() });
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared, _server: server }
    }

    /// What the next POSTs are answered.
    pub(crate) fn answer(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// The events answered 2xx, in arrival order.
    pub(crate) fn delivered(&self) -> Vec<Value> {
        let seen = self.shared.seen.lock().expect("lock");
        seen.iter().filter(|(s, _)| (200..300).contains(s)).map(|(_, b)| b.clone()).collect()
    }

    /// POSTs answered with anything else.
    pub(crate) fn refused(&self) -> usize {
        self.shared.seen.lock().expect("lock").iter().filter(|(s, _)| !(200..300).contains(s)).count()
    }

    /// Waits until `n` deliveries arrived (and a moment more, to see any extra).
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        while self.delivered().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} events delivered: {:?}",
                self.delivered().len(),
                self.delivered().iter().map(|e| (e["seq"].clone(), e["type"].clone())).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.delivered()
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = headers.get("confab-signature").and_then(|v| v.to_str().ok()).expect("a Confab-Signature header");
    let (t, v1) = header.split_once(",v1=").expect("t=…,v1=…");
    let t = t.strip_prefix("t=").expect("t=");
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    mac.verify_slice(&hex::decode(v1).expect("hex")).expect("the signature verifies");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().expect("unix seconds");
    assert!((0..=30).contains(&age), "signed {age} s ago");
    let event: Value = serde_json::from_slice(&body).expect("JSON");
    let status = shared.status.load(Ordering::SeqCst);
    shared.seen.lock().expect("lock").push((status, event));
    StatusCode::from_u16(status).expect("a status")
}

/// Checks the contract's promises over a set of deliveries and answers the events
/// by id: every seq in `1..=n` arrived, none of them twice unless `repeats` allows
/// it, and each thread's events arrived in seq order.
pub(crate) fn check(delivered: &[Value], n: i64, repeats: bool) -> std::collections::BTreeMap<i64, Value> {
    let mut by_seq = std::collections::BTreeMap::new();
    let mut last_in_thread: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for event in delivered {
        let seq = event["seq"].as_i64().expect("seq");
        let thread = thread_of(event);
        let last = last_in_thread.entry(thread.clone()).or_insert(0);
        assert!(seq > *last || repeats, "thread {thread}: seq {seq} after {last}");
        *last = (*last).max(seq);
        if by_seq.insert(seq, event.clone()).is_some() {
            assert!(repeats, "event {seq} delivered twice");
        }
    }
    assert_eq!(by_seq.keys().copied().collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>(), "every event, once");
    by_seq
}

pub(crate) fn thread_of(event: &Value) -> String {
    let data = &event["data"];
    let id = data["message"]["thread_id"].as_str().or(data["thread"]["id"].as_str()).or(data["thread_id"].as_str());
    id.expect("an event names its thread").to_owned()
}
