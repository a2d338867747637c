//! Configuration from the environment (the Lambda functions' variables in `template.yaml`, or
//! the local runner's): one nested [`Settings`] and one loader, [`Settings::from_env`], a thin
//! call of [`Settings::load`] over the process environment. Every variable is read through
//! [`Env`], so a value that is set but unusable is always an error naming the variable; an
//! unset or empty one takes its default. Pure: the AWS SDK's own configuration is loaded by
//! [`crate::adapters::aws_sdk_config`] (feature `aws`).

use std::time::Duration;

use crate::env::Env;
use crate::error::{Error, Result};
use crate::image_check::ImageLimits;
use crate::models;
use crate::providers::ProviderSettings;

/// Everything the functions read from their environment, one section per thing configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The AWS resources the functions work on.
    pub resources: Resources,
    /// The segmenter container (processor only).
    pub segmenter: SegmenterSettings,
    /// Which background-removal engine runs when a request names none.
    pub models: ModelSettings,
    /// Job lifetime, retries, leases and per-owner quotas.
    pub jobs: JobSettings,
    /// `MAX_IMAGE_BYTES`, `MAX_IMAGE_PIXELS`, `MAX_IMAGE_SIDE` (defaults
    /// [`ImageLimits::default`]).
    pub limits: ImageLimits,
    /// Address rules of outbound requests (input URLs, provider outputs, webhooks).
    pub egress: EgressSettings,
    /// Token issuing and browser access to the API.
    pub auth: AuthSettings,
    /// Presigned uploads.
    pub uploads: UploadSettings,
    /// S3 key prefixes of the illustration routes.
    pub illustrations: IllustrationPrefixes,
    /// Provider keys, hosts, timeouts and poll cadence.
    pub providers: ProviderSettings,
    /// Job-end webhooks and e-mail (processor).
    pub notifications: NotifySettings,
    /// Operator metrics (processor).
    pub observability: ObservabilitySettings,
}

/// The AWS resources, all required by [`Settings::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// `JOBS_TABLE`: DynamoDB table name.
    pub table: String,
    /// `JOBS_QUEUE_URL`: SQS jobs queue URL.
    pub queue_url: String,
    /// `IMAGES_BUCKET`: S3 bucket for inputs and results.
    pub bucket: String,
}

/// The segmenter container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmenterSettings {
    /// `SEGMENTER_URL`: its base URL (an HTTP segmenter: ECS, local, bring-your-own).
    pub url: Option<String>,
    /// `SEGMENTER_ENDPOINT_NAME`: a SageMaker real-time endpoint serving it (template.yaml sets
    /// it when `SegmenterDeployment=sagemaker`); when set it wins over `url`. The processor
    /// refuses to start with neither.
    pub endpoint_name: Option<String>,
    /// `SEGMENTER_TIMEOUT_SECONDS` (default 40): below each record's deadline
    /// ([`crate::resources::RECORD_DEADLINE_SECONDS`]), itself below the processor's 60 s
    /// Lambda timeout.
    pub timeout: Duration,
}

impl Default for SegmenterSettings {
    fn default() -> Self {
        Self {
            url: None,
            endpoint_name: None,
            timeout: Duration::from_secs(40),
        }
    }
}

/// The background-removal engines, each a name from [`models::known_names`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    /// `DEFAULT_MODEL`: engine used when a request names none (default `u2net`).
    pub default_model: String,
    /// `COMPAT_MODEL`: engine the background-removal compatibility routes run instead of the
    /// model a legacy client names, which is still validated against that seed's list. Unset
    /// (the default, and on AWS): the client's model as sent, or `DEFAULT_MODEL` when it names
    /// none. The local runner sets `plain-background`, the one engine that needs no weights.
    pub compat_model: Option<String>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            default_model: "u2net".into(),
            compat_model: None,
        }
    }
}

