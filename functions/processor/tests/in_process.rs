//! The processor's run logic in process, over the in-memory ports of `shared::fakes`: jobs are
//! created by the real `JobSubmitter`, their queue messages become SQS records shaped like the
//! repository's `events/` fixtures, and `Processor::handle`/`handle_record` take it from there.
//! No emulator, no network, no sleeps: each test runs in milliseconds. The same scenarios
//! against the emulator and real adapters are in `local/tests/it/processor.rs`.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use imagejobs_processor::{Outcome, Processor};
use shared::config::Settings;
use shared::core::{
    BlobStore, Claim, Created, JobStore, JobTransitions, Lease, PendingJobs, SegmenterError,
    UrlFetcher,
};
use shared::fakes::{InMemoryBlobs, InMemoryJobs, InMemoryQueue, ScriptedSegmenter, cutout};
use shared::job::{Job, JobMessage, JobStatus, Operation, OwnerId};
use shared::operation::remove_background::RemoveBackgroundParams;
use shared::service::{InputRef, JobSubmitter, Submission};

const JOB_EVENT: &str = include_str!("../../../events/sqs-job.json");
const DLQ_EVENT: &str = include_str!("../../../events/sqs-dlq.json");

/// The jobs queue's `maxReceiveCount` the processor is configured with (`Settings::new`'s).
const MAX_RECEIVES: u32 = shared::resources::JOBS_QUEUE_MAX_RECEIVE_COUNT;

/// Input URLs are never fetched here: every job is an upload.
struct NoNetwork;

#[async_trait]
impl UrlFetcher for NoNetwork {
    async fn fetch(&self, url: &str) -> shared::Result<Bytes> {
        panic!("the in-process tests fetch nothing ({url})");
    }
}

/// PNG bytes of a `width`×`height` RGBA image whose pixel `(x, y)` is `pixel(x, y)`.
fn png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba(pixel(x, y)));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// An opaque 16×12 photo: the job's input.
fn photo() -> Vec<u8> {
    png(16, 12, |x, y| [(x * 16) as u8, (y * 20) as u8, 128, 255])
}

/// What a segmenter makes of it: the left half kept (opaque), the right half cut away
/// (transparent), so the foreground fraction is exactly 0.5.
fn cutout_png() -> Vec<u8> {
    png(16, 12, |x, _| {
        if x < 8 {
            [200, 40, 40, 255]
        } else {
            [0, 0, 0, 0]
        }
    })
}

/// The source ARNs of the fixtures: the jobs queue, and the dead-letter queue the processor is
/// told about.
fn arns() -> (String, String) {
    let arn = |raw: &str| {
        serde_json::from_str::<SqsEvent>(raw).unwrap().records[0]
            .event_source_arn
            .clone()
            .unwrap()
    };
    (arn(JOB_EVENT), arn(DLQ_EVENT))
}

/// The processor over fresh fakes, and the fakes.
struct World {
    jobs: Arc<InMemoryJobs>,
    queue: Arc<InMemoryQueue>,
    blobs: Arc<InMemoryBlobs>,
    segmenter: Arc<ScriptedSegmenter>,
    settings: Settings,
    processor: Processor,
}

impl World {
    /// Claims last `lease`; the segmenter answers from `segmenter`.
    fn new(segmenter: ScriptedSegmenter, lease: Duration) -> Self {
        let mut settings = Settings::new("jobs", "https://sqs.invalid/jobs", "images");
        settings.jobs.lease = lease;
        settings.jobs.dead_letter_queue_arn = Some(arns().1);
        let jobs = Arc::new(InMemoryJobs::new());
        let blobs = Arc::new(InMemoryBlobs::new(&settings.resources.bucket));
        let segmenter = Arc::new(segmenter);
        let processor = Processor::new(jobs.clone(), blobs.clone(), segmenter.clone(), &settings);
        Self {
            jobs,
            queue: Arc::new(InMemoryQueue::new()),
            blobs,
            segmenter,
            settings,
            processor,
        }
    }

