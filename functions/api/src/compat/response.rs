//! What legacy clients get back: the synchronous routes' submit-and-wait, the answers built
//! from the job it returns, and absolute URLs built from the request.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

use shared::core::Created;
use shared::job::{Job, JobError, JobResult, JobStatus};
use shared::service::Submission;

use crate::error::ApiError;
use crate::jobs::{MAX_WAIT_SECONDS, job_path, wait_for_job};
use crate::state::AppState;

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
}
