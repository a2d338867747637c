//! The job routes: create, read, list, result.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use ulid::Ulid;

use shared::core::{Created, ListQuery};
use shared::job::{Job, JobStatus, Operation, OwnerId};
use shared::operation::remove_background::RemoveBackgroundParams;
use shared::service::{InputRef, Submission};

use crate::body::{InvalidJson, content_type, multipart, multipart_error, read_json};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;
use shared::auth::{Principal, Scope};

/// Longest `Prefer: wait=N` honoured, in seconds (API Gateway's integration timeout is 30 s).
pub const MAX_WAIT_SECONDS: u64 = 25;
/// How often a waiting request re-reads the job.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// A job as the API shows it: the record plus links.
#[derive(Serialize)]
pub(crate) struct JobView<'a> {
    #[serde(flatten)]
    job: &'a Job,
    links: Links,
}

#[derive(Serialize)]
struct Links {
    #[serde(rename = "self")]
    this: String,
    result: String,
}

/// A job's canonical path, `/v1/jobs/{id}`: its `Location`, and the base of its links.
pub(crate) fn job_path(id: Ulid) -> String {
    format!("/v1/jobs/{id}")
}

/// The job as every `/v1` route shows it: the record's fields plus
/// `"links": {"self", "result"}`.
pub(crate) fn view(job: &Job) -> JobView<'_> {
    JobView {
        job,
        links: Links {
            this: job_path(job.id),
            result: format!("{}/result", job_path(job.id)),
        },
    }
}

