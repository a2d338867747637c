//! End to end: a real photograph through the public HTTP API, the queue, the processor, the
//! real segmenter and S3, and back through the presigned result URL; and S3 ingest.

use crate::common::{TestEnv, assert_error, sample_photo, start_segmenter};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use std::time::Duration;

use imagejobs_local::inspect::alpha_stats;

async fn fetch_result(c: &reqwest::Client, base: &str, job: &Value) -> (String, Vec<u8>) {
    let resp = c
        .get(format!(
            "{base}/v1/jobs/{}/result",
            job["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let url = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(url.contains("X-Amz-Signature="), "presigned: {url}");
    // The presigned URL carries its own authorisation: fetch it like a browser would.
    let object = reqwest::get(&url).await.unwrap();
    assert_eq!(object.status(), 200);
    let content_type = object.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    (content_type, object.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_photo_goes_through_the_whole_pipeline() {
    let mut env = TestEnv::new().await;
    let (segmenter, _models) = start_segmenter().await;
    let stack = env.start_stack(&segmenter).await;
    let base = stack.api_url();
    let c = env.client("anonymous").await;

    let form = Form::new().part("file", Part::bytes(sample_photo()).file_name("rocket.jpg"));
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .header("prefer", "wait=20")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "finished within the wait");
    assert_eq!(resp.headers()["preference-applied"], "wait=20");
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1);
    let result = &job["result"];
    assert_eq!(result["content_type"], "image/png");
    assert_eq!(
        (result["width"].as_u64(), result["height"].as_u64()),
        (Some(640), Some(427))
    );
    assert_eq!(result["engine"], "plain-background");

    let (content_type, png) = fetch_result(&c, &base, &job).await;
    assert_eq!(content_type, "image/png");
    assert_eq!(png.len() as u64, result["bytes"].as_u64().unwrap());
    let stats = alpha_stats(&png).unwrap();
    assert!(stats.has_alpha);
    assert_eq!((stats.width, stats.height), (640, 427));
    // The sky is most of the frame; the rocket (about 3% of it) is kept whole.
    assert!(stats.transparent > 0.6, "{stats:?}");
    assert!(stats.opaque > 0.03, "{stats:?}");
    let cutout = image::load_from_memory(&png).unwrap().to_rgba8();
    assert_eq!(
        cutout.get_pixel(10, 10).0[3],
        0,
        "sky in the top-left corner is removed"
    );
    assert_eq!(
        cutout.get_pixel(630, 60).0[3],
        0,
        "sky on the right is removed"
    );
    assert_eq!(
        cutout.get_pixel(321, 250).0[3],
        255,
        "the rocket's body is kept"
    );
    // Kept pixels keep their original colour.
    let original = image::load_from_memory(&sample_photo()).unwrap().to_rgb8();
    let (kept, orig) = (cutout.get_pixel(321, 250).0, original.get_pixel(321, 250).0);
    assert_eq!(&kept[..3], &orig[..]);

    // A second job by s3:// reference, JPEG over white, half size.
    let input = format!(
        "s3://{}/{}",
        env.settings.resources.bucket,
        job["inputs"]["image"]["key"].as_str().unwrap()
    );
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .header("prefer", "wait=20")
        .json(&json!({"input": input, "params": {"output_format": "jpeg", "background_color": "#ffffff", "scale": 0.5, "quality": 80}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let job: Value = resp.json().await.unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    let (content_type, jpeg) = fetch_result(&c, &base, &job).await;
    assert_eq!(content_type, "image/jpeg");
    let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (320, 214));
    let corner = img.get_pixel(5, 5).0;
    assert!(
        corner.iter().all(|c| *c > 240),
        "background is white: {corner:?}"
    );

    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_to_the_inbox_become_jobs() {
    let mut env = TestEnv::new().await;
    let (segmenter, _models) = start_segmenter().await;
    let stack = env.start_stack(&segmenter).await;
    let base = stack.api_url();
    let s3 = env.s3();
    s3.put_object()
        .bucket(&env.settings.resources.bucket)
        .key("inbox/camera-7/remove_background/shot 1.jpg")
        .metadata("output-format", "webp")
        .metadata("scale", "0.5")
        .body(sample_photo().into())
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(&env.settings.resources.bucket)
        .key("inbox/camera-7/remove_background/notes.txt")
        .body(b"not an image".to_vec().into())
        .send()
        .await
        .unwrap();

    let c = env.client("camera-7").await;
    let mut jobs = Vec::new();
    for _ in 0..100 {
        let page: Value = c
            .get(format!("{base}/v1/jobs"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jobs = page["jobs"].as_array().unwrap().clone();
        if jobs.len() == 2
            && jobs
                .iter()
                .all(|j| j["status"] == "succeeded" || j["status"] == "failed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let ok = jobs
        .iter()
        .find(|j| j["status"] == "succeeded")
        .expect("the photo succeeded");
    assert_eq!(ok["inputs"]["image"]["source"], "inbox");
    assert_eq!(
        ok["inputs"]["image"]["key"],
        "inbox/camera-7/remove_background/shot 1.jpg"
    );
    assert_eq!(ok["params"]["output_format"], "webp");
    let (content_type, webp) = fetch_result(&c, &base, ok).await;
    assert_eq!(content_type, "image/webp");
    let stats = alpha_stats(&webp).unwrap();
    assert_eq!((stats.width, stats.height), (320, 214));
    assert!(stats.transparent > 0.6 && stats.opaque > 0.02, "{stats:?}");
    let cutout = image::load_from_memory(&webp).unwrap().to_rgba8();
    assert_eq!(cutout.get_pixel(5, 5).0[3], 0, "sky removed");
    assert_eq!(cutout.get_pixel(160, 125).0[3], 255, "rocket kept");

    let bad = jobs
        .iter()
        .find(|j| j["status"] == "failed")
        .expect("the text file failed");
    assert_eq!(bad["error"]["code"], "unsupported_image");
    let resp = c
        .get(format!(
            "{base}/v1/jobs/{}/result",
            bad["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_error(resp, 409, "unsupported_image").await;
    stack.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_s3_event_finds_the_same_job() {
    let env = TestEnv::new().await;
    env.s3()
        .put_object()
        .bucket(&env.settings.resources.bucket)
        .key("inbox/anonymous/remove_background/sample photo.jpg")
        .body(sample_photo().into())
        .send()
        .await
        .unwrap();
    let ingest = imagejobs_ingest::Ingest::with_aws(env.settings.clone(), &env.aws()).unwrap();
    let fixture = include_str!("../../../events/s3-inbox-put.json")
        .replace("imagejobs-local", &env.settings.resources.bucket);
    let event = || serde_json::from_str(&fixture).unwrap();
    let first = ingest.handle(event()).await.unwrap();
    let second = ingest.handle(event()).await.unwrap();
    assert_eq!(first, second);
    assert!(
        matches!(&first[0], imagejobs_ingest::IngestOutcome::Queued(_)),
        "{first:?}"
    );
    assert_eq!(env.queued_messages().await, 1, "one job, one message");
}
