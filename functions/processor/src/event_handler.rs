//! The processor: an SQS consumer that runs each job exactly once in effect.
//!
//! Per message: claim the job with a conditional write (`queued → processing`, or take over an
//! expired lease) → read the input → run the operation → write the result to S3 under a
//! deterministic key → `processing → succeeded` (only by the lease holder). A duplicate delivery
//! finds the job leased or terminal and is acknowledged without running anything.
//!
//! Failures: permanent ones (undecodable image, unknown model) fail the job at once with the
//! engine's code; transient ones (segmenter 5xx or timeout, S3 errors) return the message as a
//! batch item failure so SQS redelivers it after the visibility timeout — except on the last
//! receive before the dead-letter queue, where the job is failed with `retries_exhausted`.
//! Messages that reach the dead-letter queue anyway (a crash or timeout on the last receive)
//! are consumed from it and fail their job the same way, so no job stays `processing` forever.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use shared::adapters::{Aws, HttpSegmenter};
use shared::config::Settings;
use shared::core::{BlobStore, Claim, JobTransitions, Lease, Segmenter, SegmenterError};
use shared::job::{self, Job, JobError, JobMessage, JobResult, Operation};

use crate::error::ProcessorError;

/// Runs jobs from queue messages.
#[derive(Clone)]
pub struct Processor {
    transitions: Arc<dyn JobTransitions>,
    blobs: Arc<dyn BlobStore>,
    segmenter: Arc<dyn Segmenter>,
    max_receive_count: u32,
    lease: Duration,
    dead_letter_queue_arn: Option<String>,
}

/// Processor tuning beyond [`Settings`].
#[derive(Debug, Clone)]
pub struct ProcessorOptions {
    /// How long a claim is exclusive (`LEASE_SECONDS`, default 90: longer than one Lambda run,
    /// shorter than the queue's visibility timeout, so a redelivery after a crash can take over).
    pub lease: Duration,
    /// ARN of the dead-letter queue (`DEAD_LETTER_QUEUE_ARN`); records from it fail their job.
    pub dead_letter_queue_arn: Option<String>,
}

impl ProcessorOptions {
    /// Reads the options from the environment.
    pub fn from_env() -> Self {
        let lease = std::env::var("LEASE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(90);
        Self {
            lease: Duration::from_secs(lease),
            dead_letter_queue_arn: std::env::var("DEAD_LETTER_QUEUE_ARN")
                .ok()
                .filter(|v| !v.is_empty()),
        }
    }
}

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
}

impl Processor {
    /// Builds a processor over the given ports.
    pub fn new(
        transitions: Arc<dyn JobTransitions>,
        blobs: Arc<dyn BlobStore>,
        segmenter: Arc<dyn Segmenter>,
        settings: &Settings,
        options: ProcessorOptions,
    ) -> Self {
        Self {
            transitions,
            blobs,
            segmenter,
            max_receive_count: settings.max_receive_count,
            lease: options.lease,
            dead_letter_queue_arn: options.dead_letter_queue_arn,
        }
    }

    /// Builds the processor from the environment (`SEGMENTER_URL` is required).
    ///
    /// # Errors
    /// [`ProcessorError::Config`] naming what is missing.
    pub async fn from_env() -> Result<Self, ProcessorError> {
        let settings = Settings::from_env()?;
        let aws = Aws::from_settings(&settings).await?;
        Self::with_aws(&settings, &aws, ProcessorOptions::from_env())
    }

    /// Builds the processor over the AWS adapters and the HTTP segmenter.
    ///
    /// # Errors
    /// [`ProcessorError::Config`] when `SEGMENTER_URL` is not set.
    pub fn with_aws(
        settings: &Settings,
        aws: &Aws,
        options: ProcessorOptions,
    ) -> Result<Self, ProcessorError> {
        let url = settings
            .segmenter_url
            .as_deref()
            .ok_or_else(|| ProcessorError::Config("SEGMENTER_URL is not set".into()))?;
        let segmenter = HttpSegmenter::new(url, settings.segmenter_timeout)?;
        Ok(Self::new(
            Arc::new(aws.jobs.clone()),
            Arc::new(aws.blobs.clone()),
            Arc::new(segmenter),
            settings,
            options,
        ))
    }

