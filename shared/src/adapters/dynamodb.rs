//! DynamoDB single-table adapter for jobs and idempotency records.
//!
//! Items (table keys `pk`/`sk`, see [`crate::resources`]):
//! - job: `pk = OWNER#{owner}`, `sk = JOB#{ulid}`, the [`Job`] fields, plus `lease_token` and
//!   `lease_until` (Unix seconds) while processing;
//! - idempotency record: `pk = OWNER#{owner}`, `sk = IDEM#{key}`, `request_hash`, `job_id`,
//!   `expires_at`.
//! - capability (the async background-removal route's `processing_id`): `pk = sk = CAPABILITY#{uuid}`, `owner`, `job_id`,
//!   `expires_at` (the job's, so DynamoDB TTL removes both together).
//!
//! Every state change is an `UpdateItem` with a condition on `status` (and the lease), so two
//! processors can never both run or finish a job.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::builders::TransactWriteItemsFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use backon::{ExponentialBuilder, Retryable};
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ulid::Ulid;

use crate::core::{
    Capability, CapabilityStore, Claim, Created, Idempotency, JobPage, JobStore, JobTransitions,
    Lease, ListQuery, PendingJob, PendingJobs, Probe, ProviderMark, ProviderSubmission,
    ProviderTransitions, SubmitIntent, Upload, UploadStore,
};
use crate::error::{Error, Result};
use crate::job::{Job, JobError, JobResult, JobStatus, OwnerId};
use crate::resources::{
    PENDING_DUE_ATTRIBUTE as PENDING_DUE, PENDING_SHARD_ATTRIBUTE as PENDING_SHARD,
    TABLE_PARTITION_KEY as PK, TABLE_SORT_KEY as SK,
};

type Item = HashMap<String, AttributeValue>;

/// How long an idempotency key is remembered: one day, as Stripe and the IETF draft suggest.
const IDEMPOTENCY_TTL: time::Duration = time::Duration::hours(24);

/// Per-owner limits enforced by conditional counters in the table (never in process memory:
/// Lambda runs many copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Queued + processing jobs an owner may have.
    pub max_in_flight: u32,
    /// Jobs an owner may create per calendar minute (UTC).
    pub max_per_minute: u32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_in_flight: 50,
            max_per_minute: 120,
        }
    }
}

/// The jobs table.
#[derive(Debug, Clone)]
pub struct DynamoJobs {
    client: Client,
    table: String,
    quotas: Quotas,
}

const IN_FLIGHT_SK: &str = "QUOTA#in-flight";

fn minute_sk(now: OffsetDateTime) -> String {
    format!("QUOTA#minute#{}", now.unix_timestamp() / 60)
}

/// When the rate window holding `now` ends: the next whole minute, Unix seconds.
fn minute_ends(now: OffsetDateTime) -> i64 {
    (now.unix_timestamp() / 60 + 1) * 60
}

/// A quota counter item's `count` (0 when the item or the attribute is absent).
fn counter_value(item: &HashMap<String, AttributeValue>) -> u32 {
    item.get("count")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `count = count + 1` on a quota counter, only while below `limit` (the release is
/// [`DynamoJobs::release_slot`]).
fn take_slot(
    table: &str,
    owner: &OwnerId,
    sk: String,
    limit: u32,
    expires_at: Option<i64>,
) -> Result<Update> {
    let mut expression = "SET #count = if_not_exists(#count, :zero) + :one".to_owned();
    if expires_at.is_some() {
        expression.push_str(", #ttl = :ttl");
    }
    let mut update = Update::builder()
        .table_name(table)
        .key(PK, s(pk(owner)))
        .key(SK, s(sk))
        .update_expression(expression)
        .condition_expression("attribute_not_exists(#count) OR #count < :limit")
        .expression_attribute_names("#count", "count")
        .expression_attribute_values(":zero", n(0))
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":limit", n(limit));
    if let Some(ttl) = expires_at {
        update = update
            .expression_attribute_names("#ttl", crate::resources::TABLE_TTL_ATTRIBUTE)
            .expression_attribute_values(":ttl", n(ttl));
    }
    update.build().map_err(unavailable)
}

/// Which items of a cancelled transaction failed their condition.
fn failed_conditions(e: &TransactWriteItemsError) -> Vec<usize> {
    match e {
        TransactWriteItemsError::TransactionCanceledException(c) => c
            .cancellation_reasons()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            .map(|(i, _)| i)
            .collect(),
        _ => Vec::new(),
    }
}

/// A transaction DynamoDB cancelled because another one held one of its items (reason
/// `TransactionConflict`), or refused while an earlier one with the same client token was still
/// running: nothing was written, so running it again is safe. The owner's quota counters are
/// such shared items — every create and every finish of an owner's jobs writes them — so
/// concurrent jobs of one owner meet this routinely on real DynamoDB.
/// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html>
fn is_transaction_conflict(e: &SdkError<TransactWriteItemsError>) -> bool {
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(c)) => c
            .cancellation_reasons()
            .iter()
            .any(|r| r.code() == Some("TransactionConflict")),
        Some(TransactWriteItemsError::TransactionInProgressException(_)) => true,
        _ => false,
    }
}

