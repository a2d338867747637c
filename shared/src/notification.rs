//! Telling people that a job ended: signed webhooks and e-mail.
//!
//! Webhooks follow the [Standard Webhooks](https://www.standardwebhooks.com/) specification
//! ([spec text](https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md)):
//! every delivery is a `POST` of a JSON event with the headers
//!
//! - `webhook-id`: `msg_{job_id}_{status}`, the same on every retry of the same event, so a
//!   receiver can drop duplicates;
//! - `webhook-timestamp`: Unix seconds of this attempt (receivers refuse anything more than
//!   5 minutes off);
//! - `webhook-signature`: `v1,` + base64(HMAC-SHA256(key, `"{id}.{timestamp}.{body}"`)), where
//!   the key is the base64-decoded part after `whsec_` of the owner's secret.
//!
//! This module holds the pure parts (secrets, signing, the event body, URL and address
//! validation, the retry schedule) and the two ports the sender needs
//! ([`NotificationStore`], [`EmailSender`]); the processor's `notify` module does the sending
//! and the DynamoDB/SES adapters live in [`crate::adapters`].

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::net::IpAddr;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ulid::Ulid;

use crate::core::JobQueue;
use crate::error::{Error, Result};
use crate::job::{Job, JobMessage, JobStatus, NotificationAttempt, OwnerId};

/// Prefix of a webhook signing secret (Standard Webhooks' convention).
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret (the spec asks for 24–64).
pub const SECRET_BYTES: usize = 32;
/// Longest accepted webhook URL, in bytes.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;
/// SQS's longest `DelaySeconds`: the cap of the retry schedule.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(900);
/// Channel name of webhook attempts in [`Job::notifications`].
pub const CHANNEL_WEBHOOK: &str = "webhook";
/// Channel name of e-mail attempts in [`Job::notifications`].
pub const CHANNEL_EMAIL: &str = "email";
/// [`NotificationAttempt::outcome`] of a delivered notification.
pub const DELIVERED: &str = "delivered";
/// [`NotificationAttempt::outcome`] of a failed attempt.
pub const FAILED: &str = "failed";

/// Why a notification setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// A stored or given secret is not `whsec_` + base64 of 24–64 bytes.
    #[error("webhook secret must be '{SECRET_PREFIX}' followed by base64 of 24–64 bytes")]
    InvalidSecret,
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// An owner's webhook signing secret, `whsec_` + base64 (standard alphabet, padded) of
/// [`SECRET_BYTES`] random bytes. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// A new random secret.
    ///
    /// # Errors
    /// [`NotifyError::Random`] when the OS random source fails (never expected on Linux).
    pub fn generate() -> std::result::Result<Self, NotifyError> {
        let mut key = vec![0u8; SECRET_BYTES];
        getrandom::fill(&mut key).map_err(|e| NotifyError::Random(e.to_string()))?;
        Ok(Self {
            text: format!("{SECRET_PREFIX}{}", STANDARD.encode(&key)),
            key,
        })
    }

    /// Parses `whsec_…`; the base64 part may be padded or not.
    ///
    /// # Errors
    /// [`NotifyError::InvalidSecret`] for anything else, or a key outside 24–64 bytes.
    pub fn parse(text: &str) -> std::result::Result<Self, NotifyError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(NotifyError::InvalidSecret)?;
        let key = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| NotifyError::InvalidSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(NotifyError::InvalidSecret);
        }
        Ok(Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The secret as shown to its owner (`whsec_…`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The HMAC key (the decoded bytes).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The `webhook-signature` header value for one delivery: `v1,{base64 signature}`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        sign(&self.key, msg_id, timestamp, body)
    }
}

/// Standard Webhooks signature: `v1,` + base64(HMAC-SHA256(`key`,
/// `"{msg_id}.{timestamp}.{body}"`)). `timestamp` is in Unix seconds.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The event type of a terminal status: `job.succeeded`, `job.failed`, `job.canceled`;
/// `None` while the job is still queued or processing.
pub fn event_type(status: JobStatus) -> Option<&'static str> {
    match status {
        JobStatus::Succeeded => Some("job.succeeded"),
        JobStatus::Failed => Some("job.failed"),
        JobStatus::Canceled => Some("job.canceled"),
        JobStatus::Queued | JobStatus::Processing => None,
    }
}

