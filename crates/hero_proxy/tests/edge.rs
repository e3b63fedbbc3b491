//! The edge beyond login: WebSocket through the proxy, the admin RPC socket, and the full sign-in walk in headless
//! Chromium against the oidc-provider peer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err
)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_the_proxy_carries_identity() {
    // A WebSocket echo upstream that reports the X-Hero-User it saw in its first message.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = l.local_addr().unwrap();
    let upstream = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut user = String::new();
        let cb =
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
             resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                user = req
                    .headers()
                    .get("x-hero-user")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                Ok(resp)
            };
        let mut ws = tokio_tungstenite::accept_hdr_async(s, cb).await.unwrap();
        ws.send(Message::text(format!("hello {user}")))
            .await
            .unwrap();
        while let Some(Ok(m)) = ws.next().await {
            if m.is_text() {
                ws.send(m).await.unwrap();
            }
        }
    });
    let h = Harness::start_with(Opts {
        ws_upstream: Some(ws_addr),
        ..Opts::default()
    })
    .await;
    let cookie = h.login("alice").await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://localhost:{}/ws", h.port),
    )
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut()
        .insert("x-hero-user", "mallory".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let first = ws.next().await.unwrap().unwrap();
    assert_eq!(first.into_text().unwrap().as_str(), "hello alice");
    ws.send(Message::text("ping over the proxy")).await.unwrap();
    let echo = ws.next().await.unwrap().unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "ping over the proxy");
    ws.close(None).await.unwrap();
    upstream.abort();
}

/// A WebSocket echo upstream for any number of connections; the task ends with the test.
async fn ws_echo_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `path` through the proxy with `cookie` and checks one echo.
async fn open_ws(port: u16, path: &str, cookie: &str) -> Ws {
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://localhost:{port}{path}"),
    )
    .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101, "{path}");
    assert_echoes(&mut ws, path).await;
    ws
}

async fn assert_echoes(ws: &mut Ws, what: &str) {
    ws.send(Message::text(what)).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: no echo within 10 s"));
    assert_eq!(echo.unwrap().unwrap().into_text().unwrap().as_str(), what);
}

/// Waits (at most 15 s) for the tunnel to end: the connection closed, with or without a close frame.
async fn assert_closes(ws: &mut Ws, why: &str) {
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "{why}: the tunnel is still open");
}

/// A tunnel lives only while the access that opened it holds. Each way access ends through this proxy — sign-out,
/// a revoked session, a disabled user, a claim taken away, the route's policy changed or the route removed, the
/// session timing out — closes an open tunnel at once (the change is announced; the periodic recheck is set to an
/// hour here, so it cannot be what closes them). A bystander's tunnel on another session stays open through all
/// of it. Before, every one of these tunnels stayed open: a fired admin kept their terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tunnel_closes_when_the_access_that_opened_it_ends() {
    let (ws_addr, upstream) = ws_echo_upstream().await;
    let route = |id: &str, policy: &str| {
        format!("[[routes]]\nid = \"{id}\"\npath = \"/{id}\"\nupstream = \"http://{ws_addr}\"\npolicy = \"{policy}\"\n")
    };
    let h = Harness::start_with(Opts {
        ws_upstream: Some(ws_addr),
        settings: "tunnel_recheck_secs = 3600\nsession_absolute_secs = 3600\n".into(),
        extra_toml: [
            route("wsdns", "claim:dns.zone.write"),
            route("wspolicy", "sso"),
            route("wsgone", "sso"),
        ]
        .concat(),
    })
    .await;
    let sock = h.proxy.rpc_socket.clone();
    let call = |method: &'static str, params: Value| {
        let sock = sock.clone();
        async move {
            let r = rpc(&sock, method, params).await;
            assert!(r["error"].is_null(), "{method}: {r}");
        }
    };
    let bob = h.login("bob").await;
    let mut bystander = open_ws(h.port, "/ws", &bob).await;

    let alice = h.login("alice").await;
    let mut ws = open_ws(h.port, "/ws", &alice).await;
    assert_eq!(h.sign_out(&alice).await.status(), 200);
    assert_closes(&mut ws, "signed out").await;
    assert_echoes(&mut bystander, "after a sign-out").await;

    let alice = h.login("alice").await;
    let mut ws = open_ws(h.port, "/ws", &alice).await;
    call("sessions.revoke_user", json!({"username": "alice"})).await;
    assert_closes(&mut ws, "sessions revoked").await;
    assert_echoes(&mut bystander, "after a revocation").await;

    let carol = h.login("carol").await;
    let mut ws = open_ws(h.port, "/ws", &carol).await;
    call(
        "users.set_disabled",
        json!({"username": "carol", "disabled": true}),
    )
    .await;
    assert_closes(&mut ws, "user disabled").await;
    assert_echoes(&mut bystander, "after a user was disabled").await;

    call("roles.create", json!({"name": "dns"})).await;
    call(
        "roles.add_claim",
        json!({"role": "dns", "claim": "dns.zone.write"}),
    )
    .await;
    call("groups.create", json!({"name": "dns-team"})).await;
    call(
        "groups.grant_role",
        json!({"group": "dns-team", "role": "dns"}),
    )
    .await;
    let alice = h.login("alice").await;
    call(
        "groups.add_user",
        json!({"group": "dns-team", "username": "alice"}),
    )
    .await;
    let mut ws = open_ws(h.port, "/wsdns", &alice).await;
    call(
        "roles.remove_claim",
        json!({"role": "dns", "claim": "dns.zone.write"}),
    )
    .await;
    assert_closes(&mut ws, "claim removed").await;
    assert_echoes(&mut bystander, "after a claim was removed").await;

    let mut ws = open_ws(h.port, "/wspolicy", &alice).await;
    let upstream_url = format!("http://{ws_addr}");
    call(
        "routes.set",
        json!({"id": "wspolicy", "path": "/wspolicy", "upstream": upstream_url, "policy": "admin"}),
    )
    .await;
    assert_closes(&mut ws, "route policy changed").await;
    assert_echoes(&mut bystander, "after another route changed").await;

    let mut ws = open_ws(h.port, "/wsgone", &alice).await;
    call("routes.remove", json!({"id": "wsgone"})).await;
    assert_closes(&mut ws, "route removed").await;
    assert_echoes(&mut bystander, "after another route was removed").await;

    // Time: every session is past its absolute lifetime; the periodic sweep ends them and says so.
    let mut ws = open_ws(h.port, "/ws", &alice).await;
    h.clock.advance(3601);
    assert_closes(&mut ws, "session timed out").await;
    assert_closes(&mut bystander, "the bystander's session timed out too").await;
    upstream.abort();
}

