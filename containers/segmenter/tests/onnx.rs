//! ONNX models through the real loading code (ONNX Runtime loaded dynamically), with the
//! generated test models of `scripts/make_test_models.py`. These tests FAIL (they do not skip)
//! when the runtime or the models are missing: run `bash scripts/setup.sh`.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use image::{DynamicImage, GrayImage};
use imagejobs_segmenter::engine::Engine;
use imagejobs_segmenter::onnx::{OnnxEngine, OrtOptions};
use imagejobs_segmenter::registry::Registry;
use imagejobs_segmenter::{Config, StartupError};

fn config() -> Config {
    let mut c = Config::new(test_models());
    c.ort_dylib_path = Some(ort_dylib());
    c.ort_intra_threads = Some(1);
    c
}

fn options() -> OrtOptions {
    OrtOptions {
        dylib: ort_dylib(),
        intra_threads: Some(1),
        use_cuda: false,
        spinning: true,
        spinning_stop: false,
    }
}

/// Red half → 255 and blue half → 0, exactly, away from the seam (resampling blurs a few px).
fn assert_red_blue_mask(mask: &GrayImage) {
    let (w, h) = mask.dimensions();
    let margin = w / 10;
    for y in 0..h {
        for x in 0..w / 2 - margin {
            assert_eq!(mask.get_pixel(x, y).0[0], 255, "red at ({x},{y})");
        }
        for x in w / 2 + margin..w {
            assert_eq!(mask.get_pixel(x, y).0[0], 0, "blue at ({x},{y})");
        }
    }
}

#[test]
fn predictable_model_gives_the_expected_alpha() {
    let spec = shared::models::find("u2netp").unwrap();
    let engine = OnnxEngine::load(spec, &test_models().join("u2netp.onnx"), &options()).unwrap();
    assert_eq!(engine.name(), "u2netp");
    for (w, h) in [(640, 480), (333, 517), (320, 320)] {
        let mask = engine.segment(&red_blue(w, h)).unwrap();
        assert_eq!(mask.dimensions(), (w, h));
        assert_red_blue_mask(&mask);
    }
}

