//! Sign-ins in flight, held by the browser that started them, and the return-to rule.
//!
//! A sign-in in flight (provider, nonce, PKCE verifier, return-to, the `state` it was sent with) is sealed
//! (ChaCha20-Poly1305 under a key this process made at start and keeps in memory only) into the login cookie
//! of the browser that started it; the edge keeps no table of them. Why: `/oauth/login` is unauthenticated, and
//! a table of logins in flight is a table anyone can fill. Bounded per client IP it still fails where it matters:
//! behind a gateway that sends no trusted `X-Forwarded-For` (a VM's web gateway) every visitor is one client, so
//! a flood evicted the owner's sign-in. Held by each browser, a flood only churns the flooder's own cookie.
//! The browser binding comes with it: a leaked callback URL opened without the cookie finds nothing to use.
//!
//! What the edge does keep is the `state`s already used (bounded, each only until it would have expired), so a
//! callback replayed with its cookie is refused. When that memory is full its oldest entries go first: a replay
//! of those then reaches the provider, which refuses a used code (RFC 6749 §4.1.2: a code is single-use).
//! And the return-to rule: only same-origin relative paths, so the login flow can't be used as an open redirect.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// One sign-in in flight.
pub struct PendingLogin {
    /// The `state` sent to the provider (the callback names it).
    pub state: String,
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
    /// This browser's login cookie holds no sign-in with this state: started elsewhere, forged, or from before
    /// the edge restarted (a new key).
    NotThisBrowser,
    /// Already used (replay).
    Used,
    /// Issued but older than the TTL.
    Expired,
}

/// How many sign-ins one browser may have in flight at once — tabs opened while signed out each start one, and
/// each must be able to finish. The login cookie holds them, newest first.
pub const LOGIN_COOKIE_STATES: usize = 4;

/// The most the login cookie's value may hold: browsers keep cookies up to 4096 bytes of name, value and
/// attributes, and one that is longer is dropped whole (the sign-in would then fail as "another browser").
/// The newest sign-in always fits: its return-to is at most 2048 bytes ([`safe_return_to`]).
const LOGIN_COOKIE_MAX: usize = 3800;

/// Associated data of every sealed sign-in: a value sealed for anything else never opens as one.
const AAD: &[u8] = b"hero_proxy login v1";

/// What is sealed (JSON), and in what form.
#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    s: &'a str,
    p: &'a str,
    n: &'a str,
    v: &'a str,
    r: &'a str,
    u: &'a str,
    t: u64,
}

/// The sign-ins in flight of every browser (see the module doc), and the states already used.
pub struct Logins {
    cipher: ChaCha20Poly1305,
    ttl: u64,
    used: Mutex<Used>,
}

/// States used, each with when it would have expired, oldest first; at most `max`.
struct Used {
    max: usize,
    order: VecDeque<(u64, String)>,
    set: HashSet<String>,
}

