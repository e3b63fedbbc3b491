//! The Forge (Forgejo) as the core sees it: a trait, so the core can be tested against a fake and
//! run against [`http::HttpForge`].

pub mod apps;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
pub mod http;
pub mod metered;

use hero_secrets::SecretValue;
use serde::{Deserialize, Serialize};

/// The part of Forgejo's `User` we use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgeUser {
    pub id: i64,
    pub login: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub full_name: String,
}

/// A new account.
pub struct NewForgeUser<'a> {
    pub username: &'a str,
    pub full_name: Option<&'a str>,
    pub email: &'a str,
    pub password: &'a SecretValue,
}

/// A freshly minted API token. `secret` is Forgejo's `sha1`, shown once.
pub struct ForgeToken {
    pub id: i64,
    pub name: String,
    pub secret: SecretValue,
    pub scopes: Vec<String>,
}

/// Why a Forge call failed, phrased as what the operator should do.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("Forge at {url} is unreachable ({reason}); check forge.url and the network")]
    Unreachable { url: String, reason: String },
    #[error("Forge at {url} answered HTTP {status} after {attempts} attempt(s); try again later")]
    ServerError {
        url: String,
        status: u16,
        attempts: u32,
    },
    /// `file`: the token is read from `forge.admin_token_file` (the secret slot is then ignored, so the advice
    /// names the file).
    #[error("{}", admin_token_missing(file.as_deref()))]
    AdminTokenMissing { file: Option<std::path::PathBuf> },
    #[error("Forge rejected the admin token (HTTP {status}: {message}); set a valid site-admin token with `hero_os_tfgrid_deployer secret set deployer/forge_admin_token`")]
    AdminTokenRejected { status: u16, message: String },
    #[error(
        "Forge refused the user's own credentials when minting a token (HTTP {status}: {message})"
    )]
    UserCredentialsRejected { status: u16, message: String },
    #[error("Forge refused the name or email: {message}")]
    Conflict {
        reason: ConflictReason,
        message: String,
    },
    #[error("Forge rejected the generated password: {message}; check Forge's PASSWORD_COMPLEXITY settings")]
    PasswordRejected { message: String },
    #[error("Forge answered HTTP {status} unexpectedly: {message}")]
    Protocol { status: u16, message: String },
    /// The admin token works but lacks a scope this call needs (OAuth apps need `write:user`).
    #[error("the Forge admin token lacks the scope {scope} (Forge: {message}); create a site-admin token with write:admin, write:user and read:user and store it with `hero_os_tfgrid_deployer secret set deployer/forge_admin_token`")]
    AdminTokenScopeMissing { scope: String, message: String },
}

/// The advice for a missing admin token: where it is read from decides what to do.
fn admin_token_missing(file: Option<&std::path::Path>) -> String {
    match file {
        Some(f) => format!(
            "no Forge admin token: the file {} (forge.admin_token_file) is missing or empty; put a site-admin token there (the secret slot is not read while the file is configured)",
            f.display()
        ),
        None => "no Forge admin token: set it with `hero_os_tfgrid_deployer secret set deployer/forge_admin_token` (reads stdin)".to_owned(),
    }
}

/// What kind of name conflict Forge reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictReason {
    NameTaken,
    EmailTaken,
    NameReserved,
    NamePatternNotAllowed,
    TokenNameUsed,
    Other,
}

