//! The axum extractor end to end through a Router: 401 without identity, 403 without the claim, dev mode loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use hero_identity::*;
use http::{Request, StatusCode};
use tower::ServiceExt;

claim_requirement!(DnsWrite, "dns.zone.write");
claim_requirement!(Engineers, "engineers.*");

fn app(v: IdentityVerifier) -> Router {
    Router::new()
        .route("/me", get(|id: Identity| async move { id.user }))
        .route(
            "/dns",
            get(|r: RequireClaim<DnsWrite>| async move { r.identity().user.clone() }),
        )
        .route("/eng", get(|_r: RequireClaim<Engineers>| async { "ok" }))
        .with_state(v)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(signer: &AssertionSigner, claims: &[&str]) -> (String, String) {
    let claims: Vec<Claim> = claims.iter().map(|c| Claim::parse(c).unwrap()).collect();
    let p = AssertionPayload {
        iss: ASSERTION_ISSUER.into(),
        aud: "cockpit".into(),
        sub: "alice".into(),
        ctx: None,
        claims: claims.clone(),
        prv: "forge".into(),
        lgn: "alice".into(),
        xid: "1001".into(),
        iat: now(),
        exp: now() + 60,
    };
    (signer.sign(&p), format_claims_header(&claims))
}

async fn status(app: Router, req: Request<Body>) -> StatusCode {
    app.oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn signed_mode() {
    let signer = AssertionSigner::from_seed(&[1; 32]);
    let v = IdentityVerifier::Signed(
        AssertionVerifier::from_jwks_json(&signer.public_jwks().to_string(), "cockpit").unwrap(),
    );
    let (tok, claims) = signed(&signer, &["dns.zone.write", "users.alice"]);

    let req = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(
        status(app(v.clone()), req("/me")).await,
        StatusCode::UNAUTHORIZED
    );
    // Plain headers alone are not trusted in signed mode.
    let spoof = Request::get("/me")
        .header(X_HERO_USER, "alice")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        status(app(v.clone()), spoof).await,
        StatusCode::UNAUTHORIZED
    );

    let with = |path: &str| {
        Request::get(path)
            .header(X_HERO_ASSERTION, &tok)
            .header(X_HERO_USER, "alice")
            .header(X_HERO_CLAIMS, &claims)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(status(app(v.clone()), with("/me")).await, StatusCode::OK);
    assert_eq!(status(app(v.clone()), with("/dns")).await, StatusCode::OK);
    assert_eq!(
        status(app(v.clone()), with("/eng")).await,
        StatusCode::FORBIDDEN
    );

    // A plain header that disagrees with the assertion is rejected.
    let mismatch = Request::get("/me")
        .header(X_HERO_ASSERTION, &tok)
        .header(X_HERO_USER, "mallory")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        status(app(v.clone()), mismatch).await,
        StatusCode::UNAUTHORIZED
    );
    // A plain X-Hero-Claims that is no claims list at all: 401 like any disagreement (was a 500).
    for bad in ["a b", "*", "x..y", ",,"] {
        let r = Request::get("/me")
            .header(X_HERO_ASSERTION, &tok)
            .header(X_HERO_CLAIMS, bad)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            status(app(v.clone()), r).await,
            StatusCode::UNAUTHORIZED,
            "{bad}"
        );
    }
    // Two assertions: refused.
    let dup = Request::get("/me")
        .header(X_HERO_ASSERTION, &tok)
        .header(X_HERO_ASSERTION, &tok)
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(app(v), dup).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn dev_mode_is_loopback_only() {
    let v = IdentityVerifier::DevUnsignedLoopback;
    let req_to = |peer: Option<&str>, host: Option<&str>| {
        let mut r = Request::get("/eng")
            .header(X_HERO_USER, "bob")
            .header(X_HERO_CLAIMS, "engineers.bob");
        if let Some(h) = host {
            r = r.header("host", h);
        }
        let mut r = r.body(Body::empty()).unwrap();
        if let Some(p) = peer {
            r.extensions_mut()
                .insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
        }
        r
    };
    let req = |peer: Option<&str>| req_to(peer, Some("localhost:5000"));
    // The Host must be a loopback name too: a page on a domain rebound to 127.0.0.1 reaches the backend over
    // loopback from the developer's browser, with its own domain as the Host.
    for (host, expect) in [
        (Some("localhost"), StatusCode::OK),
        (Some("LOCALHOST:8080"), StatusCode::OK),
        (Some("127.0.0.1:5000"), StatusCode::OK),
        (Some("127.1.2.3"), StatusCode::OK),
        (Some("[::1]:5000"), StatusCode::OK),
        (Some("[::ffff:127.0.0.1]"), StatusCode::OK),
        (Some("rebind.attacker.example"), StatusCode::UNAUTHORIZED),
        (
            Some("rebind.attacker.example:5000"),
            StatusCode::UNAUTHORIZED,
        ),
        (Some("localhost.attacker.example"), StatusCode::UNAUTHORIZED),
        (Some("127.0.0.1.nip.io"), StatusCode::UNAUTHORIZED),
        (Some("[::1"), StatusCode::UNAUTHORIZED),
        (Some("10.0.0.5"), StatusCode::UNAUTHORIZED),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(
            status(app(v.clone()), req_to(Some("127.0.0.1:5000"), host)).await,
            expect,
            "{host:?}"
        );
    }
    // A dual-stack listener's IPv4 loopback peer.
    assert_eq!(
        status(app(v.clone()), req(Some("[::ffff:127.0.0.1]:5000"))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(app(v.clone()), req(Some("127.0.0.1:5000"))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(app(v.clone()), req(Some("[::1]:5000"))).await,
        StatusCode::OK
    );
    assert_eq!(
        status(app(v.clone()), req(Some("10.0.0.5:5000"))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(app(v.clone()), req(None)).await,
        StatusCode::UNAUTHORIZED
    );
    // Unsigned, an unreadable claims header is a malformed identity (401), not the backend's error.
    let r = req_to(Some("127.0.0.1:5000"), Some("localhost"));
    let (mut parts, body) = r.into_parts();
    parts.headers.insert(X_HERO_CLAIMS, "a b".parse().unwrap());
    assert_eq!(
        status(app(v.clone()), Request::from_parts(parts, body)).await,
        StatusCode::UNAUTHORIZED
    );
    // A backend whose transport only the proxy reaches takes the headers as given, whatever the peer and Host.
    let trusted = IdentityVerifier::TrustedTransport;
    assert_eq!(
        status(
            app(trusted.clone()),
            req_to(None, Some("cockpit.example.org"))
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        status(app(trusted), req_to(Some("10.0.0.5:5000"), None)).await,
        StatusCode::OK
    );
}