    /// A `remove_background` job submitted as the API would (input stored, record written,
    /// run message enqueued), and the body of its one queue message.
    async fn submit(&self) -> (Job, String) {
        let submitter = JobSubmitter::new(
            self.jobs.clone(),
            self.queue.clone(),
            self.blobs.clone(),
            Arc::new(self.settings.clone()),
            Arc::new(NoNetwork),
        );
        let created = submitter
            .submit(Submission {
                owner: OwnerId::parse("in-process").unwrap(),
                operation: Operation::RemoveBackground(RemoveBackgroundParams::with_model("u2net")),
                input: Some(InputRef::Upload(photo().into())),
                extra_inputs: Vec::new(),
                idempotency_key: None,
                notify: Default::default(),
                request_id: None,
            })
            .await
            .unwrap();
        let Created::New(job) = created else {
            unreachable!("no idempotency key");
        };
        let sent = self.queue.take();
        assert_eq!(sent.len(), 1, "one message per new job");
        assert_eq!(sent[0].delay, Duration::ZERO);
        assert_eq!(
            sent[0].message,
            JobMessage::Run {
                owner: job.owner.clone(),
                job_id: job.id
            }
        );
        (job, sent[0].body.clone())
    }

    async fn reload(&self, job: &Job) -> Job {
        self.jobs.get(&job.owner, job.id).await.unwrap().unwrap()
    }
}

/// The fixture record carrying `body`, as Lambda delivers it on receive `receive_count` from
/// the queue `source_arn`, with a message id of its own.
fn record(body: Option<&str>, receive_count: u32, source_arn: &str) -> SqsMessage {
    let mut event: SqsEvent = serde_json::from_str(JOB_EVENT).unwrap();
    let mut record = event.records.remove(0);
    record.message_id = Some(ulid::Ulid::new().to_string());
    record.body = body.map(str::to_owned);
    record
        .attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    record.event_source_arn = Some(source_arn.to_owned());
    record
}

fn event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event: SqsEvent = serde_json::from_str(JOB_EVENT).unwrap();
    event.records = records;
    event
}

fn failed_ids(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn transient() -> SegmenterError {
    SegmenterError::Transient("HTTP 503 overloaded: scripted".into())
}

#[tokio::test]
async fn a_queued_job_runs_once_and_stores_its_cutout() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();

    let outcome = w
        .processor
        .handle_record(&record(Some(&body), 1, &queue_arn))
        .await;

    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(w.segmenter.calls(), 1);
    let input = &job.inputs["image"];
    assert_eq!(
        w.segmenter.last_image().unwrap(),
        w.blobs.object(&input.key).unwrap().body,
        "the segmenter got the stored input"
    );
    let done = w.reload(&job).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 1);
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert_eq!(done.error, None);
    assert_eq!(w.jobs.lease(&job.owner, job.id), None, "the lease is gone");
    let result = done.result.unwrap();
    assert_eq!(result.key, format!("results/in-process/{}.png", job.id));
    assert_eq!(
        (result.width, result.height, result.content_type.as_str()),
        (16, 12, "image/png")
    );
    assert_eq!(result.engine.as_deref(), Some("u2net"));
    assert_eq!(result.foreground_fraction, Some(0.5));
    let stored = w.blobs.object(&result.key).unwrap();
    assert_eq!(stored.body, cutout_png());
    assert_eq!(stored.content_type, "image/png");
    assert_eq!(result.bytes, stored.body.len() as u64);
}

#[tokio::test]
async fn a_duplicate_delivery_after_success_runs_nothing() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    let first = w
        .processor
        .handle_record(&record(Some(&body), 1, &queue_arn))
        .await;
    assert_eq!(first, Outcome::Succeeded);
    let done = w.reload(&job).await;

    // The same message again (SQS delivers at least once), then a late redelivery.
    for receive in [1, 2] {
        let again = w
            .processor
            .handle_record(&record(Some(&body), receive, &queue_arn))
            .await;
        assert_eq!(again, Outcome::Skipped("already finished"));
    }
    assert_eq!(w.segmenter.calls(), 1);
    assert_eq!(w.reload(&job).await, done, "the finished job is untouched");
}

#[tokio::test]
async fn copies_of_one_message_in_one_batch_run_once() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    let batch = event(vec![
        record(Some(&body), 1, &queue_arn),
        record(Some(&body), 1, &queue_arn),
    ]);

    let response = w.processor.handle(batch).await;

    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(w.segmenter.calls(), 1);
    let done = w.reload(&job).await;
    assert_eq!((done.status, done.attempts), (JobStatus::Succeeded, 1));
}

