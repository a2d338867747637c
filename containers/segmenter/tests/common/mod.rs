//! Helpers shared by the integration tests: generated images, ONNX Runtime / test-model
//! discovery, and in-process requests through the router.
#![allow(dead_code)]

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use image::{DynamicImage, ExtendedColorType, ImageEncoder, RgbImage, RgbaImage};
use tower::ServiceExt;

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// ONNX Runtime library: `ORT_DYLIB_PATH`, else `.local/ort-dylib-path`. Panics (fails the test)
/// with instructions when neither is usable: these tests must not pass silently without it.
pub fn ort_dylib() -> PathBuf {
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH")
        && !p.is_empty()
        && PathBuf::from(&p).is_file()
    {
        return PathBuf::from(p);
    }
    let file = workspace_root().join(".local/ort-dylib-path");
    let path = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!(
            "ONNX Runtime not found: set ORT_DYLIB_PATH or run `bash scripts/setup.sh` (writes {})",
            file.display()
        )
    });
    let path = PathBuf::from(path.trim());
    assert!(
        path.is_file(),
        "{} names {}, which does not exist: run `bash scripts/setup.sh`",
        file.display(),
        path.display()
    );
    path
}

/// `.local/test-models` with the generated models; panics with instructions when missing.
pub fn test_models() -> PathBuf {
    let dir = workspace_root().join(".local/test-models");
    for f in ["u2netp.onnx", "u2net.onnx", "birefnet-general-lite.onnx"] {
        assert!(
            dir.join(f).is_file(),
            "{} is missing: run `bash scripts/setup.sh` (it runs scripts/make_test_models.py)",
            dir.join(f).display()
        );
    }
    dir
}

/// A fresh empty directory under the target dir (no catalog model → plain-background only).
pub fn empty_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("segmenter-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic xorshift noise in `-amp..=amp`.
pub struct Noise(u64);
impl Noise {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next(&mut self, amp: i32) -> i32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if amp == 0 {
            0
        } else {
            (self.0 % (2 * amp as u64 + 1)) as i32 - amp
        }
    }
}

/// Fraction (0..1) of pixel (x, y) covered by the disc, by 4×4 supersampling.
pub fn disc_coverage(x: u32, y: u32, cx: f32, cy: f32, r: f32) -> f32 {
    let mut inside = 0;
    for sy in 0..4 {
        for sx in 0..4 {
            let px = x as f32 + (sx as f32 + 0.5) / 4.0;
            let py = y as f32 + (sy as f32 + 0.5) / 4.0;
            if (px - cx).powi(2) + (py - cy).powi(2) <= r * r {
                inside += 1;
            }
        }
    }
    inside as f32 / 16.0
}

/// An anti-aliased disc of colour `fg` over `bg(x, y)`, plus noise of `noise` levels.
pub fn disc_image(
    w: u32,
    h: u32,
    (cx, cy, r): (f32, f32, f32),
    fg: [u8; 3],
    bg: impl Fn(u32, u32) -> [u8; 3],
    noise: i32,
) -> (RgbImage, Vec<f32>) {
    let mut rng = Noise::new(0x5eed);
    let mut coverage = Vec::with_capacity((w * h) as usize);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let a = disc_coverage(x, y, cx, cy, r);
        coverage.push(a);
        let b = bg(x, y);
        let mut px = [0u8; 3];
        for c in 0..3 {
            let v = f32::from(fg[c]) * a + f32::from(b[c]) * (1.0 - a);
            px[c] = (v.round() as i32 + rng.next(noise)).clamp(0, 255) as u8;
        }
        image::Rgb(px)
    });
    (img, coverage)
}

/// Left half pure red, right half pure blue: the predictable test model maps red → 255, blue → 0.
pub fn red_blue(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    })
}

pub fn png(img: &DynamicImage) -> Vec<u8> {
    let mut buf = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut buf), image::ImageFormat::Png)
        .unwrap();
    buf
}

pub fn jpeg(img: &RgbImage, exif: Option<Vec<u8>>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 92);
    if let Some(e) = exif {
        enc.set_exif_metadata(e).unwrap();
    }
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        ExtendedColorType::Rgb8,
    )
    .unwrap();
    buf
}

pub fn webp(img: &RgbaImage) -> Vec<u8> {
    let mut buf = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut buf)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgba8,
        )
        .unwrap();
    buf
}

/// Minimal little-endian TIFF/EXIF block with only the Orientation tag.
pub fn exif_orientation(value: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&1u16.to_le_bytes());
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&u32::from(value).to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid PNG header claiming `w`×`h` RGBA pixels, followed by a tiny IDAT and IEND: a
/// decompression bomb as far as the header is concerned.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// Sends `body` to `POST /invocations?{query}` with optional custom-attributes header.
pub async fn invoke(
    router: &axum::Router,
    query: &str,
    attributes: Option<&str>,
    body: Vec<u8>,
) -> Response<Body> {
    let uri = if query.is_empty() {
        "/invocations".to_owned()
    } else {
        format!("/invocations?{query}")
    };
    let mut req = Request::post(uri).header("content-type", "application/octet-stream");
    if let Some(a) = attributes {
        req = req.header("X-Amzn-SageMaker-Custom-Attributes", a);
    }
    router
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap()
}

pub async fn get(router: &axum::Router, path: &str) -> Response<Body> {
    router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

pub async fn body_bytes(res: Response<Body>) -> Vec<u8> {
    axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

pub async fn json(res: Response<Body>) -> serde_json::Value {
    serde_json::from_slice(&body_bytes(res).await).unwrap()
}

/// Asserts an error response: status, JSON shape, code; returns the message.
pub async fn expect_error(res: Response<Body>, status: StatusCode, code: &str) -> String {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/json");
    let v = json(res).await;
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["message"].as_str().unwrap().to_owned()
}

pub fn header<'a>(res: &'a Response<Body>, name: &str) -> &'a str {
    res.headers()[name].to_str().unwrap()
}

/// Intersection over union of two boolean masks.
pub fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    inter as f64 / union.max(1) as f64
}
