//! The processor: an SQS consumer that runs each job exactly once in effect.
//!
//! Per message: claim the job with a conditional write (`queued → processing`, or take over an
//! expired lease) → read the input → run the operation → write the result to S3 under a
//! deterministic key → `processing → succeeded` (only by the lease holder). A duplicate delivery
//! finds the job leased or terminal and is acknowledged without running anything.
//!
//! Failures: permanent ones (undecodable image, unknown model) fail the job at once with the
//! engine's code; transient ones (segmenter 5xx or timeout, S3 errors) return the message as a
//! batch item failure so SQS redelivers it after the visibility timeout — except on the last
//! receive before the dead-letter queue, where the job is failed with `retries_exhausted`.
//! Messages that reach the dead-letter queue anyway (a crash or timeout on the last receive)
//! are consumed from it and fail their job the same way, so no job stays `processing` forever.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use shared::adapters::{Aws, FalClient, HttpSegmenter, PublicHttp, StabilityClient};
use shared::config::Settings;
use shared::core::{
    BlobStore, CancelOutcome, Claim, ImagePart, JobQueue, JobStore, JobTransitions, Lease,
    ModelQueue, PollStatus, ProviderError, ProviderMark, ProviderSubmission, ProviderTransitions,
    QueueStatus, RelightProvider, RemoveBackgroundProvider, Segmenter, SegmenterError, UrlFetcher,
};
use shared::egress::FetchPolicy;
use shared::job::{
    self, Job, JobError, JobMessage, JobResult, Operation, ProviderLinks, ResultImage,
};
use shared::operation::relight::RelightParams;
use shared::operation::remove_background::{RemovalProvider, RemoveBackgroundParams};
use shared::providers::ProviderSettings;

use crate::error::ProcessorError;

/// Delay before poll number `attempt` (0-based): `base`, doubling, capped at 15 minutes (SQS's
/// largest `DelaySeconds`). Stability asks for ≥ 10 s between polls (docs/providers.md §1.4),
/// the default base.
pub fn poll_delay(base: Duration, attempt: u32) -> Duration {
    let max = Duration::from_secs(900);
    base.saturating_mul(1u32 << attempt.min(10)).min(max)
}

/// Runs jobs from queue messages.
#[derive(Clone)]
pub struct Processor {
    transitions: Arc<dyn JobTransitions>,
    blobs: Arc<dyn BlobStore>,
    segmenter: Arc<dyn Segmenter>,
    max_receive_count: u32,
    lease: Duration,
    dead_letter_queue_arn: Option<String>,
    providers: Option<Providers>,
    /// Job-end notifications ([`crate::notify`]); `None` skips `notify` messages.
    pub(crate) notifier: Option<Arc<crate::notify::Notifier>>,
}

/// What the provider-backed operations need: the job reads and provider transitions, the queue
/// for poll messages, and the provider clients (`None` when the key is not configured).
#[derive(Clone)]
pub struct Providers {
    /// Reads jobs on poll messages.
    pub store: Arc<dyn JobStore>,
    /// Provider-side conditional writes.
    pub transitions: Arc<dyn ProviderTransitions>,
    /// Where poll messages go (the jobs queue itself).
    pub queue: Arc<dyn JobQueue>,
    /// Stability, when `STABILITY_API_KEY` is set.
    pub relight: Option<Arc<dyn RelightProvider>>,
    /// Stability's synchronous remove-background, when `STABILITY_API_KEY` is set.
    pub remove_background: Option<Arc<dyn RemoveBackgroundProvider>>,
    /// fal.ai's queue (`edit`, `generate`), when `FAL_KEY` is set.
    pub models: Option<Arc<dyn ModelQueue>>,
    /// How provider output URLs are downloaded (public https only, outside development).
    pub downloads: Arc<dyn UrlFetcher>,
    /// Poll cadence, deadline, model ids, webhook base URL.
    pub settings: ProviderSettings,
}

/// Largest provider output downloaded, bytes (a 4096×4096 PNG fits).
const OUTPUT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The download policy for provider outputs: the same address rules as URL inputs, and a
/// 64 MiB cap (a 4096×4096 PNG fits).
pub fn output_downloads(settings: &Settings) -> FetchPolicy {
    FetchPolicy {
        allow_http: settings.allow_http_urls,
        allow_private: settings.allow_private_urls,
        allowed_addresses: Vec::new(),
        max_bytes: OUTPUT_MAX_BYTES,
        timeout: Duration::from_secs(60),
        resolver: None,
    }
}

