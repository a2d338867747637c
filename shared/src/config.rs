//! Configuration from the environment (the Lambda functions' variables in `template.yaml`, or
//! the local runner's). Pure: the AWS SDK's own configuration is loaded by
//! [`crate::adapters::aws_sdk_config`] (feature `aws`).

use std::time::Duration;

use crate::env::Env;
use crate::error::{Error, Result};
use crate::image_check::ImageLimits;
use crate::models;

/// Everything the functions read from their environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `JOBS_TABLE`: DynamoDB table name.
    pub table: String,
    /// `JOBS_QUEUE_URL`: SQS jobs queue URL.
    pub queue_url: String,
    /// `IMAGES_BUCKET`: S3 bucket for inputs and results.
    pub bucket: String,
    /// `SEGMENTER_URL`: base URL of the segmenter container (processor only).
    pub segmenter_url: Option<String>,
    /// `SEGMENTER_TIMEOUT_SECONDS` (default 50; below the processor's 60 s Lambda timeout).
    pub segmenter_timeout: Duration,
    /// `DEFAULT_MODEL`: engine used when a request names none (default `u2net`).
    pub default_model: String,
    /// `COMPAT_MODEL`: engine the background-removal compatibility routes run instead of the
    /// model a legacy client names, which is still validated against that seed's list. Unset
    /// (the default, and on AWS): the client's model as sent, or `DEFAULT_MODEL` when it names
    /// none. The local runner sets `plain-background`, the one engine that needs no weights.
    pub compat_model: Option<String>,
    /// `MAX_RECEIVE_COUNT`: the jobs queue's redrive `maxReceiveCount` (default 5).
    pub max_receive_count: u32,
    /// `JOB_TTL_DAYS`: how long job records are kept (default 30, matching the S3 lifecycle).
    pub job_ttl: time::Duration,
    /// `RESULT_URL_TTL_SECONDS`: lifetime of presigned result URLs (default 900).
    pub result_url_ttl: Duration,
    /// `MAX_IMAGE_BYTES`, `MAX_IMAGE_PIXELS`, `MAX_IMAGE_SIDE`.
    pub image_limits: ImageLimits,
    /// `ALLOW_HTTP_URLS`: accept `http://` input URLs (local development only; default false).
    pub allow_http_urls: bool,
    /// `ALLOW_PRIVATE_URLS`: let input URLs reach private, loopback and link-local addresses
    /// (local development only; default false — the SSRF guard).
    pub allow_private_urls: bool,
    /// `JWT_SECRET`: HS256 signing secret for `POST /v1/auth/token`; without it only API keys
    /// authenticate.
    pub jwt_secret: Option<String>,
    /// `JWT_TTL_SECONDS`: lifetime of issued tokens (default 3600).
    pub jwt_ttl: time::Duration,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to call the API from a browser
    /// (default none; `*` allows any).
    pub cors_allowed_origins: Vec<String>,
    /// `MAX_JOBS_IN_FLIGHT`: queued + processing jobs an owner may have (default 50).
    pub max_jobs_in_flight: u32,
    /// `MAX_JOBS_PER_MINUTE`: jobs an owner may create per calendar minute (default 120).
    pub max_jobs_per_minute: u32,
    /// `UPLOAD_URL_TTL_SECONDS`: lifetime of presigned upload URLs (default 600).
    pub upload_url_ttl: Duration,
    /// `FAL_JWKS_URL`: fal.ai's webhook signing keys (docs/providers.md §2.6), default
    /// [`crate::providers::FAL_DEFAULT_JWKS_URL`].
    pub fal_jwks_url: String,
    /// `S3_AVATAR_PREFIX` (default `avatars/`): where the illustration route `POST /v1/images/memory`
    /// finds a user's avatar, `{prefix}{owner}/{user_id}`.
    pub s3_avatar_prefix: String,
    /// `S3_SUBJECT_PREFIX` (default `subjects/`): where the illustration route `POST /v1/images/subject`
    /// finds a user's photo, `{prefix}{owner}/{user_id}`.
    pub s3_subject_prefix: String,
    /// `S3_GENERATED_PREFIX` (default `generated/`): where the illustration routes' memory and subject
    /// illustrations are copied, `{prefix}{owner}/{user_id}/{mode}_{job_id}.{ext}`.
    pub s3_generated_prefix: String,
}

fn var(name: &str) -> Option<String> {
    Env::process().text(name)
}