    /// Handles a batch; the records that should be redelivered are reported as failures
    /// (`ReportBatchItemFailures`), the rest are deleted by the event source mapping.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let outcomes =
            futures::future::join_all(event.records.iter().map(|r| self.handle_record(r))).await;
        let mut response = SqsBatchResponse::default();
        for (record, outcome) in event.records.iter().zip(outcomes) {
            if let Outcome::Retry(_) = outcome
                && let Some(id) = &record.message_id
            {
                response.add_failure(id.clone());
            }
        }
        response
    }

    /// Handles one record.
    pub async fn handle_record(&self, record: &SqsMessage) -> Outcome {
        let Some(message) = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<JobMessage>(b).ok())
        else {
            // Redelivering a message nobody can read only delays the dead-letter queue.
            tracing::error!(message_id = ?record.message_id, "unreadable queue message dropped");
            return Outcome::Skipped("unreadable message");
        };
        let (owner, job_id) = message.job();
        let span = tracing::info_span!("job", %job_id, %owner);
        let _guard = span.enter();
        let from_dead_letter_queue = self.dead_letter_queue_arn.is_some()
            && record.event_source_arn == self.dead_letter_queue_arn;
        let receive_count: u32 = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let outcome = if from_dead_letter_queue {
            self.exhausted(&message, "the message reached the dead-letter queue")
                .await
        } else {
            match self.run(&message).await {
                Outcome::Retry(reason) if receive_count >= self.max_receive_count => {
                    self.exhausted(&message, &reason).await
                }
                other => other,
            }
        };
        tracing::info!(?outcome, receive_count, "message handled");
        outcome
    }

    async fn exhausted(&self, message: &JobMessage, reason: &str) -> Outcome {
        let (owner, job_id) = message.job();
        let error = JobError::new(
            "retries_exhausted",
            format!(
                "gave up after {} attempts: {reason}",
                self.max_receive_count
            ),
        );
        match self
            .transitions
            .fail(owner, job_id, &error, OffsetDateTime::now_utc())
            .await
        {
            Ok(Some(_)) => Outcome::Failed(error.code),
            Ok(None) => Outcome::Skipped("already finished"),
            Err(e) => Outcome::Retry(format!("could not record the failure: {e}")),
        }
    }

    async fn run(&self, message: &JobMessage) -> Outcome {
        let (owner, job_id) = message.job();
        let now = OffsetDateTime::now_utc();
        let lease = Lease {
            token: ulid::Ulid::new().to_string(),
            until: now.unix_timestamp() + self.lease.as_secs() as i64,
        };
        let job = match self.transitions.claim(owner, job_id, &lease, now).await {
            Ok(Claim::Claimed(job)) => job,
            Ok(Claim::Leased(_)) => return Outcome::Skipped("another processor holds the lease"),
            Ok(Claim::Terminal(_)) => return Outcome::Skipped("already finished"),
            Ok(Claim::Missing) => return Outcome::Skipped("no such job"),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        match self.execute(&job).await {
            Ok(result) => {
                match self
                    .transitions
                    .complete(
                        owner,
                        job_id,
                        &lease.token,
                        &result,
                        OffsetDateTime::now_utc(),
                    )
                    .await
                {
                    Ok(_) => Outcome::Succeeded,
                    Err(shared::Error::Conflict(_)) => {
                        Outcome::Skipped("lease lost to another processor")
                    }
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Err(Step::Permanent(error)) => {
                match self
                    .transitions
                    .fail(owner, job_id, &error, OffsetDateTime::now_utc())
                    .await
                {
                    Ok(_) => Outcome::Failed(error.code),
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Err(Step::Transient(reason)) => Outcome::Retry(reason),
        }
    }

    /// Runs the operation and stores its output; no job state changes here.
    async fn execute(&self, job: &Job) -> Result<JobResult, Step> {
        match &job.operation {
            Operation::RemoveBackground(params) => {
                let input = job.inputs.get("image").ok_or_else(|| {
                    Step::Permanent(JobError::new("invalid_job", "the job has no input image"))
                })?;
                let image = self.blobs.get(&input.key).await.map_err(|e| match e {
                    shared::Error::NotFound(what) => Step::Permanent(JobError::new(
                        "input_not_found",
                        format!("{what} no longer exists"),
                    )),
                    other => Step::Transient(other.to_string()),
                })?;
                let cutout = self
                    .segmenter
                    .remove_background(image, params)
                    .await
                    .map_err(|e| match e {
                        SegmenterError::Permanent { code, message } => {
                            Step::Permanent(JobError::new(code, message))
                        }
                        SegmenterError::Transient(reason) => Step::Transient(reason),
                    })?;
                let key = job::result_key(&job.owner, job.id, params.output_format.extension());
                let bytes = cutout.bytes.len() as u64;
                self.blobs
                    .put(&key, cutout.bytes, &cutout.content_type)
                    .await
                    .map_err(|e| Step::Transient(e.to_string()))?;
                Ok(JobResult {
                    key,
                    content_type: cutout.content_type,
                    width: cutout.width,
                    height: cutout.height,
                    bytes,
                    engine: Some(cutout.engine),
                })
            }
        }
    }
}

enum Step {
    Permanent(JobError),
    Transient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_event_parses() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/sqs-job.json")).unwrap();
        let record = &event.records[0];
        let message: JobMessage = serde_json::from_str(record.body.as_deref().unwrap()).unwrap();
        let (owner, _) = message.job();
        assert_eq!(owner.as_str(), "anonymous");
        assert_eq!(
            record
                .attributes
                .get("ApproximateReceiveCount")
                .map(String::as_str),
            Some("1")
        );
    }
}
