//! Seed 004, "AI Image Editing Backend": the README's flow against the local stack over HTTP
//! (API, queue, runner, processor, S3 on the emulator), with fal.ai played by the contract
//! server of `tests/common/fal.rs`: create (multipart `image` + `prompt`), get, list newest
//! first, the frontend's CORS preflight; every job checked key by key and its image decoded.

use crate::common;

use crate::common::fal::{
    EDIT_MODEL, completed, env_for, outputs, result, status, submit, submitted,
};
use crate::common::{assert_error, sample_photo};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use wiremock::MockServer;

const ORIGIN: &str = "http://localhost:5173";

fn form(image: Option<Vec<u8>>, prompt: Option<&str>) -> Form {
    let mut f = Form::new();
    if let Some(bytes) = image {
        f = f.part(
            "image",
            Part::bytes(bytes)
                .file_name("photo.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        );
    }
    if let Some(p) = prompt {
        f = f.text("prompt", p.to_owned());
    }
    f
}

/// Exactly the README's six keys, the seed's status word, and a result URL that serves the
/// edited image.
async fn check_job(job: &Value, prompt: &str) {
    let keys: Vec<&str> = job
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "created_at",
            "id",
            "prompt",
            "result_image_url",
            "status",
            "updated_at"
        ],
        "{job}"
    );
    assert_eq!(job["prompt"], prompt);
    assert_eq!(job["status"], "completed");
    for t in ["created_at", "updated_at"] {
        time::OffsetDateTime::parse(
            job[t].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    let url = job["result_image_url"].as_str().unwrap();
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status().as_u16(), 200);
    let image = image::load_from_memory(&fetched.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    assert_eq!(image.dimensions(), (64, 48));
    assert_eq!(image.get_pixel(3, 3).0, [0, 100, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_and_list_newest_first() {
    let server = MockServer::start().await;
    submit(EDIT_MODEL)
        .respond_with(submitted(&server))
        .expect(2)
        .mount(&server)
        .await;
    status().respond_with(completed()).mount(&server).await;
    result()
        .respond_with(outputs(&server, 1).await)
        .mount(&server)
        .await;
    let mut env = env_for(&server).await;
    env.settings.auth.cors_allowed_origins = vec![ORIGIN.into()];
    let stack = env.start_stack("http://127.0.0.1:9").await;
    let base = stack.api_url();
    let client = common::anonymous();

    // The frontend's preflight is answered for these routes.
    let resp = common::http()
        .request(reqwest::Method::OPTIONS, format!("{base}/api/jobs"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], ORIGIN);

    // Negatives first: no prompt, no image; nothing stored.
    let resp = client
        .post(format!("{base}/api/jobs"))
        .multipart(form(Some(sample_photo()), None))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "invalid_params").await;
    let resp = client
        .post(format!("{base}/api/jobs"))
        .multipart(form(None, Some("make it night")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "missing_input").await;
    env.assert_nothing_stored().await;
    assert!(
        client
            .get(format!("{base}/api/jobs"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Create two jobs; each waits until completed.
    let mut created = Vec::new();
    for prompt in ["make it night", "add a rainbow"] {
        let resp = client
            .post(format!("{base}/api/jobs"))
            .header("origin", ORIGIN)
            .multipart(form(Some(sample_photo()), Some(prompt)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["access-control-allow-origin"], ORIGIN);
        let job: Value = resp.json().await.unwrap();
        println!("seed 004 POST /api/jobs → 200 {job}");
        check_job(&job, prompt).await;
        created.push(job);
    }

    // Get by id.
    let id = created[0]["id"].as_str().unwrap();
    let resp = client
        .get(format!("{base}/api/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let got: Value = resp.json().await.unwrap();
    check_job(&got, "make it night").await;
    for key in ["id", "prompt", "status", "created_at"] {
        assert_eq!(got[key], created[0][key], "{key}");
    }
    let resp = client
        .get(format!("{base}/api/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "job_not_found").await;

    // List: newest first.
    let listed: Value = client
        .get(format!("{base}/api/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], created[1]["id"]);
    assert_eq!(listed[1]["id"], created[0]["id"]);
    check_job(&listed[0], "add a rainbow").await;
    check_job(&listed[1], "make it night").await;

    // Persistent: the canonical job is an ordinary `edit`.
    let job: Value = client
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["operation"], "edit");
    assert_eq!(job["status"], "succeeded");
    stack.shutdown().await;
}
