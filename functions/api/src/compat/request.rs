//! What legacy clients send, in the job service's terms: their multipart forms, their image
//! references, the model they ask for, and the credential some routes insist on.

use axum::body::Bytes;
use axum::extract::Request;

use shared::auth::{Credential, Principal};
use shared::config::Settings;
use shared::service::InputRef;

use crate::body::{content_type, multipart, multipart_error};
use crate::error::ApiError;
use crate::state::AppState;

/// Maps a legacy client's image reference onto an [`InputRef`]: `s3://…` as is; an S3 object
/// URL of this deployment's bucket (`https://{bucket}.s3[.{region}].amazonaws.com/{key}`,
/// `https://s3[.{region}].amazonaws.com/{bucket}/{key}`, presigned or not) as the `s3://` URI
/// of its key, so it is read from the bucket (and must be one of the caller's own objects, as
/// every `s3://` input); any other `https://` URL as a public URL, fetched once through the
/// SSRF-hardened fetcher.
///
/// # Errors
/// 400 `invalid_input_reference` for anything else.
pub(crate) fn input_reference(bucket: &str, raw: &str) -> Result<InputRef, ApiError> {
    let raw = raw.trim();
    if let Some(key) = bucket_object_key(bucket, raw) {
        return Ok(InputRef::S3Uri(format!("s3://{bucket}/{key}")));
    }
    Ok(InputRef::parse_reference(raw)?)
}

/// The key of an `https://` S3 object URL in `bucket` (virtual-hosted or path style, any
/// region, query ignored), percent-decoded; `None` for any other URL.
fn bucket_object_key(bucket: &str, raw: &str) -> Option<String> {
    let rest = raw.strip_prefix("https://")?;
    let rest = rest.split(['?', '#']).next()?;
    let (host, path) = rest.split_once('/')?;
    let host = host.to_ascii_lowercase();
    let is_s3 = |h: &str| {
        (h == "s3.amazonaws.com" || h.starts_with("s3.") || h.starts_with("s3-"))
            && (h.ends_with(".amazonaws.com") || h.ends_with(".amazonaws.com.cn"))
    };
    let key = match host.strip_prefix(&format!("{bucket}.")) {
        Some(endpoint) if is_s3(endpoint) => path,
        _ if is_s3(&host) => path.strip_prefix(&format!("{bucket}/"))?,
        _ => return None,
    };
    let key = percent_encoding::percent_decode_str(key)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!key.is_empty()).then_some(key)
}

/// A legacy multipart form: the `file` part and the text fields, in order.
#[derive(Debug, Default)]
pub(crate) struct LegacyForm {
    /// The `file` part's bytes, if sent.
    pub file: Option<Bytes>,
    /// Every other field as text.
    pub fields: Vec<(String, String)>,
}

impl LegacyForm {
    /// The last value of field `name` (FastAPI's `Form()` keeps the last one).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a `multipart/form-data` body with the image as field `file` (limited like
/// `POST /v1/jobs`).
///
/// # Errors
/// As [`read_form_with`].
pub(crate) async fn read_form(state: &AppState, req: Request) -> Result<LegacyForm, ApiError> {
    read_form_with(state, req, "file").await
}

/// Reads a `multipart/form-data` body whose image part is named `file_field` (the
/// image-editing service calls it `image`); it lands in [`LegacyForm::file`].
///
/// # Errors
/// 415 `unsupported_media_type` for another body type; 400 `invalid_multipart` for a malformed
/// one; 413 `payload_too_large`.
pub(crate) async fn read_form_with(
    state: &AppState,
    req: Request,
    file_field: &str,
) -> Result<LegacyForm, ApiError> {
    let content_type = content_type(req.headers());
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{content_type}' is not accepted: send multipart/form-data with the image as field '{file_field}'"
        )));
    }
    let mut multipart = multipart(state, req).await?;
    let mut form = LegacyForm::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == file_field {
            form.file = Some(field.bytes().await.map_err(multipart_error)?);
        } else {
            let value = field.text().await.map_err(multipart_error)?;
            form.fields.push((name, value));
        }
    }
    Ok(form)
}

/// The engine a compatibility route asks for: `COMPAT_MODEL` when set, else the model the
/// legacy client named, else `DEFAULT_MODEL`.
pub(crate) fn engine(settings: &Settings, requested: Option<&str>) -> String {
    settings
        .models
        .compat_model
        .as_deref()
        .or(requested)
        .unwrap_or(&settings.models.default_model)
        .to_owned()
}

/// Whether a compatibility job may run a stand-in when the model it asks for is not deployed
/// ([`shared::operation::remove_background::RemoveBackgroundParams::model_fallback`]): yes, unless the operator pinned
/// `COMPAT_MODEL`, which then runs as named.
pub(crate) fn model_fallback(settings: &Settings) -> bool {
    settings.models.compat_model.is_none()
}

/// The JWT background-removal service's JWT-only routes refuse API keys, as the service they
/// replace did.
///
/// # Errors
/// 401 `token_required` for an API key.
pub(crate) fn require_token(caller: &Principal) -> Result<(), ApiError> {
    match caller.credential {
        Credential::Jwt { .. } => Ok(()),
        Credential::ApiKey { .. } => Err(ApiError::TokenRequired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_is_the_override_then_the_request_then_the_default() {
        let mut s = Settings::new("t", "q", "b");
        s.models.default_model = "u2net".into();
        assert_eq!(engine(&s, None), "u2net");
        assert_eq!(engine(&s, Some("u2netp")), "u2netp");
        s.models.compat_model = Some("plain-background".into());
        assert_eq!(engine(&s, Some("u2netp")), "plain-background");
        assert!(!model_fallback(&s));
        s.models.compat_model = None;
        assert!(model_fallback(&s));
    }

    #[test]
    fn bucket_urls_become_s3_uris_and_other_urls_stay_urls() {
        let b = "myawesomebucket";
        let s3 = |raw: &str| match input_reference(b, raw).unwrap() {
            InputRef::S3Uri(u) => u,
            other => panic!("{raw}: {other:?}"),
        };
        assert_eq!(
            s3("https://myawesomebucket.s3.us-east-1.amazonaws.com/app/images/aquaphor.jpg"),
            "s3://myawesomebucket/app/images/aquaphor.jpg"
        );
        assert_eq!(
            s3("https://myawesomebucket.s3.amazonaws.com/inputs/acme/a%20b.jpg?X-Amz-Signature=x"),
            "s3://myawesomebucket/inputs/acme/a b.jpg"
        );
        assert_eq!(
            s3("https://s3.eu-west-1.amazonaws.com/myawesomebucket/k.png"),
            "s3://myawesomebucket/k.png"
        );
        assert_eq!(
            s3("s3://myawesomebucket/k.png"),
            "s3://myawesomebucket/k.png"
        );
        for public in [
            "https://otherbucket.s3.amazonaws.com/k.png",
            "https://s3.amazonaws.com/otherbucket/k.png",
            "https://myawesomebucket.s3.evil.example/k.png",
            "https://example.com/myawesomebucket/k.png",
        ] {
            assert!(
                matches!(input_reference(b, public).unwrap(), InputRef::Url(_)),
                "{public}"
            );
        }
        assert_eq!(
            input_reference(b, "ftp://x/y").unwrap_err().code(),
            "invalid_input_reference"
        );
    }
}