#[tokio::test]
async fn a_transient_error_is_retried_within_seconds_until_the_attempts_run_out() {
    use shared::core::PendingJobs;
    let w = World::new(
        ScriptedSegmenter::failing(transient()),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();

    // Each failed attempt gives its claim back (counted) and the job is due again after a
    // backoff of seconds (5 s, 10 s, 20 s, 40 s) plus the queued grace: neither the lease
    // (30 s) nor the message's visibility timeout (360 s) is waited out, and no record goes
    // back to SQS.
    for attempt in 1..MAX_RECEIVES {
        let first = record(Some(&body), 1, &queue_arn);
        let before = OffsetDateTime::now_utc().unix_timestamp();
        let response = w.processor.handle(event(vec![first])).await;
        assert_eq!(
            failed_ids(&response),
            Vec::<String>::new(),
            "attempt {attempt}"
        );
        let waiting = w.reload(&job).await;
        assert_eq!(
            (waiting.status, waiting.attempts),
            (JobStatus::Queued, attempt),
            "the claim is given back, its attempt counted"
        );
        assert_eq!(waiting.result, None);
        assert_eq!(w.jobs.lease(&job.owner, job.id), None, "claimable at once");
        let backoff = 5 * (1 << (attempt - 1));
        let due = w
            .jobs
            .due(i64::MAX, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.id == job.id)
            .expect("in the pending index for the sweeper")
            .due;
        let grace = shared::resources::QUEUED_GRACE_SECONDS;
        assert!(
            (before + backoff + grace..=before + backoff + grace + 1).contains(&due),
            "attempt {attempt}: due {} s on",
            due - before
        );
    }

    // The claim that reaches MAX_RECEIVE_COUNT fails the job instead of retrying.
    let last = record(Some(&body), 1, &queue_arn);
    let response = w.processor.handle(event(vec![last.clone()])).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(w.segmenter.calls(), MAX_RECEIVES as usize);
    let failed = w.reload(&job).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, MAX_RECEIVES);
    let error = failed.error.unwrap();
    assert_eq!(error.code, "retries_exhausted");
    assert!(error.message.contains("overloaded"), "{}", error.message);
    assert_eq!(w.jobs.lease(&job.owner, job.id), None);
    assert!(w.blobs.keys().iter().all(|k| !k.starts_with("results/")));
    // Once failed, it stays failed.
    assert_eq!(
        w.processor.handle_record(&last).await,
        Outcome::Skipped("already finished")
    );
}

#[tokio::test]
async fn a_permanent_error_fails_the_job_without_a_retry() {
    let w = World::new(
        ScriptedSegmenter::failing(SegmenterError::Permanent {
            code: "invalid_image".into(),
            message: "the image does not decode".into(),
        }),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();

    let response = w
        .processor
        .handle(event(vec![record(Some(&body), 1, &queue_arn)]))
        .await;

    assert_eq!(failed_ids(&response), Vec::<String>::new(), "not retried");
    assert_eq!(w.segmenter.calls(), 1);
    let failed = w.reload(&job).await;
    assert_eq!((failed.status, failed.attempts), (JobStatus::Failed, 1));
    let error = failed.error.unwrap();
    assert_eq!(error.code, "invalid_image");
    assert_eq!(error.message, "the image does not decode");
    assert!(failed.finished_at.is_some());
    assert_eq!(failed.result, None);
    assert_eq!(
        w.processor
            .handle_record(&record(Some(&body), 2, &queue_arn))
            .await,
        Outcome::Skipped("already finished")
    );
    assert_eq!(w.segmenter.calls(), 1);
}

#[tokio::test]
async fn a_live_lease_of_another_processor_is_left_alone() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    // Another processor is mid-run on the same job (a duplicate delivery elsewhere).
    let now = OffsetDateTime::now_utc();
    let theirs = Lease {
        token: "their-token".into(),
        until: now.unix_timestamp() + 600,
    };
    assert!(matches!(
        w.jobs
            .claim(&job.owner, job.id, &theirs, now)
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));

    let outcome = w
        .processor
        .handle_record(&record(Some(&body), 2, &queue_arn))
        .await;

    assert_eq!(
        outcome,
        Outcome::Skipped("another processor holds the lease")
    );
    assert_eq!(w.segmenter.calls(), 0);
    let still = w.reload(&job).await;
    assert_eq!((still.status, still.attempts), (JobStatus::Processing, 1));
    assert_eq!(w.jobs.lease(&job.owner, job.id), Some(theirs));
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_its_old_holder_cannot_finish() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    // A processor claimed the job and died: its lease ran out a minute ago.
    let then = OffsetDateTime::now_utc() - time::Duration::minutes(2);
    let dead = Lease {
        token: "dead-token".into(),
        until: then.unix_timestamp() + 60,
    };
    w.jobs.claim(&job.owner, job.id, &dead, then).await.unwrap();

    let outcome = w
        .processor
        .handle_record(&record(Some(&body), 2, &queue_arn))
        .await;

    assert_eq!(outcome, Outcome::Succeeded);
    let done = w.reload(&job).await;
    assert_eq!((done.status, done.attempts), (JobStatus::Succeeded, 2));
    assert_eq!(
        done.started_at,
        Some(then),
        "the first claim's start is kept"
    );
    // The dead processor waking up cannot overwrite the result or fail the job.
    let late = w
        .jobs
        .complete(
            &job.owner,
            job.id,
            &dead.token,
            done.result.as_ref().unwrap(),
            OffsetDateTime::now_utc(),
        )
        .await;
    assert!(matches!(late, Err(shared::Error::Conflict(_))), "{late:?}");
    let error = shared::job::JobError::new("late", "too late");
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        w.jobs.fail(&job.owner, job.id, &error, now).await.unwrap(),
        None
    );
    assert_eq!(w.reload(&job).await, done);
}

