//! Input image checks done before any job is written: format sniffed from the bytes, size and
//! pixel limits read from the header (so a decompression bomb is refused without decoding it),
//! then one full decode to catch truncated and corrupt files. Pure: no I/O.

use image::{ImageDecoder, ImageFormat, ImageReader};
use std::io::Cursor;

/// Limits on accepted input images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted encoded size, in bytes.
    pub max_bytes: u64,
    /// Largest accepted width × height.
    pub max_pixels: u64,
    /// Largest accepted width or height, in pixels.
    pub max_side: u32,
}

impl Default for ImageLimits {
    /// 25 MiB, 40 megapixels, 12 000 px a side.
    fn default() -> Self {
        Self {
            max_bytes: 25 * 1024 * 1024,
            max_pixels: 40_000_000,
            max_side: 12_000,
        }
    }
}

/// What a valid input image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Sniffed format.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl ImageInfo {
    /// MIME type of the format.
    pub fn content_type(&self) -> &'static str {
        self.format.to_mime_type()
    }

    /// Usual file extension of the format.
    pub fn extension(&self) -> &'static str {
        match self.format {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::WebP => "webp",
            _ => "bin",
        }
    }
}

/// Why an input image was refused. Each variant has a stable code ([`ImageRejection::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRejection {
    /// Zero bytes.
    #[error("the image is empty (0 bytes)")]
    Empty,
    /// Not JPEG, PNG or WebP.
    #[error("the file is not a supported image: accepted formats are JPEG, PNG and WebP{0}")]
    Unsupported(String),
    /// Over [`ImageLimits::max_bytes`].
    #[error("the image is {actual} bytes; the limit is {limit} bytes")]
    TooManyBytes {
        /// Size received.
        actual: u64,
        /// The limit.
        limit: u64,
    },
    /// Over the pixel or side limit (decompression-bomb guard).
    #[error(
        "the image is {width}×{height} px; the limits are {max_pixels} pixels and {max_side} px a side"
    )]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// Pixel limit.
        max_pixels: u64,
        /// Side limit.
        max_side: u32,
    },
    /// Truncated or corrupt data.
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
}

impl ImageRejection {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "empty_image",
            Self::Unsupported(_) => "unsupported_image",
            Self::TooManyBytes { .. } => "payload_too_large",
            Self::TooLarge { .. } => "image_too_large",
            Self::Corrupt(_) => "invalid_image",
        }
    }
}

/// The share of a cutout that is foreground, 0.0–1.0: the mean alpha / 255 of the decoded
/// image (1.0 for an image without an alpha channel, which keeps everything). Used on a
/// provider's cutout, whose mask we never see.
///
/// # Errors
/// [`ImageRejection::Corrupt`] when `bytes` do not decode.
pub fn foreground_fraction(bytes: &[u8]) -> Result<f64, ImageRejection> {
    let image =
        image::load_from_memory(bytes).map_err(|e| ImageRejection::Corrupt(e.to_string()))?;
    if !image.color().has_alpha() {
        return Ok(1.0);
    }
    Ok(coverage(image.to_rgba8().pixels().map(|p| p.0[3])))
}

/// The mean of 8-bit mask or alpha values / 255, 0.0–1.0 (soft edges count in proportion;
/// no values → 0.0): the foreground fraction of a mask, the segmenter's and a provider's alike.
pub fn coverage(values: impl Iterator<Item = u8>) -> f64 {
    let (sum, n) = values.fold((0u64, 0u64), |(s, n), v| (s + u64::from(v), n + 1));
    if n == 0 {
        return 0.0;
    }
    sum as f64 / (255.0 * n as f64)
}

/// Sniffs, bounds and fully decodes `bytes` once.
///
/// # Errors
/// [`ImageRejection`] naming the first check that failed, in the order: empty, byte limit,
/// format, declared dimensions, decode.
pub fn probe(bytes: &[u8], limits: &ImageLimits) -> Result<ImageInfo, ImageRejection> {
    if bytes.is_empty() {
        return Err(ImageRejection::Empty);
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(ImageRejection::TooManyBytes {
            actual: bytes.len() as u64,
            limit: limits.max_bytes,
        });
    }
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => f,
        Ok(other) => {
            return Err(ImageRejection::Unsupported(format!(
                " (got {})",
                other.to_mime_type()
            )));
        }
        Err(_) => return Err(ImageRejection::Unsupported(String::new())),
    };
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| ImageRejection::Corrupt(e.to_string()))?;
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(ImageRejection::TooLarge {
            width,
            height,
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
        });
    }
    // The JPEG decoder pads a truncated scan with grey instead of failing, so a missing
    // end-of-image marker is the reliable sign of a cut-off upload.
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(ImageRejection::Corrupt(
            "JPEG data is truncated (no end-of-image marker)".into(),
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(limits.max_side);
    decode_limits.max_image_height = Some(limits.max_side);
    // RGBA8 of the largest accepted image, plus headroom for the decoder's own buffers.
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(4).saturating_add(64 << 20));
    reader.limits(decode_limits);
    let corrupt = |e: image::ImageError| ImageRejection::Corrupt(e.to_string());
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder.orientation().map_err(corrupt)?;
    image::DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    // EXIF orientations 5–8 turn the picture a quarter: report what a viewer (and the
    // segmenter, which applies the orientation) sees.
    use image::metadata::Orientation as O;
    let (width, height) = match orientation {
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH => (height, width),
        _ => (width, height),
    };
    Ok(ImageInfo {
        format,
        width,
        height,
    })
}

