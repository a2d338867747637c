//! `GET /health`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::time::Duration;

use crate::http_handler::AppState;
use crate::identity::authenticate;

/// `GET /health`: 200 when every dependency answers, else 503 naming the ones that do not.
///
/// Open to anyone, but only an authenticated caller sees which dependency is failing.
pub(crate) async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
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
    let mut body = json!({"status": if healthy { "ok" } else { "degraded" }});
    if authenticate(&state, &headers).await.is_ok() {
        body["checks"] = checks
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