#[tokio::test]
async fn a_vanished_input_fails_the_job_without_calling_the_segmenter() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    let key = &job.inputs["image"].key;
    w.blobs.delete(key).await.unwrap();

    let outcome = w
        .processor
        .handle_record(&record(Some(&body), 1, &queue_arn))
        .await;

    assert_eq!(outcome, Outcome::Failed("input_not_found".into()));
    assert_eq!(w.segmenter.calls(), 0);
    let failed = w.reload(&job).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let message = failed.error.unwrap().message;
    assert!(message.contains(&format!("s3://images/{key}")), "{message}");
}

#[tokio::test]
async fn unreadable_messages_are_dropped_not_redelivered() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (queue_arn, _) = arns();
    let poison = [
        Some("{\"kind\":\"explode\"}"),
        Some("not json at all"),
        Some(
            "{\"kind\":\"run\",\"owner\":\"bad owner\",\"job_id\":\"01JD0000000000000000000000\"}",
        ),
        None,
    ];
    for body in poison {
        assert_eq!(
            w.processor
                .handle_record(&record(body, 1, &queue_arn))
                .await,
            Outcome::Skipped("unreadable message"),
            "{body:?}"
        );
    }
    let batch = event(poison.iter().map(|b| record(*b, 1, &queue_arn)).collect());
    let response = w.processor.handle(batch).await;
    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(w.segmenter.calls(), 0);
    assert!(w.jobs.jobs().is_empty(), "nothing was created");
}

#[tokio::test]
async fn a_dead_lettered_message_fails_its_job_without_running_it() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    // The dead-letter fixture as it is, pointed at this job.
    let mut dlq: SqsEvent = serde_json::from_str(DLQ_EVENT).unwrap();
    dlq.records[0].body = Some(body);

    let response = w.processor.handle(dlq).await;

    assert_eq!(failed_ids(&response), Vec::<String>::new());
    assert_eq!(
        w.segmenter.calls(),
        0,
        "nothing runs from the dead-letter queue"
    );
    let failed = w.reload(&job).await;
    assert_eq!((failed.status, failed.attempts), (JobStatus::Failed, 0));
    assert_eq!(failed.error.unwrap().code, "retries_exhausted");
}

