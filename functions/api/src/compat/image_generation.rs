//! Replaces the "Image Generation API" (FastAPI, diffusion models).
//!
//! The image-generation service's routes, over the job service, running `generate` on fal.ai's
//! Seedream v4:
//!
//! | route | answer | canonical |
//! |---|---|---|
//! | `POST /v1/images/memory` `{"user_id", "prompt", "num_inference_steps"}` | `{"data": [{"s3_uri"}]}` | `POST /v1/jobs` (`generate`, mode `memory`) + `Prefer: wait=25` |
//! | `POST /v1/images/subject` `{"user_id", "num_inference_steps"}` | `{"data": [{"s3_uri"}]}` | `POST /v1/jobs` (`generate`, mode `subject`) + `Prefer: wait=25` |
//! | `POST /v1/images/generations` `{"prompt", "num_inference_steps", "reference_image_url"}` | `{"data": [{"url"}]}` | `POST /v1/jobs` (`generate`, mode `text`) + `Prefer: wait=25` |
//! | `GET /health/` | `{"status": "healthy", "message": "Image generation service is ready", "checks"}` | `GET /health` ([`super::health::legacy_health`], shared with the JWT background-removal service) |
//! | `GET /` | `{"message", "version", "endpoints"}` | none |
//!
//! **Tenancy.** The original read `avatars/{user_id}` from a bucket of its own. Here the bucket
//! is shared by every tenant, so each prefix is scoped by the caller's owner (the API key's):
//! the avatar is read from `{S3_AVATAR_PREFIX}{owner}/{user_id}`, the photo from
//! `{S3_SUBJECT_PREFIX}{owner}/{user_id}`, and illustrations are written to
//! `{S3_GENERATED_PREFIX}{owner}/{user_id}/{memory|subject}_{job_id}.{ext}`. A `user_id` can
//! therefore never name another tenant's object: it is one path segment (1–128 characters of
//! `A–Z a–z 0–9 _ - . @`, not `.` or `..`) inside the caller's own prefix. The object found is
//! the newest of `{prefix}{owner}/{user_id}`, `{prefix}{owner}/{user_id}.{jpg|jpeg|png|webp}`
//! and anything under `{prefix}{owner}/{user_id}/`.
//!
//! **Results.** `s3_uri` names a copy of the job's result made under the generated prefix when
//! the request sees the job finish (objects there do not expire with the job; the canonical
//! result under `results/` does). `url` is a presigned GET URL of the result
//! (`RESULT_URL_TTL_SECONDS`). A job still running at the wait limit is a 202 with the
//! canonical job routes ([`super::response::still_running`]); no copy is made for it.
//!
//! `num_inference_steps` (1–150) is accepted and recorded; Seedream has no step count.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use shared::auth::{Principal, Scope};
use shared::job::{Job, JobStatus, Operation, OwnerId};
use shared::operation::edit::GenerationOptions;
use shared::operation::generate::{GenerateMode, GenerateParams};
use shared::service::{InputRef, Submission};

use super::request::input_reference;
use super::response::{ended_without_result, extension, result_of, still_running, submit_and_wait};
use crate::body::{InvalidJson, read_json};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// The image-generation service's routes (its `GET /health/` is
/// [`super::health::legacy_health`]).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .routes(routes!(memory))
        .routes(routes!(subject))
        .routes(routes!(generations))
}

/// Longest accepted `user_id`, in characters.
const MAX_USER_ID_CHARS: usize = 128;
/// Image extensions recognised after `{user_id}.` in an avatar or photo key.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp"];
/// Most keys looked at under one user's prefix.
const MAX_CANDIDATES: usize = 1000;

/// The body of `POST /v1/images/memory` and `POST /v1/images/subject` (for `subject`,
/// `prompt` is an optional addition to the portrait).
#[derive(Debug, Deserialize)]
struct UserImageRequest {
    user_id: Option<String>,
    prompt: Option<String>,
    num_inference_steps: Option<u32>,
}

/// `POST /v1/images/generations`' body.
#[derive(Debug, Deserialize)]
struct GenerationsRequest {
    prompt: Option<String>,
    num_inference_steps: Option<u32>,
    reference_image_url: Option<String>,
}

