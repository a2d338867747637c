//! Replaces the "Background Removal Service" (FastAPI, asynchronous).
//!
//! The async background-removal service's routes, over the job service: submit, poll,
//! download.
//!
//! `POST /process` needs the API key (HTTP Basic with the key as user name, i.e. the key in the
//! client's base URL `http://KEY:@host` (`requests` sends no credential without the colon), or `Authorization: Bearer` / `X-API-Key`). Its answer's
//! `processing_id` is a random UUID v4 (122 random bits, like the original's) stored as a
//! capability pointer next to the job; `GET /status/{id}` and `GET /download/{id}` take no
//! credential, exactly as the service's clients call them: the id itself is the secret, as a
//! presigned URL is. It expires with the job (`JOB_TTL_DAYS`, DynamoDB TTL and the S3
//! lifecycle rules).
//!
//! | route | answer | canonical |
//! |---|---|---|
//! | `POST /process` | 202 `{"processing_id", "status_url", "message"}` | `POST /v1/jobs` |
//! | `GET /status/{processing_id}` | 200 `{"processing_id", "status": "processing" \| "completed" \| "failed"}` | `GET /v1/jobs/{id}` |
//! | `GET /download/{processing_id}` | the bytes, `Content-Disposition: attachment; filename="{id}.{ext}"`; 423 while processing | `GET /v1/jobs/{id}/result` |

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use email_address::EmailAddress;
use serde_json::json;
use std::str::FromStr;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use shared::auth::Scope;
use shared::core::{Capability, Created};
use shared::job::{Job, JobError, JobStatus, Notify, Operation};
use shared::operation::remove_background::RemoveBackgroundParams;
use shared::service::{InputRef, Submission};

use super::request::{LegacyForm, engine, model_fallback, read_form};
use super::response::{absolute, extension};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// The async background-removal service's routes.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(process))
        .routes(routes!(status))
        .routes(routes!(download))
}

/// The models the service accepts (its `MODEL_NAMES`); `u2net` is its default.
pub const ACCEPTED_MODELS: &[&str] = &["u2net", "u2netp", "u2net_human_seg"];

/// The `message` of a 202 from `POST /process`, word for word.
pub const PROCESS_MESSAGE: &str = "Processing started. Check your email when done.";

/// A validated `POST /process` form: the job parameters and the notification address.
#[derive(Debug, Clone, PartialEq)]
struct ProcessRequest {
    params: RemoveBackgroundParams,
    email: String,
}

/// Validates the form fields (unknown fields are ignored, as FastAPI did).
///
/// - `email`: required, RFC 5322 syntax (`email_address`);
/// - `model`: `u2net` (default), `u2netp`, `u2net_human_seg`; the engine that runs is
///   [`engine`] of it (`COMPAT_MODEL` when set);
/// - `output_format`: `png` (default), `jpg`, `jpeg`, any case; JPEG is composited on white;
/// - `quality`: integer 1–100, default 95; `scale`: number 0.1–1.0, default 1.0.
///
/// # Errors
/// 422 `invalid_email`, `unknown_model` or `invalid_params`, naming the field.
fn validate(
    settings: &shared::config::Settings,
    form: &LegacyForm,
) -> Result<ProcessRequest, ApiError> {
    let email = form.field("email").map(str::trim).unwrap_or_default();
    if email.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "email: required (the address told when processing ends)",
        ));
    }
    let email = EmailAddress::from_str(email).map_err(|e| {
        ApiError::unprocessable(
            "invalid_email",
            format!("email: '{email}' is not a valid address ({e})"),
        )
    })?;
    let model = match form.field("model").map(str::trim).filter(|m| !m.is_empty()) {
        None => ACCEPTED_MODELS[0],
        Some(m) if ACCEPTED_MODELS.contains(&m) => m,
        Some(m) => {
            return Err(ApiError::unprocessable(
                "unknown_model",
                format!("model: '{m}' is not one of {}", ACCEPTED_MODELS.join(", ")),
            ));
        }
    };
    let format = form
        .field("output_format")
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "png".to_owned());
    if !matches!(format.as_str(), "png" | "jpg" | "jpeg") {
        return Err(ApiError::unprocessable(
            "invalid_params",
            format!("output_format: '{format}' is not one of png, jpg, jpeg"),
        ));
    }
    let engine = engine(settings, Some(model));
    let mut pairs = vec![
        ("model", engine.as_str()),
        ("output_format", format.as_str()),
    ];
    for name in ["quality", "scale"] {
        if let Some(v) = form.field(name).filter(|v| !v.trim().is_empty()) {
            pairs.push((name, v));
        }
    }
    if format != "png" {
        pairs.push(("background_color", "#ffffff"));
    }
    if model_fallback(settings) {
        pairs.push(("model_fallback", "true"));
    }
    let params = RemoveBackgroundParams::from_pairs(pairs, &settings.models.default_model)
        .map_err(|e| ApiError::unprocessable(e.code, e.to_string()))?;
    Ok(ProcessRequest {
        params,
        email: email.as_str().to_owned(),
    })
}

