//! `SageMakerSegmenter` (the processor's client of a SageMaker real-time endpoint) through the
//! real AWS SDK: against a wiremock server standing in for the SageMaker runtime API (request
//! shape, the documented error answers), and end to end through a stand-in that relays to the
//! real segmenter container the way SageMaker does, so the custom-attributes contract is held
//! on both sides.
//!
//! What SageMaker passes along is from the `InvokeEndpoint` API reference: the request's body,
//! `Content-Type`, `Accept` and `X-Amzn-SageMaker-Custom-Attributes` reach the container; its
//! body, `Content-Type` and `X-Amzn-SageMaker-Custom-Attributes` come back (with
//! `x-Amzn-Invoked-Production-Variant`); a container status other than 200 comes back as a 424
//! `ModelError` carrying `OriginalStatusCode` and `OriginalMessage` (the container's body).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wiremock::matchers::{body_bytes, header, header_regex, headers, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{sample_photo, start_segmenter};
use shared::adapters::{MAX_INVOKE_BODY_BYTES, SageMakerSegmenter, custom_attributes};
use shared::core::{Segmenter, SegmenterError};
use shared::operation::remove_background::RemoveBackgroundParams;

const ENDPOINT: &str = "imagejobs-segmenter";
const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";

/// The adapter against `base` (the SDK's endpoint URL), with the SDK's default retries.
async fn segmenter(base: &str, timeout: Duration) -> SageMakerSegmenter {
    let sdk = imagejobs_local::emulator::sdk_config(base).await;
    SageMakerSegmenter::from_sdk_config(&sdk, ENDPOINT, timeout)
}

fn params(pairs: &[(&str, &str)]) -> RemoveBackgroundParams {
    RemoveBackgroundParams::from_pairs(pairs.iter().copied(), "isnet").unwrap()
}

fn invocations() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path(format!("/endpoints/{ENDPOINT}/invocations")))
}

/// A SageMaker error answer as the rest-json protocol sends it.
fn service_error(status: u16, kind: &str, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("x-amzn-errortype", kind)
        .insert_header("content-type", "application/json")
        .set_body_json(body)
}

