//! The proxy's error enum, with stable codes. `Display` never includes token values, secrets or session ids.

/// Every failure inside the proxy library.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Configuration is invalid (file, env overlay or route definition).
    #[error("configuration: {0}")]
    Config(String),
    /// sqlite failed.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The secret store failed.
    #[error("secret store: {0}")]
    Secret(#[from] hero_secrets::SecretError),
    /// Talking to the OIDC provider failed (network, unexpected status, bad JSON).
    #[error("identity provider: {0}")]
    Provider(String),
    /// An upstream could not be reached or answered something unusable (never shown to the visitor).
    #[error("upstream: {0}")]
    Upstream(String),
    /// An upstream sent no response head within `upstream_timeout_secs`.
    #[error("upstream {0} did not answer in time")]
    UpstreamTimeout(String),
    /// The client's request body broke off or was malformed while being forwarded (the client's fault: 400).
    #[error("the client's request body is malformed or incomplete")]
    ClientBody,
    /// The id_token or callback did not validate.
    #[error("login rejected: {0}")]
    LoginRejected(&'static str),
    /// The provider refused a refresh (any 400): the user must log in again.
    #[error("refresh refused by provider; sign-in required")]
    ReloginRequired,
    /// A named object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Input refused by a rule (claim grammar, reserved names, admin-group desync, ...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::Config(_) => "proxy.config",
            ProxyError::Db(_) => "proxy.db",
            ProxyError::Secret(_) => "proxy.secret",
            ProxyError::Provider(_) => "proxy.provider",
            ProxyError::Upstream(_) => "proxy.upstream",
            ProxyError::UpstreamTimeout(_) => "proxy.upstream_timeout",
            ProxyError::ClientBody => "proxy.client_body",
            ProxyError::LoginRejected(_) => "proxy.login_rejected",
            ProxyError::ReloginRequired => "proxy.relogin_required",
            ProxyError::NotFound(_) => "proxy.not_found",
            ProxyError::Invalid(_) => "proxy.invalid",
            ProxyError::Io(_) => "proxy.io",
        }
    }
}

/// Result alias.
pub type Result<T, E = ProxyError> = std::result::Result<T, E>;
