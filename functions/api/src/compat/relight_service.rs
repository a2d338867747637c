//! Replaces the "Replace Background and Relight Microservice" (FastAPI over Stability AI).
//!
//! The relight service's one route, over the job service:
//!
//! | route | answer | canonical |
//! |---|---|---|
//! | `POST /replace-background-relight` (JSON) | 200 `{"s3_url"}`, or 202 `{"job_id", "status", "status_url", "result_url"}` | `POST /v1/jobs` (`replace_background_relight`) + `Prefer: wait=25` |
//!
//! The body is the original's `ReplaceBackgroundRelightInput`, every field: `subject_image`
//! (required), `background_prompt`, `background_reference`, `foreground_prompt`,
//! `negative_prompt`, `preserve_original_subject`, `original_background_depth`,
//! `keep_original_background`, `light_source_strength`, `light_reference`,
//! `light_source_direction`, `seed`, `output_format`. Images are `s3://` URIs or S3 object URLs
//! of this deployment's bucket (the caller's own objects: `uploads/{owner}/…`,
//! `inputs/{owner}/…`, `results/{owner}/…`, `inbox/{owner}/…`), or public `https://` URLs
//! ([`super::request::input_reference`]). As the original's client sent them: empty strings mean
//! "absent", `light_source_direction: "none"` means no direction, and `light_source_strength`
//! is dropped when neither a direction nor a `light_reference` steers the light (Stability only
//! takes it with one of them). Unknown fields are ignored, as Pydantic did.
//!
//! `s3_url` is the virtual-hosted object URL of the job's stored result,
//! `https://{bucket}.s3.amazonaws.com/results/{owner}/{job_id}.{ext}` (the bucket is private,
//! as the original's was: read it with AWS credentials, or through `GET /v1/jobs/{id}/result`).

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use shared::auth::Scope;
use shared::job::{JobStatus, Operation};
use shared::operation::relight::{GenFormat, LightDirection, RelightParams};
use shared::service::{InputRef, Submission};

use super::request::input_reference;
use super::response::{ended_without_result, result_of, still_running, submit_and_wait};
use crate::body::{InvalidJson, read_json};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// The relight service's route.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(replace_background_relight))
}

/// The original's request body (`ReplaceBackgroundRelightInput`).
#[derive(Debug, Default, Deserialize)]
struct RelightInput {
    subject_image: Option<String>,
    background_prompt: Option<String>,
    background_reference: Option<String>,
    foreground_prompt: Option<String>,
    negative_prompt: Option<String>,
    preserve_original_subject: Option<f64>,
    original_background_depth: Option<f64>,
    keep_original_background: Option<bool>,
    light_source_strength: Option<f64>,
    light_reference: Option<String>,
    light_source_direction: Option<String>,
    seed: Option<u64>,
    output_format: Option<String>,
}

/// `Some(text)` unless absent or blank.
fn present(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// A validated request: the job parameters and the image references.
#[derive(Debug)]
struct RelightRequest {
    params: RelightParams,
    subject: String,
    background_reference: Option<String>,
    light_reference: Option<String>,
}

/// Maps the body onto [`RelightParams`] (defaults of the contract for absent numbers).
///
/// # Errors
/// 422 `missing_input` without `subject_image`; 422 `invalid_params` naming the field.
fn validate(input: RelightInput) -> Result<RelightRequest, ApiError> {
    let invalid = |e: shared::operation::ParamError| ApiError::unprocessable(e.code, e.to_string());
    let subject = present(input.subject_image).ok_or_else(|| {
        ApiError::unprocessable(
            "missing_input",
            "subject_image: required (an S3 or https URL of the product image)",
        )
    })?;
    let background_reference = present(input.background_reference);
    let light_reference = present(input.light_reference);
    let direction = match present(input.light_source_direction)
        .map(|d| d.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("none") => None,
        Some("left") => Some(LightDirection::Left),
        Some("right") => Some(LightDirection::Right),
        Some("above") => Some(LightDirection::Above),
        Some("below") => Some(LightDirection::Below),
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_params",
                format!(
                    "light_source_direction: '{other}' is not one of none, left, right, above, below"
                ),
            ));
        }
    };
    let output_format = match present(input.output_format)
        .map(|f| f.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("png") => GenFormat::Png,
        Some("jpeg" | "jpg") => GenFormat::Jpeg,
        Some("webp") => GenFormat::Webp,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_params",
                format!("output_format: '{other}' is not one of png, jpeg, webp"),
            ));
        }
    };
    let steered = direction.is_some() || light_reference.is_some();
    let mut params = RelightParams::with_prompt("");
    params.background_prompt = present(input.background_prompt);
    params.foreground_prompt = present(input.foreground_prompt);
    params.negative_prompt = present(input.negative_prompt);
    if let Some(v) = input.preserve_original_subject {
        params.preserve_original_subject = v;
    }
    if let Some(v) = input.original_background_depth {
        params.original_background_depth = v;
    }
    params.keep_original_background = input.keep_original_background.unwrap_or(false);
    params.light_source_direction = direction;
    params.light_source_strength = input.light_source_strength.filter(|_| steered);
    params.seed = input.seed.filter(|s| *s != 0);
    params.output_format = output_format;
    params.validate().map_err(invalid)?;
    params
        .check_with_inputs(background_reference.is_some(), light_reference.is_some())
        .map_err(invalid)?;
    Ok(RelightRequest {
        params,
        subject,
        background_reference,
        light_reference,
    })
}

