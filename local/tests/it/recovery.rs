//! No job lost, no own write mistaken for someone else's: the recovery sweeper and the DynamoDB
//! adapter's guards against the emulator, with faults injected on purpose (moto never loses a
//! response, conflicts or crashes by itself).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use time::OffsetDateTime;

use crate::common::{TestEnv, start_segmenter};
use shared::adapters::DynamoJobs;
use shared::core::{
    Claim, Created, JobQueue, JobStore, JobTransitions, Lease, PendingJobs, ProviderSubmission,
    ProviderTransitions,
};
use shared::job::{JobError, JobMessage, JobStatus, OwnerId};
use shared::recovery::Sweeper;

/// A queue whose sends never arrive: the API or ingest died right after the job's record was
/// written (window 1 of the reliability issue).
#[derive(Default)]
struct LostQueue {
    dropped: AtomicUsize,
}

#[async_trait]
impl JobQueue for LostQueue {
    async fn send(&self, _: &JobMessage, _: Duration) -> shared::Result<()> {
        self.dropped.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Loses the response of the first `times` calls of `operation` after DynamoDB has carried
/// them out, answering 500 instead, so the SDK sends the same request again: what a dropped
/// connection or a 500 after a committed write looks like to the client.
#[derive(Debug)]
struct LoseResponses {
    operation: &'static str,
    left: AtomicUsize,
}

impl Intercept for LoseResponses {
    fn name(&self) -> &'static str {
        "LoseResponses"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if takes_one(cfg, self.operation, &self.left) {
            let response = context.response_mut();
            *response.status_mut() = 500.try_into().unwrap();
            *response.body_mut() = aws_smithy_types::body::SdkBody::from(
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"response lost (injected)"}"#,
            );
        }
        Ok(())
    }
}

/// Whether the call `cfg` describes is an `operation` and one of the `left` faults is still to
/// be injected (taking it).
fn takes_one(cfg: &ConfigBag, operation: &str, left: &AtomicUsize) -> bool {
    cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        .is_some_and(|m| m.name() == operation)
        && left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
}

/// Makes the first `TransactWriteItems` fail as DynamoDB cancels a transaction that met a
/// concurrent one on an item (reason `TransactionConflict`), with nothing written: the request
/// goes to a table that does not exist (one letter of the name changed, so its length and
/// signature's content length stay), and its answer becomes the cancellation.
#[derive(Debug)]
struct ConflictFirst {
    table: String,
    left: AtomicUsize,
    armed: AtomicUsize,
}

impl Intercept for ConflictFirst {
    fn name(&self) -> &'static str {
        "ConflictFirst"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextMut<
            '_,
        >,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if !takes_one(cfg, "TransactWriteItems", &self.left) {
            return Ok(());
        }
        let body = std::str::from_utf8(context.request().body().bytes().unwrap_or_default())?;
        let elsewhere = format!("X{}", &self.table[1..]);
        let body = body.replace(&self.table, &elsewhere);
        *context.request_mut().body_mut() = aws_smithy_types::body::SdkBody::from(body);
        self.armed.store(1, Ordering::SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if self.armed.swap(0, Ordering::SeqCst) == 1 {
            let response = context.response_mut();
            *response.status_mut() = 400.try_into().unwrap();
            // The error type the table's absence put in the header would win over the body's.
            response.headers_mut().insert(
                "x-amzn-ErrorType",
                "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            );
            *response.body_mut() = aws_smithy_types::body::SdkBody::from(
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","message":"Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict, None]","CancellationReasons":[{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"},{"Code":"None"}]}"#,
            );
        }
        Ok(())
    }
}

/// The jobs table through a client that loses the first response of `operation`.
fn losing_first(env: &TestEnv, operation: &'static str) -> DynamoJobs {
    let config = aws_sdk_dynamodb::config::Builder::from(&env.sdk)
        .interceptor(LoseResponses {
            operation,
            left: AtomicUsize::new(1),
        })
        .build();
    DynamoJobs::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        &env.settings.resources.table,
    )
}

