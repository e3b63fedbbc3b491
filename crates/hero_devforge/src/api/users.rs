//! `GET /users/{username}` and `GET /user`.

use axum::extract::{Path, State};
use axum::Json;

use crate::auth::Auth;
use crate::db::UserRow;
use crate::error::ApiError;
use crate::scopes::Level;
use crate::view::{user_json, ApiUser};
use crate::AppState;

/// Forgejo's `context.UserAssignmentAPI` 404 for a missing user.
pub fn user_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "GetUserByName",
        vec![format!("user redirect does not exist [name: {name}]")],
    )
}

/// Looks a path user up case-insensitively, 404 if absent.
pub fn path_user(state: &AppState, name: &str) -> Result<UserRow, ApiError> {
    state
        .db
        .user_by_name(name)?
        .ok_or_else(|| user_not_found(name))
}

/// Whether `doer` may see `u` (private users: self and admins; limited: signed-in users).
fn visible_to(u: &UserRow, doer: Option<&UserRow>) -> bool {
    match u.visibility.as_str() {
        "private" => doer.is_some_and(|d| d.is_admin || d.id == u.id),
        "limited" => doer.is_some(),
        _ => true,
    }
}

/// `GET /api/v1/users/{username}` (PAT scope `read:user`).
pub async fn get_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(username): Path<String>,
) -> Result<Json<ApiUser>, ApiError> {
    if let Some(c) = &auth.0 {
        c.require_scope("user", Level::Read)?;
    }
    let doer = auth.0.as_ref().map(|c| &c.user);
    let u = path_user(&state, &username)?;
    if !visible_to(&u, doer) {
        return Err(user_not_found(&username));
    }
    Ok(Json(user_json(&state.config, &u, doer)))
}

/// `GET /api/v1/user`: the caller itself; a cheap way to validate a token.
pub async fn get_current(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<ApiUser>, ApiError> {
    let caller = auth.required()?;
    caller.require_scope("user", Level::Read)?;
    Ok(Json(user_json(
        &state.config,
        &caller.user,
        Some(&caller.user),
    )))
}
