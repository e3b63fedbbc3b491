//! The TCP listener and identity: nothing there proves who is calling, so TCP is read-only — a
//! forged `X-Hero-User` (any name, including the local operator's) or none changes nothing and
//! gets no secret. Real server, real dev Forge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use hero_os_tfgrid_deployer_sdk::methods::{
    ALL_METHOD_NAMES, LOCAL_ONLY_METHOD_NAMES, READ_METHOD_NAMES,
};
use hero_os_tfgrid_deployer_sdk::{Client, Endpoint, ErrorKind};
use serde_json::json;
use support::*;

/// Names a forger would send: an admin, the local operator's audit name, the system actor.
const FORGED: &[&str] = &["admin", "local:operator", "system", "forgeadmin", "alice"];

#[tokio::test]
async fn over_tcp_only_reads_are_served_whoever_claims_to_call() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stack = Stack::start_with(vec![(
        "HERO_DEPLOYER_TCP_LISTEN".into(),
        format!("127.0.0.1:{port}"),
    )])
    .await;
    let tcp = Client::new(Endpoint::Tcp(format!("127.0.0.1:{port}")));
    let local = stack.client();
    let created = local.create_user("tina", None, None).await.unwrap();
    let id = created.user_id;

    // Reads are served over TCP.
    assert_eq!(tcp.get_user(id).await.unwrap().forge_username, "tina");

    // Every other method is refused over TCP, for every forged name, with params that would otherwise do
    // something — among them `create_user` (a Forge account made with the admin token), `delete_user`,
    // `provision_vm` (which spends TFT) and `reset_forge_password`, which would hand out a fresh password for the
    // account (and so the person's SSO login to their VM).
    assert!(
        LOCAL_ONLY_METHOD_NAMES.contains(&"deployer.reset_forge_password"),
        "{LOCAL_ONLY_METHOD_NAMES:?}"
    );
    let params = |method: &str| match method {
        "deployer.secret_get" | "deployer.secret_delete" => {
            json!({"slot": "deployer/forge_admin_token"})
        }
        "deployer.secret_list" => json!({}),
        "deployer.secret_set" => json!({"slot": "deployer/forge_admin_token", "value": "x"}),
        "deployer.create_user" => json!({"username": "mallory"}),
        "deployer.reconcile" => json!({"fix": true}),
        "deployer.forget_vm" => json!({"user_id": id, "force": true}),
        "deployer.check_health" => json!({}),
        "deployer.cancel_job" | "deployer.retry_job" => json!({"job_id": 1}),
        _ => json!({ "user_id": id }),
    };
    let refused: Vec<&str> = ALL_METHOD_NAMES
        .iter()
        .copied()
        .filter(|m| !READ_METHOD_NAMES.contains(m))
        .collect();
    assert!(refused.len() >= 15, "{refused:?}");
    for name in FORGED.iter().map(Some).chain([None]) {
        let caller = match name {
            Some(name) => tcp.acting_as(name).unwrap(),
            None => tcp.clone(),
        };
        for method in &refused {
            let err = caller.call_raw(method, params(method)).await.unwrap_err();
            assert_eq!(
                err.kind(),
                Some(ErrorKind::Forbidden),
                "{name:?} {method}: {err}"
            );
        }
    }

    // None of the refused calls reached the core: no account, no job, the same password on Forge.
    assert_eq!(
        local.find_user("mallory").await.unwrap_err().kind(),
        Some(ErrorKind::NotFound)
    );
    let password = local
        .reveal_initial_password(id)
        .await
        .unwrap()
        .initial_password;
    let me = reqwest::Client::new()
        .get(format!("{}/api/v1/user", stack.forge.url))
        .basic_auth("tina", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let events = local.list_events(&Default::default()).await.unwrap();
    assert!(
        events.events.iter().all(|e| e.actor == "local:operator"),
        "{:?}",
        events
            .events
            .iter()
            .map(|e| (&e.actor, &e.action))
            .collect::<Vec<_>>()
    );
}
