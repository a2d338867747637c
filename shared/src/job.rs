//! The job model and its state machine. Pure: no I/O.
//!
//! `queued → processing → succeeded | failed | canceled`; a terminal job never changes again.
//! The store enforces every transition with a conditional write; the functions here decide
//! what a transition *is*, so the rule lives in one place.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use time::OffsetDateTime;
use ulid::Ulid;

use crate::operation::relight::RelightParams;
use crate::operation::remove_background::RemoveBackgroundParams;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted and enqueued; nothing has run yet.
    Queued,
    /// Claimed by a processor under a lease.
    Processing,
    /// Finished with a result (terminal).
    Succeeded,
    /// Finished with an error (terminal).
    Failed,
    /// Canceled by its owner (terminal).
    Canceled,
}

impl JobStatus {
    /// All statuses, in life order.
    pub const ALL: [JobStatus; 5] = [
        Self::Queued,
        Self::Processing,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
    ];

    /// Whether the job can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    /// Lower-case API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("'{s}' is not one of queued, processing, succeeded, failed, canceled")
            })
    }
}

/// What a job does, with its typed parameters. Serialised as
/// `{"operation": "remove_background", "params": {…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", content = "params", rename_all = "snake_case")]
pub enum Operation {
    /// Cut the subject out of `inputs.image` (segmenter engines, see [`crate::models`]).
    RemoveBackground(RemoveBackgroundParams),
    /// Replace the background of `inputs.image` and relight the subject (Stability, async;
    /// docs/providers.md §1.3).
    ReplaceBackgroundRelight(RelightParams),
    /// Edit `inputs.image` (plus `reference_1`…`reference_9`) as the prompt says (fal.ai
    /// Seedream v4 edit, async; docs/providers.md §2.9).
    Edit(crate::operation::edit::EditParams),
    /// Make an illustration: from text, the owner's avatar, or the owner's photo (fal.ai
    /// Seedream v4, async).
    Generate(crate::operation::generate::GenerateParams),
}

impl Operation {
    /// The operation's API name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RemoveBackground(_) => "remove_background",
            Self::ReplaceBackgroundRelight(_) => "replace_background_relight",
            Self::Edit(_) => "edit",
            Self::Generate(_) => "generate",
        }
    }
}

/// Operation names accepted by the API and by S3 ingest paths.
pub const OPERATION_NAMES: &[&str] = &[
    "remove_background",
    "replace_background_relight",
    "edit",
    "generate",
];

/// Where an input came from (kept for audit; the bytes are always in our bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputSource {
    /// Multipart upload through the API.
    Upload,
    /// An `s3://` reference to this deployment's bucket.
    S3,
    /// An `https://` URL fetched once by the API.
    Url,
    /// An object dropped under `inbox/` (ingest).
    Inbox,
}

/// One input image, stored in our bucket and already validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputImage {
    /// S3 object key in the images bucket.
    pub key: String,
    /// Sniffed MIME type (`image/jpeg`, `image/png`, `image/webp`).
    pub content_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size in bytes.
    pub bytes: u64,
    /// Where it came from.
    pub source: InputSource,
}

/// The finished output of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// S3 object key (`results/{owner}/{job_id}.{ext}`).
    pub key: String,
    /// MIME type of the stored object.
    pub content_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size in bytes.
    pub bytes: u64,
    /// Engine that produced it (e.g. `isnet`, `plain-background`, `fal/…`). For background
    /// removal this is the model that actually ran, which differs from `params.model` when a
    /// compatibility request's model was not deployed and a stand-in ran (`model_fallback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Background removal: the share of the image the mask keeps, 0.0–1.0 (mean alpha / 255
    /// over the mask, soft edges in proportion). `None` for other operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreground_fraction: Option<f64>,
    /// Every output of a provider job, in the provider's order (the first is the result
    /// above); `GET /v1/jobs/{id}/result?index=N` serves each. Empty for single-output jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ResultImage>,
    /// The seed the provider used, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// fal.ai's per-request URLs from the submit answer (docs/providers.md §2.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderLinks {
    /// `GET` → status (202 while queued/running, 200 when completed).
    pub status_url: String,
    /// `GET` → the model output.
    pub response_url: String,
    /// `PUT` → cancel.
    pub cancel_url: String,
}

