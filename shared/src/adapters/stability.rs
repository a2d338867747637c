//! HTTP client of Stability AI's v2beta REST API: Replace Background and Relight (async submit,
//! then results polling). Contract: `docs/providers.md` §1.1 (auth,
//! multipart, rate limit), §1.2 (error envelope), §1.3 (submit), §1.4 (results).

use async_trait::async_trait;
use std::time::Duration;

use crate::core::{
    GeneratedImage, ImagePart, PollStatus, ProviderError, RelightProvider, RemoveBackgroundProvider,
};
use crate::error::{Error, Result};
use crate::operation::relight::RelightParams;

/// Stability's lockout after a 429 (§1.1): "timed out for 60 seconds".
const RATE_LIMIT_LOCKOUT: Duration = Duration::from_secs(60);

/// Client of one Stability deployment (`https://api.stability.ai` or a contract server).
#[derive(Clone)]
pub struct StabilityClient {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl std::fmt::Debug for StabilityClient {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StabilityClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// §1.2: `{"id", "name", "errors": [..]}`.
#[derive(serde::Deserialize)]
struct ErrorEnvelope {
    #[serde(default)]
    name: String,
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(serde::Deserialize)]
struct SubmitResponse {
    id: String,
}

impl StabilityClient {
    /// A client for `base_url` with `api_key`; `timeout` bounds each call.
    ///
    /// # Errors
    /// [`Error::Config`] when the HTTP client cannot be built.
    pub fn new(base_url: &str, api_key: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Config(format!("Stability HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
        })
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.api_key)
    }
}

fn transport(e: reqwest::Error) -> ProviderError {
    ProviderError {
        code: "provider_error",
        message: format!("Stability unreachable: {e}"),
        retryable: true,
        retry_after: None,
        // A connection never made reached nobody; anything later (a timeout, a reset)
        // may have been accepted.
        outcome_unknown: !e.is_connect(),
    }
}

/// Maps a non-success answer to a stable code (§1.2).
async fn error_from(resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let envelope = serde_json::from_str::<ErrorEnvelope>(&text).ok();
    let detail = match &envelope {
        Some(e) if !e.errors.is_empty() => format!("{}: {}", e.name, e.errors.join("; ")),
        Some(e) if !e.name.is_empty() => e.name.clone(),
        _ => format!("HTTP {status}"),
    };
    let name = envelope.as_ref().map(|e| e.name.as_str()).unwrap_or("");
    let (code, retryable) = match status {
        400 | 422 => ("invalid_input", false),
        // 403 is moderation by contract; a 403 that is not is a key problem.
        403 if name == "content_moderation" || name.is_empty() => ("content_moderated", false),
        401 | 403 => ("provider_auth", false),
        404 => ("provider_not_found", false),
        413 => ("payload_too_large", false),
        429 => ("rate_limited", true),
        _ => ("provider_error", status >= 500),
    };
    let retry_after = match status {
        429 => Some(
            retry_after
                .unwrap_or(RATE_LIMIT_LOCKOUT)
                .max(RATE_LIMIT_LOCKOUT),
        ),
        _ => retry_after,
    };
    ProviderError {
        code,
        message: format!("Stability answered HTTP {status}: {detail}"),
        retryable,
        retry_after,
        outcome_unknown: false,
    }
}

#[async_trait]
impl RelightProvider for StabilityClient {
    async fn submit(
        &self,
        images: Vec<ImagePart>,
        params: &RelightParams,
    ) -> std::result::Result<String, ProviderError> {
        let has_light_reference = images.iter().any(|i| i.field == "light_reference");
        let mut form = reqwest::multipart::Form::new();
        for image in images {
            let ext = image.content_type.rsplit('/').next().unwrap_or("png");
            let part = reqwest::multipart::Part::stream(image.bytes)
                .file_name(format!("{}.{ext}", image.field))
                .mime_str(&image.content_type)
                .map_err(transport)?;
            form = form.part(image.field, part);
        }
        for (name, value) in params.to_form_fields(has_light_reference) {
            form = form.text(name, value);
        }
        let resp = self
            .http
            .post(format!(
                "{}/v2beta/stable-image/edit/replace-background-and-relight",
                self.base_url
            ))
            .header(reqwest::header::AUTHORIZATION, self.auth())
            .header(reqwest::header::ACCEPT, "application/json")
            .multipart(form)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        let body: SubmitResponse = resp.json().await.map_err(|e| ProviderError {
            code: "provider_error",
            message: format!("Stability submit answer unreadable: {e}"),
            retryable: false,
            retry_after: None,
            outcome_unknown: false,
        })?;
        Ok(body.id)
    }

    async fn poll(&self, request_id: &str) -> std::result::Result<PollStatus, ProviderError> {
        let resp = self
            .http
            .get(format!("{}/v2beta/results/{request_id}", self.base_url))
            .header(reqwest::header::AUTHORIZATION, self.auth())
            .header(reqwest::header::ACCEPT, "*/*")
            .send()
            .await
            .map_err(transport)?;
        match resp.status().as_u16() {
            202 => Ok(PollStatus::Pending),
            200 => image_from(resp).await.map(PollStatus::Done),
            _ => Err(error_from(resp).await),
        }
    }
}

/// The image of a 200 raw-mode answer with its `finish-reason` header (§1.4, §1.5).
async fn image_from(resp: reqwest::Response) -> std::result::Result<GeneratedImage, ProviderError> {
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_else(|| "application/octet-stream".into());
    let finish_reason = header("finish-reason");
    let bytes = resp.bytes().await.map_err(transport)?;
    Ok(GeneratedImage {
        bytes,
        content_type,
        finish_reason,
    })
}

#[async_trait]
impl RemoveBackgroundProvider for StabilityClient {
    async fn remove_background(
        &self,
        image: ImagePart,
        output_format: &str,
    ) -> std::result::Result<GeneratedImage, ProviderError> {
        let ext = image.content_type.rsplit('/').next().unwrap_or("png");
        let part = reqwest::multipart::Part::stream(image.bytes)
            .file_name(format!("image.{ext}"))
            .mime_str(&image.content_type)
            .map_err(transport)?;
        let form = reqwest::multipart::Form::new()
            .part("image", part)
            .text("output_format", output_format.to_owned());
        let resp = self
            .http
            .post(format!(
                "{}/v2beta/stable-image/edit/remove-background",
                self.base_url
            ))
            .header(reqwest::header::AUTHORIZATION, self.auth())
            .header(reqwest::header::ACCEPT, "image/*")
            .multipart(form)
            .send()
            .await
            .map_err(transport)?;
        if resp.status().is_success() {
            image_from(resp).await
        } else {
            Err(error_from(resp).await)
        }
    }
}
