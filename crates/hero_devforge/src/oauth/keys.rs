//! The RSA key that signs id_tokens and the JWT access/refresh tokens (RS256, like Forgejo's
//! default `JWT_SIGNING_ALGORITHM`). Persisted as PKCS#8 PEM (0600) in the data dir so tokens stay
//! valid across restarts.

use std::path::Path;

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
        crate::secrets::write_secret_file(&path, pem.as_bytes())?;
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
