//! Identity: API keys, short-lived JWTs and scopes. Pure apart from randomness.
//!
//! - API keys look like `ij_live_` + 48 hex characters (192 random bits). Only their SHA-256 is
//!   stored; the key itself is shown once, at creation.
//! - JWTs are HS256, issued by `POST /v1/auth/token` in exchange for a key, with claims `sub`
//!   (owner), `scope` (space-separated, RFC 8693 §4.2), `exp`, `iat`, `jti`. Any other algorithm,
//!   `none` included, is refused before the signature is looked at.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

use crate::job::OwnerId;

/// Prefix of every API key.
pub const API_KEY_PREFIX: &str = "ij_live_";

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Create and cancel jobs, request uploads.
    #[serde(rename = "jobs:write")]
    JobsWrite,
    /// Read jobs and results.
    #[serde(rename = "jobs:read")]
    JobsRead,
    /// Read usage metrics.
    #[serde(rename = "metrics:read")]
    MetricsRead,
    /// Everything.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// All scopes.
    pub const ALL: [Scope; 4] = [
        Self::JobsWrite,
        Self::JobsRead,
        Self::MetricsRead,
        Self::Admin,
    ];

    /// The scope's name, as in tokens and the admin CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobsWrite => "jobs:write",
            Self::JobsRead => "jobs:read",
            Self::MetricsRead => "metrics:read",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| {
                format!("unknown scope '{s}'; known: jobs:write, jobs:read, metrics:read, admin")
            })
    }
}

/// Parses a comma- or space-separated scope list.
///
/// # Errors
/// The first unknown scope name.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, String> {
    let mut scopes: Vec<Scope> = list
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key, by its public id.
    ApiKey {
        /// The key's public id.
        key_id: String,
    },
    /// A JWT, by its `jti`.
    Jwt {
        /// The token id.
        jti: String,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Whose data the caller acts on.
    pub owner: OwnerId,
    /// What the caller may do.
    pub scopes: Vec<Scope>,
    /// How they authenticated.
    pub credential: Credential,
}

impl Principal {
    /// Whether the caller has `scope` (`admin` has every scope).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }

    /// Requires `scope`.
    ///
    /// # Errors
    /// [`AuthError::InsufficientScope`].
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope(scope))
        }
    }
}

/// Why authentication failed. [`AuthError::code`] is stable; every variant but
/// `InsufficientScope` (403) is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` or `X-API-Key` header.
    #[error("authentication required: send Authorization: Bearer <API key or token>, or X-API-Key")]
    Missing,
    /// The key is unknown.
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// The key was revoked.
    #[error("the API key was revoked")]
    RevokedApiKey,
    /// The JWT's `exp` has passed.
    #[error("the token has expired; request a new one from POST /v1/auth/token")]
    TokenExpired,
    /// The JWT's signature does not verify.
    #[error("the token's signature is not valid")]
    TokenSignature,
    /// The JWT is signed with another algorithm than HS256 (`none` included).
    #[error("the token's algorithm is not accepted (only HS256)")]
    TokenAlgorithm,
    /// Not a well-formed JWT.
    #[error("the token is malformed")]
    TokenMalformed,
    /// JWTs cannot be issued or checked: no signing secret configured.
    #[error("tokens are not enabled on this deployment")]
    TokensDisabled,
    /// Authenticated, but without the needed scope.
    #[error("this requires the '{0}' scope")]
    InsufficientScope(Scope),
}

impl AuthError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "unauthorized",
            Self::InvalidApiKey => "invalid_api_key",
            Self::RevokedApiKey => "api_key_revoked",
            Self::TokenExpired => "token_expired",
            Self::TokenSignature => "token_invalid_signature",
            Self::TokenAlgorithm => "token_algorithm_not_allowed",
            Self::TokenMalformed => "token_malformed",
            Self::TokensDisabled => "tokens_disabled",
            Self::InsufficientScope(_) => "insufficient_scope",
        }
    }
}

