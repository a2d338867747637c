//! The API's one axum `Router`, served by `lambda_http` on AWS and over plain HTTP locally: the
//! route table and the layers every response goes through. Handlers stay thin (parse → call
//! the domain → map to a response) and live in modules named after what they serve
//! ([`crate::jobs`], [`crate::health`]); this is the only module that names them.

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::{Extension, Router};
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{
    access, auth, cancel, compat, docs, health, jobs, metrics, models, provider_callbacks, uploads,
    webhooks,
};

/// Multipart overhead allowed on top of the image byte limit.
const BODY_OVERHEAD: usize = 64 * 1024;

/// Every route with its OpenAPI entry: each handler's `#[utoipa::path]` gives both the route
/// and its documentation, so a route cannot be served undocumented through here (and
/// `tests/api/openapi.rs` checks that nothing is routed around it).
pub(crate) fn api_routes() -> OpenApiRouter<AppState> {
    let docs = OpenApiRouter::new()
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::redirect))
        .routes(routes!(docs::index))
        .routes(routes!(docs::asset))
        // The one page the API serves: its own scripts and styles, nothing else.
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(docs::DOCS_CSP),
        ));
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(jobs::create_job, jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::get_result))
        .routes(routes!(cancel::cancel_job))
        .routes(routes!(auth::issue_token))
        .routes(routes!(uploads::create_upload))
        .routes(routes!(provider_callbacks::receive_fal_webhook))
        .routes(routes!(metrics::get_metrics))
        .routes(routes!(models::list_models))
        .routes(routes!(webhooks::get_webhooks, webhooks::put_webhooks))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(health::health))
        .merge(compat::routes())
        .merge(crate::console::routes())
        .merge(docs)
}

/// The OpenAPI 3.1 document of [`router()`], as served at `GET /openapi.json` (pretty JSON).
pub fn openapi_json() -> String {
    api_routes()
        .into_openapi()
        .to_pretty_json()
        .expect("the document serializes")
}

/// The API's routes: `/v1/…`, `/health`, the compatibility routes of the services it
/// replaces (`compat/`), the API's own description (`/openapi.json`, `/docs/`) and the web
/// console (`/console/`, [`crate::console`]).
///
/// An unknown path is 404 `route_not_found` and a known path with another method 405
/// `method_not_allowed`, both as [`ApiError`] JSON. Bodies are capped at the image byte limit
/// plus multipart overhead. Every response carries an `X-Request-Id` (the client's, or a new
/// ULID) and the security headers set below; every error body carries it as
/// `error.request_id`, and every request writes one access-log line ([`crate::access`]).
pub fn router(state: AppState) -> Router {
    let body_limit = state.settings.limits.max_bytes as usize + BODY_OVERHEAD;
    let (routes, document) = api_routes().split_for_parts();
    let document = docs::OpenApiJson(Arc::from(
        document.to_json().expect("the document serializes"),
    ));
    routes
        .route_layer(axum::middleware::from_fn(access::record_route))
        .fallback(|req: Request| async move {
            ApiError::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(Extension(document))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors(&state.settings.auth.cors_allowed_origins))
        // Every response but the docs page's and the console's (which set their own): the API serves JSON
        // and redirects only.
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
        .layer(axum::middleware::from_fn(access::observe))
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
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            X_REQUEST_ID,
        ])
        .max_age(Duration::from_secs(600))
}

fn header_layer(name: HeaderName, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
}
