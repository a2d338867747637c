//! Compatibility routes: the HTTP shapes of the FastAPI services imagejobs replaces, so that a
//! team can point its existing client at imagejobs and change only the base URL and the key.
//!
//! Each replaced service gets one module of thin adapters onto the job service
//! ([`shared::service::JobSubmitter`], [`shared::core::JobStore`], [`shared::core::BlobStore`]):
//! no second pipeline. What they share is in [`request`] (forms, image references, models),
//! [`response`] (waiting, answers, URLs) and [`health`]. Every error is still
//! `{"error": {"code", "message"}}` from [`crate::error`].
//!
//! | service (module) | route | canonical equivalent |
//! |---|---|---|
//! | relight ([`relight_service`]) | `POST /replace-background-relight` | `POST /v1/jobs` (`replace_background_relight`) with `Prefer: wait=25` |
//! | image generation ([`image_generation`]) | `POST /v1/images/memory`, `/v1/images/subject`, `/v1/images/generations` | `POST /v1/jobs` (`generate`, mode `memory` / `subject` / `text`) with `Prefer: wait=25` |
//! | image generation, JWT background removal ([`health`]) | `GET /health/` | `GET /health` |
//! | image generation | `GET /` | none (a static welcome) |
//! | JWT background removal ([`background_removal_jwt`]) | `POST /auth/token?user_id=…` | `POST /v1/auth/token` |
//! | JWT background removal | `POST /api/remove-background` | `POST /v1/jobs` with `Prefer: wait=25`, then `GET /v1/jobs/{id}/result` |
//! | JWT background removal | `GET /metrics/` | `GET /v1/metrics` |
//! | async background removal ([`background_removal_async`]) | `POST /process` | `POST /v1/jobs` (with `notify.email`) |
//! | async background removal | `GET /status/{processing_id}` | `GET /v1/jobs/{id}` |
//! | async background removal | `GET /download/{processing_id}` | `GET /v1/jobs/{id}/result` |
//! | image editing ([`image_editing`]) | `POST /api/jobs` | `POST /v1/jobs` (`edit`) with `Prefer: wait=25` |
//! | image editing | `GET /api/jobs/{job_id}`, `GET /api/jobs` | `GET /v1/jobs/{id}`, `GET /v1/jobs` |

pub(crate) mod background_removal_async;
pub(crate) mod background_removal_jwt;
pub(crate) mod health;
pub(crate) mod image_editing;
pub(crate) mod image_generation;
pub(crate) mod relight_service;
pub(crate) mod request;
pub(crate) mod response;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// Every compatibility route with its OpenAPI entry, to merge into the API's router.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::legacy_health))
        .merge(relight_service::routes())
        .merge(image_generation::routes())
        .merge(background_removal_jwt::routes())
        .merge(background_removal_async::routes())
        .merge(image_editing::routes())
}