/// The admin allowlist lives in the secret store, which other processes write without telling the proxy: an
/// admin's tunnel is closed by the periodic recheck (`tunnel_recheck_secs`) once their name is taken off it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_tunnel_closes_when_the_name_leaves_the_allowlist() {
    use hero_secrets::SecretStore;
    let (ws_addr, upstream) = ws_echo_upstream().await;
    let h = Harness::start_with(Opts {
        ws_upstream: Some(ws_addr),
        settings: "tunnel_recheck_secs = 1\n".into(),
        extra_toml: format!(
            "[[routes]]\npath = \"/wsadmin\"\nupstream = \"http://{ws_addr}\"\npolicy = \"admin\"\n"
        ),
    })
    .await;
    let slot = hero_proxy::app::ADMIN_ALLOWLIST_SLOT;
    h.secrets.set(slot, "alice").await.unwrap();
    let alice = h.login("alice").await;
    let mut ws = open_ws(h.port, "/wsadmin", &alice).await;
    // Her other session never passed an admin check, so losing admin does not end it (admin sessions end).
    let laptop = h.login("alice").await;
    let mut plain = open_ws(h.port, "/ws", &laptop).await;
    h.secrets.set(slot, "bob").await.unwrap();
    assert_closes(&mut ws, "name taken off the allowlist").await;
    assert_echoes(&mut plain, "an sso tunnel of her other session").await;
    upstream.abort();
}

