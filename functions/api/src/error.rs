//! The API's one error type and its single mapping to HTTP: every error is
//! `{"error": {"code", "message"}}` with a stable code and the right status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shared::job::{JobError, JobStatus};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A failure from the job domain or its adapters.
    #[error(transparent)]
    Domain(#[from] shared::Error),
    /// Authentication or authorisation failed (401, or 403 for a missing scope).
    #[error(transparent)]
    Auth(#[from] shared::auth::AuthError),
    /// A malformed request: bad parameter, header or body (400).
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What to change.
        message: String,
    },
    /// The body is not one of the accepted media types (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is over the size limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Unknown job id for this owner (404).
    #[error("no job '{0}'")]
    JobNotFound(String),
    /// The result was asked for before the job finished (423).
    #[error("job is {0}; the result is not ready yet")]
    NotFinished(JobStatus),
    /// The result was asked for and the job failed (409, with the job's own error).
    #[error("{}", .0.message)]
    JobFailed(JobError),
    /// The result was asked for and the job was canceled (409).
    #[error("the job was canceled; it has no result")]
    JobCanceled,
    /// No route matches (404).
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The route exists but not with this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// A 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Domain(e) => domain_status(e),
            Self::Auth(shared::auth::AuthError::InsufficientScope(_)) => StatusCode::FORBIDDEN,
            Self::Auth(shared::auth::AuthError::TokensDisabled) => StatusCode::UNAUTHORIZED,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::JobNotFound(_) | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::NotFinished(_) => StatusCode::LOCKED,
            Self::JobFailed(_) | Self::JobCanceled => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            Self::Domain(e) => e.code(),
            Self::Auth(e) => e.code(),
            Self::BadRequest { code, .. } => code,
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::JobNotFound(_) => "job_not_found",
            Self::NotFinished(_) => "job_not_finished",
            Self::JobFailed(e) => &e.code,
            Self::JobCanceled => "job_canceled",
            Self::RouteNotFound(_) => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The message shown to the client: internal details stay in the logs.
    fn public_message(&self) -> String {
        match self {
            Self::Domain(shared::Error::Corrupt { .. } | shared::Error::Config(_)) => {
                "internal error; the request id identifies it in our logs".into()
            }
            Self::Domain(shared::Error::Unavailable { service, .. }) => {
                format!("a dependency ({service}) is unavailable; retry with backoff")
            }
            other => other.to_string(),
        }
    }
}

fn domain_status(e: &shared::Error) -> StatusCode {
    use shared::Error as E;
    match e {
        E::Invalid { code, .. } => match *code {
            "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "unsupported_image" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "image_too_large"
            | "invalid_image"
            | "empty_image"
            | "input_not_found"
            | "input_fetch_failed"
            | "too_many_redirects"
            | "upload_mismatch"
            | "invalid_email"
            | "invalid_webhook_url" => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        },
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Conflict(_) | E::IdempotencyMismatch => StatusCode::CONFLICT,
        E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        E::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        E::Corrupt { .. } | E::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, code = self.code(), "request failed");
        } else {
            tracing::info!(error = %self, code = self.code(), status = status.as_u16(), "request refused");
        }
        let mut body = json!({"error": {"code": self.code(), "message": self.public_message()}});
        if let Self::NotFinished(s) = &self {
            body["error"]["status"] = json!(s);
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                self.code()
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&challenge) {
                resp.headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, v);
            }
        }
        if let Self::Domain(shared::Error::QuotaExceeded {
            retry_after_seconds,
            ..
        }) = &self
        {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                (*retry_after_seconds).into(),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_codes_map_to_their_statuses() {
        let invalid = |code| {
            ApiError::Domain(shared::Error::Invalid {
                code,
                message: "m".into(),
            })
        };
        assert_eq!(
            invalid("payload_too_large").status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            invalid("unsupported_image").status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            invalid("invalid_image").status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(invalid("unknown_model").status(), StatusCode::BAD_REQUEST);
        assert_eq!(invalid("unknown_model").code(), "unknown_model");
    }

    #[test]
    fn internals_are_not_leaked() {
        let e = ApiError::Domain(shared::Error::Config("JOBS_TABLE secret detail".into()));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.public_message().contains("JOBS_TABLE"));
    }
}
