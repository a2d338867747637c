//! Callbacks from the model providers, under `/v1/providers/…`. fal.ai's completion webhook is
//! the only one so far.
//!
//! `POST /v1/providers/fal/webhook?owner=…&job_id=…`: fal.ai's completion callback
//! (docs/providers.md §2.6).
//!
//! The delivery is verified first (Ed25519 over request id, user id, timestamp and the SHA-256
//! of the raw body, with fal's JWKS keys; timestamp within 300 s). It then only wakes the job
//! up: the processor receives a poll message and fetches the result itself, so the webhook
//! needs no provider key and the completion runs through the same code as polling. Deliveries
//! are idempotent on the request id: a replay is acknowledged without queueing anything.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use time::OffsetDateTime;

use shared::core::ProviderMark;
use shared::fal_signature::{SignedHeaders, WebhookRejection, verify};
use shared::job::{JobMessage, OwnerId};

use crate::error::ApiError;
use crate::state::AppState;

/// Which job the webhook URL was minted for (set by the processor at submit).
#[derive(Deserialize)]
pub(crate) struct WebhookTarget {
    owner: String,
    job_id: String,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::WebhookRejected {
            code: "webhook_headers_missing",
            message: format!("header {name} is required"),
        })
}

fn rejected(e: WebhookRejection) -> ApiError {
    let code = match e {
        WebhookRejection::Stale(_) | WebhookRejection::BadTimestamp => "webhook_stale",
        WebhookRejection::MalformedSignature | WebhookRejection::BadSignature => {
            "webhook_signature_invalid"
        }
    };
    ApiError::WebhookRejected {
        code,
        message: e.to_string(),
    }
}

/// 200 for a verified delivery, so that fal stops retrying: `{"accepted": true, "job_id"}` when
/// the completion was queued, `{"accepted": false, "reason"}` when there was nothing to do
/// (unknown or finished job, another request's delivery, a duplicate).
///
/// # Errors
/// 401 `webhook_headers_missing`, `webhook_stale` or `webhook_signature_invalid` for a
/// delivery that does not verify (nothing changes); 409 `conflict` when the job has not
/// recorded this request yet (fal retries, §2.6: 10 times over 2 hours); 503 when fal's keys,
/// the store or the queue are unavailable.
#[utoipa::path(
    post,
    path = "/v1/providers/fal/webhook",
    tag = "providers",
    security(()),
    params(("owner" = String, Query, description = "The job's owner (set by the processor at submit)"), ("job_id" = String, Query, description = "The job's ULID"), ("x-fal-webhook-request-id" = String, Header, description = "fal's request id"), ("x-fal-webhook-user-id" = String, Header, description = "fal's user id"), ("x-fal-webhook-timestamp" = String, Header, description = "Unix seconds; within 300 s of now"), ("x-fal-webhook-signature" = String, Header, description = "Hex Ed25519 signature (docs/providers.md §2.6)")),
    request_body(description = "fal's result payload, verified over its raw bytes", content((Object = "application/json"))),
    responses(
        (status = 200, description = "Verified: `accepted` says whether a completion was queued", body = crate::openapi::FalWebhookAnswer),
        (status = 400, description = "`invalid_params`: `owner` or `job_id` missing", body = crate::openapi::ErrorBody),
        (status = 401, description = "`webhook_headers_missing`, `webhook_stale`, `webhook_signature_invalid`: nothing changes", body = crate::openapi::ErrorBody),
        (status = 409, description = "`conflict`: the job has not recorded this request yet; fal delivers again", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn receive_fal_webhook(
    State(state): State<AppState>,
    target: Result<Query<WebhookTarget>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(target) = target.map_err(|e| {
        ApiError::bad_request(
            "invalid_params",
            format!("query: {} (expected owner and job_id)", e.body_text()),
        )
    })?;
    let signed = SignedHeaders {
        request_id: header(&headers, "x-fal-webhook-request-id")?,
        user_id: header(&headers, "x-fal-webhook-user-id")?,
        timestamp: header(&headers, "x-fal-webhook-timestamp")?,
        signature: header(&headers, "x-fal-webhook-signature")?,
    };
    let now = OffsetDateTime::now_utc();
    let keys = state.fal_keys.keys().await?;
    if let Err(e) = verify(&signed, &body, &keys, now.unix_timestamp()) {
        // A key rotation shows up as a bad signature: look again once before refusing.
        if e != WebhookRejection::BadSignature {
            return Err(rejected(e));
        }
        let fresh = state.fal_keys.refresh_if_stale().await?;
        verify(&signed, &body, &fresh, now.unix_timestamp()).map_err(rejected)?;
    }
    let request_id = signed.request_id;
    let ignored = |reason: &str| {
        tracing::info!(%request_id, reason, "fal webhook acknowledged without action");
        Ok((
            StatusCode::OK,
            Json(json!({"accepted": false, "reason": reason})),
        )
            .into_response())
    };
    let (Ok(owner), Ok(job_id)) = (
        OwnerId::parse(&target.owner),
        ulid::Ulid::from_string(&target.job_id),
    ) else {
        return ignored("unknown job");
    };
    let Some(job) = state.store.get(&owner, job_id).await? else {
        return ignored("unknown job");
    };
    if job.status.is_terminal() {
        return ignored("job already finished");
    }
    match job.provider_request_id.as_deref() {
        // Submitted but not recorded yet (a fast model): ask fal to deliver again later.
        None => {
            return Err(shared::Error::Conflict(format!(
                "job {job_id} has not recorded request {request_id} yet; deliver again"
            ))
            .into());
        }
        // A signed delivery for somebody else's request must not touch this job.
        Some(rid) if rid != request_id => return ignored("request does not belong to this job"),
        Some(_) => {}
    }
    let first = state
        .provider_transitions
        .mark_once(
            &owner,
            job_id,
            request_id,
            ProviderMark::WebhookReceived,
            now,
        )
        .await?;
    if !first {
        return ignored("duplicate delivery");
    }
    state
        .queue
        .send(
            &JobMessage::Poll {
                owner,
                job_id,
                request_id: request_id.to_owned(),
                attempt: 0,
                // One-off: takes over the job's poll chain.
                due: None,
            },
            Duration::ZERO,
        )
        .await?;
    tracing::info!(%request_id, %job_id, "fal webhook accepted; completion queued");
    Ok((
        StatusCode::OK,
        Json(json!({"accepted": true, "job_id": job_id.to_string()})),
    )
        .into_response())
}
