//! Ports: what the handlers need from the outside world, one small trait per capability. The
//! AWS and HTTP implementations live in [`crate::adapters`]; tests and the local runner use the
//! same adapters against the emulator.

use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;
use ulid::Ulid;

use crate::error::Result;
use crate::job::{Job, JobError, JobMessage, JobResult, JobStatus, OwnerId};
use crate::operation::remove_background::RemoveBackgroundParams;

/// A client-chosen idempotency key with the hash of the request it was first used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The `Idempotency-Key` header value (1–255 printable ASCII characters).
    pub key: String,
    /// SHA-256 hex of the canonical request (operation, params, input bytes).
    pub request_hash: String,
}

/// What [`JobStore::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// The job was written.
    New(Job),
    /// The idempotency key was already used for the same request: this is that job.
    Replayed(Job),
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// The jobs on this page.
    pub jobs: Vec<Job>,
    /// Opaque cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters and paging of [`JobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    /// Page size, 1–100.
    pub limit: u32,
    /// Cursor from a previous page.
    pub cursor: Option<String>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
}

/// The cursor of a [`JobPage`]: the last returned job's sort key (`JOB#{ulid}`),
/// base64url-encoded without padding. Every [`JobStore`] issues this one format, so a cursor
/// means the same thing in every implementation; it is opaque to clients and meaningless across
/// owners (the owner comes from the caller, never from the cursor).
pub fn encode_job_cursor(id: Ulid) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("JOB#{id}"))
}

/// Reads a cursor made by [`encode_job_cursor`].
///
/// # Errors
/// [`crate::Error::Invalid`] `invalid_cursor` for anything else.
pub fn decode_job_cursor(cursor: &str) -> Result<Ulid> {
    use base64::Engine as _;
    let bad = || crate::Error::Invalid {
        code: "invalid_cursor",
        message: "cursor is malformed: pass the next_cursor of a previous page unchanged".into(),
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let sk = String::from_utf8(raw).map_err(|_| bad())?;
    let id = sk.strip_prefix("JOB#").ok_or_else(bad)?;
    Ulid::from_string(id).map_err(|_| bad())
}

/// Creating, reading and discarding job records.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Writes a new `queued` job (and its idempotency record, atomically).
    ///
    /// # Errors
    /// [`crate::Error::IdempotencyMismatch`] when the key was used for another request.
    async fn create(&self, job: &Job, idempotency: Option<&Idempotency>) -> Result<Created>;
    /// The job an idempotency key already points at, if the key was used before.
    ///
    /// # Errors
    /// [`crate::Error::IdempotencyMismatch`] when it was used for a different request.
    async fn find_idempotent(
        &self,
        owner: &OwnerId,
        idempotency: &Idempotency,
    ) -> Result<Option<Job>>;
    /// The owner's job, or `None` (also for another owner's id).
    async fn get(&self, owner: &OwnerId, id: Ulid) -> Result<Option<Job>>;
    /// The owner's jobs, newest first.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] `invalid_cursor` for a cursor that [`decode_job_cursor`] refuses.
    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<JobPage>;
    /// Removes a job that was never enqueued (compensation when the queue refuses it), with its
    /// idempotency record.
    async fn discard(&self, owner: &OwnerId, id: Ulid, idempotency_key: Option<&str>)
    -> Result<()>;
    /// How many jobs the owner created in the UTC minute that contains `at`: the counter that
    /// `MAX_JOBS_PER_MINUTE` is enforced on (0 when none). The API reports it as
    /// `X-RateLimit-Remaining`.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the store cannot be read.
    async fn created_in_minute(&self, owner: &OwnerId, at: OffsetDateTime) -> Result<u32>;
    /// Refuses a create before anything is stored or fetched when the owner's quota is already
    /// spent: the [`crate::Error::QuotaExceeded`] that [`JobStore::create`] would answer
    /// (`too_many_jobs_in_flight`, or `rate_limited` for the UTC minute that contains `at`),
    /// from the two counters read together. Advisory: a slot freed or taken meanwhile is
    /// settled by `create`'s own conditions, which stay the guarantee.
    ///
    /// # Errors
    /// [`crate::Error::QuotaExceeded`] as above; [`crate::Error::Unavailable`] when the
    /// counters cannot be read (the caller goes on to `create`, which decides).
    async fn check_quota(&self, owner: &OwnerId, at: OffsetDateTime) -> Result<()>;
}

