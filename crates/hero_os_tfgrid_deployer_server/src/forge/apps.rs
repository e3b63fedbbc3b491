//! OAuth2 applications on Forge, as the SSO step sees them: one confidential app per VM, owned by
//! the deployer's admin account (`docs/provisioning.md`, "Who owns a VM's OAuth app"). A separate
//! port from [`super::ForgeApi`] because only the SSO step, decommission and reconcile need it, and
//! a Forge client that cannot manage apps (a token without `write:user`) should still create users.

use hero_secrets::SecretValue;

use super::ForgeError;

/// An OAuth2 application as Forgejo lists it (`OAuth2Application` without its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthApp {
    pub id: i64,
    pub name: String,
    pub client_id: String,
    pub redirect_uris: Vec<String>,
    pub confidential: bool,
}

/// What an app is made (or updated) with: Forgejo's `CreateOAuth2ApplicationOptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthAppSpec {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub confidential: bool,
}

/// An app together with its client secret, which Forgejo shows only on creation and on update.
pub struct OAuthAppWithSecret {
    pub app: OAuthApp,
    pub secret: SecretValue,
}

/// The app operations on the admin account's own applications (`/user/applications/oauth2`).
/// All of them need the admin token to carry `write:user` (`read:user` to list/get); a token
/// without it fails with [`ForgeError::AdminTokenScopeMissing`] naming the scope.
#[async_trait::async_trait]
pub trait ForgeApps: Send + Sync {
    /// Every app of the admin account (all pages).
    async fn list_oauth_apps(&self) -> Result<Vec<OAuthApp>, ForgeError>;
    /// One app by id; `None` if Forge does not have it (any more).
    async fn get_oauth_app(&self, id: i64) -> Result<Option<OAuthApp>, ForgeError>;
    /// `POST`: a new app and its secret.
    async fn create_oauth_app(&self, spec: &OAuthAppSpec)
        -> Result<OAuthAppWithSecret, ForgeError>;
    /// `PATCH`: replaces the app's fields and makes Forge issue a **new** secret (the old one
    /// stops working). `None` if the app is gone.
    async fn rotate_oauth_app(
        &self,
        id: i64,
        spec: &OAuthAppSpec,
    ) -> Result<Option<OAuthAppWithSecret>, ForgeError>;
    /// `DELETE`: `true` if deleted, `false` if it was already gone (both are success).
    async fn delete_oauth_app(&self, id: i64) -> Result<bool, ForgeError>;
}

/// The scope Forgejo names in a `tokenRequiresScopes` 403 (`… required scope(s): [write:user]`).
pub fn missing_scope(message: &str) -> Option<String> {
    let start = message.find("required scope(s): [")? + "required scope(s): [".len();
    let end = start + message[start..].find(']')?;
    let scope = message[start..end].trim();
    (!scope.is_empty()).then(|| scope.to_owned())
}

#[cfg(test)]
mod tests {
    use super::missing_scope;

    #[test]
    fn the_scope_is_read_from_forgejos_message() {
        let cases = [
            (
                "token does not have at least one of required scope(s): [write:user]",
                Some("write:user"),
            ),
            (
                "token does not have at least one of required scope(s): [read:user]",
                Some("read:user"),
            ),
            (
                "token does not have at least one of required scope(s): [write:user write:repository]",
                Some("write:user write:repository"),
            ),
            ("token does not have at least one of required scope(s): []", None),
            ("token does not have at least one of required scope(s): [write:user", None),
            ("user should be the site admin", None),
            ("", None),
        ];
        for (msg, want) in cases {
            assert_eq!(missing_scope(msg).as_deref(), want, "{msg}");
        }
    }
}
