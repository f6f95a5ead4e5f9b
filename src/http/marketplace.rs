//! Freelancers, jobs and proposals.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{AuthUser, IdPath, Json, Query, flexible_amount};
use super::web::redirect_url;
use super::{ApiError, ErrorBody, HttpState, PageQuery};
use crate::domain::{Freelancer, Job, JobId, Page, Proposal, Thread, UserId};

#[utoipa::path(get, path = "/api/freelancers/", tag = "marketplace", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<Freelancer>), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_freelancers(
    State(state): State<HttpState>,
    AuthUser(_): AuthUser,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Freelancer>>, ApiError> {
    Ok(axum::Json(state.chat.freelancers(q.parse()?).await?))
}

#[utoipa::path(get, path = "/api/freelancers/{id}/", tag = "marketplace", security(("bearer" = [])),
    params(("id" = i64, Path, description = "the freelancer's user id")),
    responses((status = 200, body = Freelancer), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_freelancer(
    State(state): State<HttpState>,
    AuthUser(_): AuthUser,
    IdPath(id): IdPath,
) -> Result<axum::Json<Freelancer>, ApiError> {
    Ok(axum::Json(state.chat.freelancer(UserId(id)).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobBody {
    title: String,
    description: String,
}

#[utoipa::path(post, path = "/api/jobs/", tag = "marketplace", security(("bearer" = [])), request_body = JobBody,
    responses((status = 201, body = Job), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_job(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    Json(body): Json<JobBody>,
) -> Result<(StatusCode, axum::Json<Job>), ApiError> {
    let job = state.chat.create_job(&user, body.title, body.description).await?;
    Ok((StatusCode::CREATED, axum::Json(job)))
}

#[utoipa::path(get, path = "/api/jobs/", tag = "marketplace", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = Page<Job>)))]
pub(crate) async fn list_jobs(
    State(state): State<HttpState>,
    AuthUser(_): AuthUser,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Job>>, ApiError> {
    Ok(axum::Json(state.chat.jobs(q.parse()?).await?))
}

#[utoipa::path(get, path = "/api/jobs/{id}/", tag = "marketplace", security(("bearer" = [])),
    params(("id" = i64, Path)), responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_job(
    State(state): State<HttpState>,
    AuthUser(_): AuthUser,
    IdPath(id): IdPath,
) -> Result<axum::Json<Job>, ApiError> {
    Ok(axum::Json(state.chat.job(JobId(id)).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProposalBody {
    cover_letter: String,
    /// A number, or a numeric string (as a form field gives it).
    #[serde(deserialize_with = "flexible_amount::deserialize")]
    #[schema(value_type = f64)]
    bid_amount: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProposalCreated {
    proposal: Proposal,
    thread: Thread,
    created: bool,
    redirect_url: String,
}

#[utoipa::path(post, path = "/api/jobs/{id}/proposals/", tag = "marketplace", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = ProposalBody,
    responses((status = 201, body = ProposalCreated), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub(crate) async fn submit_proposal(
    State(state): State<HttpState>,
    AuthUser(user): AuthUser,
    IdPath(id): IdPath,
    Json(body): Json<ProposalBody>,
) -> Result<(StatusCode, axum::Json<ProposalCreated>), ApiError> {
    let done = state.chat.submit_proposal(&user, JobId(id), body.cover_letter, body.bid_amount).await?;
    let redirect_url = redirect_url(&done.opening.thread);
    let body = ProposalCreated {
        proposal: done.proposal,
        thread: done.opening.thread,
        created: done.opening.created,
        redirect_url,
    };
    Ok((StatusCode::CREATED, axum::Json(body)))
}