/// A processor's exclusive, time-bounded right to run a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Random token; only its holder may complete the job.
    pub token: String,
    /// Unix seconds after which another processor may take the job over.
    pub until: i64,
}

/// What [`JobTransitions::claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Now `processing` under the given lease (first run, or a takeover of an expired lease).
    Claimed(Job),
    /// Another processor holds a live lease (a duplicate delivery): leave it alone.
    Leased(Job),
    /// Already finished: nothing to do.
    Terminal(Job),
    /// No such job.
    Missing,
}

/// The job state machine's conditional writes.
#[async_trait]
pub trait JobTransitions: Send + Sync {
    /// `queued → processing`, or takes over a `processing` job whose lease expired.
    async fn claim(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> Result<Claim>;
    /// Extends the lease holder's lease, the heartbeat of a running claim: `lease_until` and
    /// the `pending` due time move from `seen` to `until` (Unix seconds) together, so a
    /// processor that dies stops renewing and its job is due for takeover a short lease later
    /// (docs/ARCHITECTURE.md "Recovery"). Only while the job is `processing` under
    /// `lease_token` with no provider request and its due time still `seen`: a submission
    /// record, a release or a terminal write moves the due time, and then the renewal answers
    /// `false`, changes nothing, and the caller stops renewing.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the table cannot be written.
    async fn renew(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        seen: i64,
        until: i64,
    ) -> Result<bool>;
    /// `processing → succeeded`, only for the lease holder.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] when the lease was lost or the job is no longer processing.
    async fn complete(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        result: &JobResult,
        now: OffsetDateTime,
    ) -> Result<Job>;
    /// `processing → queued` for the lease holder, giving the claim back: the lease is removed
    /// and the `pending` index's due time becomes `due` (Unix seconds), so the recovery sweeper
    /// sends the job again should the caller's own re-send be lost. With `refund_attempt`,
    /// `attempts` goes down by one: the job could not start for a reason that is not the
    /// job's (an overloaded segmenter). Without, the attempt stays counted: a transient failure
    /// retried after a short backoff instead of a lease's expiry.
    ///
    /// `false` when the lease was lost (taken over, canceled, ended): nothing changed.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the table cannot be written.
    async fn release(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        refund_attempt: bool,
        due: i64,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// Any non-terminal state `→ failed`. `None` when the job was already terminal or missing.
    async fn fail(
        &self,
        owner: &OwnerId,
        id: Ulid,
        error: &JobError,
        now: OffsetDateTime,
    ) -> Result<Option<Job>>;
}

/// Sending work to the jobs queue.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Enqueues a message, visible after `delay` (SQS allows at most 15 minutes).
    async fn send(&self, message: &JobMessage, delay: Duration) -> Result<()>;
}

/// Shortens a received message's visibility timeout, so a record that failed before anything
/// was written comes back in seconds (and still counts a receive towards the dead-letter
/// queue) instead of after the queue's whole visibility timeout (SQS
/// `ChangeMessageVisibility`).
#[async_trait]
pub trait MessageVisibility: Send + Sync {
    /// Makes the jobs-queue message behind `receipt_handle` visible again after `delay`
    /// (whole seconds, at most SQS's 12 hours).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the queue refuses (an expired receipt handle included).
    async fn visible_after(&self, receipt_handle: &str, delay: Duration) -> Result<()>;
}

/// A non-terminal job that the sparse `pending` index (docs/ARCHITECTURE.md "Recovery") says
/// is due for a recovery look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingJob {
    /// The job's owner.
    pub owner: OwnerId,
    /// The job id.
    pub id: Ulid,
    /// `queued` or `processing`.
    pub status: JobStatus,
    /// Claims so far (each run or takeover counts one).
    pub attempts: u32,
    /// The provider request a `processing` job waits on, if any.
    pub provider_request_id: Option<String>,
    /// The due time the index holds, Unix seconds (the token for [`PendingJobs::postpone`]).
    pub due: i64,
}

