//! The baseline: a bare in-memory WebSocket relay with just enough of the wire
//! contract for `pairs` (sign-up, sign-in, `message` by `recipient_id`, `message_ack`,
//! `new_message`). It stores nothing and checks nothing, so it shows what the
//! machine, the network stack and the load generator can do; Confab's figures are
//! read as a ratio of it, measured in the same session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Default)]
struct Relay {
    next_id: AtomicI64,
    next_seq: AtomicU64,
    users: Mutex<HashMap<String, i64>>,
    connections: Mutex<HashMap<i64, Vec<mpsc::Sender<String>>>>,
    /// For tests of the load generator: drop every n-th delivery.
    drop_every: Option<u64>,
    deliveries: AtomicU64,
}

/// Serves the relay on `listener` until the process ends. `drop_every` drops every
/// n-th delivery (while still acking it), for testing that loss is counted.
///
/// # Errors
/// The listener fails.
pub async fn serve(listener: tokio::net::TcpListener, drop_every: Option<u64>) -> std::io::Result<()> {
    let relay = Arc::new(Relay { drop_every, next_id: AtomicI64::new(1), ..Relay::default() });
    let app = Router::new()
        .route("/api/auth/register/", post(register))
        .route("/api/auth/token/", post(sign_in))
        .route("/ws/chat/", get(connect))
        .with_state(relay);
    // As Confab's server does: small frames go out at once, not after an ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

async fn register(State(relay): State<Arc<Relay>>, Json(body): Json<Value>) -> Response {
    let name = body["username"].as_str().unwrap_or_default().to_owned();
    let mut users = relay.users.lock().unwrap_or_else(PoisonError::into_inner);
    if users.contains_key(&name) {
        return (StatusCode::CONFLICT, Json(json!({"error": "conflict", "detail": "taken"}))).into_response();
    }
    let id = relay.next_id.fetch_add(1, Ordering::Relaxed);
    users.insert(name.clone(), id);
    (StatusCode::CREATED, Json(json!({"user": {"id": id, "username": name}}))).into_response()
}

async fn sign_in(State(relay): State<Arc<Relay>>, Json(body): Json<Value>) -> Response {
    let name = body["username"].as_str().unwrap_or_default();
    let id = relay.users.lock().unwrap_or_else(PoisonError::into_inner).get(name).copied();
    match id {
        Some(id) => {
            Json(json!({"access": id.to_string(), "refresh": "", "user": {"id": id, "username": name}})).into_response()
        }
        None => {
            (StatusCode::UNAUTHORIZED, Json(json!({"error": "unauthorized", "detail": "no such user"}))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct Token {
    token: i64,
}

async fn connect(State(relay): State<Arc<Relay>>, Query(token): Query<Token>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.read_buffer_size(crate::READ_BUFFER).on_upgrade(move |socket| session(relay, token.token, socket))
}

async fn session(relay: Arc<Relay>, me: i64, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    relay.connections.lock().unwrap_or_else(PoisonError::into_inner).entry(me).or_default().push(tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.feed(WsMessage::Text(text.into())).await.is_err() {
                return;
            }
            while let Ok(text) = rx.try_recv() {
                if sink.feed(WsMessage::Text(text.into())).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(frame)) = stream.next().await {
        let WsMessage::Text(text) = frame else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        if frame["type"] != "message" {
            continue;
        }
        let to = frame["recipient_id"].as_i64().unwrap_or_default();
        let seq = relay.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let message = json!({
            "id": format!("relay-{seq}"), "thread_id": "relay", "seq": seq, "kind": "user",
            "sender": {"id": me}, "recipient": {"id": to}, "text": frame["text"], "client_msg_id": frame["client_msg_id"],
        });
        let n = relay.deliveries.fetch_add(1, Ordering::Relaxed) + 1;
        if relay.drop_every.is_none_or(|every| !n.is_multiple_of(every)) {
            let delivery = json!({"type": "new_message", "message": message}).to_string();
            let targets =
                relay.connections.lock().unwrap_or_else(PoisonError::into_inner).get(&to).cloned().unwrap_or_default();
            for target in targets {
                let _ = target.try_send(delivery.clone());
            }
        }
        let ack =
            json!({"type": "message_ack", "client_msg_id": frame["client_msg_id"], "message": message}).to_string();
        if tx.send(ack).await.is_err() {
            break;
        }
    }
    relay
        .connections
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(me)
        .or_default()
        .retain(|c| !c.same_channel(&tx));
    writer.abort();
}
