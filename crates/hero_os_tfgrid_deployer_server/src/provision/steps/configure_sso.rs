//! `configure_sso`: the VM's SSO edge knows its Forge issuer, its OAuth client (made by
//! `register_sso`) and who may sign in — the owner (`cockpit/FORGE_OWNER`, hero_proxy's `owner`
//! policy) and the admins (`deployer/ADMIN_FORGE_USERS`, as the deployer holds them now) — written
//! into the VM's own secret store over the pinned SSH connection, values on stdin
//! ([`crate::provision::vm_secrets`]). Runs before `run_bootstrap`, which starts (or restarts) the
//! edge that reads them.
//!
//! Idempotent: every write overwrites. A rotated client secret or a changed admin list reaches the
//! VM by running this again (a new provision attempt, or repair).

use std::time::Duration;

use async_trait::async_trait;
use hero_secrets::slots;

use super::deploy_vm::access_parts;
use super::{JobContext, Step, StepCx, StepError};
use crate::provision::agent::SshAccess;
use crate::provision::vm_secrets;

pub struct ConfigureSso;

impl ConfigureSso {
    pub const NAME: &'static str = "configure_sso";
}

/// An admin list with nobody on it: a lone separator, because an empty value reads as "not set"
/// to some stores and a stale list on the VM must still be replaced.
const NO_ADMINS: &str = ",";

/// The admin list as the deployer holds it now, in the one spelling a VM is given and its row
/// records (sorted, comma-joined, [`NO_ADMINS`] for nobody), with how many names it has: what
/// this step writes and what `crate::fleet::access` compares a VM's recorded list with.
pub async fn admins_value(
    secrets: &dyn hero_secrets::SecretStore,
) -> Result<(String, usize), hero_secrets::SecretError> {
    let list = secrets
        .get(slots::ADMIN_FORGE_USERS)
        .await?
        .map(|v| slots::parse_login_list(v.expose()))
        .unwrap_or_default();
    let value = if list.is_empty() {
        NO_ADMINS.to_owned()
    } else {
        list.iter().cloned().collect::<Vec<_>>().join(",")
    };
    Ok((value, list.len()))
}

#[async_trait]
impl Step for ConfigureSso {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(120)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let users = &s.env.users;
        let client_id = ctx.oauth_client_id.clone().ok_or_else(|| {
            StepError::fatal(
                "sso.no_app",
                "no OAuth app recorded by register_sso; retry the job",
            )
        })?;
        let read =
            |slot: String| async move {
                users.secrets.get(&slot).await.map_err(|e| {
                    StepError::transient("sso.secret_store", format!("secret store: {e}"))
                })
            };
        let secret = read(slots::user_oauth_client_secret(s.job.user_id))
            .await?
            .filter(|v| !v.expose().is_empty())
            .ok_or_else(|| {
                StepError::fatal(
                    "sso.no_client_secret",
                    "the VM's OAuth client secret is not in the secret store; retry the job \
                     (register_sso rotates it)",
                )
            })?;
        let (admins_value, admin_count) = admins_value(users.secrets.as_ref())
            .await
            .map_err(|e| StepError::transient("sso.secret_store", format!("secret store: {e}")))?;
        let issuer = users.forge.url().to_owned();
        let writes: [(&str, &str); 5] = [
            (slots::COCKPIT_OAUTH_ISSUER, &issuer),
            (slots::COCKPIT_OAUTH_CLIENT_ID, &client_id),
            (slots::COCKPIT_OAUTH_CLIENT_SECRET, secret.expose()),
            (slots::COCKPIT_FORGE_OWNER, &s.job.forge_username),
            (slots::ADMIN_FORGE_USERS, &admins_value),
        ];

        let (vm, key) = access_parts(s, ctx).await?;
        let access = SshAccess {
            target: &vm.ssh,
            private_key: key,
            pinned: ctx.host_key.clone(),
        };
        for (slot, value) in writes {
            vm_secrets::push(s.env.agent.as_ref(), &access, &vm, slot, value).await?;
        }
        ctx.admins_pushed = Some(admins_value.clone());
        Ok(format!(
            "SSO edge configured in the VM's secret store ({:?}): issuer {issuer}, client id \
             {client_id}, owner {}, {} admin(s)",
            vm.secret_store, s.job.forge_username, admin_count
        ))
    }
}
