//! `/users/{username}/tokens`: personal access tokens. Minting and deleting need password Basic
//! auth (Forgejo's `reqBasicOrRevProxyAuth`): a PAT or OAuth token there is 401 `auth required`.
//! The token belongs to the PATH user; the caller must be that user or a site admin.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::users::path_user;
use crate::api::{bind, Paging};
use crate::auth::{Auth, Caller};
use crate::db::UserRow;
use crate::error::ApiError;
use crate::scopes::{Level, Scope};
use crate::secrets;
use crate::view::token_json;
use crate::AppState;

fn require_self_or_admin(caller: &Caller, target: &UserRow) -> Result<(), ApiError> {
    if caller.is_admin() || caller.user.id == target.id {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "doer should be the site admin or be same as the contextUser",
        ))
    }
}

fn require_basic(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_basic() {
        Ok(())
    } else {
        Err(ApiError::unauthorized("auth required"))
    }
}

/// Swagger `CreateAccessTokenOption`.
#[derive(Debug, Deserialize)]
pub struct CreateAccessTokenOption {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
}

/// `POST /api/v1/users/{username}/tokens` → 201 `AccessToken` with the secret in `sha1` (once).
pub async fn create_token(
    State(state): State<AppState>,
    auth: Auth,
    Path(username): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = path_user(&state, &username)?;
    let caller = auth
        .0
        .ok_or_else(|| ApiError::unauthorized("auth required"))?;
    require_self_or_admin(&caller, &target)?;
    require_basic(&caller)?;
    let form: CreateAccessTokenOption = bind(&body)?;
    let name = form.name.unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::unprocessable("[Name]: Required"));
    }
    let scope = Scope::parse(&form.scopes.unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("invalid access token scope provided: {e}")))?;
    if scope.is_empty() {
        return Err(ApiError::bad_request("access token must have a scope"));
    }
    let secret = secrets::new_token_hex();
    let last_eight = &secret[secret.len() - 8..];
    let row = state.db.create_token(
        target.id,
        &name,
        &secrets::sha256_hex(&secret),
        last_eight,
        &scope.to_stored(),
    )?;
    tracing::info!(user = %target.name, token = %name, by = %caller.user.name, "minted access token");
    Ok((StatusCode::CREATED, Json(token_json(&row, Some(&secret)))).into_response())
}

/// `GET /api/v1/users/{username}/tokens` → 200 list (`sha1` empty) with `X-Total-Count`.
/// Since Forgejo v11 a PAT with `read:user` may list too.
pub async fn list_tokens(
    State(state): State<AppState>,
    auth: Auth,
    Path(username): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let target = path_user(&state, &username)?;
    let caller = auth.required()?;
    caller.require_scope("user", Level::Read)?;
    require_self_or_admin(&caller, &target)?;
    let (limit, offset) = paging.limit_offset();
    let (rows, total) = state.db.list_tokens(target.id, limit, offset)?;
    let list: Vec<_> = rows.iter().map(|t| token_json(t, None)).collect();
    let mut headers = HeaderMap::new();
    headers.insert("X-Total-Count", HeaderValue::from(total));
    Ok((StatusCode::OK, headers, Json(list)).into_response())
}

/// `DELETE /api/v1/users/{username}/tokens/{id-or-name}` → 204 / 404 / 422 (ambiguous name).
pub async fn delete_token(
    State(state): State<AppState>,
    auth: Auth,
    Path((username, token)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let target = path_user(&state, &username)?;
    let caller = auth
        .0
        .ok_or_else(|| ApiError::unauthorized("auth required"))?;
    require_self_or_admin(&caller, &target)?;
    require_basic(&caller)?;
    let ids = state.db.find_token_ids(target.id, &token)?;
    match ids.as_slice() {
        [] => Err(ApiError::not_found("The target couldn't be found.", vec![])),
        [id] => {
            if state.db.delete_token(target.id, *id)? {
                Ok(StatusCode::NO_CONTENT)
            } else {
                Err(ApiError::not_found("The target couldn't be found.", vec![]))
            }
        }
        _ => Err(ApiError::unprocessable(format!(
            "multiple matches for token name '{token}'"
        ))),
    }
}