/// The recovery sweeper's view of the jobs table: non-terminal jobs by due time.
#[async_trait]
pub trait PendingJobs: Send + Sync {
    /// Jobs whose due time is at or before `now` (Unix seconds), at most `limit`, earliest
    /// first within each index partition.
    async fn due(&self, now: i64, limit: usize) -> Result<Vec<PendingJob>>;
    /// Moves the job's due time from `seen` to `until` (Unix seconds). `false` when it no
    /// longer is `seen` (another sweeper moved it, a processor claimed the job, or it ended):
    /// only one sweeper acts on one due time.
    async fn postpone(&self, owner: &OwnerId, id: Ulid, seen: i64, until: i64) -> Result<bool>;
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// Stored `Content-Type`, if any.
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`), keys lower-case without the prefix.
    pub metadata: HashMap<String, String>,
    /// Entity tag, quotes removed.
    pub etag: Option<String>,
}

/// One object of a [`BlobStore::list`] answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    /// The object's key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, Unix seconds (0 when the store does not say).
    pub last_modified: i64,
}

/// The images bucket.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The bucket's name (for `s3://` references).
    fn bucket(&self) -> &str;
    /// Stores an object.
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<()>;
    /// Reads a whole object; [`crate::Error::NotFound`] when absent.
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Object metadata, or `None` when absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;
    /// Deletes an object; a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// The objects whose keys start with `prefix`, in key order, at most `limit` of them.
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectSummary>>;
    /// A presigned GET URL valid for `expires_in`.
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String>;
    /// A presigned PUT URL valid for `expires_in` whose signature covers `Content-Type` and
    /// `Content-Length`, so S3 refuses an upload of another type or size.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        expires_in: Duration,
    ) -> Result<String>;
}

/// The segmenter's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Cutout {
    /// Encoded image.
    pub bytes: Bytes,
    /// Its MIME type.
    pub content_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Engine that produced it (the stand-in when `model_fallback` chose one).
    pub engine: String,
    /// Share of the image the mask keeps, 0.0–1.0 (`X-Foreground-Fraction`).
    pub foreground_fraction: Option<f64>,
}

/// How a segmenter call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmenterError {
    /// The request can never succeed (bad image, unavailable model): fail the job with `code`.
    #[error("{code}: {message}")]
    Permanent {
        /// Stable code reported by the segmenter.
        code: String,
        /// Its message.
        message: String,
    },
    /// Worth retrying (5xx, timeout, connection refused).
    #[error("segmenter unavailable: {0}")]
    Transient(String),
    /// At capacity (HTTP 429, or 503 `overloaded` from its per-model admission queue): says
    /// nothing about this request; worth trying again after a short wait.
    #[error("segmenter overloaded: {0}")]
    Overloaded(String),
}

/// Background removal (the GPU container's HTTP contract; see `containers/segmenter/README.md`).
#[async_trait]
pub trait Segmenter: Send + Sync {
    /// Removes the background of `image` with `params`.
    async fn remove_background(
        &self,
        image: Bytes,
        params: &RemoveBackgroundParams,
    ) -> std::result::Result<Cutout, SegmenterError>;
}

/// A dependency the health check can probe.
#[async_trait]
pub trait Probe: Send + Sync {
    /// Short name reported by `/health` (`table`, `queue`, `bucket`, `segmenter`).
    fn name(&self) -> &'static str;
    /// Succeeds when the dependency answers.
    async fn ping(&self) -> Result<()>;
}

/// API keys, stored by hash.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a new key record.
    async fn put_key(&self, record: &crate::auth::ApiKeyRecord) -> Result<()>;
    /// The record of the key with this SHA-256 hex hash.
    async fn find_key(&self, hash: &str) -> Result<Option<crate::auth::ApiKeyRecord>>;
    /// All keys, or one owner's.
    async fn list_keys(&self, owner: Option<&OwnerId>) -> Result<Vec<crate::auth::ApiKeyRecord>>;
    /// Revokes a key by its public id; `false` when there is no such key.
    async fn revoke_key(&self, key_id: &str) -> Result<bool>;
    /// Records a use (at most one write a minute per key).
    async fn touch_key(&self, hash: &str, now: OffsetDateTime) -> Result<()>;
}

/// An unguessable public handle on one job: the async background-removal route's `processing_id`, a random UUID v4 (122
/// random bits) that lets a credential-less client read the job's status and download its
/// result, like a presigned URL. It expires with the job (same `expires_at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// The handle, a lower-case hyphenated UUID v4.
    pub id: String,
    /// The job's owner.
    pub owner: OwnerId,
    /// The job it opens.
    pub job_id: Ulid,
    /// Unix seconds after which it is void (the job's `expires_at`; DynamoDB TTL deletes it).
    pub expires_at: i64,
}

