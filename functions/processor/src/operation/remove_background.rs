//! `remove_background`: the segmenter container, or Stability's synchronous removal when the
//! job asks for `provider = stability`. Both run inside the claim; no poll.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use shared::core::{ImagePart, Lease, SegmenterError, SubmitIntent};
use shared::job::{self, Job, JobError, JobResult};
use shared::operation::remove_background::{RemovalProvider, RemoveBackgroundParams};

use crate::metrics::Provider;
use crate::operation::provider::provider_state_unknown;
use crate::processor::{Processor, STABILITY_UNSET, Step, not_configured};

/// Waits between asks of an overloaded segmenter: jittered, 250 ms doubling to 4 s, at most 6
/// more asks (about 15 s in all), which keeps the record inside its deadline
/// (`shared::resources::RECORD_DEADLINE_SECONDS`) even with a slow last call.
fn overload_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(4))
        .with_max_times(6)
        .with_jitter()
}

/// Records a failed segmenter call under its code (the segmenter's own for a permanent
/// failure).
fn segmenter_error(e: &SegmenterError) {
    let code = match e {
        SegmenterError::Permanent { code, .. } => code.as_str(),
        SegmenterError::Transient(_) => "segmenter_unavailable",
        SegmenterError::Overloaded(_) => "segmenter_overloaded",
    };
    crate::metrics::provider_error(Provider::Segmenter, code);
}

