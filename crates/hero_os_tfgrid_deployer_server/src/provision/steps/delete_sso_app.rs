//! `delete_sso_app`: the VM's OAuth app is gone from Forge and its client secret from the secret
//! store (already gone is success). The app is found by the name `register_sso` gives it
//! (`hero_os_tfgrid_deployer <resource name>`), so a decommission needs nothing the provision job
//! recorded, and every app of that name goes (there should be one).

use std::time::Duration;

use async_trait::async_trait;

use super::register_sso::app_name;
use super::{JobContext, Step, StepCx, StepError};

pub struct DeleteSsoApp;

impl DeleteSsoApp {
    pub const NAME: &'static str = "delete_sso_app";
}

#[async_trait]
impl Step for DeleteSsoApp {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(120)
    }

    async fn run(&self, s: &StepCx<'_>, _ctx: &mut JobContext) -> Result<String, StepError> {
        delete_vm_app(&s.env.users, s.job.user_id, &s.resource_name()?.to_string()).await
    }
}

/// Deletes every OAuth app of the VM `resource` and the user's client secret; shared by this
/// step and the cleanup of a cancelled provision (which must not leave the app behind either).
pub async fn delete_vm_app(
    users: &crate::service::Deployer,
    user_id: i64,
    resource: &str,
) -> Result<String, StepError> {
    {
        let apps = users.forge.apps().ok_or_else(|| {
            StepError::fatal(
                "sso.no_app_port",
                "this Forge client cannot manage OAuth apps; delete the VM's app on Forge by hand",
            )
        })?;
        let name = app_name(resource);
        let forge_err = |e: crate::forge::ForgeError| StepError {
            code: e.code().to_owned(),
            transient: e.is_transient(),
            message: e.to_string(),
        };
        let mut deleted = Vec::new();
        let mut unreachable = None;
        // A Forge that cannot be reached must not keep a VM that is already gone from being
        // decommissioned: the app is left as an orphan that `reconcile` reports and `--fix`
        // deletes, and the step says so. Other Forge errors (a token without write:user) fail it.
        // Only the apps this deployer made (`oauth_apps`): one of the same name is another
        // deployer's on the same Forge account.
        let ours = users
            .oauth_apps_of(user_id)
            .await
            .map_err(|e| StepError::transient("sso.db", format!("reading the OAuth apps: {e}")))?;
        let mut gone = Vec::new();
        let outcome: Result<(), crate::forge::ForgeError> = async {
            for app in apps.list_oauth_apps().await? {
                if app.name == name && ours.contains(&app.id) {
                    if apps.delete_oauth_app(app.id).await? {
                        deleted.push(app.id.to_string());
                    }
                    gone.push(app.id);
                }
            }
            Ok(())
        }
        .await;
        users.forget_oauth_apps(gone).await.map_err(|e| {
            StepError::transient("sso.db", format!("forgetting the OAuth apps: {e}"))
        })?;
        match outcome {
            Ok(()) => {}
            Err(e) if e.is_transient() => unreachable = Some(e.to_string()),
            Err(e) => return Err(forge_err(e)),
        }
        let slot = hero_secrets::slots::user_oauth_client_secret(user_id);
        let had_secret =
            users.secrets.delete(&slot).await.map_err(|e| {
                StepError::transient("sso.secret_store", format!("secret store: {e}"))
            })?;
        let apps_said = if let Some(why) = unreachable {
            format!(
                "OAuth app not deleted, Forge unreachable ({why}); `reconcile --fix` removes it"
            )
        } else if deleted.is_empty() {
            "no OAuth app left on Forge (already gone)".to_owned()
        } else {
            format!("OAuth app {} deleted on Forge", deleted.join(", "))
        };
        Ok(format!(
            "{apps_said}; client secret {}",
            if had_secret {
                "deleted"
            } else {
                "already gone"
            }
        ))
    }
}