/// `GET /` (no credential): a static welcome naming the routes, as the original's root did.
#[utoipa::path(
    get,
    path = "/",
    tag = "compat-001-generation",
    security(()),
    responses(
        (status = 200, description = "A static welcome naming the routes", body = crate::openapi::Welcome),
    )
)]
pub(crate) async fn root() -> Response {
    Json(json!({
        "message": "Welcome to the Image Generation API",
        "version": "1.0.0",
        "endpoints": {
            "memory": "/v1/images/memory",
            "subject": "/v1/images/subject",
            "generations": "/v1/images/generations",
            "health": "/health/",
        },
    }))
    .into_response()
}

/// Checks a `user_id`: one key segment of 1–128 characters of `A–Z a–z 0–9 _ - . @`, not `.`
/// or `..`.
///
/// # Errors
/// 422 `invalid_params`.
fn user_id(raw: Option<&str>) -> Result<String, ApiError> {
    let id = raw.map(str::trim).unwrap_or_default();
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_USER_ID_CHARS
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(ApiError::unprocessable(
            "invalid_params",
            format!(
                "user_id: required, 1–{MAX_USER_ID_CHARS} characters of A–Z a–z 0–9 _ - . @ (not . or ..)"
            ),
        ))
    }
}

/// The `generate` parameters, validated.
///
/// # Errors
/// 422 `invalid_params` naming the field.
fn params(
    mode: GenerateMode,
    prompt: Option<String>,
    steps: Option<u32>,
) -> Result<GenerateParams, ApiError> {
    let p = GenerateParams {
        mode,
        prompt: prompt.filter(|p| !p.trim().is_empty()),
        num_inference_steps: steps,
        options: GenerationOptions::default(),
    };
    p.validate()
        .map_err(|e| ApiError::unprocessable(e.code, e.to_string()))?;
    Ok(p)
}

/// Whether `key` is `{user_prefix}`, `{user_prefix}.{ext}` or under `{user_prefix}/`.
fn belongs_to(user_prefix: &str, key: &str) -> bool {
    match key.strip_prefix(user_prefix) {
        Some("") => true,
        Some(rest) if rest.starts_with('/') => rest.len() > 1,
        Some(rest) => rest.strip_prefix('.').is_some_and(|ext| {
            IMAGE_EXTENSIONS
                .iter()
                .any(|known| ext.eq_ignore_ascii_case(known))
        }),
        None => false,
    }
}

/// The user's newest image under `{prefix}{owner}/{user_id}` ([`belongs_to`]), read whole.
///
/// # Errors
/// 422 `input_not_found` naming where it was looked for; 413 over the byte limit; 503.
async fn user_image(
    state: &AppState,
    prefix: &str,
    what: &str,
    owner: &OwnerId,
    user: &str,
) -> Result<InputRef, ApiError> {
    let user_prefix = format!("{prefix}{owner}/{user}");
    let newest = state
        .blobs
        .list(&user_prefix, MAX_CANDIDATES)
        .await?
        .into_iter()
        .filter(|o| belongs_to(&user_prefix, &o.key))
        .max_by(|a, b| {
            (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key))
        })
        .ok_or_else(|| {
            ApiError::unprocessable(
                "input_not_found",
                format!(
                    "no {what} for user_id '{user}': expected s3://{}/{user_prefix} (or .jpg/.png/.webp, or an object under {user_prefix}/)",
                    state.blobs.bucket()
                ),
            )
        })?;
    let limit = state.settings.limits.max_bytes;
    if newest.size > limit {
        return Err(
            shared::Error::from(shared::image_check::ImageRejection::TooManyBytes {
                actual: newest.size,
                limit,
            })
            .into(),
        );
    }
    Ok(InputRef::Upload(state.blobs.get(&newest.key).await?))
}

/// Submits a `generate` job for the caller and waits up to the API's limit.
async fn run(
    state: &AppState,
    caller: &Principal,
    params: GenerateParams,
    input: Option<InputRef>,
    request_id: Option<String>,
) -> Result<Job, ApiError> {
    submit_and_wait(
        state,
        Submission {
            owner: caller.owner.clone(),
            operation: Operation::Generate(params),
            input,
            extra_inputs: Vec::new(),
            idempotency_key: None,
            notify: Default::default(),
            request_id,
        },
    )
    .await
}

