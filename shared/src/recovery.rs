//! The recovery sweeper: every accepted job reaches a terminal state without anyone acting
//! (docs/ARCHITECTURE.md "Recovery").
//!
//! The jobs table is its own outbox. Every non-terminal job sits in the sparse `pending` index
//! with a due time — a new job's grace ([`crate::resources::QUEUED_GRACE_SECONDS`]), a claimed
//! job's lease end, a provider job's next poll plus [`crate::resources::POLL_GRACE_SECONDS`]
//! (at most its deadline) — and leaves it when its notifications are settled. A job still in
//! the index after its due time has lost its message somewhere: the SQS send after the record
//! write failed or never ran (the API or ingest died), or the processor holding it crashed or
//! was killed. The sweeper (a scheduled function on AWS; a loop in the local runner) sends such
//! a job to the queue again:
//!
//! | found | sent |
//! |---|---|
//! | `queued` | `run` (the claim makes duplicates harmless) |
//! | `processing`, no provider request | `run`: the claim takes the expired lease over; after [`Sweeper::max_attempts`] claims the job fails `retries_exhausted` instead |
//! | `processing`, waiting on a provider request | `poll`, carrying the new due time, so its chain replaces the lost one: it collects the result or, past the deadline, fails the job |
//! | `succeeded`, `failed`, `canceled` (notifications not settled) | `notify` |
//!
//! The last row is the notification outbox: every terminal transition leaves the job in the
//! index, due [`crate::resources::OUTBOX_GRACE_SECONDS`] later, in the same write. Whoever
//! wrote it queues the `notify` message; the handler clears the entry once every channel is
//! settled, or moves it to its scheduled retry. A `notify` never sent, or held by a processor
//! that was killed, is so relayed again here. A duplicate `notify` message is harmless: each
//! channel is sent under a claim ([`crate::notification::NotificationStore::claim_delivery`]).
//!
//! Before sending, it moves the job's due time forward by [`Sweeper::retry_after`]
//! ([`Sweeper::takeover_retry_after`] for an expired lease) with a conditional write on the
//! due time it read, so two sweepers never act on the same due time
//! and a job whose message is lost again is looked at again.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::core::{JobQueue, JobTransitions, PendingJob, PendingJobs};
use crate::error::Result;
use crate::job::{JobError, JobMessage, JobStatus, OwnerId};
use ulid::Ulid;

/// What one [`Sweeper::sweep`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Jobs the index returned as due.
    pub due: usize,
    /// `run` messages sent (stale `queued` jobs and expired leases).
    pub requeued: usize,
    /// `poll` messages sent (provider jobs past their deadline).
    pub polled: usize,
    /// Jobs failed `retries_exhausted` (claimed [`Sweeper::max_attempts`] times already).
    pub failed: usize,
    /// Ended jobs whose outbox entry nobody cleared: `notify` sent, entry cleared.
    pub relayed: usize,
    /// Jobs another sweeper or a processor moved first (nothing sent).
    pub skipped: usize,
    /// Jobs whose recovery hit an AWS error; they stay due and are retried next sweep.
    pub errors: usize,
}

/// [`Sweeper::takeover_retry_after`]'s default: how soon a job taken back from an expired
/// lease is looked at again should its `run` be lost too.
pub const TAKEOVER_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Finds jobs whose message was lost and sends them to the queue again.
pub struct Sweeper {
    pending: Arc<dyn PendingJobs>,
    queue: Arc<dyn JobQueue>,
    transitions: Arc<dyn JobTransitions>,
    /// Claims after which a job whose lease expired is failed instead of run again: the jobs
    /// queue's `maxReceiveCount`, so a job that keeps killing its processor ends as it would
    /// through the dead-letter queue.
    pub max_attempts: u32,
    /// How far a recovered job's due time moves (seconds), i.e. how soon it is looked at again
    /// if this message is lost too.
    pub retry_after: Duration,
    /// The same for a job taken back from an expired lease (`processing`, no provider
    /// request): shorter, because such a job has already waited out a lease since its
    /// processor died, and a second loss (the processor that received the `run` dying before
    /// its claim, the message then held for the whole visibility timeout) would otherwise add
    /// a full [`Self::retry_after`]. Lease (30 s) + this + a sweep interval stays within the
    /// two minutes a crashed job has to finish (docs/ARCHITECTURE.md "Recovery"). Only crashed
    /// jobs pay for it: a duplicate `run` every 30 s while one waits in the queue.
    pub takeover_retry_after: Duration,
}

impl Sweeper {
    /// A sweeper over these ports, with `max_attempts` from the queue's redrive policy, a 60 s
    /// `retry_after` and a [`TAKEOVER_RETRY_AFTER`] `takeover_retry_after`.
    pub fn new(
        pending: Arc<dyn PendingJobs>,
        queue: Arc<dyn JobQueue>,
        transitions: Arc<dyn JobTransitions>,
        max_attempts: u32,
    ) -> Self {
        Self {
            pending,
            queue,
            transitions,
            max_attempts,
            retry_after: Duration::from_secs(60),
            takeover_retry_after: TAKEOVER_RETRY_AFTER,
        }
    }

