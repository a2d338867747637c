//! The image path around the engines: format sniffing, decoding with limits (decompression bombs
//! are refused from the header, before any pixel is decoded), truncation checks, EXIF
//! orientation, resizing with `fast_image_resize`, mask application / compositing, and encoding.

use std::io::Cursor;

use fast_image_resize::images::{CroppedImageMut, Image as FirImage, ImageRef};
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
        Filter::Lanczos3 => FirFilter::Custom(
            fast_image_resize::Filter::new("Lanczos3", lanczos3, 3.0)
                .expect("3 is a finite, positive support"),
        ),
        Filter::Bilinear => FirFilter::Bilinear,
    };
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(f))
}

/// The Lanczos3 kernel, sinc(x)·sinc(x/3) for −3 ≤ x < 3 and 0 elsewhere, as
/// fast_image_resize's own `Lanczos3` defines it, with one `sin` where it calls two:
/// for θ = πx/3, sin(πx) = sin 3θ = sin θ · (3 − 4 sin² θ), so the product is
/// sin 3θ · sin θ / (3θ²). The resizer evaluates the kernel for every weight of every
/// resize, and [`resize_mask`] resizes tile by tile (~4,000 weights per tile): `sin` was ~1 % of
/// the server's CPU time on the 12 MP u2netp benchmark. The two forms agree within 1e-12
/// (unit test), and the server's output bytes did not change.
fn lanczos3(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    if !(-3.0..3.0).contains(&x) {
        return 0.0;
    }
    let theta = std::f64::consts::PI * x / 3.0;
    let s = theta.sin();
    s * (3.0 - 4.0 * s * s) * s / (3.0 * theta * theta)
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

/// Output rows per band of [`resize_mask`] (one rayon task each) and the tile height.
const MASK_TILE_ROWS: u32 = 64;
/// Tile width of [`resize_mask`], output pixels.
const MASK_TILE_COLS: u32 = 256;

/// Resizes a mask to `width`×`height` (both ≥ 1) with Lanczos3, as [`resize_gray`] with
/// [`Filter::Lanczos3`] does, computing only where the result can vary.
///
/// A network's mask is mostly flat (0 behind, 255 on the subject): an output tile whose
/// source neighbourhood (the filter's support, plus a pixel of margin) holds one value `v`
/// is `v` throughout, because the filter's weights sum to one. Such tiles are filled; the
/// others are resampled with `fast_image_resize` on a crop of the source that maps onto the
/// tile, which reads the same source pixels with the same weights as the whole resize (its
/// windows are clamped to the whole source, not to the crop). Only the weights' fixed-point
/// precision can differ (it follows the tile's largest weight), so a few edge pixels differ
/// from the whole resize by 1–2 levels: in the tests, at most 0.2 % of the pixels and a mean
/// under 0.002 levels, against the benchmark's bound of 1 level (`docs/models.md`). At 12 MP
/// this does a fraction of the whole resize's work; the bands run on the rayon pool.
pub fn resize_mask(mask: &GrayImage, width: u32, height: u32) -> GrayImage {
    let (sw, sh) = mask.dimensions();
    if (sw, sh) == (width, height) {
        return mask.clone();
    }
    let (sx, sy) = (
        f64::from(sw) / f64::from(width),
        f64::from(sh) / f64::from(height),
    );
    let src = ImageRef::new(sw, sh, mask.as_raw(), PixelType::U8)
        .expect("buffer length matches width × height (u8 needs no alignment)");
    let stride = width as usize;
    let mut out = vec![0u8; stride * height as usize];
    out.par_chunks_mut(stride * MASK_TILE_ROWS as usize)
        .enumerate()
        .for_each(|(band, rows)| {
            let y0 = band as u32 * MASK_TILE_ROWS;
            let bh = (rows.len() / stride) as u32;
            let ys = source_span(y0, y0 + bh, sy, sh);
            let mut resizer = Resizer::new();
            for x0 in (0..width).step_by(MASK_TILE_COLS as usize) {
                let tw = MASK_TILE_COLS.min(width - x0);
                let xs = source_span(x0, x0 + tw, sx, sw);
                if let Some(v) = constant_value(mask, xs, ys) {
                    // `out` starts zeroed: a background tile (most of them) needs no write.
                    if v != 0 {
                        for row in rows.chunks_exact_mut(stride) {
                            row[x0 as usize..(x0 + tw) as usize].fill(v);
                        }
                    }
                    continue;
                }
                let mut band_view = FirImage::from_slice_u8(width, bh, rows, PixelType::U8)
                    .expect("the band holds bh whole rows");
                let mut tile = CroppedImageMut::new(&mut band_view, x0, 0, tw, bh)
                    .expect("the tile lies inside the band");
                let (left, top) = (f64::from(x0) * sx, f64::from(y0) * sy);
                let options = fir_options(Filter::Lanczos3).crop(
                    left,
                    top,
                    edge(x0 + tw, width, sx, sw) - left,
                    edge(y0 + bh, height, sy, sh) - top,
                );
                resizer
                    .resize(&src, &mut tile, &options)
                    .expect("same pixel type on both sides");
            }
        });
    GrayImage::from_raw(width, height, out).expect("resizer output size")
}

/// How far apart two masks of one size are, in 8-bit levels (1 level = 1/255 of alpha).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskDifference {
    /// Pixels whose values differ at all.
    pub differing: usize,
    /// The largest difference, 0–255.
    pub max: u8,
    /// The mean absolute difference over all pixels, 0.0–255.0.
    pub mean: f64,
}

