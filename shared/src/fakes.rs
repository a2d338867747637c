//! In-memory implementations of the ports (feature `fakes`), for fast in-process tests of the
//! logic written against them: no emulator, no network, no clock of their own.
//!
//! Each fake keeps the contract of its port as the production adapter implements it, so a test
//! that passes here exercises the same state machine it would against DynamoDB, SQS and S3:
//!
//! - [`InMemoryJobs`]: [`JobStore`], [`JobTransitions`] and [`ProviderTransitions`] with the
//!   conditional writes of the DynamoDB adapter, `adapters::DynamoJobs` (which states a claim takes, who may
//!   complete, terminal states stay terminal, once-only marks);
//! - [`InMemoryQueue`]: [`JobQueue`], recording each message with its delay;
//! - [`InMemoryBlobs`]: [`BlobStore`] over a map, with `memory://` presigned URLs;
//! - [`ScriptedSegmenter`]: [`Segmenter`] answering from a script and counting calls;
//! - [`InMemoryJobs`] also holds the table's other items, as `adapters::DynamoJobs` and
//!   `adapters::DynamoNotifications` do: [`UploadStore`], [`CapabilityStore`] and
//!   [`NotificationStore`];
//! - [`InMemoryApiKeys`]: [`ApiKeyStore`] keyed by the key's SHA-256, with
//!   [`InMemoryApiKeys::create_key`] handing out a working plaintext key;
//! - [`FakeProbe`]: a [`Probe`] that is healthy or not as a test says.
//!
//! State sits behind a [`std::sync::Mutex`] that is never held across an `.await`, so the
//! fakes work on any runtime and each call is atomic, like one conditional write.
#![warn(missing_docs)]

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use time::OffsetDateTime;
use ulid::Ulid;

use crate::auth::{ApiKeyRecord, Scope};
use crate::core::{
    ApiKeyStore, BlobStore, Capability, CapabilityStore, Claim, Created, Cutout, Idempotency,
    JobPage, JobQueue, JobStore, JobTransitions, Lease, ListQuery, ObjectInfo, ObjectSummary,
    PendingJob, PendingJobs, Probe, ProviderMark, ProviderSubmission, ProviderTransitions,
    Segmenter, SegmenterError, SubmitIntent, Upload, UploadStore,
};
use crate::error::{Error, Result};
use crate::job::{Job, JobError, JobMessage, JobResult, JobStatus, NotificationAttempt, OwnerId};
use crate::notification::{NotificationStore, OwnerWebhook, WebhookSecret};
use crate::operation::remove_background::RemoveBackgroundParams;

/// Locks `m`, ignoring poisoning: a test that panicked while holding the lock must not turn
/// every later assertion on the same fake into a second, misleading panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One job record with the attributes DynamoDB keeps beside the [`Job`] fields.
#[derive(Debug, Clone)]
struct Record {
    job: Job,
    /// `lease_token`/`lease_until`: present only while a processor holds the job.
    lease: Option<Lease>,
    /// `provider_webhook_at` ([`ProviderMark::WebhookReceived`]).
    webhook_received_at: Option<OffsetDateTime>,
    /// `provider_cancel_sent_at` ([`ProviderMark::CancelSent`]).
    cancel_sent_at: Option<OffsetDateTime>,
    /// `pending_due`: the job's place in the sparse `pending` index while it is not terminal.
    pending_due: Option<i64>,
    /// `provider_intent`: the lease token of the attempt about to submit to a provider.
    provider_intent: Option<String>,
    /// `notify_claim_{channel}`: Unix seconds until which one handler may send, `i64::MAX`
    /// once the channel settled.
    delivery_claims: HashMap<String, i64>,
}

impl Record {
    /// The terminal write shared by complete, fail, cancel and complete_provider: like the
    /// adapter's `SET finished_at = :now, updated_at = :now, pending_due = :outbox REMOVE
    /// lease_token, lease_until` (the job stays in the index as its outbox entry).
    fn finish(&mut self, status: JobStatus, now: OffsetDateTime) {
        self.job.status = status;
        self.job.finished_at = Some(now);
        self.job.updated_at = now;
        self.lease = None;
        self.pending_due = Some(now.unix_timestamp() + crate::resources::OUTBOX_GRACE_SECONDS);
    }
}

/// An idempotency record (`IDEM#{key}`): which request first used the key and its job.
#[derive(Debug, Clone)]
struct IdempotencyRecord {
    request_hash: String,
    job_id: Ulid,
}

#[derive(Debug, Default)]
struct JobsState {
    jobs: HashMap<(OwnerId, Ulid), Record>,
    idempotency: HashMap<(OwnerId, String), IdempotencyRecord>,
    /// `UPLOAD#{id}` items, by owner and upload id.
    uploads: HashMap<(OwnerId, String), Upload>,
    /// `CAPABILITY#{id}` items.
    capabilities: HashMap<String, Capability>,
    /// `OWNER#{owner}` / `WEBHOOK` items.
    webhooks: HashMap<OwnerId, OwnerWebhook>,
}

impl JobsState {
    /// The adapter's `replay`: the same request gets its job back, another request is refused,
    /// and a key whose job is gone is a conflict.
    fn replay(&self, owner: &OwnerId, idem: &Idempotency) -> Result<Option<Job>> {
        let Some(record) = self.idempotency.get(&(owner.clone(), idem.key.clone())) else {
            return Ok(None);
        };
        if record.request_hash != idem.request_hash {
            return Err(Error::IdempotencyMismatch);
        }
        self.jobs
            .get(&(owner.clone(), record.job_id))
            .map(|r| Some(r.job.clone()))
            .ok_or_else(|| Error::Conflict("the job of this Idempotency-Key is gone".into()))
    }
}

