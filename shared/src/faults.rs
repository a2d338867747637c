//! Seeded fault injection through decorators on the ports, for the chaos suite and the local
//! runner only (feature `faults`; no deployed function enables it, `scripts/test.sh` checks).
//!
//! The emulator never answers a transaction conflict, a 500 after a committed write, or a
//! duplicate delivery, and production code must not be edited to fake them. So each port is
//! wrapped in [`Faulty`], which, before or after delegating to the real adapter, draws from one
//! seeded random stream and may:
//!
//! - [`FaultKind::Error`]: fail before the call (a throttle, a 500, a dropped connection);
//! - [`FaultKind::CommitThenError`]: make the call, then fail as if its response was lost
//!   (the write happened; the caller cannot know), and for a paid provider call, the request
//!   was accepted and billed but the answer never came (`outcome_unknown`);
//! - [`FaultKind::TransactionConflict`]: fail a transactional write as DynamoDB cancels one
//!   that raced another on the same quota item, after the adapter's own retries gave up;
//! - [`FaultKind::DuplicateSend`]: send a queue message twice (SQS's at-least-once delivery).
//!
//! A plan may also name one targeted abort ([`AbortPlan`], `abort=provider_submit:7`): the
//! process ends with `SIGABRT` right after its 7th successful call at that [`AbortPoint`],
//! inside the window issue #13 names (after the job write, after a paid provider submit, after
//! the result's S3 put, after the terminal write), where a random SIGKILL rarely lands. It
//! draws nothing from the seeded stream, so adding one leaves the other faults' sequence as
//! it was; only the chaos suite's worker and API processes carry one.
//!
//! Every fired fault is counted per kind ([`Faults::counts`]) so a run can prove each kind
//! fired, and a [`FaultPlan`] is printed at start (`FAULTS=seed=42,rate=0.05`) so the run can
//! be replayed from its seed. Concurrency decides which call gets which draw, so a replay
//! repeats the sequence of decisions, not the exact calls they land on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use time::OffsetDateTime;
use ulid::Ulid;

use crate::core::{
    BlobStore, CancelOutcome, Claim, Created, Cutout, GeneratedImage, Idempotency, ImagePart,
    JobPage, JobQueue, JobStore, JobTransitions, Lease, ListQuery, ModelOutput, ModelQueue,
    ObjectInfo, ObjectSummary, PendingJob, PendingJobs, PollStatus, ProviderError, ProviderMark,
    ProviderSubmission, ProviderTransitions, QueueStatus, QueuedRequest, RelightProvider,
    RemoveBackgroundProvider, Segmenter, SegmenterError, SubmitIntent,
};
use crate::error::{Error, Result};
use crate::job::{Job, JobError, JobMessage, JobResult, OwnerId, ProviderLinks};
use crate::operation::remove_background::RemoveBackgroundParams;

/// The kinds of fault a [`Faulty`] port injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// An error before the call: nothing happened.
    Error,
    /// The call happened, then an error: its response was lost.
    CommitThenError,
    /// A transactional write refused as a `TransactionConflict` (nothing written).
    TransactionConflict,
    /// A queue message sent twice.
    DuplicateSend,
}

impl FaultKind {
    /// Every kind, in the order tables print them.
    pub const ALL: [FaultKind; 4] = [
        Self::Error,
        Self::CommitThenError,
        Self::TransactionConflict,
        Self::DuplicateSend,
    ];

    /// The kind's name in a [`FaultPlan`] spec and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::CommitThenError => "commit_then_error",
            Self::TransactionConflict => "conflict",
            Self::DuplicateSend => "duplicate",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A window of the job lifecycle a targeted abort lands in: right after a successful call at
/// one of [`AbortPoint::sites`] (issue #13, "targeted aborts in each window").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AbortPoint {
    /// After the job record's create (before its queue send): window 1, the lost job.
    JobWrite,
    /// After a paid provider call was accepted (before its request id or result is recorded):
    /// window 2, paid twice.
    ProviderSubmit,
    /// After the result's S3 put (before the completion write).
    ResultPut,
    /// After the terminal write (before the notify message): window 5, notifications.
    TerminalWrite,
}

