//! Seed 001, "Image Generation API": the README's endpoints in order against the local stack
//! over HTTP (API, queue, runner, processor, S3 on the emulator), with fal.ai played by the
//! contract server of `tests/common/fal.rs`: health, root, memory (the avatar read from
//! `avatars/{owner}/{user_id}`), subject (the photo from `subjects/{owner}/{user_id}/…`) and
//! generations; answers checked field by field and the images decoded.

use crate::common;

use crate::common::fal::{
    EDIT_MODEL, TEXT_MODEL, completed, env_for, outputs, png, result, status, submit, submits,
    submitted,
};
use crate::common::{TestEnv, assert_error, sample_photo, start_segmenter};
use serde_json::{Value, json};
use wiremock::MockServer;

async fn put(env: &TestEnv, key: &str, bytes: Vec<u8>, content_type: &str) {
    env.s3()
        .put_object()
        .bucket(&env.settings.resources.bucket)
        .key(key)
        .content_type(content_type)
        .body(bytes.into())
        .send()
        .await
        .unwrap();
}

async fn post(base: &str, route: &str, body: Value) -> reqwest::Response {
    common::anonymous()
        .post(format!("{base}{route}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// `{"data": [{"s3_uri"}]}` exactly; returns the job id of `s3://{bucket}/generated/anonymous/
/// user123/{mode}_{id}.png` after checking the object there decodes to the provider's output.
async fn check_s3_uri(env: &TestEnv, resp: reqwest::Response, mode: &str) -> String {
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    println!("seed 001 /v1/images/{mode} → 200 {body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{body}");
    assert_eq!(data[0].as_object().unwrap().len(), 1, "{body}");
    let uri = data[0]["s3_uri"].as_str().unwrap();
    let prefix = format!(
        "s3://{}/generated/anonymous/user123/{mode}_",
        env.settings.resources.bucket
    );
    let id = uri
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(".png"))
        .unwrap_or_else(|| panic!("{uri} is not {prefix}{{id}}.png"))
        .to_owned();
    ulid::Ulid::from_string(&id).expect("the job id");
    let key = uri
        .strip_prefix(&format!("s3://{}/", env.settings.resources.bucket))
        .unwrap();
    let image = image::load_from_memory(&common::queue::stored(env, key).await)
        .unwrap()
        .to_rgb8();
    assert_eq!(image.dimensions(), (64, 48));
    assert_eq!(image.get_pixel(5, 5).0, [0, 100, 200]);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_endpoints_generate_from_avatar_photo_and_text() {
    let server = MockServer::start().await;
    submit(EDIT_MODEL)
        .respond_with(submitted(&server))
        .expect(2)
        .mount(&server)
        .await;
    submit(TEXT_MODEL)
        .respond_with(submitted(&server))
        .expect(1)
        .mount(&server)
        .await;
    status().respond_with(completed()).mount(&server).await;
    result()
        .respond_with(outputs(&server, 1).await)
        .mount(&server)
        .await;
    let mut env = env_for(&server).await;
    let (segmenter, _models) = start_segmenter().await;
    let stack = env.start_stack(&segmenter).await;
    let base = stack.api_url();

    // Health, word for word (plus the checks), with the key.
    let resp = common::anonymous()
        .get(format!("{base}/health/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let health: Value = resp.json().await.unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["message"], "Image generation service is ready");
    // Root: a welcome message and the endpoints.
    let resp = common::http().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let root: Value = resp.json().await.unwrap();
    assert!(
        root["message"].as_str().unwrap().contains("Welcome"),
        "{root}"
    );
    for (name, route) in [
        ("memory", "/v1/images/memory"),
        ("subject", "/v1/images/subject"),
        ("generations", "/v1/images/generations"),
        ("health", "/health/"),
    ] {
        assert_eq!(root["endpoints"][name], route, "{root}");
    }

    // Negatives while nothing is stored: a missing user_id, a user without an avatar.
    let resp = post(&base, "/v1/images/memory", json!({"prompt": "a picnic"})).await;
    assert_error(resp, 422, "invalid_params").await;
    let resp = post(
        &base,
        "/v1/images/memory",
        json!({"user_id": "user123", "prompt": "a picnic", "num_inference_steps": 50}),
    )
    .await;
    let err = assert_error(resp, 422, "input_not_found").await;
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("avatars/anonymous/user123"),
        "{err}"
    );
    let resp = post(
        &base,
        "/v1/images/generations",
        json!({"num_inference_steps": 50}),
    )
    .await;
    assert_error(resp, 422, "invalid_params").await;
    env.assert_nothing_stored().await;

    // The user's avatar and photo, under the caller's own prefixes; another tenant's avatar of
    // the same user_id is never read.
    let avatar = png(80, 80, [1, 2, 3]);
    put(
        &env,
        "avatars/anonymous/user123.png",
        avatar.clone(),
        "image/png",
    )
    .await;
    put(
        &env,
        "avatars/acme/user123.png",
        png(80, 80, [9, 9, 9]),
        "image/png",
    )
    .await;
    put(
        &env,
        "subjects/anonymous/user123/photo.jpg",
        sample_photo(),
        "image/jpeg",
    )
    .await;

    // Memory.
    let resp = post(
        &base,
        "/v1/images/memory",
        json!({"user_id": "user123", "prompt": "a picnic by the lake", "num_inference_steps": 50}),
    )
    .await;
    let id = check_s3_uri(&env, resp, "memory").await;
    let job: Value = common::anonymous()
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["operation"], "generate");
    assert_eq!(job["params"]["mode"], "memory");
    assert_eq!(job["params"]["num_inference_steps"], 50);
    let input_key = job["inputs"]["image"]["key"].as_str().unwrap();
    assert_eq!(
        common::queue::stored(&env, input_key).await,
        avatar,
        "the caller's avatar, not acme's"
    );

    // Subject.
    let resp = post(
        &base,
        "/v1/images/subject",
        json!({"user_id": "user123", "num_inference_steps": 50}),
    )
    .await;
    check_s3_uri(&env, resp, "subject").await;

    // Generations: a presigned URL of the result.
    let resp = post(
        &base,
        "/v1/images/generations",
        json!({"prompt": "a watercolour fox", "num_inference_steps": 50}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    println!("seed 001 /v1/images/generations → 200 {body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{body}");
    assert_eq!(data[0].as_object().unwrap().len(), 1, "{body}");
    let url = data[0]["url"].as_str().unwrap();
    assert!(url.contains("X-Amz-Signature="), "presigned: {url}");
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status().as_u16(), 200);
    let image = image::load_from_memory(&fetched.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    assert_eq!(image.dimensions(), (64, 48));

    // What fal received: the memory and subject prompts with one image each, then text alone.
    let sent = submits(&server).await;
    assert_eq!(sent.len(), 3);
    let bodies: Vec<Value> = sent
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent[0].url.path(), format!("/{EDIT_MODEL}"));
    assert_eq!(
        bodies[0]["prompt"],
        format!(
            "{} a picnic by the lake",
            shared::operation::generate::MEMORY_PROMPT
        )
    );
    assert_eq!(bodies[0]["image_urls"].as_array().unwrap().len(), 1);
    assert_eq!(
        bodies[1]["prompt"],
        shared::operation::generate::SUBJECT_PROMPT
    );
    assert_eq!(sent[2].url.path(), format!("/{TEXT_MODEL}"));
    assert_eq!(
        bodies[2],
        json!({"prompt": "a watercolour fox", "num_images": 1, "enable_safety_checker": true})
    );
    stack.shutdown().await;
}
