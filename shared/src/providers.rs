//! Settings of the external providers: the `providers` section of [`crate::config::Settings`],
//! read by its one loader. Keys come from the environment (filled from SSM/Secrets Manager by
//! template.yaml); none has a default.

use std::time::Duration;

use crate::env::Env;
use crate::error::Result;

/// Stability's production host (docs/providers.md §1.1).
pub const STABILITY_DEFAULT_BASE_URL: &str = "https://api.stability.ai";

/// fal.ai's queue host (docs/providers.md §2.1).
pub const FAL_DEFAULT_QUEUE_URL: &str = "https://queue.fal.run";
/// Where fal publishes its webhook signing keys (§2.6).
pub const FAL_DEFAULT_JWKS_URL: &str = "https://rest.alpha.fal.ai/.well-known/jwks.json";

/// Provider settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// `STABILITY_API_KEY`; `None` fails Stability jobs with `provider_not_configured`.
    pub stability_api_key: Option<String>,
    /// `STABILITY_BASE_URL`, default [`STABILITY_DEFAULT_BASE_URL`].
    pub stability_base_url: String,
    /// `STABILITY_TIMEOUT_SECONDS`, default 40: per HTTP call, below each record's 50 s deadline
    /// (`resources::RECORD_DEADLINE_SECONDS`).
    pub stability_timeout: Duration,
    /// `POLL_DELAY_SECONDS`, default 10 (Stability asks ≥ 10 s between polls, §1.4): the first
    /// poll's delay; later ones double, up to 15 minutes.
    pub poll_delay: Duration,
    /// `PROVIDER_DEADLINE_SECONDS`, default 1800: how long a job may wait on a provider before
    /// it fails with `provider_timeout`.
    pub provider_deadline: Duration,
    /// `FAL_KEY`; `None` fails `edit`/`generate` jobs with `provider_not_configured`.
    pub fal_key: Option<String>,
    /// `FAL_QUEUE_URL`, default [`FAL_DEFAULT_QUEUE_URL`].
    pub fal_queue_url: String,
    /// `FAL_TIMEOUT_SECONDS`, default 30: per HTTP call to the queue.
    pub fal_timeout: Duration,
    /// `FAL_EDIT_MODEL` / `FAL_TEXT_TO_IMAGE_MODEL`: which models `edit` and `generate` use.
    pub fal_models: crate::operation::ModelIds,
    /// `PUBLIC_BASE_URL` (e.g. `https://abc.execute-api.eu-west-1.amazonaws.com`): when set,
    /// fal requests carry `fal_webhook={PUBLIC_BASE_URL}/v1/providers/fal/webhook?...`;
    /// polling continues as the fallback either way.
    pub public_base_url: Option<String>,
    /// `PRESIGNED_INPUT_TTL_SECONDS`, default 3600: how long the presigned S3 GET URLs of the
    /// inputs handed to fal stay valid (it may queue before it downloads them).
    pub presigned_input_ttl: Duration,
    /// `FAL_JWKS_URL`: fal.ai's webhook signing keys (docs/providers.md §2.6), default
    /// [`FAL_DEFAULT_JWKS_URL`] (the API's fal webhook).
    pub fal_jwks_url: String,
}

impl std::fmt::Debug for ProviderSettings {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field(
                "stability_api_key",
                &self.stability_api_key.as_ref().map(|_| "***"),
            )
            .field("stability_base_url", &self.stability_base_url)
            .field("stability_timeout", &self.stability_timeout)
            .field("poll_delay", &self.poll_delay)
            .field("provider_deadline", &self.provider_deadline)
            .field("fal_key", &self.fal_key.as_ref().map(|_| "***"))
            .field("fal_queue_url", &self.fal_queue_url)
            .field("fal_timeout", &self.fal_timeout)
            .field("fal_models", &self.fal_models)
            .field("public_base_url", &self.public_base_url)
            .field("presigned_input_ttl", &self.presigned_input_ttl)
            .field("fal_jwks_url", &self.fal_jwks_url)
            .finish()
    }
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            stability_api_key: None,
            stability_base_url: STABILITY_DEFAULT_BASE_URL.into(),
            stability_timeout: Duration::from_secs(40),
            poll_delay: Duration::from_secs(10),
            provider_deadline: Duration::from_secs(1800),
            fal_key: None,
            fal_queue_url: FAL_DEFAULT_QUEUE_URL.into(),
            fal_timeout: Duration::from_secs(30),
            fal_models: crate::operation::ModelIds::default(),
            public_base_url: None,
            presigned_input_ttl: Duration::from_secs(3600),
            fal_jwks_url: FAL_DEFAULT_JWKS_URL.into(),
        }
    }
}

impl ProviderSettings {
    /// Reads the provider settings from `env` ([`crate::config::Settings::load`] calls it).
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming a timeout, delay or TTL that is not a whole number of
    /// seconds.
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        let d = Self::default();
        // "-" is how template.yaml says "no key" (an SSM parameter cannot be empty).
        let key = |name: &str| env.text(name).filter(|k| k != "-");
        Ok(Self {
            stability_api_key: key("STABILITY_API_KEY"),
            stability_base_url: env
                .text("STABILITY_BASE_URL")
                .unwrap_or(d.stability_base_url),
            stability_timeout: env.seconds("STABILITY_TIMEOUT_SECONDS", d.stability_timeout)?,
            poll_delay: env.seconds("POLL_DELAY_SECONDS", d.poll_delay)?,
            provider_deadline: env.seconds("PROVIDER_DEADLINE_SECONDS", d.provider_deadline)?,
            fal_key: key("FAL_KEY"),
            fal_queue_url: env.text("FAL_QUEUE_URL").unwrap_or(d.fal_queue_url),
            fal_timeout: env.seconds("FAL_TIMEOUT_SECONDS", d.fal_timeout)?,
            fal_models: crate::operation::ModelIds {
                edit: env.text("FAL_EDIT_MODEL").unwrap_or(d.fal_models.edit),
                text_to_image: env
                    .text("FAL_TEXT_TO_IMAGE_MODEL")
                    .unwrap_or(d.fal_models.text_to_image),
            },
            public_base_url: env
                .text("PUBLIC_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_owned()),
            presigned_input_ttl: env
                .seconds("PRESIGNED_INPUT_TTL_SECONDS", d.presigned_input_ttl)?,
            fal_jwks_url: env.text("FAL_JWKS_URL").unwrap_or(d.fal_jwks_url),
        })
    }
}