/// Parses `Prefer: wait=N` (RFC 7240); `None` when absent.
fn prefer_wait(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("prefer") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("invalid_prefer", "Prefer header is not ASCII"))?;
    for pref in text.split([',', ';']) {
        if let Some(n) = pref.trim().strip_prefix("wait=") {
            let secs: u64 = n.trim().parse().map_err(|_| {
                ApiError::bad_request(
                    "invalid_prefer",
                    format!("Prefer: wait={n} is not a whole number of seconds"),
                )
            })?;
            if secs > MAX_WAIT_SECONDS {
                return Err(ApiError::bad_request(
                    "invalid_prefer",
                    format!("Prefer: wait={secs} is over the {MAX_WAIT_SECONDS} s maximum"),
                ));
            }
            return Ok(Some(secs));
        }
    }
    Ok(None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJobJson {
    #[serde(default)]
    operation: Option<String>,
    /// The job image; optional only for `generate` in `text` mode.
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    params: Option<serde_json::Map<String, serde_json::Value>>,
    /// Further named image references (`background_reference`, `light_reference`,
    /// `reference_1` … `reference_9`).
    #[serde(default)]
    inputs: std::collections::BTreeMap<String, String>,
    /// Receives the signed job-end event (see [`shared::notification`]).
    #[serde(default)]
    webhook_url: Option<String>,
    /// Receives a job-end e-mail.
    #[serde(default)]
    email: Option<String>,
}

/// Checks the notification targets of a new job (before anything is stored): `webhook_url`
/// must be https (http with `ALLOW_HTTP_URLS`) and not a literal non-public address,
/// `email` a plain address. Empty values mean none.
///
/// # Errors
/// 422 `invalid_webhook_url`, 422 `invalid_email`.
fn notify_targets(
    state: &AppState,
    webhook_url: Option<String>,
    email: Option<String>,
) -> Result<shared::job::Notify, ApiError> {
    let given = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let settings = &state.settings;
    Ok(shared::job::Notify {
        webhook_url: given(webhook_url)
            .map(|u| {
                shared::notification::validate_webhook_url(
                    &u,
                    settings.egress.allow_http_urls,
                    settings.egress.allow_private_urls,
                )
            })
            .transpose()?,
        email: given(email)
            .map(|e| shared::notification::validate_email(&e))
            .transpose()?,
    })
}

/// Multipart fields / `inputs` names that carry further named images (a file, or an
/// `s3://`/`https://` text): relight's references and edit's `reference_1` … `reference_9`.
fn is_extra_input(name: &str) -> bool {
    shared::operation::relight::RELIGHT_REFERENCE_INPUTS.contains(&name)
        || shared::operation::edit::EDIT_REFERENCE_INPUTS.contains(&name)
}

fn operation_from_pairs(
    name: Option<&str>,
    pairs: &[(String, String)],
    default_model: &str,
) -> Result<Operation, ApiError> {
    match name.unwrap_or("remove_background") {
        "remove_background" => Ok(Operation::RemoveBackground(
            RemoveBackgroundParams::from_pairs(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                default_model,
            )
            .map_err(shared::Error::from)?,
        )),
        "replace_background_relight" => Ok(Operation::ReplaceBackgroundRelight(
            shared::operation::relight::RelightParams::from_pairs(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(shared::Error::from)?,
        )),
        "edit" => Ok(Operation::Edit(
            shared::operation::edit::EditParams::from_pairs(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(shared::Error::from)?,
        )),
        "generate" => Ok(Operation::Generate(
            shared::operation::generate::GenerateParams::from_pairs(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(shared::Error::from)?,
        )),
        other => Err(unknown_operation(other)),
    }
}

fn operation_from_json(
    name: Option<&str>,
    params: Option<serde_json::Map<String, serde_json::Value>>,
    default_model: &str,
) -> Result<Operation, ApiError> {
    match name.unwrap_or("remove_background") {
        "remove_background" => {
            let mut params = params.unwrap_or_default();
            params
                .entry("model")
                .or_insert_with(|| json!(default_model));
            let p: RemoveBackgroundParams =
                serde_json::from_value(serde_json::Value::Object(params))
                    .map_err(|e| ApiError::bad_request("invalid_params", format!("params: {e}")))?;
            p.validate().map_err(shared::Error::from)?;
            Ok(Operation::RemoveBackground(p))
        }
        "replace_background_relight" => Ok(Operation::ReplaceBackgroundRelight(
            shared::operation::relight::RelightParams::from_json(params.unwrap_or_default())
                .map_err(shared::Error::from)?,
        )),
        "edit" => Ok(Operation::Edit(
            shared::operation::edit::EditParams::from_json(params.unwrap_or_default())
                .map_err(shared::Error::from)?,
        )),
        "generate" => Ok(Operation::Generate(
            shared::operation::generate::GenerateParams::from_json(params.unwrap_or_default())
                .map_err(shared::Error::from)?,
        )),
        other => Err(unknown_operation(other)),
    }
}

fn unknown_operation(name: &str) -> ApiError {
    ApiError::bad_request(
        "unknown_operation",
        format!(
            "unknown operation '{name}'; accepted: {}",
            shared::job::OPERATION_NAMES.join(", ")
        ),
    )
}

/// Reads the request into a submission: multipart (`file` + fields) or JSON (`input`
/// reference + `params`).
async fn read_submission(
    state: &AppState,
    owner: OwnerId,
    idempotency_key: Option<String>,
    req: Request,
) -> Result<Submission, ApiError> {
    let content_type = content_type(req.headers());
    let request_id = crate::request_id::of(req.headers());
    let default_model = state.settings.models.default_model.as_str();
    let (operation, input, extra_inputs, notify) = if content_type
        .starts_with("multipart/form-data")
    {
        let mut multipart = multipart(state, req).await?;
        let mut file: Option<Bytes> = None;
        let mut reference: Option<String> = None;
        let mut op_name: Option<String> = None;
        let mut pairs = Vec::new();
        let mut extra_inputs = Vec::new();
        let (mut webhook_url, mut email) = (None, None);
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            match name.as_str() {
                n if is_extra_input(n) => {
                    let input = if field.file_name().is_some() {
                        InputRef::Upload(field.bytes().await.map_err(multipart_error)?)
                    } else {
                        InputRef::parse_reference(&field.text().await.map_err(multipart_error)?)?
                    };
                    extra_inputs.push((name, input));
                }
                "file" | "subject_image" => {
                    file = Some(field.bytes().await.map_err(multipart_error)?)
                }
                "input" => reference = Some(field.text().await.map_err(multipart_error)?),
                "operation" => op_name = Some(field.text().await.map_err(multipart_error)?),
                "webhook_url" => webhook_url = Some(field.text().await.map_err(multipart_error)?),
                "email" => email = Some(field.text().await.map_err(multipart_error)?),
                _ => {
                    let value = field.text().await.map_err(multipart_error)?;
                    pairs.push((name, value));
                }
            }
        }
        let operation = operation_from_pairs(op_name.as_deref(), &pairs, default_model)?;
        let input = match (file, reference) {
            (Some(bytes), None) => Some(InputRef::Upload(bytes)),
            (None, Some(r)) => Some(InputRef::parse_reference(&r)?),
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    "send either a file or an input reference, not both",
                ));
            }
            // Whether the operation can do without is the submitter's call.
            (None, None) => None,
        };
        let notify = notify_targets(state, webhook_url, email)?;
        (operation, input, extra_inputs, notify)
    } else if content_type.starts_with("application/json") {
        // The content type is known to be JSON here, so only the limit and the parse can fail.
        let parsed: CreateJobJson = read_json(state, req, InvalidJson::BadRequest).await?;
        let operation =
            operation_from_json(parsed.operation.as_deref(), parsed.params, default_model)?;
        let mut extra_inputs = Vec::new();
        for (name, reference) in parsed.inputs {
            if !is_extra_input(&name) {
                return Err(ApiError::bad_request(
                    "invalid_input",
                    format!(
                        "inputs.{name} is not accepted (accepted: {}, reference_1 … reference_9)",
                        shared::operation::relight::RELIGHT_REFERENCE_INPUTS.join(", ")
                    ),
                ));
            }
            extra_inputs.push((name, InputRef::parse_reference(&reference)?));
        }
        let notify = notify_targets(state, parsed.webhook_url, parsed.email)?;
        let input = match parsed.input.as_deref() {
            Some(r) => Some(InputRef::parse_reference(r)?),
            None => None,
        };
        (operation, input, extra_inputs, notify)
    } else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{content_type}' is not accepted: use multipart/form-data (field 'file') or application/json (field 'input')"
        )));
    };
    Ok(Submission {
        owner,
        operation,
        input,
        extra_inputs,
        idempotency_key,
        notify,
        request_id,
    })
}

