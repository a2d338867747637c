//! Statistics of a result image, to show what background removal did.

use image::GenericImageView;
use serde::Serialize;

/// Dimensions and alpha-channel statistics of an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlphaStats {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Whether the image has an alpha channel.
    pub has_alpha: bool,
    /// Fraction of pixels with alpha 0 (fully transparent), 0–1.
    pub transparent: f64,
    /// Fraction of pixels with alpha 255 (fully opaque), 0–1.
    pub opaque: f64,
    /// Fraction of pixels in between (soft edges), 0–1.
    pub partial: f64,
    /// Mean alpha, 0–255.
    pub mean_alpha: f64,
}

/// Decodes `bytes` and measures its alpha channel.
///
/// # Errors
/// The decoder's message when the bytes are not an image.
pub fn alpha_stats(bytes: &[u8]) -> Result<AlphaStats, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let (width, height) = img.dimensions();
    let has_alpha = img.color().has_alpha();
    let rgba = img.to_rgba8();
    let total = f64::from(width) * f64::from(height);
    let (mut zero, mut full, mut sum) = (0u64, 0u64, 0u64);
    for p in rgba.pixels() {
        let a = p.0[3];
        zero += u64::from(a == 0);
        full += u64::from(a == 255);
        sum += u64::from(a);
    }
    Ok(AlphaStats {
        width,
        height,
        has_alpha,
        transparent: zero as f64 / total,
        opaque: full as f64 / total,
        partial: (total - zero as f64 - full as f64) / total,
        mean_alpha: sum as f64 / total,
    })
}
