//! Settings of the external providers, kept apart from [`crate::config::Settings`] so each can
//! grow on its own. Keys come from the environment (filled from SSM/Secrets Manager by
//! template.yaml); none has a default.

use std::time::Duration;

use crate::error::{Error, Result};

/// Stability's production host (provider-contracts.md §1.0).
pub const STABILITY_DEFAULT_BASE_URL: &str = "https://api.stability.ai";

/// Provider settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// `STABILITY_API_KEY`; `None` fails Stability jobs with `provider_not_configured`.
    pub stability_api_key: Option<String>,
    /// `STABILITY_BASE_URL`, default [`STABILITY_DEFAULT_BASE_URL`].
    pub stability_base_url: String,
    /// `STABILITY_TIMEOUT_SECONDS`, default 60: per HTTP call.
    pub stability_timeout: Duration,
    /// `POLL_DELAY_SECONDS`, default 10 (Stability asks ≥ 10 s between polls, §1.4): the first
    /// poll's delay; later ones double, up to 15 minutes.
    pub poll_delay: Duration,
    /// `PROVIDER_DEADLINE_SECONDS`, default 1800: how long a job may wait on a provider before
    /// it fails with `provider_timeout`.
    pub provider_deadline: Duration,
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
            .finish()
    }
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self {
            stability_api_key: None,
            stability_base_url: STABILITY_DEFAULT_BASE_URL.into(),
            stability_timeout: Duration::from_secs(60),
            poll_delay: Duration::from_secs(10),
            provider_deadline: Duration::from_secs(1800),
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn secs(name: &str, default: Duration) -> Result<Duration> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| Error::Config(format!("{name}='{v}' is not a whole number of seconds"))),
    }
}

impl ProviderSettings {
    /// Reads the provider settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming a malformed variable.
    pub fn from_env() -> Result<Self> {
        let d = Self::default();
        Ok(Self {
            // "-" is how template.yaml says "no key" (an SSM parameter cannot be empty).
            stability_api_key: var("STABILITY_API_KEY").filter(|k| k.trim() != "-"),
            stability_base_url: var("STABILITY_BASE_URL").unwrap_or(d.stability_base_url),
            stability_timeout: secs("STABILITY_TIMEOUT_SECONDS", d.stability_timeout)?,
            poll_delay: secs("POLL_DELAY_SECONDS", d.poll_delay)?,
            provider_deadline: secs("PROVIDER_DEADLINE_SECONDS", d.provider_deadline)?,
        })
    }
}
