//! Real time over WebSocket (`/ws/chat/`, also `/ws/messaging/`): its routes and
//! state, the upgrade and its authentication here, the connection loop in
//! `session`, this node's live connections in `hub`, the frames in `protocol`.
//! Uses `http`'s error type and client address; `http` knows nothing of it.

mod close;
mod fragment;
mod hub;
mod json;
mod order;
mod protocol;
mod queue;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::FutureExt;
use futures::future::Either;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{HostKeys, JwtKeys};
use crate::chat::{self, Chat};
use crate::config::WsLimits;
use crate::domain::{ErrorCode, Timestamp, User};
use crate::http::{ApiError, ClientAddr, TrustForwardedFor};
use crate::server::ConnectionSlot;

pub use hub::Hub;

/// What the WebSocket routes and their sessions reach, and no more; each
/// connection holds a clone for its life, so every field is small (`Arc`s).
#[derive(Clone)]
pub struct WsState {
    pub chat: Chat,
    pub keys: Arc<JwtKeys>,
    /// The host marketplace's token key, when it signs tokens for its users.
    pub host_keys: Option<Arc<HostKeys>>,
    /// This node's live WebSocket connections.
    pub hub: Arc<Hub>,
    pub limits: Arc<WsLimits>,
    /// The origins, besides the server's own, whose pages may open a socket
    /// (`--allowed-origins`, normalized).
    pub allowed_origins: Arc<Vec<String>>,
    /// Whether the client's address is the last `X-Forwarded-For` entry.
    pub trust_forwarded_for: bool,
    /// Cancelled when the server stops: readers stop taking frames.
    pub shutdown: CancellationToken,
    /// The sessions, so shutdown can wait for them to close.
    pub sessions: TaskTracker,
}

impl WsState {
    /// The user a token names and when it expires, as a REST request checks it.
    async fn authenticate(&self, token: &str) -> chat::Result<(User, Timestamp)> {
        self.chat.authenticate(&self.keys, self.host_keys.as_deref(), token).await
    }
}

impl FromRef<Arc<WsState>> for TrustForwardedFor {
    fn from_ref(state: &Arc<WsState>) -> Self {
        Self(state.trust_forwarded_for)
    }
}

/// The WebSocket endpoint, at the seed's path and its alias. The caller puts it
/// behind the same middleware as the REST routes (`http::with_middleware`). The
/// state is shared, not copied: each connection holds it for its life, and an
/// `Arc` is 8 bytes where the state is about 200.
pub fn router(state: WsState) -> Router {
    Router::new().route("/ws/chat", get(connect_ws)).route("/ws/messaging", get(connect_ws)).with_state(Arc::new(state))
}

/// An upgraded connection, its large client frames split (see `fragment`).
pub(crate) type Socket = WebSocketStream<fragment::Refragment<TokioIo<hyper::upgrade::Upgraded>>>;

/// The token of the seed's `?token=`; other query parameters are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    token: Option<String>,
}

/// Bytes waiting in one socket's write buffer before a write fails and the
/// connection closes: a few hundred of the largest event frames.
const MAX_WRITE_BUFFER: usize = 16 * 1024 * 1024;

/// Bytes tungstenite reads per call and starts its read buffer with, which every
/// idle connection keeps: about one chat frame. Its reads come from
/// `fragment::Refragment`'s read-ahead, not from the socket, so a small one costs
/// copies, not syscalls (256 against 1,024: 4.4 against 6.0 KiB per idle
/// connection, the same messages/s; `docs/benchmarks.md`, 2026-12-04). A frame
/// grows the buffer by at most one `fragment::PIECE`.
const READ_BUFFER: usize = 256;

/// Subprotocol names a browser client may offer beside its token
/// (`new WebSocket(url, ["bearer", token])`); the server echoes the name back.
const TOKEN_PROTOCOLS: [&str; 4] = ["bearer", "access_token", "jwt", "confab"];

