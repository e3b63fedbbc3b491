//! `GET/POST /login/oauth/authorize`: sign-in form (when the browser has no devforge session),
//! then Forgejo's checks and consent logic (`routers/web/auth/oauth.go`):
//! * unknown client or unregistered redirect URI: HTML 400, never a redirect;
//! * PKCE (`S256`/`plain`) required for public clients;
//! * public clients see the consent page every time; confidential clients with a grant get a
//!   code at once (new scopes silently ignored);
//! * one grant per (user, app) holding the exact scope string: consenting with any other string
//!   redirects with `error=server_error` "a grant exists with different scope";
//! * success: 303 to `redirect_uri?code=…&state=…`.

use std::collections::HashMap;

use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use super::html;
use super::pkce;
use super::redirect::{app_allows, see_other, with_params};
use super::session;
use super::store::{AppRow, CodeRow};
use crate::db::{now_unix, UserRow};
use crate::error::DbError;
use crate::secrets;
use crate::AppState;

/// Query parameters of the authorization request.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

fn server_error(e: DbError) -> Response {
    tracing::error!(error = %e, "authorize: storage error");
    html::error_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
}

/// 303 to the client with `error`, `error_description` and `state`.
fn redirect_error(redirect_uri: &str, error: &str, description: &str, state: &str) -> Response {
    match with_params(
        redirect_uri,
        &[
            ("error", error),
            ("error_description", description),
            ("state", state),
        ],
    ) {
        Some(u) => see_other(&u),
        None => html::error_page(StatusCode::BAD_REQUEST, description),
    }
}

/// Why an authorization request cannot even be answered with a redirect.
#[derive(Debug)]
enum ClientError {
    UnknownClient,
    BadRedirect,
    Db(DbError),
}

impl IntoResponse for ClientError {
    fn into_response(self) -> Response {
        match self {
            ClientError::UnknownClient => {
                html::error_page(StatusCode::BAD_REQUEST, "Client ID not registered")
            }
            ClientError::BadRedirect => {
                html::error_page(StatusCode::BAD_REQUEST, "Unregistered Redirect URI")
            }
            ClientError::Db(e) => server_error(e),
        }
    }
}

/// Looks up the client and checks the redirect URI; the HTML 400s of Forgejo.
fn client_and_redirect(
    state: &AppState,
    client_id: &str,
    redirect_uri: &str,
) -> Result<AppRow, ClientError> {
    let app = state
        .db
        .oauth_app_by_client_id(client_id)
        .map_err(ClientError::Db)?
        .ok_or(ClientError::UnknownClient)?;
    if redirect_uri.is_empty() || !app_allows(&app, redirect_uri) {
        return Err(ClientError::BadRedirect);
    }
    Ok(app)
}

/// Issues a code for `grant_id` and redirects to the client.
fn issue_code(
    state: &AppState,
    grant_id: i64,
    redirect_uri: &str,
    challenge: &str,
    method: &str,
    client_state: &str,
) -> Response {
    let code = format!("gta_{}", secrets::new_token_hex());
    let row = CodeRow {
        grant_id,
        redirect_uri: redirect_uri.to_string(),
        code_challenge: challenge.to_string(),
        code_challenge_method: method.to_string(),
        nonce: String::new(),
        created_unix: now_unix(),
    };
    if let Err(e) = state.db.create_code(&code, &row) {
        return server_error(e);
    }
    match with_params(redirect_uri, &[("code", &code), ("state", client_state)]) {
        Some(u) => see_other(&u),
        None => html::error_page(StatusCode::BAD_REQUEST, "Unregistered Redirect URI"),
    }
}

