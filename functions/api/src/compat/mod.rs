//! Compatibility routes: the HTTP shapes of the FastAPI services imagejobs replaces, so that a
//! team can point its existing client at imagejobs and change only the base URL and the key.
//!
//! Each seed gets one module of thin adapters onto the job service ([`shared::service::JobSubmitter`],
//! [`shared::core::JobStore`], [`shared::core::BlobStore`]): no second pipeline. Every error is
//! still `{"error": {"code", "message"}}` from [`crate::error`].
//!
//! | seed | route | canonical equivalent |
//! |---|---|---|
//! | 002 | `POST /auth/token?user_id=…` | `POST /v1/auth/token` |
//! | 002 | `POST /api/remove-background` | `POST /v1/jobs` with `Prefer: wait=25`, then `GET /v1/jobs/{id}/result` |
//! | 002 | `GET /health/` | `GET /health` |
//! | 002 | `GET /metrics/` | `GET /v1/metrics` |
//! | 003 | `POST /process` | `POST /v1/jobs` (with `notify.email`) |
//! | 003 | `GET /status/{processing_id}` | `GET /v1/jobs/{id}` |
//! | 003 | `GET /download/{processing_id}` | `GET /v1/jobs/{id}/result` |

pub(crate) mod seed_002;
pub(crate) mod seed_003;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, header};

use shared::auth::{Credential, Principal};
use shared::config::Settings;

use crate::error::ApiError;
use crate::http_handler::AppState;
use crate::jobs::multipart_error;

/// Every compatibility route, to merge into the API's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .merge(seed_002::routes())
        .merge(seed_003::routes())
}

/// A legacy multipart form: the `file` part and the text fields, in order.
#[derive(Debug, Default)]
pub(crate) struct LegacyForm {
    /// The `file` part's bytes, if sent.
    pub file: Option<Bytes>,
    /// Every other field as text.
    pub fields: Vec<(String, String)>,
}

impl LegacyForm {
    /// The last value of field `name` (FastAPI's `Form()` keeps the last one).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a `multipart/form-data` body (limited like `POST /v1/jobs`).
///
/// # Errors
/// 415 `unsupported_media_type` for another body type; 400 `invalid_multipart` for a malformed
/// one; 413 `payload_too_large`.
pub(crate) async fn read_form(state: &AppState, req: Request) -> Result<LegacyForm, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{content_type}' is not accepted: send multipart/form-data with the image as field 'file'"
        )));
    }
    let mut multipart = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut form = LegacyForm::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            form.file = Some(field.bytes().await.map_err(multipart_error)?);
        } else {
            let value = field.text().await.map_err(multipart_error)?;
            form.fields.push((name, value));
        }
    }
    Ok(form)
}

/// The engine a compatibility route runs: `COMPAT_MODEL` when set, else the model the legacy
/// client named, else `DEFAULT_MODEL`.
pub(crate) fn engine(settings: &Settings, requested: Option<&str>) -> String {
    settings
        .compat_model
        .as_deref()
        .or(requested)
        .unwrap_or(&settings.default_model)
        .to_owned()
}

/// Seed 002's JWT-only routes refuse API keys, as the service they replace did.
///
/// # Errors
/// 401 `token_required` for an API key.
pub(crate) fn require_token(caller: &Principal) -> Result<(), ApiError> {
    match caller.credential {
        Credential::Jwt { .. } => Ok(()),
        Credential::ApiKey { .. } => Err(ApiError::TokenRequired),
    }
}

/// The public base URL the client used, `{proto}://{host}`, from `Host` and
/// `X-Forwarded-Proto` (`http` or `https`, as API Gateway and load balancers set it; `http`
/// without it). Never carries credentials (`Host` has no user information). `None` when `Host`
/// is missing or not a plain `host[:port]`, so callers fall back to a relative URL.
pub(crate) fn public_base_url(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    let plain = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !plain {
        return None;
    }
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".to_owned());
    Some(format!("{proto}://{host}"))
}

/// `base` + `path`, or `path` alone when the base is unknown.
pub(crate) fn absolute(headers: &HeaderMap, path: &str) -> String {
    match public_base_url(headers) {
        Some(base) => format!("{base}{path}"),
        None => path.to_owned(),
    }
}

/// File extension of a result's MIME type (`png`, `jpg`, `webp`).
pub(crate) fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "png",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn base_urls_come_from_host_and_forwarded_proto() {
        assert_eq!(
            public_base_url(&headers(&[("host", "127.0.0.1:3000")])).as_deref(),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(
            public_base_url(&headers(&[
                ("host", "abc.execute-api.eu-west-1.amazonaws.com"),
                ("x-forwarded-proto", "HTTPS, http")
            ]))
            .as_deref(),
            Some("https://abc.execute-api.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            public_base_url(&headers(&[
                ("host", "[::1]:8000"),
                ("x-forwarded-proto", "gopher")
            ]))
            .as_deref(),
            Some("http://[::1]:8000")
        );
        for bad in ["", "user:pw@host", "host/path", "evil.com\"><"] {
            assert_eq!(public_base_url(&headers(&[("host", bad)])), None, "{bad}");
        }
        assert_eq!(public_base_url(&HeaderMap::new()), None);
        assert_eq!(absolute(&HeaderMap::new(), "/status/x"), "/status/x");
    }

    #[test]
    fn the_engine_is_the_override_then_the_request_then_the_default() {
        let mut s = Settings::new("t", "q", "b");
        s.default_model = "u2net".into();
        assert_eq!(engine(&s, None), "u2net");
        assert_eq!(engine(&s, Some("u2netp")), "u2netp");
        s.compat_model = Some("plain-background".into());
        assert_eq!(engine(&s, Some("u2netp")), "plain-background");
    }
}
