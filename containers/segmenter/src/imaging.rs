//! The image path around the engines: format sniffing, decoding with limits (decompression bombs
//! are refused from the header, before any pixel is decoded), truncation checks, EXIF
//! orientation, resizing with `fast_image_resize`, mask application / compositing, and encoding.

use std::io::Cursor;

use fast_image_resize::images::{Image as FirImage, ImageRef};
use fast_image_resize::{FilterType as FirFilter, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{
    DynamicImage, GenericImageView, GrayImage, ImageDecoder, ImageEncoder, ImageError, ImageFormat,
    ImageReader, Limits, RgbImage, RgbaImage,
};
use rayon::prelude::*;
use shared::operation::remove_background::{Color, OutputFormat, RemoveBackgroundParams};

use crate::error::ServiceError;

/// Size limits applied to an input image before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest width × height in pixels.
    pub max_pixels: u64,
    /// Largest width or height in pixels.
    pub max_side: u32,
}

/// The input formats accepted, detected from the bytes (the `Content-Type` is never trusted).
///
/// # Errors
/// [`ServiceError::UnsupportedImage`] for an empty body or any other format.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, ServiceError> {
    if bytes.is_empty() {
        return Err(ServiceError::UnsupportedImage(
            "the request body is empty; send the image bytes (JPEG, PNG or WebP)".into(),
        ));
    }
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => Ok(f),
        Ok(other) => Err(ServiceError::UnsupportedImage(format!(
            "{other:?} images are not supported; send JPEG, PNG or WebP"
        ))),
        Err(_) => Err(ServiceError::UnsupportedImage(
            "the body is not a JPEG, PNG or WebP image".into(),
        )),
    }
}

/// Maps a decoder error to the public error: limits → `image_too_large`, everything else on a
/// sniffed, supported format → `invalid_image` (corrupt or truncated).
fn decode_error(format: ImageFormat, e: ImageError) -> ServiceError {
    match e {
        ImageError::Limits(l) => ServiceError::ImageTooLarge(format!("image exceeds limits: {l}")),
        ImageError::Unsupported(u) => {
            ServiceError::UnsupportedImage(format!("unsupported {format:?} variant: {u}"))
        }
        other => ServiceError::InvalidImage(format!("corrupt or truncated {format:?}: {other}")),
    }
}

/// Reads the dimensions from the header only (no pixel data is decoded).
///
/// # Errors
/// As [`decode`], except that it does not check truncation.
pub fn dimensions(bytes: &[u8], format: ImageFormat) -> Result<(u32, u32), ServiceError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.no_limits();
    reader
        .into_dimensions()
        .map_err(|e| decode_error(format, e))
}

/// Decodes JPEG/PNG/WebP bytes into an image with its EXIF orientation applied.
///
/// Order: sniff the format → read width/height from the header and refuse anything over
/// `limits` → (JPEG) refuse data without an end-of-image marker → decode with decoder limits as
/// a second line of defence → rotate/flip per EXIF orientation. The returned image has the
/// *displayed* size (width and height swapped for 90° orientations).
///
/// # Errors
/// `unsupported_image` (415), `image_too_large` (422), `invalid_image` (422).
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<DynamicImage, ServiceError> {
    let format = sniff(bytes)?;
    let (w, h) = dimensions(bytes, format)?;
    check_size(w, h, limits)?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(ServiceError::InvalidImage(
            "truncated JPEG: no end-of-image marker after the scan data".into(),
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    // 16-bit RGBA is the largest decoded layout (8 B/px), plus room for decoder buffers.
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8) + (64 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(format, e))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(format, e))?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn check_size(w: u32, h: u32, limits: DecodeLimits) -> Result<(), ServiceError> {
    if w == 0 || h == 0 {
        return Err(ServiceError::InvalidImage(format!(
            "image has a zero dimension ({w}×{h})"
        )));
    }
    let pixels = u64::from(w) * u64::from(h);
    if w > limits.max_side || h > limits.max_side || pixels > limits.max_pixels {
        return Err(ServiceError::ImageTooLarge(format!(
            "image is {w}×{h} ({pixels} px); the limits are {} px in total and {} px per side",
            limits.max_pixels, limits.max_side
        )));
    }
    Ok(())
}

/// The JPEG truncation check the API applies too, so an image the API accepts is one the
/// segmenter accepts.
pub use shared::image_check::jpeg_is_complete;

/// Resampling filter for [`resize_rgb`], [`resize_gray`] and [`resize_rgba`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Lanczos3 (as rembg's PIL `LANCZOS`): sharpest, used for model input and mask output.
    Lanczos3,
    /// Bilinear: cheaper, slightly softer.
    Bilinear,
}

