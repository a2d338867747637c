//! HTTP client of fal.ai's queue API and the cache of its webhook signing keys.
//! Contract: `docs/providers.md` §2.1 (auth: `Authorization: Key …`),
//! §2.2 (endpoints; use the returned URLs), §2.3 submit, §2.4 status, §2.5 result and cancel,
//! §2.6 webhooks (JWKS, cached ≤ 24 h), §2.8 errors.

use async_trait::async_trait;
use ed25519_dalek::VerifyingKey;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

use crate::core::{
    CancelOutcome, ModelOutput, ModelQueue, OutputImage, ProviderError, QueueStatus, QueuedRequest,
};
use crate::error::{Error, Result};
use crate::job::ProviderLinks;
use crate::operation::ModelRequest;

/// The model output on the wire (§2.9): `images` (required; extra fields such as `file_size`
/// are ignored) and `seed`.
#[derive(Debug, serde::Deserialize)]
struct WireOutput {
    images: Vec<WireImage>,
    #[serde(default)]
    seed: Option<u64>,
}

/// One image on the wire (§2.9 `Image`).
#[derive(Debug, serde::Deserialize)]
struct WireImage {
    url: String,
    #[serde(default)]
    content_type: Option<String>,
}

impl From<WireOutput> for ModelOutput {
    fn from(wire: WireOutput) -> Self {
        Self {
            images: wire
                .images
                .into_iter()
                .map(|i| OutputImage {
                    url: i.url,
                    content_type: i.content_type,
                })
                .collect(),
            seed: wire.seed,
        }
    }
}

/// Client of one fal.ai queue host (`https://queue.fal.run` or a contract server).
#[derive(Clone)]
pub struct FalClient {
    http: reqwest::Client,
    queue_url: url::Url,
    key: String,
}

impl std::fmt::Debug for FalClient {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FalClient")
            .field("queue_url", &self.queue_url.as_str())
            .finish_non_exhaustive()
    }
}

/// §2.3: the submit answer.
#[derive(serde::Deserialize)]
struct SubmitAnswer {
    request_id: String,
    status_url: String,
    response_url: String,
    cancel_url: String,
}

/// §2.4 / §2.5: the `status` field of status and cancel answers.
#[derive(serde::Deserialize)]
struct StatusAnswer {
    #[serde(default)]
    status: String,
}

