//! The CLI's one error type, its exit codes, and the sentence shown for each API error code.
//!
//! The codes are the API's stable `error.code` values (README.md, "Error codes" and
//! "Identity") and the job error codes found in `job.error.code`; an unknown code falls back to
//! the API's own message, so a newer server never produces a blank line.

use std::path::PathBuf;

/// Exit status of a successful run.
pub const EXIT_OK: i32 = 0;
/// Exit status when a job failed or the API (or the network) refused a request.
pub const EXIT_FAILED: i32 = 1;
/// Exit status of a usage error: bad flags, missing configuration, unusable paths (clap uses
/// the same value for its own parse errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit status after Ctrl-C (128 + SIGINT, the shell convention).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with an error body `{"error": {"code", "message"}}` (or, from a proxy in
    /// front of it, a non-JSON error: the code is then `http_{status}`).
    #[error("{}", describe(code, message))]
    Api {
        /// HTTP status, 400–599.
        status: u16,
        /// The API's stable code, e.g. `invalid_api_key`.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The job ended `failed`; `code` and `message` are `job.error`.
    #[error("job {job_id} failed: {}", describe(code, message))]
    JobFailed {
        /// The job's ULID.
        job_id: String,
        /// `job.error.code`, e.g. `invalid_image`, `retries_exhausted`.
        code: String,
        /// `job.error.message`.
        message: String,
    },
    /// The job ended `canceled`.
    #[error("job {job_id} was canceled; it has no result")]
    JobCanceled {
        /// The job's ULID.
        job_id: String,
    },
    /// The job had not finished when `--timeout` ran out; it is still running on the server.
    #[error(
        "job {job_id} is still {status} after {waited_s} s; wait on with `imagejobs jobs wait {job_id}`"
    )]
    Timeout {
        /// The job's ULID.
        job_id: String,
        /// Its last status read (`queued` or `processing`).
        status: String,
        /// Seconds waited.
        waited_s: u64,
    },
    /// The presigned S3 upload (`POST /v1/uploads`'s `url`) or result download failed.
    #[error("{what} failed with HTTP {status}: {body}")]
    Storage {
        /// `upload` or `download`.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The start of S3's (XML) answer.
        body: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("could not reach {url}: {source}")]
    Network {
        /// The URL asked for (without credentials).
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// An answer that does not have the API's documented shape.
    #[error("unexpected answer from the API: {0}")]
    Unexpected(String),
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The command line or configuration cannot be used (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Ctrl-C: unfinished output files were removed.
    #[error("interrupted; no partial output was left behind")]
    Interrupted,
    /// Some inputs of a batch failed (each was reported as it failed).
    #[error("{failed} of {total} inputs failed")]
    Batch {
        /// Inputs that failed.
        failed: usize,
        /// Inputs in the batch.
        total: usize,
    },
}

impl CliError {
    /// The process exit status: [`EXIT_USAGE`] for usage errors, [`EXIT_INTERRUPTED`] after
    /// Ctrl-C, [`EXIT_FAILED`] for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Interrupted => EXIT_INTERRUPTED,
            _ => EXIT_FAILED,
        }
    }

    /// The stable code of this error for `--json` output: the API's or the job's code, or a
    /// CLI code (`timeout`, `job_canceled`, `storage_error`, `network_error`,
    /// `unexpected_response`, `io_error`, `usage`, `interrupted`, `batch_failed`).
    pub fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } | Self::JobFailed { code, .. } => code,
            Self::JobCanceled { .. } => "job_canceled",
            Self::Timeout { .. } => "timeout",
            Self::Storage { .. } => "storage_error",
            Self::Network { .. } => "network_error",
            Self::Unexpected(_) => "unexpected_response",
            Self::Io { .. } => "io_error",
            Self::Usage(_) => "usage",
            Self::Interrupted => "interrupted",
            Self::Batch { .. } => "batch_failed",
        }
    }

    /// `{"code", "message"}` (plus `status` for API errors and `job_id` for job errors), the
    /// shape `--json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"code": self.code(), "message": self.to_string()});
        match self {
            Self::Api { status, .. } => v["status"] = (*status).into(),
            Self::JobFailed { job_id, .. }
            | Self::JobCanceled { job_id }
            | Self::Timeout { job_id, .. } => v["job_id"] = job_id.clone().into(),
            _ => {}
        }
        v
    }

    /// Whether retrying the same request later can succeed (429 quotas, 503 dependency
    /// unavailable): the API refused it before storing anything, so a retry cannot duplicate.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Api {
                status: 429 | 503,
                ..
            }
        )
    }
}

/// `"{sentence} ({code}: {api message})"`, or `"{api message} ({code})"` for a code without a
/// sentence.
fn describe(code: &str, message: &str) -> String {
    match explain(code) {
        Some(sentence) if message.is_empty() => format!("{sentence} ({code})"),
        Some(sentence) => format!("{sentence} ({code}: {message})"),
        None if message.is_empty() => format!("the API answered {code}"),
        None => format!("{message} ({code})"),
    }
}