/// Whether a JPEG stream reaches its end-of-image marker (`FFD9`) after the scan data.
///
/// `image`'s JPEG decoder (zune-jpeg) decodes a truncated file without an error, filling the
/// missing rows, so truncation is detected here by walking the marker segments (skipping
/// APPn payloads such as EXIF thumbnails, which carry their own markers) and the entropy-coded
/// data (where `FF` is always followed by `00` stuffing or a restart marker).
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return false;
    }
    let n = bytes.len();
    let mut pos = 2;
    let mut seen_scan = false;
    while pos + 1 < n {
        if bytes[pos] != 0xFF {
            // Extraneous bytes before a marker (tolerated, as libjpeg does).
            pos += 1;
            continue;
        }
        let marker = bytes[pos + 1];
        match marker {
            0xFF => pos += 1, // fill byte
            0xD9 => return seen_scan,
            0x00 | 0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                if pos + 3 >= n {
                    return false;
                }
                let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
                if len < 2 {
                    return false;
                }
                pos += 2 + len;
                if pos > n {
                    return false;
                }
                if marker == 0xDA {
                    seen_scan = true;
                    // Entropy-coded data: runs until an FF that is not stuffing or a restart.
                    loop {
                        match bytes[pos..].iter().position(|&b| b == 0xFF) {
                            None => return false,
                            Some(i) => pos += i,
                        }
                        if pos + 1 >= n {
                            return false;
                        }
                        match bytes[pos + 1] {
                            0x00 | 0xD0..=0xD7 => pos += 2,
                            0xFF => pos += 1,
                            _ => break,
                        }
                    }
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, RgbImage};

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn png_header_claiming(w: u32, h: u32) -> Vec<u8> {
        // A well-formed PNG whose IHDR claims a huge image, followed by a tiny IDAT: a few
        // hundred bytes that would decode to tens of gigabytes.
        fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        }
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
        );
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn accepts_a_real_jpeg() {
        let info = probe(&jpeg(64, 48), &ImageLimits::default()).unwrap();
        assert_eq!(
            (info.format, info.width, info.height),
            (ImageFormat::Jpeg, 64, 48)
        );
        assert_eq!(info.content_type(), "image/jpeg");
    }

    /// A JPEG with an EXIF APP1 segment carrying only the given orientation tag.
    fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
        let plain = jpeg(w, h);
        let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01".to_vec();
        tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01]);
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\x00\x00".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = plain[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&plain[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied_to_the_reported_size() {
        let rotated = jpeg_with_orientation(64, 48, 6);
        let mut d = ImageReader::new(Cursor::new(&rotated))
            .with_guessed_format()
            .unwrap()
            .into_decoder()
            .unwrap();
        assert_eq!(
            d.orientation().unwrap(),
            image::metadata::Orientation::Rotate90,
            "the fixture carries the tag"
        );
        let info = probe(&rotated, &ImageLimits::default()).unwrap();
        assert_eq!((info.width, info.height), (48, 64));
        let upright = probe(&jpeg_with_orientation(64, 48, 1), &ImageLimits::default()).unwrap();
        assert_eq!((upright.width, upright.height), (64, 48));
    }

    #[test]
    fn refuses_each_kind_of_bad_input() {
        let l = ImageLimits::default();
        assert_eq!(probe(b"", &l).unwrap_err().code(), "empty_image");
        assert_eq!(
            probe(b"hello, not an image", &l).unwrap_err().code(),
            "unsupported_image"
        );
        assert_eq!(
            probe(b"GIF89a\x01\x00\x01\x00", &l).unwrap_err().code(),
            "unsupported_image"
        );
        let full = jpeg(64, 48);
        let truncated = &full[..full.len() / 2];
        assert_eq!(probe(truncated, &l).unwrap_err().code(), "invalid_image");
        let bomb = png_header_claiming(100_000, 100_000);
        assert_eq!(probe(&bomb, &l).unwrap_err().code(), "image_too_large");
        let small = ImageLimits {
            max_bytes: 100,
            ..l
        };
        assert_eq!(
            probe(&full, &small).unwrap_err().code(),
            "payload_too_large"
        );
        let few_pixels = ImageLimits {
            max_pixels: 1000,
            ..l
        };
        assert_eq!(
            probe(&full, &few_pixels).unwrap_err().code(),
            "image_too_large"
        );
    }
}
