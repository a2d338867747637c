//! The segmenter container behind a SageMaker real-time endpoint, called with `InvokeEndpoint`
//! (SigV4 over the AWS API: the processor needs no VPC to reach it).
//!
//! SageMaker forwards to the container only the body, `Content-Type`, `Accept` and
//! `X-Amzn-SageMaker-Custom-Attributes`, and returns only the body, `Content-Type`,
//! `X-Amzn-Invoked-Production-Variant` and `X-Amzn-SageMaker-Custom-Attributes` (the
//! `InvokeEndpoint` API reference; `aws-sdk-sagemakerruntime`'s `InvokeEndpointOutput`). So the
//! parameters travel as custom attributes (`model=isnet,output_format=png,…`, the container's
//! request contract) and the result's metadata comes back the same way
//! (`width=…,height=…,model=…,foreground_fraction=…,inference_ms=…`, see
//! `containers/segmenter/README.md`); the container's `X-Image-*` headers do not survive.

use async_trait::async_trait;
use aws_sdk_sagemakerruntime::Client;
use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use bytes::Bytes;
use std::time::Duration;

use crate::core::{Cutout, Segmenter, SegmenterError};
use crate::operation::remove_background::RemoveBackgroundParams;

/// Largest request body a real-time endpoint accepts: 6 MB (6,291,456 bytes, the `Body` length
/// constraint in the `InvokeEndpoint` API reference). Larger inputs are refused here, before
/// the call, instead of as an opaque `ValidationError`.
pub const MAX_INVOKE_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Client of one SageMaker endpoint serving the segmenter container.
#[derive(Debug, Clone)]
pub struct SageMakerSegmenter {
    client: Client,
    endpoint_name: String,
}

impl SageMakerSegmenter {
    /// Wraps a client that invokes `endpoint_name` (timeouts and retries are the client's).
    pub fn new(client: Client, endpoint_name: impl Into<String>) -> Self {
        Self {
            client,
            endpoint_name: endpoint_name.into(),
        }
    }

    /// A client from the SDK configuration for `endpoint_name` whose every call, retries
    /// included, gives up after `timeout` (`SEGMENTER_TIMEOUT_SECONDS`; keep it below the
    /// processor's Lambda timeout, and note that SageMaker itself cuts a container off at 60 s).
    /// `AWS_ENDPOINT_URL` (or the SDK config's endpoint URL) redirects it, as for the emulator.
    pub fn from_sdk_config(
        sdk: &aws_config::SdkConfig,
        endpoint_name: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(timeout)
            .build();
        let config = aws_sdk_sagemakerruntime::config::Builder::from(sdk)
            .timeout_config(timeouts)
            .build();
        Self::new(Client::from_conf(config), endpoint_name)
    }

    /// The endpoint this client invokes.
    pub fn endpoint_name(&self) -> &str {
        &self.endpoint_name
    }
}

/// The request's custom attributes: `params` as `key=value` pairs joined by commas. Every value
/// [`RemoveBackgroundParams::to_pairs`] produces is visible ASCII without a comma (model names,
/// numbers, booleans, `#rrggbbaa`), as the header's 1,024-character limit requires.
pub fn custom_attributes(params: &RemoveBackgroundParams) -> String {
    params
        .to_pairs()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The result metadata the container returns as custom attributes: `width`, `height` (px),
/// `model`, `foreground_fraction` (0–1) and `inference_ms` (ignored here); unknown keys and
/// malformed entries are skipped, since the value is the container's free text.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResultAttributes {
    /// Output width in px.
    pub width: Option<u32>,
    /// Output height in px.
    pub height: Option<u32>,
    /// Engine that produced the mask.
    pub model: Option<String>,
    /// Share of the image the mask keeps, within 0.0–1.0.
    pub foreground_fraction: Option<f64>,
}

