//! Who is calling. Every handler gets the owner here and nowhere else, so this is the one
//! place that changes when API keys and JWTs replace the temporary header.

use axum::http::HeaderMap;
use shared::job::OwnerId;

use crate::error::ApiError;

/// The caller's owner id: for now from `X-Owner-Id` (default `anonymous`).
pub(crate) fn owner(headers: &HeaderMap) -> Result<OwnerId, ApiError> {
    let raw = match headers.get("x-owner-id") {
        None => "anonymous",
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::bad_request("invalid_owner", "X-Owner-Id is not ASCII"))?,
    };
    OwnerId::parse(raw).map_err(|m| ApiError::bad_request("invalid_owner", m))
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
    fn owner_defaults_to_anonymous_and_is_validated() {
        assert_eq!(owner(&headers(&[])).unwrap().as_str(), "anonymous");
        assert_eq!(
            owner(&headers(&[("x-owner-id", "team-7")]))
                .unwrap()
                .as_str(),
            "team-7"
        );
        assert_eq!(
            owner(&headers(&[("x-owner-id", "a/b")]))
                .unwrap_err()
                .code(),
            "invalid_owner"
        );
    }
}