/// One stored output image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultImage {
    /// S3 object key (`results/{owner}/{job_id}.{ext}`, then `…/{job_id}-{n}.{ext}`).
    pub key: String,
    /// MIME type.
    pub content_type: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size in bytes.
    pub bytes: u64,
}

/// Why a job failed: a stable machine-readable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// Stable code, e.g. `invalid_image`, `retries_exhausted`, `model_unavailable`.
    pub code: String,
    /// What happened, for a person.
    pub message: String,
}

impl JobError {
    /// Builds an error from a code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The owner's id, validated: 1–128 characters of `A–Z a–z 0–9 _ - . @`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OwnerId(String);

impl OwnerId {
    /// Validates and wraps an owner id.
    ///
    /// # Errors
    /// A message naming the rule when `raw` is empty, too long, or has other characters.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!(
                "owner id '{raw}' must be 1–128 characters of A–Z a–z 0–9 _ - . @"
            ))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OwnerId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<OwnerId> for String {
    fn from(o: OwnerId) -> Self {
        o.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job: what to do, on which inputs, for whom, and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// ULID: time-ordered, so newest-first is key order.
    pub id: Ulid,
    /// Whose job it is; every read is scoped by it.
    pub owner: OwnerId,
    /// The operation and its parameters.
    #[serde(flatten)]
    pub operation: Operation,
    /// Current state.
    pub status: JobStatus,
    /// Named inputs (`image` for `remove_background`).
    pub inputs: BTreeMap<String, InputImage>,
    /// Set once `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// Set once `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Processing attempts started so far (a lease claim counts one).
    #[serde(default)]
    pub attempts: u32,
    /// When the job was accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change of any field.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// First claim by a processor.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a terminal state.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<OffsetDateTime>,
    /// Unix seconds after which the record may be deleted (DynamoDB TTL; S3 lifecycle rules
    /// expire the objects on the same schedule).
    pub expires_at: i64,
    /// External provider running the job (`stability`), once submitted there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's request id (Stability's 64-character generation id). Written once, with
    /// a conditional write: its presence is what stops a redelivered message submitting twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_request_id: Option<String>,
    /// Unix seconds after which waiting on the provider ends with `provider_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_deadline: Option<i64>,
    /// The provider's own URLs for this request (fal's `status_url`, `response_url`,
    /// `cancel_url`: the contract says to use these rather than build them, §2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_links: Option<ProviderLinks>,
    /// Non-fatal notes on a finished job (e.g. `content_filtered`: the provider blurred the
    /// output).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Who is told when the job ends (webhook and/or e-mail); empty = nobody.
    #[serde(default, skip_serializing_if = "Notify::is_empty")]
    pub notify: Notify,
    /// Notification deliveries tried so far, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationAttempt>,
    /// The request that created the job, to find it in the logs: the API's `X-Request-Id`
    /// (the client's, or the ULID the API made), or the S3 request id of an ingest upload;
    /// `None` when unknown or not a usable id ([`request_id`]). The processor logs it in each
    /// job span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Where a job's end is announced. Both are optional; an empty value sends nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notify {
    /// Receives a Standard Webhooks–signed POST on success and on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Receives an e-mail (Amazon SES) on success and on failure; never for a rejected job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl Notify {
    /// True when nobody is to be told.
    pub fn is_empty(&self) -> bool {
        self.webhook_url.is_none() && self.email.is_none()
    }
}

/// One notification delivery attempt, recorded on the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationAttempt {
    /// `webhook` or `email`.
    pub channel: String,
    /// 1-based attempt number for this channel.
    pub attempt: u32,
    /// When it was tried.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `delivered` or `failed`.
    pub outcome: String,
    /// The receiver's HTTP status, for webhooks that got an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Job {
    /// A new `queued` job. `ttl` is how long the record and its objects are kept.
    pub fn new(
        id: Ulid,
        owner: OwnerId,
        operation: Operation,
        inputs: BTreeMap<String, InputImage>,
        now: OffsetDateTime,
        ttl: time::Duration,
    ) -> Self {
        Self {
            id,
            owner,
            operation,
            status: JobStatus::Queued,
            inputs,
            result: None,
            error: None,
            attempts: 0,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            expires_at: (now + ttl).unix_timestamp(),
            provider: None,
            provider_request_id: None,
            provider_deadline: None,
            provider_links: None,
            warnings: Vec::new(),
            notify: Notify::default(),
            notifications: Vec::new(),
            request_id: None,
        }
    }

    /// Processing time in milliseconds, once terminal and started.
    pub fn duration_ms(&self) -> Option<i64> {
        Some((self.finished_at? - self.started_at?).whole_milliseconds() as i64)
    }
}

