//! Replaces the "AI Image Editing Backend" (FastAPI over fal.ai Seedream v4 edit, in-memory jobs).
//!
//! The image-editing service's three routes, over the job service, persistent (jobs live as
//! long as `JOB_TTL_DAYS`):
//!
//! | route | answer | canonical |
//! |---|---|---|
//! | `POST /api/jobs` (multipart `image`, `prompt`) | the job, after waiting up to 25 s | `POST /v1/jobs` (`edit`) + `Prefer: wait=25` |
//! | `GET /api/jobs/{job_id}` | the job | `GET /v1/jobs/{id}` |
//! | `GET /api/jobs` | the caller's `edit` jobs, newest first (at most 100) | `GET /v1/jobs` |
//!
//! A job is exactly `{"id", "prompt", "status", "result_image_url", "created_at",
//! "updated_at"}`: `id` is the job's ULID, `status` the service's words ([`legacy_status`]),
//! `result_image_url` a presigned GET URL of the result (`RESULT_URL_TTL_SECONDS`) or `null`,
//! the times RFC 3339. Only `edit` jobs are this service's: another operation's id is a 404 here.
//! Browser frontends are allowed by `CORS_ALLOWED_ORIGINS` like every route, and send a key
//! (`Authorization`/`X-API-Key`, both allowed in preflight) or a JWT.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use shared::auth::Scope;
use shared::core::ListQuery;
use shared::job::{Job, JobStatus, Operation};
use shared::operation::edit::{EditParams, GenerationOptions};
use shared::service::{InputRef, Submission};

use super::request::read_form_with;
use super::response::{ended_without_result, submit_and_wait};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::jobs::load_job;
use crate::request_id::RequestId;
use crate::state::AppState;

/// The image-editing service's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(read))
}

/// Most jobs `GET /api/jobs` returns.
pub const MAX_LISTED: usize = 100;
/// Most job records `GET /api/jobs` reads looking for `edit` jobs (10 pages of 100).
const MAX_SCANNED_PAGES: usize = 10;

/// The service's status words: `queued` is `pending`, `processing` stays, `succeeded` is
/// `completed`, `failed` and `canceled` are `failed`.
pub fn legacy_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "pending",
        JobStatus::Processing => "processing",
        JobStatus::Succeeded => "completed",
        JobStatus::Failed | JobStatus::Canceled => "failed",
    }
}

/// The job in the service's shape; `None` for a job that is not an `edit`.
async fn view(state: &AppState, job: &Job) -> Result<Option<Value>, ApiError> {
    let Operation::Edit(params) = &job.operation else {
        return Ok(None);
    };
    let url = match (&job.status, &job.result) {
        (JobStatus::Succeeded, Some(result)) => Some(
            state
                .blobs
                .presign_get(&result.key, state.settings.jobs.result_url_ttl)
                .await?,
        ),
        _ => None,
    };
    let time = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    Ok(Some(json!({
        "id": job.id.to_string(),
        "prompt": params.prompt,
        "status": legacy_status(job.status),
        "result_image_url": url,
        "created_at": time(job.created_at),
        "updated_at": time(job.updated_at),
    })))
}