/// Backoff between tries of a conflicting transaction: jittered, 20 ms growing to 400 ms, at
/// most 6 tries (about 1 s in all), well inside any caller's deadline.
fn conflict_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(400))
        .with_max_times(5)
        .with_jitter()
}

/// Sends `tx`, again with [`conflict_backoff`] while DynamoDB cancels it for a
/// [transaction conflict](is_transaction_conflict). A retry after a lost response is the SDK's
/// own, under the same `ClientRequestToken` (which the SDK fills in), so DynamoDB answers it
/// with the first call's outcome instead of writing twice.
async fn transact(
    tx: TransactWriteItemsFluentBuilder,
) -> std::result::Result<TransactWriteItemsOutput, SdkError<TransactWriteItemsError>> {
    (|| tx.clone().send())
        .retry(conflict_backoff())
        .when(is_transaction_conflict)
        .notify(|e, wait| tracing::info!(?wait, error = %e, "transaction conflict; retrying"))
        .await
}

/// The `pending` index partition of a job: from the id's random bits, so it is stable.
/// The tail of every terminal transition's `SET`: the job leaves the lease and stays in the
/// `pending` index as its notification outbox entry, due [`OUTBOX_GRACE_SECONDS`] later
/// (values added by `DynamoJobs::finish`). The shard is written again because jobs created
/// before the index existed have none.
///
/// [`OUTBOX_GRACE_SECONDS`]: crate::resources::OUTBOX_GRACE_SECONDS
const OUTBOX: &str =
    "pending_shard = :shard, pending_due = :outbox REMOVE lease_token, lease_until";

fn pending_shard(id: Ulid) -> String {
    format!(
        "PENDING#{}",
        id.random() % u128::from(crate::resources::PENDING_SHARDS)
    )
}

/// The string attribute `name` of `item`, if it is one.
fn text_attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The partition key of everything an owner has: `OWNER#{owner}`.
pub(super) fn pk(owner: &OwnerId) -> String {
    format!("OWNER#{owner}")
}

/// The sort key of a job item: `JOB#{ulid}`.
pub(super) fn job_sk(id: Ulid) -> String {
    format!("JOB#{id}")
}

fn idem_sk(key: &str) -> String {
    format!("IDEM#{key}")
}

fn rfc3339(t: OffsetDateTime) -> AttributeValue {
    s(t.format(&Rfc3339)
        .expect("UTC timestamps always format as RFC 3339"))
}

