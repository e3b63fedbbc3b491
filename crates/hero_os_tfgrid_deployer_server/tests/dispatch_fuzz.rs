//! Property test: whatever bytes arrive on `/rpc`, the dispatcher answers a well-formed JSON-RPC
//! response (or nothing, for notifications) and never panics. Runs the real registry in process
//! with an in-memory state and a Forge that is never reached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use hero_os_tfgrid_deployer_server::audit::Actor;
use hero_os_tfgrid_deployer_server::clock::{OsRandom, SystemClock};
use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::forge::fake::{FakeForge, Mode};
use hero_os_tfgrid_deployer_server::rpc::handlers::ServerFacts;
use hero_os_tfgrid_deployer_server::rpc::{Caller, Registry};
use hero_os_tfgrid_deployer_server::service::{CoreSettings, Deployer};
use hero_secrets::MemorySecretStore;
use proptest::prelude::*;
use serde_json::Value;

fn registry() -> Registry {
    let deployer = Deployer {
        db: Db::open_in_memory().unwrap(),
        secrets: Arc::new(MemorySecretStore::new()),
        forge: Arc::new(FakeForge::with_mode(Mode::NoAdminToken)),
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
        settings: Arc::new(CoreSettings {
            email_domain: "nomail.test".into(),
            user_token_scopes: vec![],
        }),
    };
    hero_os_tfgrid_deployer_server::registry(
        deployer,
        ServerFacts {
            forge_version: None,
            data_dir: "/nowhere".into(),
            started_at: 0,
            profiles: vec!["demo".into()],
            default_profile: "demo".into(),
        },
    )
}

fn check_response(v: &Value) {
    let one = |r: &Value| {
        assert_eq!(r["jsonrpc"], "2.0", "{r}");
        assert!(r.get("id").is_some(), "{r}");
        assert!(r.get("result").is_some() ^ r.get("error").is_some(), "{r}");
        if let Some(e) = r.get("error") {
            assert!(e["code"].is_i64() && e["message"].is_string(), "{r}");
        }
    };
    match v {
        Value::Array(items) => items.iter().for_each(one),
        other => one(other),
    }
}

/// JSON values shaped like (possibly broken) JSON-RPC requests.
fn request_like() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        Just(Value::String("deployer.get_user".into())),
        Just(Value::String("deployer.list_users".into())),
        Just(Value::String("deployer.create_user".into())),
        Just(Value::String("deployer.list_events".into())),
        Just(Value::String("rpc.discover".into())),
        any::<String>().prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    let params = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("user_id".to_owned()),
                    Just("username".to_owned()),
                    Just("limit".to_owned()),
                    Just("cursor".to_owned()),
                    any::<String>()
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (
        method,
        params,
        prop::option::of(any::<i64>()),
        any::<bool>(),
    )
        .prop_map(|(m, p, id, v2)| {
            let mut o = serde_json::Map::new();
            if v2 {
                o.insert("jsonrpc".into(), "2.0".into());
            }
            o.insert("method".into(), m);
            o.insert("params".into(), p);
            if let Some(id) = id {
                o.insert("id".into(), id.into());
            }
            Value::Object(o)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let reg = registry();
        let caller = Caller { actor: Actor::local("fuzz"), local: true };
        if let Some(v) = rt.block_on(reg.handle_body(&caller, &body)) {
            check_response(&v);
        }
    }

    #[test]
    fn request_shaped_json_gets_well_formed_answers(reqs in prop::collection::vec(request_like(), 1..4), batch in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let reg = registry();
        let caller = Caller { actor: Actor::local("fuzz"), local: true };
        let body = if batch { Value::Array(reqs) } else { reqs[0].clone() };
        if let Some(v) = rt.block_on(reg.handle_body(&caller, body.to_string().as_bytes())) {
            check_response(&v);
        }
    }
}

/// A batch is answered in order up to `MAX_BATCH` requests; a longer one is refused whole, before anything in it
/// runs (a batch of 2000 `rpc.discover` used to hold 96 MB of answers at once).
#[test]
fn batches_are_bounded_and_answered_in_order() {
    use hero_os_tfgrid_deployer_server::rpc::MAX_BATCH;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reg = registry();
    let caller = Caller {
        actor: Actor::local("fuzz"),
        local: true,
    };
    let batch = |n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|i| serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "rpc.discover"}))
            .collect();
        Value::Array(items).to_string()
    };
    let v = rt
        .block_on(reg.handle_body(&caller, batch(MAX_BATCH).as_bytes()))
        .unwrap();
    // Answered in order; the document once (a batch of 50 discovers held 21 MB), the rest refused by name.
    let ids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            if r["id"] == 0 {
                assert!(r["result"]["openrpc"].is_string(), "{r}");
            } else {
                assert_eq!(r["error"]["code"], -32600, "{r}");
                assert!(
                    r["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("once per batch"),
                    "{r}"
                );
            }
            r["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids, (0..MAX_BATCH as u64).collect::<Vec<_>>());
    for n in [MAX_BATCH + 1, 2000] {
        let v = rt
            .block_on(reg.handle_body(&caller, batch(n).as_bytes()))
            .unwrap();
        assert_eq!(v["error"]["code"], -32600, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("a batch of {n} requests; at most {MAX_BATCH}")),
            "{v}"
        );
    }
}
