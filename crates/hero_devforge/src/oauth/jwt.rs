//! Forgejo's OAuth2 access and refresh tokens: JWTs signed with the server key carrying the grant
//! id (`gnt`), the token type (`tt`: 0 access, 1 refresh) and, for refresh tokens, the grant
//! counter (`cnt`) that rotation compares against.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::SigningKey;

/// `tt` of an access token.
pub const TYPE_ACCESS: u8 = 0;
/// `tt` of a refresh token.
pub const TYPE_REFRESH: u8 = 1;

/// Claims of an OAuth2 access/refresh token (`services/oauth2_provider/token.go`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantToken {
    pub gnt: i64,
    pub tt: u8,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cnt: i64,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn header(key: &SigningKey) -> Header {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(key.kid.clone());
    h
}

/// Signs any claims set with the server key (RS256, `kid` set).
pub fn sign<T: Serialize>(
    key: &SigningKey,
    claims: &T,
) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(&header(key), claims, &key.encoding)
}

/// Verifies signature and expiry of a grant token; `None` for anything invalid.
pub fn verify_grant_token(key: &SigningKey, token: &str) -> Option<GrantToken> {
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_aud = false;
    v.leeway = 0;
    v.required_spec_claims = ["exp".to_string()].into_iter().collect();
    jsonwebtoken::decode::<GrantToken>(token, &key.decoding, &v)
        .ok()
        .map(|d| d.claims)
}

/// Cheap shape test: three base64url segments separated by dots.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.len() > 20
}
