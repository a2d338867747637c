//! The HTTP client of the imagejobs API: the `/v1` routes this CLI calls, with the contract
//! each relies on (README.md "API"; `functions/api/src/router.rs` is the route table).
//!
//! - `POST /v1/jobs` multipart (`file`, or `input` = an `s3://` reference, plus the params as
//!   text fields) with `Prefer: wait=N` (N ≤ 25): 202 queued/processing, 200 finished.
//! - `GET /v1/jobs/{id}`, `GET /v1/jobs?limit&cursor&status`, `POST /v1/jobs/{id}/cancel`.
//! - `GET /v1/jobs/{id}/result?index=N`: 303 to a presigned S3 GET URL.
//! - `POST /v1/uploads` `{"content_type", "content_length"}`: 201 `{upload_id, url, method,
//!   headers, input, expires_at}`; the bytes go to `url` with a `PUT` carrying exactly the
//!   `Content-Type` and `Content-Length` declared (the signature covers both).
//! - Errors: `{"error": {"code", "message"}}`; 429 and 503 carry `Retry-After` (seconds).

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Response, StatusCode, multipart};
use serde::Deserialize;
use serde_json::Value;

use crate::error::CliError;
use crate::output;

/// Longest `Prefer: wait=N` the API honours, in seconds (`jobs::MAX_WAIT_SECONDS`).
pub const MAX_PREFER_WAIT_S: u64 = 25;
/// Attempts of a request refused with 429/503 before the error is reported.
const MAX_ATTEMPTS: u32 = 5;
/// Longest pause honoured from a `Retry-After`, so a batch never stalls for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A connection to one deployment with one credential.
#[derive(Clone)]
pub struct Api {
    /// Sends the credential on API calls; never follows redirects, so the key is never sent to
    /// wherever a redirect points.
    http: reqwest::Client,
    /// Fetches presigned S3 URLs: no credential at all (the URL is the authorisation).
    storage: reqwest::Client,
    /// Base URL without a trailing `/` (may carry a stage path, e.g. `https://…/prod`).
    base: String,
}

/// One text field or file of a `POST /v1/jobs` multipart body.
#[derive(Debug, Clone)]
pub enum Field {
    /// A parameter or an `s3://` / `https://` input reference.
    Text(String, String),
    /// An image sent in the body: field name, file name, bytes.
    File(String, String, Vec<u8>),
}

/// The answer of `POST /v1/uploads` (201).
#[derive(Debug, Deserialize)]
pub struct UploadTicket {
    /// Presigned S3 PUT URL (valid `UPLOAD_URL_TTL_SECONDS`, default 600 s).
    pub url: String,
    /// The `s3://bucket/uploads/{owner}/{id}` reference to pass as the job's input.
    pub input: String,
}

