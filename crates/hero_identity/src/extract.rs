//! axum extractors: `Identity` (401 without a trustworthy identity) and `RequireClaim<R>` (403 without the claim).
//!
//! The router's state must provide an [`IdentityVerifier`] through `FromRef`, so forgetting to configure
//! verification is a compile error rather than a silent "trust everything".

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::request::Parts;

use crate::claim::ClaimRule;
use crate::error::IdentityError;
use crate::identity::{Identity, IdentityVerifier};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<S> FromRequestParts<S> for Identity
where
    S: Send + Sync,
    IdentityVerifier: FromRef<S>,
{
    type Rejection = IdentityError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(id) = parts.extensions.get::<Identity>() {
            return Ok(id.clone());
        }
        let verifier = IdentityVerifier::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let id = verifier.verify_headers(&parts.headers, peer, unix_now())?;
        parts.extensions.insert(id.clone());
        Ok(id)
    }
}

/// A claim rule known at compile time; declare one with [`claim_requirement!`](crate::claim_requirement).
pub trait ClaimRequirement: Send + Sync + 'static {
    /// Rule text, e.g. `"dns.zone.write"` or `"engineers.*"`.
    const RULE: &'static str;
}

/// Extracts the [`Identity`] and requires a claim matching `R::RULE` (403 otherwise).
#[derive(Debug, Clone)]
pub struct RequireClaim<R: ClaimRequirement>(pub Identity, PhantomData<R>);

impl<R: ClaimRequirement> RequireClaim<R> {
    /// The identity that passed the check.
    pub fn identity(&self) -> &Identity {
        &self.0
    }
}

impl<S, R> FromRequestParts<S> for RequireClaim<R>
where
    S: Send + Sync,
    IdentityVerifier: FromRef<S>,
    R: ClaimRequirement,
{
    type Rejection = IdentityError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let id = Identity::from_request_parts(parts, state).await?;
        let rule = ClaimRule::parse(R::RULE)?;
        id.require(&rule)?;
        Ok(RequireClaim(id, PhantomData))
    }
}

/// Declares a zero-sized [`ClaimRequirement`]: `claim_requirement!(pub AdminOnly, "groups.admin");` then use
/// `RequireClaim<AdminOnly>` as an extractor.
#[macro_export]
macro_rules! claim_requirement {
    ($vis:vis $name:ident, $rule:expr) => {
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;
        impl $crate::ClaimRequirement for $name {
            const RULE: &'static str = $rule;
        }
    };
}
