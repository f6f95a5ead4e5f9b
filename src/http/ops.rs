//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa::OpenApi;

use super::openapi::ApiDoc;
use super::{ApiError, AppState};

/// What this server is and where to look next.
pub(crate) async fn index() -> Json<serde_json::Value> {
    Json(json!({
        "name": "confab",
        "version": env!("CARGO_PKG_VERSION"),
        "openapi": "/api/openapi.json",
        "health": "/healthz",
        "ready": "/readyz",
        "metrics": "/metrics",
    }))
}

/// Alive: the process answers. Never touches the database, so a slow database
/// does not get a healthy node restarted.
pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the database and the bus answer; a load balancer sends traffic only then.
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match state.chat.store().ping().await {
        Ok(()) => state.chat.is_healthy(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: database");
            false
        }
    };
    let bus = state.chat.bus().is_healthy();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = json!({"status": if database && bus { "ready" } else { "unavailable" }, "database": word(database), "bus": word(bus)});
    let status = if database && bus { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.metrics.render().map_err(|e| ApiError(crate::chat::Error::Internal(Box::new(e))))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