impl AbortPoint {
    /// Every point, in the order tables print them.
    pub const ALL: [AbortPoint; 4] = [
        Self::JobWrite,
        Self::ProviderSubmit,
        Self::ResultPut,
        Self::TerminalWrite,
    ];

    /// The point's name in a plan (`abort=<name>:<n>`) and in the abort line.
    pub fn name(self) -> &'static str {
        match self {
            Self::JobWrite => "job_write",
            Self::ProviderSubmit => "provider_submit",
            Self::ResultPut => "s3_put",
            Self::TerminalWrite => "terminal_write",
        }
    }

    /// The decorated call sites (`port.method`, as fault counts name them) after which this
    /// point aborts.
    pub fn sites(self) -> &'static [&'static str] {
        match self {
            Self::JobWrite => &["jobs.create"],
            Self::ProviderSubmit => &[
                "stability.submit",
                "stability.remove_background",
                "fal.submit",
            ],
            Self::ResultPut => &["blobs.put"],
            Self::TerminalWrite => &[
                "jobs.complete",
                "jobs.complete_provider",
                "jobs.fail",
                "jobs.cancel",
            ],
        }
    }
}

/// One targeted abort: the process ends right after its `after`-th successful call (1-based)
/// at `point`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortPlan {
    /// The window.
    pub point: AbortPoint,
    /// Which successful call at `point` is the last (≥ 1).
    pub after: u64,
}

/// What the process writes to stderr just before a targeted abort, followed by
/// `point=<name> site=<port.method> call=<n>`: a supervisor reads it to tell a planned abort
/// from a crash.
pub const ABORT_LINE: &str = "fault injected: abort";

/// A seed and a rate per kind: what a chaos run injects, written and read as
/// `seed=42,rate=0.05` (every kind at 5 %) with optional per-kind overrides
/// (`error=0.02,commit_then_error=0.02,conflict=0.1,duplicate=0.1`) and an optional targeted
/// abort (`abort=s3_put:3`; never implied by `rate`).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Seed of the random stream.
    pub seed: u64,
    /// Probability per eligible call, per kind (indexed like [`FaultKind::ALL`]).
    pub rates: [f64; 4],
    /// The process's targeted abort, if any.
    pub abort: Option<AbortPlan>,
}

impl FaultPlan {
    /// Every kind at `rate`.
    pub fn uniform(seed: u64, rate: f64) -> Self {
        Self {
            seed,
            rates: [rate; 4],
            abort: None,
        }
    }

    /// The rate of `kind`.
    pub fn rate(&self, kind: FaultKind) -> f64 {
        self.rates[kind.index()]
    }

    /// Parses a spec such as `seed=42,rate=0.05,conflict=0.2,abort=terminal_write:5`. `rate`
    /// sets every kind; a kind named after it overrides it; `abort=<point>:<n>` (n ≥ 1) plans a
    /// targeted abort. A seed is required, so every run names the one it used.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending pair.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut seed = None;
        let mut rates = [0.0; 4];
        let mut abort = None;
        let mut overrides: Vec<(FaultKind, f64)> = Vec::new();
        for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || Error::Config(format!("FAULTS: cannot read '{pair}'"));
            let (key, value) = pair.split_once('=').ok_or_else(bad)?;
            let (key, value) = (key.trim(), value.trim());
            if key == "seed" {
                seed = Some(value.parse::<u64>().map_err(|_| bad())?);
                continue;
            }
            if key == "abort" {
                let (point, after) = value.split_once(':').ok_or_else(bad)?;
                let point = AbortPoint::ALL
                    .into_iter()
                    .find(|p| p.name() == point.trim())
                    .ok_or_else(bad)?;
                let after = after
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(bad)?;
                abort = Some(AbortPlan { point, after });
                continue;
            }
            let rate = value
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(bad)?;
            if key == "rate" {
                rates = [rate; 4];
            } else {
                let kind = FaultKind::ALL
                    .into_iter()
                    .find(|k| k.name() == key)
                    .ok_or_else(bad)?;
                overrides.push((kind, rate));
            }
        }
        for (kind, rate) in overrides {
            rates[kind.index()] = rate;
        }
        let seed = seed.ok_or_else(|| Error::Config("FAULTS: seed=N is required".into()))?;
        Ok(Self { seed, rates, abort })
    }
}

