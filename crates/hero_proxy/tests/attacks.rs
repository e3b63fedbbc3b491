//! hero_proxy as an attacker meets it: the real binary in front of real peers (Debian nginx as a normalising
//! backend, Debian hypercorn as an h2c-capable one), every request written as raw bytes so nothing on the way
//! normalises it. Each class is one table of equivalent or hostile forms.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

/// nginx locations that say which area a request reached and the target nginx received.
const AREAS: &str = r#"
    location ~ ^/admin(/|$) { return 200 "ADMIN-AREA $request_uri\n"; }
    location ~ ^/dns(/|$) { return 200 "DNS-AREA $request_uri\n"; }
    location / { return 200 "open $request_uri\n"; }
"#;

fn routes(up: u16) -> String {
    format!(
        r#"
[[routes]]
path = "/"
upstream = "http://127.0.0.1:{up}"
policy = "public"
[[routes]]
path = "/admin"
upstream = "http://127.0.0.1:{up}"
policy = "admin"
[[routes]]
path = "/dns"
upstream = "http://127.0.0.1:{up}"
policy = "claim:dns.zone.write"
"#
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Same spelling as the protected area: the protected route's policy applies.
    Protected,
    /// Ambiguous: refused with 400 before any route is chosen.
    Refused,
}

/// Spellings of `/{p}/secret` (`{p}` = a protected prefix) and hostile neighbours.
const PATH_FAMILY: &[(&str, Want)] = &[
    ("/{p}/secret", Want::Protected),
    ("/public/../{p}/secret", Want::Protected),
    ("/public/%2e%2e/{p}/secret", Want::Protected),
    ("/public/%2E%2E/{p}/secret", Want::Protected),
    ("/public/.%2e/{p}/secret", Want::Protected),
    ("/public/x/../../{p}/secret", Want::Protected),
    ("/./{p}/secret", Want::Protected),
    ("/%2e/{p}/secret", Want::Protected),
    ("//{p}/secret", Want::Protected),
    ("///{p}//secret", Want::Protected),
    ("/{p}/./secret", Want::Protected),
    ("/{p}/x/../secret", Want::Protected),
    ("/%{hex1}{rest}/secret", Want::Protected),
    ("/{p}", Want::Protected),
    ("/{p}/", Want::Protected),
    ("/{p}%2Fsecret", Want::Refused),
    ("/{p}%2fsecret", Want::Refused),
    ("/public%2F..%2F{p}/secret", Want::Refused),
    ("/public/..%2F{p}/secret", Want::Refused),
    ("/public/..%5C{p}/secret", Want::Refused),
    ("/public\\..\\{p}\\secret", Want::Refused),
    ("/public/..;/{p}/secret", Want::Refused),
    ("/../{p}/secret", Want::Refused),
    ("/public/../../{p}/secret", Want::Refused),
    ("/{p}%00/secret", Want::Refused),
    ("/{p}%zz/secret", Want::Refused),
    // What servlet containers (`;` parameters) and case-insensitive servers read as the protected prefix.
    ("/{p};x/secret", Want::Refused),
    ("/{p};jsessionid=1/secret", Want::Refused),
    ("/{p};", Want::Refused),
    ("/{P}/secret", Want::Refused),
    ("/{P1}/secret", Want::Refused),
];

fn spell(template: &str, p: &str) -> String {
    // `%{hex1}{rest}`: the first letter of the prefix percent-encoded (`/%61dmin`).
    let first = p.as_bytes()[0];
    template
        .replace("{hex1}", &format!("{first:02x}"))
        .replace("{rest}", &p[1..])
        .replace(
            "{P1}",
            &format!("{}{}", p[..1].to_ascii_uppercase(), &p[1..]),
        )
        .replace("{P}", &p.to_ascii_uppercase())
        .replace("{p}", p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_confusion_cannot_reach_a_protected_area_under_a_weaker_policy() {
    let nginx = Nginx::start(AREAS).await;
    let proxy = ProxyBin::start(&routes(nginx.port)).await;
    // alice is signed in but neither admin nor holder of dns.zone.write.
    let alice = proxy.login("alice").await;
    let alice_hdr = format!("Cookie: {alice}\r\n");
    for p in ["admin", "dns"] {
        let area = format!("{}-AREA", p.to_ascii_uppercase());
        for (template, want) in PATH_FAMILY {
            let target = spell(template, p);
            // The variant is a real equivalent: nginx on its own serves the protected area for it.
            if *want == Want::Protected {
                let direct = raw_get(nginx.port, &target, "").await;
                assert!(
                    direct.body.starts_with(&area),
                    "{target}: nginx itself should map this to {area}: {direct:?}"
                );
            }
            for (who, hdr, protected_status) in
                [("anonymous", "", 302), ("alice", &*alice_hdr, 403)]
            {
                let r = raw_get(proxy.port, &target, hdr).await;
                assert!(
                    !r.body.contains(&area),
                    "{who} {target}: reached {area} through the proxy: {r:?}"
                );
                let expected = match want {
                    Want::Protected => protected_status,
                    Want::Refused => 400,
                };
                assert_eq!(r.status, expected, "{who} {target}: {r:?}");
            }
        }
    }
    // The upstream receives the canonical target the route was chosen for (query kept verbatim).
    for (target, forwarded) in [
        (
            "/public/./a//b/%7e?x=%2e%2e/..",
            "/public/a/b/~?x=%2e%2e/..",
        ),
        ("/public/a/../b/", "/public/b/"),
        ("/%70ublic/%3f", "/public/%3F"),
        ("/public/..", "/"),
    ] {
        let r = raw_get(proxy.port, target, "").await;
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(r.body, format!("open {forwarded}\n"), "{target}");
    }
    // Targets that are not paths: the `/` route is not a wildcard for them.
    for req in [
        "OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(),
        "CONNECT localhost:80 HTTP/1.1\r\nHost: localhost:80\r\nConnection: close\r\n\r\n"
            .to_owned(),
    ] {
        let r = raw_request(proxy.port, req.as_bytes()).await;
        assert_eq!(r.status, 400, "{req:?}: {r:?}");
        assert!(!r.body.contains("open "), "{req:?} reached the upstream");
    }
    // Absolute-form: the same canonicalisation applies to its path.
    let r = raw_request(
        proxy.port,
        format!(
            "GET http://localhost:{0}/public/../admin/secret HTTP/1.1\r\nHost: localhost:{0}\r\nConnection: close\r\n\r\n",
            proxy.port
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 302, "{r:?}");
}

/// nginx locations that string-match prefixes, case-insensitively (`location ~* ^/admin`, as common as `location
/// /admin`, which is the same without the case folding): `/adminsecret.txt` and `/ADMINsecret` are in the admin
/// area too.
const PREFIX_AREAS: &str = r#"
    location ~* ^/admin { return 200 "ADMIN-AREA $request_uri\n"; }
    location ~* ^/dns { return 200 "DNS-AREA $request_uri\n"; }
    location / { return 200 "open $request_uri\n"; }
"#;

/// A backend that matches locations as string prefixes (nginx's `location /admin`, a common way to write one)
/// serves a protected area for paths the proxy's segment-bounded routes give to the weaker `/` route: each such
/// spelling is refused, for anonymous and signed-in callers alike, while paths that are nobody's area still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_prefix_backend_cannot_be_reached_past_a_protected_prefix() {
    let nginx = Nginx::start(PREFIX_AREAS).await;
    let proxy = ProxyBin::start(&routes(nginx.port)).await;
    let alice = proxy.login("alice").await;
    let alice_hdr = format!("Cookie: {alice}\r\n");
    for p in ["admin", "dns"] {
        let area = format!("{}-AREA", p.to_ascii_uppercase());
        for template in [
            "/{p}secret.txt",
            "/{p}.old/secret",
            "/{p}-",
            "/{p}%20x",
            "/{p}~/x",
            "/public/../{p}x/secret",
            "/%{hex1}{rest}x",
            "/{P}secret",
            "/{P1}-backup.tar",
        ] {
            let target = spell(template, p);
            let direct = raw_get(nginx.port, &target, "").await;
            assert!(
                direct.body.starts_with(&area),
                "{target}: nginx itself should serve {area} for this: {direct:?}"
            );
            for (who, hdr) in [("anonymous", ""), ("alice", &*alice_hdr)] {
                let r = raw_get(proxy.port, &target, hdr).await;
                assert!(
                    !r.body.contains(&area),
                    "{who} {target}: reached {area}: {r:?}"
                );
                assert_eq!(r.status, 400, "{who} {target}: {r:?}");
            }
        }
    }
    for target in ["/adm", "/x/admin", "/public/dnsx", "/d"] {
        let r = raw_get(proxy.port, target, "").await;
        assert_eq!(
            (r.status, r.body.starts_with("open ")),
            (200, true),
            "{target}: {r:?}"
        );
    }
}

/// A backend that switches to "websocket" on the header alone (and would go on reading HTTP): how it answers the
/// handshake is chosen by the path. `/right` computes the accept value as RFC 6455 says, the others do not.
async fn switch_happy_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let key = head.lines().find_map(|l| {
                    l.split_once(':')
                        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
                        .map(|(_, v)| v.trim().to_owned())
                });
                let accept = |k: &str| {
                    hero_proxy::headers::websocket_accept(&k.parse().unwrap())
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_owned()
                };
                let extra = if head.starts_with("GET /right ") {
                    format!(
                        "Sec-WebSocket-Accept: {}\r\n",
                        accept(key.as_deref().unwrap_or(""))
                    )
                } else if head.starts_with("GET /wrong ") {
                    format!(
                        "Sec-WebSocket-Accept: {}\r\n",
                        accept("c29tZSBvdGhlciBrZXkhIQ==")
                    )
                } else if head.starts_with("GET /empty ") {
                    "Sec-WebSocket-Accept: \r\n".to_owned()
                } else {
                    String::new()
                };
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
                );
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                // Then it would read HTTP from the "tunnel"; here it holds the connection until the peer goes.
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

/// A `101 websocket` is piped only when the backend answered the client's key as RFC 6455 says: a backend that
/// switches on the header alone and reads HTTP afterwards would otherwise carry a second, unchecked request
/// (with a spoofed `X-Hero-User`) through the tunnel, as h2c would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_without_the_websocket_handshake_is_not_piped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, _task) = switch_happy_upstream().await;
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:{up}\"\npolicy = \"public\"\n"
    ))
    .await;
    let handshake = |path: &str, key: Option<&str>| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{}\r\n",
            key.map(|k| format!("Sec-WebSocket-Key: {k}\r\n")).unwrap_or_default()
        )
    };
    let key = Some("dGhlIHNhbXBsZSBub25jZQ==");
    for (path, key) in [
        ("/none", key),
        ("/wrong", key),
        ("/empty", key),
        ("/right", None),
    ] {
        let r = raw_one(proxy.port, handshake(path, key).as_bytes()).await;
        assert_eq!(r.status, 502, "{path} key {key:?}: {r:?}");
    }
    // The real handshake is piped, and what goes through it is the backend's business (frames, normally).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .unwrap();
    s.write_all(handshake("/right", key).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
}

