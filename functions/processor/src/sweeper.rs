//! The recovery sweeper's function (`imagejobs-sweeper`, scheduled every minute in
//! `template.yaml`; a loop in the local runner): a few [`Sweeper`] passes per invocation, so a
//! job whose message was lost is sent again within about [`SWEEP_INTERVAL`] of its due time
//! even though EventBridge schedules no finer than a minute. See [`shared::recovery`].

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::Aws;
use shared::config::Settings;
use shared::recovery::{SweepReport, Sweeper};
use time::OffsetDateTime;

use crate::error::ProcessorError;

/// Time between passes within one invocation.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(20);
/// Passes per invocation: 0 s, 20 s and 40 s after the start, inside the function's 60 s.
pub const SWEEP_PASSES: u32 = 3;
/// Jobs one pass looks at, at most.
pub const SWEEP_LIMIT: usize = 500;

/// A sweeper over the AWS adapters; `max_attempts` is the queue's `MAX_RECEIVE_COUNT`.
pub fn with_aws(settings: &Settings, aws: &Aws) -> Sweeper {
    Sweeper::new(
        Arc::new(aws.jobs.clone()),
        Arc::new(aws.queue.clone()),
        Arc::new(aws.jobs.clone()),
        settings.jobs.max_receive_count,
    )
}

/// Builds the sweeper from the environment (`JOBS_TABLE`, `JOBS_QUEUE_URL`, …).
///
/// # Errors
/// [`ProcessorError::Config`] naming a missing or malformed variable.
pub async fn from_env() -> Result<Sweeper, ProcessorError> {
    let settings = Settings::from_env()?;
    let sdk = shared::adapters::aws_sdk_config().await?;
    Ok(with_aws(&settings, &Aws::with_sdk_config(&sdk, &settings)))
}

