//! Who is calling: API keys (`Authorization: Bearer ij_live_…` or `X-API-Key`) and the JWTs
//! `POST /v1/auth/token` issues for them. Every handler gets its caller here and nowhere else.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use time::OffsetDateTime;

use shared::auth::{self, AuthError, Principal};

use crate::error::ApiError;
use crate::http_handler::AppState;

/// An authenticated caller, as an extractor: handlers that take it require authentication.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// The credential a request carries, if any.
fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Authenticates the request's credential.
///
/// # Errors
/// [`ApiError::Auth`] with the reason (missing, invalid or revoked key; expired, forged,
/// wrongly signed or malformed token).
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let credential = credential(headers)
        .filter(|c| !c.is_empty())
        .ok_or(AuthError::Missing)?;
    let now = OffsetDateTime::now_utc();
    if auth::is_api_key(credential) {
        let hash = auth::hash_api_key(credential);
        let record = state
            .keys
            .find_key(&hash)
            .await?
            .ok_or(AuthError::InvalidApiKey)?;
        if record.revoked {
            return Err(AuthError::RevokedApiKey.into());
        }
        if let Err(e) = state.keys.touch_key(&hash, now).await {
            tracing::warn!(key_id = %record.key_id, error = %e, "could not record key use");
        }
        return Ok(Principal {
            owner: record.owner,
            scopes: record.scopes,
            credential: auth::Credential::ApiKey {
                key_id: record.key_id,
            },
        });
    }
    let secret = state
        .settings
        .jwt_secret
        .as_deref()
        .ok_or(AuthError::TokensDisabled)?;
    Ok(auth::verify_token(secret.as_bytes(), credential, now)?)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(state, &parts.headers).await?;
        tracing::Span::current().record("owner", principal.owner.as_str());
        Ok(Self(principal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_come_from_bearer_or_x_api_key() {
        assert_eq!(credential(&headers(&[])), None);
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Basic dXNlcg==")])),
            None
        );
        assert_eq!(
            credential(&headers(&[("x-api-key", "ij_live_x")])),
            Some("ij_live_x")
        );
    }
}
