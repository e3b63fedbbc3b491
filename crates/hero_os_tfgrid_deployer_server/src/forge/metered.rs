//! A [`ForgeApi`] that counts every failed call in the metrics, by operation and stable error
//! code, and otherwise passes through. Wrapping the port (instead of counting inside the HTTP
//! client) counts every error the core sees, whichever layer made it, exactly once per call.

use std::sync::Arc;

use hero_secrets::SecretValue;

use super::{ForgeApi, ForgeError, ForgeToken, ForgeUser, NewForgeUser};
use crate::metrics::MetricsSink;

pub struct MeteredForge {
    inner: Arc<dyn ForgeApi>,
    sink: Arc<dyn MetricsSink>,
}

impl MeteredForge {
    pub fn wrap(inner: Arc<dyn ForgeApi>, sink: Arc<dyn MetricsSink>) -> Arc<dyn ForgeApi> {
        Arc::new(MeteredForge { inner, sink })
    }

    fn count<T>(&self, operation: &'static str, r: Result<T, ForgeError>) -> Result<T, ForgeError> {
        if let Err(e) = &r {
            self.sink.forge_call_failed(operation, e.code());
        }
        r
    }
}

#[async_trait::async_trait]
impl ForgeApi for MeteredForge {
    async fn version(&self) -> Result<String, ForgeError> {
        self.count("version", self.inner.version().await)
    }

    async fn user_exists(&self, username: &str) -> Result<Option<ForgeUser>, ForgeError> {
        self.count("user_exists", self.inner.user_exists(username).await)
    }

    async fn create_user(&self, user: &NewForgeUser<'_>) -> Result<ForgeUser, ForgeError> {
        self.count("create_user", self.inner.create_user(user).await)
    }

    async fn generate_token_for(
        &self,
        username: &str,
        password: &SecretValue,
        token_name: &str,
        scopes: &[String],
    ) -> Result<ForgeToken, ForgeError> {
        let r = self
            .inner
            .generate_token_for(username, password, token_name, scopes)
            .await;
        self.count("generate_token_for", r)
    }

    // Every method of the trait is forwarded, the defaulted ones too: a default here would
    // silently answer "cannot" for a Forge that can (password reset, the VMs' OAuth apps).
    async fn set_password(&self, username: &str, password: &SecretValue) -> Result<(), ForgeError> {
        self.count(
            "set_password",
            self.inner.set_password(username, password).await,
        )
    }

    async fn password_works(
        &self,
        username: &str,
        password: &SecretValue,
    ) -> Result<bool, ForgeError> {
        let r = self.inner.password_works(username, password).await;
        self.count("password_works", r)
    }

    async fn delete_token_for(
        &self,
        username: &str,
        password: &SecretValue,
        token_name: &str,
    ) -> Result<bool, ForgeError> {
        let r = self
            .inner
            .delete_token_for(username, password, token_name)
            .await;
        self.count("delete_token_for", r)
    }

    fn url(&self) -> &str {
        self.inner.url()
    }

    /// The app calls are not counted yet (they are a port of their own); they pass through.
    fn apps(&self) -> Option<&dyn super::apps::ForgeApps> {
        self.inner.apps()
    }
}