fn decode_job(item: Item) -> Result<Job> {
    serde_dynamo::from_item(item).map_err(|e| Error::Corrupt {
        what: "job record",
        message: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(what: &'static str, v: &T) -> Result<AttributeValue> {
    serde_dynamo::to_attribute_value(v).map_err(|e| Error::Corrupt {
        what,
        message: e.to_string(),
    })
}

use super::dynamodb_unavailable as unavailable;

impl DynamoJobs {
    /// Wraps a client for `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            quotas: Quotas::default(),
        }
    }

    /// The same table with these per-owner limits.
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// The write that gives an owner's in-flight slot back; it rides in the same transaction as
    /// whatever ends the job, so the count can never drift from the jobs. It only decrements a
    /// positive count: a counter that somehow reached 0 with a job still open (written before
    /// the counter existed, or repaired by hand) stays at 0 instead of going negative.
    fn release_slot(&self, owner: &OwnerId) -> Result<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(pk(owner)))
            .key(SK, s(IN_FLIGHT_SK))
            .update_expression("SET #count = #count - :one")
            .condition_expression("#count > :zero")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":zero", n(0))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Runs a terminal transition together with the owner's in-flight decrement, then reads the
    /// job back. `Ok(None)` when the transition's condition failed. When only the decrement's
    /// condition failed (the counter is already 0), the transition runs alone.
    ///
    /// Every transition ends with [`OUTBOX`]; this adds its values, so the ended job stays in
    /// the `pending` index as its notification outbox entry.
    async fn finish(
        &self,
        owner: &OwnerId,
        id: Ulid,
        mut transition: Update,
    ) -> Result<Option<Job>> {
        let outbox_due =
            OffsetDateTime::now_utc().unix_timestamp() + crate::resources::OUTBOX_GRACE_SECONDS;
        let values = transition
            .expression_attribute_values
            .get_or_insert_with(HashMap::new);
        values.insert(":shard".into(), s(pending_shard(id)));
        values.insert(":outbox".into(), n(outbox_due));
        let tx = self
            .client
            .transact_write_items()
            .transact_items(
                TransactWriteItem::builder()
                    .update(transition.clone())
                    .build(),
            )
            .transact_items(self.release_slot(owner)?);
        let Err(e) = transact(tx).await else {
            return self.get(owner, id).await;
        };
        let e = e.into_service_error();
        let failed = failed_conditions(&e);
        if failed.contains(&0) {
            return Ok(None);
        }
        if failed.contains(&1) {
            tracing::warn!(%owner, job_id = %id, "in-flight counter already 0 at a job's end; left at 0");
            return conditional(self.update_alone(transition).await);
        }
        Err(unavailable(e))
    }

    /// `transition` as a single `UpdateItem`, returning the new item.
    async fn update_alone(
        &self,
        transition: Update,
    ) -> std::result::Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    > {
        self.client
            .update_item()
            .table_name(transition.table_name)
            .set_key(Some(transition.key))
            .update_expression(transition.update_expression)
            .set_condition_expression(transition.condition_expression)
            .set_expression_attribute_names(transition.expression_attribute_names)
            .set_expression_attribute_values(transition.expression_attribute_values)
            .return_values(ReturnValue::AllNew)
            .send()
            .await
    }

    fn job_item(&self, job: &Job) -> Result<Item> {
        let mut item: Item = serde_dynamo::to_item(job).map_err(|e| Error::Corrupt {
            what: "job record",
            message: e.to_string(),
        })?;
        item.insert(PK.into(), s(pk(&job.owner)));
        item.insert(SK.into(), s(job_sk(job.id)));
        if !job.status.is_terminal() {
            item.insert(PENDING_SHARD.into(), s(pending_shard(job.id)));
            item.insert(
                PENDING_DUE.into(),
                n(job.created_at.unix_timestamp() + crate::resources::QUEUED_GRACE_SECONDS),
            );
        }
        Ok(item)
    }

    fn key(owner: &OwnerId, sk: String) -> Item {
        HashMap::from([(PK.to_owned(), s(pk(owner))), (SK.to_owned(), s(sk))])
    }

    async fn idempotency_record(
        &self,
        owner: &OwnerId,
        key: &str,
    ) -> Result<Option<(String, Ulid)>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, idem_sk(key))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let hash = text_attr(&item, "request_hash").map(str::to_owned);
        let job_id = text_attr(&item, "job_id").and_then(|v| Ulid::from_string(v).ok());
        match (hash, job_id) {
            (Some(h), Some(id)) => Ok(Some((h, id))),
            _ => Err(Error::Corrupt {
                what: "idempotency record",
                message: "missing request_hash or job_id".into(),
            }),
        }
    }

    /// The refusal when the owner's in-flight counter stands at `MAX_JOBS_IN_FLIGHT`.
    fn in_flight_refusal(&self) -> Error {
        Error::QuotaExceeded {
            code: "too_many_jobs_in_flight",
            message: format!(
                "{} jobs are already queued or processing for this owner (the limit); retry when some finish",
                self.quotas.max_in_flight
            ),
            retry_after_seconds: 10,
        }
    }

    /// The refusal when this minute's counter stands at `MAX_JOBS_PER_MINUTE`; `minute_ends` is
    /// the Unix second the minute ends (the `Retry-After`, 1–60 s).
    fn rate_refusal(&self, minute_ends: i64) -> Error {
        let wait = (minute_ends - OffsetDateTime::now_utc().unix_timestamp()).clamp(1, 60);
        Error::QuotaExceeded {
            code: "rate_limited",
            message: format!(
                "at most {} jobs a minute may be created for this owner",
                self.quotas.max_per_minute
            ),
            retry_after_seconds: wait as u64,
        }
    }

    /// Resolves an idempotency key already stored: the same request gets its job back.
    async fn replay(&self, owner: &OwnerId, idem: &Idempotency) -> Result<Option<Job>> {
        let Some((hash, id)) = self.idempotency_record(owner, &idem.key).await? else {
            return Ok(None);
        };
        if hash != idem.request_hash {
            return Err(Error::IdempotencyMismatch);
        }
        self.get(owner, id)
            .await?
            .map(Some)
            .ok_or_else(|| Error::Conflict("the job of this Idempotency-Key is gone".into()))
    }
}