/// Compares two masks pixel by pixel.
///
/// # Panics
/// If their sizes differ.
pub fn mask_difference(a: &GrayImage, b: &GrayImage) -> MaskDifference {
    assert_eq!(a.dimensions(), b.dimensions(), "masks of different sizes");
    let (mut differing, mut max, mut sum) = (0usize, 0u8, 0u64);
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        differing += usize::from(d != 0);
        max = max.max(d);
        sum += u64::from(d);
    }
    let pixels = a.as_raw().len().max(1) as f64;
    MaskDifference {
        differing,
        max,
        mean: sum as f64 / pixels,
    }
}

/// Where output edge `o` of an axis of `size` output px falls in the source (`src` px at
/// `scale` source px per output px): the last tile's far edge is the source's own, so rounding
/// cannot carry a crop past it.
fn edge(o: u32, size: u32, scale: f64, src: u32) -> f64 {
    if o == size {
        f64::from(src)
    } else {
        f64::from(o) * scale
    }
}

/// The source pixels `[lo, hi)` that output pixels `[o0, o1)` of a Lanczos3 resize read at
/// `scale` (source px per output px): the filter's radius, 3 source px (times `scale` when
/// shrinking), around each output centre, one more on each side against rounding, clamped.
fn source_span(o0: u32, o1: u32, scale: f64, size: u32) -> (u32, u32) {
    let radius = 3.0 * scale.max(1.0);
    let lo = ((f64::from(o0) + 0.5) * scale - radius).floor() - 1.0;
    let hi = ((f64::from(o1) - 0.5) * scale + radius).ceil() + 1.0;
    (lo.max(0.0) as u32, (hi.min(f64::from(size)) as u32).max(1))
}

