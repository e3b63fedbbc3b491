//! Per-user ED25519 SSH keys. The public key is stored in plain text (`ssh_keys.public_key`); the
//! OpenSSH private key is sealed with XChaCha20-Poly1305 under a 256-bit key that lives only in
//! the secret store (slot [`SEALING_KEY_SLOT`], created on first use). A copy of `state.db` alone
//! therefore reveals no private key. Sealed blob: `version (1) ‖ nonce (24) ‖ ciphertext+tag`,
//! with the user id bound in as associated data so a blob cannot be moved to another user.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hero_os_tfgrid_deployer_backends::UserKeyPair;
use hero_os_tfgrid_deployer_sdk::jobs::SshKeyExport;
use hero_os_tfgrid_deployer_sdk::types::UserId;
use rusqlite::{params, OptionalExtension};
use zeroize::Zeroizing;

use super::Provisioner;
use crate::audit::Actor;
use crate::clock::Random;
use crate::db::Cached;
use crate::error::ServiceError;

/// Secret slot of the sealing key (hex of 32 bytes).
pub const SEALING_KEY_SLOT: &str = hero_secrets::slots::SSH_KEY_SEALING_KEY;
const BLOB_VERSION: u8 = 1;

/// Public facts of a user's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyFacts {
    pub public_key: String,
    pub fingerprint: String,
}

/// Adapts the core's [`Random`] to `rand`'s traits, so key generation draws from the same
/// (injectable) source as everything else.
pub struct CoreRng<'a>(pub &'a dyn Random);

impl rand::RngCore for CoreRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

/// [`Random`] implementations are required to be cryptographically secure.
impl rand::CryptoRng for CoreRng<'_> {}

fn aad(user_id: UserId) -> Vec<u8> {
    format!("hero_os_tfgrid_deployer:ssh_key:v1:user:{user_id}").into_bytes()
}

fn key_error(msg: impl Into<String>) -> ServiceError {
    ServiceError::Internal(msg.into())
}

impl Provisioner {
    /// The sealing cipher; creates and stores the key on first use (serialized, and re-read
    /// after writing so two servers can never seal with different keys unnoticed).
    async fn sealing_cipher(&self) -> Result<XChaCha20Poly1305, ServiceError> {
        let d = self.deployer();
        let existing = d.secrets.get(SEALING_KEY_SLOT).await?;
        let hex_key = match existing {
            Some(v) => Zeroizing::new(v.expose().to_owned()),
            None => {
                let _g = self.inner.sealing_key_lock.lock().await;
                match d.secrets.get(SEALING_KEY_SLOT).await? {
                    Some(v) => Zeroizing::new(v.expose().to_owned()),
                    None => {
                        let mut raw = Zeroizing::new([0u8; 32]);
                        d.random.fill(&mut raw[..]);
                        let fresh = Zeroizing::new(hex::encode(&raw[..]));
                        d.secrets.set(SEALING_KEY_SLOT, &fresh).await?;
                        d.audit(
                            &Actor::system(),
                            "ssh_key.sealing_key_created",
                            &format!("secret:{SEALING_KEY_SLOT}"),
                            "ok",
                            Some("first SSH key: sealing key generated and stored in the secret store"),
                        )
                        .await?;
                        fresh
                    }
                }
            }
        };
        let raw = Zeroizing::new(
            hex::decode(hex_key.as_bytes())
                .map_err(|_| key_error(format!("secret {SEALING_KEY_SLOT} is not hex")))?,
        );
        XChaCha20Poly1305::new_from_slice(&raw)
            .map_err(|_| key_error(format!("secret {SEALING_KEY_SLOT} is not a 32-byte key")))
    }

