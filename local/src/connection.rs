//! HTTP/1.1 connection handling of the local runner's API server (`serve`).
//!
//! Many refusals answer before the request body is read: a missing token on a multipart upload,
//! a rate limit, a body over the limit. hyper then closes the connection after the response
//! (it will not read a body nobody asked for), but the response itself may already have gone
//! out as keep-alive. A pooled client (reqwest, `requests.Session`) that sends its next request
//! on that connection gets it cut under it (reqwest: `IncompleteMessage`). On AWS, API Gateway
//! and Function URLs read the whole request before the function runs, so only the local server
//! needs this: such a response says `Connection: close` (RFC 9112 §9.6), so the client opens a
//! new connection instead of racing the close.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// The API router as the local runner serves it over HTTP/1.1: [`imagejobs_api::router`]
/// with [`close_if_body_unread`].
pub fn api_app(state: imagejobs_api::AppState) -> axum::Router {
    imagejobs_api::router(state).layer(axum::middleware::from_fn(close_if_body_unread))
}

/// Middleware: a response to a request whose body the handler did not read to its end carries
/// `Connection: close`. Requests without a body, and bodies read to the end, keep the
/// connection alive.
pub async fn close_if_body_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let read_to_end = Arc::new(AtomicBool::new(false));
    let body = Body::new(Watched {
        inner: body,
        read_to_end: read_to_end.clone(),
    });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if !read_to_end.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records whether it was read to its end.
struct Watched {
    inner: Body,
    read_to_end: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // A multipart parser stops at the closing boundary without asking for the end of the
        // stream; a body of known length says it is done once its last byte is out.
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read_to_end.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route("/refuse", post(|| async { "refused unread" }))
            .route(
                "/read",
                post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
            )
            .layer(axum::middleware::from_fn(close_if_body_unread))
    }

    async fn connection(uri: &str, body: Body) -> Option<HeaderValue> {
        let request = Request::post(uri).body(body).unwrap();
        let response = app().oneshot(request).await.unwrap();
        response.headers().get(header::CONNECTION).cloned()
    }

    #[tokio::test]
    async fn an_unread_body_closes_the_connection() {
        let body = Body::from_stream(futures_stream(vec![vec![7u8; 64 * 1024]; 4]));
        assert_eq!(
            connection("/refuse", body)
                .await
                .as_ref()
                .map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_or_no_body_keeps_it_alive() {
        let body = Body::from_stream(futures_stream(vec![vec![7u8; 64 * 1024]; 4]));
        assert_eq!(connection("/read", body).await, None);
        assert_eq!(connection("/read", Body::from(vec![1u8; 10])).await, None);
        assert_eq!(connection("/refuse", Body::empty()).await, None);
    }

    /// A chunked body of unknown length, as a streaming upload arrives.
    fn futures_stream(
        chunks: Vec<Vec<u8>>,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
        futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))))
    }
}
