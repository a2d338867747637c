//! Compatibility routes: the HTTP shapes of the FastAPI services imagejobs replaces, so that a
//! team can point its existing client at imagejobs and change only the base URL and the key.
//!
//! Each seed gets one module of thin adapters onto the job service ([`shared::service::JobSubmitter`],
//! [`shared::core::JobStore`], [`shared::core::BlobStore`]): no second pipeline. Every error is
//! still `{"error": {"code", "message"}}` from [`crate::error`].
//!
//! | seed | route | canonical equivalent |
//! |---|---|---|
//! | 000 | `POST /replace-background-relight` | `POST /v1/jobs` (`replace_background_relight`) with `Prefer: wait=25` |
//! | 001 | `POST /v1/images/memory`, `/v1/images/subject`, `/v1/images/generations` | `POST /v1/jobs` (`generate`, mode `memory` / `subject` / `text`) with `Prefer: wait=25` |
//! | 001, 002 | `GET /health/` | `GET /health` |
//! | 001 | `GET /` | none (a static welcome) |
//! | 002 | `POST /auth/token?user_id=…` | `POST /v1/auth/token` |
//! | 002 | `POST /api/remove-background` | `POST /v1/jobs` with `Prefer: wait=25`, then `GET /v1/jobs/{id}/result` |
//! | 002 | `GET /health/` | `GET /health` |
//! | 002 | `GET /metrics/` | `GET /v1/metrics` |
//! | 003 | `POST /process` | `POST /v1/jobs` (with `notify.email`) |
//! | 003 | `GET /status/{processing_id}` | `GET /v1/jobs/{id}` |
//! | 003 | `GET /download/{processing_id}` | `GET /v1/jobs/{id}/result` |
//! | 004 | `POST /api/jobs` | `POST /v1/jobs` (`edit`) with `Prefer: wait=25` |
//! | 004 | `GET /api/jobs/{job_id}`, `GET /api/jobs` | `GET /v1/jobs/{id}`, `GET /v1/jobs` |

pub(crate) mod seed_000;
pub(crate) mod seed_001;
pub(crate) mod seed_002;
pub(crate) mod seed_003;
pub(crate) mod seed_004;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use std::time::Duration;

use shared::auth::{Credential, Principal};
use shared::config::Settings;
use shared::core::Created;
use shared::job::{Job, JobError, JobResult, JobStatus};
use shared::service::{InputRef, Submission};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::jobs::{MAX_WAIT_SECONDS, job_path, multipart_error, wait_for_job};
use crate::state::AppState;

/// Every compatibility route, to merge into the API's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        // One route for both seeds that have it (axum refuses a path registered twice).
        .route("/health/", get(legacy_health))
        .merge(seed_000::routes())
        .merge(seed_001::routes())
        .merge(seed_002::routes())
        .merge(seed_003::routes())
        .merge(seed_004::routes())
}

/// The `message` of a healthy `GET /health/`, word for word from seed 001.
pub const HEALTHY_MESSAGE: &str = "Image generation service is ready";

/// `GET /health/` (API key or token), shared by seeds 001 and 002: `{"status": "healthy",
/// "message": "Image generation service is ready", "checks": {"table", "queue", "bucket",
/// "segmenter"}}` with 200, or `"status": "degraded"` naming the failed checks with 503.
/// Seed 001's answer word for word plus the checks; seed 002's README leaves the body open. A
/// credential is required, as seed 002's original did.
///
/// # Errors
/// 401 without a valid credential.
pub(crate) async fn legacy_health(State(state): State<AppState>, Caller(_): Caller) -> Response {
    let (healthy, checks) = crate::health::check(&state).await;
    let body = if healthy {
        json!({"status": "healthy", "message": HEALTHY_MESSAGE, "checks": checks})
    } else {
        json!({
            "status": "degraded",
            "message": "Image generation service is degraded: a dependency is unavailable",
            "checks": checks,
        })
    };
    (crate::health::status_code(healthy), Json(body)).into_response()
}

