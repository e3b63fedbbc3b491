use thiserror::Error;

/// Why a secret operation failed. Messages never contain a secret value.
#[derive(Debug, Error)]
pub enum SecretError {
    /// The slot name breaks the grammar (see [`crate::validate_slot`]).
    #[error("invalid secret slot {slot:?}: {reason}")]
    InvalidSlot { slot: String, reason: &'static str },
    /// The key file exists but is not a valid key.
    #[error("secret key file {path} is corrupt ({reason}); restore it from backup — secrets cannot be read without it")]
    KeyCorrupt { path: String, reason: String },
    /// Secrets exist but their key file is gone; a new key would make them unreadable.
    #[error("secret key file {path} is missing but {count} encrypted secret(s) exist under {dir}; restore the key file from backup (refusing to create a new key)")]
    KeyMissing {
        path: String,
        dir: String,
        count: usize,
    },
    /// A stored secret does not decrypt with the current key (tampered, truncated, or another key).
    #[error("secret slot {slot} cannot be decrypted: {reason}")]
    Corrupt { slot: String, reason: String },
    /// Reading or writing the store failed.
    #[error("secret store I/O error at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The external secret service (hero_proc) could not be reached or answered an error.
    #[error("secret service {endpoint}: {reason}")]
    Service { endpoint: String, reason: String },
}

impl SecretError {
    /// Stable code for logs and RPC error details.
    pub fn code(&self) -> &'static str {
        match self {
            SecretError::InvalidSlot { .. } => "SEC001_invalid_slot",
            SecretError::KeyCorrupt { .. } => "SEC002_key_corrupt",
            SecretError::KeyMissing { .. } => "SEC003_key_missing",
            SecretError::Corrupt { .. } => "SEC004_corrupt",
            SecretError::Io { .. } => "SEC005_io",
            SecretError::Service { .. } => "SEC006_service",
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> SecretError {
        SecretError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
