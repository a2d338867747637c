//! `GET /v1/models`: the background-removal models this deployment accepts, which one runs
//! when a request names none, and where each model's weights come from
//! (`shared::models::CATALOG`; docs/models.md).

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use shared::auth::Scope;
use shared::models::{self, ModelSpec};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::state::AppState;

/// The answer: `default_model` and one entry per model, the built-in engine first.
#[derive(Debug, Serialize)]
pub(crate) struct ModelList {
    /// The model a request without `model` runs (`DEFAULT_MODEL`).
    default_model: String,
    /// The model the background-removal compatibility routes run (`COMPAT_MODEL`), if pinned.
    compat_model: Option<String>,
    models: Vec<ModelEntry>,
}

/// One model: `kind` is `builtin` (no weights) or `onnx`; `input` is the network's input in
/// pixels; `provenance` names the registry package, licence, precision and pinned SHA-256 of
/// the weights where they are pinned.
#[derive(Debug, Serialize)]
struct ModelEntry {
    name: &'static str,
    kind: &'static str,
    default: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<[u32; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<Provenance>,
}

#[derive(Debug, Serialize)]
struct Provenance {
    package: Option<&'static str>,
    licence: Option<&'static str>,
    precision: &'static str,
    sha256: Option<&'static str>,
    bytes: Option<u64>,
}

fn entry(spec: &ModelSpec, default_model: &str) -> ModelEntry {
    let p = &spec.provenance;
    ModelEntry {
        name: spec.name,
        kind: "onnx",
        default: spec.name == default_model,
        input: Some([spec.input_width, spec.input_height]),
        provenance: Some(Provenance {
            package: p.package,
            licence: p.licence,
            precision: p.precision,
            sha256: p.sha256,
            bytes: p.bytes,
        }),
    }
}

/// `GET /v1/models` for any credential with `jobs:read`.
///
/// # Errors
/// 401 without a valid credential; 403 `insufficient_scope` without `jobs:read`.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "account",
    security(("api_key" = []), ("jwt" = [])),
    responses(
        (status = 200, description = "The models this deployment accepts (needs `jobs:read`)", body = crate::openapi::ModelListDoc),
        (status = 401, description = "No valid credential: `unauthorized`, `invalid_api_key`, `api_key_revoked`, `token_expired`, `token_invalid_signature`, `token_algorithm_not_allowed`, `token_malformed`, `tokens_disabled`", body = crate::openapi::ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"` with the code"))),
        (status = 403, description = "`insufficient_scope`: the credential lacks the scope this route needs", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn list_models(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<ModelList>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let default_model = state.settings.models.default_model.clone();
    let mut list = vec![ModelEntry {
        name: models::PLAIN_BACKGROUND,
        kind: "builtin",
        default: default_model == models::PLAIN_BACKGROUND,
        input: None,
        provenance: None,
    }];
    list.extend(models::CATALOG.iter().map(|m| entry(m, &default_model)));
    Ok(Json(ModelList {
        default_model,
        compat_model: state.settings.models.compat_model.clone(),
        models: list,
    }))
}
