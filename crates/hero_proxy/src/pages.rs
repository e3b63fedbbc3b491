//! Small HTML pages the proxy itself renders (denials and login errors). No scripts, no external assets.

/// HTML-escapes text.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:40em;margin:4em auto;color:#222}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

/// 403 page naming the account, so the person knows which login was refused and can switch.
pub fn forbidden(account: &str, what: &str) -> String {
    page(
        "Access denied",
        &format!(
            "<p>You are signed in as <strong>{}</strong>, which is not allowed to open {}.</p>\
             <p>Ask an administrator for access, or sign out and use another account.</p>{}",
            escape(account),
            escape(what),
            LOGOUT_FORM
        ),
    )
}

/// Generic error page (login failures).
pub fn error(title: &str, message: &str) -> String {
    page(
        title,
        &format!(
            "<p>{}</p><p><a href=\"/oauth/login\">Sign in again</a></p>",
            escape(message)
        ),
    )
}

/// A page that only explains (bad requests, unreachable services): no sign-in link, nothing internal.
pub fn plain(title: &str, message: &str) -> String {
    page(title, &format!("<p>{}</p>", escape(message)))
}

/// Signing out is a POST (see `App::logout`).
const LOGOUT_FORM: &str =
    "<form method=\"post\" action=\"/oauth/logout\"><button type=\"submit\">Sign out</button></form>";

/// What `GET /oauth/logout` shows: a button, because a GET must not change anything.
pub fn confirm_logout() -> String {
    page(
        "Sign out",
        &format!("<p>Sign out of this site?</p>{LOGOUT_FORM}"),
    )
}

/// Page after logout.
pub fn signed_out() -> String {
    page(
        "Signed out",
        "<p>You are signed out.</p><p><a href=\"/oauth/login\">Sign in</a></p>",
    )
}
