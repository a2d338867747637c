//! `GET /v1/metrics?window_hours=N`: the caller's usage (jobs by status and operation,
//! processing times) over the last N hours. Also served as the JWT background-removal
//! service's `GET /metrics/`.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use time::OffsetDateTime;

use shared::auth::{Principal, Scope};
use shared::core::ListQuery;
use shared::metrics::{self, DEFAULT_WINDOW_HOURS, MAX_WINDOW_HOURS, UsageMetrics};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// Pages of 100 jobs read at most per request: the newest 5 000 jobs of the window are
/// counted, and `truncated` says when there were more.
const MAX_PAGES: usize = 50;

/// Parses the query: `window_hours` (integer 1–720, default 24), nothing else.
///
/// # Errors
/// 400 `invalid_params` for another parameter or a value out of range.
pub(crate) fn window_hours(query: &HashMap<String, String>) -> Result<u32, ApiError> {
    let mut hours = DEFAULT_WINDOW_HOURS;
    for (key, value) in query {
        match key.as_str() {
            "window_hours" => {
                hours = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|h| (1..=MAX_WINDOW_HOURS).contains(h))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_params",
                            format!(
                                "window_hours '{value}' must be an integer 1–{MAX_WINDOW_HOURS}"
                            ),
                        )
                    })?;
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_params",
                    format!("unknown query parameter '{other}'; accepted: window_hours"),
                ));
            }
        }
    }
    Ok(hours)
}

/// The caller's usage over the last `hours` (needs `metrics:read`): reads the owner's jobs
/// newest first, page by page, until one was created before the window (bounded by
/// [`MAX_PAGES`]).
///
/// # Errors
/// 403 `insufficient_scope`; 503 when the table cannot be read.
pub(crate) async fn usage(
    state: &AppState,
    caller: &Principal,
    hours: u32,
) -> Result<UsageMetrics, ApiError> {
    caller.require(Scope::MetricsRead)?;
    let now = OffsetDateTime::now_utc();
    let from = metrics::window_start(hours, now);
    let mut query = ListQuery {
        limit: 100,
        ..ListQuery::default()
    };
    let mut jobs = Vec::new();
    let mut truncated = false;
    for page_number in 0.. {
        let page = state.store.list(&caller.owner, &query).await?;
        let reached_start = page.jobs.last().is_some_and(|j| j.created_at < from);
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(cursor) if !reached_start => {
                if page_number + 1 == MAX_PAGES {
                    truncated = true;
                    break;
                }
                query.cursor = Some(cursor);
            }
            _ => break,
        }
    }
    Ok(metrics::aggregate(&jobs, hours, now, truncated))
}

/// `GET /v1/metrics`: the [`UsageMetrics`] JSON, for an API key or a JWT with `metrics:read`.
///
/// # Errors
/// As [`window_hours`] and [`usage`].
#[utoipa::path(
    get,
    path = "/v1/metrics",
    tag = "account",
    security(("api_key" = []), ("jwt" = [])),
    params(("window_hours" = Option<u32>, Query, minimum = 1, maximum = 720, description = "Window length in hours, 1–720 (default 24)")),
    responses(
        (status = 200, description = "The caller's usage over the window (needs `metrics:read`)", body = crate::openapi::UsageMetrics),
        (status = 400, description = "`invalid_params`: a value out of range or an unknown parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn get_metrics(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let hours = window_hours(&query)?;
    Ok(Json(usage(&state, &caller, hours).await?).into_response())
}