/// Job lifetime, retries, leases and per-owner quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    /// `MAX_RECEIVE_COUNT`: the jobs queue's redrive `maxReceiveCount` (default
    /// [`crate::resources::JOBS_QUEUE_MAX_RECEIVE_COUNT`], 5).
    pub max_receive_count: u32,
    /// `JOB_TTL_DAYS`: how long job records are kept (default 30, matching the S3 lifecycle).
    pub ttl: time::Duration,
    /// `RESULT_URL_TTL_SECONDS`: lifetime of presigned result URLs (default 900).
    pub result_url_ttl: Duration,
    /// `LEASE_SECONDS` (default [`crate::resources::LEASE_SECONDS`], 30): how long a
    /// processor's claim is exclusive without a renewal. The running claim renews it every
    /// third of it, so it ends about this long after the invocation holding it stopped; then
    /// the recovery sweeper ([`crate::recovery`]) hands the job on.
    pub lease: Duration,
    /// `DEAD_LETTER_QUEUE_ARN`: records from this queue fail their job (processor; unset: none
    /// is recognised).
    pub dead_letter_queue_arn: Option<String>,
    /// `MAX_JOBS_IN_FLIGHT`: queued + processing jobs an owner may have (default 50).
    pub max_in_flight: u32,
    /// `MAX_JOBS_PER_MINUTE`: jobs an owner may create per calendar minute (default 120).
    pub max_per_minute: u32,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            max_receive_count: crate::resources::JOBS_QUEUE_MAX_RECEIVE_COUNT,
            ttl: time::Duration::days(30),
            result_url_ttl: Duration::from_secs(900),
            lease: Duration::from_secs(crate::resources::LEASE_SECONDS as u64),
            dead_letter_queue_arn: None,
            max_in_flight: 50,
            max_per_minute: 120,
        }
    }
}

/// Address rules of outbound requests; both are local-development switches, off by default
/// (the SSRF guard, [`crate::egress`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EgressSettings {
    /// `ALLOW_HTTP_URLS` (`true`/`false`): accept `http://` URLs.
    pub allow_http_urls: bool,
    /// `ALLOW_PRIVATE_URLS` (`true`/`false`): let URLs reach private, loopback and link-local
    /// addresses.
    pub allow_private_urls: bool,
}

/// Token issuing and browser access to the API.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `JWT_SECRET`: HS256 signing secret for `POST /v1/auth/token`; without it only API keys
    /// authenticate.
    pub jwt_secret: Option<String>,
    /// `JWT_TTL_SECONDS`: lifetime of issued tokens (default 3600).
    pub jwt_ttl: time::Duration,
    /// `CORS_ALLOWED_ORIGINS`: comma-separated origins allowed to call the API from a browser
    /// (default none; `*` allows any).
    pub cors_allowed_origins: Vec<String>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_ttl: time::Duration::hours(1),
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl std::fmt::Debug for AuthSettings {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field("jwt_ttl", &self.jwt_ttl)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .finish()
    }
}

/// Presigned uploads (`POST /v1/uploads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadSettings {
    /// `UPLOAD_URL_TTL_SECONDS`: lifetime of presigned upload URLs (default 600).
    pub url_ttl: Duration,
}

impl Default for UploadSettings {
    fn default() -> Self {
        Self {
            url_ttl: Duration::from_secs(600),
        }
    }
}

/// Where the illustration routes find and put images. Each is an S3 key prefix: non-empty,
/// ending in `/`, not starting with one, without `.`/`..` segments, and outside the service's
/// own prefixes (`inbox/`, `uploads/`, `inputs/`, `results/`), whose objects are scoped and
/// expired by other rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IllustrationPrefixes {
    /// `S3_AVATAR_PREFIX` (default `avatars/`): where `POST /v1/images/memory` finds a user's
    /// avatar, `{prefix}{owner}/{user_id}`.
    pub avatar: String,
    /// `S3_SUBJECT_PREFIX` (default `subjects/`): where `POST /v1/images/subject` finds a
    /// user's photo, `{prefix}{owner}/{user_id}`.
    pub subject: String,
    /// `S3_GENERATED_PREFIX` (default `generated/`): where the memory and subject
    /// illustrations are copied, `{prefix}{owner}/{user_id}/{mode}_{job_id}.{ext}`.
    pub generated: String,
}

impl Default for IllustrationPrefixes {
    fn default() -> Self {
        Self {
            avatar: "avatars/".into(),
            subject: "subjects/".into(),
            generated: "generated/".into(),
        }
    }
}

