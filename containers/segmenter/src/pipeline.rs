//! One background removal end to end, independent of HTTP: decode → engine → compose → encode.
//! Blocking and CPU-heavy; the HTTP layer runs it on a blocking thread.

use std::time::Instant;

use image::{DynamicImage, RgbImage};
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
    /// Time per stage (the server sends it as `Server-Timing`).
    pub stages: Stages,
}

/// Wall-clock milliseconds (≥ 0) per stage of [`remove_background`]; they add up to
/// `total_ms` but for the checks in between (well under a millisecond).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// Sniff, header checks, decode, EXIF orientation (and a conversion to RGB when the
    /// input is not 8-bit RGB).
    pub decode_ms: f64,
    /// The engine's input: resize to the network size and normalise (0 for `plain-background`).
    pub preprocess_ms: f64,
    /// The network (or the whole built-in engine).
    pub inference_ms: f64,
    /// The mask from the network output back to full size.
    pub mask_resize_ms: f64,
    /// Cutout / background colour / `scale` / `only_mask`; 0 for a PNG cutout at full size,
    /// whose cutout is made inside the encoder's bands and counted in `encode_ms`.
    pub compose_ms: f64,
    /// PNG / WebP / JPEG encoding (for a PNG cutout at full size, with the cutout itself).
    pub encode_ms: f64,
}

impl Stages {
    /// The `Server-Timing` header value (W3C Server Timing: `name;dur=ms`, comma-separated),
    /// in pipeline order, then `total`; one decimal.
    pub fn server_timing(&self, total_ms: f64) -> String {
        [
            ("decode", self.decode_ms),
            ("preprocess", self.preprocess_ms),
            ("inference", self.inference_ms),
            ("mask_resize", self.mask_resize_ms),
            ("compose", self.compose_ms),
            ("encode", self.encode_ms),
            ("total", total_ms),
        ]
        .iter()
        .map(|(name, ms)| format!("{name};dur={ms:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// Removes the background of the image in `bytes` with `engine`, per `params`.
///
/// `params.model` is informational here (the caller picked `engine` from it). EXIF orientation
/// is applied first, so the output is upright and its size is the displayed size × `scale`.
/// `png_deflate` is how PNG output is deflated ([`crate::png::Deflate::Rle`] in the server).
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
    png_deflate: crate::png::Deflate,
) -> Result<Processed, ServiceError> {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let image = imaging::decode(bytes, limits)?;
    // The engine reads RGB; a JPEG decodes to RGB already, so it is borrowed, not copied.
    let converted: RgbImage;
    let rgb = match &image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => {
            converted = other.to_rgb8();
            &converted
        }
    };
    let decode_ms = ms(started);
    let t = Instant::now();
    let (mask, timings) = engine.segment_timed(rgb).map_err(|e| match e {
        EngineError::NoPlainBackground(m) => ServiceError::NoPlainBackground(m),
        EngineError::Runtime(m) => ServiceError::Internal(format!("{}: {m}", engine.name())),
    })?;
    let inference_ms = ms(t);
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
    let t = Instant::now();
    let (width, height) = (image.width(), image.height());
    let (encoded, (out_width, out_height), compose_ms) =
        if imaging::is_plain_png_cutout(params, width, height) {
            // The common case: the cutout is made band by band inside the PNG writer.
            let png = imaging::encode_cutout_png(&image, &mask, png_deflate);
            (png, (width, height), 0.0)
        } else {
            let out = imaging::compose(&image, &mask, params);
            drop(image);
            let compose_ms = ms(t);
            let encoded = imaging::encode(&out, params.output_format, params.quality, png_deflate)
                .map_err(|e| {
                    ServiceError::Internal(format!(
                        "encoding {}: {e}",
                        params.output_format.as_str()
                    ))
                })?;
            (encoded, (out.width(), out.height()), compose_ms)
        };
    let stages = Stages {
        decode_ms,
        preprocess_ms: timings.preprocess_ms,
        inference_ms: timings.inference_ms,
        mask_resize_ms: timings.mask_resize_ms,
        compose_ms,
        encode_ms: ms(t) - compose_ms,
    };
    Ok(Processed {
        bytes: encoded,
        content_type: params.output_format.content_type(),
        width: out_width,
        height: out_height,
        foreground_fraction,
        inference_ms,
        total_ms: ms(started),
        stages,
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
