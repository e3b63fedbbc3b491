//! Per-user ED25519 SSH key pairs in OpenSSH formats.
//!
//! The deployer generates one key pair per user, stores the public key in plain text and the
//! private key encrypted at rest (that is the server's job). This module only makes and parses
//! keys. Randomness is a parameter so tests are deterministic; the private key lives in a
//! [`Zeroizing`] buffer and no `Debug`/`Display` ever prints it.

use std::fmt;

use rand::CryptoRng;
use rand::RngCore;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey};
use zeroize::Zeroizing;

/// Errors of key generation and parsing.
#[derive(Debug, thiserror::Error)]
pub enum SshKeyError {
    /// The OpenSSH text could not be parsed or encoded (the message never contains key material).
    #[error("invalid SSH key: {0}")]
    Invalid(String),
    /// A key that is not ED25519 (the deployer only makes and accepts ED25519 user keys).
    #[error("unsupported SSH key algorithm {0} (expected ssh-ed25519)")]
    UnsupportedAlgorithm(String),
}

impl SshKeyError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            SshKeyError::Invalid(_) => "sshkey.invalid",
            SshKeyError::UnsupportedAlgorithm(_) => "sshkey.unsupported_algorithm",
        }
    }
}

/// An ED25519 key pair: OpenSSH public line, OpenSSH private PEM and SHA256 fingerprint.
#[derive(Clone)]
pub struct UserKeyPair {
    public_openssh: String,
    private_openssh: Zeroizing<String>,
    fingerprint: String,
}

impl fmt::Debug for UserKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserKeyPair")
            .field("public_openssh", &self.public_openssh)
            .field("private_openssh", &"<redacted>")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl UserKeyPair {
    /// Generate a new key pair from 32 bytes drawn from `rng`, with `comment` (e.g.
    /// `hero_u42@deployer`) in the public line.
    pub fn generate<R: RngCore + CryptoRng>(
        rng: &mut R,
        comment: &str,
    ) -> Result<Self, SshKeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut seed[..]);
        let kp = Ed25519Keypair::from_seed(&seed);
        let key = PrivateKey::new(KeypairData::Ed25519(kp), comment)
            .map_err(|e| SshKeyError::Invalid(e.to_string()))?;
        Self::from_private_key(&key)
    }

    /// Parse an OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`, unencrypted, ED25519).
    pub fn from_private_openssh(pem: &str) -> Result<Self, SshKeyError> {
        let key = PrivateKey::from_openssh(pem).map_err(|e| SshKeyError::Invalid(e.to_string()))?;
        Self::from_private_key(&key)
    }

    fn from_private_key(key: &PrivateKey) -> Result<Self, SshKeyError> {
        if !matches!(key.key_data(), KeypairData::Ed25519(_)) {
            return Err(SshKeyError::UnsupportedAlgorithm(
                key.algorithm().as_str().to_string(),
            ));
        }
        let private_openssh = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| SshKeyError::Invalid(e.to_string()))?;
        let public_openssh = key
            .public_key()
            .to_openssh()
            .map_err(|e| SshKeyError::Invalid(e.to_string()))?;
        Ok(Self {
            public_openssh,
            private_openssh,
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        })
    }

    /// The `authorized_keys` line: `ssh-ed25519 AAAA… comment`.
    pub fn public_openssh(&self) -> &str {
        &self.public_openssh
    }

    /// The OpenSSH private key PEM. Handle with care: never log it; encrypt it at rest.
    pub fn private_openssh(&self) -> &Zeroizing<String> {
        &self.private_openssh
    }

    /// `SHA256:…` fingerprint, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// `SHA256:…` fingerprint of an OpenSSH public key line.
pub fn public_key_fingerprint(public_openssh: &str) -> Result<String, SshKeyError> {
    let key = PublicKey::from_openssh(public_openssh.trim())
        .map_err(|e| SshKeyError::Invalid(e.to_string()))?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn deterministic_with_a_seeded_rng_and_round_trips() {
        let mut a = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = rand::rngs::StdRng::seed_from_u64(7);
        let k1 = UserKeyPair::generate(&mut a, "hero_u1@deployer").unwrap();
        let k2 = UserKeyPair::generate(&mut b, "hero_u1@deployer").unwrap();
        assert_eq!(k1.public_openssh(), k2.public_openssh());
        assert!(k1.public_openssh().starts_with("ssh-ed25519 AAAA"));
        assert!(k1.public_openssh().ends_with(" hero_u1@deployer"));
        assert!(k1.fingerprint().starts_with("SHA256:"));
        assert!(k1
            .private_openssh()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let back = UserKeyPair::from_private_openssh(k1.private_openssh()).unwrap();
        assert_eq!(back.public_openssh(), k1.public_openssh());
        assert_eq!(
            public_key_fingerprint(k1.public_openssh()).unwrap(),
            k1.fingerprint()
        );
        let k3 = UserKeyPair::generate(&mut a, "x").unwrap();
        assert_ne!(k3.fingerprint(), k1.fingerprint());
    }

    #[test]
    fn debug_never_prints_the_private_key() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let k = UserKeyPair::generate(&mut rng, "c").unwrap();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains("PRIVATE KEY"));
        let body: String = k.private_openssh().lines().nth(1).unwrap().to_string();
        assert!(!dbg.contains(&body));
    }

    #[test]
    fn garbage_is_a_typed_error_without_key_material() {
        let err = UserKeyPair::from_private_openssh("not a key").unwrap_err();
        assert_eq!(err.code(), "sshkey.invalid");
    }
}
