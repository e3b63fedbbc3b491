//! One-time form tokens: every form the dashboard renders carries a fresh random `once` value, and the actions
//! whose result page is the POST's own answer — a reset password shown once, a batch's outcome table — claim it
//! before they act.
//!
//! Why: such a page has no redirect after it, so a reload (or Back, then Forward) sends the same form again,
//! with a CSRF token that is still valid; a second reset made the password just handed over stop working, a
//! second batch extend added its days again. A claimed token is refused with a page saying the action was
//! already done. This is not a security boundary (the CSRF token is): a forged token merely acts once.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The form field holding the token.
pub const FIELD: &str = "once";

/// How long a claimed token is remembered: a result page reloaded later than this acts again.
const REMEMBER: Duration = Duration::from_secs(24 * 3600);

/// The most claimed tokens remembered (the oldest go first): bounds memory whatever the dashboard is sent.
const MAX_REMEMBERED: usize = 10_000;

/// The claimed tokens.
#[derive(Default)]
pub struct OnceTokens {
    claimed: Mutex<Claimed>,
}

#[derive(Default)]
struct Claimed {
    at: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl OnceTokens {
    /// A fresh token for a form being rendered.
    pub fn issue() -> String {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        hex::encode(b)
    }

    /// True the first time `token` is claimed, false for an empty or unknown-shaped token and every later time.
    pub fn claim(&self, token: &str) -> bool {
        if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        let now = Instant::now();
        let mut c = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((at, _)) = c.order.front() {
            if now.duration_since(*at) < REMEMBER && c.order.len() < MAX_REMEMBERED {
                break;
            }
            if let Some((_, old)) = c.order.pop_front() {
                c.at.remove(&old);
            }
        }
        if c.at.contains_key(token) {
            return false;
        }
        c.at.insert(token.to_owned(), now);
        c.order.push_back((now, token.to_owned()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_acts_once_and_memory_stays_bounded() {
        let t = OnceTokens::default();
        let a = OnceTokens::issue();
        assert!(t.claim(&a));
        assert!(!t.claim(&a), "the second post of the same form");
        assert!(t.claim(&OnceTokens::issue()));
        for bad in ["", "short", &"z".repeat(32), &"a".repeat(33)] {
            assert!(!t.claim(bad), "{bad:?}");
        }
        for _ in 0..MAX_REMEMBERED + 10 {
            assert!(t.claim(&OnceTokens::issue()));
        }
        let c = t.claimed.lock().unwrap();
        assert!(c.at.len() <= MAX_REMEMBERED && c.order.len() == c.at.len());
    }
}
