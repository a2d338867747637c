//! One background removal end to end, independent of HTTP: decode → engine → compose → encode.
//! Blocking and CPU-heavy; the HTTP layer runs it on a blocking thread.

use std::time::Instant;

use image::codecs::png::CompressionType;
use shared::params::RemoveBackgroundParams;

use crate::engine::Engine;
use crate::error::ServiceError;
use crate::imaging::{self, DecodeLimits};

/// The result of [`remove_background`].
#[derive(Debug, Clone)]
pub struct Processed {
    /// Encoded image bytes.
    pub bytes: Vec<u8>,
    /// MIME type of `bytes` (`image/png`, `image/webp` or `image/jpeg`).
    pub content_type: &'static str,
    /// Output width in px (after `scale`).
    pub width: u32,
    /// Output height in px (after `scale`).
    pub height: u32,
    /// Engine time (mask computation, incl. pre/post-processing), milliseconds.
    pub inference_ms: f64,
    /// Whole pipeline time (decode to encode), milliseconds.
    pub total_ms: f64,
}

/// Removes the background of the image in `bytes` with `engine`, per `params`.
///
/// `params.model` is informational here (the caller picked `engine` from it). EXIF orientation
/// is applied first, so the output is upright and its size is the displayed size × `scale`.
/// `png_compression` is [`CompressionType::Fast`] in the server.
///
/// # Errors
/// Decoding errors (`unsupported_image`, `image_too_large`, `invalid_image`) and `internal`
/// for engine or encoder failures.
pub fn remove_background(
    bytes: &[u8],
    engine: &dyn Engine,
    params: &RemoveBackgroundParams,
    limits: DecodeLimits,
    png_compression: CompressionType,
) -> Result<Processed, ServiceError> {
    let started = Instant::now();
    let image = imaging::decode(bytes, limits)?;
    let rgb = image.to_rgb8();
    let t = Instant::now();
    let mask = engine
        .segment(&rgb)
        .map_err(|e| ServiceError::Internal(format!("{}: {e}", engine.name())))?;
    let inference_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(rgb);
    if mask.dimensions() != (image.width(), image.height()) {
        return Err(ServiceError::Internal(format!(
            "{} returned a {}×{} mask for a {}×{} image",
            engine.name(),
            mask.width(),
            mask.height(),
            image.width(),
            image.height()
        )));
    }
    let out = imaging::compose(&image, &mask, params);
    drop(image);
    let encoded = imaging::encode(&out, params.output_format, params.quality, png_compression)
        .map_err(|e| {
            ServiceError::Internal(format!("encoding {}: {e}", params.output_format.as_str()))
        })?;
    Ok(Processed {
        bytes: encoded,
        content_type: params.output_format.content_type(),
        width: out.width(),
        height: out.height(),
        inference_ms,
        total_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}