/// Upgrades an authenticated request: a token in `?token=` or the
/// `Sec-WebSocket-Protocol` header is checked now (401 when bad); without one, the
/// client must send an `auth` frame first. The handshake is ours rather than
/// axum's so that the socket can read through `fragment::Refragment`.
async fn connect_ws(State(state): State<Arc<WsState>>, ClientAddr(from): ClientAddr, mut request: Request) -> Response {
    let query = match Query::<WsQuery>::try_from_uri(request.uri()) {
        Ok(Query(query)) => query,
        Err(e) => return ApiError::new(ErrorCode::ValidationFailed, format!("bad query string: {e}")).into_response(),
    };
    let headers = request.headers();
    if let Err(origin) = origin_allowed(headers, &state.allowed_origins) {
        let detail = format!("WebSocket connections from {origin} are not allowed (see --allowed-origins)");
        return ApiError::new(ErrorCode::Forbidden, detail).into_response();
    }
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let token_in_protocol = offered.iter().find(|p| p.matches('.').count() == 2).cloned();
    let token = query.token.or(token_in_protocol.clone());
    let user = match token {
        None => None,
        Some(token) => match state.authenticate(&token).await {
            Ok(verified) => Some(verified),
            Err(e) => return ApiError(e).into_response(),
        },
    };
    let key = match handshake_key(request.method(), headers) {
        Ok(key) => key,
        Err((status, detail)) => {
            let detail = format!("this endpoint takes a WebSocket upgrade: {detail}");
            return (status, ApiError::new(ErrorCode::ValidationFailed, detail)).into_response();
        }
    };
    let limits = *state.limits;
    if let Some((user, _)) = &user
        && state.hub.connections_of(user.id) >= limits.max_connections_per_user
    {
        return ApiError::new(ErrorCode::RateLimited, "too many open connections for this user").into_response();
    }
    let Some(address_slot) = state.hub.admit_address(from, limits.max_connections_per_address) else {
        let detail = "too many WebSocket connections from this address";
        return ApiError::new(ErrorCode::RateLimited, detail).into_response();
    };
    // The server's connection place (see `server`): held by the session from now on.
    let connection_slot = request.extensions_mut().remove::<ConnectionSlot>();
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        let detail = "this connection cannot be upgraded (HTTP/1.1 with `Connection: upgrade` is needed)";
        return (StatusCode::UPGRADE_REQUIRED, ApiError::new(ErrorCode::ValidationFailed, detail)).into_response();
    };
    let chosen = if offered.is_empty() {
        None
    } else {
        offered.iter().find(|p| TOKEN_PROTOCOLS.contains(&p.as_str())).or(token_in_protocol.as_ref()).cloned()
    };
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(limits.max_frame_bytes))
        // Every frame tungstenite sees has been cut to a piece; a larger one is a bug.
        .max_frame_size(Some(fragment::PIECE as usize))
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    let sessions = state.sessions.clone();
    let held = (address_slot, connection_slot);
    // Boxed: connecting is over once the connection is live, and its futures would
    // otherwise size the task for all of the connection's life (see `session::connect`).
    let connecting = Box::pin(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return None;
            }
        };
        let io = fragment::Refragment::new(TokioIo::new(upgraded));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        session::connect(socket, state, user, held).await
    });
    let task = connecting.then(|live| match live {
        Some(live) => Either::Left(live.serve()),
        None => Either::Right(std::future::ready(())),
    });
    sessions.spawn(task);
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let answer = response.headers_mut();
    answer.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    answer.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        answer.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = chosen.and_then(|p| HeaderValue::from_str(&p).ok()) {
        answer.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// A browser's handshake must come from this server's own pages or an allowed
/// origin, so another site cannot open a socket with a user's token. A handshake
/// without `Origin` is from a program, not a browser, and is let through.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/').to_ascii_lowercase();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    let own = origin.split_once("://").is_some_and(|(_, rest)| !host.is_empty() && rest == host);
    if own || allowed.contains(&origin) { Ok(()) } else { Err(origin) }
}

/// The client's `Sec-WebSocket-Key`, once the request is a valid RFC 6455 handshake.
fn handshake_key(method: &Method, headers: &HeaderMap) -> Result<String, (StatusCode, &'static str)> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    };
    if method != Method::GET {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "the handshake must be a GET"));
    }
    if !has(header::CONNECTION, "upgrade") {
        return Err((StatusCode::UPGRADE_REQUIRED, "`Connection: upgrade` is missing"));
    }
    if !has(header::UPGRADE, "websocket") {
        return Err((StatusCode::BAD_REQUEST, "`Upgrade: websocket` is missing"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return Err((StatusCode::BAD_REQUEST, "`Sec-WebSocket-Version: 13` is missing"));
    }
    match headers.get(header::SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) {
        Some(key) if !key.is_empty() => Ok(key.to_owned()),
        _ => Err((StatusCode::BAD_REQUEST, "`Sec-WebSocket-Key` is missing")),
    }
}
