//! Login attempts in flight: `state` → (provider, nonce, PKCE verifier, return-to), single-use, with a TTL sweep.
//! And the return-to rule: only same-origin relative paths, so the login flow can't be used as an open redirect.

use std::collections::HashMap;
use std::sync::Mutex;

use zeroize::Zeroizing;

/// Cap on logins in flight, so unauthenticated `/oauth/login` floods can't grow memory without bound.
const MAX_PENDING: usize = 10_000;

/// One login in flight.
pub struct PendingLogin {
    /// Provider id.
    pub provider: String,
    /// id_token nonce.
    pub nonce: String,
    /// PKCE verifier.
    pub verifier: Zeroizing<String>,
    /// Where to go after the callback (already validated).
    pub return_to: String,
    /// The exact redirect_uri sent at authorize (the token request must repeat it).
    pub redirect_uri: String,
    /// Creation time.
    pub created_at: u64,
}

/// Why a callback's state was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    /// Never issued, or already used (replay).
    Unknown,
    /// Issued but older than the TTL.
    Expired,
}

/// The in-flight table (in memory: a restart only costs logins that were mid-flight).
pub struct PendingLogins {
    ttl: u64,
    map: Mutex<HashMap<String, PendingLogin>>,
}

impl PendingLogins {
    /// With a TTL in seconds.
    pub fn new(ttl: u64) -> PendingLogins {
        PendingLogins {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Stores a login under `state`, sweeping expired entries first. `false` if the table is full.
    pub fn insert(&self, state: String, p: PendingLogin, now: u64) -> bool {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        m.retain(|_, v| v.created_at + ttl > now);
        if m.len() >= MAX_PENDING {
            return false;
        }
        m.insert(state, p);
        true
    }

    /// Removes and returns the login for `state` (single use: a replay finds nothing).
    pub fn take(&self, state: &str, now: u64) -> Result<PendingLogin, StateError> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let p = m.remove(state).ok_or(StateError::Unknown)?;
        if p.created_at + self.ttl <= now {
            return Err(StateError::Expired);
        }
        Ok(p)
    }

    /// Drops expired entries (also run periodically).
    pub fn sweep(&self, now: u64) -> usize {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let before = m.len();
        let ttl = self.ttl;
        m.retain(|_, v| v.created_at + ttl > now);
        before - m.len()
    }

    /// Number in flight.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True if none in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Accepts a return-to target only if it is a same-origin relative path: starts with a single `/`, no `//` or `/\`
/// prefix (protocol-relative), no backslash anywhere (browsers treat `\` as `/`), no control characters or
/// whitespace, at most 2048 bytes. Anything else falls back to `/`.
pub fn safe_return_to(raw: Option<&str>) -> String {
    let Some(s) = raw else { return "/".into() };
    let ok = s.len() <= 2048
        && s.starts_with('/')
        && !s.starts_with("//")
        && !s.contains('\\')
        && !s
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80);
    if ok {
        s.to_owned()
    } else {
        "/".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(now: u64) -> PendingLogin {
        PendingLogin {
            provider: "forge".into(),
            nonce: "n".into(),
            verifier: Zeroizing::new("v".into()),
            return_to: "/".into(),
            redirect_uri: "r".into(),
            created_at: now,
        }
    }

    #[test]
    fn single_use_and_ttl() {
        let t = PendingLogins::new(600);
        assert!(t.insert("s".into(), p(1000), 1000));
        assert!(t.take("s", 1001).is_ok());
        assert_eq!(t.take("s", 1001).err(), Some(StateError::Unknown));
        assert!(t.insert("old".into(), p(1000), 1000));
        assert_eq!(t.take("old", 1600).err(), Some(StateError::Expired));
        assert!(t.insert("x".into(), p(1000), 1000));
        assert_eq!(t.sweep(1700), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn open_redirects_are_refused() {
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil",
            "/%0d%0aSet-Cookie:x".replace("%0d%0a", "\r\n").as_str(),
            "javascript:alert(1)",
            "evil.example",
            "/ok\tx",
            "",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_return_to(Some("/dash/x?y=1#z")), "/dash/x?y=1#z");
        assert_eq!(safe_return_to(Some("/%2F%2Fevil")), "/%2F%2Fevil");
        assert_eq!(safe_return_to(None), "/");
    }
}