/// Job-end notifications (the processor's `delivery` module); every variable optional, all
/// listed in [`NotifySettings::ENV_VARS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// `NOTIFY_FROM_EMAIL`: the SES sender (a verified identity, or an address on a verified
    /// domain). `None` (unset or empty) turns e-mail off: a job's `email` then gets one failed
    /// attempt saying so.
    pub from_email: Option<String>,
    /// `NOTIFY_RETRY_BASE_SECONDS` (default 10): the first retry's delay; each later one is 3×
    /// longer, at most 15 minutes. 0 retries at once (tests).
    pub retry_base: Duration,
    /// `NOTIFY_MAX_ATTEMPTS` (default 6, at least 1): attempts per channel before giving up.
    pub max_attempts: u32,
    /// `NOTIFY_WEBHOOK_TIMEOUT_SECONDS` (default 10): the whole webhook request, connection
    /// included; a slower receiver counts as a failed attempt.
    pub webhook_timeout: Duration,
    /// `NOTIFY_RESULT_URL_TTL_SECONDS` (default 86400, at most 604800): lifetime of the
    /// presigned result link in e-mails (on Lambda also bounded by the role's temporary
    /// credentials).
    pub result_url_ttl: Duration,
    /// `PUBLIC_API_URL`: the API's base URL, to make the links in events and e-mails absolute
    /// (e.g. `https://abc.execute-api.us-east-1.amazonaws.com`), without a trailing `/`;
    /// relative paths without it.
    pub public_api_url: Option<String>,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            from_email: None,
            retry_base: Duration::from_secs(10),
            max_attempts: 6,
            webhook_timeout: Duration::from_secs(10),
            result_url_ttl: Duration::from_secs(86_400),
            public_api_url: None,
        }
    }
}

/// Operator metrics: the processor's CloudWatch Embedded Metric Format lines
/// (`functions/processor/src/metrics.rs`, docs/ARCHITECTURE.md "Operations").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservabilitySettings {
    /// `METRICS_NAMESPACE` (default [`ObservabilitySettings::DEFAULT_NAMESPACE`]): the
    /// CloudWatch namespace of every metric. 1–255 characters of `A–Z a–z 0–9 . - _ / # :`
    /// and space, not starting with `AWS/` (CloudWatch's rules: AWS's own namespaces are
    /// reserved). One per stack keeps two deployments in one account apart.
    pub metrics_namespace: String,
}

impl ObservabilitySettings {
    /// The namespace when `METRICS_NAMESPACE` is unset or empty.
    pub const DEFAULT_NAMESPACE: &'static str = "imagejobs";

    /// Reads `METRICS_NAMESPACE`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `METRICS_NAMESPACE` when it breaks CloudWatch's namespace
    /// rules (CloudWatch would drop every metric of the line instead).
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        let Some(namespace) = env.text("METRICS_NAMESPACE") else {
            return Ok(Self::default());
        };
        let namespace = namespace.trim().to_owned();
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
        if namespace.len() > 255 || !namespace.chars().all(allowed) || namespace.starts_with("AWS/")
        {
            return Err(Error::Config(format!(
                "METRICS_NAMESPACE='{namespace}' must be 1–255 characters of A–Z a–z 0–9 . - _ / # : and space, not starting with AWS/"
            )));
        }
        Ok(Self {
            metrics_namespace: namespace,
        })
    }
}

impl Default for ObservabilitySettings {
    fn default() -> Self {
        Self {
            metrics_namespace: Self::DEFAULT_NAMESPACE.to_owned(),
        }
    }
}

impl NotifySettings {
    /// The variables [`NotifySettings::load`] reads (all optional; `template.yaml` sets them on
    /// the processor).
    pub const ENV_VARS: &[&str] = &[
        "NOTIFY_FROM_EMAIL",
        "NOTIFY_RETRY_BASE_SECONDS",
        "NOTIFY_MAX_ATTEMPTS",
        "NOTIFY_WEBHOOK_TIMEOUT_SECONDS",
        "NOTIFY_RESULT_URL_TTL_SECONDS",
        "PUBLIC_API_URL",
    ];

