//! The API's one axum `Router`, served by `lambda_http` on AWS and over plain HTTP locally: the
//! route table and the layers every response goes through. Handlers stay thin (parse → call
//! the domain → map to a response) and live in modules named after what they serve
//! ([`crate::jobs`], [`crate::health`]); this is the only module that names them.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{
    auth, cancel, compat, health, jobs, metrics, models, provider_callbacks, uploads, webhooks,
};

/// Multipart overhead allowed on top of the image byte limit.
const BODY_OVERHEAD: usize = 64 * 1024;

/// The API's routes: `/v1/…`, `/health`, and the compatibility routes of the services it
/// replaces (`compat/`).
///
/// An unknown path is 404 `route_not_found` and a known path with another method 405
/// `method_not_allowed`, both as [`ApiError`] JSON. Bodies are capped at the image byte limit
/// plus multipart overhead. Every response carries an `X-Request-Id` (the client's, or a new
/// ULID) and the security headers set below.
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.limits.max_bytes as usize + BODY_OVERHEAD;
    Router::new()
        .route("/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/result", get(jobs::get_result))
        .route("/v1/auth/token", post(auth::issue_token))
        .route("/v1/uploads", post(uploads::create_upload))
        .route("/v1/jobs/{id}/cancel", post(cancel::cancel_job))
        .route(
            "/v1/providers/fal/webhook",
            post(provider_callbacks::receive_fal_webhook),
        )
        .route("/v1/metrics", get(metrics::get_metrics))
        .route("/v1/models", get(models::list_models))
        .route(
            "/v1/webhooks",
            get(webhooks::get_webhooks).put(webhooks::put_webhooks),
        )
        .route("/v1/webhooks/rotate-secret", post(webhooks::rotate_secret))
        .route("/health", get(health::health))
        .merge(compat::routes())
        .merge(crate::console::routes())
        .fallback(|req: Request| async move {
            ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors(&state.settings.auth.cors_allowed_origins))
        // Every response: the API serves JSON and redirects only, never pages.
        .layer(header_layer(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header_layer(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header_layer(header::REFERRER_POLICY, "no-referrer"))
        .layer(header_layer(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
        .layer(header_layer(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, UlidRequestId))
        .with_state(state)
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Gives each request without an `X-Request-Id` a ULID; the id is echoed on the response.
#[derive(Clone, Copy)]
struct UlidRequestId;

impl MakeRequestId for UlidRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Browser access for the configured origins only (`*` for any); none configured, none allowed.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("prefer"),
            HeaderName::from_static("x-api-key"),
            X_REQUEST_ID,
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("preference-applied"),
            X_REQUEST_ID,
        ])
        .max_age(Duration::from_secs(600))
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}