fn required(name: &'static str) -> Result<String> {
    Ok(Env::process().required(name)?)
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T> {
    Ok(Env::process().parsed(name, default, "valid")?)
}

/// An S3 key prefix from `name`: non-empty, ending in `/`, not starting with one, without
/// `..`, and not one of the service's own prefixes (`inbox/`, `uploads/`, `inputs/`,
/// `results/`), whose objects are scoped and expired by other rules.
fn prefix(name: &'static str, default: &str) -> Result<String> {
    check_prefix(name, &var(name).unwrap_or_else(|| default.to_owned()))
}

/// The rule of [`prefix`] on a value.
fn check_prefix(name: &str, v: &str) -> Result<String> {
    let v = v.trim();
    let own = [
        crate::resources::INBOX_PREFIX,
        crate::resources::UPLOADS_PREFIX,
        crate::resources::INPUTS_PREFIX,
        crate::resources::RESULTS_PREFIX,
    ];
    if !v.ends_with('/')
        || v.starts_with('/')
        || v.split('/').any(|s| s == ".." || s == ".")
        || own.iter().any(|p| v.starts_with(p))
    {
        return Err(Error::Config(format!(
            "environment variable {name}='{v}' must be a key prefix ending in '/', outside inbox/, uploads/, inputs/, results/"
        )));
    }
    Ok(v.to_owned())
}

impl Settings {
    /// Settings for the given resources with every other value at its default (the local
    /// runner and tests; the functions use [`Settings::from_env`]).
    pub fn new(
        table: impl Into<String>,
        queue_url: impl Into<String>,
        bucket: impl Into<String>,
    ) -> Self {
        Self {
            table: table.into(),
            queue_url: queue_url.into(),
            bucket: bucket.into(),
            segmenter_url: None,
            segmenter_timeout: Duration::from_secs(50),
            default_model: "u2net".into(),
            compat_model: None,
            max_receive_count: crate::resources::JOBS_QUEUE_MAX_RECEIVE_COUNT,
            job_ttl: time::Duration::days(30),
            result_url_ttl: Duration::from_secs(900),
            image_limits: ImageLimits::default(),
            allow_http_urls: false,
            allow_private_urls: false,
            jwt_secret: None,
            jwt_ttl: time::Duration::hours(1),
            cors_allowed_origins: Vec::new(),
            max_jobs_in_flight: 50,
            max_jobs_per_minute: 120,
            upload_url_ttl: Duration::from_secs(600),
            fal_jwks_url: crate::providers::FAL_DEFAULT_JWKS_URL.into(),
            s3_avatar_prefix: "avatars/".into(),
            s3_subject_prefix: "subjects/".into(),
            s3_generated_prefix: "generated/".into(),
        }
    }

    /// Reads the settings.
    ///
    /// # Errors
    /// [`Error::Config`] naming the missing or malformed variable.
    pub fn from_env() -> Result<Self> {
        let defaults = ImageLimits::default();
        let default_model = var("DEFAULT_MODEL").unwrap_or_else(|| "u2net".into());
        if !models::is_known(&default_model) {
            return Err(Error::Config(format!(
                "DEFAULT_MODEL='{default_model}' is not a known model ({})",
                models::known_names().join(", ")
            )));
        }
        let compat_model = var("COMPAT_MODEL");
        if let Some(name) = compat_model.as_deref().filter(|n| !models::is_known(n)) {
            return Err(Error::Config(format!(
                "COMPAT_MODEL='{name}' is not a known model ({})",
                models::known_names().join(", ")
            )));
        }
        Ok(Self {
            table: required("JOBS_TABLE")?,
            queue_url: required("JOBS_QUEUE_URL")?,
            bucket: required("IMAGES_BUCKET")?,
            segmenter_url: var("SEGMENTER_URL"),
            segmenter_timeout: Duration::from_secs(parsed("SEGMENTER_TIMEOUT_SECONDS", 50)?),
            default_model,
            compat_model,
            max_receive_count: parsed(
                "MAX_RECEIVE_COUNT",
                crate::resources::JOBS_QUEUE_MAX_RECEIVE_COUNT,
            )?,
            job_ttl: time::Duration::days(parsed("JOB_TTL_DAYS", 30)?),
            result_url_ttl: Duration::from_secs(parsed("RESULT_URL_TTL_SECONDS", 900)?),
            image_limits: ImageLimits {
                max_bytes: parsed("MAX_IMAGE_BYTES", defaults.max_bytes)?,
                max_pixels: parsed("MAX_IMAGE_PIXELS", defaults.max_pixels)?,
                max_side: parsed("MAX_IMAGE_SIDE", defaults.max_side)?,
            },
            allow_http_urls: parsed("ALLOW_HTTP_URLS", false)?,
            allow_private_urls: parsed("ALLOW_PRIVATE_URLS", false)?,
            jwt_secret: var("JWT_SECRET"),
            jwt_ttl: time::Duration::seconds(parsed("JWT_TTL_SECONDS", 3600)?),
            cors_allowed_origins: var("CORS_ALLOWED_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            max_jobs_in_flight: parsed("MAX_JOBS_IN_FLIGHT", 50)?,
            max_jobs_per_minute: parsed("MAX_JOBS_PER_MINUTE", 120)?,
            upload_url_ttl: Duration::from_secs(parsed("UPLOAD_URL_TTL_SECONDS", 600)?),
            fal_jwks_url: var("FAL_JWKS_URL")
                .unwrap_or_else(|| crate::providers::FAL_DEFAULT_JWKS_URL.into()),
            s3_avatar_prefix: prefix("S3_AVATAR_PREFIX", "avatars/")?,
            s3_subject_prefix: prefix("S3_SUBJECT_PREFIX", "subjects/")?,
            s3_generated_prefix: prefix("S3_GENERATED_PREFIX", "generated/")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_end_in_a_slash_and_stay_out_of_the_service_prefixes() {
        assert_eq!(check_prefix("P", " avatars/ ").unwrap(), "avatars/");
        assert_eq!(check_prefix("P", "app/gen/").unwrap(), "app/gen/");
        for bad in [
            "avatars",
            "/avatars/",
            "a/../b/",
            "results/x/",
            "uploads/",
            "inputs/",
        ] {
            assert!(check_prefix("P", bad).is_err(), "{bad}");
        }
        let s = Settings::new("t", "q", "b");
        assert_eq!(
            (
                s.s3_avatar_prefix.as_str(),
                s.s3_subject_prefix.as_str(),
                s.s3_generated_prefix.as_str()
            ),
            ("avatars/", "subjects/", "generated/")
        );
    }
}
