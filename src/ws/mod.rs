//! Real time over WebSocket (`/ws/chat/`, also `/ws/messaging/`): the upgrade and
//! its authentication here, the connection loop in `session`, this node's live
//! connections in `hub`, the frames in `protocol`.

mod hub;
mod order;
mod protocol;
mod session;

use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::TokenKind;
use crate::domain::ErrorCode;
use crate::http::{ApiError, AppState};

pub use hub::Hub;

/// The token of the seed's `?token=`; other query parameters are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    token: Option<String>,
}

/// Bytes waiting in one socket's write buffer before a write fails and the
/// connection closes: a few hundred of the largest event frames.
const MAX_WRITE_BUFFER: usize = 16 * 1024 * 1024;

/// Subprotocol names a browser client may offer beside its token
/// (`new WebSocket(url, ["bearer", token])`); the server echoes the name back.
const TOKEN_PROTOCOLS: [&str; 4] = ["bearer", "access_token", "jwt", "confab"];

/// Upgrades an authenticated request: a token in `?token=` or the
/// `Sec-WebSocket-Protocol` header is checked now (401 when bad); without one, the
/// client must send an `auth` frame first.
pub(crate) async fn connect_ws(
    State(state): State<AppState>,
    query: axum::extract::Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let token_in_protocol = offered.iter().find(|p| p.matches('.').count() == 2).cloned();
    let token = query.0.token.or(token_in_protocol.clone());
    let user = match token {
        None => None,
        Some(token) => {
            let verified = state.keys.verify(&token, TokenKind::Access);
            let id = match verified {
                Ok(id) => id,
                Err(e) => return crate::http::token_error(e).into_response(),
            };
            match state.chat.authenticated_user(id).await {
                Ok(user) => Some(user),
                Err(e) => return ApiError(e).into_response(),
            }
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let detail = format!("this endpoint takes a WebSocket upgrade: {rejection}");
            return (rejection.status(), ApiError::new(ErrorCode::ValidationFailed, detail)).into_response();
        }
    };
    let limits = state.config.ws;
    if let Some(user) = &user
        && state.hub.connections_of(user.id) >= limits.max_connections_per_user
    {
        return ApiError::new(ErrorCode::RateLimited, "too many open connections for this user").into_response();
    }
    let mut upgrade = upgrade
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    if !offered.is_empty() {
        let chosen = offered.iter().find(|p| TOKEN_PROTOCOLS.contains(&p.as_str())).or(token_in_protocol.as_ref());
        if let Some(chosen) = chosen {
            upgrade = upgrade.protocols([chosen.clone()]);
        }
    }
    let sessions = state.sessions.clone();
    upgrade
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| sessions.track_future(session::run(socket, state, user)))
}