    /// Reads [`NotifySettings::ENV_VARS`] from `env`.
    ///
    /// # Errors
    /// [`Error::Config`] naming a malformed variable: a non-number, an invalid sender address,
    /// `NOTIFY_MAX_ATTEMPTS=0`, a result link TTL outside 1–604800 s (SigV4's 7-day limit).
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        let d = Self::default();
        let number = |name: &'static str, default: u64| env.parsed(name, default, "a whole number");
        let from_email = env
            .text("NOTIFY_FROM_EMAIL")
            .map(|v| {
                crate::notification::validate_email(&v)
                    .map_err(|e| Error::Config(format!("NOTIFY_FROM_EMAIL: {e}")))
            })
            .transpose()?;
        let max_attempts = number("NOTIFY_MAX_ATTEMPTS", d.max_attempts.into())?;
        let max_attempts = u32::try_from(max_attempts)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| Error::Config("NOTIFY_MAX_ATTEMPTS must be at least 1".into()))?;
        let ttl = number("NOTIFY_RESULT_URL_TTL_SECONDS", d.result_url_ttl.as_secs())?;
        if !(1..=604_800).contains(&ttl) {
            return Err(Error::Config(
                "NOTIFY_RESULT_URL_TTL_SECONDS must be 1–604800 (SigV4's 7-day limit)".into(),
            ));
        }
        Ok(Self {
            from_email,
            retry_base: Duration::from_secs(number(
                "NOTIFY_RETRY_BASE_SECONDS",
                d.retry_base.as_secs(),
            )?),
            max_attempts,
            webhook_timeout: Duration::from_secs(number(
                "NOTIFY_WEBHOOK_TIMEOUT_SECONDS",
                d.webhook_timeout.as_secs(),
            )?),
            result_url_ttl: Duration::from_secs(ttl),
            public_api_url: env
                .text("PUBLIC_API_URL")
                .map(|u| u.trim_end_matches('/').to_owned()),
        })
    }
}

/// The rule of [`IllustrationPrefixes`] on the value `v` of variable `name`.
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

/// `name` checked by [`models::is_known`].
fn known_model(name: &str, model: String) -> Result<String> {
    if models::is_known(&model) {
        return Ok(model);
    }
    Err(Error::Config(format!(
        "{name}='{model}' is not a known model ({})",
        models::known_names().join(", ")
    )))
}

impl Resources {
    /// Reads `JOBS_TABLE`, `JOBS_QUEUE_URL`, `IMAGES_BUCKET`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first one unset or empty.
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        Ok(Self {
            table: env.required("JOBS_TABLE")?,
            queue_url: env.required("JOBS_QUEUE_URL")?,
            bucket: env.required("IMAGES_BUCKET")?,
        })
    }
}

impl SegmenterSettings {
    /// Reads `SEGMENTER_URL`, `SEGMENTER_ENDPOINT_NAME`, `SEGMENTER_TIMEOUT_SECONDS`.
    ///
    /// # Errors
    /// [`Error::Config`] when the timeout is not a whole number of seconds.
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        let d = Self::default();
        Ok(Self {
            url: env.text("SEGMENTER_URL"),
            endpoint_name: env.text("SEGMENTER_ENDPOINT_NAME"),
            timeout: env.seconds("SEGMENTER_TIMEOUT_SECONDS", d.timeout)?,
        })
    }
}

impl ModelSettings {
    /// Reads `DEFAULT_MODEL`, `COMPAT_MODEL`.
    ///
    /// # Errors
    /// [`Error::Config`] naming a model that is not in [`models::known_names`].
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        let d = Self::default();
        Ok(Self {
            default_model: known_model(
                "DEFAULT_MODEL",
                env.text("DEFAULT_MODEL").unwrap_or(d.default_model),
            )?,
            compat_model: env
                .text("COMPAT_MODEL")
                .map(|m| known_model("COMPAT_MODEL", m))
                .transpose()?,
        })
    }
}

impl JobSettings {
    /// Reads `MAX_RECEIVE_COUNT`, `JOB_TTL_DAYS`, `RESULT_URL_TTL_SECONDS`, `LEASE_SECONDS`,
    /// `DEAD_LETTER_QUEUE_ARN`, `MAX_JOBS_IN_FLIGHT`, `MAX_JOBS_PER_MINUTE`.
    ///
    /// # Errors
    /// [`Error::Config`] naming a variable that is not a non-negative whole number.
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        let d = Self::default();
        Ok(Self {
            max_receive_count: env.parsed(
                "MAX_RECEIVE_COUNT",
                d.max_receive_count,
                "a whole number",
            )?,
            ttl: time::Duration::days(env.parsed(
                "JOB_TTL_DAYS",
                d.ttl.whole_days(),
                "a whole number of days",
            )?),
            result_url_ttl: env.seconds("RESULT_URL_TTL_SECONDS", d.result_url_ttl)?,
            lease: env.seconds("LEASE_SECONDS", d.lease)?,
            dead_letter_queue_arn: env.text("DEAD_LETTER_QUEUE_ARN"),
            max_in_flight: env.parsed("MAX_JOBS_IN_FLIGHT", d.max_in_flight, "a whole number")?,
            max_per_minute: env.parsed(
                "MAX_JOBS_PER_MINUTE",
                d.max_per_minute,
                "a whole number",
            )?,
        })
    }
}