/// `POST /process` (API key with `jobs:write`; multipart `file`, `email`, `model`,
/// `output_format`, `quality`, `scale`): **202** `{"processing_id", "status_url", "message"}`.
///
/// The job is an ordinary `remove_background` job with `notify.email` set; `status_url` is
/// absolute, built from the request's `Host` and `X-Forwarded-Proto`, and carries no
/// credential. Everything is validated before anything is written.
///
/// # Errors
/// 401/403 for the key; 422 `missing_input`, `invalid_email`, `unknown_model`,
/// `invalid_params`; the image codes of `POST /v1/jobs`; 503 when a dependency fails (a job
/// whose pointer could not be stored is canceled again).
#[utoipa::path(
    post,
    path = "/process",
    tag = "compat-003-async-removal",
    security(("api_key" = []), ("jwt" = []), ("basic" = [])),
    request_body(content((crate::openapi::ProcessForm = "multipart/form-data"))),
    responses(
        (status = 202, description = "Started; canonical: `POST /v1/jobs` with `email`", body = crate::openapi::ProcessAccepted),
        (status = 400, description = "`invalid_multipart`, parameter codes", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body or image is over the byte limit (25 MiB)", body = crate::openapi::ErrorBody),
        (status = 415, description = "`unsupported_media_type` (request body type) or `unsupported_image` (not JPEG, PNG or WebP)", body = crate::openapi::ErrorBody),
        (status = 422, description = "`missing_input`, `invalid_email`, `unknown_model`, `invalid_params`, the image codes", body = crate::openapi::ErrorBody),
        (status = 429, description = "`rate_limited` (more than `MAX_JOBS_PER_MINUTE` jobs created this minute) or `too_many_jobs_in_flight` (`MAX_JOBS_IN_FLIGHT` queued + processing)", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds until a retry can succeed"))),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn process(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let headers = req.headers().clone();
    let form = read_form(&state, req).await?;
    let file = form.file.clone().ok_or_else(|| {
        ApiError::unprocessable("missing_input", "file: required (the image to process)")
    })?;
    let request = validate(&state.settings, &form)?;
    let created = state
        .submitter
        .submit(Submission {
            owner: caller.owner.clone(),
            operation: Operation::RemoveBackground(request.params),
            input: Some(InputRef::Upload(file)),
            extra_inputs: Vec::new(),
            idempotency_key: None,
            request_id: crate::request_id::of(&headers),
            notify: Notify {
                webhook_url: None,
                email: Some(request.email),
            },
        })
        .await?;
    let job = match created {
        Created::New(job) | Created::Replayed(job) => job,
    };
    let capability = Capability {
        id: uuid::Uuid::new_v4().hyphenated().to_string(),
        owner: job.owner.clone(),
        job_id: job.id,
        expires_at: job.expires_at,
    };
    if let Err(e) = state.capabilities.put_capability(&capability).await {
        tracing::error!(job_id = %job.id, error = %e, "capability not stored; canceling the job");
        if let Err(undo) = state
            .provider_transitions
            .cancel(&job.owner, job.id, OffsetDateTime::now_utc())
            .await
        {
            tracing::error!(job_id = %job.id, error = %undo, "could not cancel the unreachable job");
        }
        return Err(e.into());
    }
    tracing::info!(job_id = %job.id, processing_id = %capability.id, "async background removal started");
    let status_url = absolute(&headers, &format!("/status/{}", capability.id));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "processing_id": capability.id,
            "status_url": status_url,
            "message": PROCESS_MESSAGE,
        })),
    )
        .into_response())
}