impl Processor {
    /// Reads the job's image, removes its background and stores the cutout.
    pub(crate) async fn remove_background(
        &self,
        job: &Job,
        params: &RemoveBackgroundParams,
        lease: &Lease,
    ) -> Result<JobResult, Step> {
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
            return self
                .remove_with_stability(job, params, input, image, lease)
                .await;
        }
        // An overloaded segmenter (its admission queue is full) is asked again after a short,
        // jittered wait inside this record's deadline, instead of returning the message to SQS
        // for a whole visibility timeout and spending one of its receives; still overloaded,
        // the job is deferred (`Step::Busy`).
        let cutout = (|| self.segmenter.remove_background(image.clone(), params))
            .retry(overload_backoff())
            .when(|e| matches!(e, SegmenterError::Overloaded(_)))
            .notify(|e, wait| {
                segmenter_error(e);
                tracing::info!(?wait, error = %e, "segmenter overloaded; asking again")
            })
            .await
            .inspect_err(segmenter_error)
            .map_err(|e| match e {
                SegmenterError::Permanent { code, message } => {
                    Step::Permanent(JobError::new(code, message))
                }
                SegmenterError::Transient(reason) => Step::Transient(reason),
                SegmenterError::Overloaded(reason) => Step::Busy(reason),
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

    /// `remove_background` with `provider = stability`: one synchronous call
    /// (docs/providers.md §1.5).
    async fn remove_with_stability(
        &self,
        job: &Job,
        params: &RemoveBackgroundParams,
        input: &shared::job::InputImage,
        image: bytes::Bytes,
        lease: &Lease,
    ) -> Result<JobResult, Step> {
        // A paid call at most once per job: an earlier attempt that got the cutout but died
        // before the completion write left it at this deterministic key; reuse it instead of
        // paying Stability again.
        let key = job::result_key(&job.owner, job.id, params.output_format.extension());
        let (cutout, (info, foreground_fraction)) = match self.blobs.get(&key).await {
            Ok(stored) => {
                tracing::info!(%key, "cutout stored by an earlier attempt: Stability not called again");
                let checked = self.check_cutout(&stored)?;
                (stored, checked)
            }
            Err(shared::Error::NotFound(_)) => {
                let fresh = self
                    .call_stability(job, params, input, image, lease)
                    .await?;
                let checked = self.check_cutout(&fresh)?;
                self.blobs
                    .put(&key, fresh.clone(), checked.0.content_type())
                    .await
                    .map_err(|e| Step::Transient(e.to_string()))?;
                (fresh, checked)
            }
            Err(other) => return Err(Step::Transient(other.to_string())),
        };
        Ok(JobResult {
            key,
            content_type: info.content_type().to_owned(),
            width: info.width,
            height: info.height,
            bytes: cutout.len() as u64,
            engine: Some("stability/remove-background".into()),
            foreground_fraction: Some(foreground_fraction),
            images: Vec::new(),
            seed: None,
        })
    }

    /// The one paid call: Stability's synchronous remove-background (docs/providers.md §1.5),
    /// under a submit intent as the asynchronous providers' submits are. The stored cutout
    /// alone does not guard it: a call whose answer is lost (a timeout after Stability
    /// accepted it, a crash before the S3 put) leaves no cutout, and the redelivery would pay
    /// again. With the intent, it finds an earlier attempt and fails the job
    /// `provider_state_unknown` instead.
    async fn call_stability(
        &self,
        job: &Job,
        params: &RemoveBackgroundParams,
        input: &shared::job::InputImage,
        image: bytes::Bytes,
        lease: &Lease,
    ) -> Result<bytes::Bytes, Step> {
        let Some(providers) = self.providers.as_ref() else {
            return Err(Step::Permanent(not_configured(STABILITY_UNSET)));
        };
        let Some(provider) = providers.remove_background.clone() else {
            return Err(Step::Permanent(not_configured(STABILITY_UNSET)));
        };
        match providers
            .transitions
            .record_intent(&job.owner, job.id, &lease.token)
            .await
        {
            Ok(SubmitIntent::Recorded) => {}
            Ok(SubmitIntent::EarlierAttempt) => {
                return Err(Step::Permanent(provider_state_unknown(job)));
            }
            Ok(SubmitIntent::Refused) => {
                return Err(Step::Transient(
                    "lease lost before the Stability call".into(),
                ));
            }
            Err(e) => return Err(Step::Transient(e.to_string())),
        }
        let answer = provider
            .remove_background(
                ImagePart {
                    field: "image".into(),
                    bytes: image,
                    content_type: input.content_type.clone(),
                },
                params.output_format.as_str(),
            )
            .await;
        match answer {
            Ok(cutout) => Ok(cutout.bytes),
            Err(e) => {
                crate::metrics::provider_error(Provider::Stability, e.code);
                if e.outcome_unknown {
                    // Accepted (and billed) or not: nobody can tell, so never again.
                    tracing::error!(error = %e, "Stability call outcome unknown; not calling again");
                    return Err(Step::Permanent(provider_state_unknown(job)));
                }
                if !e.retryable {
                    return Err(Step::Permanent(JobError::new(e.code, e.message)));
                }
                // Stability answered (or was never reached): nothing was accepted, so the
                // next attempt may call.
                if let Err(clear) = providers
                    .transitions
                    .clear_intent(&job.owner, job.id, &lease.token)
                    .await
                {
                    tracing::warn!(error = %clear, "could not withdraw the submit intent");
                }
                Err(match e.retry_after {
                    Some(after) => Step::Throttled(e.to_string(), after),
                    None => Step::Transient(e.to_string()),
                })
            }
        }
    }

    /// The provider's cutout as a user would look at it: a decodable image within the limits,
    /// with some foreground. Returns its header and foreground fraction.
    fn check_cutout(
        &self,
        cutout: &bytes::Bytes,
    ) -> Result<(shared::image_check::ImageInfo, f64), Step> {
        let unusable = |e: shared::image_check::ImageRejection| {
            Step::Permanent(JobError::new(
                "provider_error",
                format!("the provider's image is unusable: {e}"),
            ))
        };
        let info = shared::image_check::probe(cutout, &shared::image_check::ImageLimits::default())
            .map_err(unusable)?;
        let foreground_fraction =
            shared::image_check::foreground_fraction(cutout).map_err(unusable)?;
        if foreground_fraction == 0.0 {
            return Err(Step::Permanent(JobError::new(
                "no_foreground",
                "the provider's cutout is fully transparent: it found no foreground",
            )));
        }
        Ok((info, foreground_fraction))
    }
}
