//! `GET /health/`, the one route two replaced services share (the image-generation service and
//! the JWT background-removal service); axum refuses a path registered twice, so it lives here
//! rather than in either.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::identity::Caller;
use crate::state::AppState;

/// The `message` of a healthy `GET /health/`, word for word from the image-generation service.
pub const HEALTHY_MESSAGE: &str = "Image generation service is ready";

/// `GET /health/` (API key or token), shared by the image-generation and the JWT
/// background-removal services: `{"status": "healthy", "message": "Image generation service is
/// ready", "checks": {"table", "queue", "bucket", "segmenter"}}` with 200, or
/// `"status": "degraded"` naming the failed checks with 503. The image-generation service's
/// answer word for word plus the checks; the JWT background-removal service's README leaves
/// the body open. A credential is required, as the JWT background-removal service's original
/// did.
///
/// # Errors
/// 401 without a valid credential.
#[utoipa::path(
    get,
    path = "/health/",
    tag = "compat-001-generation",
    security(("api_key" = []), ("jwt" = [])),
    responses(
        (status = 200, description = "`healthy` (seeds 001 and 002)", body = crate::openapi::LegacyHealth),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 503, description = "`degraded`, naming the failed checks", body = crate::openapi::LegacyHealth),
    )
)]
pub(crate) async fn legacy_health(State(state): State<AppState>, Caller(_): Caller) -> Response {
    let (healthy, checks) = crate::health::check(&state).await;
    let body = if healthy {
        json!({"status": "healthy", "message": HEALTHY_MESSAGE, "checks": checks})
    } else {
        json!({
            "status": "degraded",
            "message": "Image generation service is degraded: a dependency is unavailable",
            "checks": checks,
        })
    };
    (crate::health::status_code(healthy), Json(body)).into_response()
}
