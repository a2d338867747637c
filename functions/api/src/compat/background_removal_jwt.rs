//! Replaces the "Background Removal API" (FastAPI, JWT).
//!
//! The JWT background-removal service's four routes, over the job service. The two-tier flow
//! of the original is kept: an API key for `GET /health/` and `POST /auth/token`, the JWT it
//! returns for `POST /api/remove-background` and `GET /metrics/` (an API key there is 401
//! `token_required`). The token carries the key's owner and scopes, so this service's clients'
//! keys need `jobs:write` (background removal) and `metrics:read` (metrics).
//!
//! | route | answer | canonical |
//! |---|---|---|
//! | `POST /auth/token?user_id=…` | `{"access_token", "token_type": "bearer"}` | `POST /v1/auth/token` |
//! | `POST /api/remove-background` | the image bytes (200), or 202 `{"job_id", "status", "status_url", "result_url"}` | `POST /v1/jobs` + `Prefer: wait=25` |
//! | `GET /health/` | `{"status", "message", "checks"}` (200 / 503), shared with the image-generation service: [`super::health::legacy_health`] | `GET /health` |
//! | `GET /metrics/?window_hours=24` | [`shared::metrics::UsageMetrics`] | `GET /v1/metrics` |

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use shared::auth::Scope;
use shared::job::{Job, JobStatus, Operation};
use shared::operation::remove_background::{Color, OutputFormat, RemoveBackgroundParams};
use shared::service::{InputRef, Submission};

use super::request::{engine, model_fallback, read_form, require_token};
use super::response::{ended_without_result, result_of, still_running, submit_and_wait};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// The JWT background-removal service's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(token))
        .routes(routes!(remove_background))
        .routes(routes!(metrics))
}

/// Longest accepted `user_id`, in characters.
const MAX_USER_ID_CHARS: usize = 128;

