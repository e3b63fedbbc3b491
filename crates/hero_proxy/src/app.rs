//! The proxy's shared state and its boot sequence (providers, signing key).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use hero_identity::AssertionSigner;
use hero_secrets::{SecretStore, SecretValue};

use crate::clock::Clock;
use crate::config::{Config, RouteConfig};
use crate::error::{ProxyError, Result};
use crate::login::Logins;
use crate::oidc::{Provider, FORGE_SCOPE};
use crate::routes::{Route, Routes};
use crate::session::Sessions;
use crate::store::{ProviderRow, Store, User};
use crate::vault::TokenVault;

/// Secret slots read at boot to seed the `forge` provider.
pub const SEED_CLIENT_ID: &str = hero_secrets::slots::COCKPIT_OAUTH_CLIENT_ID;
/// See [`SEED_CLIENT_ID`].
pub const SEED_CLIENT_SECRET: &str = hero_secrets::slots::COCKPIT_OAUTH_CLIENT_SECRET;
/// See [`SEED_CLIENT_ID`].
pub const SEED_ISSUER: &str = hero_secrets::slots::COCKPIT_OAUTH_ISSUER;
/// Forge usernames allowed on `admin` routes, comma- or newline-separated; read on every admin request.
pub const ADMIN_ALLOWLIST_SLOT: &str = hero_secrets::slots::ADMIN_FORGE_USERS;
/// The Forge login `owner` routes admit (besides admins); read on every owner request.
pub const OWNER_SLOT: &str = hero_secrets::slots::COCKPIT_FORGE_OWNER;
/// The Ed25519 seed of the assertion signer (hex).
pub const ASSERTION_SEED_SLOT: &str = hero_secrets::slots::PROXY_ASSERTION_SEED;

/// Slot of a provider's client secret.
pub fn client_secret_slot(provider: &str) -> String {
    hero_secrets::slots::proxy_provider_client_secret(provider)
}

/// Everything a request handler needs.
pub struct App {
    /// Configuration.
    pub cfg: Config,
    /// Route table: the hot path takes a read lock and clones one `Arc<Route>`; edits swap the whole table.
    pub routes: RwLock<Routes>,
    /// Serialises route edits (write to sqlite + rebuild), so a slower edit never installs a stale table.
    routes_edit: Mutex<()>,
    /// Database.
    pub store: Arc<Store>,
    /// Secret store.
    pub secrets: Arc<dyn SecretStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Sessions.
    pub sessions: Sessions,
    /// Tokens.
    pub vault: TokenVault,
    /// Providers by id.
    pub providers: RwLock<HashMap<String, Arc<Provider>>>,
    /// Logins in flight.
    pub logins: Logins,
    /// Assertion signer.
    pub signer: AssertionSigner,
    /// Served at `/.well-known/hero-proxy-key`.
    pub jwks_body: Bytes,
    /// The owner login last read from the slot, so a change is noticed once (see [`App::owner_allowed`]).
    owner_seen: Mutex<Option<String>>,
}

