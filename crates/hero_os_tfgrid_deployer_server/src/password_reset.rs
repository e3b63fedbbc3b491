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
use crate::forge::ForgeError;
use crate::service::{slots, Deployer};
use crate::users::{error_outcome, PASSWORD_LEN};

const ACTION: &str = "user.reset_forge_password";

impl Deployer {
    /// Sets a new random Forge password for the user and returns it once. Audited, success or
    /// not. The new password is stored before Forge sees it (as `create_user` does), so a crash
    /// in between never leaves an account whose password nobody knows; a refusal by Forge puts
    /// the previous value back. A failure that may hide a change (a timeout) is settled by asking
    /// Forge which password signs in (`took_after_all`).
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
            if let Err(failure) = self.took_after_all(username, &fresh, e).await {
                match &previous {
                    Some(old) => self.secrets.set(&slot, old.expose()).await?,
                    None => {
                        self.secrets.delete(&slot).await?;
                    }
                }
                return Err(failure);
            }
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

    /// `Ok` if a `set_password` that `failed` changed the password all the same, else the failure to report. Only
    /// a transient failure (a timeout, a 5xx from a gateway) can hide a change Forge made; then Forge is asked,
    /// with the new password, who it signs in. Putting the old password back on a guess would leave the deployer
    /// holding one Forge no longer accepts. If Forge cannot be asked either, the error says the outcome is unknown.
    async fn took_after_all(
        &self,
        username: &str,
        fresh: &SecretValue,
        failed: ForgeError,
    ) -> Result<(), ServiceError> {
        if !failed.is_transient() {
            return Err(failed.into());
        }
        match self.forge.password_works(username, fresh).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(failed.into()),
            Err(check) => Err(ServiceError::Forge(ForgeError::Unreachable {
                url: self.forge.url().to_owned(),
                reason: format!(
                    "the password change failed ({failed}) and checking whether it took anyway failed too \
                     ({check}); the previous password is still held: if it no longer signs in, reset the \
                     password again"
                ),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use hero_os_tfgrid_deployer_sdk::ErrorKind;
    use hero_secrets::SecretStore;

    use super::*;
    use crate::forge::fake::FakeForge;
    use crate::users::tests::{deployer, params};

    fn forge_password(forge: &FakeForge) -> String {
        forge.users.lock().unwrap()[0].1.clone()
    }

    /// A reset whose answer from Forge is lost (a timeout after the PATCH went out) may have changed the password.
    /// The deployer then asks Forge which one signs in, and holds that one. Before, it always put the old one back:
    /// after a change Forge had made, the held password no longer opened the account.
    #[tokio::test]
    async fn a_lost_answer_is_settled_by_asking_forge_which_password_signs_in() {
        let forge = Arc::new(FakeForge::new());
        let (d, secrets) = deployer(forge.clone());
        let actor = Actor::local("test");
        let user = d.create_user(&actor, params("pat")).await.unwrap();
        let slot = slots::initial_password(user.user_id);
        let held = || async {
            secrets
                .get(&slot)
                .await
                .unwrap()
                .unwrap()
                .expose()
                .to_owned()
        };
        let first = held().await;

        // Changed, answer lost: the new password is kept and returned.
        *forge.set_password_lost.lock().unwrap() = Some(true);
        let r = d.reset_forge_password(&actor, user.user_id).await.unwrap();
        assert_ne!(r.new_password, first);
        assert_eq!(forge_password(&forge), r.new_password);
        assert_eq!(held().await, r.new_password);

        // Not changed, answer lost: the error stands and the previous password is held again.
        *forge.set_password_lost.lock().unwrap() = Some(false);
        let err = d
            .reset_forge_password(&actor, user.user_id)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ForgeUnavailable, "{err}");
        assert_eq!(forge_password(&forge), r.new_password);
        assert_eq!(held().await, r.new_password);

        // Changed, answer lost, and Forge cannot be asked: the error says the outcome is unknown and what to do.
        *forge.set_password_lost.lock().unwrap() = Some(true);
        *forge.password_check_unreachable.lock().unwrap() = true;
        let err = d
            .reset_forge_password(&actor, user.user_id)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ForgeUnavailable, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("checking whether it took anyway failed too")
                && text.contains("reset the password again"),
            "{text}"
        );
        assert_eq!(
            held().await,
            r.new_password,
            "the previous one is still held"
        );
        assert_ne!(
            forge_password(&forge),
            r.new_password,
            "as the error says, Forge may hold another"
        );
        // Every attempt is audited with its outcome.
        let events = d.list_events(Default::default()).await.unwrap().events;
        let outcomes: Vec<&str> = events
            .iter()
            .filter(|e| e.action == ACTION)
            .map(|e| e.outcome.as_str())
            .collect();
        assert_eq!(
            outcomes,
            ["error:forge_unavailable", "error:forge_unavailable", "ok"]
        );
    }
}
