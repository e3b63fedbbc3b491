//! Per-identity token vault: access and refresh tokens in secret slots keyed by
//! `(provider, sha256(sub)[..16])`, never by a username, so a deleted-and-recreated local user can never inherit
//! someone else's tokens. Refresh happens ahead of expiry, single-flight per identity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hero_secrets::{SecretStore, SecretValue};
use sha2::{Digest, Sha256};

use crate::error::{ProxyError, Result};
use crate::oidc::{Provider, Tokens};
use crate::store::Store;

/// Refresh this many seconds before the access token expires.
pub const REFRESH_LEEWAY_SECS: u64 = 60;

/// After a refresh failed for a reason other than a refusal (the provider down, slow, answering 5xx), no new
/// attempt for that identity for this long: requests meanwhile go on with the token they have. Why: each attempt
/// may take the provider client's whole 15 s timeout under the identity's lock, so without a pause the k-th
/// request queued behind it waited k × 15 s — an outage at Forge turned every click into a hung page and sent
/// the provider one more request per click.
pub const REFRESH_RETRY_SECS: u64 = 30;

/// First 16 hex characters of SHA-256(sub): the identity's key inside its provider.
pub fn identity_hash(external_id: &str) -> String {
    let mut h = hex::encode(Sha256::digest(external_id.as_bytes()));
    h.truncate(16);
    h
}

/// Slot holding one token kind (`access_token` | `refresh_token`) of an identity.
pub fn token_slot(provider: &str, external_id: &str, kind: &str) -> String {
    format!(
        "hero_proxy/tokens/{provider}/{}/{kind}",
        identity_hash(external_id)
    )
}

/// The vault.
pub struct TokenVault {
    secrets: Arc<dyn SecretStore>,
    store: Arc<Store>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Cache of access-token expiries so the common path touches neither sqlite nor the secret store.
    expiry: RwLock<HashMap<String, u64>>,
    /// Per identity: no refresh attempt before this time ([`REFRESH_RETRY_SECS`]).
    retry_after: RwLock<HashMap<String, u64>>,
    refreshes: AtomicU64,
}

impl TokenVault {
    /// A vault over a secret store and the proxy database (expiry metadata).
    pub fn new(secrets: Arc<dyn SecretStore>, store: Arc<Store>) -> TokenVault {
        TokenVault {
            secrets,
            store,
            locks: Mutex::new(HashMap::new()),
            expiry: RwLock::new(HashMap::new()),
            retry_after: RwLock::new(HashMap::new()),
            refreshes: AtomicU64::new(0),
        }
    }

