//! SQS batch handling: which records of a batch run one after the other, how each record's
//! [`Outcome`] maps to a partial batch failure, and the dead-letter and last-receive paths.
//!
//! Failures: permanent ones (undecodable image, unknown model) fail the job at once with the
//! engine's code; transient ones (segmenter 5xx or timeout, S3 errors) return the message as a
//! batch item failure so SQS redelivers it after the visibility timeout (within seconds when
//! the claim itself failed: [`UNCLAIMED_RETRY_DELAY`]) — except on the last
//! receive before the dead-letter queue, where the job is failed with `retries_exhausted`.
//! Messages that reach the dead-letter queue anyway (a crash or timeout on the last receive)
//! are consumed from it and fail their job the same way, so no job stays `processing` forever.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use time::OffsetDateTime;
use tracing::Instrument;

use shared::job::{JobError, JobMessage};

use crate::outcome::Outcome;
use crate::processor::Processor;

/// How soon a record that failed before its claim was written is delivered again.
pub const UNCLAIMED_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

impl Processor {
    /// Handles a batch; the records that should be redelivered are reported as failures
    /// (`ReportBatchItemFailures`), the rest are deleted by the event source mapping.
    ///
    /// Records of different jobs run concurrently; records of the same job (a duplicate
    /// delivery, or a run and a poll) run one after the other, so the second sees what the
    /// first wrote instead of racing it to the same conditional write.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
        for (i, record) in event.records.iter().enumerate() {
            let job = record
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<JobMessage>(b).ok())
                .map(|m| {
                    let (owner, id) = m.job();
                    format!("{owner}/{id}")
                });
            match groups.iter_mut().find(|(k, _)| job.is_some() && *k == job) {
                Some((_, members)) => members.push(i),
                None => groups.push((job, vec![i])),
            }
        }
        let records = &event.records;
        let grouped = futures::future::join_all(groups.iter().map(|(_, members)| async move {
            let mut outcomes = Vec::with_capacity(members.len());
            for &i in members {
                let outcome =
                    match tokio::time::timeout(self.record_deadline, self.handle_record(&records[i]))
                        .await
                    {
                        Ok(outcome @ Outcome::Unclaimed(_)) => {
                            self.redeliver_soon(&records[i]).await;
                            outcome
                        }
                        Ok(outcome) => outcome,
                        Err(_) => {
                            tracing::warn!(message_id = ?records[i].message_id, deadline = ?self.record_deadline, "record deadline passed; returned for a retry");
                            Outcome::Retry(format!(
                                "the record's {} s deadline passed",
                                self.record_deadline.as_secs()
                            ))
                        }
                    };
                outcomes.push((i, outcome));
            }
            outcomes
        }))
        .await;
        let mut outcomes: Vec<(usize, Outcome)> = grouped.into_iter().flatten().collect();
        outcomes.sort_by_key(|(i, _)| *i);
        let mut response = SqsBatchResponse::default();
        for (record, (_, outcome)) in event.records.iter().zip(outcomes) {
            if let Outcome::Retry(_) | Outcome::Unclaimed(_) = outcome
                && let Some(id) = &record.message_id
            {
                response.add_failure(id.clone());
            }
        }
        response
    }

    /// Makes `record` visible again after [`UNCLAIMED_RETRY_DELAY`], so a run whose claim
    /// failed before it was written is tried again in seconds, not after the visibility
    /// timeout (or the recovery sweeper's minute); on failure it simply waits for either.
    async fn redeliver_soon(&self, record: &SqsMessage) {
        if let (Some(visibility), Some(handle)) = (&self.visibility, &record.receipt_handle)
            && let Err(e) = visibility
                .visible_after(handle, UNCLAIMED_RETRY_DELAY)
                .await
        {
            tracing::warn!(error = %e, "could not shorten the message's visibility");
        }
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
        // Instrumented, not entered: a span entered across `.await`s would nest the spans of
        // whatever other records run concurrently on this thread. `request_id` is filled in
        // once the job record is read (`processor::note_request_id`).
        let span = tracing::info_span!("job", %job_id, %owner, request_id = tracing::field::Empty);
        self.handle_message(record, &message).instrument(span).await
    }

    async fn handle_message(&self, record: &SqsMessage, message: &JobMessage) -> Outcome {
        let (owner, job_id) = message.job();
        let from_dead_letter_queue = self.dead_letter_queue_arn.is_some()
            && record.event_source_arn == self.dead_letter_queue_arn;
        crate::metrics::queue_age(
            record,
            crate::metrics::message_kind(message, from_dead_letter_queue),
            OffsetDateTime::now_utc(),
        );
        let receive_count: u32 = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let outcome = if from_dead_letter_queue {
            self.exhausted(message, "the message reached the dead-letter queue")
                .await
        } else if let JobMessage::Notify { attempt, .. } = message {
            match &self.notifier {
                Some(notifier) => notifier.handle(owner, job_id, *attempt).await,
                None => Outcome::Skipped("notifications are not configured"),
            }
        } else if let JobMessage::Poll {
            request_id,
            attempt,
            due,
            ..
        } = message
        {
            let turn = crate::operation::provider::PollTurn {
                attempt: *attempt,
                due: *due,
            };
            match self.poll(owner, job_id, request_id, turn).await {
                Outcome::Retry(reason) if receive_count >= self.max_receive_count => {
                    self.exhausted(message, &reason).await
                }
                other => other,
            }
        } else {
            match self.run(message, receive_count).await {
                Outcome::Retry(reason) | Outcome::Unclaimed(reason)
                    if receive_count >= self.max_receive_count =>
                {
                    self.exhausted(message, &reason).await
                }
                other => other,
            }
        };
        // The job ended here (run, poll, dead letter): tell whoever asked to be told.
        if let (Outcome::Succeeded | Outcome::Failed(_), Some(notifier)) =
            (&outcome, &self.notifier)
        {
            notifier.job_ended(owner, job_id).await;
        }
        tracing::info!(?outcome, receive_count, "message handled");
        outcome
    }

    /// Fails the job `retries_exhausted` with `reason` (its last receive, its last claim, or
    /// the dead-letter queue).
    pub(crate) async fn exhausted(&self, message: &JobMessage, reason: &str) -> Outcome {
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
            Ok(Some(job)) => {
                crate::processor::note_request_id(&job);
                crate::metrics::job_ended(&job);
                Outcome::Failed(error.code)
            }
            Ok(None) => Outcome::Skipped("already finished"),
            Err(e) => Outcome::Retry(format!("could not record the failure: {e}")),
        }
    }
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

    #[test]
    fn poll_fixture_event_parses() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/sqs-poll.json")).unwrap();
        let message: JobMessage =
            serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
        let JobMessage::Poll {
            request_id,
            attempt,
            ..
        } = message
        else {
            panic!("not a poll message: {message:?}");
        };
        assert_eq!(request_id.len(), 64);
        assert_eq!(attempt, 1);
    }
}
