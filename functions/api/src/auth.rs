//! `POST /v1/auth/token`: exchanges an API key for a short-lived HS256 JWT.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;

use shared::auth::{self, AuthError, Credential};

use crate::error::ApiError;
use crate::http_handler::AppState;
use crate::identity::Caller;

/// Answers `{"access_token", "token_type": "Bearer", "expires_in", "scope"}` (RFC 6749 §5.1
/// field names) with the key's owner and scopes.
pub(crate) async fn issue_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    if !matches!(caller.credential, Credential::ApiKey { .. }) {
        return Err(ApiError::bad_request(
            "api_key_required",
            "tokens are issued in exchange for an API key, not another token",
        ));
    }
    let secret = state
        .settings
        .jwt_secret
        .as_deref()
        .ok_or(AuthError::TokensDisabled)?;
    let ttl = state.settings.jwt_ttl;
    let (token, claims) = auth::issue_token(
        secret.as_bytes(),
        &caller.owner,
        &caller.scopes,
        ttl,
        OffsetDateTime::now_utc(),
    )
    .map_err(|message| shared::Error::Config(format!("signing a token: {message}")))?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl.whole_seconds(),
        "scope": claims.scope,
    }))
    .into_response())
}
