//! The HTTP surface (SageMaker container contract): `GET /ping`, `GET /models`,
//! `POST /invocations`. See the crate README for the full contract.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shared::operation::ParamError;
use shared::operation::remove_background::RemoveBackgroundParams;

use crate::config::Config;
use crate::error::ServiceError;
use crate::imaging::DecodeLimits;
use crate::pipeline::{Processed, remove_background};
use crate::registry::Registry;

/// The SageMaker header carrying parameters (`key=value,key=value`); SageMaker forwards it to
/// the container but not the query string.
pub const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";

/// Shared state of the router: the loaded engines and the request limits. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    limits: DecodeLimits,
    max_body_bytes: usize,
    png_deflate: crate::png::Deflate,
}

impl AppState {
    /// State over a loaded registry with the limits of `config` (`MAX_PIXELS`, `MAX_SIDE`,
    /// `MAX_BODY_BYTES`).
    pub fn new(registry: Registry, config: &Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                limits: DecodeLimits {
                    max_pixels: config.max_pixels,
                    max_side: config.max_side,
                },
                max_body_bytes: config.max_body_bytes,
                png_deflate: crate::png::Deflate::Rle,
            }),
        }
    }

    /// The loaded engines.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
}

/// The axum router over `state`. Routes: `GET /ping`, `GET /models`, `POST /invocations`;
/// anything else answers 404 with the JSON error body (code `not_found`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ping", get(ping))
        .route("/models", get(models))
        .route("/invocations", post(invocations))
        .fallback(not_found)
        .with_state(state)
}

async fn ping(State(state): State<AppState>) -> Response {
    let models = state.registry().available();
    let (status, word) = if models.is_empty() {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    } else {
        (StatusCode::OK, "ok")
    };
    let body = serde_json::json!({
        "status": word,
        "models": models,
        "default_model": state.registry().default_model(),
    });
    (status, Json(body)).into_response()
}

async fn models(State(state): State<AppState>) -> Response {
    Json(state.registry().models()).into_response()
}

async fn not_found(uri: Uri) -> Response {
    let body = serde_json::json!({"error": {"code": "not_found", "message": format!("no route for {}", uri.path())}});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// The result's metadata for the response's custom-attributes header, in the request
/// header's `key=value,…` form: `width`, `height` (px), `model` (the engine that ran),
/// `foreground_fraction` (0–1, four decimals) and `inference_ms` (integer) — the `X-*` headers'
/// values, which SageMaker does not return. Well under the header's 1,024-character limit.
pub fn result_attributes(model: &str, p: &Processed) -> String {
    format!(
        "width={},height={},model={model},foreground_fraction={:.4},inference_ms={}",
        p.width,
        p.height,
        p.foreground_fraction,
        p.inference_ms.round() as u64
    )
}

/// Parses the SageMaker custom-attributes header value: comma-separated `key=value` pairs,
/// whitespace around keys and values ignored, empty entries skipped.
///
/// # Errors
/// `invalid_params` for an entry without `=` or with an empty key.
pub fn parse_custom_attributes(value: &str) -> Result<Vec<(String, String)>, ParamError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(ParamError::invalid(
                "X-Amzn-SageMaker-Custom-Attributes",
                format!("'{entry}' is not key=value (expected e.g. model=u2net,output_format=png)"),
            )),
        })
        .collect()
}

/// The request parameters: query-string pairs first, then the custom-attributes header (so the
/// header wins when both give a key), parsed and validated by
/// [`RemoveBackgroundParams::from_pairs`] with the server's default model.
///
/// # Errors
/// `invalid_params` / `unknown_model`.
pub fn request_params(
    uri: &Uri,
    headers: &HeaderMap,
    default_model: &str,
) -> Result<RemoveBackgroundParams, ParamError> {
    let mut pairs: Vec<(String, String)> = match Query::<Vec<(String, String)>>::try_from_uri(uri) {
        Ok(Query(p)) => p,
        Err(e) => {
            return Err(ParamError::invalid(
                "query",
                format!("malformed query string: {e}"),
            ));
        }
    };
    for value in headers.get_all(CUSTOM_ATTRIBUTES) {
        let value = value.to_str().map_err(|_| {
            ParamError::invalid(
                "X-Amzn-SageMaker-Custom-Attributes",
                "the header is not visible ASCII",
            )
        })?;
        pairs.extend(parse_custom_attributes(value)?);
    }
    RemoveBackgroundParams::from_pairs(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        default_model,
    )
}