#[async_trait]
impl JobStore for DynamoJobs {
    async fn create(&self, job: &Job, idempotency: Option<&Idempotency>) -> Result<Created> {
        let job_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.job_item(job)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(unavailable)?;
        let minute_ends = minute_ends(job.created_at);
        let mut tx = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(job_put).build())
            .transact_items(
                TransactWriteItem::builder()
                    .update(take_slot(
                        &self.table,
                        &job.owner,
                        IN_FLIGHT_SK.into(),
                        self.quotas.max_in_flight,
                        None,
                    )?)
                    .build(),
            )
            .transact_items(
                TransactWriteItem::builder()
                    .update(take_slot(
                        &self.table,
                        &job.owner,
                        minute_sk(job.created_at),
                        self.quotas.max_per_minute,
                        Some(minute_ends + 120),
                    )?)
                    .build(),
            );
        if let Some(idem) = idempotency {
            let mut idem_item = Self::key(&job.owner, idem_sk(&idem.key));
            idem_item.insert("request_hash".into(), s(&idem.request_hash));
            idem_item.insert("job_id".into(), s(job.id.to_string()));
            idem_item.insert(
                crate::resources::TABLE_TTL_ATTRIBUTE.into(),
                n((job.created_at + IDEMPOTENCY_TTL).unix_timestamp()),
            );
            let idem_put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(idem_item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK)
                .build()
                .map_err(unavailable)?;
            tx = tx.transact_items(TransactWriteItem::builder().put(idem_put).build());
        }
        let Err(e) = transact(tx).await else {
            return Ok(Created::New(job.clone()));
        };
        let e = e.into_service_error();
        let failed = failed_conditions(&e);
        if failed.contains(&3)
            && let Some(idem) = idempotency
        {
            // Lost a race with the same key: resolve it like any replay — unless the job the key
            // points at is this very one, i.e. our own write whose response was lost and which
            // the SDK sent again: that job is new and still has to be enqueued.
            return match self.replay(&job.owner, idem).await? {
                Some(existing) if existing.id == job.id => Ok(Created::New(existing)),
                Some(existing) => Ok(Created::Replayed(existing)),
                None => Err(Error::Conflict(
                    "concurrent request with the same key".into(),
                )),
            };
        }
        if failed.contains(&0) {
            // Job ids are fresh ULIDs: an item with this id is our own earlier write.
            if let Some(existing) = self.get(&job.owner, job.id).await? {
                return Ok(Created::New(existing));
            }
            return Err(Error::Conflict(format!("job {} already exists", job.id)));
        }
        if failed.contains(&1) {
            return Err(self.in_flight_refusal());
        }
        if failed.contains(&2) {
            return Err(self.rate_refusal(minute_ends));
        }
        Err(unavailable(e))
    }

    async fn find_idempotent(&self, owner: &OwnerId, idem: &Idempotency) -> Result<Option<Job>> {
        self.replay(owner, idem).await
    }

    async fn created_in_minute(&self, owner: &OwnerId, at: OffsetDateTime) -> Result<u32> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, minute_sk(at))))
            .projection_expression("#count")
            .expression_attribute_names("#count", "count")
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item.as_ref().map_or(0, counter_value))
    }

    async fn check_quota(&self, owner: &OwnerId, at: OffsetDateTime) -> Result<()> {
        let minute = minute_sk(at);
        let keys = KeysAndAttributes::builder()
            .keys(Self::key(owner, IN_FLIGHT_SK.into()))
            .keys(Self::key(owner, minute.clone()))
            .projection_expression("#sk, #count")
            .expression_attribute_names("#sk", SK)
            .expression_attribute_names("#count", "count")
            .consistent_read(true)
            .build()
            .map_err(unavailable)?;
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(unavailable)?;
        // An item DynamoDB left unprocessed counts as absent: `create` still checks it.
        let (mut in_flight, mut this_minute) = (0u32, 0u32);
        for item in out
            .responses
            .unwrap_or_default()
            .remove(&self.table)
            .unwrap_or_default()
        {
            let count = counter_value(&item);
            match item.get(SK).and_then(|v| v.as_s().ok()) {
                Some(sk) if sk == IN_FLIGHT_SK => in_flight = count,
                Some(sk) if *sk == minute => this_minute = count,
                _ => {}
            }
        }
        // In `create`'s order: the in-flight refusal first.
        if in_flight >= self.quotas.max_in_flight {
            return Err(self.in_flight_refusal());
        }
        if this_minute >= self.quotas.max_per_minute {
            return Err(self.rate_refusal(minute_ends(at)));
        }
        Ok(())
    }

    async fn get(&self, owner: &OwnerId, id: Ulid) -> Result<Option<Job>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item.map(decode_job).transpose()
    }

    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<JobPage> {
        let limit = query.limit.clamp(1, 100) as usize;
        let mut start = match &query.cursor {
            Some(c) => Some(Self::key(owner, job_sk(crate::core::decode_job_cursor(c)?))),
            None => None,
        };
        let mut jobs = Vec::with_capacity(limit);
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(pk(owner)))
                .expression_attribute_values(":prefix", s("JOB#"))
                .scan_index_forward(false)
                .limit((limit - jobs.len()) as i32)
                .set_exclusive_start_key(start.take());
            if let Some(status) = query.status {
                req = req
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(status.as_str()));
            }
            let out = req.send().await.map_err(unavailable)?;
            for item in out.items.unwrap_or_default() {
                jobs.push(decode_job(item)?);
            }
            start = out.last_evaluated_key;
            if jobs.len() >= limit || start.is_none() {
                break;
            }
        }
        // A full page may be followed by more; the next page starts after its last job.
        let next_cursor = match start {
            Some(_) => jobs.last().map(|j| crate::core::encode_job_cursor(j.id)),
            None => None,
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn discard(
        &self,
        owner: &OwnerId,
        id: Ulid,
        idempotency_key: Option<&str>,
    ) -> Result<()> {
        let mut req = self.client.transact_write_items().transact_items(
            TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(Self::key(owner, job_sk(id))))
                        .build()
                        .map_err(unavailable)?,
                )
                .build(),
        );
        req = req.transact_items(self.release_slot(owner)?);
        if let Some(key) = idempotency_key {
            req = req.transact_items(
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(Self::key(owner, idem_sk(key))))
                            .build()
                            .map_err(unavailable)?,
                    )
                    .build(),
            );
        }
        transact(req).await.map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl JobTransitions for DynamoJobs {
    async fn claim(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> Result<Claim> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression(
                "SET #status = :processing, lease_token = :token, lease_until = :until, \
                 pending_due = :until, \
                 attempts = if_not_exists(attempts, :zero) + :one, \
                 started_at = if_not_exists(started_at, :now), updated_at = :now",
            )
            .condition_expression(
                "attribute_exists(#pk) AND (#status = :queued OR \
                 (#status = :processing AND (attribute_not_exists(lease_until) OR lease_until <= :now_secs)))",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
            .expression_attribute_values(":token", s(&lease.token))
            .expression_attribute_values(":until", n(lease.until))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", rfc3339(now))
            .expression_attribute_values(":now_secs", n(now.unix_timestamp()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(out) => Ok(Claim::Claimed(decode_job(out.attributes.unwrap_or_default())?)),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                    match c.item {
                        None => Ok(Claim::Missing),
                        Some(item) => {
                            // Our own claim, committed but its response lost and sent again by
                            // the SDK: the lease it found is the one we asked for.
                            let ours =
                                text_attr(&item, "lease_token") == Some(lease.token.as_str());
                            let job = decode_job(item)?;
                            Ok(if ours && job.status == JobStatus::Processing {
                                Claim::Claimed(job)
                            } else if job.status.is_terminal() {
                                Claim::Terminal(job)
                            } else {
                                Claim::Leased(job)
                            })
                        }
                    }
                }
                other => Err(unavailable(other)),
            },
        }
    }

    async fn complete(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        result: &JobResult,
        now: OffsetDateTime,
    ) -> Result<Job> {
        let transition = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression(format!(
                "SET #status = :succeeded, #result = :result, finished_at = :now, updated_at = :now, \
                 {OUTBOX}"
            ))
            .condition_expression("#status = :processing AND lease_token = :token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#result", "result")
            .expression_attribute_values(":succeeded", s(JobStatus::Succeeded.as_str()))
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":result", encode("job result", result)?)
            .expression_attribute_values(":token", s(lease_token))
            .expression_attribute_values(":now", rfc3339(now))
            .build()
            .map_err(unavailable)?;
        self.finish(owner, id, transition)
            .await?
            .ok_or_else(|| Error::Conflict(format!("job {id} is no longer held by this lease")))
    }

    async fn renew(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        seen: i64,
        until: i64,
    ) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression("SET lease_until = :until, #due = :until")
            .condition_expression(
                "#status = :processing AND lease_token = :token AND #due = :seen AND \
                 attribute_not_exists(provider_request_id)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#due", PENDING_DUE)
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":token", s(lease_token))
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(":until", n(until))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        // Our own renewal, sent again: still our lease, with exactly the due time we asked for.
        applied_or_ours(out, |item| {
            text_attr(item, "status") == Some(JobStatus::Processing.as_str())
                && text_attr(item, "lease_token") == Some(lease_token)
                && due_is(item, until)
        })
    }

    async fn release(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        refund_attempt: bool,
        due: i64,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression(
                "SET #status = :queued, attempts = attempts - :refund, pending_due = :due, \
                 updated_at = :now REMOVE lease_token, lease_until",
            )
            .condition_expression(
                "#status = :processing AND lease_token = :token AND attempts >= :one",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":token", s(lease_token))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":refund", n(i64::from(refund_attempt)))
            .expression_attribute_values(":due", n(due))
            .expression_attribute_values(":now", rfc3339(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        // Our own release, sent again: queued, no lease, and exactly the due time we asked for
        // (a claim or a sweeper since would have moved it).
        applied_or_ours(out, |item| {
            text_attr(item, "status") == Some(JobStatus::Queued.as_str())
                && !item.contains_key("lease_token")
                && due_is(item, due)
        })
    }

    async fn fail(
        &self,
        owner: &OwnerId,
        id: Ulid,
        error: &JobError,
        now: OffsetDateTime,
    ) -> Result<Option<Job>> {
        let transition = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression(format!(
                "SET #status = :failed, #error = :error, finished_at = :now, updated_at = :now, \
                 {OUTBOX}"
            ))
            .condition_expression("#status IN (:queued, :processing)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#error", "error")
            .expression_attribute_values(":failed", s(JobStatus::Failed.as_str()))
            .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":error", encode("job error", error)?)
            .expression_attribute_values(":now", rfc3339(now))
            .build()
            .map_err(unavailable)?;
        self.finish(owner, id, transition).await
    }
}

