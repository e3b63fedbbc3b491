//! The TCP listener and identity: nothing there proves who is calling, so a forged
//! `X-Hero-User` (any name, including the local operator's) gets no secret and is audited as
//! `unverified:<name>`. Real server, real dev Forge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use hero_os_tfgrid_deployer_sdk::methods::LOCAL_ONLY_METHOD_NAMES;
use hero_os_tfgrid_deployer_sdk::{Client, Endpoint, ErrorKind};
use serde_json::json;
use support::*;

/// Names a forger would send: an admin, the local operator's audit name, the system actor.
const FORGED: &[&str] = &["admin", "local:operator", "system", "forgeadmin", "alice"];

#[tokio::test]
async fn a_forged_identity_over_tcp_gets_no_secret_and_is_audited_as_unverified() {
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

    // Created over TCP: the account and its password exist, the password is not handed out.
    let created = tcp
        .acting_as("admin")
        .unwrap()
        .create_user("tina", None, None)
        .await
        .unwrap();
    assert_eq!(created.initial_password, None);
    assert!(created.user.initial_password_held && created.forge_token_set);

    // Every method the SDK marks local-only is refused over TCP, for every forged name, with
    // params that would otherwise succeed — among them `reset_forge_password`, which would hand
    // out a fresh password for the account (and so the person's SSO login to their VM).
    assert!(
        LOCAL_ONLY_METHOD_NAMES.contains(&"deployer.reset_forge_password"),
        "{LOCAL_ONLY_METHOD_NAMES:?}"
    );
    let id = created.user_id;
    let params = |method: &str| match method {
        "deployer.secret_get" | "deployer.secret_delete" => {
            json!({"slot": "deployer/forge_admin_token"})
        }
        "deployer.secret_list" => json!({}),
        "deployer.secret_set" => json!({"slot": "deployer/forge_admin_token", "value": "x"}),
        _ => json!({ "user_id": id }),
    };
    for name in FORGED {
        let forger = tcp.acting_as(name).unwrap();
        for method in LOCAL_ONLY_METHOD_NAMES {
            let err = forger.call_raw(method, params(method)).await.unwrap_err();
            assert_eq!(
                err.kind(),
                Some(ErrorKind::Forbidden),
                "{name} {method}: {err}"
            );
        }
    }
    assert_eq!(
        LOCAL_ONLY_METHOD_NAMES.len(),
        7,
        "a new local-only method needs its params above: {LOCAL_ONLY_METHOD_NAMES:?}"
    );

    // The local socket still reveals it, and it is the password Forge holds: none of the refused
    // calls above changed it.
    let local = stack.client();
    let password = local
        .reveal_initial_password(created.user_id)
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

    // The audit names the claimed identity as unverified, never as the identity itself.
    let events = local.list_events(&Default::default()).await.unwrap();
    let create = events
        .events
        .iter()
        .find(|e| e.action == "user.create")
        .unwrap();
    assert_eq!(create.actor, "unverified:admin");
    assert!(
        events
            .events
            .iter()
            .filter(|e| e.actor != "local:operator")
            .all(|e| e.actor.starts_with("unverified:")),
        "{:?}",
        events.events.iter().map(|e| &e.actor).collect::<Vec<_>>()
    );
    assert!(
        !events
            .events
            .iter()
            .any(|e| e.action == "user.reset_forge_password"),
        "a refused call never reaches the core"
    );
    let reveal = events
        .events
        .iter()
        .find(|e| e.action == "user.reveal_password")
        .unwrap();
    assert_eq!(reveal.actor, "local:operator");
}
