//! Accuracy of the built-in `plain-background` engine on synthetic pictures with known ground
//! truth (anti-aliased discs and shapes, 4×4 supersampled coverage as the true alpha).

mod common;

use common::*;
use image::{GrayImage, RgbImage};
use imagejobs_segmenter::plain_background::PlainBackground;

fn run(img: &RgbImage) -> GrayImage {
    PlainBackground::default().mask(img)
}

struct Score {
    iou: f64,
    mean_abs_alpha_error: f64,
    border_max: u8,
}

fn score(mask: &GrayImage, coverage: &[f32]) -> Score {
    let (w, h) = mask.dimensions();
    let pred: Vec<bool> = mask.as_raw().iter().map(|&a| a >= 128).collect();
    let truth: Vec<bool> = coverage.iter().map(|&c| c >= 0.5).collect();
    let mae = mask
        .as_raw()
        .iter()
        .zip(coverage)
        .map(|(&a, &c)| (f64::from(a) / 255.0 - f64::from(c)).abs())
        .sum::<f64>()
        / coverage.len() as f64;
    let mut border_max = 0;
    for x in 0..w {
        border_max = border_max
            .max(mask.get_pixel(x, 0).0[0])
            .max(mask.get_pixel(x, h - 1).0[0]);
    }
    for y in 0..h {
        border_max = border_max
            .max(mask.get_pixel(0, y).0[0])
            .max(mask.get_pixel(w - 1, y).0[0]);
    }
    Score {
        iou: iou(&pred, &truth),
        mean_abs_alpha_error: mae,
        border_max,
    }
}

#[test]
fn disc_on_flat_noisy_background() {
    let (w, h) = (320, 240);
    let (img, cov) = disc_image(
        w,
        h,
        (150.0, 110.0, 70.0),
        [200, 40, 40],
        |_, _| [245, 245, 245],
        6,
    );
    let mask = run(&img);
    let s = score(&mask, &cov);
    eprintln!("flat: iou={:.4} mae={:.4}", s.iou, s.mean_abs_alpha_error);
    assert!(s.iou >= 0.95, "iou {}", s.iou);
    assert_eq!(s.border_max, 0, "border pixels must be fully transparent");
    assert_eq!(mask.get_pixel(150, 110).0[0], 255);
    assert!(
        s.mean_abs_alpha_error < 0.01,
        "mae {}",
        s.mean_abs_alpha_error
    );
}

#[test]
fn disc_on_a_sky_gradient() {
    // Dark blue at the top to light blue at the bottom, plus a horizontal tint.
    let (w, h) = (400, 300);
    let sky = |x: u32, y: u32| {
        let t = y as f32 / (h - 1) as f32;
        let s = x as f32 / (w - 1) as f32;
        [
            (20.0 + 130.0 * t) as u8,
            (40.0 + 150.0 * t + 20.0 * s) as u8,
            (110.0 + 140.0 * t) as u8,
        ]
    };
    let (img, cov) = disc_image(w, h, (210.0, 140.0, 80.0), [240, 170, 30], sky, 3);
    let mask = run(&img);
    let s = score(&mask, &cov);
    eprintln!(
        "gradient: iou={:.4} mae={:.4}",
        s.iou, s.mean_abs_alpha_error
    );
    assert!(s.iou >= 0.95, "iou {}", s.iou);
    assert_eq!(s.border_max, 0);
    assert_eq!(mask.get_pixel(210, 140).0[0], 255);
    assert!(
        s.mean_abs_alpha_error < 0.01,
        "mae {}",
        s.mean_abs_alpha_error
    );
}

#[test]
fn edges_are_soft_where_the_picture_is_antialiased() {
    let (img, cov) = disc_image(
        200,
        200,
        (100.0, 100.0, 60.0),
        [20, 20, 20],
        |_, _| [250, 250, 250],
        0,
    );
    let mask = run(&img);
    // Pixels about half covered get intermediate alpha, close to their coverage.
    let mut checked = 0;
    for (i, &c) in cov.iter().enumerate() {
        if (0.3..=0.7).contains(&c) {
            let a = f32::from(mask.as_raw()[i]) / 255.0;
            assert!((a - c).abs() < 0.15, "pixel {i}: coverage {c}, alpha {a}");
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
}

#[test]
fn subject_touching_the_border_and_an_empty_scene() {
    // A bottle standing on the bottom edge: a rectangle from y=120 to the bottom.
    let (w, h) = (240, 200);
    let img = RgbImage::from_fn(w, h, |x, y| {
        if (90..150).contains(&x) && y >= 120 {
            image::Rgb([30, 110, 60])
        } else {
            image::Rgb([235, 232, 228])
        }
    });
    let mask = run(&img);
    let truth: Vec<bool> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (90..150).contains(&x) && y >= 120))
        .collect();
    let pred: Vec<bool> = mask.as_raw().iter().map(|&a| a >= 128).collect();
    assert!(iou(&pred, &truth) >= 0.95, "iou {}", iou(&pred, &truth));
    assert_eq!(
        mask.get_pixel(120, h - 1).0[0],
        255,
        "subject pixels on the border stay"
    );
    assert_eq!(mask.get_pixel(10, h - 1).0[0], 0);

    let mut rng = Noise::new(7);
    let empty = RgbImage::from_fn(100, 80, |_, _| {
        let v = (240 + rng.next(5)) as u8;
        image::Rgb([v, v, v])
    });
    assert!(
        run(&empty).as_raw().iter().all(|&a| a == 0),
        "nothing to keep"
    );
}

