//! A small load driver that keeps a log of what the server acknowledged, and the
//! check of that log against the store: acked, present, missing, duplicated, gaps.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::support::{TestApp, TestUser, WsFrame};

/// What one sender had acknowledged: its keys and their seqs, and what it was refused.
#[derive(Debug, Default)]
pub(crate) struct Acked {
    pub(crate) seqs: HashMap<String, i64>,
    /// Error codes of refused sends (`unavailable`…), by code.
    pub(crate) refused: HashMap<String, usize>,
}

/// What the senders of one load share: the test's stop, and how many senders have
/// had their first ack (the load is in full swing when all have).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) started: AtomicUsize,
}

/// Sends into `thread` over its own WebSocket with `window` unacknowledged messages,
/// until `shared.stop` is set or the connection ends (the server stopped or died); each key
/// is `<prefix>-<n>`. Never panics on a dead server: what was acked is the result.
pub(crate) async fn send_until_stopped(
    ws_url: String,
    thread: String,
    prefix: String,
    window: usize,
    shared: Arc<Shared>,
) -> Acked {
    let mut acked = Acked::default();
    let Ok((socket, _)) = tokio_tungstenite::connect_async(ws_url.as_str()).await else { return acked };
    let (mut sink, mut stream) = socket.split();
    let (mut next, mut in_flight, mut can_send) = (0usize, 0usize, true);
    loop {
        while can_send && in_flight < window && !shared.stop.load(Ordering::Relaxed) {
            let frame = json!({"type": "message", "thread_id": thread, "text": format!("m{next}"),
                "client_msg_id": format!("{prefix}-{next}")});
            if sink.send(WsFrame::text(frame.to_string())).await.is_err() {
                // The server is closing: the answers already on their way still count.
                can_send = false;
                break;
            }
            next += 1;
            in_flight += 1;
        }
        if in_flight == 0 {
            return acked;
        }
        let Ok(Some(Ok(frame))) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await else {
            return acked;
        };
        let WsFrame::Text(text) = frame else {
            if matches!(frame, WsFrame::Close(_)) {
                return acked;
            }
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        match event["type"].as_str() {
            Some("message_ack") => {
                if acked.seqs.is_empty() {
                    shared.started.fetch_add(1, Ordering::Relaxed);
                }
                let key = event["client_msg_id"].as_str().unwrap_or_default().to_owned();
                acked.seqs.insert(key, event["message"]["seq"].as_i64().unwrap_or(-1));
                in_flight -= 1;
            }
            Some("error") if event["client_msg_id"].is_string() => {
                *acked.refused.entry(event["error"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
                in_flight -= 1;
            }
            _ => {}
        }
    }
}

/// Every message of `thread`, read over REST page by page, oldest first.
pub(crate) async fn stored(app: &TestApp, reader: &TestUser, thread: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/api/chat/threads/{thread}/messages/?after_seq={after}&limit=200");
        let (status, body) = app.get(&path, &reader.token).await;
        assert_eq!(status, 200, "{body}");
        let page = body["results"].as_array().expect("results").clone();
        let Some(last) = page.last() else { return all };
        after = last["seq"].as_i64().expect("seq");
        all.extend(page);
    }
}

/// Checks an acked log against what the store holds for the thread; returns
/// (acked, stored) after asserting that nothing acked is missing, nothing is
/// stored twice, each acked key has the seq its ack named, and seqs have no gap.
pub(crate) fn check(acked: &Acked, stored: &[Value]) -> (usize, usize) {
    let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "seqs without a gap");
    let mut by_key: HashMap<&str, i64> = HashMap::new();
    let mut duplicated = HashSet::new();
    for m in stored {
        if let Some(key) = m["client_msg_id"].as_str()
            && by_key.insert(key, m["seq"].as_i64().expect("seq")).is_some()
        {
            duplicated.insert(key);
        }
    }
    assert!(duplicated.is_empty(), "stored twice: {duplicated:?}");
    let missing: Vec<&String> = acked.seqs.keys().filter(|k| !by_key.contains_key(k.as_str())).collect();
    assert!(missing.is_empty(), "{} acked but missing, e.g. {:?}", missing.len(), missing.first());
    for (key, seq) in &acked.seqs {
        assert_eq!(by_key.get(key.as_str()), Some(seq), "{key} is stored with the seq its ack named");
    }
    (acked.seqs.len(), stored.len())
}

/// What `user` recovers with `sync` from seq 0 of `thread`: every message, in order.
pub(crate) async fn synced(app: &TestApp, user: &TestUser, thread: &str) -> Vec<Value> {
    let mut ws = app.ws(user).await;
    ws.send(json!({"type": "sync", "threads": {thread: 0}})).await;
    let mut got = Vec::new();
    loop {
        let event = ws.next().await;
        match event["type"].as_str() {
            Some("synced") => return got,
            Some("new_message") => got.push(event["message"].clone()),
            _ => {}
        }
    }
}
