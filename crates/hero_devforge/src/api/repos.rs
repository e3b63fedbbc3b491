//! `GET`/`POST /user/repos`: the caller's own repositories. The route sits in Forgejo's `/user`
//! group (token scope `user`) *and* carries `tokenRequiresScopes(repository)`, so a token needs
//! both categories (read for `GET`, write for `POST`); password Basic is never scope-limited.
//! Only the metadata exists here: `gitignores`, `license`, `readme`, `issue_labels` and
//! `trust_model` are accepted and have no effect (no git data), `auto_init` marks it non-empty.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::api::bind;
use crate::auth::{Auth, Caller};
use crate::error::ApiError;
use crate::repos::{order_sql, NewRepo};
use crate::scopes::Level;
use crate::view::repo_json;
use crate::AppState;

/// Forgejo's `MaxSize(100)` on repository names.
pub const MAX_REPO_NAME_LEN: usize = 100;
/// Forgejo's `MaxSize(2048)` on descriptions.
pub const MAX_DESCRIPTION_LEN: usize = 2048;
/// `repo_model.reservedRepoNames`.
pub const RESERVED_REPO_NAMES: &[&str] = &[".", "..", "-"];
/// `repo_model.reservedRepoPatterns` (`*` is a prefix wildcard).
pub const RESERVED_REPO_PATTERNS: &[&str] = &["*.git", "*.rss", "*.atom", "*.wiki"];

/// Swagger `CreateRepoOption` (the fields with an effect here, plus the ones only checked).
#[derive(Debug, Deserialize)]
pub struct CreateRepoOption {
    pub name: Option<String>,
    pub description: Option<String>,
    pub private: Option<bool>,
    pub template: Option<bool>,
    pub auto_init: Option<bool>,
    pub default_branch: Option<String>,
    pub object_format_name: Option<String>,
    pub gitignores: Option<String>,
    pub license: Option<String>,
    pub readme: Option<String>,
    pub issue_labels: Option<String>,
    pub trust_model: Option<String>,
}

/// Checks a repository name as Forgejo does: binding `Required;AlphaDashDot;MaxSize(100)` (422
/// with the field name), then `IsUsableRepoName` (reserved names and patterns, also 422).
pub fn check_repo_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::unprocessable("[Name]: Required"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::unprocessable("[Name]: AlphaDashDot"));
    }
    if name.chars().count() > MAX_REPO_NAME_LEN {
        return Err(ApiError::unprocessable("[Name]: MaxSize"));
    }
    let lower = name.to_lowercase();
    if RESERVED_REPO_NAMES.contains(&lower.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "name is reserved [name: {name}]"
        )));
    }
    for pat in RESERVED_REPO_PATTERNS {
        if let Some(suffix) = pat.strip_prefix('*') {
            if lower.ends_with(suffix) {
                return Err(ApiError::unprocessable(format!(
                    "name pattern is not allowed [pattern: {pat}]"
                )));
            }
        }
    }
    Ok(())
}

/// Both scope categories of the route, outer group (`user`) first as Forgejo's middleware runs.
fn require_scopes(caller: &Caller, level: Level) -> Result<(), ApiError> {
    caller.require_scope("user", level)?;
    caller.require_scope("repository", level)
}

/// `POST /api/v1/user/repos` → 201 `Repository` owned by the caller; 409 if the caller already
/// has a repository of that name (case-insensitive).
pub async fn create_my_repo(
    State(state): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = auth.required()?;
    require_scopes(&caller, Level::Write)?;
    let form: CreateRepoOption = bind(&body)?;
    let name = form.name.unwrap_or_default();
    check_repo_name(&name)?;
    let description = form.description.unwrap_or_default();
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(ApiError::unprocessable("[Description]: MaxSize"));
    }
    let default_branch = form
        .default_branch
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "main".to_string());
    if default_branch.chars().count() > 100 {
        return Err(ApiError::unprocessable("[DefaultBranch]: MaxSize"));
    }
    let object_format = form
        .object_format_name
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "sha1".to_string());
    if object_format != "sha1" && object_format != "sha256" {
        return Err(ApiError::unprocessable(format!(
            "invalid object format: {object_format}"
        )));
    }
    let repo = state.db.create_repo(
        caller.user.id,
        &NewRepo {
            name,
            description,
            private: form.private.unwrap_or(false),
            template: form.template.unwrap_or(false),
            auto_init: form.auto_init.unwrap_or(false),
            default_branch,
            object_format,
        },
    )?;
    tracing::info!(owner = %caller.user.name, repo = %repo.name, "created repository");
    Ok((
        StatusCode::CREATED,
        Json(repo_json(&state.config, &repo, &caller.user)),
    )
        .into_response())
}

/// `page`, `limit` and `order_by` of `GET /user/repos`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub page: Option<i64>,
    pub limit: Option<i64>,
    pub order_by: Option<String>,
}

/// `GET /api/v1/user/repos` → 200 the caller's repositories with `X-Total-Count`; an unknown
/// `order_by` is 422 `Invalid order_by` (Forgejo).
pub async fn list_my_repos(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let caller = auth.required()?;
    require_scopes(&caller, Level::Read)?;
    let order = order_sql(q.order_by.as_deref().unwrap_or(""))
        .ok_or_else(|| ApiError::unprocessable("Invalid order_by"))?;
    let paging = crate::api::Paging {
        page: q.page,
        limit: q.limit,
    };
    let (limit, offset) = paging.limit_offset();
    let (rows, total) = state.db.repos_of(caller.user.id, order, limit, offset)?;
    let list: Vec<_> = rows
        .iter()
        .map(|r| repo_json(&state.config, r, &caller.user))
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert("X-Total-Count", HeaderValue::from(total));
    Ok((StatusCode::OK, headers, Json(list)).into_response())
}
