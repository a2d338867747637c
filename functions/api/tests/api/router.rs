//! The API's router in process: requests go through `tower::ServiceExt::oneshot` into
//! [`imagejobs_api::router`] over the in-memory fakes of `shared::fakes`, no emulator and no
//! network, and each test asserts on the answer and on what landed in the fakes.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use imagejobs_api::{AppState, Ports};
use shared::auth::Scope;
use shared::config::Settings;
use shared::egress::FetchPolicy;
use shared::fakes::{FakeProbe, InMemoryApiKeys, InMemoryBlobs, InMemoryJobs, InMemoryQueue};
use shared::job::{JobMessage, JobStatus, OwnerId};

const BOUNDARY: &str = "imagejobs-test-boundary";

/// The router over fresh fakes, with handles on them for assertions.
struct Api {
    router: Router,
    jobs: Arc<InMemoryJobs>,
    blobs: Arc<InMemoryBlobs>,
    queue: Arc<InMemoryQueue>,
    keys: Arc<InMemoryApiKeys>,
}

impl Api {
    fn new() -> Self {
        let settings = Settings::new("jobs", "https://sqs.invalid/jobs", "images");
        let jobs = Arc::new(InMemoryJobs::new());
        let blobs = Arc::new(InMemoryBlobs::new("images"));
        let queue = Arc::new(InMemoryQueue::new());
        let keys = Arc::new(InMemoryApiKeys::new());
        let ports = Ports {
            store: jobs.clone(),
            provider_transitions: jobs.clone(),
            blobs: blobs.clone(),
            queue: queue.clone(),
            keys: keys.clone(),
            uploads: jobs.clone(),
            capabilities: jobs.clone(),
            notifications: jobs.clone(),
            probes: vec![Arc::new(FakeProbe::healthy("table"))],
            // Never called here: no test sends a URL input.
            fetcher: Arc::new(
                shared::adapters::PublicHttp::new(FetchPolicy::for_inputs(&settings)).unwrap(),
            ),
        };
        let state = AppState::from_ports(settings, ports).unwrap();
        Self {
            router: imagejobs_api::router(state),
            jobs,
            blobs,
            queue,
            keys,
        }
    }

    /// A key for `owner` with `jobs:read` and `jobs:write`.
    fn key(&self, owner: &str) -> String {
        self.keys.create_key(
            &OwnerId::parse(owner).unwrap(),
            &[Scope::JobsRead, Scope::JobsWrite],
        )
    }

    /// Sends `req`; the status and the body as JSON (`Null` when empty).
    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        (status, body)
    }
}

