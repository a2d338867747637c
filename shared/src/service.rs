//! Job submission, shared by the API (uploads, `s3://` and `https://` references) and ingest
//! (objects dropped under `inbox/`).
//!
//! Order of work, so that a rejected request leaves nothing behind: validate the parameters
//! (already typed) → answer an idempotent replay → read and probe the image → store it → write
//! the job (with its idempotency record, atomically) → enqueue. Once the job is written it is
//! accepted, whatever happens next: the jobs table is its own outbox (its `pending` index), so
//! a refused send leaves it to the recovery sweeper (`shared::recovery`) instead of removing it
//! again. Removing it raced with a concurrent request that had already been answered with the
//! job by its idempotency key, and lost that accepted job (found by the chaos suite).

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use ulid::Ulid;

use crate::config::Settings;
use crate::core::{BlobStore, Created, Idempotency, JobQueue, JobStore, UploadStore, UrlFetcher};
use crate::error::{Error, Result};
use crate::image_check::{self, ImageInfo};
use crate::job::{self, InputImage, InputSource, Job, JobMessage, Operation, OwnerId};

/// Where the input image of a new job comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputRef {
    /// Bytes uploaded with the request.
    Upload(Bytes),
    /// `s3://bucket/key`; the bucket must be this deployment's.
    S3Uri(String),
    /// An `https://` URL, fetched once into the bucket.
    Url(String),
    /// A key in this bucket under `inbox/` (ingest).
    Inbox(String),
}

impl InputRef {
    /// Parses a JSON `input` reference: `s3://…` or `https://…` (`http://` too; whether it is
    /// allowed is decided at fetch time).
    ///
    /// # Errors
    /// `invalid_input_reference` for anything else.
    pub fn parse_reference(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        if raw.starts_with("s3://") {
            Ok(Self::S3Uri(raw.to_owned()))
        } else if raw.starts_with("https://") || raw.starts_with("http://") {
            Ok(Self::Url(raw.to_owned()))
        } else {
            Err(Error::Invalid {
                code: "invalid_input_reference",
                message: format!(
                    "input '{raw}' must be an s3:// URI in this deployment's bucket or an https:// URL"
                ),
            })
        }
    }

    /// What identifies this input for idempotency: the bytes' hash, or the reference itself.
    fn fingerprint(&self) -> String {
        match self {
            Self::Upload(b) => format!("sha256:{}", hex::encode(Sha256::digest(b))),
            Self::S3Uri(u) | Self::Url(u) | Self::Inbox(u) => u.clone(),
        }
    }
}

/// A request to create a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// Who asks.
    pub owner: OwnerId,
    /// What to do.
    pub operation: Operation,
    /// On which image; `None` only for operations that can do without (`generate` from text).
    pub input: Option<InputRef>,
    /// Further named images (`background_reference`, `light_reference`), stored next to the
    /// main one as `inputs/{owner}/{job_id}/{name}.{ext}`.
    pub extra_inputs: Vec<(String, InputRef)>,
    /// `Idempotency-Key` header, if any.
    pub idempotency_key: Option<String>,
    /// Who is told when the job ends.
    pub notify: crate::job::Notify,
    /// The request that asks, stored on the job to find it in the logs
    /// ([`crate::job::Job::request_id`]; already checked with [`crate::job::request_id`]).
    pub request_id: Option<String>,
}

/// Creates jobs through the ports.
#[derive(Clone)]
pub struct JobSubmitter {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    blobs: Arc<dyn BlobStore>,
    settings: Arc<Settings>,
    fetcher: Arc<dyn UrlFetcher>,
    uploads: Option<Arc<dyn UploadStore>>,
}

/// The longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Checks an `Idempotency-Key` value: 1–255 printable ASCII characters.
///
/// # Errors
/// `invalid_idempotency_key`.
pub fn validate_idempotency_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::Invalid {
            code: "invalid_idempotency_key",
            message: format!(
                "Idempotency-Key must be 1–{MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters without spaces"
            ),
        });
    }
    Ok(())
}

