//! PKCE (RFC 7636) as Forgejo checks it: `S256` and `plain`; no challenge means no check
//! (allowed only for confidential clients, enforced at authorize time).

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::secrets::constant_time_eq;

/// Whether a challenge method is supported at authorize time.
pub fn method_supported(method: &str) -> bool {
    matches!(method, "S256" | "plain")
}

/// Forgejo's `ValidateCodeChallenge`.
pub fn verify(method: &str, challenge: &str, verifier: &str) -> bool {
    match method {
        "S256" => {
            let h = Sha256::digest(verifier.as_bytes());
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h);
            constant_time_eq(computed.as_bytes(), challenge.as_bytes())
        }
        "plain" => constant_time_eq(verifier.as_bytes(), challenge.as_bytes()),
        "" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(verify("S256", challenge, verifier));
        assert!(!verify("S256", challenge, "wrong"));
        assert!(verify("plain", "abc", "abc"));
        assert!(!verify("plain", "abc", "abd"));
        assert!(!verify("S512", "abc", "abc"));
    }
}
