//! The one error type of the shared crate: what a port can fail with.

/// Errors of the ports and adapters. `code()` gives the stable code the API and job records use.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record or object does not exist (or belongs to another owner).
    #[error("{0} not found")]
    NotFound(String),
    /// A conditional write lost: the record is not in the expected state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Same idempotency key, different request.
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// A dependency (DynamoDB, SQS, S3, segmenter) failed in a way worth retrying.
    #[error("{service} is unavailable: {message}")]
    Unavailable {
        /// Which dependency.
        service: &'static str,
        /// What it said.
        message: String,
    },
    /// A stored record or message could not be read.
    #[error("corrupt {what}: {message}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        message: String,
    },
    /// The request is invalid: a stable `code` (e.g. `invalid_image`, `invalid_params`,
    /// `input_not_found`) and a message saying what to change.
    #[error("{message}")]
    Invalid {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A per-owner quota is exhausted: retry after `retry_after_seconds`.
    #[error("{message}")]
    QuotaExceeded {
        /// `too_many_jobs_in_flight` or `rate_limited`.
        code: &'static str,
        /// Which limit, in words.
        message: String,
        /// When a retry can succeed.
        retry_after_seconds: u64,
    },
    /// Missing or invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::IdempotencyMismatch => "idempotency_key_reused",
            Self::Unavailable { .. } => "dependency_unavailable",
            Self::Invalid { code, .. } => code,
            Self::QuotaExceeded { code, .. } => code,
            Self::Corrupt { .. } => "internal",
            Self::Config(_) => "internal",
        }
    }

    /// Wraps an SDK or client error as [`Error::Unavailable`], keeping the most useful text.
    pub fn unavailable(service: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            service,
            message: err.to_string(),
        }
    }
}

impl From<crate::operation::ParamError> for Error {
    fn from(e: crate::operation::ParamError) -> Self {
        Self::Invalid {
            code: e.code,
            message: e.to_string(),
        }
    }
}

impl From<crate::image_check::ImageRejection> for Error {
    fn from(e: crate::image_check::ImageRejection) -> Self {
        Self::Invalid {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// Result alias of the shared crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::env::EnvError> for Error {
    fn from(e: crate::env::EnvError) -> Self {
        Self::Config(e.to_string())
    }
}

/// `e` and each of its sources, joined with `: ` (repeats dropped): the whole story of an SDK
/// error, whose own `Display` says only "dispatch failure" or "unhandled error".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod chain_tests {
    #[test]
    fn chain_joins_sources_and_drops_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = std::io::Error::other(io);
        assert_eq!(super::chain(&outer), "connection refused");
        let e = crate::env::EnvError::Missing("X");
        assert_eq!(super::chain(&e), "environment variable X is not set");
    }
}
