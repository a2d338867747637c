//! What operators see of the processor: its CloudWatch EMF metric lines and its log lines'
//! job spans, for jobs run in process over the in-memory ports of `shared::fakes` (created by
//! the real `JobSubmitter`, delivered as SQS records shaped like `events/sqs-job.json`).
//!
//! Its own test binary: the EMF test installs the process-wide `metrics` recorder, which would
//! otherwise collect every other test's jobs. The two tests here take [`ONE_AT_A_TIME`] so
//! neither's jobs land in the other's lines.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

use imagejobs_processor::{Outcome, Processor};
use shared::config::Settings;
use shared::core::{
    Created, Cutout, JobStore, ProviderTransitions, Segmenter, SegmenterError, UrlFetcher,
};
use shared::fakes::{InMemoryBlobs, InMemoryJobs, InMemoryQueue, ScriptedSegmenter, cutout};
use shared::job::{Job, OwnerId};
use shared::operation::remove_background::RemoveBackgroundParams;
use shared::service::{InputRef, JobSubmitter, Submission};

const JOB_EVENT: &str = include_str!("../../../events/sqs-job.json");

/// Serialises the tests of this binary (see the module comment).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Input URLs are never fetched here: every job is an upload.
struct NoNetwork;

#[async_trait]
impl UrlFetcher for NoNetwork {
    async fn fetch(&self, url: &str) -> shared::Result<Bytes> {
        panic!("these tests fetch nothing ({url})");
    }
}

/// PNG bytes of a 16×12 image: opaque, or with its right half transparent (a cutout with a
/// foreground fraction of 0.5).
fn png(cut: bool) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(16, 12, |x, y| {
        if cut && x >= 8 {
            image::Rgba([0, 0, 0, 0])
        } else {
            image::Rgba([(x * 16) as u8, (y * 20) as u8, 128, 255])
        }
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// The processor over fresh fakes.
struct World {
    jobs: Arc<InMemoryJobs>,
    queue: Arc<InMemoryQueue>,
    blobs: Arc<InMemoryBlobs>,
    settings: Settings,
    processor: Processor,
}

impl World {
    fn new(segmenter: Arc<dyn Segmenter>) -> Self {
        let settings = Settings::new("jobs", "https://sqs.invalid/jobs", "images");
        let jobs = Arc::new(InMemoryJobs::new());
        let blobs = Arc::new(InMemoryBlobs::new(&settings.resources.bucket));
        let processor = Processor::new(jobs.clone(), blobs.clone(), segmenter, &settings);
        Self {
            jobs,
            queue: Arc::new(InMemoryQueue::new()),
            blobs,
            settings,
            processor,
        }
    }

    /// A `remove_background` job created by request `request_id`, and its run message's body.
    async fn submit(&self, request_id: &str) -> (Job, String) {
        let submitter = JobSubmitter::new(
            self.jobs.clone(),
            self.queue.clone(),
            self.blobs.clone(),
            Arc::new(self.settings.clone()),
            Arc::new(NoNetwork),
        );
        let created = submitter
            .submit(Submission {
                owner: OwnerId::parse("observed").unwrap(),
                operation: shared::job::Operation::RemoveBackground(
                    RemoveBackgroundParams::with_model("u2net"),
                ),
                input: Some(InputRef::Upload(png(false).into())),
                extra_inputs: Vec::new(),
                idempotency_key: None,
                notify: Default::default(),
                request_id: Some(request_id.to_owned()),
            })
            .await
            .unwrap();
        let Created::New(job) = created else {
            unreachable!("no idempotency key");
        };
        assert_eq!(job.request_id.as_deref(), Some(request_id));
        let sent = self.queue.take();
        (job, sent[0].body.clone())
    }

    async fn reload(&self, job: &Job) -> Job {
        self.jobs.get(&job.owner, job.id).await.unwrap().unwrap()
    }
}

/// The fixture record carrying `body`, first receive, sent `age` ago.
fn record(body: &str, age: Duration) -> SqsMessage {
    let mut event: SqsEvent = serde_json::from_str(JOB_EVENT).unwrap();
    let mut record = event.records.remove(0);
    record.message_id = Some(ulid::Ulid::new().to_string());
    record.body = Some(body.to_owned());
    let sent = OffsetDateTime::now_utc() - age;
    record.attributes.insert(
        "SentTimestamp".into(),
        (sent.unix_timestamp_nanos() / 1_000_000).to_string(),
    );
    record
}

/// The EMF line whose dimension values are `dims`; panics naming the lines when there is none.
fn line<'a>(lines: &'a [Value], dims: &[(&str, &str)]) -> &'a Value {
    lines
        .iter()
        .find(|l| dims.iter().all(|(k, v)| l[*k] == *v))
        .unwrap_or_else(|| panic!("no EMF line with {dims:?} in {lines:#?}"))
}

