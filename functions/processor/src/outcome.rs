//! How one queue record ended: what the batch reports to SQS and what the logs show. A module
//! of its own so that the batch handling, the operations and the notification delivery can all
//! return it without depending on one another.

/// How one record ended, for the batch response and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job succeeded.
    Succeeded,
    /// The job failed permanently with this code.
    Failed(String),
    /// Nothing to do: duplicate delivery, finished or missing job, poison message.
    Skipped(&'static str),
    /// Transient failure: SQS should redeliver the message.
    Retry(String),
    /// A transient failure before the claim was written (nothing changed): SQS should
    /// redeliver the message within seconds (`Processor::with_visibility`), not after the
    /// visibility timeout; it still counts a receive.
    Unclaimed(String),
    /// Submitted to (or still running at) a provider; a poll message is scheduled.
    Waiting,
    /// The engine was busy: the job was queued again, its attempt not counted, and this
    /// message is done with (`Processor::defer`).
    Deferred(String),
    /// A transient failure: the claim was given back (its attempt counted) and the job queued
    /// again after a short backoff; this message is done with (`Processor::retry_soon`).
    Requeued(String),
}