/// `POST /api/jobs` (API key or token with `jobs:write` and `jobs:read`; multipart `image` and
/// `prompt`): submits an `edit` job, waits up to the API's limit, and answers the job: **200**
/// once finished (`completed`), **202** with the same shape (`pending`/`processing`) when the
/// wait ran out; poll `GET /api/jobs/{id}` then.
///
/// # Errors
/// 422 `missing_input` without `image`, `invalid_params` without `prompt`; the image codes of
/// `POST /v1/jobs`; a failed job's own code ([`crate::error::sync_failure_status`]), as the
/// original answered an error when fal failed; 409 `job_canceled`.
#[utoipa::path(
    post,
    path = "/api/jobs",
    tag = "compat-004-editing",
    security(("api_key" = []), ("jwt" = [])),
    request_body(content((crate::openapi::EditForm = "multipart/form-data"))),
    responses(
        (status = 200, description = "The job, `completed`; canonical: `POST /v1/jobs` (`edit`) with `Prefer: wait=25`", body = crate::openapi::LegacyEditJob),
        (status = 202, description = "The job, still `pending` or `processing` after 25 s", body = crate::openapi::LegacyEditJob),
        (status = 400, description = "`invalid_input_reference`, `invalid_multipart`, parameter codes", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 409, description = "`job_canceled`: the job was canceled while the request waited", body = crate::openapi::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body or image is over the byte limit (25 MiB)", body = crate::openapi::ErrorBody),
        (status = 415, description = "`unsupported_media_type` (request body type) or `unsupported_image` (not JPEG, PNG or WebP)", body = crate::openapi::ErrorBody),
        (status = 422, description = "`missing_input`, `invalid_params`, `invalid_json`, the image codes (`empty_image`, `invalid_image`, `image_too_large`, `input_not_found`, `input_fetch_failed`, `too_many_redirects`) and a failed job's own code when the input was at fault", body = crate::openapi::ErrorBody),
        (status = 429, description = "`rate_limited` (more than `MAX_JOBS_PER_MINUTE` jobs created this minute) or `too_many_jobs_in_flight` (`MAX_JOBS_IN_FLIGHT` queued + processing)", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds until a retry can succeed"))),
        (status = 502, description = "The job failed in the pipeline: its own code (e.g. `retries_exhausted`, `provider_not_configured`, `provider_error`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RequestId(request_id): RequestId,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    caller.require(Scope::JobsRead)?;
    let form = read_form_with(&state, req, "image").await?;
    let prompt = form
        .field("prompt")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ApiError::unprocessable("invalid_params", "prompt: required (the edit to make)")
        })?
        .to_owned();
    let image = form.file.ok_or_else(|| {
        ApiError::unprocessable("missing_input", "image: required (the image to edit)")
    })?;
    let params = EditParams {
        prompt,
        options: GenerationOptions::default(),
    };
    params
        .validate()
        .map_err(|e| ApiError::unprocessable(e.code, e.to_string()))?;
    let job = submit_and_wait(
        &state,
        Submission {
            owner: caller.owner,
            operation: Operation::Edit(params),
            input: Some(InputRef::Upload(image)),
            extra_inputs: Vec::new(),
            idempotency_key: None,
            notify: Default::default(),
            request_id,
        },
    )
    .await?;
    let status = match job.status {
        JobStatus::Failed | JobStatus::Canceled => return Err(ended_without_result(job)),
        JobStatus::Succeeded => StatusCode::OK,
        JobStatus::Queued | JobStatus::Processing => StatusCode::ACCEPTED,
    };
    let body = view(&state, &job).await?.expect("an edit job");
    Ok((status, Json(body)).into_response())
}

/// `GET /api/jobs/{job_id}` (`jobs:read`): the job.
///
/// # Errors
/// 404 `job_not_found` for an unknown id, another owner's job, or a job of another operation.
#[utoipa::path(
    get,
    path = "/api/jobs/{job_id}",
    tag = "compat-004-editing",
    security(("api_key" = []), ("jwt" = [])),
    params(("job_id" = String, Path, description = "The job's ULID")),
    responses(
        (status = 200, description = "The job", body = crate::openapi::LegacyEditJob),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 404, description = "`job_not_found`: unknown, another owner's, or not an `edit` job", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load_job(&state, &caller, &job_id).await?;
    let body = view(&state, &job)
        .await?
        .ok_or(ApiError::JobNotFound(job_id))?;
    Ok(Json(body).into_response())
}

/// `GET /api/jobs` (`jobs:read`): a JSON array of the caller's `edit` jobs, newest first, at
/// most [`MAX_LISTED`] (the original listed its whole in-memory store).
///
/// # Errors
/// 403 without `jobs:read`; 503.
#[utoipa::path(
    get,
    path = "/api/jobs",
    tag = "compat-004-editing",
    security(("api_key" = []), ("jwt" = [])),
    responses(
        (status = 200, description = "The caller's `edit` jobs, newest first, at most 100", body = [crate::openapi::LegacyEditJob]),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsRead)?;
    let mut out = Vec::new();
    let mut query = ListQuery {
        limit: 100,
        ..ListQuery::default()
    };
    for _ in 0..MAX_SCANNED_PAGES {
        let page = state.store.list(&caller.owner, &query).await?;
        for job in &page.jobs {
            if out.len() == MAX_LISTED {
                break;
            }
            if let Some(v) = view(&state, job).await? {
                out.push(v);
            }
        }
        match page.next_cursor {
            Some(cursor) if out.len() < MAX_LISTED => query.cursor = Some(cursor),
            _ => break,
        }
    }
    Ok(Json(Value::Array(out)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_onto_the_legacy_words() {
        assert_eq!(legacy_status(JobStatus::Queued), "pending");
        assert_eq!(legacy_status(JobStatus::Processing), "processing");
        assert_eq!(legacy_status(JobStatus::Succeeded), "completed");
        assert_eq!(legacy_status(JobStatus::Failed), "failed");
        assert_eq!(legacy_status(JobStatus::Canceled), "failed");
    }
}
