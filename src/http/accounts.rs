//! Register, sign in, refresh, and who am I.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{AuthUser, ClientAddr, Json, token_error};
use super::{ApiError, ErrorBody, HttpState};
use crate::auth::TokenKind;
use crate::chat::Registration;
use crate::domain::{ErrorCode, Profile, User};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    username: String,
    password: String,
    full_name: String,
    /// `client` or `freelancer`.
    role: String,
    /// Freelancer profile, optional.
    headline: Option<String>,
    skills: Option<Vec<String>>,
    hourly_rate: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Registered {
    user: User,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    username: String,
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Tokens {
    access: String,
    refresh: String,
    user: User,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshBody {
    refresh: String,
}

/// A new pair: the refresh token sent is spent.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Refreshed {
    access: String,
    refresh: String,
}

fn signing_failed(e: jsonwebtoken::errors::Error) -> ApiError {
    ApiError(crate::chat::Error::Internal(Box::new(e)))
}

#[utoipa::path(post, path = "/api/auth/register/", tag = "accounts", request_body = RegisterBody,
    responses((status = 201, body = Registered), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, description = "too many attempts from this address; see Retry-After", body = ErrorBody)))]
pub(crate) async fn register_user(
    State(state): State<HttpState>,
    ClientAddr(from): ClientAddr,
    Json(body): Json<RegisterBody>,
) -> Result<(StatusCode, axum::Json<Registered>), ApiError> {
    state.chat.admit_attempt(from)?;
    let profile = Profile::parse(body.headline, body.skills, body.hourly_rate)?;
    let registration =
        Registration { username: body.username, password: body.password, full_name: body.full_name, role: body.role };
    let user = state.chat.register(registration, profile).await?;
    Ok((StatusCode::CREATED, axum::Json(Registered { user })))
}

#[utoipa::path(post, path = "/api/auth/token/", tag = "accounts", request_body = TokenBody,
    responses((status = 200, body = Tokens), (status = 401, body = ErrorBody),
        (status = 429, description = "too many attempts from this address or failures for this account; see Retry-After", body = ErrorBody)))]
pub(crate) async fn obtain_token(
    State(state): State<HttpState>,
    ClientAddr(from): ClientAddr,
    Json(body): Json<TokenBody>,
) -> Result<axum::Json<Tokens>, ApiError> {
    state.chat.admit_attempt(from)?;
    let user = state.chat.sign_in(&body.username, body.password).await?;
    let access = state.keys.issue(user.id, TokenKind::Access, None).map_err(signing_failed)?;
    let refresh = state.keys.issue_refresh(user.id, None).map_err(signing_failed)?;
    state.chat.remember_refresh(user.id, &refresh).await?;
    Ok(axum::Json(Tokens { access, refresh: refresh.token, user }))
}

#[utoipa::path(post, path = "/api/auth/token/refresh/", tag = "accounts", request_body = RefreshBody,
    responses((status = 200, body = Refreshed), (status = 401, body = ErrorBody)))]
pub(crate) async fn refresh_token(
    State(state): State<HttpState>,
    Json(body): Json<RefreshBody>,
) -> Result<axum::Json<Refreshed>, ApiError> {
    let claims = state.keys.verify_refresh(&body.refresh).map_err(token_error)?;
    let user = state.chat.authenticated_user(claims.user).await?;
    let next = state.keys.issue_refresh(user.id, Some(&claims.family)).map_err(signing_failed)?;
    state.chat.rotate_refresh(&claims.jti, user.id, &next).await?;
    let access = state.keys.issue(user.id, TokenKind::Access, None).map_err(signing_failed)?;
    Ok(axum::Json(Refreshed { access, refresh: next.token }))
}

#[utoipa::path(get, path = "/api/auth/me/", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, body = ErrorBody)))]
pub(crate) async fn get_me(AuthUser(user): AuthUser) -> axum::Json<User> {
    axum::Json(user)
}

/// Answers requests to paths that name nothing, in the contract's error shape.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}
