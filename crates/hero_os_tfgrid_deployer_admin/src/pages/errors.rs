//! 401, 403, 404, 503 and generic error pages. Never show details that could leak secrets.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hero_identity::{Identity, IdentityError};
use maud::{html, Markup};

use crate::layout::{no_store, shell, Nav};

fn card(title: &str, body: Markup) -> Markup {
    html! {
        section.card.narrow.center {
            h1 { (title) }
            (body)
        }
    }
}

fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, no_store(markup)).into_response()
}

/// No trustworthy identity on the request.
pub fn unauthorized(e: &IdentityError, dev: bool) -> Response {
    let body = card(
        "Sign-in required",
        html! {
            p { "This dashboard is only reachable through the Hero single sign-on. "
                "Open it through the SSO address and sign in with your Forge account." }
            p.muted { "Reason: " code { (e.code()) } }
        },
    );
    respond(
        StatusCode::UNAUTHORIZED,
        shell("Sign-in required", None, dev, Nav::None, body),
    )
}

/// Signed in, but neither allowlisted nor in `groups.admin`.
pub fn forbidden(identity: &Identity, dev: bool) -> Response {
    let body = card(
        "No access",
        html! {
            p { "You are signed in as " strong data-testid="signed-in-as" { (identity.user) } ", "
                "but this account is not a deployer admin." }
            // The allowlist holds Forge logins (see `auth::admitted`): name the login, which for `bob.smith` is
            // not the local `bob-smith` — adding that would let in whoever's Forge login it is instead.
            @if crate::auth::is_forge(identity) && !identity.login.is_empty() {
                p { "Ask an existing admin to add the Forge login " code data-testid="login-to-allow" { (identity.login) }
                    " to the admin allowlist (secret " code { "deployer/ADMIN_FORGE_USERS" } "). "
                    "The change takes effect on your next page load." }
            } @else {
                p { "You signed in through " code { (identity.provider) } ", and the admin allowlist holds Forge "
                    "logins only: an existing admin can let you in by putting you in the proxy's "
                    code { "admin" } " group." }
            }
        },
    );
    respond(
        StatusCode::FORBIDDEN,
        shell("No access", None, dev, Nav::None, body),
    )
}

/// The allowlist could not be read: fail closed.
pub fn allowlist_unavailable(dev: bool) -> Response {
    let body = card(
        "Temporarily unavailable",
        html! { p { "The admin allowlist cannot be read right now, so nobody is let in. The server log has the reason." } },
    );
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        shell("Unavailable", None, dev, Nav::None, body),
    )
}

tokio::task_local! {
    /// Whether the request being answered is served in dev mode. Set around every request ([`mode_scope`]) because
    /// the error pages are built where no request state reaches (a `PageError`, a rejection, the fallback), and
    /// they must carry the dev banner like every other page.
    static DEV_MODE: bool;
}

/// Middleware around every request: makes the auth mode known to [`page_error`].
pub async fn mode_scope(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    DEV_MODE.scope(state.auth().is_dev(), next.run(req)).await
}

/// A failed page action, with the server's reason.
pub fn page_error(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not possible right now",
        StatusCode::FORBIDDEN => "Refused",
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "Invalid request",
        StatusCode::NOT_IMPLEMENTED => "Not available on this server",
        _ => "Something went wrong",
    };
    let body = card(
        title,
        html! {
            p.error-reason data-testid="error-reason" { (message) }
            p { a href="/users" { "Back to users" } }
        },
    );
    let dev = DEV_MODE.try_with(|d| *d).unwrap_or(false);
    respond(status, shell(title, None, dev, Nav::None, body))
}

/// An extractor's refusal (a path id that is not a number, `?page=x`, a form of the wrong type or over the body
/// limit) as the dashboard's error page. axum answers those in plain text, a bare line in the browser with none
/// of the headers or the way back the other pages have; this layer, on the admitted routes, is the one place
/// that turns every such answer — whichever extractor it came from — into [`page_error`] with its reason.
/// The pages themselves answer in HTML, so a plain-text client error can only be a rejection.
pub async fn rejection_page(resp: Response) -> Response {
    let plain = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    if !plain || !resp.status().is_client_error() {
        return resp;
    }
    let status = resp.status();
    let reason = match axum::body::to_bytes(resp.into_body(), 4096).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    };
    let reason = if reason.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_owned()
    } else {
        reason
    };
    page_error(status, reason.trim())
}

/// Fallback for unknown paths.
pub async fn not_found() -> Response {
    page_error(StatusCode::NOT_FOUND, "There is no page at this address.")
}
