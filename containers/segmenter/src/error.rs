//! Every way a request can fail, mapped to an HTTP status and a stable machine-readable code in
//! one place ([`ServiceError::status`], [`ServiceError::code`]).
//!
//! The job processor treats every 4xx as a permanent failure of the job (it records `code`) and
//! every 5xx as transient (it retries), so the split matters: only [`ServiceError::Overloaded`]
//! and [`ServiceError::Internal`] are 5xx.
//!
//! Body: `{"error":{"code":"...","message":"..."}}`, always JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use shared::operation::ParamError;

/// A failed request. Each variant has one status and one code; see the table in the README.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// 400 `invalid_params` or `unknown_model` (the code comes from [`ParamError::code`]).
    #[error("{0}")]
    Params(#[from] ParamError),
    /// 400 `invalid_request`: the request itself could not be read (e.g. the client went away
    /// mid-body).
    #[error("{0}")]
    BadRequest(String),
    /// 422 `model_unavailable`: a catalog model whose weights are not loaded in this container.
    #[error("model '{model}' is not available here: {reason}")]
    ModelUnavailable {
        /// The requested model name.
        model: String,
        /// Why (e.g. which `MODEL_DIR` file is missing).
        reason: String,
    },
    /// 415 `unsupported_image`: empty body, or bytes that are not JPEG, PNG or WebP.
    #[error("{0}")]
    UnsupportedImage(String),
    /// 422 `invalid_image`: a supported format that is corrupt or truncated.
    #[error("{0}")]
    InvalidImage(String),
    /// 413 `payload_too_large`: body over `MAX_BODY_BYTES`.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// 422 `image_too_large`: over `MAX_PIXELS` or a side over `MAX_SIDE` (checked from the
    /// header, before decoding).
    #[error("{0}")]
    ImageTooLarge(String),
    /// 422 `no_plain_background`: `plain-background` was asked for a picture whose border is not
    /// a plain background, or whose mask would keep almost nothing or almost everything; a
    /// neural model is the right engine for it.
    #[error("{0}")]
    NoPlainBackground(String),
    /// 422 `no_foreground`: a neural model found nothing to keep (an all-transparent mask).
    #[error("{0}")]
    NoForeground(String),
    /// 503 `overloaded`: the model's queue is full; retry later.
    #[error("model '{model}' is busy ({depth} requests in flight); retry later")]
    Overloaded {
        /// The engine whose queue is full.
        model: String,
        /// The queue depth that was reached.
        depth: usize,
    },
    /// 500 `internal`: a bug or a runtime failure (inference, encoding).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Params(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ModelUnavailable { .. }
            | Self::InvalidImage(_)
            | Self::ImageTooLarge(_)
            | Self::NoPlainBackground(_)
            | Self::NoForeground(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code (snake_case); part of the public contract.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Params(p) => p.code,
            Self::BadRequest(_) => "invalid_request",
            Self::ModelUnavailable { .. } => "model_unavailable",
            Self::UnsupportedImage(_) => "unsupported_image",
            Self::InvalidImage(_) => "invalid_image",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::ImageTooLarge(_) => "image_too_large",
            Self::NoPlainBackground(_) => "no_plain_background",
            Self::NoForeground(_) => "no_foreground",
            Self::Overloaded { .. } => "overloaded",
            Self::Internal(_) => "internal",
        }
    }

    /// The JSON body: `{"error":{"code":..,"message":..}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}})
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(self, Self::Overloaded { .. }) {
            // Backpressure working as designed (the caller backs off), not a fault: an error
            // line here would page an operator for every burst.
            tracing::warn!(code = self.code(), error = %self, "request shed");
        } else if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        } else {
            tracing::info!(code = self.code(), error = %self, "request refused");
        }
        (status, Json(self.body())).into_response()
    }
}

/// Why the server cannot start (bad configuration, ONNX Runtime library or a model file that does
/// not load). Start-up fails with this instead of serving requests that would all fail.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A configuration value is wrong (e.g. `DEFAULT_MODEL` names an unknown or unloaded model).
    #[error("configuration: {0}")]
    Config(String),
    /// The ONNX Runtime shared library is missing or cannot be loaded.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// A model file exists but does not load as an ONNX session.
    #[error("model '{model}' ({path}): {message}")]
    Model {
        /// Catalog name.
        model: String,
        /// The file that failed.
        path: String,
        /// What ONNX Runtime said.
        message: String,
    },
    /// Binding the listening socket failed.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}