/// Processor tuning beyond [`Settings`].
#[derive(Debug, Clone)]
pub struct ProcessorOptions {
    /// How long a claim is exclusive (`LEASE_SECONDS`, default 90: longer than one Lambda run,
    /// shorter than the queue's visibility timeout, so a redelivery after a crash can take over).
    pub lease: Duration,
    /// ARN of the dead-letter queue (`DEAD_LETTER_QUEUE_ARN`); records from it fail their job.
    pub dead_letter_queue_arn: Option<String>,
    /// Provider keys, hosts and poll cadence ([`ProviderSettings::from_env`]).
    pub providers: ProviderSettings,
}

impl ProcessorOptions {
    /// Reads the options from the environment.
    ///
    /// # Errors
    /// [`ProcessorError::Config`] naming a variable that is set but unusable (a garbage
    /// `LEASE_SECONDS` or provider setting fails start-up instead of falling back to a default).
    pub fn from_env() -> Result<Self, ProcessorError> {
        let env = shared::env::Env::process();
        Ok(Self {
            lease: env
                .seconds("LEASE_SECONDS", Duration::from_secs(90))
                .map_err(|e| ProcessorError::Config(e.to_string()))?,
            dead_letter_queue_arn: env.text("DEAD_LETTER_QUEUE_ARN"),
            providers: ProviderSettings::from_env()?,
        })
    }
}

/// How one record ended, for the batch response and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job succeeded.
    Succeeded,
    /// The job failed permanently with this code.
    Failed(String),
    /// Nothing to do: duplicate delivery, finished or missing job, poison message.
    Skipped(&'static str),
    /// Transient failure: SQS should redeliver the message.
    Retry(String),
    /// Submitted to (or still running at) a provider; a poll message is scheduled.
    Waiting,
}

impl Processor {
    /// Builds a processor over the given ports.
    pub fn new(
        transitions: Arc<dyn JobTransitions>,
        blobs: Arc<dyn BlobStore>,
        segmenter: Arc<dyn Segmenter>,
        settings: &Settings,
        options: ProcessorOptions,
    ) -> Self {
        Self {
            transitions,
            blobs,
            segmenter,
            max_receive_count: settings.max_receive_count,
            lease: options.lease,
            dead_letter_queue_arn: options.dead_letter_queue_arn,
            providers: None,
            notifier: None,
        }
    }

    /// Enables the provider-backed operations.
    pub fn with_providers(mut self, providers: Providers) -> Self {
        self.providers = Some(providers);
        self
    }

    /// Builds the processor from the environment (`SEGMENTER_URL` is required).
    ///
    /// # Errors
    /// [`ProcessorError::Config`] naming what is missing.
    pub async fn from_env() -> Result<Self, ProcessorError> {
        let settings = Settings::from_env()?;
        let sdk = shared::adapters::aws_sdk_config().await?;
        let aws = Aws::with_sdk_config(&sdk, &settings);
        let notify = crate::notify::NotifySettings::from_env()?;
        Ok(
            Self::with_aws(&settings, &aws, ProcessorOptions::from_env()?)?.with_notifier(
                crate::notify::Notifier::with_aws(&sdk, &settings, &aws, notify)?,
            ),
        )
    }

    /// Builds the processor over the AWS adapters and the HTTP segmenter.
    ///
    /// # Errors
    /// [`ProcessorError::Config`] when `SEGMENTER_URL` is not set.
    pub fn with_aws(
        settings: &Settings,
        aws: &Aws,
        options: ProcessorOptions,
    ) -> Result<Self, ProcessorError> {
        let url = settings
            .segmenter_url
            .as_deref()
            .ok_or_else(|| ProcessorError::Config("SEGMENTER_URL is not set".into()))?;
        let segmenter = HttpSegmenter::new(url, settings.segmenter_timeout)?;
        let provider_settings = options.providers.clone();
        let stability = match &provider_settings.stability_api_key {
            Some(key) => Some(Arc::new(StabilityClient::new(
                &provider_settings.stability_base_url,
                key,
                provider_settings.stability_timeout,
            )?)),
            None => None,
        };
        let fal = match &provider_settings.fal_key {
            Some(key) => Some(Arc::new(FalClient::new(
                &provider_settings.fal_queue_url,
                key,
                provider_settings.fal_timeout,
            )?) as Arc<dyn ModelQueue>),
            None => None,
        };
        Ok(Self::new(
            Arc::new(aws.jobs.clone()),
            Arc::new(aws.blobs.clone()),
            Arc::new(segmenter),
            settings,
            options,
        )
        .with_providers(Providers {
            store: Arc::new(aws.jobs.clone()),
            transitions: Arc::new(aws.jobs.clone()),
            queue: Arc::new(aws.queue.clone()),
            relight: stability.clone().map(|c| c as Arc<dyn RelightProvider>),
            remove_background: stability.map(|c| c as Arc<dyn RemoveBackgroundProvider>),
            models: fal,
            downloads: Arc::new(PublicHttp::new(output_downloads(settings))?),
            settings: provider_settings,
        }))
    }

