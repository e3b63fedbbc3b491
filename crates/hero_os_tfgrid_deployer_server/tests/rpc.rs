//! The JSON-RPC/OpenRPC surface of the real server: the document is valid OpenRPC (checked by the
//! official meta-schema), every documented method is served and every served one documented, and
//! bad input gets the right standard error, never a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use hero_os_tfgrid_deployer_sdk::methods::ALL_METHOD_NAMES;
use hero_os_tfgrid_deployer_sdk::ErrorKind;
use serde_json::{json, Value};
use support::*;

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/peers")
}

/// Raw HTTP over the unix socket, to send what the SDK never would.
async fn raw(
    server: &Server,
    method: &str,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::UnixStream::connect(&server.socket)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn rpc_raw(server: &Server, body: &str) -> (u16, Value) {
    let (status, bytes) = raw(server, "POST", "/rpc", body.as_bytes().to_vec(), &[]).await;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, value)
}

fn code(kind: ErrorKind) -> Value {
    json!(kind.code())
}

fn no_forge_server(dir: &std::path::Path) -> Server {
    Server::start(
        dir,
        ServerOptions {
            forge_url: "http://127.0.0.1:9".into(),
            extra_env: vec![],
        },
    )
}

#[tokio::test]
async fn openrpc_document_is_valid_and_matches_rpc_discover() {
    let dir = tempfile::tempdir().unwrap();
    let server = no_forge_server(dir.path());
    let doc = server.client.openrpc().await.unwrap();
    let discovered = server
        .client
        .call_raw("rpc.discover", json!({}))
        .await
        .unwrap();
    assert_eq!(doc, discovered);
    assert_eq!(doc["openrpc"], "1.3.2");
    let file = dir.path().join("openrpc.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/validate_openrpc.mjs"))
        .arg(&file)
        .env("PEERS_DIR", peers_dir())
        .output()
        .expect("node (run scripts/install-test-deps.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "valid",
        "meta-schema validation failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The meta-schema check can fail: a broken document is rejected.
    let mut broken = doc.clone();
    broken["methods"][0]
        .as_object_mut()
        .unwrap()
        .remove("params");
    broken["unexpected"] = json!(1);
    std::fs::write(&file, broken.to_string()).unwrap();
    let out = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/validate_openrpc.mjs"))
        .arg(&file)
        .env("PEERS_DIR", peers_dir())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken document passed validation");
}

#[tokio::test]
async fn every_documented_method_is_served_and_every_served_method_documented() {
    let dir = tempfile::tempdir().unwrap();
    let server = no_forge_server(dir.path());
    let doc = server.client.openrpc().await.unwrap();
    let documented: Vec<String> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(documented, ALL_METHOD_NAMES);
    for name in &documented {
        // Params of the wrong type reach the method's own decoder: -32602, not -32601.
        let (_, v) = rpc_raw(
            &server,
            &json!({"jsonrpc":"2.0","id":1,"method":name,"params":{"user_id":"not-a-number","job_id":"x","slot":7,"username":7,"fix":"x","filter":7,"prefix":7,"limit":"x","after_seq":"x","before":"x","actor":7,"unknown_field_xyz":1}}).to_string(),
        )
        .await;
        assert_eq!(
            v["error"]["code"],
            code(ErrorKind::InvalidParams),
            "{name}: {v}"
        );
    }
    // And the served set is exactly the documented one: the server's own registry says so.
    let (_, v) = rpc_raw(
        &server,
        &json!({"jsonrpc":"2.0","id":1,"method":"deployer.nope"}).to_string(),
    )
    .await;
    assert_eq!(v["error"]["code"], code(ErrorKind::MethodNotFound));
}

