//! The operations, one module each: their typed, validated parameters, their input limits and
//! what they send to a provider. Pure: no I/O.
//!
//! The same parameter types are parsed from JSON (API), from form fields (multipart API, S3
//! object metadata on ingest) and from query strings (segmenter), so every entry point applies
//! the same ranges and gives the same error for the same mistake. Adding an operation:
//! `docs/ARCHITECTURE.md` ("Adding an operation").

pub mod edit;
pub mod generate;
pub mod relight;
pub mod remove_background;

use crate::image_check::ImageInfo;
use crate::job::Operation;

/// A parameter that failed validation: which one, and why, in words a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ParamError {
    /// The offending field, as named in the public API.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
    /// Stable machine-readable code: `invalid_params` or `unknown_model`.
    pub code: &'static str,
}

impl ParamError {
    /// An out-of-range or malformed value (`invalid_params`).
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
            code: "invalid_params",
        }
    }
}

/// JSON `params` into an operation's parameter type (unknown fields and wrong types are refused
/// by its serde attributes); the ranges are the type's own `validate`.
///
/// # Errors
/// `invalid_params` on `params` with serde's words for what is wrong.
pub(crate) fn deserialize_params<T: serde::de::DeserializeOwned>(
    map: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ParamError> {
    serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| ParamError::invalid("params", e.to_string()))
}

/// Longest accepted prompt, characters (Stability's `maxLength` 10000, docs/providers.md
/// §1.1/§1.3; fal.ai gives none and gets the same limit).
pub const MAX_PROMPT_CHARS: usize = 10_000;

/// Checks that a prompt is present and within [`MAX_PROMPT_CHARS`].
///
/// # Errors
/// `invalid_params` naming `field`.
pub(crate) fn check_prompt(field: &str, prompt: &str) -> Result<(), ParamError> {
    if prompt.trim().is_empty() {
        return Err(ParamError::invalid(field, "is required"));
    }
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ParamError::invalid(
            field,
            format!("is longer than {MAX_PROMPT_CHARS} characters"),
        ));
    }
    Ok(())
}

/// A request to a hosted model (fal.ai's queue, docs/providers.md §2.3): which model, and its
/// JSON input.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRequest {
    /// fal model id, e.g. `fal-ai/bytedance/seedream/v4/edit`.
    pub model: String,
    /// The model's input object.
    pub input: serde_json::Value,
}

/// Which fal model ids a deployment uses for `edit` and `generate` (configuration, not code:
/// `FAL_EDIT_MODEL`, `FAL_TEXT_TO_IMAGE_MODEL`; docs/providers.md §2.9, §2.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIds {
    /// Image(s) + prompt → image(s). Default `fal-ai/bytedance/seedream/v4/edit`.
    pub edit: String,
    /// Prompt → image(s). Default `fal-ai/bytedance/seedream/v4/text-to-image`.
    pub text_to_image: String,
}

impl Default for ModelIds {
    fn default() -> Self {
        Self {
            edit: "fal-ai/bytedance/seedream/v4/edit".into(),
            text_to_image: "fal-ai/bytedance/seedream/v4/text-to-image".into(),
        }
    }
}

/// Image limits of a Stability endpoint (§1.3, §1.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderImageLimits {
    /// Smallest side, px.
    pub min_side: u32,
    /// Fewest pixels.
    pub min_pixels: u64,
    /// Most pixels.
    pub max_pixels: u64,
    /// Widest aspect ratio (long side / short side), if limited.
    pub max_aspect: Option<f64>,
    /// Largest request body, bytes.
    pub max_bytes: u64,
}

impl ProviderImageLimits {
    /// Checks an input image against the limits, naming the one that failed.
    ///
    /// # Errors
    /// `invalid_image` with the limit and the actual value.
    pub fn check(&self, info: &ImageInfo, bytes: u64) -> Result<(), crate::Error> {
        let bad = |message: String| crate::Error::Invalid {
            code: "invalid_image",
            message,
        };
        let (w, h) = (info.width, info.height);
        if w.min(h) < self.min_side {
            return Err(bad(format!(
                "the provider needs each side ≥ {} px; this image is {w}×{h}",
                self.min_side
            )));
        }
        let pixels = u64::from(w) * u64::from(h);
        if pixels < self.min_pixels || pixels > self.max_pixels {
            return Err(bad(format!(
                "the provider accepts {}–{} pixels; this image has {pixels} ({w}×{h})",
                self.min_pixels, self.max_pixels
            )));
        }
        if let Some(max) = self.max_aspect {
            let ratio = f64::from(w.max(h)) / f64::from(w.min(h));
            if ratio > max {
                return Err(bad(format!(
                    "the provider accepts aspect ratios between 1:{max} and {max}:1; this image is {w}×{h}"
                )));
            }
        }
        if bytes > self.max_bytes {
            return Err(bad(format!(
                "the provider accepts request bodies up to {} bytes; this image alone is {bytes}",
                self.max_bytes
            )));
        }
        Ok(())
    }
}

/// Checks a job's inputs (`(name, info, bytes)`, the main one named `image`) against its
/// operation, at submission, before anything is stored.
///
/// # Errors
/// `invalid_image` naming the input and the limit that failed; `invalid_params` when the
/// inputs and parameters do not fit together (e.g. neither `background_prompt` nor
/// `background_reference`); `invalid_input` for an input the operation does not take;
/// `missing_input` for one it needs.
pub fn check_inputs(
    operation: &Operation,
    inputs: &[(&str, ImageInfo, u64)],
) -> Result<(), crate::Error> {
    match operation {
        Operation::RemoveBackground(params) => remove_background::check_inputs(params, inputs),
        Operation::ReplaceBackgroundRelight(params) => relight::check_inputs(params, inputs),
        Operation::Edit(params) => edit::check_inputs(params, inputs),
        Operation::Generate(params) => generate::check_inputs(params, inputs),
    }
}

/// `Err(invalid_input)` naming the first input that is not `image` (operations that take one).
fn only_image(operation: &str, inputs: &[(&str, ImageInfo, u64)]) -> Result<(), crate::Error> {
    match inputs.iter().find(|(n, _, _)| *n != "image") {
        Some((other, _, _)) => Err(crate::Error::Invalid {
            code: "invalid_input",
            message: format!("{operation} takes one image; '{other}' is not an input it accepts"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;

    #[test]
    fn image_limits_name_the_failed_limit() {
        let info = |width, height| ImageInfo {
            format: ImageFormat::Png,
            width,
            height,
        };
        assert!(relight::RELIGHT_LIMITS.check(&info(640, 427), 1000).is_ok());
        let msg = |w, h, b| {
            relight::RELIGHT_LIMITS
                .check(&info(w, h), b)
                .unwrap_err()
                .to_string()
        };
        assert!(msg(63, 640, 1).contains("each side"));
        assert!(msg(4000, 4000, 1).contains("pixels"));
        assert!(msg(1000, 200, 1).contains("aspect"));
        assert!(msg(640, 427, 11 * 1024 * 1024).contains("bytes"));
    }
}