impl ForgeError {
    /// Stable error code for logs and the RPC `data.detail`.
    pub fn code(&self) -> &'static str {
        match self {
            ForgeError::Unreachable { .. } => "FRG001_unreachable",
            ForgeError::ServerError { .. } => "FRG002_server_error",
            ForgeError::AdminTokenMissing { .. } => "FRG003_admin_token_missing",
            ForgeError::AdminTokenRejected { .. } => "FRG004_admin_token_rejected",
            ForgeError::UserCredentialsRejected { .. } => "FRG005_user_credentials_rejected",
            ForgeError::Conflict { .. } => "FRG006_conflict",
            ForgeError::PasswordRejected { .. } => "FRG007_password_rejected",
            ForgeError::Protocol { .. } => "FRG008_protocol",
            ForgeError::AdminTokenScopeMissing { .. } => "FRG009_admin_token_scope_missing",
        }
    }

    /// Whether trying again later can succeed without anyone changing anything: Forge was
    /// unreachable or answered 5xx. Everything else needs an operator (a token, a name, a
    /// password policy) or is a bug. Callers (the runner's retries) ask this; they never decide
    /// it themselves.
    pub fn is_transient(&self) -> bool {
        match self {
            ForgeError::Unreachable { .. } | ForgeError::ServerError { .. } => true,
            ForgeError::AdminTokenMissing { .. }
            | ForgeError::AdminTokenRejected { .. }
            | ForgeError::UserCredentialsRejected { .. }
            | ForgeError::Conflict { .. }
            | ForgeError::PasswordRejected { .. }
            | ForgeError::Protocol { .. }
            | ForgeError::AdminTokenScopeMissing { .. } => false,
        }
    }
}

/// The Forgejo operations the deployer needs.
#[async_trait::async_trait]
pub trait ForgeApi: Send + Sync {
    /// `GET /api/v1/version`.
    async fn version(&self) -> Result<String, ForgeError>;
    /// `GET /api/v1/users/{username}` as admin: `None` on 404.
    async fn user_exists(&self, username: &str) -> Result<Option<ForgeUser>, ForgeError>;
    /// `POST /api/v1/admin/users` with `must_change_password: false`.
    async fn create_user(&self, user: &NewForgeUser<'_>) -> Result<ForgeUser, ForgeError>;
    /// `POST /api/v1/users/{username}/tokens` with the user's own Basic credentials: the only
    /// auth Forgejo accepts there besides the admin's password, which we do not hold.
    async fn generate_token_for(
        &self,
        username: &str,
        password: &SecretValue,
        token_name: &str,
        scopes: &[String],
    ) -> Result<ForgeToken, ForgeError>;
    /// `PATCH /api/v1/admin/users/{username}` with only `password` and
    /// `must_change_password: false`: nothing else of the account (auth source, login name,
    /// email) is touched. A default so stand-ins that never reset passwords need not say so.
    async fn set_password(&self, username: &str, password: &SecretValue) -> Result<(), ForgeError> {
        let _ = (username, password);
        Err(ForgeError::Protocol {
            status: 501,
            message: format!("{} cannot reset passwords", self.url()),
        })
    }
    /// `GET /api/v1/user` with `username`'s Basic credentials: whether Forge accepts that password now (`false` on
    /// 401). Changes nothing, so it settles what an ambiguous `set_password` (a timeout after the request went
    /// out) did. Stand-ins that cannot say so instead of answering.
    async fn password_works(
        &self,
        username: &str,
        password: &SecretValue,
    ) -> Result<bool, ForgeError> {
        let _ = (username, password);
        Err(ForgeError::Protocol {
            status: 501,
            message: format!("{} cannot check a password", self.url()),
        })
    }
    /// `DELETE /api/v1/users/{username}/tokens/{token_name}` with the user's own Basic
    /// credentials: `false` when no such token exists. For the one token an interrupted
    /// `create_user` may have minted but not stored (see `users.rs`, `token_name`). Forges that
    /// cannot (test stand-ins) say so instead of pretending.
    async fn delete_token_for(
        &self,
        username: &str,
        password: &SecretValue,
        token_name: &str,
    ) -> Result<bool, ForgeError> {
        let _ = (username, password);
        Err(ForgeError::Protocol {
            status: 501,
            message: format!("this Forge client cannot delete the token {token_name:?}"),
        })
    }
    /// Base URL, for messages.
    fn url(&self) -> &str;
    /// The OAuth-app port of this client (`register_sso`, decommission, reconcile); `None` for a
    /// client that cannot manage apps, which those steps report as a permanent error.
    fn apps(&self) -> Option<&dyn apps::ForgeApps> {
        None
    }
}
