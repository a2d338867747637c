//! `GET /openapi.json` and the interactive page at `GET /docs/`: Swagger UI, embedded in the
//! binary at build time (`utoipa-swagger-ui`'s `vendored` feature), so the page works offline and
//! loads nothing from a CDN. Only these routes get a Content-Security-Policy that lets a page
//! run its own scripts and styles ([`DOCS_CSP`]); every other response keeps `default-src
//! 'none'` (see [`crate::router`]).

use std::sync::{Arc, LazyLock};

use axum::Extension;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_swagger_ui::Config;

use crate::error::ApiError;

/// The CSP of the docs routes: the page's own scripts, styles and images (Swagger UI sets
/// inline styles and uses `data:` SVG icons), `fetch` to this origin only (the document and
/// "Try it out"), never framed.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The serialized document, built once with the router and shared by every request.
#[derive(Clone)]
pub(crate) struct OpenApiJson(pub(crate) Arc<str>);

/// Swagger UI's settings: our document, no external validator badge (it would call
/// validator.swagger.io), "Try it out" on, credentials kept across reloads.
static UI_CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::from("/openapi.json")
            .validator_url("none")
            .try_it_out_enabled(true)
            .persist_authorization(true)
            .display_request_duration(true),
    )
});

/// `GET /openapi.json`: this document (OpenAPI 3.1), no credential needed.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
    )
)]
pub(crate) async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc.0.to_string(),
    )
        .into_response()
}

/// `GET /docs`: 303 to `/docs/`, so that the page's relative asset URLs resolve under it.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    security(()),
    responses((status = 303, description = "See `/docs/`", headers(("Location" = String, description = "`/docs/`"))))
)]
pub(crate) async fn redirect() -> Redirect {
    Redirect::to("/docs/")
}

/// `GET /docs/`: the interactive page (Swagger UI over `/openapi.json`).
#[utoipa::path(
    get,
    path = "/docs/",
    tag = "docs",
    security(()),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub(crate) async fn index() -> Result<Response, ApiError> {
    asset_response("index.html")
}

/// `GET /docs/{file}`: the page's scripts, styles and icons.
///
/// # Errors
/// 404 `route_not_found` for a file the page does not have.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    security(()),
    params(("file" = String, Path, description = "An asset of the page, e.g. `swagger-ui.css`")),
    responses(
        (status = 200, description = "The asset (JavaScript, CSS, PNG, HTML)", content(
            (String = "application/javascript"),
            (String = "text/css"),
            (String = "text/html"),
            (String = "image/png"),
            (String = "application/octet-stream"),
        )),
        (status = 404, description = "`route_not_found`", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    asset_response(&file)
}

fn asset_response(file: &str) -> Result<Response, ApiError> {
    let not_found = || ApiError::RouteNotFound(format!("GET /docs/{file}"));
    let found = utoipa_swagger_ui::serve(file, UI_CONFIG.clone())
        .map_err(|e| shared::Error::Config(format!("Swagger UI asset {file}: {e}")))?
        .ok_or_else(not_found)?;
    let content_type = HeaderValue::from_str(&found.content_type).map_err(|_| not_found())?;
    let mut resp = (StatusCode::OK, found.bytes.into_owned()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    if found.gzpipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(resp)
}