/// `POST /v1/jobs`: 202 with the job and `Location`; 200 when it is already finished (an
/// idempotent replay, or `Prefer: wait=N` and it finished in time).
///
/// # Errors
/// 401 without a valid credential; 403 `insufficient_scope` without `jobs:write`; 400
/// `invalid_prefer`, `invalid_idempotency_key`, `invalid_multipart`, `invalid_json`,
/// `invalid_input`, `unknown_operation` and the parameters' codes; 415 `unsupported_media_type`;
/// 413 `payload_too_large`; 422 `invalid_webhook_url`, `invalid_email` and the input codes;
/// whatever [`shared::service::JobSubmitter::submit`] refuses (409 `idempotency_key_reused`,
/// 429 quotas, 503 `dependency_unavailable`).
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    security(("api_key" = []), ("jwt" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1–255 printable characters, kept 24 h: the same key with the same request returns the same job"), ("Prefer" = Option<String>, Header, description = "`wait=N` (N ≤ 25 seconds): hold the answer until the job finishes or N seconds pass")),
    request_body(description = "JSON with an input reference, or a multipart form with the image as `file`", content((crate::openapi::CreateJobJson = "application/json"), (crate::openapi::CreateJobForm = "multipart/form-data"))),
    responses(
        (status = 200, description = "The job, already finished (an idempotent replay, or `Prefer: wait` and it finished in time)", body = crate::openapi::JobDoc, headers(("Location" = String, description = "`/v1/jobs/{id}`"), ("X-RateLimit-Limit" = u32, description = "Jobs this owner may create per minute (`MAX_JOBS_PER_MINUTE`)"), ("X-RateLimit-Remaining" = u32, description = "Jobs this owner may still create in the current minute"), ("X-RateLimit-Reset" = u32, description = "Seconds until the current minute's window ends and Remaining is back to Limit"), ("Idempotent-Replayed" = String, description = "`true` on a replay"), ("Preference-Applied" = String, description = "`wait=N`"))),
        (status = 202, description = "Accepted: the job, queued", body = crate::openapi::JobDoc, headers(("Location" = String, description = "`/v1/jobs/{id}`"), ("X-RateLimit-Limit" = u32, description = "Jobs this owner may create per minute (`MAX_JOBS_PER_MINUTE`)"), ("X-RateLimit-Remaining" = u32, description = "Jobs this owner may still create in the current minute"), ("X-RateLimit-Reset" = u32, description = "Seconds until the current minute's window ends and Remaining is back to Limit"), ("Idempotent-Replayed" = String, description = "`true` on a replay"), ("Preference-Applied" = String, description = "`wait=N`"))),
        (status = 400, description = "`invalid_prefer`, `invalid_idempotency_key`, `invalid_multipart`, `invalid_json`, `invalid_input`, `invalid_input_reference`, `unknown_operation`, `invalid_params`, `unknown_model`, and the other parameter codes", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 409, description = "`idempotency_key_reused`: the key was used for a different request", body = crate::openapi::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body or image is over the byte limit (25 MiB)", body = crate::openapi::ErrorBody),
        (status = 415, description = "`unsupported_media_type` (request body type) or `unsupported_image` (not JPEG, PNG or WebP)", body = crate::openapi::ErrorBody),
        (status = 422, description = "`empty_image`, `invalid_image`, `image_too_large`, `input_not_found`, `input_fetch_failed`, `url_address_not_allowed`, `too_many_redirects`, `upload_mismatch`, `invalid_webhook_url`, `invalid_email`, `invalid_url`", body = crate::openapi::ErrorBody),
        (status = 429, description = "`rate_limited` or `too_many_jobs_in_flight`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds until a retry can succeed"), ("X-RateLimit-Limit" = u32, description = "Jobs this owner may create per minute (`MAX_JOBS_PER_MINUTE`)"), ("X-RateLimit-Remaining" = u32, description = "Jobs this owner may still create in the current minute"), ("X-RateLimit-Reset" = u32, description = "Seconds until the current minute's window ends and Remaining is back to Limit"))),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn create_job(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let owner = caller.owner;
    let headers = req.headers().clone();
    let wait = prefer_wait(&headers)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key is not ASCII")
                })?
                .to_owned(),
        ),
    };
    let submission = read_submission(&state, owner.clone(), idempotency_key, req).await?;
    let created = match state.submitter.submit(submission).await {
        Ok(created) => created,
        Err(e) => {
            let per_minute = matches!(
                &e,
                shared::Error::QuotaExceeded { code, .. } if *code == "rate_limited"
            );
            let retry_after = match &e {
                shared::Error::QuotaExceeded {
                    retry_after_seconds,
                    ..
                } => *retry_after_seconds,
                _ => 0,
            };
            let mut resp = ApiError::from(e).into_response();
            if per_minute {
                let limit = state.settings.jobs.max_per_minute;
                rate_limit_headers(resp.headers_mut(), limit, 0, retry_after);
            }
            return Ok(resp);
        }
    };
    let (mut job, replayed) = match created {
        Created::New(job) => (job, false),
        Created::Replayed(job) => (job, true),
    };
    if let Some(secs) = wait.filter(|s| *s > 0) {
        job = wait_for_job(&state, job, Duration::from_secs(secs)).await?;
    }
    let status = if job.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut resp = (status, Json(view(&job))).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&job_path(job.id)).expect("ULIDs are ASCII"),
    );
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(secs) = wait {
        h.insert(
            "preference-applied",
            HeaderValue::from_str(&format!("wait={secs}")).expect("ASCII"),
        );
    }
    let now = time::OffsetDateTime::now_utc();
    match state.store.created_in_minute(&owner, now).await {
        Ok(used) => {
            let limit = state.settings.jobs.max_per_minute;
            let reset = 60 - now.unix_timestamp().rem_euclid(60) as u64;
            rate_limit_headers(resp.headers_mut(), limit, limit.saturating_sub(used), reset);
        }
        // The job exists; a missing header is better than a failed answer.
        Err(e) => tracing::warn!(error = %e, "could not read the per-minute job counter"),
    }
    Ok(resp)
}

