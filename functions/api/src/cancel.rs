//! `POST /v1/jobs/{id}/cancel`: a queued or processing job ends `canceled` at once.
//!
//! A job already at a provider: fal.ai requests are canceled there too — the API queues a poll
//! message and the processor (which holds the fal key) makes the `PUT cancel_url` call once
//! (docs/providers.md §2.5). Stability has no cancel call (§1.3/§1.4). Either way the
//! provider's result is discarded, because only a `processing` job can complete.
//!
//! A canceled job with a webhook or e-mail target gets its `job.canceled` notification through
//! the queue.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use shared::auth::Scope;

use crate::error::ApiError;
use crate::identity::Caller;
use crate::jobs::{load_job, view};
use crate::state::AppState;

/// `POST /v1/jobs/{id}/cancel`: 200 with the canceled job (as [`crate::jobs::view`] shows it).
///
/// # Errors
/// 403 `insufficient_scope` without `jobs:write` or `jobs:read`; 404 `job_not_found` for
/// unknown ids; 409 `conflict` when it had already finished; 503 when the store fails.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    security(("api_key" = []), ("jwt" = [])),
    params(("id" = String, Path, description = "The job's ULID (26 characters)")),
    responses(
        (status = 200, description = "The canceled job", body = crate::openapi::JobDoc),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 404, description = "`job_not_found`: unknown id, or another owner's job", body = crate::openapi::ErrorBody),
        (status = 409, description = "`conflict`: the job had already finished", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let job = load_job(&state, &caller, &id).await?;
    match state
        .provider_transitions
        .cancel(&job.owner, job.id, OffsetDateTime::now_utc())
        .await?
    {
        Some(canceled) => {
            if canceled.provider.as_deref() == Some("fal")
                && let Some(request_id) = &canceled.provider_request_id
            {
                let message = shared::job::JobMessage::Poll {
                    owner: canceled.owner.clone(),
                    job_id: canceled.id,
                    request_id: request_id.clone(),
                    attempt: 0,
                    // One-off: takes over the job's poll chain.
                    due: None,
                };
                // The job is canceled either way; a lost message only means fal finishes a
                // request whose result is then discarded.
                if let Err(e) = state.queue.send(&message, std::time::Duration::ZERO).await {
                    tracing::warn!(job_id = %canceled.id, error = %e, "could not queue the fal cancel");
                }
            }
            // The webhook/e-mail goes out from the processor, never from this request.
            if let Err(e) = shared::notification::enqueue_for_ended_job(
                &canceled,
                state.notifications.as_ref(),
                state.queue.as_ref(),
            )
            .await
            {
                tracing::error!(job_id = %canceled.id, error = %e, "could not queue the cancel notification");
            }
            Ok(Json(view(&canceled)).into_response())
        }
        None => {
            let now = load_job(&state, &caller, &id).await?;
            Err(shared::Error::Conflict(format!("job {} is already {}", now.id, now.status)).into())
        }
    }
}