#[async_trait]
impl UploadStore for DynamoJobs {
    async fn put_upload(&self, owner: &OwnerId, upload: &Upload) -> Result<()> {
        let mut item: Item = serde_dynamo::to_item(upload).map_err(|e| Error::Corrupt {
            what: "upload record",
            message: e.to_string(),
        })?;
        item.extend(Self::key(owner, format!("UPLOAD#{}", upload.id)));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get_upload(&self, owner: &OwnerId, id: &str) -> Result<Option<Upload>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, format!("UPLOAD#{id}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item
            .map(|item| {
                serde_dynamo::from_item(item).map_err(|e| Error::Corrupt {
                    what: "upload record",
                    message: e.to_string(),
                })
            })
            .transpose()
    }
}

fn capability_key(id: &str) -> Item {
    let key = format!("CAPABILITY#{id}");
    HashMap::from([(PK.to_owned(), s(&key)), (SK.to_owned(), s(key))])
}

#[async_trait]
impl CapabilityStore for DynamoJobs {
    async fn put_capability(&self, capability: &Capability) -> Result<()> {
        let mut item = capability_key(&capability.id);
        item.insert("owner".into(), s(capability.owner.as_str()));
        item.insert("job_id".into(), s(capability.job_id.to_string()));
        item.insert(
            crate::resources::TABLE_TTL_ATTRIBUTE.into(),
            n(capability.expires_at),
        );
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_conditional_check_failed_exception() {
                    Err(Error::Conflict(format!(
                        "capability {} already exists",
                        capability.id
                    )))
                } else {
                    Err(unavailable(e))
                }
            }
        }
    }

    async fn find_capability(&self, id: &str, now: OffsetDateTime) -> Result<Option<Capability>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(capability_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let corrupt = |message: &str| Error::Corrupt {
            what: "capability record",
            message: message.to_owned(),
        };
        let owner = text_attr(&item, "owner")
            .and_then(|v| OwnerId::parse(v).ok())
            .ok_or_else(|| corrupt("missing or invalid owner"))?;
        let job_id = text_attr(&item, "job_id")
            .and_then(|v| Ulid::from_string(v).ok())
            .ok_or_else(|| corrupt("missing or invalid job_id"))?;
        let expires_at = item
            .get(crate::resources::TABLE_TTL_ATTRIBUTE)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| corrupt("missing or invalid expires_at"))?;
        // TTL deletion lags by up to a few days: an expired handle is already void.
        if expires_at <= now.unix_timestamp() {
            return Ok(None);
        }
        Ok(Some(Capability {
            id: id.to_owned(),
            owner,
            job_id,
            expires_at,
        }))
    }
}

