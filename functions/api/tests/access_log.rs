//! The access log: one `tracing` event per request with the route template, in a test binary
//! of its own, because a scoped `tracing` subscriber and other tests' threads registering the
//! same callsites at once can race over the callsite's cached interest.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use imagejobs_api::{AppState, Ports};
use shared::auth::Scope;
use shared::config::Settings;
use shared::egress::FetchPolicy;
use shared::fakes::{FakeProbe, InMemoryApiKeys, InMemoryBlobs, InMemoryJobs, InMemoryQueue};
use shared::job::OwnerId;

/// The router over fresh fakes and a key of owner `team-a`.
fn api() -> (axum::Router, String) {
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
        probes: vec![Arc::new(FakeProbe::healthy("table"))],
        fetcher: Arc::new(
            shared::adapters::PublicHttp::new(FetchPolicy::for_inputs(&settings)).unwrap(),
        ),
    };
    let state = AppState::from_ports(settings, ports).unwrap();
    let key = keys.create_key(&OwnerId::parse("team-a").unwrap(), &[Scope::JobsRead]);
    (imagejobs_api::router(state), key)
}

/// A `MakeWriter` into a shared buffer, to read what the subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_request_writes_one_access_line_with_the_route_template() {
    let (router, key) = api();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let resp = router
        .oneshot(
            Request::get("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .header("x-request-id", "req-access")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["target"] == "access")
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["request_id"], "req-access");
    assert_eq!(fields["method"], "GET");
    assert_eq!(
        fields["route"], "/v1/jobs/{id}",
        "the template, not the raw path"
    );
    assert_eq!(fields["owner"], "team-a");
    assert_eq!(fields["status"], 404);
    assert!(fields["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
}
