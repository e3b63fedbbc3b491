//! The OAuth2/OIDC provider driven over real HTTP with reqwest (cookie store, no automatic
//! redirects), against an in-process server on an OS-assigned port.

// Test helpers outside #[test] fns: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use common::*;
use hero_devforge::oauth::html::hidden_inputs;
use hero_devforge::{app, Config};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PW: &str = "alice-password-1";
const REDIRECT: &str = "http://127.0.0.1/callback";
const SCOPE: &str = "openid profile email groups read:user";

struct Server {
    forge: Forge,
    base: String,
    _task: tokio::task::JoinHandle<()>,
}

async fn serve(mut config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    config.external_url = base.clone();
    let forge = forge_with(config);
    let router = app(forge.state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Server {
        forge,
        base,
        _task: task,
    }
}

async fn server() -> Server {
    serve(Config::new("http://placeholder")).await
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn query_of(location: &str) -> HashMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Registers an app through the API as `owner` (PAT write:user); returns (client_id, secret).
async fn register_app(s: &Server, confidential: bool) -> (String, String) {
    let r = s
        .forge
        .call(
            axum::http::Method::POST,
            "/api/v1/user/applications/oauth2",
            Some(&s.forge.admin()),
            Some(json!({"name": "proxy", "redirect_uris": [REDIRECT], "confidential_client": confidential})),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    assert_matches_definition(&r.json, "OAuth2Application");
    (
        r.json["client_id"].as_str().unwrap().to_string(),
        r.json["client_secret"].as_str().unwrap().to_string(),
    )
}

struct Authz<'a> {
    client_id: &'a str,
    scope: &'a str,
    verifier: &'a str,
    redirect: &'a str,
    nonce: &'a str,
}

fn authorize_url(base: &str, a: &Authz<'_>) -> String {
    let mut u = url::Url::parse(&format!("{base}/login/oauth/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", a.client_id)
        .append_pair("redirect_uri", a.redirect)
        .append_pair("state", "st-123")
        .append_pair("scope", a.scope)
        .append_pair("nonce", a.nonce)
        .append_pair("code_challenge", &s256(a.verifier))
        .append_pair("code_challenge_method", "S256");
    u.to_string()
}

/// Walks authorize → (login form) → (consent) and returns the final redirect's Location.
async fn walk(s: &Server, b: &reqwest::Client, a: &Authz<'_>, user: &str, pw: &str) -> String {
    let url = authorize_url(&s.base, a);
    let mut r = b.get(&url).send().await.unwrap();
    if r.status() == StatusCode::OK {
        let html = r.text().await.unwrap();
        if html.contains("id=\"login\"") {
            let login = b
                .post(&url)
                .form(&[("user_name", user), ("password", pw)])
                .send()
                .await
                .unwrap();
            assert_eq!(login.status(), StatusCode::SEE_OTHER);
            let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
            assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
            r = b.get(&url).send().await.unwrap();
        } else {
            return consent(s, b, &html).await;
        }
    }
    if r.status() == StatusCode::OK {
        let html = r.text().await.unwrap();
        assert!(html.contains("id=\"consent\""), "{html}");
        return consent(s, b, &html).await;
    }
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    r.headers()["location"].to_str().unwrap().to_string()
}

async fn consent(s: &Server, b: &reqwest::Client, html: &str) -> String {
    let mut fields = hidden_inputs(html);
    fields.push(("granted".into(), "true".into()));
    let r = b
        .post(format!("{}/login/oauth/authorize", s.base))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    r.headers()["location"].to_str().unwrap().to_string()
}

async fn exchange(s: &Server, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/login/oauth/access_token", s.base))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

/// Verifies an RS256 JWT against the server's JWKS, by `kid`.
async fn verify_with_jwks(s: &Server, token: &str, client_id: &str) -> Value {
    let jwks: Value = reqwest::get(format!("{}/login/oauth/keys", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid in JWKS");
    let key = jsonwebtoken::DecodingKey::from_rsa_components(
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
    )
    .unwrap();
    let discovery: Value = reqwest::get(format!("{}/.well-known/openid-configuration", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[client_id]);
    v.set_issuer(&[discovery["issuer"].as_str().unwrap()]);
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .unwrap()
        .claims
}

#[tokio::test]
async fn discovery_issuer_trailing_slash_flag() {
    let s = server().await;
    let d: Value = reqwest::get(format!("{}/.well-known/openid-configuration", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], format!("{}/", s.base));
    assert_eq!(
        d["authorization_endpoint"],
        format!("{}/login/oauth/authorize", s.base)
    );
    assert_eq!(
        d["code_challenge_methods_supported"],
        json!(["plain", "S256"])
    );
    assert!(d.get("token_endpoint_auth_methods_supported").is_none());

    let mut cfg = Config::new("http://placeholder");
    cfg.issuer_trailing_slash = false;
    let s2 = serve(cfg).await;
    let d: Value = reqwest::get(format!("{}/.well-known/openid-configuration", s2.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], s2.base);
}

#[tokio::test]
async fn full_code_flow_with_pkce_refresh_rotation_and_verified_id_token() {
    let s = server().await;
    let alice = s
        .forge
        .create_user("alice", PW, json!({"full_name": "Alice A."}))
        .await;
    hero_devforge::cli::add_member(s.forge.dir.path(), "alice", "engineers").unwrap();
    hero_devforge::cli::add_member(s.forge.dir.path(), "alice", "engineers:Owners").unwrap();
    let (client_id, _secret) = register_app(&s, false).await;
    let b = browser();
    let verifier = "v".repeat(43) + "-verifier-with-enough-entropy";
    let a = Authz {
        client_id: &client_id,
        scope: SCOPE,
        verifier: &verifier,
        redirect: "http://127.0.0.1:43210/callback", // loopback port ignored for public clients
        nonce: "n-0S6_WzA2Mj",
    };
    let location = walk(&s, &b, &a, "alice", PW).await;
    assert!(
        location.starts_with("http://127.0.0.1:43210/callback?"),
        "{location}"
    );
    let q = query_of(&location);
    assert_eq!(q["state"], "st-123");
    assert!(q["code"].starts_with("gta_"));
    assert!(!q.contains_key("iss"));

    // Wrong verifier refused (and the code survives it, as in Forgejo).
    let (st, err) = exchange(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("client_id", &client_id),
            ("redirect_uri", a.redirect),
            (
                "code_verifier",
                "wrong-verifier-wrong-verifier-wrong-verifier",
            ),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        err,
        json!({"error": "unauthorized_client", "error_description": "failed PKCE code challenge"})
    );

    let (st, tok) = exchange(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("client_id", &client_id),
            ("redirect_uri", a.redirect),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    assert_eq!(tok["token_type"], "bearer");
    assert_eq!(tok["expires_in"], 3600);
    assert!(tok.get("scope").is_none());
    for k in ["access_token", "refresh_token", "id_token"] {
        assert!(tok[k].as_str().is_some_and(|t| !t.is_empty()), "{k}");
    }

    // Codes are single-use.
    let (st, _) = exchange(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // id_token: signature via JWKS kid, issuer from discovery verbatim, audience, claims.
    let claims = verify_with_jwks(&s, tok["id_token"].as_str().unwrap(), &client_id).await;
    assert_eq!(claims["sub"], alice["id"].as_i64().unwrap().to_string());
    assert_eq!(claims["aud"], json!([client_id]));
    assert_eq!(claims["iss"], format!("{}/", s.base));
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["name"], "Alice A.");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["email"], "alice@example.org");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], json!(["engineers", "engineers:owners"]));
    assert!(claims["iat"].is_i64() && claims["exp"].is_i64());

    // The access token works on the REST API, limited to read:user by the scope string.
    let access = tok["access_token"].as_str().unwrap();
    let api = reqwest::Client::new();
    let me = api
        .get(format!("{}/api/v1/user", s.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.json::<Value>().await.unwrap()["login"], "alice");
    let admin_try = api
        .post(format!("{}/api/v1/admin/users", s.base))
        .bearer_auth(access)
        .json(&json!({"username": "x", "email": "x@example.org", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin_try.status(), StatusCode::FORBIDDEN);

    // Userinfo.
    let ui = api
        .get(format!("{}/login/oauth/userinfo", s.base))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    let ui: Value = ui.json().await.unwrap();
    assert_eq!(ui["sub"], claims["sub"]);
    assert_eq!(ui["preferred_username"], "alice");
    assert_eq!(ui["groups"], json!(["engineers", "engineers:owners"]));
    let bad = api
        .get(format!("{}/login/oauth/userinfo", s.base))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(bad.text().await.unwrap(), "no valid authorization");

    // Refresh rotation: each refresh returns a new refresh token; the old one is refused.
    let r1 = tok["refresh_token"].as_str().unwrap().to_string();
    let (st, t2) = exchange(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    assert!(t2["id_token"].is_string());
    let (st, err) = exchange(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r1),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        err,
        json!({"error": "unauthorized_client", "error_description": "token was already used"})
    );
    let (st, t3) = exchange(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &r2),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{t3}");
    // An access token is not a refresh token.
    let (st, _) = exchange(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", access),
            ("client_id", &client_id),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, err) = exchange(&s, &[("grant_type", "password"), ("client_id", &client_id)]).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "unsupported_grant_type");

    // Public clients see the consent page again, and a different scope string fails.
    let a2 = Authz {
        scope: "openid profile email groups read:user write:issue",
        ..a
    };
    let location = walk(&s, &b, &a2, "alice", PW).await;
    let q = query_of(&location);
    assert_eq!(q["error"], "server_error");
    assert_eq!(
        q["error_description"],
        "a grant exists with different scope"
    );
    assert_eq!(q["state"], "st-123");
    // Same string again works (consent shown again: public client).
    let location = walk(&s, &b, &a, "alice", PW).await;
    assert!(query_of(&location).contains_key("code"));
}

#[tokio::test]
async fn authorize_errors() {
    let s = server().await;
    s.forge.create_user("alice", PW, json!({})).await;
    let (client_id, _) = register_app(&s, false).await;
    let b = browser();

    // Unknown redirect: HTML 400, not a redirect (checked before sign-in).
    let mut u = url::Url::parse(&format!("{}/login/oauth/authorize", s.base)).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", "http://evil.example/cb")
        .append_pair("code_challenge", "abc")
        .append_pair("code_challenge_method", "S256");
    let r = b.get(u.as_str()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // `localhost` is not a loopback IP literal: its port is not ignored.
    let r = b
        .get(u.as_str().replace(
            "http%3A%2F%2Fevil.example%2Fcb",
            "http%3A%2F%2Flocalhost%3A8080%2Fcallback",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Unknown client.
    let r = b
        .get(format!(
            "{}/login/oauth/authorize?client_id=nope&redirect_uri={REDIRECT}",
            s.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Wrong password: form again, no cookie.
    let url = authorize_url(
        &s.base,
        &Authz {
            client_id: &client_id,
            scope: SCOPE,
            verifier: &"x".repeat(50),
            redirect: REDIRECT,
            nonce: "",
        },
    );
    let r = b
        .post(&url)
        .form(&[("user_name", "alice"), ("password", "nope-nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Username or password is incorrect."));

    // PKCE required for public clients.
    let r = b
        .post(&url)
        .form(&[("user_name", "alice"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let no_pkce = format!(
        "{}/login/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={REDIRECT}&state=s1&scope=openid",
        s.base
    );
    let r = b.get(&no_pkce).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(r.headers()["location"].to_str().unwrap());
    assert_eq!(q["error"], "invalid_request");
    assert_eq!(
        q["error_description"],
        "PKCE is required for public clients"
    );
    assert_eq!(q["state"], "s1");
    // Unsupported method.
    let r = b
        .get(format!(
            "{no_pkce}&code_challenge=abc&code_challenge_method=S512"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_of(r.headers()["location"].to_str().unwrap())["error"],
        "invalid_request"
    );
    // Consent without the CSRF token is refused.
    let r = b
        .post(format!("{}/login/oauth/authorize", s.base))
        .form(&[
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("granted", "true"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Denying consent redirects with access_denied.
    let r = b.get(&url).send().await.unwrap();
    let html = r.text().await.unwrap();
    let mut fields = hidden_inputs(&html);
    fields.push(("granted".into(), "false".into()));
    let r = b
        .post(format!("{}/login/oauth/authorize", s.base))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        query_of(r.headers()["location"].to_str().unwrap())["error"],
        "access_denied"
    );
}

#[tokio::test]
async fn must_change_password_user_cannot_sign_in_or_use_oauth_tokens() {
    let s = server().await;
    s.forge
        .create_user("dora", PW, json!({"must_change_password": true}))
        .await;
    let (client_id, _) = register_app(&s, false).await;
    let b = browser();
    let url = authorize_url(
        &s.base,
        &Authz {
            client_id: &client_id,
            scope: SCOPE,
            verifier: &"y".repeat(50),
            redirect: REDIRECT,
            nonce: "",
        },
    );
    let r = b
        .post(&url)
        .form(&[("user_name", "dora"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn confidential_client_consents_once_and_authenticates() {
    let mut cfg = Config::new("http://placeholder");
    cfg.access_token_ttl = 1;
    let s = serve(cfg).await;
    s.forge.create_user("bob", PW, json!({})).await;
    // Registered through the CLI this time.
    let out = s.forge.dir.path().join("app.json");
    let client_id = hero_devforge::cli::add_oauth_app(
        s.forge.dir.path(),
        "cockpit",
        &[REDIRECT.to_string()],
        true,
        &out,
    )
    .unwrap();
    let creds: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(creds["client_id"], client_id);
    let secret = creds["client_secret"].as_str().unwrap().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let b = browser();
    let verifier = "z".repeat(60);
    let a = Authz {
        client_id: &client_id,
        scope: "openid email",
        verifier: &verifier,
        redirect: REDIRECT,
        nonce: "",
    };
    let first = walk(&s, &b, &a, "bob", PW).await;
    let code1 = query_of(&first)["code"].clone();
    // Second authorize: no consent page, a code at once, even with another scope string.
    let a2 = Authz {
        scope: "openid email profile",
        ..a
    };
    let r = b.get(authorize_url(&s.base, &a2)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(query_of(r.headers()["location"].to_str().unwrap()).contains_key("code"));

    // Missing / wrong secret.
    let base_form = [
        ("grant_type", "authorization_code"),
        ("code", code1.as_str()),
        ("client_id", client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let (st, err) = exchange(&s, &base_form).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(err["error_description"], "invalid empty client secret");
    let mut wrong = base_form.to_vec();
    wrong.push(("client_secret", "gto_wrong"));
    let (st, err) = exchange(&s, &wrong).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "unauthorized_client");
    // Secret via Basic.
    let r = reqwest::Client::new()
        .post(format!("{}/login/oauth/access_token", s.base))
        .basic_auth(&client_id, Some(&secret))
        .form(&base_form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let tok: Value = r.json().await.unwrap();
    assert_eq!(tok["expires_in"], 1);
    // Scope without API words gives full access (Forgejo ≥ 9 rule).
    let access = tok["access_token"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/user/applications/oauth2", s.base))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Introspection with client credentials.
    let r = reqwest::Client::new()
        .post(format!("{}/login/oauth/introspect", s.base))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    let intro: Value = r.json().await.unwrap();
    assert_eq!(intro["active"], true);
    assert_eq!(intro["username"], "bob");

    // After expiry (ttl 1 s) the access token is refused; refresh (secret in body) gives a new one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/user", s.base))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "access token never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (st, t2) = exchange(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tok["refresh_token"].as_str().unwrap()),
            ("client_id", &client_id),
            ("client_secret", &secret),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{t2}");
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/user", s.base))
        .bearer_auth(t2["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn concurrent_refresh_with_one_token_has_exactly_one_winner() {
    let s = server().await;
    s.forge.create_user("carl", PW, json!({})).await;
    let (client_id, _) = register_app(&s, false).await;
    let b = browser();
    let verifier = "c".repeat(64);
    let a = Authz {
        client_id: &client_id,
        scope: "openid read:user",
        verifier: &verifier,
        redirect: REDIRECT,
        nonce: "",
    };
    let location = walk(&s, &b, &a, "carl", PW).await;
    let code = query_of(&location)["code"].clone();
    let (st, tok) = exchange(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let refresh = tok["refresh_token"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let base = s.base.clone();
        let form = vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("refresh_token".to_string(), refresh.clone()),
            ("client_id".to_string(), client_id.clone()),
        ];
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/login/oauth/access_token"))
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let st = t.await.unwrap();
        if st == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(st, StatusCode::BAD_REQUEST);
        }
    }
    assert_eq!(ok, 1, "exactly one concurrent refresh may win");
}

#[tokio::test]
async fn plain_pkce_and_refresh_bound_to_its_client() {
    let s = server().await;
    s.forge.create_user("gina", PW, json!({})).await;
    let (client_a, _) = register_app(&s, false).await;
    let (client_b, _) = register_app(&s, false).await;
    let b = browser();
    // `plain` is accepted like in Forgejo (the verifier equals the challenge).
    let verifier = "p".repeat(50);
    let mut u = url::Url::parse(&format!("{}/login/oauth/authorize", s.base)).unwrap();
    u.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_a)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "s")
        .append_pair("scope", "openid")
        .append_pair("code_challenge", &verifier)
        .append_pair("code_challenge_method", "plain");
    let r = b.get(u.as_str()).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("id=\"login\""));
    let r = b
        .post(u.as_str())
        .form(&[("user_name", "gina"), ("password", PW)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = b
        .get(u.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let location = consent(&s, &b, &html).await;
    let code = query_of(&location)["code"].clone();
    // A redirect URI the app does not know is refused at the token endpoint too.
    let (st, err) = exchange(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_a),
            ("redirect_uri", "https://elsewhere.example/cb"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(err["error_description"], "unexpected redirect URI");
    let (st, tok) = exchange(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_a),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{tok}");
    // Another client cannot use this grant's refresh token.
    let (st, err) = exchange(
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tok["refresh_token"].as_str().unwrap()),
            ("client_id", &client_b),
        ],
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");
}
