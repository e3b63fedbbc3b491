//! The web-login session of the authorize flow: an opaque random id in the `devforge_session`
//! cookie (HttpOnly, SameSite=Lax, Secure when the external URL is https), stored hashed. The
//! consent form's CSRF token is derived from the session id, so another site cannot post it.

use axum::http::{header, HeaderMap, HeaderValue};

use crate::db::UserRow;
use crate::error::DbError;
use crate::secrets;
use crate::AppState;

/// Cookie name.
pub const COOKIE: &str = "devforge_session";

/// The session id from the `Cookie` header, if any.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The signed-in user of this browser, if the session is valid.
pub fn session_user(state: &AppState, headers: &HeaderMap) -> Result<Option<UserRow>, DbError> {
    let Some(id) = session_id(headers) else {
        return Ok(None);
    };
    match state.db.session_user(&id)? {
        Some(uid) => state.db.user_by_id(uid),
        None => Ok(None),
    }
}

/// `Set-Cookie` value for a new session.
pub fn set_cookie(state: &AppState, id: &str) -> Option<HeaderValue> {
    let secure = if state.config.external_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// CSRF token bound to the session.
pub fn csrf_token(session_id: &str) -> String {
    secrets::sha256_hex(&format!("devforge-csrf:{session_id}"))
}

/// Why a user may not sign in to the web UI (`None` if they may).
pub fn login_refusal(user: &UserRow) -> Option<&'static str> {
    if !user.is_active || user.prohibit_login {
        Some("This account is prohibited from signing in, please contact your site administrator.")
    } else if user.must_change_password {
        Some("You must change your password before signing in (devforge has no password page: an admin must clear must_change_password).")
    } else {
        None
    }
}
