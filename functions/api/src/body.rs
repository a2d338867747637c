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
    let limit = state.settings.limits.max_bytes as usize;
    let body = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge("JSON body is over the limit".into()))?;
    parse_json(&body, invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        n: u32,
    }

    #[test]
    fn a_body_that_does_not_parse_is_invalid_json_with_the_routes_status() {
        let refuse = |invalid| parse_json::<Body>(br#"{"n": "x"}"#, invalid).unwrap_err();
        let e = refuse(InvalidJson::BadRequest);
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, "invalid_json")
        );
        assert!(
            e.to_string().starts_with("request body: invalid type"),
            "{e}"
        );
        let e = refuse(InvalidJson::Unprocessable);
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_json")
        );
        assert!(
            e.to_string().starts_with("request body: invalid type"),
            "{e}"
        );
        let e = refuse(InvalidJson::BadRequestExpecting(r#"{"n": 1}"#));
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::BAD_REQUEST, "invalid_json")
        );
        assert!(e.to_string().ends_with(r#" (expected {"n": 1})"#), "{e}");
        assert_eq!(
            parse_json::<Body>(br#"{"n": 7}"#, InvalidJson::BadRequest)
                .unwrap()
                .n,
            7
        );
    }

    #[test]
    fn content_types_are_lower_cased_and_empty_when_absent() {
        let mut h = HeaderMap::new();
        assert_eq!(content_type(&h), "");
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(content_type(&h), "application/json; charset=utf-8");
    }
}