impl Api {
    /// A client for the API at `base` (`http(s)://host[:port][/stage]`) authenticating with
    /// `api_key` (an `ij_live_…` key or a JWT, sent as `Authorization: Bearer`). `timeout` bounds
    /// each HTTP request (not the wait for a job).
    ///
    /// # Errors
    /// [`CliError::Usage`] when the URL is not http(s) or the key is not a valid header value.
    pub fn new(base: &str, api_key: &str, timeout: Duration) -> Result<Self, CliError> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(CliError::Usage(format!(
                "--url '{base}' must start with https:// or http://"
            )));
        }
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", api_key.trim())).map_err(|_| {
                CliError::Usage("the API key has characters a header cannot carry".into())
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let user_agent = concat!("imagejobs-cli/", env!("CARGO_PKG_VERSION"));
        let build = |headers: HeaderMap| {
            reqwest::Client::builder()
                .user_agent(user_agent)
                .default_headers(headers)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .build()
                .map_err(|e| CliError::Usage(format!("cannot build the HTTP client: {e}")))
        };
        Ok(Self {
            http: build(headers)?,
            storage: build(HeaderMap::new())?,
            base,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /v1/jobs` with `fields` as multipart and `Prefer: wait={wait_s}` (capped at 25):
    /// the job as the API shows it. Refusals with 429/503 are retried after `Retry-After`
    /// (at most 5 attempts): the API stores nothing for a refused request.
    ///
    /// # Errors
    /// [`CliError::Api`] with the API's code; [`CliError::Network`].
    pub async fn create_job(&self, fields: &[Field], wait_s: u64) -> Result<Value, CliError> {
        let wait = wait_s.min(MAX_PREFER_WAIT_S);
        self.with_retries(|| {
            let mut form = multipart::Form::new();
            for field in fields {
                form = match field {
                    Field::Text(name, value) => form.text(name.clone(), value.clone()),
                    Field::File(name, file_name, bytes) => form.part(
                        name.clone(),
                        multipart::Part::bytes(bytes.clone()).file_name(file_name.clone()),
                    ),
                };
            }
            let mut req = self.http.post(self.url("/v1/jobs")).multipart(form);
            if wait > 0 {
                req = req.header("Prefer", format!("wait={wait}"));
            }
            req
        })
        .await
    }

    /// `POST /v1/uploads` then the presigned `PUT` of `bytes`: the `s3://` input to use.
    ///
    /// # Errors
    /// [`CliError::Api`] (e.g. 413 `payload_too_large`, 415 `unsupported_image`);
    /// [`CliError::Storage`] when S3 refuses the PUT; [`CliError::Network`].
    pub async fn upload(&self, content_type: &str, bytes: Vec<u8>) -> Result<String, CliError> {
        let declared =
            serde_json::json!({"content_type": content_type, "content_length": bytes.len()});
        let answer = self
            .with_retries(|| self.http.post(self.url("/v1/uploads")).json(&declared))
            .await?;
        let ticket: UploadTicket = serde_json::from_value(answer)
            .map_err(|e| CliError::Unexpected(format!("POST /v1/uploads: {e}")))?;
        let resp = self
            .storage
            .put(&ticket.url)
            .header(CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .map_err(|source| network(&ticket.url, source))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Err(CliError::Storage {
                what: "upload",
                status,
                body: snippet(&resp.text().await.unwrap_or_default()),
            });
        }
        Ok(ticket.input)
    }

    /// `GET /v1/jobs/{id}`: the job.
    ///
    /// # Errors
    /// [`CliError::Api`] (404 `job_not_found`); [`CliError::Network`].
    pub async fn get_job(&self, id: &str) -> Result<Value, CliError> {
        let url = self.url(&format!("/v1/jobs/{}", path_segment(id)));
        self.with_retries(|| self.http.get(&url)).await
    }

    /// `GET /v1/jobs?limit=&cursor=&status=`: `{"jobs": […], "next_cursor"}`, newest first.
    ///
    /// # Errors
    /// [`CliError::Api`] (400 `invalid_params`, `invalid_cursor`); [`CliError::Network`].
    pub async fn list_jobs(
        &self,
        limit: u32,
        status: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Value, CliError> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(s) = status {
            query.push(("status", s.to_owned()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        self.with_retries(|| self.http.get(self.url("/v1/jobs")).query(&query))
            .await
    }

    /// `POST /v1/jobs/{id}/cancel`: the canceled job.
    ///
    /// # Errors
    /// [`CliError::Api`] (404 `job_not_found`, 409 `conflict` when already finished);
    /// [`CliError::Network`].
    pub async fn cancel_job(&self, id: &str) -> Result<Value, CliError> {
        let url = self.url(&format!("/v1/jobs/{}/cancel", path_segment(id)));
        self.with_retries(|| self.http.post(&url)).await
    }

    /// Re-reads `job` (as returned by [`Self::create_job`]) until it is terminal or `timeout`
    /// has passed since `started`; `on_status` sees each status read. Polls every 0.5 s at
    /// first, backing off to 5 s.
    ///
    /// # Errors
    /// [`CliError::Timeout`] with the last status; those of [`Self::get_job`].
    pub async fn wait(
        &self,
        mut job: Value,
        started: Instant,
        timeout: Duration,
        mut on_status: impl FnMut(&str),
    ) -> Result<Value, CliError> {
        let id = job_id(&job)?.to_owned();
        let mut pause = Duration::from_millis(500);
        loop {
            let status = job["status"].as_str().unwrap_or_default().to_owned();
            on_status(&status);
            if is_terminal(&status) {
                return Ok(job);
            }
            if started.elapsed() >= timeout {
                return Err(CliError::Timeout {
                    job_id: id,
                    status,
                    waited_s: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(pause.min(timeout.saturating_sub(started.elapsed()))).await;
            pause = (pause * 2).min(Duration::from_secs(5));
            job = self.get_job(&id).await?;
        }
    }

    /// Downloads output `index` (0-based) of a succeeded job to `dest`: `GET
    /// /v1/jobs/{id}/result?index=N`, then the presigned URL it redirects to, without the
    /// credential. The bytes go to a temporary file beside `dest`, renamed over it once complete
    /// ([`output::AtomicFile`]). Returns the bytes written.
    ///
    /// # Errors
    /// [`CliError::Api`] (409 with the job's code when it failed, 423 `job_not_finished`);
    /// [`CliError::Storage`]; [`CliError::Io`]; [`CliError::Network`].
    pub async fn download_result(
        &self,
        id: &str,
        index: usize,
        dest: &Path,
    ) -> Result<u64, CliError> {
        let url = self.url(&format!("/v1/jobs/{}/result", path_segment(id)));
        let resp = self
            .http
            .get(&url)
            .query(&[("index", index)])
            .send()
            .await
            .map_err(|source| network(&url, source))?;
        if resp.status() != StatusCode::SEE_OTHER {
            return Err(error_of(resp).await);
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| CliError::Unexpected("a 303 from /result without Location".into()))?
            .to_owned();
        let mut resp = self
            .storage
            .get(&location)
            .send()
            .await
            .map_err(|source| network(&location, source))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Err(CliError::Storage {
                what: "download",
                status,
                body: snippet(&resp.text().await.unwrap_or_default()),
            });
        }
        let mut file = output::AtomicFile::create(dest)?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|source| network(&location, source))?
        {
            file.write(&chunk)?;
        }
        file.commit()
    }

    /// Sends the request `build` makes, retrying 429/503 refusals after `Retry-After` (≤ 30 s,
    /// 1 s when absent), and reads a 2xx JSON body.
    async fn with_retries(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Value, CliError> {
        let mut attempt = 1;
        loop {
            let req = build();
            let url = req
                .try_clone()
                .and_then(|r| r.build().ok())
                .map(|r| r.url().as_str().to_owned())
                .unwrap_or_else(|| self.base.clone());
            let resp = req.send().await.map_err(|source| network(&url, source))?;
            if resp.status().is_success() {
                return resp.json().await.map_err(|e| {
                    CliError::Unexpected(format!("{url}: the body is not JSON: {e}"))
                });
            }
            let pause = retry_after(&resp);
            let err = error_of(resp).await;
            if !err.is_retryable() || attempt >= MAX_ATTEMPTS {
                return Err(err);
            }
            attempt += 1;
            tokio::time::sleep(pause).await;
        }
    }
}

/// The API's error body as a [`CliError::Api`]; a body that is not the API's JSON (a proxy's
/// page) becomes code `http_{status}` with the start of the body.
async fn error_of(resp: Response) -> CliError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v["error"]["code"].is_string() => CliError::Api {
            status,
            code: v["error"]["code"].as_str().unwrap_or_default().to_owned(),
            message: v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        },
        _ => CliError::Api {
            status,
            code: format!("http_{status}"),
            message: snippet(&text),
        },
    }
}

fn retry_after(resp: &Response) -> Duration {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1))
        .min(MAX_RETRY_AFTER)
}

fn network(url: &str, source: reqwest::Error) -> CliError {
    // A presigned URL's query is its signature: keep it out of messages.
    let shown = url.split('?').next().unwrap_or(url).to_owned();
    CliError::Network {
        url: shown,
        source: source.without_url(),
    }
}

/// The first 300 characters of a body, on one line.
fn snippet(body: &str) -> String {
    let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(300).collect()
}

/// A job id as a path segment: ULIDs are alphanumeric; anything else is percent-encoded byte by
/// byte, so the API answers `job_not_found` rather than a route being mistaken.
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `queued` and `processing` are the only non-terminal statuses (README.md "Reading jobs").
pub fn is_terminal(status: &str) -> bool {
    !matches!(status, "queued" | "processing")
}

/// The job's `id`.
///
/// # Errors
/// [`CliError::Unexpected`] when the answer has none.
pub fn job_id(job: &Value) -> Result<&str, CliError> {
    job["id"].as_str().ok_or_else(|| {
        CliError::Unexpected(format!(
            "a job without an id: {}",
            snippet(&job.to_string())
        ))
    })
}

/// How many outputs a succeeded job has: `result.images` lists every output of a multi-output
/// job and is absent for single-output jobs.
pub fn output_count(job: &Value) -> usize {
    job["result"]["images"]
        .as_array()
        .map_or(1, |images| images.len().max(1))
}

/// The job's end as a result: `Ok` for `succeeded`, the job's error otherwise.
///
/// # Errors
/// [`CliError::JobFailed`] with `job.error`; [`CliError::JobCanceled`].
pub fn require_succeeded(job: &Value) -> Result<(), CliError> {
    let id = job_id(job)?.to_owned();
    match job["status"].as_str().unwrap_or_default() {
        "succeeded" => Ok(()),
        "canceled" => Err(CliError::JobCanceled { job_id: id }),
        "failed" => Err(CliError::JobFailed {
            job_id: id,
            code: job["error"]["code"].as_str().unwrap_or("failed").to_owned(),
            message: job["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }),
        other => Err(CliError::Unexpected(format!(
            "job {id} is {other}, not finished"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(path_segment("01JABCDEF"), "01JABCDEF");
        assert_eq!(path_segment("../uploads"), "%2E%2E%2Fuploads");
    }

    #[test]
    fn terminal_statuses() {
        assert!(!is_terminal("queued"));
        assert!(!is_terminal("processing"));
        for s in ["succeeded", "failed", "canceled"] {
            assert!(is_terminal(s));
        }
    }

    #[test]
    fn job_ends_map_to_errors() {
        let failed = serde_json::json!({"id": "J", "status": "failed",
            "error": {"code": "invalid_image", "message": "truncated"}});
        let err = require_succeeded(&failed).unwrap_err();
        assert_eq!(err.code(), "invalid_image");
        assert!(err.to_string().contains("job J failed"), "{err}");
        let canceled = serde_json::json!({"id": "J", "status": "canceled"});
        assert_eq!(
            require_succeeded(&canceled).unwrap_err().code(),
            "job_canceled"
        );
        assert!(require_succeeded(&serde_json::json!({"id": "J", "status": "succeeded"})).is_ok());
    }

    #[test]
    fn output_count_reads_result_images() {
        assert_eq!(
            output_count(&serde_json::json!({"result": {"key": "k"}})),
            1
        );
        let three = serde_json::json!({"result": {"images": [{}, {}, {}]}});
        assert_eq!(output_count(&three), 3);
    }

    #[test]
    fn urls_must_be_http() {
        assert_eq!(
            Api::new("ftp://x", "k", Duration::from_secs(1))
                .err()
                .unwrap()
                .exit_code(),
            crate::error::EXIT_USAGE
        );
        let api = Api::new("https://api.example.com/prod/", "k", Duration::from_secs(1)).unwrap();
        assert_eq!(api.url("/v1/jobs"), "https://api.example.com/prod/v1/jobs");
    }
}