impl Logins {
    /// With a fresh random key, a TTL in seconds and a bound on the used states remembered (at least 1).
    pub fn new(ttl: u64, max_used: usize) -> Logins {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key[..]);
        Logins {
            cipher: ChaCha20Poly1305::new((&*key).into()),
            ttl,
            used: Mutex::new(Used {
                max: max_used.max(1),
                order: VecDeque::new(),
                set: HashSet::new(),
            }),
        }
    }

    /// The login cookie's value once `p` starts: it first, then as many of the entries already in `current` as
    /// fit ([`LOGIN_COOKIE_STATES`], [`LOGIN_COOKIE_MAX`]). Why a list: with one sign-in per cookie, the second
    /// tab's sign-in overwrote the first's, and the first tab then failed with "started in another browser".
    /// `None` only if sealing failed, which neither JSON of strings nor ChaCha20-Poly1305 under 256 GiB does.
    pub fn start(&self, current: Option<&str>, p: &PendingLogin) -> Option<String> {
        let mut out = self.seal(p)?;
        for (n, e) in entries(current).enumerate() {
            if n + 1 >= LOGIN_COOKIE_STATES || out.len() + 1 + e.len() > LOGIN_COOKIE_MAX {
                break;
            }
            out.push('.');
            out.push_str(e);
        }
        Some(out)
    }

    /// Finishes the sign-in with `state` that this browser's login cookie `current` holds: single use, within
    /// the TTL. Also returns the cookie's value without it (and without entries that no longer open or have
    /// expired; empty: the cookie goes), or `None` when the cookie held no such sign-in and stays as it is.
    pub fn finish(
        &self,
        current: Option<&str>,
        state: &str,
        now: u64,
    ) -> (Result<PendingLogin, StateError>, Option<String>) {
        let mut found = None;
        let mut rest = Vec::new();
        for e in entries(current) {
            match self.open(e) {
                Some(p) if found.is_none() && !state.is_empty() && p.state == state => {
                    found = Some(p)
                }
                Some(p) if p.created_at + self.ttl > now => rest.push(e),
                _ => {}
            }
        }
        let Some(p) = found else {
            return (Err(StateError::NotThisBrowser), None);
        };
        let rest = Some(rest.join("."));
        let expires = p.created_at + self.ttl;
        if !self.mark_used(&p.state, expires, now) {
            return (Err(StateError::Used), rest);
        }
        if expires <= now {
            return (Err(StateError::Expired), rest);
        }
        (Ok(p), rest)
    }

    /// Forgets used states that would have expired by `now` (also run periodically); how many went.
    pub fn sweep(&self, now: u64) -> usize {
        let mut u = self.used.lock().unwrap_or_else(|e| e.into_inner());
        u.sweep(now)
    }

    /// Number of used states remembered.
    pub fn used_len(&self) -> usize {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    /// Records `state` as used; false if it already was.
    fn mark_used(&self, state: &str, expires: u64, now: u64) -> bool {
        let mut u = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if u.set.contains(state) {
            return false;
        }
        if u.set.len() >= u.max {
            u.sweep(now);
        }
        while u.set.len() >= u.max {
            let Some((_, old)) = u.order.pop_front() else {
                break;
            };
            u.set.remove(&old);
        }
        u.set.insert(state.to_owned());
        u.order.push_back((expires, state.to_owned()));
        true
    }

    fn seal(&self, p: &PendingLogin) -> Option<String> {
        let plain = Zeroizing::new(
            serde_json::to_vec(&Sealed {
                s: &p.state,
                p: &p.provider,
                n: &p.nonce,
                v: &p.verifier,
                r: &p.return_to,
                u: &p.redirect_uri,
                t: p.created_at,
            })
            .ok()?,
        );
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: AAD,
                },
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Some(B64.encode(out))
    }

    fn open(&self, entry: &str) -> Option<PendingLogin> {
        let raw = B64.decode(entry).ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (nonce, sealed) = raw.split_at(12);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: AAD,
                    },
                )
                .ok()?,
        );
        let s: Sealed = serde_json::from_slice(&plain).ok()?;
        Some(PendingLogin {
            state: s.s.to_owned(),
            provider: s.p.to_owned(),
            nonce: s.n.to_owned(),
            verifier: Zeroizing::new(s.v.to_owned()),
            return_to: s.r.to_owned(),
            redirect_uri: s.u.to_owned(),
            created_at: s.t,
        })
    }
}

impl Used {
    fn sweep(&mut self, now: u64) -> usize {
        let before = self.set.len();
        while self.order.front().is_some_and(|(exp, _)| *exp <= now) {
            if let Some((_, s)) = self.order.pop_front() {
                self.set.remove(&s);
            }
        }
        before - self.set.len()
    }
}

