//! A crash between minting a user's Forge token and storing it leaves no orphan token: the token
//! has a fixed name per user, so the resumed `create_user` finds it (Forge refuses the name),
//! deletes it and mints the one it stores. The core against the real dev Forge over HTTP; the
//! "crash" is a secret store that fails the token's write once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hero_os_tfgrid_deployer_sdk::types::CreateUserParams;
use hero_os_tfgrid_deployer_server::audit::Actor;
use hero_os_tfgrid_deployer_server::clock::{OsRandom, SystemClock};
use hero_os_tfgrid_deployer_server::db::Db;
use hero_os_tfgrid_deployer_server::forge::http::{AdminTokenSource, HttpForge, RetryPolicy};
use hero_os_tfgrid_deployer_server::service::{slots, CoreSettings, Deployer};
use hero_secrets::{MemorySecretStore, SecretError, SecretStore, SecretValue};
use support::*;

/// The memory store, but the first write of a user's Forge token fails: what the server sees of
/// a crash right after Forge minted the token.
struct LosesFirstToken {
    inner: MemorySecretStore,
    failed: AtomicBool,
}

#[async_trait::async_trait]
impl SecretStore for LosesFirstToken {
    async fn get(&self, slot: &str) -> Result<Option<SecretValue>, SecretError> {
        self.inner.get(slot).await
    }
    async fn set(&self, slot: &str, value: &str) -> Result<(), SecretError> {
        if slot.ends_with("/forge_token") && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(SecretError::Service {
                endpoint: "test".into(),
                reason: "the server died here".into(),
            });
        }
        self.inner.set(slot, value).await
    }
    async fn delete(&self, slot: &str) -> Result<bool, SecretError> {
        self.inner.delete(slot).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, SecretError> {
        self.inner.list(prefix).await
    }
    fn kind(&self) -> &'static str {
        "test"
    }
}

#[tokio::test]
async fn a_token_minted_but_not_stored_is_replaced_not_orphaned() {
    let dir = tempfile::tempdir().unwrap();
    let forge = DevForge::start(dir.path());
    let secrets = Arc::new(LosesFirstToken {
        inner: MemorySecretStore::new(),
        failed: AtomicBool::new(false),
    });
    let d = Deployer {
        db: Db::open_in_memory().unwrap(),
        secrets: secrets.clone(),
        forge: Arc::new(
            HttpForge::new(
                &forge.url,
                Duration::from_secs(10),
                AdminTokenSource::File(forge.admin_token_file.clone()),
                RetryPolicy::default(),
                Arc::new(OsRandom),
            )
            .unwrap(),
        ),
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
        settings: Arc::new(CoreSettings {
            email_domain: "nomail.test".into(),
            user_token_scopes: vec!["read:user".into()],
        }),
    };
    let params = CreateUserParams {
        username: "olga".into(),
        display_name: None,
        email: None,
        discard_if_refused: false,
    };
    let actor = Actor::local("test");
    d.create_user(&actor, params.clone()).await.unwrap_err();
    let done = d.create_user(&actor, params).await.unwrap();
    assert!(done.forge_token_set, "{done:?}");
    let password = done.initial_password.clone().unwrap();

    // Forge holds exactly one token for olga, and it is the one the store holds.
    let http = reqwest::Client::new();
    let tokens: Vec<serde_json::Value> = http
        .get(format!("{}/api/v1/users/olga/tokens", forge.url))
        .basic_auth("olga", Some(&password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1, "orphaned tokens: {tokens:?}");
    let stored = secrets
        .get(&slots::forge_token(done.user_id))
        .await
        .unwrap()
        .unwrap();
    let me = http
        .get(format!("{}/api/v1/user", forge.url))
        .header("Authorization", format!("token {}", stored.expose()))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}
