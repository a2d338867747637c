//! The owner's webhook settings (`jobs:write`): the signing secret that every delivery is
//! signed with ([Standard Webhooks](https://www.standardwebhooks.com/)) and the default URL for
//! jobs created without a `webhook_url`.
//!
//! - `GET /v1/webhooks` → `{"default_url": string | null, "secret": "whsec_…"}`; the secret is
//!   created on first use.
//! - `PUT /v1/webhooks` with `{"default_url": "https://…" | null}` → the same shape.
//! - `POST /v1/webhooks/rotate-secret` → the same shape with a new secret; deliveries from then
//!   on are signed with it only.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use shared::auth::{Principal, Scope};
use shared::notification::{WebhookSecret, validate_webhook_url};

use crate::body::{InvalidJson, parse_json};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

async fn answer(
    state: &AppState,
    caller: &Principal,
    secret: WebhookSecret,
) -> Result<Response, ApiError> {
    let settings = state
        .notifications
        .webhook_settings(&caller.owner)
        .await?
        .unwrap_or_default();
    Ok(
        Json(json!({"default_url": settings.default_url, "secret": secret.as_str()}))
            .into_response(),
    )
}

/// `GET /v1/webhooks`: `{"default_url", "secret"}`, creating the secret on first use.
///
/// # Errors
/// 403 `insufficient_scope` without `jobs:write`; 503 when the store fails.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "account",
    security(("api_key" = []), ("jwt" = [])),
    responses(
        (status = 200, description = "The owner's webhook settings (needs `jobs:write`)", body = crate::openapi::WebhookSettings),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn get_webhooks(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let secret = state.notifications.webhook_secret(&caller.owner).await?;
    answer(&state, &caller, secret).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutWebhooks {
    default_url: Option<String>,
}

/// `PUT /v1/webhooks` with `{"default_url": "https://…" | null}`: the same shape as `GET`.
///
/// # Errors
/// 403 `insufficient_scope` without `jobs:write`; 400 `invalid_json` for another body; 422
/// `invalid_webhook_url`; 503 when the store fails.
#[utoipa::path(
    put,
    path = "/v1/webhooks",
    tag = "account",
    security(("api_key" = []), ("jwt" = [])),
    request_body(content((crate::openapi::PutWebhooks = "application/json"))),
    responses(
        (status = 200, description = "The owner's webhook settings (needs `jobs:write`)", body = crate::openapi::WebhookSettings),
        (status = 400, description = "`invalid_json`", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 422, description = "`invalid_webhook_url`", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn put_webhooks(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let parsed: PutWebhooks = parse_json(
        &body,
        InvalidJson::BadRequestExpecting(r#"{"default_url": "https://…" | null}"#),
    )?;
    let url = parsed
        .default_url
        .filter(|u| !u.trim().is_empty())
        .map(|u| {
            validate_webhook_url(
                &u,
                state.settings.egress.allow_http_urls,
                state.settings.egress.allow_private_urls,
            )
        })
        .transpose()?;
    state
        .notifications
        .set_default_webhook_url(&caller.owner, url.as_deref())
        .await?;
    let secret = state.notifications.webhook_secret(&caller.owner).await?;
    answer(&state, &caller, secret).await
}

/// `POST /v1/webhooks/rotate-secret`: the same shape as `GET`, with the new secret.
///
/// # Errors
/// 403 `insufficient_scope` without `jobs:write`; 503 when the store fails.
#[utoipa::path(
    post,
    path = "/v1/webhooks/rotate-secret",
    tag = "account",
    security(("api_key" = []), ("jwt" = [])),
    responses(
        (status = 200, description = "The owner's webhook settings (needs `jobs:write`)", body = crate::openapi::WebhookSettings),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn rotate_secret(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    caller.require(Scope::JobsWrite)?;
    let secret = state
        .notifications
        .rotate_webhook_secret(&caller.owner)
        .await?;
    answer(&state, &caller, secret).await
}