async fn submit_without_enqueue(
    env: &TestEnv,
    owner: &OwnerId,
) -> (shared::job::Job, Arc<LostQueue>) {
    let aws = env.aws();
    let lost = Arc::new(LostQueue::default());
    let submitter = env.submitter(
        Arc::new(aws.jobs.clone()),
        lost.clone(),
        Arc::new(aws.blobs.clone()),
    );
    let created = submitter
        .submit(crate::common::photo_submission(owner, Some("lost-1")))
        .await
        .unwrap();
    let Created::New(job) = created else {
        panic!("a new job: {created:?}")
    };
    assert_eq!(lost.dropped.load(Ordering::SeqCst), 1);
    (job, lost)
}

async fn wait_for_terminal(env: &TestEnv, owner: &OwnerId, id: ulid::Ulid) -> shared::job::Job {
    let jobs = env.aws().jobs;
    for _ in 0..150 {
        let job = jobs.get(owner, id).await.unwrap().unwrap();
        if job.status.is_terminal() {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("job {id} did not finish");
}

fn sweeper(env: &TestEnv) -> Sweeper {
    let aws = env.aws();
    Sweeper::new(
        Arc::new(aws.jobs.clone()),
        Arc::new(aws.queue.clone()),
        Arc::new(aws.jobs.clone()),
        env.settings.jobs.max_receive_count,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_enqueue_was_lost_is_sent_by_the_sweeper_and_succeeds() {
    let mut env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    let (segmenter, _models) = start_segmenter().await;
    let _stack = env.start_stack(&segmenter).await;

    // Nothing is on the queue: without the sweeper this job would stay queued for ever.
    assert_eq!(env.queued_messages().await, 0);
    let sweeper = sweeper(&env);
    let now = OffsetDateTime::now_utc();
    let early = sweeper.sweep(now, 100).await.unwrap();
    assert_eq!(early.requeued, 0, "still within its grace: {early:?}");
    let report = sweeper
        .sweep(now + time::Duration::seconds(31), 100)
        .await
        .unwrap();
    assert_eq!((report.due, report.requeued), (1, 1), "{report:?}");

    let done = wait_for_terminal(&env, &owner, job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 1);
    assert_eq!(
        env.in_flight("anonymous").await,
        0,
        "the quota slot is back"
    );
    // Finished jobs leave the index.
    assert!(env.aws().jobs.due(i64::MAX, 100).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_processor_died_is_taken_over_once_its_lease_ends() {
    let mut env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    // A processor claimed it and was killed: a lease that ended a moment ago, no message left.
    let jobs = env.aws().jobs;
    let crashed_at = OffsetDateTime::now_utc() - time::Duration::seconds(70);
    let lease = Lease {
        token: "killed-processor".into(),
        until: crashed_at.unix_timestamp() + 65,
    };
    assert!(matches!(
        jobs.claim(&owner, job.id, &lease, crashed_at)
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));
    let (segmenter, _models) = start_segmenter().await;
    let _stack = env.start_stack(&segmenter).await;

    let started = std::time::Instant::now();
    let report = sweeper(&env)
        .sweep(OffsetDateTime::now_utc(), 100)
        .await
        .unwrap();
    assert_eq!(report.requeued, 1, "{report:?}");
    let done = wait_for_terminal(&env, &owner, job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 2, "the killed attempt and the takeover");
    assert_eq!(env.in_flight("anonymous").await, 0);
    eprintln!(
        "takeover after the sweep: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_claim_whose_response_was_lost_is_recognised_as_ours() {
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    let jobs = losing_first(&env, "UpdateItem");
    let now = OffsetDateTime::now_utc();
    let lease = Lease {
        token: "mine".into(),
        until: now.unix_timestamp() + 65,
    };
    // The first UpdateItem commits, its answer is lost, the SDK sends it again and that one
    // fails its condition on our own lease: still our claim, not a duplicate to drop.
    let claim = jobs.claim(&owner, job.id, &lease, now).await.unwrap();
    let Claim::Claimed(claimed) = claim else {
        panic!("our own claim: {claim:?}")
    };
    assert_eq!(claimed.attempts, 1);
    // Someone else's live lease is still refused.
    let other = Lease {
        token: "theirs".into(),
        until: now.unix_timestamp() + 65,
    };
    assert!(matches!(
        env.aws()
            .jobs
            .claim(&owner, job.id, &other, now)
            .await
            .unwrap(),
        Claim::Leased(_)
    ));
}

#[tokio::test]
async fn a_released_claim_is_queued_again_uncounted_and_a_lost_response_is_still_ours() {
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    let now = OffsetDateTime::now_utc();
    let lease = Lease {
        token: "mine".into(),
        until: now.unix_timestamp() + 65,
    };
    let aws = env.aws();
    assert!(matches!(
        aws.jobs.claim(&owner, job.id, &lease, now).await.unwrap(),
        Claim::Claimed(_)
    ));
    // Not the holder: nothing changes.
    let due = now.unix_timestamp() + 35;
    assert!(
        !aws.jobs
            .release(&owner, job.id, "theirs", true, due, now)
            .await
            .unwrap()
    );
    assert_eq!(
        aws.jobs
            .get(&owner, job.id)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );
    // The holder's release commits, its answer is lost and the SDK's retry fails its condition
    // on the state the release itself wrote: still ours.
    let jobs = losing_first(&env, "UpdateItem");
    assert!(
        jobs.release(&owner, job.id, "mine", true, due, now)
            .await
            .unwrap()
    );
    let released = aws.jobs.get(&owner, job.id).await.unwrap().unwrap();
    assert_eq!(released.status, JobStatus::Queued);
    assert_eq!(released.attempts, 0, "the released claim does not count");
    // The pending index holds it for the sweeper from `due`, not before.
    assert!(
        aws.jobs
            .due(due - 1, 100)
            .await
            .unwrap()
            .iter()
            .all(|p| p.id != job.id)
    );
    let pending = aws.jobs.due(due, 100).await.unwrap();
    let entry = pending
        .iter()
        .find(|p| p.id == job.id)
        .expect("due at `due`");
    assert_eq!((entry.status, entry.attempts), (JobStatus::Queued, 0));
    // Asked again with the same token and due time (a retry of the call), it reads back as
    // ours and changes nothing: attempts never go below what the claims counted.
    assert!(
        aws.jobs
            .release(&owner, job.id, "mine", true, due, now)
            .await
            .unwrap()
    );
    assert_eq!(
        aws.jobs
            .get(&owner, job.id)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        0
    );
    let next = Lease {
        token: "next".into(),
        until: now.unix_timestamp() + 65,
    };
    let Claim::Claimed(claimed) = aws.jobs.claim(&owner, job.id, &next, now).await.unwrap() else {
        panic!("a released job is claimable")
    };
    assert_eq!(claimed.attempts, 1);
}

/// Where the `pending` index has the job due, if it is in it.
async fn due_of(env: &TestEnv, id: ulid::Ulid) -> Option<i64> {
    let pending = env.aws().jobs.due(i64::MAX, 1000).await.unwrap();
    pending.iter().find(|p| p.id == id).map(|p| p.due)
}

#[tokio::test]
async fn a_renewal_moves_the_holders_lease_and_due_time_and_nothing_else_does() {
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    let now = OffsetDateTime::now_utc();
    let first = now.unix_timestamp() + 30;
    let lease = Lease {
        token: "mine".into(),
        until: first,
    };
    let aws = env.aws();
    assert!(matches!(
        aws.jobs.claim(&owner, job.id, &lease, now).await.unwrap(),
        Claim::Claimed(_)
    ));
    // Another token, or a due time that is not the one the holder left, changes nothing.
    assert!(
        !aws.jobs
            .renew(&owner, job.id, "theirs", first, first + 10)
            .await
            .unwrap()
    );
    assert!(
        !aws.jobs
            .renew(&owner, job.id, "mine", first - 1, first + 10)
            .await
            .unwrap()
    );
    assert_eq!(due_of(&env, job.id).await, Some(first));

    // The holder's renewal commits, its answer is lost and the SDK's retry fails its condition
    // on the state the renewal itself wrote: still ours.
    let jobs = losing_first(&env, "UpdateItem");
    assert!(
        jobs.renew(&owner, job.id, "mine", first, first + 10)
            .await
            .unwrap()
    );
    assert_eq!(due_of(&env, job.id).await, Some(first + 10));
    // The lease moved with it: a claim just after the first lease's end finds it held.
    let later = now + time::Duration::seconds(31);
    let next = Lease {
        token: "next".into(),
        until: later.unix_timestamp() + 30,
    };
    assert!(matches!(
        aws.jobs.claim(&owner, job.id, &next, later).await.unwrap(),
        Claim::Leased(_)
    ));

    // Once the run moved the job on (here: gave the claim back), renewing stops.
    let released_due = now.unix_timestamp() + 35;
    assert!(
        aws.jobs
            .release(&owner, job.id, "mine", false, released_due, now)
            .await
            .unwrap()
    );
    assert!(
        !aws.jobs
            .renew(&owner, job.id, "mine", first + 10, first + 20)
            .await
            .unwrap()
    );
    assert_eq!(due_of(&env, job.id).await, Some(released_due));
}

#[tokio::test]
async fn a_submission_record_whose_response_was_lost_is_recognised_as_ours() {
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    let now = OffsetDateTime::now_utc();
    let lease = Lease {
        token: "mine".into(),
        until: now.unix_timestamp() + 65,
    };
    env.aws()
        .jobs
        .claim(&owner, job.id, &lease, now)
        .await
        .unwrap();
    let submission = ProviderSubmission {
        provider: "fal".into(),
        request_id: "req-42".into(),
        deadline: now.unix_timestamp() + 600,
        links: None,
    };
    let jobs = losing_first(&env, "UpdateItem");
    assert!(
        jobs.record_submission(&owner, job.id, "mine", &submission, now)
            .await
            .unwrap(),
        "our request id read back is our record"
    );
    // A different request id on the same job is still refused: the guard against paying twice.
    let second = ProviderSubmission {
        request_id: "req-43".into(),
        ..submission
    };
    assert!(
        !env.aws()
            .jobs
            .record_submission(&owner, job.id, "mine", &second, now)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_create_whose_response_was_lost_is_a_new_job_to_enqueue() {
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (first, _) = submit_without_enqueue(&env, &owner).await;
    // The same job written again, as the SDK's retry of a create whose answer was lost: with
    // and without an idempotency key it is ours, to be enqueued, not a replay of someone else's.
    let jobs = losing_first(&env, "TransactWriteItems");
    let mut job = first.clone();
    job.id = ulid::Ulid::new();
    let created = jobs.create(&job, None).await.unwrap();
    assert!(
        matches!(&created, Created::New(j) if j.id == job.id),
        "{created:?}"
    );
    let mut keyed = first.clone();
    keyed.id = ulid::Ulid::new();
    let idem = shared::core::Idempotency {
        key: "retried".into(),
        request_hash: "h".into(),
    };
    let created = losing_first(&env, "TransactWriteItems")
        .create(&keyed, Some(&idem))
        .await
        .unwrap();
    assert!(
        matches!(&created, Created::New(j) if j.id == keyed.id),
        "{created:?}"
    );
    // Three jobs, three slots: the retries did not count twice.
    assert_eq!(env.in_flight("anonymous").await, 3);
}

/// Window 4: DynamoDB cancels a create's transaction because a concurrent one holds the
/// owner's quota item (`TransactionConflict`); the adapter runs it again with jittered backoff,
/// so the create succeeds and counts once. (Fails when conflicts are not retried: the create
/// answers `dependency_unavailable`, as it did before.)
#[tokio::test]
async fn a_create_cancelled_for_a_transaction_conflict_is_run_again() {
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (first, _) = submit_without_enqueue(&env, &owner).await;
    let table = env.settings.resources.table.clone();
    let interceptor = ConflictFirst {
        table: table.clone(),
        left: AtomicUsize::new(1),
        armed: AtomicUsize::new(0),
    };
    let config = aws_sdk_dynamodb::config::Builder::from(&env.sdk)
        .interceptor(interceptor)
        .build();
    let jobs = DynamoJobs::new(aws_sdk_dynamodb::Client::from_conf(config), &table);
    let mut job = first.clone();
    job.id = ulid::Ulid::new();
    let created = jobs.create(&job, None).await.unwrap();
    assert!(
        matches!(&created, Created::New(j) if j.id == job.id),
        "{created:?}"
    );
    assert!(env.aws().jobs.get(&owner, job.id).await.unwrap().is_some());
    // Two jobs, two slots: the cancelled try wrote nothing, the retry counted once.
    assert_eq!(env.in_flight("anonymous").await, 2);
}

#[tokio::test]
async fn the_in_flight_counter_never_goes_below_zero() {
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    assert_eq!(env.in_flight("anonymous").await, 1);
    // The counter drifted to 0 (a job written before counters existed, a repair by hand).
    env.dynamodb()
        .put_item()
        .table_name(&env.settings.resources.table)
        .item(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("OWNER#anonymous".into()),
        )
        .item(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("QUOTA#in-flight".into()),
        )
        .item(
            "count",
            aws_sdk_dynamodb::types::AttributeValue::N("0".into()),
        )
        .send()
        .await
        .unwrap();
    let failed = env
        .aws()
        .jobs
        .fail(
            &owner,
            job.id,
            &JobError::new("test", "ended"),
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap()
        .expect("the job still ends");
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(env.in_flight("anonymous").await, 0, "not -1");
}

/// The local runner plays `SweeperFunction`'s schedule: a job whose processor was killed
/// finishes on its own, with nobody calling the sweeper, about a lease after the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_runner_recovers_a_killed_job_on_its_own() {
    let mut env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    let (segmenter, _models) = start_segmenter().await;
    let _stack = env
        .start_stack_sweeping(&segmenter, Some(Duration::from_secs(1)))
        .await;
    // Killed right after its claim, with a 3 s lease (30 s on AWS).
    let killed_at = OffsetDateTime::now_utc();
    let lease = Lease {
        token: "killed-processor".into(),
        until: killed_at.unix_timestamp() + 3,
    };
    env.aws()
        .jobs
        .claim(&owner, job.id, &lease, killed_at)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let done = wait_for_terminal(&env, &owner, job.id).await;
    let recovered_in = started.elapsed();
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 2);
    // Lease (3 s) + at most one sweep interval (1 s) + the run, with room for a busy machine.
    assert!(
        recovered_in < Duration::from_secs(20),
        "recovered after {recovered_in:?}"
    );
    eprintln!(
        "recovered {:.1} s after the kill",
        recovered_in.as_secs_f64()
    );
}

#[tokio::test]
async fn a_run_whose_claim_fails_before_it_is_written_comes_back_in_seconds() {
    use shared::faults::{FaultPlan, Faults, Faulty};
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    let aws = env.aws();
    aws.queue
        .send(
            &JobMessage::Run {
                owner: owner.clone(),
                job_id: job.id,
            },
            Duration::ZERO,
        )
        .await
        .unwrap();
    // Every jobs-table call fails before it is made: the claim never happens.
    let mut plan = FaultPlan::uniform(1, 0.0);
    plan.rates[0] = 1.0;
    let failing = Arc::new(Faulty::new(aws.jobs.clone(), Arc::new(Faults::new(plan))));
    let segmenter = Arc::new(
        shared::adapters::HttpSegmenter::new("http://127.0.0.1:9", Duration::from_secs(1)).unwrap(),
    );
    let processor = imagejobs_processor::Processor::new(
        failing,
        Arc::new(aws.blobs.clone()),
        segmenter,
        &env.settings,
    )
    .with_visibility(Arc::new(aws.queue.clone()));
    let sqs = env.sqs();
    let receive = || {
        sqs.receive_message()
            .queue_url(&env.settings.resources.queue_url)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .wait_time_seconds(20)
            .send()
    };
    let first = receive().await.unwrap().messages.unwrap_or_default();
    assert_eq!(first.len(), 1);
    let event =
        imagejobs_local::runner::sqs_event(&first, "arn:aws:sqs:us-east-1:123456789012:jobs");
    let response = processor.handle(event).await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "returned for a retry"
    );
    // Back after the 5 s it was given, not the queue's 360 s visibility timeout.
    let started = std::time::Instant::now();
    let again = receive().await.unwrap().messages.unwrap_or_default();
    let waited = started.elapsed();
    assert_eq!(
        again.len(),
        1,
        "the message came back within the 20 s receive"
    );
    assert_eq!(again[0].message_id, first[0].message_id);
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    let receives = again[0]
        .attributes
        .as_ref()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        })
        .cloned();
    assert_eq!(receives.as_deref(), Some("2"), "a receive is still counted");
    let stored = aws.jobs.get(&owner, job.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.attempts), (JobStatus::Queued, 0));
}

/// The jobs table, whose first claim is written and its answer lost.
struct LoseFirstClaim {
    jobs: DynamoJobs,
    lost: AtomicUsize,
}

#[async_trait]
impl JobTransitions for LoseFirstClaim {
    async fn claim(
        &self,
        owner: &OwnerId,
        id: ulid::Ulid,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> shared::Result<Claim> {
        let claim = self.jobs.claim(owner, id, lease, now).await?;
        if self.lost.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(shared::Error::unavailable(
                "dynamodb",
                "the answer was lost",
            ));
        }
        Ok(claim)
    }
    async fn renew(
        &self,
        owner: &OwnerId,
        id: ulid::Ulid,
        lease_token: &str,
        seen: i64,
        until: i64,
    ) -> shared::Result<bool> {
        self.jobs.renew(owner, id, lease_token, seen, until).await
    }
    async fn complete(
        &self,
        owner: &OwnerId,
        id: ulid::Ulid,
        lease_token: &str,
        result: &shared::job::JobResult,
        now: OffsetDateTime,
    ) -> shared::Result<shared::job::Job> {
        self.jobs
            .complete(owner, id, lease_token, result, now)
            .await
    }
    async fn release(
        &self,
        owner: &OwnerId,
        id: ulid::Ulid,
        lease_token: &str,
        refund_attempt: bool,
        due: i64,
        now: OffsetDateTime,
    ) -> shared::Result<bool> {
        self.jobs
            .release(owner, id, lease_token, refund_attempt, due, now)
            .await
    }
    async fn fail(
        &self,
        owner: &OwnerId,
        id: ulid::Ulid,
        error: &JobError,
        now: OffsetDateTime,
    ) -> shared::Result<Option<shared::job::Job>> {
        self.jobs.fail(owner, id, error, now).await
    }
}

#[tokio::test]
async fn a_claim_written_with_its_answer_lost_is_taken_up_at_once_not_after_its_lease() {
    let env = TestEnv::new().await;
    let owner = OwnerId::parse("anonymous").unwrap();
    let (job, _) = submit_without_enqueue(&env, &owner).await;
    let aws = env.aws();
    let (segmenter_url, _models) = start_segmenter().await;
    let processor = imagejobs_processor::Processor::new(
        Arc::new(LoseFirstClaim {
            jobs: aws.jobs.clone(),
            lost: AtomicUsize::new(0),
        }),
        Arc::new(aws.blobs.clone()),
        Arc::new(
            shared::adapters::HttpSegmenter::new(&segmenter_url, Duration::from_secs(30)).unwrap(),
        ),
        &env.settings,
    );
    let body = serde_json::to_string(&JobMessage::Run {
        owner: owner.clone(),
        job_id: job.id,
    })
    .unwrap();
    let outcome = processor
        .handle_record(&crate::common::queue::record(
            body,
            1,
            "arn:aws:sqs:us-east-1:123456789012:jobs",
        ))
        .await;
    // The same lease, asked again, is recognised as ours: the job runs now, once, instead of
    // waiting out the 30 s lease it holds itself.
    assert_eq!(outcome, imagejobs_processor::Outcome::Succeeded);
    let done = aws.jobs.get(&owner, job.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.attempts), (JobStatus::Succeeded, 1));
}
