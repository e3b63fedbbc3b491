//! Bad parameters are the caller's to fix and say so (`invalid_params`), whatever method they
//! reach: hostile secret slot names on every secret method, and list_events limits outside their
//! documented range 1..=500 (refused like list_users' and list_jobs', not clamped).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use hero_os_tfgrid_deployer_sdk::types::ListEventsParams;
use hero_os_tfgrid_deployer_sdk::ErrorKind;
use serde_json::json;
use support::*;

const BAD_SLOTS: &[&str] = &[
    "",
    "nocontext",
    "a//b",
    "/a/b",
    "a/b/",
    "../etc/passwd",
    "a/../b",
    "a/./b",
    "a/b c",
    "a/ü",
    "a/b\u{0}c",
    "a/b@sec",
    "a\\b/c",
    "a/b\n",
];

#[tokio::test]
async fn invalid_slot_names_and_limits_are_invalid_params() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        ServerOptions {
            forge_url: "http://127.0.0.1:9".into(),
            extra_env: Vec::new(),
        },
    );
    let c = &server.client;
    let long = format!("a/{}", "x".repeat(300));
    for slot in BAD_SLOTS.iter().copied().chain([long.as_str()]) {
        for (method, params) in [
            ("deployer.secret_set", json!({"slot": slot, "value": "v"})),
            ("deployer.secret_get", json!({"slot": slot})),
            ("deployer.secret_delete", json!({"slot": slot})),
        ] {
            let err = c.call_raw(method, params).await.unwrap_err();
            assert_eq!(
                err.kind(),
                Some(ErrorKind::InvalidParams),
                "{method} {slot:?}: {err}"
            );
            assert!(err.to_string().contains("invalid secret slot"), "{err}");
        }
    }
    for limit in [0u32, 501, 10_000, u32::MAX] {
        let err = c
            .list_events(&ListEventsParams {
                limit: Some(limit),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::InvalidParams), "{limit}: {err}");
        assert!(err.to_string().contains("between 1 and 500"), "{err}");
    }
    for limit in [1u32, 500] {
        c.list_events(&ListEventsParams {
            limit: Some(limit),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}
