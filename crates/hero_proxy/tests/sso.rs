//! End-to-end tests of the SSO edge against the real third-party OIDC peer (npm `oidc-provider`, configured like
//! Forgejo), with an upstream that echoes the headers it received.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};

use common::*;
use hero_identity::{AssertionVerifier, IdentityVerifier};
use hero_secrets::SecretStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_injects_a_verifiable_identity() {
    let h = Harness::start().await;
    let cookie = h.login("alice").await;
    // No context until one is set on the user's record; then it applies on the next request.
    assert_eq!(
        h.get_seen("/anything", &cookie).await.one("x-hero-context"),
        None
    );
    let alice = h.proxy.app.store.user_by_name("alice").unwrap().unwrap();
    h.proxy.app.store.set_context(alice.id, Some(42)).unwrap();
    h.proxy.app.sessions.bump_generation();
    let seen = h.get_seen("/anything?x=1", &cookie).await;
    assert_eq!(seen.one("x-hero-user"), Some("alice"));
    assert_eq!(seen.one("x-hero-provider"), Some("forge"));
    assert_eq!(seen.one("x-hero-external-id"), Some("1001"));
    assert_eq!(seen.one("x-hero-context"), Some("42"));
    assert_eq!(seen.one("x-hero-claims"), Some("users.alice"));
    assert!(
        seen.one("x-hero-forge-token").is_none(),
        "no token pass-through unless the route opts in"
    );
    // The session cookie never reaches the upstream.
    assert!(seen
        .all("cookie")
        .iter()
        .all(|c| !c.contains("hero_session")));

    // A backend verifies the assertion with the key the proxy publishes.
    let jwks = reqwest::get(format!("{}/.well-known/hero-proxy-key", h.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Made for the route `*/` (the default id of the `/` route), and for no other.
    let elsewhere = AssertionVerifier::from_jwks_json(&jwks, "*/tok").unwrap();
    assert_eq!(
        elsewhere.verify(seen.one("x-hero-assertion").unwrap(), h.clock_now()),
        Err(hero_identity::IdentityError::WrongAudience)
    );
    let v = IdentityVerifier::Signed(AssertionVerifier::from_jwks_json(&jwks, "*/").unwrap());
    let mut hm = http::HeaderMap::new();
    for (k, val) in &seen.0 {
        hm.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            val.parse().unwrap(),
        );
    }
    let id = v.verify_headers(&hm, None, h.clock_now()).unwrap();
    assert_eq!(
        (id.user.as_str(), id.external_id.as_str()),
        ("alice", "1001")
    );

    // Token pass-through on the opted-in route.
    let seen = h.get_seen("/tok", &cookie).await;
    let tok = seen
        .one("x-hero-forge-token")
        .expect("token passed through");
    assert!(!tok.is_empty());
}

trait ClockNow {
    fn clock_now(&self) -> u64;
}
impl ClockNow for Harness {
    fn clock_now(&self) -> u64 {
        use hero_proxy::Clock;
        self.clock.now()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let h = Harness::start().await;
    let cookie = h.login("bob").await;
    // Raw HTTP so header spelling, duplicates and underscores go out exactly as written.
    let raw = |extra: &str, with_cookie: bool, path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", h.port)).unwrap();
        let c = if with_cookie {
            format!("Cookie: {cookie}\r\n")
        } else {
            String::new()
        };
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\n{c}{extra}Connection: close\r\n\r\n",
            h.port
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let spoof = "X-Hero-User: admin\r\nx-hero-user: root\r\nX_Hero_User: mallory\r\nX-HERO-CLAIMS: admin,groups.admin\r\n\
                 X-Hero-Claims: dns.zone.write\r\nX-Hero-Assertion: forged\r\nX-Hero-Forge-Token: stolen\r\n\
                 X_HERO_EXTERNAL_ID: 1\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-User: admin\r\n";
    let hidden = "Connection: keep-alive, X-Hero-Context, X-Custom-Hop\r\nX-Hero-Context: evil\r\nX-Custom-Hop: 1\r\n";
    let check = |resp: String, signed_in: bool| {
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body = body.trim();
        // The echo body may be chunked or not; find the JSON object.
        let start = body.find('{').unwrap();
        let end = body.rfind('}').unwrap();
        let v: serde_json::Value = serde_json::from_str(&body[start..=end]).unwrap();
        let seen = Seen(serde_json::from_value(v["headers"].clone()).unwrap());
        for (k, val) in &seen.0 {
            let n = k.to_ascii_lowercase().replace('_', "-");
            if n.starts_with("x-hero-") {
                assert!(signed_in, "unauthenticated request leaked {k}");
                assert!(
                    !["admin", "root", "mallory", "forged", "stolen", "evil", "1"]
                        .contains(&val.as_str()),
                    "spoofed {k}: {val}"
                );
            }
            assert!(!n.starts_with("x-forwarded-user"), "{k}");
            assert_ne!(n, "x-custom-hop", "Connection-listed header forwarded");
        }
        if signed_in {
            assert_eq!(seen.one("x-hero-user"), Some("bob"));
            assert_eq!(seen.one("x-hero-claims"), Some("users.bob"));
            assert_eq!(seen.one("x-hero-external-id"), Some("1002"));
            assert_eq!(seen.one("x-hero-context"), None, "bob has no context set");
            assert!(seen.one("x-hero-forge-token").is_none());
        }
        assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.1"));
    };
    check(raw(spoof, true, "/"), true);
    check(raw(hidden, true, "/"), true);
    check(raw(spoof, false, "/public/x"), false);
    check(raw(hidden, false, "/public/x"), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_sent_to_sign_in() {
    let h = Harness::start().await;
    let r = Harness::client()
        .get(format!("{}/dash?a=1", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/oauth/login?rd=%2Fdash%3Fa%3D1");
    let r = Harness::client()
        .post(format!("{}/dash", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = Harness::client()
        .get(format!("{}/dash", h.base))
        .header("cookie", "__Host-hero_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    // Public routes pass without a session.
    assert_eq!(
        Harness::client()
            .get(format!("{}/public", h.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_attributes_and_return_to() {
    let h = Harness::start().await;
    let (auth, lc) = h.begin_login("/deep/page?q=1", "alice").await;
    // PKCE S256 and the constant scope are on the authorize request.
    let q = query(&auth);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["scope"], hero_proxy::oidc::FORGE_SCOPE);
    assert_eq!(q["redirect_uri"], format!("{}/oauth/callback", h.base));
    let cb = h.walk_peer(&auth).await;
    let r = h.callback(&cb, &lc).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/deep/page?q=1");
    let sc = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-hero_session="))
        .unwrap();
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(sc.split("; ").any(|a| a == attr), "{attr} missing in {sc}");
    }
    assert!(!sc.to_ascii_lowercase().contains("domain="));
    let id = sc
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("__Host-hero_session=");
    assert!(id.len() >= 43, "session id must be long and random");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirect_attempts_land_on_root() {
    let h = Harness::start().await;
    for rd in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:/evil",
    ] {
        let (auth, lc) = h.begin_login(rd, "alice").await;
        let cb = h.walk_peer(&auth).await;
        let r = h.callback(&cb, &lc).await;
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/", "rd={rd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_single_use_bound_to_the_browser_and_expires() {
    let h = Harness::start().await;
    let (auth, lc) = h.begin_login("/", "alice").await;
    let cb = h.walk_peer(&auth).await;
    // Wrong browser (another or no login cookie): refused, without burning the sign-in of the right browser.
    // Another browser's login cookie holds a real, sealed sign-in of its own: not this one.
    let (_, other_browser) = h.begin_login("/", "alice").await;
    // The cookie's sealed entry with a byte changed: it no longer opens.
    let tampered = {
        let (name, value) = lc.split_once('=').unwrap();
        let mut v = value.as_bytes().to_vec();
        v[16] = if v[16] == b'A' { b'B' } else { b'A' };
        format!("{name}={}", String::from_utf8(v).unwrap())
    };
    for wrong in [
        "__Host-hero_login=other",
        "",
        "a=b",
        other_browser.as_str(),
        tampered.as_str(),
    ] {
        let r = h.callback(&cb, wrong).await;
        assert_eq!(r.status(), 400, "{wrong:?}");
    }
    assert_eq!(
        h.callback(&cb, &lc).await.status(),
        303,
        "the starting browser still signs in"
    );
    let r = h.callback(&cb, &lc).await;
    assert_eq!(r.status(), 400, "replayed state must fail");

    let (auth, lc) = h.begin_login("/", "alice").await;
    let cb = h.walk_peer(&auth).await;
    assert_eq!(h.callback(&cb, &lc).await.status(), 303);
    let r = h.callback(&cb, &lc).await;
    assert_eq!(r.status(), 400, "replay after success must fail");
    assert!(r.text().await.unwrap().contains("already used"));

    let (auth, lc) = h.begin_login("/", "alice").await;
    let cb = h.walk_peer(&auth).await;
    h.clock.advance(601);
    let r = h.callback(&cb, &lc).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("expired"));

    // A forged state never issued.
    let forged = cb.replace(&query(&cb)["state"], "forged-state");
    assert_eq!(
        h.callback(&forged, "__Host-hero_login=forged-state")
            .await
            .status(),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkce_is_enforced_by_the_peer() {
    // Against the peer only (Forgejo accepts a wrong verifier on its consent path; see forgejo-api.md §2.1).
    let h = Harness::start().await;
    let (auth, _lc) = h.begin_login("/", "alice").await;
    let cb = h.walk_peer(&auth).await;
    let code = query(&cb)["code"].clone();
    let r = reqwest::Client::new()
        .post(format!("{}/login/oauth/access_token", h.peer.issuer))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &format!("{}/oauth/callback", h.base)),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            (
                "code_verifier",
                "wrong-verifier-wrong-verifier-wrong-verifier-000",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // And an authorize request without a challenge is refused by the peer.
    let mut u = url::Url::parse(&auth).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    let r = Harness::client().get(u.as_str()).send().await.unwrap();
    let loc = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        loc.contains("error=invalid_request") || r.status() == 400,
        "{} {loc}",
        r.status()
    );
}

/// `n` GETs of `path` with `cookie`, all at once; their statuses.
async fn gets_at_once(h: &Harness, path: &str, cookie: &str, n: usize) -> Vec<reqwest::StatusCode> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (url, c) = (format!("{}{path}", h.base), cookie.to_owned());
            tokio::spawn(async move {
                Harness::client()
                    .get(url)
                    .header("cookie", c)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_is_single_flight_and_rotates() {
    let h = Harness::start().await;
    let cookie = h.login("alice").await;
    let app = h.proxy.app.clone();
    assert_eq!(app.vault.refresh_count(), 0);
    // 59 minutes later the token is inside the 60 s leeway: 50 concurrent requests cause exactly one refresh.
    h.clock.advance(3600 - 59);
    for status in gets_at_once(&h, "/tok", &cookie, 50).await {
        assert_eq!(status, 200);
    }
    assert_eq!(app.vault.refresh_count(), 1);
    assert_eq!(h.peer.stats().await["refresh"], 1);
    // Rotation: the next refresh uses the new refresh token (the peer rejects reuse of the old one).
    h.clock.advance(3600);
    assert_eq!(h.get("/tok", &cookie).await.status(), 200);
    assert_eq!(app.vault.refresh_count(), 2);
    assert_eq!(h.peer.stats().await["refresh"], 2);
}

/// An outage at the identity provider (its token endpoint answering 503): one refresh attempt per pause, not one
/// per click, and every click still answered with the token the user has. Before, each request queued on the
/// identity's lock repeated the failed refresh in turn (each up to the client's 15 s timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_provider_outage_costs_one_refresh_attempt_per_pause() {
    use hero_proxy::vault::REFRESH_RETRY_SECS;
    let h = Harness::start().await;
    let cookie = h.login("alice").await;
    let app = h.proxy.app.clone();
    h.clock.advance(3600 - 59);
    h.peer.outage(true).await;
    for status in gets_at_once(&h, "/tok", &cookie, 20).await {
        assert_eq!(status, 200);
    }
    let refused = |v: serde_json::Value| v["outage_refused"].as_u64().unwrap();
    assert_eq!(
        refused(h.peer.stats().await),
        1,
        "one attempt for 20 requests"
    );
    h.clock.advance(REFRESH_RETRY_SECS - 1);
    assert_eq!(h.get("/tok", &cookie).await.status(), 200);
    assert_eq!(refused(h.peer.stats().await), 1, "still in the pause");
    h.clock.advance(1);
    assert_eq!(h.get("/tok", &cookie).await.status(), 200);
    assert_eq!(refused(h.peer.stats().await), 2, "the pause is over");
    h.peer.outage(false).await;
    h.clock.advance(REFRESH_RETRY_SECS);
    assert_eq!(h.get("/tok", &cookie).await.status(), 200);
    assert_eq!(
        app.vault.refresh_count(),
        1,
        "refreshed once the provider is back"
    );
    assert_eq!(h.peer.stats().await["refresh"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refresh_ends_the_session() {
    let h = Harness::start().await;
    let cookie = h.login("alice").await;
    let slot = hero_proxy::vault::token_slot("forge", "1001", "refresh_token");
    h.secrets
        .set(&slot, "revoked-by-the-provider")
        .await
        .unwrap();
    h.clock.advance(3600);
    let r = h.get("/x", &cookie).await;
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/oauth/login"));
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("__Host-hero_session=;")));
    // The session is gone even if the token were fine again.
    assert_eq!(h.get("/x", &cookie).await.status(), 302);
}

/// A public route too learns of a refused refresh (the grant revoked, the account deleted) and stops naming that
/// person to its backend. Before, only routes that required a session or passed the token checked, so a public
/// route kept sending `X-Hero-User` until the session's idle or absolute timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_ends_the_identity_on_public_routes_too() {
    let h = Harness::start().await;
    let cookie = h.login("alice").await;
    let seen = h.get_seen("/public", &cookie).await;
    assert_eq!(seen.one("x-hero-user"), Some("alice"));
    let slot = hero_proxy::vault::token_slot("forge", "1001", "refresh_token");
    h.secrets
        .set(&slot, "revoked-by-the-provider")
        .await
        .unwrap();
    h.clock.advance(3600);
    let seen = h.get_seen("/public", &cookie).await;
    assert_eq!(seen.one("x-hero-user"), None, "{:?}", seen.0);
    assert_eq!(seen.one("x-hero-identity"), None);
    assert_eq!(
        h.get("/x", &cookie).await.status(),
        302,
        "the session ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_live_in_slots_keyed_by_provider_and_hashed_sub() {
    let h = Harness::start().await;
    let _ = h.login("alice").await;
    let slots = h.secrets.list("hero_proxy/tokens/").await.unwrap();
    let hash = hero_proxy::vault::identity_hash("1001");
    assert_eq!(hash.len(), 16);
    let mut want = vec![
        format!("hero_proxy/tokens/forge/{hash}/access_token"),
        format!("hero_proxy/tokens/forge/{hash}/refresh_token"),
    ];
    want.sort();
    let mut got = slots.clone();
    got.sort();
    assert_eq!(got, want);
    assert!(slots
        .iter()
        .all(|s| !s.contains("alice") && !s.contains("1001")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_allowlist_applies_on_the_next_request_and_revokes() {
    let h = Harness::start().await;
    let cookie = h.login("alice").await;
    let r = h.get("/admin", &cookie).await;
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("<strong>alice</strong>"),
        "denial names the account"
    );
    h.secrets
        .set("deployer/ADMIN_FORGE_USERS", "bob, Alice")
        .await
        .unwrap();
    assert_eq!(h.get("/admin", &cookie).await.status(), 200);
    h.secrets
        .set("deployer/ADMIN_FORGE_USERS", "bob")
        .await
        .unwrap();
    assert_eq!(h.get("/admin", &cookie).await.status(), 403);
    // Removal revoked the admin session: the user must sign in again.
    assert_eq!(h.get("/x", &cookie).await.status(), 302);

    // The periodic sweep revokes without any request to an admin route.
    let cookie = h.login("alice").await;
    h.secrets
        .set("deployer/ADMIN_FORGE_USERS", "alice")
        .await
        .unwrap();
    assert_eq!(h.get("/admin", &cookie).await.status(), 200);
    h.secrets
        .delete("deployer/ADMIN_FORGE_USERS")
        .await
        .unwrap();
    assert_eq!(h.proxy.app.sweep_admin_sessions().await.unwrap(), 1);
    assert_eq!(h.get("/x", &cookie).await.status(), 302);

    // groups.admin (is_admin) also grants admin.
    let cookie = h.login("alice").await;
    let alice = h.proxy.app.store.user_by_name("alice").unwrap().unwrap();
    h.proxy.app.store.set_admin(alice.id, true).unwrap();
    h.proxy.app.sessions.bump_generation();
    assert_eq!(h.get("/admin", &cookie).await.status(), 200);
    let seen = h.get_seen("/x", &cookie).await;
    assert_eq!(
        seen.one("x-hero-claims"),
        Some("admin,groups.admin,users.alice")
    );
}

/// Taken off a Forge team, a signed-in person loses what the team's mapped group opened at the next token
/// refresh (within the access token's hour) — the very request that refreshes already goes by the new groups.
/// (Joining a team arrives the same way; one refresh is all this test can make, as the peer signs with the real
/// clock and the proxy's is advanced by hand.) Before, groups were read only at sign-in, so the session kept the team's
/// `claim:` routes for up to its absolute timeout (7 days).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forge_team_changes_reach_the_claims_at_the_next_refresh() {
    let h = Harness::start_with(Opts {
        extra_toml: "[group_map]\n\"org1:owners\" = [\"owners\"]\n\"org1\" = [\"org1-members\"]\n"
            .into(),
        ..Opts::default()
    })
    .await;
    let store = &h.proxy.app.store;
    store.create_group("owners").unwrap();
    store.create_role("dns-admin").unwrap();
    store.add_role_claim("dns-admin", "dns.zone.write").unwrap();
    store.grant_role("owners", "dns-admin").unwrap();
    let alice = h.login("alice").await; // groups org1, org1:owners
    assert_eq!(h.get("/dns/zones", &alice).await.status(), 200);

    h.peer.set_groups("1001", &["org1"]).await;
    assert_eq!(
        h.get("/dns/zones", &alice).await.status(),
        200,
        "until the refresh"
    );
    h.clock.advance(3600);
    assert_eq!(
        h.get("/dns/zones", &alice).await.status(),
        403,
        "off the team"
    );
    let seen = h.get_seen("/x", &alice).await;
    assert_eq!(
        seen.one("x-hero-claims"),
        Some("groups.org1-members,users.alice")
    );

    assert_eq!(h.proxy.app.vault.refresh_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_mapped_forge_groups_and_roles() {
    let h = Harness::start_with(Opts {
        extra_toml: "[group_map]\n\"org1:owners\" = [\"owners\"]\n\"org1\" = [\"org1-members\"]\n"
            .into(),
        ..Opts::default()
    })
    .await;
    let store = &h.proxy.app.store;
    store.create_group("owners").unwrap();
    store.create_role("dns-admin").unwrap();
    store.add_role_claim("dns-admin", "dns.zone.write").unwrap();
    store.grant_role("owners", "dns-admin").unwrap();
    let alice = h.login("alice").await; // groups org1, org1:owners
    let bob = h.login("bob").await; // groups org1
    assert_eq!(h.get("/dns/zones", &alice).await.status(), 200);
    assert_eq!(h.get("/dns/zones", &bob).await.status(), 403);
    let seen = h.get_seen("/x", &alice).await;
    assert_eq!(
        seen.one("x-hero-claims"),
        Some("dns.zone.write,groups.org1-members,groups.owners,users.alice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_is_a_same_site_post() {
    let h = Harness::start().await;
    let cookie = h.login("alice").await;
    let url = format!("{}/oauth/logout", h.base);
    let r = Harness::client()
        .get(&url)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("method=\"post\""));
    assert_eq!(
        h.get("/x", &cookie).await.status(),
        200,
        "a GET signs nobody out"
    );
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ] {
        let r = Harness::client()
            .post(&url)
            .header("cookie", &cookie)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        assert_eq!(h.get("/x", &cookie).await.status(), 200, "{name}: {value}");
    }
    assert_eq!(h.sign_out(&cookie).await.status(), 200);
    assert_eq!(h.get("/x", &cookie).await.status(), 302, "signed out");
}

/// Signing out of the last session forgets the person's Forge tokens; signing out of one of two devices keeps
/// them for the other. Before, the refresh token stayed in the vault after every sign-out, valid at Forge for
/// as long as the grant lived and held for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_of_the_last_session_forgets_the_tokens() {
    let h = Harness::start().await;
    let laptop = h.login("alice").await;
    let phone = h.login("alice").await;
    let slot = |kind| hero_proxy::vault::token_slot("forge", "1001", kind);
    let held = || async {
        (
            h.secrets
                .get(&slot("access_token"))
                .await
                .unwrap()
                .is_some(),
            h.secrets
                .get(&slot("refresh_token"))
                .await
                .unwrap()
                .is_some(),
        )
    };
    assert_eq!(held().await, (true, true));
    assert_eq!(h.sign_out(&laptop).await.status(), 200);
    assert_eq!(h.get("/x", &laptop).await.status(), 302);
    assert_eq!(
        h.get("/tok", &phone).await.status(),
        200,
        "the phone stays signed in"
    );
    assert_eq!(held().await, (true, true), "kept for the phone");
    assert_eq!(h.sign_out(&phone).await.status(), 200);
    assert_eq!(
        held().await,
        (false, false),
        "forgotten with the last session"
    );
    // Signing in again stores fresh ones.
    let again = h.login("alice").await;
    assert_eq!(h.get("/tok", &again).await.status(), 200);
    assert_eq!(held().await, (true, true));
}

/// Sessions nobody comes back to are swept (with the tokens of whoever has none left), and a new sign-in in a
/// browser ends the session its old cookie named. Before, a session row lived until its own cookie came back,
/// so the table, the cache and the vault grew for as long as the proxy ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_and_replaced_sessions_are_ended() {
    let h = Harness::start().await;
    let app = h.proxy.app.clone();
    let store = &app.store;
    let first = h.login("alice").await;
    // Signing in again from the same browser (its cookie sent along) replaces the session instead of adding one.
    let (authorize, login_cookie) = h.begin_login("/", "alice").await;
    let callback = h.walk_peer(&authorize).await;
    let r = Harness::client()
        .get(&callback)
        .header("cookie", format!("{login_cookie}; {first}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let second = session_pair(&r).unwrap();
    assert_eq!(
        h.get("/x", &first).await.status(),
        302,
        "the replaced session ended"
    );
    assert_eq!(h.get("/x", &second).await.status(), 200);
    let alice = store.user_by_external("forge", "1001").unwrap().unwrap();
    assert_eq!(store.count_user_sessions(alice.id).unwrap(), 1);

    let bob = h.login("bob").await;
    let bob_user = store.user_by_external("forge", "1002").unwrap().unwrap();
    let slots = || async { h.secrets.list("hero_proxy/tokens/").await.unwrap().len() };
    assert_eq!(slots().await, 4);
    // Bob keeps using his; alice's is abandoned, and the idle timeout (8 h) passes for her.
    for _ in 0..9 {
        h.clock.advance(3600);
        assert_eq!(h.get("/x", &bob).await.status(), 200);
    }
    assert_eq!(app.sweep_sessions().await.unwrap(), 1);
    assert_eq!(store.count_user_sessions(alice.id).unwrap(), 0);
    assert_eq!(store.count_user_sessions(bob_user.id).unwrap(), 1);
    assert_eq!(
        slots().await,
        2,
        "alice's tokens went with her last session"
    );
    assert_eq!(app.sweep_sessions().await.unwrap(), 0);
    assert_eq!(h.get("/x", &second).await.status(), 302);
}

/// Two tabs opened while signed out each start a sign-in in the same browser; both finish, each back on its own
/// page, and a used state stays used. Before, the second tab's login cookie replaced the first's, so the first
/// tab failed with "started in another browser".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_signing_in_at_once_both_finish() {
    let h = Harness::start().await;
    let (first_authorize, cookie) = h.begin_login("/first", "alice").await;
    let r = Harness::client()
        .get(format!(
            "{}/oauth/login?rd=%2Fsecond&login_hint=alice",
            h.base
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let second_authorize = r.headers()["location"].to_str().unwrap().to_owned();
    let login_cookie = |r: &reqwest::Response| {
        set_cookies(r)
            .into_iter()
            .find(|c| c.starts_with("__Host-hero_login="))
            .unwrap()
    };
    let both = login_cookie(&r).split(';').next().unwrap().to_owned();

    let first_callback = h.walk_peer(&first_authorize).await;
    let second_callback = h.walk_peer(&second_authorize).await;
    let r = h.callback(&first_callback, &both).await;
    assert_eq!(r.status(), 303, "the first tab finishes");
    assert_eq!(r.headers()["location"], "/first");
    let left = login_cookie(&r).split(';').next().unwrap().to_owned();
    assert!(login_cookie(&r).contains("Max-Age=600"), "{left}");
    let r = h.callback(&first_callback, &both).await;
    assert_eq!(r.status(), 400, "a used state stays used");
    let r = h.callback(&second_callback, &left).await;
    assert_eq!(r.status(), 303, "the second tab finishes");
    assert_eq!(r.headers()["location"], "/second");
    assert!(
        login_cookie(&r).contains("Max-Age=0"),
        "the cookie goes with its last state"
    );
    let session = session_pair(&r).unwrap();
    assert_eq!(h.get("/x", &session).await.status(), 200);
}

/// `owner` routes: the Forge login in `cockpit/FORGE_OWNER` or an admin; read on every request; no
/// owner stored = admins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_policy_admits_the_owner_and_admins_only() {
    let h = Harness::start_with(Opts {
        extra_toml: "[[routes]]\npath = \"/mine\"\nupstream = \"$UPSTREAM\"\npolicy = \"owner\"\n"
            .into(),
        ..Opts::default()
    })
    .await;
    let alice = h.login("alice").await;
    let bob = h.login("bob").await;
    // No owner stored: nobody but admins.
    assert_eq!(h.get("/mine", &alice).await.status(), 403);
    h.secrets.set("cockpit/FORGE_OWNER", "Alice").await.unwrap();
    assert_eq!(h.get("/mine", &alice).await.status(), 200);
    let r = h.get("/mine", &bob).await;
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("<strong>bob</strong>") && page.contains("this machine"));
    // A changed owner applies on the next request.
    h.secrets.set("cockpit/FORGE_OWNER", "bob").await.unwrap();
    assert_eq!(h.get("/mine", &alice).await.status(), 403);
    assert_eq!(h.get("/mine", &bob).await.status(), 200);
    // An admin passes whoever owns the machine.
    h.secrets
        .set("deployer/ADMIN_FORGE_USERS", "carol\nalice")
        .await
        .unwrap();
    assert_eq!(h.get("/mine", &alice).await.status(), 200);
    // Without a session: sent to sign in, never to the upstream.
    assert_eq!(h.get("/mine", "").await.status(), 302);
}

/// The scope in the authorize URL is the browser's to edit. Without `profile`, the id_token carries no
/// `preferred_username`; the sign-in is refused rather than naming the account by its `sub` (a number), which would
/// put account ids among the login names the owner and admin checks compare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_without_a_login_name_is_refused() {
    let h = Harness::start().await;
    for scope in ["openid", "openid email", "openid email groups read:user"] {
        let (auth, lc) = h.begin_login("/", "alice").await;
        let mut u = url::Url::parse(&auth).unwrap();
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "scope" {
                    scope.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        let cb = h.walk_peer(u.as_str()).await;
        let r = h.callback(&cb, &lc).await;
        assert_eq!(r.status(), 400, "scope {scope:?}");
        assert!(session_pair(&r).is_none(), "scope {scope:?}: no session");
    }
    // The unedited sign-in works, and names alice.
    let cookie = h.login("alice").await;
    let seen = h.get_seen("/", &cookie).await;
    assert_eq!(seen.one("x-hero-user"), Some("alice"));
}

/// An `owner` route with token pass-through: its backend is the owner's machine, so it gets the owner's own Forge
/// token and never an admin's. An admin admitted there to help would otherwise hand the owner a token that acts as
/// the admin on Forge (found by a black-box attack on the demo's VM, whose cockpit route is exactly this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_route_passes_the_owners_token_and_never_an_admins() {
    let h = Harness::start_with(Opts {
        extra_toml:
            "[[routes]]\npath = \"/mine\"\nupstream = \"$UPSTREAM\"\npolicy = \"owner\"\npass_token = true\n"
                .into(),
        ..Opts::default()
    })
    .await;
    h.secrets.set("cockpit/FORGE_OWNER", "alice").await.unwrap();
    h.secrets
        .set("deployer/ADMIN_FORGE_USERS", "bob")
        .await
        .unwrap();
    let alice = h.login("alice").await;
    let bob = h.login("bob").await;
    let owner = h.get_seen("/mine", &alice).await;
    assert!(owner
        .one("x-hero-forge-token")
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(owner.one("x-hero-user"), Some("alice"));
    let admin = h.get_seen("/mine", &bob).await;
    assert_eq!(
        admin.one("x-hero-user"),
        Some("bob"),
        "the admin is admitted"
    );
    assert!(
        admin.one("x-hero-forge-token").is_none(),
        "but not their token"
    );
    // The owner changes to bob: now bob's token goes there, and alice (no admin) is refused.
    h.secrets.set("cockpit/FORGE_OWNER", "bob").await.unwrap();
    let now_owner = h.get_seen("/mine", &bob).await;
    assert!(now_owner.one("x-hero-forge-token").is_some());
    assert_eq!(h.get("/mine", &alice).await.status(), 403);
}

/// An edge on someone's own machine (`keep_tokens = "owner"`) keeps only the owner's Forge tokens. Before, every
/// admin who opened a tester's VM left a refresh token in the VM's vault, beside its master key, where the tester
/// (root on the VM) could read it and act as that admin on Forge. Now the admin is admitted but leaves nothing,
/// is sent to sign in again when their access token would have expired, and never gets a token passed; the
/// owner's tokens are kept and refreshed as before. A change of config is enough: an admin's tokens kept by an
/// earlier sign-in are deleted at their next one.
#[tokio::test]
async fn an_edge_on_an_owners_machine_keeps_only_the_owners_tokens() {
    let mine = "[[routes]]\npath = \"/mine\"\nupstream = \"$UPSTREAM\"\npolicy = \"owner\"\npass_token = true\n";
    let h = Harness::start_with(Opts {
        settings: "keep_tokens = \"owner\"\n".into(),
        extra_toml: mine.into(),
        ..Opts::default()
    })
    .await;
    h.secrets.set("cockpit/FORGE_OWNER", "alice").await.unwrap();
    h.secrets
        .set("deployer/ADMIN_FORGE_USERS", "bob")
        .await
        .unwrap();
    let vault = || async { h.secrets.list("hero_proxy/tokens/").await.unwrap() };
    let alice = h.login("alice").await;
    let owners = vault().await;
    assert_eq!(
        owners.len(),
        2,
        "the owner's access and refresh token: {owners:?}"
    );
    h.login("bob").await;
    assert_eq!(vault().await, owners, "the admin left no token behind");
    // Tokens an earlier sign-in kept (under `everyone`) go at the next sign-in.
    let bob_id = h
        .proxy
        .app
        .store
        .user_by_name("bob")
        .unwrap()
        .unwrap()
        .external_id;
    let earlier = hero_proxy::oidc::Tokens {
        access_token: "kept-before".to_owned().into(),
        refresh_token: Some("kept-before".to_owned().into()),
        id_token: None,
        expires_in: 3600,
    };
    let now = hero_proxy::Clock::now(h.clock.as_ref());
    h.proxy
        .app
        .vault
        .put("forge", &bob_id, &earlier, now)
        .await
        .unwrap();
    assert_eq!(vault().await.len(), 4);
    let bob = h.login("bob").await;
    assert_eq!(
        vault().await,
        owners,
        "the earlier sign-in's tokens are deleted"
    );
    // A visitor who is neither (a plain sign-in) leaves none either.
    let _carol = h.login("carol").await;
    assert_eq!(vault().await, owners);

    let admin = h.get_seen("/mine", &bob).await;
    assert_eq!(
        admin.one("x-hero-user"),
        Some("bob"),
        "the admin is admitted"
    );
    assert!(admin.one("x-hero-forge-token").is_none());
    let owner = h.get_seen("/mine", &alice).await;
    assert!(owner
        .one("x-hero-forge-token")
        .is_some_and(|t| !t.is_empty()));

    // When the access tokens would expire: the owner's is refreshed, the admin signs in again.
    h.clock.advance(3600 - 59);
    let r = h.get("/mine", &bob).await;
    assert_eq!(r.status(), 302, "the admin is asked to sign in again");
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/oauth/login"));
    assert_eq!(h.get("/mine", &alice).await.status(), 200);
    assert_eq!(h.proxy.app.vault.refresh_count(), 1);
    assert_eq!(h.peer.stats().await["refresh"], 1, "only the owner's");
    assert_eq!(vault().await.len(), 2);
}

/// The same edge under the default (`keep_tokens = "everyone"`, the dashboard's): every signed-in person's tokens
/// are kept, so the test above shows a difference the setting makes, not one the peer makes.
#[tokio::test]
async fn an_edge_the_team_runs_keeps_everyones_tokens() {
    let h = Harness::start().await;
    h.secrets.set("cockpit/FORGE_OWNER", "alice").await.unwrap();
    h.login("alice").await;
    h.login("bob").await;
    assert_eq!(h.secrets.list("hero_proxy/tokens/").await.unwrap().len(), 4);
}
