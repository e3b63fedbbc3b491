//! `GET/POST /login/oauth/userinfo` (Bearer: OAuth access token or PAT) and
//! `POST /login/oauth/introspect` (client Basic + `token=`).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use serde_json::json;

use super::idtoken::display_name;
use super::jwt;
use crate::auth::{self, AuthMethod};
use crate::secrets;
use crate::AppState;

fn unauthorized(realm: &'static str) -> Response {
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

/// Introspection for registered clients (Basic `client_id:client_secret`).
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let client_ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
        .and_then(|(_, d)| {
            base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (id, secret) = s.split_once(':')?;
            let app = state.db.oauth_app_by_client_id(id).ok()??;
            Some(secrets::constant_time_eq(
                secrets::sha256_hex(secret).as_bytes(),
                app.secret_hash.as_bytes(),
            ))
        })
        .unwrap_or(false);
    if !client_ok {
        return unauthorized("Basic realm=\"\"");
    }
    let token = form.get("token").map(String::as_str).unwrap_or_default();
    let mut resp = json!({"active": false});
    let keys = match state.keys.get().await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "signing key unavailable");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    if let Some(t) = jwt::verify_grant_token(&keys, token) {
        if let Ok(Some(grant)) = state.db.grant_by_id(t.gnt) {
            if let Ok(Some(app)) = state.db.oauth_app_by_id(grant.app_id) {
                resp = json!({
                    "active": true,
                    "scope": grant.scope,
                    "iss": state.config.issuer(),
                    "aud": [app.client_id],
                    "sub": grant.uid.to_string(),
                    "exp": t.exp,
                });
                if let Ok(Some(u)) = state.db.user_by_id(grant.uid) {
                    resp["username"] = json!(u.name);
                }
            }
        }
    }
    Json(resp).into_response()
}