    /// One pass over at most `limit` due jobs at `now`.
    ///
    /// # Errors
    /// Only when the index itself cannot be read; a failure on one job is counted in
    /// [`SweepReport::errors`] and the pass goes on.
    pub async fn sweep(&self, now: OffsetDateTime, limit: usize) -> Result<SweepReport> {
        let now_s = now.unix_timestamp();
        let due = self.pending.due(now_s, limit).await?;
        let mut report = SweepReport {
            due: due.len(),
            ..SweepReport::default()
        };
        for job in due {
            match self.recover(&job, now).await {
                Ok(Some(Recovered::Requeued)) => report.requeued += 1,
                Ok(Some(Recovered::Polled)) => report.polled += 1,
                Ok(Some(Recovered::Failed)) => report.failed += 1,
                Ok(Some(Recovered::Relayed)) => report.relayed += 1,
                Ok(None) => report.skipped += 1,
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(owner = %job.owner, job_id = %job.id, error = %e, "recovery failed; retried next sweep");
                }
            }
        }
        if report.due > 0 {
            tracing::info!(?report, "sweep");
        }
        Ok(report)
    }

    async fn recover(&self, job: &PendingJob, now: OffsetDateTime) -> Result<Option<Recovered>> {
        let again = match (job.status, &job.provider_request_id) {
            (JobStatus::Processing, None) => self.takeover_retry_after,
            _ => self.retry_after,
        };
        let until = now.unix_timestamp() + again.as_secs() as i64;
        match self
            .pending
            .postpone(&job.owner, job.id, job.due, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => {
                // The write may have landed with its answer lost; if so, the job would sit
                // out `retry_after` with nothing sent.
                self.make_due_again(job, until).await;
                return Err(e);
            }
        }
        match self.act(job, now, until).await {
            Ok(recovered) => Ok(Some(recovered)),
            Err(e) => {
                self.make_due_again(job, until).await;
                Err(e)
            }
        }
    }

    /// Puts the job's due time back from `until` to what the pass saw (only if `until` is
    /// still there: ours), so the next pass, seconds away, tries again instead of waiting out
    /// `retry_after` for a message that was never sent.
    async fn make_due_again(&self, job: &PendingJob, until: i64) {
        if let Err(e) = self
            .pending
            .postpone(&job.owner, job.id, until, job.due)
            .await
        {
            tracing::warn!(error = %e, "could not make the job due again");
        }
    }

    /// Sends what the due job needs, its due time already moved to `until`.
    async fn act(&self, job: &PendingJob, now: OffsetDateTime, until: i64) -> Result<Recovered> {
        let (owner, job_id) = (job.owner.clone(), job.id);
        match (job.status, &job.provider_request_id) {
            (JobStatus::Processing, Some(request_id)) => {
                self.queue
                    .send(
                        &JobMessage::Poll {
                            owner,
                            job_id,
                            request_id: request_id.clone(),
                            attempt: 0,
                            // The due time just written: this poll's chain replaces the lost one.
                            due: Some(until),
                        },
                        Duration::ZERO,
                    )
                    .await?;
                tracing::info!(owner = %job.owner, %job_id, "provider job whose poll is overdue: poll sent");
                Ok(Recovered::Polled)
            }
            (JobStatus::Processing, None) if job.attempts >= self.max_attempts => {
                let error = JobError::new(
                    "retries_exhausted",
                    format!(
                        "gave up after {} attempts: the processor running the job stopped before it finished",
                        job.attempts
                    ),
                );
                if self
                    .transitions
                    .fail(&owner, job_id, &error, now)
                    .await?
                    .is_some()
                {
                    // Whatever ends a job relays its outbox entry.
                    self.relay(owner, job_id).await?;
                }
                tracing::warn!(owner = %job.owner, %job_id, attempts = job.attempts, "lease expired too often: job failed");
                Ok(Recovered::Failed)
            }
            (JobStatus::Queued | JobStatus::Processing, _) => {
                self.queue
                    .send(&JobMessage::Run { owner, job_id }, Duration::ZERO)
                    .await?;
                tracing::info!(owner = %job.owner, %job_id, status = job.status.as_str(), "job without a live message: run sent");
                Ok(Recovered::Requeued)
            }
            (JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled, _) => {
                self.relay(owner, job_id).await?;
                tracing::info!(owner = %job.owner, %job_id, status = job.status.as_str(), "ended job's outbox entry relayed: notify sent");
                Ok(Recovered::Relayed)
            }
        }
    }

    /// Sends the ended job's `notify` message (the handler finds out whether anyone is to be
    /// told, and clears the outbox entry once every channel is settled; until then the entry,
    /// already moved [`Self::retry_after`] on, brings the job back should this message be lost
    /// too).
    async fn relay(&self, owner: OwnerId, job_id: Ulid) -> Result<()> {
        self.queue
            .send(
                &JobMessage::Notify {
                    owner: owner.clone(),
                    job_id,
                    attempt: 1,
                },
                Duration::ZERO,
            )
            .await
    }
}

enum Recovered {
    Requeued,
    Polled,
    Failed,
    Relayed,
}