    /// How many refreshes were performed (observability and the single-flight test).
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::SeqCst)
    }

    /// The identity's key in the vault's maps (`<provider>/<hash16>`).
    pub fn key(provider: &str, external_id: &str) -> String {
        format!("{provider}/{}", identity_hash(external_id))
    }

    /// Persists tokens from a login or a refresh (rotation: the previous refresh token is overwritten).
    pub async fn put(&self, provider: &str, external_id: &str, t: &Tokens, now: u64) -> Result<()> {
        self.secrets
            .set(
                &token_slot(provider, external_id, "access_token"),
                &t.access_token,
            )
            .await?;
        if let Some(r) = &t.refresh_token {
            self.secrets
                .set(&token_slot(provider, external_id, "refresh_token"), r)
                .await?;
        }
        self.record_expiry(provider, external_id, now.saturating_add(t.expires_in))
    }

    /// A sign-in whose tokens are not to be kept (`keep_tokens = "owner"`, someone other than the owner): the
    /// tokens are dropped (and any an earlier sign-in left are deleted); only the access token's expiry is
    /// recorded, so the session lasts as long as the token would have, and then, with no refresh token to use,
    /// [`TokenVault::ensure_fresh`] asks for a new sign-in.
    pub async fn put_expiry_only(
        &self,
        provider: &str,
        external_id: &str,
        t: &Tokens,
        now: u64,
    ) -> Result<()> {
        self.delete_slots(provider, external_id).await?;
        self.record_expiry(provider, external_id, now.saturating_add(t.expires_in))
    }

    fn record_expiry(&self, provider: &str, external_id: &str, exp: u64) -> Result<()> {
        self.store
            .set_token_expiry(provider, &identity_hash(external_id), exp)?;
        self.expiry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Self::key(provider, external_id), exp);
        Ok(())
    }

    async fn delete_slots(&self, provider: &str, external_id: &str) -> Result<()> {
        for kind in ["access_token", "refresh_token"] {
            self.secrets
                .delete(&token_slot(provider, external_id, kind))
                .await?;
        }
        Ok(())
    }

    /// Deletes an identity's tokens.
    pub async fn forget(&self, provider: &str, external_id: &str) -> Result<()> {
        self.delete_slots(provider, external_id).await?;
        self.store
            .delete_token_expiry(provider, &identity_hash(external_id))?;
        self.expiry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&Self::key(provider, external_id));
        Ok(())
    }

    /// `Err` while the identity is in the pause after a failed refresh ([`REFRESH_RETRY_SECS`]).
    fn not_backing_off(&self, key: &str, now: u64) -> Result<()> {
        match self
            .retry_after
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            Some(&until) if now < until => Err(ProxyError::Provider(format!(
                "token refresh paused for {} s after a failed attempt",
                until - now
            ))),
            _ => Ok(()),
        }
    }

    fn cached_expiry(&self, key: &str) -> Option<u64> {
        self.expiry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// Holds the identity's lock (the one refreshes take): what stores its tokens and what forgets them take it
    /// too, so a sign-in and a sign-out of the same person on two devices cannot interleave between "no session
    /// left" and "forget the tokens".
    pub async fn lock_identity(
        &self,
        provider: &str,
        external_id: &str,
    ) -> tokio::sync::OwnedMutexGuard<()> {
        self.lock_for(&Self::key(provider, external_id))
            .lock_owned()
            .await
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_owned()).or_default().clone()
    }

    /// Cheap check used on every request: is the cached expiry beyond the leeway? (`false` = call
    /// [`TokenVault::ensure_fresh`], which also loads the expiry from sqlite after a restart.)
    pub fn is_fresh(&self, key: &str, now: u64) -> bool {
        self.cached_expiry(key)
            .is_some_and(|exp| exp > now + REFRESH_LEEWAY_SECS)
    }

    /// Makes sure the identity's access token is valid for at least [`REFRESH_LEEWAY_SECS`], refreshing it if not.
    /// Concurrent callers for the same identity wait on one lock; the first refreshes, the others re-read the new
    /// expiry after the lock and reuse the result. `Err(ReloginRequired)` when the provider refuses the refresh or
    /// there is no refresh token; `end_sessions` has then ended the identity's sessions. `Ok(Some(id_token))` when
    /// this call refreshed and the provider sent a new id_token with it: the caller brings the identity's groups
    /// and login up to date.
    ///
    /// Why `end_sessions` runs here, under the identity's lock: a sign-in on another device stores its tokens and
    /// makes its session under the same lock, so it falls wholly before this attempt (which then reads its new
    /// refresh token and succeeds) or wholly after the sessions were ended (and survives). Ended by the caller
    /// after the lock, the refusal of an old refresh token also ended a session signed in meanwhile.
    pub async fn ensure_fresh(
        &self,
        provider: &Provider,
        external_id: &str,
        now: u64,
        end_sessions: impl FnOnce() -> Result<()>,
    ) -> Result<Option<String>> {
        let key = Self::key(&provider.id, external_id);
        if self
            .cached_expiry(&key)
            .is_some_and(|exp| exp > now + REFRESH_LEEWAY_SECS)
        {
            return Ok(None);
        }
        self.not_backing_off(&key, now)?;
        let lock = self.lock_for(&key);
        let _guard = lock.lock().await;
        // Queued behind an attempt that just failed: do not repeat it.
        self.not_backing_off(&key, now)?;
        let exp = match self.cached_expiry(&key) {
            Some(e) => Some(e),
            None => self
                .store
                .token_expiry(&provider.id, &identity_hash(external_id))?,
        };
        if let Some(e) = exp {
            self.expiry
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), e);
            if e > now + REFRESH_LEEWAY_SECS {
                return Ok(None);
            }
        }
        let Some(refresh) = self
            .secrets
            .get(&token_slot(&provider.id, external_id, "refresh_token"))
            .await?
        else {
            end_or_log(end_sessions);
            return Err(ProxyError::ReloginRequired);
        };
        let outcome = provider.refresh(refresh.expose()).await;
        {
            let mut retry = self.retry_after.write().unwrap_or_else(|p| p.into_inner());
            match &outcome {
                Err(e) if !matches!(e, ProxyError::ReloginRequired) => {
                    retry.insert(key.clone(), now.saturating_add(REFRESH_RETRY_SECS));
                }
                _ => {
                    retry.remove(&key);
                }
            }
        }
        match outcome {
            Ok(t) => {
                self.refreshes.fetch_add(1, Ordering::SeqCst);
                self.put(&provider.id, external_id, &t, now).await?;
                tracing::info!(provider = %provider.id, identity = %identity_hash(external_id), "access token refreshed");
                Ok(t.id_token.clone())
            }
            Err(ProxyError::ReloginRequired) => {
                tracing::info!(provider = %provider.id, identity = %identity_hash(external_id), "refresh refused; sign-in required");
                end_or_log(end_sessions);
                self.forget(&provider.id, external_id).await?;
                Err(ProxyError::ReloginRequired)
            }
            Err(e) => Err(e),
        }
    }

    /// The current access token (after [`TokenVault::ensure_fresh`]), for `X-Hero-Forge-Token`.
    pub async fn access_token(
        &self,
        provider: &str,
        external_id: &str,
    ) -> Result<Option<SecretValue>> {
        Ok(self
            .secrets
            .get(&token_slot(provider, external_id, "access_token"))
            .await?)
    }
}

/// Runs `end_sessions` for a refusal. A failure is logged, not returned: the answer stays `ReloginRequired`, so
/// this request is refused either way (failing closed), and the next finds no refresh token and tries again.
fn end_or_log(end_sessions: impl FnOnce() -> Result<()>) {
    if let Err(e) = end_sessions() {
        tracing::warn!(code = e.code(), error = %e, "ending the sessions of a refused identity failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_keyed_by_provider_and_hashed_sub() {
        let s = token_slot("forge", "1001", "access_token");
        assert_eq!(
            s,
            format!(
                "hero_proxy/tokens/forge/{}/access_token",
                &hex::encode(Sha256::digest(b"1001"))[..16]
            )
        );
        assert!(hero_secrets::validate_slot(&s).is_ok());
        assert!(!s.contains("1001"));
        assert_ne!(
            token_slot("forge", "1001", "x"),
            token_slot("other", "1001", "x")
        );
        assert_ne!(
            token_slot("forge", "1001", "x"),
            token_slot("forge", "1002", "x")
        );
    }
}
