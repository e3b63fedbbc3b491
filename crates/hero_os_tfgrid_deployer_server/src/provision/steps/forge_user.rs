//! `forge_user`: the Forge account exists and the deployer holds what it needs for it. A user
//! record left `pending` by an interrupted `create_user` is finished here.

use std::time::Duration;

use async_trait::async_trait;
use hero_os_tfgrid_deployer_sdk::types::CreateUserParams;

use super::{JobContext, Step, StepCx, StepError};
use crate::audit::Actor;
use crate::error::ServiceError;

pub struct ForgeUser;

impl ForgeUser {
    pub const NAME: &'static str = "forge_user";
}

#[async_trait]
impl Step for ForgeUser {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(120)
    }

    async fn run(&self, s: &StepCx<'_>, ctx: &mut JobContext) -> Result<String, StepError> {
        let d = &s.env.users;
        // Our record and Forge are asked at once: Forge's answer is what this step is about,
        // unless an interrupted setup must be finished first (then it is asked again afterwards).
        let (user, on_forge) = tokio::join!(
            d.get_user(s.job.user_id),
            d.forge.user_exists(&s.job.forge_username)
        );
        let user = user?;
        // Known only when the account was complete already; a finished setup changes it.
        ctx.initial_password_held = user.setup_complete.then_some(user.initial_password_held);
        if !user.setup_complete {
            s.say("Forge account setup was interrupted earlier: finishing it");
            match d
                .create_user(
                    &Actor(s.job.actor.clone()),
                    CreateUserParams {
                        username: user.forge_username.clone(),
                        display_name: user.display_name.clone(),
                        email: Some(user.email.clone()),
                        discard_if_refused: false,
                    },
                )
                .await
            {
                Ok(r) => {
                    return Ok(format!(
                        "Forge account {} ready ({})",
                        r.forge_username,
                        if r.adopted { "adopted" } else { "created" }
                    ))
                }
                Err(ServiceError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let on_forge = if user.setup_complete {
            on_forge
        } else {
            // Asked before the setup was finished: ask again.
            d.forge.user_exists(&user.forge_username).await
        };
        match on_forge {
            Ok(Some(u)) => Ok(format!(
                "Forge account {} exists (forge id {}); token {}",
                u.login,
                u.id,
                if user.forge_token_set {
                    "held"
                } else {
                    "not held (adopted account)"
                }
            )),
            Ok(None) => Err(StepError::fatal(
                "forge.user_missing",
                format!(
                    "Forge account {} no longer exists on {}; delete the deployer user and create it again",
                    user.forge_username,
                    d.forge.url()
                ),
            )),
            Err(e) => Err(ServiceError::from(e).into()),
        }
    }
}
