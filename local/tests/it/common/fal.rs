//! fal.ai played by wiremock: the queue contract (`docs/providers.md` §2.2–§2.10) as
//! `tests/fal.rs` and the compatibility tests drive it.

use serde_json::json;
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use shared::providers::ProviderSettings;

use super::TestEnv;

pub const KEY: &str = "fal-test-key-id:not-a-real-secret";
pub const EDIT_MODEL: &str = "fal-ai/bytedance/seedream/v4/edit";
pub const TEXT_MODEL: &str = "fal-ai/bytedance/seedream/v4/text-to-image";
pub const REQUEST_ID: &str = "764cabcf-b745-4b3e-ae38-1200304cf45b";
/// Status, result and cancel URLs use only owner/app (§2.2).
pub const REQUEST_BASE: &str = "/fal-ai/bytedance/requests/764cabcf-b745-4b3e-ae38-1200304cf45b";

pub fn png(width: u32, height: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

pub fn providers(server: &MockServer) -> ProviderSettings {
    ProviderSettings {
        fal_key: Some(KEY.into()),
        fal_queue_url: server.uri(),
        poll_delay: Duration::ZERO,
        provider_deadline: Duration::from_secs(600),
        ..ProviderSettings::default()
    }
}

/// An emulator whose settings let the processor download the contract server's "CDN" files
/// (127.0.0.1 over http) and read fal's keys from it.
pub async fn env_for(server: &MockServer) -> TestEnv {
    let mut env = TestEnv::new().await;
    env.settings.egress.allow_http_urls = true;
    env.settings.egress.allow_private_urls = true;
    env.settings.providers = providers(server);
    env.settings.providers.fal_jwks_url = format!("{}/.well-known/jwks.json", server.uri());
    env
}

/// §2.3: 200 with the request id and the URLs to use.
pub fn submitted(server: &MockServer) -> ResponseTemplate {
    let base = format!("{}{REQUEST_BASE}", server.uri());
    ResponseTemplate::new(200).set_body_json(json!({
        "request_id": REQUEST_ID,
        "response_url": base,
        "status_url": format!("{base}/status"),
        "cancel_url": format!("{base}/cancel"),
        "status": "IN_QUEUE",
        "queue_position": 0
    }))
}

pub fn submit(model: &str) -> wiremock::MockBuilder {
    Mock::given(method("POST"))
        .and(path(format!("/{model}")))
        .and(header("authorization", format!("Key {KEY}").as_str()))
}

pub fn status() -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path(format!("{REQUEST_BASE}/status")))
        .and(header("authorization", format!("Key {KEY}").as_str()))
}

pub fn result() -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path(REQUEST_BASE))
        .and(header("authorization", format!("Key {KEY}").as_str()))
}

/// §2.4: 202 while queued or running, 200 when completed.
pub fn in_queue() -> ResponseTemplate {
    ResponseTemplate::new(202).set_body_json(json!({
        "status": "IN_QUEUE", "queue_position": 0, "request_id": REQUEST_ID
    }))
}
pub fn in_progress() -> ResponseTemplate {
    ResponseTemplate::new(202)
        .set_body_json(json!({"status": "IN_PROGRESS", "logs": [], "request_id": REQUEST_ID}))
}
pub fn completed() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "status": "COMPLETED", "logs": [], "metrics": {"inference_time": 3.2},
        "request_id": REQUEST_ID
    }))
}

/// §2.9 output with `n` images served by the contract server under `/files/`.
pub async fn outputs(server: &MockServer, n: usize) -> ResponseTemplate {
    let mut images = Vec::new();
    for i in 0..n {
        let file = format!("/files/out-{i}.png");
        Mock::given(method("GET"))
            .and(path(file.clone()))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "image/png")
                    .set_body_bytes(png(64 + i as u32, 48, [10 * i as u8, 100, 200])),
            )
            .mount(server)
            .await;
        images.push(json!({
            "url": format!("{}{file}", server.uri()), "content_type": "image/png",
            "file_name": format!("out-{i}.png"), "width": 64 + i, "height": 48
        }));
    }
    ResponseTemplate::new(200).set_body_json(json!({"images": images, "seed": 746_406_749}))
}

pub async fn submits(server: &MockServer) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().starts_with("/fal-ai/"))
        .collect()
}
