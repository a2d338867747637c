//! Seed 003 ("Background Removal Service", asynchronous) against the local stack: its README's
//! Python `requests` client runs as written with only `BASE` changed, then the routes' shapes,
//! 423/404 answers, expiry and validation (nothing stored for a refused request).

use crate::common;

use crate::common::{
    TestEnv, assert_error, portrait_photo, sample_photo, start_segmenter_with, tempdir, venv_python,
};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::time::Duration;

use imagejobs_local::inspect::alpha_stats;

/// The README's client, verbatim (`local/tests/it/fixtures/seed_003_client.py`).
const CLIENT: &str = include_str!("fixtures/seed_003_client.py");
const README_BASE_LINE: &str = "BASE = \"http://localhost:8000\"";

/// The README's form fields, with the image as `portrait.jpg`.
fn readme_form(email: &str) -> Form {
    Form::new()
        .part(
            "file",
            Part::bytes(sample_photo())
                .file_name("portrait.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        )
        .text("email", email.to_owned())
        .text("model", "u2net")
        .text("output_format", "png")
        .text("quality", "90")
        .text("scale", "1.0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_client_runs_unchanged_but_for_its_base_url_on_a_portrait() {
    let mut env = TestEnv::new().await;
    // No COMPAT_MODEL: the client's u2net is not deployed, so the best loaded model stands in.
    env.settings.models.compat_model = None;
    let key = env.api_key_with("seed-003", "jobs:write,jobs:read").await;
    // The seed promises an e-mail when done: sent through the emulator's SES.
    let from = "notify@imagejobs.test";
    imagejobs_local::provision::verify_email_identity(&env.sdk, from)
        .await
        .unwrap();
    env.settings.notifications.from_email = Some(from.into());
    let (segmenter, _models) = start_segmenter_with(&["u2netp", "isnet-int8"]).await;
    let stack = env.start_stack(&segmenter).await;

    assert_eq!(CLIENT.matches(README_BASE_LINE).count(), 1);
    // `KEY:` (an empty password): `requests` sends Basic auth only when the URL's user
    // information has the colon; `http://KEY@host` would go out without a credential.
    let base = format!("http://{key}:@{}", stack.api_addr.unwrap());
    let script = CLIENT.replace(README_BASE_LINE, &format!("BASE = \"{base}\""));
    let dir = tempdir::Dir::new();
    std::fs::write(dir.path().join("client.py"), script).unwrap();
    std::fs::write(dir.path().join("portrait.jpg"), portrait_photo()).unwrap();

    let run = tokio::process::Command::new(venv_python())
        .arg("client.py")
        .current_dir(dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the client finishes within 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    println!("seed 003 client output:\n{stdout}");
    assert!(stdout.contains("Saved output:"), "stdout:\n{stdout}");
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Started: "))
        .expect("the client printed its processing id")
        .trim()
        .to_owned();
    let uuid = uuid::Uuid::parse_str(&pid).unwrap();
    assert_eq!(uuid.get_version_num(), 4, "processing ids are random UUIDs");
    assert!(stdout.contains("Status: completed"), "stdout:\n{stdout}");

    let png = std::fs::read(dir.path().join(format!("{pid}.png"))).unwrap();
    assert_eq!(
        image::guess_format(&png).unwrap(),
        image::ImageFormat::Png,
        "a PNG"
    );
    let stats = alpha_stats(&png).unwrap();
    assert!(stats.has_alpha, "{stats:?}");
    assert_eq!(
        (stats.width, stats.height),
        (512, 512),
        "the input's dimensions"
    );
    let kept = stats.mean_alpha / 255.0;
    assert!(
        (0.2..=0.8).contains(&kept) && stats.transparent > 0.15,
        "the person kept, the background removed: {stats:?}"
    );

    // The job behind it is an ordinary job of the key's owner, with the e-mail to notify.
    let c = common::authed(&key);
    let page: Value = c
        .get(format!("{}/v1/jobs", stack.api_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{page}");
    let job = &jobs[0];
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["operation"], "remove_background");
    assert_eq!(job["notify"]["email"], "you@example.com");
    assert_eq!(job["params"]["quality"], 90);
    assert_eq!(job["params"]["scale"], 1.0);
    assert_eq!(job["params"]["output_format"], "png");
    common::assert_stand_in(job, "u2net", "isnet-int8", kept);

    // "Check your email when done": one message to the form's address, naming the job.
    let id = job["id"].as_str().unwrap();
    let mut messages = Vec::new();
    for _ in 0..50 {
        messages = env.ses_messages().await;
        if !messages.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert_eq!(m["source"], from);
    assert_eq!(
        m["destinations"]["ToAddresses"],
        serde_json::json!(["you@example.com"])
    );
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject.contains(id) && subject.contains("succeeded"),
        "{subject}"
    );
    assert!(
        m["body"].as_str().unwrap().contains("X-Amz-Signature="),
        "a presigned result link: {}",
        m["body"]
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_the_seed_shapes_without_credentials_after_process() {
    // The API alone: jobs stay queued, so the result is "processing" and the download is 423.
    let env = TestEnv::new().await;
    let key = env.api_key_with("seed-003", "jobs:write").await;
    let base = env.serve_api().await;
    let anonymous = common::http();

    // Refused before anything is written.
    let resp = anonymous
        .post(format!("{base}/process"))
        .basic_auth(&key, None::<&str>)
        .multipart(readme_form("not an address"))
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 422, "invalid_email").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("email"));
    let resp = anonymous
        .post(format!("{base}/process"))
        .basic_auth(&key, None::<&str>)
        .multipart(Form::new().text("email", "you@example.com"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "missing_input").await;
    let resp = anonymous
        .post(format!("{base}/process"))
        .basic_auth(&key, None::<&str>)
        .multipart(readme_form("you@example.com").text("model", "isnet-anime"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "unknown_model").await;
    let resp = anonymous
        .post(format!("{base}/process"))
        .multipart(readme_form("you@example.com"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "unauthorized").await;
    let resp = anonymous
        .post(format!("{base}/process"))
        .basic_auth(
            "ij_live_0123456789abcdef0123456789abcdef0123456789abcdef",
            None::<&str>,
        )
        .multipart(readme_form("you@example.com"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "invalid_api_key").await;
    env.assert_nothing_stored().await;

    // Accepted: the exact 202 body.
    let resp = anonymous
        .post(format!("{base}/process"))
        .basic_auth(&key, None::<&str>)
        .multipart(readme_form("you@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["message", "processing_id", "status_url"], "{body}");
    let pid = body["processing_id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&pid).unwrap().get_version_num(), 4);
    assert_eq!(body["status_url"], format!("{base}/status/{pid}"));
    assert!(!body["status_url"].as_str().unwrap().contains(&key));
    assert_eq!(
        body["message"],
        "Processing started. Check your email when done."
    );

    // Status and download need no credential.
    let resp = anonymous
        .get(body["status_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let status: Value = resp.json().await.unwrap();
    assert_eq!(
        status,
        serde_json::json!({"processing_id": pid, "status": "processing"})
    );
    let resp = anonymous
        .get(format!("{base}/download/{pid}"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 423, "job_not_finished").await;
    // The same id in capitals is the same id.
    let resp = anonymous
        .get(format!("{base}/status/{}", pid.to_uppercase()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Behind a TLS-terminating proxy the status URL is https.
    let resp = anonymous
        .post(format!("{base}/process"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-forwarded-proto", "https")
        .multipart(readme_form("you@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let host = base.trim_start_matches("http://");
    assert!(
        body["status_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("https://{host}/status/")),
        "{body}"
    );

    // Unknown, malformed and expired ids are all 404.
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/status/{unknown}"),
        format!("/download/{unknown}"),
        "/status/not-a-uuid".to_owned(),
        "/download/..%2Fetc".to_owned(),
    ] {
        let resp = anonymous.get(format!("{base}{path}")).send().await.unwrap();
        assert_error(resp, 404, "processing_not_found").await;
    }
    use aws_sdk_dynamodb::types::AttributeValue as V;
    env.dynamodb()
        .update_item()
        .table_name(&env.settings.resources.table)
        .key("pk", V::S(format!("CAPABILITY#{pid}")))
        .key("sk", V::S(format!("CAPABILITY#{pid}")))
        .update_expression("SET expires_at = :past")
        .expression_attribute_values(":past", V::N("1".into()))
        .send()
        .await
        .unwrap();
    for route in ["status", "download"] {
        let resp = anonymous
            .get(format!("{base}/{route}/{pid}"))
            .send()
            .await
            .unwrap();
        assert_error(resp, 404, "processing_not_found").await;
    }
}