/// Capability handles on jobs (pointer records; the job itself stays owner-scoped).
#[async_trait]
pub trait CapabilityStore: Send + Sync {
    /// Stores a new handle.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] when the id already exists (never expected for a UUID v4).
    async fn put_capability(&self, capability: &Capability) -> Result<()>;
    /// The handle with this id, or `None` (also once it has expired, before TTL removes it).
    async fn find_capability(&self, id: &str, now: OffsetDateTime) -> Result<Option<Capability>>;
}

/// A declared direct upload (`POST /v1/uploads`), checked when a job references it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Upload {
    /// Upload id (a ULID).
    pub id: String,
    /// Object key, `uploads/{owner}/{id}`.
    pub key: String,
    /// Declared MIME type.
    pub content_type: String,
    /// Declared size in bytes.
    pub content_length: u64,
    /// Unix seconds after which the record may be deleted.
    pub expires_at: i64,
}

/// Declared uploads.
#[async_trait]
pub trait UploadStore: Send + Sync {
    /// Records a declared upload.
    async fn put_upload(&self, owner: &OwnerId, upload: &Upload) -> Result<()>;
    /// The owner's declared upload with this id.
    async fn get_upload(&self, owner: &OwnerId, id: &str) -> Result<Option<Upload>>;
}

/// One image sent to a provider as a multipart file part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePart {
    /// The provider's field name (`subject_image`, `background_reference`, `light_reference`).
    pub field: String,
    /// Encoded bytes.
    pub bytes: Bytes,
    /// Their MIME type.
    pub content_type: String,
}

/// A finished provider generation, downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    /// Encoded image bytes.
    pub bytes: Bytes,
    /// Their MIME type (from the provider's `content-type`).
    pub content_type: String,
    /// Stability's `finish-reason` header: `SUCCESS` or `CONTENT_FILTERED`
    /// (docs/providers.md §1.4).
    pub finish_reason: Option<String>,
}

/// Where an asynchronous provider request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollStatus {
    /// Still running: poll again later.
    Pending,
    /// Finished with this image.
    Done(GeneratedImage),
}

/// A provider call that failed, mapped to a stable job error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderError {
    /// Stable job error code: `content_moderated`, `invalid_input`, `payload_too_large`,
    /// `rate_limited`, `provider_error`, `provider_auth`, `provider_not_found`.
    pub code: &'static str,
    /// The provider's own words (its `errors` list for 400/422).
    pub message: String,
    /// Worth trying again (429, 5xx, transport errors).
    pub retryable: bool,
    /// How long the provider asked us to wait (`Retry-After`, or Stability's 60 s lockout).
    pub retry_after: Option<Duration>,
    /// The request may have reached the provider and been accepted (a timeout or a connection
    /// lost after sending): whether it will be billed is unknown, so it must not be sent again
    /// blind. `false` when the provider answered, or the connection was never made.
    pub outcome_unknown: bool,
}

/// What [`ProviderTransitions::record_intent`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitIntent {
    /// Recorded under this lease: the paid call may go out now.
    Recorded,
    /// An earlier attempt recorded its intent and never recorded a request id: it may have
    /// submitted (and been billed) before it died. Never submit again blind.
    EarlierAttempt,
    /// The lease was lost, the job is no longer processing, or a request id is already stored.
    Refused,
}

/// Stability AI's asynchronous Replace Background and Relight
/// (`docs/providers.md` §1.3 submit, §1.4 results).
#[async_trait]
pub trait RelightProvider: Send + Sync {
    /// Submits the images (`subject_image`, and `background_reference`/`light_reference` when
    /// the job has them); returns the 64-character generation id. Never retried inside: a
    /// submit can be billed.
    async fn submit(
        &self,
        images: Vec<ImagePart>,
        params: &crate::operation::relight::RelightParams,
    ) -> std::result::Result<String, ProviderError>;
    /// Polls `GET /v2beta/results/{id}`: 202 → [`PollStatus::Pending`], 200 → the image.
    async fn poll(&self, request_id: &str) -> std::result::Result<PollStatus, ProviderError>;
}

