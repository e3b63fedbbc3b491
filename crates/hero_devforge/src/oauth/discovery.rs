//! `GET /.well-known/openid-configuration` (Forgejo's static template) and `GET /login/oauth/keys`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::AppState;

/// Discovery document. The issuer is the configured external URL, with a trailing slash unless
/// `--issuer-trailing-slash false` (Forgejo ≤ v11 vs v12); endpoints are built from it.
pub async fn openid_configuration(State(state): State<AppState>) -> Json<Value> {
    let base = &state.config.external_url;
    Json(json!({
        "issuer": state.config.issuer(),
        "authorization_endpoint": format!("{base}/login/oauth/authorize"),
        "token_endpoint": format!("{base}/login/oauth/access_token"),
        "jwks_uri": format!("{base}/login/oauth/keys"),
        "userinfo_endpoint": format!("{base}/login/oauth/userinfo"),
        "introspection_endpoint": format!("{base}/login/oauth/introspect"),
        "response_types_supported": ["code", "id_token"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
        "scopes_supported": ["openid", "profile", "email", "groups"],
        "claims_supported": [
            "aud", "exp", "iat", "iss", "sub", "name", "preferred_username", "profile", "picture",
            "website", "locale", "updated_at", "email", "email_verified", "groups"
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": ["authorization_code", "refresh_token"]
    }))
}

/// JWKS with the signing key's `kid`.
pub async fn keys(State(state): State<AppState>) -> Response {
    match state.keys.get().await {
        Ok(k) => Json(k.jwks()).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "signing key unavailable");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