/// Submits a job and waits for it up to the API's wait limit ([`MAX_WAIT_SECONDS`], as
/// `Prefer: wait=25`): the synchronous compatibility routes. Returns the last state read.
///
/// # Errors
/// Whatever [`shared::service::JobSubmitter::submit`] refuses; 503 when the store fails.
pub(crate) async fn submit_and_wait(state: &AppState, sub: Submission) -> Result<Job, ApiError> {
    let job = match state.submitter.submit(sub).await? {
        Created::New(job) | Created::Replayed(job) => job,
    };
    wait_for_job(state, job, Duration::from_secs(MAX_WAIT_SECONDS)).await
}

/// The error of a job that ended without a result: its own code for a failed job
/// ([`ApiError::SyncJobFailed`]), `job_canceled` for a canceled one.
pub(crate) fn ended_without_result(job: Job) -> ApiError {
    match job.status {
        JobStatus::Canceled => ApiError::JobCanceled,
        _ => ApiError::SyncJobFailed(
            job.error
                .unwrap_or_else(|| JobError::new("failed", "the job failed")),
        ),
    }
}

/// A succeeded job's (first) result.
///
/// # Errors
/// 500 when the record says succeeded without a result.
pub(crate) fn result_of(job: &Job) -> Result<&JobResult, ApiError> {
    job.result.as_ref().ok_or_else(|| {
        shared::Error::Corrupt {
            what: "job record",
            message: "succeeded without a result".into(),
        }
        .into()
    })
}

/// **202** for a synchronous compatibility request whose job is still running at the wait
/// limit: `{"job_id", "status", "status_url", "result_url"}` (the canonical job routes,
/// absolute), `Location` and `Retry-After: 5`. Not an error: the job goes on.
pub(crate) fn still_running(headers: &HeaderMap, job: &Job) -> Response {
    let path = job_path(job.id);
    let mut resp = (
        StatusCode::ACCEPTED,
        Json(json!({
            "job_id": job.id,
            "status": job.status,
            "status_url": absolute(headers, &path),
            "result_url": absolute(headers, &format!("{path}/result")),
        })),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&path).expect("ULIDs are ASCII"),
    );
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// Maps a legacy client's image reference onto an [`InputRef`]: `s3://…` as is; an S3 object
/// URL of this deployment's bucket (`https://{bucket}.s3[.{region}].amazonaws.com/{key}`,
/// `https://s3[.{region}].amazonaws.com/{bucket}/{key}`, presigned or not) as the `s3://` URI
/// of its key, so it is read from the bucket (and must be one of the caller's own objects, as
/// every `s3://` input); any other `https://` URL as a public URL, fetched once through the
/// SSRF-hardened fetcher.
///
/// # Errors
/// 400 `invalid_input_reference` for anything else.
pub(crate) fn input_reference(bucket: &str, raw: &str) -> Result<InputRef, ApiError> {
    let raw = raw.trim();
    if let Some(key) = bucket_object_key(bucket, raw) {
        return Ok(InputRef::S3Uri(format!("s3://{bucket}/{key}")));
    }
    Ok(InputRef::parse_reference(raw)?)
}

/// The key of an `https://` S3 object URL in `bucket` (virtual-hosted or path style, any
/// region, query ignored), percent-decoded; `None` for any other URL.
fn bucket_object_key(bucket: &str, raw: &str) -> Option<String> {
    let rest = raw.strip_prefix("https://")?;
    let rest = rest.split(['?', '#']).next()?;
    let (host, path) = rest.split_once('/')?;
    let host = host.to_ascii_lowercase();
    let is_s3 = |h: &str| {
        (h == "s3.amazonaws.com" || h.starts_with("s3.") || h.starts_with("s3-"))
            && (h.ends_with(".amazonaws.com") || h.ends_with(".amazonaws.com.cn"))
    };
    let key = match host.strip_prefix(&format!("{bucket}.")) {
        Some(endpoint) if is_s3(endpoint) => path,
        _ if is_s3(&host) => path.strip_prefix(&format!("{bucket}/"))?,
        _ => return None,
    };
    let key = percent_encoding::percent_decode_str(key)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!key.is_empty()).then_some(key)
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

