//! The identity contract between hero_proxy (the only identity authority for browser flows) and the backends
//! behind it. See `docs/identity-contract.md` for the one-page version.
//!
//! * [`headers`]: every header name, and the strip rule the proxy applies to inbound headers.
//! * [`Claim`], [`ClaimRule`]: the claim grammar and rule matching (`engineers.*`).
//! * [`AssertionSigner`] / [`AssertionVerifier`]: the Ed25519-signed `X-Hero-Assertion`.
//! * [`Identity`], [`IdentityVerifier`], [`RequireClaim`]: axum extractors (401 / 403).

pub mod assertion;
pub mod claim;
pub mod error;
pub mod extract;
pub mod headers;
pub mod identity;

pub use assertion::{
    AssertionPayload, AssertionSigner, AssertionVerifier, ASSERTION_ISSUER, CLOCK_LEEWAY_SECS,
    MAX_LIFETIME_SECS,
};
pub use claim::{
    format_claims_header, parse_claims_header, validate_claim, Claim, ClaimRule,
    LEGACY_ADMIN_CLAIM, MAX_CLAIM_LEN, MAX_CLAIM_SEGMENTS,
};
pub use error::IdentityError;
pub use extract::{ClaimRequirement, RequireClaim};
pub use headers::*;
pub use identity::{forge_token, is_local_username, is_loopback_host, Identity, IdentityVerifier};
