//! The OpenAPI document against the router that serves it, in process over the in-memory
//! fakes: every routed path and method is documented (and nothing documented is unrouted), the
//! document is OpenAPI 3.1 with the three security schemes, `/docs/` works offline under its
//! own CSP while everything else keeps `default-src 'none'`, errors carry the request id, and job
//! creation reports its per-minute window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use imagejobs_api::{AppState, Ports};
use shared::auth::Scope;
use shared::config::Settings;
use shared::egress::FetchPolicy;
use shared::fakes::{FakeProbe, InMemoryApiKeys, InMemoryBlobs, InMemoryJobs, InMemoryQueue};
use shared::job::OwnerId;

const BOUNDARY: &str = "imagejobs-openapi-boundary";

struct Api {
    router: Router,
    keys: Arc<InMemoryApiKeys>,
}

impl Api {
    fn new() -> Self {
        Self::with_probe(FakeProbe::healthy("table"))
    }

    fn with_probe(probe: FakeProbe) -> Self {
        let settings = Settings::new("jobs", "https://sqs.invalid/jobs", "images");
        let jobs = Arc::new(InMemoryJobs::new());
        let keys = Arc::new(InMemoryApiKeys::new());
        let ports = Ports {
            store: jobs.clone(),
            provider_transitions: jobs.clone(),
            blobs: Arc::new(InMemoryBlobs::new("images")),
            queue: Arc::new(InMemoryQueue::new()),
            keys: keys.clone(),
            uploads: jobs.clone(),
            capabilities: jobs.clone(),
            notifications: jobs.clone(),
            probes: vec![Arc::new(probe)],
            fetcher: Arc::new(
                shared::adapters::PublicHttp::new(FetchPolicy::for_inputs(&settings)).unwrap(),
            ),
        };
        let state = AppState::from_ports(settings, ports).unwrap();
        Self {
            router: imagejobs_api::router(state),
            keys,
        }
    }

    fn key(&self) -> String {
        self.keys.create_key(
            &OwnerId::parse("team-a").unwrap(),
            &[Scope::JobsRead, Scope::JobsWrite],
        )
    }

    async fn send(&self, req: Request<Body>) -> axum::response::Response {
        self.router.clone().oneshot(req).await.unwrap()
    }
}

async fn body_bytes(resp: axum::response::Response) -> Vec<u8> {
    axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec()
}

fn document() -> Value {
    serde_json::from_str(&imagejobs_api::openapi_json()).unwrap()
}

/// The documented operations: path → methods (upper case).
fn documented(doc: &Value) -> BTreeMap<String, BTreeSet<String>> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .map(|k| k.to_ascii_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// The paths the router matches. axum has no API that lists routes, but its `Debug` output
/// prints the path table (`Node { paths: {RouteId(0): "/v1/jobs", …} }`): the quoted strings
/// after `RouteId(n): `. A change of that format fails here loudly (no paths found), not
/// silently.
fn routed_paths(router: &Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let mut paths = BTreeSet::new();
    let mut rest = debug.as_str();
    while let Some(at) = rest.find("): \"/") {
        let start = at + 4;
        let end = start + rest[start..].find('"').unwrap();
        let path = &rest[start..end];
        // axum's own catch-all of the fallback, not a route of ours.
        if !path.contains("__private__axum") {
            paths.insert(path.to_owned());
        }
        rest = &rest[end..];
    }
    paths
}

/// `path` with each `{param}` replaced by a value no handler knows.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "01ARZ3NDEKTSV4RRFFQ69G5FAV"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_operation_id_is_unique() {
    // utoipa takes a handler's function name as its id; two modules' `asset` once collided,
    // which OpenAPI forbids and openapi-spec-validator refuses.
    let doc = document();
    let mut seen = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            if let Some(first) = seen.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId {id} on both {first} and {method} {path}");
            }
        }
    }
    assert!(seen.len() > 20, "{seen:?}");
}