/// The jobs table in memory: [`JobStore`], [`JobTransitions`] and [`ProviderTransitions`] over
/// one map of job records keyed by `(owner, id)`, plus the idempotency records.
///
/// Every transition checks and writes under one lock, with the condition of the
/// `adapters::DynamoJobs` write it stands for:
///
/// | call | condition | on failure |
/// |---|---|---|
/// | `claim` | `queued`, or `processing` with no lease or `lease_until <= now` | `Missing`, `Terminal` or `Leased` |
/// | `complete` | `processing` and the lease token matches | [`Error::Conflict`] (also for a missing job) |
/// | `fail`, `cancel` | `queued` or `processing` | `None` |
/// | `record_intent` | `processing`, token matches, no request id, no intent (or this lease's) | `EarlierAttempt` when another attempt's intent is there, else `Refused` |
/// | `clear_intent` | the intent is this lease's and no request id is stored | nothing |
/// | `record_submission` | `processing`, token matches, no request id yet | `false` |
/// | `complete_provider` | `processing` and the stored request id matches | `None` |
/// | `mark_once` | the stored request id matches and the mark is unset (any status) | `false` |
///
/// A claim sets the lease, adds one to `attempts`, sets `started_at` on the first claim and
/// `updated_at` always; every terminal write sets `finished_at` and `updated_at` and drops the
/// lease. `complete_provider` replaces `warnings` only when it is given some. `mark_once`
/// changes nothing but the mark (not even `updated_at`), as in the adapter.
///
/// Not modelled: the per-owner quotas (in-flight and per-minute counters are a setting of
/// `DynamoJobs`, not part of the port), and the expiry of records (DynamoDB's TTL; the adapter
/// does not check an idempotency record's age either).
#[derive(Debug, Default)]
pub struct InMemoryJobs {
    state: Mutex<JobsState>,
}

impl InMemoryJobs {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lease currently held on the job, if any (the adapter's `lease_token`/`lease_until`,
    /// which are not [`Job`] fields).
    pub fn lease(&self, owner: &OwnerId, id: Ulid) -> Option<Lease> {
        lock(&self.state)
            .jobs
            .get(&(owner.clone(), id))
            .and_then(|r| r.lease.clone())
    }

    /// Every stored job, in no particular order (for assertions across owners).
    pub fn jobs(&self) -> Vec<Job> {
        lock(&self.state)
            .jobs
            .values()
            .map(|r| r.job.clone())
            .collect()
    }
}

#[async_trait]
impl JobStore for InMemoryJobs {
    /// Writes the job as given, with its idempotency record, both or neither. A key already
    /// stored resolves like a replay (same request: [`Created::Replayed`]; another:
    /// [`Error::IdempotencyMismatch`]); an id already stored is an [`Error::Conflict`].
    async fn create(&self, job: &Job, idempotency: Option<&Idempotency>) -> Result<Created> {
        let mut state = lock(&self.state);
        // The adapter's transaction reports the idempotency record's failed condition first.
        if let Some(idem) = idempotency
            && state
                .idempotency
                .contains_key(&(job.owner.clone(), idem.key.clone()))
        {
            return match state.replay(&job.owner, idem)? {
                Some(existing) => Ok(Created::Replayed(existing)),
                None => Err(Error::Conflict(
                    "concurrent request with the same key".into(),
                )),
            };
        }
        let key = (job.owner.clone(), job.id);
        if state.jobs.contains_key(&key) {
            return Err(Error::Conflict(format!("job {} already exists", job.id)));
        }
        state.jobs.insert(
            key,
            Record {
                job: job.clone(),
                lease: None,
                webhook_received_at: None,
                cancel_sent_at: None,
                provider_intent: None,
                delivery_claims: HashMap::new(),
                pending_due: (!job.status.is_terminal()).then(|| {
                    job.created_at.unix_timestamp() + crate::resources::QUEUED_GRACE_SECONDS
                }),
            },
        );
        if let Some(idem) = idempotency {
            state.idempotency.insert(
                (job.owner.clone(), idem.key.clone()),
                IdempotencyRecord {
                    request_hash: idem.request_hash.clone(),
                    job_id: job.id,
                },
            );
        }
        Ok(Created::New(job.clone()))
    }

    async fn find_idempotent(&self, owner: &OwnerId, idem: &Idempotency) -> Result<Option<Job>> {
        lock(&self.state).replay(owner, idem)
    }

