//! The web console's routes in process (`imagejobs_api::console`): the page and its files with
//! their own CSP, and the same-origin byte routes, over the in-memory fakes of `shared::fakes`.
//! The page itself is driven in a real Chromium by `scripts/console-test.sh`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::Value;
use time::OffsetDateTime;
use tower::ServiceExt as _;
use ulid::Ulid;

use imagejobs_api::console::{CONSOLE_CSP, MAX_PROXIED_BYTES};
use imagejobs_api::{AppState, Ports};
use shared::auth::Scope;
use shared::config::Settings;
use shared::core::{BlobStore as _, Claim, JobTransitions as _, Lease};
use shared::egress::FetchPolicy;
use shared::fakes::{FakeProbe, InMemoryApiKeys, InMemoryBlobs, InMemoryJobs, InMemoryQueue};
use shared::job::{JobResult, OwnerId};

const BOUNDARY: &str = "imagejobs-console-boundary";

struct Api {
    router: Router,
    jobs: Arc<InMemoryJobs>,
    blobs: Arc<InMemoryBlobs>,
    keys: Arc<InMemoryApiKeys>,
}

impl Api {
    fn new() -> Self {
        let settings = Settings::new("jobs", "https://sqs.invalid/jobs", "images");
        let jobs = Arc::new(InMemoryJobs::new());
        let blobs = Arc::new(InMemoryBlobs::new("images"));
        let keys = Arc::new(InMemoryApiKeys::new());
        let ports = Ports {
            store: jobs.clone(),
            provider_transitions: jobs.clone(),
            blobs: blobs.clone(),
            queue: Arc::new(InMemoryQueue::new()),
            keys: keys.clone(),
            uploads: jobs.clone(),
            capabilities: jobs.clone(),
            notifications: jobs.clone(),
            probes: vec![Arc::new(FakeProbe::healthy("table"))],
            // Never called: no test sends a URL input.
            fetcher: Arc::new(
                shared::adapters::PublicHttp::new(FetchPolicy::for_inputs(&settings)).unwrap(),
            ),
        };
        Self {
            router: imagejobs_api::router(AppState::from_ports(settings, ports).unwrap()),
            jobs,
            blobs,
            keys,
        }
    }

    fn key(&self, owner: &str) -> String {
        self.keys.create_key(
            &OwnerId::parse(owner).unwrap(),
            &[Scope::JobsRead, Scope::JobsWrite],
        )
    }

    /// GET `path` with the key, if any: status, headers, body.
    async fn get(&self, path: &str, key: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::get(path);
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, body)
    }

    /// Submits `image` as a `remove_background` job through `POST /v1/jobs`; its id.
    async fn submit(&self, key: &str, image: &[u8]) -> String {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.png\"\r\nContent-Type: image/png\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(image);
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let req = Request::post("/v1/jobs")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(body))
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let job: Value = serde_json::from_slice(&body).unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    /// Runs the job to `succeeded` the way a processor does (claim, store, complete), with
    /// `result` stored as its output and `recorded_bytes` as the record's size.
    async fn finish(&self, owner: &str, id: &str, result: &[u8], recorded_bytes: u64) {
        let owner = OwnerId::parse(owner).unwrap();
        let id = Ulid::from_string(id).unwrap();
        let now = OffsetDateTime::now_utc();
        let lease = Lease {
            token: "lease".into(),
            until: now.unix_timestamp() + 60,
        };
        let claim = self.jobs.claim(&owner, id, &lease, now).await.unwrap();
        assert!(matches!(claim, Claim::Claimed(_)), "{claim:?}");
        let key = format!("results/{owner}/{id}.png");
        self.blobs
            .put(&key, Bytes::copy_from_slice(result), "image/png")
            .await
            .unwrap();
        let result = JobResult {
            key,
            content_type: "image/png".into(),
            width: 3,
            height: 2,
            bytes: recorded_bytes,
            engine: Some("u2netp".into()),
            foreground_fraction: Some(0.5),
            images: Vec::new(),
            seed: None,
        };
        self.jobs
            .complete(&owner, id, &lease.token, &result, now)
            .await
            .unwrap();
    }
}

fn png(w: u32, h: u32, alpha: u8) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(w, h, image::Rgba([10, 20, 30, alpha]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn error_code(body: &Bytes) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(body));
    });
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    v["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_page_and_its_files_carry_the_console_csp_and_the_api_keeps_its_own() {
    let api = Api::new();
    for (path, kind, needle) in [
        (
            "/console",
            "text/html",
            "<script type=\"module\" src=\"/console/app.js\">",
        ),
        ("/console/", "text/html", "<title>imagejobs console</title>"),
        ("/console/app.js", "text/javascript", "/console/api/jobs/"),
        ("/console/style.css", "text/css", ".checker"),
    ] {
        let (status, headers, body) = api.get(path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONSOLE_CSP,
            "{path}"
        );
        // The router's other security headers still apply.
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert!(String::from_utf8_lossy(&body).contains(needle), "{path}");
    }
    let (status, _, body) = api.get("/console/secrets.txt", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "route_not_found");
    let (_, headers, _) = api.get("/health", None).await;
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        "default-src 'none'; frame-ancestors 'none'"
    );
}

#[tokio::test]
async fn the_byte_routes_serve_the_owners_images_and_refuse_as_the_result_route_does() {
    let api = Api::new();
    let key = api.key("team-a");
    let input = png(3, 2, 255);
    let id = api.submit(&key, &input).await;
    let result_path = format!("/console/api/jobs/{id}/result");

    // Not finished: the same refusal as GET /v1/jobs/{id}/result; the input is already there.
    let (status, _, body) = api.get(&result_path, Some(&key)).await;
    assert_eq!(status, StatusCode::LOCKED);
    assert_eq!(error_code(&body), "job_not_finished");
    let (status, headers, body) = api
        .get(&format!("/console/api/jobs/{id}/input"), Some(&key))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(body.as_ref(), input.as_slice());

    let cutout = png(3, 2, 0);
    api.finish("team-a", &id, &cutout, cutout.len() as u64)
        .await;
    let (status, headers, body) = api.get(&result_path, Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(body.as_ref(), cutout.as_slice());

    // Only with the owner's key; the index as on the result route.
    let (status, _, body) = api.get(&result_path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body:?}");
    let other = api.key("team-b");
    let (status, _, body) = api.get(&result_path, Some(&other)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "job_not_found");
    let (status, _, body) = api.get(&format!("{result_path}?index=1"), Some(&key)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "result_not_found");
    let (status, _, body) = api
        .get(&format!("{result_path}?index=first"), Some(&key))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_params");
}

#[tokio::test]
async fn an_image_over_the_lambda_response_limit_is_refused_before_it_is_read() {
    let api = Api::new();
    let key = api.key("team-a");
    let id = api.submit(&key, &png(3, 2, 255)).await;
    // The record's size decides: the stored bytes are small, the recorded size is not.
    api.finish("team-a", &id, &png(3, 2, 0), MAX_PROXIED_BYTES + 1)
        .await;
    let (status, _, body) = api
        .get(&format!("/console/api/jobs/{id}/result"), Some(&key))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "image_too_large_for_console");
}