/// `name` as an [`ImageLimits`] field.
fn limit<F: Fn(&str) -> Option<String>, T: std::str::FromStr>(
    env: &Env<F>,
    name: &'static str,
    default: T,
) -> Result<T> {
    Ok(env.parsed(name, default, "a whole number")?)
}

/// Reads `MAX_IMAGE_BYTES`, `MAX_IMAGE_PIXELS`, `MAX_IMAGE_SIDE` over [`ImageLimits::default`]
/// (the type lives in the pure domain, which has no loader).
fn load_limits<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<ImageLimits> {
    let d = ImageLimits::default();
    Ok(ImageLimits {
        max_bytes: limit(env, "MAX_IMAGE_BYTES", d.max_bytes)?,
        max_pixels: limit(env, "MAX_IMAGE_PIXELS", d.max_pixels)?,
        max_side: limit(env, "MAX_IMAGE_SIDE", d.max_side)?,
    })
}

impl EgressSettings {
    /// Reads `ALLOW_HTTP_URLS`, `ALLOW_PRIVATE_URLS`.
    ///
    /// # Errors
    /// [`Error::Config`] naming a variable that is neither `true` nor `false`.
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        Ok(Self {
            allow_http_urls: env.parsed("ALLOW_HTTP_URLS", false, "true or false")?,
            allow_private_urls: env.parsed("ALLOW_PRIVATE_URLS", false, "true or false")?,
        })
    }
}

impl AuthSettings {
    /// Reads `JWT_SECRET`, `JWT_TTL_SECONDS`, `CORS_ALLOWED_ORIGINS` (comma-separated; blanks
    /// between commas are dropped).
    ///
    /// # Errors
    /// [`Error::Config`] when `JWT_TTL_SECONDS` is not a whole number of seconds.
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        let d = Self::default();
        Ok(Self {
            jwt_secret: env.text("JWT_SECRET"),
            jwt_ttl: time::Duration::seconds(env.parsed(
                "JWT_TTL_SECONDS",
                d.jwt_ttl.whole_seconds(),
                "a whole number of seconds",
            )?),
            cors_allowed_origins: env
                .text("CORS_ALLOWED_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or(d.cors_allowed_origins),
        })
    }
}

impl UploadSettings {
    /// Reads `UPLOAD_URL_TTL_SECONDS`.
    ///
    /// # Errors
    /// [`Error::Config`] when it is not a whole number of seconds.
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        Ok(Self {
            url_ttl: env.seconds("UPLOAD_URL_TTL_SECONDS", Self::default().url_ttl)?,
        })
    }
}