fn fir_options(filter: Filter) -> ResizeOptions {
    let f = match filter {
        Filter::Lanczos3 => FirFilter::Lanczos3,
        Filter::Bilinear => FirFilter::Bilinear,
    };
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(f))
}

fn resize_raw(
    src: &[u8],
    (sw, sh): (u32, u32),
    (dw, dh): (u32, u32),
    pixel: PixelType,
    filter: Filter,
) -> Vec<u8> {
    let src = ImageRef::new(sw, sh, src, pixel)
        .expect("buffer length matches width × height × channels (u8 needs no alignment)");
    let mut dst = FirImage::new(dw, dh, pixel);
    Resizer::new()
        .resize(&src, &mut dst, &fir_options(filter))
        .expect("same pixel type on both sides");
    dst.into_vec()
}

/// Resizes an 8-bit grey image (a mask) to `width`×`height` (both ≥ 1).
pub fn resize_gray(img: &GrayImage, width: u32, height: u32, filter: Filter) -> GrayImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    let raw = resize_raw(
        img.as_raw(),
        img.dimensions(),
        (width, height),
        PixelType::U8,
        filter,
    );
    GrayImage::from_raw(width, height, raw).expect("resizer output size")
}

/// Resizes an 8-bit RGB image to `width`×`height` (both ≥ 1).
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    let raw = resize_raw(
        img.as_raw(),
        img.dimensions(),
        (width, height),
        PixelType::U8x3,
        filter,
    );
    RgbImage::from_raw(width, height, raw).expect("resizer output size")
}

/// Resizes an 8-bit RGBA image to `width`×`height`, with alpha-premultiplied filtering (so
/// transparent pixels do not bleed colour into the edges).
pub fn resize_rgba(img: &RgbaImage, width: u32, height: u32, filter: Filter) -> RgbaImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    let raw = resize_raw(
        img.as_raw(),
        img.dimensions(),
        (width, height),
        PixelType::U8x4,
        filter,
    );
    RgbaImage::from_raw(width, height, raw).expect("resizer output size")
}

/// Output size for `scale` (0.1–1.0) of `width`×`height`: each side rounded, at least 1 px.
pub fn scaled_size(width: u32, height: u32, scale: f32) -> (u32, u32) {
    let s = f64::from(scale);
    let side = |v: u32| ((f64::from(v) * s).round() as u32).clamp(1, v.max(1));
    (side(width), side(height))
}

/// Builds the result image from the (oriented) input and its mask (same size, 0 = background,
/// 255 = foreground), per `params`, at `params.scale` of the input size:
///
/// * `only_mask` → the mask as an L8 image;
/// * otherwise an RGBA cutout: alpha = mask × input alpha / 255, colour zeroed where alpha is 0
///   (smaller files, no hidden background);
/// * with `background_color` the cutout is composited over it ("over" operator). The result is
///   RGB when the colour is opaque, or when `output_format` is JPEG (whose lack of alpha makes
///   the background's own alpha meaningless; it is treated as opaque).
///
/// # Panics
/// If `mask` and `image` differ in size.
pub fn compose(
    image: &DynamicImage,
    mask: &GrayImage,
    params: &RemoveBackgroundParams,
) -> DynamicImage {
    assert_eq!(image.width(), mask.width());
    assert_eq!(image.height(), mask.height());
    let (ow, oh) = scaled_size(image.width(), image.height(), params.scale);
    if params.only_mask {
        return DynamicImage::ImageLuma8(resize_gray(mask, ow, oh, Filter::Lanczos3));
    }
    let cutout = cutout(image, mask);
    let opaque_bg = params.output_format == OutputFormat::Jpeg;
    let out = match params.background_color {
        None => DynamicImage::ImageRgba8(cutout),
        Some(bg) if bg.a == 255 || opaque_bg => {
            DynamicImage::ImageRgb8(flatten(&cutout, Color { a: 255, ..bg }))
        }
        Some(bg) => DynamicImage::ImageRgba8(over(&cutout, bg)),
    };
    if (ow, oh) == (out.width(), out.height()) {
        return out;
    }
    match out {
        DynamicImage::ImageRgb8(rgb) => {
            DynamicImage::ImageRgb8(resize_rgb(&rgb, ow, oh, Filter::Lanczos3))
        }
        other => DynamicImage::ImageRgba8(resize_rgba(&other.to_rgba8(), ow, oh, Filter::Lanczos3)),
    }
}