/// S3 key of a job's input object: `inputs/{owner}/{job_id}/{name}.{ext}`.
pub fn input_key(owner: &OwnerId, id: Ulid, name: &str, extension: &str) -> String {
    format!("inputs/{owner}/{id}/{name}.{extension}")
}

/// S3 key of output `index` (0-based) of a multi-output job: the first is [`result_key`], the
/// rest `results/{owner}/{job_id}-{index}.{ext}`.
pub fn result_key_at(owner: &OwnerId, id: Ulid, index: usize, extension: &str) -> String {
    if index == 0 {
        result_key(owner, id, extension)
    } else {
        format!("results/{owner}/{id}-{index}.{extension}")
    }
}

/// S3 key of a job's result: `results/{owner}/{job_id}.{ext}` (deterministic, so a retried
/// attempt overwrites rather than duplicates).
pub fn result_key(owner: &OwnerId, id: Ulid, extension: &str) -> String {
    format!("results/{owner}/{id}.{extension}")
}

/// The longest request id a job records ([`request_id`]).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// `raw` as a job's [`Job::request_id`]: trimmed, 1–[`MAX_REQUEST_ID_LEN`] printable ASCII
/// characters without spaces; `None` otherwise. A client chooses its `X-Request-Id`, so
/// anything longer or stranger is not copied into records and log lines.
pub fn request_id(raw: &str) -> Option<String> {
    let id = raw.trim();
    (!id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| id.to_owned())
}

/// A message on the jobs queue. JSON, `{"kind": "run", "owner": …, "job_id": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobMessage {
    /// Run (or resume) the job.
    Run {
        /// The job's owner (part of the record's key).
        owner: OwnerId,
        /// The job id.
        job_id: Ulid,
    },
    /// Ask the provider whether the job's request is done (`{"kind": "poll", …}`). Handled
    /// without a lease claim: the job is already `processing` and the stored request id is the
    /// guard.
    Poll {
        /// The job's owner.
        owner: OwnerId,
        /// The job id.
        job_id: Ulid,
        /// The provider request this poll is about (a stale chain is ignored).
        request_id: String,
        /// 0-based poll number, for the backoff.
        attempt: u32,
        /// The job's `pending` due time (Unix seconds) when this poll was scheduled: the poll
        /// chain's token. Only the handler that finds it unchanged schedules the next poll, so
        /// a duplicate or superseded poll (the sweeper replaced it) ends its chain. `None`
        /// (one-off polls, messages from before this field) takes the chain over.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due: Option<i64>,
    },
    /// Tell the job's webhook and/or e-mail recipient that it ended (`{"kind": "notify", …}`).
    /// Sent by whatever ended the job (processor, cancel); handled by the processor, which
    /// re-sends itself with a delay while a delivery keeps failing. Channels already delivered
    /// (per [`Job::notifications`]) are never sent again.
    Notify {
        /// The job's owner.
        owner: OwnerId,
        /// The job id.
        job_id: Ulid,
        /// 1-based delivery round, for logs (the backoff follows the recorded attempts).
        attempt: u32,
    },
}

