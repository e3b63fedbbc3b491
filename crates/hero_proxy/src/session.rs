//! Server-side sessions: an opaque random id in a `__Host-` cookie, the row in sqlite under SHA-256(id), and a
//! write-through in-memory cache so a request with a valid session costs a hash and a map lookup.
//!
//! The cache is invalidated by a global generation counter bumped on every change to users, groups, roles or
//! admin flags, so claim changes apply on the next request.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use hero_identity::Claim;
use http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::{Store, User};

/// Cookie name. `__Host-` makes the browser refuse it unless Secure, Path=/ and no Domain: it can't be set by a
/// sibling subdomain nor sent to one.
pub const SESSION_COOKIE: &str = "__Host-hero_session";

/// Only write `last_seen` to sqlite when it moved by at least this much (keeps the hot path read-only).
const TOUCH_EVERY_SECS: u64 = 60;

/// SHA-256 hex of a session id. (Hex by hand rather than `hex::encode`, which builds the string through a
/// `char` iterator at several times the cost: this runs on every request with a session.)
pub fn hash_id(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in Sha256::digest(id.as_bytes()) {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// `Set-Cookie` value for a new session.
pub fn set_cookie(id: &str, max_age: u64) -> String {
    format!("{SESSION_COOKIE}={id}; Path=/; Max-Age={max_age}; Secure; HttpOnly; SameSite=Lax")
}

/// `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax")
}

/// Signed assertions of one session per audience (route id), with their expiry (re-signed when close to it).
pub type AssertionCache = Arc<Mutex<HashMap<String, (HeaderValue, u64)>>>;

/// The identity headers of a session's user, built once when the session is loaded rather than copied from the
/// user record on every request. They cannot go stale: any change to a user bumps the generation, which reloads
/// the session (see [`Sessions::bump_generation`]).
#[derive(Clone, Debug)]
pub struct IdentityHeaders {
    /// `X-Hero-User`.
    pub user: HeaderValue,
    /// `X-Hero-Provider`.
    pub provider: HeaderValue,
    /// `X-Hero-Login` (the login at the provider), when it is header-safe (a Forge login always is).
    pub login: Option<HeaderValue>,
    /// `X-Hero-External-Id`.
    pub external_id: HeaderValue,
    /// `X-Hero-Context` (the user's context id), if any.
    pub context: Option<HeaderValue>,
}

impl IdentityHeaders {
    /// `None` if a value is not header-safe (the request is then refused, as before this was precomputed).
    fn of(user: &User) -> Option<IdentityHeaders> {
        let v = |s: &str| HeaderValue::from_str(s).ok();
        Some(IdentityHeaders {
            user: v(&user.username)?,
            provider: v(&user.provider)?,
            login: v(&user.forge_username),
            external_id: v(&user.external_id)?,
            context: match user.context {
                Some(c) => Some(v(&c.to_string())?),
                None => None,
            },
        })
    }
}

/// A live session as the request path sees it.
#[derive(Clone)]
pub struct Session {
    /// SHA-256 of the id.
    pub id_hash: Arc<str>,
    /// The token vault's key of this session's identity (precomputed: the hot path does no hashing for it).
    pub token_key: Arc<str>,
    /// Owner.
    pub user: Arc<User>,
    /// Claims at `generation`.
    pub claims: Arc<Vec<Claim>>,
    /// `X-Hero-Claims` value.
    pub claims_header: HeaderValue,
    /// The other identity headers; `None` if the user record holds a value that is not header-safe.
    pub identity: Option<Arc<IdentityHeaders>>,
    /// Login time.
    pub created_at: u64,
    /// Last use.
    pub last_seen: u64,
    /// Passed an admin check.
    pub admin_granted: bool,
    generation: u64,
    /// Signed assertions per audience, with their expiry.
    pub assertions: AssertionCache,
}

/// Session table + cache.
pub struct Sessions {
    store: Arc<Store>,
    /// Shared entries: a hit hands out one reference count, not a copy of the session (per request).
    cache: RwLock<HashMap<String, Arc<Session>>>,
    generation: AtomicU64,
    /// Moves whenever something that decides access may have changed (every generation bump, and route edits
    /// through [`Sessions::access_changed`]): what an open WebSocket tunnel waits on to check again whether the
    /// access that opened it still holds (`crate::tunnel`).
    access: tokio::sync::watch::Sender<u64>,
    idle: u64,
    absolute: u64,
}

impl Sessions {
    /// With idle and absolute timeouts in seconds.
    pub fn new(store: Arc<Store>, idle: u64, absolute: u64) -> Sessions {
        Sessions {
            store,
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(1),
            access: tokio::sync::watch::Sender::new(0),
            idle,
            absolute,
        }
    }

    /// Absolute timeout (cookie Max-Age).
    pub fn absolute_secs(&self) -> u64 {
        self.absolute
    }

    /// Invalidates every cached claim set (call after any change to users, groups or roles).
    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.access_changed();
    }

    /// Tells the open tunnels that access may have changed (a session, user, claim or route).
    pub fn access_changed(&self) {
        self.access.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every [`Sessions::access_changed`] from now on.
    pub fn watch_access(&self) -> tokio::sync::watch::Receiver<u64> {
        self.access.subscribe()
    }

    /// Creates a session for `user`; returns the cookie value (never stored).
    pub fn create(&self, user: &User, now: u64) -> Result<String> {
        let id = crate::oidc::random_token(32);
        self.store.insert_session(&hash_id(&id), user.id, now)?;
        Ok(id)
    }

    /// Resolves a cookie value to a live session, enforcing idle and absolute timeouts and disabled users.
    pub fn lookup(&self, cookie: &str, now: u64) -> Result<Option<Arc<Session>>> {
        if cookie.is_empty() || cookie.len() > 128 {
            return Ok(None);
        }
        let h = hash_id(cookie);
        let generation = self.generation.load(Ordering::SeqCst);
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h)
            .cloned();
        // The cache is written only when the entry changed (loaded at a new generation, or `last_seen` moved):
        // a hit on the hot path takes the read lock alone, so worker threads do not serialise on the write lock.
        let (mut s, mut changed) = match cached {
            Some(s) if s.generation == generation => (s, false),
            _ => match self.load(&h, generation)? {
                Some(s) => (Arc::new(s), true),
                None => return Ok(None),
            },
        };
        if now.saturating_sub(s.last_seen) > self.idle
            || now.saturating_sub(s.created_at) > self.absolute
        {
            self.revoke(&h)?;
            return Ok(None);
        }
        if now.saturating_sub(s.last_seen) >= TOUCH_EVERY_SECS {
            if !self.store.touch_session(&h, now)? {
                // Revoked since it was cached (another worker's logout or refusal): gone, not re-cached.
                self.revoke(&h)?;
                return Ok(None);
            }
            Arc::make_mut(&mut s).last_seen = now;
            changed = true;
        }
        if changed {
            self.cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(h, s.clone());
        }
        Ok(Some(s))
    }

    fn load(&self, h: &str, generation: u64) -> Result<Option<Session>> {
        let Some(row) = self.store.session(h)? else {
            self.cache
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(h);
            return Ok(None);
        };
        let Some(user) = self.store.user(row.user_id)? else {
            return Ok(None);
        };
        if user.disabled {
            self.revoke(h)?;
            return Ok(None);
        }
        let (_, claims) = self.store.claims_for(&user)?;
        let claims_header = HeaderValue::from_str(&hero_identity::format_claims_header(&claims))
            .unwrap_or(HeaderValue::from_static(""));
        let identity = IdentityHeaders::of(&user).map(Arc::new);
        Ok(Some(Session {
            identity,
            token_key: crate::vault::TokenVault::key(&user.provider, &user.external_id).into(),
            id_hash: row.id_hash.into(),
            user: Arc::new(user),
            claims: Arc::new(claims),
            claims_header,
            created_at: row.created_at,
            last_seen: row.last_seen,
            admin_granted: row.admin_granted,
            generation,
            assertions: Arc::new(Mutex::new(HashMap::new())),
        }))
    }

    /// Records that the session passed an admin check.
    pub fn mark_admin_granted(&self, h: &str) -> Result<()> {
        self.store.mark_admin_granted(h)?;
        if let Some(s) = self
            .cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(h)
        {
            Arc::make_mut(s).admin_granted = true;
        }
        Ok(())
    }

    /// Ends one session.
    ///
    /// Why the generation moves too: a lookup on another worker may have read the row just before the delete
    /// and put its copy back into the cache just after the removal below. Entries carry the generation they
    /// were loaded at, so once it moves (after the delete) such a copy is reloaded, finds no row, and is never
    /// served again; without it a signed-out session lived on in the cache until the next sign-in anywhere. (It
    /// moves only when a row went: whoever deleted a row already gone moved it then.)
    pub fn revoke(&self, h: &str) -> Result<bool> {
        self.cache
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(h);
        let gone = self.store.delete_session(h)?;
        if gone {
            self.bump_generation();
        }
        Ok(gone)
    }

    /// Deletes every timed-out session (periodic). Why: a lookup ends only the sessions whose cookie comes back,
    /// and most never do (a cleared browser, a machine handed back), so without this the table and the cache
    /// grew for as long as the proxy ran. Returns the users who lost one, for their tokens' sake.
    pub fn sweep(&self, now: u64) -> Result<BTreeSet<i64>> {
        // The same bounds as `lookup`: idle for more than `idle`, older than `absolute`.
        let gone = self.store.delete_expired_sessions(
            now.saturating_sub(self.idle),
            now.saturating_sub(self.absolute),
        )?;
        self.evict(gone.iter().map(|(h, _)| h.as_str()));
        Ok(gone.into_iter().map(|(_, user)| user).collect())
    }

    /// Ends a user's sessions (only admin-granted ones if `admin_only`); returns how many. The generation moves
    /// for the reason [`Sessions::revoke`] gives.
    pub fn revoke_user(&self, user_id: i64, admin_only: bool) -> Result<usize> {
        let hashes = self.store.delete_user_sessions(user_id, admin_only)?;
        self.evict(hashes.iter().map(String::as_str));
        Ok(hashes.len())
    }

    /// Drops the cached entries of sessions whose rows were just deleted, and moves the generation if there were
    /// any, for the reason [`Sessions::revoke`] gives.
    fn evict<'a>(&self, deleted: impl Iterator<Item = &'a str>) {
        let mut any = false;
        {
            let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
            for h in deleted {
                c.remove(h);
                any = true;
            }
        }
        if any {
            self.bump_generation();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_id_is_sha256_hex() {
        for id in ["", "a", "x".repeat(128).as_str()] {
            assert_eq!(hash_id(id), hex::encode(Sha256::digest(id.as_bytes())));
        }
    }

    #[test]
    fn timeouts_and_revocation() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let u = store.provision("forge", "1", "alice", 0).unwrap();
        let s = Sessions::new(store.clone(), 100, 1000);
        let id = s.create(&u, 0).unwrap();
        assert!(s.lookup(&id, 50).unwrap().is_some());
        assert!(s.lookup(&id, 90).unwrap().is_some()); // touches last_seen (>= 60 s since login)
        assert!(s.lookup(&id, 180).unwrap().is_some()); // 90 s idle < 100
                                                        // idle: 101 s without use ends it
        let id2 = s.create(&u, 1000).unwrap();
        assert!(s.lookup(&id2, 1102).unwrap().is_none());
        assert!(
            s.lookup(&id2, 1000).unwrap().is_none(),
            "revoked sessions stay gone"
        );
        // absolute
        let id3 = s.create(&u, 2000).unwrap();
        let mut t = 2000;
        while t < 3000 {
            t += 90;
            let alive = s.lookup(&id3, t).unwrap().is_some();
            assert_eq!(alive, t - 2000 <= 1000, "t={t}");
        }
        // revocation of everything
        let id4 = s.create(&u, 5000).unwrap();
        assert_eq!(s.revoke_user(u.id, false).unwrap(), 2); // id (never expired by a lookup) and id4
        assert!(s.lookup(&id4, 5001).unwrap().is_none());
        assert!(s.lookup("nonexistent", 5001).unwrap().is_none());
        assert!(!set_cookie("x", 5).contains("Domain"));
    }

    /// The two interleavings by which a revoked session came back: a lookup on another worker that put its copy
    /// back into the cache after `revoke` removed it (here: re-inserted by hand), and one that still held the
    /// cached entry when the row went and touched a row that no longer exists. Both served the session after
    /// logout, until the next sign-in anywhere.
    #[test]
    fn a_revoked_session_never_comes_back_from_the_cache() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        let u = store.provision("forge", "1", "alice", 0).unwrap();
        let s = Sessions::new(store.clone(), 1000, 10_000);

        let id = s.create(&u, 0).unwrap();
        let held = s.lookup(&id, 0).unwrap().unwrap();
        let h = hash_id(&id);
        assert!(s.revoke(&h).unwrap());
        s.cache.write().unwrap().insert(h.clone(), held);
        assert!(
            s.lookup(&id, 1).unwrap().is_none(),
            "re-cached after revoke"
        );

        let id = s.create(&u, 0).unwrap();
        assert!(s.lookup(&id, 0).unwrap().is_some());
        store.delete_session(&hash_id(&id)).unwrap();
        assert!(
            s.lookup(&id, TOUCH_EVERY_SECS + 1).unwrap().is_none(),
            "touched a deleted row"
        );

        let id = s.create(&u, 0).unwrap();
        let held = s.lookup(&id, 0).unwrap().unwrap();
        assert_eq!(s.revoke_user(u.id, false).unwrap(), 1);
        s.cache.write().unwrap().insert(hash_id(&id), held);
        assert!(
            s.lookup(&id, 1).unwrap().is_none(),
            "re-cached after revoke_user"
        );
    }
}
