//! Job-end notifications through the whole local stack: webhooks to a receiver on 127.0.0.1
//! (signatures checked by the independent Python `standardwebhooks` implementation), retries
//! with backoff, duplicates, cancel, the SSRF guard at delivery, and e-mail through the
//! emulator's SES v2 (read back from moto's `/moto-api/data.json`).

use crate::common;

use crate::common::{TestEnv, assert_error, sample_photo, upload};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imagejobs_local::emulator::workspace_root;
use shared::core::{JobQueue, JobStore};
use shared::job::{Job, JobMessage, OwnerId};

/// One request the receiver got: its headers (lower-case names) and exact body bytes.
#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The three Standard Webhooks headers, as the verifier takes them.
    fn webhook_headers(&self) -> BTreeMap<String, String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.starts_with("webhook-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

type Deliveries = Arc<Mutex<Vec<Delivery>>>;

/// A webhook receiver on 127.0.0.1 answering each request with the next scripted status (the
/// last repeats).
async fn receiver(script: Vec<u16>) -> (String, Deliveries) {
    slow_receiver(script, Duration::ZERO).await
}

/// [`receiver`], answering each request only after `delay`.
async fn slow_receiver(script: Vec<u16>, delay: Duration) -> (String, Deliveries) {
    let deliveries: Deliveries = Arc::default();
    let seen = deliveries.clone();
    let app = axum::Router::new().route(
        "/hooks/imagejobs",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            let script = script.clone();
            async move {
                let status = {
                    let mut all = seen.lock().unwrap();
                    let status = script[all.len().min(script.len() - 1)];
                    all.push(Delivery {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                            .collect(),
                        body: body.to_vec(),
                    });
                    status
                };
                tokio::time::sleep(delay).await;
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let addr = common::serve_router(app).await;
    (format!("http://{addr}/hooks/imagejobs"), deliveries)
}

fn tiny_png() -> Vec<u8> {
    let img = image::RgbaImage::from_raw(2, 1, vec![255, 0, 0, 255, 0, 0, 0, 0]).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A segmenter following the container contract that succeeds (a 2×1 PNG) or refuses every
/// image with 422 `invalid_image`, after `delay`.
async fn segmenter(succeed: bool, delay: Duration) -> String {
    let app = axum::Router::new()
        .route("/ping", axum::routing::get(|| async { "ok" }))
        .route(
            "/invocations",
            axum::routing::post(move || async move {
                tokio::time::sleep(delay).await;
                if succeed {
                    (
                        StatusCode::OK,
                        [
                            ("content-type", "image/png"),
                            ("x-image-width", "2"),
                            ("x-image-height", "1"),
                            ("x-model", "plain-background"),
                        ],
                        tiny_png(),
                    )
                        .into_response()
                } else {
                    let body = json!({"error": {"code": "invalid_image", "message": "the image is corrupt"}});
                    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
                }
            }),
        );
    format!("http://{}", common::serve_router(app).await)
}

/// Runs the Python `standardwebhooks` verifier on the exact bytes and headers.
fn python_verifies(
    secret: &str,
    body: &[u8],
    headers: &BTreeMap<String, String>,
) -> Result<(), String> {
    let dir = common::tempdir::Dir::new();
    let body_path = dir.path().join("body");
    std::fs::write(&body_path, body).unwrap();
    let out = std::process::Command::new(workspace_root().join(".venv/bin/python"))
        .arg("-c")
        .arg(
            "import json, sys\n\
             from standardwebhooks.webhooks import Webhook\n\
             body = open(sys.argv[2], 'rb').read()\n\
             Webhook(sys.argv[1]).verify(body, json.loads(sys.argv[3]))\n\
             print('verified')",
        )
        .arg(secret)
        .arg(&body_path)
        .arg(serde_json::to_string(headers).unwrap())
        .output()
        .expect(".venv/bin/python with standardwebhooks (bash scripts/setup.sh)");
    if out.status.success() {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "verified");
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn wait_until<F: Fn() -> bool>(what: &str, timeout: Duration, done: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn job_record(env: &TestEnv, owner: &str, id: &str) -> Job {
    env.aws()
        .jobs
        .get(&OwnerId::parse(owner).unwrap(), id.parse().unwrap())
        .await
        .unwrap()
        .expect("the job exists")
}

/// Waits until the job has `count` recorded notification attempts.
async fn wait_for_attempts(env: &TestEnv, owner: &str, id: &str, count: usize) -> Job {
    for _ in 0..200 {
        let job = job_record(env, owner, id).await;
        if job.notifications.len() >= count {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "job {id} never got {count} notification attempts: {:?}",
        job_record(env, owner, id).await.notifications
    );
}

/// Waits until the jobs queue is empty (nothing waiting, delayed or in flight).
async fn wait_for_empty_queue(env: &TestEnv) {
    for _ in 0..200 {
        if env.queued_messages().await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the jobs queue never drained");
}

/// An environment whose webhooks may reach this machine (the development switches) and whose
/// retries come after 1 s, 3 s, … instead of 10 s, 30 s, ….
async fn dev_env() -> TestEnv {
    let mut env = TestEnv::new().await;
    env.settings.egress.allow_http_urls = true;
    env.settings.egress.allow_private_urls = true;
    env.settings.notifications.retry_base = Duration::from_secs(1);
    env.settings.notifications.max_attempts = 3;
    env
}

async fn secret_of(c: &reqwest::Client, base: &str) -> String {
    let resp = c.get(format!("{base}/v1/webhooks")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["secret"].as_str().unwrap().to_owned()
}

async fn create(c: &reqwest::Client, base: &str, form: reqwest::multipart::Form) -> Value {
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_delivered_once_signed_and_verified_independently() {
    let mut env = dev_env().await;
    let (hook, deliveries) = receiver(vec![200]).await;
    let stack = env
        .start_stack(&segmenter(true, Duration::ZERO).await)
        .await;
    let base = stack.api_url();
    let c = env.client("acme").await;

    let secret = secret_of(&c, &base).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(
        secret_of(&c, &base).await,
        secret,
        "created once, then kept"
    );

    let job = create(
        &c,
        &base,
        upload(sample_photo()).text("webhook_url", hook.clone()),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["notify"]["webhook_url"], hook);
    wait_until("the delivery", Duration::from_secs(30), || {
        !deliveries.lock().unwrap().is_empty()
    })
    .await;
    let record = wait_for_attempts(&env, "acme", &id, 1).await;
    let d = deliveries.lock().unwrap()[0].clone();

    assert_eq!(d.header("webhook-id"), format!("msg_{id}_succeeded"));
    assert_eq!(d.header("content-type"), "application/json");
    let ts: i64 = d.header("webhook-timestamp").parse().unwrap();
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - ts).abs() < 60);
    assert!(d.header("webhook-signature").starts_with("v1,"));
    let event = d.json();
    assert_eq!(event["type"], "job.succeeded");
    assert_eq!(event["data"]["id"], id);
    assert_eq!(event["data"]["status"], "succeeded");
    assert_eq!(event["data"]["operation"], "remove_background");
    assert_eq!(
        event["data"]["result"]["key"],
        format!("results/acme/{id}.png")
    );
    assert_eq!(
        event["data"]["links"]["result"],
        format!("/v1/jobs/{id}/result")
    );
    assert_eq!(
        event["timestamp"],
        record
            .finished_at
            .map(|t| t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap())
            .unwrap()
    );

    // The independent implementation accepts exactly these bytes and headers …
    python_verifies(&secret, &d.body, &d.webhook_headers()).expect("signature verifies");
    // … and refuses a tampered body, another secret, or another id.
    let mut tampered = d.body.clone();
    let at = tampered.iter().position(|b| *b == b'}').unwrap();
    tampered.insert(at, b' ');
    assert!(python_verifies(&secret, &tampered, &d.webhook_headers()).is_err());
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(python_verifies(other, &d.body, &d.webhook_headers()).is_err());
    let mut wrong_id = d.webhook_headers();
    wrong_id.insert("webhook-id".into(), format!("msg_{id}_failed"));
    assert!(python_verifies(&secret, &d.body, &wrong_id).is_err());

    assert_eq!(record.notifications.len(), 1, "{:?}", record.notifications);
    let attempt = &record.notifications[0];
    assert_eq!(
        (
            attempt.channel.as_str(),
            attempt.attempt,
            attempt.outcome.as_str(),
            attempt.status
        ),
        ("webhook", 1, "delivered", Some(200))
    );

    // A duplicate notify message finds the delivered attempt and sends nothing.
    env.aws()
        .queue
        .send(
            &JobMessage::Notify {
                owner: OwnerId::parse("acme").unwrap(),
                job_id: id.parse().unwrap(),
                attempt: 1,
            },
            Duration::ZERO,
        )
        .await
        .unwrap();
    wait_for_empty_queue(&env).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deliveries.lock().unwrap().len(), 1, "exactly one delivery");
    assert_eq!(job_record(&env, "acme", &id).await.notifications.len(), 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_and_the_owner_default_url_is_used() {
    let mut env = dev_env().await;
    let (hook, deliveries) = receiver(vec![500, 200]).await;
    let stack = env
        .start_stack(&segmenter(true, Duration::ZERO).await)
        .await;
    let base = stack.api_url();
    let c = env.client("acme").await;

    let resp = c
        .put(format!("{base}/v1/webhooks"))
        .json(&json!({"default_url": "ftp://example.com/x"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "invalid_webhook_url").await;
    let resp = c
        .put(format!("{base}/v1/webhooks"))
        .json(&json!({"url": hook}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "invalid_json").await;
    let resp = c
        .put(format!("{base}/v1/webhooks"))
        .json(&json!({"default_url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let settings: Value = resp.json().await.unwrap();
    assert_eq!(settings["default_url"], hook);
    let secret = settings["secret"].as_str().unwrap().to_owned();

    // No webhook_url on the job: the owner's default receives it.
    let job = create(&c, &base, upload(sample_photo())).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let record = wait_for_attempts(&env, "acme", &id, 2).await;
    let attempts: Vec<_> = record
        .notifications
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str(), a.status))
        .collect();
    assert_eq!(
        attempts,
        [(1, "failed", Some(500)), (2, "delivered", Some(200))]
    );
    let retry_gap = record.notifications[1].at - record.notifications[0].at;
    assert!(
        retry_gap >= time::Duration::milliseconds(900),
        "backoff of NOTIFY_RETRY_BASE_SECONDS: {retry_gap}"
    );
    let all = deliveries.lock().unwrap().clone();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].header("webhook-id"), all[1].header("webhook-id"));
    assert_eq!(all[0].body, all[1].body, "the same event on every attempt");
    python_verifies(&secret, &all[1].body, &all[1].webhook_headers()).unwrap();

    // Rotation: a new secret, and the old deliveries no longer verify with it.
    let rotated: Value = c
        .post(format!("{base}/v1/webhooks/rotate-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    assert_eq!(rotated["default_url"], hook);
    assert!(python_verifies(new_secret, &all[1].body, &all[1].webhook_headers()).is_err());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_sends_job_failed_and_email_without_a_sender_is_one_failed_attempt() {
    let mut env = dev_env().await;
    let (hook, deliveries) = receiver(vec![204]).await;
    let stack = env
        .start_stack(&segmenter(false, Duration::ZERO).await)
        .await;
    let base = stack.api_url();
    let c = env.client("acme").await;
    let secret = secret_of(&c, &base).await;

    let form = upload(sample_photo())
        .text("webhook_url", hook)
        .text("email", "ann@example.com");
    let job = create(&c, &base, form).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let record = wait_for_attempts(&env, "acme", &id, 2).await;
    assert_eq!(record.status, shared::job::JobStatus::Failed);
    let d = deliveries.lock().unwrap()[0].clone();
    assert_eq!(d.header("webhook-id"), format!("msg_{id}_failed"));
    let event = d.json();
    assert_eq!(event["type"], "job.failed");
    assert_eq!(event["data"]["error"]["code"], "invalid_image");
    assert!(event["data"].get("result").is_none());
    python_verifies(&secret, &d.body, &d.webhook_headers()).unwrap();

    let email: Vec<_> = record
        .notifications
        .iter()
        .filter(|a| a.channel == "email")
        .collect();
    assert_eq!(email.len(), 1);
    assert_eq!(email[0].outcome, "failed");
    assert!(
        email[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("NOTIFY_FROM_EMAIL")),
        "{email:?}"
    );
    // Not retried: nothing can change without configuration.
    wait_for_empty_queue(&env).await;
    assert_eq!(job_record(&env, "acme", &id).await.notifications.len(), 2);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_job_sends_job_canceled_and_nothing_else() {
    let mut env = dev_env().await;
    let (hook, deliveries) = receiver(vec![200]).await;
    let stack = env
        .start_stack(&segmenter(true, Duration::from_secs(2)).await)
        .await;
    let base = stack.api_url();
    let c = env.client("acme").await;

    let job = create(&c, &base, upload(sample_photo()).text("webhook_url", hook)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let resp = c
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_for_attempts(&env, "acme", &id, 1).await;
    // The run that was still going ends without a second event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for_empty_queue(&env).await;
    let all = deliveries.lock().unwrap().clone();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].header("webhook-id"), format!("msg_{id}_canceled"));
    assert_eq!(all[0].json()["type"], "job.canceled");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_host_resolving_to_a_private_address_is_refused_at_delivery() {
    let mut env = TestEnv::new().await;
    env.settings.egress.allow_http_urls = true; // but not ALLOW_PRIVATE_URLS
    env.settings.notifications.retry_base = Duration::ZERO;
    let (hook, deliveries) = receiver(vec![200]).await;
    // A host name passes the submission check; it resolves to 127.0.0.1 at delivery.
    let hook = hook.replace("127.0.0.1", "localhost");
    let stack = env
        .start_stack(&segmenter(true, Duration::ZERO).await)
        .await;
    let base = stack.api_url();
    let c = env.client("acme").await;
    let job = create(&c, &base, upload(sample_photo()).text("webhook_url", hook)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let record = wait_for_attempts(&env, "acme", &id, 1).await;
    wait_for_empty_queue(&env).await;
    let record_after = job_record(&env, "acme", &id).await;
    assert_eq!(
        record_after.notifications, record.notifications,
        "not retried"
    );
    let attempt = &record.notifications[0];
    assert_eq!(attempt.outcome, "failed");
    assert!(
        attempt
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("url_address_not_allowed")),
        "{attempt:?}"
    );
    assert!(deliveries.lock().unwrap().is_empty());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_names_the_job_and_links_the_result() {
    let mut env = dev_env().await;
    let from = "notify@imagejobs.test";
    imagejobs_local::provision::verify_email_identity(&env.sdk, from)
        .await
        .unwrap();
    env.settings.notifications.from_email = Some(from.into());
    let stack = env
        .start_stack(&segmenter(true, Duration::ZERO).await)
        .await;
    let base = stack.api_url();
    let c = env.client("acme").await;

    let job = create(
        &c,
        &base,
        upload(sample_photo()).text("email", " ann@example.com "),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["notify"]["email"], "ann@example.com");
    let record = wait_for_attempts(&env, "acme", &id, 1).await;
    assert_eq!(record.notifications[0].channel, "email");
    assert_eq!(record.notifications[0].outcome, "delivered", "{record:?}");

    let messages = env.ses_messages().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert_eq!(m["source"], from);
    assert_eq!(m["destinations"]["ToAddresses"], json!(["ann@example.com"]));
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject.contains(&id) && subject.contains("succeeded"),
        "{subject}"
    );
    let body = m["body"].as_str().unwrap();
    assert!(body.contains(&format!("/v1/jobs/{id}/result")), "{body}");
    // The link is a presigned GET of the result: it works without credentials.
    let link = body
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains("X-Amz-Signature="))
        .unwrap_or_else(|| panic!("no presigned link in {body}"));
    assert!(link.contains(&format!("results/acme/{id}.png")), "{link}");
    let object = reqwest::get(link).await.unwrap();
    assert_eq!(object.status(), 200);
    assert_eq!(object.bytes().await.unwrap().to_vec(), tiny_png());
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_sender_is_a_failed_attempt_not_a_crash() {
    let mut env = dev_env().await;
    env.settings.notifications.from_email = Some("nobody@unverified.test".into());
    env.settings.notifications.retry_base = Duration::ZERO;
    env.settings.notifications.max_attempts = 2;
    let stack = env
        .start_stack(&segmenter(true, Duration::ZERO).await)
        .await;
    let base = stack.api_url();
    let c = env.client("acme").await;
    let job = create(
        &c,
        &base,
        upload(sample_photo()).text("email", "ann@example.com"),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    wait_for_attempts(&env, "acme", &id, 2).await;
    wait_for_empty_queue(&env).await;
    let record = job_record(&env, "acme", &id).await.notifications;
    assert_eq!(record.len(), 2, "NOTIFY_MAX_ATTEMPTS bounds it: {record:?}");
    for (i, attempt) in record.iter().enumerate() {
        assert_eq!(attempt.attempt, i as u32 + 1);
        assert_eq!(attempt.outcome, "failed");
        assert!(
            attempt
                .message
                .as_deref()
                .is_some_and(|m| m.contains("not verified")),
            "{attempt:?}"
        );
    }
    assert_eq!(
        job_record(&env, "acme", &id).await.status,
        shared::job::JobStatus::Succeeded
    );
    assert!(env.ses_messages().await.is_empty());
    // The stack still works.
    let resp = c.get(format!("{base}/v1/jobs/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    stack.shutdown().await;
}

#[tokio::test]
async fn invalid_notification_targets_are_refused_and_nothing_is_stored() {
    let env = TestEnv::new().await;
    let base = env.serve_api().await;
    let c = common::anonymous();
    for email in ["not-an-address", "Ann <ann@example.com>", "ann@"] {
        let resp = c
            .post(format!("{base}/v1/jobs"))
            .multipart(upload(sample_photo()).text("email", email))
            .send()
            .await
            .unwrap();
        assert_error(resp, 422, "invalid_email").await;
    }
    let input = format!("s3://{}/uploads/anonymous/x", env.settings.resources.bucket);
    let resp = c
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"input": input, "email": "nope"}))
        .send()
        .await
        .unwrap();
    assert_error(resp, 422, "invalid_email").await;
    for url in [
        "http://hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "hooks.example.com",
    ] {
        let resp = c
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"input": input, "webhook_url": url}))
            .send()
            .await
            .unwrap();
        assert_error(resp, 422, "invalid_webhook_url").await;
        let resp = c
            .post(format!("{base}/v1/jobs"))
            .multipart(upload(sample_photo()).text("webhook_url", url))
            .send()
            .await
            .unwrap();
        assert_error(resp, 422, "invalid_webhook_url").await;
    }
    env.assert_nothing_stored().await;
}

/// A job of `owner` with a webhook target, failed straight from `queued` by the terminal
/// transition alone: what the table holds when whoever ended the job crashed before queuing
/// its `notify` message (window 5 of the reliability issue).
async fn ended_without_notify(env: &TestEnv, owner: &OwnerId, hook: &str) -> Job {
    use shared::core::JobTransitions;
    let aws = env.aws();
    let now = time::OffsetDateTime::now_utc();
    let mut job = Job::new(
        ulid::Ulid::new(),
        owner.clone(),
        shared::job::Operation::RemoveBackground(
            shared::operation::remove_background::RemoveBackgroundParams::with_model(
                shared::models::PLAIN_BACKGROUND,
            ),
        ),
        Default::default(),
        now,
        time::Duration::days(1),
    );
    job.notify.webhook_url = Some(hook.to_owned());
    aws.jobs.create(&job, None).await.unwrap();
    let error = shared::job::JobError::new("invalid_image", "the image is corrupt");
    aws.jobs
        .fail(owner, job.id, &error, now)
        .await
        .unwrap()
        .expect("queued → failed")
}

/// Whether the job is in the `pending` index at `at` (its outbox entry, once it ended).
async fn in_pending_index(env: &TestEnv, id: ulid::Ulid, at: time::OffsetDateTime) -> bool {
    use shared::core::PendingJobs;
    env.aws()
        .jobs
        .due(at.unix_timestamp(), 1000)
        .await
        .unwrap()
        .iter()
        .any(|p| p.id == id)
}

/// Every message on the jobs queue, taken off it.
async fn drain(env: &TestEnv) -> Vec<JobMessage> {
    let mut messages = Vec::new();
    while let Some(m) = common::queue::take_message(env).await {
        messages.push(serde_json::from_str(m.body.as_deref().unwrap()).unwrap());
    }
    messages
}

fn sweeper(env: &TestEnv) -> shared::recovery::Sweeper {
    let aws = env.aws();
    shared::recovery::Sweeper::new(
        Arc::new(aws.jobs.clone()),
        Arc::new(aws.queue.clone()),
        Arc::new(aws.jobs.clone()),
        env.settings.jobs.max_receive_count,
    )
}

fn notifier(env: &TestEnv) -> imagejobs_processor::delivery::Notifier {
    imagejobs_processor::delivery::Notifier::with_aws(&env.sdk, &env.settings, &env.aws()).unwrap()
}

/// The terminal transition writes the outbox entry itself, so a job whose ender crashed
/// before queuing `notify` is still notified: the sweeper relays the entry once its grace is
/// over, and the handler clears it once the webhook is delivered. (Fails when the terminal
/// write removes the job from the `pending` index, as it did before the outbox: nothing is
/// ever sent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_job_whose_notify_was_never_queued_is_notified_through_the_outbox() {
    let env = dev_env().await;
    let (hook, deliveries) = receiver(vec![200]).await;
    let owner = OwnerId::parse("acme").unwrap();
    let job = ended_without_notify(&env, &owner, &hook).await;
    let now = time::OffsetDateTime::now_utc();
    let grace = time::Duration::seconds(shared::resources::OUTBOX_GRACE_SECONDS);

    assert!(
        !in_pending_index(&env, job.id, now).await,
        "not due before the grace is over: its ender may still queue the message"
    );
    assert!(in_pending_index(&env, job.id, now + grace + time::Duration::seconds(2)).await);
    assert_eq!(env.queued_messages().await, 0, "nothing was queued");

    let report = sweeper(&env)
        .sweep(now + grace + time::Duration::seconds(2), 100)
        .await
        .unwrap();
    assert_eq!((report.due, report.relayed), (1, 1), "{report:?}");
    assert!(
        in_pending_index(&env, job.id, now + time::Duration::hours(1)).await,
        "the relayed entry stays until the handler settles it"
    );
    let messages = drain(&env).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let JobMessage::Notify {
        owner: o, job_id, ..
    } = &messages[0]
    else {
        panic!("a notify message: {messages:?}")
    };
    assert_eq!((o, *job_id), (&owner, job.id));

    notifier(&env).handle(&owner, job.id, 1).await;
    let sent = deliveries.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].header("webhook-id"),
        format!("msg_{}_failed", job.id)
    );
    assert_eq!(sent[0].json()["type"], "job.failed");
    assert!(
        !in_pending_index(&env, job.id, now + time::Duration::hours(1)).await,
        "delivered: the handler cleared the entry"
    );
    // A second pass finds nothing left to relay.
    let again = sweeper(&env)
        .sweep(now + grace + time::Duration::seconds(120), 100)
        .await
        .unwrap();
    assert_eq!(again.relayed, 0, "{again:?}");
}

/// The writer of the terminal transition queues one `notify`, and the outbox entry stays until
/// that message's handler has delivered: a `notify` held by a processor that is then killed
/// (here: taken off the queue and dropped) is relayed by the sweeper a minute after the job
/// ended, not after the queue's 360 s visibility timeout, and the webhook is POSTed once.
/// (Fails when the entry is cleared at the send, as before: the sweeper finds nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_lost_with_its_processor_is_relayed_by_the_sweeper_and_posted_once() {
    let env = dev_env().await;
    let (hook, deliveries) = receiver(vec![200]).await;
    let owner = OwnerId::parse("acme").unwrap();
    let job = ended_without_notify(&env, &owner, &hook).await;
    let now = time::OffsetDateTime::now_utc();
    let later = now + time::Duration::hours(1);
    let aws = env.aws();
    let sent = shared::notification::enqueue_for_ended_job(&job, &aws.notifications, &aws.queue)
        .await
        .unwrap();
    assert!(sent);
    assert!(
        in_pending_index(&env, job.id, later).await,
        "kept until delivered"
    );
    assert_eq!(drain(&env).await.len(), 1, "one notify, now lost");

    let due = now + time::Duration::seconds(shared::resources::OUTBOX_GRACE_SECONDS + 2);
    let report = sweeper(&env).sweep(due, 100).await.unwrap();
    assert_eq!(report.relayed, 1, "{report:?}");
    let messages = drain(&env).await;
    assert!(
        matches!(messages.as_slice(), [JobMessage::Notify { job_id, .. }] if *job_id == job.id),
        "{messages:?}"
    );
    notifier(&env).handle(&owner, job.id, 1).await;
    assert_eq!(deliveries.lock().unwrap().len(), 1);
    assert!(
        !in_pending_index(&env, job.id, later).await,
        "settled: cleared"
    );
    // Should the lost message come back after all, it sends nothing.
    notifier(&env).handle(&owner, job.id, 1).await;
    assert_eq!(deliveries.lock().unwrap().len(), 1);
}

/// A failed delivery moves the outbox entry past the retry it scheduled: the sweeper does not
/// relay the job early (which would retry before the backoff), only once that retry is overdue
/// too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_delivery_retry_moves_the_outbox_entry_past_it() {
    let mut env = dev_env().await;
    // Long enough to tell the moved entry (+30 s + grace) from the first one (+grace).
    env.settings.notifications.retry_base = Duration::from_secs(30);
    let (hook, deliveries) = receiver(vec![500, 200]).await;
    let owner = OwnerId::parse("acme").unwrap();
    let job = ended_without_notify(&env, &owner, &hook).await;
    let start = time::OffsetDateTime::now_utc();
    notifier(&env).handle(&owner, job.id, 1).await;
    assert_eq!(
        deliveries.lock().unwrap().len(),
        1,
        "the first attempt, answered 500"
    );
    assert_eq!(env.queued_messages().await, 1, "the retry, delayed");
    // The retry is due after NOTIFY_RETRY_BASE_SECONDS; the entry a grace after it.
    let base = env.settings.notifications.retry_base.as_secs() as i64;
    let grace = shared::resources::OUTBOX_GRACE_SECONDS;
    let seconds = |s: i64| start + time::Duration::seconds(s);
    assert!(!in_pending_index(&env, job.id, seconds(grace + 2)).await);
    assert!(in_pending_index(&env, job.id, seconds(base + grace + 3)).await);
    // That retry, handled, delivers and settles the entry.
    notifier(&env).handle(&owner, job.id, 2).await;
    assert_eq!(deliveries.lock().unwrap().len(), 2);
    assert!(!in_pending_index(&env, job.id, seconds(3600)).await);
}

/// Two (here three) `notify` messages for one job handled at the same moment POST the webhook
/// once: each send runs under the channel's delivery claim. (Without the claim all three
/// handlers read "no delivered attempt yet" while the first POST is in flight, and all POST.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_messages_handled_at_once_post_the_webhook_once() {
    let env = dev_env().await;
    let (hook, deliveries) = slow_receiver(vec![200], Duration::from_millis(800)).await;
    let owner = OwnerId::parse("acme").unwrap();
    let job = ended_without_notify(&env, &owner, &hook).await;
    let notifier = notifier(&env);
    let (a, b, c) = tokio::join!(
        notifier.handle(&owner, job.id, 1),
        notifier.handle(&owner, job.id, 1),
        notifier.handle(&owner, job.id, 1),
    );
    assert_eq!(deliveries.lock().unwrap().len(), 1, "{a:?} {b:?} {c:?}");
    let record = job_record(&env, "acme", &job.id.to_string()).await;
    assert_eq!(record.notifications.len(), 1, "{:?}", record.notifications);
    assert_eq!(record.notifications[0].outcome, "delivered");
    // Settled: a later duplicate sends nothing either.
    notifier.handle(&owner, job.id, 1).await;
    assert_eq!(deliveries.lock().unwrap().len(), 1);
}
