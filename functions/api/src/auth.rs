//! `POST /v1/auth/token`: exchanges an API key for a short-lived HS256 JWT.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;

use shared::auth::{self, AuthError, Claims, Credential, Principal};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// Signs a JWT for a caller that authenticated with an API key: `sub` = the key's owner,
/// `scope` = the key's scopes, lifetime `JWT_TTL_SECONDS`.
///
/// # Errors
/// 400 `api_key_required` when the caller used a token; 401 `tokens_disabled` without
/// `JWT_SECRET`.
pub(crate) fn issue_for_key(
    state: &AppState,
    caller: &Principal,
) -> Result<(String, Claims), ApiError> {
    if !matches!(caller.credential, Credential::ApiKey { .. }) {
        return Err(ApiError::bad_request(
            "api_key_required",
            "tokens are issued in exchange for an API key, not another token",
        ));
    }
    let secret = state
        .settings
        .auth
        .jwt_secret
        .as_deref()
        .ok_or(AuthError::TokensDisabled)?;
    Ok(auth::issue_token(
        secret.as_bytes(),
        &caller.owner,
        &caller.scopes,
        state.settings.auth.jwt_ttl,
        OffsetDateTime::now_utc(),
    )
    .map_err(|message| shared::Error::Config(format!("signing a token: {message}")))?)
}

/// Answers `{"access_token", "token_type": "Bearer", "expires_in", "scope"}` (RFC 6749 §5.1
/// field names) with the key's owner and scopes.
///
/// # Errors
/// As [`issue_for_key`]; 401 for a bad key.
#[utoipa::path(
    post,
    path = "/v1/auth/token",
    tag = "account",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A JWT for the key's owner and scopes (RFC 6749 §5.1 names)", body = crate::openapi::TokenResponse),
        (status = 400, description = "`api_key_required`: tokens are issued for an API key, not another token", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 503, description = "`dependency_unavailable` (the table, queue, bucket or a provider's keys): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
pub(crate) async fn issue_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let (token, claims) = issue_for_key(&state, &caller)?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.settings.auth.jwt_ttl.whole_seconds(),
        "scope": claims.scope,
    }))
    .into_response())
}
