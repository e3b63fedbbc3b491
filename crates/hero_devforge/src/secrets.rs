//! Secret material: random tokens, the hashes stored instead of them, and 0600 secret files.
//!
//! Passwords are stored as `sha256(salt || password)` with a random 16-byte salt. That is NOT a
//! password-hashing function fit for production (no work factor); it is acceptable here because
//! this is a development stand-in for Forgejo whose accounts are test accounts. Tokens are random
//! 160-bit values and are stored as plain sha256 digests, which is sound for high-entropy secrets.

use std::io::Write;
use std::path::Path;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh 40-hex-character secret (Forgejo's PAT format).
pub fn new_token_hex() -> String {
    let mut b = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A fresh url-safe random string of `bytes` random bytes.
pub fn new_random_b64(bytes: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Hex sha256 of a secret; what the database stores for tokens, codes and sessions.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Hashes a password with a new salt; returns `(hash, salt)`.
pub fn hash_password(password: &str) -> (String, String) {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = hex::encode(salt);
    (hash_with_salt(password, &salt), salt)
}

fn hash_with_salt(password: &str, salt: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

/// Checks a password against a stored hash. An empty stored hash never matches.
pub fn verify_password(password: &str, hash: &str, salt: &str) -> bool {
    if hash.is_empty() {
        return false;
    }
    constant_time_eq(hash_with_salt(password, salt).as_bytes(), hash.as_bytes())
}

/// Comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes `contents` to `path`, creating it with mode 0600 (and tightening an existing file to
/// 0600 before writing) so secrets never sit in a world-readable file, even briefly.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_roundtrip() {
        let (h, s) = hash_password("correct horse");
        assert!(verify_password("correct horse", &h, &s));
        assert!(!verify_password("wrong", &h, &s));
        assert!(!verify_password("", "", ""));
    }

    #[test]
    fn token_format() {
        let t = new_token_hex();
        assert_eq!(t.len(), 40);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[cfg(unix)]
    #[test]
    fn secret_file_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        write_secret_file(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