#[tokio::test]
async fn a_mixed_batch_reports_exactly_the_records_to_redeliver() {
    // Every segmenter call fails transiently: what differs is each record's job and receive.
    let w = World::new(
        ScriptedSegmenter::failing(transient()),
        Duration::from_secs(90),
    );
    let (queue_arn, dlq_arn) = arns();
    let (retried_a, body_a) = w.submit().await;
    let (retried_b, body_b) = w.submit().await;
    let (exhausted, body_exhausted) = w.submit().await;
    let (dead_lettered, body_dead) = w.submit().await;
    let (finished, body_finished) = w.submit().await;
    let error = shared::job::JobError::new("invalid_image", "scripted");
    let now = OffsetDateTime::now_utc();
    w.jobs
        .fail(&finished.owner, finished.id, &error, now)
        .await
        .unwrap()
        .unwrap();
    let missing = serde_json::to_string(&JobMessage::Run {
        owner: OwnerId::parse("in-process").unwrap(),
        job_id: ulid::Ulid::new(),
    })
    .unwrap();

    let records = vec![
        record(Some("garbage"), 1, &queue_arn),
        record(Some(&body_a), 1, &queue_arn),
        record(Some(&body_exhausted), MAX_RECEIVES, &queue_arn),
        record(Some(&missing), 1, &queue_arn),
        record(Some(&body_dead), 1, &dlq_arn),
        record(Some(&body_b), 3, &queue_arn),
        record(Some(&body_finished), 1, &queue_arn),
    ];
    // None: every record is settled, failed, skipped or requeued (records past their
    // deadline do go back: a_record_past_its_deadline_is_returned_for_a_retry_…).
    let expected: Vec<String> = Vec::new();

    let response = w.processor.handle(event(records)).await;

    assert_eq!(failed_ids(&response), expected);
    assert_eq!(w.segmenter.calls(), 3, "a, b and the exhausted job ran");
    // a and b failed transiently: their claims were given back and the jobs queued again
    // after a backoff of seconds, so nothing waits out a visibility timeout.
    for job in [&retried_a, &retried_b] {
        let requeued = w.reload(job).await;
        assert_eq!((requeued.status, requeued.attempts), (JobStatus::Queued, 1));
    }
    for job in [&exhausted, &dead_lettered] {
        let failed = w.reload(job).await;
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(failed.error.unwrap().code, "retries_exhausted");
    }
    assert_eq!(
        w.reload(&finished).await.error.unwrap().code,
        "invalid_image"
    );
}