/// Reads a `multipart/form-data` body with the image as field `file` (limited like
/// `POST /v1/jobs`).
///
/// # Errors
/// As [`read_form_with`].
pub(crate) async fn read_form(state: &AppState, req: Request) -> Result<LegacyForm, ApiError> {
    read_form_with(state, req, "file").await
}

/// Reads a `multipart/form-data` body whose image part is named `file_field` (seed 004 calls
/// it `image`); it lands in [`LegacyForm::file`].
///
/// # Errors
/// 415 `unsupported_media_type` for another body type; 400 `invalid_multipart` for a malformed
/// one; 413 `payload_too_large`.
pub(crate) async fn read_form_with(
    state: &AppState,
    req: Request,
    file_field: &str,
) -> Result<LegacyForm, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{content_type}' is not accepted: send multipart/form-data with the image as field '{file_field}'"
        )));
    }
    let mut multipart = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut form = LegacyForm::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == file_field {
            form.file = Some(field.bytes().await.map_err(multipart_error)?);
        } else {
            let value = field.text().await.map_err(multipart_error)?;
            form.fields.push((name, value));
        }
    }
    Ok(form)
}

/// The engine a compatibility route asks for: `COMPAT_MODEL` when set, else the model the
/// legacy client named, else `DEFAULT_MODEL`.
pub(crate) fn engine(settings: &Settings, requested: Option<&str>) -> String {
    settings
        .compat_model
        .as_deref()
        .or(requested)
        .unwrap_or(&settings.default_model)
        .to_owned()
}

/// Whether a compatibility job may run a stand-in when the model it asks for is not deployed
/// ([`shared::operation::remove_background::RemoveBackgroundParams::model_fallback`]): yes, unless the operator pinned
/// `COMPAT_MODEL`, which then runs as named.
pub(crate) fn model_fallback(settings: &Settings) -> bool {
    settings.compat_model.is_none()
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
        assert!(!model_fallback(&s));
        s.compat_model = None;
        assert!(model_fallback(&s));
    }

    #[test]
    fn bucket_urls_become_s3_uris_and_other_urls_stay_urls() {
        let b = "myawesomebucket";
        let s3 = |raw: &str| match input_reference(b, raw).unwrap() {
            InputRef::S3Uri(u) => u,
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!(
            s3("https://myawesomebucket.s3.us-east-1.amazonaws.com/app/images/aquaphor.jpg"),
            "s3://myawesomebucket/app/images/aquaphor.jpg"
        );
        assert_eq!(
            s3("https://myawesomebucket.s3.amazonaws.com/inputs/acme/a%20b.jpg?X-Amz-Signature=x"),
            "s3://myawesomebucket/inputs/acme/a b.jpg"
        );
        assert_eq!(
            s3("https://s3.eu-west-1.amazonaws.com/myawesomebucket/k.png"),
            "s3://myawesomebucket/k.png"
        );
        assert_eq!(
            s3("s3://myawesomebucket/k.png"),
            "s3://myawesomebucket/k.png"
        );
        for public in [
            "https://otherbucket.s3.amazonaws.com/k.png",
            "https://s3.amazonaws.com/otherbucket/k.png",
            "https://myawesomebucket.s3.evil.example/k.png",
            "https://example.com/myawesomebucket/k.png",
        ] {
            assert!(
                matches!(input_reference(b, public).unwrap(), InputRef::Url(_)),
                "{public}"
            );
        }
        assert_eq!(
            input_reference(b, "ftp://x/y").unwrap_err().code(),
            "invalid_input_reference"
        );
    }
}