/// The one value of `mask` over columns `xs` × rows `ys`, if it has only one.
fn constant_value(mask: &GrayImage, (x0, x1): (u32, u32), (y0, y1): (u32, u32)) -> Option<u8> {
    let stride = mask.width() as usize;
    let raw = mask.as_raw();
    let v = raw[y0 as usize * stride + x0 as usize];
    (y0..y1)
        .all(|y| {
            let row = &raw[y as usize * stride..][x0 as usize..x1 as usize];
            row.iter().all(|&p| p == v)
        })
        .then_some(v)
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
///
/// `dst` must arrive zeroed (both callers allocate it so): runs of [`CUTOUT_RUN`] pixels whose
/// mask is all 0, most of a cutout's background, are skipped instead of written pixel by pixel.
fn cutout_pixels(src: &[u8], channels: usize, mask: &[u8], dst: &mut [u8]) {
    let runs = dst
        .chunks_mut(4 * CUTOUT_RUN)
        .zip(src.chunks(channels * CUTOUT_RUN))
        .zip(mask.chunks(CUTOUT_RUN));
    for ((dst, src), mask) in runs {
        if mask.iter().fold(0u8, |a, &m| a | m) == 0 {
            debug_assert!(dst.iter().all(|&b| b == 0), "cutout_pixels: dst not zeroed");
            continue;
        }
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
}

/// Pixels per run of [`cutout_pixels`]' all-transparent check (the OR-fold vectorises).
const CUTOUT_RUN: usize = 32;

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

    #[test]
    fn one_sin_lanczos3_is_sinc_times_sinc() {
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
            }
        };
        for i in -4000..=4000 {
            let x = f64::from(i) / 1000.0 + 1e-4;
            let want = if (-3.0..3.0).contains(&x) {
                sinc(x) * sinc(x / 3.0)
            } else {
                0.0
            };
            assert!((lanczos3(x) - want).abs() < 1e-12, "x = {x}");
        }
        assert_eq!(lanczos3(0.0), 1.0);
        assert_eq!(lanczos3(3.0), 0.0);
    }

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

    /// Network-sized masks of the kinds a model gives: a hard-edged subject, a soft one with
    /// a feathered edge and a thin structure, and one with noise scattered in the background
    /// (every tile then varies somewhere).
    fn masks(side: u32) -> Vec<(&'static str, GrayImage)> {
        let c = side as f32 / 2.0;
        let hard = GrayImage::from_fn(side, side, |x, y| {
            let d = ((x as f32 - c).powi(2) + (y as f32 - c * 1.2).powi(2)).sqrt();
            image::Luma([if d < side as f32 * 0.3 { 255 } else { 0 }])
        });
        let soft = GrayImage::from_fn(side, side, |x, y| {
            let d = ((x as f32 - c * 0.8).powi(2) + (y as f32 - c).powi(2)).sqrt();
            let edge = side as f32 * 0.25;
            let v = ((edge + 4.0 - d) / 8.0).clamp(0.0, 1.0) * 255.0;
            let mast = if (x as i32 - side as i32 * 3 / 4).abs() <= 1 {
                200.0
            } else {
                0.0
            };
            image::Luma([v.max(mast).round() as u8])
        });
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let noisy = GrayImage::from_fn(side, side, |x, y| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let base = if x > side / 3 && y > side / 4 { 255 } else { 0 };
            image::Luma([if state.is_multiple_of(97) {
                (state >> 8) as u8
            } else {
                base
            }])
        });
        vec![("hard", hard), ("soft", soft), ("noisy", noisy)]
    }

    #[test]
    fn the_tiled_mask_resize_stays_within_rounding_of_the_whole_resize() {
        for side in [320, 1024] {
            for (kind, small) in masks(side) {
                // 12 MP, odd and exact ratios, shrinking, one axis only, a sliver, one pixel.
                for (w, h) in [
                    (4242, 2862),
                    (1000, 751),
                    (side * 4, side * 3),
                    (200, 150),
                    (side, 700),
                    (3, 2000),
                    (1, 1),
                ] {
                    let tiled = resize_mask(&small, w, h);
                    let whole = resize_gray(&small, w, h, Filter::Lanczos3);
                    assert_eq!(tiled.dimensions(), (w, h));
                    let MaskDifference {
                        differing,
                        max,
                        mean,
                    } = mask_difference(&tiled, &whole);
                    let pixels = f64::from(w) * f64::from(h);
                    eprintln!(
                        "{kind} {side}² → {w}×{h}: {differing} px differ (max {max}, mean {mean:.5} levels)"
                    );
                    // Rounding only: the bound is a mean of 1 level; this is ~1,000× under it.
                    assert!(max <= 2, "{kind} {side}² → {w}×{h}: max {max}");
                    assert!(
                        (differing as f64) < pixels * 0.002,
                        "{kind} {side}² → {w}×{h}: {differing} px differ"
                    );
                    assert!(mean < 0.002, "{kind} {side}² → {w}×{h}: mean {mean}");
                }
            }
        }
        let same = masks(320).remove(1).1;
        assert_eq!(resize_mask(&same, 320, 320), same);
    }

    #[test]
    fn mask_difference_counts_the_differing_pixels_their_largest_and_mean_gap() {
        let a = GrayImage::from_raw(2, 2, vec![0, 10, 255, 7]).unwrap();
        let b = GrayImage::from_raw(2, 2, vec![0, 13, 254, 7]).unwrap();
        let d = mask_difference(&a, &b);
        assert_eq!((d.differing, d.max), (2, 3));
        assert!((d.mean - 1.0).abs() < 1e-12, "{}", d.mean);
        assert_eq!(mask_difference(&a, &a).differing, 0);
    }

    #[test]
    fn a_flat_tile_is_filled_and_a_varying_one_resampled() {
        // Constant halves: the tiles far from the edge are filled, those near it vary.
        let small = GrayImage::from_fn(320, 320, |x, _| {
            image::Luma([if x < 160 { 0 } else { 255 }])
        });
        let big = resize_mask(&small, 4242, 2862);
        let row = &big.as_raw()[..4242];
        assert!(row[..2000].iter().all(|&v| v == 0));
        assert!(row[2250..].iter().all(|&v| v == 255));
        assert!(
            row[2100..2140].iter().any(|&v| v != 0 && v != 255),
            "the edge is soft"
        );
        assert_eq!(source_span(0, 128, 320.0 / 4242.0, 320), (0, 14));
        assert_eq!(constant_value(&small, (0, 150), (0, 320)), Some(0));
        assert_eq!(constant_value(&small, (150, 170), (0, 320)), None);
    }

    #[test]
    fn cutout_pixels_gives_every_pixel_whatever_the_runs() {
        // Zero runs shorter and longer than a run, starting mid-run, and a ragged tail.
        let n = 5 * CUTOUT_RUN + 7;
        let mask: Vec<u8> = (0..n)
            .map(|i| match i {
                _ if i < 40 => 0,
                _ if i < 45 => 200,
                _ if i < 3 * CUTOUT_RUN + 3 => 0,
                _ => (i * 37 % 256) as u8,
            })
            .collect();
        for channels in [3usize, 4] {
            let src: Vec<u8> = (0..n * channels)
                .map(|i| (i * 11 % 251) as u8 + 1)
                .collect();
            let mut dst = vec![0; n * 4];
            cutout_pixels(&src, channels, &mask, &mut dst);
            for i in 0..n {
                let s = &src[i * channels..][..channels];
                let a = if channels == 4 {
                    mul_div255(s[3], mask[i])
                } else {
                    mask[i]
                };
                let want = if a == 0 {
                    [0; 4]
                } else {
                    [s[0], s[1], s[2], a]
                };
                assert_eq!(dst[i * 4..][..4], want, "pixel {i}, {channels} channels");
            }
        }
    }
}
