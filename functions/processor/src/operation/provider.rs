//! The lifecycle every provider-backed operation (relight at Stability, edit and generate at
//! fal.ai) shares: submit once, record the request id with a conditional write, then poll with
//! backoff until the provider finishes, the job is canceled or the deadline passes. What differs
//! per provider lives in [`super::relight`] and [`super::model_queue`].

use std::time::Duration;
use time::OffsetDateTime;

use shared::core::{Lease, ProviderError, ProviderSubmission, SubmitIntent};
use shared::job::{Job, JobError, JobMessage, Operation, ProviderLinks};

use crate::metrics::Provider;
use crate::outcome::Outcome;
use crate::processor::{Processor, Providers, not_configured};

/// Delay before poll number `attempt` (0-based): `base`, doubling, capped at 15 minutes (SQS's
/// largest `DelaySeconds`). Stability asks for ≥ 10 s between polls (docs/providers.md §1.4),
/// the default base.
pub fn poll_delay(base: Duration, attempt: u32) -> Duration {
    let max = Duration::from_secs(900);
    base.saturating_mul(1u32 << attempt.min(10)).min(max)
}

/// How soon a poll that failed on our side (storage, table) is tried again.
const POLL_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Where a `poll` message stands in its job's poll chain (docs/ARCHITECTURE.md "Recovery").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollTurn {
    /// 0-based poll number, for the backoff ([`poll_delay`]).
    pub attempt: u32,
    /// The `pending` due time the message was scheduled under (the chain's token); `None`
    /// takes the chain over.
    pub due: Option<i64>,
}

impl PollTurn {
    /// The first poll of a new chain (after the submit, or a resumed run): a takeover.
    pub const FIRST: Self = Self {
        attempt: 0,
        due: None,
    };

    /// The poll after this one, scheduled by this one's handler under its token.
    #[must_use]
    pub fn next(self) -> Self {
        Self {
            attempt: self.attempt.saturating_add(1),
            due: self.due,
        }
    }
}

/// The end of a job whose submit may or may not have reached the provider.
pub(crate) fn provider_state_unknown(job: &Job) -> JobError {
    JobError::new(
        "provider_state_unknown",
        format!(
            "an earlier attempt may have submitted job {} to the provider and stopped before recording the provider's request id; it is not submitted again, so it is not billed twice",
            job.id
        ),
    )
}

