//! `replace_background_relight` end to end: the public API, the jobs queue, the processor and
//! S3 on the emulator, with Stability played by a wiremock contract server that checks each
//! request field by field and replays the documented answers
//! (`docs/providers.md` §1.2–§1.4).

use crate::common;

use crate::common::queue::{
    batch, expire_lease, job_of, provider_processor, record, reload, run_record, stored,
    take_message,
};
use crate::common::stability::*;
use crate::common::{TestEnv, sample_photo};
use reqwest::multipart::{Form, Part};
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use imagejobs_processor::Outcome;
use shared::job::{JobMessage, JobStatus};
use shared::providers::ProviderSettings;

/// The curl of the README: multipart with the subject image and the contract's fields.
fn relight_form(photo: Vec<u8>) -> Form {
    Form::new()
        .text("operation", "replace_background_relight")
        .part(
            "subject_image",
            Part::bytes(photo)
                .file_name("subject.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        )
        .text("background_prompt", "a sunlit beach at golden hour")
        .text("foreground_prompt", "a toy rocket")
        .text("light_source_direction", "above")
        .text("light_source_strength", "0.7")
        .text("keep_original_background", "false")
        .text("seed", "42")
        .text("output_format", "png")
}

async fn create(base: &str, form: Form) -> serde_json::Value {
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body
}

#[tokio::test]
async fn relight_runs_through_api_queue_runner_and_polls_until_done() {
    let server = MockServer::start().await;
    submit_ok().expect(1).mount(&server).await;
    // pending → pending → done over three polls.
    results()
        .respond_with(pending())
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    results()
        .respond_with(done("SUCCESS"))
        .expect(1)
        .mount(&server)
        .await;

    let mut env = TestEnv::new().await;
    env.settings.providers = providers(&server);
    let stack = env.start_stack("http://127.0.0.1:9").await;
    let base = stack.api_url();
    let created = create(&base, relight_form(sample_photo())).await;
    assert_eq!(created["operation"], "replace_background_relight");
    assert_eq!(created["params"]["light_source_direction"], "above");

    let id = created["id"].as_str().unwrap().to_owned();
    let mut job = serde_json::Value::Null;
    for _ in 0..100 {
        job = common::anonymous()
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "succeeded" || job["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["provider"], "stability");
    assert_eq!(job["provider_request_id"], GENERATION_ID);
    assert_eq!(job["result"]["content_type"], "image/png");
    assert_eq!(
        (
            job["result"]["width"].as_u64(),
            job["result"]["height"].as_u64()
        ),
        (Some(96), Some(64))
    );
    assert!(job.get("warnings").is_none(), "{job}");
    let key = job["result"]["key"].as_str().unwrap().to_owned();
    assert_eq!(key, format!("results/anonymous/{id}.png"));
    assert_eq!(stored(&env, &key).await, relit_png());

    // The submit, field by field (§1.1, §1.3).
    let requests = server.received_requests().await.unwrap();
    let submits: Vec<_> = requests
        .iter()
        .filter(|r| r.url.path() == SUBMIT_PATH)
        .collect();
    assert_eq!(submits.len(), 1);
    let parts = multipart_parts(submits[0]);
    let subject = parts
        .iter()
        .find(|p| p.0 == "subject_image")
        .expect("subject_image part");
    assert_eq!(
        subject.3,
        sample_photo(),
        "the stored input is sent unchanged"
    );
    assert_eq!(subject.2.as_deref(), Some("image/jpeg"));
    assert!(subject.1.is_some(), "file parts carry a filename");
    for (name, value) in [
        ("background_prompt", "a sunlit beach at golden hour"),
        ("foreground_prompt", "a toy rocket"),
        ("preserve_original_subject", "0.6"),
        ("original_background_depth", "0.5"),
        ("keep_original_background", "false"),
        ("light_source_direction", "above"),
        ("light_source_strength", "0.7"),
        ("seed", "42"),
        ("output_format", "png"),
    ] {
        assert_eq!(field(&parts, name).as_deref(), Some(value), "field {name}");
    }
    assert_eq!(field(&parts, "negative_prompt"), None);
    assert_eq!(
        parts.len(),
        10,
        "no other fields: {:?}",
        parts.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_run_delivery_submits_exactly_once() {
    let server = MockServer::start().await;
    submit_ok().expect(1).mount(&server).await;
    results()
        .respond_with(done("SUCCESS"))
        .expect(1)
        .mount(&server)
        .await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    // The API's own message.
    let run = take_message(&env).await.expect("run message");
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    let arn = &env.provisioned.queue_arn;

    // The same message twice in one batch (SQS standard queues may do this), once more in a
    // later batch while the lease is live, and again after it expired: the lease and then the
    // stored request id are the guards.
    let response = p.handle(batch(vec![run.clone(), run.clone()])).await;
    assert!(response.batch_item_failures.is_empty());
    let response = p.handle(batch(vec![run.clone()])).await;
    assert!(response.batch_item_failures.is_empty());
    let waiting = reload(&env, &job).await;
    assert_eq!(waiting.status, JobStatus::Processing);
    assert_eq!(waiting.provider_request_id.as_deref(), Some(GENERATION_ID));

    // While the lease is live a redelivery is skipped; once it has expired the redelivery takes
    // the job over, finds the stored request id and only resumes polling.
    assert_eq!(
        p.handle_record(&run_record(&job, 2, arn)).await,
        Outcome::Skipped("another processor holds the lease")
    );
    expire_lease(&env, &job).await;
    assert_eq!(
        p.handle_record(&run_record(&job, 3, arn)).await,
        Outcome::Waiting
    );

    // Every poll on the queue is for the one request; the first completes the job.
    let mut polls = 0;
    while let Some(m) = take_message(&env).await {
        let message: JobMessage = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
        assert!(
            matches!(&message, JobMessage::Poll { request_id, .. } if request_id == GENERATION_ID),
            "{message:?}"
        );
        let outcome = p.handle_record(&m).await;
        if polls == 0 {
            assert_eq!(outcome, Outcome::Succeeded);
        } else {
            assert_eq!(outcome, Outcome::Skipped("already finished"));
        }
        polls += 1;
    }
    assert!(polls >= 1);
    assert_eq!(reload(&env, &job).await.status, JobStatus::Succeeded);
    let submits = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == SUBMIT_PATH)
        .count();
    assert_eq!(submits, 1, "the provider saw exactly one submit");
}

#[tokio::test]
async fn rate_limited_submit_is_retried_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(429).set_body_json(serde_json::json!({
            "id": "rate_limit_exceeded",
            "name": "rate_limit_exceeded",
            "errors": ["You have exceeded the rate limit of 150 requests within a 10 second period, and have been timed out for 60 seconds."]
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    submit_ok().expect(1).mount(&server).await;
    results().respond_with(done("SUCCESS")).mount(&server).await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.unwrap();
    // A zero lease lets the redelivery take the job over at once.
    let p = provider_processor(&env, providers(&server), Duration::ZERO);

    // Not back to SQS: the claim is given back and the run queued again after Stability's
    // 60 s lockout (its `retry_after`), not before; nothing was submitted.
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let response = p.handle(batch(vec![run.clone()])).await;
    assert!(response.batch_item_failures.is_empty());
    let after = reload(&env, &job).await;
    assert_eq!((after.status, after.attempts), (JobStatus::Queued, 1));
    assert!(after.provider_request_id.is_none());
    assert_eq!(env.queued_messages().await, 1, "the run, delayed");
    assert!(
        take_message(&env).await.is_none(),
        "not visible during the lockout"
    );
    let due = {
        use shared::core::PendingJobs;
        env.aws()
            .jobs
            .due(i64::MAX, 10)
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.id == job.id)
            .unwrap()
            .due
    };
    assert!(
        due >= before + 60 + shared::resources::QUEUED_GRACE_SECONDS,
        "the sweeper waits out the lockout too: due {} s on",
        due - before
    );

    let outcome = p
        .handle_record(&run_record(&job, 2, &env.provisioned.queue_arn))
        .await;
    assert_eq!(outcome, Outcome::Waiting);
    let poll = take_message(&env).await.unwrap();
    assert_eq!(p.handle_record(&poll).await, Outcome::Succeeded);
    assert_eq!(reload(&env, &job).await.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn moderation_fails_the_job_and_content_filtered_is_a_warning() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(ResponseTemplate::new(403).set_body_json(serde_json::json!({
            "id": "ed14db44-0ff4-4e0b-8d3e-1c0e2d5f8a11",
            "name": "content_moderation",
            "errors": ["Your request was flagged by our content moderation system."]
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    submit_ok().mount(&server).await;
    results()
        .respond_with(done("CONTENT_FILTERED"))
        .mount(&server)
        .await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));

    let flagged = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.unwrap();
    assert_eq!(
        p.handle_record(&run).await,
        Outcome::Failed("content_moderated".into())
    );
    let failed = reload(&env, &flagged).await;
    assert_eq!(failed.status, JobStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.code, "content_moderated");
    assert!(error.message.contains("flagged"), "{}", error.message);

    let blurred = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.unwrap();
    assert_eq!(p.handle_record(&run).await, Outcome::Waiting);
    let poll = take_message(&env).await.unwrap();
    assert_eq!(p.handle_record(&poll).await, Outcome::Succeeded);
    let done = reload(&env, &blurred).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.warnings.len(), 1);
    assert!(
        done.warnings[0].starts_with("content_filtered"),
        "{:?}",
        done.warnings
    );
}

#[tokio::test]
async fn cancel_while_queued_and_while_waiting_on_the_provider() {
    let server = MockServer::start().await;
    submit_ok().expect(1).mount(&server).await;
    // The provider finishes, but the job was canceled: the result is never fetched.
    results()
        .respond_with(done("SUCCESS"))
        .expect(0)
        .mount(&server)
        .await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    let http = common::anonymous();

    // Queued: canceled at once; the run message then does nothing.
    let queued = create(&base, relight_form(sample_photo())).await;
    let id = queued["id"].as_str().unwrap();
    let resp = http
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "canceled");
    let run = take_message(&env).await.unwrap();
    assert_eq!(
        p.handle_record(&run).await,
        Outcome::Skipped("already finished")
    );
    // Canceling twice is a conflict.
    let again = http
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    common::assert_error(again, 409, "conflict").await;

    // Processing (submitted, waiting on a poll): canceled; the poll discards the work.
    let waiting = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.unwrap();
    assert_eq!(p.handle_record(&run).await, Outcome::Waiting);
    let resp = http
        .post(format!("{base}/v1/jobs/{}/cancel", waiting.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let poll = take_message(&env).await.unwrap();
    assert_eq!(
        p.handle_record(&poll).await,
        Outcome::Skipped("already finished")
    );
    let canceled = reload(&env, &waiting).await;
    assert_eq!(canceled.status, JobStatus::Canceled);
    assert!(canceled.result.is_none());
    let result = http
        .get(format!("{base}/v1/jobs/{}/result", waiting.id))
        .send()
        .await
        .unwrap();
    assert_eq!(result.status().as_u16(), 409);

    let unknown = http
        .post(format!("{base}/v1/jobs/{}/cancel", ulid::Ulid::new()))
        .send()
        .await
        .unwrap();
    common::assert_error(unknown, 404, "job_not_found").await;
}

#[tokio::test]
async fn missing_key_deadline_and_image_limits() {
    let server = MockServer::start().await;
    submit_ok().mount(&server).await;
    results().respond_with(pending()).mount(&server).await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;

    // No key: the job fails at once, naming the setting.
    let unconfigured = ProviderSettings {
        stability_api_key: None,
        ..providers(&server)
    };
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.unwrap();
    let outcome = provider_processor(&env, unconfigured, Duration::from_secs(90))
        .handle_record(&run)
        .await;
    assert_eq!(outcome, Outcome::Failed("provider_not_configured".into()));
    let error = reload(&env, &job).await.error.unwrap();
    assert!(
        error.message.contains("STABILITY_API_KEY"),
        "{}",
        error.message
    );

    // Past the deadline while the provider is still pending: provider_timeout.
    let impatient = ProviderSettings {
        provider_deadline: Duration::ZERO,
        ..providers(&server)
    };
    let p = provider_processor(&env, impatient, Duration::from_secs(90));
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.unwrap();
    assert_eq!(p.handle_record(&run).await, Outcome::Waiting);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let poll = take_message(&env).await.unwrap();
    assert_eq!(
        p.handle_record(&poll).await,
        Outcome::Failed("provider_timeout".into())
    );
    assert_eq!(
        reload(&env, &job).await.error.unwrap().code,
        "provider_timeout"
    );

    // Stability's aspect-ratio limit is checked before anything is stored or submitted.
    let wide = image::RgbImage::from_pixel(1000, 200, image::Rgb([1, 2, 3]));
    let mut png = Vec::new();
    wide.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .multipart(relight_form(png))
        .send()
        .await
        .unwrap();
    let body = common::assert_error(resp, 422, "invalid_image").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("aspect"),
        "{body}"
    );

    // Parameters are validated with the contract's ranges.
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .multipart(
            Form::new()
                .text("operation", "replace_background_relight")
                .part(
                    "subject_image",
                    Part::bytes(sample_photo()).file_name("s.jpg"),
                )
                .text("background_prompt", "x")
                .text("preserve_original_subject", "1.5"),
        )
        .send()
        .await
        .unwrap();
    let body = common::assert_error(resp, 400, "invalid_params").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("preserve_original_subject"),
        "{body}"
    );
}

fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[tokio::test]
async fn reference_images_are_stored_and_sent_as_file_parts() {
    let server = MockServer::start().await;
    submit_ok().expect(1).mount(&server).await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let background = png(128, 96, [10, 20, 30]);
    let light = png(64, 256, [250, 250, 250]);
    let file = |bytes: &Vec<u8>, name: &str| {
        Part::bytes(bytes.clone())
            .file_name(name.to_owned())
            .mime_str("image/png")
            .unwrap()
    };

    // Neither a background prompt nor a background reference: refused, nothing stored.
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .multipart(
            Form::new()
                .text("operation", "replace_background_relight")
                .part(
                    "subject_image",
                    Part::bytes(sample_photo()).file_name("s.jpg"),
                )
                .part("light_reference", file(&light, "light.png")),
        )
        .send()
        .await
        .unwrap();
    let body = common::assert_error(resp, 400, "invalid_params").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("background_reference"),
        "{body}"
    );
    assert!(
        env.objects().await.is_empty(),
        "a refused request stores nothing"
    );
    // An input the operation does not take.
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({
            "operation": "replace_background_relight",
            "input": format!("s3://{}/x.jpg", env.settings.resources.bucket),
            "inputs": {"mask": "s3://elsewhere/m.png"},
            "params": {"background_prompt": "x"}
        }))
        .send()
        .await
        .unwrap();
    common::assert_error(resp, 400, "invalid_input").await;

    // The background comes from a reference image; strength goes with the light reference.
    let created = create(
        &base,
        Form::new()
            .text("operation", "replace_background_relight")
            .part(
                "subject_image",
                Part::bytes(sample_photo()).file_name("s.jpg"),
            )
            .part("background_reference", file(&background, "bg.png"))
            .part("light_reference", file(&light, "light.png"))
            .text("light_source_strength", "0.4"),
    )
    .await;
    let job = job_of(&env, &created).await;
    let names: Vec<&str> = job.inputs.keys().map(String::as_str).collect();
    assert_eq!(names, ["background_reference", "image", "light_reference"]);
    assert_eq!(
        job.inputs["background_reference"].key,
        format!("inputs/anonymous/{}/background_reference.png", job.id)
    );
    let run = take_message(&env).await.unwrap();
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    assert_eq!(p.handle_record(&run).await, Outcome::Waiting);

    let requests = server.received_requests().await.unwrap();
    let parts = multipart_parts(&requests[0]);
    let part = |name: &str| {
        parts
            .iter()
            .find(|p| p.0 == name)
            .unwrap_or_else(|| panic!("{name} part"))
    };
    assert_eq!(part("subject_image").3, sample_photo());
    assert_eq!(part("background_reference").3, background);
    assert_eq!(part("background_reference").2.as_deref(), Some("image/png"));
    assert_eq!(part("light_reference").3, light);
    assert_eq!(
        field(&parts, "light_source_strength").as_deref(),
        Some("0.4")
    );
    assert_eq!(field(&parts, "background_prompt"), None);
    assert_eq!(field(&parts, "light_source_direction"), None);
}

#[tokio::test]
async fn poll_errors_back_off_and_a_404_fails_the_job() {
    let server = MockServer::start().await;
    submit_ok().mount(&server).await;
    // 503 → poll again soon; 429 → poll again after Stability's 60 s lockout; 404 → gone.
    results()
        .respond_with(ResponseTemplate::new(503).set_body_json(serde_json::json!({
            "id": "e1", "name": "internal_error", "errors": ["upstream unavailable"]
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    results()
        .respond_with(ResponseTemplate::new(429).set_body_json(serde_json::json!({
            "id": "rate_limit_exceeded", "name": "rate_limit_exceeded",
            "errors": ["You have exceeded the rate limit"]
        })))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    results()
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({
            "id": "e3", "name": "generation_not_found",
            "errors": ["the generation either does not exist or has expired"]
        })))
        .with_priority(3)
        .mount(&server)
        .await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.unwrap();
    assert_eq!(p.handle_record(&run).await, Outcome::Waiting);

    let poll = take_message(&env).await.unwrap();
    assert_eq!(
        p.handle_record(&poll).await,
        Outcome::Waiting,
        "503 re-polls"
    );
    let poll = take_message(&env).await.unwrap();
    let message: JobMessage = serde_json::from_str(poll.body.as_deref().unwrap()).unwrap();
    assert!(
        matches!(message, JobMessage::Poll { attempt: 1, .. }),
        "{message:?}"
    );
    assert_eq!(
        p.handle_record(&poll).await,
        Outcome::Waiting,
        "429 re-polls"
    );
    // The next poll waits out the lockout: it is on the queue, but delayed.
    assert!(
        take_message(&env).await.is_none(),
        "the 429 re-poll is delayed"
    );
    assert_eq!(env.queued_messages().await, 1);
    assert_eq!(reload(&env, &job).await.status, JobStatus::Processing);

    // A poll for a generation that no longer exists fails the job for good.
    let late = record(
        serde_json::to_string(&JobMessage::Poll {
            owner: job.owner.clone(),
            job_id: job.id,
            request_id: GENERATION_ID.into(),
            attempt: 3,
            due: None,
        })
        .unwrap(),
        1,
        &env.provisioned.queue_arn,
    );
    assert_eq!(
        p.handle_record(&late).await,
        Outcome::Failed("provider_not_found".into())
    );
    // The job is terminal now: any later poll (here for another request) changes nothing.
    let stray = record(
        serde_json::to_string(&JobMessage::Poll {
            owner: job.owner.clone(),
            job_id: job.id,
            request_id: "someone-else".into(),
            attempt: 0,
            due: None,
        })
        .unwrap(),
        1,
        &env.provisioned.queue_arn,
    );
    assert_eq!(
        p.handle_record(&stray).await,
        Outcome::Skipped("already finished")
    );
}

/// `remove_background` with `provider=stability` (the synchronous endpoint, §1.5) shares the
/// Stability contract server set-up, so it lives here.
#[tokio::test]
async fn remove_background_through_stability_in_one_call() {
    let server = MockServer::start().await;
    let cutout = {
        // The subject fills the left half; the right half is removed background.
        let img = image::RgbaImage::from_fn(80, 64, |x, _| {
            image::Rgba([9, 9, 9, if x < 40 { 255 } else { 0 }])
        });
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    Mock::given(method("POST"))
        .and(path("/v2beta/stable-image/edit/remove-background"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("accept", "image/*"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .insert_header("finish-reason", "SUCCESS")
                .insert_header("seed", "0")
                .set_body_bytes(cutout.clone()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;

    // jpeg is not something this endpoint returns; its pixel cap is lower than relight's.
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .multipart(
            Form::new()
                .part("file", Part::bytes(sample_photo()).file_name("p.jpg"))
                .text("provider", "stability")
                .text("output_format", "jpeg")
                .text("background_color", "#ffffff"),
        )
        .send()
        .await
        .unwrap();
    let body = common::assert_error(resp, 400, "invalid_params").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("png or webp"),
        "{body}"
    );
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .multipart(
            Form::new()
                .part(
                    "file",
                    Part::bytes(png(2100, 2100, [5, 5, 5])).file_name("big.png"),
                )
                .text("provider", "stability"),
        )
        .send()
        .await
        .unwrap();
    let body = common::assert_error(resp, 422, "invalid_image").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4194304"),
        "{body}"
    );

    let created = create(
        &base,
        Form::new()
            .part("file", Part::bytes(sample_photo()).file_name("p.jpg"))
            .text("provider", "stability")
            .text("output_format", "png"),
    )
    .await;
    assert_eq!(created["params"]["provider"], "stability");
    let job = job_of(&env, &created).await;
    let run = take_message(&env).await.unwrap();
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    assert_eq!(p.handle_record(&run).await, Outcome::Succeeded);
    let done = reload(&env, &job).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    let result = done.result.unwrap();
    assert_eq!(
        result.foreground_fraction,
        Some(0.5),
        "measured on the provider's alpha"
    );
    assert_eq!(
        result.engine.as_deref(),
        Some("stability/remove-background")
    );
    assert_eq!((result.width, result.height), (80, 64));
    assert_eq!(stored(&env, &result.key).await, cutout);

    let requests = server.received_requests().await.unwrap();
    let parts = multipart_parts(&requests[0]);
    let names: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["image", "output_format"]);
    assert_eq!(parts[0].3, sample_photo());
    assert_eq!(parts[0].2.as_deref(), Some("image/jpeg"));
    assert_eq!(field(&parts, "output_format").as_deref(), Some("png"));
}

#[tokio::test]
async fn submit_errors_map_to_stable_job_codes() {
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    for (status, name, errors, expected) in [
        (
            400,
            "bad_request",
            vec!["background_prompt: must be at most 10000 characters"],
            Some("invalid_input"),
        ),
        (
            422,
            "invalid_language",
            vec!["English is the only supported language for this service."],
            Some("invalid_input"),
        ),
        (
            401,
            "unauthorized",
            vec!["invalid api key"],
            Some("provider_auth"),
        ),
        (
            413,
            "payload_too_large",
            vec!["body over 10 MiB"],
            Some("payload_too_large"),
        ),
        (500, "internal_error", vec!["try again"], None),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(SUBMIT_PATH))
            .respond_with(
                ResponseTemplate::new(status).set_body_json(serde_json::json!({
                    "id": "4c1b1f0e-0000-4000-8000-000000000000", "name": name, "errors": errors
                })),
            )
            .expect(1)
            .mount(&server)
            .await;
        let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
        let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
        let run = take_message(&env).await.unwrap();
        let outcome = p.handle_record(&run).await;
        let after = reload(&env, &job).await;
        match expected {
            Some(code) => {
                assert_eq!(outcome, Outcome::Failed(code.into()), "HTTP {status}");
                let error = after.error.unwrap();
                assert!(
                    error.message.contains(errors[0]),
                    "HTTP {status}: {}",
                    error.message
                );
            }
            None => {
                // 5xx: queued again for another attempt after a backoff; nothing recorded.
                assert!(
                    matches!(outcome, Outcome::Requeued(ref r) if r.contains("provider_error")),
                    "{outcome:?}"
                );
                assert_eq!(after.status, JobStatus::Queued);
                assert!(after.provider_request_id.is_none());
            }
        }
    }
}

/// A paid call at most once per job: an attempt that got Stability's cutout and stored it, then
/// died before the completion write, leaves the job `processing` with the cutout at its
/// deterministic key. The redelivery finishes from that object and does not pay again.
#[tokio::test]
async fn a_stability_cutout_stored_before_a_crash_is_not_bought_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2beta/stable-image/edit/remove-background"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let created = create(
        &base,
        Form::new()
            .part("file", Part::bytes(sample_photo()).file_name("p.jpg"))
            .text("provider", "stability")
            .text("output_format", "png"),
    )
    .await;
    let job = job_of(&env, &created).await;
    let run = take_message(&env).await.unwrap();
    // The state the killed attempt left: claimed (its lease since expired) and the cutout
    // already at the result key.
    let cutout = png(48, 32, [200, 10, 10]);
    let key = shared::job::result_key(&job.owner, job.id, "png");
    env.s3()
        .put_object()
        .bucket(&env.settings.resources.bucket)
        .key(&key)
        .content_type("image/png")
        .body(cutout.clone().into())
        .send()
        .await
        .unwrap();
    {
        use shared::core::JobTransitions;
        let killed_at = time::OffsetDateTime::now_utc() - time::Duration::seconds(70);
        let lease = shared::core::Lease {
            token: "killed".into(),
            until: killed_at.unix_timestamp() + 65,
        };
        env.aws()
            .jobs
            .claim(&job.owner, job.id, &lease, killed_at)
            .await
            .unwrap();
    }
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    assert_eq!(p.handle_record(&run).await, Outcome::Succeeded);
    let done = reload(&env, &job).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    let result = done.result.unwrap();
    assert_eq!(result.key, key);
    assert_eq!((result.width, result.height), (48, 32));
    assert_eq!(stored(&env, &result.key).await, cutout);
    // `expect(0)`: verified when the server drops; checked here too for a clear message.
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "Stability was called again"
    );
}

/// Submits seen by the contract server.
async fn submits(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == SUBMIT_PATH)
        .count()
}

/// Window 2 of the reliability issue, a kill between the paid submit and the request-id record:
/// the redelivery finds the dead attempt's intent without a request id and ends the job
/// `provider_state_unknown` instead of submitting (and paying) again.
#[tokio::test]
async fn a_kill_between_submit_and_record_never_submits_again() {
    let server = MockServer::start().await;
    submit_ok().expect(0).mount(&server).await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.expect("run message");
    {
        use shared::core::{JobTransitions, ProviderTransitions, SubmitIntent};
        // The killed attempt: claimed, wrote its intent, (submitted,) died; its lease ran out.
        let killed_at = time::OffsetDateTime::now_utc() - time::Duration::seconds(70);
        let lease = shared::core::Lease {
            token: "killed".into(),
            until: killed_at.unix_timestamp() + 65,
        };
        let jobs = env.aws().jobs;
        jobs.claim(&job.owner, job.id, &lease, killed_at)
            .await
            .unwrap();
        assert_eq!(
            jobs.record_intent(&job.owner, job.id, "killed")
                .await
                .unwrap(),
            SubmitIntent::Recorded
        );
    }
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    assert_eq!(
        p.handle_record(&run).await,
        Outcome::Failed("provider_state_unknown".into())
    );
    let done = reload(&env, &job).await;
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.error.unwrap().code, "provider_state_unknown");
    assert_eq!(submits(&server).await, 0);
}

/// A submit that times out after the provider may have accepted it is not sent again, neither
/// in the same attempt nor on the redelivery; a submit the provider refused (429) is.
#[tokio::test]
async fn a_submit_that_timed_out_is_not_sent_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"id": GENERATION_ID}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.expect("run message");
    let settings = ProviderSettings {
        stability_timeout: Duration::from_secs(1),
        ..providers(&server)
    };
    let p = provider_processor(&env, settings, Duration::from_secs(90));
    assert_eq!(
        p.handle_record(&run).await,
        Outcome::Failed("provider_state_unknown".into())
    );
    // A redelivery of the same message changes nothing and sends nothing.
    expire_lease(&env, &job).await;
    assert_eq!(
        p.handle_record(&run_record(&job, 2, &env.provisioned.queue_arn))
            .await,
        Outcome::Skipped("already finished")
    );
    assert_eq!(submits(&server).await, 1, "one submit reached the provider");
    assert_eq!(
        reload(&env, &job).await.error.unwrap().code,
        "provider_state_unknown"
    );
}

/// The intent is written right before the paid call: an attempt that fails earlier (here its
/// inputs cannot be read, a transient S3 error) leaves none behind, so the redelivery submits
/// normally instead of ending the job `provider_state_unknown`.
#[tokio::test]
async fn a_failure_before_the_submit_leaves_no_intent_behind() {
    let server = MockServer::start().await;
    submit_ok().expect(1).mount(&server).await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.expect("run message");

    // The same processor, but its bucket is unreachable: reading the inputs fails transiently.
    let mut settings = env.settings.clone();
    settings.segmenter.url = Some("http://127.0.0.1:9".into());
    settings.providers = providers(&server);
    let mut unreachable = settings.clone();
    unreachable.resources.bucket = "no-such-bucket".into();
    let broken = imagejobs_processor::Processor::with_aws(
        &settings,
        &shared::adapters::Aws::with_sdk_config(&env.sdk, &unreachable),
    )
    .unwrap();
    // Transient: the claim is given back (no lease to wait out) and the run queued again.
    let outcome = broken.handle_record(&run).await;
    assert!(matches!(outcome, Outcome::Requeued(_)), "{outcome:?}");
    assert_eq!(submits(&server).await, 0);
    assert_eq!(reload(&env, &job).await.status, JobStatus::Queued);

    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    assert_eq!(
        p.handle_record(&run_record(&job, 2, &env.provisioned.queue_arn))
            .await,
        Outcome::Waiting
    );
    assert_eq!(submits(&server).await, 1);
    assert_eq!(
        reload(&env, &job).await.provider_request_id.as_deref(),
        Some(GENERATION_ID)
    );
}

/// A paid call at most once per job, for the synchronous remove-background too: a call that
/// times out after Stability accepted it leaves no cutout to find, so the stored-result check
/// alone let the redelivery call (and pay) again; the chaos suite counted 2 calls for such
/// jobs. With a submit intent recorded before the call, the job ends `provider_state_unknown`
/// and the redelivery calls nothing. (Remove the intent in `call_stability` and this fails: 2
/// calls.)
#[tokio::test]
async fn a_remove_background_call_whose_answer_is_lost_is_never_made_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2beta/stable-image/edit/remove-background"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_body_bytes(png(80, 64, [1, 2, 3]))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let created = create(
        &base,
        Form::new()
            .part("file", Part::bytes(sample_photo()).file_name("p.jpg"))
            .text("provider", "stability"),
    )
    .await;
    let job = job_of(&env, &created).await;
    let run = take_message(&env).await.unwrap();
    let mut settings = providers(&server);
    settings.stability_timeout = Duration::from_secs(1);
    // A lease already over, so the redelivery below may take the job over at once.
    let p = provider_processor(&env, settings, Duration::ZERO);
    let first = p.handle_record(&run).await;
    // The redelivery a retry (or the sweeper) would make.
    let second = p.handle_record(&run).await;
    let done = reload(&env, &job).await;
    let calls = server.received_requests().await.unwrap().len();
    assert_eq!(
        calls, 1,
        "Stability called {calls} times ({first:?}, {second:?})"
    );
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.error.unwrap().code, "provider_state_unknown");
}

