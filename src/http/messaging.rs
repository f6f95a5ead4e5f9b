//! The original system's messaging routes (seed), kept for its clients.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AuthUser, IdPath, Query};
use super::threads::MessagesQuery;
use super::{ApiError, ErrorBody, HttpState};
use crate::domain::{Message, Page, UserId};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConversationQuery {
    /// The other user.
    user_id: i64,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/messaging/messages/", tag = "messaging (seed)", security(("bearer" = [])),
    params(ConversationQuery),
    responses((status = 200, body = Page<Message>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_conversation(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Query(q): Query<ConversationQuery>,
) -> Result<axum::Json<Page<Message>>, ApiError> {
    let other = UserId::parse(q.user_id, "user_id")?;
    let (cursor, limit) = MessagesQuery::parse(q.before_seq, q.after_seq, q.limit)?;
    Ok(axum::Json(state.chat.messages_with(&user, other, cursor, limit).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UnreadFrom {
    user_id: i64,
    unread_count: i64,
}

#[utoipa::path(get, path = "/api/messaging/messages/user/{id}/unread/", tag = "messaging (seed)",
    security(("bearer" = [])), params(("id" = i64, Path, description = "the other user")),
    responses((status = 200, body = UnreadFrom), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_unread_from(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    IdPath(id): IdPath,
) -> Result<axum::Json<UnreadFrom>, ApiError> {
    let unread_count = state.chat.unread_from(&user, UserId(id)).await?;
    Ok(axum::Json(UnreadFrom { user_id: id, unread_count }))
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UnreadTotals {
    total: i64,
    /// Unread count by thread id, for threads that have any.
    threads: BTreeMap<String, i64>,
}

#[utoipa::path(get, path = "/api/messaging/unread/", tag = "messaging (seed)", security(("bearer" = [])),
    responses((status = 200, body = UnreadTotals)))]
pub(crate) async fn get_unread_totals(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
) -> Result<axum::Json<UnreadTotals>, ApiError> {
    let totals = state.chat.unread_totals(&user).await?;
    let threads = totals.threads.into_iter().map(|(id, n)| (id.to_string(), n)).collect();
    Ok(axum::Json(UnreadTotals { total: totals.total, threads }))
}