impl Processor {
    pub(super) async fn schedule_poll(
        &self,
        providers: &Providers,
        job: &Job,
        request_id: &str,
        turn: PollTurn,
        at_least: Option<Duration>,
    ) -> Outcome {
        let delay = poll_delay(providers.settings.poll_delay, turn.attempt)
            .max(at_least.unwrap_or_default());
        // Due when the poll is overdue, never later than the deadline: the sweeper then sends
        // the poll that fails the job.
        let mut due = OffsetDateTime::now_utc().unix_timestamp()
            + delay.as_secs() as i64
            + shared::resources::POLL_GRACE_SECONDS;
        if let Some(deadline) = job.provider_deadline {
            due = due.min(deadline);
        }
        // A token that changes with every turn, even within one second.
        if let Some(seen) = turn.due {
            due = due.max(seen + 1);
        }
        // The due time is written before the send, so a crash in between leaves a job the
        // sweeper finds; and only one handler per token continues the chain.
        match providers
            .transitions
            .expect_poll(&job.owner, job.id, request_id, turn.due, due)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Outcome::Skipped("a newer poll of this job is scheduled"),
            Err(e) => return Outcome::Retry(format!("could not schedule the poll: {e}")),
        }
        let message = JobMessage::Poll {
            owner: job.owner.clone(),
            job_id: job.id,
            request_id: request_id.to_owned(),
            attempt: turn.attempt,
            due: Some(due),
        };
        match providers.queue.send(&message, delay).await {
            Ok(()) => Outcome::Waiting,
            Err(e) => Outcome::Retry(format!("could not schedule the poll: {e}")),
        }
    }

    /// First step of a provider-backed job: submit once, store the request id, schedule a poll.
    pub(crate) async fn submit_to_provider(&self, job: &Job, lease: &Lease) -> Outcome {
        let Some(providers) = &self.providers else {
            return self
                .fail_job(
                    job,
                    not_configured("this processor has no provider support"),
                )
                .await;
        };
        // A run message redelivered after the submit (the lease expired, or the poll could not
        // be scheduled) resumes polling instead of submitting (and paying) again.
        if let Some(request_id) = &job.provider_request_id {
            return self
                .schedule_poll(providers, job, request_id, PollTurn::FIRST, None)
                .await;
        }
        match &job.operation {
            Operation::ReplaceBackgroundRelight(params) => {
                self.submit_relight(providers, job, params, lease).await
            }
            _ => self.submit_to_fal(providers, job, lease).await,
        }
    }

    /// Records the intent to submit, immediately before the paid call (after every input is
    /// read, so nothing that fails before the call leaves an intent behind). `Err` is the
    /// outcome to return instead of submitting.
    ///
    /// A paid call at most once per job: the intent is written before the call, the request id
    /// after it. An intent without a request id is an attempt that died (or timed out) in
    /// between, which may have been billed: never submit again blind.
    pub(super) async fn intend_submit(
        &self,
        providers: &Providers,
        job: &Job,
        lease: &Lease,
    ) -> Result<(), Outcome> {
        match providers
            .transitions
            .record_intent(&job.owner, job.id, &lease.token)
            .await
        {
            Ok(SubmitIntent::Recorded) => Ok(()),
            Ok(SubmitIntent::EarlierAttempt) => {
                Err(self.fail_job(job, provider_state_unknown(job)).await)
            }
            Ok(SubmitIntent::Refused) => Err(Outcome::Skipped("lease lost or already submitted")),
            Err(e) => Err(Outcome::Retry(e.to_string())),
        }
    }

    /// Stores the provider request on the job (once: the conditional write is what keeps a
    /// redelivered message from submitting and paying twice) and schedules the first poll.
    pub(super) async fn record_and_poll(
        &self,
        providers: &Providers,
        job: &Job,
        lease: &Lease,
        provider: &str,
        request_id: String,
        links: Option<ProviderLinks>,
    ) -> Outcome {
        let now = OffsetDateTime::now_utc();
        let deadline = now.unix_timestamp() + providers.settings.provider_deadline.as_secs() as i64;
        match providers
            .transitions
            .record_submission(
                &job.owner,
                job.id,
                &lease.token,
                &ProviderSubmission {
                    provider: provider.into(),
                    request_id: request_id.clone(),
                    deadline,
                    links,
                },
                now,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => return Outcome::Skipped("lease lost or already submitted"),
            Err(e) => {
                // The provider has the request but we could not store its id; retrying would
                // submit again, so the job waits for the lease to expire and the redelivery.
                tracing::error!(%request_id, error = %e, "submitted but could not record the request id");
                return Outcome::Retry(e.to_string());
            }
        }
        tracing::info!(%request_id, provider, "submitted");
        self.schedule_poll(providers, job, &request_id, PollTurn::FIRST, None)
            .await
    }

    /// A provider error at the submit: a retryable one gives the claim back and runs the job
    /// again after a backoff of seconds, at least the provider's `Retry-After` (Stability's
    /// 60 s lockout after a 429) ([`Processor::retry_soon`]); the rest fail the job with the
    /// mapped code.
    pub(super) async fn provider_failed(
        &self,
        providers: &Providers,
        job: &Job,
        lease: &Lease,
        e: ProviderError,
    ) -> Outcome {
        crate::metrics::provider_error(Provider::of(&job.operation), e.code);
        if e.outcome_unknown {
            tracing::error!(error = %e, "submit outcome unknown; not submitting again");
            return self.fail_job(job, provider_state_unknown(job)).await;
        }
        if !e.retryable {
            return self.fail_job(job, JobError::new(e.code, e.message)).await;
        }
        // The provider answered (or was never reached): nothing was accepted, so the next
        // attempt may submit.
        if let Err(clear) = providers
            .transitions
            .clear_intent(&job.owner, job.id, &lease.token)
            .await
        {
            tracing::warn!(error = %clear, "could not withdraw the submit intent");
        }
        let run = JobMessage::Run {
            owner: job.owner.clone(),
            job_id: job.id,
        };
        self.retry_soon(&run, job, lease, e.to_string(), e.retry_after)
            .await
    }

    /// A failed status or result call while polling: polls are safe to repeat, so a retryable
    /// error backs off on our own schedule (not SQS's, and at least the provider's
    /// `Retry-After`); any other fails the job with the mapped code.
    pub(super) async fn poll_failed(
        &self,
        providers: &Providers,
        job: &Job,
        request_id: &str,
        turn: PollTurn,
        e: ProviderError,
    ) -> Outcome {
        crate::metrics::provider_error(Provider::of(&job.operation), e.code);
        if e.retryable {
            tracing::warn!(error = %e, "poll failed; polling again later");
            self.schedule_poll(providers, job, request_id, turn.next(), e.retry_after)
                .await
        } else {
            self.fail_job(job, JobError::new(e.code, e.message)).await
        }
    }

    /// A poll message: ask the provider, then complete, re-poll with backoff, or fail.
    pub(crate) async fn poll(
        &self,
        owner: &shared::job::OwnerId,
        job_id: ulid::Ulid,
        request_id: &str,
        turn: PollTurn,
    ) -> Outcome {
        let Some(providers) = &self.providers else {
            return Outcome::Skipped("no provider support");
        };
        let job = match providers.store.get(owner, job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Outcome::Skipped("no such job"),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        crate::processor::note_request_id(&job);
        let own_request = job.provider_request_id.as_deref() == Some(request_id);
        // Canceled or finished jobs discard whatever the provider still has; a canceled fal
        // request is also canceled there, once.
        if job.status.is_terminal() {
            if own_request
                && job.status == shared::job::JobStatus::Canceled
                && job.provider.as_deref() == Some("fal")
            {
                return self.cancel_at_fal(providers, &job, request_id).await;
            }
            // A canceled Stability job: its next poll is where the processor learns of it
            // (fal's is counted once, in `cancel_at_fal`).
            if own_request && job.status == shared::job::JobStatus::Canceled {
                crate::metrics::job_ended(&job);
            }
            return Outcome::Skipped("already finished");
        }
        if !own_request {
            return Outcome::Skipped("poll for another request");
        }
        let now = OffsetDateTime::now_utc();
        if job
            .provider_deadline
            .is_some_and(|d| now.unix_timestamp() > d)
        {
            return self
                .fail_job(
                    &job,
                    JobError::new(
                        "provider_timeout",
                        format!("the provider did not finish request {request_id} in time"),
                    ),
                )
                .await;
        }
        let outcome = match job.provider.as_deref() {
            Some("fal") => self.poll_fal(providers, &job, request_id, turn).await,
            _ => self.poll_stability(providers, &job, request_id, turn).await,
        };
        match outcome {
            // A failure of ours while collecting (an S3 or DynamoDB error): polls are free to
            // repeat, so the chain goes on after seconds instead of the message waiting out
            // the visibility timeout.
            Outcome::Retry(reason) => {
                tracing::warn!(%reason, "poll failed; polling again shortly");
                self.schedule_poll(
                    providers,
                    &job,
                    request_id,
                    turn.next(),
                    Some(POLL_RETRY_DELAY),
                )
                .await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_backoff_doubles_and_caps() {
        let base = Duration::from_secs(10);
        assert_eq!(poll_delay(base, 0).as_secs(), 10);
        assert_eq!(poll_delay(base, 2).as_secs(), 40);
        assert_eq!(poll_delay(base, 30).as_secs(), 900);
        assert_eq!(poll_delay(Duration::ZERO, 5).as_secs(), 0);
    }
}