/// A poll lost with its processor (taken off the queue and dropped here, as a SIGKILL leaves it
/// invisible for the queue's 360 s visibility timeout) is replaced by the recovery sweeper once
/// it is overdue — its time plus `POLL_GRACE_SECONDS` — not at the provider deadline (600 s
/// here), and nothing is submitted again. Should the lost poll come back after all, its chain
/// ends there: one chain of polls per job. (Fails when the job's due time stays the deadline,
/// as before: the sweep finds nothing; and when the due time is not the chain's token: two
/// chains poll on.)
#[tokio::test]
async fn a_poll_lost_with_its_processor_is_replaced_by_the_sweeper_within_a_minute() {
    let server = MockServer::start().await;
    submit_ok().expect(1).mount(&server).await;
    results().respond_with(pending()).mount(&server).await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    let run = take_message(&env).await.unwrap();
    let submitted_at = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(p.handle_record(&run).await, Outcome::Waiting);
    let lost = take_message(&env).await.expect("the first poll");
    let first: JobMessage = serde_json::from_str(lost.body.as_deref().unwrap()).unwrap();
    let JobMessage::Poll { due: Some(due), .. } = first else {
        panic!("a poll carrying its due time: {first:?}");
    };
    let grace = shared::resources::POLL_GRACE_SECONDS;
    assert!(
        (submitted_at + grace..=submitted_at + grace + 2).contains(&due),
        "due {} s after the submit, not at the deadline",
        due - submitted_at
    );

    let aws = env.aws();
    let sweeper = shared::recovery::Sweeper::new(
        std::sync::Arc::new(aws.jobs.clone()),
        std::sync::Arc::new(aws.queue.clone()),
        std::sync::Arc::new(aws.jobs.clone()),
        env.settings.jobs.max_receive_count,
    );
    let at = |unix: i64| time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    assert_eq!(sweeper.sweep(at(due - 1), 100).await.unwrap().polled, 0);
    let report = sweeper.sweep(at(due + 1), 100).await.unwrap();
    assert_eq!(report.polled, 1, "{report:?}");
    let replacement = take_message(&env).await.expect("the sweeper's poll");
    assert_eq!(p.handle_record(&replacement).await, Outcome::Waiting);
    assert_eq!(
        env.queued_messages().await,
        1,
        "the replacement chain's next poll"
    );

    assert_eq!(
        p.handle_record(&lost).await,
        Outcome::Skipped("a newer poll of this job is scheduled")
    );
    assert_eq!(
        env.queued_messages().await,
        1,
        "the lost chain sent nothing"
    );
    assert_eq!(reload(&env, &job).await.status, JobStatus::Processing);
    assert_eq!(submits(&server).await, 1);
}