async fn rpc_raw(sock: &std::path::Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: hero_proxy\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status: u16 = out.split(' ').nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn rpc(sock: &std::path::Path, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string();
    rpc_raw(sock, "POST", "/", &body).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rpc_socket() {
    let h = Harness::start().await;
    let sock = h.proxy.rpc_socket.clone();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        rpc_raw(&sock, "GET", "/health", "").await,
        (200, json!({"status":"ok"}))
    );
    let (st, doc) = rpc_raw(&sock, "GET", "/openrpc.json", "").await;
    assert_eq!(st, 200);
    assert_eq!(rpc(&sock, "rpc.discover", json!({})).await["result"], doc);

    assert_eq!(
        rpc(&sock, "roles.create", json!({"name":"dns-admin"})).await["result"],
        true
    );
    let bad = rpc(
        &sock,
        "roles.add_claim",
        json!({"role":"dns-admin","claim":"dns.*"}),
    )
    .await;
    assert_eq!(bad["error"]["code"], -32602);
    let reserved = rpc(
        &sock,
        "roles.add_claim",
        json!({"role":"dns-admin","claim":"groups.admin"}),
    )
    .await;
    assert_eq!(reserved["error"]["code"], -32602);
    assert_eq!(
        rpc(
            &sock,
            "roles.add_claim",
            json!({"role":"dns-admin","claim":"dns.zone.write"})
        )
        .await["result"],
        true
    );
    assert_eq!(
        rpc(&sock, "groups.create", json!({"name":"dns"})).await["result"],
        true
    );
    assert_eq!(
        rpc(
            &sock,
            "groups.grant_role",
            json!({"group":"dns","role":"dns-admin"})
        )
        .await["result"],
        true
    );
    assert_eq!(rpc(&sock, "nope", json!({})).await["error"]["code"], -32601);

    let cookie = h.login("carol").await;
    // X-Hero-Context is the user's record, set over RPC, applied on the next request.
    for (bad, why) in [
        (json!("7"), "a string"),
        (json!(1.5), "a float"),
        (json!(true), "a bool"),
    ] {
        let r = rpc(
            &sock,
            "users.set_context",
            json!({"username":"carol","context":bad}),
        )
        .await;
        assert_eq!(r["error"]["code"], -32602, "{why}");
    }
    let set = |v: Value| {
        rpc(
            &sock,
            "users.set_context",
            json!({"username":"carol","context":v}),
        )
    };
    assert_eq!(set(json!(7)).await["result"], true);
    assert_eq!(
        h.get_seen("/x", &cookie).await.one("x-hero-context"),
        Some("7")
    );
    assert_eq!(set(Value::Null).await["result"], true);
    assert_eq!(h.get_seen("/x", &cookie).await.one("x-hero-context"), None);
    let r = rpc(
        &sock,
        "routes.set",
        json!({"id":"c","path":"/c","upstream":"http://127.0.0.1:1","policy":"sso","context":"x"}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32602, "a route has no context: {r}");
    assert_eq!(h.get("/dns", &cookie).await.status(), 403);
    assert_eq!(
        rpc(
            &sock,
            "groups.add_user",
            json!({"group":"dns","username":"carol"})
        )
        .await["result"],
        true
    );
    assert_eq!(
        h.get("/dns", &cookie).await.status(),
        200,
        "a claim change applies on the next request"
    );
    // Manual admin-group desync is rejected; users.set_admin keeps them in sync.
    assert!(rpc(
        &sock,
        "groups.add_user",
        json!({"group":"admin","username":"carol"})
    )
    .await["error"]
        .is_object());
    assert_eq!(
        rpc(
            &sock,
            "users.set_admin",
            json!({"username":"carol","admin":true})
        )
        .await["result"],
        true
    );
    let u = rpc(&sock, "users.get", json!({"username":"carol"})).await;
    assert!(u["result"]["claims"]
        .as_array()
        .unwrap()
        .contains(&json!("groups.admin")));
    assert_eq!(
        rpc(&sock, "sessions.list", json!({})).await["result"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Disabling revokes.
    assert_eq!(
        rpc(
            &sock,
            "users.set_disabled",
            json!({"username":"carol","disabled":true})
        )
        .await["result"],
        true
    );
    assert_eq!(h.get("/x", &cookie).await.status(), 302);

    // Providers never expose secrets; set_provider switches to the peer's public (PKCE-only) client.
    let provs = rpc(&sock, "oauth.list_providers", json!({})).await;
    assert!(!provs.to_string().contains(CLIENT_SECRET));
    let r = rpc(
        &sock,
        "oauth.set_provider",
        json!({"id":"forge","issuer":h.peer.issuer,"client_id":"hero-proxy-public"}),
    )
    .await;
    assert_eq!(r["result"], true, "{r}");
    h.secrets_delete_client_secret().await;
    let cookie = h.login("bob").await;
    assert_eq!(
        h.get_seen("/x", &cookie).await.one("x-hero-user"),
        Some("bob")
    );
}

trait Secrets {
    async fn secrets_delete_client_secret(&self);
}
impl Secrets for Harness {
    async fn secrets_delete_client_secret(&self) {
        use hero_secrets::SecretStore;
        self.secrets
            .delete(&hero_proxy::app::client_secret_slot("forge"))
            .await
            .unwrap();
        self.proxy.app.reload_providers().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_walk_in_headless_chromium() {
    let h = Harness::start().await;
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/browser-walk.mjs");
    let child = tokio::process::Command::new("node")
        .arg(script)
        .arg(format!("{}/cockpit/page?x=1", h.base))
        .env("HERO_PEERS_DIR", repo_root().join("tools/peers"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("browser walk timed out")
        .unwrap();
    assert!(
        out.status.success(),
        "browser walk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(
        v["url"],
        format!("{}/cockpit/page?x=1", h.base),
        "back on the page that asked for sign-in"
    );
    let echo: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
    let seen = Seen(serde_json::from_value(echo["headers"].clone()).unwrap());
    assert_eq!(seen.one("x-hero-user"), Some("alice"));
    assert_eq!(seen.one("x-hero-external-id"), Some("1001"));
    assert!(seen.one("x-hero-assertion").is_some());
    let cookie = v["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "__Host-hero_session")
        .expect("session cookie in the browser");
    assert_eq!(cookie["secure"], true);
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Lax");
    assert_eq!(cookie["path"], "/");
}
