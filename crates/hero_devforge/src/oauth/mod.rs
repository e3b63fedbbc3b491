//! Forgejo's OAuth2/OIDC provider side: discovery, authorize (sign-in form + consent), token
//! endpoint with refresh rotation, userinfo, introspection and JWKS.

pub mod authorize;
pub mod discovery;
pub mod html;
pub mod idtoken;
pub mod introspect;
pub mod jwt;
pub mod keys;
pub mod pkce;
pub mod redirect;
pub mod session;
pub mod store;
pub mod token;
pub mod userinfo;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

/// Routes of the OAuth2 provider.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route(
            "/login/oauth/authorize",
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route("/login/oauth/access_token", post(token::access_token))
        .route(
            "/login/oauth/userinfo",
            get(userinfo::userinfo).post(userinfo::userinfo),
        )
        .route("/login/oauth/introspect", post(introspect::introspect))
        .route("/login/oauth/keys", get(discovery::keys))
}
