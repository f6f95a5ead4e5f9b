//! The REST surface: one route table in the contract's order, thin handlers that
//! translate between HTTP and [`Chat`] calls, and one error type; and the
//! middleware every route answers through, the WebSocket's too ([`with_middleware`]).
//! Knows nothing of WebSockets.

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
use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::routing::{get, post};
use serde::Deserialize;
use tower::Layer;
use tower_http::compression::CompressionLayer;
use tower_http::normalize_path::NormalizePathLayer;
use utoipa::IntoParams;

use crate::auth::{HostKeys, JwtKeys};
use crate::chat::Chat;
use crate::config::Config;

pub use error::{ApiError, ErrorBody, status_of};
pub(crate) use extract::{ClientAddr, TrustForwardedFor};
pub use metrics::Metrics;
pub use openapi::ApiDoc;

/// What every REST handler can reach; cloned per request (all of it is `Arc`s).
#[derive(Clone)]
pub struct HttpState {
    pub chat: Chat,
    pub keys: Arc<JwtKeys>,
    /// The host marketplace's token key, when it signs tokens for its users.
    pub host_keys: Option<Arc<HostKeys>>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
}

impl FromRef<HttpState> for TrustForwardedFor {
    fn from_ref(state: &HttpState) -> Self {
        Self(state.config.trust_forwarded_for)
    }
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

/// The route table, written in `API.md` order (the WebSocket's are `ws::router`).
/// Paths are declared without their trailing slash; [`service`] strips it from
/// requests, so both forms answer alike with no redirect. The fallbacks and
/// middleware come after the routers are merged, from [`with_middleware`].
pub fn router(state: HttpState) -> Router {
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
    api.with_state(state)
}

/// What every route answers through, REST and WebSocket alike, once `routes` holds
/// them all: the contract's 404 and 405 (a method fallback reaches only the routes
/// already there), the body limit, the request deadline, metrics, security headers
/// and CORS.
pub fn with_middleware(routes: Router, state: &HttpState) -> Router {
    let app = routes
        .fallback(accounts::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.config.http_request_timeout, deadline))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(axum::middleware::from_fn(security_headers));
    match cors(&state.config.allowed_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    }
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
    state: HttpState,
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

/// The app (see [`with_middleware`]) behind trailing-slash normalization, ready
/// for `axum::serve`.
pub fn service(
    app: Router,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<
    tower_http::normalize_path::NormalizePath<Router>,
    std::net::SocketAddr,
> {
    let app = NormalizePathLayer::trim_trailing_slash().layer(app);
    axum::ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(app)
}
