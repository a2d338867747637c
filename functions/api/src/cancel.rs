//! `POST /v1/jobs/{id}/cancel`: a queued or processing job ends `canceled` at once. A job
//! already at a provider is not stopped there (Stability has no cancel call, §1.3/§1.4 of
//! provider-contracts.md); its result is discarded when the next poll finds the job canceled.
//! A canceled job with a webhook or e-mail target gets its `job.canceled` notification through
//! the queue.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use shared::auth::Scope;

use crate::error::ApiError;
use crate::http_handler::AppState;
use crate::identity::Caller;
use crate::jobs::{load_job, view};

/// 200 with the canceled job; 409 `conflict` when it had already finished; 404 for unknown ids.
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
            // The webhook/e-mail goes out from the processor, never from this request.
            if let Err(e) = shared::notify::enqueue_for_ended_job(
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