impl App {
    /// Builds the state: opens nothing itself except what `store` and `secrets` already are.
    pub async fn new(
        cfg: Config,
        store: Arc<Store>,
        secrets: Arc<dyn SecretStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<App> {
        let seed = cfg
            .routes
            .iter()
            .map(|c| Route::from_config(c).map(|r| r.to_config()))
            .collect::<Result<Vec<_>>>()?;
        let mut ids = BTreeSet::new();
        for r in &seed {
            if let Some(id) = r.id.as_deref().filter(|id| !ids.insert(id.to_owned())) {
                return Err(ProxyError::Config(format!("two routes have the id {id:?}")));
            }
        }
        store.seed_routes(&seed)?;
        let routes = load_routes(&store)?;
        if cfg.keep_tokens == crate::config::KeepTokens::Everyone
            && routes
                .iter()
                .any(|r| r.policy == crate::routes::Policy::Owner)
        {
            // An `owner` route means a machine that is someone's; its vault would keep every visitor's tokens.
            tracing::warn!("owner routes are served but keep_tokens = \"everyone\": every admin who signs in here leaves Forge tokens on this machine; set keep_tokens = \"owner\"");
        }
        for target in cfg.group_map.values().flatten() {
            crate::claims::validate_group_name(target)
                .map_err(|e| ProxyError::Config(format!("group_map target: {e}")))?;
            if target == crate::claims::ADMIN_GROUP {
                return Err(ProxyError::Config(
                    "group_map cannot target the admin group (it follows is_admin)".into(),
                ));
            }
        }
        let signer = load_signer(secrets.as_ref()).await?;
        let jwks_body = Bytes::from(signer.public_jwks().to_string());
        let app = App {
            sessions: Sessions::new(
                store.clone(),
                cfg.session_idle_secs,
                cfg.session_absolute_secs,
            ),
            vault: TokenVault::new(secrets.clone(), store.clone()),
            logins: Logins::new(cfg.login_state_ttl_secs, cfg.login_used_max),
            routes: RwLock::new(Routes::new(routes)),
            routes_edit: Mutex::new(()),
            providers: RwLock::new(HashMap::new()),
            cfg,
            store,
            secrets,
            clock,
            signer,
            jwks_body,
            owner_seen: Mutex::new(None),
        };
        app.seed_providers().await?;
        app.reload_providers().await?;
        Ok(app)
    }

    /// Writes providers from the secret store seed and from the config file into sqlite (secrets into slots).
    async fn seed_providers(&self) -> Result<()> {
        let id = self.secrets.get(SEED_CLIENT_ID).await?;
        let issuer = self.secrets.get(SEED_ISSUER).await?;
        if let (Some(id), Some(issuer)) = (id, issuer) {
            if let Some(sec) = self.secrets.get(SEED_CLIENT_SECRET).await? {
                self.secrets
                    .set(&client_secret_slot("forge"), sec.expose())
                    .await?;
            }
            self.store.upsert_provider(&ProviderRow {
                id: "forge".into(),
                issuer: issuer.expose().trim().to_owned(),
                client_id: id.expose().trim().to_owned(),
                scope: FORGE_SCOPE.into(),
            })?;
            tracing::info!("provider forge seeded from the secret store");
        }
        for p in &self.cfg.providers {
            if let Some(f) = &p.client_secret_file {
                let s = std::fs::read_to_string(f).map_err(|e| {
                    ProxyError::Config(format!("client_secret_file {}: {e}", f.display()))
                })?;
                self.secrets
                    .set(&client_secret_slot(&p.id), s.trim())
                    .await?;
            }
            self.store.upsert_provider(&ProviderRow {
                id: p.id.clone(),
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                scope: p.scope.clone().unwrap_or_else(|| FORGE_SCOPE.into()),
            })?;
        }
        Ok(())
    }

    /// Rebuilds the provider objects from sqlite + secret slots (after boot and after `oauth.set_provider`).
    pub async fn reload_providers(&self) -> Result<()> {
        let mut map = HashMap::new();
        for row in self.store.providers()? {
            let secret: Option<SecretValue> =
                self.secrets.get(&client_secret_slot(&row.id)).await?;
            let p = Provider::new(&row.id, &row.issuer, &row.client_id, secret, &row.scope)?;
            map.insert(row.id.clone(), Arc::new(p));
        }
        *self.providers.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }

    /// Adds or replaces a route by id (validated: bad policy, claim rule, upstream, path or a second route on the
    /// same host and prefix → `Invalid`), persists it and installs the new table for the next request.
    pub fn set_route(&self, c: &RouteConfig) -> Result<Route> {
        let route = Route::from_config(c).map_err(|e| match e {
            ProxyError::Config(m) => ProxyError::Invalid(m),
            other => other,
        })?;
        let _edit = self.routes_edit.lock().unwrap_or_else(|e| e.into_inner());
        let clash = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all()
            .iter()
            .find(|r| r.id != route.id && r.host == route.host && r.path == route.path)
            .map(|r| r.id.clone());
        if let Some(other) = clash {
            return Err(ProxyError::Invalid(format!(
                "route {other:?} already serves this host and path"
            )));
        }
        self.store.set_route(&route.to_config())?;
        self.install_routes()?;
        Ok(route)
    }

    /// Removes a route by id; `false` if there was none. Applies on the next request.
    pub fn remove_route(&self, id: &str) -> Result<bool> {
        let _edit = self.routes_edit.lock().unwrap_or_else(|e| e.into_inner());
        let removed = self.store.remove_route(id)?;
        self.install_routes()?;
        Ok(removed)
    }

    fn install_routes(&self) -> Result<()> {
        let table = Routes::new(load_routes(&self.store)?);
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = table;
        self.sessions.access_changed();
        Ok(())
    }

    /// A provider by id.
    pub fn provider(&self, id: &str) -> Option<Arc<Provider>> {
        self.providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The admin allowlist, re-read from the secret store on every call (so a change applies on the next request);
    /// bindings of names no longer on it are forgotten here, so re-adding a name re-binds it.
    pub async fn admin_allowlist(&self) -> Result<BTreeSet<String>> {
        let list: BTreeSet<String> = self
            .secrets
            .get(ADMIN_ALLOWLIST_SLOT)
            .await?
            .map(|v| hero_secrets::slots::parse_login_list(v.expose()))
            .unwrap_or_default();
        self.store.prune_admin_bindings(&list)?;
        Ok(list)
    }

    /// Is this user allowed on admin routes? The one rule, used by requests and the sweep.
    ///
    /// Why not the name alone: a login name is only meaningful on the provider that issued it (another
    /// provider's `alice` is someone else), and even there a name can change hands (an account deleted and
    /// recreated). So a name on the allowlist admits only a user of `admin_provider` whose login, as that provider
    /// last confirmed it at sign-in, is the name (`Store::provision` takes a name away from a row when another
    /// account proves it), and only the account first admitted under that name (`Store::bind_admin`). The local
    /// claim `groups.admin` (set over the admin RPC on one user row) admits whatever the provider.
    pub fn admin_allowed(
        &self,
        list: &BTreeSet<String>,
        user: &crate::store::User,
        claims: &[hero_identity::Claim],
    ) -> Result<bool> {
        if claims.iter().any(|c| c.as_str() == "groups.admin") {
            return Ok(true);
        }
        let name = user.forge_username.to_ascii_lowercase();
        if user.provider != self.cfg.admin_provider || name.is_empty() || !list.contains(&name) {
            return Ok(false);
        }
        let bound =
            self.store
                .bind_admin(&name, &user.provider, &user.external_id, self.clock.now())?;
        if !bound {
            tracing::warn!(user = %user.username, login = %name,
                "allowlisted name is bound to another account of the provider; refused");
        }
        Ok(bound)
    }

    /// Is this user the machine's owner (`owner` routes)? The login in [`OWNER_SLOT`], on `admin_provider`,
    /// compared with the login that provider last confirmed for this user row (`Store::provision` clears a row's
    /// login when another account proves the name) — never the local username, which a second provider's
    /// `carol` could hold — and, like an admin name, only for the account first admitted under it
    /// (`Store::bind_owner`): a Forge account deleted and recreated with the owner's name is someone else. Read
    /// on every request, so a changed owner takes effect at once; an absent or empty slot admits nobody (fail
    /// closed: only admins pass).
    pub async fn owner_allowed(&self, user: &crate::store::User) -> Result<bool> {
        let owner = match self.secrets.get(OWNER_SLOT).await? {
            Some(v) => v.expose().trim().to_ascii_lowercase(),
            None => String::new(),
        };
        {
            // A changed owner forgets the old binding (the one write, only when the slot changed).
            let mut seen = self.owner_seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.as_deref() != Some(owner.as_str()) {
                self.store.prune_owner_binding(&owner)?;
                *seen = Some(owner.clone());
            }
        }
        if owner.is_empty()
            || user.provider != self.cfg.admin_provider
            || user.forge_username.to_ascii_lowercase() != owner
        {
            return Ok(false);
        }
        let bound =
            self.store
                .bind_owner(&owner, &user.provider, &user.external_id, self.clock.now())?;
        if !bound {
            tracing::warn!(user = %user.username, login = %owner,
                "the owner's login is bound to another account of the provider; refused");
        }
        Ok(bound)
    }

    /// Ends every timed-out session ([`Sessions::sweep`]) and forgets the Forge tokens of whoever has no session
    /// left (periodic), as a sign-out of the last session does. Returns how many people lost a session.
    pub async fn sweep_sessions(&self) -> Result<usize> {
        let users = self.sessions.sweep(self.clock.now())?;
        for id in &users {
            if let Some(user) = self.store.user(*id)? {
                self.end_then_forget_unused_tokens(&user, || Ok(())).await?;
            }
        }
        Ok(users.len())
    }

    /// Runs `end` (ending some of `user`'s sessions) and then, if they have none left, forgets their Forge tokens —
    /// all under the identity's lock, which the callback's storing of new tokens takes too, so a sign-in on another
    /// device cannot fall between "no session left" and the forgetting. Why forget: a refresh token kept after the
    /// last session stays valid at Forge for as long as the grant lives, held for nobody. Returns whether it did.
    pub async fn end_then_forget_unused_tokens(
        &self,
        user: &User,
        end: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        let _identity = self
            .vault
            .lock_identity(&user.provider, &user.external_id)
            .await;
        end()?;
        if self.store.count_user_sessions(user.id)? > 0 {
            return Ok(false);
        }
        self.vault.forget(&user.provider, &user.external_id).await?;
        Ok(true)
    }

    /// Revokes the admin sessions of users no longer allowed (periodic; requests also check on their own).
    pub async fn sweep_admin_sessions(&self) -> Result<usize> {
        let list = self.admin_allowlist().await?;
        let mut n = 0;
        for u in self.store.users_with_admin_sessions()? {
            let (_, claims) = self.store.claims_for(&u)?;
            if !self.admin_allowed(&list, &u, &claims)? {
                n += self.sessions.revoke_user(u.id, true)?;
                tracing::info!(user = %u.username, "admin access removed: admin sessions revoked");
            }
        }
        Ok(n)
    }
}

/// The live routes from sqlite, validated again (a row that no longer parses is a startup error naming it).
fn load_routes(store: &Store) -> Result<Vec<Route>> {
    store
        .routes()?
        .into_iter()
        // A context stored by an older version means nothing now (see `RouteConfig::context`).
        .map(|c| RouteConfig { context: None, ..c })
        .map(|c| {
            Route::from_config(&c).map_err(|e| {
                ProxyError::Config(format!(
                    "stored route {:?}: {e}",
                    c.id.as_deref().unwrap_or("")
                ))
            })
        })
        .collect()
}

/// Loads the assertion signer from its slot, generating and storing a fresh seed on first use. A seed that is
/// there but unreadable is an error, never replaced: a new key silently overwrote it, and every backend that had
/// loaded the old public key refused every request (`identity.unknown_key`) with nothing saying why.
pub async fn load_signer(secrets: &dyn SecretStore) -> Result<AssertionSigner> {
    let seed = match secrets.get(ASSERTION_SEED_SLOT).await? {
        Some(v) => Some(
            hex::decode(v.expose().trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    ProxyError::Config(format!(
                        "the secret slot {ASSERTION_SEED_SLOT} does not hold a 32-byte hex seed; restore it, or delete it to have a new key made (every backend must then load the new public key)"
                    ))
                })?,
        ),
        None => None,
    };
    let seed = match seed {
        Some(s) => s,
        None => {
            use rand::RngCore;
            let mut s = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut s);
            secrets.set(ASSERTION_SEED_SLOT, &hex::encode(s)).await?;
            s
        }
    };
    Ok(AssertionSigner::from_seed(&seed))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// The key is made once and kept; a seed the slot holds but cannot be read is an error, and the slot is left
    /// as it was (it used to be overwritten by a new key, silently breaking every verifying backend).
    #[tokio::test]
    async fn the_signing_seed_is_kept_and_an_unreadable_one_is_never_replaced() {
        let store = hero_secrets::MemorySecretStore::new();
        let first = load_signer(&store).await.unwrap();
        let again = load_signer(&store).await.unwrap();
        assert_eq!(first.public_jwks(), again.public_jwks());
        for bad in ["not hex", "abcd", &"0".repeat(66)] {
            store.set(ASSERTION_SEED_SLOT, bad).await.unwrap();
            let err = load_signer(&store).await.err().unwrap().to_string();
            assert!(err.contains(ASSERTION_SEED_SLOT), "{bad}: {err}");
            assert_eq!(
                store
                    .get(ASSERTION_SEED_SLOT)
                    .await
                    .unwrap()
                    .unwrap()
                    .expose(),
                bad
            );
        }
    }
}
