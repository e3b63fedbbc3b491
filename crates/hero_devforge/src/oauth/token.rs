//! `POST /login/oauth/access_token` (form-encoded): `authorization_code` with the PKCE verifier
//! check and `refresh_token` with rotation. Every exchange bumps the grant's counter; a refresh
//! token whose `cnt` is not the current counter is refused with `unauthorized_client`
//! "token was already used" (Forgejo ≥ 9 `INVALIDATE_REFRESH_TOKENS=true`). Errors are 400
//! `{"error","error_description"}`; the success body has no `scope` field, like Forgejo's.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::idtoken;
use super::jwt::{self, GrantToken};
use super::keys::SigningKey;
use super::pkce;
use super::redirect::app_allows;
use super::store::{AppRow, GrantRow};
use crate::db::now_unix;
use crate::error::DbError;
use crate::secrets;
use crate::AppState;

/// Form fields of the token request.
#[derive(Debug, Default, Deserialize)]
pub struct AccessTokenForm {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub redirect_uri: Option<String>,
    pub code: Option<String>,
    pub refresh_token: Option<String>,
    pub code_verifier: Option<String>,
}

/// Successful token response (Forgejo's `AccessTokenResponse`).
#[derive(Debug, Serialize)]
pub struct AccessTokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub refresh_token: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id_token: String,
}

/// A token-endpoint error: always 400 with `{"error","error_description"}`.
#[derive(Debug)]
pub struct TokenError {
    pub error: &'static str,
    pub description: String,
}

impl TokenError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }
}

impl From<DbError> for TokenError {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "token endpoint: storage error");
        Self::new("server_error", "internal server error")
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": self.error, "error_description": self.description})),
        )
            .into_response()
    }
}

/// Fills client credentials from `Authorization: Basic`, refusing values that contradict the body.
fn merge_basic(form: &mut AccessTokenForm, headers: &HeaderMap) -> Result<(), TokenError> {
    if form.client_id.as_deref().is_some_and(|s| !s.is_empty())
        && form.client_secret.as_deref().is_some_and(|s| !s.is_empty())
    {
        return Ok(());
    }
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let Some((scheme, data)) = auth.split_once(' ') else {
        return Ok(());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(());
    }
    let bad = || TokenError::new("invalid_request", "cannot parse basic auth header");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    if form
        .client_id
        .as_deref()
        .is_some_and(|c| !c.is_empty() && c != id)
    {
        return Err(TokenError::new(
            "invalid_request",
            "client_id in request body inconsistent with Authorization header",
        ));
    }
    if form
        .client_secret
        .as_deref()
        .is_some_and(|c| !c.is_empty() && c != secret)
    {
        return Err(TokenError::new(
            "invalid_request",
            "client_secret in request body inconsistent with Authorization header",
        ));
    }
    form.client_id = Some(id.to_string());
    form.client_secret = Some(secret.to_string());
    Ok(())
}

/// Loads the client and, for confidential clients, checks the secret.
fn authenticate_client(state: &AppState, form: &AccessTokenForm) -> Result<AppRow, TokenError> {
    let client_id = form.client_id.clone().unwrap_or_default();
    let app = state
        .db
        .oauth_app_by_client_id(&client_id)?
        .ok_or_else(|| {
            TokenError::new(
                "invalid_client",
                format!("cannot load client with client id: '{client_id}'"),
            )
        })?;
    if app.confidential {
        let secret = form.client_secret.clone().unwrap_or_default();
        let ok = !secret.is_empty()
            && secrets::constant_time_eq(
                secrets::sha256_hex(&secret).as_bytes(),
                app.secret_hash.as_bytes(),
            );
        if !ok {
            let d = if secret.is_empty() {
                "invalid empty client secret"
            } else {
                "invalid client secret"
            };
            return Err(TokenError::new("unauthorized_client", d));
        }
    }
    Ok(app)
}