/// A real 3×2 PNG.
fn png_3x2() -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(3, 2, image::Rgba([1, 2, 3, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn invoke_endpoint_sends_the_params_as_custom_attributes_and_reads_them_back() {
    let server = MockServer::start().await;
    let image = sample_photo();
    let p = params(&[
        ("model", "u2netp"),
        ("output_format", "webp"),
        ("scale", "0.5"),
        ("background_color", "#102030"),
    ]);
    let cutout = png_3x2();
    invocations()
        .and(header("content-type", "application/octet-stream"))
        // One header, `key=value` pairs joined by commas (the matcher splits on the commas).
        .and(headers(
            CUSTOM_ATTRIBUTES,
            vec![
                "model=u2netp",
                "output_format=webp",
                "quality=95",
                "scale=0.5",
                "only_mask=false",
                "background_color=#102030",
            ],
        ))
        .and(body_bytes(image.clone()))
        // SigV4-signed for SageMaker (the service's signing name is "sagemaker").
        .and(header_regex(
            "authorization",
            r"^AWS4-HMAC-SHA256 Credential=testing/\d{8}/us-east-1/sagemaker/aws4_request",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/webp")
                .insert_header("x-amzn-invoked-production-variant", "AllTraffic")
                .insert_header(
                    CUSTOM_ATTRIBUTES,
                    "width=320,height=214,model=u2netp,foreground_fraction=0.0421,inference_ms=12",
                )
                .set_body_bytes(cutout.clone()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let out = segmenter(&server.uri(), Duration::from_secs(10))
        .await
        .remove_background(image.into(), &p)
        .await
        .unwrap();
    assert_eq!(out.bytes.as_ref(), cutout.as_slice());
    assert_eq!(out.content_type, "image/webp");
    // The metadata comes from the attributes, not from the (3×2) bytes.
    assert_eq!((out.width, out.height), (320, 214));
    assert_eq!(out.engine, "u2netp");
    assert_eq!(out.foreground_fraction, Some(0.0421));
    assert_eq!(
        custom_attributes(&p).matches(',').count(),
        5,
        "one header value"
    );
}

#[tokio::test]
async fn an_older_container_without_attributes_still_yields_the_size_from_the_image() {
    let server = MockServer::start().await;
    invocations()
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "image/png")
                .set_body_bytes(png_3x2()),
        )
        .expect(1)
        .mount(&server)
        .await;
    let p = params(&[("model", "isnet")]);
    let out = segmenter(&server.uri(), Duration::from_secs(10))
        .await
        .remove_background(sample_photo().into(), &p)
        .await
        .unwrap();
    assert_eq!((out.width, out.height), (3, 2));
    assert_eq!(out.engine, "isnet", "the model asked for");
    assert_eq!(out.foreground_fraction, None);

    // Neither attributes nor a decodable image: nothing to record, so retry.
    server.reset().await;
    invocations()
        .respond_with(ResponseTemplate::new(200).set_body_bytes(b"not an image".to_vec()))
        .mount(&server)
        .await;
    let err = segmenter(&server.uri(), Duration::from_secs(10))
        .await
        .remove_background(sample_photo().into(), &p)
        .await
        .unwrap_err();
    assert!(matches!(err, SegmenterError::Transient(_)), "{err:?}");
}

#[tokio::test]
async fn container_refusals_are_permanent_with_the_containers_code_and_not_retried() {
    let server = MockServer::start().await;
    let original = json!({"error": {"code": "model_unavailable", "message": "isnet.onnx is not in /opt/ml/model"}});
    invocations()
        .respond_with(service_error(
            424,
            "ModelError",
            json!({
                "Message": "Received client error (422) from primary with message ...",
                "OriginalStatusCode": 422,
                "OriginalMessage": original.to_string(),
                "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/imagejobs-segmenter",
            }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = segmenter(&server.uri(), Duration::from_secs(10))
        .await
        .remove_background(sample_photo().into(), &params(&[]))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SegmenterError::Permanent {
            code: "model_unavailable".into(),
            message: "isnet.onnx is not in /opt/ml/model".into(),
        }
    );
}

#[tokio::test]
async fn overload_not_ready_and_unavailable_endpoints_are_retryable() {
    for (status, kind, body) in [
        (
            424,
            "ModelError",
            json!({"Message": "Received server error (503)", "OriginalStatusCode": 503,
                   "OriginalMessage": json!({"error": {"code": "overloaded", "message": "4 requests in flight"}}).to_string()}),
        ),
        (
            424,
            "ModelError",
            json!({"Message": "Received client error (429)", "OriginalStatusCode": 429, "OriginalMessage": ""}),
        ),
        (
            429,
            "ModelNotReadyException",
            json!({"Message": "model not ready"}),
        ),
        (
            400,
            "ValidationError",
            json!({"Message": "Endpoint imagejobs-segmenter of account 123456789012 not found."}),
        ),
        (503, "ServiceUnavailable", json!({"Message": "try again"})),
    ] {
        // The container at capacity (its 503 `overloaded`, or a 429) is `Overloaded`, asked
        // again inside the record; everything else here is `Transient`, retried through SQS.
        let at_capacity = kind == "ModelError"
            && (body["OriginalStatusCode"] == 429
                || body["OriginalMessage"]
                    .as_str()
                    .is_some_and(|m| m.contains("overloaded")));
        let server = MockServer::start().await;
        invocations()
            .respond_with(service_error(status, kind, body))
            .mount(&server)
            .await;
        let err = segmenter(&server.uri(), Duration::from_secs(20))
            .await
            .remove_background(sample_photo().into(), &params(&[]))
            .await
            .unwrap_err();
        let text = match &err {
            SegmenterError::Overloaded(text) if at_capacity => text,
            SegmenterError::Transient(text) if !at_capacity => text,
            other => panic!("{kind} ({status}) is the wrong kind of retryable: {other:?}"),
        };
        assert!(!text.is_empty());
        if kind == "ModelError" && status == 424 && text.contains("503") {
            assert!(text.contains("overloaded"), "the container's code: {text}");
        }
    }
}

#[tokio::test]
async fn bodies_over_the_endpoint_limit_are_refused_before_the_call() {
    let server = MockServer::start().await;
    invocations()
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let err = segmenter(&server.uri(), Duration::from_secs(10))
        .await
        .remove_background(vec![0u8; MAX_INVOKE_BODY_BYTES + 1].into(), &params(&[]))
        .await
        .unwrap_err();
    let SegmenterError::Permanent { code, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(code, "payload_too_large");
}

#[tokio::test]
async fn the_call_gives_up_after_the_segmenter_timeout() {
    let server = MockServer::start().await;
    invocations()
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let started = std::time::Instant::now();
    let err = segmenter(&server.uri(), Duration::from_secs(1))
        .await
        .remove_background(sample_photo().into(), &params(&[]))
        .await
        .unwrap_err();
    assert!(matches!(err, SegmenterError::Transient(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{err:?}");
}

// ---- end to end: the adapter, a SageMaker stand-in and the real container ----

#[derive(Clone)]
struct Relay {
    http: reqwest::Client,
    container: String,
}

/// `POST /endpoints/{name}/invocations` as SageMaker serves it: only the documented headers go
/// to the container's `/invocations` and come back; a non-200 answer becomes a `ModelError`.
async fn relay(
    State(relay): State<Relay>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    assert_eq!(name, ENDPOINT);
    let mut request = relay
        .http
        .post(format!("{}/invocations", relay.container))
        .body(body);
    for forwarded in ["content-type", "accept", CUSTOM_ATTRIBUTES] {
        if let Some(v) = headers.get(forwarded) {
            request = request.header(forwarded, v.as_bytes());
        }
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let back = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap();
    if status != StatusCode::OK {
        let body = json!({
            "Message": format!("Received error ({}) from primary", status.as_u16()),
            "OriginalStatusCode": status.as_u16(),
            "OriginalMessage": String::from_utf8_lossy(&bytes),
        });
        return (
            StatusCode::FAILED_DEPENDENCY,
            [("x-amzn-errortype", "ModelError")],
            axum::Json(body),
        )
            .into_response();
    }
    let mut res = (StatusCode::OK, bytes).into_response();
    for kept in ["content-type", CUSTOM_ATTRIBUTES] {
        if let Some(v) = back.get(kept) {
            res.headers_mut().insert(kept, v.clone());
        }
    }
    res.headers_mut().insert(
        "x-amzn-invoked-production-variant",
        "AllTraffic".parse().unwrap(),
    );
    res
}

async fn start_relay(container: String) -> String {
    let app = axum::Router::new()
        .route("/endpoints/{name}/invocations", axum::routing::post(relay))
        .with_state(Relay {
            http: reqwest::Client::new(),
            container,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_real_container_answers_through_sagemakers_header_contract() {
    let (container, _models) = start_segmenter().await;
    let endpoint = start_relay(container).await;
    let client = segmenter(&endpoint, Duration::from_secs(30)).await;

    let p = params(&[("model", "plain-background"), ("scale", "0.5")]);
    let out = client
        .remove_background(sample_photo().into(), &p)
        .await
        .unwrap();
    assert_eq!(out.content_type, "image/png");
    assert_eq!(out.engine, "plain-background");
    // Only the custom attributes crossed; they agree with the image itself (640×427 at 0.5).
    let decoded = image::load_from_memory(&out.bytes).unwrap();
    assert_eq!((out.width, out.height), (decoded.width(), decoded.height()));
    assert_eq!((out.width, out.height), (320, 214));
    let fraction = out
        .foreground_fraction
        .expect("foreground_fraction attribute");
    assert!(
        fraction > 0.0 && fraction < 0.5,
        "the rocket, not the sky: {fraction}"
    );

    // A catalog model this container has no weights for: the container's 422 and code.
    let err = client
        .remove_background(sample_photo().into(), &params(&[("model", "isnet")]))
        .await
        .unwrap_err();
    let SegmenterError::Permanent { code, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(code, "model_unavailable");
}
