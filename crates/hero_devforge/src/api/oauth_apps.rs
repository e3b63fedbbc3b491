//! `/user/applications/oauth2`: OAuth2 applications owned by the caller (PAT `write:user`). The
//! client secret is returned once, on creation.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::bind;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::scopes::Level;
use crate::view::{oauth_app_json, ApiOAuth2App};
use crate::AppState;

/// Swagger `CreateOAuth2ApplicationOptions`.
#[derive(Debug, Deserialize)]
pub struct CreateOAuth2ApplicationOptions {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub confidential_client: Option<bool>,
}

/// Checks that every redirect URI is an absolute URL.
pub fn validate_redirect_uris(uris: &[String]) -> Result<(), String> {
    for u in uris {
        url::Url::parse(u).map_err(|_| format!("invalid redirect URI: {u}"))?;
    }
    Ok(())
}

/// `POST /api/v1/user/applications/oauth2` → 201 `OAuth2Application` with `client_secret`.
pub async fn create_app(
    State(state): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = auth.required()?;
    caller.require_scope("user", Level::Write)?;
    let form: CreateOAuth2ApplicationOptions = bind(&body)?;
    let name = form.name.unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::unprocessable("[Name]: Required"));
    }
    let uris = form.redirect_uris.unwrap_or_default();
    if uris.is_empty() {
        return Err(ApiError::unprocessable("[RedirectURIs]: Required"));
    }
    validate_redirect_uris(&uris).map_err(ApiError::bad_request)?;
    let (app, secret) = state.db.create_oauth_app(
        caller.user.id,
        &name,
        &uris,
        form.confidential_client.unwrap_or(false),
    )?;
    tracing::info!(app = %app.name, client_id = %app.client_id, by = %caller.user.name, "registered oauth2 app");
    Ok((
        StatusCode::CREATED,
        Json(oauth_app_json(&app, Some(&secret))),
    )
        .into_response())
}

/// `GET /api/v1/user/applications/oauth2` → the caller's apps (no secrets).
pub async fn list_apps(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<ApiOAuth2App>>, ApiError> {
    let caller = auth.required()?;
    caller.require_scope("user", Level::Read)?;
    let apps = state.db.oauth_apps_of(caller.user.id)?;
    Ok(Json(apps.iter().map(|a| oauth_app_json(a, None)).collect()))
}
