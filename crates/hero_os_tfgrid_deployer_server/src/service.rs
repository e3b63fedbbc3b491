//! The deployer's core: everything it knows and every outside thing it talks to, as parameters.
//! Transports (RPC, CLI) call methods on [`Deployer`]; the deployer reaches the world only through
//! the traits it holds.

use std::sync::Arc;

use hero_secrets::SecretStore;

use crate::clock::{Clock, Random};
use crate::db::Db;
use crate::forge::ForgeApi;

/// Settings of the core that come from configuration.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Placeholder email domain, `<username>@<email_domain>`.
    pub email_domain: String,
    /// Scopes of each user's minted Forge token.
    pub user_token_scopes: Vec<String>,
}

/// The core service.
#[derive(Clone)]
pub struct Deployer {
    pub db: Db,
    pub secrets: Arc<dyn SecretStore>,
    pub forge: Arc<dyn ForgeApi>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
    pub settings: Arc<CoreSettings>,
}

/// The deployer's secret slots, named in the registry every crate shares
/// ([`hero_secrets::slots`]).
pub mod slots {
    pub use hero_secrets::slots::{
        user_forge_token as forge_token, user_initial_password as initial_password, user_prefix,
    };
}