#[tokio::test]
async fn bad_input_gets_standard_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = no_forge_server(dir.path());

    let (status, v) = rpc_raw(&server, "{not json").await;
    assert_eq!(status, 200);
    assert_eq!(v["error"]["code"], code(ErrorKind::ParseError));
    assert_eq!(v["id"], Value::Null);

    let (_, v) = rpc_raw(&server, r#"{"method":"deployer.list_users","id":1}"#).await;
    assert_eq!(v["error"]["code"], code(ErrorKind::InvalidRequest));

    let (_, v) = rpc_raw(&server, r#"{"jsonrpc":"2.0","method":5,"id":1}"#).await;
    assert_eq!(v["error"]["code"], code(ErrorKind::InvalidRequest));

    let (_, v) = rpc_raw(
        &server,
        r#"{"jsonrpc":"2.0","method":"deployer.list_users","id":{"a":1}}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], code(ErrorKind::InvalidRequest));

    let (_, v) = rpc_raw(
        &server,
        r#"{"jsonrpc":"2.0","method":"deployer.get_user","params":{"user_id":"x"},"id":"a"}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], code(ErrorKind::InvalidParams));
    assert_eq!(v["id"], "a");

    let (_, v) = rpc_raw(
        &server,
        r#"{"jsonrpc":"2.0","method":"deployer.get_user","params":[1],"id":2}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], code(ErrorKind::InvalidParams));
    assert!(v["error"]["message"].as_str().unwrap().contains("by-name"));

    let (_, v) = rpc_raw(
        &server,
        r#"{"jsonrpc":"2.0","method":"deployer.get_user","params":{"user_id":42},"id":3}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], code(ErrorKind::NotFound));
    assert_eq!(v["error"]["data"]["kind"], "not_found");

    let (_, v) = rpc_raw(&server, "[]").await;
    assert_eq!(v["error"]["code"], code(ErrorKind::InvalidRequest));

    // Batch: results in any order, notifications get nothing, junk items get their own error.
    let (_, v) = rpc_raw(
        &server,
        r#"[{"jsonrpc":"2.0","method":"deployer.list_users","id":1},
            {"jsonrpc":"2.0","method":"deployer.list_users"},
            42,
            {"jsonrpc":"2.0","method":"deployer.nope","id":2}]"#,
    )
    .await;
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items
        .iter()
        .any(|i| i["id"] == 1 && i["result"]["total"] == 0));
    assert!(items
        .iter()
        .any(|i| i["id"] == Value::Null && i["error"]["code"] == code(ErrorKind::InvalidRequest)));
    assert!(items
        .iter()
        .any(|i| i["id"] == 2 && i["error"]["code"] == code(ErrorKind::MethodNotFound)));

    // Only notifications: 204 and no body.
    let (status, v) = rpc_raw(
        &server,
        r#"[{"jsonrpc":"2.0","method":"deployer.list_users"}]"#,
    )
    .await;
    assert_eq!((status, v), (204, Value::Null));

    // Oversize body: 413 with a JSON-RPC error, and the server keeps serving.
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"deployer.list_users","id":1,"params":{{"filter":"{}"}}}}"#,
        "a".repeat(1024 * 1024 + 10)
    );
    let (status, bytes) = raw(&server, "POST", "/rpc", big.into_bytes(), &[]).await;
    assert_eq!(status, 413);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["code"], code(ErrorKind::InvalidRequest));
    assert!(server.client.health().await.is_ok());
}

#[tokio::test]
async fn service_endpoints_and_socket_conventions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut server = no_forge_server(dir.path());
    let health = server.client.health().await.unwrap();
    assert_eq!(health.status, "ok");
    let (status, body) = server
        .client
        .get("/.well-known/heroservice.json")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let hs: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(hs["protocol"], "openrpc");
    assert_eq!(hs["name"], "hero_os_tfgrid_deployer");
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = server.data_dir().join("secrets/master.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A second server on the same data dir is refused with a clear message.
    let second_log = dir.path().join("second.log");
    let mut second = Server::spawn(dir.path(), &server.env, &second_log);
    let status = wait_exit(&mut second.child, std::time::Duration::from_secs(10));
    assert!(!status.success());
    let text = std::fs::read_to_string(&second_log).unwrap();
    assert!(text.contains("already running on data dir"), "{text}");

    // Crash: the stale socket is handled on restart.
    server.restart_after_crash();
    assert!(server.client.health().await.is_ok());

    // SIGTERM: clean exit, socket removed.
    let status = server.guard.terminate();
    assert!(status.success(), "{status}");
    assert!(!server.socket.exists());
}

#[tokio::test]
async fn a_corrupt_or_missing_key_file_stops_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = no_forge_server(dir.path());
    server.set_admin_token("some-admin-token-value").await;
    server.guard.terminate();
    let key = server.data_dir().join("secrets/master.key");

    std::fs::write(&key, b"too short").unwrap();
    let log = dir.path().join("corrupt.log");
    let mut g = Server::spawn(dir.path(), &server.env, &log);
    assert!(!wait_exit(&mut g.child, std::time::Duration::from_secs(10)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("corrupt") && text.contains("restore"),
        "{text}"
    );

    std::fs::remove_file(&key).unwrap();
    let log = dir.path().join("missing.log");
    let mut g = Server::spawn(dir.path(), &server.env, &log);
    assert!(!wait_exit(&mut g.child, std::time::Duration::from_secs(10)).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("missing") && text.contains("refusing to create a new key"),
        "{text}"
    );
}

#[tokio::test]
async fn tcp_listener_forbids_secrets_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: "http://127.0.0.1:9".into(),
            extra_env: vec![(
                "HERO_DEPLOYER_TCP_LISTEN".into(),
                format!("127.0.0.1:{port}"),
            )],
        },
    );
    let tcp = hero_os_tfgrid_deployer_sdk::Client::new(hero_os_tfgrid_deployer_sdk::Endpoint::Tcp(
        format!("127.0.0.1:{port}"),
    ));
    let err = tcp
        .call_raw(
            "deployer.secret_get",
            json!({"slot":"deployer/forge_admin_token"}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Forbidden));
    let as_alice = tcp.acting_as("alice-admin").unwrap();
    let err = as_alice.create_user("zed", None, None).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::Forbidden), "{err}");
    assert!(err.to_string().contains("TCP is read-only"), "{err}");
    // A read is served, and the claimed name is only ever recorded as unverified.
    let events = as_alice.list_events(&Default::default()).await.unwrap();
    assert!(events
        .events
        .iter()
        .all(|e| !e.actor.contains("alice-admin")));
}