/// A small valid PNG, `w`×`h`, opaque grey.
fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(w, h, image::Rgba([128, 128, 128, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A `multipart/form-data` body with the file part `file` and the given text fields.
fn multipart_body(file: &[u8], fields: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.png\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// `POST /v1/jobs` with a multipart body, the key and, when given, an `Idempotency-Key`.
fn create_request(key: &str, body: Vec<u8>, idempotency_key: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    req.body(Body::from(body)).unwrap()
}

fn get_job(key: &str, id: &str) -> Request<Body> {
    Request::get(format!("/v1/jobs/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::empty())
        .unwrap()
}

/// Asserts the API's error shape, `{"error": {"code", "message"}}`, and the code.
fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error has a message: {body}"
    );
}

#[tokio::test]
async fn creating_a_job_needs_credentials() {
    let api = Api::new();
    let req = Request::post("/v1/jobs")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(multipart_body(&png(4, 4), &[])))
        .unwrap();
    let (status, body) = api.send(req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "unauthorized");
    assert!(api.jobs.jobs().is_empty());
    assert!(api.queue.sent().is_empty());

    // A well-formed key that was never issued is refused as such.
    let (status, body) = api
        .send(create_request(
            "ij_live_000000000000000000000000000000000000000000000000",
            multipart_body(&png(4, 4), &[]),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "invalid_api_key");
}

#[tokio::test]
async fn a_multipart_job_is_stored_uploaded_and_queued() {
    let api = Api::new();
    let key = api.key("team-a");
    let (status, body) = api
        .send(create_request(&key, multipart_body(&png(8, 6), &[]), None))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "body: {body}");
    let id = body["id"].as_str().expect("the job's id").to_owned();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["links"]["self"], format!("/v1/jobs/{id}"));

    let stored = api.jobs.jobs();
    assert_eq!(stored.len(), 1);
    let job = &stored[0];
    assert_eq!(job.id.to_string(), id);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.owner.as_str(), "team-a");

    let input_key = format!("inputs/team-a/{id}/image.png");
    assert_eq!(api.blobs.keys(), std::slice::from_ref(&input_key));
    let object = api.blobs.object(&input_key).unwrap();
    assert_eq!(object.body.as_ref(), png(8, 6).as_slice());

    let sent = api.queue.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].message,
        JobMessage::Run {
            owner: job.owner.clone(),
            job_id: job.id,
        }
    );
    // The key's use was recorded.
    assert!(api.keys.record(&key).unwrap().last_used_at.is_some());
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_request_and_refuses_another() {
    let api = Api::new();
    let key = api.key("team-a");
    let image = png(8, 6);
    let (first_status, first) = api
        .send(create_request(
            &key,
            multipart_body(&image, &[]),
            Some("k-1"),
        ))
        .await;
    assert_eq!(first_status, StatusCode::ACCEPTED, "body: {first}");

    let resp = api
        .router
        .clone()
        .oneshot(create_request(
            &key,
            multipart_body(&image, &[]),
            Some("k-1"),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    let again: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(api.jobs.jobs().len(), 1);
    assert_eq!(api.queue.sent().len(), 1, "a replay queues nothing");
    assert_eq!(api.blobs.keys().len(), 1, "a replay stores nothing");

    // Same key, another image: refused, and nothing more is stored or queued.
    let (status, body) = api
        .send(create_request(
            &key,
            multipart_body(&png(5, 5), &[]),
            Some("k-1"),
        ))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "idempotency_key_reused");
    assert_eq!(api.jobs.jobs().len(), 1);
    assert_eq!(api.queue.sent().len(), 1);
}

#[tokio::test]
async fn a_job_is_visible_to_its_owner_only() {
    let api = Api::new();
    let owner_key = api.key("team-a");
    let other_key = api.key("team-b");
    let (_, created) = api
        .send(create_request(
            &owner_key,
            multipart_body(&png(4, 4), &[]),
            None,
        ))
        .await;
    let id = created["id"].as_str().unwrap();

    let (status, body) = api.send(get_job(&owner_key, id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], id);
    assert_eq!(body["status"], "queued");
    assert_eq!(body["links"]["result"], format!("/v1/jobs/{id}/result"));

    let (status, body) = api.send(get_job(&other_key, id)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "job_not_found");

    // Not a ULID at all: the same answer as an unknown id.
    let (status, body) = api.send(get_job(&owner_key, "not-a-job")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "job_not_found");
}

#[tokio::test]
async fn a_malformed_json_body_is_invalid_json() {
    let api = Api::new();
    let key = api.key("team-a");
    let req = Request::post("/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"input": "#))
        .unwrap();
    let (status, body) = api.send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_json");
    assert!(api.jobs.jobs().is_empty());
    assert!(api.queue.sent().is_empty());
}

#[tokio::test]
async fn bytes_that_are_no_image_are_refused_before_anything_is_stored() {
    let api = Api::new();
    let key = api.key("team-a");
    let (status, body) = api
        .send(create_request(
            &key,
            multipart_body(b"hello, not an image", &[]),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&body, "unsupported_image");

    // A PNG cut short after its header decodes no further.
    let full = png(64, 64);
    let (status, body) = api
        .send(create_request(&key, multipart_body(&full[..40], &[]), None))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "body: {body}");
    assert_error(&body, "invalid_image");

    assert!(api.jobs.jobs().is_empty());
    assert!(api.blobs.keys().is_empty());
    assert!(api.queue.sent().is_empty());
}

#[tokio::test]
async fn a_key_without_jobs_write_cannot_create() {
    let api = Api::new();
    let key = api
        .keys
        .create_key(&OwnerId::parse("team-a").unwrap(), &[Scope::JobsRead]);
    let (status, body) = api
        .send(create_request(&key, multipart_body(&png(4, 4), &[]), None))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&body, "insufficient_scope");
    assert!(api.jobs.jobs().is_empty());
}

#[tokio::test]
async fn health_reports_the_probes() {
    let api = Api::new();
    let (status, body) = api
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::OK, "body: {body}");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn models_lists_the_catalog_with_provenance_and_the_default() {
    let api = Api::new();
    let list = |key: &str| {
        Request::get("/v1/models")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, body) = api
        .send(Request::get("/v1/models").body(Body::empty()).unwrap())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "unauthorized");

    let (status, body) = api.send(list(&api.key("team-a"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Settings::new's default model.
    assert_eq!(body["default_model"], "u2net");
    let models = body["models"].as_array().unwrap();
    assert_eq!(models.len(), shared::models::CATALOG.len() + 1);
    assert_eq!(models[0]["name"], "plain-background");
    assert_eq!(models[0]["kind"], "builtin");
    let defaults: Vec<&Value> = models.iter().filter(|m| m["default"] == true).collect();
    assert_eq!(defaults.len(), 1);
    assert_eq!(defaults[0]["name"], "u2net");
    // The weights installed from registry packages carry their pinned checksum.
    let isnet = models.iter().find(|m| m["name"] == "isnet").unwrap();
    assert_eq!(isnet["kind"], "onnx");
    assert_eq!(isnet["input"], serde_json::json!([1024, 1024]));
    assert_eq!(
        isnet["provenance"]["package"],
        shared::models::IMGLY_PACKAGE
    );
    assert_eq!(
        isnet["provenance"]["sha256"].as_str().map(str::len),
        Some(64)
    );
}
