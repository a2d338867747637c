//! HTTP client of the segmenter container (SageMaker/ECS contract: `POST /invocations` with the
//! image as the body and the parameters in the query string; see
//! `containers/segmenter/README.md`).

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

use crate::core::{Cutout, Probe, Segmenter, SegmenterError};
use crate::error::{Error, Result};
use crate::operation::remove_background::RemoveBackgroundParams;

/// Client of one segmenter endpoint.
#[derive(Debug, Clone)]
pub struct HttpSegmenter {
    http: reqwest::Client,
    base_url: String,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl HttpSegmenter {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8080`) with a per-request `timeout`.
    ///
    /// # Errors
    /// [`Error::Config`] when the HTTP client cannot be built.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Config(format!("segmenter HTTP client: {e}")))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }
}

fn header_u32(resp: &reqwest::Response, name: &str) -> Option<u32> {
    resp.headers().get(name)?.to_str().ok()?.parse().ok()
}

#[async_trait]
impl Segmenter for HttpSegmenter {
    async fn remove_background(
        &self,
        image: Bytes,
        params: &RemoveBackgroundParams,
    ) -> std::result::Result<Cutout, SegmenterError> {
        let resp = self
            .http
            .post(format!("{}/invocations", self.base_url))
            .query(&params.to_pairs())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(image)
            .send()
            .await
            .map_err(|e| SegmenterError::Transient(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_owned();
            let (Some(width), Some(height)) = (
                header_u32(&resp, "x-image-width"),
                header_u32(&resp, "x-image-height"),
            ) else {
                return Err(SegmenterError::Transient(
                    "segmenter response lacks X-Image-Width/X-Image-Height".into(),
                ));
            };
            let engine = resp
                .headers()
                .get("x-model")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(&params.model)
                .to_owned();
            let foreground_fraction = resp
                .headers()
                .get("x-foreground-fraction")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|f| (0.0..=1.0).contains(f));
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| SegmenterError::Transient(e.to_string()))?;
            return Ok(Cutout {
                bytes,
                content_type,
                width,
                height,
                engine,
                foreground_fraction,
            });
        }
        let text = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<ErrorBody>(&text)
            .ok()
            .map(|b| b.error);
        // 4xx: this request can never succeed (bad image, unknown model); 5xx and 429: retry.
        if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            let (code, message) = match detail {
                Some(d) => (d.code, d.message),
                None => (
                    "segmenter_rejected".into(),
                    format!("HTTP {status}: {text}"),
                ),
            };
            Err(SegmenterError::Permanent { code, message })
        } else if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || detail.as_ref().is_some_and(|d| d.code == "overloaded")
        {
            Err(SegmenterError::Overloaded(match detail {
                Some(d) => format!("HTTP {status} {}: {}", d.code, d.message),
                None => format!("HTTP {status}"),
            }))
        } else {
            Err(SegmenterError::Transient(match detail {
                Some(d) => format!("HTTP {status} {}: {}", d.code, d.message),
                None => format!("HTTP {status}"),
            }))
        }
    }
}

#[async_trait]
impl Probe for HttpSegmenter {
    fn name(&self) -> &'static str {
        "segmenter"
    }

    async fn ping(&self) -> Result<()> {
        let resp = self
            .http
            .get(format!("{}/ping", self.base_url))
            .send()
            .await
            .map_err(|e| Error::unavailable("segmenter", e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::unavailable(
                "segmenter",
                format!("ping: HTTP {}", resp.status()),
            ))
        }
    }
}