/// The line's `_aws.CloudWatchMetrics` block, checked to be the one namespace with one
/// dimension set, as `(dimension names, metric name → unit)`.
fn block(line: &Value, namespace: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let aws = &line["_aws"];
    let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let stamp = aws["Timestamp"].as_i64().expect("a Timestamp in ms");
    assert!((now_ms - 60_000..=now_ms).contains(&stamp), "{stamp}");
    let blocks = aws["CloudWatchMetrics"].as_array().unwrap();
    assert_eq!(blocks.len(), 1, "{line}");
    assert_eq!(blocks[0]["Namespace"], namespace);
    let sets = blocks[0]["Dimensions"].as_array().unwrap();
    assert_eq!(sets.len(), 1, "{line}");
    let dims = sets[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    let metrics = blocks[0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["Name"].as_str().unwrap().to_owned();
            // Every metric has its unit: CloudWatch would store it as "None" otherwise.
            let unit = m["Unit"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no Unit"));
            (name, unit.to_owned())
        })
        .collect();
    (dims, metrics)
}

fn names(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_batch_of_jobs_emits_emf_lines_for_outcomes_times_queue_age_and_engine_errors() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut settings = Settings::new("jobs", "https://sqs.invalid/jobs", "images");
    settings.observability.metrics_namespace = "imagejobs-test".into();
    let emitter = imagejobs_processor::metrics::install(&settings.observability).unwrap();
    let mut drained = Vec::new();
    emitter.flush(&mut drained).unwrap();
    assert!(drained.is_empty(), "nothing recorded before the jobs");

    // The first job's cutout succeeds; the second finds the segmenter overloaded once (asked
    // again after a short wait), then refused with a permanent code; the third is canceled
    // while queued.
    let segmenter = Arc::new(ScriptedSegmenter::new(vec![
        Ok(cutout(png(true), "u2net")),
        Err(SegmenterError::Overloaded("HTTP 429".into())),
        Err(SegmenterError::Permanent {
            code: "unsupported_image".into(),
            message: "scripted".into(),
        }),
    ]));
    let w = World::new(segmenter.clone());
    let (ok, ok_body) = w.submit("req-ok").await;
    let (bad, bad_body) = w.submit("req-bad").await;
    let (canceled, canceled_body) = w.submit("req-canceled").await;
    w.jobs
        .cancel(&canceled.owner, canceled.id, OffsetDateTime::now_utc())
        .await
        .unwrap()
        .expect("a queued job can be canceled");
    let age = Duration::from_millis(1500);
    let outcomes = [
        w.processor.handle_record(&record(&ok_body, age)).await,
        w.processor.handle_record(&record(&bad_body, age)).await,
        w.processor
            .handle_record(&record(&canceled_body, age))
            .await,
    ];
    assert_eq!(
        outcomes,
        [
            Outcome::Succeeded,
            Outcome::Failed("unsupported_image".into()),
            Outcome::Skipped("already finished")
        ]
    );
    assert_eq!(segmenter.calls(), 3);
    let (ok, bad) = (w.reload(&ok).await, w.reload(&bad).await);

    let mut out = Vec::new();
    emitter.flush(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 7, "one line per dimension set:\n{text}");
    let ns = "imagejobs-test";
    let op = "remove_background";

    // Outcomes, with the processing time of each job that started.
    for (job, outcome) in [(&ok, "succeeded"), (&bad, "failed")] {
        let l = line(&lines, &[("Operation", op), ("Outcome", outcome)]);
        assert_eq!(
            block(l, ns),
            (
                vec!["Operation".into(), "Outcome".into()],
                names(&[("JobsEnded", "Count"), ("ProcessingTime", "Milliseconds")])
            )
        );
        assert_eq!(l["JobsEnded"], 1);
        let ms = job.duration_ms().expect("started and finished") as f64;
        assert_eq!(l["ProcessingTime"], json!([ms]), "{outcome}");
    }
    let l = line(&lines, &[("Operation", op), ("Outcome", "canceled")]);
    assert_eq!(
        block(l, ns),
        (
            vec!["Operation".into(), "Outcome".into()],
            names(&[("JobsEnded", "Count")])
        ),
        "a job canceled while queued never started: no processing time"
    );
    assert_eq!(l["JobsEnded"], 1);

    // The failure by code.
    let l = line(
        &lines,
        &[("Operation", op), ("ErrorCode", "unsupported_image")],
    );
    assert_eq!(
        block(l, ns),
        (
            vec!["Operation".into(), "ErrorCode".into()],
            names(&[("JobFailures", "Count")])
        )
    );
    assert_eq!(l["JobFailures"], 1);

    // Queue age of the three run messages, sent 1.5 s before they were handled.
    let l = line(&lines, &[("MessageKind", "run")]);
    assert_eq!(
        block(l, ns),
        (
            vec!["MessageKind".into()],
            names(&[("QueueAge", "Milliseconds")])
        )
    );
    let ages = l["QueueAge"].as_array().unwrap();
    assert_eq!(ages.len(), 3, "{l}");
    for age in ages {
        let age = age.as_f64().unwrap();
        assert!((1500.0..30_000.0).contains(&age), "queue age {age} ms");
    }

    // Each failed segmenter call, the retried one included.
    for code in ["segmenter_overloaded", "unsupported_image"] {
        let l = line(&lines, &[("Provider", "segmenter"), ("ErrorCode", code)]);
        assert_eq!(
            block(l, ns),
            (
                vec!["Provider".into(), "ErrorCode".into()],
                names(&[("ProviderErrors", "Count")])
            )
        );
        assert_eq!(l["ProviderErrors"], 1, "{code}");
    }

    // A flush resets what it wrote: the next invocation starts from nothing.
    let mut again = Vec::new();
    emitter.flush(&mut again).unwrap();
    assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));
}

