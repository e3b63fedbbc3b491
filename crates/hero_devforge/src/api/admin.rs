//! `/admin/users`: create, edit and delete users. Site admins only (PAT `write:admin`, OAuth token
//! with admin rights, or Basic), like Forgejo's `/admin` route group.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::bind;
use crate::api::users::path_user;
use crate::auth::{Auth, Caller};
use crate::db::{NewUser, UserPatch};
use crate::error::ApiError;
use crate::rules;
use crate::scopes::Level;
use crate::secrets;
use crate::view::user_json;
use crate::AppState;

/// The `/admin` group's middleware chain: `tokenRequiresScopes(admin)`, `reqToken()`, `reqSiteAdmin()`.
fn require_site_admin(auth: Auth) -> Result<Caller, ApiError> {
    let caller = auth.required()?;
    caller.require_scope("admin", Level::Write)?;
    if !caller.is_admin() {
        return Err(ApiError::forbidden("user should be the site admin"));
    }
    Ok(caller)
}

/// Swagger `CreateUserOption`.
#[derive(Debug, Deserialize)]
pub struct CreateUserOption {
    pub source_id: Option<i64>,
    pub login_name: Option<String>,
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub must_change_password: Option<bool>,
    pub send_notify: Option<bool>,
    pub restricted: Option<bool>,
    pub visibility: Option<String>,
    pub created_at: Option<String>,
}

fn visibility_or_public(v: Option<&str>) -> String {
    match v {
        Some(v @ ("public" | "limited" | "private")) => v.to_string(),
        _ => "public".to_string(),
    }
}

/// `POST /api/v1/admin/users` → 201 `User`.
pub async fn create_user(
    State(state): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = require_site_admin(auth)?;
    let form: CreateUserOption = bind(&body)?;
    // Binding rules, in struct field order, first failure reported.
    let username = form.username.clone().unwrap_or_default();
    if let Err(
        e @ (rules::UsernameError::Required
        | rules::UsernameError::TooLong
        | rules::UsernameError::Invalid),
    ) = rules::check_username_binding(&username)
    {
        return Err(ApiError::unprocessable(e.to_string()));
    }
    let email = form.email.clone().unwrap_or_default();
    rules::check_email(&email).map_err(ApiError::unprocessable)?;
    let password = form.password.clone().unwrap_or_default();
    if password.chars().count() > 255 {
        return Err(ApiError::unprocessable("[Password]: MaxSize"));
    }
    let created_unix = match form.created_at.as_deref() {
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| ApiError::unprocessable("[Created]: invalid date-time"))?
                .timestamp(),
        ),
        None => None,
    };
    let source_id = form.source_id.unwrap_or(0);
    // Local (plain) accounts need a password of MIN_PASSWORD_LENGTH.
    let (passwd_hash, salt) = if source_id == 0 {
        rules::check_password(&password).map_err(ApiError::bad_request)?;
        secrets::hash_password(&password)
    } else {
        (String::new(), String::new())
    };
    rules::check_username_usable(&username).map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let new = NewUser {
        name: username,
        email,
        full_name: form.full_name.clone().unwrap_or_default(),
        login_name: form.login_name.clone().unwrap_or_default(),
        source_id,
        passwd_hash,
        salt,
        is_admin: false,
        must_change_password: form.must_change_password.unwrap_or(true),
        restricted: form.restricted.unwrap_or(false),
        visibility: visibility_or_public(form.visibility.as_deref()),
        created_unix,
    };
    let user = state.db.create_user(&new)?;
    tracing::info!(user = %user.name, id = user.id, by = %caller.user.name, "created user");
    Ok((
        StatusCode::CREATED,
        Json(user_json(&state.config, &user, Some(&caller.user))),
    )
        .into_response())
}

/// Swagger `EditUserOption` (the subset that has meaning here).
#[derive(Debug, Deserialize)]
pub struct EditUserOption {
    pub source_id: Option<i64>,
    pub login_name: Option<String>,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub must_change_password: Option<bool>,
    pub website: Option<String>,
    pub location: Option<String>,
    pub description: Option<String>,
    pub pronouns: Option<String>,
    pub active: Option<bool>,
    pub admin: Option<bool>,
    pub prohibit_login: Option<bool>,
    pub restricted: Option<bool>,
    pub visibility: Option<String>,
}

/// `PATCH /api/v1/admin/users/{username}` → 200 `User`.
pub async fn edit_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(username): Path<String>,
    body: Bytes,
) -> Result<Json<crate::view::ApiUser>, ApiError> {
    let caller = require_site_admin(auth)?;
    let target = path_user(&state, &username)?;
    let form: EditUserOption = bind(&body)?;
    if let Some(email) = &form.email {
        rules::check_email(email).map_err(ApiError::unprocessable)?;
    }
    let password = match form.password.as_deref() {
        Some("") | None => None,
        Some(p) => {
            if p.chars().count() < rules::MIN_PASSWORD_LEN {
                return Err(ApiError::bad_request(format!(
                    "password must be at least {} characters",
                    rules::MIN_PASSWORD_LEN
                )));
            }
            Some(secrets::hash_password(p))
        }
    };
    let patch = UserPatch {
        email: form.email,
        full_name: form.full_name,
        login_name: form.login_name,
        source_id: form.source_id,
        password,
        must_change_password: form.must_change_password,
        active: form.active,
        admin: form.admin,
        prohibit_login: form.prohibit_login,
        restricted: form.restricted,
        visibility: form
            .visibility
            .filter(|v| matches!(v.as_str(), "public" | "limited" | "private")),
        location: form.location,
        website: form.website,
        description: form.description,
        pronouns: form.pronouns,
    };
    let user = state.db.update_user(target.id, &patch)?;
    tracing::info!(user = %user.name, by = %caller.user.name, "edited user");
    Ok(Json(user_json(&state.config, &user, Some(&caller.user))))
}

/// `DELETE /api/v1/admin/users/{username}` → 204.
pub async fn delete_user(
    State(state): State<AppState>,
    auth: Auth,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = require_site_admin(auth)?;
    let target = path_user(&state, &username)?;
    if target.id == caller.user.id {
        return Err(ApiError::unprocessable("you cannot delete yourself"));
    }
    state.db.delete_user(target.id)?;
    tracing::info!(user = %target.name, by = %caller.user.name, "deleted user");
    Ok(StatusCode::NO_CONTENT)
}
