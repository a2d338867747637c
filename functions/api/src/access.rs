//! What every request goes through on its way out: one access-log line, and the request id in
//! every error body.
//!
//! - **Access log**: one `tracing` event per request (`access`, at info), with `request_id`,
//!   `method`, `route` (the matched path template such as `/v1/jobs/{id}`, never the raw path,
//!   so ids and capabilities stay out of the logs; `-` when no route matched), `owner` (once
//!   authenticated; `-` otherwise), `status` and `latency_ms`. Inside Lambda it is a JSON line
//!   ([`shared::telemetry::init`]).
//! - **Error envelope**: every 4xx/5xx JSON body `{"error": {…}}` gets `error.request_id`, the
//!   request's `X-Request-Id`; a non-JSON error answered by the framework itself rather than by
//!   [`crate::ApiError`] (a path segment that is not UTF-8, say) becomes the same envelope, so that
//!   every error is JSON with a code. Other JSON (the 503 health reports) passes unchanged.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::Instant;

/// Largest error body rewritten (ours are a few hundred bytes); a larger one passes unchanged.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What the inner layers learn about a request for its access-log line: the route template
/// (set once routing matched) and the owner (set once authenticated).
#[derive(Debug, Default)]
pub(crate) struct AccessRecord {
    route: OnceLock<String>,
    owner: OnceLock<String>,
}

/// The request's [`AccessRecord`], as a request extension.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessSlot(Arc<AccessRecord>);

impl AccessSlot {
    /// Records the authenticated owner (the first one wins).
    pub(crate) fn set_owner(&self, owner: &str) {
        let _ = self.0.owner.set(owner.to_owned());
    }
}

/// Route layer: records the matched path template in the request's [`AccessSlot`].
pub(crate) async fn record_route(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        req.extensions().get::<AccessSlot>(),
        req.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.route.set(path.as_str().to_owned());
    }
    next.run(req).await
}

/// The outer layer: gives the request its [`AccessSlot`], adds the request id to error
/// bodies, and writes the access-log line. Runs inside `SetRequestIdLayer`, so the request id
/// header is always there.
pub(crate) async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let slot = AccessSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let resp = next.run(req).await;
    let resp = if resp.status().is_client_error() || resp.status().is_server_error() {
        with_request_id(resp, &request_id).await
    } else {
        resp
    };
    let record = &slot.0;
    tracing::info!(
        target: "access",
        request_id = %request_id,
        method = %method,
        route = record.route.get().map_or("-", String::as_str),
        owner = record.owner.get().map_or("-", String::as_str),
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "access"
    );
    resp
}

/// The error response with `error.request_id`, or the framework's plain error as the JSON
/// envelope.
async fn with_request_id(resp: Response, request_id: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Over the cap or a broken stream: the envelope below still says what the status means.
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let value = if is_json {
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Response::from_parts(parts, Body::from(bytes));
        };
        match value.get_mut("error").and_then(|e| e.as_object_mut()) {
            Some(error) => {
                error.insert("request_id".into(), request_id.into());
            }
            // A JSON answer of its own (a 503 health report): not an error envelope to extend.
            None => return Response::from_parts(parts, Body::from(bytes)),
        }
        value
    } else {
        serde_json::json!({"error": {
            "code": framework_code(parts.status),
            "message": framework_message(parts.status, &bytes),
            "request_id": request_id,
        }})
    };
    let body = serde_json::to_vec(&value).expect("a JSON value serializes");
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The code of an error the framework answered itself, by status.
fn framework_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "route_not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        s if s.is_server_error() => "internal",
        _ => "request_refused",
    }
}

fn framework_message(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text.to_owned()
    }
}
