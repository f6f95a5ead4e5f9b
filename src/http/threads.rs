//! The workflows (Hire Me, proposal chat), the inbox, thread messages and read markers.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{AuthUser, Json, Query, ThreadPath};
use super::web::redirect_url;
use super::{ApiError, ErrorBody, HttpState, PageQuery};
use crate::chat::{Opening, SendTarget};
use crate::domain::{
    Cursor, InboxCursor, JobId, Message, Page, PageRequest, Seq, Thread, UserId, ValidationError, flexible_id,
};
use crate::store::InboxFrom;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HireBody {
    #[serde(deserialize_with = "flexible_id::deserialize")]
    freelancer_id: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProposalChatBody {
    #[serde(deserialize_with = "flexible_id::deserialize")]
    job_id: i64,
}

/// The answer of both workflows.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkflowThread {
    thread: Thread,
    created: bool,
    redirect_url: String,
}

/// 201 when the workflow created the thread, 200 when it already existed.
fn workflow_answer(opening: Opening) -> (StatusCode, axum::Json<WorkflowThread>) {
    let status = if opening.created { StatusCode::CREATED } else { StatusCode::OK };
    let redirect_url = redirect_url(&opening.thread);
    (status, axum::Json(WorkflowThread { thread: opening.thread, created: opening.created, redirect_url }))
}