/// A conditional update that lost is `None`; anything else is an error.
fn conditional(
    out: std::result::Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
        >,
    >,
) -> Result<Option<Job>> {
    match out {
        Ok(out) => Ok(Some(decode_job(out.attributes.unwrap_or_default())?)),
        Err(e) => {
            let e = e.into_service_error();
            if e.is_conditional_check_failed_exception() {
                Ok(None)
            } else {
                Err(unavailable(e))
            }
        }
    }
}

/// Whether a conditional update was applied: `false` when its condition failed; anything else
/// is an error.
fn applied(
    out: std::result::Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    >,
) -> Result<bool> {
    applied_or_ours(out, |_| false)
}

/// [`applied`] for a write whose failed condition may be our own write: committed, its answer
/// lost, and sent again by the SDK. `ours` reads the item the condition found (the request's
/// `ReturnValuesOnConditionCheckFailure::AllOld`) and says whether it is what we wrote.
fn applied_or_ours(
    out: std::result::Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    >,
    ours: impl FnOnce(&Item) -> bool,
) -> Result<bool> {
    match out {
        Ok(_) => Ok(true),
        Err(e) => match e.into_service_error() {
            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                Ok(c.item.as_ref().is_some_and(ours))
            }
            other => Err(unavailable(other)),
        },
    }
}

