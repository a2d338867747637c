//! Ingest: objects created under `inbox/{owner}/{operation}/{file}` become jobs.
//!
//! Optional parameters come from the object's user metadata (`x-amz-meta-model`,
//! `x-amz-meta-output-format` or `x-amz-meta-output_format`, …; other metadata is ignored).
//! S3 may deliver an event twice, so each object version maps to one idempotency key and a
//! duplicate event finds the same job. An object whose parameters or image are invalid still
//! gets a job record — `failed`, with the reason — so its owner can see what happened.

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::OffsetDateTime;

use shared::config::Settings;
use shared::core::{BlobStore, Created, Idempotency, JobStore, JobTransitions};
use shared::job::{Job, JobError, Operation, OwnerId};
use shared::operation::remove_background::{REMOVE_BACKGROUND_FIELDS, RemoveBackgroundParams};
use shared::resources::INBOX_PREFIX;
use shared::service::{InputRef, JobSubmitter, Submission};

use crate::error::IngestError;

/// What happened to one S3 record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// A job was created (or an earlier delivery's job was found) with this id.
    Queued(String),
    /// The object was invalid; a `failed` job records why.
    Rejected {
        /// The failed job's id.
        job_id: String,
        /// Why.
        code: String,
    },
    /// Not for us (other event, other bucket, key outside `inbox/{owner}/{operation}/`).
    Ignored(String),
}

/// Turns S3 notifications into jobs.
#[derive(Clone)]
pub struct Ingest {
    submitter: JobSubmitter,
    store: Arc<dyn JobStore>,
    transitions: Arc<dyn JobTransitions>,
    blobs: Arc<dyn BlobStore>,
    settings: Arc<Settings>,
}

/// Where an inbox key says a job belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxPath {
    /// Owner segment.
    pub owner: OwnerId,
    /// Operation segment.
    pub operation: String,
}

/// Parses `inbox/{owner}/{operation}/{file}`.
///
/// # Errors
/// Why the key does not fit that shape.
pub fn parse_inbox_key(key: &str) -> Result<InboxPath, String> {
    let rest = key
        .strip_prefix(INBOX_PREFIX)
        .ok_or_else(|| format!("'{key}' is outside {INBOX_PREFIX}"))?;
    let mut parts = rest.splitn(3, '/');
    let (Some(owner), Some(operation), Some(file)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "'{key}' is not inbox/{{owner}}/{{operation}}/{{file}}"
        ));
    };
    if file.is_empty() || file.ends_with('/') {
        return Err(format!("'{key}' names a folder, not a file"));
    }
    Ok(InboxPath {
        owner: OwnerId::parse(owner)?,
        operation: operation.to_owned(),
    })
}

/// Decodes an S3 event key (URL-encoded, with `+` for spaces, as AWS sends it).
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// The S3 request that stored the object (`responseElements.x-amz-request-id`), recorded on
/// its job as [`shared::job::Job::request_id`]; `None` when the event has none (the local
/// emulator's events) or it is not a usable id.
pub fn s3_request_id(record: &S3EventRecord) -> Option<String> {
    record
        .response_elements
        .get("x-amz-request-id")
        .and_then(|id| shared::job::request_id(id))
}