/// A segmenter that holds every call until `parties` calls are in flight, so the records of a
/// batch are provably inside it together, then cuts out.
struct Rendezvous {
    barrier: tokio::sync::Barrier,
    cutout: Cutout,
}

#[async_trait]
impl Segmenter for Rendezvous {
    async fn remove_background(
        &self,
        _: Bytes,
        _: &RemoveBackgroundParams,
    ) -> Result<Cutout, SegmenterError> {
        tracing::info!("segmenter waiting for the other record");
        self.barrier.wait().await;
        tracing::info!("segmenter answering");
        Ok(self.cutout.clone())
    }
}

/// A `MakeWriter` into a shared buffer: the formatted log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;
    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[tokio::test]
async fn concurrent_jobs_log_under_their_own_job_span_only_with_their_request_id() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test's runtime has one thread, which polls every record of the batch: this
    // thread's subscriber sees all of their lines.
    let _default = tracing::subscriber::set_default(subscriber);

    let w = World::new(Arc::new(Rendezvous {
        barrier: tokio::sync::Barrier::new(2),
        cutout: cutout(png(true), "u2net"),
    }));
    let (a, a_body) = w.submit("req-a").await;
    let (b, b_body) = w.submit("req-b").await;
    // Only the batch's lines from here on.
    captured.0.lock().unwrap().clear();
    let mut event: SqsEvent = serde_json::from_str(JOB_EVENT).unwrap();
    event.records = vec![
        record(&a_body, Duration::ZERO),
        record(&b_body, Duration::ZERO),
    ];
    let response = tokio::time::timeout(Duration::from_secs(20), w.processor.handle(event))
        .await
        .expect("the two records ran concurrently (the segmenter waits for both)");
    assert!(response.batch_item_failures.is_empty());

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Every line of the batch is inside exactly one job span, the whole span of its own job:
    // a span held across an `.await` shows as `job{…A…}:job{…B…}: …` on B's lines.
    let span = |job: &Job, request: &str| {
        format!(
            "job{{job_id={} owner={} request_id={request}}}: ",
            job.id, job.owner
        )
    };
    let (a_span, b_span) = (span(&a, "req-a"), span(&b, "req-b"));
    for l in &lines {
        assert_eq!(l.matches("job{").count(), 1, "one job span per line: {l}");
        assert!(
            l.contains(&a_span) != l.contains(&b_span),
            "{a_span} or {b_span} in: {l}"
        );
    }
    let of = |span: &str| {
        lines
            .iter()
            .filter(|l| l.contains(span))
            .collect::<Vec<_>>()
    };
    for job_lines in [of(&a_span), of(&b_span)] {
        for message in [
            "segmenter waiting for the other record",
            "segmenter answering",
            "message handled",
        ] {
            assert_eq!(
                job_lines.iter().filter(|l| l.contains(message)).count(),
                1,
                "{message:?} once per job in:\n{text}"
            );
        }
    }
}
