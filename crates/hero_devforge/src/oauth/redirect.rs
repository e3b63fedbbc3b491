//! Redirect URIs: Forgejo's matching rule and the building of `?code=` / `?error=` redirects.

use url::Url;

use super::store::AppRow;

/// Forgejo's `ContainsRedirectURI`: exact match ignoring case and one trailing `/`; for public
/// clients the port of an `http` loopback IP literal is ignored (RFC 8252 §7.3), not for `localhost`.
pub fn app_allows(app: &AppRow, redirect_uri: &str) -> bool {
    let norm = |s: &str| s.to_lowercase().trim_end_matches('/').to_string();
    let contains = |s: &str| {
        let s = norm(s);
        app.redirect_uris.iter().any(|u| norm(u) == s)
    };
    if !app.confidential {
        if let Ok(mut u) = Url::parse(redirect_uri) {
            let loopback = match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                _ => false,
            };
            if u.scheme() == "http" && u.port().is_some() && loopback && u.set_port(None).is_ok() {
                // `Url` adds a `/` path to bare origins; the comparison ignores one trailing `/`.
                if contains(u.as_str()) {
                    return true;
                }
            }
        }
    }
    contains(redirect_uri)
}

/// A 303 See Other to `location`, without the panic of `axum::response::Redirect` on a value
/// that is not a valid header (impossible for the URLs built here, but input must never panic).
pub fn see_other(location: &str) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// `redirect_uri` with extra query parameters appended (existing ones kept).
pub fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> Option<String> {
    let mut u = Url::parse(redirect_uri).ok()?;
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in params {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
    }
    Some(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(uris: &[&str], confidential: bool) -> AppRow {
        AppRow {
            id: 1,
            uid: 0,
            name: "a".into(),
            client_id: "c".into(),
            secret_hash: String::new(),
            redirect_uris: uris.iter().map(|s| s.to_string()).collect(),
            confidential,
            created_unix: 0,
        }
    }

    #[test]
    fn matching_rules() {
        let public = app(
            &["http://127.0.0.1/callback", "https://App.example/cb/"],
            false,
        );
        assert!(app_allows(&public, "http://127.0.0.1/callback"));
        assert!(app_allows(&public, "http://127.0.0.1:54321/callback"));
        assert!(app_allows(&public, "https://app.example/cb"));
        assert!(!app_allows(&public, "https://app.example/cb/x"));
        assert!(!app_allows(&public, "https://app.example:8443/cb"));
        let localhost = app(&["http://localhost/cb"], false);
        assert!(!app_allows(&localhost, "http://localhost:8080/cb"));
        let confidential = app(&["http://127.0.0.1/callback"], true);
        assert!(!app_allows(&confidential, "http://127.0.0.1:5000/callback"));
        let v6 = app(&["http://[::1]/cb"], false);
        assert!(app_allows(&v6, "http://[::1]:9/cb"));
    }

    #[test]
    fn builds_redirects() {
        assert_eq!(
            with_params("https://a.example/cb?x=1", &[("code", "c"), ("state", "")]).unwrap(),
            "https://a.example/cb?x=1&code=c"
        );
    }
}
