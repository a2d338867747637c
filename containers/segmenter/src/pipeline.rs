//! One background removal end to end, independent of HTTP: decode → engine → compose → encode.
//! Blocking and CPU-heavy; the HTTP layer runs it on a blocking thread.

use std::time::Instant;

use image::codecs::png::CompressionType;
use shared::operation::remove_background::RemoveBackgroundParams;

use crate::engine::{Engine, EngineError};
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
    /// Share of the image the mask keeps, 0.0–1.0: the mean mask value / 255 (soft edges count
    /// in proportion), before `scale`.
    pub foreground_fraction: f64,
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
/// Decoding errors (`unsupported_image`, `image_too_large`, `invalid_image`);
/// `no_plain_background` when `plain-background` refuses the picture; `no_foreground` when the
/// mask keeps nothing at all (an empty cutout is never returned as a success); `internal` for
/// engine or encoder failures.
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
    let mask = engine.segment(&rgb).map_err(|e| match e {
        EngineError::NoPlainBackground(m) => ServiceError::NoPlainBackground(m),
        EngineError::Runtime(m) => ServiceError::Internal(format!("{}: {m}", engine.name())),
    })?;
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
    let foreground_fraction = foreground_fraction(&mask);
    if foreground_fraction == 0.0 {
        return Err(ServiceError::NoForeground(format!(
            "{} found no foreground in this image (the mask is empty); try another model",
            engine.name()
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
        foreground_fraction,
        inference_ms,
        total_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// The share of the image a mask keeps, 0.0–1.0 ([`shared::image_check::coverage`] of its values).
pub fn foreground_fraction(mask: &image::GrayImage) -> f64 {
    shared::image_check::coverage(mask.as_raw().iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreground_fraction_counts_soft_edges_in_proportion() {
        let mut mask = image::GrayImage::new(4, 1);
        assert_eq!(foreground_fraction(&mask), 0.0);
        mask.as_mut().copy_from_slice(&[255, 255, 0, 0]);
        assert_eq!(foreground_fraction(&mask), 0.5);
        mask.as_mut().copy_from_slice(&[255, 51, 0, 0]);
        assert!((foreground_fraction(&mask) - 0.3).abs() < 1e-9);
        assert_eq!(foreground_fraction(&image::GrayImage::new(0, 0)), 0.0);
    }
}