/// The `webhook-id` of a job's end event: `msg_{job_id}_{status}`, stable across retries.
pub fn webhook_id(job_id: Ulid, status: JobStatus) -> String {
    format!("msg_{job_id}_{status}")
}

/// The API path of a job (`/v1/jobs/{id}`), prefixed with `api_base` when given (e.g.
/// `https://abc.execute-api.us-east-1.amazonaws.com`).
pub fn job_link(api_base: Option<&str>, job_id: Ulid) -> String {
    format!(
        "{}/v1/jobs/{job_id}",
        api_base.unwrap_or("").trim_end_matches('/')
    )
}

/// The job as a webhook event shows it: what a receiver needs, without the owner's
/// notification settings or attempts.
#[derive(Debug, Serialize)]
struct EventJob<'a> {
    id: Ulid,
    #[serde(flatten)]
    operation: &'a crate::job::Operation,
    status: JobStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a crate::job::JobResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a crate::job::JobError>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<OffsetDateTime>,
    links: EventLinks,
}

#[derive(Debug, Serialize)]
struct EventLinks {
    #[serde(rename = "self")]
    this: String,
    result: String,
}

/// The body of a job's end event:
/// `{"type": "job.succeeded"|"job.failed"|"job.canceled", "timestamp": RFC 3339 (when the job
/// ended), "data": {id, operation, params, status, result | error, warnings, created_at,
/// finished_at, links: {self, result}}}`. The same bytes on every retry of the event.
///
/// # Errors
/// [`Error::Invalid`] `job_not_finished` for a job that has not ended.
pub fn event_body(job: &Job, api_base: Option<&str>) -> Result<Vec<u8>> {
    let kind = event_type(job.status).ok_or_else(|| Error::Invalid {
        code: "job_not_finished",
        message: format!("job {} is {}; nothing to announce", job.id, job.status),
    })?;
    let ended = job.finished_at.unwrap_or(job.updated_at);
    let this = job_link(api_base, job.id);
    let event = serde_json::json!({
        "type": kind,
        "timestamp": ended.format(&Rfc3339).map_err(|e| Error::Corrupt { what: "timestamp", message: e.to_string() })?,
        "data": EventJob {
            id: job.id,
            operation: &job.operation,
            status: job.status,
            result: job.result.as_ref(),
            error: job.error.as_ref(),
            warnings: &job.warnings,
            created_at: job.created_at,
            finished_at: job.finished_at,
            links: EventLinks { result: format!("{this}/result"), this },
        },
    });
    serde_json::to_vec(&event).map_err(|e| Error::Corrupt {
        what: "webhook event",
        message: e.to_string(),
    })
}

