//! The composition root: reads the settings from the environment ([`Settings::from_env`], the
//! one loader) and builds the [`Processor`] and its [`Notifier`] over the AWS adapters, the
//! segmenter (a SageMaker endpoint or an HTTP URL) and the provider clients. The only module
//! that names concrete adapters; everything else sees ports.

use std::sync::Arc;
use std::time::Duration;

use shared::adapters::{
    Aws, FalClient, HttpSegmenter, PublicHttp, SageMakerSegmenter, SesEmail, StabilityClient,
};
use shared::config::Settings;
use shared::core::{ModelQueue, RelightProvider, RemoveBackgroundProvider, Segmenter};
use shared::egress::FetchPolicy;
use shared::notification::EmailSender;

use crate::delivery::Notifier;
use crate::error::ProcessorError;
use crate::operation::OUTPUT_MAX_BYTES;
use crate::processor::{Processor, Providers};

/// The download policy for provider outputs: the same address rules as URL inputs, and a
/// [`OUTPUT_MAX_BYTES`] cap.
pub fn output_downloads(settings: &Settings) -> FetchPolicy {
    FetchPolicy::from_settings(settings, OUTPUT_MAX_BYTES, Duration::from_secs(60))
}

/// The HTTP segmenter at `SEGMENTER_URL` with `SEGMENTER_TIMEOUT_SECONDS`.
///
/// # Errors
/// [`ProcessorError::Config`] when `SEGMENTER_URL` is not set.
fn http_segmenter(settings: &Settings) -> Result<HttpSegmenter, ProcessorError> {
    let url = settings.segmenter.url.as_deref().ok_or_else(|| {
        ProcessorError::Config("neither SEGMENTER_ENDPOINT_NAME nor SEGMENTER_URL is set".into())
    })?;
    Ok(HttpSegmenter::new(url, settings.segmenter.timeout)?)
}

impl Processor {
    /// Builds the processor from the environment. The segmenter is the SageMaker endpoint
    /// `SEGMENTER_ENDPOINT_NAME` when set, else the HTTP segmenter at `SEGMENTER_URL` (one of
    /// them is required); both calls give up after `SEGMENTER_TIMEOUT_SECONDS`.
    ///
    /// # Errors
    /// [`ProcessorError::Config`] naming what is missing.
    pub async fn from_env() -> Result<Self, ProcessorError> {
        let settings = Settings::from_env()?;
        let sdk = shared::adapters::aws_sdk_config().await?;
        let aws = Aws::with_sdk_config(&sdk, &settings);
        let segmenter: Arc<dyn Segmenter> = match &settings.segmenter.endpoint_name {
            Some(name) => Arc::new(SageMakerSegmenter::from_sdk_config(
                &sdk,
                name.clone(),
                settings.segmenter.timeout,
            )),
            None => Arc::new(http_segmenter(&settings)?),
        };
        Ok(Self::with_aws_and_segmenter(&settings, &aws, segmenter)?
            .with_notifier(Notifier::with_aws(&sdk, &settings, &aws)?))
    }

    /// Builds the processor over the AWS adapters, the HTTP segmenter and the provider clients
    /// of `settings.providers` (a client only where its key is set).
    ///
    /// # Errors
    /// [`ProcessorError::Config`] when `SEGMENTER_URL` is not set.
    pub fn with_aws(settings: &Settings, aws: &Aws) -> Result<Self, ProcessorError> {
        let segmenter = Arc::new(http_segmenter(settings)?);
        Self::with_aws_and_segmenter(settings, aws, segmenter)
    }

    /// Builds the processor over the AWS adapters and the given segmenter.
    ///
    /// # Errors
    /// [`ProcessorError::Config`] / [`ProcessorError::Shared`] when a provider or download
    /// client cannot be built.
    pub fn with_aws_and_segmenter(
        settings: &Settings,
        aws: &Aws,
        segmenter: Arc<dyn Segmenter>,
    ) -> Result<Self, ProcessorError> {
        let provider_settings = settings.providers.clone();
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
            segmenter,
            settings,
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
        })
        .with_visibility(Arc::new(aws.queue.clone())))
    }
}

impl Notifier {
    /// A notifier over the AWS adapters with `settings.notifications`, and SES when
    /// `NOTIFY_FROM_EMAIL` is set. Webhooks go out under the address rules of `settings`
    /// (`ALLOW_HTTP_URLS`/`ALLOW_PRIVATE_URLS` are development switches) within
    /// `NOTIFY_WEBHOOK_TIMEOUT_SECONDS`, following no redirect.
    ///
    /// # Errors
    /// [`ProcessorError::Shared`] when the HTTP client cannot be built.
    pub fn with_aws(
        sdk: &aws_config::SdkConfig,
        settings: &Settings,
        aws: &Aws,
    ) -> Result<Self, ProcessorError> {
        let notify = settings.notifications.clone();
        let webhook = PublicHttp::without_redirects(FetchPolicy::from_settings(
            settings,
            0,
            notify.webhook_timeout,
        ))?;
        let email = notify
            .from_email
            .as_ref()
            .map(|from| Arc::new(SesEmail::from_sdk_config(sdk, from)) as Arc<dyn EmailSender>);
        Ok(Self::new(
            Arc::new(aws.jobs.clone()),
            Arc::new(aws.notifications.clone()),
            Arc::new(aws.queue.clone()),
            Arc::new(aws.blobs.clone()),
            email,
            Arc::new(webhook),
            notify,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_name_picks_sagemaker_and_blank_means_unset() {
        let named = shared::env::Env::from_fn(|k: &str| {
            (k == "SEGMENTER_ENDPOINT_NAME").then(|| " imagejobs-segmenter ".to_owned())
        });
        let loaded = shared::config::SegmenterSettings::load(&named).unwrap();
        assert_eq!(loaded.endpoint_name.as_deref(), Some("imagejobs-segmenter"));
        let blank = shared::env::Env::from_fn(|k: &str| {
            (k == "SEGMENTER_ENDPOINT_NAME").then(|| "  ".to_owned())
        });
        let loaded = shared::config::SegmenterSettings::load(&blank).unwrap();
        assert_eq!(loaded.endpoint_name, None);
    }

    #[test]
    fn without_either_variable_the_error_names_both() {
        let settings = Settings::new("t", "q", "b");
        let err = http_segmenter(&settings).unwrap_err().to_string();
        assert!(
            err.contains("SEGMENTER_ENDPOINT_NAME") && err.contains("SEGMENTER_URL"),
            "{err}"
        );
    }
}
