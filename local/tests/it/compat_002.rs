//! Seed 002 ("Background Removal API", JWT) against the local stack: its README's curl
//! sequence through real `curl` processes (health with the key, token, remove-background saving
//! the bytes, metrics), then the JWT-only rules, validation and the 202 fallback.

use crate::common;

use crate::common::{
    TestEnv, assert_error, authed, portrait_photo, sample_photo, start_segmenter_with, tempdir,
    upload,
};
use serde_json::Value;
use std::path::Path;

use imagejobs_local::inspect::alpha_stats;

/// Runs `curl -sS -w '\n%{http_code}' ARGS…` in `dir`; returns the status and the body.
async fn curl(dir: &Path, args: &[&str]) -> (u16, String) {
    println!("$ curl {}", args.join(" "));
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    println!("→ {code} {}", body.chars().take(400).collect::<String>());
    (code.parse().unwrap(), body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_sequence_works_on_a_portrait_with_real_weights() {
    let mut env = TestEnv::new().await;
    // No COMPAT_MODEL: the seed's RMBG is not deployed, so the best loaded model stands in.
    env.settings.models.compat_model = None;
    let key = env
        .api_key_with("seed-002", "jobs:write,jobs:read,metrics:read")
        .await;
    let (segmenter, _models) = start_segmenter_with(&["u2netp", "isnet-int8"]).await;
    let stack = env.start_stack(&segmenter).await;
    let base = stack.api_url();
    let dir = tempdir::Dir::new();
    std::fs::create_dir_all(dir.path().join("app/images")).unwrap();
    std::fs::create_dir_all(dir.path().join("app/outputs")).unwrap();
    // The README's file name; the bytes are a real portrait (a PNG, sniffed, not named).
    std::fs::write(dir.path().join("app/images/profile7.jpg"), portrait_photo()).unwrap();

    // Step 1: health with the API key.
    let (code, body) = curl(
        dir.path(),
        &[
            "-X",
            "GET",
            &format!("{base}/health/"),
            "-H",
            &format!("Authorization: Bearer {key}"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let health = json(&body);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["message"], "Image generation service is ready");
    for check in ["table", "queue", "bucket", "segmenter"] {
        assert_eq!(health["checks"][check], "ok", "{health}");
    }

    // Step 2: a token (the README's command plus the key, which the flow says it needs).
    let (code, body) = curl(
        dir.path(),
        &[
            "-X",
            "POST",
            &format!("{base}/auth/token"),
            "-G",
            "-d",
            "user_id=jahid12345",
            "-H",
            &format!("Authorization: Bearer {key}"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let token = json(&body);
    let mut keys: Vec<&str> = token
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access_token", "token_type"], "{token}");
    assert_eq!(token["token_type"], "bearer");
    let access_token = token["access_token"].as_str().unwrap().to_owned();
    assert!(access_token.starts_with("eyJ"), "a JWT: {access_token}");

    // Step 3: remove the background, the bytes saved with --output.
    let (code, _) = curl(
        dir.path(),
        &[
            "-X",
            "POST",
            &format!("{base}/api/remove-background"),
            "-H",
            &format!("Authorization: Bearer {access_token}"),
            "-F",
            "file=@./app/images/profile7.jpg",
            "-F",
            "output_format=PNG",
            "--output",
            "app/outputs/processed_portrait4.png",
        ],
    )
    .await;
    assert_eq!(code, 200);
    let png = std::fs::read(dir.path().join("app/outputs/processed_portrait4.png")).unwrap();
    assert_eq!(image::guess_format(&png).unwrap(), image::ImageFormat::Png);
    let stats = alpha_stats(&png).unwrap();
    assert!(stats.has_alpha, "{stats:?}");
    assert_eq!((stats.width, stats.height), (512, 512));
    let kept = stats.mean_alpha / 255.0;
    assert!(
        (0.2..=0.8).contains(&kept) && stats.transparent > 0.15,
        "the person kept, the background removed: {stats:?}"
    );

    // The job asked for the seed's model and records the stand-in that ran.
    let jobs = common::json_of(authed(&key).get(format!("{base}/v1/jobs"))).await;
    common::assert_stand_in(&jobs["jobs"][0], "bria-rmbg", "isnet-int8", kept);

    // Step 4: metrics with the token.
    let (code, body) = curl(
        dir.path(),
        &[
            "-X",
            "GET",
            &format!("{base}/metrics/"),
            "-H",
            &format!("Authorization: Bearer {access_token}"),
        ],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let m = json(&body);
    assert_eq!(m["window_hours"], 24);
    assert_eq!(m["jobs_total"], 1, "{m}");
    assert_eq!(m["jobs_by_status"]["succeeded"], 1);
    assert_eq!(m["jobs_by_status"]["failed"], 0);
    assert_eq!(m["jobs_by_status"]["queued"], 0);
    assert_eq!(m["jobs_by_operation"]["remove_background"], 1);
    assert_eq!(m["processing_time"]["count"], 1);
    let average = m["processing_time"]["average_ms"].as_f64().unwrap();
    let p95 = m["processing_time"]["p95_ms"].as_i64().unwrap();
    assert!(average > 0.0 && average < 20_000.0, "{m}");
    assert_eq!(average, p95 as f64, "one job is its own p95");
    assert_eq!(m["truncated"], false);

    // JPG comes back as a JPEG on white, same size.
    let c = authed(&access_token);
    let resp = c
        .post(format!("{base}/api/remove-background"))
        .multipart(upload(portrait_photo()).text("output_format", "jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert!(resp.headers().contains_key("x-job-id"));
    let jpeg = resp.bytes().await.unwrap();
    assert_eq!(
        image::guess_format(&jpeg).unwrap(),
        image::ImageFormat::Jpeg
    );
    let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (512, 512));
    // Where the PNG cutout is fully transparent, the JPEG shows the white background.
    let cutout = image::load_from_memory(&png).unwrap().to_rgba8();
    let (mut removed, mut white) = (0u32, 0u32);
    for (p, q) in cutout.pixels().zip(img.pixels()) {
        if p.0[3] == 0 {
            removed += 1;
            white += u32::from(q.0.iter().all(|c| *c > 230));
        }
    }
    assert!(
        f64::from(white) > 0.95 * f64::from(removed),
        "{white} of {removed} removed pixels are white"
    );

    // The canonical route with the key itself.
    let m: Value = authed(&key)
        .get(format!("{base}/v1/metrics?window_hours=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["window_hours"], 1);
    assert_eq!(m["jobs_total"], 2, "{m}");
    assert_eq!(m["jobs_by_status"]["succeeded"], 2);
    assert_eq!(m["processing_time"]["count"], 2);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keys_and_bad_requests_get_json_errors() {
    // The API alone: jobs stay queued.
    let env = TestEnv::new().await;
    let key = env
        .api_key_with("seed-002", "jobs:write,metrics:read")
        .await;
    let writer_only = env.api_key_with("seed-002", "jobs:write").await;
    let base = env.serve_api().await;
    let anonymous = common::http();
    let with_key = authed(&key);

    // Health and tokens need the key.
    let resp = anonymous
        .get(format!("{base}/health/"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = anonymous
        .post(format!("{base}/auth/token?user_id=jahid12345"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = with_key
        .post(format!("{base}/auth/token"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "invalid_params").await;

    let token = |key: String| {
        let base = base.clone();
        async move {
            let body: Value = authed(&key)
                .post(format!("{base}/auth/token?user_id=jahid12345"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let jwt = token(key.clone()).await;
    let with_jwt = authed(&jwt);
    let resp = with_jwt
        .post(format!("{base}/auth/token?user_id=x"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "api_key_required").await;

    // Removal and metrics take the JWT, not the key.
    let resp = anonymous
        .post(format!("{base}/api/remove-background"))
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap();
    // Refused before its upload was read: the server will not read the rest, so it says it
    // closes the connection, and the pooled client does not send the next request on it
    // (which once failed this test with reqwest's `IncompleteMessage`).
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    assert_error(resp, 401, "unauthorized").await;
    let resp = with_key
        .post(format!("{base}/api/remove-background"))
        .multipart(upload(sample_photo()))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token_required").await;
    let resp = with_key
        .get(format!("{base}/metrics/"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token_required").await;
    let resp = anonymous
        .get(format!("{base}/metrics/"))
        .header("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "token_algorithm_not_allowed").await;
    let resp = authed(&token(writer_only).await)
        .get(format!("{base}/metrics/"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "insufficient_scope").await;
    let resp = with_jwt
        .get(format!("{base}/metrics/?window_hours=721"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_params").await;

    // Bad requests store nothing.
    let resp = with_jwt
        .post(format!("{base}/api/remove-background"))
        .multipart(upload(sample_photo()).text("output_format", "GIF"))
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 422, "invalid_params").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("output_format")
    );
    let resp = with_jwt
        .post(format!("{base}/api/remove-background"))
        .multipart(upload(b"not an image".to_vec()))
        .send()
        .await
        .unwrap();
    assert_error(resp, 415, "unsupported_image").await;
    let resp = with_jwt
        .post(format!("{base}/api/remove-background"))
        .multipart(reqwest::multipart::Form::new().text("output_format", "PNG"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "missing_input").await;
    env.assert_nothing_stored().await;

    // No worker: after the API's wait limit the answer is 202 with where to look, not an error.
    let resp = with_jwt
        .post(format!("{base}/api/remove-background"))
        .multipart(upload(sample_photo()).text("output_format", "png"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    let id = body["job_id"].as_str().unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert_eq!(body["status_url"], format!("{base}/v1/jobs/{id}"));
    assert_eq!(body["result_url"], format!("{base}/v1/jobs/{id}/result"));
}