#[tokio::test]
async fn an_overloaded_segmenter_is_asked_again_within_the_record_not_through_sqs() {
    let overloaded = || {
        Err(SegmenterError::Overloaded(
            "HTTP 503 overloaded: the model's queue is full".into(),
        ))
    };
    let w = World::new(
        ScriptedSegmenter::new(vec![
            overloaded(),
            overloaded(),
            Ok(cutout(cutout_png(), "u2net")),
        ]),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    let outcome = w
        .processor
        .handle_record(&record(Some(&body), 1, &queue_arn))
        .await;
    assert_eq!(outcome, Outcome::Succeeded, "no receive spent on overload");
    assert_eq!(w.segmenter.calls(), 3);
    let done = w.reload(&job).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_segmenter_still_overloaded_after_the_backoff_defers_the_job_without_counting_it() {
    let overloaded = || {
        Err(SegmenterError::Overloaded(
            "HTTP 503 overloaded: the model's queue is full".into(),
        ))
    };
    // The first ask and the backoff's 6 more all find it full; the next run gets a cutout.
    let mut script: Vec<_> = (0..7).map(|_| overloaded()).collect();
    script.push(Ok(cutout(cutout_png(), "u2net")));
    let w = World::new(ScriptedSegmenter::new(script), Duration::from_secs(90));
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    let mut first = record(Some(&body), 1, &queue_arn);
    first.message_id = Some("busy".into());

    let response = w.processor.handle(event(vec![first])).await;

    assert!(
        failed_ids(&response).is_empty(),
        "the message is done with, not returned to wait out the visibility timeout"
    );
    assert_eq!(w.segmenter.calls(), 7);
    let deferred = w.reload(&job).await;
    assert_eq!(deferred.status, JobStatus::Queued);
    assert_eq!(deferred.attempts, 0, "overload is not an attempt");
    // Without a queue wired, the `pending` index is what sends it again: due after the
    // requeue delay and the queued grace, not before.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let due_soon = w.jobs.due(now + 5 + 30 + 2, 10).await.unwrap();
    assert_eq!(due_soon.len(), 1);
    assert_eq!(
        (due_soon[0].id, due_soon[0].status),
        (job.id, JobStatus::Queued)
    );
    assert!(w.jobs.due(now + 5 + 30 - 2, 10).await.unwrap().is_empty());

    // The run message again, as a fresh SQS message: the job runs and counts one attempt.
    let outcome = w
        .processor
        .handle_record(&record(Some(&body), 1, &queue_arn))
        .await;
    assert_eq!(outcome, Outcome::Succeeded);
    let done = w.reload(&job).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 1);
}

/// A segmenter that answers like `inner` after `delay` (a slow GPU, a stuck connection).
struct SlowSegmenter {
    inner: Arc<ScriptedSegmenter>,
    delay: Duration,
}

#[async_trait::async_trait]
impl shared::core::Segmenter for SlowSegmenter {
    async fn remove_background(
        &self,
        image: bytes::Bytes,
        params: &shared::operation::remove_background::RemoveBackgroundParams,
    ) -> Result<shared::core::Cutout, SegmenterError> {
        tokio::time::sleep(self.delay).await;
        self.inner.remove_background(image, params).await
    }
}

/// A processor over `w`'s ports whose segmenter answers after `delay`.
fn slow_processor(w: &World, delay: Duration) -> Processor {
    let segmenter = Arc::new(SlowSegmenter {
        inner: w.segmenter.clone(),
        delay,
    });
    Processor::new(w.jobs.clone(), w.blobs.clone(), segmenter, &w.settings)
}

#[tokio::test]
async fn a_record_past_its_deadline_is_returned_for_a_retry_not_left_to_the_lambda_timeout() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(90),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    let slow =
        slow_processor(&w, Duration::from_secs(5)).with_record_deadline(Duration::from_millis(200));
    let mut late = record(Some(&body), 1, &queue_arn);
    late.message_id = Some("late".into());
    let started = std::time::Instant::now();
    let response = slow.handle(event(vec![late])).await;
    assert_eq!(failed_ids(&response), ["late"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "ended at the deadline, not after the slow call"
    );
    assert_eq!(w.reload(&job).await.status, JobStatus::Processing);
}

/// A copy of `body`'s message delivered to another processor, `after` into the first one's run.
async fn deliver_again_after(processor: &Processor, body: &str, after: Duration) -> Outcome {
    tokio::time::sleep(after).await;
    let (queue_arn, _) = arns();
    let mut copy = record(Some(body), 2, &queue_arn);
    copy.message_id = Some("copy".into());
    processor.handle_record(&copy).await
}

#[tokio::test]
async fn a_run_longer_than_its_lease_renews_it_and_keeps_a_second_delivery_out() {
    // A 3 s lease, renewed every second, and a segmenter call of 4.5 s: without the heartbeat
    // the copy delivered at 3.5 s would find the lease run out and run the job a second time.
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(3),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    let slow = slow_processor(&w, Duration::from_millis(4500));
    let first = record(Some(&body), 1, &queue_arn);
    let (outcome, copy) = tokio::join!(
        slow.handle_record(&first),
        deliver_again_after(&slow, &body, Duration::from_millis(3500))
    );
    assert_eq!(copy, Outcome::Skipped("another processor holds the lease"));
    assert_eq!(outcome, Outcome::Succeeded);
    let done = w.reload(&job).await;
    assert_eq!((done.status, done.attempts), (JobStatus::Succeeded, 1));
    assert_eq!(w.segmenter.calls(), 1, "run once");
    assert_eq!(
        w.jobs.lease(&job.owner, job.id),
        None,
        "the end removed the lease"
    );
}

#[tokio::test]
async fn a_run_cut_at_its_deadline_stops_renewing_and_its_job_is_taken_over_a_lease_later() {
    let w = World::new(
        ScriptedSegmenter::succeeding(cutout(cutout_png(), "u2net")),
        Duration::from_secs(2),
    );
    let (job, body) = w.submit().await;
    let (queue_arn, _) = arns();
    let stuck = slow_processor(&w, Duration::from_secs(60))
        .with_record_deadline(Duration::from_millis(2500));
    // Past its lease already: only renewals kept the claim until the deadline.
    let mut cut = record(Some(&body), 1, &queue_arn);
    cut.message_id = Some("cut".into());
    let response = stuck.handle(event(vec![cut])).await;
    assert_eq!(failed_ids(&response), ["cut"]);
    let held = w
        .jobs
        .lease(&job.owner, job.id)
        .expect("the claim is still there");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        held.until > now,
        "renewed past the first lease: {} <= {now}",
        held.until
    );
    assert!(held.until <= now + 2, "no renewal after the run ended");

    // A lease later, the job is another processor's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcome = w
        .processor
        .handle_record(&record(Some(&body), 2, &queue_arn))
        .await;
    assert_eq!(outcome, Outcome::Succeeded);
    let done = w.reload(&job).await;
    assert_eq!((done.status, done.attempts), (JobStatus::Succeeded, 2));
}
