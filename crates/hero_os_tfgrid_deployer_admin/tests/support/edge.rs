//! TEST HARNESS standing in for hero_proxy's SSO edge: a tiny reverse proxy that strips inbound
//! `X-Hero-*` headers and injects `X-Hero-User` plus a freshly signed `X-Hero-Assertion` for a
//! fixed identity. The dashboard runs in `--auth-mode signed` against its key, so the browser
//! tests exercise the production verification path. It is not hero_proxy: no OAuth, no sessions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hero_identity::{AssertionPayload, AssertionSigner, Claim};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub struct EdgeIdentity {
    pub user: String,
    pub claims: Vec<String>,
}

#[derive(Clone)]
struct EdgeState {
    upstream: String,
    signer: Arc<AssertionSigner>,
    identity: Arc<EdgeIdentity>,
    client: Client<HttpConnector, Body>,
}

/// Serves the edge on a free loopback port; returns its base URL. The task ends with the runtime.
pub async fn start_edge(
    upstream: &str,
    signer: Arc<AssertionSigner>,
    identity: EdgeIdentity,
) -> String {
    let state = EdgeState {
        upstream: upstream.trim_start_matches("http://").to_owned(),
        signer,
        identity: Arc::new(identity),
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    let app = Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn forward(State(s): State<EdgeState>, mut req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    *req.uri_mut() = Uri::try_from(format!("http://{}{path}", s.upstream)).unwrap();
    let names: Vec<_> = req
        .headers()
        .keys()
        .filter(|n| hero_identity::is_reserved_header(n.as_str()))
        .cloned()
        .collect();
    for n in names {
        req.headers_mut().remove(n);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims: Vec<Claim> = s
        .identity
        .claims
        .iter()
        .map(|c| Claim::parse(c).unwrap())
        .collect();
    claims.sort();
    let token = s.signer.sign(&AssertionPayload {
        iss: hero_identity::ASSERTION_ISSUER.into(),
        aud: "admin".into(),
        sub: s.identity.user.clone(),
        ctx: None,
        claims,
        prv: "forge".into(),
        lgn: s.identity.user.clone(),
        xid: "1".into(),
        iat: now,
        exp: now + 300,
    });
    let h = req.headers_mut();
    h.insert(
        "x-hero-user",
        HeaderValue::from_str(&s.identity.user).unwrap(),
    );
    h.insert("x-hero-assertion", HeaderValue::from_str(&token).unwrap());
    match s.client.request(req).await {
        Ok(resp) => resp.map(Body::new).into_response(),
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
