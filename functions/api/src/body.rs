//! Reading request bodies: the content type, multipart forms and JSON. One place, so that the
//! `/v1` routes and the compatibility routes refuse the same mistakes with the same codes; where
//! a route's answer must differ (the compatibility routes' 422), the caller says so.

use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// The request's `Content-Type`, lower-cased; empty when absent or not visible ASCII.
pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Opens a `multipart/form-data` body; its fields are then read with [`multipart_error`].
///
/// # Errors
/// 400 `invalid_multipart` when the body cannot be a multipart form (no boundary, say).
pub(crate) async fn multipart(state: &AppState, req: Request) -> Result<Multipart, ApiError> {
    Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))
}

/// The error of reading a multipart field: 413 `payload_too_large` when the body is over the
/// router's limit, else 400 `invalid_multipart`.
pub(crate) fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("request body is over the limit: {}", e.body_text()))
    } else {
        ApiError::bad_request("invalid_multipart", e.body_text())
    }
}

/// How a route answers a JSON body that does not parse into its type (malformed, a missing or
/// unknown field, a field of the wrong type). The code is `invalid_json` either way and the
/// message starts `request body: ` with serde's reason.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InvalidJson {
    /// 400: the `/v1` routes.
    BadRequest,
    /// 400, the message ending ` (expected {shape})`: routes whose body is small enough to
    /// show.
    BadRequestExpecting(&'static str),
    /// 422: the compatibility routes, as the FastAPI services they replace answered both a
    /// malformed body and a field of the wrong type.
    Unprocessable,
}

impl InvalidJson {
    fn error(self, e: &serde_json::Error) -> ApiError {
        match self {
            Self::BadRequest => ApiError::bad_request("invalid_json", format!("request body: {e}")),
            Self::BadRequestExpecting(shape) => ApiError::bad_request(
                "invalid_json",
                format!("request body: {e} (expected {shape})"),
            ),
            Self::Unprocessable => {
                ApiError::unprocessable("invalid_json", format!("request body: {e}"))
            }
        }
    }
}

/// Parses a body already read into `T`.
///
/// # Errors
/// `invalid_json`, 400 or 422 as `invalid` says.
pub(crate) fn parse_json<T: DeserializeOwned>(
    body: &[u8],
    invalid: InvalidJson,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| invalid.error(&e))
}

/// Reads a JSON request body, up to the image byte limit, into `T`.
///
/// # Errors
/// 415 `unsupported_media_type` unless the `Content-Type` is `application/json`; 413
/// `payload_too_large` over the limit; `invalid_json` as [`parse_json`].
pub(crate) async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    req: Request,
    invalid: InvalidJson,
) -> Result<T, ApiError> {
    let content_type = content_type(req.headers());
    if !content_type.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{content_type}' is not accepted: send application/json"
        )));
    }
    let limit = state.settings.image_limits.max_bytes as usize;
    let body = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge("JSON body is over the limit".into()))?;
    parse_json(&body, invalid)
}
