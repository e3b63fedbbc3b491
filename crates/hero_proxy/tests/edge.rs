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