/// The job a `processing_id` opens, without a credential.
///
/// # Errors
/// 404 `processing_not_found` for a malformed, unknown or expired id (all alike).
async fn resolve(state: &AppState, raw: &str) -> Result<(String, Job), ApiError> {
    let not_found = || ApiError::ProcessingNotFound(raw.to_owned());
    let id = uuid::Uuid::parse_str(raw)
        .map_err(|_| not_found())?
        .hyphenated()
        .to_string();
    let now = OffsetDateTime::now_utc();
    let capability = state
        .capabilities
        .find_capability(&id, now)
        .await?
        .ok_or_else(not_found)?;
    let job = state
        .store
        .get(&capability.owner, capability.job_id)
        .await?
        .filter(|j| j.expires_at > now.unix_timestamp())
        .ok_or_else(not_found)?;
    Ok((id, job))
}

/// The service's status word: `queued` and `processing` are `processing`, `succeeded` is
/// `completed`, `failed` and `canceled` are `failed`.
pub fn legacy_status(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued | JobStatus::Processing => "processing",
        JobStatus::Succeeded => "completed",
        JobStatus::Failed | JobStatus::Canceled => "failed",
    }
}

/// `GET /status/{processing_id}` (no credential): 200 `{"processing_id", "status"}`.
///
/// # Errors
/// 404 `processing_not_found`.
#[utoipa::path(
    get,
    path = "/status/{processing_id}",
    tag = "compat-003-async-removal",
    security(()),
    params(("processing_id" = String, Path, description = "The UUID v4 from `POST /process`")),
    responses(
        (status = 200, description = "`processing`, `completed` or `failed`", body = crate::openapi::ProcessingStatus),
        (status = 404, description = "`processing_not_found`: unknown or expired", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn status(
    State(state): State<AppState>,
    Path(processing_id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, job) = resolve(&state, &processing_id).await?;
    let mut resp =
        Json(json!({"processing_id": id, "status": legacy_status(job.status)})).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /download/{processing_id}` (no credential): 200 with the image bytes, its
/// `Content-Type` and `Content-Disposition: attachment; filename="{processing_id}.{ext}"`
/// (`png` or `jpg`).
///
/// # Errors
/// 404 `processing_not_found`; 423 `job_not_finished` while processing; 409 with the job's own
/// code when it failed, `job_canceled` when canceled.
#[utoipa::path(
    get,
    path = "/download/{processing_id}",
    tag = "compat-003-async-removal",
    security(()),
    params(("processing_id" = String, Path, description = "The UUID v4 from `POST /process`")),
    responses(
        (status = 200, description = "The result's bytes, `Content-Disposition: attachment; filename=\"{processing_id}.png\"` (`.jpg`)", content((Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"))),
        (status = 404, description = "`processing_not_found`", body = crate::openapi::ErrorBody),
        (status = 409, description = "The job failed (its own code) or `job_canceled`", body = crate::openapi::ErrorBody),
        (status = 423, description = "`job_not_finished`", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn download(
    State(state): State<AppState>,
    Path(processing_id): Path<String>,
) -> Result<Response, ApiError> {
    let (id, job) = resolve(&state, &processing_id).await?;
    match job.status {
        JobStatus::Queued | JobStatus::Processing => Err(ApiError::NotFinished(job.status)),
        JobStatus::Failed => {
            Err(ApiError::JobFailed(job.error.unwrap_or_else(|| {
                JobError::new("failed", "the job failed")
            })))
        }
        JobStatus::Canceled => Err(ApiError::JobCanceled),
        JobStatus::Succeeded => {
            let result = job.result.ok_or_else(|| shared::Error::Corrupt {
                what: "job record",
                message: "succeeded without a result".into(),
            })?;
            let bytes = state.blobs.get(&result.key).await?;
            let content_type = HeaderValue::from_str(&result.content_type).map_err(|_| {
                shared::Error::Corrupt {
                    what: "job result",
                    message: "content type is not a header value".into(),
                }
            })?;
            let disposition = format!(
                "attachment; filename=\"{id}.{}\"",
                extension(&result.content_type)
            );
            let mut resp = bytes.into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, content_type);
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("a UUID and an extension are ASCII"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(resp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> LegacyForm {
        LegacyForm {
            file: None,
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn settings() -> shared::config::Settings {
        shared::config::Settings::new("t", "q", "b")
    }

    #[test]
    fn the_readme_form_maps_onto_the_job_params() {
        let r = validate(
            &settings(),
            &form(&[
                ("email", "you@example.com"),
                ("model", "u2netp"),
                ("output_format", "png"),
                ("quality", "90"),
                ("scale", "1.0"),
            ]),
        )
        .unwrap();
        assert_eq!(r.email, "you@example.com");
        assert_eq!(r.params.model, "u2netp");
        assert_eq!(r.params.quality, 90);
        assert_eq!(r.params.scale, 1.0);
        assert_eq!(r.params.background_color, None);

        let r = validate(
            &settings(),
            &form(&[
                ("email", "a@b.co"),
                ("output_format", "JPG"),
                ("ignored", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(r.params.model, "u2net", "the service's default model");
        assert!(
            r.params.model_fallback,
            "a stand-in runs when u2net is not deployed"
        );
        assert_eq!(r.params.output_format.as_str(), "jpeg");
        assert_eq!(r.params.background_color.unwrap().to_string(), "#ffffff");
        assert_eq!(r.params.quality, 95);

        let mut local = settings();
        local.models.compat_model = Some("plain-background".into());
        let r = validate(&local, &form(&[("email", "a@b.co"), ("model", "u2net")])).unwrap();
        assert_eq!(r.params.model, "plain-background");
        assert!(
            !r.params.model_fallback,
            "a pinned COMPAT_MODEL runs as named"
        );
    }

    #[test]
    fn bad_fields_are_422_with_their_codes() {
        let code = |fields: &[(&str, &str)]| {
            let e = validate(&settings(), &form(fields)).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
            e.code().to_owned()
        };
        assert_eq!(code(&[]), "invalid_email");
        assert_eq!(code(&[("email", "not-an-address")]), "invalid_email");
        assert_eq!(
            code(&[("email", "a@b.co"), ("model", "isnet-anime")]),
            "unknown_model"
        );
        assert_eq!(
            code(&[("email", "a@b.co"), ("output_format", "webp")]),
            "invalid_params"
        );
        assert_eq!(
            code(&[("email", "a@b.co"), ("quality", "0")]),
            "invalid_params"
        );
        assert_eq!(
            code(&[("email", "a@b.co"), ("quality", "high")]),
            "invalid_params"
        );
        assert_eq!(
            code(&[("email", "a@b.co"), ("scale", "2")]),
            "invalid_params"
        );
    }

    #[test]
    fn statuses_collapse_to_the_legacy_words() {
        assert_eq!(legacy_status(JobStatus::Queued), "processing");
        assert_eq!(legacy_status(JobStatus::Processing), "processing");
        assert_eq!(legacy_status(JobStatus::Succeeded), "completed");
        assert_eq!(legacy_status(JobStatus::Failed), "failed");
        assert_eq!(legacy_status(JobStatus::Canceled), "failed");
    }
}