/// The entries of a login cookie, read only as far as the bound (a cookie stuffed by hand costs nothing more).
fn entries(current: Option<&str>) -> impl Iterator<Item = &str> {
    current
        .unwrap_or("")
        .split('.')
        .filter(|s| !s.is_empty())
        .take(LOGIN_COOKIE_STATES)
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

    fn p(state: &str, now: u64) -> PendingLogin {
        PendingLogin {
            state: state.into(),
            provider: "forge".into(),
            nonce: "n".into(),
            verifier: Zeroizing::new("v".into()),
            return_to: "/back".into(),
            redirect_uri: "r".into(),
            created_at: now,
        }
    }

    #[test]
    fn single_use_bound_to_the_cookie_and_ttl() {
        let l = Logins::new(600, 100);
        let c = l.start(None, &p("s", 1000)).unwrap();
        let (r, rest) = l.finish(Some(&c), "s", 1001);
        let got = r.unwrap();
        assert_eq!(
            (got.return_to.as_str(), got.verifier.as_str()),
            ("/back", "v")
        );
        assert_eq!(
            rest.as_deref(),
            Some(""),
            "the cookie goes with its last sign-in"
        );
        assert_eq!(
            l.finish(Some(&c), "s", 1001).0.err(),
            Some(StateError::Used)
        );
        let c = l.start(None, &p("old", 1000)).unwrap();
        assert_eq!(
            l.finish(Some(&c), "old", 1600).0.err(),
            Some(StateError::Expired)
        );
        for (cookie, state) in [
            (None, "s"),
            (Some(c.as_str()), "other"),
            (Some(c.as_str()), ""),
        ] {
            let (r, rest) = l.finish(cookie, state, 1001);
            assert_eq!(r.err(), Some(StateError::NotThisBrowser));
            assert_eq!(rest, None, "a cookie without the sign-in is left alone");
        }
        assert_eq!(l.sweep(1700), 2);
        assert_eq!(l.used_len(), 0);
    }

    /// The seal is what binds: another edge's key, a flipped byte, a value made by hand, or a sealed sign-in
    /// pasted under another state never open.
    #[test]
    fn only_this_edges_untouched_seals_open() {
        let l = Logins::new(600, 100);
        let other = Logins::new(600, 100);
        let theirs = other.start(None, &p("s", 1000)).unwrap();
        let mut flipped = l.start(None, &p("s", 1000)).unwrap().into_bytes();
        flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        let by_hand =
            B64.encode(br#"{"s":"s","p":"forge","n":"n","v":"v","r":"/","u":"r","t":1000}"#);
        for forged in [theirs.as_str(), &flipped, &by_hand, "", "...", "AAAA"] {
            assert_eq!(
                l.finish(Some(forged), "s", 1001).0.err(),
                Some(StateError::NotThisBrowser),
                "{forged:?}"
            );
        }
    }

    /// A flood of sign-ins, however many and from wherever, never reaches another browser's: there is no table.
    /// It only fills the remembered used states, whose oldest then go.
    #[test]
    fn a_flood_never_touches_another_browsers_sign_in() {
        let l = Logins::new(600, 20);
        let victim = l.start(None, &p("victim", 1000)).unwrap();
        let mut flood = String::new();
        for i in 0..1000 {
            flood = l.start(Some(&flood), &p(&format!("f{i}"), 1000)).unwrap();
            let (r, _) = l.finish(Some(&flood), &format!("f{i}"), 1000);
            assert!(r.is_ok());
        }
        assert!(l.used_len() <= 20);
        assert!(l.finish(Some(&victim), "victim", 1001).0.is_ok());
    }

    #[test]
    fn the_login_cookie_holds_the_newest_few_that_fit() {
        let l = Logins::new(600, 100);
        let mut c = String::new();
        for s in ["a", "b", "c", "d", "e"] {
            c = l.start(Some(&c), &p(s, 1000)).unwrap();
        }
        assert_eq!(entries(Some(&c)).count(), LOGIN_COOKIE_STATES);
        assert!(
            l.finish(Some(&c), "a", 1001).0.is_err(),
            "the oldest made room"
        );
        let (r, rest) = l.finish(Some(&c), "c", 1001);
        assert!(r.is_ok());
        let rest = rest.unwrap();
        assert_eq!(entries(Some(&rest)).count(), 3);
        for s in ["e", "d", "b"] {
            assert!(l.finish(Some(&rest), s, 1001).0.is_ok(), "{s}");
        }
        // Long return-tos: the newest always fits, older ones only while the cookie stays under the bound.
        let mut c = String::new();
        for s in ["x", "y", "z"] {
            let mut long = p(s, 1000);
            long.return_to = format!("/{}", "a".repeat(2047));
            c = l.start(Some(&c), &long).unwrap();
            assert!(c.len() <= LOGIN_COOKIE_MAX, "{}", c.len());
        }
        assert!(l.finish(Some(&c), "z", 1001).0.is_ok());
        // A cookie stuffed by hand is read only as far as the bound.
        let stuffed = vec!["x"; 1000].join(".") + "." + &l.start(None, &p("late", 1000)).unwrap();
        assert!(l.finish(Some(&stuffed), "late", 1001).0.is_err());
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