/// Sets `X-RateLimit-Limit` (jobs an owner may create per UTC minute, `MAX_JOBS_PER_MINUTE`),
/// `X-RateLimit-Remaining` (how many more it may create in the current minute) and
/// `X-RateLimit-Reset` (seconds until that minute ends and the count starts again). The
/// separate in-flight quota (`MAX_JOBS_IN_FLIGHT`, queued + processing) is not a window and
/// shows only as 429 `too_many_jobs_in_flight` with `Retry-After`.
fn rate_limit_headers(h: &mut HeaderMap, limit: u32, remaining: u32, reset_seconds: u64) {
    h.insert("x-ratelimit-limit", limit.into());
    h.insert("x-ratelimit-remaining", remaining.into());
    h.insert("x-ratelimit-reset", reset_seconds.into());
}

/// Re-reads `job` until it is terminal or `wait` has passed (`Prefer: wait=N`, and the
/// synchronous compatibility routes); returns the last state read.
///
/// # Errors
/// [`ApiError::Domain`] when the store cannot be read.
pub(crate) async fn wait_for_job(
    state: &AppState,
    mut job: Job,
    wait: Duration,
) -> Result<Job, ApiError> {
    let deadline = Instant::now() + wait;
    while !job.status.is_terminal() && Instant::now() < deadline {
        tokio::time::sleep(WAIT_POLL).await;
        if let Some(j) = state.store.get(&job.owner, job.id).await? {
            job = j;
        }
    }
    Ok(job)
}

