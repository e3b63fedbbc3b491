//! The user lifecycle against the real server binary and the real dev Forge binary, driven
//! through the SDK: happy path, adoption, duplicates, bad usernames, and no secret at rest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use hero_os_tfgrid_deployer_sdk::methods::{SecretGet, SecretSet};
use hero_os_tfgrid_deployer_sdk::types::*;
use hero_os_tfgrid_deployer_sdk::ErrorKind;
use serde_json::json;
use support::*;

#[tokio::test]
async fn create_get_list_reveal_delete() {
    let stack = Stack::start().await;
    let c = stack.client();
    let created = c
        .create_user("alice", Some("Alice Example"), None)
        .await
        .unwrap();
    assert_eq!(created.forge_username, "alice");
    assert!(created.forge_token_set);
    assert!(!created.adopted);
    let password = created.initial_password.clone().unwrap();
    assert_eq!(password.len(), 32);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(created.user.email, "alice@nomail.demo.ourworld.tf");
    assert!(created.user.setup_complete);

    // The password really opens the Forge account, and the stored token is alice's.
    let http = reqwest::Client::new();
    let me = http
        .get(format!("{}/api/v1/user", stack.forge.url))
        .basic_auth("alice", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let token = c
        .call::<SecretGet>(&SecretSlotParams {
            slot: format!("deployer/users/{}/forge_token", created.user_id),
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
    assert_eq!(me["login"], "alice");

    let got = c.get_user(created.user_id).await.unwrap();
    assert_eq!(got, created.user);
    assert_eq!(c.find_user("alice").await.unwrap(), got);

    let page = c.list_users(&ListUsersParams::default()).await.unwrap();
    assert_eq!(page.total, 1);

    let revealed = c.reveal_initial_password(created.user_id).await.unwrap();
    assert_eq!(revealed.initial_password, password);

    let deleted = c.delete_user(created.user_id).await.unwrap();
    assert!(!deleted.forge_user_deleted);
    let err = c.get_user(created.user_id).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NotFound));
    // Secrets are gone, the Forge account stays.
    let slots = c
        .call::<hero_os_tfgrid_deployer_sdk::methods::SecretList>(&SecretListParams {
            prefix: Some(format!("deployer/users/{}/", created.user_id)),
        })
        .await
        .unwrap();
    assert!(slots.slots.is_empty());
    let still = stack.forge.admin_get("/api/v1/users/alice").await;
    assert_eq!(still.status(), 200);

    // The audit log tells the story, oldest last.
    let events = c.list_events(&ListEventsParams::default()).await.unwrap();
    let actions: Vec<&str> = events.events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user.delete",
            "user.reveal_password",
            "secret.get",
            "user.create",
            "secret.set"
        ]
    );
    assert!(events.events.iter().all(|e| e.actor == "local:operator"));
}

#[tokio::test]
async fn duplicate_create_is_already_exists_with_the_record() {
    let stack = Stack::start().await;
    let c = stack.client();
    let first = c.create_user("bob", None, None).await.unwrap();
    let err = c.create_user("bob", None, None).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::AlreadyExists));
    let hero_os_tfgrid_deployer_sdk::ClientError::Rpc(rpc) = err else {
        panic!()
    };
    let detail = rpc.data.unwrap().detail.unwrap();
    assert_eq!(detail["user_id"], json!(first.user_id));
    assert_eq!(detail["forge_username"], "bob");
}

