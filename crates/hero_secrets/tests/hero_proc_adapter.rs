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
