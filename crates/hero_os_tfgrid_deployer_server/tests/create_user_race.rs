//! Concurrent `create_user` of one name, against the real server and the dev Forge: exactly one
//! caller creates the account, every other gets `already_exists` with that record, and the
//! password the store holds is the one Forge accepts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use hero_os_tfgrid_deployer_sdk::methods::SecretGet;
use hero_os_tfgrid_deployer_sdk::types::*;
use hero_os_tfgrid_deployer_sdk::{Client, ClientError, ErrorKind};
use support::*;

/// Callers per name: more than the server's reader pool and worker threads, so they really
/// overlap inside create_user instead of running one after the other.
const CALLERS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_creates_of_one_name_create_once_and_keep_the_password_forge_holds() {
    let stack = Stack::start().await;
    let names = ["race-a", "race-b", "race-c"];
    // Every caller is its own client (its own connection), all released at once.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(names.len() * CALLERS));
    let mut tasks = Vec::new();
    for name in names {
        for _ in 0..CALLERS {
            let client = Client::new(hero_os_tfgrid_deployer_sdk::Endpoint::Unix(
                stack.server.socket.clone(),
            ));
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                (name, client.create_user(name, None, None).await)
            }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }

    let c = stack.client();
    let http = reqwest::Client::new();
    for name in names {
        let mine: Vec<_> = results.iter().filter(|(n, _)| *n == name).collect();
        let created: Vec<&CreateUserResult> =
            mine.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
        assert_eq!(
            created.len(),
            1,
            "{name}: exactly one caller creates; results: {:?}",
            mine.iter()
                .map(|(_, r)| r.as_ref().map(|c| c.adopted).map_err(ToString::to_string))
                .collect::<Vec<_>>()
        );
        let created = created[0];
        assert!(!created.adopted && created.forge_token_set, "{created:?}");
        for (_, r) in &mine {
            if let Err(e) = r {
                assert_eq!(e.kind(), Some(ErrorKind::AlreadyExists), "{name}: {e}");
                let ClientError::Rpc(rpc) = e else {
                    panic!("{e}")
                };
                let detail = rpc.data.as_ref().unwrap().detail.as_ref().unwrap();
                assert_eq!(detail["user_id"], serde_json::json!(created.user_id));
            }
        }

        // The store holds what Forge holds: the returned, the revealed and Forge's password agree.
        let password = created.initial_password.clone().unwrap();
        let revealed = c.reveal_initial_password(created.user_id).await.unwrap();
        assert_eq!(revealed.initial_password, password);
        let me = http
            .get(format!("{}/api/v1/user", stack.forge.url))
            .basic_auth(name, Some(&password))
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200, "{name}: Forge refuses the held password");
        let user = c.find_user(name).await.unwrap();
        assert!(user.setup_complete && user.initial_password_held && user.forge_token_set);
        let token = c
            .call::<SecretGet>(&SecretSlotParams {
                slot: format!("deployer/users/{}/forge_token", user.user_id),
            })
            .await
            .unwrap()
            .value;
        let me: serde_json::Value = http
            .get(format!("{}/api/v1/user", stack.forge.url))
            .header("Authorization", format!("token {token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["login"], name);
    }
}

/// Concurrent `reset_forge_password` of one user (two admins, a double click): they run one after
/// the other, so the password held at the end is the one Forge accepts (and one a caller was shown).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_password_resets_of_one_user_leave_the_held_password_the_one_forge_holds() {
    let stack = Stack::start().await;
    let c = stack.client();
    let created = c.create_user("reset-race", None, None).await.unwrap();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CALLERS));
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let client = Client::new(hero_os_tfgrid_deployer_sdk::Endpoint::Unix(
            stack.server.socket.clone(),
        ));
        let start = start.clone();
        let id = created.user_id;
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            client.reset_forge_password(id).await
        }));
    }
    let mut shown = Vec::new();
    for t in tasks {
        shown.push(t.await.unwrap().unwrap().new_password);
    }
    let held = c
        .reveal_initial_password(created.user_id)
        .await
        .unwrap()
        .initial_password;
    assert!(
        shown.contains(&held),
        "the held password was shown to a caller"
    );
    let http = reqwest::Client::new();
    let me = http
        .get(format!("{}/api/v1/user", stack.forge.url))
        .basic_auth("reset-race", Some(&held))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "Forge refuses the held password");
    // Every reset is audited once, all ok.
    let events = c.list_events(&Default::default()).await.unwrap();
    let resets = events
        .events
        .iter()
        .filter(|e| e.action == "user.reset_forge_password")
        .collect::<Vec<_>>();
    assert_eq!(resets.len(), CALLERS);
    assert!(resets.iter().all(|e| e.outcome == "ok"), "{resets:?}");
}