impl IllustrationPrefixes {
    /// Reads `S3_AVATAR_PREFIX`, `S3_SUBJECT_PREFIX`, `S3_GENERATED_PREFIX`.
    ///
    /// # Errors
    /// [`Error::Config`] naming a value that breaks the prefix rule (see the type).
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        let d = Self::default();
        let prefix = |name: &'static str, default: String| {
            check_prefix(name, &env.text(name).unwrap_or(default))
        };
        Ok(Self {
            avatar: prefix("S3_AVATAR_PREFIX", d.avatar)?,
            subject: prefix("S3_SUBJECT_PREFIX", d.subject)?,
            generated: prefix("S3_GENERATED_PREFIX", d.generated)?,
        })
    }
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
            resources: Resources {
                table: table.into(),
                queue_url: queue_url.into(),
                bucket: bucket.into(),
            },
            segmenter: SegmenterSettings::default(),
            models: ModelSettings::default(),
            jobs: JobSettings::default(),
            limits: ImageLimits::default(),
            egress: EgressSettings::default(),
            auth: AuthSettings::default(),
            uploads: UploadSettings::default(),
            illustrations: IllustrationPrefixes::default(),
            providers: ProviderSettings::default(),
            notifications: NotifySettings::default(),
            observability: ObservabilitySettings::default(),
        }
    }

    /// Reads the settings from the process environment: [`Settings::load`] over
    /// [`Env::process`]. The one entry point of the functions' wiring.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_env() -> Result<Self> {
        Self::load(&Env::process())
    }

    /// Reads every section from `env` (a map in tests, via [`Env::from_fn`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first variable that is required and missing
    /// (`JOBS_TABLE`, `JOBS_QUEUE_URL`, `IMAGES_BUCKET`) or set but unusable.
    pub fn load<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self> {
        Ok(Self {
            resources: Resources::load(env)?,
            segmenter: SegmenterSettings::load(env)?,
            models: ModelSettings::load(env)?,
            jobs: JobSettings::load(env)?,
            limits: load_limits(env)?,
            egress: EgressSettings::load(env)?,
            auth: AuthSettings::load(env)?,
            uploads: UploadSettings::load(env)?,
            illustrations: IllustrationPrefixes::load(env)?,
            providers: ProviderSettings::load(env)?,
            notifications: NotifySettings::load(env)?,
            observability: ObservabilitySettings::load(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const RESOURCES: [(&str, &str); 3] = [
        ("JOBS_TABLE", "jobs"),
        ("JOBS_QUEUE_URL", "https://sqs.invalid/jobs"),
        ("IMAGES_BUCKET", "images"),
    ];

    /// [`Settings::load`] over the three required variables and `pairs`.
    fn load(pairs: &[(&str, &str)]) -> Result<Settings> {
        let vars: HashMap<String, String> = RESOURCES
            .iter()
            .chain(pairs)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(&Env::from_fn(move |name| vars.get(name).cloned()))
    }

    /// The error of loading `pairs`, which must fail.
    fn error(pairs: &[(&str, &str)]) -> String {
        load(pairs).expect_err("should fail").to_string()
    }

    #[test]
    fn only_the_resources_are_required_and_the_rest_is_the_defaults() {
        let s = load(&[]).unwrap();
        assert_eq!(
            s,
            Settings::new("jobs", "https://sqs.invalid/jobs", "images")
        );
        // The documented defaults, spelled out once so a changed default is noticed.
        assert_eq!(s.segmenter.url, None);
        assert_eq!(s.segmenter.timeout, Duration::from_secs(40));
        assert_eq!(s.models.default_model, "u2net");
        assert_eq!(s.models.compat_model, None);
        assert_eq!(s.jobs.max_receive_count, 5);
        assert_eq!(s.jobs.ttl, time::Duration::days(30));
        assert_eq!(s.jobs.result_url_ttl, Duration::from_secs(900));
        assert_eq!(s.jobs.lease, Duration::from_secs(30));
        assert_eq!(s.jobs.dead_letter_queue_arn, None);
        assert_eq!((s.jobs.max_in_flight, s.jobs.max_per_minute), (50, 120));
        assert_eq!(s.limits, ImageLimits::default());
        assert_eq!(s.egress, EgressSettings::default());
        assert!(!s.egress.allow_http_urls && !s.egress.allow_private_urls);
        assert_eq!(s.auth.jwt_secret, None);
        assert_eq!(s.auth.jwt_ttl, time::Duration::hours(1));
        assert!(s.auth.cors_allowed_origins.is_empty());
        assert_eq!(s.uploads.url_ttl, Duration::from_secs(600));
        assert_eq!(
            (
                s.illustrations.avatar.as_str(),
                s.illustrations.subject.as_str(),
                s.illustrations.generated.as_str()
            ),
            ("avatars/", "subjects/", "generated/")
        );
        let p = &s.providers;
        assert_eq!(p.stability_api_key, None);
        assert_eq!(
            p.stability_base_url,
            crate::providers::STABILITY_DEFAULT_BASE_URL
        );
        assert_eq!(p.stability_timeout, Duration::from_secs(40));
        assert_eq!(p.poll_delay, Duration::from_secs(10));
        assert_eq!(p.provider_deadline, Duration::from_secs(1800));
        assert_eq!(p.fal_key, None);
        assert_eq!(p.fal_queue_url, crate::providers::FAL_DEFAULT_QUEUE_URL);
        assert_eq!(p.fal_timeout, Duration::from_secs(30));
        assert_eq!(p.presigned_input_ttl, Duration::from_secs(3600));
        assert_eq!(p.fal_jwks_url, crate::providers::FAL_DEFAULT_JWKS_URL);
        let n = &s.notifications;
        assert_eq!(n.from_email, None);
        assert_eq!(n.retry_base, Duration::from_secs(10));
        assert_eq!(n.max_attempts, 6);
        assert_eq!(n.webhook_timeout, Duration::from_secs(10));
        assert_eq!(n.result_url_ttl, Duration::from_secs(86_400));
        assert_eq!(n.public_api_url, None);
        assert_eq!(s.observability.metrics_namespace, "imagejobs");
    }

    #[test]
    fn each_section_reads_its_variables() {
        let s = load(&[
            ("SEGMENTER_URL", " http://segmenter:8080 "),
            ("SEGMENTER_ENDPOINT_NAME", "imagejobs-segmenter"),
            ("SEGMENTER_TIMEOUT_SECONDS", "12"),
            ("DEFAULT_MODEL", crate::models::PLAIN_BACKGROUND),
            ("COMPAT_MODEL", crate::models::PLAIN_BACKGROUND),
            ("MAX_RECEIVE_COUNT", "7"),
            ("JOB_TTL_DAYS", "3"),
            ("RESULT_URL_TTL_SECONDS", "60"),
            ("LEASE_SECONDS", "30"),
            ("DEAD_LETTER_QUEUE_ARN", "arn:aws:sqs:us-east-1:1:dlq"),
            ("MAX_JOBS_IN_FLIGHT", "4"),
            ("MAX_JOBS_PER_MINUTE", "9"),
            ("MAX_IMAGE_BYTES", "1000"),
            ("MAX_IMAGE_PIXELS", "2000"),
            ("MAX_IMAGE_SIDE", "300"),
            ("ALLOW_HTTP_URLS", "true"),
            ("ALLOW_PRIVATE_URLS", "true"),
            ("JWT_SECRET", "s3cret"),
            ("JWT_TTL_SECONDS", "120"),
            ("CORS_ALLOWED_ORIGINS", "https://a.test, ,https://b.test"),
            ("UPLOAD_URL_TTL_SECONDS", "45"),
            ("S3_AVATAR_PREFIX", "app/avatars/"),
            ("S3_SUBJECT_PREFIX", "app/subjects/"),
            ("S3_GENERATED_PREFIX", "app/generated/"),
            ("STABILITY_API_KEY", "sk-1"),
            ("STABILITY_TIMEOUT_SECONDS", "5"),
            ("FAL_KEY", "-"),
            ("FAL_JWKS_URL", "http://127.0.0.1:1/jwks.json"),
            ("PUBLIC_BASE_URL", "https://api.test/"),
            ("NOTIFY_FROM_EMAIL", "jobs@example.com"),
            ("NOTIFY_MAX_ATTEMPTS", "2"),
            ("NOTIFY_WEBHOOK_TIMEOUT_SECONDS", "3"),
            ("PUBLIC_API_URL", "https://api.test/"),
            ("METRICS_NAMESPACE", " imagejobs/prod "),
        ])
        .unwrap();
        assert_eq!(
            s.resources,
            Resources {
                table: "jobs".into(),
                queue_url: "https://sqs.invalid/jobs".into(),
                bucket: "images".into(),
            }
        );
        assert_eq!(
            s.segmenter,
            SegmenterSettings {
                url: Some("http://segmenter:8080".into()),
                endpoint_name: Some("imagejobs-segmenter".into()),
                timeout: Duration::from_secs(12),
            }
        );
        assert_eq!(s.models.default_model, crate::models::PLAIN_BACKGROUND);
        assert_eq!(
            s.models.compat_model.as_deref(),
            Some(crate::models::PLAIN_BACKGROUND)
        );
        assert_eq!(
            s.jobs,
            JobSettings {
                max_receive_count: 7,
                ttl: time::Duration::days(3),
                result_url_ttl: Duration::from_secs(60),
                lease: Duration::from_secs(30),
                dead_letter_queue_arn: Some("arn:aws:sqs:us-east-1:1:dlq".into()),
                max_in_flight: 4,
                max_per_minute: 9,
            }
        );
        assert_eq!(
            s.limits,
            ImageLimits {
                max_bytes: 1000,
                max_pixels: 2000,
                max_side: 300,
            }
        );
        assert!(s.egress.allow_http_urls && s.egress.allow_private_urls);
        assert_eq!(s.auth.jwt_secret.as_deref(), Some("s3cret"));
        assert_eq!(s.auth.jwt_ttl, time::Duration::seconds(120));
        assert_eq!(
            s.auth.cors_allowed_origins,
            ["https://a.test", "https://b.test"]
        );
        assert_eq!(s.uploads.url_ttl, Duration::from_secs(45));
        assert_eq!(
            s.illustrations,
            IllustrationPrefixes {
                avatar: "app/avatars/".into(),
                subject: "app/subjects/".into(),
                generated: "app/generated/".into(),
            }
        );
        assert_eq!(s.providers.stability_api_key.as_deref(), Some("sk-1"));
        assert_eq!(s.providers.stability_timeout, Duration::from_secs(5));
        assert_eq!(s.providers.fal_key, None, "\"-\" means no key");
        assert_eq!(s.providers.fal_jwks_url, "http://127.0.0.1:1/jwks.json");
        assert_eq!(
            s.providers.public_base_url.as_deref(),
            Some("https://api.test")
        );
        assert_eq!(
            s.notifications.from_email.as_deref(),
            Some("jobs@example.com")
        );
        assert_eq!(s.notifications.max_attempts, 2);
        assert_eq!(s.notifications.webhook_timeout, Duration::from_secs(3));
        assert_eq!(
            s.notifications.public_api_url.as_deref(),
            Some("https://api.test")
        );
        assert_eq!(s.observability.metrics_namespace, "imagejobs/prod");
    }

    #[test]
    fn a_garbage_value_fails_naming_its_variable() {
        for (name, value) in [
            ("LEASE_SECONDS", "ninety"),
            ("MAX_JOBS_IN_FLIGHT", "-1"),
            ("ALLOW_HTTP_URLS", "maybe"),
            ("STABILITY_TIMEOUT_SECONDS", "1m"),
            ("FAL_TIMEOUT_SECONDS", "thirty"),
            ("NOTIFY_WEBHOOK_TIMEOUT_SECONDS", "10s"),
            ("NOTIFY_MAX_ATTEMPTS", "0"),
            ("NOTIFY_RESULT_URL_TTL_SECONDS", "604801"),
            ("NOTIFY_FROM_EMAIL", "not an address"),
            ("SEGMENTER_TIMEOUT_SECONDS", "1.5"),
            ("JOB_TTL_DAYS", "forever"),
            ("MAX_IMAGE_BYTES", "25MB"),
            ("DEFAULT_MODEL", "no-such-model"),
            ("COMPAT_MODEL", "no-such-model"),
            ("S3_AVATAR_PREFIX", "results/avatars/"),
            ("METRICS_NAMESPACE", "AWS/Lambda"),
            ("METRICS_NAMESPACE", "jobs{prod}"),
        ] {
            let e = error(&[(name, value)]);
            assert!(e.contains(name), "{name}={value}: {e}");
        }
        assert_eq!(
            error(&[("LEASE_SECONDS", "ninety")]),
            "configuration: environment variable LEASE_SECONDS='ninety' is not a whole number of seconds"
        );
    }

    #[test]
    fn a_missing_resource_fails_naming_it() {
        let vars: HashMap<&str, &str> = RESOURCES.into_iter().collect();
        for missing in ["JOBS_TABLE", "JOBS_QUEUE_URL", "IMAGES_BUCKET"] {
            let env = Env::from_fn(|name| {
                (name != missing)
                    .then(|| vars.get(name).map(|v| (*v).to_owned()))
                    .flatten()
            });
            let e = Settings::load(&env).unwrap_err().to_string();
            assert!(e.contains(missing), "{e}");
            assert!(e.contains("not set"), "{e}");
        }
    }

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
    }

    #[test]
    fn the_jwt_secret_stays_out_of_debug_output() {
        let mut s = Settings::new("t", "q", "b");
        s.auth.jwt_secret = Some("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
