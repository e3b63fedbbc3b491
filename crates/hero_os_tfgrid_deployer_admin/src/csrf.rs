//! CSRF protection: every state-changing form carries `csrf`, an HMAC-SHA256 of the signed-in
//! identity under a key drawn at start-up. A cross-site page cannot read it, and a token of one
//! admin is useless for another. Checked on every POST.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Name of the hidden form field.
pub const FIELD: &str = "csrf";

/// The server-side key. Tokens become invalid when the process restarts (the form says so).
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    pub fn random() -> CsrfKey {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        CsrfKey(k)
    }

    fn mac(&self, user: &str) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).ok()?;
        mac.update(b"hero-admin-csrf\0");
        mac.update(user.as_bytes());
        Some(mac)
    }

    /// The token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.mac(user)
            .map(|m| hex::encode(m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Constant-time check of a submitted token.
    pub fn verify(&self, user: &str, token: &str) -> bool {
        let Ok(bytes) = hex::decode(token) else {
            return false;
        };
        self.mac(user)
            .is_some_and(|m| m.verify_slice(&bytes).is_ok())
    }
}

/// Checks the token posted with a form against the signed-in admin's, in constant time.
pub fn check(admin: &crate::auth::Admin, submitted: &str) -> Result<(), crate::error::PageError> {
    let a = admin.csrf.as_bytes();
    let b = submitted.as_bytes();
    let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
    if same && !a.is_empty() {
        Ok(())
    } else {
        tracing::warn!(user = %admin.user, "form without a valid CSRF token refused");
        Err(crate::error::PageError::Csrf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_per_user_and_per_key() {
        let k = CsrfKey::random();
        let t = k.token("alice");
        assert!(k.verify("alice", &t));
        assert!(!k.verify("bob", &t));
        assert!(!k.verify("alice", ""));
        assert!(!k.verify("alice", "zz"));
        assert!(!CsrfKey::random().verify("alice", &t));
    }
}
