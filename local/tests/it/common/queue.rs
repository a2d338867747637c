//! Queue and record helpers for the tests that drive the processor by hand: take a message off
//! the jobs queue as a Lambda SQS record, build batches, age leases, read jobs and objects back.

use shared::core::JobStore;
use shared::job::{Job, JobMessage, OwnerId};

use super::TestEnv;

/// A processor over the emulator for provider-backed jobs: `providers` point at the contract
/// servers; the segmenter URL is a placeholder (these jobs never call it).
pub fn provider_processor(
    env: &TestEnv,
    providers: shared::providers::ProviderSettings,
    lease: std::time::Duration,
) -> imagejobs_processor::Processor {
    let mut settings = env.settings.clone();
    settings.segmenter.url = Some("http://127.0.0.1:9".into());
    settings.providers = providers;
    settings.jobs.lease = lease;
    settings.jobs.dead_letter_queue_arn = Some(env.provisioned.dead_letter_queue_arn.clone());
    imagejobs_processor::Processor::with_aws(&settings, &env.aws()).unwrap()
}

/// The `anonymous` owner's job named by an API answer's `id`.
pub async fn job_of(env: &TestEnv, body: &serde_json::Value) -> Job {
    let id = ulid::Ulid::from_string(body["id"].as_str().unwrap()).unwrap();
    env.aws()
        .jobs
        .get(&OwnerId::parse("anonymous").unwrap(), id)
        .await
        .unwrap()
        .unwrap()
}

/// The next message on the jobs queue, deleted, as a Lambda SQS record.
pub async fn take_message(env: &TestEnv) -> Option<aws_lambda_events::event::sqs::SqsMessage> {
    let out = env
        .sqs()
        .receive_message()
        .queue_url(&env.provisioned.queue_url)
        .max_number_of_messages(1)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    let m = out.messages.unwrap_or_default().into_iter().next()?;
    env.sqs()
        .delete_message()
        .queue_url(&env.provisioned.queue_url)
        .receipt_handle(m.receipt_handle.unwrap())
        .send()
        .await
        .unwrap();
    Some(record(m.body.unwrap(), 1, &env.provisioned.queue_arn))
}

/// [`take_message`], waiting up to `within` for a delayed message to become visible.
pub async fn take_message_within(
    env: &TestEnv,
    within: std::time::Duration,
) -> Option<aws_lambda_events::event::sqs::SqsMessage> {
    let until = std::time::Instant::now() + within;
    loop {
        if let Some(m) = take_message(env).await {
            return Some(m);
        }
        if std::time::Instant::now() >= until {
            return None;
        }
    }
}

pub fn record(
    body: String,
    receive_count: u32,
    arn: &str,
) -> aws_lambda_events::event::sqs::SqsMessage {
    let mut event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(include_str!("../../../../events/sqs-job.json")).unwrap();
    let mut r = event.records.remove(0);
    r.message_id = Some(ulid::Ulid::new().to_string());
    r.body = Some(body);
    r.attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    r.event_source_arn = Some(arn.to_owned());
    r
}

pub fn batch(
    records: Vec<aws_lambda_events::event::sqs::SqsMessage>,
) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut event: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(include_str!("../../../../events/sqs-job.json")).unwrap();
    event.records = records;
    event
}

pub fn run_record(
    job: &Job,
    receive_count: u32,
    arn: &str,
) -> aws_lambda_events::event::sqs::SqsMessage {
    record(
        serde_json::to_string(&JobMessage::Run {
            owner: job.owner.clone(),
            job_id: job.id,
        })
        .unwrap(),
        receive_count,
        arn,
    )
}

/// Ages the job's lease, as if its holder had crashed long ago.
pub async fn expire_lease(env: &TestEnv, job: &Job) {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    env.dynamodb()
        .update_item()
        .table_name(&env.settings.resources.table)
        .key("pk", V::S(format!("OWNER#{}", job.owner)))
        .key("sk", V::S(format!("JOB#{}", job.id)))
        .update_expression("SET lease_until = :zero")
        .expression_attribute_values(":zero", V::N("0".into()))
        .send()
        .await
        .unwrap();
}

pub async fn reload(env: &TestEnv, job: &Job) -> Job {
    env.aws()
        .jobs
        .get(&job.owner, job.id)
        .await
        .unwrap()
        .unwrap()
}

pub async fn stored(env: &TestEnv, key: &str) -> Vec<u8> {
    env.s3()
        .get_object()
        .bucket(&env.settings.resources.bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes()
        .to_vec()
}