/// `POST /replace-background-relight` (API key or token with `jobs:write`; JSON): synchronous
/// to the client.
///
/// Submits a `replace_background_relight` job (the subject as the job's image, the references
/// as its `background_reference` / `light_reference` inputs), waits up to the API's limit, and
/// answers **200** `{"s3_url"}`. Still running then: **202** `{"job_id", "status",
/// "status_url", "result_url"}` ([`super::response::still_running`]).
///
/// # Errors
/// 415 for another media type; 413 over the limit; 422 `missing_input`, `invalid_params`,
/// `invalid_json` (a body that does not parse or a field of the wrong type: FastAPI answered
/// 422 for both); 400 `invalid_input_reference`; the
/// input codes of `POST /v1/jobs` (`input_not_found`, `input_fetch_failed`, image codes); a
/// failed job's own code ([`crate::error::sync_failure_status`]); 409 `job_canceled`.
#[utoipa::path(
    post,
    path = "/replace-background-relight",
    tag = "compat-000-relight",
    security(("api_key" = []), ("jwt" = [])),
    request_body(content((crate::openapi::RelightInput = "application/json"))),
    responses(
        (status = 200, description = "The stored result's object URL; canonical: `POST /v1/jobs` (`replace_background_relight`) with `Prefer: wait=25`", body = crate::openapi::RelightAnswer),
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
pub(crate) async fn replace_background_relight(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let headers = req.headers().clone();
    let request = validate(read_json(&state, req, InvalidJson::Unprocessable).await?)?;
    let bucket = state.blobs.bucket().to_owned();
    let subject = input_reference(&bucket, &request.subject)?;
    let mut extra_inputs: Vec<(String, InputRef)> = Vec::new();
    for (name, reference) in [
        ("background_reference", &request.background_reference),
        ("light_reference", &request.light_reference),
    ] {
        if let Some(r) = reference {
            extra_inputs.push((name.to_owned(), input_reference(&bucket, r)?));
        }
    }
    let job = submit_and_wait(
        &state,
        Submission {
            owner: caller.owner,
            operation: Operation::ReplaceBackgroundRelight(request.params),
            input: Some(subject),
            extra_inputs,
            idempotency_key: None,
            notify: Default::default(),
            request_id: crate::request_id::of(&headers),
        },
    )
    .await?;
    match job.status {
        JobStatus::Succeeded => {
            let key = &result_of(&job)?.key;
            Ok(Json(json!({"s3_url": object_url(&bucket, key)})).into_response())
        }
        JobStatus::Failed | JobStatus::Canceled => Err(ended_without_result(job)),
        JobStatus::Queued | JobStatus::Processing => Ok(still_running(&headers, &job)),
    }
}

/// The object URL in the original's form, `https://{bucket}.s3.amazonaws.com/{key}` (each
/// path segment percent-encoded).
fn object_url(bucket: &str, key: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    format!(
        "https://{bucket}.s3.amazonaws.com/{}",
        percent_encoding::utf8_percent_encode(key, SEGMENT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn readme_example() -> RelightInput {
        serde_json::from_value(json!({
          "subject_image": "https://myawesomebucket.s3.us-east-1.amazonaws.com/app/images/aquaphor.jpg",
          "background_prompt": "a smooth pink pastel backdrop",
          "background_reference": "https://myawesomebucket.s3.us-east-1.amazonaws.com/app/images/backdrop.jpg",
          "foreground_prompt": "",
          "negative_prompt": "",
          "preserve_original_subject": 0.95,
          "original_background_depth": 0.5,
          "keep_original_background": false,
          "light_source_strength": 0.3,
          "light_reference": "",
          "light_source_direction": "none",
          "seed": 42,
          "output_format": "png"
        }))
        .unwrap()
    }

    #[test]
    fn the_readme_example_maps_onto_the_job_params() {
        let r = validate(readme_example()).unwrap();
        assert_eq!(
            r.params.background_prompt.as_deref(),
            Some("a smooth pink pastel backdrop")
        );
        assert_eq!(r.params.foreground_prompt, None);
        assert_eq!(r.params.negative_prompt, None);
        assert_eq!(r.params.preserve_original_subject, 0.95);
        assert_eq!(r.params.original_background_depth, 0.5);
        assert!(!r.params.keep_original_background);
        assert_eq!(r.params.light_source_direction, None);
        assert_eq!(r.params.light_source_strength, None, "not steered: dropped");
        assert_eq!(r.params.seed, Some(42));
        assert_eq!(r.params.output_format, GenFormat::Png);
        assert!(r.background_reference.is_some());
        assert_eq!(r.light_reference, None);

        let mut steered = readme_example();
        steered.light_source_direction = Some("above".into());
        let r = validate(steered).unwrap();
        assert_eq!(r.params.light_source_direction, Some(LightDirection::Above));
        assert_eq!(r.params.light_source_strength, Some(0.3));
    }

    #[test]
    fn bad_bodies_are_422() {
        let code = |input: RelightInput| {
            let e = validate(input).unwrap_err();
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
            e.code().to_owned()
        };
        let mut missing = readme_example();
        missing.subject_image = Some(" ".into());
        assert_eq!(code(missing), "missing_input");
        let mut bad = readme_example();
        bad.preserve_original_subject = Some(1.5);
        assert_eq!(code(bad), "invalid_params");
        let mut bad = readme_example();
        bad.light_source_direction = Some("sideways".into());
        assert_eq!(code(bad), "invalid_params");
        let mut bad = readme_example();
        bad.output_format = Some("gif".into());
        assert_eq!(code(bad), "invalid_params");
        let mut nothing = readme_example();
        nothing.background_prompt = None;
        nothing.background_reference = None;
        assert_eq!(code(nothing), "invalid_params");
    }

    #[test]
    fn object_urls_have_the_readme_form() {
        assert_eq!(
            object_url("myawesomebucket", "results/acme@x/01J.png"),
            "https://myawesomebucket.s3.amazonaws.com/results/acme%40x/01J.png"
        );
    }
}
