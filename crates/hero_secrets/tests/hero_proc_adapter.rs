#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The hero_proc adapter against a STAND-IN hero_proc (an in-test JSON-RPC server on a unix
//! socket implementing the API written down in `hero_proc::assumed`). It checks the adapter speaks
//! that assumed contract; it cannot check the real hero_proc, whose API is unpublished.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::{extract::State, routing::post, Json, Router};
use hero_secrets::{HeroProcSecretStore, SecretStore};
use serde_json::{json, Value};

type Db = Arc<Mutex<BTreeMap<(String, String), String>>>;

async fn rpc(State(db): State<Db>, Json(req): Json<Value>) -> Json<Value> {
    let p = &req["params"];
    let key = || {
        (
            p["context"].as_str().unwrap_or("").to_owned(),
            p["name"].as_str().unwrap_or("").to_owned(),
        )
    };
    let mut db = db.lock().unwrap();
    let result = match req["method"].as_str().unwrap_or("") {
        "secrets.set" => {
            db.insert(key(), p["value"].as_str().unwrap_or("").to_owned());
            json!(true)
        }
        "secrets.get" => match db.get(&key()) {
            Some(v) => json!({ "value": v }),
            None => {
                return Json(
                    json!({"jsonrpc":"2.0","id":req["id"],"error":{"code":-32001,"message":"not found"}}),
                )
            }
        },
        "secrets.delete" => json!(db.remove(&key()).is_some()),
        "secrets.list" => {
            let ctx = p["context"].as_str().unwrap_or("");
            json!(db
                .keys()
                .filter(|(c, _)| c == ctx)
                .map(|(_, n)| n.clone())
                .collect::<Vec<_>>())
        }
        _ => {
            return Json(
                json!({"jsonrpc":"2.0","id":req["id"],"error":{"code":-32601,"message":"method not found"}}),
            )
        }
    };
    Json(json!({"jsonrpc":"2.0","id":req["id"],"result":result}))
}

#[tokio::test]
async fn adapter_speaks_the_assumed_api() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hero_proc/rpc.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let app = Router::new()
        .route("/rpc", post(rpc))
        .with_state(Db::default());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let store = HeroProcSecretStore::new(HeroProcSecretStore::default_socket(dir.path()));
    assert_eq!(store.get("deployer/forge_admin_token").await.unwrap(), None);
    store
        .set("deployer/forge_admin_token", "tok")
        .await
        .unwrap();
    store
        .set("deployer/users/1/forge_token", "t1")
        .await
        .unwrap();
    assert_eq!(
        store
            .get("deployer/forge_admin_token")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        "tok"
    );
    assert_eq!(
        store.list("deployer/users/").await.unwrap(),
        ["deployer/users/1/forge_token"]
    );
    assert!(store.delete("deployer/forge_admin_token").await.unwrap());
    assert_eq!(store.list("deployer/").await.unwrap().len(), 1);
    server.abort();
}

#[tokio::test]
async fn unreachable_service_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = HeroProcSecretStore::new(dir.path().join("nope.sock"));
    let err = store.get("a/b").await.unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

/// The deployer's way into a VM's hero_proc (`assumed::remote_call_command`, run over SSH with
/// the body of `set_request_body` on stdin), run here with a real shell and curl against the
/// stand-in: the value arrives, the command line never holds it, and an error reply is reported
/// by code and message only.
#[tokio::test]
async fn the_remote_call_command_delivers_a_set_through_curl() {
    use hero_secrets::hero_proc::{assumed, parse_reply, set_request_body};
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hero_proc/rpc.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let db = Db::default();
    let app = Router::new()
        .route("/rpc", post(rpc))
        .with_state(db.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let value = "cl1ent-s3cret-'\"$(x)";
    let command = assumed::remote_call_command();
    assert!(!command.contains(value));
    let run = |body: Vec<u8>| {
        let dir = dir.path().to_owned();
        let command = command.clone();
        tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new("bash")
                .args(["-c", &command])
                .env("HERO_SOCKET_DIR", &dir)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&body).unwrap();
            child.wait_with_output().unwrap()
        })
    };
    let body = set_request_body("cockpit/FORGE_OAUTH_CLIENT_SECRET", value).unwrap();
    let out = run(body.as_bytes().to_vec()).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    parse_reply("secrets.set", &out.stdout).unwrap();
    assert_eq!(
        db.lock()
            .unwrap()
            .get(&("cockpit".to_owned(), "FORGE_OAUTH_CLIENT_SECRET".to_owned())),
        Some(&value.to_owned())
    );
    // An error reply (here: an unknown method) is an error naming code and message.
    let bad = br#"{"jsonrpc":"2.0","id":1,"method":"secrets.nope","params":{}}"#.to_vec();
    let out = run(bad).await.unwrap();
    let err = parse_reply("secrets.nope", &out.stdout).unwrap_err();
    assert!(err.contains("-32601"), "{err}");
    // No hero_proc listening: curl fails, with a non-zero exit.
    drop(server);
    std::fs::remove_file(&socket).unwrap();
    let body = set_request_body("cockpit/FORGE_OWNER", "carol").unwrap();
    let out = run(body.as_bytes().to_vec()).await.unwrap();
    assert!(!out.status.success());
}
