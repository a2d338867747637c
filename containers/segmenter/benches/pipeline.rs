//! Side-by-side costs on one generated 12 MP (4000×3000) photo-like JPEG:
//!
//! * `remove_background_12mp/{plain-background,onnx-u2netp}`: the whole pipeline (decode →
//!   mask → cutout → PNG), built-in engine vs the predictable ONNX test model (a 320² 1×1
//!   conv, so this measures our pre/post-processing around ONNX Runtime, not a real network);
//! * `png_encode_12mp_rgba/{rle,level1,level6}`: encoding the same 12 MP RGBA cutout with the
//!   parallel PNG writer, `Z_RLE` (the server's choice) against zlib levels 1 and 6;
//! * `mask_resize_12mp/{whole,tiled}`: a network's 320² mask of the sample photo (real u2netp
//!   weights from `.local/models` when installed, else the built-in engine's mask shrunk to
//!   320²) back to 4242×2862, the whole Lanczos3 resize against the tiled one the server uses
//!   (`imaging::resize_mask`); it also prints how many pixels differ and by how much.
//!
//! Needs ONNX Runtime and the test models: `bash scripts/setup.sh`. Run with
//! `cargo bench -p imagejobs-segmenter` (a few minutes).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use image::{DynamicImage, GrayImage, RgbImage};
use imagejobs_segmenter::engine::Engine;
use imagejobs_segmenter::imaging::{self, DecodeLimits};
use imagejobs_segmenter::onnx::{OnnxEngine, OrtOptions};
use imagejobs_segmenter::pipeline::remove_background;
use imagejobs_segmenter::plain_background::PlainBackground;
use imagejobs_segmenter::png::Deflate;
use shared::operation::remove_background::{OutputFormat, RemoveBackgroundParams};

const W: u32 = 4000;
const H: u32 = 3000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ort_dylib() -> PathBuf {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH")
        && PathBuf::from(&p).is_file()
    {
        return p.into();
    }
    let file = root().join(".local/ort-dylib-path");
    let p = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!(
            "no ONNX Runtime: run `bash scripts/setup.sh` ({} missing)",
            file.display()
        )
    });
    PathBuf::from(p.trim())
}

/// The server's default session settings, on the setup's ONNX Runtime.
fn ort_options() -> OrtOptions {
    OrtOptions {
        dylib: ort_dylib(),
        intra_threads: None,
        use_cuda: false,
        spinning: true,
        spinning_stop: true,
    }
}

/// A product-shot-like picture: a textured, shaded object on a graded light background with
/// sensor noise.
fn photo() -> RgbImage {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 7) as f32 - 3.0
    };
    RgbImage::from_fn(W, H, |x, y| {
        let (fx, fy) = (x as f32 / W as f32, y as f32 / H as f32);
        let bg = [
            235.0 - 30.0 * fy,
            238.0 - 25.0 * fy + 5.0 * fx,
            242.0 - 20.0 * fy,
        ];
        let dx = (x as f32 - 2000.0) / 1100.0;
        let dy = (y as f32 - 1600.0) / 1200.0;
        let d = dx * dx + dy * dy;
        let px = if d <= 1.0 {
            let shade = 1.0 - 0.35 * d;
            let stripe = if (x / 40 + y / 40) % 2 == 0 {
                1.0
            } else {
                0.85
            };
            [200.0 * shade * stripe, 70.0 * shade, 40.0 * shade * stripe]
        } else {
            bg
        };
        image::Rgb(px.map(|v| (v + noise()).clamp(0.0, 255.0) as u8))
    })
}

fn benches(c: &mut Criterion) {
    let img = photo();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    let limits = DecodeLimits {
        max_pixels: 40_000_000,
        max_side: 12_000,
    };
    let plain: Box<dyn Engine> = Box::new(PlainBackground::default());
    let spec = shared::models::find("u2netp").unwrap();
    let model = root().join(".local/test-models/u2netp.onnx");
    assert!(
        model.is_file(),
        "{} missing: run `bash scripts/setup.sh`",
        model.display()
    );
    let options = ort_options();
    let onnx: Box<dyn Engine> = Box::new(OnnxEngine::load(spec, &model, &options).unwrap());

    let mut g = c.benchmark_group("remove_background_12mp");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(15));
    for engine in [&plain, &onnx] {
        let params = RemoveBackgroundParams::with_model(engine.name());
        let id = if engine.name() == "u2netp" {
            "onnx-u2netp"
        } else {
            "plain-background"
        };
        g.bench_function(id, |b| {
            b.iter(|| {
                remove_background(
                    black_box(&jpeg),
                    engine.as_ref(),
                    &params,
                    limits,
                    Deflate::Rle,
                )
                .unwrap()
            })
        });
    }
    g.finish();

    let mask = plain.segment(&img).unwrap();
    let cutout = imaging::compose(
        &DynamicImage::ImageRgb8(img),
        &mask,
        &RemoveBackgroundParams::with_model("plain-background"),
    );
    let mut g = c.benchmark_group("png_encode_12mp_rgba");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(20));
    for (id, level) in [
        ("rle", Deflate::Rle),
        ("level1", Deflate::Level(1)),
        ("level6", Deflate::Level(6)),
    ] {
        let size = imaging::encode(&cutout, OutputFormat::Png, 95, level)
            .unwrap()
            .len();
        eprintln!("png {id}: {:.1} MB", size as f64 / 1e6);
        g.bench_function(id, |b| {
            b.iter(|| imaging::encode(black_box(&cutout), OutputFormat::Png, 95, level).unwrap())
        });
    }
    g.finish();
}

/// The network-sized (320²) mask of the sample rocket photo: real u2netp output when its
/// weights are installed, else the built-in engine's mask shrunk to 320².
fn network_mask(options: &OrtOptions) -> (GrayImage, &'static str) {
    let photo = image::open(root().join("assets/sample-rocket.jpg"))
        .unwrap()
        .to_rgb8();
    let small = imaging::resize_rgb(&photo, 320, 320, imaging::Filter::Lanczos3);
    let weights = root().join(".local/models/u2netp.onnx");
    if weights.is_file() {
        let spec = shared::models::find("u2netp").unwrap();
        let engine = OnnxEngine::load(spec, &weights, options).unwrap();
        return (engine.segment(&small).unwrap(), "u2netp weights");
    }
    let mask = PlainBackground::default().segment(&photo).unwrap();
    (
        imaging::resize_gray(&mask, 320, 320, imaging::Filter::Lanczos3),
        "plain-background (no weights installed)",
    )
}

fn mask_resize(c: &mut Criterion) {
    let options = ort_options();
    let (small, source) = network_mask(&options);
    let (w, h) = (4242, 2862);
    let whole = imaging::resize_gray(&small, w, h, imaging::Filter::Lanczos3);
    let tiled = imaging::resize_mask(&small, w, h);
    let d = imaging::mask_difference(&whole, &tiled);
    eprintln!(
        "mask from {source}: tiled vs whole: {} of {} px differ, max {}, mean {:.5} levels",
        d.differing,
        w * h,
        d.max,
        d.mean
    );
    let mut g = c.benchmark_group("mask_resize_12mp");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("whole", |b| {
        b.iter(|| imaging::resize_gray(black_box(&small), w, h, imaging::Filter::Lanczos3))
    });
    g.bench_function("tiled", |b| {
        b.iter(|| imaging::resize_mask(black_box(&small), w, h))
    });
    g.finish();
}

criterion_group!(pipeline, benches, mask_resize);
criterion_main!(pipeline);