#[test]
fn enclosed_background_stays_foreground() {
    // A ring: its hole has the background colour but is not connected to the border.
    let (w, h) = (200, 200);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let d = ((x as f32 - 100.0).powi(2) + (y as f32 - 100.0).powi(2)).sqrt();
        if (30.0..=60.0).contains(&d) {
            image::Rgb([50, 50, 160])
        } else {
            image::Rgb([255, 255, 255])
        }
    });
    let mask = run(&img);
    assert_eq!(mask.get_pixel(100, 100).0[0], 255, "hole is filled");
    assert_eq!(mask.get_pixel(100, 55).0[0], 255, "ring");
    assert_eq!(mask.get_pixel(100, 2).0[0], 0, "outside");
}

#[test]
fn disc_on_a_vignetted_background_after_jpeg_compression() {
    // Brightness falls off towards the corners with a 4th-power law (not in the quadratic
    // border model), and the picture goes through JPEG at quality 80 like a real upload.
    let (w, h) = (360, 270);
    let vignette = |x: u32, y: u32| {
        let dx = (x as f32 - 180.0) / 180.0;
        let dy = (y as f32 - 135.0) / 135.0;
        let r2 = (dx * dx + dy * dy) / 2.0;
        let v = 250.0 - 70.0 * r2 * r2;
        [v as u8, (v - 5.0) as u8, (v - 12.0) as u8]
    };
    let (img, cov) = disc_image(w, h, (170.0, 140.0, 75.0), [60, 90, 170], vignette, 2);
    let mut buf = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 80)
        .encode_image(&img)
        .unwrap();
    let decoded = image::load_from_memory(&buf).unwrap().to_rgb8();
    let mask = run(&decoded);
    let s = score(&mask, &cov);
    eprintln!(
        "vignette+jpeg: iou={:.4} mae={:.4}",
        s.iou, s.mean_abs_alpha_error
    );
    assert!(s.iou >= 0.95, "iou {}", s.iou);
    assert_eq!(s.border_max, 0);
    assert_eq!(mask.get_pixel(170, 140).0[0], 255);
}

/// A bundled real photograph, decoded to RGB.
fn photo(name: &str) -> RgbImage {
    image::open(workspace_root().join("assets").join(name))
        .unwrap()
        .to_rgb8()
}

#[test]
fn a_real_photo_on_a_graded_sky_passes_the_plain_background_check() {
    let a = PlainBackground::default().analyse(&photo("sample-rocket.jpg"));
    println!(
        "rocket: noise {:.2}, border fit {:.3}, foreground {:.4}",
        a.border_noise, a.border_fit, a.foreground_fraction
    );
    a.check().unwrap();
    assert!(
        (0.02..0.5).contains(&a.foreground_fraction),
        "{}",
        a.foreground_fraction
    );
}

#[test]
fn a_cluttered_portrait_is_refused_not_cut_out_wrongly() {
    use imagejobs_segmenter::engine::{Engine, EngineError};
    let img = photo("portrait-astronaut.png");
    let a = PlainBackground::default().analyse(&img);
    println!(
        "portrait: noise {:.2}, border fit {:.3}, foreground {:.4}",
        a.border_noise, a.border_fit, a.foreground_fraction
    );
    let err = PlainBackground::default().segment(&img).unwrap_err();
    let EngineError::NoPlainBackground(message) = err else {
        panic!("{err:?}")
    };
    assert!(message.contains("neural model"), "{message}");
}

#[test]
fn an_empty_scene_is_refused_as_an_implausible_cutout() {
    use imagejobs_segmenter::engine::Engine;
    let mut rng = Noise::new(11);
    let empty = RgbImage::from_fn(120, 90, |_, _| {
        let v = (240 + rng.next(4)) as u8;
        image::Rgb([v, v, v])
    });
    let a = PlainBackground::default().analyse(&empty);
    assert!(a.foreground_fraction < 0.005, "{}", a.foreground_fraction);
    assert!(PlainBackground::default().segment(&empty).is_err());
}
