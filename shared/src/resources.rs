//! Names and shapes of the AWS resources, shared by the functions (through configuration), the
//! local provisioning and the test that holds `template.yaml` to the same values.

/// Partition key attribute of the jobs table (string): `OWNER#{owner}`.
pub const TABLE_PARTITION_KEY: &str = "pk";
/// Sort key attribute of the jobs table (string): `JOB#{ulid}` or `IDEM#{key}`.
pub const TABLE_SORT_KEY: &str = "sk";
/// DynamoDB TTL attribute (Unix seconds).
pub const TABLE_TTL_ATTRIBUTE: &str = "expires_at";

/// Sparse global secondary index of the jobs table holding only non-terminal jobs (the
/// recovery sweeper's outbox; docs/ARCHITECTURE.md "Recovery"): partition key
/// [`PENDING_SHARD_ATTRIBUTE`], sort key [`PENDING_DUE_ATTRIBUTE`]. A terminal transition does not
/// remove the job: it moves its due time to [`OUTBOX_GRACE_SECONDS`] later, in the same write,
/// which makes the entry the job's notification outbox. Whoever queues the job's `notify`
/// message then removes both attributes ([`crate::notification::NotificationStore::clear_outbox`]);
/// the sweeper relays entries nobody cleared.
pub const PENDING_INDEX: &str = "pending";
/// String attribute `PENDING#{n}`, `n` in `0..PENDING_SHARDS` (from the job id), so the index's
/// writes spread over several partitions.
pub const PENDING_SHARD_ATTRIBUTE: &str = "pending_shard";
/// Number attribute: Unix seconds after which the sweeper looks at the job (a queued job's
/// grace, a processing job's lease end, a provider job's deadline).
pub const PENDING_DUE_ATTRIBUTE: &str = "pending_due";
/// The job attributes the `pending` index projects besides the keys: what the sweeper reads.
pub const PENDING_INDEX_ATTRIBUTES: [&str; 3] = ["status", "attempts", "provider_request_id"];
/// How many `PENDING#{n}` partitions the index has.
pub const PENDING_SHARDS: u32 = 8;
/// Seconds a new job may sit `queued` before the sweeper sends it to the queue again (the SQS
/// send after the record write may have been lost).
pub const QUEUED_GRACE_SECONDS: i64 = 30;
/// Seconds an ended job's outbox entry waits for the writer of the terminal transition to queue
/// its `notify` message before the sweeper does it instead (that writer crashed or lost the
/// send).
pub const OUTBOX_GRACE_SECONDS: i64 = 60;
/// Seconds a scheduled `poll` message may be late (queue wait plus one poll's handling, whose
/// calls time out within the record's deadline) before the sweeper sends another: a provider
/// job's due time is its next poll plus this, so a poll lost with its processor is replaced
/// within about a minute, not at the provider deadline.
pub const POLL_GRACE_SECONDS: i64 = 60;
/// The processor's lease on a job, in seconds. A running claim renews it every third of it
/// (its heartbeat, [`crate::core::JobTransitions::renew`]), so it need not outlast the Lambda
/// timeout: it runs out at most this long after the invocation holding it stopped (finished,
/// crashed, killed, or cut at its record deadline), and the sweeper then takes the job over.
/// Shorter than the 65 s it was before heartbeats: a crashed job waits half a minute, not more
/// than a minute, before it runs again (docs/ARCHITECTURE.md "Recovery").
pub const LEASE_SECONDS: u32 = 30;
/// Each record's deadline in the processor, in seconds: below the Lambda timeout, so a slow call
/// ends that record (as a retry) instead of getting the whole invocation, and its batch-mates'
/// receives, killed. Provider and segmenter call timeouts sit below it.
pub const RECORD_DEADLINE_SECONDS: u32 = PROCESSOR_TIMEOUT_SECONDS - 10;

/// The processor's Lambda timeout, in seconds.
pub const PROCESSOR_TIMEOUT_SECONDS: u32 = 60;
/// Jobs queue visibility timeout: 6× the processor timeout, as AWS recommends for SQS event
/// sources, so a batch still running is never delivered twice.
pub const JOBS_QUEUE_VISIBILITY_TIMEOUT_SECONDS: u32 = 6 * PROCESSOR_TIMEOUT_SECONDS;
/// Receives before a message moves to the dead-letter queue; on the last one the processor fails
/// the job with `retries_exhausted` instead of retrying.
pub const JOBS_QUEUE_MAX_RECEIVE_COUNT: u32 = 5;
/// Jobs queue message retention (4 days).
pub const JOBS_QUEUE_RETENTION_SECONDS: u32 = 4 * 24 * 3600;
/// Dead-letter queue message retention (14 days, the SQS maximum).
pub const DEAD_LETTER_QUEUE_RETENTION_SECONDS: u32 = 14 * 24 * 3600;

/// Prefix of objects that become jobs (`inbox/{owner}/{operation}/{file}`).
pub const INBOX_PREFIX: &str = "inbox/";
/// Prefix of direct uploads (`uploads/{owner}/{upload_id}`, from presigned PUT URLs).
pub const UPLOADS_PREFIX: &str = "uploads/";
/// Days before `uploads/` objects expire (an upload is meant to be used at once).
pub const UPLOADS_EXPIRATION_DAYS: u32 = 1;
/// Prefix of stored job inputs.
pub const INPUTS_PREFIX: &str = "inputs/";
/// Prefix of job results.
pub const RESULTS_PREFIX: &str = "results/";
/// Days before `inbox/` objects expire.
pub const INBOX_EXPIRATION_DAYS: u32 = 7;
/// Days before `inputs/` objects expire.
pub const INPUTS_EXPIRATION_DAYS: u32 = 30;
/// Days before `results/` objects expire; job records carry the same TTL.
pub const RESULTS_EXPIRATION_DAYS: u32 = 30;

/// Local resource names used by provisioning against the emulator.
pub mod local {
    /// Jobs table.
    pub const TABLE: &str = "imagejobs-jobs";
    /// Jobs queue.
    pub const QUEUE: &str = "imagejobs-jobs";
    /// Dead-letter queue of the jobs queue.
    pub const DEAD_LETTER_QUEUE: &str = "imagejobs-jobs-dlq";
    /// Images bucket.
    pub const BUCKET: &str = "imagejobs-local";
    /// Local-only queue that receives the bucket's `inbox/` notifications (on AWS, S3 invokes
    /// the ingest function directly).
    pub const INGEST_QUEUE: &str = "imagejobs-ingest-events";
}