impl JobSubmitter {
    /// Builds a submitter over the given ports; `fetcher` downloads URL inputs (the adapter
    /// under [`crate::egress::FetchPolicy::for_inputs`] in a deployment).
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        blobs: Arc<dyn BlobStore>,
        settings: Arc<Settings>,
        fetcher: Arc<dyn UrlFetcher>,
    ) -> Self {
        Self {
            store,
            queue,
            blobs,
            settings,
            fetcher,
            uploads: None,
        }
    }

    /// Checks references to `uploads/{owner}/{id}` against their declarations (size and type).
    pub fn with_uploads(mut self, uploads: Arc<dyn UploadStore>) -> Self {
        self.uploads = Some(uploads);
        self
    }

    /// Replaces the downloader of URL inputs (tests resolve names without DNS; deployments may
    /// allow a VPC endpoint).
    pub fn with_fetcher(mut self, fetcher: Arc<dyn UrlFetcher>) -> Self {
        self.fetcher = fetcher;
        self
    }

    /// Validates, stores and enqueues a job.
    ///
    /// # Errors
    /// [`Error::Invalid`] for bad input (image codes from [`image_check::ImageRejection`],
    /// `input_not_found`, `invalid_input_reference`), [`Error::IdempotencyMismatch`], and
    /// [`Error::Unavailable`] when a dependency fails (nothing is left behind then).
    pub async fn submit(&self, sub: Submission) -> Result<Created> {
        let idempotency = match &sub.idempotency_key {
            Some(key) => {
                validate_idempotency_key(key)?;
                let canonical =
                    serde_json::to_string(&sub.operation).map_err(|e| Error::Corrupt {
                        what: "operation",
                        message: e.to_string(),
                    })?;
                let mut h = Sha256::new();
                h.update(canonical.as_bytes());
                h.update(b"\n");
                if let Some(input) = &sub.input {
                    h.update(input.fingerprint().as_bytes());
                }
                for (name, input) in &sub.extra_inputs {
                    h.update(b"\n");
                    h.update(name.as_bytes());
                    h.update(b"=");
                    h.update(input.fingerprint().as_bytes());
                }
                Some(Idempotency {
                    key: key.clone(),
                    request_hash: hex::encode(h.finalize()),
                })
            }
            None => None,
        };
        if let Some(idem) = &idempotency
            && let Some(job) = self.store.find_idempotent(&sub.owner, idem).await?
        {
            return Ok(Created::Replayed(job));
        }

        if sub.input.is_none() && !matches!(sub.operation, crate::job::Operation::Generate(_)) {
            return Err(Error::Invalid {
                code: "missing_input",
                message: format!(
                    "{} needs an image: multipart field 'file' or JSON 'input'",
                    sub.operation.name()
                ),
            });
        }
        // Refused before the input is fetched or stored, when the counters already say so: a
        // client retrying into a full quota costs one read, not a put, a cancelled transaction
        // and a delete. If they cannot be read, `create` decides as before.
        match self
            .store
            .check_quota(&sub.owner, OffsetDateTime::now_utc())
            .await
        {
            Err(e @ Error::QuotaExceeded { .. }) => return Err(e),
            Err(e) => tracing::warn!(error = %e, "quota read failed; the create decides"),
            Ok(()) => {}
        }
        let id = Ulid::new();
        let main = match &sub.input {
            Some(input) => {
                let (bytes, existing_key, source) = self.resolve(&sub.owner, input).await?;
                let info = image_check::probe(&bytes, &self.settings.limits)?;
                Some((bytes, existing_key, source, info))
            }
            None => None,
        };
        let mut extras = Vec::with_capacity(sub.extra_inputs.len());
        let mut checked = Vec::new();
        if let Some((bytes, _, _, info)) = &main {
            checked.push(("image", *info, bytes.len() as u64));
        }
        for (name, input) in &sub.extra_inputs {
            let (extra_bytes, _, extra_source) = self.resolve(&sub.owner, input).await?;
            let extra_info = image_check::probe(&extra_bytes, &self.settings.limits)?;
            checked.push((name.as_str(), extra_info, extra_bytes.len() as u64));
            extras.push((name.clone(), extra_bytes, extra_info, extra_source));
        }
        crate::operation::check_inputs(&sub.operation, &checked)?;
        let mut inputs = BTreeMap::new();
        // `key` is empty when the job has no main image (`generate` from text alone).
        let (key, stored_here) = match main {
            Some((bytes, existing_key, source, info)) => {
                let size = bytes.len() as u64;
                let (key, stored_here) = match existing_key {
                    Some(key) => (key, false),
                    None => {
                        let key = job::input_key(&sub.owner, id, "image", info.extension());
                        self.blobs.put(&key, bytes, info.content_type()).await?;
                        (key, true)
                    }
                };
                inputs.insert(
                    "image".to_owned(),
                    input_image(key.clone(), &info, size, source),
                );
                (key, stored_here)
            }
            None => (String::new(), false),
        };
        // Extra inputs are always copied under the job's prefix, so they are ours to delete.
        let mut extra_keys = Vec::new();
        for (name, bytes, extra_info, extra_source) in extras {
            let extra_key = job::input_key(&sub.owner, id, &name, extra_info.extension());
            let extra_size = bytes.len() as u64;
            if let Err(e) = self
                .blobs
                .put(&extra_key, bytes, extra_info.content_type())
                .await
            {
                self.forget_inputs(stored_here, &key, &extra_keys).await;
                return Err(e);
            }
            extra_keys.push(extra_key.clone());
            inputs.insert(
                name,
                input_image(extra_key, &extra_info, extra_size, extra_source),
            );
        }
        let mut job = Job::new(
            id,
            sub.owner.clone(),
            sub.operation,
            inputs,
            OffsetDateTime::now_utc(),
            self.settings.jobs.ttl,
        );
        job.notify = sub.notify;
        job.request_id = sub.request_id;
        let created = match self.store.create(&job, idempotency.as_ref()).await {
            Ok(c) => c,
            // A refusal (quota, a conflicting key) is DynamoDB's answer that nothing was
            // written: the input goes, with no read to check.
            Err(
                e @ (Error::QuotaExceeded { .. } | Error::Conflict(_) | Error::IdempotencyMismatch),
            ) => {
                self.forget_inputs(stored_here, &key, &extra_keys).await;
                return Err(e);
            }
            // The write may have committed with only its answer lost. A job with this id is
            // ours (ULIDs are never reused): it is accepted and keeps its input. Only when the
            // job is known to be absent is the input removed; if even that cannot be read, the
            // input stays (an orphaned object costs little, a job without its input fails).
            Err(e) => match self.store.get(&job.owner, job.id).await {
                Ok(Some(_)) => {
                    tracing::warn!(job_id = %job.id, error = %e, "create answered an error but the job was written: accepted");
                    Created::New(job.clone())
                }
                Ok(None) => {
                    self.forget_inputs(stored_here, &key, &extra_keys).await;
                    return Err(e);
                }
                Err(_) => return Err(e),
            },
        };
        if let Created::Replayed(_) = created {
            self.forget_inputs(stored_here, &key, &extra_keys).await;
            return Ok(created);
        }
        let message = JobMessage::Run {
            owner: job.owner.clone(),
            job_id: job.id,
        };
        if let Err(e) = self.queue.send(&message, Duration::ZERO).await {
            // The job is in the `pending` index: the recovery sweeper sends it once its queued
            // grace has passed. Never removed again: another request may already have been
            // answered with it (an idempotent replay), and a lost answer of this send may
            // have delivered it anyway.
            tracing::warn!(job_id = %job.id, error = %e, "enqueue failed; the recovery sweeper will send the job");
            return Ok(created);
        }
        tracing::info!(job_id = %job.id, owner = %job.owner, operation = job.operation.name(), request_id = job.request_id.as_deref(), "job queued");
        Ok(created)
    }

    async fn forget_inputs(&self, stored_here: bool, key: &str, extra_keys: &[String]) {
        self.forget_input(stored_here, key).await;
        for extra in extra_keys {
            self.forget_input(true, extra).await;
        }
    }

    async fn forget_input(&self, stored_here: bool, key: &str) {
        if stored_here && let Err(e) = self.blobs.delete(key).await {
            tracing::warn!(key, error = %e, "could not delete an orphaned input object");
        }
    }

    /// The input's bytes, its key when it already lives in the bucket, and its source.
    async fn resolve(
        &self,
        owner: &OwnerId,
        input: &InputRef,
    ) -> Result<(Bytes, Option<String>, InputSource)> {
        match input {
            InputRef::Upload(b) => Ok((b.clone(), None, InputSource::Upload)),
            InputRef::Inbox(key) => Ok((
                self.read_object(key).await?,
                Some(key.clone()),
                InputSource::Inbox,
            )),
            InputRef::S3Uri(uri) => {
                let rest = uri.trim_start_matches("s3://");
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket != self.blobs.bucket() || key.is_empty() {
                    return Err(Error::Invalid {
                        code: "invalid_input_reference",
                        message: format!(
                            "'{uri}' is not an object in this deployment's bucket (s3://{}/…)",
                            self.blobs.bucket()
                        ),
                    });
                }
                self.check_owned_key(owner, uri, key).await?;
                Ok((
                    self.read_object(key).await?,
                    Some(key.to_owned()),
                    InputSource::S3,
                ))
            }
            InputRef::Url(url) => Ok((self.fetcher.fetch(url).await?, None, InputSource::Url)),
        }
    }

    /// An `s3://` reference may name only the caller's own objects; another owner's look
    /// exactly like missing ones. Uploads must match what was declared for them.
    async fn check_owned_key(&self, owner: &OwnerId, uri: &str, key: &str) -> Result<()> {
        use crate::resources::{INBOX_PREFIX, INPUTS_PREFIX, RESULTS_PREFIX, UPLOADS_PREFIX};
        let not_found = || Error::Invalid {
            code: "input_not_found",
            message: format!(
                "{uri} does not exist or is not yours (use uploads/{owner}/… from POST /v1/uploads)"
            ),
        };
        let owned = [UPLOADS_PREFIX, INBOX_PREFIX, INPUTS_PREFIX, RESULTS_PREFIX]
            .iter()
            .any(|p| key.starts_with(&format!("{p}{owner}/")));
        if !owned || key.contains("/../") {
            return Err(not_found());
        }
        let (Some(uploads), Some(upload_id)) = (
            &self.uploads,
            key.strip_prefix(&format!("{UPLOADS_PREFIX}{owner}/")),
        ) else {
            return Ok(());
        };
        let declared = uploads
            .get_upload(owner, upload_id)
            .await?
            .ok_or_else(not_found)?;
        let actual = self.blobs.head(key).await?.ok_or_else(not_found)?;
        let actual_type = actual.content_type.unwrap_or_default();
        if actual.size != declared.content_length || actual_type != declared.content_type {
            return Err(Error::Invalid {
                code: "upload_mismatch",
                message: format!(
                    "the upload is {} bytes of {actual_type}, but {} bytes of {} were declared",
                    actual.size, declared.content_length, declared.content_type
                ),
            });
        }
        Ok(())
    }

    async fn read_object(&self, key: &str) -> Result<Bytes> {
        let limit = self.settings.limits.max_bytes;
        match self.blobs.head(key).await? {
            None => Err(Error::Invalid {
                code: "input_not_found",
                message: format!("s3://{}/{key} does not exist", self.blobs.bucket()),
            }),
            Some(info) if info.size > limit => Err(image_check::ImageRejection::TooManyBytes {
                actual: info.size,
                limit,
            }
            .into()),
            Some(_) => self.blobs.get(key).await.map_err(|e| match e {
                Error::NotFound(what) => Error::Invalid {
                    code: "input_not_found",
                    message: format!("{what} does not exist"),
                },
                other => other,
            }),
        }
    }
}

fn input_image(key: String, info: &ImageInfo, bytes: u64, source: InputSource) -> InputImage {
    InputImage {
        key,
        content_type: info.content_type().to_owned(),
        width: info.width,
        height: info.height,
        bytes,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_s3_or_http() {
        assert!(matches!(
            InputRef::parse_reference("s3://b/k").unwrap(),
            InputRef::S3Uri(_)
        ));
        assert!(matches!(
            InputRef::parse_reference(" https://x/y.jpg ").unwrap(),
            InputRef::Url(_)
        ));
        let err = InputRef::parse_reference("file:///etc/passwd").unwrap_err();
        assert_eq!(err.code(), "invalid_input_reference");
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        assert!(validate_idempotency_key("order-42").is_ok());
        for bad in ["", "has space", &"k".repeat(256), "tab\there"] {
            assert_eq!(
                validate_idempotency_key(bad).unwrap_err().code(),
                "invalid_idempotency_key"
            );
        }
    }
}