#[test]
fn sessions_without_spinning_or_stopping_it_after_a_run_give_the_same_mask() {
    let spec = shared::models::find("u2netp").unwrap();
    let path = test_models().join("u2netp.onnx");
    let spinning = OnnxEngine::load(spec, &path, &options()).unwrap();
    let idle = OrtOptions {
        spinning: false,
        ..options()
    };
    let blocking = OnnxEngine::load(spec, &path, &idle).unwrap();
    let image = red_blue(333, 517);
    let mask = blocking.segment(&image).unwrap();
    assert_red_blue_mask(&mask);
    assert_eq!(mask, spinning.segment(&image).unwrap());
    let stopping = OnnxEngine::load(
        spec,
        &path,
        &OrtOptions {
            spinning_stop: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(mask, stopping.segment(&image).unwrap());
}

#[test]
fn sigmoid_model_with_a_smaller_output() {
    // birefnet-general-lite: 1024² input, 256² logits, sigmoid applied by the server.
    let spec = shared::models::find("birefnet-general-lite").unwrap();
    assert!(spec.sigmoid);
    let engine = OnnxEngine::load(spec, &test_models().join(spec.file), &options()).unwrap();
    let mask = engine.segment(&red_blue(500, 300)).unwrap();
    assert_eq!(mask.dimensions(), (500, 300));
    assert_red_blue_mask(&mask);
}

#[test]
fn u2net_op_mix_runs() {
    let spec = shared::models::find("u2net").unwrap();
    let engine = OnnxEngine::load(spec, &test_models().join("u2net.onnx"), &options()).unwrap();
    let (img, _) = disc_image(
        300,
        200,
        (150.0, 100.0, 60.0),
        [200, 50, 50],
        |_, _| [250, 250, 250],
        4,
    );
    let mask = engine.segment(&img).unwrap();
    assert_eq!(mask.dimensions(), (300, 200));
    // Min-max normalisation: the full 0..255 range is used (up to Lanczos resampling).
    let (lo, hi) = mask
        .as_raw()
        .iter()
        .fold((255u8, 0u8), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(lo <= 5 && hi >= 250, "range {lo}..{hi}");
}

#[tokio::test]
async fn router_serves_the_loaded_models() {
    let app = imagejobs_segmenter::app(&config()).unwrap();
    let v = json(get(&app, "/ping").await).await;
    assert_eq!(v["status"], "ok");
    assert_eq!(
        v["models"],
        serde_json::json!([
            "plain-background",
            "u2netp",
            "u2net",
            "birefnet-general-lite"
        ])
    );
    assert_eq!(
        v["default_model"], "birefnet-general-lite",
        "without DEFAULT_MODEL the best-ranked loaded model is the default"
    );

    let body = png(&DynamicImage::ImageRgb8(red_blue(400, 300)));
    let res = invoke(&app, "model=u2netp&only_mask=true", None, body.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-model"), "u2netp");
    let mask = image::load_from_memory(&body_bytes(res).await)
        .unwrap()
        .to_luma8();
    assert_red_blue_mask(&mask);

    // The default model when none is named; header-only parameters (SageMaker).
    let res = invoke(&app, "", Some("output_format=webp"), body.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-model"), "birefnet-general-lite");
    assert_eq!(header(&res, "content-type"), "image/webp");
    let fraction: f64 = header(&res, "x-foreground-fraction").parse().unwrap();
    // Server-Timing names every stage once, in pipeline order, each with a duration ≥ 0.
    let timing = header(&res, "server-timing");
    let stages: Vec<(&str, f64)> = timing
        .split(", ")
        .map(|part| {
            let (name, dur) = part.split_once(";dur=").expect("name;dur=ms");
            (name, dur.parse().expect("a number"))
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|s| s.0).collect();
    assert_eq!(
        names,
        [
            "decode",
            "preprocess",
            "inference",
            "mask_resize",
            "compose",
            "encode",
            "total"
        ]
    );
    assert!(stages.iter().all(|s| s.1 >= 0.0));
    let parts: f64 = stages[..6].iter().map(|s| s.1).sum();
    assert!(parts <= stages[6].1 + 0.5, "{timing}");
    assert!(
        (0.0..=1.0).contains(&fraction) && fraction > 0.0,
        "{fraction}"
    );

    // A model that is not deployed: 422, unless the request allows a stand-in, which is the
    // best loaded model (never plain-background) and is named in X-Model.
    let res = invoke(&app, "model=isnet", None, body.clone()).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = invoke(&app, "model=isnet&model_fallback=true", None, body.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, "x-model"), "birefnet-general-lite");
    let res = invoke(
        &app,
        "model=plain-background&model_fallback=true",
        None,
        body.clone(),
    )
    .await;
    assert_eq!(
        header(&res, "x-model"),
        "plain-background",
        "a loaded model runs as named"
    );

    // Cutout from the predictable model: red kept opaque, blue fully transparent.
    let res = invoke(&app, "", Some("model=u2netp"), body.clone()).await;
    let out = image::load_from_memory(&body_bytes(res).await)
        .unwrap()
        .to_rgba8();
    assert_eq!(out.get_pixel(20, 150).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(380, 150).0, [0, 0, 0, 0]);

    let msg = expect_error(
        invoke(&app, "model=isnet-general-use", None, body.clone()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "model_unavailable",
    )
    .await;
    assert!(msg.contains("isnet-general-use.onnx"), "{msg}");

    // Concurrent requests on one model share its session.
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let app = app.clone();
            let body = body.clone();
            tokio::spawn(async move { invoke(&app, "model=u2netp", None, body).await.status() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
}

#[test]
fn start_up_fails_clearly() {
    // Weights present but no runtime configured.
    let mut c = config();
    c.ort_dylib_path = None;
    let err = Registry::load(&c).err().expect("must fail").to_string();
    assert!(err.contains("ORT_DYLIB_PATH"), "{err}");
    // A runtime path that does not exist.
    c.ort_dylib_path = Some("/nonexistent/libonnxruntime.so.1.31.1".into());
    let err = Registry::load(&c).err().expect("must fail").to_string();
    assert!(
        err.contains("/nonexistent/libonnxruntime.so.1.31.1"),
        "{err}"
    );
    // A corrupt model file.
    let dir = empty_dir("corrupt-model");
    std::fs::write(dir.join("u2netp.onnx"), b"this is not a protobuf").unwrap();
    let mut c = Config::new(&dir);
    c.ort_dylib_path = Some(ort_dylib());
    match Registry::load(&c) {
        Err(StartupError::Model { model, .. }) => assert_eq!(model, "u2netp"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a corrupt model must fail start-up"),
    }
    // DEFAULT_MODEL names a catalog model that is not loaded.
    let mut c = config();
    c.default_model = Some("isnet-anime".into());
    let err = Registry::load(&c).err().expect("must fail").to_string();
    assert!(err.contains("isnet-anime.onnx"), "{err}");
    // USE_CUDA without the feature (or without a GPU) fails at start-up, not per request.
    #[cfg(not(feature = "cuda"))]
    {
        let mut c = config();
        c.use_cuda = true;
        let err = Registry::load(&c).err().expect("must fail").to_string();
        assert!(err.contains("cuda"), "{err}");
    }
}

#[test]
fn registry_from_engines_picks_u2net_as_default() {
    let spec = shared::models::find("u2net").unwrap();
    let e: Arc<dyn Engine> =
        Arc::new(OnnxEngine::load(spec, &test_models().join("u2net.onnx"), &options()).unwrap());
    let r = Registry::from_engines(vec![e], None, 2, &test_models()).unwrap();
    assert_eq!(r.default_model(), "u2net");
    assert_eq!(r.available(), vec!["u2net"]);
}
