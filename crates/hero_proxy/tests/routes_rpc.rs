//! Routes edited over the admin RPC socket: `routes.set` adds a route that serves the next request, bad input is a
//! JSON-RPC invalid-params error, `routes.remove` takes it away (404), and edits survive a restart with precedence
//! over the config file's seed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use hero_proxy::{Config, ManualClock, Running};
use hero_secrets::MemorySecretStore;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn rpc_raw(sock: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
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

async fn rpc(sock: &Path, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc":"2.0","id":1,"method":method,"params":params}).to_string();
    rpc_raw(sock, "POST", "/", &body).await.1
}

async fn start(state: &Path, echo: &Echo, seed_upstream: &str) -> Running {
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
workers = 2
state_dir = "{state}"
socket_dir = "{state}/sockets"
public_scheme = "http"
redirect_uri_from_host = true
[[routes]]
path = "/public"
upstream = "http://{up}"
policy = "public"
[[routes]]
id = "seeded"
path = "/seeded"
upstream = "{seed_upstream}"
policy = "public"
"#,
        state = state.display(),
        up = echo.addr,
    );
    let cfg = Config::from_toml_with_env(&toml, Vec::new()).unwrap();
    hero_proxy::start(
        cfg,
        Arc::new(MemorySecretStore::new()),
        Arc::new(ManualClock::new(unix_now())),
    )
    .await
    .unwrap()
}

async fn get(proxy: &Running, host: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}{path}", proxy.addr.port()))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_set_and_remove_apply_on_the_next_request_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Echo::start().await;
    let up = format!("http://{}", echo.addr);
    let proxy = start(dir.path(), &echo, &up).await;
    let sock = proxy.rpc_socket.clone();

    // Documented == served, and the new methods are in it.
    let (st, doc) = rpc_raw(&sock, "GET", "/openrpc.json", "").await;
    assert_eq!(st, 200);
    assert_eq!(rpc(&sock, "rpc.discover", json!({})).await["result"], doc);
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"routes.set") && names.contains(&"routes.remove"));

    assert_eq!(get(&proxy, "app.test", "/added/x").await.status(), 404);
    let r = rpc(
        &sock,
        "routes.set",
        json!({"id":"added","host":"app.test","path":"/added","upstream":up,"policy":"public"}),
    )
    .await;
    assert_eq!(r["result"]["id"], "added", "{r}");
    let resp = get(&proxy, "app.test", "/added/x").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/added/x");
    // Host-specific: another host does not match it.
    assert_eq!(get(&proxy, "other.test", "/added/x").await.status(), 404);
    let listed = rpc(&sock, "routes.list", json!({})).await["result"].clone();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "added" && r["host"] == "app.test" && r["policy"] == "public"));

    // Validation: invalid params, nothing installed.
    for bad in [
        json!({"id":"b1","path":"/b","upstream":up,"policy":"root"}),
        json!({"id":"b2","path":"/b","upstream":up,"policy":"claim:*"}),
        json!({"id":"b3","path":"/b","upstream":"ftp://x","policy":"public"}),
        json!({"id":"b4","path":"b","upstream":up,"policy":"public"}),
        json!({"id":"b5","path":"/b","upstream":up,"policy":"public","pass_token":"yes"}),
        json!({"id":"b6","host":"app.test","path":"/added","upstream":up,"policy":"public"}),
        // Routes no request could match (their traffic fell to a broader route's policy).
        json!({"id":"b7","host":"app.test:443","path":"/b","upstream":up,"policy":"admin"}),
        json!({"id":"b8","host":"app.test.","path":"/b","upstream":up,"policy":"admin"}),
        json!({"id":"b9","path":"/Secret","upstream":up,"policy":"admin"}),
        json!({"id":"b10","path":"//b","upstream":up,"policy":"admin"}),
        json!({"path":"/b","upstream":up,"policy":"public"}),
    ] {
        let r = rpc(&sock, "routes.set", bad.clone()).await;
        assert_eq!(r["error"]["code"], -32602, "{bad} → {r}");
    }
    assert_eq!(get(&proxy, "app.test", "/b").await.status(), 404);

    // Replace by id: same id, now an sso route (anonymous → sent to sign in).
    let r = rpc(
        &sock,
        "routes.set",
        json!({"id":"added","host":"app.test","path":"/added","upstream":up,"policy":"sso","pass_token":true}),
    )
    .await;
    assert_eq!(r["result"]["id"], "added", "{r}");
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/added/x", proxy.addr.port()))
        .header("host", "app.test")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());

    // Remove: the next request has no route.
    assert_eq!(
        rpc(&sock, "routes.remove", json!({"id":"added"})).await["result"],
        true
    );
    assert_eq!(get(&proxy, "app.test", "/added/x").await.status(), 404);
    assert_eq!(
        rpc(&sock, "routes.remove", json!({"id":"added"})).await["result"],
        false
    );

    // RPC edits persist and win over the file: a new RPC route and the removal of a file route survive a restart.
    rpc(
        &sock,
        "routes.set",
        json!({"id":"kept","path":"/kept","upstream":up,"policy":"public"}),
    )
    .await;
    assert_eq!(
        rpc(&sock, "routes.remove", json!({"id":"*/public"})).await["result"],
        true
    );
    assert_eq!(get(&proxy, "x", "/public").await.status(), 404);
    drop(proxy);
    // The file now points `seeded` elsewhere: a file edit applies on restart while RPC has not touched the id.
    let proxy = start(dir.path(), &echo, "http://127.0.0.1:1").await;
    assert_eq!(get(&proxy, "x", "/kept/y").await.status(), 200);
    assert_eq!(get(&proxy, "x", "/public").await.status(), 404);
    let listed = rpc(&proxy.rpc_socket, "routes.list", json!({})).await["result"].clone();
    let seeded = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "seeded")
        .unwrap()
        .clone();
    assert_eq!(seeded["upstream"], "http://127.0.0.1:1");
}