/// A processor that recorded the provider's request id but never sent the first poll (killed
/// right after, or the record's answer was lost) leaves a job the sweeper polls a minute
/// later, not at the provider deadline (600 s here), which would fail a job whose result is
/// ready. (Fails when the submission record's due time is the deadline, as before: the chaos
/// suite's seed 1313 ended such a job `provider_timeout`.)
#[tokio::test]
async fn a_submission_recorded_without_its_first_poll_is_polled_within_a_minute() {
    use shared::core::{JobTransitions, ProviderSubmission, ProviderTransitions};
    let server = MockServer::start().await;
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let job = job_of(&env, &create(&base, relight_form(sample_photo())).await).await;
    take_message(&env)
        .await
        .expect("the run message, handled by the killed processor");
    let now = time::OffsetDateTime::now_utc();
    let jobs = env.aws().jobs;
    let lease = shared::core::Lease {
        token: "killed".into(),
        until: now.unix_timestamp() + 65,
    };
    jobs.claim(&job.owner, job.id, &lease, now).await.unwrap();
    let submission = ProviderSubmission {
        provider: "stability".into(),
        request_id: GENERATION_ID.into(),
        deadline: now.unix_timestamp() + 600,
        links: None,
    };
    assert!(
        jobs.record_submission(&job.owner, job.id, "killed", &submission, now)
            .await
            .unwrap()
    );

    let sweeper = shared::recovery::Sweeper::new(
        std::sync::Arc::new(jobs.clone()),
        std::sync::Arc::new(env.aws().queue),
        std::sync::Arc::new(jobs.clone()),
        env.settings.jobs.max_receive_count,
    );
    let grace = time::Duration::seconds(shared::resources::POLL_GRACE_SECONDS);
    let early = sweeper
        .sweep(now + grace - time::Duration::seconds(1), 100)
        .await
        .unwrap();
    assert_eq!(early.due, 0, "{early:?}");
    let report = sweeper
        .sweep(now + grace + time::Duration::seconds(1), 100)
        .await
        .unwrap();
    assert_eq!(
        report.polled, 1,
        "a poll, never a second submit: {report:?}"
    );
    let poll = take_message(&env).await.expect("the sweeper's poll");
    let message: JobMessage = serde_json::from_str(poll.body.as_deref().unwrap()).unwrap();
    assert!(
        matches!(&message, JobMessage::Poll { request_id, due: Some(_), .. } if request_id == GENERATION_ID),
        "{message:?}"
    );
    // Stability has the result: the poll completes the job.
    results().respond_with(done("SUCCESS")).mount(&server).await;
    let p = provider_processor(&env, providers(&server), Duration::from_secs(90));
    assert_eq!(p.handle_record(&poll).await, Outcome::Succeeded);
    assert_eq!(reload(&env, &job).await.status, JobStatus::Succeeded);
}
