//! The few HTML pages of the web side (login form, consent page, error page). Plain, no assets.
//! Hidden inputs are written as `<input type="hidden" name="N" value="V">` so non-browser test
//! clients can read them with [`hidden_inputs`].

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} - Forgejo (devforge)</title></head>\n\
         <body>\n<h1>{}</h1>\n{body}\n<p><small>hero_devforge, a development stand-in for Forgejo</small></p>\n</body></html>\n",
        escape(title),
        escape(title)
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
        escape(name),
        escape(value)
    )
}

/// The sign-in form; POSTs `user_name` and `password` to `action`.
pub fn login_page(action: &str, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "{err}<form id=\"login\" method=\"post\" action=\"{}\">\n\
         <label>Username <input id=\"user_name\" name=\"user_name\" autocomplete=\"username\" required></label>\n\
         <label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\n\
         <button id=\"sign_in\" type=\"submit\">Sign in</button>\n</form>",
        escape(action)
    );
    (StatusCode::OK, Html(page("Sign in", &body))).into_response()
}

/// The consent page: the two buttons post `granted=true` or `granted=false` with the hidden fields.
pub fn consent_page(app_name: &str, user: &str, scope: &str, fields: &[(&str, &str)]) -> Response {
    let mut inputs = String::new();
    for (k, v) in fields {
        inputs.push_str(&hidden(k, v));
    }
    let body = format!(
        "<p>Authorize <strong>{}</strong> to access your account <strong>{}</strong>?</p>\n\
         <p>Requested scope: <code>{}</code></p>\n\
         <form id=\"consent\" method=\"post\" action=\"/login/oauth/authorize\">\n{inputs}\
         <button id=\"authorize\" type=\"submit\" name=\"granted\" value=\"true\">Authorize Application</button>\n\
         <button id=\"cancel\" type=\"submit\" name=\"granted\" value=\"false\">Cancel</button>\n</form>",
        escape(app_name),
        escape(user),
        escape(scope)
    );
    (StatusCode::OK, Html(page("Authorize application", &body))).into_response()
}

/// An HTML error page (used where Forgejo must not redirect, e.g. an unregistered redirect URI).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message));
    (status, Html(page("Error", &body))).into_response()
}

/// Reads the hidden inputs of a page produced here (for tests and scripted clients).
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for chunk in html.split("<input type=\"hidden\" ").skip(1) {
        let Some(rest) = chunk.strip_prefix("name=\"") else {
            continue;
        };
        let Some((name, rest)) = rest.split_once('"') else {
            continue;
        };
        let Some(rest) = rest.strip_prefix(" value=\"") else {
            continue;
        };
        let Some((value, _)) = rest.split_once('"') else {
            continue;
        };
        out.push((unescape(name), unescape(value)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_inputs_roundtrip() {
        let h = format!("{}{}", hidden("a", "x\"<&>'y"), hidden("b", ""));
        assert_eq!(
            hidden_inputs(&h),
            vec![("a".into(), "x\"<&>'y".into()), ("b".into(), String::new())]
        );
    }
}
