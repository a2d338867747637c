//! `edit` and `generate` end to end: the public API, the jobs queue, the processor and S3 on
//! the emulator, with fal.ai played by a wiremock contract server that checks each request
//! (auth, path, JSON input field by field) and replays the documented answers
//! (`docs/providers.md` §2.2–§2.10), and fal's webhooks signed with
//! a test Ed25519 key published as a JWKS (§2.6).

use crate::common;

use crate::common::fal::*;
use crate::common::queue::{
    batch, job_of, provider_processor, record, reload, run_record, stored, take_message,
    take_message_within,
};
use crate::common::{TestEnv, assert_error, sample_photo};
use ed25519_dalek::{Signer, SigningKey};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use imagejobs_processor::{Outcome, Processor};
use shared::job::{JobMessage, JobStatus};

fn processor(env: &TestEnv, lease: Duration) -> Processor {
    provider_processor(env, env.settings.providers.clone(), lease)
}

fn edit_form(prompt: &str) -> Form {
    Form::new()
        .text("operation", "edit")
        .part(
            "file",
            Part::bytes(sample_photo())
                .file_name("rocket.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        )
        .text("prompt", prompt.to_owned())
}

async fn create(base: &str, form: Form) -> Value {
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body
}

#[tokio::test]
async fn edit_runs_through_api_queue_runner_and_copies_every_output() {
    let server = MockServer::start().await;
    submit(EDIT_MODEL)
        .respond_with(submitted(&server))
        .expect(1)
        .mount(&server)
        .await;
    // IN_QUEUE → IN_PROGRESS → COMPLETED over three polls.
    status()
        .respond_with(in_queue())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    status()
        .respond_with(in_progress())
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    status()
        .respond_with(completed())
        .with_priority(3)
        .mount(&server)
        .await;
    result()
        .respond_with(outputs(&server, 2).await)
        .expect(1)
        .mount(&server)
        .await;

    let mut env = env_for(&server).await;
    let stack = env.start_stack("http://127.0.0.1:9").await;
    let base = stack.api_url();
    let form = edit_form("make it night, keep the rocket")
        .part(
            "reference_1",
            Part::bytes(png(80, 80, [0, 0, 40]))
                .file_name("night.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .text("num_images", "2")
        .text("image_size", "landscape_16_9")
        .text("seed", "42");
    let created = create(&base, form).await;
    assert_eq!(created["operation"], "edit");
    assert_eq!(created["params"]["num_images"], 2);
    let id = created["id"].as_str().unwrap().to_owned();

    let mut job = Value::Null;
    for _ in 0..150 {
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
    assert_eq!(job["provider"], "fal");
    assert_eq!(job["provider_request_id"], REQUEST_ID);
    assert_eq!(job["result"]["engine"], format!("fal/{EDIT_MODEL}"));
    assert_eq!(job["result"]["seed"], 746_406_749);
    let images = job["result"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["key"], format!("results/anonymous/{id}.png"));
    assert_eq!(images[1]["key"], format!("results/anonymous/{id}-1.png"));
    assert_eq!(images[1]["width"], 65);
    // Both outputs were copied byte for byte (fal's URLs expire).
    assert_eq!(
        stored(&env, images[0]["key"].as_str().unwrap()).await,
        png(64, 48, [0, 100, 200])
    );
    assert_eq!(
        stored(&env, images[1]["key"].as_str().unwrap()).await,
        png(65, 48, [10, 100, 200])
    );

    // The submit, field by field (§2.9): the job image first, then the reference, as
    // presigned S3 GET URLs that really serve the stored inputs.
    let sent = submits(&server).await;
    assert_eq!(sent.len(), 1, "the provider saw exactly one submit");
    let body: Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["prompt"], "make it night, keep the rocket");
    assert_eq!(body["num_images"], 2);
    assert_eq!(body["image_size"], "landscape_16_9");
    assert_eq!(body["seed"], 42);
    assert_eq!(body["enable_safety_checker"], true);
    assert_eq!(body.as_object().unwrap().len(), 6, "{body}");
    let urls: Vec<&str> = body["image_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 2);
    assert!(
        urls[0].contains(&format!("inputs/anonymous/{id}/image.jpg")),
        "{}",
        urls[0]
    );
    assert!(
        urls[0].contains("X-Amz-Signature="),
        "presigned: {}",
        urls[0]
    );
    assert!(urls[1].contains(&format!("inputs/anonymous/{id}/reference_1.png")));
    let fetched = reqwest::get(urls[0]).await.unwrap().bytes().await.unwrap();
    assert_eq!(fetched.as_ref(), sample_photo().as_slice());
    assert!(
        sent[0].url.query().is_none(),
        "no webhook without PUBLIC_BASE_URL"
    );

    // Each output has its own result link; past the last is a 404.
    let client = common::anonymous();
    let second = client
        .get(format!("{base}/v1/jobs/{id}/result?index=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status().as_u16(), 303);
    let location = second.headers()["location"].to_str().unwrap();
    assert!(location.contains(&format!("{id}-1.png")), "{location}");
    let past = client
        .get(format!("{base}/v1/jobs/{id}/result?index=2"))
        .send()
        .await
        .unwrap();
    assert_error(past, 404, "result_not_found").await;
}

#[tokio::test]
async fn generate_from_text_alone_uses_the_text_to_image_model() {
    let server = MockServer::start().await;
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
    let env = env_for(&server).await;
    let base = env.serve_api().await;
    let resp = common::anonymous()
        .post(format!("{base}/v1/jobs"))
        .json(&json!({
            "operation": "generate",
            "params": {"mode": "text", "prompt": "a watercolour fox", "num_inference_steps": 30}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let job = job_of(&env, &resp.json().await.unwrap()).await;
    assert!(job.inputs.is_empty());
    let p = processor(&env, Duration::from_secs(90));
    assert_eq!(
        p.handle_record(&take_message(&env).await.unwrap()).await,
        Outcome::Waiting
    );
    assert_eq!(
        p.handle_record(&take_message(&env).await.unwrap()).await,
        Outcome::Succeeded
    );
    let done = reload(&env, &job).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(
        done.result.unwrap().engine.unwrap(),
        format!("fal/{TEXT_MODEL}")
    );
    let body: Value = serde_json::from_slice(&submits(&server).await[0].body).unwrap();
    assert_eq!(
        body,
        json!({"prompt": "a watercolour fox", "num_images": 1, "enable_safety_checker": true})
    );

    // `memory` needs the avatar: refused before anything is stored.
    let env2 = TestEnv::new().await;
    let base2 = env2.serve_api().await;
    let resp = common::anonymous()
        .post(format!("{base2}/v1/jobs"))
        .json(&json!({"operation": "generate", "params": {"mode": "memory", "prompt": "a picnic"}}))
        .send()
        .await
        .unwrap();
    let err = assert_error(resp, 400, "missing_input").await;
    assert!(
        err["error"]["message"].as_str().unwrap().contains("avatar"),
        "{err}"
    );
    env2.assert_nothing_stored().await;
}

#[tokio::test]
async fn subject_mode_sends_the_photo_to_the_edit_model_with_the_portrait_prompt() {
    let server = MockServer::start().await;
    submit(EDIT_MODEL)
        .respond_with(submitted(&server))
        .expect(1)
        .mount(&server)
        .await;
    let env = env_for(&server).await;
    let base = env.serve_api().await;
    let form = Form::new()
        .text("operation", "generate")
        .text("mode", "subject")
        .part(
            "file",
            Part::bytes(sample_photo())
                .file_name("me.jpg")
                .mime_str("image/jpeg")
                .unwrap(),
        );
    let job = job_of(&env, &create(&base, form).await).await;
    let p = processor(&env, Duration::from_secs(90));
    assert_eq!(
        p.handle_record(&take_message(&env).await.unwrap()).await,
        Outcome::Waiting
    );
    let body: Value = serde_json::from_slice(&submits(&server).await[0].body).unwrap();
    assert_eq!(body["prompt"], shared::operation::generate::SUBJECT_PROMPT);
    assert_eq!(body["image_urls"].as_array().unwrap().len(), 1);
    assert_eq!(reload(&env, &job).await.status, JobStatus::Processing);
}

#[tokio::test]
async fn duplicate_delivery_submits_once_and_429_is_retried() {
    let server = MockServer::start().await;
    // The first submit is rate limited (§2.8: 429 from the concurrency limit), the second
    // accepted; a redelivered run message after that must not submit again.
    submit(EDIT_MODEL)
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(json!({"detail": "Too many concurrent requests"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    submit(EDIT_MODEL)
        .respond_with(submitted(&server))
        .with_priority(2)
        .mount(&server)
        .await;
    status().respond_with(completed()).mount(&server).await;
    result()
        .respond_with(outputs(&server, 1).await)
        .mount(&server)
        .await;
    let env = env_for(&server).await;
    let base = env.serve_api().await;
    let job = job_of(&env, &create(&base, edit_form("sepia")).await).await;
    let run = take_message(&env).await.unwrap();
    // A zero lease lets each redelivery take the job over at once.
    let p = processor(&env, Duration::ZERO);

    // The 429 gives the claim back and queues the run again after a backoff (not SQS's
    // 360 s visibility timeout); nothing was submitted.
    let response = p.handle(batch(vec![run.clone()])).await;
    assert!(response.batch_item_failures.is_empty());
    let requeued = reload(&env, &job).await;
    assert_eq!((requeued.status, requeued.attempts), (JobStatus::Queued, 1));
    assert!(requeued.provider_request_id.is_none());
    let retry = take_message_within(&env, Duration::from_secs(15))
        .await
        .expect("the run, queued again after its backoff");
    assert!(
        matches!(serde_json::from_str(retry.body.as_deref().unwrap()).unwrap(), JobMessage::Run { job_id, .. } if job_id == job.id)
    );

    let arn = &env.provisioned.queue_arn;
    assert_eq!(
        p.handle_record(&run_record(&job, 2, arn)).await,
        Outcome::Waiting
    );
    // The same run message delivered twice more (SQS is at-least-once).
    assert_eq!(
        p.handle_record(&run_record(&job, 3, arn)).await,
        Outcome::Waiting
    );
    assert_eq!(
        p.handle_record(&run_record(&job, 3, arn)).await,
        Outcome::Waiting
    );
    assert_eq!(
        submits(&server).await.len(),
        2,
        "one refused submit, then exactly one accepted"
    );
    // Three polls were scheduled; the first completes the job, the rest find it finished.
    let mut outcomes = Vec::new();
    while let Some(poll) = take_message(&env).await {
        outcomes.push(p.handle_record(&poll).await);
    }
    assert_eq!(outcomes[0], Outcome::Succeeded);
    assert!(
        outcomes[1..]
            .iter()
            .all(|o| matches!(o, Outcome::Skipped(_))),
        "{outcomes:?}"
    );
    assert_eq!(reload(&env, &job).await.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn provider_errors_map_to_stable_codes() {
    let server = MockServer::start().await;
    submit(EDIT_MODEL)
        .respond_with(submitted(&server))
        .mount(&server)
        .await;
    status().respond_with(completed()).mount(&server).await;
    // A completed request whose result is the model's moderation error (§2.8 `detail` list).
    result()
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "detail": [{"loc": ["body", "prompt"], "msg": "The prompt was flagged by the content checker",
                        "type": "content_policy_violation"}]
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    result()
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "detail": [{"loc": ["body", "image_size"], "msg": "value is not a valid enumeration member",
                        "type": "type_error.enum"}]
        })))
        .mount(&server)
        .await;
    let env = env_for(&server).await;
    let base = env.serve_api().await;
    let p = processor(&env, Duration::from_secs(90));

    for (prompt, code, words) in [
        (
            "something flagged",
            "content_moderated",
            "flagged by the content checker",
        ),
        (
            "bad size",
            "invalid_input",
            "body.image_size: value is not a valid enumeration member",
        ),
    ] {
        let job = job_of(&env, &create(&base, edit_form(prompt)).await).await;
        assert_eq!(
            p.handle_record(&take_message(&env).await.unwrap()).await,
            Outcome::Waiting
        );
        assert_eq!(
            p.handle_record(&take_message(&env).await.unwrap()).await,
            Outcome::Failed(code.into())
        );
        let error = reload(&env, &job).await.error.unwrap();
        assert_eq!(error.code, code);
        assert!(error.message.contains(words), "{}", error.message);
    }

    // No FAL_KEY: the job fails at once and the message names the setting.
    let mut unconfigured = env.settings.providers.clone();
    unconfigured.fal_key = None;
    let p = provider_processor(&env, unconfigured, Duration::from_secs(90));
    let job = job_of(&env, &create(&base, edit_form("x")).await).await;
    assert_eq!(
        p.handle_record(&take_message(&env).await.unwrap()).await,
        Outcome::Failed("provider_not_configured".into())
    );
    assert!(
        reload(&env, &job)
            .await
            .error
            .unwrap()
            .message
            .contains("FAL_KEY")
    );
}

/// A delivery signed as fal signs it (§2.6).
fn signed_delivery(
    key: &SigningKey,
    request_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let ts = timestamp.to_string();
    let headers = shared::fal_signature::SignedHeaders {
        request_id,
        user_id: "fal-user-1",
        timestamp: &ts,
        signature: "",
    };
    let message = shared::fal_signature::signed_message(&headers, body);
    vec![
        ("x-fal-webhook-request-id", request_id.to_owned()),
        ("x-fal-webhook-user-id", "fal-user-1".to_owned()),
        ("x-fal-webhook-timestamp", ts),
        (
            "x-fal-webhook-signature",
            hex::encode(key.sign(message.as_bytes()).to_bytes()),
        ),
    ]
}

#[tokio::test]
async fn webhooks_are_verified_idempotent_and_complete_the_job() {
    use base64::Engine;
    let fal_key = SigningKey::from_bytes(&[42; 32]);
    let stranger = SigningKey::from_bytes(&[43; 32]);
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519",
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(fal_key.verifying_key().to_bytes())
        }]})))
        .mount(&server)
        .await;
    submit(EDIT_MODEL)
        .respond_with(submitted(&server))
        .expect(1)
        .mount(&server)
        .await;
    status().respond_with(completed()).mount(&server).await;
    result()
        .respond_with(outputs(&server, 1).await)
        .expect(1)
        .mount(&server)
        .await;
    let mut env = env_for(&server).await;
    // Polls far in the future: only the webhook can finish the job within the test.
    env.settings.providers.poll_delay = Duration::from_secs(900);
    let base = env.serve_api().await;
    env.settings.providers.public_base_url = Some(base.clone());
    let job = job_of(&env, &create(&base, edit_form("add snow")).await).await;
    let p = processor(&env, Duration::from_secs(90));
    assert_eq!(
        p.handle_record(&take_message(&env).await.unwrap()).await,
        Outcome::Waiting
    );
    let sent = submits(&server).await;
    let hook: Vec<(String, String)> = sent[0]
        .url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let expected_hook = format!(
        "{base}/v1/providers/fal/webhook?owner=anonymous&job_id={}",
        job.id
    );
    assert_eq!(
        hook,
        vec![("fal_webhook".to_owned(), expected_hook.clone())]
    );
    assert!(take_message(&env).await.is_none(), "the poll is delayed");

    // The webhook payload of §2.6.
    let body = serde_json::to_vec(&json!({
        "request_id": REQUEST_ID, "gateway_request_id": REQUEST_ID, "status": "OK",
        "payload": {"images": [{"url": format!("{}/files/out-0.png", server.uri())}], "seed": 1}
    }))
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let deliver = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let url = expected_hook.clone();
        async move {
            let mut req = common::http().post(url).body(body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            req.send().await.unwrap()
        }
    };

    // Bad signature: 401, nothing changes.
    let resp = deliver(
        signed_delivery(&stranger, REQUEST_ID, now, &body),
        body.clone(),
    )
    .await;
    assert_error(resp, 401, "webhook_signature_invalid").await;
    // Body changed after signing: 401.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let resp = deliver(signed_delivery(&fal_key, REQUEST_ID, now, &body), tampered).await;
    assert_error(resp, 401, "webhook_signature_invalid").await;
    // Stale timestamp (301 s old), correctly signed: 401.
    let resp = deliver(
        signed_delivery(&fal_key, REQUEST_ID, now - 301, &body),
        body.clone(),
    )
    .await;
    assert_error(resp, 401, "webhook_stale").await;
    assert!(take_message(&env).await.is_none());
    assert_eq!(reload(&env, &job).await.status, JobStatus::Processing);

    // Valid: accepted, the completion is queued; the replay is acknowledged without effect.
    let valid = signed_delivery(&fal_key, REQUEST_ID, now, &body);
    let resp = deliver(valid.clone(), body.clone()).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["accepted"], true);
    let resp = deliver(valid, body.clone()).await;
    assert_eq!(resp.status().as_u16(), 200);
    let replay: Value = resp.json().await.unwrap();
    assert_eq!(replay["accepted"], false);
    assert_eq!(replay["reason"], "duplicate delivery");

    let poll = take_message(&env).await.expect("the webhook queued a poll");
    assert!(take_message(&env).await.is_none(), "exactly one");
    assert_eq!(p.handle_record(&poll).await, Outcome::Succeeded);
    assert_eq!(reload(&env, &job).await.status, JobStatus::Succeeded);

    // A signed delivery for another request does not touch a job.
    let other = signed_delivery(&fal_key, "another-request", now, &body);
    let resp = deliver(other, body.clone()).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["accepted"], false);
}

#[tokio::test]
async fn cancel_while_queued_and_while_processing() {
    let server = MockServer::start().await;
    submit(EDIT_MODEL)
        .respond_with(submitted(&server))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("{REQUEST_BASE}/cancel")))
        .and(header("authorization", format!("Key {KEY}").as_str()))
        .respond_with(
            ResponseTemplate::new(202).set_body_json(json!({"status": "CANCELLATION_REQUESTED"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    // Even a result that turns up later is discarded.
    status().respond_with(completed()).mount(&server).await;
    result()
        .respond_with(outputs(&server, 1).await)
        .expect(0)
        .mount(&server)
        .await;
    let mut env = env_for(&server).await;
    env.settings.providers.poll_delay = Duration::from_secs(900);
    let base = env.serve_api().await;
    let client = common::anonymous();
    let p = processor(&env, Duration::from_secs(90));

    // Queued: canceled at once; the run message then does nothing.
    let queued = job_of(&env, &create(&base, edit_form("one")).await).await;
    let resp = client
        .post(format!("{base}/v1/jobs/{}/cancel", queued.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "canceled");
    assert!(matches!(
        p.handle_record(&take_message(&env).await.unwrap()).await,
        Outcome::Skipped(_)
    ));
    assert!(submits(&server).await.is_empty());

    // Processing at fal: canceled here, and fal is told once.
    let running = job_of(&env, &create(&base, edit_form("two")).await).await;
    assert_eq!(
        p.handle_record(&take_message(&env).await.unwrap()).await,
        Outcome::Waiting
    );
    let resp = client
        .post(format!("{base}/v1/jobs/{}/cancel", running.id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let wake = take_message(&env)
        .await
        .expect("the API queued the provider cancel");
    assert!(matches!(p.handle_record(&wake).await, Outcome::Skipped(_)));
    // The scheduled poll arrives later: no second cancel, no result fetched.
    let late_poll = record(
        serde_json::to_string(&JobMessage::Poll {
            owner: running.owner.clone(),
            job_id: running.id,
            request_id: REQUEST_ID.into(),
            attempt: 1,
            due: None,
        })
        .unwrap(),
        1,
        &env.provisioned.queue_arn,
    );
    assert!(matches!(
        p.handle_record(&late_poll).await,
        Outcome::Skipped(_)
    ));
    let after = reload(&env, &running).await;
    assert_eq!(after.status, JobStatus::Canceled);
    assert!(after.result.is_none());
    // A second cancel is a conflict: the job already ended.
    let again = client
        .post(format!("{base}/v1/jobs/{}/cancel", running.id))
        .send()
        .await
        .unwrap();
    assert_error(again, 409, "conflict").await;
}

#[tokio::test]
async fn submit_errors_fail_or_retry_by_kind() {
    let server = MockServer::start().await;
    let env = env_for(&server).await;
    let base = env.serve_api().await;
    let p = processor(&env, Duration::ZERO);
    let arn = env.provisioned.queue_arn.clone();

    // (answer, expected outcome, job error code once failed)
    let cases: Vec<(ResponseTemplate, Option<&str>)> = vec![
        // §2.8: a missing or bad key is 401 `{"detail": …}`: never retried.
        (
            ResponseTemplate::new(401).set_body_json(json!({"detail": "No user found for Key ID and Secret"})),
            Some("provider_auth"),
        ),
        // §2.3: a user-set request timeout is a 504 that must not be retried.
        (
            ResponseTemplate::new(504)
                .insert_header("x-fal-request-timeout-type", "user")
                .insert_header("x-fal-error-type", "request_timeout")
                .set_body_json(json!({"detail": "Request timed out", "error_type": "request_timeout"})),
            Some("provider_timeout"),
        ),
        // §2.8: infrastructure errors are retried (the record goes back to SQS).
        (
            ResponseTemplate::new(503)
                .insert_header("x-fal-error-type", "runner_scheduling_failure")
                .set_body_json(json!({"detail": "No runner available", "error_type": "runner_scheduling_failure"})),
            None,
        ),
    ];
    for (answer, failed_with) in cases {
        server.reset().await;
        // A retried submit is tried again on the redelivery; the others exactly once.
        submit(EDIT_MODEL)
            .respond_with(answer)
            .expect(if failed_with.is_some() { 1 } else { 2 })
            .mount(&server)
            .await;
        let job = job_of(&env, &create(&base, edit_form("x")).await).await;
        let run = take_message(&env).await.unwrap();
        let response = p.handle(batch(vec![run])).await;
        let after = reload(&env, &job).await;
        match failed_with {
            Some(code) => {
                assert!(
                    response.batch_item_failures.is_empty(),
                    "{code}: not retried"
                );
                assert_eq!(after.status, JobStatus::Failed);
                assert_eq!(after.error.unwrap().code, code);
            }
            None => {
                // Not returned to SQS: the claim is given back, counted, and the run queued
                // again after a backoff; the next attempt submits again.
                assert!(response.batch_item_failures.is_empty());
                assert_eq!((after.status, after.attempts), (JobStatus::Queued, 1));
                assert!(after.provider_request_id.is_none());
                let again = p.handle_record(&run_record(&job, 1, &arn)).await;
                assert!(
                    matches!(&again, Outcome::Requeued(r) if r.contains("runner_scheduling_failure")),
                    "{again:?}"
                );
                assert_eq!(reload(&env, &job).await.attempts, 2);
            }
        }
        server.verify().await;
    }
}