#[tokio::test]
async fn an_existing_forge_account_is_adopted_without_a_token() {
    let stack = Stack::start().await;
    // Someone created carol on Forge directly.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/api/v1/admin/users", stack.forge.url))
        .header("Authorization", format!("token {}", stack.forge.admin_token()))
        .json(&json!({"username":"carol","email":"carol@example.org","password":"Secret-pass-123","must_change_password":false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created = stack
        .client()
        .create_user("carol", None, None)
        .await
        .unwrap();
    assert!(created.adopted);
    assert!(!created.forge_token_set);
    assert_eq!(created.initial_password, None);
    assert!(created
        .forge_token_note
        .unwrap()
        .contains("bring their own token"));
    let err = stack
        .client()
        .reveal_initial_password(created.user_id)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::FailedPrecondition));
}

#[tokio::test]
async fn invalid_usernames_are_rejected_before_any_network_call() {
    // Forge points at a closed port: an invalid name must fail on the rule, not on Forge.
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: url,
            extra_env: vec![],
        },
    );
    let long = "a".repeat(41);
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        (&long, "too_long"),
        ("Alice", "uppercase"),
        ("jürgen", "not_ascii"),
        ("..", "bad_character"),
        ("a.b", "bad_character"),
        ("admin", "reserved"),
        ("-x", "bad_start"),
        ("x-", "bad_end"),
        ("a--b", "double_hyphen"),
    ];
    for (name, rule) in cases {
        let err = server
            .client
            .create_user(name, None, None)
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            Some(ErrorKind::InvalidUsername),
            "{name:?}: {err}"
        );
        let hero_os_tfgrid_deployer_sdk::ClientError::Rpc(rpc) = err else {
            panic!()
        };
        assert_eq!(rpc.data.unwrap().detail.unwrap()["rule"], *rule, "{name:?}");
    }
    // A valid name reaches Forge, which is down: a precise error, and an audit event.
    let err = server
        .client
        .create_user("dave", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::ForgeAuthRejected), "{err}");
    assert!(
        err.to_string()
            .contains("secret set deployer/forge_admin_token"),
        "{err}"
    );
    server.set_admin_token("not-a-real-token").await;
    let err = server
        .client
        .create_user("dave", None, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::ForgeUnavailable), "{err}");
    let events = server
        .client
        .list_events(&ListEventsParams {
            subject: Some("user:dave".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.events.len(), 2);
    assert!(events.events[0]
        .outcome
        .starts_with("error:forge_unavailable"));
    assert!(events.events[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("run create_user again"));
    // The half-made record is visible as incomplete, never silently lost.
    let dave = server.client.find_user("dave").await.unwrap();
    assert!(!dave.setup_complete);
}

#[tokio::test]
async fn no_secret_is_in_the_database_or_the_log() {
    let stack = Stack::start().await;
    let c = stack.client();
    let mut secrets = vec![stack.forge.admin_token()];
    for name in ["erin", "frank", "deployer_test_grace"] {
        let r = c.create_user(name, None, None).await.unwrap();
        secrets.push(r.initial_password.unwrap());
        secrets.push(
            c.call::<SecretGet>(&SecretSlotParams {
                slot: format!("deployer/users/{}/forge_token", r.user_id),
            })
            .await
            .unwrap()
            .value,
        );
    }
    c.call::<SecretSet>(&SecretSetParams {
        slot: "cockpit/EXTRA".into(),
        value: "extra-secret-value-123".into(),
    })
    .await
    .unwrap();
    secrets.push("extra-secret-value-123".into());

    let data = stack.server.data_dir();
    let files = all_bytes_under(&data);
    assert!(files.iter().any(|(p, _)| p.ends_with("state.db")));
    let log = stack.server.log_text();
    assert!(log.contains("user ready"), "log is empty?");
    for secret in &secrets {
        assert!(secret.len() >= 16);
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, secret),
                "a secret is in clear in {}",
                path.display()
            );
        }
        assert!(
            !log.contains(secret.as_str()),
            "a secret is in the server log"
        );
    }
}

#[tokio::test]
async fn list_users_pages_are_stable_and_filtered() {
    let stack = Stack::start().await;
    let c = stack.client();
    for name in ["ann", "anna", "annie", "bert", "ann-b"] {
        c.create_user(name, None, None).await.unwrap();
    }
    // Pages of two users whose names start with "ann", after `cursor` or before `before`.
    let ann = |cursor: Option<String>, before: Option<String>| {
        let params = ListUsersParams {
            filter: Some("ann".into()),
            limit: Some(2),
            cursor,
            before,
            expires_before: None,
        };
        async move { c.list_users(&params).await.unwrap() }
    };
    let names_of = |p: &UsersPage| -> Vec<String> {
        p.users.iter().map(|u| u.forge_username.clone()).collect()
    };
    let page = ann(None, None).await;
    assert_eq!(page.total, 4);
    assert_eq!(names_of(&page), ["ann", "ann-b"]);
    // An insert before the cursor does not shift the next page.
    c.create_user("ann-a", None, None).await.unwrap();
    let next = ann(page.next_cursor.clone(), None).await;
    assert_eq!(names_of(&next), ["anna", "annie"]);
    assert_eq!(next.next_cursor, None);
    assert_eq!(
        page.prev_cursor, None,
        "the first page has nothing before it"
    );
    // Backwards from the last page: the insert shows up, and the first page has no previous.
    let back = ann(None, next.prev_cursor.clone()).await;
    assert_eq!(names_of(&back), ["ann-a", "ann-b"]);
    assert!(back.next_cursor.is_some());
    let first = ann(None, back.prev_cursor.clone()).await;
    assert_eq!(names_of(&first), ["ann"]);
    assert_eq!(first.prev_cursor, None);
    // ...and forward again from there lands where we came from.
    let again = ann(first.next_cursor.clone(), None).await;
    assert_eq!(names_of(&again), ["ann-a", "ann-b"]);
    let err = c
        .list_users(&ListUsersParams {
            cursor: first.next_cursor.clone(),
            before: back.prev_cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InvalidParams));
    let err = c
        .list_users(&ListUsersParams {
            limit: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InvalidParams));
    let err = c
        .list_users(&ListUsersParams {
            cursor: Some("!!".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::InvalidParams));
}

/// A create that Forge refused (the email is taken) leaves a pending record; the call that finishes it with
/// another email and display name makes the account with those, and the record says what Forge holds. Before, the
/// record kept the first call's values.
#[tokio::test]
async fn a_resumed_create_records_what_forge_holds() {
    let stack = Stack::start().await;
    let c = stack.client();
    c.create_user("holder", None, Some("taken@x.test"))
        .await
        .unwrap();
    let err = c
        .create_user("zed", Some("Old Name"), Some("taken@x.test"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::ForgeConflict), "{err}");
    let done = c
        .create_user("zed", Some("New Name"), Some("fresh@x.test"))
        .await
        .unwrap();
    let user = c.get_user(done.user_id).await.unwrap();
    assert_eq!(user.email, "fresh@x.test");
    assert_eq!(user.display_name.as_deref(), Some("New Name"));
    let forge: serde_json::Value = stack
        .forge
        .admin_get("/api/v1/users/zed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(forge["email"], "fresh@x.test");
    assert_eq!(forge["full_name"], "New Name");
}
