//! The API Gateway fixtures in `events/` (used with `cargo lambda invoke --data-file` and
//! `sam local invoke -e`) are real HTTP API payload v2.0 events: lambda_http's own parser turns
//! them into the request the Router sees, with the method, path, headers and body that the
//! handlers expect.

use lambda_http::http::{Method, header};
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_http::{Body, Request, RequestExt};
use shared::job::Operation;
use shared::operation::remove_background::OutputFormat;

const CREATE_JOB: &str = include_str!("../../../../events/apigw-create-job.json");
const GET_JOB: &str = include_str!("../../../../events/apigw-get-job.json");

/// Parses an event exactly as `lambda_http::run` does: `LambdaRequest`, then `http::Request`.
fn parse(event: &str) -> Request {
    let lambda: LambdaRequest =
        serde_json::from_str(event).expect("event is a lambda_http request");
    Request::from(lambda)
}

fn header<'a>(req: &'a Request, name: &str) -> &'a str {
    req.headers()
        .get(name)
        .unwrap_or_else(|| panic!("header {name} is missing"))
        .to_str()
        .expect("ASCII header")
}

/// Asserts the event came in as an HTTP API (payload v2.0) request on the `$default` stage,
/// through the template's catch-all route, and not as a REST API (v1) one.
fn assert_http_api(req: &Request) {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            assert_eq!(
                ctx.stage.as_deref(),
                Some("$default"),
                "no stage prefix in paths"
            );
            assert_eq!(
                ctx.route_key.as_deref(),
                Some("ANY /{proxy+}"),
                "template.yaml's route"
            );
            assert_eq!(ctx.http.method, req.method());
            assert_eq!(ctx.http.path.as_deref(), Some(req.uri().path()));
        }
        other => panic!("expected an API Gateway HTTP API (v2.0) request context, got {other:?}"),
    }
}

fn body_text(req: &Request) -> &str {
    match req.body() {
        Body::Text(text) => text,
        other => panic!("expected a text body (isBase64Encoded: false), got {other:?}"),
    }
}

#[test]
fn create_job_event_is_a_json_post_to_v1_jobs() {
    let req = parse(CREATE_JOB);
    assert_http_api(&req);

    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/v1/jobs");
    assert_eq!(req.uri().query(), None);
    assert_eq!(req.raw_http_path(), "/v1/jobs");
    assert_eq!(
        req.path_parameters_ref().and_then(|p| p.first("proxy")),
        Some("v1/jobs")
    );
    assert_eq!(
        header(&req, header::CONTENT_TYPE.as_str()),
        "application/json"
    );
    assert_eq!(
        header(&req, "idempotency-key"),
        "7f3c9a52-2d1e-4c8b-9a7e-0b6f1d2e3c4a"
    );
    assert_eq!(header(&req, "prefer"), "wait=10");
    assert!(
        req.headers().get("x-owner-id").is_none(),
        "the owner defaults to anonymous"
    );

    let text = body_text(&req);
    assert_eq!(
        header(&req, header::CONTENT_LENGTH.as_str()),
        text.len().to_string(),
        "content-length matches the body"
    );

    // The documented create-job shape: operation + input reference + params.
    let body: serde_json::Value = serde_json::from_str(text).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({
            "operation": "remove_background",
            "input": "s3://imagejobs-local/uploads/photo.jpg",
            "params": {"model": "u2net", "output_format": "png"}
        })
    );

    // And the domain accepts it: the same operation/params the API validates before any write.
    let operation: Operation = serde_json::from_value(body).expect("a valid operation");
    let Operation::RemoveBackground(params) = operation else {
        panic!("the fixture creates a remove_background job");
    };
    assert_eq!(params.model, "u2net");
    assert_eq!(params.output_format, OutputFormat::Png);
    params
        .validate()
        .expect("params within the contract's ranges");
    assert!(shared::models::is_known(&params.model));
}

#[test]
fn get_job_event_is_a_get_of_one_job() {
    let req = parse(GET_JOB);
    assert_http_api(&req);

    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), "/v1/jobs/01JD0000000000000000000000");
    assert_eq!(header(&req, "x-owner-id"), "anonymous");
    assert_eq!(
        req.path_parameters_ref().and_then(|p| p.first("proxy")),
        Some("v1/jobs/01JD0000000000000000000000")
    );

    let id = req
        .uri()
        .path()
        .strip_prefix("/v1/jobs/")
        .expect("a job path");
    id.parse::<ulid::Ulid>().expect("the job id is a ULID");
    assert!(matches!(req.body(), Body::Empty), "a GET carries no body");
}

#[test]
fn events_use_the_host_header_for_the_uri() {
    // lambda_http builds an absolute URI from the Host header and x-forwarded-proto.
    for event in [CREATE_JOB, GET_JOB] {
        let req = parse(event);
        assert_eq!(req.uri().scheme_str(), Some("https"));
        assert_eq!(
            req.uri().host(),
            Some("a1b2c3d4e5.execute-api.us-east-1.amazonaws.com")
        );
    }
}

const CREATE_EDIT_JOB: &str = include_str!("../../../../events/apigw-create-edit-job.json");
const FAL_WEBHOOK: &str = include_str!("../../../../events/apigw-fal-webhook.json");

#[test]
fn create_edit_job_event_carries_a_reference_and_fal_params() {
    let req = parse(CREATE_EDIT_JOB);
    assert_http_api(&req);
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/v1/jobs");
    assert!(header(&req, "authorization").starts_with("Bearer ij_live_"));
    let body: serde_json::Value = serde_json::from_str(body_text(&req)).unwrap();
    assert_eq!(body["operation"], "edit");
    assert!(
        body["inputs"]["reference_1"]
            .as_str()
            .unwrap()
            .starts_with("s3://")
    );
    let params = body["params"].as_object().unwrap().clone();
    let edit = shared::operation::edit::EditParams::from_json(params).expect("valid edit params");
    assert_eq!(edit.options.num_images, 2);
}

#[test]
fn fal_webhook_event_has_the_signed_headers_and_the_job_query() {
    let req = parse(FAL_WEBHOOK);
    assert_http_api(&req);
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/v1/providers/fal/webhook");
    assert_eq!(
        req.uri().query(),
        Some("owner=anonymous&job_id=01JD8X4Q2W3E4R5T6Y7U8I9O0R")
    );
    let request_id = header(&req, "x-fal-webhook-request-id");
    assert_eq!(header(&req, "x-fal-webhook-signature").len(), 128);
    let timestamp: i64 = header(&req, "x-fal-webhook-timestamp").parse().unwrap();
    assert!(timestamp > 1_700_000_000);
    let body: serde_json::Value = serde_json::from_str(body_text(&req)).unwrap();
    assert_eq!(body["request_id"], request_id);
    assert_eq!(body["status"], "OK");
    // Its placeholder signature must not verify: the fixture is for routing, not for replay.
    let signed = shared::fal_signature::SignedHeaders {
        request_id,
        user_id: header(&req, "x-fal-webhook-user-id"),
        timestamp: header(&req, "x-fal-webhook-timestamp"),
        signature: header(&req, "x-fal-webhook-signature"),
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
    assert!(
        shared::fal_signature::verify(&signed, body_text(&req).as_bytes(), &[key], timestamp)
            .is_err()
    );
}
