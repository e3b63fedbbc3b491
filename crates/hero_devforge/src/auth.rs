//! Who is calling: `Authorization: token|Bearer|Basic`, resolved to a user and an auth method, plus
//! Forgejo's global 403s (inactive, prohibit-login, must-change-password) that apply to every
//! authenticated API call whatever the method.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;

use crate::db::UserRow;
use crate::error::ApiError;
use crate::oauth::jwt;
use crate::scopes::{Level, Scope};
use crate::secrets;
use crate::AppState;

/// How the caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// Username + password. Never scope-limited.
    Basic,
    /// A personal access token, limited by its scopes.
    Token(Scope),
    /// An OAuth2 access token (JWT), limited by the grant's scope string (see `Scope::from_oauth_scope_string`).
    OAuth(Scope),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRow,
    pub method: AuthMethod,
}

impl Caller {
    /// True only for password Basic auth (Forgejo's `ctx.IsBasicAuth`).
    pub fn is_basic(&self) -> bool {
        self.method == AuthMethod::Basic
    }

    pub fn is_admin(&self) -> bool {
        self.user.is_admin
    }

    /// Forgejo's `tokenRequiresScopes`: token-based callers need the category at `level`.
    pub fn require_scope(&self, category: &str, level: Level) -> Result<(), ApiError> {
        let scope = match &self.method {
            AuthMethod::Basic => return Ok(()),
            AuthMethod::Token(s) | AuthMethod::OAuth(s) => s,
        };
        if scope.allows(category, level) {
            Ok(())
        } else {
            let lvl = if level == Level::Write {
                "write"
            } else {
                "read"
            };
            Err(ApiError::forbidden(format!(
                "token does not have at least one of required scope(s): [{lvl}:{category}]"
            )))
        }
    }
}

/// Extractor: the caller if any credentials were sent, after the global checks.
#[derive(Debug, Clone)]
pub struct Auth(pub Option<Caller>);

impl Auth {
    /// Forgejo's `reqToken()`: any authenticated caller, else 401 `token is required`.
    pub fn required(self) -> Result<Caller, ApiError> {
        self.0
            .ok_or_else(|| ApiError::unauthorized("token is required"))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let mut caller = authenticate(state, &parts.headers).await?;
        if let Some(c) = &caller {
            global_checks(state, &c.user)?;
        }
        if let Some(target) = sudo_target(parts) {
            caller = Some(apply_sudo(state, caller, &target)?);
        }
        Ok(Auth(caller))
    }
}

/// The user named by the `Sudo` header or the `?sudo=` query parameter.
fn sudo_target(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get("sudo").and_then(|v| v.to_str().ok()) {
        if !v.is_empty() {
            return Some(v.to_string());
        }
    }
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, v)| k == "sudo" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// Forgejo's `sudo()` middleware: admins act as another user (same auth method, so admin Basic
/// + `Sudo: alice` can still mint alice's tokens); anyone else gets 403, an unknown user 404.
fn apply_sudo(state: &AppState, caller: Option<Caller>, target: &str) -> Result<Caller, ApiError> {
    let caller = caller
        .filter(|c| c.user.is_admin)
        .ok_or_else(|| ApiError::forbidden("Only administrators allowed to sudo"))?;
    let user = state.db.user_by_name(target)?.ok_or_else(|| {
        ApiError::not_found(
            "GetUserByName",
            vec![format!("user redirect does not exist [name: {target}]")],
        )
    })?;
    Ok(Caller {
        user,
        method: caller.method,
    })
}

/// The 403s Forgejo applies to every signed-in API request (`verifyAuthWithOptions`).
pub fn global_checks(state: &AppState, user: &UserRow) -> Result<(), ApiError> {
    if !user.is_active || user.prohibit_login {
        return Err(ApiError::bare(
            StatusCode::FORBIDDEN,
            "This account is prohibited from signing in, please contact your site administrator.",
        ));
    }
    if user.must_change_password {
        return Err(ApiError::bare(
            StatusCode::FORBIDDEN,
            format!(
                "You must change your password. Change it at: {}/user/change_password",
                state.config.external_url
            ),
        ));
    }
    Ok(())
}

fn invalid_token() -> ApiError {
    ApiError::unauthorized("invalid username, password or token")
}

/// Resolves the `Authorization` header. No header (or an unknown scheme) is anonymous; bad
/// credentials are 401.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Caller>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| invalid_token())?.trim();
    let (scheme, cred) = value.split_once(' ').unwrap_or((value, ""));
    let cred = cred.trim();
    // `token` must be lowercase in Forgejo; `bearer` is case-insensitive.
    if scheme == "token" {
        return token_caller(state, cred).await.map(Some);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return token_caller(state, cred).await.map(Some);
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return basic_caller(state, cred).await.map(Some);
    }
    Ok(None)
}

/// A PAT (40 hex) or an OAuth2 access-token JWT.
async fn token_caller(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if token.is_empty() {
        return Err(invalid_token());
    }
    if jwt::looks_like_jwt(token) {
        let (user, scope) = crate::oauth::store::access_token_user(state, token)
            .await?
            .ok_or_else(invalid_token)?;
        return Ok(Caller {
            user,
            method: AuthMethod::OAuth(scope),
        });
    }
    let row = state
        .db
        .token_by_hash(&secrets::sha256_hex(token))?
        .ok_or_else(invalid_token)?;
    let user = state.db.user_by_id(row.uid)?.ok_or_else(invalid_token)?;
    let scope = Scope::parse_stored(&row.scope).map_err(ApiError::internal)?;
    Ok(Caller {
        user,
        method: AuthMethod::Token(scope),
    })
}

/// Basic: `user:password`, or a token in the username (empty password / `x-oauth-basic`) or in
/// the password field, which Forgejo treats as token auth (so it is NOT `IsBasicAuth`).
async fn basic_caller(state: &AppState, cred: &str) -> Result<Caller, ApiError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(cred)
        .map_err(|_| invalid_token())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid_token())?;
    let (username, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    if password.is_empty() || password == "x-oauth-basic" {
        return token_caller(state, username).await;
    }
    if let Some(user) = state.db.user_by_name(username)? {
        if secrets::verify_password(password, &user.passwd_hash, &user.salt) {
            return Ok(Caller {
                user,
                method: AuthMethod::Basic,
            });
        }
        // A token used as the password authenticates as token auth.
        if let Ok(c) = token_caller(state, password).await {
            return Ok(c);
        }
        return Err(ApiError::unauthorized(format!(
            "user's password is invalid [uid: {}, name: {}]",
            user.id, user.name
        )));
    }
    if let Ok(c) = token_caller(state, password).await {
        return Ok(c);
    }
    Err(ApiError::unauthorized(format!(
        "user does not exist [uid: 0, name: {username}]"
    )))
}
