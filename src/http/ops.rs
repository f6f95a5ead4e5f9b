//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa::OpenApi;

use super::openapi::ApiDoc;
use super::{ApiError, AppState};
use crate::domain::ErrorCode;

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

/// Ready: the database answers; a load balancer sends traffic only then.
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.chat.store().ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready", "database": "ok"}))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed: database");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "database": "unreachable", "error": ErrorCode::Unavailable,
                    "detail": "the database does not answer"})),
            )
        }
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.metrics.render().map_err(|e| ApiError(crate::chat::Error::Internal(Box::new(e))))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

pub(crate) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
