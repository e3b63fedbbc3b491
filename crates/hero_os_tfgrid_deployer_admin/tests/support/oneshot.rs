//! In-process requests to the dashboard's router (`oneshot`), as the signed-in admin the
//! identity header names: the route tests' one way to GET, POST a form and read the CSRF token.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub text: String,
}

pub async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text =
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).to_string();
    Resp {
        status,
        headers,
        text,
    }
}

pub async fn get(app: &Router, path: &str, user: Option<&str>) -> Resp {
    let mut req = Request::get(path);
    if let Some(u) = user {
        req = req.header("x-hero-user", u);
    }
    send(app, req.body(Body::empty()).unwrap()).await
}

/// A form POST (repeated keys allowed).
pub async fn post(app: &Router, path: &str, user: &str, form: &[(&str, &str)]) -> Resp {
    let body = serde_urlencoded::to_string(form).unwrap();
    let req = Request::post(path)
        .header("x-hero-user", user)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    send(app, req).await
}

/// The CSRF token rendered into a page.
pub fn csrf_of(html: &str) -> String {
    let i = html
        .find("name=\"csrf-token\" content=\"")
        .expect("csrf meta")
        + 27;
    html[i..i + 64].to_owned()
}
