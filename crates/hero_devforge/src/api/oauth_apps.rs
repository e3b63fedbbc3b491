//! `/user/applications/oauth2`: OAuth2 applications owned by the caller (PAT `write:user`, or
//! `read:user` to read). The client secret is returned once, on creation and on every `PATCH`
//! (Forgejo regenerates it there: "this includes regenerating the client secret").
//!
//! Forgejo's quirks kept on purpose, so a client tested here handles them against the real forge:
//! another user's app is 404 on `GET`/`DELETE` (the delete is `WHERE id AND uid`), but **500** on
//! `PATCH` (`UpdateOAuth2Application` returns a plain "UID mismatch" error, not a not-found).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::{bind, Paging};
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

/// A bound and checked `CreateOAuth2ApplicationOptions` (the same form for create and update;
/// `name` and `redirect_uris` are `binding:"Required"`, so both are 422 when missing).
struct AppForm {
    name: String,
    uris: Vec<String>,
    confidential: bool,
}

impl AppForm {
    fn bind(body: &[u8]) -> Result<Self, ApiError> {
        let form: CreateOAuth2ApplicationOptions = bind(body)?;
        let name = form.name.unwrap_or_default();
        if name.is_empty() {
            return Err(ApiError::unprocessable("[Name]: Required"));
        }
        let uris = form.redirect_uris.unwrap_or_default();
        if uris.is_empty() {
            return Err(ApiError::unprocessable("[RedirectURIs]: Required"));
        }
        validate_redirect_uris(&uris).map_err(ApiError::bad_request)?;
        Ok(Self {
            name,
            uris,
            confidential: form.confidential_client.unwrap_or(false),
        })
    }
}

/// Forgejo's bare `ctx.NotFound()`.
fn app_not_found() -> ApiError {
    ApiError::not_found("The target couldn't be found.", vec![])
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
    let form = AppForm::bind(&body)?;
    let (app, secret) =
        state
            .db
            .create_oauth_app(caller.user.id, &form.name, &form.uris, form.confidential)?;
    tracing::info!(app = %app.name, client_id = %app.client_id, by = %caller.user.name, "registered oauth2 app");
    Ok((
        StatusCode::CREATED,
        Json(oauth_app_json(&app, Some(&secret))),
    )
        .into_response())
}

/// `GET /api/v1/user/applications/oauth2?page=&limit=` → one page of the caller's apps (no
/// secrets), oldest first, with `X-Total-Count`.
pub async fn list_apps(
    State(state): State<AppState>,
    auth: Auth,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let caller = auth.required()?;
    caller.require_scope("user", Level::Read)?;
    let apps = state.db.oauth_apps_of(caller.user.id)?;
    let total = apps.len();
    let (limit, offset) = paging.limit_offset();
    let page: Vec<ApiOAuth2App> = apps
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(0))
        .map(|a| oauth_app_json(a, None))
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert("X-Total-Count", HeaderValue::from(total));
    Ok((StatusCode::OK, headers, Json(page)).into_response())
}

/// `GET /api/v1/user/applications/oauth2/{id}` → the caller's app without its secret; 404 when it
/// does not exist or belongs to someone else.
pub async fn get_app(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<ApiOAuth2App>, ApiError> {
    let caller = auth.required()?;
    caller.require_scope("user", Level::Read)?;
    let app = path_id(&id)
        .and_then(|id| state.db.oauth_app_by_id(id).transpose())
        .transpose()?
        .filter(|a| a.uid == caller.user.id)
        .ok_or_else(app_not_found)?;
    Ok(Json(oauth_app_json(&app, None)))
}

/// `PATCH /api/v1/user/applications/oauth2/{id}` → 200 with the updated app and a **new** client
/// secret (the old one stops working at once). 404 if absent; 500 if another user's (Forgejo).
pub async fn update_app(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ApiOAuth2App>, ApiError> {
    let caller = auth.required()?;
    caller.require_scope("user", Level::Write)?;
    let form = AppForm::bind(&body)?;
    let app = path_id(&id)
        .and_then(|id| state.db.oauth_app_by_id(id).transpose())
        .transpose()?
        .ok_or_else(app_not_found)?;
    if app.uid != caller.user.id {
        return Err(ApiError::internal("UpdateOAuth2Application: UID mismatch"));
    }
    let (app, secret) =
        state
            .db
            .update_oauth_app(app.id, &form.name, &form.uris, form.confidential)?;
    tracing::info!(app = %app.name, client_id = %app.client_id, by = %caller.user.name, "updated oauth2 app, secret regenerated");
    Ok(Json(oauth_app_json(&app, Some(&secret))))
}

/// `DELETE /api/v1/user/applications/oauth2/{id}` → 204; 404 when absent or someone else's. Its
/// grants (and so every token issued through it) go with it.
pub async fn delete_app(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = auth.required()?;
    caller.require_scope("user", Level::Write)?;
    let id = path_id(&id).ok_or_else(app_not_found)?;
    if state.db.delete_oauth_app(id, caller.user.id)? {
        tracing::info!(app_id = id, by = %caller.user.name, "deleted oauth2 app");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(app_not_found())
    }
}

/// Forgejo's `ctx.PathParamInt64`: a non-numeric id parses as 0, which matches no app.
fn path_id(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}