/// `Upgrade` offers that are not a single `websocket` token, each with a spoofed identity header.
const UPGRADE_FAMILY: &[(&str, &str)] = &[
    ("h2c", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
    ("H2C", "Connection: upgrade, http2-settings\r\nUpgrade: H2C\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
    ("padded h2c", "Connection: keep-alive, Upgrade\r\nUpgrade:   h2c  \r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
    ("h2c listed first", "Connection: Upgrade\r\nUpgrade: h2c, websocket\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"),
    ("websocket listed first", "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
    ("two Upgrade headers", "Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
    ("h2", "Connection: Upgrade\r\nUpgrade: h2\r\n"),
    ("TLS", "Connection: Upgrade\r\nUpgrade: TLS/1.0\r\n"),
    ("versioned websocket", "Connection: Upgrade\r\nUpgrade: websocket/13\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_are_tunnelled() {
    let hc = Hypercorn::start().await;
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:{}\"\npolicy = \"public\"\n",
        hc.port
    ))
    .await;
    // The peer is h2c-capable: asked directly, it switches.
    let direct = raw_one(
        hc.port,
        format!("GET /x HTTP/1.1\r\nHost: a\r\n{}\r\n", UPGRADE_FAMILY[0].1).as_bytes(),
    )
    .await;
    assert_eq!(
        direct.status, 101,
        "hypercorn should switch to h2c: {direct:?}"
    );

    for method in ["GET", "POST"] {
        for (name, hdrs) in UPGRADE_FAMILY {
            let req = format!(
                "{method} /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nX-Hero-User: mallory\r\n{hdrs}\r\n"
            );
            let r = raw_one(proxy.port, req.as_bytes()).await;
            assert_eq!(
                r.status, 200,
                "{method} {name}: no tunnel, a plain request: {r:?}"
            );
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["http_version"], "1.1", "{method} {name}");
            let seen = Seen(serde_json::from_value(v["headers"].clone()).unwrap());
            for h in ["upgrade", "http2-settings", "x-hero-user"] {
                assert!(seen.all(h).is_empty(), "{method} {name}: upstream saw {h}");
            }
            assert!(
                !seen
                    .all("connection")
                    .iter()
                    .any(|c| c.to_ascii_lowercase().contains("upgrade")),
                "{method} {name}"
            );
        }
    }
    // A WebSocket by POST is not a WebSocket.
    let r = raw_one(
        proxy.port,
        b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    // WebSocket, in any letter case, is tunnelled, and the backend sees the stripped, not the spoofed, identity.
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    for spelling in ["websocket", "WebSocket"] {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://localhost:{}/ws", proxy.port),
            )
            .unwrap();
        req.headers_mut()
            .insert("upgrade", spelling.parse().unwrap());
        req.headers_mut()
            .insert("x-hero-user", "mallory".parse().unwrap());
        let (mut ws, resp) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio_tungstenite::connect_async(req),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(resp.status(), 101);
        let first: serde_json::Value =
            serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        let seen = Seen(serde_json::from_value(first["headers"].clone()).unwrap());
        assert!(seen.all("x-hero-user").is_empty());
        assert_eq!(
            seen.one("upgrade").map(str::to_ascii_lowercase).as_deref(),
            Some("websocket")
        );
        ws.send(Message::text("ping")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "ping");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_allowlist_admits_one_forge_account_not_a_name() {
    use hero_secrets::SecretStore;
    let nginx = Nginx::start(AREAS).await;
    let proxy = ProxyBin::start_opts(&routes(nginx.port), true).await;
    let other = proxy.peer2.as_ref().unwrap().issuer.clone();
    let forge = proxy.peer.issuer.clone();
    let allow = |list: &'static str| {
        let s = &proxy.secrets;
        async move { s.set("deployer/ADMIN_FORGE_USERS", list).await.unwrap() }
    };
    let admin = |cookie: String| {
        let port = proxy.port;
        async move {
            let r = raw_get(port, "/admin/x", &format!("Cookie: {cookie}\r\n")).await;
            (r.status, r.body.contains("ADMIN-AREA"))
        }
    };
    allow("alice").await;
    // Another provider's alice signs in first, so she even gets the local name `alice`: still not the Forge's.
    let c = login_at(&proxy.base, &other, "alice&provider=other").await;
    assert_eq!(admin(c).await, (403, false), "another provider's alice");
    let first = login_at(&proxy.base, &forge, "alice").await;
    assert_eq!(
        admin(first.clone()).await,
        (200, true),
        "forge alice (1001)"
    );
    let c = login_at(&proxy.base, &forge, "bob").await;
    assert_eq!(admin(c).await, (403, false), "forge bob, not listed");
    assert_eq!(
        admin(first.clone()).await,
        (200, true),
        "forge alice still admin"
    );

    // alice's Forge account deleted and recreated: same name, new id. Refused; and the old account no longer
    // owns the name, so its session loses admin at once (403, then its admin session is revoked).
    let recreated = login_at(&proxy.base, &forge, "2001").await;
    assert_eq!(
        admin(recreated.clone()).await,
        (403, false),
        "recreated alice"
    );
    assert_eq!(
        admin(first.clone()).await,
        (403, false),
        "old alice after the name moved"
    );
    assert_eq!(
        admin(first.clone()).await.0,
        302,
        "old alice's admin session revoked"
    );

    // The operator re-approves the name: remove it, add it back; the account that holds it now is admitted.
    allow("bob").await;
    assert_eq!(admin(recreated.clone()).await, (403, false));
    allow("alice").await;
    assert_eq!(
        admin(recreated.clone()).await,
        (200, true),
        "recreated alice after re-approval"
    );
    // And the binding holds the other way round too.
    let old_again = login_at(&proxy.base, &forge, "alice").await;
    assert_eq!(
        admin(old_again).await,
        (403, false),
        "1001 again, bound to 2001 now"
    );
    assert_eq!(
        admin(recreated).await,
        (403, false),
        "2001 lost the name to 1001"
    );
}

/// An upstream that accepts connections and then does `what`: never answer, or answer a head and part of a body.
async fn bad_upstream(half_body: bool) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            if half_body {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
            }
            held.push(s);
        }
    });
    (port, task)
}

