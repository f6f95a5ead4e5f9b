//! `/api/server/`: the host marketplace's backend, with the server API key. The
//! key is compared in constant time and is the only credential taken here; user
//! tokens are refused, and the key is refused on every user route (it is not a
//! token). These routes exist only when the key is set.

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Query, ThreadPath, path_text};
use super::{ApiError, ErrorBody, HttpState};
use crate::chat::{HostJob, HostUser};
use crate::domain::{ErrorCode, Job, Message, User};

pub(super) fn routes(api: Router<HttpState>) -> Router<HttpState> {
    api.route("/api/server/users/{external_id}", put(put_user))
        .route("/api/server/jobs/{external_id}", put(put_job))
        .route("/api/server/threads/{id}/messages", post(post_system_message))
        .route("/api/server/events", get(list_events))
}

/// A request that carries the server API key.
pub(crate) struct ServerKey;

impl FromRequestParts<HttpState> for ServerKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Self::Rejection> {
        let refused = || ApiError::new(ErrorCode::Unauthorized, "send Authorization: Bearer <server API key>");
        let Some(key) = &state.config.host.server_api_key else { return Err(refused()) };
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let sent = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
        match sent {
            Some(sent) if bool::from(sent.trim().as_bytes().ct_eq(key.expose().as_bytes())) => Ok(Self),
            _ => Err(refused()),
        }
    }
}

/// An external id in a path, as the host spells it.
pub(crate) struct ExternalIdPath(String);

impl<S: Send + Sync> FromRequestParts<S> for ExternalIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_text(parts, state, "not found").await.map(Self)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserBody {
    full_name: String,
    /// `client` or `freelancer`.
    role: String,
    username: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserAnswer {
    user: User,
}

fn created_or_ok(created: bool) -> StatusCode {
    if created { StatusCode::CREATED } else { StatusCode::OK }
}

#[utoipa::path(put, path = "/api/server/users/{external_id}/", tag = "server", security(("server_key" = [])),
    params(("external_id" = String, Path, description = "the host's id of the user (1 to 128 characters)")),
    request_body = UserBody,
    responses((status = 201, body = UserAnswer, description = "created"), (status = 200, body = UserAnswer, description = "updated"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the username belongs to another user")))]
pub(crate) async fn put_user(
    State(state): State<HttpState>,
    _key: ServerKey,
    ExternalIdPath(external_id): ExternalIdPath,
    Json(body): Json<UserBody>,
) -> Result<(StatusCode, axum::Json<UserAnswer>), ApiError> {
    let wanted = HostUser { external_id, full_name: body.full_name, role: body.role, username: body.username };
    let (user, created) = state.chat.upsert_host_user(wanted).await?;
    Ok((created_or_ok(created), axum::Json(UserAnswer { user })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobBody {
    title: String,
    description: Option<String>,
    /// The host's id of the client who posted it (a user provisioned before).
    client_external_id: String,
    /// `open` (default) or `closed`.
    status: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobAnswer {
    job: Job,
}

#[utoipa::path(put, path = "/api/server/jobs/{external_id}/", tag = "server", security(("server_key" = [])),
    params(("external_id" = String, Path, description = "the host's id of the job")),
    request_body = JobBody,
    responses((status = 201, body = JobAnswer, description = "created"), (status = 200, body = JobAnswer, description = "updated"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no user has this client_external_id")))]
pub(crate) async fn put_job(
    State(state): State<HttpState>,
    _key: ServerKey,
    ExternalIdPath(external_id): ExternalIdPath,
    Json(body): Json<JobBody>,
) -> Result<(StatusCode, axum::Json<JobAnswer>), ApiError> {
    let wanted = HostJob {
        external_id,
        title: body.title,
        description: body.description,
        client_external_id: body.client_external_id,
        status: body.status,
    };
    let (job, created) = state.chat.upsert_host_job(wanted).await?;
    Ok((created_or_ok(created), axum::Json(JobAnswer { job })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SystemMessageBody {
    text: String,
    /// A JSON object saying what happened (at most 16 KiB).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// The same key with the same text returns the first message.
    client_msg_id: Option<String>,
}

#[utoipa::path(post, path = "/api/server/threads/{id}/messages/", tag = "server", security(("server_key" = [])),
    params(("id" = String, Path, format = Uuid)), request_body = SystemMessageBody,
    responses((status = 201, body = Message, description = "a system message, stored and delivered (or the first of a repeated key)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the client_msg_id names another text in this thread")))]
pub(crate) async fn post_system_message(
    State(state): State<HttpState>,
    _key: ServerKey,
    ThreadPath(id): ThreadPath,
    Json(body): Json<SystemMessageBody>,
) -> Result<(StatusCode, axum::Json<Message>), ApiError> {
    let sent = state.chat.post_host_message(id, body.text, body.metadata, body.client_msg_id).await?;
    Ok((StatusCode::CREATED, axum::Json(sent.message)))
}

/// `?after=&limit=` of the event replay.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// The `seq` of the last event already seen; default 0 (the oldest kept).
    after: Option<i64>,
    /// 1 to 500, default 100.
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventPage {
    /// `{"id","seq","type","created_at","data"}`, as the webhooks send them.
    #[schema(value_type = Vec<Object>)]
    results: Vec<serde_json::Value>,
    has_more: bool,
}

#[utoipa::path(get, path = "/api/server/events/", tag = "server", security(("server_key" = [])),
    params(EventsQuery),
    responses((status = 200, body = EventPage, description = "the events after the cursor, oldest first"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_events(
    State(state): State<HttpState>,
    _key: ServerKey,
    Query(q): Query<EventsQuery>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::new(ErrorCode::ValidationFailed, "after must be 0 or more"));
    }
    let limit = match q.limit {
        None => 100,
        Some(n @ 1..=500) => n as u32,
        Some(_) => return Err(ApiError::new(ErrorCode::ValidationFailed, "limit must be 1 to 500")),
    };
    let page = state.chat.events_after(after, limit).await?;
    Ok(axum::Json(EventPage { results: page.results, has_more: page.has_more }))
}