/// The answer of the memory and subject routes: the result copied to
/// `{S3_GENERATED_PREFIX}{owner}/{user_id}/{mode}_{job_id}.{ext}`, named as `s3_uri`.
async fn generated_answer(
    state: &AppState,
    headers: &HeaderMap,
    job: Job,
    user: &str,
    mode: &str,
) -> Result<Response, ApiError> {
    match job.status {
        JobStatus::Succeeded => {
            let result = result_of(&job)?;
            let key = format!(
                "{}{}/{user}/{mode}_{}.{}",
                state.settings.illustrations.generated,
                job.owner,
                job.id,
                extension(&result.content_type)
            );
            let bytes = state.blobs.get(&result.key).await?;
            state.blobs.put(&key, bytes, &result.content_type).await?;
            let uri = format!("s3://{}/{key}", state.blobs.bucket());
            Ok(Json(json!({"data": [{"s3_uri": uri}]})).into_response())
        }
        JobStatus::Failed | JobStatus::Canceled => Err(ended_without_result(job)),
        JobStatus::Queued | JobStatus::Processing => Ok(still_running(headers, &job)),
    }
}

/// `POST /v1/images/memory` (API key or token with `jobs:write`; JSON `user_id`, `prompt`,
/// `num_inference_steps`): the prompt illustrated with the user's avatar as identity reference;
/// **200** `{"data": [{"s3_uri": "s3://{bucket}/generated/{owner}/{user_id}/memory_{job_id}.png"}]}`.
///
/// # Errors
/// 415 for another media type; 413 over the limit; 422 `invalid_json` (a body that does not
/// parse or a field of the wrong type: FastAPI answered 422 for both), `invalid_params`,
/// `input_not_found` (no avatar); a failed job's own code; 202 is not an error
/// ([`super::response::still_running`]).
#[utoipa::path(
    post,
    path = "/v1/images/memory",
    tag = "compat-001-generation",
    security(("api_key" = []), ("jwt" = [])),
    request_body(content((crate::openapi::UserImageRequest = "application/json"))),
    responses(
        (status = 200, description = "`s3://{bucket}/generated/{owner}/{user_id}/memory_{job_id}.png`; canonical: `POST /v1/jobs` (`generate`, mode `memory`)", body = crate::openapi::GeneratedList),
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
pub(crate) async fn memory(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let prefix = state.settings.illustrations.avatar.clone();
    from_user_image(
        &state,
        &caller,
        req,
        GenerateMode::Memory,
        &prefix,
        "avatar",
        "memory",
    )
    .await
}

/// `POST /v1/images/subject` (API key or token with `jobs:write`; JSON `user_id`,
/// `num_inference_steps`, optional `prompt`): a professional portrait from the user's photo;
/// **200** `{"data": [{"s3_uri": "s3://{bucket}/generated/{owner}/{user_id}/subject_{job_id}.png"}]}`.
///
/// # Errors
/// As [`memory`], `input_not_found` naming the missing photo.
#[utoipa::path(
    post,
    path = "/v1/images/subject",
    tag = "compat-001-generation",
    security(("api_key" = []), ("jwt" = [])),
    request_body(content((crate::openapi::UserImageRequest = "application/json"))),
    responses(
        (status = 200, description = "`s3://{bucket}/generated/{owner}/{user_id}/subject_{job_id}.png`; canonical: `POST /v1/jobs` (`generate`, mode `subject`)", body = crate::openapi::GeneratedList),
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
pub(crate) async fn subject(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let prefix = state.settings.illustrations.subject.clone();
    from_user_image(
        &state,
        &caller,
        req,
        GenerateMode::Subject,
        &prefix,
        "subject photo",
        "subject",
    )
    .await
}

/// `memory` and `subject`: the user's stored image (`{prefix}{owner}/{user_id}`, called
/// `label` in errors) through a generate job in `mode`, answered as `{name}_{job_id}.png`.
async fn from_user_image(
    state: &AppState,
    caller: &Principal,
    req: Request,
    mode: GenerateMode,
    prefix: &str,
    label: &str,
    name: &str,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let headers = req.headers().clone();
    let body: UserImageRequest = read_json(state, req, InvalidJson::Unprocessable).await?;
    let user = user_id(body.user_id.as_deref())?;
    let p = params(mode, body.prompt, body.num_inference_steps)?;
    let image = user_image(state, prefix, label, &caller.owner, &user).await?;
    let job = run(
        state,
        caller,
        p,
        Some(image),
        crate::request_id::of(&headers),
    )
    .await?;
    generated_answer(state, &headers, job, &user, name).await
}

/// `POST /v1/images/generations` (API key or token with `jobs:write`; JSON `prompt`,
/// `num_inference_steps`, optional `reference_image_url`: an `s3://` URI or S3 object URL of
/// one of the caller's objects in this bucket, or a public `https://` URL): **200**
/// `{"data": [{"url": "<presigned GET URL of the result>"}]}`.
///
/// # Errors
/// 422 `invalid_json`, `invalid_params`; 400 `invalid_input_reference`; the input codes of
/// `POST /v1/jobs`; a failed job's own code.
#[utoipa::path(
    post,
    path = "/v1/images/generations",
    tag = "compat-001-generation",
    security(("api_key" = []), ("jwt" = [])),
    request_body(content((crate::openapi::GenerationsRequest = "application/json"))),
    responses(
        (status = 200, description = "A presigned GET URL of the result; canonical: `POST /v1/jobs` (`generate`, mode `text`)", body = crate::openapi::GeneratedList),
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
pub(crate) async fn generations(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let headers = req.headers().clone();
    let body: GenerationsRequest = read_json(&state, req, InvalidJson::Unprocessable).await?;
    let p = params(GenerateMode::Text, body.prompt, body.num_inference_steps)?;
    let reference = match body
        .reference_image_url
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(r) => Some(input_reference(state.blobs.bucket(), r)?),
        None => None,
    };
    let job = run(
        &state,
        &caller,
        p,
        reference,
        crate::request_id::of(&headers),
    )
    .await?;
    match job.status {
        JobStatus::Succeeded => {
            let key = &result_of(&job)?.key;
            let url = state
                .blobs
                .presign_get(key, state.settings.jobs.result_url_ttl)
                .await?;
            Ok(Json(json!({"data": [{"url": url}]})).into_response())
        }
        JobStatus::Failed | JobStatus::Canceled => Err(ended_without_result(job)),
        JobStatus::Queued | JobStatus::Processing => Ok(still_running(&headers, &job)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn user_ids_are_one_safe_segment() {
        assert_eq!(user_id(Some(" user123 ")).unwrap(), "user123");
        assert_eq!(user_id(Some("a.b@c-d_e")).unwrap(), "a.b@c-d_e");
        for bad in [
            None,
            Some(""),
            Some(".."),
            Some("."),
            Some("a/b"),
            Some("../x"),
            Some("a b"),
        ] {
            let e = user_id(bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
            assert_eq!(e.code(), "invalid_params");
        }
        assert!(user_id(Some(&"u".repeat(129))).is_err());
    }

    #[test]
    fn only_the_users_own_keys_match() {
        let p = "avatars/acme/user1";
        assert!(belongs_to(p, "avatars/acme/user1"));
        assert!(belongs_to(p, "avatars/acme/user1.png"));
        assert!(belongs_to(p, "avatars/acme/user1.JPEG"));
        assert!(belongs_to(p, "avatars/acme/user1/face.jpg"));
        assert!(!belongs_to(p, "avatars/acme/user12.png"));
        assert!(!belongs_to(p, "avatars/acme/user1.b.png"));
        assert!(!belongs_to(p, "avatars/acme/user1/"));
        assert!(!belongs_to(p, "avatars/acme/user1-old.png"));
    }

    #[test]
    fn prompts_are_required_except_for_subject() {
        assert!(params(GenerateMode::Subject, None, Some(50)).is_ok());
        assert_eq!(
            params(GenerateMode::Memory, Some(" ".into()), None)
                .unwrap_err()
                .code(),
            "invalid_params"
        );
        assert_eq!(
            params(GenerateMode::Text, Some("a fox".into()), Some(500))
                .unwrap_err()
                .code(),
            "invalid_params"
        );
        let p = params(GenerateMode::Text, Some("a fox".into()), Some(50)).unwrap();
        assert_eq!(p.num_inference_steps, Some(50));
    }
}