/// What [`ProviderTransitions::record_submission`] stores on the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSubmission {
    /// Provider name (`stability`).
    pub provider: String,
    /// The provider's request id.
    pub request_id: String,
    /// Unix seconds after which waiting ends with `provider_timeout`.
    pub deadline: i64,
    /// The provider's status/result/cancel URLs, when it gives them (fal.ai).
    pub links: Option<crate::job::ProviderLinks>,
}

impl ProviderSubmission {
    /// The `pending` due time (Unix seconds) the submission record writes: the first poll,
    /// sent right after it, plus [`crate::resources::POLL_GRACE_SECONDS`], at most the
    /// deadline. Should that poll never be sent (the record's answer was lost, the processor
    /// died), the recovery sweeper sends one a minute later, not at the deadline.
    pub fn first_poll_due(&self, now: OffsetDateTime) -> i64 {
        (now.unix_timestamp() + crate::resources::POLL_GRACE_SECONDS).min(self.deadline)
    }
}

/// A request accepted by fal.ai's queue (docs/providers.md §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRequest {
    /// fal's `request_id` (the key for the queue API and for webhooks).
    pub request_id: String,
    /// Where to ask, fetch and cancel.
    pub links: crate::job::ProviderLinks,
}

/// Where a fal.ai request stands (§2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueStatus {
    /// `IN_QUEUE` or `IN_PROGRESS` (HTTP 202).
    Pending,
    /// `COMPLETED` (HTTP 200): the output (or the error) is at `response_url`.
    Completed,
}

/// What fal.ai answered to a cancel (§2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// `OK` / `CANCELLATION_REQUESTED`: it will not run, or was told to stop.
    Requested,
    /// `ALREADY_COMPLETED` / `NOT_FOUND`: nothing left to stop.
    NothingToCancel,
}

/// Downloads from URLs that callers or providers give (input images, provider outputs), under
/// the rules of [`crate::egress`].
#[async_trait]
pub trait UrlFetcher: Send + Sync {
    /// The body of `GET url`, following at most [`crate::egress::MAX_REDIRECTS`] redirects.
    ///
    /// # Errors
    /// `invalid_input_reference` (not a URL), `url_scheme_not_allowed`,
    /// `url_address_not_allowed`, `too_many_redirects`, `payload_too_large` (over the policy's
    /// byte cap), `input_fetch_failed` (DNS, connection, non-2xx status, timeout).
    async fn fetch(&self, url: &str) -> Result<Bytes>;
}

/// Sends webhook deliveries to owners' URLs, under the rules of [`crate::egress`].
#[async_trait]
pub trait WebhookPoster: Send + Sync {
    /// `POST url` with `headers` and `body`; no redirect is followed and the answer's body is
    /// not read. Returns the HTTP status.
    ///
    /// # Errors
    /// `invalid_input_reference`, `url_scheme_not_allowed`, `url_address_not_allowed`,
    /// `input_fetch_failed` (DNS), and [`crate::Error::Unavailable`] (`webhook`) for connection
    /// failures and timeouts.
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Bytes) -> Result<u16>;
}

/// One image a hosted model made (docs/providers.md §2.9 `Image`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputImage {
    /// Where the provider serves it (fal CDN; expires, so it is copied to S3 at once).
    pub url: String,
    /// Its MIME type, when given.
    pub content_type: Option<String>,
}

/// What a hosted model returned (§2.9): the generated images, in order, and the seed used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOutput {
    /// The generated images, in order.
    pub images: Vec<OutputImage>,
    /// The seed used, when the model reports it.
    pub seed: Option<u64>,
}

/// fal.ai's queue API (docs/providers.md §2.2–§2.5). Each call is one HTTP request;
/// retries are the processor's (through the queue), never inside.
#[async_trait]
pub trait ModelQueue: Send + Sync {
    /// `POST {queue}/{model}` with the model input; `webhook` adds `?fal_webhook=`. Not
    /// idempotent (a submit can be billed).
    async fn submit(
        &self,
        request: &crate::operation::ModelRequest,
        webhook: Option<&str>,
    ) -> std::result::Result<QueuedRequest, ProviderError>;
    /// `GET status_url`.
    async fn status(
        &self,
        links: &crate::job::ProviderLinks,
    ) -> std::result::Result<QueueStatus, ProviderError>;
    /// `GET response_url`: the model output, or the request's error mapped to a code.
    async fn result(
        &self,
        links: &crate::job::ProviderLinks,
    ) -> std::result::Result<ModelOutput, ProviderError>;
    /// `PUT cancel_url`.
    async fn cancel(
        &self,
        links: &crate::job::ProviderLinks,
    ) -> std::result::Result<CancelOutcome, ProviderError>;
}

