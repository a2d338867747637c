//! The processor's operator metrics, as CloudWatch Embedded Metric Format (EMF) lines on
//! stdout: CloudWatch Logs turns each line into metric data points, with no API call and no
//! extra permission (docs/ARCHITECTURE.md, "Operations"). This module owns every metric and
//! dimension name; the rest of the crate calls the recording functions below where an outcome
//! is known, through the `metrics` facade, which does nothing until [`install`] has set the
//! recorder (the local runner and most tests never do).
//!
//! One line per distinct set of dimension values per flush, e.g.
//! `{"_aws":{"Timestamp":…,"CloudWatchMetrics":[{"Namespace":"imagejobs","Dimensions":[["Operation","Outcome"]],"Metrics":[{"Name":"JobsEnded","Unit":"Count"},{"Name":"ProcessingTime","Unit":"Milliseconds"}]}]},"Operation":"remove_background","Outcome":"succeeded","JobsEnded":1,"ProcessingTime":[812.0]}`.

use std::io::Write;

use aws_lambda_events::event::sqs::SqsMessage;
use metrics::Unit;
use metrics_cloudwatch_embedded::Collector;
use time::OffsetDateTime;

use shared::config::ObservabilitySettings;
use shared::job::{Job, JobMessage, JobStatus, Operation};

use crate::error::ProcessorError;

/// Count of jobs that reached a terminal state, by [`OPERATION`] and [`OUTCOME`].
pub const JOBS_ENDED: &str = "JobsEnded";
/// Count of failed jobs, by [`OPERATION`] and [`ERROR_CODE`] (the job's `error.code`).
pub const JOB_FAILURES: &str = "JobFailures";
/// Milliseconds from a job's first claim (`started_at`) to its end (`finished_at`), by
/// [`OPERATION`] and [`OUTCOME`]; provider jobs include the wait at the provider.
pub const PROCESSING_TIME: &str = "ProcessingTime";
/// Milliseconds from a message's `SentTimestamp` to the moment the processor picks it up, by
/// [`MESSAGE_KIND`]. Poll and notify messages are sent with a deliberate `DelaySeconds`, which
/// this includes; `run` is the one to watch for a backlog.
pub const QUEUE_AGE: &str = "QueueAge";
/// Count of failed calls to an engine, by [`PROVIDER`] and [`ERROR_CODE`]: every failed call,
/// including those retried afterwards (an overloaded segmenter asked again, a poll that fails
/// once).
pub const PROVIDER_ERRORS: &str = "ProviderErrors";

/// Dimension: the job's operation (`remove_background`, `replace_background_relight`, `edit`,
/// `generate`).
pub const OPERATION: &str = "Operation";
/// Dimension: how a job ended: `succeeded`, `failed` or `canceled`.
pub const OUTCOME: &str = "Outcome";
/// Dimension: a stable error code (a job's `error.code`, a provider's mapped code, or the
/// segmenter's own code; `segmenter_unavailable` / `segmenter_overloaded` for its transient
/// failures).
pub const ERROR_CODE: &str = "ErrorCode";
/// Dimension: the queue message: `run`, `poll`, `notify`, or `dead_letter` (any kind, read
/// from the dead-letter queue).
pub const MESSAGE_KIND: &str = "MessageKind";
/// Dimension: the engine called: `stability`, `fal` or `segmenter`.
pub const PROVIDER: &str = "Provider";

/// An engine the processor calls, as the [`PROVIDER`] dimension names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Stability AI (relight, and remove-background with `provider = stability`).
    Stability,
    /// fal.ai's queue (`edit`, `generate`).
    Fal,
    /// The segmenter container (remove-background).
    Segmenter,
}

impl Provider {
    /// The dimension value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stability => "stability",
            Self::Fal => "fal",
            Self::Segmenter => "segmenter",
        }
    }

    /// The external provider an operation submits to: fal.ai for `edit` and `generate`,
    /// Stability for the rest (relight, and remove-background's `provider = stability`).
    pub fn of(operation: &Operation) -> Self {
        match operation {
            Operation::Edit(_) | Operation::Generate(_) => Self::Fal,
            Operation::ReplaceBackgroundRelight(_) | Operation::RemoveBackground(_) => {
                Self::Stability
            }
        }
    }
}

/// The installed EMF recorder: flush it after each invocation.
#[derive(Clone, Copy)]
pub struct Emitter {
    collector: &'static Collector,
}

