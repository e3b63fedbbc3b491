//! Forgejo's OAuth2/OIDC provider side: discovery, authorize (login form + consent), token endpoint
//! with refresh rotation, userinfo and JWKS.

pub mod jwt;
pub mod keys;
pub mod store;

use axum::Router;

use crate::AppState;

/// Routes of the OAuth2 provider.
pub fn router() -> Router<AppState> {
    Router::new()
}
