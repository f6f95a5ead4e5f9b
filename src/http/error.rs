//! The one error type of the REST API: every failure becomes the contract's
//! `{"error": code, "detail": text}` with the status of its code. 5xx causes are
//! logged here and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::chat;
use crate::domain::{ErrorCode, ValidationError, error_chain};

/// The contract's error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorCode,
    pub detail: String,
}

#[derive(Debug)]
pub struct ApiError(pub chat::Error);

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self(chat::Error::rejected(code, detail))
    }
}

/// The one place a code gets its HTTP status.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidJson | ErrorCode::ValidationFailed => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<chat::Error> for ApiError {
    fn from(e: chat::Error) -> Self {
        Self(e)
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        if matches!(self.0, chat::Error::Unavailable(_) | chat::Error::Internal(_)) {
            tracing::error!(error = %error_chain(&self.0), "request failed");
        }
        let body = ErrorBody { error: code, detail: self.0.detail() };
        let mut response = (status_of(code), Json(body)).into_response();
        if let Some(after) = self.0.retry_after() {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        response
    }
}