/// Sets the process-wide `metrics` recorder to an EMF collector for
/// `settings.metrics_namespace` (`METRICS_NAMESPACE`), with the units of every metric above.
/// Values accumulate until [`Emitter::flush`].
///
/// # Errors
/// [`ProcessorError::Config`] when a recorder is already installed in this process.
pub fn install(settings: &ObservabilitySettings) -> Result<Emitter, ProcessorError> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(settings.metrics_namespace.clone())
        .init()
        .map_err(|e| ProcessorError::Config(format!("metrics recorder: {e}")))?;
    metrics::describe_counter!(
        JOBS_ENDED,
        Unit::Count,
        "jobs that reached a terminal state"
    );
    metrics::describe_counter!(JOB_FAILURES, Unit::Count, "failed jobs by error code");
    metrics::describe_histogram!(PROCESSING_TIME, Unit::Milliseconds, "claim to end");
    metrics::describe_histogram!(QUEUE_AGE, Unit::Milliseconds, "sent to picked up");
    metrics::describe_counter!(PROVIDER_ERRORS, Unit::Count, "failed engine calls");
    Ok(Emitter { collector })
}

impl Emitter {
    /// Writes one EMF line per dimension set with values since the last flush, and resets
    /// them. The lines are assembled first and written with one `write_all`, so concurrent log
    /// output cannot split a line.
    ///
    /// # Errors
    /// The writer's.
    pub fn flush(&self, mut out: impl Write) -> std::io::Result<()> {
        let mut lines = Vec::new();
        self.collector.flush(&mut lines)?;
        out.write_all(&lines)?;
        out.flush()
    }

    /// [`Emitter::flush`] to stdout, where Lambda sends it to CloudWatch Logs. A failure is
    /// logged: losing a flush must not fail the batch.
    pub fn flush_to_stdout(&self) {
        if let Err(e) = self.flush(std::io::stdout().lock()) {
            tracing::error!(error = %e, "could not write the metrics");
        }
    }
}

/// Records a terminal job: [`JOBS_ENDED`], [`JOB_FAILURES`] when it failed, and
/// [`PROCESSING_TIME`] when it had started. Called once per terminal transition the processor
/// makes (its conditional writes succeed once), and once per canceled job it meets; ignores a
/// job that is not terminal.
pub(crate) fn job_ended(job: &Job) {
    if !job.status.is_terminal() {
        return;
    }
    let operation = job.operation.name();
    let outcome = job.status.as_str();
    metrics::counter!(JOBS_ENDED, OPERATION => operation, OUTCOME => outcome).increment(1);
    if job.status == JobStatus::Failed {
        let code = job
            .error
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |e| e.code.clone());
        metrics::counter!(JOB_FAILURES, OPERATION => operation, ERROR_CODE => code).increment(1);
    }
    if let Some(ms) = job.duration_ms() {
        metrics::histogram!(PROCESSING_TIME, OPERATION => operation, OUTCOME => outcome)
            .record(ms.max(0) as f64);
    }
}

/// The [`MESSAGE_KIND`] of a message.
pub(crate) fn message_kind(message: &JobMessage, from_dead_letter_queue: bool) -> &'static str {
    match message {
        _ if from_dead_letter_queue => "dead_letter",
        JobMessage::Run { .. } => "run",
        JobMessage::Poll { .. } => "poll",
        JobMessage::Notify { .. } => "notify",
    }
}

/// Records [`QUEUE_AGE`] of `record` at `now`, from its `SentTimestamp` attribute (Unix
/// milliseconds, which SQS always sets); nothing when the attribute is missing or malformed.
/// A sender clock ahead of ours counts as 0.
pub(crate) fn queue_age(record: &SqsMessage, kind: &'static str, now: OffsetDateTime) {
    let Some(sent) = record
        .attributes
        .get("SentTimestamp")
        .and_then(|v| v.parse::<i128>().ok())
    else {
        return;
    };
    let now_ms = now.unix_timestamp_nanos() / 1_000_000;
    let age = (now_ms - sent).max(0) as f64;
    metrics::histogram!(QUEUE_AGE, MESSAGE_KIND => kind).record(age);
}

/// Records one failed call to `provider` with its stable `code` ([`PROVIDER_ERRORS`]).
pub(crate) fn provider_error(provider: Provider, code: &str) {
    metrics::counter!(PROVIDER_ERRORS, PROVIDER => provider.as_str(), ERROR_CODE => code.to_owned())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_kinds_name_the_message_or_the_dead_letter_queue() {
        let owner = shared::job::OwnerId::parse("o").unwrap();
        let run = JobMessage::Run {
            owner: owner.clone(),
            job_id: ulid::Ulid::nil(),
        };
        let poll = JobMessage::Poll {
            owner,
            job_id: ulid::Ulid::nil(),
            request_id: "r".into(),
            attempt: 0,
            due: None,
        };
        assert_eq!(message_kind(&run, false), "run");
        assert_eq!(message_kind(&poll, false), "poll");
        assert_eq!(message_kind(&poll, true), "dead_letter");
    }
}