/// Delay before retry `n` (1-based: the retry after the `n`-th failed attempt):
/// `base × 3^(n-1)`, at most 15 minutes (SQS's `DelaySeconds` limit). With the default 10 s
/// base: 10 s, 30 s, 90 s, 270 s, 810 s, 900 s, …
pub fn retry_delay(base: Duration, n: u32) -> Duration {
    let factor = 3u32.saturating_pow(n.saturating_sub(1));
    base.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

fn invalid(code: &'static str, message: String) -> Error {
    Error::Invalid { code, message }
}

/// Checks a webhook URL given at submission or as an owner default: an absolute `https` URL
/// (`http` too when `allow_http`, local development only) with a host, at most
/// [`MAX_WEBHOOK_URL_LEN`] bytes; a literal IP address must be public unless `allow_private`.
/// Host names are resolved and checked again at every delivery (the SSRF guard of
/// [`crate::egress`]).
///
/// # Errors
/// [`Error::Invalid`] `invalid_webhook_url` saying what is wrong.
pub fn validate_webhook_url(raw: &str, allow_http: bool, allow_private: bool) -> Result<String> {
    let raw = raw.trim();
    let bad = |why: &str| invalid("invalid_webhook_url", format!("webhook_url '{raw}' {why}"));
    if raw.len() > MAX_WEBHOOK_URL_LEN {
        return Err(bad(&format!("is longer than {MAX_WEBHOOK_URL_LEN} bytes")));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("is not an absolute URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(bad("must use https")),
    }
    let ip: Option<IpAddr> = match url.host() {
        None => return Err(bad("has no host")),
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = ip
        && crate::egress::is_non_public(ip)
        && !allow_private
    {
        return Err(bad("points at a non-public address"));
    }
    Ok(url.to_string())
}

/// Checks an e-mail address (RFC 5322 `addr-spec`, via the `email_address` crate) and returns
/// it trimmed. Display names (`Ann <ann@example.com>`) are refused: give the address only.
///
/// # Errors
/// [`Error::Invalid`] `invalid_email`.
pub fn validate_email(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let options = email_address::Options::default().without_display_text();
    match email_address::EmailAddress::parse_with_options(raw, options) {
        Ok(address) if raw.len() <= 254 => Ok(address.email()),
        _ => Err(invalid(
            "invalid_email",
            format!("email '{raw}' is not a valid e-mail address (like name@example.com)"),
        )),
    }
}

/// An owner's webhook settings (`pk = OWNER#{owner}`, `sk = WEBHOOK`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OwnerWebhook {
    /// Signing secret (`whsec_…`); created on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Receives the events of jobs created without a `webhook_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_url: Option<String>,
}

/// Owner webhook settings and the attempts recorded on jobs.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// The owner's settings; `None` when never written.
    async fn webhook_settings(&self, owner: &OwnerId) -> Result<Option<OwnerWebhook>>;
    /// The owner's signing secret, created (once, with a conditional write) when missing.
    async fn webhook_secret(&self, owner: &OwnerId) -> Result<WebhookSecret>;
    /// Replaces the owner's secret with a new random one and returns it. Deliveries signed
    /// before the rotation no longer verify with the new secret.
    async fn rotate_webhook_secret(&self, owner: &OwnerId) -> Result<WebhookSecret>;
    /// Sets (or, with `None`, removes) the owner's default webhook URL.
    async fn set_default_webhook_url(&self, owner: &OwnerId, url: Option<&str>) -> Result<()>;
    /// Takes the delivery claim of one channel of an ended job until `until`: the one claim per
    /// (job, terminal status, channel) that makes two `notify` messages handled at once send
    /// once (a job's terminal status never changes, so the claim is keyed by job and channel).
    /// `false` when another handler holds an unexpired claim, or the channel is settled
    /// ([`record_attempt`](Self::record_attempt) with `settled`).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached.
    async fn claim_delivery(
        &self,
        owner: &OwnerId,
        job_id: Ulid,
        channel: &str,
        until: OffsetDateTime,
    ) -> Result<bool>;
    /// Appends an attempt to the job's `notifications` (`list_append`) and, in the same write,
    /// ends the channel's claim: `settled` (delivered, or no attempt left) closes the channel
    /// for good; otherwise the claim is released for the next retry.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the job does not exist.
    async fn record_attempt(
        &self,
        owner: &OwnerId,
        job_id: Ulid,
        attempt: &NotificationAttempt,
        settled: bool,
    ) -> Result<()>;
    /// Removes an ended job's notification outbox entry (its place in the `pending` index,
    /// written by the terminal transition; docs/ARCHITECTURE.md "Recovery") once every channel
    /// is settled (delivered, refused for good, out of attempts), or once it is known nobody is
    /// to be told. Does nothing to a job that is not terminal or has no entry.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached.
    async fn clear_outbox(&self, owner: &OwnerId, job_id: Ulid) -> Result<()>;
    /// Moves an ended job's outbox entry to `due` (Unix seconds): a delivery retry is
    /// scheduled for then, and the sweeper relays the job again only if that retry is lost
    /// too. Does nothing to a job that is not terminal or whose entry is gone.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the store cannot be reached.
    async fn defer_outbox(&self, owner: &OwnerId, job_id: Ulid, due: i64) -> Result<()>;
}

/// How an e-mail send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    /// SES refused the message: unverified sender or recipient (sandbox), no permission,
    /// suspended account, bad address.
    #[error("e-mail refused: {0}")]
    Rejected(String),
    /// SES could not be reached or throttled us: worth another try.
    #[error("e-mail service unavailable: {0}")]
    Unavailable(String),
}