/// `GET /login/oauth/authorize`.
pub async fn authorize_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Query(p): Query<AuthorizeParams>,
) -> Response {
    let client_id = p.client_id.clone().unwrap_or_default();
    let redirect_uri = p.redirect_uri.clone().unwrap_or_default();
    let client_state = p.state.clone().unwrap_or_default();
    let app = match client_and_redirect(&state, &client_id, &redirect_uri) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let action = format!("/login/oauth/authorize?{}", raw.unwrap_or_default());
    let user = match session::session_user(&state, &headers) {
        Ok(Some(u)) if session::login_refusal(&u).is_none() => u,
        Ok(_) => return html::login_page(&action, None),
        Err(e) => return server_error(e),
    };
    if p.response_type.as_deref() != Some("code") {
        return redirect_error(
            &redirect_uri,
            "unsupported_response_type",
            "Only code response type is supported.",
            &client_state,
        );
    }
    let challenge = p.code_challenge.clone().unwrap_or_default();
    let method = p.code_challenge_method.clone().unwrap_or_default();
    match method.as_str() {
        "" if !app.confidential => {
            return redirect_error(
                &redirect_uri,
                "invalid_request",
                "PKCE is required for public clients",
                &client_state,
            )
        }
        "" => {}
        m if pkce::method_supported(m) => {
            if challenge.is_empty() {
                return redirect_error(
                    &redirect_uri,
                    "invalid_request",
                    "code_challenge is required with code_challenge_method",
                    &client_state,
                );
            }
        }
        _ => {
            return redirect_error(
                &redirect_uri,
                "invalid_request",
                "unsupported code challenge method",
                &client_state,
            )
        }
    }
    let grant = match state.db.grant_for(user.id, app.id) {
        Ok(g) => g,
        Err(e) => return server_error(e),
    };
    if let (true, Some(grant)) = (app.confidential, &grant) {
        if let Some(nonce) = p.nonce.as_deref().filter(|n| !n.is_empty()) {
            if let Err(e) = state.db.set_grant_nonce(grant.id, nonce) {
                return server_error(e);
            }
        }
        return issue_code(
            &state,
            grant.id,
            &redirect_uri,
            &challenge,
            &method,
            &client_state,
        );
    }
    let Some(sid) = session::session_id(&headers) else {
        return html::login_page(&action, None);
    };
    let csrf = session::csrf_token(&sid);
    let scope = p.scope.clone().unwrap_or_default();
    let nonce = p.nonce.clone().unwrap_or_default();
    html::consent_page(
        &app.name,
        &user.name,
        &scope,
        &[
            ("_csrf", &csrf),
            ("client_id", &client_id),
            ("redirect_uri", &redirect_uri),
            ("state", &client_state),
            ("scope", &scope),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", &method),
        ],
    )
}

/// `POST /login/oauth/authorize`: either the sign-in form (`user_name`, `password`) or the
/// consent form (`granted`).
pub async fn authorize_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.contains_key("user_name") {
        return login(&state, raw.unwrap_or_default(), &form);
    }
    consent(&state, &headers, &form)
}

fn login(state: &AppState, raw_query: String, form: &HashMap<String, String>) -> Response {
    let action = format!("/login/oauth/authorize?{raw_query}");
    let name = form
        .get("user_name")
        .map(String::as_str)
        .unwrap_or_default();
    let password = form.get("password").map(String::as_str).unwrap_or_default();
    let user: UserRow = match state.db.user_by_name(name) {
        Ok(Some(u)) if secrets::verify_password(password, &u.passwd_hash, &u.salt) => u,
        Ok(_) => return html::login_page(&action, Some("Username or password is incorrect.")),
        Err(e) => return server_error(e),
    };
    if let Some(why) = session::login_refusal(&user) {
        return html::login_page(&action, Some(why));
    }
    let sid = match state.db.create_session(user.id) {
        Ok(s) => s,
        Err(e) => return server_error(e),
    };
    if let Err(e) = state.db.touch_last_login(user.id) {
        return server_error(e);
    }
    tracing::info!(user = %user.name, "web sign-in");
    let mut resp = see_other(&action);
    if let Some(c) = session::set_cookie(state, &sid) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    resp
}

fn consent(state: &AppState, headers: &HeaderMap, form: &HashMap<String, String>) -> Response {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let Some(sid) = session::session_id(headers) else {
        return html::error_page(StatusCode::BAD_REQUEST, "Not signed in");
    };
    let user = match session::session_user(state, headers) {
        Ok(Some(u)) if session::login_refusal(&u).is_none() => u,
        Ok(_) => return html::error_page(StatusCode::BAD_REQUEST, "Not signed in"),
        Err(e) => return server_error(e),
    };
    if !secrets::constant_time_eq(
        get("_csrf").as_bytes(),
        session::csrf_token(&sid).as_bytes(),
    ) {
        return html::error_page(StatusCode::BAD_REQUEST, "Invalid CSRF token");
    }
    let redirect_uri = get("redirect_uri");
    let client_state = get("state");
    let app = match client_and_redirect(state, get("client_id"), redirect_uri) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    if get("granted") != "true" {
        return redirect_error(
            redirect_uri,
            "access_denied",
            "the request is denied",
            client_state,
        );
    }
    let scope = get("scope");
    let grant = match state.db.grant_for(user.id, app.id) {
        Ok(Some(g)) if g.scope != scope => {
            return redirect_error(
                redirect_uri,
                "server_error",
                "a grant exists with different scope",
                client_state,
            )
        }
        Ok(Some(g)) => g,
        Ok(None) => match state.db.create_grant(user.id, app.id, scope) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot create grant");
                return redirect_error(
                    redirect_uri,
                    "server_error",
                    "cannot create grant for user",
                    client_state,
                );
            }
        },
        Err(e) => return server_error(e),
    };
    let nonce = get("nonce");
    if !nonce.is_empty() {
        if let Err(e) = state.db.set_grant_nonce(grant.id, nonce) {
            return server_error(e);
        }
    }
    tracing::info!(user = %user.name, app = %app.name, "authorization granted");
    issue_code(
        state,
        grant.id,
        redirect_uri,
        get("code_challenge"),
        get("code_challenge_method"),
        client_state,
    )
}
