//! The processor crate's one error type (start-up only: per-message failures are
//! [`crate::Outcome`]s reported to SQS, never errors of the invocation).

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// Missing or invalid configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A shared-crate failure (configuration, SDK set-up).
    #[error(transparent)]
    Shared(#[from] shared::Error),
}