impl FalClient {
    /// A client for `queue_url` with `key`; `timeout` bounds each call.
    ///
    /// # Errors
    /// [`Error::Config`] for an unusable URL or HTTP client.
    pub fn new(queue_url: &str, key: &str, timeout: Duration) -> Result<Self> {
        let queue_url = url::Url::parse(queue_url.trim_end_matches('/'))
            .map_err(|e| Error::Config(format!("FAL_QUEUE_URL '{queue_url}': {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Config(format!("fal HTTP client: {e}")))?;
        Ok(Self {
            http,
            queue_url,
            key: key.to_owned(),
        })
    }

    fn auth(&self) -> String {
        format!("Key {}", self.key)
    }

    /// The key goes only to the queue host: a URL from an answer that points elsewhere is
    /// refused rather than sent our credentials.
    fn checked(&self, raw: &str) -> std::result::Result<url::Url, ProviderError> {
        let parsed =
            url::Url::parse(raw).map_err(|e| permanent(format!("bad URL '{raw}': {e}")))?;
        if parsed.origin() != self.queue_url.origin() {
            return Err(permanent(format!(
                "fal answered with a URL outside its queue host: {raw}"
            )));
        }
        Ok(parsed)
    }
}

impl FalClient {
    /// `GET` one of fal's request URLs with the key; a non-success answer becomes its mapped
    /// error.
    async fn get_ok(&self, raw: &str) -> std::result::Result<reqwest::Response, ProviderError> {
        let resp = self
            .http
            .get(self.checked(raw)?)
            .header(reqwest::header::AUTHORIZATION, self.auth())
            .send()
            .await
            .map_err(transport)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(error_from(resp).await)
        }
    }
}

fn permanent(message: String) -> ProviderError {
    ProviderError {
        code: "provider_error",
        message,
        retryable: false,
        retry_after: None,
        outcome_unknown: false,
    }
}

fn transport(e: reqwest::Error) -> ProviderError {
    ProviderError {
        code: "provider_error",
        message: format!("fal.ai unreachable: {e}"),
        retryable: true,
        retry_after: None,
        // A connection never made reached nobody; anything later (a timeout, a reset)
        // may have been accepted.
        outcome_unknown: !e.is_connect(),
    }
}

/// The `detail` of an error body: a list of `{loc, msg, type}` or a plain string (§2.8).
fn detail_of(body: &serde_json::Value) -> (String, Vec<String>) {
    match body.get("detail") {
        Some(serde_json::Value::Array(items)) => {
            let mut types = Vec::new();
            let text = items
                .iter()
                .map(|item| {
                    if let Some(t) = item.get("type").and_then(|t| t.as_str()) {
                        types.push(t.to_owned());
                    }
                    let loc = item
                        .get("loc")
                        .and_then(|l| l.as_array())
                        .map(|l| {
                            l.iter()
                                .map(|p| p.as_str().map(str::to_owned).unwrap_or(p.to_string()))
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let msg = item.get("msg").and_then(|m| m.as_str()).unwrap_or("");
                    if loc.is_empty() {
                        msg.to_owned()
                    } else {
                        format!("{loc}: {msg}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            (text, types)
        }
        Some(serde_json::Value::String(s)) => (s.clone(), Vec::new()),
        _ => (String::new(), Vec::new()),
    }
}

/// Maps a non-success answer to a stable code (§2.8). fal marks moderation with the detail
/// type `content_policy_violation`; a user-set request timeout (504 with
/// `x-fal-request-timeout-type: user`) is not retried.
async fn error_from(resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let user_timeout = header("x-fal-request-timeout-type").as_deref() == Some("user");
    let error_type = header("x-fal-error-type");
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
    let (detail, types) = detail_of(&body);
    let error_type = error_type.or_else(|| {
        body.get("error_type")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
    });
    let moderated = types.iter().any(|t| t == "content_policy_violation")
        || error_type.as_deref() == Some("content_policy_violation");
    let (code, retryable) = match status {
        _ if moderated => ("content_moderated", false),
        400 | 422 => ("invalid_input", false),
        401 | 403 => ("provider_auth", false),
        404 => ("provider_not_found", false),
        413 => ("payload_too_large", false),
        429 => ("rate_limited", true),
        504 if user_timeout => ("provider_timeout", false),
        _ => ("provider_error", status >= 500),
    };
    let detail = match (detail.is_empty(), error_type) {
        (true, Some(t)) => t,
        (true, None) => "no details".to_owned(),
        (false, Some(t)) => format!("{t}: {detail}"),
        (false, None) => detail,
    };
    ProviderError {
        code,
        message: format!("fal.ai answered HTTP {status}: {detail}"),
        retryable,
        retry_after,
        outcome_unknown: false,
    }
}

#[async_trait]
impl ModelQueue for FalClient {
    async fn submit(
        &self,
        request: &ModelRequest,
        webhook: Option<&str>,
    ) -> std::result::Result<QueuedRequest, ProviderError> {
        let mut url = self.queue_url.clone();
        url.path_segments_mut()
            .map_err(|()| permanent("FAL_QUEUE_URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(request.model.split('/'));
        if let Some(hook) = webhook {
            url.query_pairs_mut().append_pair("fal_webhook", hook);
        }
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, self.auth())
            .json(&request.input)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        let answer: SubmitAnswer = resp
            .json()
            .await
            .map_err(|e| permanent(format!("fal submit answer unreadable: {e}")))?;
        for raw in [&answer.status_url, &answer.response_url, &answer.cancel_url] {
            self.checked(raw)?;
        }
        Ok(QueuedRequest {
            request_id: answer.request_id,
            links: ProviderLinks {
                status_url: answer.status_url,
                response_url: answer.response_url,
                cancel_url: answer.cancel_url,
            },
        })
    }

    async fn status(
        &self,
        links: &ProviderLinks,
    ) -> std::result::Result<QueueStatus, ProviderError> {
        let answer: StatusAnswer = self
            .get_ok(&links.status_url)
            .await?
            .json()
            .await
            .map_err(|e| permanent(format!("fal status answer unreadable: {e}")))?;
        match answer.status.as_str() {
            "COMPLETED" => Ok(QueueStatus::Completed),
            "IN_QUEUE" | "IN_PROGRESS" => Ok(QueueStatus::Pending),
            other => Err(permanent(format!(
                "fal reported an unknown status '{other}'"
            ))),
        }
    }

    async fn result(
        &self,
        links: &ProviderLinks,
    ) -> std::result::Result<ModelOutput, ProviderError> {
        self.get_ok(&links.response_url)
            .await?
            .json::<WireOutput>()
            .await
            .map(ModelOutput::from)
            .map_err(|e| permanent(format!("fal result unreadable: {e}")))
    }

    async fn cancel(
        &self,
        links: &ProviderLinks,
    ) -> std::result::Result<CancelOutcome, ProviderError> {
        let resp = self
            .http
            .put(self.checked(&links.cancel_url)?)
            .header(reqwest::header::AUTHORIZATION, self.auth())
            .send()
            .await
            .map_err(transport)?;
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let status = serde_json::from_str::<StatusAnswer>(&text)
            .map(|a| a.status)
            .unwrap_or_default();
        // The HTTP codes per answer are not documented (§2.5): the body's status decides.
        match status.as_str() {
            "OK" | "CANCELLATION_REQUESTED" => Ok(CancelOutcome::Requested),
            "ALREADY_COMPLETED" | "NOT_FOUND" => Ok(CancelOutcome::NothingToCancel),
            _ if code.is_success() => Ok(CancelOutcome::Requested),
            _ => Err(ProviderError {
                code: "provider_error",
                message: format!("fal.ai cancel answered HTTP {}: {text}", code.as_u16()),
                retryable: code.is_server_error(),
                retry_after: None,
                outcome_unknown: false,
            }),
        }
    }
}

/// fal's webhook signing keys, fetched from the JWKS URL and kept for `ttl` (the contract
/// allows up to 24 h, §2.6). A signature that no cached key verifies triggers one early
/// refresh (at most every `min_refresh`), so a key rotation is picked up without waiting.
pub struct JwksCache {
    http: reqwest::Client,
    url: String,
    ttl: Duration,
    min_refresh: Duration,
    state: RwLock<Option<(Instant, Vec<VerifyingKey>)>>,
}

impl JwksCache {
    /// A cache over `url` (e.g. `https://rest.alpha.fal.ai/.well-known/jwks.json`).
    ///
    /// # Errors
    /// [`Error::Config`] when the HTTP client cannot be built.
    pub fn new(url: &str, ttl: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Config(format!("JWKS HTTP client: {e}")))?;
        Ok(Self {
            http,
            url: url.to_owned(),
            ttl,
            min_refresh: Duration::from_secs(60),
            state: RwLock::new(None),
        })
    }

    /// The cached keys, fetched when missing or older than the TTL.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the JWKS cannot be fetched or read.
    pub async fn keys(&self) -> Result<Vec<VerifyingKey>> {
        if let Some((at, keys)) = &*self.state.read().await
            && at.elapsed() < self.ttl
        {
            return Ok(keys.clone());
        }
        self.refresh().await
    }

    /// Fetches again unless the cache is younger than a minute; returns the keys either way.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the JWKS cannot be fetched or read.
    pub async fn refresh_if_stale(&self) -> Result<Vec<VerifyingKey>> {
        if let Some((at, keys)) = &*self.state.read().await
            && at.elapsed() < self.min_refresh
        {
            return Ok(keys.clone());
        }
        self.refresh().await
    }

    async fn refresh(&self) -> Result<Vec<VerifyingKey>> {
        let unavailable = |e: String| Error::Unavailable {
            service: "fal-jwks",
            message: format!("{}: {e}", self.url),
        };
        let resp = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {}", resp.status())));
        }
        let body = resp.bytes().await.map_err(|e| unavailable(e.to_string()))?;
        let keys =
            crate::fal_signature::parse_jwks(&body).map_err(|e| unavailable(e.to_string()))?;
        *self.state.write().await = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_decodes() {
        let wire: WireOutput = serde_json::from_value(serde_json::json!({
            "images": [{"url": "https://v3.fal.media/files/a.png", "content_type": "image/png",
                        "file_size": 1824075, "width": 1024, "height": 1024}],
            "seed": 7
        }))
        .unwrap();
        let out = ModelOutput::from(wire);
        assert_eq!(
            out.images,
            vec![OutputImage {
                url: "https://v3.fal.media/files/a.png".into(),
                content_type: Some("image/png".into()),
            }]
        );
        assert_eq!(out.seed, Some(7));
    }
}
