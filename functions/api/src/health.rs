//! `GET /health`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

use crate::identity::authenticate;
use crate::state::AppState;

/// Probes every dependency (3 s each, concurrently): whether all answered, and each one's
/// state (`ok`, `unavailable` or `timeout`) by name (`table`, `queue`, `bucket`, `segmenter`).
pub(crate) async fn check(state: &AppState) -> (bool, serde_json::Map<String, serde_json::Value>) {
    let checks = futures::future::join_all(state.probes.iter().map(|p| async move {
        let outcome = tokio::time::timeout(Duration::from_secs(3), p.ping()).await;
        let status = match outcome {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => {
                tracing::warn!(dependency = p.name(), error = %e, "health check failed");
                "unavailable".to_owned()
            }
            Err(_) => "timeout".to_owned(),
        };
        (p.name(), status)
    }))
    .await;
    let healthy = checks.iter().all(|(_, s)| s == "ok");
    let checks = checks
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    (healthy, checks)
}

/// 200 when healthy, else 503.
pub(crate) fn status_code(healthy: bool) -> StatusCode {
    if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// `GET /health`: 200 when every dependency answers, else 503 naming the ones that do not.
///
/// Open to anyone, but only an authenticated caller sees which dependency is failing.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    security((), ("api_key" = []), ("jwt" = [])),
    responses(
        (status = 200, description = "Every dependency answers (`checks` for authenticated callers only)", body = crate::openapi::HealthDoc),
        (status = 503, description = "A dependency does not answer", body = crate::openapi::HealthDoc),
    )
)]
pub(crate) async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (healthy, checks) = check(&state).await;
    let mut body = json!({"status": if healthy { "ok" } else { "degraded" }});
    if authenticate(&state, &headers).await.is_ok() {
        body["checks"] = checks.into();
    }
    (status_code(healthy), Json(body)).into_response()
}