/// Reads until the peer closes; true if it did before `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wait_on_a_client_or_upstream_is_bounded() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let nginx = Nginx::start(AREAS).await;
    let hc = Hypercorn::start().await;
    let (stall, _t1) = bad_upstream(false).await;
    let (half, _t2) = bad_upstream(true).await;
    // Bound but never listening: connections are refused, and no other process (a parallel
    // test's nginx) can take the port while this socket is held. A released port could be.
    let _dead_socket = tokio::net::TcpSocket::new_v4().unwrap();
    _dead_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = _dead_socket.local_addr().unwrap().port();
    let proxy = ProxyBin::start(&format!(
        r#"header_read_timeout_secs = 1
idle_timeout_secs = 2
upstream_timeout_secs = 2
[[routes]]
path = "/"
upstream = "http://127.0.0.1:{}"
policy = "public"
[[routes]]
path = "/echo"
upstream = "http://127.0.0.1:{}"
policy = "public"
[[routes]]
path = "/stall"
upstream = "http://127.0.0.1:{stall}"
policy = "public"
[[routes]]
path = "/half"
upstream = "http://127.0.0.1:{half}"
policy = "public"
[[routes]]
path = "/dead"
upstream = "http://127.0.0.1:{dead}"
policy = "public"
"#,
        nginx.port, hc.port
    ))
    .await;
    // Far above every configured bound (1-2 s, checked once a period), far below "forever".
    let bound = Duration::from_secs(15);
    let connect = || async {
        tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .unwrap()
    };

    // The client side: each of these would hold a connection (and a task) forever without a bound.
    let cases: &[(&str, &[u8])] = &[
        (
            "a head that never ends",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n",
        ),
        ("nothing at all", b""),
        (
            "a body that stops",
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n0123456789",
        ),
        (
            "kept alive after a response",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
    ];
    for (name, bytes) in cases {
        let mut s = connect().await;
        s.write_all(bytes).await.unwrap();
        assert!(
            closed_within(&mut s, bound).await,
            "{name}: connection still open"
        );
    }
    // A head trickled a line at a time, faster than any idle rule would notice.
    let mut s = connect().await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(bound, async {
        use tokio::io::AsyncReadExt;
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a trickled head was never cut off");
    trickle.abort();

    // The upstream side: the person gets a plain page in bounded time, never an address or an error chain.
    for (path, status) in [("/stall", 504), ("/dead", 502)] {
        let r = tokio::time::timeout(bound, raw_get(proxy.port, path, ""))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer"));
        assert_eq!(r.status, status, "{path}: {r:?}");
        for internal in [
            "127.0.0.1",
            &stall.to_string(),
            &dead.to_string(),
            "error",
            "hyper",
            "tcp",
        ] {
            assert!(
                !r.body.to_ascii_lowercase().contains(internal),
                "{path}: page shows {internal:?}: {}",
                r.body
            );
        }
    }
    let mut s = connect().await;
    s.write_all(b"GET /half HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut s, bound).await,
        "a body the upstream stopped sending holds the client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Sign-ins in flight live in the browsers' login cookies, not in a table on the edge, so no flood of
/// `/oauth/login` — from another address, from many, or from the victim's own (behind a VM's web gateway every
/// visitor arrives from the gateway's one address) — can push out a real sign-in. Before, a per-address bound
/// evicted the victim's sign-in whenever the flood shared its address. A tiny replay memory is set so the flood's
/// finished callbacks overflow it too.
async fn a_login_flood_cannot_lock_out_another_sign_in() {
    let proxy = ProxyBin::start(
        "login_used_max = 30\n[[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:1\"\npolicy = \"sso\"\n",
    )
    .await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let victim = from([127, 0, 0, 2]);
    let r = victim
        .get(format!("{}/oauth/login?login_hint=bob", proxy.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let authorize = r.headers()["location"].to_str().unwrap().to_owned();
    let login_cookie = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-hero_login="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // The flood: from the victim's own address, from another and from a handful; nobody is refused, and some of
    // it finishes its callbacks (with a code the provider refuses), filling the replay memory.
    for (who, ips) in [
        ("the victim's own address", vec![[127, 0, 0, 2]]),
        ("another address", vec![[127, 0, 0, 1]]),
        ("ten addresses", (10..20).map(|i| [127, 0, 1, i]).collect()),
    ] {
        let clients: Vec<_> = ips.iter().map(|ip| from(*ip)).collect();
        for i in 0..300 {
            let r = clients[i % clients.len()]
                .get(format!("{}/oauth/login", proxy.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 302, "{who}: login {i} refused");
            if i % 3 == 0 {
                let state = query(r.headers()["location"].to_str().unwrap())["state"].clone();
                let cookie = set_cookies(&r)[0].split(';').next().unwrap().to_owned();
                let r = clients[i % clients.len()]
                    .get(format!(
                        "{}/oauth/callback?state={state}&code=bogus",
                        proxy.base
                    ))
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap();
                assert_ne!(r.status(), 303, "{who}: a bogus code signed in");
            }
        }
    }
    let callback = walk_peer(&proxy.base, &proxy.peer.issuer, &authorize).await;
    let r = victim
        .get(&callback)
        .header("cookie", &login_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        303,
        "the victim's sign-in survived the flood: {}",
        r.text().await.unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_spellings_cannot_reach_a_host_route_under_another_policy() {
    // nginx dispatches on Host as backends do: `server_name admin.local` also answers `admin.local.`, `ADMIN.LOCAL`.
    let nginx = Nginx::start(
        r#"server_name _; return 200 "other-host $host\n"; }
           server { listen 127.0.0.1:$PORT$; server_name admin.local; return 200 "ADMIN-HOST $host\n";"#,
    )
    .await;
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\nhost = \"admin.local\"\npath = \"/\"\nupstream = \"http://127.0.0.1:{0}\"\npolicy = \"admin\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:{0}\"\npolicy = \"public\"\n",
        nginx.port
    ))
    .await;
    let p = proxy.port;
    // (request head up to the headers' end, expected status); 302 = the admin route's policy applied.
    let cases: Vec<(String, u16)> = vec![
        ("GET / HTTP/1.1\r\nHost: admin.local\r\n".into(), 302),
        ("GET / HTTP/1.1\r\nHost: ADMIN.Local\r\n".into(), 302),
        (format!("GET / HTTP/1.1\r\nHost: admin.local:{p}\r\n"), 302),
        (
            "GET http://admin.local/x HTTP/1.1\r\nHost: admin.local\r\n".into(),
            302,
        ),
        ("GET http://admin.local/x HTTP/1.1\r\n".into(), 302),
        ("GET / HTTP/1.1\r\nHost: admin.local.\r\n".into(), 400),
        (format!("GET / HTTP/1.1\r\nHost: admin.local.:{p}\r\n"), 400),
        ("GET / HTTP/1.1\r\nHost: ADMIN.LOCAL.\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: admin..local\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: .admin.local\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: x@admin.local\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: admin%2elocal\r\n".into(), 400),
        ("GET / HTTP/1.1\r\nHost: \r\n".into(), 400),
        (
            "GET / HTTP/1.1\r\nHost: other.local\r\nHost: admin.local\r\n".into(),
            400,
        ),
        (
            "GET / HTTP/1.1\r\nHost: admin.local\r\nHost: admin.local\r\n".into(),
            400,
        ),
        ("GET / HTTP/1.1\r\n".into(), 400),
        (
            "GET http://admin.local/x HTTP/1.1\r\nHost: other.local\r\n".into(),
            400,
        ),
        (
            "GET http://other.local/x HTTP/1.1\r\nHost: admin.local\r\n".into(),
            400,
        ),
        ("GET / HTTP/1.1\r\nHost: other.local\r\n".into(), 200),
        (format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n"), 200),
        ("GET / HTTP/1.1\r\nHost: [::1]\r\n".into(), 200),
        ("GET / HTTP/1.0\r\n".into(), 200),
    ];
    for (head, status) in cases {
        let r = raw_request(p, format!("{head}Connection: close\r\n\r\n").as_bytes()).await;
        assert!(
            !r.body.contains("ADMIN-HOST"),
            "{head:?} reached the admin host: {r:?}"
        );
        assert_eq!(r.status, status, "{head:?}: {r:?}");
    }
    // The backend receives the canonical host the route was chosen for.
    let r = raw_get(p, "/", "").await;
    assert_eq!(r.body, format!("other-host localhost\n"));
    let r = raw_request(
        p,
        b"GET / HTTP/1.1\r\nHost: Other.Local\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.body, "other-host other.local\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_gets_plain_pages_for_unknown_and_down_machines() {
    // Bound but never listening: connections are refused, and no other process (a parallel
    // test's nginx) can take the port while this socket is held. A released port could be.
    let _dead_socket = tokio::net::TcpSocket::new_v4().unwrap();
    _dead_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = _dead_socket.local_addr().unwrap().port();
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\nhost = \"carol.demo.example\"\npath = \"/\"\nupstream = \"http://127.0.0.1:{dead}\"\npolicy = \"public\"\n\
         [[routes]]\nhost = \"sock.demo.example\"\npath = \"/\"\nupstream = \"unix:/nonexistent/hero/web.sock\"\npolicy = \"public\"\n"
    ))
    .await;
    for (host, status, says) in [
        ("bob.demo.example", 404, "No such machine"),
        ("carol.demo.example", 502, "not reachable"),
        ("sock.demo.example", 502, "not reachable"),
    ] {
        let r = raw_request(
            proxy.port,
            format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(r.status, status, "{host}: {r:?}");
        assert!(
            r.head
                .to_ascii_lowercase()
                .contains("content-type: text/html"),
            "{host}"
        );
        assert!(r.body.contains(says), "{host}: {}", r.body);
        let body = r.body.to_ascii_lowercase();
        for internal in [
            "127.0.0.1",
            &dead.to_string(),
            "/nonexistent",
            "sock",
            "error",
            "refused",
            "route",
        ] {
            assert!(!body.contains(internal), "{host}: page shows {internal:?}");
        }
    }
}

/// The proxy's cookies and a cookie-clearing `Clear-Site-Data`, as a hostile backend would send them.
const HOSTILE_COOKIE_LINES: &str =
    "Set-Cookie: __Host-hero_session=PLANTED; Path=/; Secure; HttpOnly\r\n\
     Set-Cookie: __Host-hero_login=PLANTED; Path=/; Secure\r\n\
     Set-Cookie: =__Host-hero_session=NAMELESS; Path=/\r\n\
     Clear-Site-Data: \"cookies\"\r\n\
     Set-Cookie: app=1; Path=/\r\n";

/// A backend that answers every request with [`HOSTILE_COOKIE_LINES`]: a WebSocket handshake with a 101 (then holds
/// the connection), anything else with a 200 (keeping the connection for the next request: the proxy pools it).
async fn cookie_planting_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    let switch = req.contains("upgrade: websocket");
                    let answer = if switch {
                        format!(
                            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{HOSTILE_COOKIE_LINES}\r\n"
                        )
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n{HOSTILE_COOKIE_LINES}\r\nok"
                        )
                    };
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    if switch {
                        // Hold the tunnel open until the proxy closes it.
                        while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_cannot_set_or_clear_the_proxy_cookies_on_any_response_101_included() {
    let (up, _task) = cookie_planting_upstream().await;
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:{up}\"\npolicy = \"public\"\n"
    ))
    .await;
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // (what, request, expected status): a bodiless GET (lean client), a POST with a body (hyper's client), and the
    // WebSocket handshake (101, which used to leave the handler before the response was cleaned).
    let cases = [
        (
            "GET",
            "GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
            200,
        ),
        (
            "POST",
            "POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx".to_owned(),
            200,
        ),
        (
            "WebSocket",
            format!("GET /ws HTTP/1.1\r\nHost: localhost\r\n{ws}\r\n"),
            101,
        ),
    ];
    for (what, req, status) in cases {
        let r = raw_one(proxy.port, req.as_bytes()).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        let head = r.head.to_ascii_lowercase();
        for planted in ["hero_session", "hero_login", "clear-site-data"] {
            assert!(
                !head.contains(planted),
                "{what}: {planted} reached the browser:\n{}",
                r.head
            );
        }
        assert!(
            head.contains("set-cookie: app=1"),
            "{what}: the backend's own cookie passes"
        );
        if status == 101 {
            assert!(
                head.contains("upgrade: websocket") && head.contains("connection: upgrade"),
                "{}",
                r.head
            );
        }
    }
}

/// A backend that frames some responses wrongly, the way the reviewer's desync used: `/longer` answers
/// `Content-Length: 2` and, when the next request arrives on that connection, first sends the rest — a whole forged
/// response — before the real answer; a HEAD answers a head and then the same forged response as a "body". Every
/// other request is answered `who=<x-hero-user>` (`who=-` without one).
async fn misframing_upstream() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const FORGED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nSMUGGLED!";
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut owed = false;
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    let mut out = Vec::new();
                    if std::mem::take(&mut owed) {
                        out.extend_from_slice(FORGED);
                    }
                    if req.starts_with("head ") {
                        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
                        owed = true;
                    } else if req.contains(" /pub/longer ") {
                        out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        owed = true;
                    } else {
                        let who = req
                            .lines()
                            .find_map(|l| l.strip_prefix("x-hero-user:"))
                            .map_or("-".to_owned(), |v| v.trim().to_owned());
                        let body = format!("who={who}");
                        out.extend_from_slice(
                            format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                    }
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misframing_backend_cannot_hand_one_persons_response_to_another() {
    let (up, _task) = misframing_upstream().await;
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\npath = \"/pub\"\nupstream = \"http://127.0.0.1:{up}\"\npolicy = \"public\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:{up}\"\npolicy = \"sso\"\n"
    ))
    .await;
    let alice = proxy.login("alice").await;
    let bob = proxy.login("bob").await;
    let get = |target: &'static str, cookie: Option<&String>| {
        let extra = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
        let port = proxy.port;
        async move { raw_get(port, target, &extra).await }
    };
    // Warm-up so each identity has had a connection (one worker: every request shares this thread's pools).
    assert_eq!(get("/x", Some(&alice)).await.body, "who=alice");
    // (what the attacker sends to poison a connection, who asks next, what that one must see)
    let cases: [(&str, &str, Option<&String>, &str); 4] = [
        ("GET", "/pub/longer", Some(&alice), "who=alice"),
        ("GET", "/pub/longer", Some(&bob), "who=bob"),
        ("HEAD", "/pub/head", Some(&alice), "who=alice"),
        // After a HEAD even the same (anonymous) identity gets a fresh connection.
        ("HEAD", "/pub/head", None, "who=-"),
    ];
    for (i, (method, poison, victim, want)) in cases.into_iter().enumerate() {
        let r = raw_request(
            proxy.port,
            format!("{method} {poison} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "case {i}: {r:?}");
        let target = if victim.is_some() {
            "/private"
        } else {
            "/pub/next"
        };
        let r = get(target, victim).await;
        assert_eq!(r.body, want, "case {i}: the next person got {:?}", r.body);
    }
    // A signed-in user's authenticated response never reaches an anonymous request either: bob's page, then a
    // poisoning GET as bob, then an anonymous request gets its own fresh answer, not bob's leftovers.
    let _ = raw_request(
        proxy.port,
        format!("GET /pub/longer HTTP/1.1\r\nHost: localhost\r\nCookie: {bob}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(get("/pub/next", None).await.body, "who=-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machine_owner_is_one_forge_account_not_a_name() {
    use hero_secrets::SecretStore;
    let nginx = Nginx::start(AREAS).await;
    let proxy = ProxyBin::start(&format!(
        "[[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:{}\"\npolicy = \"owner\"\n",
        nginx.port
    ))
    .await;
    let forge = proxy.peer.issuer.clone();
    let owner = |list: &'static str| {
        let s = &proxy.secrets;
        async move { s.set("cockpit/FORGE_OWNER", list).await.unwrap() }
    };
    let mine = |cookie: String| {
        let port = proxy.port;
        async move {
            raw_get(port, "/x", &format!("Cookie: {cookie}\r\n"))
                .await
                .status
        }
    };
    owner("alice").await;
    let first = login_at(&proxy.base, &forge, "alice").await;
    assert_eq!(
        mine(first.clone()).await,
        200,
        "forge alice (1001), the owner"
    );
    // alice's Forge account deleted and recreated: same name, new id — someone else, refused; and the old
    // account no longer holds the name either.
    let recreated = login_at(&proxy.base, &forge, "2001").await;
    assert_eq!(mine(recreated.clone()).await, 403, "recreated alice");
    assert_eq!(
        mine(first.clone()).await,
        403,
        "old alice after the name moved"
    );
    // The operator names the owner again (another owner, then alice): the account holding the name now is it.
    owner("bob").await;
    assert_eq!(mine(recreated.clone()).await, 403);
    owner("alice").await;
    assert_eq!(
        mine(recreated.clone()).await,
        200,
        "recreated alice after re-approval"
    );
    let old_again = login_at(&proxy.base, &forge, "alice").await;
    assert_eq!(mine(old_again).await, 403, "1001 again, bound to 2001 now");
}

/// Token pass-through hands a backend the user's Forge token only. A user of another provider passes with no
/// `X-Hero-Forge-Token`: the vault holds that provider's access token, which went out under the Forge name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_pass_through_is_for_forge_tokens_only() {
    let echo = Echo::start().await;
    let proxy = ProxyBin::start_opts(
        &format!(
            "[[routes]]\npath = \"/\"\nupstream = \"http://{}\"\npass_token = true\n",
            echo.addr
        ),
        true,
    )
    .await;
    let forge = login_at(&proxy.base, &proxy.peer.issuer, "alice").await;
    let s = seen_at(&proxy.base, "/x", &forge).await;
    assert_eq!(s.one("x-hero-provider"), Some("forge"));
    assert!(s.one("x-hero-forge-token").is_some_and(|t| !t.is_empty()));
    let other = proxy.peer2.as_ref().unwrap().issuer.clone();
    let elsewhere = login_at(&proxy.base, &other, "bob&provider=other").await;
    let s = seen_at(&proxy.base, "/x", &elsewhere).await;
    assert_eq!(s.one("x-hero-provider"), Some("other"));
    assert_eq!(s.one("x-hero-forge-token"), None);
}