impl JobMessage {
    /// The job this message is about.
    pub fn job(&self) -> (&OwnerId, Ulid) {
        match self {
            Self::Run { owner, job_id }
            | Self::Poll { owner, job_id, .. }
            | Self::Notify { owner, job_id, .. } => (owner, *job_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::remove_background::RemoveBackgroundParams;

    #[test]
    fn request_ids_are_kept_only_when_short_printable_and_unspaced() {
        assert_eq!(
            request_id(" 01JD0000000000000000000000 ").as_deref(),
            Some("01JD0000000000000000000000")
        );
        assert_eq!(request_id("req-42/a:b").as_deref(), Some("req-42/a:b"));
        let longest = "r".repeat(MAX_REQUEST_ID_LEN);
        assert_eq!(request_id(&longest), Some(longest.clone()));
        for bad in ["", "   ", "two words", "caf\u{e9}", "line\nbreak"] {
            assert_eq!(request_id(bad), None, "{bad:?}");
        }
        assert_eq!(request_id(&format!("{longest}r")), None);
    }

    fn job() -> Job {
        Job::new(
            Ulid::from_string("01JD0000000000000000000000").unwrap(),
            OwnerId::parse("team-a").unwrap(),
            Operation::RemoveBackground(RemoveBackgroundParams::with_model("u2net")),
            BTreeMap::new(),
            time::macros::datetime!(2026-11-21 10:00 UTC),
            time::Duration::days(30),
        )
    }

    #[test]
    fn job_json_shape_is_flat_operation_and_params() {
        let v = serde_json::to_value(job()).unwrap();
        assert_eq!(v["operation"], "remove_background");
        assert_eq!(v["params"]["model"], "u2net");
        assert_eq!(v["status"], "queued");
        assert_eq!(v["created_at"], "2026-11-21T10:00:00Z");
        assert_eq!(v["expires_at"], 1_797_847_200);
        let back: Job = serde_json::from_value(v).unwrap();
        assert_eq!(back, job());
    }

    #[test]
    fn terminal_states() {
        assert!(!JobStatus::Queued.is_terminal());
        assert!(!JobStatus::Processing.is_terminal());
        for s in [JobStatus::Succeeded, JobStatus::Failed, JobStatus::Canceled] {
            assert!(s.is_terminal());
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn owner_ids_are_restricted() {
        assert!(OwnerId::parse("a.b@c-d_e").is_ok());
        for bad in ["", "a/b", "a b", "OWNER#x", &"x".repeat(129)] {
            assert!(OwnerId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_scoped_by_owner() {
        let j = job();
        assert_eq!(
            result_key(&j.owner, j.id, "png"),
            "results/team-a/01JD0000000000000000000000.png"
        );
        assert_eq!(
            input_key(&j.owner, j.id, "image", "jpg"),
            "inputs/team-a/01JD0000000000000000000000/image.jpg"
        );
    }

    #[test]
    fn message_round_trips() {
        let m = JobMessage::Run {
            owner: OwnerId::parse("o").unwrap(),
            job_id: Ulid::nil(),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(
            s,
            r#"{"kind":"run","owner":"o","job_id":"00000000000000000000000000"}"#
        );
        assert_eq!(serde_json::from_str::<JobMessage>(&s).unwrap(), m);
        let poll: JobMessage = serde_json::from_str(
            r#"{"kind":"poll","owner":"o","job_id":"00000000000000000000000000","request_id":"r","attempt":2}"#,
        )
        .unwrap();
        assert!(matches!(poll, JobMessage::Poll { attempt: 2, .. }));
    }

    #[test]
    fn records_without_provider_fields_still_decode() {
        let mut v = serde_json::to_value(job()).unwrap();
        assert!(v.get("provider_request_id").is_none());
        assert!(v.get("warnings").is_none());
        v.as_object_mut().unwrap().remove("attempts");
        let back: Job = serde_json::from_value(v).unwrap();
        assert_eq!(back.provider_request_id, None);
    }
}