/// Builds the token response for `grant` whose counter is now `counter` (Forgejo's
/// `NewAccessTokenResponse`, after `IncreaseCounter`).
fn token_response(
    state: &AppState,
    keys: &SigningKey,
    app: &AppRow,
    grant: &GrantRow,
    counter: i64,
) -> Result<AccessTokenResponse, TokenError> {
    let now = now_unix();
    let cfg = &state.config;
    let sign_err = |e: jsonwebtoken::errors::Error| {
        tracing::error!(error = %e, "cannot sign token");
        TokenError::new("server_error", "cannot sign token")
    };
    let access = GrantToken {
        gnt: grant.id,
        tt: jwt::TYPE_ACCESS,
        cnt: 0,
        exp: now + cfg.access_token_ttl,
        iat: now,
        nbf: now,
    };
    let refresh = GrantToken {
        gnt: grant.id,
        tt: jwt::TYPE_REFRESH,
        cnt: counter,
        exp: now + cfg.refresh_token_ttl,
        iat: now,
        nbf: now,
    };
    let id_token = if grant.scope.split(' ').any(|s| s == "openid") {
        let user = state
            .db
            .user_by_id(grant.uid)?
            .ok_or_else(|| TokenError::new("invalid_grant", "user does not exist"))?;
        let claims = idtoken::claims(state, app, grant, &user, now)?;
        jwt::sign(keys, &claims).map_err(sign_err)?
    } else {
        String::new()
    };
    Ok(AccessTokenResponse {
        access_token: jwt::sign(keys, &access).map_err(sign_err)?,
        token_type: "bearer",
        expires_in: cfg.access_token_ttl,
        refresh_token: jwt::sign(keys, &refresh).map_err(sign_err)?,
        id_token,
    })
}

fn authorization_code(
    state: &AppState,
    keys: &SigningKey,
    form: &AccessTokenForm,
) -> Result<AccessTokenResponse, TokenError> {
    let app = authenticate_client(state, form)?;
    if let Some(uri) = form.redirect_uri.as_deref().filter(|u| !u.is_empty()) {
        if !app_allows(&app, uri) {
            return Err(TokenError::new(
                "unauthorized_client",
                "unexpected redirect URI",
            ));
        }
    }
    let code = form.code.clone().unwrap_or_default();
    let row = state
        .db
        .code_by_value(&code)?
        .ok_or_else(|| TokenError::new("unauthorized_client", "client is not authorized"))?;
    let verifier = form.code_verifier.clone().unwrap_or_default();
    if !pkce::verify(&row.code_challenge_method, &row.code_challenge, &verifier) {
        return Err(TokenError::new(
            "unauthorized_client",
            "failed PKCE code challenge",
        ));
    }
    let grant = state
        .db
        .grant_by_id(row.grant_id)?
        .filter(|g| g.app_id == app.id)
        .ok_or_else(|| TokenError::new("invalid_grant", "invalid grant"))?;
    // Single use: of two concurrent exchanges only the one that deletes the row proceeds.
    if !state.db.delete_code(&code)? {
        return Err(TokenError::new(
            "unauthorized_client",
            "client is not authorized",
        ));
    }
    let counter = state.db.increment_grant_counter(grant.id)?;
    token_response(state, keys, &app, &grant, counter)
}

fn refresh_token(
    state: &AppState,
    keys: &SigningKey,
    form: &AccessTokenForm,
) -> Result<AccessTokenResponse, TokenError> {
    let app = authenticate_client(state, form)?;
    let token = jwt::verify_grant_token(keys, form.refresh_token.as_deref().unwrap_or_default())
        .filter(|t| t.tt == jwt::TYPE_REFRESH)
        .ok_or_else(|| TokenError::new("unauthorized_client", "unable to parse refresh token"))?;
    let grant = state
        .db
        .grant_by_id(token.gnt)?
        .filter(|g| g.app_id == app.id)
        .ok_or_else(|| TokenError::new("invalid_grant", "grant does not exist"))?;
    if token.cnt == 0 || grant.counter != token.cnt {
        tracing::warn!(grant = grant.id, "a refresh token was used twice");
        return Err(TokenError::new(
            "unauthorized_client",
            "token was already used",
        ));
    }
    // Compare-and-swap so two concurrent refreshes with the same token cannot both succeed.
    let counter = state
        .db
        .bump_grant_counter(grant.id, token.cnt)?
        .ok_or_else(|| TokenError::new("unauthorized_client", "token was already used"))?;
    token_response(state, keys, &app, &grant, counter)
}

/// `POST /login/oauth/access_token`.
pub async fn access_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<AccessTokenForm>, FormRejection>,
) -> Response {
    let mut form = match form {
        Ok(Form(f)) => f,
        Err(e) => return TokenError::new("invalid_request", e.body_text()).into_response(),
    };
    if let Err(e) = merge_basic(&mut form, &headers) {
        return e.into_response();
    }
    let keys = match state.keys.get().await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "signing key unavailable");
            return TokenError::new("server_error", "signing key unavailable").into_response();
        }
    };
    let result = match form.grant_type.as_deref() {
        Some("authorization_code") => authorization_code(&state, &keys, &form),
        Some("refresh_token") => refresh_token(&state, &keys, &form),
        _ => Err(TokenError::new(
            "unsupported_grant_type",
            "Only refresh_token or authorization_code grant type is supported",
        )),
    };
    match result {
        Ok(r) => (
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::PRAGMA, "no-cache"),
            ],
            Json(r),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