/// Rows per parallel work item of the per-pixel passes (≈ 100–400 KB of pixels on 12 MP).
const ROWS_PER_TASK: usize = 32;

/// The input's pixels as RGB or RGBA bytes and their channel count (3 or 4): RGB and RGBA
/// images are borrowed, anything else is converted to RGBA into `converted`.
fn rgb_or_rgba<'a>(
    image: &'a DynamicImage,
    converted: &'a mut Option<RgbaImage>,
) -> (&'a [u8], usize) {
    match image {
        DynamicImage::ImageRgb8(rgb) => (rgb.as_raw(), 3),
        DynamicImage::ImageRgba8(rgba) => (rgba.as_raw(), 4),
        other => (converted.insert(other.to_rgba8()).as_raw(), 4),
    }
}

/// Cutout pixels: `src` (`channels` = 3 or 4 bytes per pixel) and `mask` (1 byte per pixel) to
/// RGBA in `dst`: alpha = mask × input alpha / 255, colour zeroed where alpha is 0.
fn cutout_pixels(src: &[u8], channels: usize, mask: &[u8], dst: &mut [u8]) {
    for ((d, s), &m) in dst
        .chunks_exact_mut(4)
        .zip(src.chunks_exact(channels))
        .zip(mask)
    {
        let a = if channels == 4 {
            mul_div255(s[3], m)
        } else {
            m
        };
        let px = if a == 0 {
            [0, 0, 0, 0]
        } else {
            [s[0], s[1], s[2], a]
        };
        d.copy_from_slice(&px);
    }
}

/// The RGBA cutout: alpha = mask × input alpha / 255, colour zeroed where alpha is 0. An RGB
/// input (the usual JPEG) is read in place, without an intermediate RGBA copy; rows run in
/// parallel.
fn cutout(image: &DynamicImage, mask: &GrayImage) -> RgbaImage {
    let w = image.width() as usize;
    let mut out = RgbaImage::new(image.width(), image.height());
    let mut converted = None;
    let (src, channels) = rgb_or_rgba(image, &mut converted);
    let rows = ROWS_PER_TASK;
    out.par_chunks_mut(4 * w * rows)
        .zip(src.par_chunks(channels * w * rows))
        .zip(mask.as_raw().par_chunks(w * rows))
        .for_each(|((dst, src), m)| cutout_pixels(src, channels, m, dst));
    out
}

/// Whether [`encode_cutout_png`] makes the output `params` ask for: a PNG cutout at full size,
/// with no background colour and not `only_mask`.
pub fn is_plain_png_cutout(params: &RemoveBackgroundParams, width: u32, height: u32) -> bool {
    params.output_format == OutputFormat::Png
        && !params.only_mask
        && params.background_color.is_none()
        && scaled_size(width, height, params.scale) == (width, height)
}

/// The PNG of the RGBA cutout of `image` by `mask` (the same file as [`compose`] then
/// [`encode`] give when [`is_plain_png_cutout`]), with each band of the cutout made inside the
/// encoder's band that filters and deflates it ([`crate::png::encode_rows`]): no whole RGBA
/// cutout is ever allocated (48 MB at 12 MP), and the composition runs on every core.
///
/// # Panics
/// If `mask` and `image` differ in size.
pub fn encode_cutout_png(
    image: &DynamicImage,
    mask: &GrayImage,
    png_deflate: crate::png::Deflate,
) -> Vec<u8> {
    assert_eq!(image.dimensions(), mask.dimensions());
    let (w, h) = image.dimensions();
    let width = w as usize;
    let mut converted = None;
    let (src, channels) = rgb_or_rgba(image, &mut converted);
    let mask = mask.as_raw();
    crate::png::encode_rows(w, h, 4, png_deflate, |first, rows| {
        let n = rows.len() / (4 * width);
        let src = &src[first * width * channels..(first + n) * width * channels];
        let mask = &mask[first * width..(first + n) * width];
        cutout_pixels(src, channels, mask, rows);
    })
}