#[tokio::test]
async fn every_routed_path_and_method_is_documented_and_nothing_else() {
    let api = Api::new();
    let doc = document();
    let documented = documented(&doc);
    let routed = routed_paths(&api.router);
    assert!(
        routed.len() > 20,
        "the router's path table was not found in its Debug output: {routed:?}"
    );
    let documented_paths: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(
        routed, documented_paths,
        "routed paths (left) and documented paths (right) differ"
    );
    // Methods: a path answers 405 `method_not_allowed` exactly for the methods it does not
    // serve. No credential is sent, so no handler does any work beyond refusing.
    for (path, methods) in &documented {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ] {
            let resp = api
                .send(
                    Request::builder()
                        .method(method.clone())
                        .uri(concrete(path))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await;
            let served = resp.status() != StatusCode::METHOD_NOT_ALLOWED;
            assert_eq!(
                served,
                methods.contains(method.as_str()),
                "{method} {path}: answered {}, documented methods {methods:?}",
                resp.status()
            );
        }
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_the_three_security_schemes() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["jwt"]["scheme"], "bearer");
    assert_eq!(schemes["jwt"]["bearerFormat"], "JWT");
    assert_eq!(schemes["basic"]["scheme"], "basic");
    // Seed 003's POST /process takes HTTP Basic (its Python client puts the key in the URL).
    let process = doc["paths"]["/process"]["post"]["security"].to_string();
    assert!(process.contains("\"basic\""), "{process}");
    // Every operation lists its answers, and every error answer is the error envelope.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}");
            for (status, resp) in responses {
                if status.starts_with('4') || status == "503" {
                    let schema = resp["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .unwrap_or_default();
                    let envelope = schema.ends_with("/ErrorBody")
                        || (path.starts_with("/health") && status == "503");
                    assert!(envelope, "{method} {path} {status}: {resp}");
                }
            }
        }
    }
    // Ranges and units reach the document.
    let params = &doc["components"]["schemas"]["RemoveBackgroundParams"]["properties"];
    assert_eq!(params["quality"]["minimum"], 1);
    assert_eq!(params["quality"]["maximum"], 100);
}

#[tokio::test]
async fn the_docs_page_works_offline_under_its_own_csp() {
    let api = Api::new();
    let resp = api
        .send(Request::get("/docs").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/docs/");

    let resp = api
        .send(Request::get("/docs/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = String::from_utf8(body_bytes(resp).await).unwrap();
    // Every asset is relative: nothing comes from a CDN.
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );

    for (asset, kind) in [
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("swagger-initializer.js", "javascript"),
    ] {
        let resp = api
            .send(
                Request::get(format!("/docs/{asset}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{asset}");
        let content_type = resp.headers()[header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.contains(kind), "{asset}: {content_type}");
        let bytes = body_bytes(resp).await;
        assert!(bytes.len() > 100, "{asset}");
        if asset == "swagger-initializer.js" {
            let js = String::from_utf8(bytes).unwrap();
            assert!(js.contains("/openapi.json"), "{js}");
            assert!(!js.contains("petstore"), "{js}");
        }
    }
    let resp = api
        .send(
            Request::get("/docs/no-such-file.js")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let resp = api
        .send(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let served: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(served, document());

    // Every other route keeps the strict policy.
    let resp = api
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        resp.headers()[header::CONTENT_SECURITY_POLICY],
        "default-src 'none'; frame-ancestors 'none'"
    );
}

#[tokio::test]
async fn error_bodies_carry_the_request_id() {
    let api = Api::new();
    let resp = api
        .send(
            Request::get("/v1/jobs")
                .header("x-request-id", "req-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let body: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["request_id"], "req-123");

    // A generated id is the same in the header and the body.
    let resp = api
        .send(Request::get("/nowhere").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let body: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(body["error"]["request_id"], id.as_str());

    // A JSON answer that is not an error envelope (a 503 health report) passes unchanged.
    let down = FakeProbe::healthy("bucket");
    down.set_healthy(false);
    let resp = Api::with_probe(down)
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(body, serde_json::json!({"status": "degraded"}));

    // An error axum answers itself (a path segment that is not UTF-8) becomes the envelope.
    let resp = api
        .send(Request::get("/status/%FF").body(Body::empty()).unwrap())
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let body: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert!(body["error"]["request_id"].as_str().is_some(), "{body}");
}

fn png() -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(8, 6, image::Rgba([128, 128, 128, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn create(key: &str) -> Request<Body> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&png());
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    Request::post("/v1/jobs")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .unwrap()
}

fn header_u64(resp: &axum::response::Response, name: &str) -> u64 {
    resp.headers()[name].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn job_creation_reports_the_per_minute_window() {
    let api = Api::new();
    let key = api.key();
    let first = api.send(create(&key)).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let second = api.send(create(&key)).await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(header_u64(&first, "x-ratelimit-limit"), 120);
    let (r1, r2) = (
        header_u64(&first, "x-ratelimit-remaining"),
        header_u64(&second, "x-ratelimit-remaining"),
    );
    // Both in one minute: one fewer; across a minute boundary the window started again.
    assert!(r1 == 119 && (r2 == 118 || r2 == 119), "{r1} then {r2}");
    let reset = header_u64(&second, "x-ratelimit-reset");
    assert!((1..=60).contains(&reset), "{reset}");
}
