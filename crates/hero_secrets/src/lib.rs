//! Secret store of the Hero services.
//!
//! Secrets live in *slots* named `<context>/<name>` (for example `deployer/forge_admin_token` or
//! `deployer/users/42/forge_token`), the naming hero_proc uses. Services depend only on the
//! [`SecretStore`] trait and pick an implementation from configuration:
//!
//! * [`FileSecretStore`]: the embedded default, one XChaCha20-Poly1305 file per slot under a
//!   directory, with a 0600 key file created on first start;
//! * [`HeroProcSecretStore`]: an adapter to hero_proc's secret service (its API is assumed; see
//!   [`hero_proc::assumed`]);
//! * [`MemorySecretStore`]: for tests.
//!
//! Values are [`SecretValue`]s: zeroized on drop, redacted in `Debug`, never `Display`.

mod error;
mod file_store;
pub mod hero_proc;
mod memory;
mod slot;
pub mod slots;
mod value;

pub use error::SecretError;
pub use file_store::FileSecretStore;
pub use hero_proc::HeroProcSecretStore;
pub use memory::MemorySecretStore;
pub use slot::validate_slot;
pub use value::SecretValue;

/// Where secrets are kept. Implementations are safe to share between tasks.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    /// The value in `slot`, or `None` if the slot is empty.
    async fn get(&self, slot: &str) -> Result<Option<SecretValue>, SecretError>;
    /// Stores `value` in `slot`, replacing what was there. Durable when it returns.
    async fn set(&self, slot: &str, value: &str) -> Result<(), SecretError>;
    /// Empties `slot`; returns whether it held a value.
    async fn delete(&self, slot: &str) -> Result<bool, SecretError>;
    /// Slot names starting with `prefix` (`""` for all), sorted. Never values.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, SecretError>;
    /// Short name of the backend, for status output (`file`, `hero_proc`, `memory`).
    fn kind(&self) -> &'static str;
}
