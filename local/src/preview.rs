//! A before/after picture of a background removal: the original beside the cutout drawn over a
//! checkerboard, so transparency is visible in any image viewer.

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageDecoder, ImageReader, Rgb, RgbImage, RgbaImage};
use std::io::Cursor;

/// Side of a checkerboard square, px.
const SQUARE: u32 = 16;
/// Gap between the two halves, px.
const GAP: u32 = 16;
/// Longest side of each half; larger pictures are scaled down (Triangle filter).
pub const MAX_SIDE: u32 = 1024;

/// The original (EXIF orientation applied, as the segmenter does) and the cutout side by side,
/// each scaled to the cutout's aspect and at most [`MAX_SIDE`] px on its longest side, the
/// cutout alpha-blended over a light-grey and white checkerboard; a white gap between them.
///
/// # Errors
/// The decoder's message, naming which input failed.
pub fn side_by_side(original: &[u8], cutout: &[u8]) -> Result<RgbImage, String> {
    let original = decode_upright(original).map_err(|e| format!("original: {e}"))?;
    let cutout = image::load_from_memory(cutout)
        .map_err(|e| format!("cutout: {e}"))?
        .to_rgba8();
    let (w, h) = fit(cutout.width(), cutout.height());
    let before = imageops::resize(&original.to_rgb8(), w, h, FilterType::Triangle);
    let after = imageops::resize(&cutout, w, h, FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(2 * w + GAP, h, Rgb([255, 255, 255]));
    imageops::replace(&mut canvas, &before, 0, 0);
    imageops::replace(
        &mut canvas,
        &over_checkerboard(&after),
        i64::from(w + GAP),
        0,
    );
    Ok(canvas)
}

fn decode_upright(bytes: &[u8]) -> Result<DynamicImage, image::ImageError> {
    let mut decoder = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()?
        .into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(image)
}

fn fit(w: u32, h: u32) -> (u32, u32) {
    let longest = w.max(h).max(1);
    if longest <= MAX_SIDE {
        return (w.max(1), h.max(1));
    }
    let s = f64::from(MAX_SIDE) / f64::from(longest);
    (
        ((f64::from(w) * s).round() as u32).max(1),
        ((f64::from(h) * s).round() as u32).max(1),
    )
}

fn over_checkerboard(img: &RgbaImage) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let bg = if (x / SQUARE + y / SQUARE).is_multiple_of(2) {
            204.0
        } else {
            255.0
        };
        let p = img.get_pixel(x, y).0;
        let a = f32::from(p[3]) / 255.0;
        Rgb([0, 1, 2].map(|c| (f32::from(p[c]) * a + bg * (1.0 - a)).round() as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn transparent_pixels_show_the_checkerboard_and_opaque_ones_the_cutout() {
        let original = png(DynamicImage::ImageRgb8(RgbImage::from_pixel(
            40,
            20,
            Rgb([10, 200, 10]),
        )));
        let mut cut = RgbaImage::new(40, 20);
        for x in 20..40 {
            for y in 0..20 {
                cut.put_pixel(x, y, image::Rgba([200, 0, 0, 255]));
            }
        }
        let view = side_by_side(&original, &png(DynamicImage::ImageRgba8(cut))).unwrap();
        assert_eq!(view.dimensions(), (2 * 40 + GAP, 20));
        assert_eq!(view.get_pixel(5, 5).0, [10, 200, 10], "the original, left");
        let right = 40 + GAP;
        assert_eq!(
            view.get_pixel(right + 2, 2).0,
            [204; 3],
            "checkerboard, dark square"
        );
        assert_eq!(
            view.get_pixel(right + 17, 2).0,
            [255; 3],
            "checkerboard, light square"
        );
        assert_eq!(
            view.get_pixel(right + 30, 10).0,
            [200, 0, 0],
            "opaque cutout"
        );
    }

    #[test]
    fn large_pictures_are_scaled_down() {
        assert_eq!(fit(4000, 2000), (MAX_SIDE, 512));
        assert_eq!(fit(300, 200), (300, 200));
    }
}
