//! The processor: an SQS consumer that runs each job exactly once in effect.
//!
//! Per message: claim the job with a conditional write (`queued → processing`, or take over an
//! expired lease) → read the input → run the operation → write the result to S3 under a
//! deterministic key → `processing → succeeded` (only by the lease holder). A duplicate delivery
//! finds the job leased or terminal and is acknowledged without running anything.
//!
//! This module holds the [`Processor`] over its ports and the dispatch of a run message; `batch`
//! feeds it records, `operation` holds what each operation does, and `wiring` builds it over the
//! real adapters: this module names ports only.

use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use shared::config::Settings;
use shared::core::{
    BlobStore, Claim, JobQueue, JobStore, JobTransitions, Lease, MessageVisibility, ModelQueue,
    ProviderTransitions, RelightProvider, RemoveBackgroundProvider, Segmenter, UrlFetcher,
};
use shared::job::{Job, JobError, JobMessage, JobResult, JobStatus, Operation};
use shared::providers::ProviderSettings;

use crate::delivery::Notifier;
use crate::outcome::Outcome;

/// Runs jobs from queue messages.
#[derive(Clone)]
pub struct Processor {
    pub(crate) transitions: Arc<dyn JobTransitions>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) segmenter: Arc<dyn Segmenter>,
    pub(crate) max_receive_count: u32,
    pub(crate) lease: Duration,
    pub(crate) dead_letter_queue_arn: Option<String>,
    /// Each record's deadline ([`shared::resources::RECORD_DEADLINE_SECONDS`]): a record still
    /// running then is abandoned as a retry, so one slow call cannot get the whole invocation,
    /// and its batch-mates' receives, killed at the Lambda timeout.
    pub(crate) record_deadline: Duration,
    pub(crate) providers: Option<Providers>,
    /// Job-end notifications ([`crate::delivery`]); `None` skips `notify` messages.
    pub(crate) notifier: Option<Arc<Notifier>>,
    /// Brings back in seconds a record that failed before its claim was written
    /// ([`Outcome::Unclaimed`]); `None`: such a record waits out the visibility timeout.
    pub(crate) visibility: Option<Arc<dyn MessageVisibility>>,
}

/// What the provider-backed operations need: the job reads and provider transitions, the queue
/// for poll messages, and the provider clients (`None` when the key is not configured).
#[derive(Clone)]
pub struct Providers {
    /// Reads jobs on poll messages.
    pub store: Arc<dyn JobStore>,
    /// Provider-side conditional writes.
    pub transitions: Arc<dyn ProviderTransitions>,
    /// Where poll messages go (the jobs queue itself).
    pub queue: Arc<dyn JobQueue>,
    /// Stability, when `STABILITY_API_KEY` is set.
    pub relight: Option<Arc<dyn RelightProvider>>,
    /// Stability's synchronous remove-background, when `STABILITY_API_KEY` is set.
    pub remove_background: Option<Arc<dyn RemoveBackgroundProvider>>,
    /// fal.ai's queue (`edit`, `generate`), when `FAL_KEY` is set.
    pub models: Option<Arc<dyn ModelQueue>>,
    /// How provider output URLs are downloaded (public https only, outside development).
    pub downloads: Arc<dyn UrlFetcher>,
    /// Poll cadence, deadline, model ids, webhook base URL.
    pub settings: ProviderSettings,
}