fn parse_job_id(raw: &str) -> Result<Ulid, ApiError> {
    // Anything that is not a ULID cannot be a job of ours: same answer as an unknown id.
    Ulid::from_string(raw).map_err(|_| ApiError::JobNotFound(raw.to_owned()))
}

/// The caller's job (needs `jobs:read`); another owner's id is a 404 like an unknown one.
///
/// # Errors
/// 403 `insufficient_scope`; 404 `job_not_found`; 503 when the store fails.
pub(crate) async fn load_job(
    state: &AppState,
    caller: &Principal,
    raw_id: &str,
) -> Result<Job, ApiError> {
    caller.require(Scope::JobsRead)?;
    let owner = &caller.owner;
    let id = parse_job_id(raw_id)?;
    state
        .store
        .get(owner, id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(raw_id.to_owned()))
}

/// `GET /v1/jobs/{id}`: 200 with the job (the record plus `links`, as [`view`] builds it).
///
/// # Errors
/// As [`load_job`].
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    security(("api_key" = []), ("jwt" = [])),
    params(("id" = String, Path, description = "The job's ULID (26 characters)")),
    responses(
        (status = 200, description = "The job", body = crate::openapi::JobDoc),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 404, description = "`job_not_found`: unknown id, or another owner's job", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load_job(&state, &caller, &id).await?;
    Ok(Json(view(&job)).into_response())
}

/// `GET /v1/jobs/{id}/result[?index=N]`: 303 to a presigned URL of the result (or of output
/// `N`, 0-based, of a multi-output job).
///
/// # Errors
/// As [`load_job`]; 400 `invalid_params` for an `index` that is not a whole number; 423
/// `job_not_finished` while unfinished; 409 with the job's own code when it failed,
/// `job_canceled` when canceled; 404 `result_not_found` for an index past the last output.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/result",
    tag = "jobs",
    security(("api_key" = []), ("jwt" = [])),
    params(("id" = String, Path, description = "The job's ULID (26 characters)"), ("index" = Option<u32>, Query, minimum = 0, description = "0-based output of a multi-output job (default 0)")),
    responses(
        (status = 303, description = "See the result: a presigned S3 GET URL (`RESULT_URL_TTL_SECONDS`, default 900 s)", headers(("Location" = String, description = "Presigned URL"))),
        (status = 400, description = "`invalid_params`: `index` is not a whole number", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 404, description = "`job_not_found`; `result_not_found` for an index past the last output", body = crate::openapi::ErrorBody),
        (status = 409, description = "The job failed (its own code, e.g. `invalid_image`) or `job_canceled`", body = crate::openapi::ErrorBody),
        (status = 423, description = "`job_not_finished`: queued or processing (`error.status` says which)", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn get_result(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let job = load_job(&state, &caller, &id).await?;
    let image = result_image(job, &query)?;
    let url = state
        .blobs
        .presign_get(&image.key, state.settings.jobs.result_url_ttl)
        .await?;
    let mut resp = StatusCode::SEE_OTHER.into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&url).map_err(|_| shared::Error::Corrupt {
            what: "presigned URL",
            message: "not a valid header value".into(),
        })?,
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The output a result request (`?index=N`, 0-based, default 0) names: for `GET
/// /v1/jobs/{id}/result` and the console's byte route, which must refuse alike.
///
/// # Errors
/// 400 `invalid_params` for an `index` that is not a whole number; 423 `job_not_finished`
/// while unfinished; 409 with the job's own code when it failed, `job_canceled` when
/// canceled; 404 `result_not_found` for an index past the last output.
pub(crate) fn result_image(
    job: Job,
    query: &HashMap<String, String>,
) -> Result<shared::job::ResultImage, ApiError> {
    let index: usize = match query.get("index") {
        None => 0,
        Some(v) => v.parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_params",
                format!("index '{v}' must be a whole number"),
            )
        })?,
    };
    match job.status {
        JobStatus::Queued | JobStatus::Processing => Err(ApiError::NotFinished(job.status)),
        JobStatus::Failed => {
            Err(ApiError::JobFailed(job.error.unwrap_or_else(|| {
                shared::job::JobError::new("failed", "the job failed")
            })))
        }
        JobStatus::Canceled => Err(ApiError::JobCanceled),
        JobStatus::Succeeded => {
            let result = job.result.ok_or_else(|| shared::Error::Corrupt {
                what: "job record",
                message: "succeeded without a result".into(),
            })?;
            if index == 0 {
                return Ok(shared::job::ResultImage {
                    key: result.key,
                    content_type: result.content_type,
                    width: result.width,
                    height: result.height,
                    bytes: result.bytes,
                });
            }
            let outputs = result.images.len().max(1);
            result.images.into_iter().nth(index).ok_or_else(|| {
                ApiError::ResultNotFound(format!(
                    "job {} has {outputs} output(s); index {index} is past the last",
                    job.id
                ))
            })
        }
    }
}