    fn seal(
        &self,
        cipher: &XChaCha20Poly1305,
        user_id: UserId,
        plain: &str,
    ) -> Result<Vec<u8>, ServiceError> {
        let mut nonce = [0u8; 24];
        self.deployer().random.fill(&mut nonce);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &aad(user_id),
                },
            )
            .map_err(|_| key_error("sealing the SSH private key failed"))?;
        let mut blob = Vec::with_capacity(1 + 24 + ct.len());
        blob.push(BLOB_VERSION);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(blob)
    }

    fn unseal(
        cipher: &XChaCha20Poly1305,
        user_id: UserId,
        blob: &[u8],
    ) -> Result<Zeroizing<String>, ServiceError> {
        let (Some(&BLOB_VERSION), Some(nonce), Some(ct)) =
            (blob.first(), blob.get(1..25), blob.get(25..))
        else {
            return Err(key_error(format!(
                "sealed SSH key of user {user_id} has an unknown format"
            )));
        };
        let plain = Zeroizing::new(
            cipher
                .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad(user_id) })
                .map_err(|_| {
                    key_error(format!(
                        "cannot unseal the SSH key of user {user_id}: wrong sealing key in {SEALING_KEY_SLOT} or tampered row"
                    ))
                })?,
        );
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| key_error("unsealed SSH key is not UTF-8"))
    }

    /// The user's public key facts, generating and storing a key pair on first call.
    /// Idempotent and race-safe (`INSERT OR IGNORE`, then read back what won).
    pub async fn ensure_ssh_key(
        &self,
        user_id: UserId,
        comment: &str,
    ) -> Result<(PublicKeyFacts, bool), ServiceError> {
        if let Some(facts) = self.public_key(user_id).await? {
            return Ok((facts, false));
        }
        let cipher = self.sealing_cipher().await?;
        let pair = UserKeyPair::generate(&mut CoreRng(&*self.deployer().random), comment)
            .map_err(|e| key_error(format!("SSH key generation failed: {e}")))?;
        let sealed = self.seal(&cipher, user_id, pair.private_openssh())?;
        let public = pair.public_openssh().to_owned();
        let fingerprint = pair.fingerprint().to_owned();
        let now = self.deployer().clock.now();
        let inserted = self
            .db()
            .write(move |conn| -> Result<bool, ServiceError> {
                Ok(conn.execute_cached(
                    "INSERT OR IGNORE INTO ssh_keys(user_id, public_key, fingerprint, private_key_sealed, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![user_id, public, fingerprint, sealed, now],
                )? == 1)
            })
            .await?;
        let facts = self
            .public_key(user_id)
            .await?
            .ok_or_else(|| key_error("SSH key vanished after insert"))?;
        Ok((facts, inserted))
    }

    pub async fn public_key(
        &self,
        user_id: UserId,
    ) -> Result<Option<PublicKeyFacts>, ServiceError> {
        self.db()
            .call(move |conn| -> Result<_, ServiceError> { Ok(public_key_of(conn, user_id)?) })
            .await
    }

    /// The OpenSSH private key, unsealed in memory for the SSH client. Never logged.
    pub async fn private_key(&self, user_id: UserId) -> Result<Zeroizing<String>, ServiceError> {
        let blob = self
            .db()
            .call(move |conn| -> Result<Option<Vec<u8>>, ServiceError> {
                Ok(conn
                    .prepare_cached("SELECT private_key_sealed FROM ssh_keys WHERE user_id = ?1")?
                    .query_row([user_id], |r| r.get(0))
                    .optional()?)
            })
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("user {user_id} has no SSH key yet")))?;
        let cipher = self.sealing_cipher().await?;
        Self::unseal(&cipher, user_id, &blob)
    }

    /// `deployer.export_ssh_key`: the operator takes the key to reach the VM. Audited; the RPC
    /// layer allows it only over the local socket.
    pub async fn export_ssh_key(
        &self,
        actor: &Actor,
        user_id: UserId,
    ) -> Result<SshKeyExport, ServiceError> {
        let user = self.deployer().get_user(user_id).await?;
        let subject = format!("user:{}", user.forge_username);
        let facts = match self.public_key(user_id).await? {
            Some(f) => f,
            None => {
                let e = ServiceError::NotFound(format!(
                    "user {} has no SSH key yet (it is made by the ssh_key step of provision_vm)",
                    user.forge_username
                ));
                self.deployer()
                    .audit(
                        actor,
                        "ssh_key.export",
                        &subject,
                        &crate::users::error_outcome(&e),
                        None,
                    )
                    .await?;
                return Err(e);
            }
        };
        let private = self.private_key(user_id).await?;
        self.deployer()
            .audit(
                actor,
                "ssh_key.export",
                &subject,
                "ok",
                Some(&format!("private key exported ({})", facts.fingerprint)),
            )
            .await?;
        Ok(SshKeyExport {
            user_id,
            public_key: facts.public_key,
            private_key: private.to_string(),
            fingerprint: facts.fingerprint,
        })
    }
}

/// The user's public key and fingerprint, if a key was made.
pub(crate) fn public_key_of(
    conn: &rusqlite::Connection,
    user_id: UserId,
) -> rusqlite::Result<Option<PublicKeyFacts>> {
    conn.prepare_cached("SELECT public_key, fingerprint FROM ssh_keys WHERE user_id = ?1")?
        .query_row([user_id], |r| {
            Ok(PublicKeyFacts {
                public_key: r.get(0)?,
                fingerprint: r.get(1)?,
            })
        })
        .optional()
}

/// What steps may do with users' keys, and nothing else of the provisioner.
#[async_trait::async_trait]
impl super::steps::UserKeys for Provisioner {
    async fn ensure(
        &self,
        user_id: UserId,
        comment: &str,
    ) -> Result<(PublicKeyFacts, bool), ServiceError> {
        self.ensure_ssh_key(user_id, comment).await
    }

    async fn public(&self, user_id: UserId) -> Result<Option<PublicKeyFacts>, ServiceError> {
        self.public_key(user_id).await
    }

    async fn private(&self, user_id: UserId) -> Result<Zeroizing<String>, ServiceError> {
        self.private_key(user_id).await
    }
}