/// Once-only marks on a job waiting at a provider, each a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderMark {
    /// A verified completion webhook was accepted (replays are acknowledged, not re-queued).
    WebhookReceived,
    /// The provider's cancel call was made (a canceled job is canceled there once).
    CancelSent,
}

/// Stability AI's synchronous Remove Background (docs/providers.md §1.5).
#[async_trait]
pub trait RemoveBackgroundProvider: Send + Sync {
    /// Sends `image` (field `image`) with `output_format` (`png` | `webp`); the cutout comes
    /// back in the same call.
    async fn remove_background(
        &self,
        image: ImagePart,
        output_format: &str,
    ) -> std::result::Result<GeneratedImage, ProviderError>;
}

/// Provider-side transitions of a job that waits on an external provider.
#[async_trait]
pub trait ProviderTransitions: Send + Sync {
    /// Stores the provider's request id on a `processing` job held by `lease_token`, only if
    /// none is stored yet. `false` when the condition failed (lease lost or already submitted).
    async fn record_submission(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        submission: &ProviderSubmission,
        now: OffsetDateTime,
    ) -> Result<bool>;
    /// Records, under the lease `lease_token`, that a paid submit is about to go out (item
    /// attribute `provider_intent`), only if neither an intent nor a request id is stored. With
    /// [`Self::record_submission`] after the call, a redelivery can tell "never submitted" from
    /// "may have submitted" (docs/ARCHITECTURE.md "Recovery").
    async fn record_intent(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
    ) -> Result<SubmitIntent>;
    /// Withdraws this lease's intent after the provider refused the submit outright (an HTTP
    /// answer, or no connection at all): nothing was accepted, so a later attempt may submit.
    async fn clear_intent(&self, owner: &OwnerId, id: Ulid, lease_token: &str) -> Result<()>;
    /// Moves the `pending` due time (Unix seconds) of the `processing` job waiting on
    /// `request_id` to `due`, before its next poll message is sent: the poll's time plus
    /// [`crate::resources::POLL_GRACE_SECONDS`], so the recovery sweeper replaces a lost poll
    /// soon after it was due (docs/ARCHITECTURE.md "Recovery").
    ///
    /// With `seen`, only if the due time still is `seen` (the token the handled poll carried):
    /// `false` when another poll or the sweeper moved it since, and this poll chain must end.
    /// With `None`, unconditionally (a takeover). Our own write, its answer lost and sent again
    /// by the SDK, counts as applied. `false` also when the job no longer waits on the request.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the table cannot be written.
    async fn expect_poll(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        seen: Option<i64>,
        due: i64,
    ) -> Result<bool>;
    /// `processing → succeeded` for the job waiting on `request_id` (no lease: polls and
    /// webhooks do not hold one). `None` when it is no longer processing that request (canceled,
    /// already finished): the result is discarded.
    async fn complete_provider(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        result: &JobResult,
        warnings: &[String],
        now: OffsetDateTime,
    ) -> Result<Option<Job>>;
    /// Any non-terminal state `→ canceled`. `None` when the job is missing or already terminal.
    async fn cancel(&self, owner: &OwnerId, id: Ulid, now: OffsetDateTime) -> Result<Option<Job>>;
    /// Sets `mark` on the job waiting on `request_id`, once: `true` for the first caller,
    /// `false` when it was set before or the job waits on another request (or none).
    async fn mark_once(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        mark: ProviderMark,
        now: OffsetDateTime,
    ) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let id = Ulid::from_string("01JD0000000000000000000000").unwrap();
        assert_eq!(decode_job_cursor(&encode_job_cursor(id)).unwrap(), id);
        for bad in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("IDEM#x"),
            &URL_SAFE_NO_PAD.encode("JOB#nope"),
        ] {
            let err = decode_job_cursor(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_cursor", "{bad}");
        }
    }
}