#[utoipa::path(post, path = "/api/chat/hire-freelancer/", tag = "workflows", security(("bearer" = [])),
    request_body = HireBody,
    responses((status = 201, body = WorkflowThread, description = "thread created"),
        (status = 200, body = WorkflowThread, description = "thread existed"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn hire_freelancer(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Json(body): Json<HireBody>,
) -> Result<(StatusCode, axum::Json<WorkflowThread>), ApiError> {
    let freelancer = UserId::parse(body.freelancer_id, "freelancer_id")?;
    Ok(workflow_answer(state.chat.hire_freelancer(&user, freelancer).await?))
}

#[utoipa::path(post, path = "/api/chat/proposal-chat/", tag = "workflows", security(("bearer" = [])),
    request_body = ProposalChatBody,
    responses((status = 201, body = WorkflowThread, description = "thread created"),
        (status = 200, body = WorkflowThread, description = "thread existed"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn proposal_chat(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Json(body): Json<ProposalChatBody>,
) -> Result<(StatusCode, axum::Json<WorkflowThread>), ApiError> {
    let job = JobId::parse(body.job_id, "job_id")?;
    Ok(workflow_answer(state.chat.proposal_chat(&user, job).await?))
}

/// `?limit=&cursor=` of the inbox.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboxQuery {
    /// 1 to 200, default 50.
    limit: Option<i64>,
    /// The `next` of the previous page; absent for the first page.
    cursor: Option<String>,
    /// Legacy: threads to skip. A walk by offset may repeat or skip threads whose
    /// activity moves meanwhile; use `cursor`.
    offset: Option<i64>,
}

/// A page of the inbox: the contract's list shape plus the cursor of the next page.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InboxPage {
    results: Vec<Thread>,
    has_more: bool,
    /// Send back as `?cursor=` for the next page; `null` on the last page.
    next: Option<String>,
}

#[utoipa::path(get, path = "/api/chat/threads/", tag = "threads", security(("bearer" = [])), params(InboxQuery),
    description = "The caller's threads, most recent activity first, paged by an opaque keyset cursor: a walk \
        repeats no thread and skips only one whose activity moved to the top meanwhile.",
    responses((status = 200, body = InboxPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_threads(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Query(q): Query<InboxQuery>,
) -> Result<axum::Json<InboxPage>, ApiError> {
    let limit = PageRequest::parse(q.limit, None)?.limit;
    let from = match (q.cursor, q.offset) {
        (Some(_), Some(_)) => return Err(ValidationError::new("give cursor or offset, not both").into()),
        (Some(cursor), None) => InboxFrom::After(InboxCursor::parse(&cursor)?),
        (None, Some(offset)) => InboxFrom::Offset(PageRequest::parse(None, Some(offset))?.offset),
        (None, None) => InboxFrom::Start,
    };
    let inbox = state.chat.inbox(&user, from, limit).await?;
    Ok(axum::Json(InboxPage {
        results: inbox.page.results,
        has_more: inbox.page.has_more,
        next: inbox.next.map(|c| c.encode()),
    }))
}

#[utoipa::path(get, path = "/api/chat/threads/{id}/", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)), responses((status = 200, body = Thread), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_thread(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    ThreadPath(id): ThreadPath,
) -> Result<axum::Json<Thread>, ApiError> {
    Ok(axum::Json(state.chat.thread(&user, id).await?))
}

/// A page of messages: `after_seq` gives those right after, `before_seq` those right
/// before, both the first of those strictly between, neither the newest; always in
/// seq order.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessagesQuery {
    /// The messages right before this seq; with `after_seq`, those strictly between.
    before_seq: Option<i64>,
    /// The messages right after this seq; with `before_seq`, those strictly between.
    after_seq: Option<i64>,
    /// 1 to 200, default 50.
    limit: Option<i64>,
}

impl MessagesQuery {
    pub(super) fn parse(
        before_seq: Option<i64>,
        after_seq: Option<i64>,
        limit: Option<i64>,
    ) -> Result<(Cursor, u32), ValidationError> {
        let cursor = match (before_seq, after_seq) {
            (Some(b), Some(a)) if a >= 0 && b >= 0 => Cursor::Between(Seq(a), Seq(b)),
            (Some(b), None) if b >= 0 => Cursor::Before(Seq(b)),
            (None, Some(a)) if a >= 0 => Cursor::After(Seq(a)),
            (None, None) => Cursor::Latest,
            _ => return Err(ValidationError::new("before_seq and after_seq must not be negative")),
        };
        Ok((cursor, PageRequest::parse(limit, None)?.limit))
    }
}

#[utoipa::path(get, path = "/api/chat/threads/{id}/messages/", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid), MessagesQuery),
    responses((status = 200, body = Page<Message>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_messages(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    ThreadPath(id): ThreadPath,
    Query(q): Query<MessagesQuery>,
) -> Result<axum::Json<Page<Message>>, ApiError> {
    let (cursor, limit) = MessagesQuery::parse(q.before_seq, q.after_seq, q.limit)?;
    Ok(axum::Json(state.chat.messages(&user, id, cursor, limit).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendBody {
    text: String,
    /// The sender's idempotency key, scoped to the sender and the thread: the same
    /// key with the same text returns the first message; with another text it is
    /// 409 `conflict`; in another thread it is another message.
    client_msg_id: Option<String>,
}

#[utoipa::path(post, path = "/api/chat/threads/{id}/messages/", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)), request_body = SendBody,
    responses((status = 201, body = Message, description = "stored, or the first message of a repeated key"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the client_msg_id names another text in this thread"),
        (status = 413, body = ErrorBody, description = "text over the limit")))]
pub(crate) async fn post_message(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    ThreadPath(id): ThreadPath,
    Json(body): Json<SendBody>,
) -> Result<(StatusCode, axum::Json<Message>), ApiError> {
    let sent = state.chat.send_message(&user, SendTarget::Thread(id), body.text, body.client_msg_id).await?;
    Ok((StatusCode::CREATED, axum::Json(sent.message)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadBody {
    /// Default: everything so far.
    up_to_seq: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReadAnswer {
    unread_count: i64,
}

#[utoipa::path(post, path = "/api/chat/threads/{id}/read/", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path, format = Uuid)), request_body = ReadBody,
    responses((status = 200, body = ReadAnswer), (status = 404, body = ErrorBody)))]
pub(crate) async fn mark_thread_read(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    ThreadPath(id): ThreadPath,
    Json(body): Json<ReadBody>,
) -> Result<axum::Json<ReadAnswer>, ApiError> {
    let marker = state.chat.mark_read(&user, id, body.up_to_seq).await?;
    Ok(axum::Json(ReadAnswer { unread_count: marker.unread_count }))
}

impl PageQuery {
    pub(super) fn parse(&self) -> Result<PageRequest, ValidationError> {
        PageRequest::parse(self.limit, self.offset)
    }
}