/// `a * b / 255`, rounded.
fn mul_div255(a: u8, b: u8) -> u8 {
    let t = u32::from(a) * u32::from(b) + 128;
    ((t + (t >> 8)) >> 8) as u8
}

/// Cutout over an opaque colour → RGB.
fn flatten(cutout: &RgbaImage, bg: Color) -> RgbImage {
    let bgc = [bg.r, bg.g, bg.b];
    let w = cutout.width() as usize;
    let mut out = RgbImage::new(cutout.width(), cutout.height());
    out.par_chunks_mut(3 * w * ROWS_PER_TASK)
        .zip(cutout.par_chunks(4 * w * ROWS_PER_TASK))
        .for_each(|(dst, src)| {
            for (o, p) in dst.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
                let a = p[3];
                for ((o, &f), b) in o.iter_mut().zip(&p[..3]).zip(bgc) {
                    *o = mul_div255(f, a) + mul_div255(b, 255 - a);
                }
            }
        });
    out
}

/// Cutout over a translucent colour ("over" operator, straight alpha) → RGBA.
fn over(cutout: &RgbaImage, bg: Color) -> RgbaImage {
    let (br, bgc, bb, ba) = (
        f32::from(bg.r),
        f32::from(bg.g),
        f32::from(bg.b),
        f32::from(bg.a) / 255.0,
    );
    let w = cutout.width() as usize;
    let mut out = RgbaImage::new(cutout.width(), cutout.height());
    out.par_chunks_mut(4 * w * ROWS_PER_TASK)
        .zip(cutout.par_chunks(4 * w * ROWS_PER_TASK))
        .for_each(|(dst, src)| {
            for (o, p) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                let af = f32::from(p[3]) / 255.0;
                let ao = af + ba * (1.0 - af);
                if ao <= 0.0 {
                    o.copy_from_slice(&[0, 0, 0, 0]);
                    continue;
                }
                let mix =
                    |f: u8, b: f32| ((f32::from(f) * af + b * ba * (1.0 - af)) / ao).round() as u8;
                o.copy_from_slice(&[
                    mix(p[0], br),
                    mix(p[1], bgc),
                    mix(p[2], bb),
                    (ao * 255.0).round() as u8,
                ]);
            }
        });
    out
}

