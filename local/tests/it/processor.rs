//! The processor's handler against the emulator, fed real-shaped SQS events, with the
//! segmenter played by a local HTTP server that follows the container contract (so failures
//! can be chosen) — or by the real segmenter where the real output matters.

use crate::common;

use crate::common::{TestEnv, sample_photo};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use imagejobs_processor::{Outcome, Processor};
use shared::core::{Created, JobStore};
use shared::job::{Job, JobStatus};
use shared::service::{InputRef, Submission};

/// A segmenter that answers each call with the next scripted response (the last one repeats).
#[derive(Clone)]
struct ScriptedSegmenter {
    calls: Arc<AtomicUsize>,
    script: Arc<Vec<(u16, &'static str)>>,
    /// How long the first call takes to answer (the others answer at once).
    first_call_delay: Duration,
}

impl ScriptedSegmenter {
    async fn start(script: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
        Self::start_slow_first(script, Duration::ZERO).await
    }

    async fn start_slow_first(
        script: Vec<(u16, &'static str)>,
        first_call_delay: Duration,
    ) -> (String, Arc<AtomicUsize>) {
        let s = Self {
            calls: Arc::new(AtomicUsize::new(0)),
            script: Arc::new(script),
            first_call_delay,
        };
        let calls = s.calls.clone();
        let app = axum::Router::new().route(
            "/invocations",
            axum::routing::post(move |body: Bytes| {
                let s = s.clone();
                async move {
                    let n = s.calls.fetch_add(1, Ordering::SeqCst);
                    if n == 0 {
                        tokio::time::sleep(s.first_call_delay).await;
                    }
                    let (status, code) = s.script[n.min(s.script.len() - 1)];
                    if status == 200 {
                        assert!(!body.is_empty(), "the processor sends the image");
                        let png = tiny_png();
                        (
                            StatusCode::OK,
                            [
                                ("content-type", "image/png"),
                                ("x-image-width", "2"),
                                ("x-image-height", "1"),
                                ("x-model", "plain-background"),
                            ],
                            png,
                        )
                            .into_response()
                    } else {
                        let body = serde_json::json!({"error": {"code": code, "message": format!("scripted {status}")}});
                        (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), calls)
    }
}

fn tiny_png() -> Vec<u8> {
    let img = image::RgbaImage::from_raw(2, 1, vec![255, 0, 0, 255, 0, 0, 0, 0]).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A job created through the real submitter (stored input, record, queue message).
async fn submit(env: &TestEnv) -> Job {
    let aws = env.aws();
    let submitter = env.submitter(
        Arc::new(aws.jobs.clone()),
        Arc::new(aws.queue.clone()),
        Arc::new(aws.blobs.clone()),
    );
    let created = submitter
        .submit(Submission {
            owner: shared::job::OwnerId::parse("proc-test").unwrap(),
            operation: shared::job::Operation::RemoveBackground(
                shared::operation::remove_background::RemoveBackgroundParams::with_model(
                    "plain-background",
                ),
            ),
            input: Some(InputRef::Upload(sample_photo().into())),
            extra_inputs: Vec::new(),
            idempotency_key: None,
            notify: Default::default(),
            request_id: None,
        })
        .await
        .unwrap();
    match created {
        Created::New(job) => job,
        Created::Replayed(_) => unreachable!("no idempotency key"),
    }
}

fn processor(env: &TestEnv, segmenter_url: &str, lease: Duration) -> Processor {
    let mut settings = env.settings.clone();
    settings.segmenter.url = Some(segmenter_url.to_owned());
    settings.segmenter.timeout = Duration::from_secs(10);
    settings.jobs.lease = lease;
    settings.jobs.dead_letter_queue_arn = Some(env.provisioned.dead_letter_queue_arn.clone());
    Processor::with_aws(&settings, &env.aws()).unwrap()
}

/// An SQS event as Lambda delivers it, for this job, on the given receive.
fn event(
    job: &Job,
    receive_count: u32,
    source_arn: &str,
) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(include_str!("../../../events/sqs-job.json")).unwrap();
    let record = &mut event.records[0];
    record.message_id = Some(format!("msg-{receive_count}-{}", ulid::Ulid::new()));
    record.body = Some(
        serde_json::to_string(&shared::job::JobMessage::Run {
            owner: job.owner.clone(),
            job_id: job.id,
        })
        .unwrap(),
    );
    record
        .attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    record.event_source_arn = Some(source_arn.to_owned());
    event
}

async fn reload(env: &TestEnv, job: &Job) -> Job {
    env.aws()
        .jobs
        .get(&job.owner, job.id)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn success_stores_the_result_and_a_duplicate_delivery_runs_nothing() {
    let env = TestEnv::new().await;
    let (url, calls) = ScriptedSegmenter::start(vec![(200, "")]).await;
    let p = processor(&env, &url, Duration::from_secs(90));
    let job = submit(&env).await;
    let arn = &env.provisioned.queue_arn;

    // Two copies of the same message in one batch (SQS standard queues may do this).
    let mut batch = event(&job, 1, arn);
    batch.records.extend(event(&job, 1, arn).records);
    let response = p.handle(batch).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the segmenter ran once");

    let done = reload(&env, &job).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        env.in_flight("proc-test").await,
        0,
        "the finished job left the in-flight count"
    );
    assert_eq!(done.attempts, 1);
    let result = done.result.clone().unwrap();
    assert_eq!(result.key, format!("results/proc-test/{}.png", job.id));
    assert_eq!(
        (result.width, result.height, result.content_type.as_str()),
        (2, 1, "image/png")
    );
    let stored = env
        .s3()
        .get_object()
        .bucket(&env.settings.resources.bucket)
        .key(&result.key)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.content_type.as_deref(), Some("image/png"));
    assert_eq!(
        stored.body.collect().await.unwrap().into_bytes().to_vec(),
        tiny_png()
    );

    // A late redelivery of a finished job changes nothing.
    let outcome = p.handle_record(&event(&job, 2, arn).records[0]).await;
    assert_eq!(outcome, Outcome::Skipped("already finished"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(reload(&env, &job).await, done);
}

#[tokio::test]
async fn transient_failures_are_retried_within_seconds_then_exhausted() {
    let env = TestEnv::new().await;
    // A 500, not a 503 `overloaded`: overload is retried inside the record (in_process.rs).
    let (url, calls) = ScriptedSegmenter::start(vec![(500, "internal_error")]).await;
    let p = processor(&env, &url, Duration::from_secs(90));
    let job = submit(&env).await;
    let arn = &env.provisioned.queue_arn;

    // The record is not returned to SQS (no 360 s visibility timeout): the claim is given
    // back, counted, and the job queued again after a backoff of seconds.
    let response = p.handle(event(&job, 1, arn)).await;
    assert!(response.batch_item_failures.is_empty());
    let job_now = reload(&env, &job).await;
    assert_eq!((job_now.status, job_now.attempts), (JobStatus::Queued, 1));

    for attempt in 2..5 {
        let outcome = p.handle_record(&event(&job, 1, arn).records[0]).await;
        assert!(
            matches!(outcome, Outcome::Requeued(_)),
            "attempt {attempt}: {outcome:?}"
        );
        assert_eq!(reload(&env, &job).await.attempts, attempt);
    }
    // The claim that reaches MAX_RECEIVE_COUNT fails the job instead of retrying.
    let outcome = p.handle_record(&event(&job, 1, arn).records[0]).await;
    assert_eq!(outcome, Outcome::Failed("retries_exhausted".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let failed = reload(&env, &job).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempts, 5);
    let error = failed.error.unwrap();
    assert_eq!(error.code, "retries_exhausted");
    assert!(
        error.message.contains("internal_error"),
        "{}",
        error.message
    );
    assert_eq!(env.in_flight("proc-test").await, 0);
}

#[tokio::test]
async fn a_live_lease_blocks_a_second_processor() {
    use shared::core::JobTransitions;
    let env = TestEnv::new().await;
    let (url, calls) = ScriptedSegmenter::start(vec![(200, "")]).await;
    let p = processor(&env, &url, Duration::from_secs(600));
    let job = submit(&env).await;
    let arn = &env.provisioned.queue_arn;
    // Another processor claimed the job and is still working on it.
    let now = time::OffsetDateTime::now_utc();
    let lease = shared::core::Lease {
        token: "the-other-processor".into(),
        until: now.unix_timestamp() + 600,
    };
    env.aws()
        .jobs
        .claim(&job.owner, job.id, &lease, now)
        .await
        .unwrap();
    let outcome = p.handle_record(&event(&job, 2, arn).records[0]).await;
    assert_eq!(
        outcome,
        Outcome::Skipped("another processor holds the lease")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(reload(&env, &job).await.status, JobStatus::Processing);
}

#[tokio::test]
async fn permanent_failures_fail_the_job_at_once() {
    let env = TestEnv::new().await;
    let (url, calls) = ScriptedSegmenter::start(vec![(422, "invalid_image")]).await;
    let p = processor(&env, &url, Duration::from_secs(90));
    let job = submit(&env).await;
    let response = p.handle(event(&job, 1, &env.provisioned.queue_arn)).await;
    assert!(response.batch_item_failures.is_empty(), "not retried");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let failed = reload(&env, &job).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.unwrap().code, "invalid_image");
    assert!(failed.finished_at.is_some());
    assert_eq!(env.in_flight("proc-test").await, 0);
}

#[tokio::test]
async fn a_dead_lettered_message_fails_its_job() {
    let env = TestEnv::new().await;
    let (url, calls) = ScriptedSegmenter::start(vec![(200, "")]).await;
    let p = processor(&env, &url, Duration::from_secs(90));
    let job = submit(&env).await;
    // The dead-letter fixture, pointed at this test's job and dead-letter queue.
    let mut dlq: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(include_str!("../../../events/sqs-dlq.json")).unwrap();
    let template = event(&job, 5, &env.provisioned.dead_letter_queue_arn);
    dlq.records[0].body = template.records[0].body.clone();
    dlq.records[0].event_source_arn = template.records[0].event_source_arn.clone();
    let response = p.handle(dlq).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing runs from the dead-letter queue"
    );
    let failed = reload(&env, &job).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.unwrap().code, "retries_exhausted");
}

#[tokio::test]
async fn unreadable_messages_and_missing_jobs_are_dropped() {
    let env = TestEnv::new().await;
    let (url, calls) = ScriptedSegmenter::start(vec![(200, "")]).await;
    let p = processor(&env, &url, Duration::from_secs(90));
    let mut e = event(&submit(&env).await, 1, &env.provisioned.queue_arn);
    e.records[0].body = Some("{\"kind\":\"explode\"}".into());
    assert_eq!(
        p.handle_record(&e.records[0]).await,
        Outcome::Skipped("unreadable message")
    );
    let ghost = Job {
        id: ulid::Ulid::new(),
        ..submit(&env).await
    };
    let e = event(&ghost, 1, &env.provisioned.queue_arn);
    assert_eq!(
        p.handle_record(&e.records[0]).await,
        Outcome::Skipped("no such job")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_real_segmenter_fails_a_corrupted_input_permanently() {
    let env = TestEnv::new().await;
    let (url, _dir) = common::start_segmenter().await;
    let p = processor(&env, &url, Duration::from_secs(90));
    let job = submit(&env).await;
    // The stored input is damaged after acceptance (e.g. overwritten by another writer).
    let key = &job.inputs["image"].key;
    env.s3()
        .put_object()
        .bucket(&env.settings.resources.bucket)
        .key(key)
        .body(sample_photo()[..4000].to_vec().into())
        .send()
        .await
        .unwrap();
    let outcome = p
        .handle_record(&event(&job, 1, &env.provisioned.queue_arn).records[0])
        .await;
    assert_eq!(outcome, Outcome::Failed("invalid_image".into()));
    let failed = reload(&env, &job).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error.unwrap().code, "invalid_image");
}

/// The local runner plays the event source mapping's concurrency, not a batch barrier: with 2
/// records at once and one of them slow, the slot the fast one frees takes the next job while
/// the slow one still runs. (Run batch by batch, the third job waited for the slow one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_runner_refills_a_freed_slot_without_waiting_for_its_batch() {
    let mut env = TestEnv::new().await;
    let slow = Duration::from_secs(8);
    let (url, calls) = ScriptedSegmenter::start_slow_first(vec![(200, "")], slow).await;
    let jobs = [submit(&env).await, submit(&env).await, submit(&env).await];
    let started = std::time::Instant::now();
    let stack = env.start_stack_with(&url, None, 2, None).await;
    let statuses = || async {
        let mut out = Vec::new();
        for job in &jobs {
            out.push(reload(&env, job).await.status);
        }
        out
    };
    let mut seen = statuses().await;
    while seen.iter().filter(|s| **s == JobStatus::Succeeded).count() < 2 {
        assert!(
            started.elapsed() < slow,
            "two jobs did not succeed while the slow one ran: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = statuses().await;
    }
    assert_eq!(
        seen.iter().filter(|s| **s == JobStatus::Processing).count(),
        1,
        "the slow job is still running: {seen:?}"
    );
    assert!(started.elapsed() < slow);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    stack.shutdown().await;
    // Shutting down lets the invocation under way finish.
    let ended = statuses().await;
    assert!(
        ended.iter().all(|s| *s == JobStatus::Succeeded),
        "{ended:?}"
    );
}
