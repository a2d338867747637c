//! The ingest crate's one error type: failures worth a retry of the invocation.

/// Ingest failures.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A dependency or configuration failure from the shared crate.
    #[error(transparent)]
    Shared(#[from] shared::Error),
}