impl Ingest {
    /// Builds the handler over the given ports.
    pub fn new(
        submitter: JobSubmitter,
        store: Arc<dyn JobStore>,
        transitions: Arc<dyn JobTransitions>,
        blobs: Arc<dyn BlobStore>,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            submitter,
            store,
            transitions,
            blobs,
            settings,
        }
    }

    /// Handles every record. A transient failure fails the whole invocation so that Lambda
    /// retries it; records already handled are found again through their idempotency keys.
    ///
    /// # Errors
    /// [`IngestError::Shared`] for dependency failures.
    pub async fn handle(&self, event: S3Event) -> Result<Vec<IngestOutcome>, IngestError> {
        let mut outcomes = Vec::with_capacity(event.records.len());
        for record in &event.records {
            let outcome = self.handle_record(record).await?;
            tracing::info!(?outcome, "S3 record handled");
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn handle_record(&self, record: &S3EventRecord) -> Result<IngestOutcome, IngestError> {
        let event_name = record.event_name.as_deref().unwrap_or_default();
        if !event_name.starts_with("ObjectCreated") {
            return Ok(IngestOutcome::Ignored(format!("event {event_name}")));
        }
        let bucket = record.s3.bucket.name.as_deref().unwrap_or_default();
        if bucket != self.blobs.bucket() {
            return Ok(IngestOutcome::Ignored(format!("bucket {bucket}")));
        }
        let Some(raw_key) = record.s3.object.key.as_deref() else {
            return Ok(IngestOutcome::Ignored("record without a key".into()));
        };
        let key = decode_key(raw_key);
        let path = match parse_inbox_key(&key) {
            Ok(p) => p,
            Err(why) => return Ok(IngestOutcome::Ignored(why)),
        };
        let version = record
            .s3
            .object
            .e_tag
            .clone()
            .or_else(|| record.s3.object.sequencer.clone())
            .unwrap_or_default();
        let idempotency_key = format!(
            "ingest-{}",
            &hex::encode(Sha256::digest(format!("{bucket}/{key}#{version}")))[..40]
        );
        let request_id = s3_request_id(record);
        let operation = match self.operation(&path, &key).await? {
            Ok(op) => op,
            Err(error) => {
                return self
                    .reject(&path.owner, &idempotency_key, None, error, request_id)
                    .await;
            }
        };
        let submission = Submission {
            owner: path.owner.clone(),
            operation: operation.clone(),
            input: Some(InputRef::Inbox(key)),
            extra_inputs: Vec::new(),
            idempotency_key: Some(idempotency_key.clone()),
            notify: Default::default(),
            request_id: request_id.clone(),
        };
        match self.submitter.submit(submission).await {
            Ok(Created::New(job) | Created::Replayed(job)) => {
                Ok(IngestOutcome::Queued(job.id.to_string()))
            }
            Err(shared::Error::Invalid { code, message }) => {
                self.reject(
                    &path.owner,
                    &idempotency_key,
                    Some(operation),
                    JobError::new(code, message),
                    request_id,
                )
                .await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The operation and its parameters from the path and the object metadata; the inner
    /// error is the reason to record on a failed job.
    async fn operation(
        &self,
        path: &InboxPath,
        key: &str,
    ) -> Result<Result<Operation, JobError>, IngestError> {
        if path.operation != "remove_background" {
            return Ok(Err(JobError::new(
                "unknown_operation",
                format!(
                    "'{}' is not an operation ingest accepts ({})",
                    path.operation,
                    shared::job::OPERATION_NAMES.join(", ")
                ),
            )));
        }
        let metadata = self
            .blobs
            .head(key)
            .await?
            .map(|o| o.metadata)
            .unwrap_or_default();
        let pairs: Vec<(String, &str)> = metadata
            .iter()
            .map(|(k, v)| (k.replace('-', "_"), v.as_str()))
            .filter(|(k, _)| REMOVE_BACKGROUND_FIELDS.contains(&k.as_str()))
            .collect();
        Ok(RemoveBackgroundParams::from_pairs(
            pairs.iter().map(|(k, v)| (k.as_str(), *v)),
            &self.settings.models.default_model,
        )
        .map(Operation::RemoveBackground)
        .map_err(|e| JobError::new(e.code, e.to_string())))
    }

    /// Records a `failed` job for an object that cannot be processed.
    async fn reject(
        &self,
        owner: &OwnerId,
        idempotency_key: &str,
        operation: Option<Operation>,
        error: JobError,
        request_id: Option<String>,
    ) -> Result<IngestOutcome, IngestError> {
        let now = OffsetDateTime::now_utc();
        let operation = operation.unwrap_or_else(|| {
            Operation::RemoveBackground(RemoveBackgroundParams::with_model(
                self.settings.models.default_model.clone(),
            ))
        });
        let request_hash = hex::encode(Sha256::digest(format!("rejected:{}", error.code)));
        let mut job = Job::new(
            ulid::Ulid::new(),
            owner.clone(),
            operation,
            Default::default(),
            now,
            self.settings.jobs.ttl,
        );
        job.request_id = request_id;
        let idem = Idempotency {
            key: idempotency_key.to_owned(),
            request_hash,
        };
        let job = match self.store.create(&job, Some(&idem)).await? {
            Created::New(job) => {
                self.transitions.fail(owner, job.id, &error, now).await?;
                job
            }
            Created::Replayed(job) => job,
        };
        Ok(IngestOutcome::Rejected {
            job_id: job.id.to_string(),
            code: error.code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_keys() {
        let p = parse_inbox_key("inbox/team-a/remove_background/photos/cat 1.jpg").unwrap();
        assert_eq!(
            (p.owner.as_str(), p.operation.as_str()),
            ("team-a", "remove_background")
        );
        for bad in [
            "results/a/b/c.png",
            "inbox/a/b",
            "inbox/a/b/",
            "inbox/a b/remove_background/x.jpg",
        ] {
            assert!(parse_inbox_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_url_decoded_like_aws_sends_them() {
        assert_eq!(
            decode_key("inbox/o/remove_background/my+photo%281%29.jpg"),
            "inbox/o/remove_background/my photo(1).jpg"
        );
    }

    #[test]
    fn fixture_event_parses() {
        let event: S3Event =
            serde_json::from_str(include_str!("../../../events/s3-inbox-put.json")).unwrap();
        let record = &event.records[0];
        assert_eq!(record.event_name.as_deref(), Some("ObjectCreated:Put"));
        let key = decode_key(record.s3.object.key.as_deref().unwrap());
        assert_eq!(parse_inbox_key(&key).unwrap().owner.as_str(), "anonymous");
        assert_eq!(s3_request_id(record).as_deref(), Some("D82B88E5F771F645"));
    }
}
