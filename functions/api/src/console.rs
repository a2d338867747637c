//! The web console: a page for people, served by the API itself (issue 14 §3).
//!
//! The page, its script and its stylesheet are compiled into the binary from
//! `functions/api/console/` (so the Lambda zip carries them and users need no build step);
//! nothing loads from another origin. The page talks to the same `/v1` routes as every
//! client, with the key the user pastes, plus two routes of its own that hand it image bytes
//! on the same origin:
//!
//! | route | answer |
//! |---|---|
//! | `GET /console`, `GET /console/` | the page (`index.html`) |
//! | `GET /console/{file}` | `app.js`, `style.css` |
//! | `GET /console/api/jobs/{id}/result[?index=N]` | the result's bytes (what `GET /v1/jobs/{id}/result` redirects to) |
//! | `GET /console/api/jobs/{id}/input` | the job's stored input image's bytes |
//!
//! Why the byte routes: `GET /v1/jobs/{id}/result` answers 303 to a presigned URL on the
//! bucket's origin, which a script can only read with CORS on the bucket and a CSP naming that
//! origin. Reading the bytes here, with the key, lets the page show them as `blob:` URLs and
//! keep a CSP of `'self'` only: no bucket origin, no wildcard.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::identity::Caller;
use crate::jobs::{load_job, result_image};
use crate::state::AppState;

/// The console's Content-Security-Policy, on its page and assets only (every other response
/// keeps the router's `default-src 'none'`): scripts, styles and API calls from this origin;
/// images from this origin, `blob:` (the picked files and the fetched results) and `data:`
/// (the empty favicon); no forms posted anywhere, no `<base>`, no framing.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; form-action 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Largest image the byte routes hand out, in bytes (4 MiB). A Lambda response is at most
/// 6 MB and binary bodies travel base64-encoded (4/3 larger); the cap applies locally too, so
/// the console behaves the same everywhere.
pub const MAX_PROXIED_BYTES: u64 = 4 * 1024 * 1024;

/// One embedded file: name under `/console/`, media type, content.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../console/index.html"),
};

const ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../console/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../console/style.css"),
    },
];

/// The console's routes, each with its OpenAPI entry, to merge into the API's router.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(page_with_slash))
        .routes(routes!(asset))
        .routes(routes!(result_bytes))
        .routes(routes!(input_bytes))
}

fn serve(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CONTENT_SECURITY_POLICY, CONSOLE_CSP),
            // Small files that change with each deployment: revalidate rather than guess.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

/// `GET /console`: the page.
#[utoipa::path(
    get,
    path = "/console",
    operation_id = "console_page",
    tag = "console",
    security(()),
    responses((status = 200, description = "The web console's page", content_type = "text/html", body = String))
)]
async fn page() -> Response {
    serve(&INDEX)
}

/// `GET /console/`: the page, as at `/console`.
#[utoipa::path(
    get,
    path = "/console/",
    operation_id = "console_page_with_slash",
    tag = "console",
    security(()),
    responses((status = 200, description = "The web console's page", content_type = "text/html", body = String))
)]
async fn page_with_slash() -> Response {
    serve(&INDEX)
}

/// `GET /console/{file}`: one of the embedded files.
///
/// # Errors
/// 404 `route_not_found` for any other name.
#[utoipa::path(
    get,
    path = "/console/{file}",
    operation_id = "console_asset",
    tag = "console",
    security(()),
    params(("file" = String, Path, description = "`app.js` or `style.css`")),
    responses(
        (status = 200, description = "The script or stylesheet", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "text/html"),
        )),
        (status = 404, description = "`route_not_found`: no such file", body = crate::openapi::ErrorBody),
    )
)]
async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|a| a.name == file)
        .map(serve)
        .ok_or_else(|| ApiError::RouteNotFound(format!("GET /console/{file}")))
}