/// A newly generated API key: the secret (shown once) and what is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The key to hand to the client, `ij_live_…`.
    pub secret: String,
    /// SHA-256 hex of the key: the only form that is stored.
    pub hash: String,
    /// Public id (`key_` + 16 hex), for listing and revoking.
    pub key_id: String,
}

/// Generates a key from the operating system's CSPRNG.
///
/// # Errors
/// The OS random source failed (never expected on Linux).
pub fn generate_api_key() -> Result<NewApiKey, String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| format!("random source: {e}"))?;
    let secret = format!("{API_KEY_PREFIX}{}", hex::encode(bytes));
    let hash = hash_api_key(&secret);
    let key_id = format!("key_{}", &hash[..16]);
    Ok(NewApiKey {
        secret,
        hash,
        key_id,
    })
}

/// SHA-256 hex of a key. A key has 192 bits of entropy, so an unsalted fast hash is enough.
pub fn hash_api_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether a bearer credential looks like an API key (rather than a JWT).
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(API_KEY_PREFIX)
}

/// A stored API key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id, `key_…`.
    pub key_id: String,
    /// SHA-256 hex of the key.
    pub hash: String,
    /// The owner the key acts for.
    pub owner: OwnerId,
    /// A label for people.
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last successful use (updated at most once per [`KEY_USE_RESOLUTION`]).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_used_at: Option<OffsetDateTime>,
    /// Revoked keys authenticate nothing.
    #[serde(default)]
    pub revoked: bool,
}

/// How often a key's use is recorded: `last_used_at` is written at most once per this
/// interval, so authenticating a request costs a read, not a write as well.
pub const KEY_USE_RESOLUTION: time::Duration = time::Duration::minutes(1);

impl ApiKeyRecord {
    /// Whether a use at `now` is worth recording: the key was never used, or its
    /// `last_used_at` is at least [`KEY_USE_RESOLUTION`] old.
    pub fn use_is_stale(&self, now: OffsetDateTime) -> bool {
        self.last_used_at
            .is_none_or(|t| now - t >= KEY_USE_RESOLUTION)
    }
}

/// JWT claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The owner id.
    pub sub: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
}

/// Issues an HS256 JWT for `owner` with `scopes`, valid for `ttl` from `now`.
///
/// # Errors
/// The signing library's message (never expected with an HMAC key).
pub fn issue_token(
    secret: &[u8],
    owner: &OwnerId,
    scopes: &[Scope],
    ttl: time::Duration,
    now: OffsetDateTime,
) -> Result<(String, Claims), String> {
    let claims = Claims {
        sub: owner.to_string(),
        scope: scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        exp: (now + ttl).unix_timestamp(),
        iat: now.unix_timestamp(),
        jti: ulid::Ulid::new().to_string(),
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())?;
    Ok((token, claims))
}

