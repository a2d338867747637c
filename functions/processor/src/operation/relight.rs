//! `replace_background_relight` at Stability (docs/providers.md §1): a multipart submit of the
//! job's images, then polls by request id until the image is ready. The submit/record/poll
//! lifecycle around these calls is [`super::provider`]'s.

use time::OffsetDateTime;

use shared::core::{ImagePart, Lease, PollStatus};
use shared::job::{self, Job, JobError, JobResult};
use shared::operation::relight::RelightParams;

use super::provider::PollTurn;
use crate::outcome::Outcome;
use crate::processor::{Processor, Providers, STABILITY_UNSET, not_configured};

impl Processor {
    /// Stability's relight submit (multipart with the job's images).
    pub(super) async fn submit_relight(
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
        if let Err(outcome) = self.intend_submit(providers, job, lease).await {
            return outcome;
        }
        let request_id = match relight.submit(images, params).await {
            Ok(id) => id,
            Err(e) => return self.provider_failed(providers, job, lease, e).await,
        };
        self.record_and_poll(providers, job, lease, "stability", request_id, None)
            .await
    }

    /// A Stability poll: 202 → poll again; 200 → store the image and complete.
    pub(super) async fn poll_stability(
        &self,
        providers: &Providers,
        job: &Job,
        request_id: &str,
        turn: PollTurn,
    ) -> Outcome {
        let (owner, job_id) = (&job.owner, job.id);
        let Some(relight) = &providers.relight else {
            return self.fail_job(job, not_configured(STABILITY_UNSET)).await;
        };
        let image = match relight.poll(request_id).await {
            Ok(PollStatus::Pending) => {
                return self
                    .schedule_poll(providers, job, request_id, turn.next(), None)
                    .await;
            }
            Ok(PollStatus::Done(image)) => image,
            Err(e) => {
                return self.poll_failed(providers, job, request_id, turn, e).await;
            }
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
            Ok(Some(done)) => {
                crate::metrics::job_ended(&done);
                Outcome::Succeeded
            }
            Ok(None) => Outcome::Skipped("canceled or finished meanwhile; result discarded"),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}