/// Reads `key` from the bucket and answers its bytes as `content_type`, `no-store`.
///
/// # Errors
/// 422 `image_too_large_for_console` over [`MAX_PROXIED_BYTES`] (checked on the record's size
/// before reading); 503 when the bucket cannot be read.
async fn bytes_of(
    state: &AppState,
    key: &str,
    content_type: &str,
    size: u64,
) -> Result<Response, ApiError> {
    if size > MAX_PROXIED_BYTES {
        return Err(ApiError::unprocessable(
            "image_too_large_for_console",
            format!(
                "the image is {size} bytes, over the console's {MAX_PROXIED_BYTES}; download it with GET /v1/jobs/{{id}}/result or the CLI"
            ),
        ));
    }
    let body = state.blobs.get(key).await?;
    let mut resp = Body::from(body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /console/api/jobs/{id}/result[?index=N]`: 200 with the bytes of the result (output `N`,
/// 0-based, of a multi-output job), typed as stored.
///
/// # Errors
/// As `GET /v1/jobs/{id}/result`: 401/403 (needs `jobs:read`), 404 `job_not_found`, 400
/// `invalid_params` for a bad `index`, 423 `job_not_finished`, 409 with the job's code when it
/// failed or `job_canceled`, 404 `result_not_found` past the last output; and 422
/// `image_too_large_for_console` over [`MAX_PROXIED_BYTES`].
#[utoipa::path(
    get,
    path = "/console/api/jobs/{id}/result",
    operation_id = "console_result",
    tag = "console",
    security(("api_key" = []), ("jwt" = [])),
    params(("id" = String, Path, description = "The job's ULID (26 characters)"), ("index" = Option<u32>, Query, minimum = 0, description = "0-based output of a multi-output job (default 0)")),
    responses(
        (status = 200, description = "The result's bytes, typed as stored", content(
            (Vec<u8> = "image/png"),
            (Vec<u8> = "image/jpeg"),
            (Vec<u8> = "image/webp"),
        )),
        (status = 400, description = "`invalid_params`: `index` is not a whole number", body = crate::openapi::ErrorBody),
        (status = 404, description = "`job_not_found`; `result_not_found` for an index past the last output", body = crate::openapi::ErrorBody),
        (status = 409, description = "The job failed (its own code) or `job_canceled`", body = crate::openapi::ErrorBody),
        (status = 423, description = "`job_not_finished`: queued or processing", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks `jobs:read`", body = crate::openapi::ErrorBody),
        (status = 422, description = "`image_too_large_for_console`: over 4 MiB; use `GET /v1/jobs/{id}/result`", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table or bucket): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
async fn result_bytes(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let job = load_job(&state, &caller, &id).await?;
    let image = result_image(job, &query)?;
    bytes_of(&state, &image.key, &image.content_type, image.bytes).await
}

/// `GET /console/api/jobs/{id}/input`: 200 with the bytes of the job's stored `image` input
/// (the "before" of a job picked from the history), typed as sniffed at submission.
///
/// # Errors
/// 401/403 (needs `jobs:read`), 404 `job_not_found`; 404 `result_not_found` for a job without
/// a stored `image` input (text-to-image generation); 422 `image_too_large_for_console`.
#[utoipa::path(
    get,
    path = "/console/api/jobs/{id}/input",
    operation_id = "console_input",
    tag = "console",
    security(("api_key" = []), ("jwt" = [])),
    params(("id" = String, Path, description = "The job's ULID (26 characters)")),
    responses(
        (status = 200, description = "The input image's bytes, typed as sniffed at submission", content(
            (Vec<u8> = "image/png"),
            (Vec<u8> = "image/jpeg"),
            (Vec<u8> = "image/webp"),
        )),
        (status = 404, description = "`job_not_found`; `result_not_found` for a job without an input image", body = crate::openapi::ErrorBody),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks `jobs:read`", body = crate::openapi::ErrorBody),
        (status = 422, description = "`image_too_large_for_console`: over 4 MiB; use `GET /v1/jobs/{id}/result`", body = crate::openapi::ErrorBody),
        (status = 503, description = "`dependency_unavailable` (the table or bucket): retry after `Retry-After`", body = crate::openapi::ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
async fn input_bytes(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load_job(&state, &caller, &id).await?;
    let input = job
        .inputs
        .get("image")
        .ok_or_else(|| ApiError::ResultNotFound(format!("job {} has no input image", job.id)))?;
    bytes_of(&state, &input.key, &input.content_type, input.bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_named_once_and_non_empty() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.trim().is_empty(), "{} is empty", a.name);
            assert!(
                ASSETS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        // Every src/href in the page is this origin's /console/ or a data: URL; a CDN link
        // would be refused by the CSP anyway, but must not be there to begin with.
        let page = INDEX.body;
        for attr in ["src=\"", "href=\""] {
            for (at, _) in page.match_indices(attr) {
                let value = &page[at + attr.len()..];
                let value = &value[..value.find('"').unwrap()];
                assert!(
                    value.starts_with("/console/") || value.starts_with("data:"),
                    "{attr}{value}\" loads from elsewhere"
                );
            }
        }
        assert!(page.contains("/console/app.js") && page.contains("/console/style.css"));
    }
}
