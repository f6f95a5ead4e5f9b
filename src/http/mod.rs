//! The REST surface: one route table in the contract's order, thin handlers that
//! translate between HTTP and [`Chat`] calls, and one error type.

mod accounts;
mod error;
mod extract;
mod marketplace;
mod messaging;
mod metrics;
mod openapi;
mod ops;
mod server_api;
mod threads;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use serde::Deserialize;
use tower::Layer;
use tower_http::compression::CompressionLayer;
use tower_http::normalize_path::NormalizePathLayer;
use utoipa::IntoParams;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{HostKeys, JwtKeys};
use crate::chat::Chat;
use crate::config::Config;
use crate::ws::{self, Hub};

pub use error::{ApiError, ErrorBody, status_of};
pub(crate) use extract::{ClientAddr, authenticate};
pub use metrics::Metrics;
pub use openapi::ApiDoc;

/// What every handler can reach; cloned per request (all of it is `Arc`s).
#[derive(Clone)]
pub struct AppState {
    pub chat: Chat,
    pub keys: Arc<JwtKeys>,
    /// The host marketplace's token key, when it signs tokens for its users.
    pub host_keys: Option<Arc<HostKeys>>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    /// This node's live WebSocket connections.
    pub hub: Arc<Hub>,
    /// Cancelled when the server stops: WebSocket readers stop taking frames.
    pub shutdown: CancellationToken,
    /// Cancelled once every accepted send is stored: every socket's closer is its
    /// child, so the writers flush their acks and close with 1001.
    pub closing: CancellationToken,
    /// The WebSocket sessions, so shutdown can wait for them to close.
    pub sessions: TaskTracker,
}

/// `?limit=&offset=` of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1 to 200, default 50.
    limit: Option<i64>,
    /// How many to skip, default 0.
    offset: Option<i64>,
}

/// The route table, written in `API.md` order. Paths are declared without their
/// trailing slash; [`service`] strips it from requests, so both forms answer alike
/// with no redirect.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/auth/register", post(accounts::register_user))
        .route("/api/auth/token", post(accounts::obtain_token))
        .route("/api/auth/token/refresh", post(accounts::refresh_token))
        .route("/api/auth/me", get(accounts::get_me))
        .route("/api/freelancers", get(marketplace::list_freelancers))
        .route("/api/freelancers/{id}", get(marketplace::get_freelancer))
        .route("/api/jobs", post(marketplace::create_job).get(marketplace::list_jobs))
        .route("/api/jobs/{id}", get(marketplace::get_job))
        .route("/api/jobs/{id}/proposals", post(marketplace::submit_proposal))
        .route("/api/chat/hire-freelancer", post(threads::hire_freelancer))
        .route("/api/chat/proposal-chat", post(threads::proposal_chat))
        .route("/api/chat/threads", get(threads::list_threads))
        .route("/api/chat/threads/{id}", get(threads::get_thread))
        .route("/api/chat/threads/{id}/messages", get(threads::list_messages).post(threads::post_message))
        .route("/api/chat/threads/{id}/read", post(threads::mark_thread_read))
        .route("/api/messaging/messages", get(messaging::list_conversation))
        .route("/api/messages", get(messaging::list_conversation))
        .route("/api/messaging/messages/user/{id}/unread", get(messaging::get_unread_from))
        .route("/api/messaging/unread", get(messaging::get_unread_totals))
        .route("/ws/chat", get(ws::connect_ws))
        .route("/ws/messaging", get(ws::connect_ws))
        .route("/", get(web::index))
        .route("/assets/{version}/{*path}", get(web::asset).layer(CompressionLayer::new()))
        .route("/widget.js", get(web::widget).layer(CompressionLayer::new()))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/api/openapi.json", get(ops::openapi));
    // The host's backend API exists only where its key is set.
    let api = match &state.config.host.server_api_key {
        Some(_) => server_api::routes(api),
        None => api,
    };
    // Public unless the deployment serves it on a listener of its own.
    let api = if state.config.metrics_listen.is_none() { api.route("/metrics", get(ops::metrics)) } else { api };
    let api = web::PAGES.iter().fold(api, |api, path| api.route(path, get(web::page).layer(CompressionLayer::new())));
    let app = api
        .fallback(accounts::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.config.http_request_timeout, deadline))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(axum::middleware::from_fn(security_headers));
    let app = match cors(&state.config.allowed_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}

/// CORS for the origins that embed the widget (`--allowed-origins`), none otherwise:
/// their pages may call the REST API with a bearer token (no cookies are used).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// Answers a request that takes too long (a body trickled in, say) with 503, so a
/// slow client cannot hold a request open.
async fn deadline(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let detail = format!("the request took longer than {} s; send it again", limit.as_secs());
            axum::response::IntoResponse::into_response(ApiError::new(crate::domain::ErrorCode::Unavailable, detail))
        }
    }
}

/// `/metrics` alone, for `--metrics-listen`.
pub fn metrics_service(
    state: AppState,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, std::net::SocketAddr> {
    let app = Router::new().route("/metrics", get(ops::metrics)).with_state(state);
    app.into_make_service_with_connect_info::<std::net::SocketAddr>()
}

/// Headers every answer carries: no MIME sniffing.
async fn security_headers(request: Request, next: axum::middleware::Next) -> axum::response::Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    response
}

async fn method_not_allowed(method: axum::http::Method) -> (axum::http::StatusCode, axum::Json<ErrorBody>) {
    let body = ErrorBody {
        error: crate::domain::ErrorCode::ValidationFailed,
        detail: format!("this endpoint does not accept {method}"),
    };
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body))
}

/// The router behind trailing-slash normalization, ready for `axum::serve`.
pub fn service(
    state: AppState,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<
    tower_http::normalize_path::NormalizePath<Router>,
    std::net::SocketAddr,
> {
    let app = NormalizePathLayer::trim_trailing_slash().layer(router(state));
    axum::ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(app)
}