/// A clear sentence for each code the API documents (README.md "Error codes", "Identity",
/// job error codes), `None` for others.
pub fn explain(code: &str) -> Option<&'static str> {
    Some(match code {
        // 401 / 403: identity.
        "unauthorized" | "api_key_required" => {
            "No API key was sent: pass --api-key or set IMAGEJOBS_API_KEY"
        }
        "invalid_api_key" => {
            "The API key is not recognised: check --api-key, IMAGEJOBS_API_KEY and --url"
        }
        "api_key_revoked" => "The API key has been revoked: create a new one",
        "token_expired" => "The access token has expired: get a new one",
        "token_invalid_signature" | "token_malformed" | "token_algorithm_not_allowed" => {
            "The access token is not valid: use an API key or a fresh token"
        }
        "tokens_disabled" => "This deployment does not accept access tokens: use an API key",
        "token_required" => "This route needs an access token rather than an API key",
        "insufficient_scope" => "The API key lacks a scope this command needs",
        // 400: the request.
        "invalid_params" => "A parameter is not valid",
        "unknown_model" => "The server does not know that model",
        "unknown_operation" => "The server does not know that operation",
        "missing_input" => "The operation needs an input image",
        "invalid_input" | "invalid_input_reference" => "The input is not valid",
        "invalid_json" | "invalid_multipart" | "invalid_prefer" | "invalid_idempotency_key" => {
            "The server could not read the request (a client bug: please report it)"
        }
        "invalid_cursor" => "The page cursor is not valid: start the listing again",
        "url_scheme_not_allowed" => "Only https:// image URLs are accepted",
        "url_address_not_allowed" => "The image URL points to an address the server may not reach",
        // 404 / 405.
        "job_not_found" => "No such job for this API key",
        "result_not_found" => "The job has no output at that index",
        "route_not_found" | "method_not_allowed" => {
            "The server does not serve this route: is --url the imagejobs API?"
        }
        // 409 / 423.
        "idempotency_key_reused" => "That idempotency key was used for a different request",
        "conflict" => "The job has already finished",
        "job_canceled" => "The job was canceled; it has no result",
        "job_not_finished" => "The job has not finished yet",
        // 413 / 415 / 422: the image.
        "payload_too_large" => "The image is over the server's size limit",
        "unsupported_media_type" => "The server did not accept the request's content type",
        "unsupported_image" => "The file is not a JPEG, PNG or WebP image",
        "empty_image" => "The image is empty",
        "invalid_image" => "The image is corrupt, truncated or outside the operation's limits",
        "image_too_large" => "The image has too many pixels or too long a side",
        "input_not_found" => "The input image was not found",
        "input_fetch_failed" => "The server could not fetch the image URL",
        "too_many_redirects" => "The image URL redirected too many times",
        "upload_mismatch" => "The uploaded file differs from what was declared",
        "invalid_webhook_url" => "The webhook URL is not accepted",
        "invalid_email" => "The e-mail address is not accepted",
        // 429 / 503.
        "rate_limited" => "Too many jobs this minute: slow down or retry later",
        "too_many_jobs_in_flight" => {
            "Too many unfinished jobs: wait for some to finish or lower --concurrency"
        }
        "dependency_unavailable" => "The service is temporarily unavailable: retry later",
        // Job error codes.
        "model_unavailable" => "The model is not loaded on the server",
        "retries_exhausted" => "The job failed on every attempt",
        "content_moderated" => "The provider refused the content",
        "provider_error" => "The image provider failed",
        "provider_auth" | "provider_not_configured" => {
            "The server's image provider is not configured"
        }
        "provider_timeout" => "The image provider did not finish in time",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_the_sentence_the_code_and_the_message() {
        let e = CliError::Api {
            status: 401,
            code: "invalid_api_key".into(),
            message: "unknown key".into(),
        };
        let shown = e.to_string();
        assert!(
            shown.starts_with("The API key is not recognised"),
            "{shown}"
        );
        assert!(shown.contains("(invalid_api_key: unknown key)"), "{shown}");
        assert_eq!(e.exit_code(), EXIT_FAILED);
        assert_eq!(e.to_json()["status"], 401);
    }

    #[test]
    fn unknown_codes_fall_back_to_the_api_message() {
        let e = CliError::Api {
            status: 400,
            code: "brand_new_code".into(),
            message: "something new".into(),
        };
        assert_eq!(e.to_string(), "something new (brand_new_code)");
    }

    #[test]
    fn every_documented_code_has_a_sentence() {
        // README.md's error table and identity table, plus the job error codes.
        for code in [
            "invalid_params",
            "unknown_model",
            "unknown_operation",
            "missing_input",
            "invalid_input",
            "invalid_input_reference",
            "invalid_json",
            "invalid_multipart",
            "invalid_cursor",
            "invalid_prefer",
            "invalid_idempotency_key",
            "url_scheme_not_allowed",
            "url_address_not_allowed",
            "api_key_required",
            "unauthorized",
            "invalid_api_key",
            "api_key_revoked",
            "token_expired",
            "token_invalid_signature",
            "token_algorithm_not_allowed",
            "token_malformed",
            "tokens_disabled",
            "token_required",
            "insufficient_scope",
            "job_not_found",
            "route_not_found",
            "method_not_allowed",
            "idempotency_key_reused",
            "job_canceled",
            "payload_too_large",
            "unsupported_media_type",
            "unsupported_image",
            "empty_image",
            "invalid_image",
            "image_too_large",
            "input_not_found",
            "input_fetch_failed",
            "too_many_redirects",
            "upload_mismatch",
            "invalid_webhook_url",
            "invalid_email",
            "job_not_finished",
            "rate_limited",
            "too_many_jobs_in_flight",
            "dependency_unavailable",
            "model_unavailable",
            "retries_exhausted",
        ] {
            assert!(explain(code).is_some(), "{code} has no sentence");
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::Interrupted.exit_code(), EXIT_INTERRUPTED);
        assert_eq!(
            CliError::JobCanceled { job_id: "J".into() }.exit_code(),
            EXIT_FAILED
        );
        assert!(
            CliError::Api {
                status: 429,
                code: "rate_limited".into(),
                message: String::new()
            }
            .is_retryable()
        );
    }
}
