//! OIDC id_token claims, as Forgejo's `OIDCToken`: `iss` (the discovery issuer, verbatim), `aud`
//! (`[client_id]`), `exp` (= access-token lifetime), `iat`, `sub` (numeric user id as a string),
//! `nonce` (the grant's latest), then profile / email / groups claims by the grant's scope words.
//! Empty claims are omitted.

use serde::Serialize;

use super::store::{AppRow, GrantRow};
use super::token::TokenError;
use crate::db::UserRow;
use crate::AppState;

/// id_token claims.
#[derive(Debug, Serialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub sub: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub nonce: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub preferred_username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub profile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub picture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub website: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locale: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// Forgejo's `GetDisplayName`: the full name if set, else the login.
pub fn display_name(u: &UserRow) -> String {
    if u.full_name.trim().is_empty() {
        u.name.clone()
    } else {
        u.full_name.clone()
    }
}

/// Builds the claims for `user` under `grant`.
pub fn claims(
    state: &AppState,
    app: &AppRow,
    grant: &GrantRow,
    user: &UserRow,
    now: i64,
) -> Result<IdTokenClaims, TokenError> {
    let has = |w: &str| grant.scope.split(' ').any(|s| s == w);
    let cfg = &state.config;
    let mut c = IdTokenClaims {
        iss: cfg.issuer(),
        aud: vec![app.client_id.clone()],
        exp: now + cfg.access_token_ttl,
        iat: now,
        sub: user.id.to_string(),
        nonce: grant.nonce.clone(),
        name: String::new(),
        preferred_username: String::new(),
        profile: String::new(),
        picture: String::new(),
        website: String::new(),
        locale: String::new(),
        updated_at: None,
        email: String::new(),
        email_verified: None,
        groups: None,
    };
    if has("profile") {
        c.name = display_name(user);
        c.preferred_username = user.name.clone();
        c.profile = format!("{}/{}", cfg.external_url, user.name);
        c.picture = format!("{}/assets/img/avatar_default.png", cfg.external_url);
        c.website = user.website.clone();
        c.locale = user.language.clone();
        c.updated_at = Some(user.created_unix.max(user.last_login_unix));
    }
    if has("email") {
        c.email = user.email.clone();
        c.email_verified = Some(user.is_active);
    }
    if has("groups") {
        c.groups = Some(state.db.groups_of(user.id)?);
    }
    Ok(c)
}
