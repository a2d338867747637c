//! Who is calling: API keys (`Authorization: Bearer ij_live_…`, `X-API-Key`, or HTTP Basic
//! with the key as user name) and the JWTs `POST /v1/auth/token` issues for them. Every handler
//! gets its caller here and nowhere else.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use base64::Engine as _;
use std::borrow::Cow;
use time::OffsetDateTime;

use shared::auth::{self, AuthError, Principal};

use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller, as an extractor: handlers that take it require authentication.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

/// The credential a request carries, if any: `X-API-Key`, `Authorization: Bearer …`, or
/// `Authorization: Basic base64(KEY:)` (Stripe-style: the user name is the credential and the
/// password is ignored; what HTTP clients send for `http://KEY:@host/…`, as the async
/// background-removal service's Python client does once the key is in its base URL).
fn credential(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(Cow::Borrowed(v.trim()));
    }
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Cow::Borrowed(token.trim()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
        return Some(Cow::Owned(user.trim().to_owned()));
    }
    None
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
    let credential = credential.as_ref();
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
        // Skipped while the record is fresh: the store's condition would refuse it anyway,
        // and a refused conditional write still costs a round trip and write capacity.
        if record.use_is_stale(now)
            && let Err(e) = state.keys.touch_key(&hash, now).await
        {
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
        .auth
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
        if let Some(slot) = parts.extensions.get::<crate::access::AccessSlot>() {
            slot.set_owner(principal.owner.as_str());
        }
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
        let get = |pairs: &[(&'static str, &str)]| credential(&headers(pairs)).map(Cow::into_owned);
        assert_eq!(get(&[]), None);
        assert_eq!(
            get(&[("authorization", "Bearer abc")]).as_deref(),
            Some("abc")
        );
        assert_eq!(
            get(&[("authorization", "bearer  abc ")]).as_deref(),
            Some("abc")
        );
        assert_eq!(
            get(&[("x-api-key", "ij_live_x")]).as_deref(),
            Some("ij_live_x")
        );
        assert_eq!(get(&[("authorization", "Digest abc")]), None);
    }

    #[test]
    fn basic_auth_carries_the_key_as_user_name() {
        let basic = |raw: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        let get =
            |value: &str| credential(&headers(&[("authorization", value)])).map(Cow::into_owned);
        // `requests` sends `KEY:` for http://KEY:@host (and nothing for http://KEY@host).
        assert_eq!(get(&basic("ij_live_abc:")).as_deref(), Some("ij_live_abc"));
        assert_eq!(
            get(&basic("ij_live_abc:ignored")).as_deref(),
            Some("ij_live_abc")
        );
        assert_eq!(get(&basic("ij_live_abc")).as_deref(), Some("ij_live_abc"));
        assert_eq!(get(&basic(":password-only")).as_deref(), Some(""));
        assert_eq!(get("Basic !!!not-base64"), None);
    }
}
