//! Stability AI played by wiremock: "Replace Background and Relight" submit and result polling
//! (`docs/providers.md` §1.2–§1.4), as `tests/relight.rs` and the
//! compatibility tests drive it, and a reader of the multipart bodies it receives.

use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use shared::providers::ProviderSettings;

pub const KEY: &str = "sk-test-not-a-real-key";
/// A GenerationID is exactly 64 characters (§1.3).
pub const GENERATION_ID: &str = "a6dc6c6e20acda010fe14d71f180658f2896ed9b4ec25aa99a6ff06c796987c4";
pub const SUBMIT_PATH: &str = "/v2beta/stable-image/edit/replace-background-and-relight";

pub fn result_path() -> String {
    format!("/v2beta/results/{GENERATION_ID}")
}

pub fn relit_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(96, 64, image::Rgb([200, 120, 40]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

pub fn providers(server: &MockServer) -> ProviderSettings {
    ProviderSettings {
        stability_api_key: Some(KEY.into()),
        stability_base_url: server.uri(),
        stability_timeout: Duration::from_secs(10),
        poll_delay: Duration::ZERO,
        provider_deadline: Duration::from_secs(600),
        ..ProviderSettings::default()
    }
}

/// `POST /v2beta/…/replace-background-and-relight` answering 200 `{"id"}` (§1.3).
pub fn submit_ok() -> Mock {
    Mock::given(method("POST"))
        .and(path(SUBMIT_PATH))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": GENERATION_ID})),
        )
}

/// 202 `{"id", "status": "in-progress"}` (§1.4).
pub fn pending() -> ResponseTemplate {
    ResponseTemplate::new(202)
        .set_body_json(serde_json::json!({"id": GENERATION_ID, "status": "in-progress"}))
}

/// 200 raw image with `finish-reason` and `seed` headers (§1.4).
pub fn done(finish_reason: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "image/png")
        .insert_header("finish-reason", finish_reason)
        .insert_header("seed", "343940597")
        .set_body_bytes(relit_png())
}

pub fn results() -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path(result_path()))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
}

/// One multipart part: `(name, filename, content-type, bytes)`.
pub type FormPart = (String, Option<String>, Option<String>, Vec<u8>);

/// The parts of a multipart body.
pub fn multipart_parts(req: &Request) -> Vec<FormPart> {
    let ct = req.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("multipart/form-data"), "{ct}");
    let boundary = ct.split("boundary=").nth(1).unwrap().trim_matches('"');
    let delim = format!("--{boundary}");
    let body = &req.body;
    let mut parts = Vec::new();
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut pos = find(body, delim.as_bytes(), 0).unwrap() + delim.len();
    while let Some(next) = find(body, delim.as_bytes(), pos) {
        let chunk = &body[pos + 2..next - 2]; // skip CRLF after the delimiter and before the next
        let split = find(chunk, b"\r\n\r\n", 0).unwrap();
        let head = String::from_utf8_lossy(&chunk[..split]).to_string();
        let data = chunk[split + 4..].to_vec();
        let attr = |key: &str| {
            head.split(';')
                .map(str::trim)
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.split('"').next().unwrap().to_owned())
        };
        let part_ct = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        });
        parts.push((attr("name").unwrap(), attr("filename"), part_ct, data));
        pos = next + delim.len();
    }
    parts
}

pub fn field(parts: &[FormPart], name: &str) -> Option<String> {
    parts
        .iter()
        .find(|p| p.0 == name)
        .map(|p| String::from_utf8(p.3.clone()).unwrap())
}