/// Sends plain-text e-mail (Amazon SES v2 on AWS).
#[async_trait]
pub trait EmailSender: Send + Sync {
    /// The configured sender address.
    fn sender(&self) -> &str;
    /// Sends one message to `to`; returns the provider's message id.
    async fn send(
        &self,
        to: &str,
        subject: &str,
        text: &str,
    ) -> std::result::Result<String, EmailError>;
}

/// Whether anyone is to be told that `job` ended: a job-level target, or the owner's default
/// webhook URL.
///
/// # Errors
/// What [`NotificationStore::webhook_settings`] fails with.
pub async fn wants_notification(job: &Job, store: &dyn NotificationStore) -> Result<bool> {
    if !job.notify.is_empty() {
        return Ok(true);
    }
    Ok(store
        .webhook_settings(&job.owner)
        .await?
        .is_some_and(|s| s.default_url.is_some()))
}

/// Relays an ended job's notification outbox entry: enqueues its `notify` message when anyone
/// is to be told, else clears the entry. Returns whether a message was sent.
///
/// Called by whoever wrote the terminal transition, right after it. The entry stays until the
/// `notify` handler has settled every channel and clears it, so a message that is lost — never
/// sent, or held by a processor that was killed — is relayed again by the recovery sweeper
/// after [`crate::resources::OUTBOX_GRACE_SECONDS`], not after the queue's visibility timeout.
/// The duplicate `notify` messages this can make are harmless: each channel is sent under a
/// delivery claim.
///
/// # Errors
/// What reading the owner's settings or the queue send fail with; the entry then stays for the
/// sweeper.
pub async fn enqueue_for_ended_job(
    job: &Job,
    store: &dyn NotificationStore,
    queue: &dyn JobQueue,
) -> Result<bool> {
    if !job.status.is_terminal() {
        return Ok(false);
    }
    let wanted = wants_notification(job, store).await?;
    if wanted {
        let message = JobMessage::Notify {
            owner: job.owner.clone(),
            job_id: job.id,
            attempt: 1,
        };
        queue.send(&message, Duration::ZERO).await?;
        return Ok(true);
    }
    // Not an error for the caller: an entry left behind only makes the sweeper queue a
    // `notify` whose handler finds nobody to tell and clears it.
    if let Err(e) = store.clear_outbox(&job.owner, job.id).await {
        tracing::warn!(job_id = %job.id, error = %e, "could not clear the outbox entry; the sweeper will relay it again");
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries (also used by Svix). The
    /// expected value was produced independently of this code with the `standardwebhooks`
    /// Python package 1.1.0:
    /// `Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").sign("msg_p5jXN8AQM9LWM0D4loKWxJek",
    /// datetime.fromtimestamp(1614265330, timezone.utc), '{"test": 2432232314}')`.
    #[test]
    fn signature_matches_the_reference_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // Any change to id, timestamp or body changes the signature.
        let base = secret.sign("msg_1", 1, b"{}");
        assert_ne!(secret.sign("msg_2", 1, b"{}"), base);
        assert_ne!(secret.sign("msg_1", 2, b"{}"), base);
        assert_ne!(secret.sign("msg_1", 1, b"{ }"), base);
    }

    #[test]
    fn secrets_round_trip_and_refuse_garbage() {
        let s = WebhookSecret::generate().unwrap();
        assert!(s.as_str().starts_with("whsec_"));
        assert_eq!(s.key().len(), SECRET_BYTES);
        assert_eq!(WebhookSecret::parse(s.as_str()).unwrap(), s);
        assert_ne!(WebhookSecret::generate().unwrap(), s);
        assert_eq!(format!("{s:?}"), "WebhookSecret(***)");
        for bad in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!!",
            "whsec_AAAA",
        ] {
            assert_eq!(
                WebhookSecret::parse(bad).unwrap_err(),
                NotifyError::InvalidSecret,
                "{bad}"
            );
        }
    }

    #[test]
    fn retries_back_off_to_fifteen_minutes() {
        let base = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(base, n).as_secs()).collect();
        assert_eq!(delays, [10, 30, 90, 270, 810, 900, 900]);
        assert_eq!(retry_delay(Duration::ZERO, 3), Duration::ZERO);
        assert_eq!(retry_delay(base, 100), MAX_RETRY_DELAY);
    }

    #[test]
    fn webhook_urls_are_https_and_public() {
        assert!(validate_webhook_url("https://hooks.example.com/x?y=1", false, false).is_ok());
        for (bad, http, private) in [
            ("http://hooks.example.com/", false, false),
            ("ftp://hooks.example.com/", true, true),
            ("https://127.0.0.1/", false, false),
            ("https://[::1]/", false, false),
            ("https://169.254.169.254/latest", true, false),
            ("not a url", true, true),
            ("/relative", true, true),
        ] {
            let err = validate_webhook_url(bad, http, private).unwrap_err();
            assert_eq!(err.code(), "invalid_webhook_url", "{bad}");
        }
        assert!(validate_webhook_url("http://127.0.0.1:9/h", true, true).is_ok());
        let long = format!("https://h.example/{}", "a".repeat(MAX_WEBHOOK_URL_LEN));
        assert!(validate_webhook_url(&long, false, false).is_err());
    }

    #[test]
    fn email_addresses_are_checked() {
        assert_eq!(
            validate_email(" ann@example.com ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "Ann <ann@example.com>",
            "a b@example.com",
        ] {
            assert_eq!(
                validate_email(bad).unwrap_err().code(),
                "invalid_email",
                "{bad}"
            );
        }
    }

    #[test]
    fn event_body_names_the_job_and_its_end() {
        use crate::operation::remove_background::RemoveBackgroundParams;
        let mut job = Job::new(
            Ulid::from_string("01JD0000000000000000000000").unwrap(),
            OwnerId::parse("team-a").unwrap(),
            crate::job::Operation::RemoveBackground(RemoveBackgroundParams::with_model("u2net")),
            Default::default(),
            time::macros::datetime!(2026-11-21 10:00 UTC),
            time::Duration::days(30),
        );
        assert_eq!(
            event_body(&job, None).unwrap_err().code(),
            "job_not_finished"
        );
        job.status = JobStatus::Failed;
        job.error = Some(crate::job::JobError::new("invalid_image", "corrupt"));
        job.finished_at = Some(time::macros::datetime!(2026-11-21 10:01 UTC));
        job.notify.email = Some("secret@example.com".into());
        let body = event_body(&job, Some("https://api.example.com/")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "job.failed");
        assert_eq!(v["timestamp"], "2026-11-21T10:01:00Z");
        assert_eq!(v["data"]["id"], "01JD0000000000000000000000");
        assert_eq!(v["data"]["operation"], "remove_background");
        assert_eq!(v["data"]["error"]["code"], "invalid_image");
        assert_eq!(
            v["data"]["links"]["result"],
            "https://api.example.com/v1/jobs/01JD0000000000000000000000/result"
        );
        assert!(
            v["data"].get("notify").is_none(),
            "no notification settings"
        );
        assert!(!String::from_utf8(body.clone()).unwrap().contains("secret@"));
        assert_eq!(
            event_body(&job, Some("https://api.example.com/")).unwrap(),
            body
        );
        assert_eq!(
            webhook_id(job.id, job.status),
            "msg_01JD0000000000000000000000_failed"
        );
    }
}
