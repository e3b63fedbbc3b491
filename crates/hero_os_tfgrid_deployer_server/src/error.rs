//! The core's error type and its mapping onto the RPC error codes of the SDK.

use hero_os_tfgrid_deployer_sdk::types::User;
use hero_os_tfgrid_deployer_sdk::username::UsernameError;
use hero_os_tfgrid_deployer_sdk::{ErrorKind, RpcError};
use hero_secrets::SecretError;

use crate::db::DbError;
use crate::forge::{ConflictReason, ForgeError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    InvalidUsername(#[from] UsernameError),
    #[error("{0}")]
    InvalidParams(String),
    #[error("{0}")]
    NotFound(String),
    #[error("user {} already exists (user_id {})", .0.forge_username, .0.user_id)]
    AlreadyExists(Box<User>),
    #[error("{0}")]
    Forge(#[from] ForgeError),
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("{0}")]
    Db(#[from] DbError),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    JobConflict {
        message: String,
        detail: serde_json::Value,
    },
    #[error("{0}")]
    NoCandidateNode(String),
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Internal(String),
    /// Refused to protect what may still exist; the refusal carries a stable code.
    #[error("{0}")]
    Refused(#[from] crate::provision::forget::Refusal),
}

/// The answer for a write that failed because the server's disk is full.
fn disk_full(what: &str) -> RpcError {
    RpcError::new(
        ErrorKind::Internal,
        format!(
            "disk full: the server could not write {what}; nothing was changed. Free space on the server's data dir and try again"
        ),
    )
    .with_detail(serde_json::json!({ "cause": "disk_full" }))
}

impl From<rusqlite::Error> for ServiceError {
    fn from(e: rusqlite::Error) -> Self {
        ServiceError::Db(DbError::Sql(e))
    }
}

impl ServiceError {
    /// Whether the same request can succeed later unchanged: Forge said so
    /// ([`ForgeError::is_transient`]), or the database was busy.
    pub fn is_transient(&self) -> bool {
        match self {
            ServiceError::Forge(e) => e.is_transient(),
            ServiceError::Db(_) => true,
            _ => false,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::InvalidUsername(_) => ErrorKind::InvalidUsername,
            ServiceError::InvalidParams(_) => ErrorKind::InvalidParams,
            ServiceError::NotFound(_) => ErrorKind::NotFound,
            ServiceError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            ServiceError::Forge(e) => match e {
                ForgeError::Unreachable { .. } | ForgeError::ServerError { .. } => {
                    ErrorKind::ForgeUnavailable
                }
                ForgeError::AdminTokenMissing { .. }
                | ForgeError::AdminTokenRejected { .. }
                | ForgeError::AdminTokenScopeMissing { .. } => ErrorKind::ForgeAuthRejected,
                ForgeError::Conflict { .. } | ForgeError::PasswordRejected { .. } => {
                    ErrorKind::ForgeConflict
                }
                ForgeError::UserCredentialsRejected { .. } | ForgeError::Protocol { .. } => {
                    ErrorKind::ForgeProtocol
                }
            },
            // A slot name is a parameter of the call: a bad one is the caller's to fix.
            ServiceError::Secret(SecretError::InvalidSlot { .. }) => ErrorKind::InvalidParams,
            ServiceError::Secret(_) => ErrorKind::SecretStore,
            ServiceError::Db(_) | ServiceError::Internal(_) => ErrorKind::Internal,
            ServiceError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            ServiceError::Forbidden(_) => ErrorKind::Forbidden,
            ServiceError::JobConflict { .. } => ErrorKind::JobConflict,
            ServiceError::NoCandidateNode(_) => ErrorKind::NoCandidateNode,
            ServiceError::Backend(_) => ErrorKind::Backend,
            ServiceError::Refused(_) => ErrorKind::Refused,
        }
    }

    /// The error as the client sees it. Internal details stay in the server log.
    pub fn to_rpc(&self) -> RpcError {
        let kind = self.kind();
        match self {
            // A full disk is the one storage failure the caller can act on (and must hear of
            // by name): anything else stays "internal" with the detail in the log.
            ServiceError::Db(e) if e.is_disk_full() => {
                tracing::error!(error = %e, "database write failed: disk full");
                disk_full("the database")
            }
            ServiceError::Secret(SecretError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                tracing::error!(error = %self, "secret store write failed: disk full");
                disk_full("the secret store")
            }
            ServiceError::Db(e) => {
                tracing::error!(error = %e, "database error");
                RpcError::new(kind, "internal database error; see the server log")
            }
            ServiceError::AlreadyExists(user) => RpcError::new(kind, self.to_string())
                .with_detail(serde_json::to_value(user).unwrap_or_default()),
            ServiceError::JobConflict { detail, .. } => {
                RpcError::new(kind, self.to_string()).with_detail(detail.clone())
            }
            ServiceError::InvalidUsername(e) => RpcError::new(kind, self.to_string())
                .with_detail(serde_json::json!({ "rule": e.rule() })),
            ServiceError::Forge(e) => {
                let mut detail = serde_json::json!({ "code": e.code() });
                if let ForgeError::Conflict { reason, .. } = e {
                    detail["reason"] = serde_json::Value::String(
                        match reason {
                            ConflictReason::NameTaken => "name_taken",
                            ConflictReason::EmailTaken => "email_taken",
                            ConflictReason::NameReserved => "name_reserved",
                            ConflictReason::NamePatternNotAllowed => "name_pattern_not_allowed",
                            ConflictReason::TokenNameUsed => "token_name_used",
                            ConflictReason::Other => "other",
                        }
                        .to_owned(),
                    );
                }
                RpcError::new(kind, self.to_string()).with_detail(detail)
            }
            ServiceError::Refused(r) => {
                RpcError::new(kind, self.to_string()).with_detail(r.detail())
            }
            ServiceError::Secret(e) => RpcError::new(kind, self.to_string())
                .with_detail(serde_json::json!({ "code": e.code() })),
            _ => RpcError::new(kind, self.to_string()),
        }
    }
}