/// `POST /auth/token?user_id=…` (API key): `{"access_token": "<HS256 JWT>", "token_type":
/// "bearer"}`, exactly the original's two keys.
///
/// `user_id` is required (1–128 characters, no control characters) but is *not* the identity:
/// the tenant is the key's owner, which becomes the token's `sub`, so every job stays scoped by
/// owner. The `user_id` is logged with the token's `jti` for the tenant's own audit.
///
/// # Errors
/// 422 `invalid_params` for a missing or malformed `user_id`; 400 `api_key_required` when a
/// token is sent instead of a key; 401 for a bad key or `tokens_disabled`.
#[utoipa::path(
    post,
    path = "/auth/token",
    tag = "compat-002-jwt-removal",
    security(("api_key" = [])),
    params(("user_id" = String, Query, description = "1–128 characters without control characters; logged, not the identity")),
    responses(
        (status = 200, description = "A JWT for the key's owner; canonical: `POST /v1/auth/token`", body = crate::openapi::LegacyToken),
        (status = 400, description = "`api_key_required`", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 422, description = "`invalid_params`: `user_id` missing or malformed", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let user_id = query.get("user_id").map(|u| u.trim()).unwrap_or_default();
    if user_id.is_empty()
        || user_id.chars().count() > MAX_USER_ID_CHARS
        || user_id.chars().any(char::is_control)
    {
        return Err(ApiError::unprocessable(
            "invalid_params",
            format!(
                "user_id: required query parameter, 1–{MAX_USER_ID_CHARS} characters without control characters"
            ),
        ));
    }
    let (token, claims) = crate::auth::issue_for_key(&state, &caller)?;
    tracing::info!(owner = %caller.owner, user_id, jti = %claims.jti, "background-removal token issued");
    let mut resp = Json(json!({"access_token": token, "token_type": "bearer"})).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// Parses the service's `output_format`: `PNG`, `JPG`, `JPEG` or `WEBP`, any case; PNG when
/// absent or empty.
///
/// # Errors
/// 422 `invalid_params` naming the accepted values.
fn output_format(raw: Option<&str>) -> Result<OutputFormat, ApiError> {
    match raw.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(OutputFormat::Png),
        Some(v) => match v.to_ascii_uppercase().as_str() {
            "PNG" => Ok(OutputFormat::Png),
            "JPG" | "JPEG" => Ok(OutputFormat::Jpeg),
            "WEBP" => Ok(OutputFormat::Webp),
            _ => Err(ApiError::unprocessable(
                "invalid_params",
                format!("output_format: '{v}' is not one of PNG, JPG, JPEG, WEBP"),
            )),
        },
    }
}

/// The model the replaced service ran (BRIA RMBG); a deployment without its weights runs the
/// best loaded neural model instead ([`model_fallback`]).
pub const LEGACY_MODEL: &str = "bria-rmbg";

/// The job parameters of a background-removal request of this API: its legacy model (or
/// `COMPAT_MODEL`), the format, and a white background for JPEG (which has no alpha channel).
fn params(settings: &shared::config::Settings, format: OutputFormat) -> RemoveBackgroundParams {
    let mut p = RemoveBackgroundParams::with_model(engine(settings, Some(LEGACY_MODEL)));
    p.model_fallback = model_fallback(settings);
    p.output_format = format;
    if format == OutputFormat::Jpeg {
        p.background_color = Some(Color {
            r: 255,
            g: 255,
            b: 255,
            a: 255,
        });
    }
    p
}

/// `POST /api/remove-background` (JWT with `jobs:write`; multipart `file` and optional
/// `output_format`): synchronous to the client.
///
/// Submits a `remove_background` job, waits for it up to the API's wait limit
/// ([`crate::jobs::MAX_WAIT_SECONDS`], as `Prefer: wait`), then answers **200** with the result's bytes and
/// `Content-Type` (`image/png`, `image/jpeg`, `image/webp`) and the job id in `X-Job-Id`. Still
/// running then: **202** `{"job_id", "status", "status_url", "result_url"}` with `Location`
/// (the canonical job routes; not an error).
///
/// # Errors
/// 401 `token_required` for an API key; 403 `insufficient_scope`; 422 `invalid_params` for a bad
/// `output_format`, `missing_input` without `file`; the image codes of `POST /v1/jobs`; when the
/// job fails, its own code ([`crate::error::sync_failure_status`]); 409 `job_canceled`.
#[utoipa::path(
    post,
    path = "/api/remove-background",
    tag = "compat-002-jwt-removal",
    security(("jwt" = [])),
    request_body(content((crate::openapi::RemoveBackgroundForm = "multipart/form-data"))),
    responses(
        (status = 200, description = "The cutout's bytes (`X-Job-Id` names the job); canonical: `POST /v1/jobs` + `GET /v1/jobs/{id}/result`", content((Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/webp")), headers(("X-Job-Id" = String, description = "The job's ULID"))),
        (status = 202, description = "Still running after 25 s: the canonical job routes (not an error)", body = crate::openapi::StillRunning, headers(("Location" = String, description = "`/v1/jobs/{id}`"), ("Retry-After" = u32, description = "Seconds"))),
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
pub(crate) async fn remove_background(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    require_token(&caller)?;
    caller.require(Scope::JobsWrite)?;
    let headers = req.headers().clone();
    let form = read_form(&state, req).await?;
    let format = output_format(form.field("output_format"))?;
    let file = form.file.ok_or_else(|| {
        ApiError::unprocessable(
            "missing_input",
            "multipart field 'file' (the image) is required",
        )
    })?;
    let p = params(&state.settings, format);
    p.validate()
        .map_err(|e| ApiError::unprocessable(e.code, e.to_string()))?;
    let job = submit_and_wait(
        &state,
        Submission {
            owner: caller.owner,
            operation: Operation::RemoveBackground(p),
            input: Some(InputRef::Upload(file)),
            extra_inputs: Vec::new(),
            idempotency_key: None,
            notify: Default::default(),
            request_id: crate::request_id::of(&headers),
        },
    )
    .await?;
    match job.status {
        JobStatus::Succeeded => result_bytes(&state, &job).await,
        JobStatus::Failed | JobStatus::Canceled => Err(ended_without_result(job)),
        JobStatus::Queued | JobStatus::Processing => Ok(still_running(&headers, &job)),
    }
}

/// 200 with a succeeded job's result bytes.
async fn result_bytes(state: &AppState, job: &Job) -> Result<Response, ApiError> {
    let result = result_of(job)?;
    let bytes = state.blobs.get(&result.key).await?;
    let content_type =
        HeaderValue::from_str(&result.content_type).map_err(|_| shared::Error::Corrupt {
            what: "job result",
            message: "content type is not a header value".into(),
        })?;
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(
        "x-job-id",
        HeaderValue::from_str(&job.id.to_string()).expect("ULIDs are ASCII"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /metrics/?window_hours=N` (JWT with `metrics:read`): the caller's usage over the last
/// N hours (1–720, default 24), as `GET /v1/metrics`.
///
/// # Errors
/// 401 `token_required` for an API key; 403 `insufficient_scope`; 400 `invalid_params`.
#[utoipa::path(
    get,
    path = "/metrics/",
    tag = "compat-002-jwt-removal",
    security(("jwt" = [])),
    params(("window_hours" = Option<u32>, Query, minimum = 1, maximum = 720, description = "1–720 (default 24)")),
    responses(
        (status = 200, description = "The `/v1/metrics` body (JWT with `metrics:read`)", body = crate::openapi::UsageMetrics),
        (status = 400, description = "`invalid_params`", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential, or `token_required`: an API key where a JWT is needed", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn metrics(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require_token(&caller)?;
    let hours = crate::metrics::window_hours(&query)?;
    Ok(Json(crate::metrics::usage(&state, &caller, hours).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn output_formats_are_case_insensitive() {
        assert_eq!(output_format(None).unwrap(), OutputFormat::Png);
        assert_eq!(output_format(Some("")).unwrap(), OutputFormat::Png);
        assert_eq!(output_format(Some("PNG")).unwrap(), OutputFormat::Png);
        assert_eq!(output_format(Some("jpg")).unwrap(), OutputFormat::Jpeg);
        assert_eq!(output_format(Some("Jpeg")).unwrap(), OutputFormat::Jpeg);
        assert_eq!(output_format(Some("webp")).unwrap(), OutputFormat::Webp);
        let err = output_format(Some("GIF")).unwrap_err();
        assert_eq!(err.code(), "invalid_params");
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn jpeg_gets_a_white_background() {
        let s = shared::config::Settings::new("t", "q", "b");
        let p = params(&s, OutputFormat::Jpeg);
        assert_eq!(p.background_color.unwrap().to_string(), "#ffffff");
        assert!(p.validate().is_ok());
        assert_eq!(params(&s, OutputFormat::Png).background_color, None);
        let png = params(&s, OutputFormat::Png);
        assert_eq!(
            (png.model.as_str(), png.model_fallback),
            (LEGACY_MODEL, true)
        );
    }
}