/// Whether the item's `pending` due time is `due` (Unix seconds).
fn due_is(item: &Item, due: i64) -> bool {
    item.get(PENDING_DUE).and_then(|v| v.as_n().ok()) == Some(&due.to_string())
}

#[async_trait]
impl ProviderTransitions for DynamoJobs {
    async fn record_submission(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        submission: &ProviderSubmission,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression(
                "SET provider = :provider, provider_request_id = :rid, \
                 provider_deadline = :deadline, provider_links = :links, updated_at = :now, \
                 pending_due = :due",
            )
            // The missing request id is the guard that keeps a redelivered message from
            // submitting (and being billed) twice.
            .condition_expression(
                "#status = :processing AND lease_token = :token AND \
                 attribute_not_exists(provider_request_id)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":token", s(lease_token))
            .expression_attribute_values(":provider", s(&submission.provider))
            .expression_attribute_values(":rid", s(&submission.request_id))
            .expression_attribute_values(":deadline", n(submission.deadline))
            .expression_attribute_values(":due", n(submission.first_poll_due(now)))
            .expression_attribute_values(
                ":links",
                match &submission.links {
                    Some(links) => encode("provider links", links)?,
                    None => AttributeValue::Null(true),
                },
            )
            .expression_attribute_values(":now", rfc3339(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        // Our own record, sent again, reads back our request id under our lease: it is
        // recorded, not someone else's.
        applied_or_ours(out, |item| {
            text_attr(item, "provider_request_id") == Some(submission.request_id.as_str())
                && text_attr(item, "lease_token") == Some(lease_token)
        })
    }

    async fn record_intent(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
    ) -> Result<SubmitIntent> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression("SET provider_intent = :token")
            .condition_expression(
                "#status = :processing AND lease_token = :token AND \
                 attribute_not_exists(provider_request_id) AND attribute_not_exists(provider_intent)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":token", s(lease_token))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(_) => Ok(SubmitIntent::Recorded),
            Err(e) => match e.into_service_error() {
                aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                    let item = c.item.unwrap_or_default();
                    let text = |name: &str| text_attr(&item, name);
                    Ok(match (text("provider_intent"), text("provider_request_id")) {
                        // Our own intent, its response lost and the write sent again.
                        (Some(token), None) if token == lease_token && text("lease_token") == Some(lease_token) => SubmitIntent::Recorded,
                        (Some(_), None) if text("status") == Some(JobStatus::Processing.as_str()) => SubmitIntent::EarlierAttempt,
                        _ => SubmitIntent::Refused,
                    })
                }
                other => Err(unavailable(other)),
            },
        }
    }

    async fn expect_poll(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        seen: Option<i64>,
        due: i64,
    ) -> Result<bool> {
        let waiting = "#status = :processing AND provider_request_id = :rid";
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression("SET #due = :due")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#due", PENDING_DUE)
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":rid", s(request_id))
            .expression_attribute_values(":due", n(due))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        update = match seen {
            Some(seen) => update
                .condition_expression(format!("{waiting} AND #due = :seen"))
                .expression_attribute_values(":seen", n(seen)),
            None => update.condition_expression(waiting),
        };
        // Our own write, sent again, reads back our due time on the job still waiting on the
        // request.
        applied_or_ours(update.send().await, |item| {
            text_attr(item, "status") == Some(JobStatus::Processing.as_str())
                && text_attr(item, "provider_request_id") == Some(request_id)
                && due_is(item, due)
        })
    }

