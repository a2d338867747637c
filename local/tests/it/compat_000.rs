//! Seed 000, "Replace Background and Relight": the README's own example request against the
//! local stack over HTTP (API, queue, runner, processor, S3 on the emulator), with Stability
//! played by the contract server of `tests/common/stability.rs`; the answer checked field by
//! field, the stored image decoded, and the request Stability received read back.

use crate::common;

use crate::common::stability::{
    GENERATION_ID, SUBMIT_PATH, done, field, multipart_parts, providers, relit_png, results,
    submit_ok,
};
use crate::common::{TestEnv, assert_error, sample_photo};
use serde_json::{Value, json};
use wiremock::MockServer;

fn backdrop_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(128, 96, image::Rgb([250, 200, 220]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// The README's example body, with its two images living in this deployment's bucket under the
/// caller's own `inputs/{owner}/` prefix, written as the README writes them (virtual-hosted S3
/// object URLs with a region).
fn readme_body(bucket: &str) -> Value {
    let url = |name: &str| {
        format!("https://{bucket}.s3.us-east-1.amazonaws.com/inputs/anonymous/app/images/{name}")
    };
    json!({
      "subject_image": url("aquaphor.jpg"),
      "background_prompt": "a smooth pink pastel backdrop",
      "background_reference": url("backdrop.png"),
      "foreground_prompt": "",
      "negative_prompt": "",
      "preserve_original_subject": 0.95,
      "original_background_depth": 0.5,
      "keep_original_background": false,
      "light_source_strength": 0.3,
      "light_reference": "",
      "light_source_direction": "none",
      "seed": 42,
      "output_format": "png"
    })
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_answers_the_s3_url_of_the_relit_image() {
    let server = MockServer::start().await;
    submit_ok().expect(1).mount(&server).await;
    results()
        .respond_with(done("SUCCESS"))
        .expect(1)
        .mount(&server)
        .await;
    let mut env = TestEnv::new().await;
    env.settings.providers = providers(&server);
    let stack = env.start_stack("http://127.0.0.1:9").await;
    let base = stack.api_url();
    let bucket = env.settings.resources.bucket.clone();
    let client = common::anonymous();

    // Negative first, while the bucket is empty: no subject_image is a 422 JSON error, and
    // nothing is stored.
    let mut body = readme_body(&bucket);
    body.as_object_mut().unwrap().remove("subject_image");
    let resp = client
        .post(format!("{base}/replace-background-relight"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "missing_input").await;
    // Another tenant's object (or any key outside the caller's prefixes) is refused like a
    // missing one.
    let mut body = readme_body(&bucket);
    body["subject_image"] = json!(format!(
        "https://{bucket}.s3.us-east-1.amazonaws.com/inputs/someone-else/aquaphor.jpg"
    ));
    let resp = client
        .post(format!("{base}/replace-background-relight"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "input_not_found").await;
    env.assert_nothing_stored().await;

    // The README's request, as its client sends it.
    put(
        &env,
        "inputs/anonymous/app/images/aquaphor.jpg",
        sample_photo(),
        "image/jpeg",
    )
    .await;
    put(
        &env,
        "inputs/anonymous/app/images/backdrop.png",
        backdrop_png(),
        "image/png",
    )
    .await;
    let resp = client
        .post(format!("{base}/replace-background-relight"))
        .json(&readme_body(&bucket))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let answer: Value = resp.json().await.unwrap();
    println!("seed 000 POST /replace-background-relight → 200 {answer}");
    let object = answer.as_object().unwrap();
    assert_eq!(object.len(), 1, "exactly the README's one key: {answer}");
    let s3_url = object["s3_url"].as_str().unwrap();
    let prefix = format!("https://{bucket}.s3.amazonaws.com/results/anonymous/");
    let id = s3_url
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(".png"))
        .unwrap_or_else(|| panic!("{s3_url} is not {prefix}{{id}}.png"));
    ulid::Ulid::from_string(id).expect("the job id");

    // The object behind the URL is the relit image, a real PNG.
    let key = format!("results/anonymous/{id}.png");
    let stored = common::queue::stored(&env, &key).await;
    assert_eq!(stored, relit_png());
    let decoded = image::load_from_memory(&stored).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (96, 64));
    assert_eq!(decoded.get_pixel(10, 10).0, [200, 120, 40]);

    // The canonical job behind it.
    let job: Value = client
        .get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["operation"], "replace_background_relight");
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["provider_request_id"], GENERATION_ID);
    assert_eq!(job["inputs"]["image"]["source"], "s3");
    assert_eq!(
        job["inputs"]["image"]["key"],
        "inputs/anonymous/app/images/aquaphor.jpg"
    );
    assert!(job["inputs"]["background_reference"].is_object(), "{job}");

    // What Stability received, field by field: the README's values, the blanks left out, and
    // the strength dropped because nothing steers the light.
    let requests = server.received_requests().await.unwrap();
    let submits: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == SUBMIT_PATH)
        .collect();
    assert_eq!(submits.len(), 1);
    let parts = multipart_parts(submits[0]);
    let file = |name: &str| {
        parts
            .iter()
            .find(|p| p.0 == name)
            .unwrap_or_else(|| panic!("{name} part"))
            .3
            .clone()
    };
    assert_eq!(file("subject_image"), sample_photo());
    assert_eq!(file("background_reference"), backdrop_png());
    for (name, value) in [
        ("background_prompt", "a smooth pink pastel backdrop"),
        ("preserve_original_subject", "0.95"),
        ("original_background_depth", "0.5"),
        ("keep_original_background", "false"),
        ("seed", "42"),
        ("output_format", "png"),
    ] {
        assert_eq!(field(&parts, name).as_deref(), Some(value), "field {name}");
    }
    for absent in [
        "foreground_prompt",
        "negative_prompt",
        "light_source_direction",
        "light_source_strength",
        "light_reference",
    ] {
        assert!(parts.iter().all(|p| p.0 != absent), "{absent} is not sent");
    }
    stack.shutdown().await;
}
