//! `POST /v1/uploads`: a presigned S3 PUT URL for images too large for API Gateway (10 MB) and
//! Lambda (6 MB) request bodies. The client PUTs the bytes straight to S3, then creates a job
//! whose `input` is the returned `s3://` URI.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use shared::auth::Scope;
use shared::core::Upload;
use shared::resources::UPLOADS_PREFIX;

use crate::body::{InvalidJson, parse_json};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// Content types an upload may declare.
const ACCEPTED: &[&str] = &["image/jpeg", "image/png", "image/webp"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadRequest {
    content_type: String,
    content_length: u64,
}

/// `POST /v1/uploads` with `{"content_type", "content_length"}`: 201 with `{upload_id, url,
/// method, headers, input, expires_at}`.
///
/// # Errors
/// 403 `insufficient_scope` without `jobs:write`; 400 `invalid_json`, `invalid_params` (a
/// zero length); 415 `unsupported_image` for a type other than JPEG, PNG or WebP; 413
/// `payload_too_large` over the image byte limit; 503 when the store fails.
#[utoipa::path(
    post,
    path = "/v1/uploads",
    tag = "account",
    security(("api_key" = []), ("jwt" = [])),
    request_body(content((crate::openapi::UploadRequest = "application/json"))),
    responses(
        (status = 201, description = "A presigned S3 PUT URL and the `input` for `POST /v1/jobs`", body = crate::openapi::UploadResponse),
        (status = 400, description = "`invalid_json`, `invalid_params` (a zero length)", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 413, description = "`payload_too_large`: `content_length` over the image byte limit (25 MiB)", body = crate::openapi::ErrorBody),
        (status = 415, description = "`unsupported_image`: a type other than JPEG, PNG or WebP", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn create_upload(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let req: UploadRequest = parse_json(&body, InvalidJson::BadRequest)?;
    if !ACCEPTED.contains(&req.content_type.as_str()) {
        return Err(ApiError::Domain(shared::Error::Invalid {
            code: "unsupported_image",
            message: format!(
                "content_type '{}' is not one of {}",
                req.content_type,
                ACCEPTED.join(", ")
            ),
        }));
    }
    let limit = state.settings.limits.max_bytes;
    if req.content_length == 0 {
        return Err(ApiError::bad_request(
            "invalid_params",
            "content_length must be at least 1 byte",
        ));
    }
    if req.content_length > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "content_length {} is over the {limit}-byte limit",
            req.content_length
        )));
    }
    let id = ulid::Ulid::new().to_string();
    let key = format!("{UPLOADS_PREFIX}{}/{id}", caller.owner);
    let ttl = state.settings.uploads.url_ttl;
    let expires_at = OffsetDateTime::now_utc() + ttl;
    let upload = Upload {
        id: id.clone(),
        key: key.clone(),
        content_type: req.content_type.clone(),
        content_length: req.content_length,
        // The record outlives the URL by a day, as long as the object's lifecycle rule.
        expires_at: (expires_at + time::Duration::days(1)).unix_timestamp(),
    };
    state.uploads.put_upload(&caller.owner, &upload).await?;
    let url = state
        .blobs
        .presign_put(&key, &req.content_type, req.content_length, ttl)
        .await?;
    let body = json!({
        "upload_id": id,
        "url": url,
        "method": "PUT",
        "headers": {"content-type": req.content_type, "content-length": req.content_length.to_string()},
        "input": format!("s3://{}/{key}", state.blobs.bucket()),
        "expires_at": expires_at.format(&time::format_description::well_known::Rfc3339).map_err(|e| shared::Error::Config(e.to_string()))?,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