/// Verifies an HS256 JWT and returns the caller it names.
///
/// # Errors
/// [`AuthError::TokenAlgorithm`] for any algorithm but HS256 (checked on the raw header, so
/// `alg: none` is named as such), [`AuthError::TokenExpired`], [`AuthError::TokenSignature`],
/// [`AuthError::TokenMalformed`].
pub fn verify_token(
    secret: &[u8],
    token: &str,
    now: OffsetDateTime,
) -> Result<Principal, AuthError> {
    let header_b64 = token.split('.').next().unwrap_or_default();
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or(AuthError::TokenMalformed)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(AuthError::TokenAlgorithm);
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = false; // checked below against the caller's clock
    validation.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::TokenSignature,
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => AuthError::TokenAlgorithm,
        _ => AuthError::TokenMalformed,
    })?;
    let claims = data.claims;
    if claims.exp <= now.unix_timestamp() {
        return Err(AuthError::TokenExpired);
    }
    let owner = OwnerId::parse(&claims.sub).map_err(|_| AuthError::TokenMalformed)?;
    let scopes = parse_scopes(&claims.scope).map_err(|_| AuthError::TokenMalformed)?;
    Ok(Principal {
        owner,
        scopes,
        credential: Credential::Jwt { jti: claims.jti },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-of-reasonable-length-0123456789";

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-11-21 10:00 UTC)
    }

    fn owner() -> OwnerId {
        OwnerId::parse("team-a").unwrap()
    }

    #[test]
    fn a_key_use_is_recorded_once_per_resolution() {
        let mut record = ApiKeyRecord {
            key_id: "key_a".into(),
            hash: "00".into(),
            owner: owner(),
            name: "test".into(),
            scopes: vec![Scope::JobsRead],
            created_at: now(),
            last_used_at: None,
            revoked: false,
        };
        assert!(record.use_is_stale(now()), "never used");
        record.last_used_at = Some(now());
        assert!(!record.use_is_stale(now()));
        assert!(!record.use_is_stale(now() + time::Duration::seconds(59)));
        assert!(record.use_is_stale(now() + KEY_USE_RESOLUTION));
    }

    #[test]
    fn keys_are_random_prefixed_and_hashed() {
        let a = generate_api_key().unwrap();
        let b = generate_api_key().unwrap();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("ij_live_") && a.secret.len() == 8 + 48);
        assert_eq!(a.hash, hash_api_key(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(a.key_id.starts_with("key_") && a.hash.starts_with(&a.key_id[4..]));
        assert!(is_api_key(&a.secret) && !is_api_key("eyJhbGciOi.x.y"));
    }

    #[test]
    fn scopes_parse_and_admin_implies_all() {
        assert_eq!(
            parse_scopes("jobs:read, jobs:write").unwrap(),
            vec![Scope::JobsWrite, Scope::JobsRead]
        );
        assert!(parse_scopes("jobs:delete").is_err());
        let p = Principal {
            owner: owner(),
            scopes: vec![Scope::Admin],
            credential: Credential::Jwt { jti: "x".into() },
        };
        assert!(Scope::ALL.iter().all(|s| p.has(*s)));
        let reader = Principal {
            scopes: vec![Scope::JobsRead],
            ..p
        };
        assert_eq!(
            reader.require(Scope::JobsWrite).unwrap_err().code(),
            "insufficient_scope"
        );
    }

    #[test]
    fn tokens_round_trip() {
        let (token, claims) = issue_token(
            SECRET,
            &owner(),
            &[Scope::JobsRead],
            time::Duration::hours(1),
            now(),
        )
        .unwrap();
        assert_eq!(claims.exp - claims.iat, 3600);
        let p = verify_token(SECRET, &token, now() + time::Duration::minutes(59)).unwrap();
        assert_eq!(p.owner, owner());
        assert_eq!(p.scopes, vec![Scope::JobsRead]);
        assert!(matches!(p.credential, Credential::Jwt { jti } if jti == claims.jti));
    }

    #[test]
    fn bad_tokens_get_distinct_errors() {
        let (token, _) = issue_token(
            SECRET,
            &owner(),
            &[Scope::JobsRead],
            time::Duration::hours(1),
            now(),
        )
        .unwrap();
        assert_eq!(
            verify_token(SECRET, &token, now() + time::Duration::hours(1)),
            Err(AuthError::TokenExpired)
        );
        assert_eq!(
            verify_token(b"another-secret", &token, now()),
            Err(AuthError::TokenSignature)
        );
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert_eq!(
            verify_token(SECRET, &unsigned, now()),
            Err(AuthError::TokenAlgorithm)
        );
        let hs512 = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        assert_eq!(
            verify_token(SECRET, &format!("{hs512}.{}.{}", parts[1], parts[2]), now()),
            Err(AuthError::TokenAlgorithm)
        );
        assert_eq!(
            verify_token(SECRET, "not-a-jwt", now()),
            Err(AuthError::TokenMalformed)
        );
        let tampered_claims = URL_SAFE_NO_PAD
            .encode(br#"{"sub":"team-b","scope":"admin","exp":9999999999,"iat":0,"jti":"x"}"#);
        assert_eq!(
            verify_token(
                SECRET,
                &format!("{}.{tampered_claims}.{}", parts[0], parts[2]),
                now()
            ),
            Err(AuthError::TokenSignature)
        );
    }
}
