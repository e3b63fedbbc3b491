//! `hero_devforge`: a small Forgejo-compatible development server, a named stand-in for Forgejo
//! (forge.ourworld.tf) used by the quickstart and the test suite. It implements exactly the REST
//! subset and the OAuth2/OIDC provider the Hero deployer and the SSO edge use, with Forgejo's rules,
//! so that code tested against it behaves the same against the real forge.
//!
//! Use [`app`] to run it in-process (tests) or the `hero_devforge` binary.

pub mod api;
pub mod auth;
pub mod cli;
pub mod db;
pub mod error;
pub mod oauth;
pub mod repos;
pub mod rules;
pub mod run;
pub mod scopes;
pub mod secrets;
pub mod view;

use std::path::Path;
use std::sync::Arc;

use axum::Router;

pub use db::Db;
pub use error::{ApiError, DbError};
pub use oauth::keys::{KeyCell, SigningKey};

/// The version string reported by `GET /api/v1/version`: the Forgejo version it imitates, marked.
pub const VERSION: &str = "11.0.1+devforge";

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// External base URL without a trailing slash, e.g. `http://127.0.0.1:3000`. Used for
    /// `html_url`, the OIDC issuer and error `url`s.
    pub external_url: String,
    /// Forgejo ≤ v11 publishes the issuer with a trailing slash; v12 without.
    pub issuer_trailing_slash: bool,
    /// Lifetime of OAuth access tokens and id_tokens (Forgejo: 3600 s).
    pub access_token_ttl: i64,
    /// Lifetime of OAuth refresh tokens (Forgejo: 730 h).
    pub refresh_token_ttl: i64,
}

impl Config {
    /// Defaults like Forgejo for a server reachable at `external_url`.
    pub fn new(external_url: &str) -> Self {
        Self {
            external_url: external_url.trim_end_matches('/').to_string(),
            issuer_trailing_slash: true,
            access_token_ttl: 3600,
            refresh_token_ttl: 730 * 3600,
        }
    }

    /// The OIDC issuer exactly as discovery publishes it.
    pub fn issuer(&self) -> String {
        if self.issuer_trailing_slash {
            format!("{}/", self.external_url)
        } else {
            self.external_url.clone()
        }
    }

    /// Forgejo's `setting.API.SwaggerURL`, used as `url` in API error bodies.
    pub fn swagger_url(&self) -> String {
        format!("{}/api/swagger", self.external_url)
    }
}

/// Shared state of the server.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub keys: Arc<KeyCell>,
}

/// Errors while opening the server's state.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("signing key: {0}")]
    Key(#[from] oauth::keys::KeyError),
}

impl AppState {
    /// Opens the database in `data_dir`; the signing key there is loaded (or generated) on first
    /// use, see [`AppState::warm_up_keys`].
    pub fn open(data_dir: &Path, config: Config) -> Result<Self, OpenError> {
        let db = Db::open(data_dir)?;
        Ok(Self {
            db,
            config: Arc::new(config),
            keys: Arc::new(KeyCell::lazy(data_dir)),
        })
    }

    /// Builds state from parts with a ready key (tests share one key to avoid repeated RSA key
    /// generation).
    pub fn new(db: Db, config: Config, keys: SigningKey) -> Self {
        Self {
            db,
            config: Arc::new(config),
            keys: Arc::new(KeyCell::ready(keys)),
        }
    }

    /// Starts loading/generating the signing key in the background so the first OAuth request
    /// does not pay for it. Must be called inside a tokio runtime.
    pub fn warm_up_keys(&self) {
        let keys = self.keys.clone();
        tokio::spawn(async move {
            match keys.get().await {
                Ok(k) => tracing::info!(kid = %k.kid, "signing key ready"),
                Err(e) => tracing::error!(error = %e, "cannot load or generate the signing key"),
            }
        });
    }
}

/// The whole server as an axum router: `/api/v1/*`, the OAuth2/OIDC endpoints and discovery.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(api::router())
        .merge(oauth::router())
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            api::fill_error_url,
        ))
        .with_state(state)
}