/// Reads the body, refusing more than `limit` bytes (by `Content-Length` up front, and while
/// streaming for chunked bodies).
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ServiceError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ServiceError::PayloadTooLarge { limit });
    }
    let mut buf = Vec::with_capacity(declared.map_or(64 * 1024, |n| n as usize));
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame
            .map_err(|e| ServiceError::BadRequest(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(ServiceError::PayloadTooLarge { limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

async fn invocations(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match invoke(&state, &uri, &headers, body).await {
        Ok((model, p)) => {
            tracing::info!(
                model = %model,
                width = p.width,
                height = p.height,
                bytes = p.bytes.len(),
                inference_ms = p.inference_ms as u64,
                foreground_fraction = p.foreground_fraction,
                total_ms = p.total_ms as u64,
                "invocation done"
            );
            let attributes = result_attributes(&model, &p);
            let mut res = (StatusCode::OK, p.bytes).into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(p.content_type),
            );
            h.insert("x-image-width", HeaderValue::from(p.width));
            h.insert("x-image-height", HeaderValue::from(p.height));
            if let Ok(v) = HeaderValue::from_str(&model) {
                h.insert("x-model", v);
            }
            h.insert(
                "x-inference-ms",
                HeaderValue::from(p.inference_ms.round() as u64),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("{:.4}", p.foreground_fraction)) {
                h.insert("x-foreground-fraction", v);
            }
            // SageMaker drops the X-* headers above on the way back and returns only this one
            // (as InvokeEndpoint's CustomAttributes), so the same metadata rides here too.
            if let Ok(v) = HeaderValue::from_str(&attributes) {
                h.insert(CUSTOM_ATTRIBUTES, v);
            }
            if let Ok(v) = HeaderValue::from_str(&p.stages.server_timing(p.total_ms)) {
                h.insert("server-timing", v);
            }
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn invoke(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(String, Processed), ServiceError> {
    let registry = state.registry();
    let params = request_params(uri, headers, registry.default_model())?;
    let loaded = registry
        .resolve(&params.model, params.model_fallback)?
        .clone();
    let permit = loaded.admit()?;
    let bytes = read_body(headers, body, state.inner.max_body_bytes).await?;
    let limits = state.inner.limits;
    let png_deflate = state.inner.png_deflate;
    let model = loaded.engine.name().to_owned();
    let processed = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        remove_background(&bytes, loaded.engine.as_ref(), &params, limits, png_deflate)
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("processing task failed: {e}")))??;
    Ok((model, processed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_attributes_parse_and_refuse_garbage() {
        let p =
            parse_custom_attributes(" model=u2netp , output_format=webp,,scale = 0.5 ").unwrap();
        assert_eq!(
            p,
            vec![
                ("model".to_owned(), "u2netp".to_owned()),
                ("output_format".to_owned(), "webp".to_owned()),
                ("scale".to_owned(), "0.5".to_owned()),
            ]
        );
        assert!(parse_custom_attributes("").unwrap().is_empty());
        assert_eq!(
            parse_custom_attributes("model").unwrap_err().code,
            "invalid_params"
        );
        assert_eq!(
            parse_custom_attributes("=x").unwrap_err().code,
            "invalid_params"
        );
    }

    #[test]
    fn result_attributes_are_custom_attributes_pairs() {
        let p = Processed {
            bytes: Vec::new(),
            content_type: "image/png",
            width: 640,
            height: 427,
            foreground_fraction: 0.123_456,
            inference_ms: 86.6,
            total_ms: 120.0,
            stages: crate::pipeline::Stages::default(),
        };
        let text = result_attributes("isnet", &p);
        assert!(text.len() <= 1024 && text.bytes().all(|b| b.is_ascii_graphic()));
        let pairs = parse_custom_attributes(&text).unwrap();
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get("width"), "640");
        assert_eq!(get("height"), "427");
        assert_eq!(get("model"), "isnet");
        assert_eq!(get("foreground_fraction"), "0.1235");
        assert_eq!(get("inference_ms"), "87");
    }

    #[test]
    fn header_overrides_query() {
        let uri: Uri = "/invocations?model=u2net&background_color=%23ff0000&only_mask=true"
            .parse()
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            CUSTOM_ATTRIBUTES,
            HeaderValue::from_static("model=plain-background,scale=0.25"),
        );
        let p = request_params(&uri, &headers, "u2net").unwrap();
        assert_eq!(p.model, "plain-background");
        assert_eq!(p.scale, 0.25);
        assert!(p.only_mask);
        assert_eq!(p.background_color.unwrap().to_rgba(), [255, 0, 0, 255]);
    }
}
