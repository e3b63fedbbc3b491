//! `deployer.reset_forge_password`: the way back after a password was lost for good (an adopted
//! account, or "forget user" and create again). Forge's admin API sets a fresh random password;
//! the deployer holds it as the user's initial password, so the usual audited reveal applies.

use hero_os_tfgrid_deployer_sdk::types::{ResetPasswordResult, UserId};
use hero_secrets::SecretValue;
use rusqlite::params;

use crate::audit::Actor;
use crate::clock::alphanumeric_password;
use crate::db::Cached;
use crate::error::ServiceError;
use crate::service::{slots, Deployer};
use crate::users::{error_outcome, PASSWORD_LEN};

const ACTION: &str = "user.reset_forge_password";

impl Deployer {
    /// Sets a new random Forge password for the user and returns it once. Audited, success or
    /// not. The new password is stored before Forge sees it (as `create_user` does), so a crash
    /// in between never leaves an account whose password nobody knows; a refusal by Forge puts
    /// the previous value back.
    pub async fn reset_forge_password(
        &self,
        actor: &Actor,
        user_id: UserId,
    ) -> Result<ResetPasswordResult, ServiceError> {
        let user = self.get_user(user_id).await?;
        // One change of this user at a time: two resets interleaving their store and Forge writes would leave
        // the held password different from Forge's (and each caller shown one that may not work).
        let _claim = self.claim_name(&user.forge_username).await?;
        let user = self.get_user(user_id).await?;
        let subject = format!("user:{}", user.forge_username);
        let result = self
            .reset(&user.forge_username, user.setup_complete, user_id)
            .await;
        match &result {
            Ok(_) => {
                self.audit(
                    actor,
                    ACTION,
                    &subject,
                    "ok",
                    Some("new password set on Forge"),
                )
                .await?
            }
            Err(e) => {
                self.audit(
                    actor,
                    ACTION,
                    &subject,
                    &error_outcome(e),
                    Some(&e.to_string()),
                )
                .await?
            }
        }
        let password = result?;
        Ok(ResetPasswordResult {
            user_id,
            forge_username: user.forge_username,
            new_password: password.expose().to_owned(),
        })
    }

    async fn reset(
        &self,
        username: &str,
        setup_complete: bool,
        user_id: UserId,
    ) -> Result<SecretValue, ServiceError> {
        if !setup_complete {
            return Err(ServiceError::FailedPrecondition(format!(
                "{username}'s setup is incomplete: run `user create {username}` again first"
            )));
        }
        let slot = slots::initial_password(user_id);
        let previous = self.secrets.get(&slot).await?;
        let fresh = SecretValue::new(alphanumeric_password(&*self.random, PASSWORD_LEN).as_str());
        self.secrets.set(&slot, fresh.expose()).await?;
        if let Err(e) = self.forge.set_password(username, &fresh).await {
            match &previous {
                Some(old) => self.secrets.set(&slot, old.expose()).await?,
                None => {
                    self.secrets.delete(&slot).await?;
                }
            }
            return Err(e.into());
        }
        let now = self.clock.now();
        self.db
            .write(move |conn| -> Result<(), ServiceError> {
                conn.execute_cached(
                    "UPDATE users SET initial_password_held = 1, updated_at = ?2 WHERE user_id = ?1",
                    params![user_id, now],
                )?;
                Ok(())
            })
            .await?;
        Ok(fresh)
    }
}
