//! fal.ai's queue (docs/providers.md §2), which runs `edit` and `generate`: submit with
//! presigned input URLs, poll the request's status, copy every output image to S3, and cancel
//! at fal when the job is canceled. The two operations differ only in the model request they
//! build and the model named in the result's `engine`. The submit/record/poll lifecycle around
//! these calls is [`super::provider`]'s.

use time::OffsetDateTime;

use shared::core::{CancelOutcome, Lease, ProviderMark, QueueStatus};
use shared::job::{self, Job, JobError, JobResult, Operation, ResultImage};

use super::provider::PollTurn;
use crate::outcome::Outcome;
use crate::processor::{Processor, Providers, not_configured};

const FAL_UNSET: &str = "fal.ai is not configured: set FAL_KEY";

/// The fal.ai half: `edit` and `generate` (docs/providers.md §2).
impl Processor {
    /// fal's submit: presigned GET URLs of the inputs, the model request, and the webhook URL
    /// when `PUBLIC_BASE_URL` is set.
    pub(super) async fn submit_to_fal(
        &self,
        providers: &Providers,
        job: &Job,
        lease: &Lease,
    ) -> Outcome {
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
        if let Err(outcome) = self.intend_submit(providers, job, lease).await {
            return outcome;
        }
        let queued = match fal.submit(&request, webhook.as_deref()).await {
            Ok(q) => q,
            Err(e) => return self.provider_failed(providers, job, lease, e).await,
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
    pub(super) async fn poll_fal(
        &self,
        providers: &Providers,
        job: &Job,
        request_id: &str,
        turn: PollTurn,
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
                    .schedule_poll(providers, job, request_id, turn.next(), None)
                    .await;
            }
            Ok(QueueStatus::Completed) => {}
            Err(e) => {
                return self.poll_failed(providers, job, request_id, turn, e).await;
            }
        }
        let output = match fal.result(links).await {
            Ok(output) => output,
            Err(e) => {
                return self.poll_failed(providers, job, request_id, turn, e).await;
            }
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
                        .schedule_poll(providers, job, request_id, turn.next(), None)
                        .await;
                }
            };
            let info = match shared::image_check::probe(
                &bytes,
                &shared::image_check::ImageLimits {
                    max_bytes: super::OUTPUT_MAX_BYTES,
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
            Ok(Some(done)) => {
                crate::metrics::job_ended(&done);
                Outcome::Succeeded
            }
            Ok(None) => Outcome::Skipped("canceled or finished meanwhile; result discarded"),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// A canceled job's fal request is canceled at fal once (§2.5); later results are
    /// discarded because the job is no longer `processing`.
    pub(super) async fn cancel_at_fal(
        &self,
        providers: &Providers,
        job: &Job,
        request_id: &str,
    ) -> Outcome {
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
            // The mark is set once per request: where a canceled fal job is counted, once.
            Ok(true) => crate::metrics::job_ended(job),
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
