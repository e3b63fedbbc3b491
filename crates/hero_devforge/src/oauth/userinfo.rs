//! `GET/POST /login/oauth/userinfo` (Bearer: OAuth access token or PAT).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::idtoken::display_name;
use crate::auth::{self, AuthMethod};
use crate::AppState;

/// Forgejo's 401 for the userinfo and introspection endpoints.
pub fn unauthorized(realm: &'static str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, realm),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "no valid authorization",
    )
        .into_response()
}

/// Userinfo: `{sub,name,preferred_username,email,picture,groups}` whatever the granted scopes.
pub async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let caller = match auth::authenticate(&state, &headers).await {
        Ok(Some(c)) if c.method != AuthMethod::Basic => c,
        _ => return unauthorized("Bearer realm=\"\""),
    };
    if let Err(e) = auth::global_checks(&state, &caller.user) {
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.message,
        )
            .into_response();
    }
    let u = &caller.user;
    let groups = match state.db.groups_of(u.id) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e, "userinfo: storage error");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let name = if u.full_name.is_empty() {
        String::new()
    } else {
        display_name(u)
    };
    Json(json!({
        "sub": u.id.to_string(),
        "name": name,
        "preferred_username": u.name,
        "email": u.email,
        "picture": format!("{}/assets/img/avatar_default.png", state.config.external_url),
        "groups": groups,
    }))
    .into_response()
}
