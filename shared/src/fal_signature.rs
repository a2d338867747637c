//! Verification of fal.ai webhook deliveries (docs/providers.md §2.6). Pure: the keys and
//! the clock are given.
//!
//! A delivery is genuine when one of fal's JWKS Ed25519 keys verifies the hex signature over
//! `request_id \n user_id \n timestamp \n hex(sha256(raw body))`, and the timestamp is within
//! 300 s of now.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// Largest accepted distance between the delivery's timestamp and now, seconds (§2.6).
pub const MAX_SKEW_SECONDS: i64 = 300;

/// The signed headers of a delivery (§2.6).
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    /// `X-Fal-Webhook-Request-Id`.
    pub request_id: &'a str,
    /// `X-Fal-Webhook-User-Id`.
    pub user_id: &'a str,
    /// `X-Fal-Webhook-Timestamp` (unix seconds, as sent).
    pub timestamp: &'a str,
    /// `X-Fal-Webhook-Signature` (hex).
    pub signature: &'a str,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    /// The timestamp is not a number.
    #[error("X-Fal-Webhook-Timestamp is not a unix time")]
    BadTimestamp,
    /// The timestamp is more than 300 s away from now (replayed or delayed).
    #[error("the delivery's timestamp is {0} s away from now (limit {MAX_SKEW_SECONDS} s)")]
    Stale(i64),
    /// The signature is not 64 bytes of hex.
    #[error("X-Fal-Webhook-Signature is not a hex Ed25519 signature")]
    MalformedSignature,
    /// No key verifies it.
    #[error("the signature does not verify with any of fal's keys")]
    BadSignature,
}

/// The message fal signs.
pub fn signed_message(headers: &SignedHeaders<'_>, body: &[u8]) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        headers.request_id,
        headers.user_id,
        headers.timestamp,
        hex::encode(Sha256::digest(body))
    )
}

/// Checks a delivery: timestamp window first (cheap), then the signature against every key.
///
/// # Errors
/// The [`WebhookRejection`] that applies.
pub fn verify(
    headers: &SignedHeaders<'_>,
    body: &[u8],
    keys: &[VerifyingKey],
    now_unix: i64,
) -> Result<(), WebhookRejection> {
    let ts: i64 = headers
        .timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookRejection::BadTimestamp)?;
    let skew = (now_unix - ts).abs();
    if skew > MAX_SKEW_SECONDS {
        return Err(WebhookRejection::Stale(skew));
    }
    let raw: [u8; 64] = hex::decode(headers.signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(WebhookRejection::MalformedSignature)?;
    let signature = Signature::from_bytes(&raw);
    let message = signed_message(headers, body);
    if keys
        .iter()
        .any(|k| k.verify_strict(message.as_bytes(), &signature).is_ok())
    {
        Ok(())
    } else {
        Err(WebhookRejection::BadSignature)
    }
}

/// Reads a JWKS document: every `{kty: "OKP", crv: "Ed25519", x: base64url}` key; others are
/// skipped.
///
/// # Errors
/// A message when the document is not a JWKS or holds no usable key.
pub fn parse_jwks(body: &[u8]) -> Result<Vec<VerifyingKey>, String> {
    #[derive(serde::Deserialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(serde::Deserialize)]
    struct Jwk {
        #[serde(default)]
        kty: String,
        #[serde(default)]
        crv: String,
        #[serde(default)]
        x: String,
    }
    let jwks: Jwks = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys: Vec<VerifyingKey> = jwks
        .keys
        .iter()
        .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
        .filter_map(|k| {
            let raw: [u8; 32] = URL_SAFE_NO_PAD
                .decode(k.x.trim_end_matches('='))
                .ok()?
                .try_into()
                .ok()?;
            VerifyingKey::from_bytes(&raw).ok()
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWKS has no Ed25519 key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn sign(body: &[u8], ts: &str) -> String {
        let headers = SignedHeaders {
            request_id: "req-1",
            user_id: "user-1",
            timestamp: ts,
            signature: "",
        };
        hex::encode(
            key()
                .sign(signed_message(&headers, body).as_bytes())
                .to_bytes(),
        )
    }

    #[test]
    fn verifies_and_refuses() {
        let body = br#"{"request_id":"req-1","status":"OK"}"#;
        let sig = sign(body, "1000");
        let headers = SignedHeaders {
            request_id: "req-1",
            user_id: "user-1",
            timestamp: "1000",
            signature: &sig,
        };
        let keys = [key().verifying_key()];
        assert_eq!(verify(&headers, body, &keys, 1000 + 299), Ok(()));
        assert_eq!(
            verify(&headers, body, &keys, 1000 + 301),
            Err(WebhookRejection::Stale(301))
        );
        assert_eq!(
            verify(&headers, b"{}", &keys, 1000),
            Err(WebhookRejection::BadSignature)
        );
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert_eq!(
            verify(&headers, body, &[other], 1000),
            Err(WebhookRejection::BadSignature)
        );
        assert!(verify(&headers, body, &[other, keys[0]], 1000).is_ok());
        let bad = SignedHeaders {
            signature: "zz",
            ..headers
        };
        assert_eq!(
            verify(&bad, body, &keys, 1000),
            Err(WebhookRejection::MalformedSignature)
        );
    }

    #[test]
    fn jwks_keys_parse() {
        let x = URL_SAFE_NO_PAD.encode(key().verifying_key().to_bytes());
        let doc = format!(
            r#"{{"keys":[{{"kty":"RSA","n":"abc"}},{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#
        );
        let keys = parse_jwks(doc.as_bytes()).unwrap();
        assert_eq!(keys, vec![key().verifying_key()]);
        assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
        assert!(parse_jwks(b"nope").is_err());
    }
}