/// `GET /v1/jobs?limit=&cursor=&status=`: `{"jobs": [job…], "next_cursor"}`, newest first
/// (`limit` 1–100, default 20).
///
/// # Errors
/// 403 `insufficient_scope` without `jobs:read`; 400 `invalid_params` for a bad value or an
/// unknown parameter; 503 when the store fails.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    security(("api_key" = []), ("jwt" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size, 1–100 (default 20)"), ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"), ("status" = Option<crate::openapi::JobStatusDoc>, Query, description = "Only jobs in this status")),
    responses(
        (status = 200, description = "The caller's jobs, newest first", body = crate::openapi::JobListDoc),
        (status = 400, description = "`invalid_params` (a bad value or an unknown parameter), `invalid_cursor`", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsRead)?;
    let owner = caller.owner;
    let mut q = ListQuery {
        limit: 20,
        ..ListQuery::default()
    };
    for (key, value) in &query {
        match key.as_str() {
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=100).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_params",
                            format!("limit '{value}' must be an integer 1–100"),
                        )
                    })?;
            }
            "cursor" => q.cursor = Some(value.clone()),
            "status" => {
                q.status = Some(value.parse().map_err(|m: String| {
                    ApiError::bad_request("invalid_params", format!("status: {m}"))
                })?);
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_params",
                    format!("unknown query parameter '{other}'; accepted: limit, cursor, status"),
                ));
            }
        }
    }
    let page = state.store.list(&owner, &q).await?;
    let jobs: Vec<_> = page.jobs.iter().map(view).collect();
    Ok(Json(json!({"jobs": jobs, "next_cursor": page.next_cursor})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn prefer_wait_is_bounded() {
        assert_eq!(prefer_wait(&headers(&[])).unwrap(), None);
        assert_eq!(
            prefer_wait(&headers(&[("prefer", "respond-async, wait=10")])).unwrap(),
            Some(10)
        );
        assert_eq!(
            prefer_wait(&headers(&[("prefer", "wait=26")]))
                .unwrap_err()
                .code(),
            "invalid_prefer"
        );
        assert_eq!(
            prefer_wait(&headers(&[("prefer", "wait=soon")]))
                .unwrap_err()
                .code(),
            "invalid_prefer"
        );
    }

    #[test]
    fn json_params_get_the_default_model_and_validation() {
        let op = operation_from_json(None, None, "plain-background").unwrap();
        let Operation::RemoveBackground(p) = op else {
            panic!("default operation is remove_background");
        };
        assert_eq!(p.model, "plain-background");
        let params = serde_json::from_value(json!({"scale": 3.0})).unwrap();
        assert_eq!(
            operation_from_json(None, Some(params), "u2net")
                .unwrap_err()
                .code(),
            "invalid_params"
        );
        assert_eq!(
            operation_from_json(Some("paint"), None, "u2net")
                .unwrap_err()
                .code(),
            "unknown_operation"
        );
    }
}