    async fn clear_intent(&self, owner: &OwnerId, id: Ulid, lease_token: &str) -> Result<()> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression("REMOVE provider_intent")
            .condition_expression(
                "provider_intent = :token AND attribute_not_exists(provider_request_id)",
            )
            .expression_attribute_values(":token", s(lease_token))
            .send()
            .await;
        // Not applied: the intent is not ours (any more), so there is nothing to withdraw.
        applied(out).map(|_| ())
    }

    async fn complete_provider(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        result: &JobResult,
        warnings: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<Job>> {
        let set =
            "SET #status = :succeeded, #result = :result, finished_at = :now, updated_at = :now";
        let mut transition = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .condition_expression("#status = :processing AND provider_request_id = :rid")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#result", "result")
            .expression_attribute_values(":succeeded", s(JobStatus::Succeeded.as_str()))
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":rid", s(request_id))
            .expression_attribute_values(":result", encode("job result", result)?)
            .expression_attribute_values(":now", rfc3339(now));
        transition = if warnings.is_empty() {
            transition.update_expression(format!("{set}, {OUTBOX}"))
        } else {
            transition
                .update_expression(format!("{set}, warnings = :warnings, {OUTBOX}"))
                .expression_attribute_values(":warnings", encode("warnings", &warnings)?)
        };
        self.finish(owner, id, transition.build().map_err(unavailable)?)
            .await
    }

    async fn cancel(&self, owner: &OwnerId, id: Ulid, now: OffsetDateTime) -> Result<Option<Job>> {
        let transition = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression(format!(
                "SET #status = :canceled, finished_at = :now, updated_at = :now, {OUTBOX}"
            ))
            .condition_expression("#status IN (:queued, :processing)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":canceled", s(JobStatus::Canceled.as_str()))
            .expression_attribute_values(":queued", s(JobStatus::Queued.as_str()))
            .expression_attribute_values(":processing", s(JobStatus::Processing.as_str()))
            .expression_attribute_values(":now", rfc3339(now))
            .build()
            .map_err(unavailable)?;
        self.finish(owner, id, transition).await
    }

    async fn mark_once(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        mark: ProviderMark,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let attribute = match mark {
            ProviderMark::WebhookReceived => "provider_webhook_at",
            ProviderMark::CancelSent => "provider_cancel_sent_at",
        };
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression("SET #mark = :now")
            .condition_expression("provider_request_id = :rid AND attribute_not_exists(#mark)")
            .expression_attribute_names("#mark", attribute)
            .expression_attribute_values(":rid", s(request_id))
            .expression_attribute_values(":now", rfc3339(now))
            .send()
            .await;
        applied(out)
    }
}

#[async_trait]
impl PendingJobs for DynamoJobs {
    async fn due(&self, now: i64, limit: usize) -> Result<Vec<PendingJob>> {
        let per_shard = limit
            .div_ceil(crate::resources::PENDING_SHARDS as usize)
            .max(1);
        let mut due = Vec::new();
        for shard in 0..crate::resources::PENDING_SHARDS {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(crate::resources::PENDING_INDEX)
                .key_condition_expression("#shard = :shard AND #due <= :now")
                .expression_attribute_names("#shard", PENDING_SHARD)
                .expression_attribute_names("#due", PENDING_DUE)
                .expression_attribute_values(":shard", s(format!("PENDING#{shard}")))
                .expression_attribute_values(":now", n(now))
                .limit(i32::try_from(per_shard).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items.unwrap_or_default() {
                due.push(decode_pending(&item)?);
            }
        }
        due.truncate(limit);
        Ok(due)
    }

    async fn postpone(&self, owner: &OwnerId, id: Ulid, seen: i64, until: i64) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(owner, job_sk(id))))
            .update_expression("SET #due = :until")
            .condition_expression("#due = :seen")
            .expression_attribute_names("#due", PENDING_DUE)
            .expression_attribute_values(":seen", n(seen))
            .expression_attribute_values(":until", n(until))
            .send()
            .await;
        applied(out)
    }
}

/// A `pending` index entry (keys plus the projected `status`, `attempts`,
/// `provider_request_id`).
fn decode_pending(item: &Item) -> Result<PendingJob> {
    let corrupt = |message: &str| Error::Corrupt {
        what: "pending index entry",
        message: message.to_owned(),
    };
    let text = |name: &str| text_attr(item, name);
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let owner = text(PK)
        .and_then(|v| v.strip_prefix("OWNER#"))
        .and_then(|v| OwnerId::parse(v).ok())
        .ok_or_else(|| corrupt("bad pk"))?;
    let id = text(SK)
        .and_then(|v| v.strip_prefix("JOB#"))
        .and_then(|v| Ulid::from_string(v).ok())
        .ok_or_else(|| corrupt("bad sk"))?;
    let status = text("status")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt("bad status"))?;
    Ok(PendingJob {
        owner,
        id,
        status,
        attempts: number("attempts")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        provider_request_id: text("provider_request_id").map(str::to_owned),
        due: number(PENDING_DUE).ok_or_else(|| corrupt("bad pending_due"))?,
    })
}

#[async_trait]
impl Probe for DynamoJobs {
    fn name(&self) -> &'static str {
        "table"
    }

    async fn ping(&self) -> Result<()> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