/// Encodes `img` (L8, RGB8 or RGBA8) as `format`.
///
/// * PNG: per-row adaptive filtering, deflated per `png_deflate` (the server uses
///   [`crate::png::Deflate::Rle`]), rows filtered and deflated in parallel bands
///   ([`crate::png`]).
/// * WebP: lossless VP8L (the encoder has no lossy mode; `quality` is ignored).
/// * JPEG: baseline at `quality` (1–100); an RGBA image is refused (compose over a background
///   first — validation guarantees one for JPEG cutouts).
///
/// # Errors
/// The encoder's error (e.g. RGBA passed for JPEG; another layout than L8/RGB8/RGBA8 for PNG).
pub fn encode(
    img: &DynamicImage,
    format: OutputFormat,
    quality: u8,
    png_deflate: crate::png::Deflate,
) -> Result<Vec<u8>, ImageError> {
    let (w, h) = (img.width(), img.height());
    let color = img.color().into();
    let mut buf = Vec::new();
    match format {
        OutputFormat::Png => {
            let channels = match img {
                DynamicImage::ImageLuma8(_) => 1,
                DynamicImage::ImageRgb8(_) => 3,
                DynamicImage::ImageRgba8(_) => 4,
                other => {
                    return Err(ImageError::Unsupported(
                        image::error::UnsupportedError::from_format_and_kind(
                            ImageFormat::Png.into(),
                            image::error::UnsupportedErrorKind::Color(other.color().into()),
                        ),
                    ));
                }
            };
            buf = crate::png::encode(img.as_bytes(), w, h, channels, png_deflate);
        }
        OutputFormat::Webp => {
            WebPEncoder::new_lossless(&mut buf).write_image(img.as_bytes(), w, h, color)?
        }
        OutputFormat::Jpeg => JpegEncoder::new_with_quality(&mut buf, quality.clamp(1, 100))
            .write_image(img.as_bytes(), w, h, color)?,
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 77]));
        let mut buf = Vec::new();
        JpegEncoder::new_with_quality(&mut buf, 90)
            .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        buf
    }

    #[test]
    fn jpeg_completeness_walks_segments() {
        let full = jpeg(64, 48);
        assert!(jpeg_is_complete(&full));
        let mut trailing = full.clone();
        trailing.extend_from_slice(b"trailing garbage");
        assert!(jpeg_is_complete(&trailing));
        for cut in [full.len() - 2, full.len() - 1, full.len() / 2, 200, 3] {
            assert!(!jpeg_is_complete(&full[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn truncated_jpeg_is_refused_although_the_decoder_accepts_it() {
        let full = jpeg(256, 256);
        let cut = &full[..full.len() * 2 / 3];
        // The finding that motivates jpeg_is_complete: zune-jpeg "succeeds" on truncated data.
        let lenient = image::load_from_memory_with_format(cut, ImageFormat::Jpeg);
        eprintln!("decoder on truncated JPEG: ok={}", lenient.is_ok());
        let limits = DecodeLimits {
            max_pixels: 1 << 30,
            max_side: 1 << 15,
        };
        assert!(matches!(
            decode(cut, limits),
            Err(ServiceError::InvalidImage(_))
        ));
        assert_eq!(decode(&full, limits).unwrap().width(), 256);
    }

    #[test]
    fn the_fused_png_cutout_is_the_file_compose_then_encode_gives() {
        let (w, h) = (203u32, 157u32);
        let mask = GrayImage::from_fn(w, h, |x, y| {
            let d = (x as i32 - 100).pow(2) + (y as i32 - 80).pow(2);
            image::Luma([if d < 2500 {
                255
            } else if d < 4000 {
                (x * 7 % 256) as u8
            } else {
                0
            }])
        });
        let rgb = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 77]));
        let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
            image::Rgba([(x * 3) as u8, (y * 5) as u8, 77, ((x + y) % 256) as u8])
        });
        let gray = GrayImage::from_fn(w, h, |x, y| image::Luma([((x * y) % 256) as u8]));
        let params = RemoveBackgroundParams::with_model("u2netp");
        assert!(is_plain_png_cutout(&params, w, h));
        for image in [
            DynamicImage::ImageRgb8(rgb),
            DynamicImage::ImageRgba8(rgba),
            DynamicImage::ImageLuma8(gray),
        ] {
            let two_steps = encode(
                &compose(&image, &mask, &params),
                OutputFormat::Png,
                90,
                crate::png::Deflate::Rle,
            )
            .unwrap();
            let fused = encode_cutout_png(&image, &mask, crate::png::Deflate::Rle);
            assert!(
                fused == two_steps,
                "{:?}: the fused file differs",
                image.color()
            );
        }
        for other in [
            RemoveBackgroundParams {
                only_mask: true,
                ..params.clone()
            },
            RemoveBackgroundParams {
                scale: 0.5,
                ..params.clone()
            },
            RemoveBackgroundParams {
                output_format: OutputFormat::Webp,
                ..params.clone()
            },
            RemoveBackgroundParams {
                background_color: Some(Color {
                    r: 1,
                    g: 2,
                    b: 3,
                    a: 255,
                }),
                ..params.clone()
            },
        ] {
            assert!(!is_plain_png_cutout(&other, w, h), "{other:?}");
        }
    }

    #[test]
    fn scaled_size_rounds_and_keeps_one_pixel() {
        assert_eq!(scaled_size(1000, 500, 0.5), (500, 250));
        assert_eq!(scaled_size(3, 3, 0.1), (1, 1));
        assert_eq!(scaled_size(101, 99, 0.5), (51, 50));
        assert_eq!(scaled_size(640, 480, 1.0), (640, 480));
    }

    #[test]
    fn mul_div255_is_exact_at_the_ends() {
        assert_eq!(mul_div255(255, 255), 255);
        assert_eq!(mul_div255(255, 0), 0);
        assert_eq!(mul_div255(200, 255), 200);
        assert_eq!(mul_div255(255, 128), 128);
    }
}
