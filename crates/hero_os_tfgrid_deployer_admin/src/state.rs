//! Shared state of the dashboard.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hero_os_tfgrid_deployer_sdk::Client;
use hero_secrets::SecretStore;

use crate::auth::AuthMode;
use crate::csrf::CsrfKey;
use crate::once::OnceTokens;

/// Secret slot holding the comma-separated Forge usernames allowed in.
pub const ALLOWLIST_SLOT: &str = hero_secrets::slots::ADMIN_FORGE_USERS;

/// Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    auth: AuthMode,
    secrets: Arc<dyn SecretStore>,
    csrf: CsrfKey,
    /// Claimed one-time form tokens ([`crate::once`]).
    once: Arc<OnceTokens>,
    /// One SDK client per acting admin, so their connections are pooled.
    acting: Mutex<HashMap<String, Client>>,
}

/// Largest number of per-admin clients kept.
const MAX_ACTING: usize = 256;

impl AppState {
    pub fn new(client: Client, auth: AuthMode, secrets: Arc<dyn SecretStore>) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                client,
                auth,
                secrets,
                csrf: CsrfKey::random(),
                once: Arc::new(OnceTokens::default()),
                acting: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn auth(&self) -> &AuthMode {
        &self.inner.auth
    }

    pub fn secrets(&self) -> &dyn SecretStore {
        self.inner.secrets.as_ref()
    }

    pub fn csrf(&self) -> &CsrfKey {
        &self.inner.csrf
    }

    /// The claimed one-time form tokens.
    pub fn once(&self) -> Arc<OnceTokens> {
        self.inner.once.clone()
    }

    /// The SDK client acting for `user`: every call carries `X-Hero-User: user`, so the server's
    /// audit log names the admin.
    pub fn client_for(
        &self,
        user: &str,
    ) -> Result<Client, hero_os_tfgrid_deployer_sdk::ClientError> {
        if let Ok(map) = self.inner.acting.lock() {
            if let Some(c) = map.get(user) {
                return Ok(c.clone());
            }
        }
        let client = self.inner.client.acting_as(user)?;
        if let Ok(mut map) = self.inner.acting.lock() {
            if map.len() >= MAX_ACTING {
                map.clear();
            }
            map.insert(user.to_owned(), client.clone());
        }
        Ok(client)
    }
}
