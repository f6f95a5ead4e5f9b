//! Health, readiness, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;
use utoipa::OpenApi;

use super::openapi::ApiDoc;
use super::{ApiError, HttpState};

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

/// How long the database check may take: a health check that hangs is read as a
/// dead node, and the load balancer moves traffic away too late.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Ready: the database and the bus answer; a load balancer sends traffic only then.
/// Answers within [`CHECK_TIMEOUT`] whatever the database does.
pub(crate) async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let database = match tokio::time::timeout(CHECK_TIMEOUT, state.chat.store().ping()).await {
        Ok(Ok(())) => state.chat.is_healthy(),
        Ok(Err(e)) => {
            tracing::warn!(error = %crate::domain::error_chain(&e), "readiness check failed: database");
            false
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = CHECK_TIMEOUT.as_millis(),
                "readiness check failed: the database did not answer"
            );
            false
        }
    };
    let bus = state.chat.bus().is_healthy();
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = json!({"status": if database && bus { "ready" } else { "unavailable" }, "database": word(database), "bus": word(bus)});
    let status = if database && bus { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

pub(crate) async fn metrics(State(state): State<HttpState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.metrics.render().map_err(|e| ApiError(crate::chat::Error::Internal(Box::new(e))))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

/// The OpenAPI document; the server API is in it only where it exists (its key is set).
pub(crate) async fn openapi(State(state): State<HttpState>) -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    if state.config.host.server_api_key.is_none() {
        doc.paths.paths.retain(|path, _| !path.starts_with("/api/server/"));
        if let Some(components) = doc.components.as_mut() {
            components.security_schemes.remove("server_key");
        }
    }
    Json(doc)
}
