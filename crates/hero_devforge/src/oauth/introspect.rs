//! `POST /login/oauth/introspect`: registered clients (Basic `client_id:client_secret`) ask
//! whether a token is active and for whom (Forgejo's `IntrospectOAuth`).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use serde_json::json;

use super::jwt;
use super::userinfo::unauthorized;
use crate::secrets;
use crate::AppState;

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