    /// Handles a batch; the records that should be redelivered are reported as failures
    /// (`ReportBatchItemFailures`), the rest are deleted by the event source mapping.
    ///
    /// Records of different jobs run concurrently; records of the same job (a duplicate
    /// delivery, or a run and a poll) run one after the other, so the second sees what the
    /// first wrote instead of racing it to the same conditional write.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
        for (i, record) in event.records.iter().enumerate() {
            let job = record
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<JobMessage>(b).ok())
                .map(|m| {
                    let (owner, id) = m.job();
                    format!("{owner}/{id}")
                });
            match groups.iter_mut().find(|(k, _)| job.is_some() && *k == job) {
                Some((_, members)) => members.push(i),
                None => groups.push((job, vec![i])),
            }
        }
        let records = &event.records;
        let grouped = futures::future::join_all(groups.iter().map(|(_, members)| async move {
            let mut outcomes = Vec::with_capacity(members.len());
            for &i in members {
                outcomes.push((i, self.handle_record(&records[i]).await));
            }
            outcomes
        }))
        .await;
        let mut outcomes: Vec<(usize, Outcome)> = grouped.into_iter().flatten().collect();
        outcomes.sort_by_key(|(i, _)| *i);
        let mut response = SqsBatchResponse::default();
        for (record, (_, outcome)) in event.records.iter().zip(outcomes) {
            if let Outcome::Retry(_) = outcome
                && let Some(id) = &record.message_id
            {
                response.add_failure(id.clone());
            }
        }
        response
    }

    /// Handles one record.
    pub async fn handle_record(&self, record: &SqsMessage) -> Outcome {
        let Some(message) = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<JobMessage>(b).ok())
        else {
            // Redelivering a message nobody can read only delays the dead-letter queue.
            tracing::error!(message_id = ?record.message_id, "unreadable queue message dropped");
            return Outcome::Skipped("unreadable message");
        };
        let (owner, job_id) = message.job();
        let span = tracing::info_span!("job", %job_id, %owner);
        let _guard = span.enter();
        let from_dead_letter_queue = self.dead_letter_queue_arn.is_some()
            && record.event_source_arn == self.dead_letter_queue_arn;
        let receive_count: u32 = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let outcome = if from_dead_letter_queue {
            self.exhausted(&message, "the message reached the dead-letter queue")
                .await
        } else if let JobMessage::Notify { attempt, .. } = &message {
            match &self.notifier {
                Some(notifier) => notifier.handle(owner, job_id, *attempt).await,
                None => Outcome::Skipped("notifications are not configured"),
            }
        } else if let JobMessage::Poll {
            request_id,
            attempt,
            ..
        } = &message
        {
            match self.poll(owner, job_id, request_id, *attempt).await {
                Outcome::Retry(reason) if receive_count >= self.max_receive_count => {
                    self.exhausted(&message, &reason).await
                }
                other => other,
            }
        } else {
            match self.run(&message).await {
                Outcome::Retry(reason) if receive_count >= self.max_receive_count => {
                    self.exhausted(&message, &reason).await
                }
                other => other,
            }
        };
        // The job ended here (run, poll, dead letter): tell whoever asked to be told.
        if let (Outcome::Succeeded | Outcome::Failed(_), Some(notifier)) =
            (&outcome, &self.notifier)
        {
            notifier.job_ended(owner, job_id).await;
        }
        tracing::info!(?outcome, receive_count, "message handled");
        outcome
    }

    async fn exhausted(&self, message: &JobMessage, reason: &str) -> Outcome {
        let (owner, job_id) = message.job();
        let error = JobError::new(
            "retries_exhausted",
            format!(
                "gave up after {} attempts: {reason}",
                self.max_receive_count
            ),
        );
        match self
            .transitions
            .fail(owner, job_id, &error, OffsetDateTime::now_utc())
            .await
        {
            Ok(Some(_)) => Outcome::Failed(error.code),
            Ok(None) => Outcome::Skipped("already finished"),
            Err(e) => Outcome::Retry(format!("could not record the failure: {e}")),
        }
    }

    async fn run(&self, message: &JobMessage) -> Outcome {
        let (owner, job_id) = message.job();
        let now = OffsetDateTime::now_utc();
        let lease = Lease {
            token: ulid::Ulid::new().to_string(),
            until: now.unix_timestamp() + self.lease.as_secs() as i64,
        };
        let job = match self.transitions.claim(owner, job_id, &lease, now).await {
            Ok(Claim::Claimed(job)) => job,
            Ok(Claim::Leased(_)) => return Outcome::Skipped("another processor holds the lease"),
            Ok(Claim::Terminal(_)) => return Outcome::Skipped("already finished"),
            Ok(Claim::Missing) => return Outcome::Skipped("no such job"),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        if !matches!(job.operation, Operation::RemoveBackground(_)) {
            return self.submit_to_provider(&job, &lease).await;
        }
        match self.execute(&job).await {
            Ok(result) => {
                match self
                    .transitions
                    .complete(
                        owner,
                        job_id,
                        &lease.token,
                        &result,
                        OffsetDateTime::now_utc(),
                    )
                    .await
                {
                    Ok(_) => Outcome::Succeeded,
                    Err(shared::Error::Conflict(_)) => {
                        Outcome::Skipped("lease lost to another processor")
                    }
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Err(Step::Permanent(error)) => {
                match self
                    .transitions
                    .fail(owner, job_id, &error, OffsetDateTime::now_utc())
                    .await
                {
                    Ok(_) => Outcome::Failed(error.code),
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
            Err(Step::Transient(reason)) => Outcome::Retry(reason),
        }
    }

    /// Runs the operation and stores its output; no job state changes here.
    async fn execute(&self, job: &Job) -> Result<JobResult, Step> {
        match &job.operation {
            Operation::ReplaceBackgroundRelight(_)
            | Operation::Edit(_)
            | Operation::Generate(_) => Err(Step::Permanent(JobError::new(
                "invalid_job",
                format!(
                    "{} runs through submit/poll, not execute",
                    job.operation.name()
                ),
            ))),
            Operation::RemoveBackground(params) => {
                let input = job.inputs.get("image").ok_or_else(|| {
                    Step::Permanent(JobError::new("invalid_job", "the job has no input image"))
                })?;
                let image = self.blobs.get(&input.key).await.map_err(|e| match e {
                    shared::Error::NotFound(what) => Step::Permanent(JobError::new(
                        "input_not_found",
                        format!("{what} no longer exists"),
                    )),
                    other => Step::Transient(other.to_string()),
                })?;
                if params.provider == RemovalProvider::Stability {
                    return self.remove_with_stability(job, params, input, image).await;
                }
                let cutout = self
                    .segmenter
                    .remove_background(image, params)
                    .await
                    .map_err(|e| match e {
                        SegmenterError::Permanent { code, message } => {
                            Step::Permanent(JobError::new(code, message))
                        }
                        SegmenterError::Transient(reason) => Step::Transient(reason),
                    })?;
                let key = job::result_key(&job.owner, job.id, params.output_format.extension());
                let bytes = cutout.bytes.len() as u64;
                self.blobs
                    .put(&key, cutout.bytes, &cutout.content_type)
                    .await
                    .map_err(|e| Step::Transient(e.to_string()))?;
                Ok(JobResult {
                    key,
                    content_type: cutout.content_type,
                    width: cutout.width,
                    height: cutout.height,
                    bytes,
                    engine: Some(cutout.engine),
                    foreground_fraction: cutout.foreground_fraction,
                    images: Vec::new(),
                    seed: None,
                })
            }
        }
    }
}

/// `provider_not_configured`, naming the setting that is missing.
fn not_configured(message: &str) -> JobError {
    JobError::new("provider_not_configured", message)
}
const STABILITY_UNSET: &str = "Stability is not configured: set STABILITY_API_KEY";
const FAL_UNSET: &str = "fal.ai is not configured: set FAL_KEY";

enum Step {
    Permanent(JobError),
    Transient(String),
}

impl Processor {
    /// `remove_background` with `provider = stability`: one synchronous call
    /// (docs/providers.md §1.5).
    async fn remove_with_stability(
        &self,
        job: &Job,
        params: &RemoveBackgroundParams,
        input: &shared::job::InputImage,
        image: bytes::Bytes,
    ) -> Result<JobResult, Step> {
        let Some(provider) = self
            .providers
            .as_ref()
            .and_then(|p| p.remove_background.clone())
        else {
            return Err(Step::Permanent(not_configured(STABILITY_UNSET)));
        };
        let cutout = provider
            .remove_background(
                ImagePart {
                    field: "image".into(),
                    bytes: image,
                    content_type: input.content_type.clone(),
                },
                params.output_format.as_str(),
            )
            .await
            .map_err(|e| {
                if e.retryable {
                    Step::Transient(e.to_string())
                } else {
                    Step::Permanent(JobError::new(e.code, e.message))
                }
            })?;
        let info =
            shared::image_check::probe(&cutout.bytes, &shared::image_check::ImageLimits::default())
                .map_err(|e| {
                    Step::Permanent(JobError::new(
                        "provider_error",
                        format!("the provider's image is unusable: {e}"),
                    ))
                })?;
        let foreground_fraction =
            shared::image_check::foreground_fraction(&cutout.bytes).map_err(|e| {
                Step::Permanent(JobError::new(
                    "provider_error",
                    format!("the provider's image is unusable: {e}"),
                ))
            })?;
        if foreground_fraction == 0.0 {
            return Err(Step::Permanent(JobError::new(
                "no_foreground",
                "the provider's cutout is fully transparent: it found no foreground",
            )));
        }
        let key = job::result_key(&job.owner, job.id, info.extension());
        let bytes = cutout.bytes.len() as u64;
        self.blobs
            .put(&key, cutout.bytes, info.content_type())
            .await
            .map_err(|e| Step::Transient(e.to_string()))?;
        Ok(JobResult {
            key,
            content_type: info.content_type().to_owned(),
            width: info.width,
            height: info.height,
            bytes,
            engine: Some("stability/remove-background".into()),
            foreground_fraction: Some(foreground_fraction),
            images: Vec::new(),
            seed: None,
        })
    }

    async fn fail_job(&self, job: &Job, error: JobError) -> Outcome {
        match self
            .transitions
            .fail(&job.owner, job.id, &error, OffsetDateTime::now_utc())
            .await
        {
            Ok(_) => Outcome::Failed(error.code),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    async fn schedule_poll(
        &self,
        providers: &Providers,
        job: &Job,
        request_id: &str,
        attempt: u32,
        at_least: Option<Duration>,
    ) -> Outcome {
        let delay =
            poll_delay(providers.settings.poll_delay, attempt).max(at_least.unwrap_or_default());
        let message = JobMessage::Poll {
            owner: job.owner.clone(),
            job_id: job.id,
            request_id: request_id.to_owned(),
            attempt,
        };
        match providers.queue.send(&message, delay).await {
            Ok(()) => Outcome::Waiting,
            Err(e) => Outcome::Retry(format!("could not schedule the poll: {e}")),
        }
    }

    /// First step of a provider-backed job: submit once, store the request id, schedule a poll.
    async fn submit_to_provider(&self, job: &Job, lease: &Lease) -> Outcome {
        let Some(providers) = &self.providers else {
            return self
                .fail_job(
                    job,
                    not_configured("this processor has no provider support"),
                )
                .await;
        };
        // A run message redelivered after the submit (the lease expired, or the poll could not
        // be scheduled) resumes polling instead of submitting (and paying) again.
        if let Some(request_id) = &job.provider_request_id {
            return self
                .schedule_poll(providers, job, request_id, 0, None)
                .await;
        }
        match &job.operation {
            Operation::ReplaceBackgroundRelight(params) => {
                self.submit_relight(providers, job, params, lease).await
            }
            _ => self.submit_to_fal(providers, job, lease).await,
        }
    }

    /// Stability's relight submit (multipart with the job's images).
    async fn submit_relight(
        &self,
        providers: &Providers,
        job: &Job,
        params: &RelightParams,
        lease: &Lease,
    ) -> Outcome {
        let Some(relight) = &providers.relight else {
            return self.fail_job(job, not_configured(STABILITY_UNSET)).await;
        };
        if !job.inputs.contains_key("image") {
            return self
                .fail_job(
                    job,
                    JobError::new("invalid_job", "the job has no subject image"),
                )
                .await;
        }
        let mut images = Vec::new();
        for (name, input) in &job.inputs {
            let field = if name == "image" {
                "subject_image"
            } else {
                name.as_str()
            };
            match self.blobs.get(&input.key).await {
                Ok(bytes) => images.push(ImagePart {
                    field: field.to_owned(),
                    bytes,
                    content_type: input.content_type.clone(),
                }),
                Err(shared::Error::NotFound(what)) => {
                    return self
                        .fail_job(
                            job,
                            JobError::new("input_not_found", format!("{what} no longer exists")),
                        )
                        .await;
                }
                Err(e) => return Outcome::Retry(e.to_string()),
            }
        }
        let request_id = match relight.submit(images, params).await {
            Ok(id) => id,
            Err(e) => return self.provider_failed(job, e).await,
        };
        self.record_and_poll(providers, job, lease, "stability", request_id, None)
            .await
    }

    /// Stores the provider request on the job (once: the conditional write is what keeps a
    /// redelivered message from submitting and paying twice) and schedules the first poll.
    async fn record_and_poll(
        &self,
        providers: &Providers,
        job: &Job,
        lease: &Lease,
        provider: &str,
        request_id: String,
        links: Option<ProviderLinks>,
    ) -> Outcome {
        let now = OffsetDateTime::now_utc();
        let deadline = now.unix_timestamp() + providers.settings.provider_deadline.as_secs() as i64;
        match providers
            .transitions
            .record_submission(
                &job.owner,
                job.id,
                &lease.token,
                &ProviderSubmission {
                    provider: provider.into(),
                    request_id: request_id.clone(),
                    deadline,
                    links,
                },
                now,
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => return Outcome::Skipped("lease lost or already submitted"),
            Err(e) => {
                // The provider has the request but we could not store its id; retrying would
                // submit again, so the job waits for the lease to expire and the redelivery.
                tracing::error!(%request_id, error = %e, "submitted but could not record the request id");
                return Outcome::Retry(e.to_string());
            }
        }
        tracing::info!(%request_id, provider, "submitted");
        self.schedule_poll(providers, job, &request_id, 0, None)
            .await
    }

    /// A provider error: retryable ones go back to SQS (the visibility timeout is longer than
    /// Stability's 60 s lockout), the rest fail the job with the mapped code.
    async fn provider_failed(&self, job: &Job, e: ProviderError) -> Outcome {
        if e.retryable {
            Outcome::Retry(e.to_string())
        } else {
            self.fail_job(job, JobError::new(e.code, e.message)).await
        }
    }

    /// A poll message: ask the provider, then complete, re-poll with backoff, or fail.
    async fn poll(
        &self,
        owner: &shared::job::OwnerId,
        job_id: ulid::Ulid,
        request_id: &str,
        attempt: u32,
    ) -> Outcome {
        let Some(providers) = &self.providers else {
            return Outcome::Skipped("no provider support");
        };
        let job = match providers.store.get(owner, job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return Outcome::Skipped("no such job"),
            Err(e) => return Outcome::Retry(e.to_string()),
        };
        let own_request = job.provider_request_id.as_deref() == Some(request_id);
        // Canceled or finished jobs discard whatever the provider still has; a canceled fal
        // request is also canceled there, once.
        if job.status.is_terminal() {
            if own_request
                && job.status == shared::job::JobStatus::Canceled
                && job.provider.as_deref() == Some("fal")
            {
                return self.cancel_at_fal(providers, &job, request_id).await;
            }
            return Outcome::Skipped("already finished");
        }
        if !own_request {
            return Outcome::Skipped("poll for another request");
        }
        let now = OffsetDateTime::now_utc();
        if job
            .provider_deadline
            .is_some_and(|d| now.unix_timestamp() > d)
        {
            return self
                .fail_job(
                    &job,
                    JobError::new(
                        "provider_timeout",
                        format!("the provider did not finish request {request_id} in time"),
                    ),
                )
                .await;
        }
        match job.provider.as_deref() {
            Some("fal") => self.poll_fal(providers, &job, request_id, attempt).await,
            _ => {
                self.poll_stability(providers, &job, request_id, attempt)
                    .await
            }
        }
    }

    /// A Stability poll: 202 → poll again; 200 → store the image and complete.
    async fn poll_stability(
        &self,
        providers: &Providers,
        job: &Job,
        request_id: &str,
        attempt: u32,
    ) -> Outcome {
        let (owner, job_id) = (&job.owner, job.id);
        let Some(relight) = &providers.relight else {
            return self.fail_job(job, not_configured(STABILITY_UNSET)).await;
        };
        let image = match relight.poll(request_id).await {
            Ok(PollStatus::Pending) => {
                return self
                    .schedule_poll(providers, job, request_id, attempt + 1, None)
                    .await;
            }
            Ok(PollStatus::Done(image)) => image,
            // Polls are safe to repeat: back off on our own schedule rather than SQS's.
            Err(e) if e.retryable => {
                tracing::warn!(error = %e, "poll failed; polling again later");
                return self
                    .schedule_poll(providers, job, request_id, attempt + 1, e.retry_after)
                    .await;
            }
            Err(e) => return self.fail_job(job, JobError::new(e.code, e.message)).await,
        };
        let info = match shared::image_check::probe(
            &image.bytes,
            &shared::image_check::ImageLimits::default(),
        ) {
            Ok(info) => info,
            Err(e) => {
                return self
                    .fail_job(
                        job,
                        JobError::new(
                            "provider_error",
                            format!("the provider's image is unusable: {e}"),
                        ),
                    )
                    .await;
            }
        };
        let key = job::result_key(&job.owner, job.id, info.extension());
        let bytes = image.bytes.len() as u64;
        if let Err(e) = self.blobs.put(&key, image.bytes, info.content_type()).await {
            return Outcome::Retry(e.to_string());
        }
        let mut warnings = Vec::new();
        if image.finish_reason.as_deref() == Some("CONTENT_FILTERED") {
            warnings.push(
                "content_filtered: the provider's moderation blurred the output (finish-reason CONTENT_FILTERED)"
                    .to_owned(),
            );
        }
        let result = JobResult {
            key,
            content_type: info.content_type().to_owned(),
            width: info.width,
            height: info.height,
            bytes,
            engine: Some("stability/replace-background-and-relight".into()),
            foreground_fraction: None,
            images: Vec::new(),
            seed: None,
        };
        match providers
            .transitions
            .complete_provider(
                owner,
                job_id,
                request_id,
                &result,
                &warnings,
                OffsetDateTime::now_utc(),
            )
            .await
        {
            Ok(Some(_)) => Outcome::Succeeded,
            Ok(None) => Outcome::Skipped("canceled or finished meanwhile; result discarded"),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

/// The fal.ai half: `edit` and `generate` (docs/providers.md §2).
impl Processor {
    /// fal's submit: presigned GET URLs of the inputs, the model request, and the webhook URL
    /// when `PUBLIC_BASE_URL` is set.
    async fn submit_to_fal(&self, providers: &Providers, job: &Job, lease: &Lease) -> Outcome {
        let Some(fal) = &providers.models else {
            return self.fail_job(job, not_configured(FAL_UNSET)).await;
        };
        // `image` sorts before `reference_1` … `reference_9`: the job image goes first.
        let mut image_urls = Vec::with_capacity(job.inputs.len());
        for input in job.inputs.values() {
            match self
                .blobs
                .presign_get(&input.key, providers.settings.presigned_input_ttl)
                .await
            {
                Ok(url) => image_urls.push(url),
                Err(e) => return Outcome::Retry(e.to_string()),
            }
        }
        let models = &providers.settings.fal_models;
        let request = match &job.operation {
            Operation::Edit(p) => p.request(models, image_urls),
            Operation::Generate(p) => p.request(models, image_urls),
            other => {
                return self
                    .fail_job(
                        job,
                        JobError::new(
                            "invalid_job",
                            format!("{} does not run on fal.ai", other.name()),
                        ),
                    )
                    .await;
            }
        };
        let webhook = providers.settings.public_base_url.as_ref().map(|base| {
            format!(
                "{base}/v1/providers/fal/webhook?owner={}&job_id={}",
                job.owner, job.id
            )
        });
        let queued = match fal.submit(&request, webhook.as_deref()).await {
            Ok(q) => q,
            Err(e) => return self.provider_failed(job, e).await,
        };
        self.record_and_poll(
            providers,
            job,
            lease,
            "fal",
            queued.request_id,
            Some(queued.links),
        )
        .await
    }

    /// A fal poll: pending → poll again; completed → fetch the output, copy every image to S3
    /// (fal's URLs expire, §2.7) and complete; a failed request fails the job with its code.
    async fn poll_fal(
        &self,
        providers: &Providers,
        job: &Job,
        request_id: &str,
        attempt: u32,
    ) -> Outcome {
        let Some(fal) = &providers.models else {
            return self.fail_job(job, not_configured(FAL_UNSET)).await;
        };
        let Some(links) = &job.provider_links else {
            return self
                .fail_job(
                    job,
                    JobError::new("provider_error", "the job has no fal request URLs to poll"),
                )
                .await;
        };
        match fal.status(links).await {
            Ok(QueueStatus::Pending) => {
                return self
                    .schedule_poll(providers, job, request_id, attempt + 1, None)
                    .await;
            }
            Ok(QueueStatus::Completed) => {}
            Err(e) if e.retryable => {
                tracing::warn!(error = %e, "status failed; polling again later");
                return self
                    .schedule_poll(providers, job, request_id, attempt + 1, e.retry_after)
                    .await;
            }
            Err(e) => return self.fail_job(job, JobError::new(e.code, e.message)).await,
        }
        let output = match fal.result(links).await {
            Ok(output) => output,
            Err(e) if e.retryable => {
                return self
                    .schedule_poll(providers, job, request_id, attempt + 1, e.retry_after)
                    .await;
            }
            Err(e) => return self.fail_job(job, JobError::new(e.code, e.message)).await,
        };
        if output.images.is_empty() {
            return self
                .fail_job(
                    job,
                    JobError::new("provider_error", "fal.ai finished without any image"),
                )
                .await;
        }
        let mut images = Vec::with_capacity(output.images.len());
        for (index, image) in output.images.iter().enumerate() {
            let bytes = match providers.downloads.fetch(&image.url).await {
                Ok(bytes) => bytes,
                Err(shared::Error::Invalid { message, .. }) => {
                    return self
                        .fail_job(
                            job,
                            JobError::new(
                                "provider_error",
                                format!("output {index} cannot be downloaded: {message}"),
                            ),
                        )
                        .await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, index, "output download failed; polling again later");
                    return self
                        .schedule_poll(providers, job, request_id, attempt + 1, None)
                        .await;
                }
            };
            let info = match shared::image_check::probe(
                &bytes,
                &shared::image_check::ImageLimits {
                    max_bytes: OUTPUT_MAX_BYTES,
                    ..Default::default()
                },
            ) {
                Ok(info) => info,
                Err(e) => {
                    return self
                        .fail_job(
                            job,
                            JobError::new(
                                "provider_error",
                                format!("output {index} is not a usable image: {e}"),
                            ),
                        )
                        .await;
                }
            };
            let key = job::result_key_at(&job.owner, job.id, index, info.extension());
            let size = bytes.len() as u64;
            if let Err(e) = self.blobs.put(&key, bytes, info.content_type()).await {
                return Outcome::Retry(e.to_string());
            }
            images.push(ResultImage {
                key,
                content_type: info.content_type().to_owned(),
                width: info.width,
                height: info.height,
                bytes: size,
            });
        }
        let first = images[0].clone();
        let model = match &job.operation {
            Operation::Generate(_) if job.inputs.is_empty() => {
                &providers.settings.fal_models.text_to_image
            }
            _ => &providers.settings.fal_models.edit,
        };
        let result = JobResult {
            key: first.key,
            content_type: first.content_type,
            width: first.width,
            height: first.height,
            bytes: first.bytes,
            engine: Some(format!("fal/{model}")),
            foreground_fraction: None,
            images,
            seed: output.seed,
        };
        match providers
            .transitions
            .complete_provider(
                &job.owner,
                job.id,
                request_id,
                &result,
                &[],
                OffsetDateTime::now_utc(),
            )
            .await
        {
            Ok(Some(_)) => Outcome::Succeeded,
            Ok(None) => Outcome::Skipped("canceled or finished meanwhile; result discarded"),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// A canceled job's fal request is canceled at fal once (§2.5); later results are
    /// discarded because the job is no longer `processing`.
    async fn cancel_at_fal(&self, providers: &Providers, job: &Job, request_id: &str) -> Outcome {
        let (Some(fal), Some(links)) = (&providers.models, &job.provider_links) else {
            return Outcome::Skipped("canceled; nothing to cancel at the provider");
        };
        match providers
            .transitions
            .mark_once(
                &job.owner,
                job.id,
                request_id,
                ProviderMark::CancelSent,
                OffsetDateTime::now_utc(),
            )
            .await
        {
            Ok(true) => {}
            Ok(false) => return Outcome::Skipped("canceled; the provider was already told"),
            Err(e) => return Outcome::Retry(e.to_string()),
        }
        match fal.cancel(links).await {
            Ok(CancelOutcome::Requested) => {
                tracing::info!(%request_id, "canceled at fal.ai");
                Outcome::Skipped("canceled at the provider")
            }
            Ok(CancelOutcome::NothingToCancel) => {
                Outcome::Skipped("canceled; the provider had nothing left to stop")
            }
            // The mark is set, so a retry would not call again; the result is discarded anyway.
            Err(e) => {
                tracing::warn!(error = %e, %request_id, "fal.ai cancel failed");
                Outcome::Skipped("canceled; the provider's cancel call failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_backoff_doubles_and_caps() {
        let base = Duration::from_secs(10);
        assert_eq!(poll_delay(base, 0).as_secs(), 10);
        assert_eq!(poll_delay(base, 2).as_secs(), 40);
        assert_eq!(poll_delay(base, 30).as_secs(), 900);
        assert_eq!(poll_delay(Duration::ZERO, 5).as_secs(), 0);
    }

    #[test]
    fn fixture_event_parses() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/sqs-job.json")).unwrap();
        let record = &event.records[0];
        let message: JobMessage = serde_json::from_str(record.body.as_deref().unwrap()).unwrap();
        let (owner, _) = message.job();
        assert_eq!(owner.as_str(), "anonymous");
        assert_eq!(
            record
                .attributes
                .get("ApproximateReceiveCount")
                .map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn poll_fixture_event_parses() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/sqs-poll.json")).unwrap();
        let message: JobMessage =
            serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
        let JobMessage::Poll {
            request_id,
            attempt,
            ..
        } = message
        else {
            panic!("not a poll message: {message:?}");
        };
        assert_eq!(request_id.len(), 64);
        assert_eq!(attempt, 1);
    }
}