impl std::fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed={}", self.seed)?;
        for kind in FaultKind::ALL {
            write!(f, ",{}={}", kind.name(), self.rate(kind))?;
        }
        if let Some(AbortPlan { point, after }) = self.abort {
            write!(f, ",abort={}:{after}", point.name())?;
        }
        Ok(())
    }
}

/// The shared state of a run's decorators: the seeded stream and the counters.
pub struct Faults {
    plan: FaultPlan,
    rng: Mutex<StdRng>,
    counts: [AtomicU64; 4],
    /// Fired faults by `port.method.kind`, for the log line that says where they landed.
    sites: Mutex<BTreeMap<String, u64>>,
    /// Successful calls so far at the planned abort's point.
    abort_calls: AtomicU64,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").field("plan", &self.plan).finish()
    }
}

impl Faults {
    /// Faults drawn from `plan.seed`'s stream at `plan`'s rates.
    pub fn new(plan: FaultPlan) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(plan.seed)),
            plan,
            counts: Default::default(),
            sites: Mutex::new(BTreeMap::new()),
            abort_calls: AtomicU64::new(0),
        }
    }

    /// The plan in effect.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Fired faults per kind, every kind listed (0 when it never fired).
    pub fn counts(&self) -> BTreeMap<FaultKind, u64> {
        FaultKind::ALL
            .into_iter()
            .map(|k| (k, self.counts[k.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// Fired faults per `port.method.kind`.
    pub fn sites(&self) -> BTreeMap<String, u64> {
        self.sites.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// One line for logs and reports: `error=12 commit_then_error=7 conflict=9 duplicate=15`.
    pub fn summary(&self) -> String {
        self.counts()
            .into_iter()
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Counts a successful call at `site`; true when it is the planned abort's call.
    fn abort_due(&self, site: &str) -> bool {
        let Some(plan) = self.plan.abort else {
            return false;
        };
        plan.point.sites().contains(&site)
            && self.abort_calls.fetch_add(1, Ordering::SeqCst) + 1 == plan.after
    }

    /// Ends the process (`SIGABRT`, no unwinding, no shutdown: a crash) when the call that
    /// just succeeded at `site` is the planned abort's; first says so on stderr
    /// ([`ABORT_LINE`]).
    fn after_success(&self, site: &str) {
        if let Some(plan) = self.plan.abort
            && self.abort_due(site)
        {
            eprintln!(
                "{ABORT_LINE} point={} site={site} call={}",
                plan.point.name(),
                plan.after
            );
            std::process::abort();
        }
    }

    /// Draws once among `kinds` (each with its own rate, tried in order); the first that
    /// fires is counted under `site` and returned.
    fn draw(&self, site: &str, kinds: &[FaultKind]) -> Option<FaultKind> {
        let fired = {
            let mut rng = self.rng.lock().ok()?;
            kinds
                .iter()
                .copied()
                .find(|k| rng.random::<f64>() < self.plan.rate(*k))
        }?;
        self.counts[fired.index()].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut sites) = self.sites.lock() {
            *sites.entry(format!("{site}.{}", fired.name())).or_default() += 1;
        }
        tracing::info!(site, kind = fired.name(), "fault injected");
        Some(fired)
    }
}

/// A port wrapped so that [`Faults`] can fail its calls; delegates everything else to `inner`.
#[derive(Debug, Clone)]
pub struct Faulty<T> {
    inner: T,
    faults: std::sync::Arc<Faults>,
}

impl<T> Faulty<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, faults: std::sync::Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

/// What a transient AWS failure looks like at the port: the adapters map SDK errors so.
fn unavailable(service: &'static str, site: &str, kind: FaultKind) -> Error {
    Error::unavailable(service, format!("injected {} at {site}", kind.name()))
}

use FaultKind::{CommitThenError, DuplicateSend, Error as Fail, TransactionConflict};

/// Reads: only an error before the call makes sense.
const READ: &[FaultKind] = &[Fail];
/// A single conditional write.
const WRITE: &[FaultKind] = &[Fail, CommitThenError];
/// A transaction over the job and its owner's quota items.
const TRANSACT: &[FaultKind] = &[Fail, TransactionConflict, CommitThenError];

impl<T> Faulty<T> {
    /// Runs `call` under a draw among `kinds` at `site`: an error before it, or after it
    /// (discarding its result) for [`FaultKind::CommitThenError`].
    async fn around<R, F>(
        &self,
        service: &'static str,
        site: &str,
        kinds: &[FaultKind],
        call: F,
    ) -> Result<R>
    where
        F: std::future::Future<Output = Result<R>>,
    {
        match self.faults.draw(site, kinds) {
            None => {
                let result = call.await;
                if result.is_ok() {
                    self.faults.after_success(site);
                }
                result
            }
            Some(CommitThenError) => {
                // The write's own outcome is thrown away as a lost response would be.
                let _ = call.await;
                Err(unavailable(service, site, CommitThenError))
            }
            Some(TransactionConflict) => Err(Error::unavailable(
                service,
                format!("TransactionCanceledException: [TransactionConflict] (injected at {site})"),
            )),
            Some(kind) => Err(unavailable(service, site, kind)),
        }
    }
}

#[async_trait]
impl<T: JobStore> JobStore for Faulty<T> {
    async fn create(&self, job: &Job, idempotency: Option<&Idempotency>) -> Result<Created> {
        self.around(
            "dynamodb",
            "jobs.create",
            TRANSACT,
            self.inner.create(job, idempotency),
        )
        .await
    }
    async fn find_idempotent(
        &self,
        owner: &OwnerId,
        idempotency: &Idempotency,
    ) -> Result<Option<Job>> {
        self.around(
            "dynamodb",
            "jobs.find_idempotent",
            READ,
            self.inner.find_idempotent(owner, idempotency),
        )
        .await
    }
    async fn get(&self, owner: &OwnerId, id: Ulid) -> Result<Option<Job>> {
        self.around("dynamodb", "jobs.get", READ, self.inner.get(owner, id))
            .await
    }
    async fn list(&self, owner: &OwnerId, query: &ListQuery) -> Result<JobPage> {
        self.inner.list(owner, query).await
    }
    async fn discard(
        &self,
        owner: &OwnerId,
        id: Ulid,
        idempotency_key: Option<&str>,
    ) -> Result<()> {
        self.around(
            "dynamodb",
            "jobs.discard",
            TRANSACT,
            self.inner.discard(owner, id, idempotency_key),
        )
        .await
    }
    // Both reads are advisory (the rate-limit headers, the quota pre-check): a failed one is
    // logged and the create goes on, a path the chaos suite now runs through too.
    async fn created_in_minute(&self, owner: &OwnerId, at: OffsetDateTime) -> Result<u32> {
        self.around(
            "dynamodb",
            "jobs.created_in_minute",
            READ,
            self.inner.created_in_minute(owner, at),
        )
        .await
    }

    async fn check_quota(&self, owner: &OwnerId, at: OffsetDateTime) -> Result<()> {
        self.around(
            "dynamodb",
            "jobs.check_quota",
            READ,
            self.inner.check_quota(owner, at),
        )
        .await
    }
}

#[async_trait]
impl<T: JobTransitions> JobTransitions for Faulty<T> {
    async fn claim(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease: &Lease,
        now: OffsetDateTime,
    ) -> Result<Claim> {
        self.around(
            "dynamodb",
            "jobs.claim",
            WRITE,
            self.inner.claim(owner, id, lease, now),
        )
        .await
    }
    async fn renew(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        seen: i64,
        until: i64,
    ) -> Result<bool> {
        self.around(
            "dynamodb",
            "jobs.renew",
            WRITE,
            self.inner.renew(owner, id, lease_token, seen, until),
        )
        .await
    }
    async fn complete(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        result: &JobResult,
        now: OffsetDateTime,
    ) -> Result<Job> {
        self.around(
            "dynamodb",
            "jobs.complete",
            TRANSACT,
            self.inner.complete(owner, id, lease_token, result, now),
        )
        .await
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
        self.around(
            "dynamodb",
            "jobs.release",
            WRITE,
            self.inner
                .release(owner, id, lease_token, refund_attempt, due, now),
        )
        .await
    }
    async fn fail(
        &self,
        owner: &OwnerId,
        id: Ulid,
        error: &JobError,
        now: OffsetDateTime,
    ) -> Result<Option<Job>> {
        self.around(
            "dynamodb",
            "jobs.fail",
            TRANSACT,
            self.inner.fail(owner, id, error, now),
        )
        .await
    }
}

#[async_trait]
impl<T: ProviderTransitions> ProviderTransitions for Faulty<T> {
    async fn record_submission(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
        submission: &ProviderSubmission,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.around(
            "dynamodb",
            "jobs.record_submission",
            WRITE,
            self.inner
                .record_submission(owner, id, lease_token, submission, now),
        )
        .await
    }
    async fn record_intent(
        &self,
        owner: &OwnerId,
        id: Ulid,
        lease_token: &str,
    ) -> Result<SubmitIntent> {
        self.around(
            "dynamodb",
            "jobs.record_intent",
            WRITE,
            self.inner.record_intent(owner, id, lease_token),
        )
        .await
    }
    async fn expect_poll(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        seen: Option<i64>,
        due: i64,
    ) -> Result<bool> {
        self.around(
            "dynamodb",
            "jobs.expect_poll",
            WRITE,
            self.inner.expect_poll(owner, id, request_id, seen, due),
        )
        .await
    }
    async fn clear_intent(&self, owner: &OwnerId, id: Ulid, lease_token: &str) -> Result<()> {
        self.around(
            "dynamodb",
            "jobs.clear_intent",
            WRITE,
            self.inner.clear_intent(owner, id, lease_token),
        )
        .await
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
        self.around(
            "dynamodb",
            "jobs.complete_provider",
            TRANSACT,
            self.inner
                .complete_provider(owner, id, request_id, result, warnings, now),
        )
        .await
    }
    async fn cancel(&self, owner: &OwnerId, id: Ulid, now: OffsetDateTime) -> Result<Option<Job>> {
        self.around(
            "dynamodb",
            "jobs.cancel",
            TRANSACT,
            self.inner.cancel(owner, id, now),
        )
        .await
    }
    async fn mark_once(
        &self,
        owner: &OwnerId,
        id: Ulid,
        request_id: &str,
        mark: ProviderMark,
        now: OffsetDateTime,
    ) -> Result<bool> {
        self.around(
            "dynamodb",
            "jobs.mark_once",
            WRITE,
            self.inner.mark_once(owner, id, request_id, mark, now),
        )
        .await
    }
}

#[async_trait]
impl<T: PendingJobs> PendingJobs for Faulty<T> {
    async fn due(&self, now: i64, limit: usize) -> Result<Vec<PendingJob>> {
        self.around("dynamodb", "pending.due", READ, self.inner.due(now, limit))
            .await
    }
    async fn postpone(&self, owner: &OwnerId, id: Ulid, seen: i64, until: i64) -> Result<bool> {
        self.around(
            "dynamodb",
            "pending.postpone",
            WRITE,
            self.inner.postpone(owner, id, seen, until),
        )
        .await
    }
}

#[async_trait]
impl<T: JobQueue> JobQueue for Faulty<T> {
    async fn send(&self, message: &JobMessage, delay: Duration) -> Result<()> {
        match self
            .faults
            .draw("queue.send", &[Fail, CommitThenError, DuplicateSend])
        {
            None => self.inner.send(message, delay).await,
            Some(DuplicateSend) => {
                self.inner.send(message, delay).await?;
                self.inner.send(message, delay).await
            }
            Some(CommitThenError) => {
                let _ = self.inner.send(message, delay).await;
                Err(unavailable("sqs", "queue.send", CommitThenError))
            }
            Some(kind) => Err(unavailable("sqs", "queue.send", kind)),
        }
    }
}

#[async_trait]
impl<T: BlobStore> BlobStore for Faulty<T> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<()> {
        self.around(
            "s3",
            "blobs.put",
            WRITE,
            self.inner.put(key, body, content_type),
        )
        .await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.around("s3", "blobs.get", READ, self.inner.get(key))
            .await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.around("s3", "blobs.head", READ, self.inner.head(key))
            .await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.around("s3", "blobs.delete", WRITE, self.inner.delete(key))
            .await
    }
    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectSummary>> {
        self.inner.list(prefix, limit).await
    }
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String> {
        self.inner.presign_get(key, expires_in).await
    }
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        expires_in: Duration,
    ) -> Result<String> {
        self.inner
            .presign_put(key, content_type, content_length, expires_in)
            .await
    }
}

#[async_trait]
impl<T: Segmenter> Segmenter for Faulty<T> {
    async fn remove_background(
        &self,
        image: Bytes,
        params: &RemoveBackgroundParams,
    ) -> std::result::Result<Cutout, SegmenterError> {
        let lost = |kind: FaultKind| {
            SegmenterError::Transient(format!("injected {} at segmenter", kind.name()))
        };
        match self.faults.draw("segmenter.remove_background", WRITE) {
            None => self.inner.remove_background(image, params).await,
            Some(CommitThenError) => {
                // The work was done and its answer lost: the retry does it again (not paid).
                let _ = self.inner.remove_background(image, params).await;
                Err(lost(CommitThenError))
            }
            Some(kind) => Err(lost(kind)),
        }
    }
}

/// A provider error as the clients map a 503 (`before`: nothing accepted) or a timeout after
/// the request was sent (accepted, maybe billed: `outcome_unknown`).
fn provider_fault(site: &str, kind: FaultKind) -> ProviderError {
    ProviderError {
        code: "provider_error",
        message: format!("injected {} at {site}", kind.name()),
        retryable: true,
        retry_after: None,
        outcome_unknown: kind == CommitThenError,
    }
}

impl<T> Faulty<T> {
    /// Runs a paid provider call under a draw: an error before it, or after it (accepted and
    /// billed, answer lost).
    async fn paid<R, F>(&self, site: &str, call: F) -> std::result::Result<R, ProviderError>
    where
        F: std::future::Future<Output = std::result::Result<R, ProviderError>>,
    {
        match self.faults.draw(site, WRITE) {
            None => {
                let result = call.await;
                if result.is_ok() {
                    self.faults.after_success(site);
                }
                result
            }
            Some(CommitThenError) => {
                let _ = call.await;
                Err(provider_fault(site, CommitThenError))
            }
            Some(kind) => Err(provider_fault(site, kind)),
        }
    }

    /// Runs a provider read (a poll, a status) under a draw: an error before it only.
    async fn probe<R, F>(&self, site: &str, call: F) -> std::result::Result<R, ProviderError>
    where
        F: std::future::Future<Output = std::result::Result<R, ProviderError>>,
    {
        match self.faults.draw(site, READ) {
            None => call.await,
            Some(kind) => Err(provider_fault(site, kind)),
        }
    }
}

#[async_trait]
impl<T: RelightProvider> RelightProvider for Faulty<T> {
    async fn submit(
        &self,
        images: Vec<ImagePart>,
        params: &crate::operation::relight::RelightParams,
    ) -> std::result::Result<String, ProviderError> {
        self.paid("stability.submit", self.inner.submit(images, params))
            .await
    }
    async fn poll(&self, request_id: &str) -> std::result::Result<PollStatus, ProviderError> {
        self.probe("stability.poll", self.inner.poll(request_id))
            .await
    }
}

#[async_trait]
impl<T: RemoveBackgroundProvider> RemoveBackgroundProvider for Faulty<T> {
    async fn remove_background(
        &self,
        image: ImagePart,
        output_format: &str,
    ) -> std::result::Result<GeneratedImage, ProviderError> {
        self.paid(
            "stability.remove_background",
            self.inner.remove_background(image, output_format),
        )
        .await
    }
}

#[async_trait]
impl<T: ModelQueue> ModelQueue for Faulty<T> {
    async fn submit(
        &self,
        request: &crate::operation::ModelRequest,
        webhook: Option<&str>,
    ) -> std::result::Result<QueuedRequest, ProviderError> {
        self.paid("fal.submit", self.inner.submit(request, webhook))
            .await
    }
    async fn status(
        &self,
        links: &ProviderLinks,
    ) -> std::result::Result<QueueStatus, ProviderError> {
        self.probe("fal.status", self.inner.status(links)).await
    }
    async fn result(
        &self,
        links: &ProviderLinks,
    ) -> std::result::Result<ModelOutput, ProviderError> {
        self.probe("fal.result", self.inner.result(links)).await
    }
    async fn cancel(
        &self,
        links: &ProviderLinks,
    ) -> std::result::Result<CancelOutcome, ProviderError> {
        self.probe("fal.cancel", self.inner.cancel(links)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_with_overrides_and_refuse_nonsense() {
        let plan = FaultPlan::parse("seed=42, rate=0.05, conflict=0.2").unwrap();
        assert_eq!(plan.seed, 42);
        assert_eq!(plan.rate(FaultKind::Error), 0.05);
        assert_eq!(plan.rate(FaultKind::TransactionConflict), 0.2);
        // An override given before `rate` still wins.
        let plan = FaultPlan::parse("duplicate=0.5,rate=0.1,seed=7").unwrap();
        assert_eq!(plan.rate(FaultKind::DuplicateSend), 0.5);
        assert_eq!(plan.rate(FaultKind::CommitThenError), 0.1);
        assert_eq!(FaultPlan::parse(&plan.to_string()).unwrap(), plan);
        for bad in [
            "rate=0.1",
            "seed=x",
            "seed=1,rate=2",
            "seed=1,boom=0.1",
            "seed",
            "seed=1,abort=s3_put",
            "seed=1,abort=s3_put:0",
            "seed=1,abort=somewhere:3",
        ] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_abort_is_planned_by_name_only_and_survives_a_round_trip() {
        assert_eq!(FaultPlan::parse("seed=1,rate=1").unwrap().abort, None);
        let plan = FaultPlan::parse("seed=3,rate=0.01,abort=provider_submit:7").unwrap();
        assert_eq!(
            plan.abort,
            Some(AbortPlan {
                point: AbortPoint::ProviderSubmit,
                after: 7
            })
        );
        assert_eq!(FaultPlan::parse(&plan.to_string()).unwrap(), plan);
    }

    #[test]
    fn the_planned_abort_falls_on_its_nth_call_at_its_point_only() {
        let mut plan = FaultPlan::uniform(5, 0.0);
        plan.abort = Some(AbortPlan {
            point: AbortPoint::TerminalWrite,
            after: 3,
        });
        let faults = Faults::new(plan);
        // Other points' sites never count towards it.
        for site in ["jobs.create", "blobs.put", "fal.submit", "jobs.claim"] {
            assert!(!faults.abort_due(site), "{site}");
        }
        let due: Vec<bool> = [
            "jobs.complete",
            "jobs.fail",
            "jobs.complete_provider",
            "jobs.cancel",
        ]
        .into_iter()
        .map(|site| faults.abort_due(site))
        .collect();
        assert_eq!(due, [false, false, true, false]);
        // Without a plan nothing is ever due.
        let none = Faults::new(FaultPlan::uniform(5, 1.0));
        assert!((0..10).all(|_| !none.abort_due("jobs.complete")));
    }

    #[test]
    fn the_same_seed_draws_the_same_faults_and_counts_them() {
        let run = |seed| {
            let faults = Faults::new(FaultPlan::uniform(seed, 0.3));
            let fired: Vec<Option<FaultKind>> = (0..200)
                .map(|_| faults.draw("t", &[Fail, CommitThenError]))
                .collect();
            (fired, faults.counts())
        };
        let (a, counts) = run(42);
        assert_eq!(run(42).0, a);
        assert_ne!(run(43).0, a);
        let errors = a.iter().filter(|k| **k == Some(Fail)).count() as u64;
        let lost = a.iter().filter(|k| **k == Some(CommitThenError)).count() as u64;
        assert_eq!(counts[&Fail], errors);
        assert_eq!(counts[&CommitThenError], lost);
        assert!(errors > 30 && lost > 10, "{errors} {lost}");
        assert_eq!(counts[&DuplicateSend], 0);
    }

    /// The decorators do what they say to the port they wrap: a commit-then-error leaves the
    /// write done, an error before the call leaves nothing, a duplicate sends twice.
    #[cfg(feature = "fakes")]
    #[test]
    fn decorators_fail_around_the_real_call() {
        use crate::fakes::{InMemoryJobs, InMemoryQueue};
        use crate::job::Operation;
        use crate::operation::remove_background::RemoveBackgroundParams;
        let only = |kind: FaultKind| {
            let mut plan = FaultPlan::uniform(1, 0.0);
            plan.rates[kind.index()] = 1.0;
            std::sync::Arc::new(Faults::new(plan))
        };
        let job = || {
            Job::new(
                Ulid::new(),
                OwnerId::parse("team-a").unwrap(),
                Operation::RemoveBackground(RemoveBackgroundParams::with_model("u2net")),
                Default::default(),
                OffsetDateTime::now_utc(),
                time::Duration::days(1),
            )
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                let lost = Faulty::new(InMemoryJobs::new(), only(CommitThenError));
                let written = job();
                assert!(lost.create(&written, None).await.is_err());
                let stored = lost.inner.get(&written.owner, written.id).await.unwrap();
                assert!(stored.is_some(), "the write happened, its answer was lost");

                let refused = Faulty::new(InMemoryJobs::new(), only(Fail));
                let never = job();
                assert!(refused.create(&never, None).await.is_err());
                assert_eq!(
                    refused.inner.get(&never.owner, never.id).await.unwrap(),
                    None
                );

                let conflicted = Faulty::new(InMemoryJobs::new(), only(TransactionConflict));
                let err = conflicted.create(&job(), None).await.unwrap_err();
                assert!(err.to_string().contains("TransactionConflict"), "{err}");
                assert_eq!(conflicted.faults.counts()[&TransactionConflict], 1);

                let twice = Faulty::new(InMemoryQueue::new(), only(DuplicateSend));
                let message = JobMessage::Run {
                    owner: written.owner.clone(),
                    job_id: written.id,
                };
                twice.send(&message, Duration::ZERO).await.unwrap();
                assert_eq!(twice.inner.sent().len(), 2);
                assert_eq!(twice.faults.counts()[&DuplicateSend], 1);
            });
    }
}
