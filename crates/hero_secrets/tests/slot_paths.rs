//! One slot, one file: in the file store, no two slot names share a file or shadow each other,
//! whatever characters of the grammar they use (dots above all: `x` and `x.old`, `x` and
//! `x.sec/y`), and a store of the earlier layout is migrated in place.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use hero_secrets::{validate_slot, FileSecretStore, SecretStore};
use proptest::prelude::*;

/// Writes every slot (value = its own name), then checks each reads back its own value and the
/// listing is exactly the set written.
async fn all_distinct(slots: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSecretStore::open(&dir.path().join("s")).unwrap();
    let mut want = BTreeMap::new();
    for slot in slots {
        store.set(slot, &format!("value of {slot}")).await.unwrap();
        want.insert(slot.clone(), format!("value of {slot}"));
    }
    for (slot, value) in &want {
        let got = store.get(slot).await.unwrap();
        assert_eq!(
            got.as_ref().map(|v| v.expose()),
            Some(value.as_str()),
            "{slot} was overwritten or lost among {slots:?}"
        );
    }
    let listed = store.list("").await.unwrap();
    assert_eq!(
        listed,
        want.keys().cloned().collect::<Vec<_>>(),
        "listing of {slots:?}"
    );
    // Deleting one leaves every other in place.
    if let Some(first) = want.keys().next().cloned() {
        assert!(store.delete(&first).await.unwrap());
        for slot in want.keys().skip(1) {
            assert!(
                store.get(slot).await.unwrap().is_some(),
                "{slot} went with {first}"
            );
        }
    }
}

fn run(slots: Vec<String>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(all_distinct(&slots));
}

#[test]
fn names_that_aliased_in_the_earlier_layout() {
    for family in [
        &[
            "deployer/forge_admin_token",
            "deployer/forge_admin_token.old",
        ][..],
        &["a/b", "a/b.sec"],
        &["a/b", "a/b.sec/c"],
        &["a/b.sec", "a/b.sec/c", "a/b"],
        &["a/b", "a/b/c", "a/b.c", "a/b.c/d"],
        &["a/x.tar.gz", "a/x.tar", "a/x"],
        &["a/.tmp-00", "a/.hidden", "a/..x", "a/...", "a/x."],
        &["a/-", "a/_", "a/.-", "a/-.-"],
    ] {
        run(family.iter().map(|s| s.to_string()).collect());
    }
}

#[test]
fn every_character_the_grammar_allows() {
    let chars: Vec<char> = ('A'..='Z')
        .chain('a'..='z')
        .chain('0'..='9')
        .chain(['_', '-', '.'])
        .collect();
    let mut slots = Vec::new();
    for c in &chars {
        slots.push(format!("t/x{c}y"));
        slots.push(format!("t/{c}{c}{c}"));
        slots.push(format!("t{c}/z"));
        slots.push(format!("t/d{c}/z"));
    }
    slots.sort();
    slots.dedup();
    for s in &slots {
        validate_slot(s).unwrap();
    }
    run(slots);
}

/// Segments made of pieces that collide easily (dots, the old suffix, the temp prefix), so that
/// generated families are full of near-aliases.
fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "a", "B", "0", ".", "sec", "old", "tmp-", "_", "-", ".",
        ]),
        1..4,
    )
    .prop_map(|parts| parts.concat())
    .prop_filter("a grammar segment", |s| s != "." && s != "..")
}

fn slot() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 2..4).prop_map(|segments| segments.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn distinct_slots_never_share_a_file(mut slots in prop::collection::vec(slot(), 1..8)) {
        slots.retain(|s| validate_slot(s).is_ok());
        slots.sort();
        slots.dedup();
        run(slots);
    }
}

#[tokio::test]
async fn a_store_of_the_earlier_layout_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    {
        let store = FileSecretStore::open(&root).unwrap();
        store
            .set("deployer/forge_admin_token", "admin")
            .await
            .unwrap();
        store
            .set("deployer/users/3/forge_token", "t3")
            .await
            .unwrap();
    }
    // The earlier layout named the same encrypted files `<last segment>.sec`.
    let slots = root.join("slots");
    for (new, old) in [
        (
            "deployer/forge_admin_token@sec",
            "deployer/forge_admin_token.sec",
        ),
        (
            "deployer/users/3/forge_token@sec",
            "deployer/users/3/forge_token.sec",
        ),
    ] {
        std::fs::rename(slots.join(new), slots.join(old)).unwrap();
    }
    let store = FileSecretStore::open(&root).unwrap();
    assert_eq!(
        store.list("").await.unwrap(),
        ["deployer/forge_admin_token", "deployer/users/3/forge_token"]
    );
    assert_eq!(
        store
            .get("deployer/forge_admin_token")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        "admin"
    );
    assert_eq!(
        store
            .get("deployer/users/3/forge_token")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        "t3"
    );
    assert!(!slots.join("deployer/forge_admin_token.sec").exists());
    // And the migrated store no longer aliases the dotted neighbour.
    store
        .set("deployer/forge_admin_token.old", "older")
        .await
        .unwrap();
    assert_eq!(
        store
            .get("deployer/forge_admin_token")
            .await
            .unwrap()
            .unwrap()
            .expose(),
        "admin"
    );
}