impl ResultAttributes {
    /// Parses `width=1200,height=800,model=isnet,foreground_fraction=0.4123,inference_ms=87`.
    pub fn parse(value: &str) -> Self {
        let mut out = Self::default();
        for (key, val) in value
            .split(',')
            .filter_map(|entry| entry.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
        {
            match key {
                "width" => out.width = val.parse().ok(),
                "height" => out.height = val.parse().ok(),
                "model" if !val.is_empty() => out.model = Some(val.to_owned()),
                "foreground_fraction" => {
                    out.foreground_fraction =
                        val.parse::<f64>().ok().filter(|f| (0.0..=1.0).contains(f));
                }
                _ => {}
            }
        }
        out
    }
}

/// The encoded image's size from its header (no pixel decoding): the fallback when a container
/// image older than the custom-attributes contract answers.
fn dimensions_from_header(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
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

/// Maps an `InvokeEndpoint` failure the way [`super::HttpSegmenter`] maps the container's own
/// answers: a `ModelError` carries the container's status (`OriginalStatusCode`) and body
/// (`OriginalMessage`, its JSON error), so a 4xx other than 429 is permanent with the
/// container's code; everything else (the container's 5xx, `ModelNotReadyException`,
/// `ServiceUnavailable`, internal failures, throttling, timeouts, and `ValidationError`, which
/// is also what a missing or still-creating endpoint answers) is worth retrying.
fn classify(e: SdkError<InvokeEndpointError>) -> SegmenterError {
    let text = match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("SageMaker error"),
                err.message().unwrap_or("no message")
            )
        }
        other => crate::error::chain(other),
    };
    let SdkError::ServiceError(service) = e else {
        return SegmenterError::Transient(text);
    };
    let InvokeEndpointError::ModelError(model) = service.into_err() else {
        return SegmenterError::Transient(text);
    };
    let status = model.original_status_code().unwrap_or(500);
    let original = model.original_message().unwrap_or_default();
    let detail = serde_json::from_str::<ErrorBody>(original)
        .ok()
        .map(|b| b.error);
    if (400..500).contains(&status) && status != 429 {
        let (code, message) = match detail {
            Some(d) => (d.code, d.message),
            None => (
                "segmenter_rejected".into(),
                format!("HTTP {status}: {original}"),
            ),
        };
        SegmenterError::Permanent { code, message }
    } else if status == 429 || detail.as_ref().is_some_and(|d| d.code == "overloaded") {
        SegmenterError::Overloaded(match detail {
            Some(d) => format!("HTTP {status} {}: {}", d.code, d.message),
            None => format!("HTTP {status}: {text}"),
        })
    } else {
        SegmenterError::Transient(match detail {
            Some(d) => format!("HTTP {status} {}: {}", d.code, d.message),
            None => format!("HTTP {status}: {text}"),
        })
    }
}

#[async_trait]
impl Segmenter for SageMakerSegmenter {
    async fn remove_background(
        &self,
        image: Bytes,
        params: &RemoveBackgroundParams,
    ) -> std::result::Result<Cutout, SegmenterError> {
        if image.len() > MAX_INVOKE_BODY_BYTES {
            return Err(SegmenterError::Permanent {
                code: "payload_too_large".into(),
                message: format!(
                    "the image is {} bytes; a SageMaker real-time endpoint accepts at most {MAX_INVOKE_BODY_BYTES}",
                    image.len()
                ),
            });
        }
        let out = self
            .client
            .invoke_endpoint()
            .endpoint_name(&self.endpoint_name)
            .content_type("application/octet-stream")
            .custom_attributes(custom_attributes(params))
            .body(Blob::new(image))
            .send()
            .await
            .map_err(classify)?;
        let bytes = Bytes::from(
            out.body
                .ok_or_else(|| SegmenterError::Transient("SageMaker returned no body".into()))?
                .into_inner(),
        );
        let attrs = out
            .custom_attributes
            .as_deref()
            .map(ResultAttributes::parse)
            .unwrap_or_default();
        let (width, height) = match (attrs.width, attrs.height) {
            (Some(w), Some(h)) => (w, h),
            _ => dimensions_from_header(&bytes).ok_or_else(|| {
                SegmenterError::Transient(
                    "segmenter response has no width/height attributes and no readable image header"
                        .into(),
                )
            })?,
        };
        Ok(Cutout {
            bytes,
            content_type: out
                .content_type
                .unwrap_or_else(|| "application/octet-stream".into()),
            width,
            height,
            engine: attrs.model.unwrap_or_else(|| params.model.clone()),
            foreground_fraction: attrs.foreground_fraction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_attributes_parse_and_skip_garbage() {
        let a = ResultAttributes::parse(
            "width=1200, height=800,model=isnet,foreground_fraction=0.4123,inference_ms=87",
        );
        assert_eq!(a.width, Some(1200));
        assert_eq!(a.height, Some(800));
        assert_eq!(a.model.as_deref(), Some("isnet"));
        assert_eq!(a.foreground_fraction, Some(0.4123));
        let bad = ResultAttributes::parse("width=-1,height,model=,foreground_fraction=1.5,x=y");
        assert_eq!(bad, ResultAttributes::default());
    }

    #[test]
    fn request_attributes_are_the_params_pairs() {
        let params =
            RemoveBackgroundParams::from_pairs([("model", "u2netp"), ("scale", "0.5")], "isnet")
                .unwrap();
        let text = custom_attributes(&params);
        let pairs: Vec<(String, String)> = text
            .split(',')
            .map(|e| {
                let (k, v) = e.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let expected: Vec<(String, String)> = params
            .to_pairs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(pairs, expected);
        assert!(text.contains("model=u2netp") && text.contains("scale=0.5"));
        assert!(text.len() <= 1024 && text.bytes().all(|b| b.is_ascii_graphic()));
    }
}