/// Pause before a failed claim is tried again under the same lease.
const CLAIM_RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Processor {
    /// Builds a processor over the given ports, with the retry, lease and dead-letter settings
    /// of `settings.jobs` (`MAX_RECEIVE_COUNT`, `LEASE_SECONDS`, `DEAD_LETTER_QUEUE_ARN`).
    pub fn new(
        transitions: Arc<dyn JobTransitions>,
        blobs: Arc<dyn BlobStore>,
        segmenter: Arc<dyn Segmenter>,
        settings: &Settings,
    ) -> Self {
        Self {
            transitions,
            blobs,
            segmenter,
            max_receive_count: settings.jobs.max_receive_count,
            lease: settings.jobs.lease,
            dead_letter_queue_arn: settings.jobs.dead_letter_queue_arn.clone(),
            record_deadline: Duration::from_secs(u64::from(
                shared::resources::RECORD_DEADLINE_SECONDS,
            )),
            providers: None,
            notifier: None,
            visibility: None,
        }
    }

    /// The same processor with another per-record deadline (tests; the default is
    /// [`shared::resources::RECORD_DEADLINE_SECONDS`]).
    pub fn with_record_deadline(mut self, deadline: Duration) -> Self {
        self.record_deadline = deadline;
        self
    }

    /// Enables the provider-backed operations.
    pub fn with_providers(mut self, providers: Providers) -> Self {
        self.providers = Some(providers);
        self
    }

    /// Makes a record that failed before its claim was written visible again after
    /// [`crate::UNCLAIMED_RETRY_DELAY`] through `visibility` (the jobs queue).
    pub fn with_visibility(mut self, visibility: Arc<dyn MessageVisibility>) -> Self {
        self.visibility = Some(visibility);
        self
    }

    /// Sends job-end notifications through `notifier` (webhooks, e-mail); without one,
    /// `notify` messages are skipped.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(Arc::new(notifier));
        self
    }

    /// Claims and runs the job of a `run` message received `receive_count` times (SQS's
    /// `ApproximateReceiveCount`).
    pub(crate) async fn run(&self, message: &JobMessage, receive_count: u32) -> Outcome {
        let (owner, job_id) = message.job();
        let now = OffsetDateTime::now_utc();
        let lease = Lease {
            token: ulid::Ulid::new().to_string(),
            until: now.unix_timestamp() + self.lease.as_secs() as i64,
        };
        let job = match self.claim(owner, job_id, &lease, now).await {
            Ok(Claim::Claimed(job)) => job,
            Ok(Claim::Leased(_)) => return Outcome::Skipped("another processor holds the lease"),
            Ok(Claim::Terminal(job)) => {
                note_request_id(&job);
                // The run message of a job canceled while queued: where the processor learns
                // of the cancel (the API made it).
                if job.status == JobStatus::Canceled {
                    crate::metrics::job_ended(&job);
                }
                return Outcome::Skipped("already finished");
            }
            Ok(Claim::Missing) => return Outcome::Skipped("no such job"),
            Err(e) => return Outcome::Unclaimed(e.to_string()),
        };
        note_request_id(&job);
        // The run and the claim's heartbeat together: the heartbeat never ends on its own, so
        // the run's outcome is what comes out, and the heartbeat stops with it.
        let outcome = tokio::select! {
            outcome = self.run_claimed(message, &job, &lease) => outcome,
            never = self.keep_lease(&job, &lease) => match never {},
        };
        match outcome {
            // A message on its last receive keeps the old path: the caller ends the job
            // `retries_exhausted`, as the dead-letter queue would. Giving the claim back is a
            // takeover made early: the next claim finds what this one left (an intent, a
            // request id) exactly as it would after the lease ran out.
            Outcome::Retry(reason) if receive_count < self.max_receive_count => {
                self.retry_soon(message, &job, &lease, reason, None).await
            }
            other => other,
        }
    }

    /// The claim's heartbeat: renews the lease every third of [`Self::lease`] while the run
    /// goes on ([`JobTransitions::renew`]), so the lease can be short (a dead processor's job
    /// is due for takeover at most one lease after its last beat) while a run may last its
    /// whole record deadline. Ends renewing, and waits forever, once a renewal answers `false`:
    /// the run moved the job on (a provider request recorded, the claim given back, the job
    /// ended) or lost it. A renewal that failed may have been written with its answer lost;
    /// the next beat then tries from each due time it may have left.
    async fn keep_lease(&self, job: &Job, lease: &Lease) -> std::convert::Infallible {
        let every = (self.lease / 3).max(Duration::from_secs(1));
        // The due time our last renewal certainly left, then those a failed one may have.
        let mut maybe = vec![lease.until];
        loop {
            tokio::time::sleep(every).await;
            let until = OffsetDateTime::now_utc().unix_timestamp() + self.lease.as_secs() as i64;
            let mut renewed = Ok(false);
            for &seen in maybe.iter().rev() {
                renewed = self
                    .transitions
                    .renew(&job.owner, job.id, &lease.token, seen, until)
                    .await;
                if !matches!(renewed, Ok(false)) {
                    break;
                }
            }
            match renewed {
                Ok(true) => maybe = vec![until],
                Ok(false) => return std::future::pending().await,
                Err(e) => {
                    tracing::warn!(error = %e, "lease renewal failed; trying again at the next beat");
                    maybe.push(until);
                }
            }
        }
    }

    /// Claims the job under `lease`. A claim that failed may still have been written (its
    /// answer lost), and then the job would sit under our own lease until it ran out; so it is
    /// tried once more with the same token, which the store recognises as ours
    /// ([`Claim::Claimed`]) if the first one landed and takes normally if it did not.
    async fn claim(
        &self,
        owner: &shared::job::OwnerId,
        job_id: ulid::Ulid,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> shared::Result<Claim> {
        match self.transitions.claim(owner, job_id, lease, now).await {
            Err(e) => {
                tracing::info!(error = %e, "claim failed; trying once more under the same lease");
                tokio::time::sleep(CLAIM_RETRY_PAUSE).await;
                self.transitions
                    .claim(owner, job_id, lease, OffsetDateTime::now_utc())
                    .await
            }
            claimed => claimed,
        }
    }

    /// The claimed job's run: the operation, then the terminal write (or, for a provider, the
    /// submit and the first poll).
    async fn run_claimed(&self, message: &JobMessage, job: &Job, lease: &Lease) -> Outcome {
        let (owner, job_id) = (&job.owner, job.id);
        if !matches!(job.operation, Operation::RemoveBackground(_)) {
            return self.submit_to_provider(job, lease).await;
        }
        match self.execute(job, lease).await {
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
                    Ok(done) => {
                        crate::metrics::job_ended(&done);
                        Outcome::Succeeded
                    }
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
                    Ok(ended) => {
                        if let Some(job) = &ended {
                            crate::metrics::job_ended(job);
                        }
                        Outcome::Failed(error.code)
                    }
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Err(Step::Transient(reason)) => Outcome::Retry(reason),
            Err(Step::Throttled(reason, after)) => {
                self.retry_soon(message, job, lease, reason, Some(after))
                    .await
            }
            Err(Step::Busy(reason)) => self.defer(message, job, lease, reason).await,
        }
    }

    /// A transient failure of a claimed job (an AWS error, a segmenter 5xx or timeout, a
    /// provider that refused for now): the claim is given back, counted
    /// ([`JobTransitions::release`]), and the run message sent again after
    /// [`retry_delay`] — seconds, where a returned SQS message waits out the 360 s visibility
    /// timeout and a kept lease its 30 s. The release sets the `pending` due time past the
    /// delay plus the queued grace, so the recovery sweeper sends the job should this send be
    /// lost. The delay is at least `at_least` (a provider's `Retry-After`, or Stability's
    /// 60 s lockout after a 429). A job already claimed `MAX_RECEIVE_COUNT` times is failed
    /// `retries_exhausted` instead, as its last receive would be; one whose release fails
    /// returns to SQS.
    pub(crate) async fn retry_soon(
        &self,
        message: &JobMessage,
        job: &Job,
        lease: &Lease,
        reason: String,
        at_least: Option<Duration>,
    ) -> Outcome {
        if job.attempts >= self.max_receive_count {
            return self.exhausted(message, &reason).await;
        }
        let delay = retry_delay(job.attempts).max(at_least.unwrap_or_default());
        match self.requeue(message, job, lease, false, delay).await {
            Ok(true) => {}
            // Ended or taken over meanwhile (a commit whose answer was lost, a cancel): the
            // message has nothing left to do.
            Ok(false) => return Outcome::Skipped("the job moved on after a transient failure"),
            Err(e) => {
                return Outcome::Retry(format!("{reason}; could not release the job: {e}"));
            }
        }
        tracing::warn!(%reason, attempts = job.attempts, ?delay, "transient failure: job queued again");
        Outcome::Requeued(reason)
    }

    /// Gives a claimed job back to the queue when its engine was busy: the claim is released
    /// uncounted ([`JobTransitions::release`]) and the run message sent again after
    /// [`BUSY_REQUEUE_DELAY`], so overload neither spends one of the message's receives
    /// (`retries_exhausted` counts failures only) nor waits a whole visibility timeout. The
    /// release sets the `pending` index's due time past the delay plus the queued grace, so the
    /// recovery sweeper sends the job should this send be lost.
    async fn defer(
        &self,
        message: &JobMessage,
        job: &Job,
        lease: &Lease,
        reason: String,
    ) -> Outcome {
        let now = OffsetDateTime::now_utc();
        let age = now - job.created_at;
        if age > BUSY_DEFER_LIMIT {
            return Outcome::Retry(format!(
                "{reason} (the job is {} s old, past the {} s it may wait on a busy engine)",
                age.whole_seconds(),
                BUSY_DEFER_LIMIT.as_secs()
            ));
        }
        match self
            .requeue(message, job, lease, true, BUSY_REQUEUE_DELAY)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Outcome::Skipped("lease lost to another processor"),
            Err(e) => return Outcome::Retry(format!("{reason}; could not release the job: {e}")),
        }
        tracing::info!(%reason, delay = ?BUSY_REQUEUE_DELAY, "engine busy: job queued again, attempt not counted");
        Outcome::Deferred(reason)
    }

    /// Gives the claim back ([`JobTransitions::release`], refunding its attempt or not) and
    /// sends `message` again after `delay`. The release makes the job due in the `pending`
    /// index after the delay plus the queued grace, so a send that fails here (only logged)
    /// is made up by the recovery sweeper. `Ok(false)` when the lease was lost: nothing was
    /// released or sent.
    async fn requeue(
        &self,
        message: &JobMessage,
        job: &Job,
        lease: &Lease,
        refund_attempt: bool,
        delay: Duration,
    ) -> shared::Result<bool> {
        let now = OffsetDateTime::now_utc();
        let due =
            now.unix_timestamp() + delay.as_secs() as i64 + shared::resources::QUEUED_GRACE_SECONDS;
        if !self
            .transitions
            .release(&job.owner, job.id, &lease.token, refund_attempt, due, now)
            .await?
        {
            return Ok(false);
        }
        match &self.providers {
            Some(providers) => {
                if let Err(e) = providers.queue.send(message, delay).await {
                    tracing::warn!(error = %e, "could not queue the job again; the recovery sweeper will");
                }
            }
            None => tracing::info!("no queue wired; the recovery sweeper queues the job again"),
        }
        Ok(true)
    }

    /// Runs the operation and stores its output; no job state changes here.
    async fn execute(&self, job: &Job, lease: &Lease) -> Result<JobResult, Step> {
        match &job.operation {
            Operation::ReplaceBackgroundRelight(_)
            | Operation::Edit(_)
            | Operation::Generate(_) => Err(Step::Permanent(JobError::new(
                "invalid_job",
                format!(
                    "{} runs through submit/poll, not execute",
                    job.operation.name()
                ),
            ))),
            Operation::RemoveBackground(params) => self.remove_background(job, params, lease).await,
        }
    }

    pub(crate) async fn fail_job(&self, job: &Job, error: JobError) -> Outcome {
        match self
            .transitions
            .fail(&job.owner, job.id, &error, OffsetDateTime::now_utc())
            .await
        {
            Ok(ended) => {
                if let Some(job) = &ended {
                    crate::metrics::job_ended(job);
                }
                Outcome::Failed(error.code)
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

/// Adds the job's [`Job::request_id`] to the current `job` span (opened in `batch.rs` before
/// the record is read), so every later line of this record names the request that created
/// the job.
pub(crate) fn note_request_id(job: &Job) {
    if let Some(id) = &job.request_id {
        tracing::Span::current().record("request_id", tracing::field::display(id));
    }
}

/// `provider_not_configured`, naming the setting that is missing.
pub(crate) fn not_configured(message: &str) -> JobError {
    JobError::new("provider_not_configured", message)
}
pub(crate) const STABILITY_UNSET: &str = "Stability is not configured: set STABILITY_API_KEY";

/// How a step of an operation failed: the caller fails the job on a permanent failure and
/// returns the message to SQS on a transient one.
pub(crate) enum Step {
    Permanent(JobError),
    Transient(String),
    /// Transient, and the provider asked us to wait this long first (Stability's 60 s lockout
    /// after a 429): retried after at least that ([`Processor::retry_soon`]).
    Throttled(String, Duration),
    /// The engine is busy (an overloaded segmenter, still so after the in-record backoff):
    /// nothing is wrong with the job or its attempt. The claim is given back uncounted and the
    /// job queued again after [`BUSY_REQUEUE_DELAY`] ([`Processor::defer`]).
    Busy(String),
}

/// How long a job waits before its run after a transient failure, by the attempts its claims
/// have counted so far (1-based): 5 s, doubling, at most 60 s.
pub(crate) fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(4))
        .min(Duration::from_secs(60))
}

/// How long a job deferred by a busy engine waits before it is run again: seconds, where a
/// returned SQS message would wait out the whole visibility timeout.
pub(crate) const BUSY_REQUEUE_DELAY: Duration = Duration::from_secs(5);

/// How old a job may be and still be deferred by a busy engine (15 minutes). Past it, a busy
/// engine counts as a transient failure like any other, so a segmenter that stays overloaded
/// ends the job `retries_exhausted` instead of keeping it queued forever.
pub(crate) const BUSY_DEFER_LIMIT: Duration = Duration::from_secs(15 * 60);
