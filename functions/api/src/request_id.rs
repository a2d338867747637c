//! The request id of the request being handled, for the jobs it creates
//! ([`shared::job::Job::request_id`]): the `X-Request-Id` header, which the router's
//! `SetRequestIdLayer` sets on every request before any handler runs (the client's, or a new
//! ULID), so the id in the response, the API's logs and the job record is one value.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The request's `X-Request-Id` as [`shared::job::request_id`] accepts it; `None` when the
/// header is missing (only outside the router, e.g. a handler called directly) or not a
/// usable id (too long, spaces, non-ASCII). Never rejects a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestId(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(of(&parts.headers)))
    }
}

/// The request id in `headers` (see [`RequestId`]).
pub(crate) fn of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(shared::job::request_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn the_header_is_kept_when_usable() {
        let mut h = HeaderMap::new();
        assert_eq!(of(&h), None);
        h.insert(
            "x-request-id",
            HeaderValue::from_static("01JD0000000000000000000000"),
        );
        assert_eq!(of(&h).as_deref(), Some("01JD0000000000000000000000"));
        h.insert("x-request-id", HeaderValue::from_static("has spaces"));
        assert_eq!(of(&h), None);
    }
}
