//! One error enum for the identity boundary, with stable codes (backends and tests branch on `code()`, never on text).

use http::StatusCode;

/// Why an identity could not be established or a claim check failed. `Display` never contains secrets or the raw
/// assertion; untrusted input is truncated to 64 characters.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// Text does not match the claim grammar.
    #[error("invalid claim {claim:?}: {why}")]
    InvalidClaim {
        /// Offending input (truncated).
        claim: String,
        /// Which rule of the grammar it broke.
        why: &'static str,
    },
    /// No identity headers on the request: the caller is not signed in (or bypassed the proxy).
    #[error("no identity on the request")]
    Missing,
    /// The assertion is not a well-formed compact JWS with the expected header and payload.
    #[error("malformed identity assertion: {0}")]
    Malformed(&'static str),
    /// The assertion names a key id this verifier does not know.
    #[error("identity assertion signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("identity assertion signature is invalid")]
    BadSignature,
    /// The assertion's `exp` is in the past.
    #[error("identity assertion expired")]
    Expired,
    /// The assertion was made for another route (its `aud` is not this verifier's audience): a replay.
    #[error("identity assertion was made for another audience")]
    WrongAudience,
    /// Plain `X-Hero-*` headers disagree with the signed assertion.
    #[error("identity header {0} disagrees with the signed assertion")]
    HeaderMismatch(&'static str),
    /// Dev mode (unsigned headers) was used from a non-loopback peer, without a known peer address, or with a
    /// `Host` that is not a loopback name.
    #[error("unsigned identity headers are only accepted from loopback, with a loopback Host, in dev mode")]
    DevModeNotLoopback,
    /// The identity lacks a claim required by the handler.
    #[error("{user} lacks a claim matching {rule}")]
    Forbidden {
        /// Local username.
        user: String,
        /// The rule that was required.
        rule: String,
    },
    /// A verification key could not be parsed (configuration error).
    #[error("invalid verification key: {0}")]
    InvalidKey(&'static str),
}

impl IdentityError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::InvalidClaim { .. } => "identity.invalid_claim",
            IdentityError::Missing => "identity.missing",
            IdentityError::Malformed(_) => "identity.malformed",
            IdentityError::UnknownKey => "identity.unknown_key",
            IdentityError::BadSignature => "identity.bad_signature",
            IdentityError::Expired => "identity.expired",
            IdentityError::WrongAudience => "identity.wrong_audience",
            IdentityError::HeaderMismatch(_) => "identity.header_mismatch",
            IdentityError::DevModeNotLoopback => "identity.dev_mode_not_loopback",
            IdentityError::Forbidden { .. } => "identity.forbidden",
            IdentityError::InvalidKey(_) => "identity.invalid_key",
        }
    }

    /// HTTP status for the axum rejection: 401 when there is no trustworthy identity, 403 when there is one but it
    /// lacks a claim, 500 for configuration errors.
    pub fn status(&self) -> StatusCode {
        match self {
            IdentityError::Forbidden { .. } => StatusCode::FORBIDDEN,
            IdentityError::InvalidKey(_) | IdentityError::InvalidClaim { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl axum::response::IntoResponse for IdentityError {
    fn into_response(self) -> axum::response::Response {
        let body =
            serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } });
        (self.status(), axum::Json(body)).into_response()
    }
}
