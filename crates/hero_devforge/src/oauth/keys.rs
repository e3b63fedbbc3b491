//! The RSA key that signs id_tokens and the JWT access/refresh tokens (RS256, like Forgejo's
//! default `JWT_SIGNING_ALGORITHM`). Persisted as PKCS#8 PEM (0600) in the data dir so tokens stay
//! valid across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};

/// File name of the key inside the data dir.
pub const KEY_FILE: &str = "oauth2_jwt_rsa.pem";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("rsa: {0}")]
    Rsa(#[from] rsa::Error),
    #[error("pkcs8: {0}")]
    Pkcs8(#[from] rsa::pkcs8::Error),
    #[error("jwt: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("no signing key configured")]
    Missing,
    #[error("key generation task failed: {0}")]
    Join(String),
}

/// The server key, generated or loaded on first use. Generating a 2048-bit RSA key takes seconds
/// in unoptimised builds, so `serve` announces readiness at once and starts this in the
/// background; the OAuth endpoints (and JWT bearer auth) wait for it, the REST API does not.
#[derive(Debug)]
pub struct KeyCell {
    dir: Option<PathBuf>,
    cell: tokio::sync::OnceCell<Arc<SigningKey>>,
}

impl KeyCell {
    /// A cell holding `key` already.
    pub fn ready(key: SigningKey) -> Self {
        Self {
            dir: None,
            cell: tokio::sync::OnceCell::new_with(Some(Arc::new(key))),
        }
    }

    /// A cell that loads or generates `DIR/oauth2_jwt_rsa.pem` on first `get`.
    pub fn lazy(data_dir: &Path) -> Self {
        Self {
            dir: Some(data_dir.to_path_buf()),
            cell: tokio::sync::OnceCell::new(),
        }
    }

    /// The key; the first caller loads or generates it (on a blocking thread), others wait.
    pub async fn get(&self) -> Result<Arc<SigningKey>, KeyError> {
        self.cell
            .get_or_try_init(|| async {
                let dir = self.dir.clone().ok_or(KeyError::Missing)?;
                tokio::task::spawn_blocking(move || SigningKey::load_or_generate(&dir))
                    .await
                    .map_err(|e| KeyError::Join(e.to_string()))?
                    .map(Arc::new)
            })
            .await
            .cloned()
    }
}

/// Signing and verification halves plus the public JWK parts.
pub struct SigningKey {
    pub kid: String,
    pub n: String,
    pub e: String,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads `DIR/oauth2_jwt_rsa.pem`, or generates a 2048-bit key and stores it (0600).
    pub fn load_or_generate(data_dir: &Path) -> Result<Self, KeyError> {
        let path = data_dir.join(KEY_FILE);
        if path.exists() {
            let pem = std::fs::read_to_string(&path)?;
            return Self::from_pem(&pem);
        }
        let pem = Self::generate_pem()?;
        // Write-then-rename so a crash never leaves a truncated key behind.
        let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
        crate::secrets::write_secret_file(&tmp, pem.as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        Self::from_pem(&pem)
    }

    /// A new PKCS#8 PEM private key.
    pub fn generate_pem() -> Result<String, KeyError> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
        Ok(key.to_pkcs8_pem(LineEnding::LF)?.to_string())
    }

    /// Builds the key from a PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let n = b64.encode(key.n().to_bytes_be());
        let e = b64.encode(key.e().to_bytes_be());
        // RFC 7638 thumbprint as the key id, so the kid changes whenever the key does.
        let thumb_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = b64.encode(Sha256::digest(thumb_input.as_bytes()));
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())?;
        let decoding = DecodingKey::from_rsa_components(&n, &e)?;
        Ok(Self {
            kid,
            n,
            e,
            encoding,
            decoding,
        })
    }

    /// The JWKS document of `GET /login/oauth/keys`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "alg": "RS256",
                "e": self.e,
                "kid": self.kid,
                "kty": "RSA",
                "n": self.n,
                "use": "sig"
            }]
        })
    }
}