    /// Counts the owner's stored jobs created in that minute (the fake keeps no counters).
    async fn created_in_minute(&self, owner: &OwnerId, at: OffsetDateTime) -> Result<u32> {
        let minute = at.unix_timestamp().div_euclid(60);
        let count = lock(&self.state)
            .jobs
            .values()
            .filter(|r| {
                &r.job.owner == owner && r.job.created_at.unix_timestamp().div_euclid(60) == minute
            })
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Never refuses: the fake models no quotas (see the type's docs).
    async fn check_quota(&self, _owner: &OwnerId, _at: OffsetDateTime) -> Result<()> {
        Ok(())
    }

    async fn get(&self, owner: &OwnerId, id: Ulid) -> Result<Option<Job>> {
        Ok(lock(&self.state)
            .jobs
            .get(&(owner.clone(), id))
            .map(|r| r.job.clone()))
    }

    /// Newest first (ULID order), `limit` clamped to 1–100 like the adapter. `next_cursor` is
    /// set only when more matching jobs follow (DynamoDB may also return one that leads to an
    /// empty page; callers must accept both).
    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<JobPage> {
        let limit = query.limit.clamp(1, 100) as usize;
        let after = query
            .cursor
            .as_deref()
            .map(crate::core::decode_job_cursor)
            .transpose()?;
        let state = lock(&self.state);
        let mut matching: Vec<&Job> = state
            .jobs
            .iter()
            .filter(|((o, id), r)| {
                o == owner
                    && after.is_none_or(|a| *id < a)
                    && query.status.is_none_or(|s| r.job.status == s)
            })
            .map(|(_, r)| &r.job)
            .collect();
        matching.sort_by_key(|j| std::cmp::Reverse(j.id));
        let more = matching.len() > limit;
        let jobs: Vec<Job> = matching.into_iter().take(limit).cloned().collect();
        let next_cursor = if more {
            jobs.last().map(|j| crate::core::encode_job_cursor(j.id))
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn discard(
        &self,
        owner: &OwnerId,
        id: Ulid,
        idempotency_key: Option<&str>,
    ) -> Result<()> {
        let mut state = lock(&self.state);
        state.jobs.remove(&(owner.clone(), id));
        if let Some(key) = idempotency_key {
            state.idempotency.remove(&(owner.clone(), key.to_owned()));
        }
        Ok(())
    }
}

/// The sparse `pending` index: every non-terminal record, by due time; `postpone` only moves a
/// due time it still finds (the adapter's `#due = :seen` condition).
#[async_trait]
impl PendingJobs for InMemoryJobs {
    async fn due(&self, now: i64, limit: usize) -> Result<Vec<PendingJob>> {
        let state = lock(&self.state);
        let mut due: Vec<PendingJob> = state
            .jobs
            .values()
            .filter_map(|r| {
                let at = r.pending_due.filter(|at| *at <= now)?;
                Some(PendingJob {
                    owner: r.job.owner.clone(),
                    id: r.job.id,
                    status: r.job.status,
                    attempts: r.job.attempts,
                    provider_request_id: r.job.provider_request_id.clone(),
                    due: at,
                })
            })
            .collect();
        due.sort_by_key(|p| (p.due, p.id));
        due.truncate(limit);
        Ok(due)
    }

    async fn postpone(&self, owner: &OwnerId, id: Ulid, seen: i64, until: i64) -> Result<bool> {
        let mut state = lock(&self.state);
        match state
            .jobs
            .get_mut(&(owner.clone(), id))
            .filter(|r| r.pending_due == Some(seen))
        {
            Some(record) => {
                record.pending_due = Some(until);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[async_trait]
impl JobTransitions for InMemoryJobs {
    async fn claim(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> Result<Claim> {
        let mut state = lock(&self.state);
        let Some(record) = state.jobs.get_mut(&(owner.clone(), id)) else {
            return Ok(Claim::Missing);
        };
        let expired = record
            .lease
            .as_ref()
            .is_none_or(|l| l.until <= now.unix_timestamp());
        let claimable = match record.job.status {
            JobStatus::Queued => true,
            JobStatus::Processing => expired,
            _ => false,
        };
        if !claimable {
            let job = record.job.clone();
            return Ok(if job.status.is_terminal() {
                Claim::Terminal(job)
            } else {
                Claim::Leased(job)
            });
        }
        record.job.status = JobStatus::Processing;
        record.job.attempts += 1;
        record.job.started_at.get_or_insert(now);
        record.job.updated_at = now;
        record.lease = Some(lease.clone());
        record.pending_due = Some(lease.until);
        Ok(Claim::Claimed(record.job.clone()))
    }

    async fn renew(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        seen: i64,
        until: i64,
    ) -> Result<bool> {
        let mut state = lock(&self.state);
        let Some(record) = state.jobs.get_mut(&(owner.clone(), id)).filter(|r| {
            r.job.status == JobStatus::Processing
                && r.job.provider_request_id.is_none()
                && r.pending_due == Some(seen)
                && r.lease.as_ref().is_some_and(|l| l.token == lease_token)
        }) else {
            return Ok(false);
        };
        record.pending_due = Some(until);
        if let Some(lease) = record.lease.as_mut() {
            lease.until = until;
        }
        Ok(true)
    }

    async fn complete(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        result: &JobResult,
        now: OffsetDateTime,
    ) -> Result<Job> {
        let mut state = lock(&self.state);
        let record = state
            .jobs
            .get_mut(&(owner.clone(), id))
            .filter(|r| {
                r.job.status == JobStatus::Processing
                    && r.lease.as_ref().is_some_and(|l| l.token == lease_token)
            })
            .ok_or_else(|| Error::Conflict(format!("job {id} is no longer held by this lease")))?;
        record.job.result = Some(result.clone());
        record.finish(JobStatus::Succeeded, now);
        Ok(record.job.clone())
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
        let mut state = lock(&self.state);
        let Some(record) = state.jobs.get_mut(&(owner.clone(), id)).filter(|r| {
            r.job.status == JobStatus::Processing
                && r.job.attempts > 0
                && r.lease.as_ref().is_some_and(|l| l.token == lease_token)
        }) else {
            return Ok(false);
        };
        record.job.status = JobStatus::Queued;
        record.job.attempts -= u32::from(refund_attempt);
        record.job.updated_at = now;
        record.lease = None;
        record.pending_due = Some(due);
        Ok(true)
    }

    async fn fail(
        &self,
        owner: &OwnerId,
        id: Ulid,
        error: &JobError,
        now: OffsetDateTime,
    ) -> Result<Option<Job>> {
        let mut state = lock(&self.state);
        let Some(record) = state
            .jobs
            .get_mut(&(owner.clone(), id))
            .filter(|r| !r.job.status.is_terminal())
        else {
            return Ok(None);
        };
        record.job.error = Some(error.clone());
        record.finish(JobStatus::Failed, now);
        Ok(Some(record.job.clone()))
    }
}

#[async_trait]
impl ProviderTransitions for InMemoryJobs {
    async fn record_submission(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        submission: &ProviderSubmission,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut state = lock(&self.state);
        // The missing request id is the guard against submitting (and paying) twice.
        let Some(record) = state.jobs.get_mut(&(owner.clone(), id)).filter(|r| {
            r.job.status == JobStatus::Processing
                && r.lease.as_ref().is_some_and(|l| l.token == lease_token)
                && r.job.provider_request_id.is_none()
        }) else {
            return Ok(false);
        };
        record.job.provider = Some(submission.provider.clone());
        record.job.provider_request_id = Some(submission.request_id.clone());
        record.job.provider_deadline = Some(submission.deadline);
        record.job.provider_links = submission.links.clone();
        record.job.updated_at = now;
        record.pending_due = Some(submission.first_poll_due(now));
        Ok(true)
    }

    async fn expect_poll(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        seen: Option<i64>,
        due: i64,
    ) -> Result<bool> {
        let mut state = lock(&self.state);
        let Some(record) = state.jobs.get_mut(&(owner.clone(), id)).filter(|r| {
            r.job.status == JobStatus::Processing
                && r.job.provider_request_id.as_deref() == Some(request_id)
                && seen.is_none_or(|seen| r.pending_due == Some(seen))
        }) else {
            return Ok(false);
        };
        record.pending_due = Some(due);
        Ok(true)
    }

    async fn record_intent(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
    ) -> Result<SubmitIntent> {
        let mut state = lock(&self.state);
        let Some(record) = state.jobs.get_mut(&(owner.clone(), id)) else {
            return Ok(SubmitIntent::Refused);
        };
        let processing = record.job.status == JobStatus::Processing;
        let held = record
            .lease
            .as_ref()
            .is_some_and(|l| l.token == lease_token);
        if record.job.provider_request_id.is_some() || !processing {
            return Ok(SubmitIntent::Refused);
        }
        Ok(match &record.provider_intent {
            Some(token) if token == lease_token && held => SubmitIntent::Recorded,
            Some(_) => SubmitIntent::EarlierAttempt,
            None if held => {
                record.provider_intent = Some(lease_token.to_owned());
                SubmitIntent::Recorded
            }
            None => SubmitIntent::Refused,
        })
    }

    async fn clear_intent(&self, owner: &OwnerId, id: Ulid, lease_token: &str) -> Result<()> {
        let mut state = lock(&self.state);
        if let Some(record) = state.jobs.get_mut(&(owner.clone(), id))
            && record.provider_intent.as_deref() == Some(lease_token)
            && record.job.provider_request_id.is_none()
        {
            record.provider_intent = None;
        }
        Ok(())
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
        let mut state = lock(&self.state);
        let Some(record) = state.jobs.get_mut(&(owner.clone(), id)).filter(|r| {
            r.job.status == JobStatus::Processing
                && r.job.provider_request_id.as_deref() == Some(request_id)
        }) else {
            return Ok(None);
        };
        record.job.result = Some(result.clone());
        if !warnings.is_empty() {
            record.job.warnings = warnings.to_vec();
        }
        record.finish(JobStatus::Succeeded, now);
        Ok(Some(record.job.clone()))
    }

    async fn cancel(&self, owner: &OwnerId, id: Ulid, now: OffsetDateTime) -> Result<Option<Job>> {
        let mut state = lock(&self.state);
        let Some(record) = state
            .jobs
            .get_mut(&(owner.clone(), id))
            .filter(|r| !r.job.status.is_terminal())
        else {
            return Ok(None);
        };
        record.finish(JobStatus::Canceled, now);
        Ok(Some(record.job.clone()))
    }

    async fn mark_once(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        mark: ProviderMark,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let mut state = lock(&self.state);
        // No status condition, as in the adapter: a webhook may arrive after the job ended.
        let Some(record) = state
            .jobs
            .get_mut(&(owner.clone(), id))
            .filter(|r| r.job.provider_request_id.as_deref() == Some(request_id))
        else {
            return Ok(false);
        };
        let slot = match mark {
            ProviderMark::WebhookReceived => &mut record.webhook_received_at,
            ProviderMark::CancelSent => &mut record.cancel_sent_at,
        };
        if slot.is_some() {
            return Ok(false);
        }
        *slot = Some(now);
        Ok(true)
    }
}

/// One message accepted by [`InMemoryQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The message as sent.
    pub message: JobMessage,
    /// Its JSON, byte for byte the `MessageBody` the SQS adapter sends (and a Lambda record's
    /// `body`).
    pub body: String,
    /// The delay asked for. The SQS adapter caps it at [`SQS_MAX_DELAY`]; it is kept as given
    /// here so a test can see what the caller asked.
    pub delay: Duration,
}

/// SQS's longest `DelaySeconds`, 15 minutes (the SQS adapter sends `min(delay, this)`).
pub const SQS_MAX_DELAY: Duration = Duration::from_secs(900);

/// The jobs queue in memory: [`JobQueue`] recording every message in order. Nothing is ever
/// delivered by itself; a test takes the messages and feeds them to the consumer.
#[derive(Debug, Default)]
pub struct InMemoryQueue {
    sent: Mutex<Vec<SentMessage>>,
}

impl InMemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The messages sent so far, oldest first, left in place.
    pub fn sent(&self) -> Vec<SentMessage> {
        lock(&self.sent).clone()
    }

    /// The messages sent so far, oldest first, removing them (as a consumer receiving them
    /// would).
    pub fn take(&self) -> Vec<SentMessage> {
        std::mem::take(&mut *lock(&self.sent))
    }
}

#[async_trait]
impl JobQueue for InMemoryQueue {
    async fn send(&self, message: &JobMessage, delay: Duration) -> Result<()> {
        let body = serde_json::to_string(message).map_err(|e| Error::Corrupt {
            what: "queue message",
            message: e.to_string(),
        })?;
        lock(&self.sent).push(SentMessage {
            message: message.clone(),
            body,
            delay,
        });
        Ok(())
    }
}

/// One object of [`InMemoryBlobs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// The bytes.
    pub body: Bytes,
    /// The `Content-Type` given to `put`.
    pub content_type: String,
    /// When it was written, Unix seconds.
    pub last_modified: i64,
}

/// The images bucket in memory: [`BlobStore`] over a key-ordered map.
///
/// - `get` of a missing key is [`Error::NotFound`] naming `s3://{bucket}/{key}`, like the S3
///   adapter; `head` is `None` and `delete` succeeds.
/// - `head` reports the size and content type; no user metadata (the port's `put` cannot set
///   any); the `etag` is a SHA-256 prefix of the body (S3's is an MD5: treat it as opaque).
/// - Presigned URLs are `memory://{bucket}/{key}?X-Amz-Expires={seconds}` (a PUT's also
///   carries `content-type` and `content-length`, the values its signature would cover). They
///   name the object but open nothing: no HTTP server serves them. As with SigV4, a lifetime
///   over 7 days is refused ([`Error::Unavailable`], as the S3 adapter reports it).
#[derive(Debug)]
pub struct InMemoryBlobs {
    bucket: String,
    objects: Mutex<BTreeMap<String, StoredObject>>,
}

/// SigV4's longest presigned URL lifetime.
const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

impl InMemoryBlobs {
    /// An empty bucket named `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            objects: Mutex::default(),
        }
    }

    /// The object at `key`, if any (for assertions without going through the port).
    pub fn object(&self, key: &str) -> Option<StoredObject> {
        lock(&self.objects).get(key).cloned()
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }

    fn presign(&self, key: &str, expires_in: Duration, extra: &[(&str, String)]) -> Result<String> {
        if expires_in > MAX_PRESIGN {
            return Err(Error::unavailable(
                "s3",
                "a presigned URL may be valid for at most 7 days",
            ));
        }
        let mut url = url::Url::parse(&format!("memory://{}/", self.bucket))
            .map_err(|e| Error::unavailable("s3", e))?;
        url.set_path(key);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("X-Amz-Expires", &expires_in.as_secs().to_string());
            for (name, value) in extra {
                query.append_pair(name, value);
            }
        }
        Ok(url.into())
    }
}

#[async_trait]
impl BlobStore for InMemoryBlobs {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<()> {
        lock(&self.objects).insert(
            key.to_owned(),
            StoredObject {
                body,
                content_type: content_type.to_owned(),
                last_modified: OffsetDateTime::now_utc().unix_timestamp(),
            },
        );
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        lock(&self.objects)
            .get(key)
            .map(|o| o.body.clone())
            .ok_or_else(|| Error::NotFound(format!("s3://{}/{key}", self.bucket)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        Ok(lock(&self.objects).get(key).map(|o| ObjectInfo {
            size: o.body.len() as u64,
            content_type: Some(o.content_type.clone()),
            metadata: HashMap::new(),
            etag: Some(hex::encode(&Sha256::digest(&o.body)[..16])),
        }))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        lock(&self.objects).remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectSummary>> {
        Ok(lock(&self.objects)
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, o)| ObjectSummary {
                key: k.clone(),
                size: o.body.len() as u64,
                last_modified: o.last_modified,
            })
            .collect())
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String> {
        self.presign(key, expires_in, &[])
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        expires_in: Duration,
    ) -> Result<String> {
        self.presign(
            key,
            expires_in,
            &[
                ("content-type", content_type.to_owned()),
                ("content-length", content_length.to_string()),
            ],
        )
    }
}

/// A [`Segmenter`] that answers each call with the next entry of a script (the last entry
/// repeats), counting calls and keeping the last image it was sent.
#[derive(Debug)]
pub struct ScriptedSegmenter {
    script: Vec<std::result::Result<Cutout, SegmenterError>>,
    calls: AtomicUsize,
    last_image: Mutex<Option<Bytes>>,
}

impl ScriptedSegmenter {
    /// Answers from `script`, in order; the last answer repeats once the script runs out.
    ///
    /// # Panics
    /// When `script` is empty: a segmenter must answer something.
    pub fn new(script: Vec<std::result::Result<Cutout, SegmenterError>>) -> Self {
        assert!(!script.is_empty(), "a scripted segmenter needs an answer");
        Self {
            script,
            calls: AtomicUsize::new(0),
            last_image: Mutex::default(),
        }
    }

    /// Always answers with `cutout`.
    pub fn succeeding(cutout: Cutout) -> Self {
        Self::new(vec![Ok(cutout)])
    }

    /// Always fails with `error`.
    pub fn failing(error: SegmenterError) -> Self {
        Self::new(vec![Err(error)])
    }

    /// How many times `remove_background` was called.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The image of the latest call, if any.
    pub fn last_image(&self) -> Option<Bytes> {
        lock(&self.last_image).clone()
    }
}

#[async_trait]
impl Segmenter for ScriptedSegmenter {
    async fn remove_background(
        &self,
        image: Bytes,
        _params: &RemoveBackgroundParams,
    ) -> std::result::Result<Cutout, SegmenterError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        *lock(&self.last_image) = Some(image);
        self.script[n.min(self.script.len() - 1)].clone()
    }
}

#[async_trait]
impl UploadStore for InMemoryJobs {
    /// Writes (or overwrites, like the adapter's unconditional `PutItem`) `UPLOAD#{id}`.
    async fn put_upload(&self, owner: &OwnerId, upload: &Upload) -> Result<()> {
        lock(&self.state)
            .uploads
            .insert((owner.clone(), upload.id.clone()), upload.clone());
        Ok(())
    }

    /// The owner's upload; another owner's id is `None`. Expired records are still returned,
    /// as the adapter does until TTL deletes them.
    async fn get_upload(&self, owner: &OwnerId, id: &str) -> Result<Option<Upload>> {
        Ok(lock(&self.state)
            .uploads
            .get(&(owner.clone(), id.to_owned()))
            .cloned())
    }
}

#[async_trait]
impl CapabilityStore for InMemoryJobs {
    /// Stores the handle once: an id already stored is an [`Error::Conflict`].
    async fn put_capability(&self, capability: &Capability) -> Result<()> {
        let mut state = lock(&self.state);
        if state.capabilities.contains_key(&capability.id) {
            return Err(Error::Conflict(format!(
                "capability {} already exists",
                capability.id
            )));
        }
        state
            .capabilities
            .insert(capability.id.clone(), capability.clone());
        Ok(())
    }

    /// The handle, or `None` when unknown or once `expires_at <= now` (as the adapter).
    async fn find_capability(&self, id: &str, now: OffsetDateTime) -> Result<Option<Capability>> {
        Ok(lock(&self.state)
            .capabilities
            .get(id)
            .filter(|c| c.expires_at > now.unix_timestamp())
            .cloned())
    }
}

#[async_trait]
impl NotificationStore for InMemoryJobs {
    async fn webhook_settings(&self, owner: &OwnerId) -> Result<Option<OwnerWebhook>> {
        Ok(lock(&self.state).webhooks.get(owner).cloned())
    }

    /// The stored secret, or a new one written only when none is stored (the adapter's
    /// `if_not_exists`).
    async fn webhook_secret(&self, owner: &OwnerId) -> Result<WebhookSecret> {
        let fresh = WebhookSecret::generate().map_err(|e| Error::Config(e.to_string()))?;
        let mut state = lock(&self.state);
        let settings = state.webhooks.entry(owner.clone()).or_default();
        let text = settings
            .secret
            .get_or_insert_with(|| fresh.as_str().to_owned());
        WebhookSecret::parse(text).map_err(|e| Error::Corrupt {
            what: "webhook settings",
            message: e.to_string(),
        })
    }

    async fn rotate_webhook_secret(&self, owner: &OwnerId) -> Result<WebhookSecret> {
        let fresh = WebhookSecret::generate().map_err(|e| Error::Config(e.to_string()))?;
        lock(&self.state)
            .webhooks
            .entry(owner.clone())
            .or_default()
            .secret = Some(fresh.as_str().to_owned());
        Ok(fresh)
    }

    /// Sets or removes `default_url`, creating the settings item when missing (an
    /// `UpdateItem`), the secret left as it is.
    async fn set_default_webhook_url(&self, owner: &OwnerId, url: Option<&str>) -> Result<()> {
        lock(&self.state)
            .webhooks
            .entry(owner.clone())
            .or_default()
            .default_url = url.map(str::to_owned);
        Ok(())
    }

    /// Takes the claim when the job exists and the channel's claim is absent or expired by the
    /// wall clock (as the adapter's condition does).
    async fn claim_delivery(
        &self,
        owner: &OwnerId,
        job_id: Ulid,
        channel: &str,
        until: OffsetDateTime,
    ) -> Result<bool> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut state = lock(&self.state);
        let Some(record) = state.jobs.get_mut(&(owner.clone(), job_id)) else {
            return Ok(false);
        };
        match record.delivery_claims.get(channel) {
            Some(held) if *held >= now => Ok(false),
            _ => {
                record
                    .delivery_claims
                    .insert(channel.to_owned(), until.unix_timestamp());
                Ok(true)
            }
        }
    }

    /// Appends to the job's `notifications`, sets `updated_at` (to the wall clock, as the
    /// adapter does) and settles or releases the channel's claim; [`Error::NotFound`] for a
    /// missing job.
    async fn record_attempt(
        &self,
        owner: &OwnerId,
        job_id: Ulid,
        attempt: &NotificationAttempt,
        settled: bool,
    ) -> Result<()> {
        let mut state = lock(&self.state);
        let record = state
            .jobs
            .get_mut(&(owner.clone(), job_id))
            .ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
        record.job.notifications.push(attempt.clone());
        record.job.updated_at = OffsetDateTime::now_utc();
        if settled {
            record
                .delivery_claims
                .insert(attempt.channel.clone(), i64::MAX);
        } else {
            record.delivery_claims.remove(&attempt.channel);
        }
        Ok(())
    }

    /// Takes a terminal job out of the `pending` index; a running or unknown job is left alone.
    async fn clear_outbox(&self, owner: &OwnerId, job_id: Ulid) -> Result<()> {
        if let Some(record) = lock(&self.state)
            .jobs
            .get_mut(&(owner.clone(), job_id))
            .filter(|r| r.job.status.is_terminal())
        {
            record.pending_due = None;
        }
        Ok(())
    }

    /// Moves a terminal job's entry in the `pending` index; a running job, or one whose entry
    /// is gone, is left alone.
    async fn defer_outbox(&self, owner: &OwnerId, job_id: Ulid, due: i64) -> Result<()> {
        if let Some(record) = lock(&self.state)
            .jobs
            .get_mut(&(owner.clone(), job_id))
            .filter(|r| r.job.status.is_terminal() && r.pending_due.is_some())
        {
            record.pending_due = Some(due);
        }
        Ok(())
    }
}

/// The API key records in memory: [`ApiKeyStore`] keyed by the key's SHA-256 hex
/// ([`crate::auth::hash_api_key`]), as `adapters::DynamoApiKeys` keys `APIKEY#{sha256}`; the
/// plaintext is never stored.
///
/// `put_key` refuses a hash already stored (the adapter's `attribute_not_exists`; it reports
/// that as a failed call, here [`Error::Conflict`]); `touch_key` writes `last_used_at` only
/// when unset or over a minute old, and ignores unknown keys; `list_keys` is oldest first.
#[derive(Debug, Default)]
pub struct InMemoryApiKeys {
    keys: Mutex<HashMap<String, ApiKeyRecord>>,
}

impl InMemoryApiKeys {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Generates and stores a key for `owner` with `scopes` (named `test`, created now) and
    /// returns the plaintext key (`ij_live_…`) to send as a credential.
    ///
    /// # Panics
    /// When the OS random source fails.
    pub fn create_key(&self, owner: &OwnerId, scopes: &[Scope]) -> String {
        let new = crate::auth::generate_api_key().expect("random source");
        let record = ApiKeyRecord {
            key_id: new.key_id,
            hash: new.hash.clone(),
            owner: owner.clone(),
            name: "test".into(),
            scopes: scopes.to_vec(),
            created_at: OffsetDateTime::now_utc(),
            last_used_at: None,
            revoked: false,
        };
        lock(&self.keys).insert(new.hash, record);
        new.secret
    }

    /// The stored record of a plaintext key, if any.
    pub fn record(&self, secret: &str) -> Option<ApiKeyRecord> {
        lock(&self.keys)
            .get(&crate::auth::hash_api_key(secret))
            .cloned()
    }
}

#[async_trait]
impl ApiKeyStore for InMemoryApiKeys {
    async fn put_key(&self, record: &ApiKeyRecord) -> Result<()> {
        let mut keys = lock(&self.keys);
        if keys.contains_key(&record.hash) {
            return Err(Error::Conflict(format!(
                "API key {} already exists",
                record.key_id
            )));
        }
        keys.insert(record.hash.clone(), record.clone());
        Ok(())
    }

    async fn find_key(&self, hash: &str) -> Result<Option<ApiKeyRecord>> {
        Ok(lock(&self.keys).get(hash).cloned())
    }

    async fn list_keys(&self, owner: Option<&OwnerId>) -> Result<Vec<ApiKeyRecord>> {
        let mut keys: Vec<ApiKeyRecord> = lock(&self.keys)
            .values()
            .filter(|k| owner.is_none_or(|o| *o == k.owner))
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn revoke_key(&self, key_id: &str) -> Result<bool> {
        Ok(lock(&self.keys)
            .values_mut()
            .find(|k| k.key_id == key_id)
            .map(|k| k.revoked = true)
            .is_some())
    }

    async fn touch_key(&self, hash: &str, now: OffsetDateTime) -> Result<()> {
        if let Some(k) = lock(&self.keys).get_mut(hash)
            && k.use_is_stale(now)
        {
            k.last_used_at = Some(now);
        }
        Ok(())
    }
}

/// A [`Probe`] (a `GET /health` check) that answers as it is told: healthy until
/// [`FakeProbe::set_healthy`] says otherwise; unhealthy is [`Error::Unavailable`].
#[derive(Debug)]
pub struct FakeProbe {
    name: &'static str,
    healthy: std::sync::atomic::AtomicBool,
}

impl FakeProbe {
    /// A healthy probe reported under `name` (`table`, `queue`, `bucket`, …).
    pub fn healthy(name: &'static str) -> Self {
        Self {
            name,
            healthy: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Makes later pings succeed (`true`) or fail.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

#[async_trait]
impl Probe for FakeProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn ping(&self) -> Result<()> {
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::Unavailable {
                service: self.name,
                message: "fake probe set unhealthy".into(),
            })
        }
    }
}

/// The [`Cutout`] the segmenter container would answer with for these encoded bytes: width and
/// height from the image, `content_type` sniffed, the foreground fraction as the mean alpha
/// ([`crate::image_check::foreground_fraction`], the container's own measure), and `engine`.
///
/// # Panics
/// When `bytes` are not an image this crate decodes (a test's fixture is wrong).
pub fn cutout(bytes: impl Into<Bytes>, engine: &str) -> Cutout {
    let bytes = bytes.into();
    let info = crate::image_check::probe(&bytes, &crate::image_check::ImageLimits::default())
        .expect("a cutout fixture must be a decodable image");
    let fraction = crate::image_check::foreground_fraction(&bytes)
        .expect("a cutout fixture must be a decodable image");
    Cutout {
        content_type: info.content_type().to_owned(),
        width: info.width,
        height: info.height,
        engine: engine.to_owned(),
        foreground_fraction: Some(fraction),
        bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Operation;
    use std::collections::BTreeMap as Map;

    fn owner() -> OwnerId {
        OwnerId::parse("team-a").unwrap()
    }

    fn queued() -> Job {
        Job::new(
            Ulid::new(),
            owner(),
            Operation::RemoveBackground(RemoveBackgroundParams::with_model("u2net")),
            Map::new(),
            OffsetDateTime::now_utc(),
            time::Duration::days(1),
        )
    }

    fn lease(token: &str, until: i64) -> Lease {
        Lease {
            token: token.into(),
            until,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn claims_follow_the_lease() {
        block_on(async {
            let jobs = InMemoryJobs::new();
            let job = queued();
            jobs.create(&job, None).await.unwrap();
            let now = OffsetDateTime::now_utc();
            let t = now.unix_timestamp();
            let Claim::Claimed(first) = jobs
                .claim(&owner(), job.id, &lease("a", t + 60), now)
                .await
                .unwrap()
            else {
                panic!("a queued job is claimable");
            };
            assert_eq!((first.status, first.attempts), (JobStatus::Processing, 1));
            assert!(matches!(
                jobs.claim(&owner(), job.id, &lease("b", t + 60), now)
                    .await
                    .unwrap(),
                Claim::Leased(_)
            ));
            // Once the lease's second has come, another claim takes over.
            let later = now + time::Duration::seconds(60);
            let Claim::Claimed(second) = jobs
                .claim(&owner(), job.id, &lease("b", t + 120), later)
                .await
                .unwrap()
            else {
                panic!("an expired lease is taken over");
            };
            assert_eq!(second.attempts, 2);
            assert_eq!(second.started_at, first.started_at);
            let result = JobResult {
                key: "k".into(),
                content_type: "image/png".into(),
                width: 1,
                height: 1,
                bytes: 1,
                engine: None,
                foreground_fraction: None,
                images: Vec::new(),
                seed: None,
            };
            assert!(matches!(
                jobs.complete(&owner(), job.id, "a", &result, later).await,
                Err(Error::Conflict(_))
            ));
            let done = jobs
                .complete(&owner(), job.id, "b", &result, later)
                .await
                .unwrap();
            assert_eq!(done.status, JobStatus::Succeeded);
            assert_eq!(jobs.lease(&owner(), job.id), None);
            assert!(matches!(
                jobs.claim(&owner(), job.id, &lease("c", t), later)
                    .await
                    .unwrap(),
                Claim::Terminal(_)
            ));
            let error = JobError::new("x", "y");
            assert_eq!(
                jobs.fail(&owner(), job.id, &error, later).await.unwrap(),
                None
            );
            assert_eq!(jobs.cancel(&owner(), job.id, later).await.unwrap(), None);
            assert!(matches!(
                jobs.claim(&owner(), Ulid::new(), &lease("d", t), now)
                    .await
                    .unwrap(),
                Claim::Missing
            ));
        });
    }

    #[test]
    fn provider_writes_are_once_only() {
        block_on(async {
            let jobs = InMemoryJobs::new();
            let job = queued();
            jobs.create(&job, None).await.unwrap();
            let now = OffsetDateTime::now_utc();
            let held = lease("a", now.unix_timestamp() + 60);
            jobs.claim(&owner(), job.id, &held, now).await.unwrap();
            let submission = ProviderSubmission {
                provider: "stability".into(),
                request_id: "r1".into(),
                deadline: now.unix_timestamp() + 600,
                links: None,
            };
            assert!(
                !jobs
                    .record_submission(&owner(), job.id, "other", &submission, now)
                    .await
                    .unwrap()
            );
            assert!(
                jobs.record_submission(&owner(), job.id, "a", &submission, now)
                    .await
                    .unwrap()
            );
            assert!(
                !jobs
                    .record_submission(&owner(), job.id, "a", &submission, now)
                    .await
                    .unwrap()
            );
            let mark = ProviderMark::WebhookReceived;
            assert!(
                !jobs
                    .mark_once(&owner(), job.id, "r2", mark, now)
                    .await
                    .unwrap()
            );
            assert!(
                jobs.mark_once(&owner(), job.id, "r1", mark, now)
                    .await
                    .unwrap()
            );
            assert!(
                !jobs
                    .mark_once(&owner(), job.id, "r1", mark, now)
                    .await
                    .unwrap()
            );
            assert!(
                jobs.mark_once(&owner(), job.id, "r1", ProviderMark::CancelSent, now)
                    .await
                    .unwrap()
            );
        });
    }

    #[test]
    fn idempotency_keys_replay_or_refuse() {
        block_on(async {
            let jobs = InMemoryJobs::new();
            let idem = Idempotency {
                key: "k".into(),
                request_hash: "h1".into(),
            };
            let first = queued();
            assert!(matches!(
                jobs.create(&first, Some(&idem)).await.unwrap(),
                Created::New(_)
            ));
            let Created::Replayed(again) = jobs.create(&queued(), Some(&idem)).await.unwrap()
            else {
                panic!("same key and request replays");
            };
            assert_eq!(again.id, first.id);
            let other = Idempotency {
                request_hash: "h2".into(),
                ..idem.clone()
            };
            assert!(matches!(
                jobs.find_idempotent(&owner(), &other).await,
                Err(Error::IdempotencyMismatch)
            ));
            jobs.discard(&owner(), first.id, Some("k")).await.unwrap();
            assert_eq!(jobs.find_idempotent(&owner(), &idem).await.unwrap(), None);
        });
    }

    #[test]
    fn pages_are_newest_first_with_opaque_cursors() {
        block_on(async {
            let jobs = InMemoryJobs::new();
            let mut ids = Vec::new();
            for _ in 0..3 {
                let job = Job {
                    id: Ulid::new(),
                    ..queued()
                };
                ids.push(job.id);
                jobs.create(&job, None).await.unwrap();
            }
            ids.sort();
            ids.reverse();
            let query = ListQuery {
                limit: 2,
                ..Default::default()
            };
            let page = jobs.list(&owner(), &query).await.unwrap();
            assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids[..2]);
            let next = ListQuery {
                cursor: page.next_cursor,
                ..query.clone()
            };
            let last = jobs.list(&owner(), &next).await.unwrap();
            assert_eq!(last.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids[2..]);
            assert_eq!(last.next_cursor, None);
            let bad = ListQuery {
                cursor: Some("!!!".into()),
                ..query
            };
            assert_eq!(
                jobs.list(&owner(), &bad).await.unwrap_err().code(),
                "invalid_cursor"
            );
        });
    }

    #[test]
    fn keys_uploads_capabilities_and_webhooks_keep_the_adapters_rules() {
        block_on(async {
            let keys = InMemoryApiKeys::new();
            let secret = keys.create_key(&owner(), &[Scope::JobsRead]);
            let hash = crate::auth::hash_api_key(&secret);
            let record = keys.find_key(&hash).await.unwrap().unwrap();
            assert_eq!(
                (record.owner, record.scopes),
                (owner(), vec![Scope::JobsRead])
            );
            let now = OffsetDateTime::now_utc();
            keys.touch_key(&hash, now).await.unwrap();
            // At most one write a minute.
            keys.touch_key(&hash, now + time::Duration::seconds(30))
                .await
                .unwrap();
            assert_eq!(keys.record(&secret).unwrap().last_used_at, Some(now));
            assert!(keys.revoke_key(&record.key_id).await.unwrap());
            assert!(keys.record(&secret).unwrap().revoked);
            assert!(!keys.revoke_key("key_none").await.unwrap());

            let jobs = InMemoryJobs::new();
            let capability = Capability {
                id: "c1".into(),
                owner: owner(),
                job_id: Ulid::new(),
                expires_at: now.unix_timestamp() + 60,
            };
            jobs.put_capability(&capability).await.unwrap();
            assert!(matches!(
                jobs.put_capability(&capability).await,
                Err(Error::Conflict(_))
            ));
            assert_eq!(
                jobs.find_capability("c1", now).await.unwrap(),
                Some(capability)
            );
            let later = now + time::Duration::seconds(60);
            assert_eq!(jobs.find_capability("c1", later).await.unwrap(), None);

            let upload = Upload {
                id: "u1".into(),
                key: "uploads/team-a/u1".into(),
                content_type: "image/png".into(),
                content_length: 1,
                expires_at: 0,
            };
            jobs.put_upload(&owner(), &upload).await.unwrap();
            assert_eq!(jobs.get_upload(&owner(), "u1").await.unwrap(), Some(upload));
            let other = OwnerId::parse("team-b").unwrap();
            assert_eq!(jobs.get_upload(&other, "u1").await.unwrap(), None);

            let first = jobs.webhook_secret(&owner()).await.unwrap();
            assert_eq!(
                jobs.webhook_secret(&owner()).await.unwrap().as_str(),
                first.as_str()
            );
            let rotated = jobs.rotate_webhook_secret(&owner()).await.unwrap();
            assert_ne!(rotated.as_str(), first.as_str());
            jobs.set_default_webhook_url(&owner(), Some("https://example.com/h"))
                .await
                .unwrap();
            let settings = jobs.webhook_settings(&owner()).await.unwrap().unwrap();
            assert_eq!(settings.secret.as_deref(), Some(rotated.as_str()));
            assert_eq!(
                settings.default_url.as_deref(),
                Some("https://example.com/h")
            );
        });
    }

    #[test]
    fn blobs_list_by_prefix_and_presign_memory_urls() {
        block_on(async {
            let blobs = InMemoryBlobs::new("images");
            for key in ["a/2", "a/1", "b/1"] {
                blobs
                    .put(key, Bytes::from_static(b"x"), "image/png")
                    .await
                    .unwrap();
            }
            let listed: Vec<_> = blobs
                .list("a/", 10)
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect();
            assert_eq!(listed, ["a/1", "a/2"]);
            assert!(
                matches!(blobs.get("c").await, Err(Error::NotFound(w)) if w == "s3://images/c")
            );
            assert_eq!(blobs.head("c").await.unwrap(), None);
            blobs.delete("c").await.unwrap();
            let url = blobs
                .presign_get("a/1", Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(url, "memory://images/a/1?X-Amz-Expires=60");
            assert!(
                blobs
                    .presign_get("a/1", MAX_PRESIGN + Duration::from_secs(1))
                    .await
                    .is_err()
            );
        });
    }
}