/// [`SWEEP_PASSES`] passes, [`SWEEP_INTERVAL`] apart; the reports added up.
///
/// # Errors
/// The first pass whose index read fails (the schedule runs the function again a minute
/// later).
pub async fn run_passes(sweeper: &Sweeper) -> Result<SweepReport, ProcessorError> {
    let mut total = SweepReport::default();
    for pass in 0..SWEEP_PASSES {
        if pass > 0 {
            tokio::time::sleep(SWEEP_INTERVAL).await;
        }
        let report = sweeper
            .sweep(OffsetDateTime::now_utc(), SWEEP_LIMIT)
            .await?;
        total.due += report.due;
        total.requeued += report.requeued;
        total.polled += report.polled;
        total.failed += report.failed;
        total.relayed += report.relayed;
        total.skipped += report.skipped;
        total.errors += report.errors;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::core::{
        JobStore, JobTransitions, Lease, PendingJobs, ProviderSubmission, ProviderTransitions,
    };
    use shared::fakes::{InMemoryJobs, InMemoryQueue};
    use shared::job::{Job, JobMessage, JobStatus, OwnerId};
    use shared::notification::NotificationStore;
    use time::Duration as Span;

    fn job(owner: &OwnerId, created_at: OffsetDateTime) -> Job {
        Job::new(
            ulid::Ulid::new(),
            owner.clone(),
            shared::job::Operation::RemoveBackground(
                shared::operation::remove_background::RemoveBackgroundParams::with_model("u2net"),
            ),
            std::collections::BTreeMap::new(),
            created_at,
            Span::days(30),
        )
    }

    fn sweeper(jobs: &Arc<InMemoryJobs>, queue: &Arc<InMemoryQueue>) -> Sweeper {
        Sweeper::new(jobs.clone(), queue.clone(), jobs.clone(), 3)
    }

    #[tokio::test]
    async fn a_queued_job_whose_send_was_lost_is_sent_again_once_after_its_grace() {
        let (jobs, queue) = (
            Arc::new(InMemoryJobs::new()),
            Arc::new(InMemoryQueue::new()),
        );
        let owner = OwnerId::parse("acme").unwrap();
        let t0 = OffsetDateTime::now_utc();
        let lost = job(&owner, t0);
        jobs.create(&lost, None).await.unwrap();
        let sweeper = sweeper(&jobs, &queue);

        // Within its grace the job may still be on its way to the queue: left alone.
        let early = sweeper.sweep(t0 + Span::seconds(10), 100).await.unwrap();
        assert_eq!((early.due, early.requeued), (0, 0));
        assert!(queue.sent().is_empty());

        let late = sweeper.sweep(t0 + Span::seconds(31), 100).await.unwrap();
        assert_eq!((late.due, late.requeued), (1, 1));
        let sent = queue.take();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].message,
            JobMessage::Run {
                owner: owner.clone(),
                job_id: lost.id
            }
        );
        // Its due time moved on: the next pass sends nothing until retry_after has passed.
        let again = sweeper.sweep(t0 + Span::seconds(40), 100).await.unwrap();
        assert_eq!(again.due, 0);
        let after = sweeper
            .sweep(t0 + Span::seconds(31 + 61), 100)
            .await
            .unwrap();
        assert_eq!(after.requeued, 1);
    }

    #[tokio::test]
    async fn an_expired_lease_is_run_again_and_an_outbox_entry_is_relayed_until_its_handler_clears_it()
     {
        let (jobs, queue) = (
            Arc::new(InMemoryJobs::new()),
            Arc::new(InMemoryQueue::new()),
        );
        let owner = OwnerId::parse("acme").unwrap();
        let t0 = OffsetDateTime::now_utc();
        let crashed = job(&owner, t0);
        let finished = job(&owner, t0);
        for j in [&crashed, &finished] {
            jobs.create(j, None).await.unwrap();
            let lease = Lease {
                token: format!("t-{}", j.id),
                until: t0.unix_timestamp() + 65,
            };
            jobs.claim(&owner, j.id, &lease, t0).await.unwrap();
        }
        let result = shared::job::JobResult {
            key: "results/x.png".into(),
            content_type: "image/png".into(),
            width: 1,
            height: 1,
            bytes: 1,
            engine: None,
            foreground_fraction: None,
            images: Vec::new(),
            seed: None,
        };
        jobs.complete(
            &owner,
            finished.id,
            &format!("t-{}", finished.id),
            &result,
            t0,
        )
        .await
        .unwrap();
        let sweeper = sweeper(&jobs, &queue);
        // The lease is live until t0 + 65 and the outbox grace runs to t0 + 60: nothing is
        // touched before.
        assert_eq!(
            sweeper
                .sweep(t0 + Span::seconds(59), 100)
                .await
                .unwrap()
                .due,
            0
        );
        // At t0 + 66 the crashed job's lease is over, and so is the finished job's outbox
        // grace (nobody queued its notify message: this test never called the notifier).
        let report = sweeper.sweep(t0 + Span::seconds(66), 100).await.unwrap();
        assert_eq!(
            (report.due, report.requeued, report.relayed),
            (2, 1, 1),
            "{report:?}"
        );
        let mut sent: Vec<JobMessage> = queue.take().into_iter().map(|m| m.message).collect();
        sent.sort_by_key(|m| matches!(m, JobMessage::Notify { .. }));
        assert_eq!(
            sent,
            vec![
                JobMessage::Run {
                    owner: owner.clone(),
                    job_id: crashed.id
                },
                JobMessage::Notify {
                    owner: owner.clone(),
                    job_id: finished.id,
                    attempt: 1
                }
            ]
        );
        // Nothing handled those messages (lost too). The crashed job, taken back from its
        // lease, is moved 30 s on and comes back first; the outbox entry 60 s on.
        let takeover = sweeper.sweep(t0 + Span::seconds(97), 100).await.unwrap();
        assert_eq!(
            (takeover.due, takeover.requeued, takeover.relayed),
            (1, 1, 0),
            "{takeover:?}"
        );
        let later = sweeper.sweep(t0 + Span::seconds(127), 100).await.unwrap();
        assert_eq!(
            (later.due, later.requeued, later.relayed),
            (2, 1, 1),
            "{later:?}"
        );
        // Once a notify handler has settled the channels and cleared the entry, only the
        // crashed job stays, until it ends.
        jobs.clear_outbox(&owner, finished.id).await.unwrap();
        let last = sweeper.sweep(t0 + Span::seconds(600), 100).await.unwrap();
        assert_eq!((last.due, last.requeued, last.relayed), (1, 1, 0));
    }

    #[tokio::test]
    async fn a_job_that_keeps_losing_its_processor_fails_after_max_attempts_and_notifies() {
        let (jobs, queue) = (
            Arc::new(InMemoryJobs::new()),
            Arc::new(InMemoryQueue::new()),
        );
        let owner = OwnerId::parse("acme").unwrap();
        let t0 = OffsetDateTime::now_utc();
        let doomed = job(&owner, t0);
        jobs.create(&doomed, None).await.unwrap();
        for i in 0..3 {
            let at = t0 + Span::seconds(100 * i);
            let lease = Lease {
                token: format!("t{i}"),
                until: at.unix_timestamp() + 65,
            };
            assert!(matches!(
                jobs.claim(&owner, doomed.id, &lease, at).await.unwrap(),
                shared::core::Claim::Claimed(_)
            ));
        }
        let report = sweeper(&jobs, &queue)
            .sweep(t0 + Span::seconds(300), 100)
            .await
            .unwrap();
        assert_eq!((report.failed, report.requeued), (1, 0));
        let stored = jobs.get(&owner, doomed.id).await.unwrap().unwrap();
        assert_eq!(stored.status, JobStatus::Failed);
        assert_eq!(stored.error.unwrap().code, "retries_exhausted");
        assert_eq!(
            queue.take()[0].message,
            JobMessage::Notify {
                owner: owner.clone(),
                job_id: doomed.id,
                attempt: 1
            }
        );
        // The outbox entry stays, 60 s on, until the notify handler clears it.
        let due = jobs.due(i64::MAX, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].due, (t0 + Span::seconds(360)).unix_timestamp());
    }

    #[tokio::test]
    async fn a_provider_job_whose_poll_is_overdue_gets_a_poll_that_takes_its_chain_over() {
        let (jobs, queue) = (
            Arc::new(InMemoryJobs::new()),
            Arc::new(InMemoryQueue::new()),
        );
        let owner = OwnerId::parse("acme").unwrap();
        let t0 = OffsetDateTime::now_utc();
        let waiting = job(&owner, t0);
        jobs.create(&waiting, None).await.unwrap();
        let lease = Lease {
            token: "t".into(),
            until: t0.unix_timestamp() + 65,
        };
        jobs.claim(&owner, waiting.id, &lease, t0).await.unwrap();
        let submission = ProviderSubmission {
            provider: "fal".into(),
            request_id: "req-1".into(),
            deadline: t0.unix_timestamp() + 600,
            links: None,
        };
        assert!(
            jobs.record_submission(&owner, waiting.id, "t", &submission, t0)
                .await
                .unwrap()
        );
        // The processor schedules the first poll for +10 s: due +70 s (POLL_GRACE_SECONDS).
        let first_due = t0.unix_timestamp() + 70;
        assert!(
            jobs.expect_poll(&owner, waiting.id, "req-1", None, first_due)
                .await
                .unwrap()
        );
        let sweeper = sweeper(&jobs, &queue);
        // The lease would have ended at +65, but the job now waits on its poll.
        assert_eq!(
            sweeper
                .sweep(t0 + Span::seconds(69), 100)
                .await
                .unwrap()
                .due,
            0
        );
        // That poll was lost with its processor: at +71 the sweeper sends one (not a run,
        // which could submit again), under the due time it moved the job to.
        let report = sweeper.sweep(t0 + Span::seconds(71), 100).await.unwrap();
        assert_eq!(report.polled, 1);
        let taken_over = t0.unix_timestamp() + 71 + 60;
        assert_eq!(
            queue.take()[0].message,
            JobMessage::Poll {
                owner: owner.clone(),
                job_id: waiting.id,
                request_id: "req-1".into(),
                attempt: 0,
                due: Some(taken_over),
            }
        );
        // The lost chain, should its poll turn up after all, ends; the sweeper's continues.
        assert!(
            !jobs
                .expect_poll(&owner, waiting.id, "req-1", Some(first_due), first_due + 20)
                .await
                .unwrap()
        );
        assert!(
            jobs.expect_poll(
                &owner,
                waiting.id,
                "req-1",
                Some(taken_over),
                taken_over + 20
            )
            .await
            .unwrap()
        );
    }

    /// A queue that is down: every send fails.
    struct DownQueue;

    #[async_trait::async_trait]
    impl shared::core::JobQueue for DownQueue {
        async fn send(&self, _: &JobMessage, _: std::time::Duration) -> shared::Result<()> {
            Err(shared::Error::Unavailable {
                service: "sqs",
                message: "down".into(),
            })
        }
    }

    #[tokio::test]
    async fn a_recovery_whose_send_fails_is_due_again_at_once() {
        let jobs = Arc::new(InMemoryJobs::new());
        let owner = OwnerId::parse("acme").unwrap();
        let t0 = OffsetDateTime::now_utc();
        let stuck = job(&owner, t0);
        jobs.create(&stuck, None).await.unwrap();
        let down = Sweeper::new(jobs.clone(), Arc::new(DownQueue), jobs.clone(), 3);
        let at = t0 + Span::seconds(31);
        let report = down.sweep(at, 100).await.unwrap();
        assert_eq!((report.due, report.errors), (1, 1), "{report:?}");
        // Not moved `retry_after` (60 s) on: the next pass, seconds later, sends it.
        let queue = Arc::new(InMemoryQueue::new());
        let report = sweeper(&jobs, &queue)
            .sweep(at + Span::seconds(5), 100)
            .await
            .unwrap();
        assert_eq!(report.requeued, 1, "{report:?}");
        assert_eq!(queue.sent().len(), 1);
    }

    /// The jobs table, whose first `postpone` is applied and its answer lost.
    struct LostPostpone {
        jobs: Arc<InMemoryJobs>,
        lost: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl shared::core::PendingJobs for LostPostpone {
        async fn due(
            &self,
            now: i64,
            limit: usize,
        ) -> shared::Result<Vec<shared::core::PendingJob>> {
            self.jobs.due(now, limit).await
        }
        async fn postpone(
            &self,
            owner: &OwnerId,
            id: ulid::Ulid,
            seen: i64,
            until: i64,
        ) -> shared::Result<bool> {
            let applied = self.jobs.postpone(owner, id, seen, until).await?;
            if self.lost.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(shared::Error::Unavailable {
                    service: "dynamodb",
                    message: "the answer was lost".into(),
                });
            }
            Ok(applied)
        }
    }

    #[tokio::test]
    async fn a_recovery_whose_postpone_answer_was_lost_is_due_again_at_once() {
        let (jobs, queue) = (
            Arc::new(InMemoryJobs::new()),
            Arc::new(InMemoryQueue::new()),
        );
        let owner = OwnerId::parse("acme").unwrap();
        let t0 = OffsetDateTime::now_utc();
        jobs.create(&job(&owner, t0), None).await.unwrap();
        let pending = Arc::new(LostPostpone {
            jobs: jobs.clone(),
            lost: true.into(),
        });
        let lossy = Sweeper::new(pending, queue.clone(), jobs.clone(), 3);
        let at = t0 + Span::seconds(31);
        let report = lossy.sweep(at, 100).await.unwrap();
        assert_eq!((report.due, report.errors), (1, 1), "{report:?}");
        assert!(queue.sent().is_empty());
        // Not left `retry_after` (60 s) on with nothing sent: the next pass sends it.
        let report = lossy.sweep(at + Span::seconds(5), 100).await.unwrap();
        assert_eq!(report.requeued, 1, "{report:?}");
        assert_eq!(queue.sent().len(), 1);
    }

    #[tokio::test]
    async fn two_sweepers_on_one_due_time_send_one_message() {
        let (jobs, queue) = (
            Arc::new(InMemoryJobs::new()),
            Arc::new(InMemoryQueue::new()),
        );
        let owner = OwnerId::parse("acme").unwrap();
        let t0 = OffsetDateTime::now_utc();
        jobs.create(&job(&owner, t0), None).await.unwrap();
        let (a, b) = (sweeper(&jobs, &queue), sweeper(&jobs, &queue));
        let at = t0 + Span::seconds(31);
        let (ra, rb) = tokio::join!(a.sweep(at, 100), b.sweep(at, 100));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.requeued + rb.requeued, 1, "{ra:?} {rb:?}");
        assert_eq!(queue.sent().len(), 1);
    }
}
